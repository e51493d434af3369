//! The `CacheStore` trait, `CacheStats` and the injectable `Clock`.

use std::fmt::Debug;
use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::{CacheError, CacheKey, CachedResponse};

/// A response cache backend: the embedded [`ResponseCache`](crate::ResponseCache) or, with the
/// `redis` feature, `RedisCache`. Object-safe; share it as `Arc<dyn CacheStore>`.
pub trait CacheStore: Send + Sync + Debug {
    /// The live entry for `key`, counting a hit (and its `hit_count`) or a miss.
    /// Expired entries are never returned.
    fn get(&self, key: &CacheKey) -> Result<Option<CachedResponse>, CacheError>;
    /// Stores `entry` under `entry.key`, stamping `created_at` now and `expires_at` from `ttl`
    /// (`None`: the cache's default TTL). Empty and oversized responses are refused with an error
    /// for which [`CacheError::is_refused_entry`] is true.
    fn put(&self, entry: CachedResponse, ttl: Option<Duration>) -> Result<(), CacheError>;
    /// Removes the entry for `key`; whether a live entry was there.
    fn remove(&self, key: &CacheKey) -> Result<bool, CacheError>;
    /// Removes every entry; how many were removed.
    fn clear(&self) -> Result<usize, CacheError>;
    /// Removes every expired entry; how many were removed.
    fn prune_expired(&self) -> Result<usize, CacheError>;
    /// Counters and sizes.
    fn stats(&self) -> Result<CacheStats, CacheError>;
    /// Returns once everything stored so far is durable in the backend.
    fn flush(&self) -> Result<(), CacheError>;
}

/// Cache statistics: the Python original's fields (`size` .. `ttl_seconds`) plus counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CacheStats {
    /// Entries held (in memory for `ResponseCache`, whose disk tier is [`disk_entries`](Self::disk_entries);
    /// in the server for `RedisCache`).
    pub size: usize,
    /// The entry bound (0 when the backend has none).
    pub max_size: usize,
    /// `size / max_size` (0 when there is no bound).
    pub utilization: f64,
    /// Sum of the held entries' hit counts.
    pub total_hits: u64,
    /// Mean age of the held entries, in seconds.
    pub avg_age_seconds: f64,
    /// Age of the oldest held entry, in seconds.
    pub oldest_age_seconds: f64,
    /// The default TTL, in seconds.
    pub ttl_seconds: u64,
    /// Lookups that returned an entry.
    pub hits: u64,
    /// Lookups that returned nothing.
    pub misses: u64,
    /// `hits / (hits + misses)`, 0 before any lookup.
    pub hit_rate: f64,
    /// Entries evicted to respect the entry or byte bound.
    pub evictions: u64,
    /// Entries dropped because they had expired.
    pub expired: u64,
    /// Approximate bytes held.
    pub bytes: u64,
    /// Corrupt entries: unreadable, or whose checksum does not match their content. Files are
    /// moved to `cache_dir/corrupt/`; Redis entries are deleted (the count is shared in Redis).
    pub corrupt: u64,
    /// Disk writes that failed (the entries stayed in memory).
    pub write_failures: u64,
    /// Entries on disk (0 for backends without a disk tier).
    #[serde(default)]
    pub disk_entries: u64,
    /// Bytes the disk tier's files take (0 for backends without a disk tier).
    #[serde(default)]
    pub disk_bytes: u64,
    /// Entries removed from disk to respect `max_disk_bytes` or `max_disk_entries`, by this
    /// process.
    #[serde(default)]
    pub disk_evictions: u64,
}

/// A source of the current time; inject one in [`CacheConfig`](crate::CacheConfig) to control
/// expiry in tests without sleeping.
pub trait Clock: Send + Sync + Debug {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
}

impl ManualClock {
    /// A clock showing `start`.
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            now: Mutex::new(start),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock();
        *now = add_duration(*now, by).unwrap_or(DateTime::<Utc>::MAX_UTC);
    }

    /// Sets the clock to `to`.
    pub fn set(&self, to: DateTime<Utc>) {
        *self.now.lock() = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock()
    }
}

/// `t + d`, or `None` when it does not fit (treated as "never expires").
pub(crate) fn add_duration(t: DateTime<Utc>, d: Duration) -> Option<DateTime<Utc>> {
    let d = chrono::Duration::from_std(d).ok()?;
    t.checked_add_signed(d)
}
