//! `CachedResponse`: one cached model answer and everything needed to replay it, and the one
//! stored form of an entry (disk files and Redis alike).
//!
//! # The stored entry format
//!
//! An entry is stored as one compact JSON object: the file `<64-hex key>.json` of
//! [`ResponseCache`](crate::ResponseCache), or the `data` field of the Redis hash of
//! `RedisCache`. [`encode`] writes it, [`decode`] reads it; nothing else does.
//!
//! ```text
//! {"key":"<64 hex>","response":"...","model":"...","provider":"..."|null,
//!  "temperature":0.8|null,"created_at":"<RFC 3339, UTC>","expires_at":"<RFC 3339>"|null,
//!  "hit_count":3,"tokens_prompt":900|null,"tokens_completion":500|null,
//!  "finish_reason":"stop"|null,"latency_ms":12.5|null,"checksum":"xxh3:<16 hex>"}
//! ```
//!
//! - The fields up to `latency_ms` are [`CachedResponse`]'s, written by `serde_json` in this
//!   order (timestamps as chrono writes them); `checksum` is appended last.
//! - `checksum` is `xxh3:` and the XXH3-64 digest, in 16 lowercase hex digits, of the entry's
//!   content as [`CachedResponse::feed_content`] encodes it: every field a hit returns (key,
//!   response, model, provider, temperature, created and expiry times, token counts, finish
//!   reason, latency). `hit_count` is not covered: it is bookkeeping that changes with every
//!   hit (Redis increments it beside the entry), and a file damaged only there is served with
//!   that count. Floats are covered as a JSON reader reads them back (`NaN` and infinities are
//!   written as `null`; `serde_json`'s reader can land one unit in the last place away).
//! - Readers verify the checksum before an entry is served (start-up loads, read-through reads,
//!   Redis reads). A mismatch, a malformed `checksum`, another key, an empty response or
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
            + self.finish_reason.as_ref().map_or(0, String::len)) as u64
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
    if entry.key != *key || entry.response.trim().is_empty() {
        return Decoded::Corrupt;
    }
    match sum {
        None => Decoded::Unchecked(entry),
        Some(Some(sum)) if sum == entry.content_checksum() => Decoded::Verified(entry),
        Some(_) => Decoded::Corrupt,
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
