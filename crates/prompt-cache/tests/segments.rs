//! The disk tier's layout itself: entries appended to segment files under
//! `<cache_dir>/segments/`, found through a shared index that several caches (threads or
//! processes) write at once and that grows, is replaced, and can be damaged.
//!
//! Entries are found on disk with `ResponseCache::stored_at`. One test re-runs its own binary as
//! a child process (`child_writes_beside_the_parent`, switched on by an environment variable).

use std::fs;
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use prompt_cache::{CacheConfig, CacheKey, CacheStore, CachedResponse, ManualClock, ResponseCache};

mod support;
use support::{segment_bytes, segments};

fn key(i: u64) -> CacheKey {
    CacheKey::builder("segments")
        .model("m")
        .message("user", &format!("prompt {i}"))
        .finish()
}

/// The response of entry `i`: fixed width, so that every entry has the same size.
fn response(i: u64) -> String {
    format!("response {i:08}: {}", "x".repeat(500))
}

fn entry(i: u64) -> CachedResponse {
    CachedResponse::new(key(i), response(i), "m")
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

/// Whether `cache` serves entry `i`, checking its content when it does.
fn served(cache: &ResponseCache, i: u64) -> bool {
    match cache.get(&key(i)).expect("get") {
        Some(e) => {
            assert_eq!(e.key, key(i));
            assert_eq!(&*e.response, response(i), "entry {i} served unchanged");
            true
        }
        None => false,
    }
}

/// Whether the disk tier holds entry `i` now (after a flush): in a segment.
fn stored(cache: &ResponseCache, i: u64) -> bool {
    match cache.stored_at(&key(i)).expect("stored_at") {
        Some(at) => {
            let segments = cache.config().cache_dir.join("segments");
            assert_eq!(at.path.parent(), Some(segments.as_path()), "{at:?}");
            true
        }
        None => false,
    }
}

/// `<key>.json` files of the older layout in `dir`.
fn legacy_files(dir: &Path) -> usize {
    fs::read_dir(dir)
        .expect("read dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .count()
}

/// Writes entry `i` as a `<key>.json` file of the older layout (no checksum, as it was written
/// before checksums existed).
fn write_legacy(dir: &Path, i: u64) {
    let e = entry(i);
    fs::write(
        dir.join(format!("{}.json", key(i))),
        serde_json::to_vec(&e).expect("json"),
    )
    .expect("write legacy");
}

// ---------------------------------------------------------------------------------------------
// Two writers on one directory.

const CHILD_DIR_ENV: &str = "PROMPT_CACHE_TEST_SEGMENTS_DIR";

/// Turns in which the two sides take their turn to overwrite the shared keys.
const ROUNDS: u64 = 6;
/// Entries of its own each side writes per round.
const PER_ROUND: u64 = 100;
/// Keys both sides write at the same time, always with the same content.
const CONTENDED: u64 = 50;
/// Keys the sides overwrite in turn, with a new value each round.
const SHARED: u64 = 100;

/// Keys: each side's own, the contended ones, the shared ones, the markers of the rounds and the
/// marker of each side's end.
fn own(side: u64, n: u64) -> u64 {
    100_000 * (side + 1) + n
}
const CONTENDED_BASE: u64 = 10_000;
const SHARED_BASE: u64 = 20_000;
const MARKER_BASE: u64 = 30_000;
const DONE_BASE: u64 = 40_000;

fn text(i: u64, round: u64) -> String {
    if (SHARED_BASE..SHARED_BASE + SHARED).contains(&i) {
        format!("shared {i} of round {round}: {}", "s".repeat(300))
    } else {
        response(i)
    }
}

fn put_text(cache: &ResponseCache, i: u64, round: u64) {
    cache
        .put(CachedResponse::new(key(i), text(i, round), "m"), None)
        .expect("put");
}

/// Waits until `cache` serves entry `i` (written by the other side).
fn wait_for(cache: &ResponseCache, i: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while cache.get(&key(i)).expect("get").is_none() {
        assert!(Instant::now() < deadline, "entry {i} never seen");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// One side (0 or 1) of two writers on `dir`, each with its own cache: writes its own entries
/// and the contended ones while reading the other side's (absent or exactly right); in the
/// rounds of its turn it overwrites the shared keys and then announces it with the round's
/// marker, in the others it waits for the other side's marker, so the last round's values are
/// the newest. Never reads a shared key (a hit would write its own copy back at a flush).
fn side(dir: &Path, s: u64) {
    let cache = ResponseCache::open(CacheConfig::new(dir).max_size(8)).expect("open");
    let other = 1 - s;
    for round in 0..ROUNDS {
        for j in 0..PER_ROUND {
            let n = round * PER_ROUND + j;
            put_text(&cache, own(s, n), round);
            put_text(&cache, CONTENDED_BASE + j % CONTENDED, round);
            let theirs = own(other, n);
            if let Some(e) = cache.get(&key(theirs)).expect("get") {
                assert_eq!(&*e.response, response(theirs));
            }
            if j % 20 == 0 {
                cache.flush().expect("flush");
            }
        }
        if round % 2 == s {
            for k in 0..SHARED {
                put_text(&cache, SHARED_BASE + k, round);
            }
            cache.flush().expect("flush");
            put_text(&cache, MARKER_BASE + round, round);
            cache.flush().expect("flush");
        } else {
            cache.flush().expect("flush");
            wait_for(&cache, MARKER_BASE + round);
        }
    }
    put_text(&cache, DONE_BASE + s, 0);
    cache.flush().expect("flush");
    wait_for(&cache, DONE_BASE + other);
    for n in 0..ROUNDS * PER_ROUND {
        assert!(served(&cache, own(other, n)), "the other side's {n}");
    }
    let stats = cache.stats().expect("stats");
    assert_eq!((stats.corrupt, stats.write_failures), (0, 0), "{stats:?}");
}

/// What a fresh cache on `dir` serves after both sides are done: every key with its newest
/// value, nothing damaged.
fn check_both_sides(dir: &Path) {
    let cache = ResponseCache::open(CacheConfig::new(dir).max_size(8)).expect("reopen");
    let last = ROUNDS - 1;
    let mut keys = 0;
    for s in 0..2 {
        for n in 0..ROUNDS * PER_ROUND {
            assert!(served(&cache, own(s, n)), "side {s}'s {n}");
            keys += 1;
        }
    }
    let others = (CONTENDED_BASE..CONTENDED_BASE + CONTENDED)
        .chain(SHARED_BASE..SHARED_BASE + SHARED)
        .chain(MARKER_BASE..MARKER_BASE + ROUNDS)
        .chain(DONE_BASE..DONE_BASE + 2);
    for i in others {
        let e = cache.get(&key(i)).expect("get").expect("served");
        let round = if (MARKER_BASE..DONE_BASE).contains(&i) {
            i - MARKER_BASE
        } else {
            last
        };
        assert_eq!(&*e.response, text(i, round), "entry {i}: the newest value");
        keys += 1;
    }
    let stats = cache.stats().expect("stats");
    assert_eq!((stats.disk_entries, stats.corrupt), (keys, 0), "{stats:?}");
}

#[test]
fn two_caches_in_one_process_write_disjoint_and_overlapping_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let threads: Vec<_> = (0..2)
        .map(|s| {
            let dir = dir.path().to_path_buf();
            std::thread::spawn(move || side(&dir, s))
        })
        .collect();
    for t in threads {
        t.join().expect("side");
    }
    check_both_sides(dir.path());
}

#[test]
fn caches_opened_one_after_another_go_on_writing_the_newest_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    // Short-lived caches, as one CLI command each: one segment between them.
    for i in 0..3 {
        let cache = ResponseCache::open(config(dir.path(), &clock)).expect("open");
        cache.put(entry(i), None).expect("put");
    }
    assert_eq!(segments(dir.path()).len(), 1, "{:?}", segments(dir.path()));
    // While one cache writes the newest segment, another starts one of its own.
    let a = ResponseCache::open(config(dir.path(), &clock)).expect("open a");
    a.put(entry(10), None).expect("put");
    a.flush().expect("flush");
    let b = ResponseCache::open(config(dir.path(), &clock)).expect("open b");
    b.put(entry(11), None).expect("put");
    b.flush().expect("flush");
    assert_eq!(segments(dir.path()).len(), 2, "{:?}", segments(dir.path()));
    drop((a, b));
    let cache = ResponseCache::open(config(dir.path(), &clock)).expect("reopen");
    for i in [0, 1, 2, 10, 11] {
        assert!(served(&cache, i), "{i}");
    }
    let stats = cache.stats().expect("stats");
    assert_eq!((stats.disk_entries, stats.corrupt), (5, 0), "{stats:?}");
}

/// The child of `two_processes_write_disjoint_and_overlapping_keys`.
#[test]
fn child_writes_beside_the_parent() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return; // only runs as the child of `two_processes_write_disjoint_and_overlapping_keys`
    };
    side(Path::new(&dir), 1);
}

/// A child process, killed (and reaped) however the test ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn two_processes_write_disjoint_and_overlapping_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("current exe");
    let mut child = Child(
        Command::new(&exe)
            .args([
                "--exact",
                "child_writes_beside_the_parent",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR_ENV, dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child"),
    );
    side(dir.path(), 0);
    let status = child.0.wait().expect("wait");
    assert!(status.success(), "the child's side held");
    check_both_sides(dir.path());
}

// ---------------------------------------------------------------------------------------------
// The index.

#[test]
fn the_index_grows_and_a_cache_opened_before_follows_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let small = |i: u64| CachedResponse::new(key(i), format!("v{i}"), "m");
    let index = dir.path().join("segments").join("index");
    let a = ResponseCache::open(config(dir.path(), &clock).max_size(64)).expect("open a");
    let first = fs::metadata(&index).expect("index").len();
    // Opened before the index grows, and reads through it once.
    let b = ResponseCache::open(config(dir.path(), &clock).max_size(64)).expect("open b");
    a.put(small(0), None).expect("put");
    a.flush().expect("flush");
    assert_eq!(&*b.get(&key(0)).expect("get").expect("hit").response, "v0");
    // Far more keys than the first index has slots (4,096).
    const N: u64 = 10_000;
    for i in 1..N {
        a.put(small(i), None).expect("put");
        if i % 1000 == 0 {
            a.flush().expect("flush");
        }
    }
    a.flush().expect("flush");
    assert!(
        fs::metadata(&index).expect("index").len() > first,
        "the index was replaced by a larger one"
    );
    // The cache opened before serves what was written after the growth, which only the new
    // index knows: it noticed the index it held was replaced.
    for i in (N - 500..N).chain((0..N).step_by(97)) {
        let e = b
            .get(&key(i))
            .expect("get")
            .unwrap_or_else(|| panic!("{i}"));
        assert_eq!(&*e.response, format!("v{i}"));
    }
    // And its writes go to the new index too.
    b.put(small(N), None).expect("put");
    b.flush().expect("flush");
    assert_eq!(
        &*a.get(&key(N)).expect("get").expect("hit").response,
        &format!("v{N}")
    );
    for cache in [&a, &b] {
        let stats = cache.stats().expect("stats");
        assert_eq!((stats.corrupt, stats.write_failures), (0, 0), "{stats:?}");
    }
    drop((a, b));
    let c = ResponseCache::open(config(dir.path(), &clock).max_size(64)).expect("reopen");
    for i in 0..=N {
        let e = c
            .get(&key(i))
            .expect("get")
            .unwrap_or_else(|| panic!("{i}"));
        assert_eq!(&*e.response, format!("v{i}"));
    }
    let stats = c.stats().expect("stats");
    assert_eq!((stats.disk_entries, stats.corrupt), (N + 1, 0));
}

#[test]
fn a_damaged_index_is_set_aside_and_the_cache_starts_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    {
        let cache = ResponseCache::open(config(dir.path(), &clock)).expect("open");
        for i in 0..20 {
            cache.put(entry(i), None).expect("put");
        }
    }
    let index = dir.path().join("segments").join("index");
    let garbage = [0x5au8; 128];
    fs::File::options()
        .write(true)
        .open(&index)
        .and_then(|f| f.write_all_at(&garbage, 0))
        .expect("damage the index header");
    let old_segments = segments(dir.path());
    assert!(!old_segments.is_empty());

    let cache = ResponseCache::open(config(dir.path(), &clock)).expect("open despite the index");
    let aside = fs::read(dir.path().join("corrupt").join("index")).expect("set aside");
    assert_eq!(&aside[..garbage.len()], garbage, "set aside as it was");
    // The entries it pointed to are lost with it: misses, nothing wrong served.
    for i in 0..20 {
        assert!(!served(&cache, i), "{i}");
        assert!(!stored(&cache, i), "{i}");
    }
    // New entries are written and served, in new segments (the old ones are left as they
    // were, and still count in the disk's bytes).
    for i in 100..110 {
        cache.put(entry(i), None).expect("put");
    }
    cache.flush().expect("flush");
    for i in 100..110 {
        assert!(stored(&cache, i), "{i}");
    }
    let now = segments(dir.path());
    for s in &old_segments {
        assert!(now.contains(s), "old segment {s:?} untouched");
    }
    let stats = cache.stats().expect("stats");
    assert_eq!(stats.disk_entries, 10);
    assert_eq!(stats.disk_bytes, segment_bytes(dir.path()));
    assert_eq!(stats.write_failures, 0);
    drop(cache);
    let cache = ResponseCache::open(config(dir.path(), &clock)).expect("reopen");
    for i in 100..110 {
        assert!(served(&cache, i), "{i} served after a restart");
    }
    assert_eq!(cache.stats().expect("stats").corrupt, 0);
}

#[test]
fn a_cache_open_when_its_index_is_damaged_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let a = ResponseCache::open(config(dir.path(), &clock).max_size(1)).expect("open");
    for i in 0..5 {
        a.put(entry(i), None).expect("put");
    }
    a.flush().expect("flush");
    fs::File::options()
        .write(true)
        .open(dir.path().join("segments").join("index"))
        .and_then(|f| f.write_all_at(&[0x5au8; 128], 0))
        .expect("damage the index header");
    // The open cache goes on: its writes reach a new index, and another cache reads them.
    for i in 10..15 {
        a.put(entry(i), None).expect("put");
    }
    a.flush().expect("flush");
    let b = ResponseCache::open(config(dir.path(), &clock)).expect("open b");
    for i in 10..15 {
        assert!(
            served(&b, i),
            "{i} written after the damage, served by another cache"
        );
    }
    // And it reads what another cache writes.
    b.put(entry(20), None).expect("put");
    b.flush().expect("flush");
    assert!(served(&a, 20));
    let stats = a.stats().expect("stats");
    assert_eq!(stats.write_failures, 0, "{stats:?}");
    assert!(dir.path().join("corrupt").join("index").exists());
}

/// A writer killed while replacing the index — after marking the old one superseded, before
/// renaming the new one into place — leaves the old one marked and still the index: readers
/// keep reading it, and the next writer to take the lock unmarks it and writes on.
#[test]
fn an_index_marked_superseded_but_never_replaced_stays_the_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let a = ResponseCache::open(config(dir.path(), &clock).max_size(1)).expect("open");
    for i in 0..5 {
        a.put(entry(i), None).expect("put");
    }
    a.flush().expect("flush");
    let index = dir.path().join("segments").join("index");
    let superseded_at = |flag: u64| {
        fs::File::options()
            .write(true)
            .open(&index)
            .and_then(|f| f.write_all_at(&flag.to_le_bytes(), 16))
            .expect("mark the index");
    };
    let read_flag = || {
        let mut b = [0u8; 8];
        fs::File::open(&index)
            .and_then(|f| f.read_exact_at(&mut b, 16))
            .expect("read the index");
        u64::from_le_bytes(b)
    };
    superseded_at(1);
    // A cache opened now, and the one already open, read it as before.
    let b = ResponseCache::open(config(dir.path(), &clock).max_size(1)).expect("open b");
    for i in 1..5 {
        assert!(served(&b, i), "{i} served from the marked index");
    }
    // The next write takes the lock, finds it still in place, unmarks it and publishes.
    b.put(entry(7), None).expect("put");
    b.flush().expect("flush");
    assert_eq!(read_flag(), 0, "unmarked by the next writer");
    assert!(served(&a, 7), "the other cache reads the write");
    let stats = b.stats().expect("stats");
    assert_eq!((stats.write_failures, stats.corrupt), (0, 0), "{stats:?}");
}

// ---------------------------------------------------------------------------------------------
// Damaged records.

/// Writes entries `0..n`, one flush each (so they are in this order in one segment), with a
/// cache that is then dropped.
fn write_in_order(dir: &Path, clock: &Arc<ManualClock>, n: u64) {
    let cache = ResponseCache::open(config(dir, clock)).expect("open");
    for i in 0..n {
        cache.put(entry(i), None).expect("put");
        cache.flush().expect("flush");
    }
}

#[test]
fn a_damaged_record_is_a_miss_counted_once_and_the_others_are_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    write_in_order(dir.path(), &clock, 10);
    let cache = ResponseCache::open(config(dir.path(), &clock)).expect("open");
    let at = cache
        .stored_at(&key(4))
        .expect("stored_at")
        .expect("on disk");
    // One letter of its response changed.
    let mut segment = fs::read(&at.path).expect("read segment");
    let payload = &segment[at.range.start as usize..at.range.end as usize];
    let x = payload
        .iter()
        .position(|&b| b == b'x')
        .expect("the response's x's")
        + at.range.start as usize;
    segment[x] = b'y';
    fs::File::options()
        .write(true)
        .open(&at.path)
        .and_then(|f| f.write_all_at(b"y", x as u64))
        .expect("damage");

    assert!(!served(&cache, 4), "a damaged record is never served");
    assert_eq!(cache.stats().expect("stats").corrupt, 1);
    assert!(!served(&cache, 4));
    assert_eq!(cache.stats().expect("stats").corrupt, 1, "counted once");
    for i in (0..10).filter(|&i| i != 4) {
        assert!(served(&cache, i), "{i}");
    }
    cache.flush().expect("flush");
    // Its key left the index; its bytes stay in the segment, nothing is moved to corrupt/.
    assert!(!stored(&cache, 4));
    assert_eq!(
        fs::read(&at.path).expect("read segment")[..segment.len()],
        segment[..]
    );
    assert!(!dir.path().join("corrupt").exists());
    assert!(
        !served(&cache, 4),
        "a miss once out of the index, not counted again"
    );
    let stats = cache.stats().expect("stats");
    assert_eq!((stats.disk_entries, stats.corrupt), (9, 1));
    // The key is written again as usual.
    cache.put(entry(4), None).expect("put");
    drop(cache);
    let cache = ResponseCache::open(config(dir.path(), &clock)).expect("reopen");
    for i in 0..10 {
        assert!(served(&cache, i), "{i}");
    }
    assert_eq!(cache.stats().expect("stats").corrupt, 0);
}

#[test]
fn a_segment_cut_short_loses_only_its_last_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    write_in_order(dir.path(), &clock, 10);
    let cache = ResponseCache::open(config(dir.path(), &clock)).expect("open");
    let last = cache
        .stored_at(&key(9))
        .expect("stored_at")
        .expect("on disk");
    let len = fs::metadata(&last.path).expect("segment").len();
    assert_eq!(last.range.end, len, "entry 9 is the segment's last record");
    for i in 0..9 {
        let at = cache
            .stored_at(&key(i))
            .expect("stored_at")
            .expect("on disk");
        assert_eq!(at.path, last.path, "one segment");
        assert!(at.range.end <= last.range.start);
    }
    // Cut in the middle of the last record (as a crash of the disk might leave it).
    fs::File::options()
        .write(true)
        .open(&last.path)
        .and_then(|f| f.set_len((last.range.start + last.range.end) / 2))
        .expect("cut");
    assert!(!served(&cache, 9), "a cut record is never served");
    for i in 0..9 {
        assert!(served(&cache, i), "{i}");
    }
    let stats = cache.stats().expect("stats");
    assert!(stats.corrupt <= 1, "{stats:?}");
    // The key is written again, and served after a restart.
    cache.put(entry(9), None).expect("put");
    drop(cache);
    let cache = ResponseCache::open(config(dir.path(), &clock)).expect("reopen");
    for i in 0..10 {
        assert!(served(&cache, i), "{i}");
    }
    assert_eq!(cache.stats().expect("stats").corrupt, 0);
}

// ---------------------------------------------------------------------------------------------
// clear, expiry and the byte bound.

#[test]
fn clear_removes_every_entry_and_a_cache_opened_afterwards_starts_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    {
        let a = ResponseCache::open(config(dir.path(), &clock)).expect("open a");
        for i in 0..10 {
            a.put(entry(i), None).expect("put");
        }
        a.flush().expect("flush");
        // Another cache's entries, in its own segment, which it still holds open.
        let b = ResponseCache::open(config(dir.path(), &clock)).expect("open b");
        for i in 10..15 {
            b.put(entry(i), None).expect("put");
        }
        b.flush().expect("flush");
        let b_segment = b.stored_at(&key(10)).expect("stored_at").expect("on disk");
        // And files of the older layout.
        for i in 20..23 {
            write_legacy(dir.path(), i);
        }
        assert_eq!(a.stats().expect("stats").disk_entries, 18);
        assert_eq!(a.clear().expect("clear"), 18);
        assert_eq!(legacy_files(dir.path()), 0);
        for i in (0..15).chain(20..23) {
            assert!(a.stored_at(&key(i)).expect("stored_at").is_none(), "{i}");
            assert!(!served(&a, i), "{i}");
        }
        // Every segment went but the one the other cache is writing.
        assert_eq!(
            segments(dir.path())
                .iter()
                .map(|s| dir.path().join("segments").join(format!("{:08x}.seg", s.0)))
                .collect::<Vec<_>>(),
            vec![b_segment.path]
        );
        let stats = a.stats().expect("stats");
        assert_eq!(stats.disk_entries, 0);
        // The other cache goes on writing, into the new index.
        b.put(entry(16), None).expect("put");
        b.flush().expect("flush");
        assert!(served(&a, 16));
        assert!(
            !served(&a, 10),
            "cleared, though the other cache still holds it in memory"
        );
    }
    let cache = ResponseCache::open(config(dir.path(), &clock)).expect("open after clear");
    for i in (0..16).chain(20..23) {
        assert!(!served(&cache, i), "{i}");
    }
    assert!(served(&cache, 16));
    cache.put(entry(30), None).expect("put");
    drop(cache);
    let cache = ResponseCache::open(config(dir.path(), &clock)).expect("reopen");
    assert!(served(&cache, 30));
    assert!(served(&cache, 16));
    let stats = cache.stats().expect("stats");
    assert_eq!((stats.disk_entries, stats.corrupt), (2, 0));
}

#[test]
fn prune_expired_removes_expired_entries_from_the_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    {
        let cache = ResponseCache::open(config(dir.path(), &clock)).expect("open");
        for i in 0..20 {
            let ttl = if i % 2 == 0 { 10 } else { 1000 };
            cache
                .put(entry(i), Some(Duration::from_secs(ttl)))
                .expect("put");
        }
    }
    clock.advance(Duration::from_secs(11));
    // A cache with nothing in memory: every entry is only in the segments.
    let cache = ResponseCache::open(config(dir.path(), &clock)).expect("reopen");
    for i in 0..20 {
        assert!(stored(&cache, i), "{i}");
    }
    assert_eq!(cache.prune_expired().expect("prune"), 10);
    cache.flush().expect("flush");
    for i in 0..20 {
        assert_eq!(stored(&cache, i), i % 2 == 1, "{i}");
    }
    let stats = cache.stats().expect("stats");
    assert_eq!((stats.disk_entries, stats.expired, stats.size), (10, 10, 0));
    for i in 0..20 {
        assert_eq!(served(&cache, i), i % 2 == 1, "{i}");
    }
    // Nothing left to prune, then the rest expires too.
    assert_eq!(cache.prune_expired().expect("prune"), 0);
    clock.advance(Duration::from_secs(1000));
    drop(cache);
    let cache = ResponseCache::open(config(dir.path(), &clock)).expect("reopen");
    assert_eq!(cache.prune_expired().expect("prune"), 10);
    cache.flush().expect("flush");
    assert_eq!(cache.stats().expect("stats").disk_entries, 0);
}

#[test]
fn the_byte_bound_removes_whole_segments_oldest_first_but_not_one_being_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    // A live cache's segment, the oldest.
    let a = ResponseCache::open(config(dir.path(), &clock)).expect("open a");
    for i in 0..5 {
        a.put(entry(i), None).expect("put");
    }
    a.flush().expect("flush");
    let record = segment_bytes(dir.path()) / 5;
    // Room for 40 entries, segments of two.
    let bound = 40 * record;
    let b = ResponseCache::open(config(dir.path(), &clock).max_disk_bytes(bound)).expect("b");
    let write = |range: std::ops::Range<u64>| {
        for i in range {
            b.put(entry(i), None).expect("put");
            b.flush().expect("flush");
            assert!(segment_bytes(dir.path()) <= bound, "after {i}");
        }
    };
    // Written one at a time: the entries kept are always the newest ones.
    let kept_from = |range: std::ops::Range<u64>| {
        let kept: Vec<u64> = range.clone().filter(|&i| stored(&b, i)).collect();
        let first = *kept.first().expect("some kept");
        assert!(first > range.start, "some evicted: {kept:?}");
        assert_eq!(kept, (first..range.end).collect::<Vec<_>>());
        first
    };
    write(100..300);
    let first = kept_from(100..300);
    assert!(
        300 - first >= 30,
        "down to 90 % of the bound, not much further: {first}"
    );
    // The live cache's segment stayed, though it is the oldest.
    for i in 0..5 {
        assert!(stored(&b, i), "{i}");
    }
    drop(a);
    // No longer being written: the first to go (a quarter of the bound more goes over it).
    write(300..310);
    for i in 0..5 {
        assert!(!stored(&b, i), "{i}");
    }
    kept_from(100..310);
    let stats = b.stats().expect("stats");
    assert_eq!(stats.disk_bytes, segment_bytes(dir.path()));
    assert_eq!(stats.write_failures, 0);
}
