//! Several processes appending to the same files, and a writer killed with SIGKILL.
//!
//! The child processes are this test binary itself, re-executed to run only
//! `child_writer` with an environment variable saying what to do.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use prompt_metrics::{JsonlStore, MetricsSink, PromptMetrics};

const ROLE: &str = "PROMPT_METRICS_CHILD_ROLE";
const DIR: &str = "PROMPT_METRICS_CHILD_DIR";
const TAG: &str = "PROMPT_METRICS_CHILD_TAG";

fn spawn_child(role: &str, dir: &Path) -> Child {
    spawn_tagged_child(role, dir, "")
}

fn spawn_tagged_child(role: &str, dir: &Path, tag: &str) -> Child {
    Command::new(std::env::current_exe().expect("current exe"))
        .args(["--exact", "child_writer", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env(DIR, dir)
        .env(TAG, tag)
        .spawn()
        .expect("spawn child")
}

/// Records per process in `processes_appending_at_once_write_only_whole_lines`.
const SMALL_BATCH_RECORDS: u32 = 600;

/// Appends [`SMALL_BATCH_RECORDS`] records, flushing every 3, so that each process checks the
/// end of the file and appends many times while the others do the same.
fn append_in_small_batches(dir: &Path, tag: &str) {
    let store = JsonlStore::open(dir).expect("open");
    for i in 0..SMALL_BATCH_RECORDS {
        record(&store, tag, i);
        if i % 3 == 2 {
            store.flush().expect("flush");
        }
    }
    store.flush().expect("flush");
}

fn record(store: &JsonlStore, tag: &str, i: u32) {
    let mut m = PromptMetrics::new(format!("{tag}-{i}"), "writer", tag, "m", 0.5, f64::from(i));
    // Some long lines, so interleaved or torn writes would show.
    m.error = i.is_multiple_of(5).then(|| format!("{tag} ").repeat(2_000));
    store.record(m).expect("record");
}

fn write_many(dir: &Path, tag: &str, threads: u32, per_thread: u32) {
    let store = JsonlStore::open(dir).expect("open");
    std::thread::scope(|s| {
        for t in 0..threads {
            let store = &store;
            s.spawn(move || {
                for i in 0..per_thread {
                    record(store, &format!("{tag}{t}"), i);
                }
            });
        }
    });
    store.flush().expect("flush");
}

/// Does nothing in a normal run; does the child's work when re-executed by a test.
#[test]
fn child_writer() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let dir = std::env::var_os(DIR).expect("child dir");
    let dir = Path::new(&dir);
    match role.as_str() {
        "append" => write_many(dir, "child", 4, 5_000),
        "small_batches" => {
            let tag = std::env::var(TAG).expect("child tag");
            append_in_small_batches(dir, &tag);
        }
        "forever" => {
            let store = JsonlStore::open(dir).expect("open");
            for i in 0.. {
                record(&store, "killed", i);
                if i.is_multiple_of(50) {
                    store.flush().expect("flush");
                }
            }
        }
        other => panic!("unknown child role {other}"),
    }
}

#[test]
fn two_processes_append_whole_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = spawn_child("append", dir.path());
    write_many(dir.path(), "parent", 4, 5_000);
    assert!(child.wait().expect("wait").success());

    let store = JsonlStore::open(dir.path()).expect("open");
    let mut hashes = HashSet::new();
    let summary = store
        .scan(1, |m| {
            assert!(
                m.prompt_hash.starts_with(&m.task),
                "{} in {}",
                m.prompt_hash,
                m.task
            );
            hashes.insert(m.prompt_hash.clone());
        })
        .expect("scan");
    assert_eq!(summary.skipped_lines, 0);
    assert_eq!(summary.records, 40_000);
    assert_eq!(hashes.len(), 40_000);
    for tag in ["child0", "parent3"] {
        assert_eq!(
            store
                .task_stats("writer", tag, 1)
                .expect("stats")
                .total_calls,
            5_000
        );
    }
}

fn lines_in(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| std::fs::read(e.path()).ok())
                .map(|bytes| bytecount(&bytes))
                .sum()
        })
        .unwrap_or(0)
}

fn bytecount(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b == b'\n').count()
}

#[test]
fn killed_writer_leaves_at_most_one_torn_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = spawn_child("forever", dir.path());
    let deadline = Instant::now() + Duration::from_secs(60);
    while lines_in(dir.path()) < 2_000 {
        assert!(Instant::now() < deadline, "child wrote too little");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");

    let store = JsonlStore::open(dir.path()).expect("open");
    let before = store.agent_stats("writer", 1).expect("stats");
    assert!(
        before.skipped_lines <= 1,
        "skipped {}",
        before.skipped_lines
    );
    assert!(before.total_calls >= 2_000);

    // Appending after the kill: every new record counts, nothing is glued to a torn line.
    for i in 0..10 {
        record(&store, "after", i);
    }
    store.flush().expect("flush");
    let after = store.agent_stats("writer", 1).expect("stats");
    assert_eq!(after.total_calls, before.total_calls + 10);
    assert_eq!(after.skipped_lines, before.skipped_lines);
}

/// Five processes append small batches to the same day file at once: every line of the file
/// is a whole record (no empty line, no torn line), and every record is there once.
#[test]
fn processes_appending_at_once_write_only_whole_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tags = ["p0", "p1", "p2", "p3"];
    let children: Vec<Child> = tags
        .iter()
        .map(|tag| spawn_tagged_child("small_batches", dir.path(), tag))
        .collect();
    append_in_small_batches(dir.path(), "parent");
    for mut child in children {
        assert!(child.wait().expect("wait").success());
    }

    let files: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").path())
        .collect();
    let mut hashes = HashSet::new();
    for file in &files {
        let bytes = std::fs::read(file).expect("read");
        assert_eq!(
            bytes.last(),
            Some(&b'\n'),
            "{} ends mid-line",
            file.display()
        );
        for (n, line) in bytes[..bytes.len() - 1].split(|&b| b == b'\n').enumerate() {
            assert!(
                !line.is_empty(),
                "{}: line {} is empty",
                file.display(),
                n + 1
            );
            let m: PromptMetrics = serde_json::from_slice(line).unwrap_or_else(|e| {
                panic!("{}: line {} is not a record: {e}", file.display(), n + 1)
            });
            assert!(
                hashes.insert(m.prompt_hash.clone()),
                "{} twice",
                m.prompt_hash
            );
        }
    }
    assert_eq!(
        hashes.len(),
        (tags.len() as u32 + 1) as usize * SMALL_BATCH_RECORDS as usize
    );
}
