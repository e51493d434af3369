//! The disk tier of `ResponseCache`: larger than memory, bounded by its own limits, read by key.
//!
//! Entries live in segment files under `<cache_dir>/segments/`; tests find them with
//! `ResponseCache::stored_at` and measure the segments themselves. `<key>.json` files appear
//! only where a test sets up the older layout.
//!
//! Two processes on one directory: the test re-runs its own binary as the child
//! (`child_shares_the_directory`, switched on by an environment variable).

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use prompt_cache::{CacheConfig, CacheKey, CacheStore, CachedResponse, ResponseCache};

mod support;
use support::{segment_bytes, segments};

fn key(i: u64) -> CacheKey {
    CacheKey::builder("disk-tier")
        .model("m")
        .message("user", &format!("prompt {i}"))
        .finish()
}

fn response(i: u64) -> String {
    format!("response {i}: {}", "x".repeat(1000))
}

fn entry(i: u64) -> CachedResponse {
    CachedResponse::new(key(i), response(i), "m")
}

/// `<key>.json`: where the older layout kept entry `i`.
fn path_of(dir: &Path, i: u64) -> std::path::PathBuf {
    dir.join(format!("{}.json", key(i)))
}

/// Whether the disk tier holds entry `i` now (after a flush).
fn stored(cache: &ResponseCache, i: u64) -> bool {
    cache.stored_at(&key(i)).expect("stored_at").is_some()
}

fn served(cache: &ResponseCache, i: u64) -> bool {
    match cache.get(&key(i)).expect("get") {
        Some(e) => {
            assert_eq!(&*e.response, response(i), "entry {i} served unchanged");
            true
        }
        None => false,
    }
}

#[test]
fn an_entry_evicted_from_memory_stays_on_disk_and_is_served_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let cache = ResponseCache::open(CacheConfig::new(dir.path()).max_size(10)).expect("open");
        for i in 0..3000 {
            cache.put(entry(i), None).expect("put");
        }
        let stats = cache.stats().expect("stats");
        assert!(stats.size <= 10);
        assert_eq!(stats.evictions, 3000 - stats.size as u64);
        // The first entry left memory long ago; it is still served, from disk.
        assert!(served(&cache, 0));
        cache.flush().expect("flush");
        assert_eq!(cache.stats().expect("stats").disk_entries, 3000);
    }
    // The same batch again, in a new process: every entry is a hit (the 0 of 3,000).
    let cache = ResponseCache::open(CacheConfig::new(dir.path()).max_size(10)).expect("reopen");
    assert_eq!(cache.len(), 0);
    for i in 0..3000 {
        assert!(served(&cache, i), "entry {i} served after the restart");
    }
    let stats = cache.stats().expect("stats");
    assert_eq!((stats.hits, stats.misses, stats.corrupt), (3000, 0, 0));
}

#[test]
fn the_disk_bound_holds_under_a_write_storm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let size = {
        let cache = ResponseCache::open(CacheConfig::new(dir.path())).expect("open");
        cache.put(entry(0), None).expect("put");
        cache.flush().expect("flush");
        segment_bytes(dir.path())
    };
    let bound = 100 * size;
    // A short write queue keeps each batch the writer appends before it enforces the bound
    // small: records are appended first, then published with the bound enforced.
    const QUEUE: u64 = 4;
    let mut cfg = CacheConfig::new(dir.path())
        .max_size(16)
        .max_disk_bytes(bound);
    cfg.write_queue = QUEUE as usize;
    let cache = Arc::new(ResponseCache::open(cfg).expect("open"));
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let cache = Arc::clone(&cache);
            std::thread::spawn(move || {
                for i in 0..500 {
                    cache.put(entry(1 + t * 1000 + i), None).expect("put");
                    if i % 50 == 0 {
                        cache.flush().expect("flush");
                    }
                }
            })
        })
        .collect();
    // Sampled while the storm runs: never over the bound by more than the batch being
    // published (and, since a listing is not a snapshot, the next one). Entries are about
    // `size` bytes each (their numbers have more digits).
    let slack = 2 * QUEUE * (size + 8);
    let mut samples = 0;
    while threads.iter().any(|t| !t.is_finished()) {
        let bytes = segment_bytes(dir.path());
        assert!(
            bytes <= bound + slack,
            "{bytes} bytes on disk, bound {bound}"
        );
        samples += 1;
        std::thread::sleep(Duration::from_millis(1));
    }
    for t in threads {
        t.join().expect("thread");
    }
    cache.flush().expect("flush");
    // Once flushed, within the bound exactly.
    let bytes = segment_bytes(dir.path());
    assert!(bytes <= bound, "{bytes} bytes on disk, bound {bound}");
    let keys: Vec<u64> = std::iter::once(0)
        .chain((0..4).flat_map(|t| (0..500).map(move |i| 1 + t * 1000 + i)))
        .collect();
    let entries = keys.iter().filter(|&&i| stored(&cache, i)).count() as u64;
    assert!(
        entries >= 80,
        "eviction goes down to 90 % of the bound, whole segments of ~6 entries: {entries}"
    );
    let stats = cache.stats().expect("stats");
    assert_eq!((stats.disk_entries, stats.disk_bytes), (entries, bytes));
    // Every entry that left the disk was counted (entry 0 included: this cache removed the
    // segment another cache wrote it to).
    assert_eq!(
        stats.disk_evictions + entries,
        2001,
        "{stats:?} after {samples} samples"
    );
    // Whole segments went, oldest first: what is left is the newest ones, ids without a gap.
    let ids: Vec<u32> = segments(dir.path()).iter().map(|s| s.0).collect();
    assert!(ids.len() >= 2, "{ids:?}");
    assert!(
        ids[0] > 1,
        "the first segment (entry 0) was removed first: {ids:?}"
    );
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");
    // What is left on disk is served unchanged: read by another cache, whose memory holds them
    // all (the hit counts it writes back would otherwise push older segments out meanwhile).
    {
        let reader = ResponseCache::open(
            CacheConfig::new(dir.path())
                .max_size(4096)
                .max_disk_bytes(bound),
        )
        .expect("open reader");
        let kept = keys.iter().filter(|&&i| served(&reader, i)).count() as u64;
        assert_eq!(kept, entries, "every entry on disk served");
        assert_eq!(reader.stats().expect("stats").corrupt, 0);
    }
    // An entry larger than the whole bound stays in memory only, counted as a failed write.
    let mut huge = entry(9999);
    huge.response = "y".repeat(bound as usize + 1).into();
    cache.put(huge, None).expect("put");
    cache.flush().expect("flush");
    assert!(!stored(&cache, 9999));
    assert!(segment_bytes(dir.path()) <= bound);
    assert_eq!(cache.stats().expect("stats").write_failures, 1);
    let huge = cache
        .get(&key(9999))
        .expect("get")
        .expect("served from memory");
    assert_eq!(huge.response.len(), bound as usize + 1);
}

#[test]
fn the_disk_keeps_the_recently_used_and_bounds_entries_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = || {
        CacheConfig::new(dir.path())
            .max_size(2)
            .max_disk_entries(Some(10))
    };
    {
        let cache = ResponseCache::open(cfg()).expect("open");
        // One at a time, so that they are written in this order: 0 is the oldest.
        for i in 0..10 {
            cache.put(entry(i), None).expect("put");
            cache.flush().expect("flush");
        }
    }
    let cache = ResponseCache::open(cfg()).expect("reopen");
    // A hit on 0, written back at the flush: now the most recently written on disk.
    assert!(served(&cache, 0));
    cache.flush().expect("flush");
    for i in 10..12 {
        cache.put(entry(i), None).expect("put");
    }
    cache.flush().expect("flush");
    // Two new entries over a bound of ten: down to 90 % of it, the least recently written
    // first.
    let kept: Vec<u64> = (0..12).filter(|&i| stored(&cache, i)).collect();
    assert!(kept.len() <= 10, "{kept:?}");
    assert!(kept.contains(&0), "used recently, kept: {kept:?}");
    assert!(
        !kept.contains(&1),
        "the least recently used, gone: {kept:?}"
    );
    for i in [9, 10, 11] {
        assert!(kept.contains(&i), "recent entry {i} kept: {kept:?}");
    }
    // Exactly the oldest-written went: everything from the first one kept on is still there.
    let first = (1..10).find(|i| kept.contains(i)).expect("some kept");
    assert!((first..12).all(|i| kept.contains(&i)), "{kept:?}");
    assert!(
        !served(&cache, 1),
        "an entry dropped from the disk is a miss"
    );
    let stats = cache.stats().expect("stats");
    assert_eq!(stats.disk_entries, kept.len() as u64);
    assert_eq!(
        stats.disk_evictions,
        12 - kept.len() as u64,
        "every entry removed was counted"
    );
}

#[test]
fn an_old_layout_directory_is_served_without_loss() {
    // `<key>.json` files as the cache wrote them before checksums and before the disk tier had
    // its own bound: serde_json's object with the Python original's field names.
    let dir = tempfile::tempdir().expect("tempdir");
    let created = chrono::Utc::now();
    for i in 0..50 {
        let text = serde_json::json!({
            "key": key(i).to_hex(),
            "response": response(i),
            "model": "m",
            "temperature": 0.7,
            "created_at": created.to_rfc3339(),
            "expires_at": null,
            "hit_count": 2,
            "tokens_prompt": 10,
            "tokens_completion": 20,
        });
        fs::write(path_of(dir.path(), i), text.to_string()).expect("write");
    }
    let before: Vec<Vec<u8>> = (0..50)
        .map(|i| fs::read(path_of(dir.path(), i)).expect("read"))
        .collect();
    let cache = ResponseCache::open(CacheConfig::new(dir.path()).max_size(5)).expect("open");
    // Opening changes nothing on disk.
    for (i, bytes) in before.iter().enumerate() {
        assert_eq!(
            &fs::read(path_of(dir.path(), i as u64)).expect("read"),
            bytes
        );
    }
    let stats = cache.stats().expect("stats");
    assert_eq!((stats.disk_entries, stats.corrupt), (50, 0));
    for i in 0..50 {
        let e = cache.get(&key(i)).expect("get").expect("old entry served");
        assert_eq!(&*e.response, response(i));
        assert_eq!(
            (e.hit_count, e.tokens_prompt, e.temperature),
            (3, Some(10), Some(0.7))
        );
    }
    cache.flush().expect("flush");
    // Each entry read was written back into a segment with a checksum (and its hit count),
    // and its file of the older layout removed; none lost.
    for i in 0..50 {
        let at = cache
            .stored_at(&key(i))
            .expect("stored_at")
            .expect("on disk");
        assert!(at.path.starts_with(dir.path().join("segments")), "{at:?}");
        let bytes = fs::read(&at.path).expect("read segment");
        let text = std::str::from_utf8(&bytes[at.range.start as usize..at.range.end as usize])
            .expect("utf-8");
        assert!(text.contains("\"checksum\":\"xxh3:"), "{text}");
        assert!(text.contains(&key(i).to_hex()), "{text}");
        assert!(!path_of(dir.path(), i).exists(), "{i}");
    }
    let stats = cache.stats().expect("stats");
    assert_eq!((stats.disk_entries, stats.corrupt), (50, 0));
    drop(cache);
    let cache = ResponseCache::open(CacheConfig::new(dir.path())).expect("reopen");
    for i in 0..50 {
        let e = cache.get(&key(i)).expect("get").expect("hit");
        assert_eq!(&*e.response, response(i));
        assert_eq!(
            (e.hit_count, e.tokens_prompt, e.temperature),
            (4, Some(10), Some(0.7))
        );
    }
    assert_eq!(cache.stats().expect("stats").corrupt, 0);
}

const CHILD_DIR_ENV: &str = "PROMPT_CACHE_TEST_SHARED_DIR";

/// Entries each process writes; the child writes `0..N`, the parent `N..2N`, both `2N..3N`.
const N: u64 = 300;

/// One side of `two_processes_share_one_directory`: writes its own entries and the shared
/// ones, then waits until it is served every entry of the other side.
fn share(dir: &Path, own: std::ops::Range<u64>, other: std::ops::Range<u64>) {
    let cfg = CacheConfig::new(dir).max_size(50).max_disk_bytes(64 << 20);
    let cache = ResponseCache::open(cfg).expect("open");
    for i in own {
        cache.put(entry(i), None).expect("put");
        cache.put(entry(2 * N + i % N), None).expect("put shared");
        // Reads of the other side's keys: absent or complete and correct, never wrong.
        served(&cache, other.start + i % N);
        if i % 25 == 0 {
            cache.flush().expect("flush");
        }
    }
    cache.flush().expect("flush");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut missing: Vec<u64> = other.chain(2 * N..3 * N).collect();
    while !missing.is_empty() {
        assert!(
            Instant::now() < deadline,
            "{} entries never seen",
            missing.len()
        );
        missing.retain(|&i| !served(&cache, i));
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(cache.stats().expect("stats").corrupt, 0);
}

/// The child of `two_processes_share_one_directory`.
#[test]
fn child_shares_the_directory() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return; // only runs as the child of `two_processes_share_one_directory`
    };
    share(Path::new(&dir), 0..N, N..2 * N);
}

#[test]
fn two_processes_share_one_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("current exe");
    let mut child = Command::new(&exe)
        .args([
            "--exact",
            "child_shares_the_directory",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_ENV, dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    share(dir.path(), N..2 * N, 0..N);
    let status = child.wait().expect("wait");
    assert!(status.success(), "the child saw every entry of the parent");
    // A third opener sees all of it, none torn.
    let cache = ResponseCache::open(CacheConfig::new(dir.path())).expect("reopen");
    for i in 0..3 * N {
        assert!(served(&cache, i), "entry {i}");
    }
    let stats = cache.stats().expect("stats");
    assert_eq!((stats.disk_entries, stats.corrupt), (3 * N, 0));
}

#[test]
fn writes_after_a_restart_list_nothing_and_stats_is_exact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = || CacheConfig::new(dir.path()).max_size(4);
    {
        let cache = ResponseCache::open(cfg()).expect("open");
        for i in 0..20 {
            cache.put(entry(i), None).expect("put");
        }
    }
    // A temporary index left by a killed writer an hour ago: any listing of the segments
    // removes it.
    let stale = dir.path().join("segments").join(".index.999999.0.tmp");
    fs::write(&stale, b"PKCIDX01 half").expect("write");
    fs::File::options()
        .write(true)
        .open(&stale)
        .and_then(|f| f.set_modified(SystemTime::now() - Duration::from_secs(3600)))
        .expect("age");
    let cache = ResponseCache::open(cfg()).expect("reopen");
    for i in 20..30 {
        cache.put(entry(i), None).expect("put");
    }
    assert!(served(&cache, 0));
    cache.remove(&key(1)).expect("remove");
    cache.flush().expect("flush");
    assert!(
        stale.exists(),
        "neither start-up nor the writes under the bounds listed the directory"
    );
    // What the test sees on disk: 29 entries, in the segment files.
    let entries = (0..30).filter(|&i| stored(&cache, i)).count() as u64;
    assert_eq!(entries, 29);
    assert!(!stored(&cache, 1));
    let bytes = segment_bytes(dir.path());
    assert!(bytes > 0);
    // `stats` lists the directory: exact, and it cleans the stale file.
    let stats = cache.stats().expect("stats");
    assert_eq!((stats.disk_entries, stats.disk_bytes), (entries, bytes));
    assert!(!stale.exists());
}

#[test]
fn a_lost_or_damaged_index_leaves_the_bound_holding() {
    // The entries a lost index pointed to are lost with it (misses), but their segments are
    // still there: they count against the bound and go first when it is reached.
    for damage in ["removed", "garbage header"] {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let cache = ResponseCache::open(CacheConfig::new(dir.path())).expect("open");
            for i in 0..10 {
                cache.put(entry(i), None).expect("put");
            }
        }
        let bytes = segment_bytes(dir.path());
        let index = dir.path().join("segments").join("index");
        match damage {
            "removed" => fs::remove_file(&index).expect("remove index"),
            _ => {
                let mut b = fs::read(&index).expect("read index");
                b[..64].fill(0xa5);
                fs::write(&index, b).expect("write index");
            }
        }
        let cfg = CacheConfig::new(dir.path()).max_disk_bytes(bytes);
        let cache = ResponseCache::open(cfg).expect("open despite the index");
        cache.put(entry(100), None).expect("put");
        cache.flush().expect("flush");
        let now = segment_bytes(dir.path());
        assert!(now <= bytes, "{damage}: {now} bytes, bound {bytes}");
        assert!(served(&cache, 100), "{damage}");
        let stats = cache.stats().expect("stats");
        assert_eq!(
            (stats.disk_entries, stats.disk_bytes, stats.corrupt),
            (1, now, 0),
            "{damage}"
        );
        drop(cache);
        let cache = ResponseCache::open(CacheConfig::new(dir.path())).expect("reopen");
        assert!(served(&cache, 100), "{damage}: served after a restart");
        if damage != "removed" {
            assert!(
                dir.path().join("corrupt").join("index").exists(),
                "the damaged index is set aside"
            );
        }
    }
}
