//! ResponseCache against real files in temporary directories.
//!
//! Entries are looked at on disk through `ResponseCache::stored_at` (a range of a segment file
//! under `segments/`); `<key>.json` files appear only where a test sets up the older layout.

use std::fs;
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use prompt_cache::{
    CacheConfig, CacheError, CacheKey, CacheStore, CachedResponse, ManualClock, ResponseCache,
};

fn key(i: u64) -> CacheKey {
    CacheKey::builder("test")
        .model("m")
        .message("user", &format!("prompt {i}"))
        .finish()
}

fn entry(i: u64) -> CachedResponse {
    CachedResponse::new(key(i), format!("response {i}"), "m")
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 1, 20, 12, 0, 0)
            .single()
            .expect("valid date"),
    ))
}

fn config(dir: &Path, clock: &Arc<ManualClock>) -> CacheConfig {
    CacheConfig::new(dir).clock(clock.clone())
}

fn response_of(cache: &ResponseCache, i: u64) -> Option<String> {
    cache
        .get(&key(i))
        .expect("get")
        .map(|e| e.response.to_string())
}

/// `<key>.json` files of the older layout in `dir`.
fn legacy_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    names
}

/// The entries of `range` the disk tier holds now (after a flush), by `stored_at`; each one a
/// range of a segment file.
fn stored(cache: &ResponseCache, range: std::ops::Range<u64>) -> Vec<u64> {
    let segments = cache.config().cache_dir.join("segments");
    range
        .filter(|&i| match cache.stored_at(&key(i)).expect("stored_at") {
            Some(at) => {
                assert!(at.path.starts_with(&segments), "{i} in a segment: {at:?}");
                assert!(!at.range.is_empty());
                true
            }
            None => false,
        })
        .collect()
}

/// The bytes of entry `i` as the disk tier stores it.
fn stored_bytes(cache: &ResponseCache, i: u64) -> Vec<u8> {
    let at = cache
        .stored_at(&key(i))
        .expect("stored_at")
        .expect("on disk");
    let bytes = fs::read(&at.path).expect("read segment");
    bytes[at.range.start as usize..at.range.end as usize].to_vec()
}

/// Damages entry `i` where it is stored: its first byte (the object's `{`) becomes `X`.
fn damage_stored(cache: &ResponseCache, i: u64) {
    let at = cache
        .stored_at(&key(i))
        .expect("stored_at")
        .expect("on disk");
    fs::File::options()
        .write(true)
        .open(&at.path)
        .and_then(|f| f.write_all_at(b"X", at.range.start))
        .expect("damage");
}

#[test]
fn put_get_counts_hits_and_misses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let cache = ResponseCache::open(config(dir.path(), &clock)).expect("open");
    assert_eq!(response_of(&cache, 1), None);
    let mut e = entry(1);
    e.tokens_prompt = Some(12);
    e.tokens_completion = Some(34);
    e.provider = Some("ollama".to_owned());
    e.temperature = Some(0.8);
    cache.put(e, None).expect("put");
    let hit = cache.get(&key(1)).expect("get").expect("hit");
    assert_eq!(&*hit.response, "response 1");
    assert_eq!(hit.hit_count, 1);
    assert_eq!(hit.tokens_prompt, Some(12));
    assert_eq!(hit.tokens_completion, Some(34));
    assert_eq!(hit.provider.as_deref(), Some("ollama"));
    assert_eq!(hit.created_at, clock.now_for_test());
    assert_eq!(
        hit.expires_at,
        Some(clock.now_for_test() + chrono::Duration::hours(24))
    );
    assert_eq!(cache.get(&key(1)).expect("get").expect("hit").hit_count, 2);
    let stats = cache.stats().expect("stats");
    assert_eq!((stats.hits, stats.misses, stats.size), (2, 1, 1));
    assert_eq!(stats.total_hits, 2);
    assert!((stats.hit_rate - 2.0 / 3.0).abs() < 1e-9);
    assert_eq!(stats.ttl_seconds, 24 * 3600);
    assert_eq!(stats.max_size, 1000);
    assert!((stats.utilization - 0.001).abs() < 1e-9);
    assert!(stats.bytes > 0);
    let json = serde_json::to_value(&stats).expect("serialize");
    for field in [
        "size",
        "max_size",
        "utilization",
        "total_hits",
        "avg_age_seconds",
        "oldest_age_seconds",
        "ttl_seconds",
        "hits",
        "misses",
        "hit_rate",
        "evictions",
        "expired",
        "bytes",
        "corrupt",
        "write_failures",
    ] {
        assert!(json.get(field).is_some(), "stats lacks {field}");
    }
}

trait NowForTest {
    fn now_for_test(&self) -> chrono::DateTime<Utc>;
}

impl NowForTest for Arc<ManualClock> {
    fn now_for_test(&self) -> chrono::DateTime<Utc> {
        prompt_cache::Clock::now(&**self)
    }
}

#[test]
fn ttl_expiry_default_and_per_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let cache = ResponseCache::open(config(dir.path(), &clock).ttl(Duration::from_secs(100)))
        .expect("open");
    cache.put(entry(1), None).expect("put default ttl");
    cache
        .put(entry(2), Some(Duration::from_secs(10)))
        .expect("put short ttl");
    cache
        .put(entry(3), Some(Duration::MAX))
        .expect("put never expiring");
    cache.flush().expect("flush");
    assert_eq!(stored(&cache, 0..4), vec![1, 2, 3]);
    clock.advance(Duration::from_secs(9));
    assert!(response_of(&cache, 2).is_some());
    clock.advance(Duration::from_secs(1)); // exactly at expiry: not served
    assert_eq!(response_of(&cache, 2), None);
    assert!(response_of(&cache, 1).is_some());
    clock.advance(Duration::from_secs(90));
    assert_eq!(response_of(&cache, 1), None);
    clock.advance(Duration::from_secs(10_000_000));
    assert!(response_of(&cache, 3).is_some());
    let stats = cache.stats().expect("stats");
    assert_eq!(stats.expired, 2);
    cache.flush().expect("flush");
    // Expired entries are gone from the disk; the never-expiring one stays.
    assert_eq!(stored(&cache, 0..4), vec![3]);
    assert_eq!(cache.stats().expect("stats").disk_entries, 1);
}

#[test]
fn prune_expired_sweeps_memory_and_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let cache =
        ResponseCache::open(config(dir.path(), &clock).ttl(Duration::from_secs(60))).expect("open");
    for i in 0..5 {
        cache.put(entry(i), None).expect("put");
    }
    cache
        .put(entry(5), Some(Duration::from_secs(3600)))
        .expect("put");
    cache.flush().expect("flush");
    // An entry from another process (another cache on the directory), not in this cache's
    // memory, expiring soon too.
    {
        let other = ResponseCache::open(config(dir.path(), &clock)).expect("open other");
        other
            .put(entry(6), Some(Duration::from_secs(30)))
            .expect("put foreign");
    }
    // And a `<key>.json` file of the older layout, expiring soon too.
    let mut legacy = entry(7);
    legacy.expires_at = Some(prompt_cache::Clock::now(&*clock) + chrono::Duration::seconds(30));
    fs::write(
        dir.path().join(format!("{}.json", key(7))),
        serde_json::to_vec(&legacy).expect("json"),
    )
    .expect("write legacy");
    assert_eq!(stored(&cache, 0..7), (0..7).collect::<Vec<_>>());
    assert_eq!(cache.stats().expect("stats").disk_entries, 8);
    clock.advance(Duration::from_secs(61));
    assert_eq!(cache.prune_expired().expect("prune"), 7);
    cache.flush().expect("flush");
    assert_eq!(stored(&cache, 0..8), vec![5]);
    assert!(legacy_files(dir.path()).is_empty());
    let stats = cache.stats().expect("stats");
    assert_eq!((stats.size, stats.disk_entries, stats.expired), (1, 1, 7));
}

#[test]
fn lru_order_evicts_least_recently_used_from_memory_and_keeps_it_on_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let cache = ResponseCache::open(config(dir.path(), &clock).max_size(3)).expect("open");
    for i in 0..3 {
        cache.put(entry(i), None).expect("put");
    }
    assert!(response_of(&cache, 0).is_some()); // 0 is now most recent; 1 is least
    cache.put(entry(3), None).expect("put");
    cache.flush().expect("flush");
    assert_eq!(cache.len(), 3);
    assert_eq!(
        stored(&cache, 1..2),
        vec![1],
        "evicted from memory, kept on disk"
    );
    let stats = cache.stats().expect("stats");
    assert_eq!((stats.evictions, stats.disk_entries), (1, 4));
    // Read-through brings it back into memory, evicting the least recently used (2).
    assert_eq!(response_of(&cache, 1), Some("response 1".to_owned()));
    assert_eq!(cache.len(), 3);
    assert_eq!(cache.stats().expect("stats").evictions, 2);
    for i in 0..4 {
        assert!(response_of(&cache, i).is_some(), "entry {i}");
    }
}

#[test]
fn byte_bound_evicts_and_oversized_entries_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let mut cfg = config(dir.path(), &clock).max_bytes(10_000);
    cfg.max_entry_bytes = 5_000;
    cfg.shards = 1; // one exact LRU over all 10 000 bytes
    let cache = ResponseCache::open(cfg).expect("open");
    let big = |i: u64| CachedResponse::new(key(i), "x".repeat(2_000), "m");
    for i in 0..10 {
        cache.put(big(i), None).expect("put");
        let stats = cache.stats().expect("stats");
        assert!(stats.bytes <= 10_000, "bytes {} over bound", stats.bytes);
    }
    let stats = cache.stats().expect("stats");
    assert_eq!(stats.size, 4); // each ~2.2 KB
    assert_eq!(stats.evictions, 6);
    for i in 6..10 {
        assert!(response_of(&cache, i).is_some(), "newest entry {i} kept");
    }
    let err = cache
        .put(CachedResponse::new(key(99), "y".repeat(6_000), "m"), None)
        .expect_err("too large");
    assert!(
        matches!(err, CacheError::EntryTooLarge { limit: 5_000, .. }),
        "{err}"
    );
    assert!(err.is_refused_entry());
    assert!(err.to_string().contains("max_entry_bytes"), "{err}");
    assert_eq!(response_of(&cache, 99), None);
}

#[test]
fn empty_response_is_not_cached() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let cache = ResponseCache::open(config(dir.path(), &clock)).expect("open");
    for text in ["", "  \n\t"] {
        let err = cache
            .put(CachedResponse::new(key(1), text, "m"), None)
            .expect_err("empty");
        assert!(matches!(err, CacheError::EmptyResponse { .. }), "{err}");
        assert!(err.is_refused_entry());
    }
    cache.flush().expect("flush");
    assert_eq!(cache.len(), 0);
    assert!(stored(&cache, 1..2).is_empty());
    assert_eq!(cache.stats().expect("stats").disk_entries, 0);
}

#[test]
fn restart_round_trip_keeps_entries_and_hit_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    {
        let cache = ResponseCache::open(config(dir.path(), &clock)).expect("open");
        for i in 0..20 {
            let mut e = entry(i);
            e.tokens_prompt = Some(i);
            e.finish_reason = Some("stop".to_owned());
            e.latency_ms = Some(12.5);
            cache.put(e, None).expect("put");
            clock.advance(Duration::from_secs(1));
        }
        for _ in 0..3 {
            assert!(response_of(&cache, 7).is_some());
        }
        // Dropped without an explicit flush: Drop flushes.
    }
    let cache = ResponseCache::open(config(dir.path(), &clock)).expect("reopen");
    assert_eq!(cache.len(), 0, "start-up reads nothing");
    assert_eq!(stored(&cache, 0..20), (0..20).collect::<Vec<_>>());
    assert_eq!(cache.stats().expect("stats").disk_entries, 20);
    let e = cache.get(&key(7)).expect("get").expect("hit");
    assert_eq!(e.hit_count, 4, "three hits before the restart, one after");
    assert_eq!(e.tokens_prompt, Some(7));
    assert_eq!(e.finish_reason.as_deref(), Some("stop"));
    assert_eq!(e.latency_ms, Some(12.5));
    for i in 0..20 {
        assert_eq!(response_of(&cache, i), Some(format!("response {i}")));
    }
    assert_eq!(cache.len(), 20);
}

#[test]
fn start_up_reads_nothing_and_every_entry_is_served_by_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    {
        let cache = ResponseCache::open(config(dir.path(), &clock)).expect("open");
        for i in 0..10 {
            cache.put(entry(i), None).expect("put");
        }
    }
    let cache = ResponseCache::open(config(dir.path(), &clock).max_size(4)).expect("reopen");
    assert_eq!(cache.len(), 0);
    for i in 0..10 {
        assert_eq!(response_of(&cache, i), Some(format!("response {i}")), "{i}");
    }
    assert_eq!(cache.len(), 4, "memory keeps its bound");
    drop(cache);
    let cache = ResponseCache::open(config(dir.path(), &clock)).expect("reopen");
    assert_eq!(
        stored(&cache, 0..10),
        (0..10).collect::<Vec<_>>(),
        "every entry stays on disk"
    );
    drop(cache);
    // Without read-through the disk tier is never read: a memory-only cache.
    let mut cfg = config(dir.path(), &clock);
    cfg.read_through = false;
    let cache = ResponseCache::open(cfg).expect("reopen");
    assert_eq!(response_of(&cache, 0), None);
}

#[test]
fn expired_entries_are_removed_from_disk_when_met() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    {
        let cache = ResponseCache::open(config(dir.path(), &clock)).expect("open");
        cache
            .put(entry(1), Some(Duration::from_secs(10)))
            .expect("put");
        cache
            .put(entry(2), Some(Duration::from_secs(1000)))
            .expect("put");
    }
    clock.advance(Duration::from_secs(11));
    let cache = ResponseCache::open(config(dir.path(), &clock)).expect("reopen");
    assert_eq!(stored(&cache, 1..3), vec![1, 2]);
    assert_eq!(response_of(&cache, 1), None);
    assert_eq!(response_of(&cache, 2), Some("response 2".to_owned()));
    cache.flush().expect("flush");
    assert_eq!(cache.stats().expect("stats").expired, 1);
    assert_eq!(stored(&cache, 1..3), vec![2]);
    assert_eq!(cache.stats().expect("stats").disk_entries, 1);
}

#[test]
fn corrupt_truncated_and_garbage_files_are_quarantined() {
    // `<key>.json` files of the older layout, damaged: set aside into `corrupt/`.
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let good = {
        let cache = ResponseCache::open(config(dir.path(), &clock)).expect("open");
        for i in 0..3 {
            cache.put(entry(i), None).expect("put");
        }
        cache.flush().expect("flush");
        // Entry 0's stored form, as a file of the older layout would hold it.
        stored_bytes(&cache, 0)
    };
    assert!(
        legacy_files(dir.path()).is_empty(),
        "new entries go to segments"
    );
    let bad: Vec<(u64, Vec<u8>)> = vec![
        (10, good[..good.len() / 2].to_vec()),   // truncated
        (11, b"\x00\xff garbage \x13".to_vec()), // garbage bytes
        (12, Vec::new()),                        // empty file
        (13, good.clone()),                      // another key's entry
        (14, br#"{"key": "nope", "response": "x"}"#.to_vec()), // wrong shape
        (
            15,
            String::from_utf8_lossy(&good)
                .replace("response 0", "")
                .into_bytes(),
        ), // empty response
    ];
    for (i, bytes) in &bad {
        fs::write(dir.path().join(format!("{}.json", key(*i))), bytes).expect("write bad");
    }
    // Not entry files at all: left alone.
    fs::write(dir.path().join("notes.txt"), "hello").expect("write");
    fs::write(dir.path().join("ABC.json"), "{}").expect("write");

    let cache = ResponseCache::open(config(dir.path(), &clock)).expect("open despite corruption");
    for i in 0..3 {
        assert_eq!(response_of(&cache, i), Some(format!("response {i}")));
    }
    for (i, _) in &bad {
        assert_eq!(response_of(&cache, *i), None, "bad entry {i} is a miss");
    }
    assert_eq!(cache.stats().expect("stats").corrupt, bad.len() as u64);
    // Quarantined, not deleted: the bytes are intact in corrupt/.
    for (i, bytes) in &bad {
        let moved = dir.path().join("corrupt").join(format!("{}.json", key(*i)));
        assert_eq!(&fs::read(&moved).expect("quarantined file"), bytes);
        assert!(!dir.path().join(format!("{}.json", key(*i))).exists());
    }
    assert!(dir.path().join("notes.txt").exists());
    assert!(dir.path().join("ABC.json").exists());
    // None of the damaged keys reached the index; the good ones are in segments.
    assert_eq!(stored(&cache, 0..16), vec![0, 1, 2]);

    // A corrupt file met by read-through is quarantined too, and is a miss.
    fs::write(dir.path().join(format!("{}.json", key(20))), b"{\"key\":").expect("write");
    assert_eq!(response_of(&cache, 20), None);
    assert_eq!(cache.stats().expect("stats").corrupt, bad.len() as u64 + 1);
    // A second quarantine of the same name does not overwrite the first.
    fs::write(dir.path().join(format!("{}.json", key(20))), b"again").expect("write");
    assert_eq!(response_of(&cache, 20), None);
    let corrupt_dir = dir.path().join("corrupt");
    assert!(corrupt_dir.join(format!("{}.json.1", key(20))).exists());
}

#[test]
fn temporary_files_are_ignored_and_stale_ones_cleaned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    {
        let cache = ResponseCache::open(config(dir.path(), &clock)).expect("open");
        cache.put(entry(3), None).expect("put");
    }
    // Indexes being built (`segments/.index.<pid>.<n>.tmp`): one by a live writer, one left an
    // hour ago by a killed one. And the same two of the older layout's writer.
    let segments = dir.path().join("segments");
    let fresh = segments.join(".index.999999.0.tmp");
    let stale = segments.join(".index.999999.1.tmp");
    let old_layout = dir.path().join(format!(".{}.999999.0.tmp", key(1)));
    let old_layout_stale = dir.path().join(format!(".{}.999999.1.tmp", key(2)));
    for path in [&fresh, &stale, &old_layout, &old_layout_stale] {
        fs::write(path, b"PKCIDX01 half").expect("write");
    }
    for path in [&stale, &old_layout_stale] {
        fs::File::options()
            .write(true)
            .open(path)
            .and_then(|f| f.set_modified(std::time::SystemTime::now() - Duration::from_secs(3600)))
            .expect("age");
    }
    let cache = ResponseCache::open(config(dir.path(), &clock)).expect("open");
    assert_eq!(cache.len(), 0);
    let stats = cache.stats().expect("stats");
    assert_eq!((stats.corrupt, stats.disk_entries), (0, 1));
    assert!(fresh.exists(), "another writer's temp file is left alone");
    assert!(!stale.exists(), "a stale temp file is removed by a listing");
    assert!(
        old_layout.exists(),
        "a recent temp file of the older layout is left alone"
    );
    assert!(
        !old_layout_stale.exists(),
        "a stale one is removed by a listing"
    );
    assert_eq!(response_of(&cache, 1), None);
    assert_eq!(response_of(&cache, 3), Some("response 3".to_owned()));
    assert_eq!(cache.stats().expect("stats").corrupt, 0);
}

#[test]
fn remove_and_clear() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let cache = ResponseCache::open(config(dir.path(), &clock)).expect("open");
    for i in 0..5 {
        cache.put(entry(i), None).expect("put");
    }
    assert!(cache.remove(&key(0)).expect("remove"));
    assert!(!cache.remove(&key(0)).expect("remove again"));
    assert_eq!(response_of(&cache, 0), None);
    cache.flush().expect("flush");
    assert_eq!(stored(&cache, 0..5), vec![1, 2, 3, 4]);
    assert_eq!(cache.stats().expect("stats").disk_entries, 4);
    // A file of the older layout this cache never loaded counts too.
    let mut foreign = entry(9);
    foreign.expires_at = None;
    fs::write(
        dir.path().join(format!("{}.json", key(9))),
        serde_json::to_vec(&foreign).expect("json"),
    )
    .expect("write");
    assert_eq!(cache.stats().expect("stats").disk_entries, 5);
    assert_eq!(cache.clear().expect("clear"), 5);
    assert!(legacy_files(dir.path()).is_empty());
    assert!(stored(&cache, 0..10).is_empty());
    assert_eq!(cache.len(), 0);
    let stats = cache.stats().expect("stats");
    assert_eq!((stats.disk_entries, stats.disk_bytes), (0, 0));
    // Usable after clear, and puts after clear persist.
    cache.put(entry(1), None).expect("put");
    cache.flush().expect("flush");
    assert_eq!(stored(&cache, 0..10), vec![1]);
    drop(cache);
    let cache = ResponseCache::open(config(dir.path(), &clock)).expect("reopen");
    assert_eq!(response_of(&cache, 1), Some("response 1".to_owned()));
    for i in [0, 2, 9] {
        assert_eq!(response_of(&cache, i), None, "{i} cleared");
    }
}

#[test]
fn unwritable_cache_dir_is_an_error_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("a-file");
    fs::write(&file, "x").expect("write");
    let bad = file.join("cache");
    let err = ResponseCache::open(CacheConfig::new(&bad)).expect_err("unwritable");
    assert!(matches!(err, CacheError::DirNotWritable { .. }), "{err}");
    assert!(
        err.to_string().contains(&bad.display().to_string()),
        "{err}"
    );
}

#[test]
fn invalid_config_is_an_error_naming_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (cfg, field) in [
        (CacheConfig::new(dir.path()).max_size(0), "max_size"),
        (CacheConfig::new(dir.path()).max_bytes(0), "max_bytes"),
        (
            CacheConfig {
                shards: 3,
                ..CacheConfig::new(dir.path())
            },
            "shards",
        ),
    ] {
        let err = ResponseCache::open(cfg).expect_err(field);
        assert!(err.to_string().contains(field), "{err}");
    }
}

#[test]
fn failed_disk_writes_keep_entries_in_memory_and_are_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache_dir = dir.path().join("cache");
    let clock = clock();
    let cache = ResponseCache::open(config(&cache_dir, &clock)).expect("open");
    // The directory disappears and a file takes its place: every write now fails (as on a full
    // or read-only disk), whatever the user's privileges.
    fs::remove_dir_all(&cache_dir).expect("remove dir");
    fs::write(&cache_dir, "not a directory").expect("write");
    for i in 0..3 {
        cache.put(entry(i), None).expect("put still succeeds");
    }
    cache.flush().expect("flush");
    let stats = cache.stats().expect("stats");
    assert_eq!(stats.write_failures, 3);
    for i in 0..3 {
        assert_eq!(response_of(&cache, i), Some(format!("response {i}")));
    }
}

#[test]
fn two_caches_on_one_directory_from_two_threads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let a = Arc::new(ResponseCache::open(config(dir.path(), &clock)).expect("open a"));
    let b = Arc::new(ResponseCache::open(config(dir.path(), &clock)).expect("open b"));
    let writers: Vec<_> = [(a.clone(), 0u64), (b.clone(), 1000u64)]
        .into_iter()
        .map(|(cache, base)| {
            std::thread::spawn(move || {
                for i in base..base + 200 {
                    cache.put(entry(i), None).expect("put");
                    // Shared keys, written by both with the same content.
                    cache.put(entry(5000 + i % 50), None).expect("put shared");
                    if i % 10 == 0 {
                        cache.flush().expect("flush");
                    }
                    // Reads of the other's keys: absent or complete and correct, never wrong.
                    let other = if base == 0 { 1000 + i } else { i - 1000 };
                    if let Some(e) = cache.get(&key(other)).expect("get") {
                        assert_eq!(&*e.response, format!("response {other}"));
                    }
                }
                cache.flush().expect("flush");
            })
        })
        .collect();
    for w in writers {
        w.join().expect("thread");
    }
    // Each sees the other's entries through the shared directory.
    for i in 0..200 {
        assert_eq!(
            response_of(&a, 1000 + i),
            Some(format!("response {}", 1000 + i))
        );
        assert_eq!(response_of(&b, i), Some(format!("response {i}")));
    }
    assert_eq!(a.stats().expect("stats").corrupt, 0);
    assert_eq!(b.stats().expect("stats").corrupt, 0);
    drop((a, b));
    let c = ResponseCache::open(config(dir.path(), &clock)).expect("reopen");
    let all = (0..200).chain(1000..1200).chain(5000..5050);
    for i in all {
        assert_eq!(response_of(&c, i), Some(format!("response {i}")), "{i}");
    }
    let stats = c.stats().expect("stats");
    assert_eq!((stats.disk_entries, stats.corrupt), (450, 0));
}

#[test]
fn concurrent_gets_and_puts_across_shards() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let cache =
        Arc::new(ResponseCache::open(config(dir.path(), &clock).max_size(512)).expect("open"));
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let cache = cache.clone();
            std::thread::spawn(move || {
                for i in 0..500 {
                    let k = t * 10_000 + i;
                    cache.put(entry(k), None).expect("put");
                    // From memory, or from disk if other threads' puts evicted it meanwhile.
                    let got = cache.get(&key(k)).expect("get").expect("hit");
                    assert_eq!(&*got.response, format!("response {k}"));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    let stats = cache.stats().expect("stats");
    assert!(stats.size <= 512, "size {} over max_size", stats.size);
    // Every put, and every get served from disk, inserted into memory.
    assert!(stats.size as u64 + stats.evictions >= 2000, "{stats:?}");
    assert_eq!((stats.hits, stats.misses), (2000, 0));
}

#[test]
fn sharded_cache_fills_to_exactly_max_size_and_max_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let cache = ResponseCache::open(config(dir.path(), &clock).max_size(300)).expect("open");
    for i in 0..1000 {
        cache.put(entry(i), None).expect("put");
    }
    let stats = cache.stats().expect("stats");
    assert_eq!(stats.size, 300, "all shards together hold max_size");
    assert_eq!(stats.evictions, 700);
    // The most recent entries survive (eviction is per shard, so only approximately LRU for
    // older ones, but the last put of every shard is kept).
    assert!(response_of(&cache, 999).is_some());
    cache.flush().expect("flush");
    assert_eq!(
        stored(&cache, 0..1000).len(),
        1000,
        "evicted entries stay on disk"
    );
    assert_eq!(cache.stats().expect("stats").disk_entries, 1000);

    // The byte bound is global too: 16 shards, 20 000 bytes, entries of ~2.2 KB each.
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), &clock).max_size(1000).max_bytes(20_000);
    let cache = ResponseCache::open(cfg).expect("open");
    for i in 0..100 {
        cache
            .put(CachedResponse::new(key(i), "z".repeat(2_000), "m"), None)
            .expect("an entry far larger than 20 000 / 16 bytes is accepted");
        assert!(cache.stats().expect("stats").bytes <= 20_000);
    }
    let stats = cache.stats().expect("stats");
    assert_eq!(stats.size, 9);
    assert_eq!(stats.evictions, 91);
}

#[test]
fn large_entries_and_files_written_by_other_tools_are_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    // Larger than one read buffer, with escapes and non-ASCII text throughout.
    let big: String = (0..40_000)
        .map(|i| format!("line {i}: \"quoted\" \\ é ✓\t\n"))
        .collect();
    let mut large = CachedResponse::new(key(1), big.as_str(), "m");
    large.created_at = clock.now_for_test();
    // Pretty-printed, with `\u` escapes and trailing whitespace: valid JSON the cache did not
    // write itself.
    let mut other = CachedResponse::new(key(2), "tab\there\u{1}", "m");
    other.created_at = clock.now_for_test();
    other.provider = Some("ollama".to_owned());
    for (entry, bytes) in [
        (&large, serde_json::to_vec(&large).expect("json")),
        (&other, {
            let mut b = serde_json::to_vec_pretty(&other).expect("json");
            b.extend_from_slice(b"\n\n");
            b
        }),
    ] {
        fs::write(dir.path().join(format!("{}.json", entry.key)), bytes).expect("write");
    }
    let cache = ResponseCache::open(config(dir.path(), &clock)).expect("open");
    let got = cache
        .get(&key(1))
        .expect("get")
        .expect("large entry loaded");
    assert_eq!(&*got.response, big.as_str());
    let got = cache
        .get(&key(2))
        .expect("get")
        .expect("pretty entry loaded");
    assert_eq!(&*got.response, "tab\there\u{1}");
    assert_eq!(got.provider.as_deref(), Some("ollama"));
    assert_eq!(cache.stats().expect("stats").corrupt, 0);
    // Rewritten into a segment at the flush, the files removed; served from there.
    cache.flush().expect("flush");
    assert_eq!(stored(&cache, 1..3), vec![1, 2]);
    assert!(legacy_files(dir.path()).is_empty());
    drop(cache);
    let cache = ResponseCache::open(config(dir.path(), &clock)).expect("reopen");
    let got = cache.get(&key(1)).expect("get").expect("large entry");
    assert_eq!(&*got.response, big.as_str());
    assert_eq!(got.hit_count, 2);
    let got = cache.get(&key(2)).expect("get").expect("pretty entry");
    assert_eq!(&*got.response, "tab\there\u{1}");
    assert_eq!(cache.stats().expect("stats").corrupt, 0);
}

#[test]
fn more_entries_than_max_size_are_all_served_and_damaged_ones_are_misses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let n = 1500u64;
    {
        let cache = ResponseCache::open(config(dir.path(), &clock).max_size(2000)).expect("open");
        for i in 0..n {
            // Every tenth entry expires before the restart.
            let ttl = if i % 10 == 3 { 10 } else { 1000 };
            cache
                .put(entry(i), Some(Duration::from_secs(ttl)))
                .expect("put");
        }
        cache.flush().expect("flush");
        // Some damaged entries.
        for i in [5u64, 700, 1490] {
            damage_stored(&cache, i);
        }
    }
    clock.advance(Duration::from_secs(11));
    let max = 1000usize;
    let cache = ResponseCache::open(config(dir.path(), &clock).max_size(max)).expect("reopen");
    let live = |i: u64| i % 10 != 3 && ![5, 700, 1490].contains(&i);
    for i in 0..n {
        let want = live(i).then(|| format!("response {i}"));
        assert_eq!(response_of(&cache, i), want, "{i}");
    }
    assert!(cache.len() <= max);
    // A damaged record stays where it is (nothing is moved to corrupt/).
    assert!(!dir.path().join("corrupt").exists());
    cache.flush().expect("flush");
    let stats = cache.stats().expect("stats");
    assert_eq!(stats.corrupt, 3, "{stats:?}");
    assert_eq!(stats.expired, n / 10, "{stats:?}");
    drop(cache);
    // Nothing live was deleted; every expired entry met and every damaged one left the index.
    let cache = ResponseCache::open(config(dir.path(), &clock)).expect("reopen");
    let on_disk = stored(&cache, 0..n);
    assert_eq!(on_disk, (0..n).filter(|&i| live(i)).collect::<Vec<_>>());
    assert_eq!(
        cache.stats().expect("stats").disk_entries,
        on_disk.len() as u64
    );
    // The damaged ones are misses again, not counted twice.
    for i in [5u64, 700, 1490] {
        assert_eq!(response_of(&cache, i), None, "{i}");
    }
    assert_eq!(cache.stats().expect("stats").corrupt, 0);
}
