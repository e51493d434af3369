//! A process killed with SIGKILL in the middle of a write storm leaves no entry that loads wrong,
//! and a directory within its disk bound.
//!
//! The test re-runs its own binary as the child (`child_write_storm`, switched on by an
//! environment variable), kills it once segments are flowing, then opens the directory. The
//! storm writes more than the disk bound holds, so the child is also evicting from disk when it
//! dies.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use prompt_cache::{CacheConfig, CacheKey, CacheStore, CachedResponse, ResponseCache};

const CHILD_DIR_ENV: &str = "PROMPT_CACHE_TEST_STORM_DIR";

fn key(i: u64) -> CacheKey {
    CacheKey::builder("storm")
        .message("user", &format!("request {i}"))
        .finish()
}

/// What the entry for `i` must hold; long enough that writes take a while.
fn expected(i: u64) -> String {
    let mut s = format!("response {i}: ");
    s.push_str(&"abcdefgh".repeat(1024 + (i % 512) as usize));
    s.push_str(&format!(" end {i}"));
    s
}

fn entry(i: u64) -> CachedResponse {
    CachedResponse::new(key(i), expected(i), format!("storm-{i}"))
}

/// The disk bound of the storm: about two hundred of its entries (8 to 12 KB each).
const STORM_DISK_BYTES: u64 = 2 << 20;

fn storm_config(dir: &Path) -> CacheConfig {
    let mut cfg = CacheConfig::new(dir)
        .max_size(1_000_000)
        .max_bytes(u64::MAX / 2)
        .max_disk_bytes(STORM_DISK_BYTES);
    cfg.max_entry_bytes = 1 << 20;
    cfg
}

/// The child: writes entries as fast as it can until it is killed.
#[test]
fn child_write_storm() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return; // only runs as the child of `sigkill_during_write_storm_leaves_no_bad_entry`
    };
    let cache = ResponseCache::open(storm_config(Path::new(&dir))).expect("child open");
    let parent = std::os::unix::process::parent_id();
    for i in 0..u64::MAX {
        if i % 256 == 0 && std::os::unix::process::parent_id() != parent {
            return; // orphaned: the test that spawned it is gone
        }
        cache.put(entry(i % 5_000), None).expect("child put");
        if i % 7 == 0 {
            let _ = cache.get(&key(i / 2 % 5_000)).expect("child get");
        }
        if i % 3 == 0 {
            // Hit counts written back: rewrites of existing entries, too.
            cache.flush().expect("child flush");
        }
    }
}

/// The child, killed (and reaped) however the test ends: a failed assertion must not leave it
/// writing forever.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The ids of the segment files in `dir/segments/`.
fn segment_ids(dir: &Path) -> Vec<u32> {
    let Ok(items) = std::fs::read_dir(dir.join("segments")) else {
        return Vec::new();
    };
    items
        .flatten()
        .filter_map(|item| {
            let name = item.file_name().to_string_lossy().into_owned();
            u32::from_str_radix(name.strip_suffix(".seg")?, 16).ok()
        })
        .collect()
}

/// What a killed child may have appended and not yet published (so not yet counted against
/// the bound, nor evicted): one batch of a few entries (the child flushes every third put). A
/// sixteenth of the bound is one segment, several times that.
const UNPUBLISHED_SLACK: u64 = STORM_DISK_BYTES / 16;

#[test]
fn sigkill_during_write_storm_leaves_no_bad_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("current exe");
    for round in 0..3u32 {
        let before = segment_ids(dir.path()).into_iter().max().unwrap_or(0);
        let mut child = Child(
            Command::new(&exe)
                .args([
                    "--exact",
                    "child_write_storm",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_DIR_ENV, dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn child"),
        );
        // Killed once the child has started segment `before + segments` (more than the disk
        // bound holds, so it is evicting from disk too, its own segments once the older ones
        // are gone) and a second cache on the directory sees `target` entries through the
        // shared index.
        let segments = 20 + 4 * round;
        let target = 100;
        let watcher = ResponseCache::open(storm_config(dir.path())).expect("watcher open");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let newest = segment_ids(dir.path()).into_iter().max().unwrap_or(0);
            if newest >= before + segments
                && watcher.stats().expect("watcher stats").disk_entries >= target
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: child wrote too little (newest segment {newest})"
            );
            if let Some(status) = child.0.try_wait().expect("try_wait") {
                panic!("child exited early: {status}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        child.0.kill().expect("SIGKILL the child");
        let status = child.0.wait().expect("wait");
        assert!(!status.success(), "the child was killed, not finished");
        assert!(
            segment_ids(dir.path()).into_iter().min() > Some(before),
            "round {round}: the older segments were evicted, oldest first"
        );
        drop(watcher);

        let cache = ResponseCache::open(storm_config(dir.path())).expect("open after kill");
        let stats = cache.stats().expect("stats");
        assert_eq!(stats.size, 0, "start-up reads nothing");
        assert!(
            stats.disk_entries >= target,
            "round {round}: {} entries on disk",
            stats.disk_entries
        );
        assert!(
            stats.disk_bytes <= STORM_DISK_BYTES + UNPUBLISHED_SLACK,
            "round {round}: {} bytes on disk, over the bound",
            stats.disk_bytes
        );
        // Every entry the index points to loads, under its own key, with exactly the right
        // content; none is served wrong.
        let mut checked = 0;
        for i in 0..5_000 {
            let stored = cache.stored_at(&key(i)).expect("stored_at");
            let got = cache.get(&key(i)).expect("get");
            match got {
                Some(e) => {
                    assert_eq!(e.key, key(i), "entry {i} under its own key");
                    assert_eq!(e.model, format!("storm-{i}"), "entry {i}");
                    assert_eq!(&*e.response, expected(i), "entry {i} complete and correct");
                    checked += 1;
                }
                None => assert!(
                    stored.is_none(),
                    "round {round}: entry {i} indexed, not served"
                ),
            }
        }
        assert_eq!(
            checked, stats.disk_entries,
            "round {round}: every indexed entry served"
        );
        assert_eq!(
            cache.stats().expect("stats").corrupt,
            0,
            "no record was half-written where a reader sees it"
        );
        drop(cache);
    }
}
