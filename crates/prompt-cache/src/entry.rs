//! `CachedResponse`: one cached model answer and everything needed to replay it.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::CacheKey;

/// One cached answer: the response text plus what the caller needs to answer from cache as if
/// it had called the model. Stored on disk as one JSON object with these field names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedResponse {
    /// The request's key.
    pub key: CacheKey,
    /// The response text (shared, so a cache hit clones cheaply).
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
    pub created_at: DateTime<Utc>,
    /// When the entry expires (`None`: never; set by the cache on `put` from the TTL).
    #[serde(default)]
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
