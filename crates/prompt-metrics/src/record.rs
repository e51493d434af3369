//! The metrics record and its on-disk timestamp format.

use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One record per generation (cache hits included), with the Python original's field names on disk.
///
/// Lines written by the Python original's collector (`json.dumps(asdict(m))`) read back: missing
/// optional fields take the Python original's defaults and a timestamp without a UTC offset means UTC.
/// `template_version`, `template_hash` and `provider` are ours; they are left out of a line
/// when `None`.
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
        }
    }

    /// The Python original's notion of success: validation passed and no error.
    pub fn is_success(&self) -> bool {
        self.validation_passed && self.error.is_none()
    }
}

fn serialize_timestamp<S: Serializer>(ts: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    let buf = timestamp_bytes(ts);
    // The buffer holds ASCII digits and separators only.
    s.serialize_str(std::str::from_utf8(&buf).unwrap_or_default())
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

/// Formats a timestamp the way [`PromptMetrics`] writes it: microseconds and an explicit
/// `+00:00` offset, which every version of Python's `datetime.fromisoformat` reads
/// (years outside `0..=9999` are rejected before a record is written).
pub(crate) fn timestamp_bytes(ts: &DateTime<Utc>) -> [u8; 32] {
    let mut out = *b"0000-00-00T00:00:00.000000+00:00";
    let mut put = |at: usize, width: usize, mut v: u32| {
        for k in (at..at + width).rev() {
            out[k] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, ts.year().clamp(0, 9999) as u32);
    put(5, 2, ts.month());
    put(8, 2, ts.day());
    put(11, 2, ts.hour());
    put(14, 2, ts.minute());
    put(17, 2, ts.second());
    put(20, 6, ts.nanosecond().min(999_999_999) / 1_000);
    out
}

#[cfg(test)]
fn format_timestamp(ts: &DateTime<Utc>) -> String {
    String::from_utf8_lossy(&timestamp_bytes(ts)).into_owned()
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
/// nanoseconds since the Unix epoch (UTC).
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

    #[test]
    fn formatted_timestamps_parse_back() {
        let t = DateTime::from_timestamp(1_768_917_802, 123_456_000).expect("valid");
        let s = format_timestamp(&t);
        assert_eq!(s, "2026-01-20T14:03:22.123456+00:00");
        let back = parse_timestamp(s.as_bytes()).and_then(|(a, b)| DateTime::from_timestamp(a, b));
        assert_eq!(back, Some(t));
    }
}
