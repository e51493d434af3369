//! The disk tier of `ResponseCache`: larger than memory, bounded by its own limits, read by key.
//!
//! Two processes on one directory: the test re-runs its own binary as the child
//! (`child_shares_the_directory`, switched on by an environment variable).

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use prompt_cache::{CacheConfig, CacheKey, CacheStore, CachedResponse, ResponseCache};

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

fn path_of(dir: &Path, i: u64) -> std::path::PathBuf {
    dir.join(format!("{}.json", key(i)))
}

/// Entry files and their bytes, as listed by the test itself.
fn on_disk(dir: &Path) -> (u64, u64) {
    let mut out = (0, 0);
    for item in fs::read_dir(dir).expect("read dir").flatten() {
        let name = item.file_name().to_string_lossy().into_owned();
        // A file removed since the listing is not counted.
        if name.len() == 69
            && name.ends_with(".json")
            && let Ok(meta) = item.metadata()
        {
            out.0 += 1;
            out.1 += meta.len();
        }
    }
    out
}

/// What the usage journal (`.usage`: `<entries> <bytes>` lines) adds up to.
fn journal_sum(dir: &Path) -> (i64, i64) {
    let journal = fs::read_to_string(dir.join(".usage")).expect("journal");
    journal.lines().fold((0, 0), |(e, b), line| {
        let (de, db) = line.split_once(' ').expect("two numbers");
        (
            e + de.parse::<i64>().expect("entries"),
            b + db.parse::<i64>().expect("bytes"),
        )
    })
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

/// Sets the modification time of entry `i`'s file `age` seconds into the past.
fn age(dir: &Path, i: u64, age: u64) {
    fs::File::options()
        .write(true)
        .open(path_of(dir, i))
        .and_then(|f| f.set_modified(SystemTime::now() - Duration::from_secs(age)))
        .expect("set mtime");
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
        on_disk(dir.path()).1
    };
    let bound = 100 * size;
    let cfg = CacheConfig::new(dir.path())
        .max_size(16)
        .max_disk_bytes(bound);
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
    // Sampled while the storm runs: never over the bound (eviction comes before each write).
    let mut samples = 0;
    while threads.iter().any(|t| !t.is_finished()) {
        let (_, bytes) = on_disk(dir.path());
        assert!(bytes <= bound, "{bytes} bytes on disk, bound {bound}");
        samples += 1;
        std::thread::sleep(Duration::from_millis(1));
    }
    for t in threads {
        t.join().expect("thread");
    }
    cache.flush().expect("flush");
    let (entries, bytes) = on_disk(dir.path());
    assert!(bytes <= bound, "{bytes} bytes on disk, bound {bound}");
    assert!(
        entries >= 80,
        "eviction goes down to 90 % of the bound, not further: {entries}"
    );
    let stats = cache.stats().expect("stats");
    assert_eq!((stats.disk_entries, stats.disk_bytes), (entries, bytes));
    assert!(
        stats.disk_evictions >= 2000 - 100,
        "{stats:?} after {samples} samples"
    );
    // What is left on disk is served unchanged.
    let kept = (0..4)
        .flat_map(|t| (0..500).map(move |i| 1 + t * 1000 + i))
        .filter(|&i| served(&cache, i))
        .count() as u64;
    assert!(kept >= entries, "{kept} served, {entries} files");
    // An entry larger than the whole bound stays in memory only, counted as a failed write.
    let mut huge = entry(9999);
    huge.response = "y".repeat(bound as usize + 1).into();
    cache.put(huge, None).expect("put");
    cache.flush().expect("flush");
    assert!(!path_of(dir.path(), 9999).exists());
    assert_eq!(cache.stats().expect("stats").write_failures, 1);
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
        for i in 0..10 {
            cache.put(entry(i), None).expect("put");
        }
    }
    // Entry i last written 1000 - i seconds ago: 0 is the oldest.
    for i in 0..10 {
        age(dir.path(), i, 1000 - i);
    }
    let cache = ResponseCache::open(cfg()).expect("reopen");
    // A hit on 0, written back at the flush: now the most recently used on disk.
    assert!(served(&cache, 0));
    cache.flush().expect("flush");
    for i in 10..12 {
        cache.put(entry(i), None).expect("put");
    }
    cache.flush().expect("flush");
    // Two new files over a bound of ten: down to 90 % of it, the least recently used first.
    let (entries, _) = on_disk(dir.path());
    assert!(entries <= 10, "{entries} files");
    assert!(path_of(dir.path(), 0).exists(), "used recently, kept");
    assert!(
        !path_of(dir.path(), 1).exists(),
        "the least recently used, gone"
    );
    for i in [9, 10, 11] {
        assert!(path_of(dir.path(), i).exists(), "recent entry {i} kept");
    }
    assert_eq!(
        cache.stats().expect("stats").disk_evictions,
        12 - entries,
        "every file removed was counted"
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
    drop(cache);
    // Each entry read was written back with a checksum (and its hit count), none lost.
    for i in 0..50 {
        let text = fs::read_to_string(path_of(dir.path(), i)).expect("read");
        assert!(text.contains("\"checksum\":\"xxh3:"), "{text}");
    }
    let cache = ResponseCache::open(CacheConfig::new(dir.path())).expect("reopen");
    for i in 0..50 {
        assert_eq!(cache.get(&key(i)).expect("get").expect("hit").hit_count, 4);
    }
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
fn writes_after_a_restart_start_from_the_usage_journal_not_a_listing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = || CacheConfig::new(dir.path()).max_size(4);
    {
        let cache = ResponseCache::open(cfg()).expect("open");
        for i in 0..20 {
            cache.put(entry(i), None).expect("put");
        }
    }
    // A temporary file left by a killed writer an hour ago: any listing removes it.
    let stale = dir.path().join(format!(".{}.1.0.tmp", key(99)));
    fs::write(&stale, b"{\"half\":").expect("write");
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
        "neither start-up nor the writes listed the directory"
    );
    // The journal adds up to what is on disk.
    let (entries, bytes) = on_disk(dir.path());
    assert_eq!(journal_sum(dir.path()), (entries as i64, bytes as i64));
    assert_eq!(entries, 29);
    // `stats` lists the directory: exact, and it cleans the stale file.
    let stats = cache.stats().expect("stats");
    assert_eq!((stats.disk_entries, stats.disk_bytes), (entries, bytes));
    assert!(!stale.exists());
}

#[test]
fn a_damaged_usage_journal_is_rebuilt_by_a_listing() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let cache = ResponseCache::open(CacheConfig::new(dir.path())).expect("open");
        for i in 0..10 {
            cache.put(entry(i), None).expect("put");
        }
    }
    let (_, bytes) = on_disk(dir.path());
    // Torn or garbage: a listing rebuilds it and the bound holds. One that claims far less
    // than is there is believed (the next listing, when the writes reach the bound, corrects
    // it), and nothing is lost or damaged either way.
    for damage in ["3 12\n7 x", "\u{0}\u{ff}garbage", "1 1\n"] {
        fs::write(dir.path().join(".usage"), damage).expect("write");
        let cfg = CacheConfig::new(dir.path()).max_disk_bytes(bytes);
        let cache = ResponseCache::open(cfg).expect("open despite the journal");
        cache.put(entry(100), None).expect("put");
        cache.flush().expect("flush");
        let (_, now) = on_disk(dir.path());
        if damage != "1 1\n" {
            assert!(now <= bytes, "{damage:?}: {now} bytes, bound {bytes}");
            let (entries, total) = on_disk(dir.path());
            assert_eq!(
                journal_sum(dir.path()),
                (entries as i64, total as i64),
                "{damage:?}: rebuilt"
            );
        }
        assert!(served(&cache, 100));
        assert_eq!(cache.stats().expect("stats").corrupt, 0);
        drop(cache);
        // Back to the ten entries for the next round.
        let _ = fs::remove_file(path_of(dir.path(), 100));
    }
}
