//! `CachedResponse`: one cached model answer and everything needed to replay it.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

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
        }
    }

    /// Whether the entry has expired at `now` (an entry expiring exactly at `now` has).
    pub fn is_expired_at(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|e| now >= e)
    }

    /// Approximate memory held by the entry, in bytes (what the cache's byte bound counts).
    pub fn approx_size(&self) -> u64 {
        const OVERHEAD: usize = 160;
        (OVERHEAD
            + self.response.len()
            + self.model.len()
            + self.provider.as_ref().map_or(0, String::len)
            + self.finish_reason.as_ref().map_or(0, String::len)) as u64
    }
}

/// Deserializers that read the same JSON as the derived ones, with fewer allocations and a
/// fast path for the timestamps this crate writes (start-up parses every entry file).
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
    }
}
