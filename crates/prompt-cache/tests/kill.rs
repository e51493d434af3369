//! A process killed with SIGKILL in the middle of a write storm leaves no entry that loads wrong,
//! and a directory within its disk bound.
//!
//! The test re-runs its own binary as the child (`child_write_storm`, switched on by an
//! environment variable), kills it once files are flowing, then opens the directory. The storm
//! writes more than the disk bound holds, so the child is also evicting from disk when it dies.

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
    for i in 0..u64::MAX {
        cache.put(entry(i % 5_000), None).expect("child put");
        if i % 7 == 0 {
            let _ = cache.get(&key(i / 2 % 5_000)).expect("child get");
        }
        if i % 3 == 0 {
            // Hit counts written back: rewrites of existing files, too.
            cache.flush().expect("child flush");
        }
    }
}

fn count_entry_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|items| {
            items
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn sigkill_during_write_storm_leaves_no_bad_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("current exe");
    for round in 0..3 {
        let mut child = Command::new(&exe)
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
            .expect("spawn child");
        // Killed once entry `last` is on disk: past the bound, so evicting from disk too.
        let last = 400 + 600 * round;
        let target = 100;
        let deadline = Instant::now() + Duration::from_secs(60);
        while !dir.path().join(format!("{}.json", key(last))).exists()
            || count_entry_files(dir.path()) < target
        {
            assert!(Instant::now() < deadline, "child wrote too little");
            if let Some(status) = child.try_wait().expect("try_wait") {
                panic!("child exited early: {status}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().expect("SIGKILL the child");
        let status = child.wait().expect("wait");
        assert!(!status.success(), "the child was killed, not finished");

        let cache = ResponseCache::open(storm_config(dir.path())).expect("open after kill");
        let stats = cache.stats().expect("stats");
        assert_eq!(
            stats.corrupt, 0,
            "no file was half-written where a reader sees it"
        );
        assert_eq!(stats.size, 0, "start-up reads nothing");
        assert!(
            stats.disk_entries >= target as u64,
            "round {round}: {} entries on disk",
            stats.disk_entries
        );
        assert!(
            stats.disk_bytes <= STORM_DISK_BYTES,
            "round {round}: {} bytes on disk, over the bound",
            stats.disk_bytes
        );
        // Every entry file loads, under its own key, with exactly the right content.
        let mut checked = 0;
        for item in std::fs::read_dir(dir.path()).expect("read dir").flatten() {
            let name = item.file_name().to_string_lossy().into_owned();
            let Some(hex) = name.strip_suffix(".json") else {
                continue;
            };
            let k: CacheKey = hex.parse().expect("entry files are named by key");
            let e = cache.get(&k).expect("get").expect("every entry file loads");
            let i: u64 = e
                .model
                .strip_prefix("storm-")
                .and_then(|n| n.parse().ok())
                .expect("model names the request");
            assert_eq!(e.key, key(i), "entry {i} under its own key");
            assert_eq!(&*e.response, expected(i), "entry {i} complete and correct");
            checked += 1;
        }
        assert!(checked >= target);
        drop(cache);
    }
}
