//! A fast reader for stored entries in the exact shape this crate writes them (the format is
//! described in the `entry` module).
//!
//! `serde_json::to_writer` writes a [`CachedResponse`] as one compact JSON object whose fields
//! are a known set of names with string, number or `null` values, and the crate appends the
//! `checksum` field. Every read from disk parses one entry
//! file, and general-purpose JSON deserialisation of the (multi-kilobyte) response text was most
//! of its cost, so this reader handles that shape directly: strings are scanned with `memchr`
//! and a vectorisable byte check, and the response is copied once, into its `Arc<str>`.
//!
//! It never decides that a file is bad. Anything outside the shape it knows (whitespace,
//! unknown or repeated fields, `\u` escapes, non-canonical numbers, ...) returns `None`, and the
//! caller falls back to `serde_json`, which gives the authoritative answer. When it does return
//! an entry, that entry is the one `serde_json` would have read (checked by the differential
//! tests below).

use std::sync::Arc;

use crate::entry::{parse_checksum, parse_utc};
use crate::{CacheKey, CachedDelta, CachedResponse};

/// Reads `bytes` as one compact entry object for `expected` (whose 64 hex digits are
/// `expected_hex`), with the stored checksum if the object has one; `None` when they are not in
/// the shape this reader knows, or name another key (the caller then asks `serde_json`).
pub(crate) fn parse(
    bytes: &[u8],
    expected: &CacheKey,
    expected_hex: &str,
) -> Option<(CachedResponse, Option<u64>)> {
    let mut c = Cursor { b: bytes, i: 0 };
    let mut scratch = String::new();
    let mut seen = 0u32;
    let mut key: Option<CacheKey> = None;
    let mut response: Option<Arc<str>> = None;
    let mut model: Option<String> = None;
    let mut provider = None;
    let mut temperature = None;
    let mut created_at = None;
    let mut expires_at = None;
    let mut hit_count = 0u64;
    let mut tokens_prompt = None;
    let mut tokens_completion = None;
    let mut finish_reason = None;
    let mut latency_ms = None;
    let mut reasoning = None;
    let mut streamed_response = None;
    let mut deltas = Vec::new();
    let mut tool_calls = None;
    let mut tokens_cached = None;
    let mut tokens_reasoning = None;
    let mut checksum = None;

    c.eat(b'{')?;
    loop {
        let name = c.name()?;
        let bit = match name {
            b"key" => {
                // Compared as text: the file name already spelled the key.
                if c.string(&mut scratch)? != expected_hex {
                    return None;
                }
                key = Some(*expected);
                1
            }
            b"response" => {
                response = Some(Arc::from(c.string(&mut scratch)?));
                1 << 1
            }
            b"model" => {
                model = Some(c.string(&mut scratch)?.to_owned());
                1 << 2
            }
            b"provider" => {
                provider = c.opt_string(&mut scratch)?;
                1 << 3
            }
            b"temperature" => {
                temperature = c.opt_f64()?;
                1 << 4
            }
            b"created_at" => {
                created_at = Some(parse_utc(c.string(&mut scratch)?).ok()?);
                1 << 5
            }
            b"expires_at" => {
                expires_at = match c.null() {
                    true => None,
                    false => Some(parse_utc(c.string(&mut scratch)?).ok()?),
                };
                1 << 6
            }
            b"hit_count" => {
                hit_count = c.u64()?;
                1 << 7
            }
            b"tokens_prompt" => {
                tokens_prompt = c.opt_u64()?;
                1 << 8
            }
            b"tokens_completion" => {
                tokens_completion = c.opt_u64()?;
                1 << 9
            }
            b"finish_reason" => {
                finish_reason = c.opt_string(&mut scratch)?;
                1 << 10
            }
            b"latency_ms" => {
                latency_ms = c.opt_f64()?;
                1 << 11
            }
            b"checksum" => {
                checksum = Some(parse_checksum(c.string(&mut scratch)?)?);
                1 << 12
            }
            b"reasoning" => {
                // Written only when present: `null` is serde_json's to read.
                reasoning = Some(c.string(&mut scratch)?.to_owned());
                1 << 13
            }
            b"streamed_response" => {
                streamed_response = Some(c.string(&mut scratch)?.to_owned());
                1 << 14
            }
            b"deltas" => {
                c.deltas(&mut deltas)?;
                1 << 15
            }
            b"tool_calls" => {
                // Written only when present: `null` is serde_json's to read.
                tool_calls = Some(c.string(&mut scratch)?.to_owned());
                1 << 16
            }
            b"tokens_cached" => {
                // Written only when present: `null` is serde_json's to read.
                tokens_cached = Some(c.u64()?);
                1 << 17
            }
            b"tokens_reasoning" => {
                tokens_reasoning = Some(c.u64()?);
                1 << 18
            }
            _ => return None,
        };
        if seen & bit != 0 {
            return None;
        }
        seen |= bit;
        match c.next()? {
            b',' => {}
            b'}' => break,
            _ => return None,
        }
    }
    if c.i != bytes.len() {
        return None;
    }
    let entry = CachedResponse {
        key: key?,
        response: response?,
        model: model?,
        provider,
        temperature,
        created_at: created_at?,
        expires_at,
        hit_count,
        tokens_prompt,
        tokens_completion,
        finish_reason,
        latency_ms,
        reasoning,
        streamed_response,
        deltas,
        tool_calls,
        tokens_cached,
        tokens_reasoning,
    };
    Some((entry, checksum))
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn next(&mut self) -> Option<u8> {
        let c = *self.b.get(self.i)?;
        self.i += 1;
        Some(c)
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }

    /// `null`, consumed if present.
    fn null(&mut self) -> bool {
        let found = self.b[self.i..].starts_with(b"null");
        if found {
            self.i += 4;
        }
        found
    }

    /// `"<name>":` without escapes; the name's bytes.
    fn name(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let rest = &self.b[self.i..];
        let end = memchr::memchr2(b'"', b'\\', rest)?;
        if rest[end] != b'"' {
            return None;
        }
        self.i += end + 1;
        self.eat(b':')?;
        Some(&rest[..end])
    }

    /// A string value; borrowed from the input when it has no escapes, else decoded into
    /// `scratch`. `None` for `\u` escapes, unknown escapes, raw control characters and invalid
    /// UTF-8 (left to `serde_json`).
    fn string<'s>(&'s mut self, scratch: &'s mut String) -> Option<&'s str> {
        self.eat(b'"')?;
        let start = self.i;
        let rest = &self.b[start..];
        let end = memchr::memchr2(b'"', b'\\', rest)?;
        if rest[end] == b'"' {
            self.i += end + 1;
            return plain(&rest[..end]);
        }
        // Escapes: decode piece by piece.
        scratch.clear();
        loop {
            let rest = &self.b[self.i..];
            let end = memchr::memchr2(b'"', b'\\', rest)?;
            scratch.push_str(plain(&rest[..end])?);
            self.i += end + 1;
            if rest[end] == b'"' {
                return Some(scratch.as_str());
            }
            let unescaped = match self.next()? {
                b'"' => '"',
                b'\\' => '\\',
                b'/' => '/',
                b'b' => '\u{8}',
                b'f' => '\u{c}',
                b'n' => '\n',
                b'r' => '\r',
                b't' => '\t',
                _ => return None,
            };
            scratch.push(unescaped);
        }
    }

    fn opt_string(&mut self, scratch: &mut String) -> Option<Option<String>> {
        if self.null() {
            return Some(None);
        }
        Some(Some(self.string(scratch)?.to_owned()))
    }

    /// The bytes of a number token (validated by whoever parses it).
    fn number(&mut self) -> &'a [u8] {
        let rest = &self.b[self.i..];
        let len = rest
            .iter()
            .position(|c| !matches!(c, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
            .unwrap_or(rest.len());
        self.i += len;
        &rest[..len]
    }

    fn u64(&mut self) -> Option<u64> {
        let token = self.number();
        // Plain digits without a leading zero: the common case, exact.
        if !token.is_empty()
            && token.len() <= 19
            && token.iter().all(u8::is_ascii_digit)
            && (token[0] != b'0' || token.len() == 1)
        {
            return Some(
                token
                    .iter()
                    .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')),
            );
        }
        serde_json::from_slice(token).ok()
    }

    fn opt_u64(&mut self) -> Option<Option<u64>> {
        if self.null() {
            return Some(None);
        }
        self.u64().map(Some)
    }

    /// `[[kind,end,offset_us],...]` as serde_json writes it (no whitespace), kinds 0 and 1.
    fn deltas(&mut self, out: &mut Vec<CachedDelta>) -> Option<()> {
        self.eat(b'[')?;
        if self.b.get(self.i) == Some(&b']') {
            self.i += 1;
            return Some(());
        }
        loop {
            self.eat(b'[')?;
            let reasoning = match self.u64()? {
                0 => false,
                1 => true,
                _ => return None,
            };
            self.eat(b',')?;
            let end = self.u64()?;
            self.eat(b',')?;
            let offset_us = self.u64()?;
            self.eat(b']')?;
            out.push(CachedDelta {
                reasoning,
                end,
                offset_us,
            });
            match self.next()? {
                b',' => {}
                b']' => return Some(()),
                _ => return None,
            }
        }
    }

    fn opt_f64(&mut self) -> Option<Option<f64>> {
        if self.null() {
            return Some(None);
        }
        // serde_json's own number parser, so the value is bit-for-bit the one it would read.
        serde_json::from_slice::<f64>(self.number()).ok().map(Some)
    }
}

/// `bytes` (a run without quotes or backslashes) as text, if JSON allows it raw: no control
/// characters, valid UTF-8.
fn plain(bytes: &[u8]) -> Option<&str> {
    // One vectorisable pass: every byte printable ASCII (0x20..=0x7f)?
    let max = bytes.iter().fold(0u8, |m, &c| m.max(c.wrapping_sub(0x20)));
    if max <= 0x5f {
        return std::str::from_utf8(bytes).ok();
    }
    if bytes.iter().any(|&c| c < 0x20) {
        return None;
    }
    std::str::from_utf8(bytes).ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use chrono::{DateTime, TimeZone, Utc};
    use proptest::prelude::*;

    fn serde(bytes: &[u8]) -> Option<CachedResponse> {
        serde_json::from_slice(bytes).ok()
    }

    /// The fast reader, expecting `key` (the entry only).
    fn parse(bytes: &[u8], key: &CacheKey) -> Option<CachedResponse> {
        super::parse(bytes, key, &key.to_hex()).map(|(e, _)| e)
    }

    /// Bit-for-bit equality (NaN-free floats compare by bits too, so -0.0 and 0.0 differ).
    fn same(a: &CachedResponse, b: &CachedResponse) -> bool {
        a == b
            && a.temperature.map(f64::to_bits) == b.temperature.map(f64::to_bits)
            && a.latency_ms.map(f64::to_bits) == b.latency_ms.map(f64::to_bits)
    }

    fn sample() -> CachedResponse {
        let key = CacheKey::builder("t").message("user", "hi").finish();
        let mut e = CachedResponse::new(key, "The morning sun.\nLine \"two\"\t\\ end é ✓", "m");
        e.provider = Some("ollama".to_owned());
        e.temperature = Some(0.8);
        e.expires_at = Some(e.created_at + chrono::Duration::seconds(60));
        e.hit_count = 3;
        e.tokens_prompt = Some(900);
        e.finish_reason = Some("stop".to_owned());
        e.latency_ms = Some(12.5);
        e
    }

    /// `sample()` as a streamed reply with reasoning.
    fn streamed() -> CachedResponse {
        let mut e = sample();
        e.set_pieces([
            (true, "Think \"first\".", 900),
            (false, "The morning sun.", 1500),
            (false, "\nLine é ✓", 2100),
        ]);
        e
    }

    #[test]
    fn reads_streamed_entries_and_declines_odd_deltas() {
        let e = streamed();
        let text = serde_json::to_string(&e).expect("json");
        assert!(text.contains("\"deltas\":[[1,"), "{text}");
        let fast = parse(text.as_bytes(), &e.key).expect("fast path");
        assert!(same(&fast, &e));
        for case in [
            text.replacen("[[1,", "[[2,", 1),
            text.replacen("[[1,", "[[-1,", 1),
            text.replacen("[[1,", "[ [1,", 1),
            text.replacen("[[1,", "[[1.0,", 1),
            text.replacen("\"deltas\":[", "\"deltas\":[],\"x\":[", 1),
            text.replacen("\"reasoning\":\"Think", "\"reasoning\":null,\"r\":\"", 1),
            text.replacen(
                "\"streamed_response\":\"",
                "\"streamed_response\":null,\"s\":\"",
                1,
            ),
            text.replacen("]]", "]", 1),
        ] {
            match (parse(case.as_bytes(), &e.key), serde(case.as_bytes())) {
                (Some(fast), Some(slow)) => assert!(same(&fast, &slow), "{case}"),
                (Some(fast), None) => {
                    panic!("accepted what serde_json refuses: {case} -> {fast:?}")
                }
                (None, _) => {}
            }
        }
        let empty = text.replacen("\"deltas\":[", "\"deltas\":[],\"d\":[", 1);
        assert!(parse(empty.as_bytes(), &e.key).is_none());
    }

    #[test]
    fn reads_what_serde_json_writes() {
        let e = sample();
        let bytes = serde_json::to_vec(&e).expect("json");
        let fast = parse(&bytes, &e.key).expect("fast path");
        let other = CacheKey::builder("other").finish();
        assert!(parse(&bytes, &other).is_none(), "another key's file");
        assert!(same(&fast, &e));
    }

    #[test]
    fn declines_what_it_does_not_know_and_never_disagrees() {
        let e = sample();
        let text = serde_json::to_string(&e).expect("json");
        let pretty = serde_json::to_string_pretty(&e).expect("json");
        let cases = [
            pretty.clone(),
            format!(" {text}"),
            format!("{text} "),
            format!("{text}x"),
            text.replacen("\"model\"", "\"unknown\"", 1),
            text.replacen("\"model\":\"m\"", "\"model\":\"m\",\"model\":\"m\"", 1),
            text.replacen("\"hit_count\":3", "\"hit_count\":null", 1),
            text.replacen("\"hit_count\":3", "\"hit_count\":03", 1),
            text.replacen("\"hit_count\":3", "\"hit_count\":3.0", 1),
            text.replacen("\"hit_count\":3", "\"hit_count\":-3", 1),
            text.replacen("\"hit_count\":3", "\"hit_count\":99999999999999999999", 1),
            text.replacen("\"temperature\":0.8", "\"temperature\":1e400", 1),
            text.replacen("\"temperature\":0.8", "\"temperature\":-0", 1),
            text.replacen("\"temperature\":0.8", "\"temperature\":.5", 1),
            text.replacen("Line", "L\\u0069ne", 1),
            text.replacen("Line", "L\\ud800ne", 1),
            text.replacen("Line", "L\\xne", 1),
            text.replacen("Line", "L\u{1}ne", 1),
            text.replacen("\"model\":\"m\",", "", 1),
            text.replacen("Z\"", "+00:00\"", 1),
            text.replacen("Z\"", "X\"", 1),
            text.replacen("\"expires_at\":\"", "\"expires_at\":null,\"x\":\"", 1),
            text.replacen("\"provider\":\"ollama\"", "\"provider\":null", 1),
            text.replacen("\"finish_reason\":\"stop\"", "\"finish_reason\":true", 1),
            text[..text.len() - 1].to_owned(),
            text[..text.len() / 2].to_owned(),
            "{}".to_owned(),
            String::new(),
        ];
        for case in cases {
            let bytes = case.as_bytes();
            match (parse(bytes, &e.key), serde(bytes)) {
                (Some(fast), Some(slow)) => assert!(same(&fast, &slow), "{case}"),
                (Some(fast), None) => {
                    panic!("fast path accepted what serde_json refuses: {case} -> {fast:?}")
                }
                (None, _) => {}
            }
        }
        // Invalid UTF-8 inside a string.
        let mut bytes = text.into_bytes();
        let at = bytes.iter().position(|&b| b == 0xc3).expect("é");
        bytes[at + 1] = b'(';
        assert!(parse(&bytes, &e.key).is_none() && serde(&bytes).is_none());
    }

    fn arb_text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z ]{0,40}",
            any::<String>(),
            prop::collection::vec(
                prop_oneof![
                    Just('"'),
                    Just('\\'),
                    Just('\n'),
                    Just('\u{1}'),
                    Just('é'),
                    Just('/'),
                    any::<char>()
                ],
                0..40
            )
            .prop_map(|v| v.into_iter().collect()),
        ]
    }

    /// Arbitrary entries (any text, any finite floats, timestamps over years 1970..=9999).
    pub(crate) fn arb_entry() -> impl Strategy<Value = CachedResponse> {
        (
            any::<[u8; 32]>(),
            arb_text(),
            arb_text(),
            prop::option::of(arb_text()),
            prop::option::of(any::<f64>().prop_filter("finite", |f| f.is_finite())),
            0i64..253_402_300_799,
            0u32..1_000_000_000,
            prop::option::of(0i64..253_402_300_799),
            any::<u64>(),
            (
                prop::option::of(any::<u64>()),
                prop::option::of(any::<u64>()),
                prop::option::of(arb_text()),
                prop::option::of(-1e12f64..1e12),
                prop::option::of(arb_text()),
            ),
            prop::option::of(prop::collection::vec(
                (any::<bool>(), arb_text(), any::<u64>()),
                0..6,
            )),
        )
            .prop_map(
                |(
                    key,
                    response,
                    model,
                    provider,
                    temperature,
                    secs,
                    nanos,
                    exp,
                    hits,
                    rest,
                    stream,
                )| {
                    let at = |s: i64, n: u32| -> DateTime<Utc> {
                        Utc.timestamp_opt(s, n).single().unwrap_or_default()
                    };
                    let mut entry = CachedResponse {
                        key: CacheKey::from_bytes(key),
                        response: response.into(),
                        model,
                        provider,
                        temperature,
                        created_at: at(secs, nanos),
                        expires_at: exp.map(|s| at(s, 0)),
                        hit_count: hits,
                        tokens_prompt: rest.0,
                        tokens_completion: rest.1,
                        finish_reason: rest.2,
                        latency_ms: rest.3,
                        reasoning: None,
                        streamed_response: None,
                        deltas: Vec::new(),
                        tool_calls: rest.4,
                        // Present on some entries, absent on others.
                        tokens_cached: rest.0.filter(|_| hits % 3 == 0),
                        tokens_reasoning: rest.1.filter(|_| hits % 5 == 0),
                    };
                    if let Some(pieces) = stream {
                        entry.set_pieces(pieces.iter().map(|(r, t, at)| (*r, t.as_str(), *at)));
                    }
                    entry
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Every entry serde_json writes is read back, identical, by the fast path (or it
        /// declines), and it agrees with serde_json on it.
        #[test]
        fn round_trips_like_serde_json(e in arb_entry()) {
            let bytes = serde_json::to_vec(&e).expect("json");
            let slow = serde(&bytes).expect("serde reads its own output");
            match parse(&bytes, &e.key) {
                Some(fast) => prop_assert!(same(&fast, &slow), "{fast:?} vs {slow:?}"),
                None => {
                    // Only `\u` escapes (control characters) make it decline its own output.
                    prop_assert!(bytes.windows(2).any(|w| w == b"\\u"));
                }
            }
        }

        /// On damaged bytes it either declines or agrees with serde_json; it never accepts
        /// what serde_json refuses.
        #[test]
        fn never_disagrees_on_damaged_files(
            e in arb_entry(),
            cut in any::<prop::sample::Index>(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let mut bytes = serde_json::to_vec(&e).expect("json");
            let i = at.index(bytes.len());
            bytes[i] = byte;
            let cut = cut.index(bytes.len() + 1);
            for candidate in [&bytes[..], &bytes[..cut]] {
                match (parse(candidate, &e.key), serde(candidate)) {
                    (Some(fast), Some(slow)) => prop_assert!(same(&fast, &slow)),
                    (Some(fast), None) => prop_assert!(false, "accepted {fast:?}"),
                    (None, _) => {}
                }
            }
        }
    }
}
