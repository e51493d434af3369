//! A response cache keyed on a SHA-256 of the whole request: memory LRU over a disk tier, and Redis.
//!
//! - [`CacheKey`] covers everything that can change a model's answer (namespace, provider, model,
//!   every message with its role, temperature, max tokens, seed, stop sequences, response format
//!   and any other option), encoded canonically so map key order never changes a key.
//! - [`CacheStore`] is the trait callers depend on; [`ResponseCache`] is the embedded backend:
//!   a sharded memory LRU bounded by entries and bytes (TTL, hit counts) over a larger disk tier
//!   of segment files with a shared index, bounded by `max_disk_bytes` and read by key (so
//!   start-up reads nothing), which several processes share without a lock on reads;
//!   `RedisCache` (cargo feature `redis`) shares one cache between processes and machines.
//! - [`CacheKeyPrefixes`] keeps the hashing state after a system prompt, so requests that
//!   share one hash only the rest (same keys).
//! - Every stored entry carries a checksum of everything a hit returns, verified before a stored
//!   entry is served: a damaged entry is a miss, set aside and counted in
//!   [`CacheStats::corrupt`], never an answer. The stored format is described in one place, the
//!   `entry` module's documentation (`src/entry.rs`).
//!
//! ```
//! use std::time::Duration;
//! use prompt_cache::{CacheConfig, CacheKey, CacheStore, CachedResponse, ResponseCache};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = std::env::temp_dir().join(format!("prompt-cache-doc-{}", std::process::id()));
//! let cache = ResponseCache::open(CacheConfig::new(&dir).max_size(100))?;
//!
//! let key = CacheKey::builder("writer")
//!     .provider("ollama")
//!     .model("qwen3:30b")
//!     .message("system", "You are the Writer.")
//!     .message("user", "Write chapter 1.")
//!     .temperature(Some(0.8))
//!     .finish();
//! assert_eq!(key.to_hex().len(), 64);
//!
//! assert!(cache.get(&key)?.is_none());
//! cache.put(CachedResponse::new(key, "The morning sun...", "qwen3:30b"), Some(Duration::from_secs(3600)))?;
//! let hit = cache.get(&key)?.expect("just stored");
//! assert_eq!(&*hit.response, "The morning sun...");
//! assert_eq!(hit.hit_count, 1);
//!
//! cache.flush()?; // the entry is now on disk, in a segment under <dir>/segments/
//! let stored = cache.stored_at(&key)?.expect("flushed");
//! assert!(stored.path.starts_with(dir.join("segments")));
//! # drop(cache);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```

mod config;
mod disk;
mod entry;
mod error;
mod fast_json;
mod key;
#[cfg(feature = "redis")]
mod redis_cache;
mod response_cache;
mod segment;
mod store;

pub use config::{CacheConfig, DEFAULT_MAX_DISK_BYTES};
pub use disk::WRITER_THREAD;
pub use entry::{CachedDelta, CachedPiece, CachedResponse};
pub use error::CacheError;
pub use key::{CacheKey, CacheKeyBuilder, CacheKeyPrefixes, ParseKeyError};
#[cfg(feature = "redis")]
pub use redis_cache::RedisCache;
pub use response_cache::{ResponseCache, StoredAt};
pub use store::{CacheStats, CacheStore, Clock, ManualClock, SystemClock};
