//! `ResponseCache`: a sharded in-memory LRU over a larger disk tier of one atomic JSON file per
//! entry.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use lru::LruCache;
use parking_lot::{Mutex, MutexGuard};

use crate::disk::{self, Counters, DiskOp, FileRead, Writer};
use crate::segment::{self, Bounds, Found, Segments};
use crate::store::add_duration;
use crate::{CacheConfig, CacheError, CacheKey, CacheStats, CacheStore, CachedResponse};

/// Hashes a `CacheKey` by eight of its (already uniformly random) bytes.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct KeyHasherBuilder;

#[derive(Debug, Default)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        if bytes.len() >= 16 {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[8..16]);
            self.0 ^= u64::from_le_bytes(b);
        } else {
            for &byte in bytes {
                self.0 = self.0.rotate_left(8) ^ u64::from(byte);
            }
        }
    }

    fn write_usize(&mut self, _len: usize) {
        // The array length prefix carries no information.
    }
}

impl BuildHasher for KeyHasherBuilder {
    type Hasher = KeyHasher;

    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(0)
    }
}

#[derive(Debug)]
struct Slot {
    /// The entry as stored (shared with a queued disk write, so `put` copies nothing); its
    /// `hit_count` is the one last written, the live count is `hits`.
    entry: Arc<CachedResponse>,
    /// The entry's hit count.
    hits: u64,
    size: u64,
    /// The hit count changed since the entry was last queued for the disk.
    dirty: bool,
}

/// Entries and bytes held across all shards, against the global bounds.
#[derive(Debug)]
struct Totals {
    len: AtomicUsize,
    bytes: AtomicU64,
    max_len: usize,
    max_bytes: u64,
}

impl Totals {
    fn over(&self) -> bool {
        self.len.load(Ordering::Relaxed) > self.max_len
            || self.bytes.load(Ordering::Relaxed) > self.max_bytes
    }

    fn removed(&self, size: u64) {
        self.len.fetch_sub(1, Ordering::Relaxed);
        self.bytes.fetch_sub(size, Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct Shard {
    lru: LruCache<CacheKey, Slot, KeyHasherBuilder>,
    bytes: u64,
}

impl Shard {
    /// Inserts (or replaces) `slot`, then, while the cache is over a bound, evicts from this
    /// shard's LRU end (never the entry just inserted); the evicted entries go to `evicted`.
    fn insert(&mut self, key: CacheKey, slot: Slot, totals: &Totals, evicted: &mut Vec<Slot>) {
        let size = slot.size;
        match self.lru.push(key, slot) {
            Some((_, old)) => {
                self.bytes -= old.size;
                totals.bytes.fetch_sub(old.size, Ordering::Relaxed);
            }
            None => {
                totals.len.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.bytes += size;
        totals.bytes.fetch_add(size, Ordering::Relaxed);
        while totals.over() && self.lru.len() > 1 {
            match self.pop_lru(totals) {
                Some(slot) => evicted.push(slot),
                None => break,
            }
        }
    }

    fn pop_lru(&mut self, totals: &Totals) -> Option<Slot> {
        let (_, s) = self.lru.pop_lru()?;
        self.bytes -= s.size;
        totals.removed(s.size);
        Some(s)
    }

    fn pop(&mut self, key: &CacheKey, totals: &Totals) -> Option<Slot> {
        let slot = self.lru.pop(key)?;
        self.bytes -= slot.size;
        totals.removed(slot.size);
        Some(slot)
    }
}

/// Where the disk tier keeps one entry: see [`ResponseCache::stored_at`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAt {
    /// The file that holds it.
    pub path: std::path::PathBuf,
    /// The bytes of the stored entry in that file.
    pub range: std::ops::Range<u64>,
}

/// The embedded response cache: a sharded memory LRU (entries and bytes bounded, TTL, hit
/// counts) over a disk tier of segment files under `<cache_dir>/segments/` with a shared index,
/// bounded by its own limits (`max_disk_bytes`, optionally `max_disk_entries`) and written by a
/// background thread.
///
/// # Behaviour
///
/// - **Memory.** Keys are spread over `shards` LRU lists by their first byte, so threads rarely
///   wait on one lock. The bounds (`max_size` entries, `max_bytes` bytes) are global: a `put` that
///   goes over them evicts from the least recently used end of its own shard in O(1) (falling
///   back to the fullest other shard when its own holds nothing else). With one shard this is an
///   exact LRU; with several, the victim is the least recently used entry of a random 1/n of the
///   cache, a close approximation. Concurrent puts may overshoot a bound by at most one entry
///   each, for the moment between their insert and their eviction.
/// - **Two tiers.** An entry evicted from memory stays on disk (it is written again if its hit
///   count changed) and is served from there on its next `get`. The disk holds every entry
///   until it expires, is removed, or is evicted to keep the disk bounds.
/// - **Disk.** `put`, `remove`, memory eviction and expiry queue a disk operation for the
///   background writer and return; operations on one key are coalesced (the newest wins). The
///   writer appends each batch's entries to this process's own segment file (no lock), then
///   points the shared index at them under a short lock on the index, so a reader (in this or
///   another process) finds a complete entry or none; readers take no lock. `flush` returns
///   once everything queued before it is on disk; dropping the cache flushes and joins the
///   writer. When the queue holds `write_queue` distinct keys, `put` waits for the writer
///   rather than dropping work. The layout is described in the `segment` module
///   (`src/segment.rs`).
/// - **Hit counts** live in memory and reach disk lazily: `flush` (and so `drop`) writes again
///   the entries whose count changed since their last write, and so does eviction from
///   memory unless the write queue is full (then that count is not written: a `get` never
///   waits for the disk because of a hit count).
/// - **Misses** in memory look the key up on disk when `read_through` is on (the default): an
///   entry evicted from memory, written before this start-up or by another process is served
///   and goes back into memory. A key with a disk operation still queued in this cache is
///   answered from the queue (a queued write is served, a queued removal is a miss).
/// - **Disk bounds.** After each batch the writer compares the index's counters with the
///   bounds: over `max_disk_bytes` (the bytes of segment files, superseded records included)
///   it removes whole segments, oldest first, down to 90 % — never a segment a process is still
///   writing; over `max_disk_entries` it drops the oldest-written entries from the index down
///   to 90 % (their bytes go with their segment). A segment is started past a sixteenth of
///   `max_disk_bytes` (at most 64 MiB), so removal frees a small part of the bound at a time.
///   A `flush` after a hit writes the entry again, so the oldest segment holds the least
///   recently used. An entry larger than `max_disk_bytes` stays in memory only (a counted
///   write failure).
/// - **Expiry.** An entry is never served at or after its `expires_at`; expired entries met by
///   `get` are dropped (and removed from disk); `prune_expired` sweeps memory and disk.
/// - **Integrity.** Every stored entry carries a checksum of its content (all but the hit
///   count) and every record its key, verified whenever it is read; a record or file that
///   cannot be read as this key's entry, or whose checksum does not match, is a miss counted
///   in [`CacheStats::corrupt`]: a damaged record's key leaves the index (its bytes stay in
///   their segment), a damaged file is moved to `cache_dir/corrupt/`.
/// - **The older layout.** Directories written before segments hold one `<key>.json` file per
///   entry: a key the index does not have is looked up by that name and served, written into a
///   segment at the next flush after it is read (and its file removed then), and removed with
///   its key. Files written before checksums existed are served and get one the same way.
/// - **Start-up** (`open`) reads only the index's header: it takes the same time over ten
///   entries or ten million. Expired and corrupt entries are dealt with when they are met.
///   `stats` counts the index's live entries and lists the segment files (and any older
///   `<key>.json` files) for `disk_entries` and `disk_bytes`.
/// - **Failures.** An empty response (without tool calls) or one over `max_entry_bytes` is
///   refused with an error ([`CacheError::is_refused_entry`]); a failed disk write (a full disk, say) keeps the entry
///   in memory and counts [`CacheStats::write_failures`].
#[derive(Debug)]
pub struct ResponseCache {
    shards: Box<[Mutex<Shard>]>,
    shard_mask: usize,
    totals: Totals,
    config: CacheConfig,
    counters: Arc<Counters>,
    segments: Arc<Segments>,
    writer: Writer,
}

impl ResponseCache {
    /// Opens (creating if needed) the cache in `config.cache_dir` and loads it.
    ///
    /// Fails if the directory cannot be created or written to, or a bound is zero.
    pub fn open(config: CacheConfig) -> Result<Self, CacheError> {
        if config.max_size == 0 {
            return Err(CacheError::InvalidConfig {
                field: "max_size",
                message: "must be at least 1".to_owned(),
            });
        }
        if config.max_bytes == 0 {
            return Err(CacheError::InvalidConfig {
                field: "max_bytes",
                message: "must be at least 1".to_owned(),
            });
        }
        if config.max_disk_bytes == 0 {
            return Err(CacheError::InvalidConfig {
                field: "max_disk_bytes",
                message: "must be at least 1".to_owned(),
            });
        }
        if config.max_disk_entries == Some(0) {
            return Err(CacheError::InvalidConfig {
                field: "max_disk_entries",
                message: "must be at least 1".to_owned(),
            });
        }
        let shard_count = match config.shards {
            0 if config.max_size >= 256 => 16,
            0 => 1,
            n if n.is_power_of_two() && n <= 256 => n,
            n => {
                return Err(CacheError::InvalidConfig {
                    field: "shards",
                    message: format!("{n} is not a power of two between 1 and 256"),
                });
            }
        };
        disk::ensure_writable(&config.cache_dir)?;

        let shards: Box<[Mutex<Shard>]> = (0..shard_count)
            .map(|_| {
                Mutex::new(Shard {
                    lru: LruCache::unbounded_with_hasher(KeyHasherBuilder),
                    bytes: 0,
                })
            })
            .collect();
        let totals = Totals {
            len: AtomicUsize::new(0),
            bytes: AtomicU64::new(0),
            max_len: config.max_size,
            max_bytes: config.max_bytes,
        };

        // Nothing is read here: entries are read from disk by key, on a miss in memory.
        let counters = Arc::new(Counters::default());
        let bounds = Bounds {
            max_bytes: config.max_disk_bytes,
            max_entries: config.max_disk_entries.unwrap_or(u64::MAX),
        };
        let segments = Segments::open(&config.cache_dir).map_err(|source| CacheError::Io {
            path: config.cache_dir.join(segment::SEGMENTS_DIR),
            source,
        })?;
        let segments = Arc::new(segments);
        let writer = Writer::spawn(
            config.cache_dir.clone(),
            Arc::clone(&segments),
            config.fsync,
            config.write_queue,
            bounds,
            Arc::clone(&counters),
        )?;
        Ok(Self {
            shards,
            shard_mask: shard_count - 1,
            totals,
            config,
            counters,
            segments,
            writer,
        })
    }

    /// Where the disk tier keeps `key`'s entry now (after a [`flush`](CacheStore::flush), every
    /// entry put before it): the file, and the byte range of the stored entry in it — a range
    /// of a segment file, or the whole of a `<key>.json` file of the older layout. `None` when
    /// the disk has no entry for `key`. For tools and tests that inspect stored entries; the
    /// bytes are the `entry` form that the crate documentation describes.
    pub fn stored_at(&self, key: &CacheKey) -> Result<Option<StoredAt>, CacheError> {
        let located = self.segments.locate(key).map_err(|source| CacheError::Io {
            path: self.segments.root().to_path_buf(),
            source,
        })?;
        if let Some((path, loc)) = located {
            let start = u64::from(loc.offset) + segment::RECORD_HEADER as u64;
            return Ok(Some(StoredAt {
                path,
                range: start..u64::from(loc.offset) + u64::from(loc.len),
            }));
        }
        let path = disk::entry_path(&self.config.cache_dir, key);
        Ok(std::fs::metadata(&path).ok().map(|m| StoredAt {
            path,
            range: 0..m.len(),
        }))
    }

    /// The configuration the cache was opened with.
    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    /// Number of entries in memory (expired ones not yet dropped included).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().lru.len()).sum()
    }

    /// Whether memory holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard_index(&self, key: &CacheKey) -> usize {
        usize::from(key.as_bytes()[0]) & self.shard_mask
    }

    fn shard(&self, key: &CacheKey) -> MutexGuard<'_, Shard> {
        self.shards[self.shard_index(key)].lock()
    }

    /// The largest entry accepted: `max_entry_bytes`, or `max_bytes` if smaller.
    fn max_entry_size(&self) -> u64 {
        self.config.max_entry_bytes.min(self.config.max_bytes)
    }

    /// Evicts from the fullest shards while the cache is over a bound (after a put whose own
    /// shard had nothing else to give).
    fn rebalance(&self) -> Result<(), CacheError> {
        while self.totals.over() {
            let fullest = (0..self.shards.len()).max_by_key(|&i| self.shards[i].lock().lru.len());
            let Some(i) = fullest else { return Ok(()) };
            let mut shard = self.shards[i].lock();
            // Keep at least one entry: the bounds admit any single accepted entry.
            if shard.lru.len() <= 1 && self.totals.len.load(Ordering::Relaxed) <= 1 {
                return Ok(());
            }
            let Some(slot) = shard.pop_lru(&self.totals) else {
                continue;
            };
            // Under the shard lock, so the write reaches the disk in memory order.
            self.submit_evicted(vec![slot])?;
        }
        Ok(())
    }

    /// Counts entries evicted from memory; they stay on disk, and those whose hit count
    /// changed are written back (which also marks them recently used on disk) — unless the
    /// writer's queue is full: a hit count is bookkeeping, not worth making a `get` wait.
    fn submit_evicted(&self, evicted: Vec<Slot>) -> Result<(), CacheError> {
        if evicted.is_empty() {
            return Ok(());
        }
        Counters::add(&self.counters.evictions, evicted.len() as u64);
        for mut slot in evicted {
            if slot.dirty {
                Arc::make_mut(&mut slot.entry).hit_count = slot.hits;
                self.writer
                    .try_submit(slot.entry.key, DiskOp::Write(slot.entry))?;
            }
        }
        Ok(())
    }

    /// Looks `key` up on disk (shard lock held, so memory and disk stay ordered).
    fn read_through(
        &self,
        shard: &mut Shard,
        key: &CacheKey,
        now: DateTime<Utc>,
    ) -> Result<Option<CachedResponse>, CacheError> {
        let mut entry = match self.writer.queued(key) {
            // Evicted from memory with its write still queued: the queued entry is the truth.
            Some(Some(entry)) => CachedResponse::clone(&entry),
            // A removal is queued: the entry is about to go.
            Some(None) => return Ok(None),
            // An entry without a checksum is rewritten with one at the next flush (the slot
            // is dirty below either way).
            None => match self.read_disk(key)? {
                Some(entry) => entry,
                None => return Ok(None),
            },
        };
        if entry.is_expired_at(now) {
            Counters::add(&self.counters.expired, 1);
            self.writer.submit(*key, DiskOp::Remove)?;
            return Ok(None);
        }
        let size = entry.approx_size();
        entry.hit_count = entry.hit_count.saturating_add(1);
        let out = entry.clone();
        if size <= self.max_entry_size() {
            let mut evicted = Vec::new();
            shard.insert(
                *key,
                Slot {
                    hits: entry.hit_count,
                    entry: Arc::new(entry),
                    size,
                    dirty: true,
                },
                &self.totals,
                &mut evicted,
            );
            self.submit_evicted(evicted)?;
        }
        Ok(Some(out))
    }
}

impl ResponseCache {
    /// Reads `key`'s entry from disk: the segments, then a `<key>.json` file of the older
    /// layout. A damaged record or file is a miss, counted in `corrupt`: the record's key is
    /// removed from the index (its bytes stay in their segment until it is removed whole), a
    /// damaged file is moved to `corrupt/`.
    fn read_disk(&self, key: &CacheKey) -> Result<Option<CachedResponse>, CacheError> {
        match self.segments.get(key) {
            Ok(Found::Entry(entry)) => return Ok(Some(*entry)),
            Ok(Found::Corrupt) => {
                Counters::add(&self.counters.corrupt, 1);
                self.writer.submit(*key, DiskOp::Remove)?;
                return Ok(None);
            }
            // An index that cannot be read is a miss here; the writer reports failures.
            Ok(Found::Missing) | Err(_) => {}
        }
        let path = disk::entry_path(&self.config.cache_dir, key);
        match disk::read_entry(&path, key) {
            FileRead::Entry(entry) => {
                self.segments.legacy_seen.store(true, Ordering::Relaxed);
                Ok(Some(*entry))
            }
            FileRead::Missing => Ok(None),
            FileRead::Corrupt => {
                if disk::quarantine(&self.config.cache_dir, &path).is_ok() {
                    Counters::add(&self.counters.corrupt, 1);
                }
                Ok(None)
            }
        }
    }
}

impl CacheStore for ResponseCache {
    fn get(&self, key: &CacheKey) -> Result<Option<CachedResponse>, CacheError> {
        let now = self.config.clock.now();
        let mut shard = self.shard(key);
        if let Some(slot) = shard.lru.get_mut(key) {
            if !slot.entry.is_expired_at(now) {
                slot.hits = slot.hits.saturating_add(1);
                slot.dirty = true;
                let mut out = CachedResponse::clone(&slot.entry);
                out.hit_count = slot.hits;
                drop(shard);
                Counters::add(&self.counters.hits, 1);
                return Ok(Some(out));
            }
            shard.pop(key, &self.totals);
            Counters::add(&self.counters.expired, 1);
            let submitted = self.writer.submit(*key, DiskOp::Remove);
            drop(shard);
            Counters::add(&self.counters.misses, 1);
            submitted?;
            return Ok(None);
        }
        let found = if self.config.read_through {
            self.read_through(&mut shard, key, now)?
        } else {
            None
        };
        drop(shard);
        if found.is_some() && self.totals.over() {
            self.rebalance()?;
        }
        let counter = if found.is_some() {
            &self.counters.hits
        } else {
            &self.counters.misses
        };
        Counters::add(counter, 1);
        Ok(found)
    }

    fn put(&self, mut entry: CachedResponse, ttl: Option<Duration>) -> Result<(), CacheError> {
        if !entry.answers() {
            return Err(CacheError::EmptyResponse { key: entry.key });
        }
        let size = entry.approx_size();
        let limit = self.max_entry_size();
        if size > limit {
            return Err(CacheError::EntryTooLarge {
                key: entry.key,
                size,
                limit,
            });
        }
        let now = self.config.clock.now();
        entry.created_at = now;
        entry.expires_at = add_duration(now, ttl.unwrap_or(self.config.ttl));
        let key = entry.key;
        let hits = entry.hit_count;
        // One allocation shared by memory and the disk writer.
        let entry = Arc::new(entry);
        let mut evicted = Vec::new();
        let mut shard = self.shard(&key);
        shard.insert(
            key,
            Slot {
                entry: Arc::clone(&entry),
                hits,
                size,
                dirty: false,
            },
            &self.totals,
            &mut evicted,
        );
        // Queued under the shard lock so the disk sees this key's operations in memory order.
        self.writer.submit(key, DiskOp::Write(entry))?;
        self.submit_evicted(evicted)?;
        drop(shard);
        if self.totals.over() {
            self.rebalance()?;
        }
        Ok(())
    }

    fn remove(&self, key: &CacheKey) -> Result<bool, CacheError> {
        let now = self.config.clock.now();
        let mut shard = self.shard(key);
        let live = match shard.pop(key, &self.totals) {
            Some(slot) => !slot.entry.is_expired_at(now),
            None if self.config.read_through => match self.writer.queued(key) {
                Some(Some(entry)) => !entry.is_expired_at(now),
                Some(None) => false,
                None => self
                    .read_disk(key)?
                    .is_some_and(|entry| !entry.is_expired_at(now)),
            },
            None => false,
        };
        self.writer.submit(*key, DiskOp::Remove)?;
        Ok(live)
    }

    fn clear(&self) -> Result<usize, CacheError> {
        // Hold every shard so no put slips between the memory and the disk wipe.
        let mut guards: Vec<MutexGuard<'_, Shard>> = self.shards.iter().map(|s| s.lock()).collect();
        let mut keys = std::collections::HashSet::new();
        for shard in &mut guards {
            keys.extend(shard.lru.iter().map(|(k, _)| *k));
            shard.lru.clear();
            shard.bytes = 0;
        }
        self.totals.len.store(0, Ordering::Relaxed);
        self.totals.bytes.store(0, Ordering::Relaxed);
        let seq = self.writer.request_clear()?;
        drop(guards);
        let removed = self.writer.wait_clear(seq)?;
        keys.extend(removed);
        Ok(keys.len())
    }

    fn prune_expired(&self) -> Result<usize, CacheError> {
        let now = self.config.clock.now();
        let mut pruned = std::collections::HashSet::new();
        let mut in_memory = std::collections::HashSet::new();
        for shard in self.shards.iter() {
            let mut shard = shard.lock();
            let expired: Vec<CacheKey> = shard
                .lru
                .iter()
                .filter(|(_, s)| s.entry.is_expired_at(now))
                .map(|(k, _)| *k)
                .collect();
            for key in expired {
                shard.pop(&key, &self.totals);
                self.writer.submit(key, DiskOp::Remove)?;
                pruned.insert(key);
            }
            in_memory.extend(shard.lru.iter().map(|(k, _)| *k));
        }
        // Entries not in memory: evicted from it, written before this start-up or by another
        // process (segments), or in files of the older layout. Only expired keys are kept.
        let mut expired: Vec<CacheKey> = Vec::new();
        self.segments
            .for_each_entry(|key, entry| {
                if entry.is_expired_at(now) {
                    expired.push(key);
                }
            })
            .map_err(|source| CacheError::Io {
                path: self.segments.root().to_path_buf(),
                source,
            })?;
        let dir = &self.config.cache_dir;
        let items = std::fs::read_dir(dir).map_err(|source| CacheError::Io {
            path: dir.clone(),
            source,
        })?;
        for item in items.flatten() {
            let name = item.file_name();
            if let Some(key) = name.to_str().and_then(disk::key_of_file_name)
                && let FileRead::Entry(entry) = disk::read_entry(&item.path(), &key)
                && entry.is_expired_at(now)
            {
                expired.push(key);
            }
        }
        for key in expired {
            if in_memory.contains(&key) || pruned.contains(&key) {
                continue;
            }
            let shard = self.shard(&key);
            if shard.lru.contains(&key) || self.writer.is_busy(&key) {
                continue;
            }
            self.writer.submit(key, DiskOp::Remove)?;
            pruned.insert(key);
            drop(shard);
        }
        Counters::add(&self.counters.expired, pruned.len() as u64);
        Ok(pruned.len())
    }

    fn stats(&self) -> Result<CacheStats, CacheError> {
        let now = self.config.clock.now();
        let mut size = 0usize;
        let mut bytes = 0u64;
        let mut total_hits = 0u64;
        let mut age_sum = 0f64;
        let mut oldest = 0f64;
        for shard in self.shards.iter() {
            let shard = shard.lock();
            size += shard.lru.len();
            bytes += shard.bytes;
            for (_, slot) in shard.lru.iter() {
                total_hits += slot.hits;
                let age = (now - slot.entry.created_at).num_milliseconds().max(0) as f64 / 1000.0;
                age_sum += age;
                oldest = oldest.max(age);
            }
        }
        // A directory that cannot be listed (gone, say) reports no files: the counters above
        // and `write_failures` tell the rest.
        let on_disk = disk::usage(&self.config.cache_dir, &self.segments).unwrap_or_default();
        let c = &self.counters;
        let hits = c.hits.load(Ordering::Relaxed);
        let misses = c.misses.load(Ordering::Relaxed);
        Ok(CacheStats {
            size,
            max_size: self.config.max_size,
            utilization: size as f64 / self.config.max_size as f64,
            total_hits,
            avg_age_seconds: if size == 0 {
                0.0
            } else {
                age_sum / size as f64
            },
            oldest_age_seconds: oldest,
            ttl_seconds: self.config.ttl.as_secs(),
            hits,
            misses,
            hit_rate: if hits + misses == 0 {
                0.0
            } else {
                hits as f64 / (hits + misses) as f64
            },
            evictions: c.evictions.load(Ordering::Relaxed),
            expired: c.expired.load(Ordering::Relaxed),
            bytes,
            corrupt: c.corrupt.load(Ordering::Relaxed),
            write_failures: c.write_failures.load(Ordering::Relaxed),
            disk_entries: on_disk.entries,
            disk_bytes: on_disk.bytes,
            disk_evictions: c.disk_evictions.load(Ordering::Relaxed),
        })
    }

    fn flush(&self) -> Result<(), CacheError> {
        // Write back changed hit counts, then wait for the writer.
        for shard in self.shards.iter() {
            let mut shard = shard.lock();
            let mut dirty = Vec::new();
            for (key, slot) in shard.lru.iter_mut() {
                if slot.dirty {
                    slot.dirty = false;
                    // Copies the entry only if a queued write still holds the old one.
                    Arc::make_mut(&mut slot.entry).hit_count = slot.hits;
                    dirty.push((*key, Arc::clone(&slot.entry)));
                }
            }
            for (key, entry) in dirty {
                self.writer.submit(key, DiskOp::Write(entry))?;
            }
        }
        self.writer.flush()
    }
}

impl Drop for ResponseCache {
    fn drop(&mut self) {
        // Errors cannot be returned from drop; the writer's own Drop joins the thread.
        let _ = CacheStore::flush(self);
    }
}
