//! Reading one line of a metrics file into the fields the queries need.

use std::borrow::Cow;

#[cfg(test)]
use serde::Deserialize;

use crate::record::parse_timestamp;

/// The fields of one line the queries aggregate over; strings borrow from the line when
/// they hold no escapes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rec<'a> {
    pub(crate) agent: Cow<'a, str>,
    pub(crate) task: Cow<'a, str>,
    pub(crate) model: Cow<'a, str>,
    /// Seconds since the Unix epoch (UTC).
    pub(crate) secs: i64,
    /// Nanoseconds within the second.
    pub(crate) nanos: u32,
    pub(crate) latency_ms: f64,
    pub(crate) tokens_prompt: Option<u64>,
    pub(crate) tokens_completion: Option<u64>,
    pub(crate) cache_hit: bool,
    pub(crate) validation_passed: bool,
    pub(crate) retry_count: u32,
    pub(crate) has_error: bool,
    pub(crate) response_length: u64,
    pub(crate) template_version: Option<u32>,
    pub(crate) time_to_first_token_ms: Option<f64>,
    pub(crate) tokens_per_second: Option<f64>,
    pub(crate) cost_usd: Option<f64>,
    pub(crate) saved_usd: Option<f64>,
    pub(crate) tags: Vec<Cow<'a, str>>,
}

#[cfg(test)]
fn default_true() -> bool {
    true
}

/// The shape a line must have: the same as [`crate::PromptMetrics`], strings borrowed.
#[cfg(test)]
#[derive(Deserialize)]
struct SerdeRec<'a> {
    #[serde(borrow)]
    #[allow(dead_code)]
    prompt_hash: Cow<'a, str>,
    #[serde(borrow)]
    agent: Cow<'a, str>,
    #[serde(borrow)]
    task: Cow<'a, str>,
    #[serde(borrow)]
    model: Cow<'a, str>,
    #[allow(dead_code)]
    temperature: f64,
    #[serde(borrow)]
    timestamp: Cow<'a, str>,
    latency_ms: f64,
    #[serde(default)]
    tokens_prompt: Option<u64>,
    #[serde(default)]
    tokens_completion: Option<u64>,
    #[serde(default)]
    cache_hit: bool,
    #[serde(default = "default_true")]
    validation_passed: bool,
    #[serde(default)]
    retry_count: u32,
    #[serde(default, borrow)]
    error: Option<Cow<'a, str>>,
    #[serde(default)]
    response_length: u64,
    #[serde(default, borrow)]
    #[allow(dead_code)]
    language_detected: Option<Cow<'a, str>>,
    #[serde(default)]
    template_version: Option<u32>,
    #[serde(default, borrow)]
    #[allow(dead_code)]
    template_hash: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    #[allow(dead_code)]
    provider: Option<Cow<'a, str>>,
    #[serde(default)]
    time_to_first_token_ms: Option<f64>,
    #[serde(default)]
    tokens_per_second: Option<f64>,
    #[serde(default)]
    #[allow(dead_code)]
    tokens_cached: Option<u64>,
    #[serde(default)]
    #[allow(dead_code)]
    tokens_reasoning: Option<u64>,
    #[serde(default)]
    cost_usd: Option<f64>,
    #[serde(default)]
    saved_usd: Option<f64>,
    #[serde(default, borrow)]
    tags: Vec<Cow<'a, str>>,
}

/// Reads one line (without its newline) with serde; `None` when the line is not a record.
/// The reference the fast reader is tested against.
#[cfg(test)]
pub(crate) fn parse_line_serde(line: &[u8]) -> Option<Rec<'_>> {
    let r: SerdeRec<'_> = serde_json::from_slice(line).ok()?;
    let (secs, nanos) = parse_timestamp(r.timestamp.as_bytes())?;
    Some(Rec {
        agent: r.agent,
        task: r.task,
        model: r.model,
        secs,
        nanos,
        latency_ms: r.latency_ms,
        tokens_prompt: r.tokens_prompt,
        tokens_completion: r.tokens_completion,
        cache_hit: r.cache_hit,
        validation_passed: r.validation_passed,
        retry_count: r.retry_count,
        has_error: r.error.is_some(),
        response_length: r.response_length,
        template_version: r.template_version,
        time_to_first_token_ms: r.time_to_first_token_ms,
        tokens_per_second: r.tokens_per_second,
        cost_usd: r.cost_usd,
        saved_usd: r.saved_usd,
        tags: r.tags,
    })
}

/// Reads one line (without its newline); `None` when the line is not a record.
///
/// Accepts exactly the lines that `serde_json` accepts as a [`crate::PromptMetrics`] (the
/// tests hold the two to that; floats are correctly rounded, where serde_json's default
/// parser may differ in the last bit), but reads them in one pass without building the record:
/// strings without escapes are borrowed, unknown fields are skipped.
pub(crate) fn parse_line(line: &[u8]) -> Option<Rec<'_>> {
    let text = std::str::from_utf8(line).ok()?;
    Parser {
        s: text,
        b: line,
        i: 0,
    }
    .record()
}

/// The seven fields without a default (bits by index in [`FIELDS`]): `prompt_hash` to
/// `latency_ms`.
const REQUIRED: u32 = 0b111_1111;
/// Bytes that end a run of plain string content: quote, backslash and control characters.
static SPECIAL: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// The fields of a record, in the order the Python original and our writer put them.
const FIELDS: [&str; 25] = [
    "prompt_hash",
    "agent",
    "task",
    "model",
    "temperature",
    "timestamp",
    "latency_ms",
    "tokens_prompt",
    "tokens_completion",
    "cache_hit",
    "validation_passed",
    "retry_count",
    "error",
    "response_length",
    "language_detected",
    "template_version",
    "template_hash",
    "provider",
    "time_to_first_token_ms",
    "tokens_per_second",
    "tokens_cached",
    "tokens_reasoning",
    "cost_usd",
    "saved_usd",
    "tags",
];

/// [`FIELDS`] as they appear quoted in a line.
const QUOTED_FIELDS: [&[u8]; 25] = [
    b"\"prompt_hash\"",
    b"\"agent\"",
    b"\"task\"",
    b"\"model\"",
    b"\"temperature\"",
    b"\"timestamp\"",
    b"\"latency_ms\"",
    b"\"tokens_prompt\"",
    b"\"tokens_completion\"",
    b"\"cache_hit\"",
    b"\"validation_passed\"",
    b"\"retry_count\"",
    b"\"error\"",
    b"\"response_length\"",
    b"\"language_detected\"",
    b"\"template_version\"",
    b"\"template_hash\"",
    b"\"provider\"",
    b"\"time_to_first_token_ms\"",
    b"\"tokens_per_second\"",
    b"\"tokens_cached\"",
    b"\"tokens_reasoning\"",
    b"\"cost_usd\"",
    b"\"saved_usd\"",
    b"\"tags\"",
];

/// Nesting allowed inside an unknown field's value.
const MAX_DEPTH: usize = 100;

struct Parser<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Parser<'a> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        if self.peek() == Some(c) {
            self.i += 1;
            Some(())
        } else {
            None
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        if self.b.get(self.i..self.i + word.len()) == Some(word) {
            self.i += word.len();
            Some(())
        } else {
            None
        }
    }

    /// The raw span of a string (quotes excluded) and whether it holds escapes.
    fn string_span(&mut self) -> Option<(usize, usize, bool)> {
        self.eat(b'"')?;
        let start = self.i;
        let mut escaped = false;
        loop {
            let rest = self.b.get(self.i..)?;
            let stop = self.i + rest.iter().position(|&c| SPECIAL[usize::from(c)])?;
            if self.b[stop] < 0x20 {
                // Raw control characters are not allowed inside a JSON string.
                return None;
            }
            self.i = stop;
            if self.b[stop] == b'"' {
                self.i += 1;
                return Some((start, stop, escaped));
            }
            escaped = true;
            match *self.b.get(self.i + 1)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 2,
                b'u' => {
                    let hex = self.b.get(self.i + 2..self.i + 6)?;
                    if !hex.iter().all(u8::is_ascii_hexdigit) {
                        return None;
                    }
                    self.i += 6;
                }
                _ => return None,
            }
        }
    }

    /// A string value, decoded when it holds escapes.
    fn string(&mut self) -> Option<Cow<'a, str>> {
        let (start, end, escaped) = self.string_span()?;
        if escaped {
            serde_json::from_str::<String>(&self.s[start - 1..=end])
                .ok()
                .map(Cow::Owned)
        } else {
            Some(Cow::Borrowed(&self.s[start..end]))
        }
    }

    fn opt_string(&mut self) -> Option<Option<Cow<'a, str>>> {
        if self.peek() == Some(b'n') {
            self.literal(b"null")?;
            Some(None)
        } else {
            self.string().map(Some)
        }
    }

    /// A number token following JSON's grammar: its span and whether it is an integer.
    fn number_span(&mut self) -> Option<(&'a str, bool)> {
        let start = self.i;
        let _ = self.eat(b'-');
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => {
                while let Some(b'0'..=b'9') = self.peek() {
                    self.i += 1;
                }
            }
            _ => return None,
        }
        let mut integer = true;
        if self.peek() == Some(b'.') {
            integer = false;
            self.i += 1;
            let d = self.i;
            while let Some(b'0'..=b'9') = self.peek() {
                self.i += 1;
            }
            if self.i == d {
                return None;
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            integer = false;
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            let d = self.i;
            while let Some(b'0'..=b'9') = self.peek() {
                self.i += 1;
            }
            if self.i == d {
                return None;
            }
        }
        Some((&self.s[start..self.i], integer))
    }

    fn float(&mut self) -> Option<f64> {
        let (span, _) = self.number_span()?;
        let v: f64 = span.parse().ok()?;
        v.is_finite().then_some(v)
    }

    /// An unsigned integer as serde reads one: no sign, fraction or exponent.
    fn uint(&mut self) -> Option<u64> {
        let (span, integer) = self.number_span()?;
        if !integer {
            return None;
        }
        // serde_json reads `-0` as a float, so no negative token is an unsigned integer.
        if span.starts_with('-') {
            return None;
        }
        span.parse().ok()
    }

    fn opt_uint(&mut self) -> Option<Option<u64>> {
        if self.peek() == Some(b'n') {
            self.literal(b"null")?;
            Some(None)
        } else {
            self.uint().map(Some)
        }
    }

    fn opt_float(&mut self) -> Option<Option<f64>> {
        if self.peek() == Some(b'n') {
            self.literal(b"null")?;
            Some(None)
        } else {
            self.float().map(Some)
        }
    }

    /// A list of strings (`serde` reads `null` as no list, an error, so we do too).
    fn string_list(&mut self) -> Option<Vec<Cow<'a, str>>> {
        self.eat(b'[')?;
        self.ws();
        let mut out = Vec::new();
        if self.eat(b']').is_some() {
            return Some(out);
        }
        loop {
            self.ws();
            out.push(self.string()?);
            self.ws();
            match self.peek()? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Some(out);
                }
                _ => return None,
            }
        }
    }

    fn boolean(&mut self) -> Option<bool> {
        match self.peek()? {
            b't' => self.literal(b"true").map(|()| true),
            b'f' => self.literal(b"false").map(|()| false),
            _ => None,
        }
    }

    fn skip_value(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'"' => self.string_span().map(|_| ()),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'[' => {
                if depth >= MAX_DEPTH {
                    return None;
                }
                self.i += 1;
                self.ws();
                if self.eat(b']').is_some() {
                    return Some(());
                }
                loop {
                    self.ws();
                    self.skip_value(depth + 1)?;
                    self.ws();
                    match self.peek()? {
                        b',' => self.i += 1,
                        b']' => {
                            self.i += 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            b'{' => {
                if depth >= MAX_DEPTH {
                    return None;
                }
                self.i += 1;
                self.ws();
                if self.eat(b'}').is_some() {
                    return Some(());
                }
                loop {
                    self.ws();
                    self.string_span()?;
                    self.ws();
                    self.eat(b':')?;
                    self.ws();
                    self.skip_value(depth + 1)?;
                    self.ws();
                    match self.peek()? {
                        b',' => self.i += 1,
                        b'}' => {
                            self.i += 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            _ => self.number_span().map(|_| ()),
        }
    }

    fn record(mut self) -> Option<Rec<'a>> {
        let mut seen = 0u32;
        let mut next = 0usize;
        let mut rec = Rec {
            agent: Cow::Borrowed(""),
            task: Cow::Borrowed(""),
            model: Cow::Borrowed(""),
            secs: 0,
            nanos: 0,
            latency_ms: 0.0,
            tokens_prompt: None,
            tokens_completion: None,
            cache_hit: false,
            validation_passed: true,
            retry_count: 0,
            has_error: false,
            response_length: 0,
            template_version: None,
            time_to_first_token_ms: None,
            tokens_per_second: None,
            cost_usd: None,
            saved_usd: None,
            tags: Vec::new(),
        };
        let mut timestamp = Cow::Borrowed("");
        self.ws();
        self.eat(b'{')?;
        self.ws();
        if self.eat(b'}').is_none() {
            loop {
                self.ws();
                // Lines nearly always hold the fields in the usual order: try the next one
                // first, straight on the bytes.
                let expected = QUOTED_FIELDS
                    .get(next)
                    .filter(|q| self.b[self.i..].starts_with(q));
                let field = match expected {
                    Some(q) => {
                        self.i += q.len();
                        Some(next)
                    }
                    None => {
                        let key = self.string()?;
                        FIELDS.iter().position(|f| *f == key.as_ref())
                    }
                };
                self.ws();
                self.eat(b':')?;
                self.ws();
                next = field.map_or(next, |f| f + 1);
                let bit = match field {
                    Some(0) => {
                        self.string()?;
                        1 << 0
                    }
                    Some(1) => {
                        rec.agent = self.string()?;
                        1 << 1
                    }
                    Some(2) => {
                        rec.task = self.string()?;
                        1 << 2
                    }
                    Some(3) => {
                        rec.model = self.string()?;
                        1 << 3
                    }
                    Some(4) => {
                        self.float()?;
                        1 << 4
                    }
                    Some(5) => {
                        timestamp = self.string()?;
                        1 << 5
                    }
                    Some(6) => {
                        rec.latency_ms = self.float()?;
                        1 << 6
                    }
                    Some(7) => {
                        rec.tokens_prompt = self.opt_uint()?;
                        1 << 7
                    }
                    Some(8) => {
                        rec.tokens_completion = self.opt_uint()?;
                        1 << 8
                    }
                    Some(9) => {
                        rec.cache_hit = self.boolean()?;
                        1 << 9
                    }
                    Some(10) => {
                        rec.validation_passed = self.boolean()?;
                        1 << 10
                    }
                    Some(11) => {
                        rec.retry_count = u32::try_from(self.uint()?).ok()?;
                        1 << 11
                    }
                    Some(12) => {
                        rec.has_error = self.opt_string()?.is_some();
                        1 << 12
                    }
                    Some(13) => {
                        rec.response_length = self.uint()?;
                        1 << 13
                    }
                    Some(14) => {
                        self.opt_string()?;
                        1 << 14
                    }
                    Some(15) => {
                        rec.template_version = match self.opt_uint()? {
                            Some(v) => Some(u32::try_from(v).ok()?),
                            None => None,
                        };
                        1 << 15
                    }
                    Some(16) => {
                        self.opt_string()?;
                        1 << 16
                    }
                    Some(17) => {
                        self.opt_string()?;
                        1 << 17
                    }
                    Some(18) => {
                        rec.time_to_first_token_ms = self.opt_float()?;
                        1 << 18
                    }
                    Some(19) => {
                        rec.tokens_per_second = self.opt_float()?;
                        1 << 19
                    }
                    Some(20) => {
                        self.opt_uint()?;
                        1 << 20
                    }
                    Some(21) => {
                        self.opt_uint()?;
                        1 << 21
                    }
                    Some(22) => {
                        rec.cost_usd = self.opt_float()?;
                        1 << 22
                    }
                    Some(23) => {
                        rec.saved_usd = self.opt_float()?;
                        1 << 23
                    }
                    Some(24) => {
                        rec.tags = self.string_list()?;
                        1 << 24
                    }
                    _ => {
                        self.skip_value(0)?;
                        0
                    }
                };
                if seen & bit != 0 {
                    return None;
                }
                seen |= bit;
                self.ws();
                match self.peek()? {
                    b',' => self.i += 1,
                    b'}' => {
                        self.i += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        self.ws();
        if self.i != self.b.len() || seen & REQUIRED != REQUIRED {
            return None;
        }
        let (secs, nanos) = parse_timestamp(timestamp.as_bytes())?;
        rec.secs = secs;
        rec.nanos = nanos;
        Some(rec)
    }
}

/// Whether a line holds nothing but whitespace (such lines are neither records nor errors).
pub(crate) fn is_blank(line: &[u8]) -> bool {
    line.iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ORIGINAL_LINE: &str = r#"{"prompt_hash": "ab12", "agent": "writer", "task": "write_chapter", "model": "qwen3:30b", "temperature": 0.8, "timestamp": "2026-01-20T14:03:22.123456", "latency_ms": 8523.25, "tokens_prompt": 1200, "tokens_completion": null, "cache_hit": false, "validation_passed": true, "retry_count": 0, "error": null, "response_length": 4200, "language_detected": "en"}"#;

    /// A line as our writer puts it for a streamed reply: our fields after the Python
    /// original's, the stream timing last.
    const STREAMED_LINE: &str = r#"{"prompt_hash":"ab12","agent":"writer","task":"write_chapter","model":"qwen3:30b","temperature":0.8,"timestamp":"2026-01-20T14:03:22.123456+00:00","latency_ms":8523.25,"tokens_prompt":1200,"tokens_completion":2400,"cache_hit":false,"validation_passed":true,"retry_count":0,"error":null,"response_length":4200,"language_detected":null,"template_version":3,"provider":"ollama","time_to_first_token_ms":412.5,"tokens_per_second":297.1}"#;

    /// A line as our writer puts it for a priced, tagged call.
    const COST_LINE: &str = r#"{"prompt_hash":"ab12","agent":"writer","task":"write_chapter","model":"gpt-4o","temperature":0.8,"timestamp":"2026-01-20T14:03:22.123456+00:00","latency_ms":8523.25,"tokens_prompt":1200,"tokens_completion":2400,"cache_hit":false,"validation_passed":true,"retry_count":0,"error":null,"response_length":4200,"language_detected":null,"provider":"openai","time_to_first_token_ms":null,"tokens_per_second":null,"tokens_cached":400,"tokens_reasoning":100,"cost_usd":0.0265,"tags":["eval","nightly"]}"#;

    /// The fast parser and serde agree on whether a line is a record, and on its fields.
    /// Floats may differ in the last bit: ours are correctly rounded, serde_json's default
    /// parser is not always.
    fn check_same(line: &[u8]) {
        let fast = parse_line(line);
        let serde = parse_line_serde(line);
        let shown = String::from_utf8_lossy(line);
        match (fast, serde) {
            (Some(mut a), Some(mut b)) => {
                let close = |x: f64, y: f64| {
                    assert!(
                        (x - y).abs() <= 1e-14 * x.abs().max(y.abs()),
                        "line {shown:?}: {x} vs {y}"
                    );
                };
                close(a.latency_ms, b.latency_ms);
                a.latency_ms = 0.0;
                b.latency_ms = 0.0;
                for (x, y) in [
                    (&mut a.time_to_first_token_ms, &mut b.time_to_first_token_ms),
                    (&mut a.tokens_per_second, &mut b.tokens_per_second),
                    (&mut a.cost_usd, &mut b.cost_usd),
                    (&mut a.saved_usd, &mut b.saved_usd),
                ] {
                    assert_eq!(x.is_some(), y.is_some(), "line {shown:?}");
                    if let (Some(x), Some(y)) = (x, y) {
                        close(*x, *y);
                        *x = 0.0;
                        *y = 0.0;
                    }
                }
                assert_eq!(a, b, "line {shown:?}");
            }
            (a, b) => assert_eq!(a, b, "line {shown:?}"),
        }
    }

    #[test]
    fn fast_parser_agrees_with_serde_on_edge_cases() {
        let cases: Vec<String> = vec![
            ORIGINAL_LINE.into(),
            ORIGINAL_LINE.replace(", ", ",").replace(": ", ":"),
            format!("  {ORIGINAL_LINE}\r"),
            ORIGINAL_LINE.replace("\"agent\": \"writer\"", "\"agent\": \"wr\\u0069ter\""),
            ORIGINAL_LINE.replace("\"agent\"", "\"\\u0061gent\""),
            ORIGINAL_LINE.replace("\"agent\": \"writer\", ", ""),
            ORIGINAL_LINE.replace("\"error\": null", "\"error\": \"caf\\u00e9 timed out\""),
            ORIGINAL_LINE.replace("\"error\": null", "\"error\": 5"),
            ORIGINAL_LINE.replace("\"error\": null", "\"error\": \"\\ud800\""),
            ORIGINAL_LINE.replace("8523.25", "NaN"),
            ORIGINAL_LINE.replace("8523.25", "Infinity"),
            ORIGINAL_LINE.replace("8523.25", "1e400"),
            ORIGINAL_LINE.replace("8523.25", "-1E-3"),
            ORIGINAL_LINE.replace("8523.25", "8523"),
            ORIGINAL_LINE.replace("8523.25", "08523"),
            ORIGINAL_LINE.replace("8523.25", "8523."),
            ORIGINAL_LINE.replace("8523.25", "123456789012345678901234567890"),
            ORIGINAL_LINE.replace("1200", "-0"),
            ORIGINAL_LINE.replace("1200", "-1"),
            ORIGINAL_LINE.replace("1200", "1.0"),
            ORIGINAL_LINE.replace("1200", "1e3"),
            ORIGINAL_LINE.replace("1200", "18446744073709551616"),
            ORIGINAL_LINE.replace("\"retry_count\": 0", "\"retry_count\": 4294967296"),
            ORIGINAL_LINE.replace("\"retry_count\": 0", "\"retry_count\": 4294967295"),
            ORIGINAL_LINE.replace("\"cache_hit\": false", "\"cache_hit\": null"),
            ORIGINAL_LINE.replace(
                "\"cache_hit\": false",
                "\"cache_hit\": true, \"cache_hit\": true",
            ),
            ORIGINAL_LINE.replace(
                "\"language_detected\": \"en\"",
                "\"extra\": {\"a\": [1, 2.5, null, \"x\\n\"]}, \"z\": []",
            ),
            ORIGINAL_LINE.replace("\"language_detected\": \"en\"", "\"extra\": {\"a\": [1,]}"),
            ORIGINAL_LINE.replace(
                "\"language_detected\": \"en\"",
                "\"template_version\": 3, \"template_hash\": \"ff\", \"provider\": \"ollama\"",
            ),
            ORIGINAL_LINE.replace(
                "\"language_detected\": \"en\"",
                "\"template_version\": null",
            ),
            ORIGINAL_LINE.replace(
                "2026-01-20T14:03:22.123456",
                "2026-01-20T14:03:22.123456+02:00",
            ),
            ORIGINAL_LINE.replace("2026-01-20T14:03:22.123456", "yesterday"),
            ORIGINAL_LINE.replace("\"task\": \"write_chapter\"", "\"task\": \"a\tb\""),
            format!("{ORIGINAL_LINE} x"),
            format!("{ORIGINAL_LINE},"),
            format!("[{ORIGINAL_LINE}]"),
            ORIGINAL_LINE[..ORIGINAL_LINE.len() / 2].into(),
            "{}".into(),
            "".into(),
            "null".into(),
            COST_LINE.into(),
            COST_LINE.replace("0.0265", "null"),
            COST_LINE.replace("0.0265", "\"0.0265\""),
            COST_LINE.replace("[\"eval\",\"nightly\"]", "[]"),
            COST_LINE.replace("[\"eval\",\"nightly\"]", "null"),
            COST_LINE.replace("[\"eval\",\"nightly\"]", "[1]"),
            COST_LINE.replace("[\"eval\",\"nightly\"]", "[\"a\",]"),
            COST_LINE.replace("[\"eval\",\"nightly\"]", "[ \"e\\u0076al\" , \"x\" ]"),
            COST_LINE.replace("[\"eval\",\"nightly\"]", "\"eval\""),
            COST_LINE.replace("\"tokens_cached\":400", "\"tokens_cached\":-4"),
            COST_LINE.replace("\"tokens_reasoning\":100", "\"tokens_reasoning\":null"),
            COST_LINE.replace(
                "\"cost_usd\":0.0265",
                "\"cost_usd\":0.0265,\"saved_usd\":1.5",
            ),
            COST_LINE.replace(",\"tags\":[\"eval\",\"nightly\"]", ""),
            STREAMED_LINE.into(),
            STREAMED_LINE.replace("412.5", "null"),
            STREAMED_LINE.replace("297.1", "null"),
            STREAMED_LINE.replace("412.5", "412"),
            STREAMED_LINE.replace("412.5", "-0"),
            STREAMED_LINE.replace("412.5", "4.125e2"),
            STREAMED_LINE.replace("412.5", "NaN"),
            STREAMED_LINE.replace("412.5", "1e400"),
            STREAMED_LINE.replace("412.5", "\"412.5\""),
            STREAMED_LINE.replace("412.5", "true"),
            STREAMED_LINE.replace("412.5", "[]"),
            STREAMED_LINE.replace("297.1", "123456789012345678901234567890"),
            STREAMED_LINE.replace(
                "\"tokens_per_second\":297.1",
                "\"tokens_per_second\":297.1,\"time_to_first_token_ms\":1",
            ),
            STREAMED_LINE.replace(
                "\"time_to_first_token_ms\":412.5,\"tokens_per_second\":297.1",
                "\"tokens_per_second\":297.1,\"time_to_first_token_ms\":412.5",
            ),
            STREAMED_LINE.replace(
                "\"time_to_first_token_ms\"",
                "\"time_to_first_token_m\\u0073\"",
            ),
        ];
        for line in &cases {
            check_same(line.as_bytes());
        }
        assert!(parse_line(cases[0].as_bytes()).is_some());
        assert!(parse_line(cases[1].as_bytes()).is_some());
        assert_eq!(
            parse_line(cases[3].as_bytes()).map(|r| r.agent.into_owned()),
            Some("writer".to_owned())
        );
    }

    #[test]
    fn cost_and_tags_read_when_present_and_default_when_not() {
        let r = parse_line(COST_LINE.as_bytes()).expect("a record");
        assert_eq!(r.cost_usd, Some(0.0265));
        assert_eq!(r.saved_usd, None);
        assert_eq!(r.tags, vec!["eval", "nightly"]);
        let r = parse_line(ORIGINAL_LINE.as_bytes()).expect("a record");
        assert_eq!((r.cost_usd, r.saved_usd, r.tags.len()), (None, None, 0));
    }

    #[test]
    fn stream_timing_reads_when_present_and_is_none_when_not() {
        let r = parse_line(STREAMED_LINE.as_bytes()).expect("a record");
        assert_eq!(r.time_to_first_token_ms, Some(412.5));
        assert_eq!(r.tokens_per_second, Some(297.1));
        let nulls = STREAMED_LINE
            .replace("412.5", "null")
            .replace("297.1", "null");
        let r = parse_line(nulls.as_bytes()).expect("a record");
        assert_eq!(
            (r.time_to_first_token_ms, r.tokens_per_second),
            (None, None)
        );
        // The Python original's line has neither field.
        let r = parse_line(ORIGINAL_LINE.as_bytes()).expect("a record");
        assert_eq!(
            (r.time_to_first_token_ms, r.tokens_per_second),
            (None, None)
        );
        // A field given twice is not a record, as for serde.
        let twice = STREAMED_LINE.replace(
            "\"tokens_per_second\":297.1",
            "\"tokens_per_second\":297.1,\"time_to_first_token_ms\":1",
        );
        assert!(parse_line(twice.as_bytes()).is_none());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Cutting, overwriting or inserting bytes anywhere in a good line never makes the two
        /// readers disagree.
        #[test]
        fn mutated_lines_read_the_same(
            cut in 0usize..600,
            at in 0usize..600,
            byte in prop::sample::select(b"{}[]\",:0123456789.-+eEnulltrfas \\\t\x01\xc3\xa9".to_vec()),
            insert in any::<bool>(),
            shape in 0usize..4,
        ) {
            let base = match shape {
                0 => ORIGINAL_LINE.to_owned(),
                1 => ORIGINAL_LINE.replace(", ", ",").replace(": ", ":"),
                2 => COST_LINE.to_owned(),
                _ => STREAMED_LINE.to_owned(),
            };
            let mut line = base.into_bytes();
            let at = at.min(line.len());
            if insert {
                line.insert(at, byte);
            } else if at < line.len() {
                line[at] = byte;
            }
            check_same(&line);
            line.truncate(cut.min(line.len()));
            check_same(&line);
        }

        /// Any value of the stream timing fields, in any number form (or null, or left out),
        /// reads the same with both readers.
        #[test]
        fn stream_timing_values_read_the_same(
            ttft in prop::option::of(any::<f64>()),
            tps in prop::option::of(any::<f64>()),
            form in 0usize..3,
            leave_out in any::<bool>(),
        ) {
            let show = |v: Option<f64>| match v {
                None => "null".to_owned(),
                Some(v) => match form {
                    0 => format!("{v}"),
                    1 => format!("{v:e}"),
                    _ => format!("{v:.3}"),
                },
            };
            let mut line = STREAMED_LINE
                .replace("412.5", &show(ttft))
                .replace("297.1", &show(tps));
            if leave_out {
                line = line.replace(&format!(",\"tokens_per_second\":{}", show(tps)), "");
            }
            check_same(line.as_bytes());
            if let (Some(r), Some(v)) = (parse_line(line.as_bytes()), ttft) {
                prop_assert_eq!(r.time_to_first_token_ms.is_some(), v.is_finite());
            }
        }
    }
}
