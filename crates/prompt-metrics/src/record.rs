//! The metrics record and its on-disk timestamp format.

use chrono::{DateTime, Datelike, NaiveDate, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One record per generation (cache hits included), with the Python original's field names on disk.
///
/// Lines written by the Python original's collector (`json.dumps(asdict(m))`) read back: missing
/// optional fields take the Python original's defaults and a timestamp without a UTC offset means UTC.
/// `template_version`, `template_hash` and `provider` are ours; they are left out of a line
/// when `None`. `time_to_first_token_ms` and `tokens_per_second` are ours too; they are always
/// written (a number or `null`), and a line without them (the Python original's, or ours from
/// before streaming) reads them as `None`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptMetrics {
    /// Hash of the prompt (the Python original's cache key or template hash).
    pub prompt_hash: String,
    /// Agent name, e.g. `writer`.
    pub agent: String,
    /// Task name, e.g. `write_chapter`.
    pub task: String,
    /// Model name, e.g. `qwen3:30b`.
    pub model: String,
    /// Sampling temperature.
    pub temperature: f64,
    /// When the generation finished. Written as `2026-01-20T14:03:22.123456+00:00`.
    #[serde(
        serialize_with = "serialize_timestamp",
        deserialize_with = "deserialize_timestamp"
    )]
    pub timestamp: DateTime<Utc>,
    /// Wall-clock latency of the generation in milliseconds.
    pub latency_ms: f64,
    /// Prompt tokens, when the provider reported them.
    #[serde(default)]
    pub tokens_prompt: Option<u64>,
    /// Completion tokens, when the provider reported them.
    #[serde(default)]
    pub tokens_completion: Option<u64>,
    /// Whether the response came from the cache.
    #[serde(default)]
    pub cache_hit: bool,
    /// Whether the response passed validation.
    #[serde(default = "default_true")]
    pub validation_passed: bool,
    /// How many retries the generation needed.
    #[serde(default)]
    pub retry_count: u32,
    /// The error message, when the generation failed.
    #[serde(default)]
    pub error: Option<String>,
    /// Length of the response in characters.
    #[serde(default)]
    pub response_length: u64,
    /// Language detected in the response, if any.
    #[serde(default)]
    pub language_detected: Option<String>,
    /// Version of the template used, if the prompt came from a template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_version: Option<u32>,
    /// SHA-256 of the template file, if the prompt came from a template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_hash: Option<String>,
    /// Provider name (`ollama`, `openai`, ...), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Milliseconds from sending the request to the first delta (text or reasoning) of the
    /// reply, of the attempt whose reply was kept; `None` when the reply was not streamed
    /// (the non-streaming path, a cache hit, or a call that failed before any delta).
    #[serde(default)]
    pub time_to_first_token_ms: Option<f64>,
    /// Completion tokens per second of generation after the first token, by the rule of
    /// [`tokens_per_second`]; `None` when it is not known (see there).
    #[serde(default)]
    pub tokens_per_second: Option<f64>,
    /// Of the prompt tokens, those the provider read from its prompt cache, when it reported
    /// them (OpenAI's `prompt_tokens_details.cached_tokens`); left out of a line when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_cached: Option<u64>,
    /// Of the completion tokens, those spent on reasoning, when the provider reported them
    /// (OpenAI's `completion_tokens_details.reasoning_tokens`); left out of a line when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_reasoning: Option<u64>,
    /// What the call cost in USD by the price table ([`PriceTable::cost`](crate::PriceTable::cost)):
    /// 0 for a cache hit and for local models without a price, `None` (`null`) for a model
    /// without a price. Always written; a line without it (the Python original's, ours from
    /// before) reads as `None`.
    #[serde(default)]
    pub cost_usd: Option<f64>,
    /// What a cache hit saved in USD: the cost of the call whose reply it served. Left out of
    /// a line when `None` (every call that was not a hit, or a hit on an unpriced model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saved_usd: Option<f64>,
    /// The call's tags (`--tag`, a batch job's `tags`, the library's
    /// `GenerateOptions::tags`, the gateway's `X-Prompt-Tags`), for grouping and budgets.
    /// Always written (`[]` when none); a line without it reads as no tags.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// The one rule for [`PromptMetrics::tokens_per_second`]: the completion tokens over the
/// generation time after the first token, in seconds, that is
///
/// `tokens_completion / ((response_latency_ms - ttft_ms) / 1000)`
///
/// where `response_latency_ms` is the time from sending the request to the end of the reply
/// (the final frame of the stream) and `ttft_ms` the time from sending it to the first delta,
/// both of the same attempt — the one whose reply was kept, not the record's `latency_ms`,
/// which also counts earlier attempts, rendering and validation. The prompt's processing (the
/// wait for the first token) is left out, so the figure is the model's writing speed.
///
/// `None` when the completion tokens are unknown, when the reply was not streamed (no
/// `ttft_ms`: the non-streaming path cannot tell prompt processing from generation, so it
/// gives no figure rather than a different one), or when the generation time is not a
/// positive finite number (a reply that came in one delta, or inconsistent timings).
///
/// ```
/// use prompt_metrics::tokens_per_second;
///
/// // 300 tokens, first delta after 500 ms, reply complete after 2,500 ms: 300 / 2 s.
/// assert_eq!(tokens_per_second(Some(300), 2500.0, Some(500.0)), Some(150.0));
/// assert_eq!(tokens_per_second(None, 2500.0, Some(500.0)), None);
/// assert_eq!(tokens_per_second(Some(300), 2500.0, None), None);
/// assert_eq!(tokens_per_second(Some(300), 500.0, Some(500.0)), None);
/// ```
pub fn tokens_per_second(
    tokens_completion: Option<u64>,
    response_latency_ms: f64,
    ttft_ms: Option<f64>,
) -> Option<f64> {
    let tokens = tokens_completion?;
    let ttft = ttft_ms.filter(|t| t.is_finite() && *t >= 0.0)?;
    let generation_ms = response_latency_ms - ttft;
    if !(generation_ms.is_finite() && generation_ms > 0.0) {
        return None;
    }
    let rate = tokens as f64 / (generation_ms / 1000.0);
    rate.is_finite().then_some(rate)
}

fn default_true() -> bool {
    true
}

impl PromptMetrics {
    /// A record with the Python original's defaults: no tokens, no cache hit, validation passed, no retries,
    /// no error, empty response, timestamp now.
    pub fn new(
        prompt_hash: impl Into<String>,
        agent: impl Into<String>,
        task: impl Into<String>,
        model: impl Into<String>,
        temperature: f64,
        latency_ms: f64,
    ) -> Self {
        PromptMetrics {
            prompt_hash: prompt_hash.into(),
            agent: agent.into(),
            task: task.into(),
            model: model.into(),
            temperature,
            timestamp: Utc::now(),
            latency_ms,
            tokens_prompt: None,
            tokens_completion: None,
            cache_hit: false,
            validation_passed: true,
            retry_count: 0,
            error: None,
            response_length: 0,
            language_detected: None,
            template_version: None,
            template_hash: None,
            provider: None,
            time_to_first_token_ms: None,
            tokens_per_second: None,
            tokens_cached: None,
            tokens_reasoning: None,
            cost_usd: None,
            saved_usd: None,
            tags: Vec::new(),
        }
    }

    /// Sets the stream timing of the reply: [`time_to_first_token_ms`](Self::time_to_first_token_ms)
    /// to `ttft_ms` (`None` for a reply that was not streamed) and
    /// [`tokens_per_second`](Self::tokens_per_second) by the rule of [`tokens_per_second`] from
    /// this record's `tokens_completion`, so set the token counts first.
    ///
    /// `response_latency_ms` is the time from sending the request to the end of the reply, of
    /// the same attempt as `ttft_ms`. A `ttft_ms` that is negative or not finite is treated
    /// as unknown (`None`), so the record stays writable.
    ///
    /// ```
    /// use prompt_metrics::PromptMetrics;
    ///
    /// let mut m = PromptMetrics::new("3f2a", "writer", "write_chapter", "qwen3:30b", 0.8, 4200.0);
    /// m.tokens_completion = Some(600);
    /// m.set_stream_timing(Some(1000.0), 4000.0);
    /// assert_eq!(m.time_to_first_token_ms, Some(1000.0));
    /// assert_eq!(m.tokens_per_second, Some(200.0));
    /// ```
    pub fn set_stream_timing(&mut self, ttft_ms: Option<f64>, response_latency_ms: f64) {
        let ttft_ms = ttft_ms.filter(|t| t.is_finite() && *t >= 0.0);
        self.time_to_first_token_ms = ttft_ms;
        self.tokens_per_second =
            tokens_per_second(self.tokens_completion, response_latency_ms, ttft_ms);
    }

    /// The call's token counts as one [`TokenUsage`](crate::TokenUsage) for pricing; `None`
    /// when neither the prompt nor the completion count is known.
    pub fn usage(&self) -> Option<crate::TokenUsage> {
        crate::TokenUsage::from_counts(
            self.tokens_prompt,
            self.tokens_completion,
            self.tokens_cached,
            self.tokens_reasoning,
        )
    }

    /// The Python original's notion of success: validation passed and no error.
    pub fn is_success(&self) -> bool {
        self.validation_passed && self.error.is_none()
    }
}

/// Writes a timestamp the way [`PromptMetrics`] stores it, with chrono: microseconds and an
/// explicit `+00:00` offset (`2026-01-20T14:03:22.123456+00:00`), which every version of
/// Python's `datetime.fromisoformat` reads (years outside `0..=9999` are rejected before a
/// record is written). This runs on the writer thread, not on the caller's; see
/// docs/PERFORMANCE.md for why chrono's writer is fast enough and the reader is our own.
fn serialize_timestamp<S: Serializer>(ts: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&ts.to_rfc3339_opts(SecondsFormat::Micros, false))
}

fn deserialize_timestamp<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    let raw = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    parse_timestamp(raw.as_bytes())
        .and_then(|(secs, nanos)| DateTime::from_timestamp(secs, nanos))
        .ok_or_else(|| {
            serde::de::Error::custom(format_args!(
                "field `timestamp`: `{raw}` is not an ISO 8601 date-time"
            ))
        })
}

fn digits(s: &[u8], at: usize, n: usize) -> Option<u32> {
    let part = s.get(at..at + n)?;
    let mut v = 0u32;
    for &b in part {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(b - b'0');
    }
    Some(v)
}

/// Parses an ISO 8601 date-time as Python's `isoformat()` writes it, into seconds and
/// nanoseconds since the Unix epoch (UTC). The one reader of the format: the line reader of
/// every query and the deserializer of [`PromptMetrics`] both call it.
///
/// Hand-written rather than chrono's because it runs once per line of every query (~40 ns
/// against ~120–400 ns for chrono's parsers, measured in docs/PERFORMANCE.md); a proptest
/// holds it to chrono's results, rejects included.
///
/// Accepted: `YYYY-MM-DD`, then `T`, `t` or a space, then `HH:MM[:SS[.f{1,9}]]`, then
/// optionally `Z`, `z` or an offset `±HH[[:]MM[[:]SS]]`. No offset means UTC.
pub(crate) fn parse_timestamp(s: &[u8]) -> Option<(i64, u32)> {
    let year = digits(s, 0, 4)?;
    if s.get(4) != Some(&b'-') || s.get(7) != Some(&b'-') {
        return None;
    }
    let month = digits(s, 5, 2)?;
    let day = digits(s, 8, 2)?;
    if !matches!(s.get(10), Some(b'T' | b't' | b' ')) {
        return None;
    }
    let hour = digits(s, 11, 2)?;
    if s.get(13) != Some(&b':') {
        return None;
    }
    let minute = digits(s, 14, 2)?;
    let mut i = 16;
    let mut second = 0;
    let mut nanos = 0u32;
    if s.get(i) == Some(&b':') {
        second = digits(s, i + 1, 2)?;
        i += 3;
        if matches!(s.get(i), Some(b'.' | b',')) {
            i += 1;
            let start = i;
            while i < s.len() && s[i].is_ascii_digit() {
                if i - start < 9 {
                    nanos = nanos * 10 + u32::from(s[i] - b'0');
                }
                i += 1;
            }
            let n = i - start;
            if n == 0 || n > 9 {
                return None;
            }
            nanos *= 10u32.pow((9 - n) as u32);
        }
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut offset: i64 = 0;
    match s.get(i) {
        None => {}
        Some(b'Z' | b'z') => {
            i += 1;
        }
        Some(&sign @ (b'+' | b'-')) => {
            i += 1;
            let oh = digits(s, i, 2)?;
            i += 2;
            let mut om = 0;
            let mut os = 0;
            if i < s.len() {
                if s[i] == b':' {
                    i += 1;
                }
                om = digits(s, i, 2)?;
                i += 2;
                if i < s.len() {
                    if s[i] == b':' {
                        i += 1;
                    }
                    os = digits(s, i, 2)?;
                    i += 2;
                }
            }
            if oh > 23 || om > 59 || os > 59 {
                return None;
            }
            offset = i64::from(oh * 3600 + om * 60 + os);
            if sign == b'-' {
                offset = -offset;
            }
        }
        Some(_) => return None,
    }
    if i != s.len() {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(year as i32, month, day)?;
    let days = i64::from(date.num_days_from_ce()) - 719_163;
    let secs = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second) - offset;
    Some((secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Option<String> {
        parse_timestamp(s.as_bytes())
            .and_then(|(a, b)| DateTime::from_timestamp(a, b))
            .map(|d| d.to_rfc3339())
    }

    #[test]
    fn timestamps_parse_like_python_isoformat() {
        let cases = [
            (
                "2026-01-20T14:03:22.123456",
                Some("2026-01-20T14:03:22.123456+00:00"),
            ),
            ("2026-01-20T14:03:22", Some("2026-01-20T14:03:22+00:00")),
            (
                "2026-01-20 14:03:22.5",
                Some("2026-01-20T14:03:22.500+00:00"),
            ),
            ("2026-01-20T14:03", Some("2026-01-20T14:03:00+00:00")),
            (
                "2026-01-20T14:03:22.123456+00:00",
                Some("2026-01-20T14:03:22.123456+00:00"),
            ),
            (
                "2026-01-20T01:00:00+02:00",
                Some("2026-01-19T23:00:00+00:00"),
            ),
            (
                "2026-01-20T23:30:00-0130",
                Some("2026-01-21T01:00:00+00:00"),
            ),
            ("2026-01-20T14:03:22Z", Some("2026-01-20T14:03:22+00:00")),
            (
                "2026-01-20T14:03:22.123456789Z",
                Some("2026-01-20T14:03:22.123456789+00:00"),
            ),
            ("2024-02-29T00:00:00", Some("2024-02-29T00:00:00+00:00")),
            ("2026-02-29T00:00:00", None),
            ("2026-01-20T24:00:00", None),
            ("2026-01-20T14:03:22.", None),
            ("2026-01-20T14:03:22.1234567891", None),
            ("2026-01-20T14:03:22+2", None),
            ("2026-01-20T14:03:22 ", None),
            ("2026-01-20", None),
            ("", None),
            ("20260120T140322", None),
        ];
        for (input, want) in cases {
            assert_eq!(ts(input).as_deref(), want, "input {input:?}");
        }
    }

    #[test]
    fn parse_agrees_with_chrono_on_rfc3339() {
        let input = "1999-12-31T23:59:59.999999+05:30";
        let chrono_ts = DateTime::parse_from_rfc3339(input).map(|d| d.with_timezone(&Utc));
        let ours =
            parse_timestamp(input.as_bytes()).and_then(|(a, b)| DateTime::from_timestamp(a, b));
        assert_eq!(chrono_ts.ok(), ours);
    }

    fn format_timestamp(ts: &DateTime<Utc>) -> String {
        ts.to_rfc3339_opts(SecondsFormat::Micros, false)
    }

    #[test]
    fn formatted_timestamps_parse_back() {
        let t = DateTime::from_timestamp(1_768_917_802, 123_456_000).expect("valid");
        let s = format_timestamp(&t);
        assert_eq!(s, "2026-01-20T14:03:22.123456+00:00");
        let back = parse_timestamp(s.as_bytes()).and_then(|(a, b)| DateTime::from_timestamp(a, b));
        assert_eq!(back, Some(t));
    }

    /// The same grammar read with chrono's parsers: the reference `parse_timestamp` is held to.
    ///
    /// Chrono reads the date and time (`%Y-%m-%dT%H:%M[:%S[%.f]]`) and the offset (`%#z`,
    /// `+HH`, `+HHMM` or `+HH:MM`); what Python's `fromisoformat` (and ours) accepts beyond
    /// chrono's formats is mapped onto them here: `t` or a space between date and time, a comma
    /// before the fraction, seconds in the offset. Python's rules stricter than chrono's are
    /// checked here: at most 9 fraction digits (chrono skips more) and no leap second 60.
    /// The generator below writes every field at its fixed width (chrono would also read
    /// narrower ones, Python's reader and ours do not).
    fn chrono_reference(s: &str) -> Option<(i64, u32)> {
        use chrono::{FixedOffset, NaiveDateTime, Timelike};
        let split = s
            .char_indices()
            .skip(11)
            .find(|&(_, c)| matches!(c, 'Z' | 'z' | '+' | '-'))
            .map_or(s.len(), |(i, _)| i);
        let (local, offset) = s.split_at(split);
        let mut local = local.to_owned();
        if matches!(local.get(10..11), Some("t" | " ")) {
            local.replace_range(10..11, "T");
        }
        let local = local.replacen(',', ".", 1);
        if local.split_once('.').is_some_and(|(_, f)| f.len() > 9) {
            return None;
        }
        let naive = NaiveDateTime::parse_from_str(&local, "%Y-%m-%dT%H:%M:%S%.f")
            .or_else(|_| NaiveDateTime::parse_from_str(&local, "%Y-%m-%dT%H:%M"))
            .ok()?;
        if naive.nanosecond() >= 1_000_000_000 {
            return None;
        }
        let offset_secs = match offset {
            "" | "Z" | "z" => 0,
            _ => {
                // `+HH:MM:SS` or `+HHMMSS`: chrono reads the hours and minutes, the seconds
                // are read as a time's.
                let (hm, secs) = match offset.len() {
                    9 if offset.as_bytes()[6] == b':' => (&offset[..6], &offset[7..]),
                    7 if !offset.contains(':') => (&offset[..5], &offset[5..]),
                    _ => (offset, "00"),
                };
                let fixed: FixedOffset = DateTime::parse_from_str(
                    &format!("2000-01-01T00:00:00{hm}"),
                    "%Y-%m-%dT%H:%M:%S%#z",
                )
                .ok()?
                .timezone();
                let secs =
                    chrono::NaiveTime::parse_from_str(&format!("00:00:{secs}"), "%H:%M:%S").ok()?;
                // Chrono reads `60` as a leap second; Python has none.
                if secs.nanosecond() >= 1_000_000_000 {
                    return None;
                }
                let secs = secs.second();
                let secs = i64::from(secs);
                let east = i64::from(fixed.local_minus_utc());
                if east < 0 || offset.starts_with('-') {
                    east - secs
                } else {
                    east + secs
                }
            }
        };
        let utc = naive.and_utc().timestamp() - offset_secs;
        Some((utc, naive.nanosecond()))
    }

    fn two(v: u32) -> String {
        format!("{v:02}")
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(5_000))]

        /// Every form of the grammar, field values in and out of range: `parse_timestamp` and
        /// chrono give the same instant, or both reject.
        #[test]
        fn parse_timestamp_agrees_with_chrono(
            year in 0u32..=9999,
            month in 0u32..=13,
            day in 0u32..=32,
            hour in 0u32..=24,
            minute in 0u32..=60,
            second in proptest::option::of(0u32..=60),
            fraction in proptest::option::of("[0-9]{0,10}"),
            comma in proptest::bool::ANY,
            separator in proptest::sample::select(vec!['T', 't', ' ']),
            offset_style in 0usize..8,
            negative in proptest::bool::ANY,
            oh in 0u32..=24,
            om in 0u32..=60,
            os in 0u32..=60,
        ) {
            let mut s = format!("{year:04}-{}-{}{separator}{}:{}", two(month), two(day), two(hour), two(minute));
            if let Some(second) = second {
                s.push(':');
                s.push_str(&two(second));
                if let Some(fraction) = &fraction {
                    s.push(if comma { ',' } else { '.' });
                    s.push_str(fraction);
                }
            }
            let sign = if negative { '-' } else { '+' };
            let (oh, om, os) = (two(oh), two(om), two(os));
            match offset_style {
                0 => {}
                1 => s.push('Z'),
                2 => s.push('z'),
                3 => s.push_str(&format!("{sign}{oh}")),
                4 => s.push_str(&format!("{sign}{oh}{om}")),
                5 => s.push_str(&format!("{sign}{oh}:{om}")),
                6 => s.push_str(&format!("{sign}{oh}:{om}:{os}")),
                _ => s.push_str(&format!("{sign}{oh}{om}{os}")),
            }
            proptest::prop_assert_eq!(parse_timestamp(s.as_bytes()), chrono_reference(&s), "{:?}", s);
        }
    }
}
