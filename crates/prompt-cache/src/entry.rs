//! `CachedResponse`: one cached model answer and everything needed to replay it, and the one
//! stored form of an entry (disk files and Redis alike).
//!
//! # The stored entry format
//!
//! An entry is stored as one compact JSON object: the body of a record in a segment file of
//! [`ResponseCache`](crate::ResponseCache) (or the whole of a `<64-hex key>.json` file of its
//! older layout), or the `data` field of the Redis hash of `RedisCache`. [`encode`] writes it,
//! [`decode`] reads it; nothing else does.
//!
//! ```text
//! {"key":"<64 hex>","response":"...","model":"...","provider":"..."|null,
//!  "temperature":0.8|null,"created_at":"<RFC 3339, UTC>","expires_at":"<RFC 3339>"|null,
//!  "hit_count":3,"tokens_prompt":900|null,"tokens_completion":500|null,
//!  "finish_reason":"stop"|null,"latency_ms":12.5|null,
//!  "reasoning":"...","streamed_response":"...","deltas":[[0,12,35210],[1,40,36002],...],
//!  "tool_calls":"[{\"id\":...}]","tokens_cached":400,"tokens_reasoning":100,
//!  "checksum":"xxh3:<16 hex>"}
//! ```
//!
//! - `tokens_cached` and `tokens_reasoning` (the provider's prompt-cache and reasoning token
//!   counts) are left out when unknown, and covered by the checksum only when present, so
//!   entries written before they existed verify as before.
//! - The fields up to `deltas` are [`CachedResponse`]'s, written by `serde_json` in this
//!   order (timestamps as chrono writes them); `checksum` is appended last. `reasoning`,
//!   `streamed_response`, `deltas` and `tool_calls` are left out when there are none (a
//!   reply that was not streamed and called no tool): such an entry is written exactly as
//!   before they existed. `tool_calls` is the caller's JSON text of the reply's tool calls,
//!   stored and served as is.
//! - `deltas` records how a streamed reply arrived, one `[kind, end, offset_us]` per piece:
//!   kind `0` is response text and `1` reasoning text, `end` the byte position in that text
//!   where the piece ends, `offset_us` when it arrived (microseconds after the request was
//!   sent). The response text the pieces point into is `streamed_response`, present only
//!   when the text as it streamed differs from `response` (which callers store cleaned:
//!   `<think>` blocks removed, trimmed); otherwise `response` itself, not stored twice.
//!   Pieces that do not cover their texts exactly (out of order, off a character boundary,
//!   short of the end), or a `streamed_response` without pieces, make the entry corrupt.
//! - `checksum` is `xxh3:` and the XXH3-64 digest, in 16 lowercase hex digits, of the entry's
//!   content as [`CachedResponse::feed_content`] encodes it: every field a hit returns (key,
//!   response, model, provider, temperature, created and expiry times, token counts, finish
//!   reason, latency, reasoning, streamed text, deltas, tool calls). `hit_count` is not covered: it is bookkeeping that changes with every
//!   hit (Redis increments it beside the entry), and a file damaged only there is served with
//!   that count. Floats are covered as `serde_json`'s reader reads them back, which is not
//!   always the value written: `NaN` and infinities are written as `null`, and its default
//!   (fast) float parsing lands one unit in the last place away for about one float in five
//!   with 17 significant digits (a latency such as `12171.220160481445`). So the checksum
//!   depends on how `serde_json` parses floats: a build that parses them differently (its
//!   `float_roundtrip` feature, or a future default) would find such entries corrupt once
//!   (a miss, set aside, written again by the next `put`).
//! - Readers verify the checksum before an entry is served (disk reads by key, Redis reads). A mismatch, a malformed `checksum`, another key, an empty response (with
//!   no tool calls) or
//!   anything that is not such an object is corrupt: a miss, set aside (`corrupt/` on disk,
//!   deleted in Redis) and counted in `CacheStats::corrupt`.
//! - An object without `checksum` was written before checksums existed. It is still read and
//!   served (nothing can verify it); `ResponseCache` rewrites it, with a checksum, at its next
//!   flush, and every later read verifies it.
//! - Readers accept any JSON form of the object (whitespace, field order, unknown fields);
//!   a fast reader handles the exact compact form above and `serde_json` everything else.

use std::io::Write as _;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3;

use crate::CacheKey;

pub(crate) use de::parse_utc;

/// One cached answer: the response text plus what the caller needs to answer from cache as if
/// it had called the model. Stored on disk as one JSON object with these field names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedResponse {
    /// The request's key.
    pub key: CacheKey,
    /// The response text (shared, so a cache hit clones cheaply).
    #[serde(deserialize_with = "de::arc_str")]
    pub response: Arc<str>,
    /// The model that produced the response.
    pub model: String,
    /// The provider that produced the response.
    #[serde(default)]
    pub provider: Option<String>,
    /// The sampling temperature of the request.
    #[serde(default)]
    pub temperature: Option<f64>,
    /// When the entry was stored (set by the cache on `put`).
    #[serde(deserialize_with = "de::utc")]
    pub created_at: DateTime<Utc>,
    /// When the entry expires (`None`: never; set by the cache on `put` from the TTL).
    #[serde(default, deserialize_with = "de::opt_utc")]
    pub expires_at: Option<DateTime<Utc>>,
    /// How many times the entry was served.
    #[serde(default)]
    pub hit_count: u64,
    /// Prompt tokens reported by the provider.
    #[serde(default)]
    pub tokens_prompt: Option<u64>,
    /// Completion tokens reported by the provider.
    #[serde(default)]
    pub tokens_completion: Option<u64>,
    /// The provider's finish reason (`stop`, `length`, ...).
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// Latency of the original model call, in milliseconds.
    #[serde(default)]
    pub latency_ms: Option<f64>,
    /// Reasoning text the model sent apart from the response (streamed replies), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
    /// The response text exactly as it streamed, when that differs from `response` (which a
    /// caller may have cleaned: `<think>` blocks removed, trimmed). The text pieces of
    /// `deltas` are positions into this text, or into `response` when it is `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streamed_response: Option<String>,
    /// How a streamed reply arrived: its pieces in order, as positions into the streamed
    /// response text and `reasoning`, with their time offsets (empty when the reply was not
    /// streamed). Set with [`CachedResponse::set_pieces`]; a hit replays them with
    /// [`CachedResponse::pieces`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deltas: Vec<CachedDelta>,
    /// The tool calls of the reply, as the JSON text the caller stored (the cache does not
    /// read it), when it called any. A reply that only calls tools may have an empty
    /// `response`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<String>,
    /// Of the prompt tokens, those the provider read from its own prompt cache, when reported
    /// (kept so that a hit can tell what the call it replays cost).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_cached: Option<u64>,
    /// Of the completion tokens, those spent on reasoning, when reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_reasoning: Option<u64>,
}

/// One piece of a streamed reply, stored without its text: the text is the part of the
/// entry's streamed response text (or `reasoning`) from the previous piece of the same kind up
/// to `end`.
/// Stored as a JSON array `[kind, end, offset_us]` with kind `0` (response) or `1`
/// (reasoning).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "(u8, u64, u64)", into = "(u8, u64, u64)")]
pub struct CachedDelta {
    /// Whether the piece is reasoning text (else response text).
    pub reasoning: bool,
    /// Byte position in its text where the piece ends (on a character boundary).
    pub end: u64,
    /// When the piece arrived, in microseconds after the request was sent.
    pub offset_us: u64,
}

impl TryFrom<(u8, u64, u64)> for CachedDelta {
    type Error = String;
    fn try_from((kind, end, offset_us): (u8, u64, u64)) -> Result<Self, String> {
        let reasoning = match kind {
            0 => false,
            1 => true,
            other => return Err(format!("unknown delta kind {other}")),
        };
        Ok(Self {
            reasoning,
            end,
            offset_us,
        })
    }
}

impl From<CachedDelta> for (u8, u64, u64) {
    fn from(d: CachedDelta) -> Self {
        (u8::from(d.reasoning), d.end, d.offset_us)
    }
}

/// One piece of a cached streamed reply, with its text (see [`CachedResponse::pieces`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachedPiece<'a> {
    /// Whether the text is reasoning (else response text).
    pub reasoning: bool,
    /// The piece's text.
    pub text: &'a str,
    /// When the piece arrived, in microseconds after the request was sent.
    pub offset_us: u64,
}

impl CachedResponse {
    /// A new entry created now, with no expiry, no hits and no optional fields set.
    pub fn new(key: CacheKey, response: impl Into<Arc<str>>, model: impl Into<String>) -> Self {
        Self {
            key,
            response: response.into(),
            model: model.into(),
            provider: None,
            temperature: None,
            created_at: Utc::now(),
            expires_at: None,
            hit_count: 0,
            tokens_prompt: None,
            tokens_completion: None,
            finish_reason: None,
            latency_ms: None,
            reasoning: None,
            streamed_response: None,
            deltas: Vec::new(),
            tool_calls: None,
            tokens_cached: None,
            tokens_reasoning: None,
        }
    }

    /// Records how a streamed reply arrived, from its pieces in order: `(is_reasoning, text,
    /// offset_us)`. Sets `reasoning` to the reasoning pieces' concatenation, and
    /// `streamed_response` to the text pieces' when that is not `response` itself (set
    /// `response` first), so the texts always agree with [`deltas`](Self::deltas).
    pub fn set_pieces<'a>(&mut self, pieces: impl IntoIterator<Item = (bool, &'a str, u64)>) {
        let mut streamed = String::new();
        let mut reasoning: Option<String> = None;
        self.deltas.clear();
        for (is_reasoning, text, offset_us) in pieces {
            let target = if is_reasoning {
                reasoning.get_or_insert_with(String::new)
            } else {
                &mut streamed
            };
            target.push_str(text);
            self.deltas.push(CachedDelta {
                reasoning: is_reasoning,
                end: target.len() as u64,
                offset_us,
            });
        }
        self.streamed_response =
            (!self.deltas.is_empty() && streamed != *self.response).then_some(streamed);
        self.reasoning = reasoning;
    }

    /// The streamed response text the text pieces point into.
    fn streamed_text(&self) -> &str {
        self.streamed_response.as_deref().unwrap_or(&self.response)
    }

    /// The pieces of a streamed reply with their text, in the order they arrived (none when
    /// the reply was not streamed). An entry served by a cache always has pieces that cover
    /// the streamed text and `reasoning` exactly (checked when it is read); on an entry built
    /// by hand whose deltas do not fit its texts, the pieces stop at the first that does not.
    pub fn pieces(&self) -> impl Iterator<Item = CachedPiece<'_>> + '_ {
        let mut at = [0usize; 2];
        let texts = [
            self.streamed_text(),
            self.reasoning.as_deref().unwrap_or(""),
        ];
        self.deltas.iter().map_while(move |d| {
            let kind = usize::from(d.reasoning);
            let end = usize::try_from(d.end).ok()?;
            let text = texts[kind].get(at[kind]..end)?;
            at[kind] = end;
            Some(CachedPiece {
                reasoning: d.reasoning,
                text,
                offset_us: d.offset_us,
            })
        })
    }

    /// Whether `deltas` cover the streamed text and `reasoning` exactly: every piece ends on
    /// a character boundary no earlier than the previous piece of its kind, and the last piece
    /// of each kind ends at the end of its text. True when there are no deltas and no
    /// streamed text.
    pub(crate) fn deltas_fit(&self) -> bool {
        if self.deltas.is_empty() {
            return self.streamed_response.is_none();
        }
        let lens = [
            self.streamed_text().len(),
            self.reasoning.as_ref().map_or(0, String::len),
        ];
        if self.pieces().count() != self.deltas.len() {
            return false;
        }
        (0..2).all(|kind| {
            let last = self
                .deltas
                .iter()
                .rev()
                .find(|d| usize::from(d.reasoning) == kind)
                .map_or(0, |d| d.end as usize);
            last == lens[kind]
        })
    }

    /// Whether the entry has something to serve: a response that is not blank, or tool
    /// calls. Caches refuse to store, and never serve, an entry without.
    pub fn answers(&self) -> bool {
        !self.response.trim().is_empty() || self.tool_calls.is_some()
    }

    /// Whether the entry has expired at `now` (an entry expiring exactly at `now` has).
    pub fn is_expired_at(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|e| now >= e)
    }

    /// Feeds the entry's content to `h`: every field a hit returns to its caller, in a fixed
    /// order, each string with its length and each `Option` with a tag, with `float` applied
    /// to the floats. This is the one list of what the stored checksum covers (see the module
    /// doc): a field added to `CachedResponse` is added here, and the destructuring below
    /// does not compile until it is. `hit_count` is deliberately left out.
    fn feed_content(&self, h: &mut Xxh3, float: impl Fn(Option<f64>) -> Option<f64>) {
        let Self {
            key,
            response,
            model,
            provider,
            temperature,
            created_at,
            expires_at,
            hit_count: _,
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
        } = self;
        fn text(h: &mut Xxh3, s: &str) {
            h.update(&(s.len() as u64).to_le_bytes());
            h.update(s.as_bytes());
        }
        fn tag(h: &mut Xxh3, present: bool) {
            h.update(&[u8::from(present)]);
        }
        fn opt_u64(h: &mut Xxh3, v: Option<u64>) {
            tag(h, v.is_some());
            if let Some(v) = v {
                h.update(&v.to_le_bytes());
            }
        }
        fn time(h: &mut Xxh3, t: &DateTime<Utc>) {
            h.update(&t.timestamp().to_le_bytes());
            h.update(&t.timestamp_subsec_nanos().to_le_bytes());
        }
        h.update(key.as_bytes());
        text(h, response);
        text(h, model);
        tag(h, provider.is_some());
        if let Some(p) = provider {
            text(h, p);
        }
        opt_u64(h, float(*temperature).map(f64::to_bits));
        time(h, created_at);
        tag(h, expires_at.is_some());
        if let Some(t) = expires_at {
            time(h, t);
        }
        opt_u64(h, *tokens_prompt);
        opt_u64(h, *tokens_completion);
        tag(h, finish_reason.is_some());
        if let Some(r) = finish_reason {
            text(h, r);
        }
        opt_u64(h, float(*latency_ms).map(f64::to_bits));
        tag(h, reasoning.is_some());
        if let Some(r) = reasoning {
            text(h, r);
        }
        tag(h, streamed_response.is_some());
        if let Some(r) = streamed_response {
            text(h, r);
        }
        tag(h, tool_calls.is_some());
        if let Some(calls) = tool_calls {
            text(h, calls);
        }
        h.update(&(deltas.len() as u64).to_le_bytes());
        for d in deltas {
            h.update(&[u8::from(d.reasoning)]);
            h.update(&d.end.to_le_bytes());
            h.update(&d.offset_us.to_le_bytes());
        }
        // Fed only when present, so entries written before these counts existed keep their
        // checksums.
        if tokens_cached.is_some() || tokens_reasoning.is_some() {
            opt_u64(h, *tokens_cached);
            opt_u64(h, *tokens_reasoning);
        }
    }

    /// The checksum of the entry's content as it is (an entry just read).
    pub(crate) fn content_checksum(&self) -> u64 {
        let mut h = Xxh3::new();
        self.feed_content(&mut h, |f| f);
        h.digest()
    }

    /// The checksum of the entry's content as a reader of its JSON will find it: floats taken
    /// through `serde_json`'s writer and reader (non-finite ones become `null`).
    fn stored_checksum(&self) -> u64 {
        let mut h = Xxh3::new();
        self.feed_content(&mut h, |f| {
            let text = serde_json::to_vec(&f?).ok()?;
            serde_json::from_slice::<Option<f64>>(&text).ok()?
        });
        h.digest()
    }

    /// Approximate memory held by the entry, in bytes (what the cache's byte bound counts).
    pub fn approx_size(&self) -> u64 {
        const OVERHEAD: usize = 160;
        (OVERHEAD
            + self.response.len()
            + self.model.len()
            + self.provider.as_ref().map_or(0, String::len)
            + self.finish_reason.as_ref().map_or(0, String::len)
            + self.reasoning.as_ref().map_or(0, String::len)
            + self.streamed_response.as_ref().map_or(0, String::len)
            + self.tool_calls.as_ref().map_or(0, String::len)
            + self.deltas.len() * std::mem::size_of::<CachedDelta>()) as u64
    }
}

/// The field that carries the checksum, and the algorithm tag its value starts with.
const CHECKSUM_FIELD: &str = "checksum";
const CHECKSUM_TAG: &str = "xxh3:";

/// Writes `entry` in the stored form (see the module doc) to `out`.
pub(crate) fn encode(entry: &CachedResponse, out: &mut Vec<u8>) -> serde_json::Result<()> {
    let start = out.len();
    serde_json::to_writer(&mut *out, entry)?;
    // A struct is written as one object, so the last byte is its closing brace.
    if out.last() != Some(&b'}') || out.len() - start < 2 {
        out.truncate(start);
        return Err(serde::ser::Error::custom("an entry is not a JSON object"));
    }
    out.pop();
    let sum = entry.stored_checksum();
    write!(out, ",\"{CHECKSUM_FIELD}\":\"{CHECKSUM_TAG}{sum:016x}\"}}")
        .map_err(serde_json::Error::io)
}

/// The digest of a `checksum` value (`xxh3:` and 16 lowercase hex digits); `None` if it is not
/// one.
pub(crate) fn parse_checksum(value: &str) -> Option<u64> {
    let hex = value.strip_prefix(CHECKSUM_TAG)?;
    let lower_hex = |c: u8| c.is_ascii_digit() || (b'a'..=b'f').contains(&c);
    if hex.len() != 16 || !hex.bytes().all(lower_hex) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// What a stored entry turned out to be.
#[derive(Debug)]
pub(crate) enum Decoded {
    /// A complete entry for the expected key whose checksum matches its content.
    Verified(CachedResponse),
    /// A complete entry for the expected key written before checksums existed (no
    /// `checksum` field): served, and rewritten with one.
    Unchecked(CachedResponse),
    /// Anything else: not JSON, not an entry, another key, an empty response, a malformed
    /// checksum or one that does not match the content.
    Corrupt,
}

/// Reads `bytes` as the stored entry of `key` (whose 64 hex digits are `key_hex`) and
/// verifies it.
pub(crate) fn decode(bytes: &[u8], key: &CacheKey, key_hex: &str) -> Decoded {
    // The fast reader handles what `encode` writes; serde_json has the last word on anything
    // else (and reads the checksum in a second, shallow pass).
    // `Some(None)`: a `checksum` field that is not one.
    let fast = crate::fast_json::parse(bytes, key, key_hex).map(|(e, sum)| (e, sum.map(Some)));
    let read = fast.or_else(|| {
        #[derive(Deserialize)]
        struct Checksum {
            #[serde(default, rename = "checksum")]
            value: Option<String>,
        }
        let entry = serde_json::from_slice::<CachedResponse>(bytes).ok()?;
        let stored = serde_json::from_slice::<Checksum>(bytes).ok()?.value;
        Some((entry, stored.map(|text| parse_checksum(&text))))
    });
    let Some((entry, sum)) = read else {
        return Decoded::Corrupt;
    };
    if entry.key != *key || !entry.answers() || !entry.deltas_fit() {
        return Decoded::Corrupt;
    }
    match sum {
        None => Decoded::Unchecked(entry),
        Some(Some(sum)) if sum == entry.content_checksum() => Decoded::Verified(entry),
        Some(_) => Decoded::Corrupt,
    }
}

/// Deserializers that read the same JSON as the derived ones, with fewer allocations and a
/// fast path for the timestamps this crate writes (every disk read parses them).
mod de {
    use std::fmt;
    use std::sync::Arc;

    use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, Utc};
    use serde::Deserializer;
    use serde::de::{self, Visitor};

    /// A string straight into one `Arc<str>` allocation (no intermediate `String`).
    pub(super) fn arc_str<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<str>, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Arc<str>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Arc<str>, E> {
                Ok(Arc::from(v))
            }
        }
        d.deserialize_str(V)
    }

    /// An RFC 3339 timestamp, as chrono's own `Deserialize` for `DateTime<Utc>` reads it.
    pub(super) fn utc<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        d.deserialize_str(UtcVisitor)
    }

    /// An optional RFC 3339 timestamp (`null`: `None`).
    pub(super) fn opt_utc<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<DateTime<Utc>>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Option<DateTime<Utc>>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 date and time string or null")
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                utc(d).map(Some)
            }
        }
        d.deserialize_option(V)
    }

    struct UtcVisitor;

    impl Visitor<'_> for UtcVisitor {
        type Value = DateTime<Utc>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an RFC 3339 formatted date and time string")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<DateTime<Utc>, E> {
            parse_utc(v).map_err(E::custom)
        }
    }

    /// Parses an RFC 3339 timestamp exactly as chrono's `DateTime<FixedOffset>::from_str`
    /// followed by a conversion to UTC, with a fast path for the canonical
    /// `YYYY-MM-DDTHH:MM:SS[.fraction]Z` form that chrono writes.
    pub(crate) fn parse_utc(s: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
        if let Some(t) = parse_canonical_utc(s.as_bytes()) {
            return Ok(t);
        }
        s.parse::<DateTime<FixedOffset>>()
            .map(|t| t.with_timezone(&Utc))
    }

    /// `YYYY-MM-DDTHH:MM:SS[.d{1,9}]Z`; `None` for anything else (including leap seconds),
    /// which the caller hands to chrono's general parser.
    fn parse_canonical_utc(b: &[u8]) -> Option<DateTime<Utc>> {
        if b.len() < 20
            || b[4] != b'-'
            || b[7] != b'-'
            || b[10] != b'T'
            || b[13] != b':'
            || b[16] != b':'
            || b[b.len() - 1] != b'Z'
        {
            return None;
        }
        let num = |digits: &[u8]| -> Option<u32> {
            digits.iter().try_fold(0u32, |n, &c| {
                c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
            })
        };
        let year = num(&b[0..4])?;
        let month = num(&b[5..7])?;
        let day = num(&b[8..10])?;
        let hour = num(&b[11..13])?;
        let minute = num(&b[14..16])?;
        let second = num(&b[17..19])?;
        let nanos = match &b[19..b.len() - 1] {
            [] => 0,
            [b'.', digits @ ..] if (1..=9).contains(&digits.len()) => {
                num(digits)? * 10u32.pow(9 - digits.len() as u32)
            }
            _ => return None,
        };
        if second > 59 {
            return None;
        }
        let date = NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)?;
        let time = NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)?;
        Some(DateTime::from_naive_utc_and_offset(
            NaiveDateTime::new(date, time),
            Utc,
        ))
    }

    #[cfg(test)]
    mod tests {
        use proptest::prelude::Strategy as _;

        use super::*;

        #[test]
        fn fast_timestamps_agree_with_chrono() {
            let general = |s: &str| {
                s.parse::<DateTime<FixedOffset>>()
                    .map(|t| t.with_timezone(&Utc))
            };
            for s in [
                "2025-11-24T03:08:01Z",
                "2025-11-24T03:08:01.5Z",
                "2025-11-24T03:08:01.123Z",
                "2025-11-24T03:08:01.123456Z",
                "2025-11-24T03:08:01.123456789Z",
                "0001-01-01T00:00:00Z",
                "9999-12-31T23:59:59.999999999Z",
                "2024-02-29T12:00:00Z",
                "2023-02-29T12:00:00Z",
                "2025-13-01T00:00:00Z",
                "2025-11-24T24:00:00Z",
                "2025-11-24T23:60:00Z",
                "2016-12-31T23:59:60Z",
                "2025-11-24T03:08:01.Z",
                "2025-11-24T03:08:01.1234567891Z",
                "2025-11-24t03:08:01z",
                "2025-11-24 03:08:01Z",
                "2025-11-24T03:08:01+02:00",
                "2025-11-24T03:08:01.25-05:30",
                "+2025-11-24T03:08:01Z",
                "2025-1a-24T03:08:01Z",
                "garbage",
                "",
            ] {
                match (parse_utc(s), general(s)) {
                    (Ok(a), Ok(b)) => assert_eq!(a, b, "{s}"),
                    (Err(_), Err(_)) => {}
                    (a, b) => panic!("{s}: fast {a:?}, chrono {b:?}"),
                }
            }
            // Every timestamp chrono writes reads back through the fast path.
            let t = Utc::now();
            for nanos in [0, 1, 120_000_000, 123_456_000, 999_999_999] {
                let t = t.date_naive().and_hms_nano_opt(1, 2, 3, nanos);
                let t = DateTime::<Utc>::from_naive_utc_and_offset(t.expect("valid"), Utc);
                let text = serde_json::to_string(&t).expect("json");
                let text = text.trim_matches('"');
                assert_eq!(parse_canonical_utc(text.as_bytes()), Some(t), "{text}");
            }
        }

        /// `parse_utc` against chrono's parser: the value or the refusal is the same.
        fn agrees_with_chrono(s: &str) -> Result<(), proptest::test_runner::TestCaseError> {
            let chrono = s
                .parse::<DateTime<FixedOffset>>()
                .map(|t| t.with_timezone(&Utc));
            match (parse_utc(s), chrono) {
                (Ok(a), Ok(b)) => proptest::prop_assert_eq!(a, b, "{}", s),
                (Err(_), Err(_)) => {}
                (a, b) => proptest::prop_assert!(false, "{s}: ours {a:?}, chrono {b:?}"),
            }
            Ok(())
        }

        proptest::proptest! {
            #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2048))]

            /// Every timestamp chrono writes (any instant of years 0..=9999, any nanoseconds)
            /// reads back as itself, through the fast path.
            #[test]
            fn reads_every_timestamp_chrono_writes(
                secs in -62_167_219_200i64..253_402_300_800,
                nanos in proptest::prop_oneof![
                    proptest::prelude::Just(0u32),
                    (0u32..1000).prop_map(|n| n * 1_000_000),
                    (0u32..1_000_000).prop_map(|n| n * 1000),
                    0u32..1_000_000_000,
                ],
            ) {
                let t = DateTime::<Utc>::from_timestamp(secs, nanos).expect("in range");
                let text = serde_json::to_string(&t).expect("json");
                let text = text.trim_matches('"');
                proptest::prop_assert_eq!(parse_canonical_utc(text.as_bytes()), Some(t));
                agrees_with_chrono(text)?;
            }

            /// Near-misses of the canonical form (a character replaced, inserted or removed,
            /// other offsets) get chrono's answer.
            #[test]
            fn agrees_with_chrono_on_near_misses(
                secs in 0i64..253_402_300_800,
                nanos in 0u32..1_000_000_000,
                at in proptest::prelude::any::<proptest::sample::Index>(),
                c in proptest::prop_oneof![
                    proptest::char::range('0', '9'),
                    proptest::prelude::Just('-'),
                    proptest::prelude::Just(':'),
                    proptest::prelude::Just('.'),
                    proptest::prelude::Just('Z'),
                    proptest::prelude::Just('z'),
                    proptest::prelude::Just('T'),
                    proptest::prelude::Just('+'),
                    proptest::prelude::Just(' '),
                    proptest::prelude::any::<char>(),
                ],
                edit in 0u8..4,
            ) {
                let t = DateTime::<Utc>::from_timestamp(secs, nanos).expect("in range");
                let mut text: Vec<char> = t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
                    .chars()
                    .collect();
                let i = at.index(text.len());
                match edit {
                    0 => text[i] = c,
                    1 => text.insert(i, c),
                    2 => {
                        text.remove(i);
                    }
                    _ => {
                        // Another offset instead of `Z`.
                        text.pop();
                        text.extend(format!("{}{:02}:{:02}", c, i % 24, i % 60).chars());
                    }
                }
                let text: String = text.into_iter().collect();
                agrees_with_chrono(&text)?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::fast_json::tests::arb_entry;

    fn decode_for(bytes: &[u8], key: &CacheKey) -> Decoded {
        decode(bytes, key, &key.to_hex())
    }

    /// Everything a hit returns except the hit count, with floats compared by bits.
    fn same_content(a: &CachedResponse, b: &CachedResponse) -> bool {
        let (mut a, mut b) = (a.clone(), b.clone());
        a.hit_count = 0;
        b.hit_count = 0;
        let bits = |e: &CachedResponse| {
            (
                e.temperature.map(f64::to_bits),
                e.latency_ms.map(f64::to_bits),
            )
        };
        bits(&a) == bits(&b) && {
            // PartialEq on floats, now known to be bit-equal (NaN is not read back).
            a.temperature = None;
            a.latency_ms = None;
            b.temperature = None;
            b.latency_ms = None;
            a == b
        }
    }

    /// Gives a blank response a text (a blank one is never stored), keeping its pieces.
    fn non_blank(e: &mut CachedResponse) {
        if e.response.trim().is_empty() {
            if !e.deltas.is_empty() && e.streamed_response.is_none() {
                e.streamed_response = Some(e.response.to_string());
            }
            e.response = "x".into();
        }
    }

    fn sample() -> CachedResponse {
        let key = CacheKey::builder("t").message("user", "hi").finish();
        let mut e =
            CachedResponse::new(key, "The morning sun.\nLine \"two\"\t\\ end é ✓ \u{1}", "m");
        e.provider = Some("ollama".to_owned());
        e.temperature = Some(0.8);
        e.expires_at = Some(e.created_at + chrono::Duration::seconds(60));
        e.hit_count = 3;
        e.tokens_prompt = Some(900);
        e.tokens_completion = Some(12);
        e.finish_reason = Some("stop".to_owned());
        e.latency_ms = Some(12_171.220_160_481_445);
        e
    }

    #[test]
    fn cached_and_reasoning_counts_round_trip_and_older_entries_keep_their_checksum() {
        let plain = sample();
        let mut old = Vec::new();
        encode(&plain, &mut old).expect("encode");
        let text = String::from_utf8(old.clone()).expect("utf8");
        assert!(!text.contains("tokens_cached"), "{text}");
        assert!(matches!(decode_for(&old, &plain.key), Decoded::Verified(_)));
        let mut e = sample();
        e.tokens_cached = Some(400);
        e.tokens_reasoning = Some(100);
        let mut out = Vec::new();
        encode(&e, &mut out).expect("encode");
        assert_ne!(e.content_checksum(), plain.content_checksum());
        match decode_for(&out, &e.key) {
            Decoded::Verified(back) => {
                assert_eq!(
                    (back.tokens_cached, back.tokens_reasoning),
                    (Some(400), Some(100))
                );
            }
            other => panic!("{other:?}"),
        }
        // A changed count no longer verifies.
        let tampered = String::from_utf8(out)
            .expect("utf8")
            .replace("\"tokens_cached\":400", "\"tokens_cached\":4");
        assert!(!matches!(
            decode_for(tampered.as_bytes(), &e.key),
            Decoded::Verified(_)
        ));
    }

    #[test]
    fn encode_appends_the_checksum_to_serde_jsons_object() {
        let e = sample();
        let mut out = Vec::new();
        encode(&e, &mut out).expect("encode");
        let plain = serde_json::to_vec(&e).expect("json");
        assert_eq!(out[..plain.len() - 1], plain[..plain.len() - 1]);
        let tail = std::str::from_utf8(&out[plain.len() - 1..]).expect("ascii");
        assert!(
            tail.starts_with(",\"checksum\":\"xxh3:") && tail.ends_with("\"}"),
            "{tail}"
        );
        assert_eq!(tail.len(), ",\"checksum\":\"xxh3:\"}".len() + 16);
        match decode_for(&out, &e.key) {
            Decoded::Verified(back) => assert!(same_content(
                &back,
                &serde_json::from_slice(&plain).expect("json")
            )),
            other => panic!("{other:?}"),
        }
        // The same checksum through the serde_json path (whitespace forces it).
        let mut spaced = b" ".to_vec();
        spaced.extend_from_slice(&out);
        assert!(matches!(decode_for(&spaced, &e.key), Decoded::Verified(_)));
        // Malformed checksums are corrupt, on either path.
        for bad in [
            "xxh3:0",
            "XXH3:0123456789abcdef",
            "xxh3:0123456789ABCDEF",
            "sha256:00",
        ] {
            let text = String::from_utf8(out.clone()).expect("utf-8");
            let at = text.find("xxh3:").expect("tag");
            let damaged = format!("{}{bad}\"}}", &text[..at]);
            assert!(
                matches!(decode_for(damaged.as_bytes(), &e.key), Decoded::Corrupt),
                "{damaged}"
            );
            assert!(matches!(
                decode_for(format!(" {damaged}").as_bytes(), &e.key),
                Decoded::Corrupt
            ));
        }
        // No checksum at all: an entry from before checksums, served unchecked.
        assert!(matches!(decode_for(&plain, &e.key), Decoded::Unchecked(_)));
    }

    /// `sample()` as a streamed reply with reasoning.
    fn streamed_sample() -> CachedResponse {
        let mut e = sample();
        e.set_pieces([
            (true, "Weigh the tide.", 800),
            (false, "The morning sun.", 1_200),
            (true, " Then é.", 1_300),
            (false, "\nLine ✓", 1_900),
        ]);
        e
    }

    #[test]
    fn pieces_give_back_what_set_pieces_took() {
        let e = streamed_sample();
        assert_eq!(
            e.streamed_response.as_deref(),
            Some("The morning sun.\nLine ✓")
        );
        assert_eq!(e.reasoning.as_deref(), Some("Weigh the tide. Then é."));
        let pieces: Vec<_> = e
            .pieces()
            .map(|p| (p.reasoning, p.text, p.offset_us))
            .collect();
        assert_eq!(
            pieces,
            [
                (true, "Weigh the tide.", 800),
                (false, "The morning sun.", 1_200),
                (true, " Then é.", 1_300),
                (false, "\nLine ✓", 1_900),
            ]
        );
        assert!(e.deltas_fit());
        assert_eq!(sample().pieces().count(), 0);
        // Pieces that spell `response` itself do not store it twice.
        let mut same = sample();
        let text = same.response.clone();
        let (a, b) = text.split_at(5);
        same.set_pieces([(false, a, 10), (false, b, 20)]);
        assert_eq!(same.streamed_response, None);
        assert_eq!(same.pieces().map(|p| p.text).collect::<String>(), &*text);
    }

    /// Deltas that do not cover the texts exactly are corrupt even under a matching checksum.
    #[test]
    fn deltas_that_do_not_fit_their_texts_are_corrupt() {
        let good = streamed_sample();
        let damage: [fn(&mut CachedResponse); 6] = [
            |e| e.deltas[3].end -= 3,                  // short of the response's end
            |e| e.deltas[3].end = e.deltas[1].end - 1, // before the previous piece
            |e| e.deltas[2].end -= 2,                  // inside `é`
            |e| e.reasoning = None,                    // reasoning pieces without reasoning
            |e| e.deltas.truncate(2),                  // reasoning text no piece covers
            |e| e.deltas.clear(),                      // streamed text without pieces
        ];
        for (i, f) in damage.iter().enumerate() {
            let mut e = good.clone();
            f(&mut e);
            assert!(!e.deltas_fit(), "case {i}");
            let mut out = Vec::new();
            encode(&e, &mut out).expect("encode");
            assert!(
                matches!(decode_for(&out, &e.key), Decoded::Corrupt),
                "case {i}"
            );
        }
    }

    /// Every position of a stored entry (plain and streamed), every truncation and a range of
    /// replacement bytes: never decoded as a changed entry.
    #[test]
    fn no_single_byte_change_or_cut_is_read_as_a_changed_entry() {
        for e in [sample(), streamed_sample()] {
            no_change_or_cut_is_read_as_changed(&e);
        }
    }

    fn no_change_or_cut_is_read_as_changed(e: &CachedResponse) {
        let mut out = Vec::new();
        encode(e, &mut out).expect("encode");
        let Decoded::Verified(original) = decode_for(&out, &e.key) else {
            panic!("undamaged entry does not verify");
        };
        let check = |bytes: &[u8]| match decode_for(bytes, &e.key) {
            Decoded::Verified(got) | Decoded::Unchecked(got) => assert!(
                same_content(&got, &original),
                "served changed: {}",
                String::from_utf8_lossy(bytes)
            ),
            Decoded::Corrupt => {}
        };
        for cut in 0..out.len() {
            check(&out[..cut]);
        }
        let values: Vec<u8> = (b'0'..=b'9')
            .chain(b'a'..=b'z')
            .chain([
                b' ', b'"', b',', b'\\', b'-', b'.', b'}', b'n', 0, 0xc3, 0xff,
            ])
            .collect();
        let mut damaged = out.clone();
        for i in 0..out.len() {
            for &v in values
                .iter()
                .chain(&[out[i] ^ 1, out[i] ^ 0x20, out[i] ^ 0x80])
            {
                damaged[i] = v;
                check(&damaged);
            }
            damaged[i] = out[i];
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever `encode` writes, `decode` verifies: no false alarms, whatever the text,
        /// floats (even those serde_json does not read back exactly, and non-finite ones) or
        /// times.
        #[test]
        fn everything_encode_writes_verifies(e in arb_entry(), odd in any::<u64>(), nonfinite in any::<bool>()) {
            let mut e = e;
            non_blank(&mut e);
            e.latency_ms = Some(f64::from_bits(odd)).filter(|f| f.is_finite());
            if nonfinite {
                e.temperature = Some(f64::NAN);
            }
            let mut out = Vec::new();
            encode(&e, &mut out).expect("encode");
            let plain: CachedResponse = serde_json::from_slice(&serde_json::to_vec(&e).expect("json")).expect("json");
            match decode_for(&out, &e.key) {
                Decoded::Verified(back) => prop_assert!(same_content(&back, &plain)),
                other => prop_assert!(false, "{other:?}"),
            }
        }

        /// Any byte of any stored entry replaced, or the entry cut: read unchanged or corrupt.
        #[test]
        fn a_damaged_entry_is_read_unchanged_or_corrupt(
            e in arb_entry(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut e = e;
            non_blank(&mut e);
            let mut out = Vec::new();
            encode(&e, &mut out).expect("encode");
            let Decoded::Verified(original) = decode_for(&out, &e.key) else {
                return Err(TestCaseError::fail("undamaged entry does not verify"));
            };
            let mut damaged = out.clone();
            damaged[at.index(out.len())] = byte;
            let cut = cut.index(out.len());
            for bytes in [&damaged[..], &out[..cut]] {
                if let Decoded::Verified(got) | Decoded::Unchecked(got) = decode_for(bytes, &e.key) {
                    prop_assert!(same_content(&got, &original), "{}", String::from_utf8_lossy(bytes));
                }
            }
        }
    }
}
