//! `CacheConfig`: where and how much `ResponseCache` stores.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::store::{Clock, SystemClock};

/// Default bound of the disk tier: 1 GiB of segment files.
pub const DEFAULT_MAX_DISK_BYTES: u64 = 1 << 30;

/// Settings for [`ResponseCache::open`](crate::ResponseCache::open).
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Directory of the disk tier (created if missing): `segments/` holds the entries.
    pub cache_dir: PathBuf,
    /// Most entries held in memory (default 1000, as in the Python original). Entries evicted
    /// from memory stay on disk.
    pub max_size: usize,
    /// Most bytes held in memory, counted by [`CachedResponse::approx_size`](crate::CachedResponse::approx_size)
    /// (default 256 MiB).
    pub max_bytes: u64,
    /// Most bytes of segment files on disk (default [`DEFAULT_MAX_DISK_BYTES`], 1 GiB); over it,
    /// the oldest segments (the least recently written entries) are removed.
    pub max_disk_bytes: u64,
    /// Most entries on disk (default `None`: bounded by bytes only).
    pub max_disk_entries: Option<u64>,
    /// Default time to live (default 24 hours, as in the Python original). `Duration::MAX` means never expire.
    pub ttl: Duration,
    /// Largest single entry accepted by `put` (default 8 MiB).
    pub max_entry_bytes: u64,
    /// Number of memory shards (locks), a power of two up to 256; 0 chooses (16 when
    /// `max_size >= 256`, else 1). One shard gives an exact LRU; several give threads separate
    /// locks and evict the least recently used entry of the inserting shard.
    pub shards: usize,
    /// Whether a lookup that misses memory looks the key up on disk (default true). Start-up
    /// loads nothing, so with `false` the disk tier is written but never read (a memory-only
    /// cache, for measuring the memory tier alone).
    pub read_through: bool,
    /// Whether each batch of disk writes is `fsync`ed before the index points at it (default
    /// false).
    pub fsync: bool,
    /// Most distinct keys waiting for the disk writer before `put` waits (default 4096).
    pub write_queue: usize,
    /// The clock used for `created_at`, expiry and ages.
    pub clock: Arc<dyn Clock>,
}

impl CacheConfig {
    /// Defaults for a cache in `cache_dir`.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        Self {
            cache_dir: cache_dir.into(),
            max_size: 1000,
            max_bytes: 256 * 1024 * 1024,
            max_disk_bytes: DEFAULT_MAX_DISK_BYTES,
            max_disk_entries: None,
            ttl: Duration::from_secs(24 * 60 * 60),
            max_entry_bytes: 8 * 1024 * 1024,
            shards: 0,
            read_through: true,
            fsync: false,
            write_queue: 4096,
            clock: Arc::new(SystemClock),
        }
    }

    /// Sets `max_size`.
    pub fn max_size(mut self, max_size: usize) -> Self {
        self.max_size = max_size;
        self
    }

    /// Sets `max_bytes`.
    pub fn max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Sets `max_disk_bytes`.
    pub fn max_disk_bytes(mut self, max_disk_bytes: u64) -> Self {
        self.max_disk_bytes = max_disk_bytes;
        self
    }

    /// Sets `max_disk_entries`.
    pub fn max_disk_entries(mut self, max_disk_entries: Option<u64>) -> Self {
        self.max_disk_entries = max_disk_entries;
        self
    }

    /// Sets the default `ttl`.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets the clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}

impl Default for CacheConfig {
    /// The Python original's default directory, `./output/cache`.
    fn default() -> Self {
        Self::new("./output/cache")
    }
}
