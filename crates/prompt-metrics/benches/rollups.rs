//! Benchmarks of rollups: `agent_stats` and `model_comparison` over 90 daily files (the
//! Python original's record shape) at growing sizes, scanning every file, from rollups held by
//! a warm store, and from rollups on disk read by a new store per query (what one `prompt
//! metrics` process pays); and the build of one closed day's rollup against a scan of that day.
//!
//! Data sets: every `$PROMPTKIT_BENCH_DATA/curve/metrics/<label>` (`10k`, `1m`, ...) as
//! `cargo xtask bench --rollups` writes them, and `$PROMPTKIT_BENCH_DATA/curve/day100k` (one closed day of 100,000
//! records); without `PROMPTKIT_BENCH_DATA`, the bench writes `10k` and `100k` and the day into
//! a temporary directory itself.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use criterion::{Criterion, SamplingMode, criterion_main};
use prompt_metrics::JsonlStore;
use prompt_metrics::testdata::write_dataset_at;

/// Days of history in each data set, and the query window.
const DAYS: u32 = 90;
/// The seed of the data sets (`cargo xtask bench` writes them with the same).
const SEED: u64 = 42;

/// Records of a data set by its label (`10k`, `1m`, ...).
fn records(label: &str) -> Option<u64> {
    let (digits, unit) = label.split_at(label.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    match unit {
        "k" => Some(n * 1_000),
        "m" => Some(n * 1_000_000),
        _ => None,
    }
}

fn query_benches(c: &mut Criterion, label: &str, dir: &Path) {
    let mut group = c.benchmark_group("rollups");
    let big = records(label).unwrap_or(0) >= 1_000_000;
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(if big { 10 } else { 3 }));
    if big {
        // A scan of millions of records takes seconds: the same few iterations per sample.
        group.sampling_mode(SamplingMode::Flat);
    }
    let scan = JsonlStore::open(dir).expect("open").with_rollups(false);
    group.bench_function(format!("scan_agent_stats/{label}"), |b| {
        b.iter(|| black_box(scan.agent_stats("writer", DAYS).expect("agent_stats")))
    });
    group.bench_function(format!("scan_model_comparison/{label}"), |b| {
        b.iter(|| black_box(scan.model_comparison(DAYS).expect("model_comparison")))
    });
    // The first query builds the rollups of the closed days (once, untimed).
    let warm = JsonlStore::open(dir).expect("open");
    warm.overview(DAYS).expect("build rollups");
    group.bench_function(format!("warm_agent_stats/{label}"), |b| {
        b.iter(|| black_box(warm.agent_stats("writer", DAYS).expect("agent_stats")))
    });
    group.bench_function(format!("warm_model_comparison/{label}"), |b| {
        b.iter(|| black_box(warm.model_comparison(DAYS).expect("model_comparison")))
    });
    group.bench_function(format!("new_store_agent_stats/{label}"), |b| {
        b.iter(|| {
            let store = JsonlStore::open(dir).expect("open");
            black_box(store.agent_stats("writer", DAYS).expect("agent_stats"))
        })
    });
    group.bench_function(format!("new_store_model_comparison/{label}"), |b| {
        b.iter(|| {
            let store = JsonlStore::open(dir).expect("open");
            black_box(store.model_comparison(DAYS).expect("model_comparison"))
        })
    });
    group.finish();
}

/// One closed day: its rollup built and written, against scans of the same file.
fn build_benches(c: &mut Criterion, dir: &Path) {
    let store = JsonlStore::open(dir).expect("open");
    let scan = JsonlStore::open(dir).expect("open").with_rollups(false);
    let day = closed_day(dir);
    let mut group = c.benchmark_group("rollups");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
    // A day without a rollup, as at its first query: the rollup written by the previous
    // iteration is removed first (untimed). Replacing one also frees the old file's blocks.
    let rollup = dir.join(format!("metrics_{day}.rollup"));
    group.bench_function("build_day/100k", |b| {
        b.iter_batched(
            || {
                let _ = std::fs::remove_file(&rollup);
            },
            |()| assert!(store.rebuild_rollup(day).expect("rebuild")),
            criterion::BatchSize::PerIteration,
        )
    });
    group.bench_function("scan_day_model_comparison/100k", |b| {
        b.iter(|| black_box(scan.model_comparison(3).expect("model_comparison")))
    });
    group.bench_function("scan_day_overview/100k", |b| {
        b.iter(|| black_box(scan.overview(3).expect("overview")))
    });
    group.finish();
}

/// The date of the one daily file in `dir`.
fn closed_day(dir: &Path) -> chrono::NaiveDate {
    std::fs::read_dir(dir)
        .expect("day dir")
        .filter_map(|e| e.ok())
        .find_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let date = name
                .strip_prefix("metrics_")?
                .strip_suffix(".jsonl")?
                .to_owned();
            chrono::NaiveDate::parse_from_str(&date, "%Y-%m-%d").ok()
        })
        .expect("a daily file")
}

/// Writes one closed day of 100,000 records (yesterday, by `now`) into `dir`.
fn write_day(dir: &Path, now: DateTime<Utc>) {
    let yesterday_end = now
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc()
        - chrono::Duration::seconds(1);
    write_dataset_at(dir, 100_000, 1, SEED, yesterday_end).expect("day");
}

fn benches(c: &mut Criterion) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let shared = std::env::var_os("PROMPTKIT_BENCH_DATA")
        .map(|d| PathBuf::from(d).join("curve"))
        .filter(|d| d.is_dir());
    let (root, labels): (PathBuf, Vec<String>) = match shared {
        Some(root) => {
            let mut labels: Vec<String> = std::fs::read_dir(root.join("metrics"))
                .map(|entries| {
                    entries
                        .filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|l| records(l).is_some())
                        .collect()
                })
                .unwrap_or_default();
            labels.sort_by_key(|l| records(l));
            (root, labels)
        }
        None => {
            let root = tmp.path().to_path_buf();
            let now = Utc::now();
            for label in ["10k", "100k"] {
                let n = records(label).expect("label");
                write_dataset_at(&root.join("metrics").join(label), n, DAYS, SEED, now)
                    .expect("data set");
            }
            write_day(&root.join("day100k"), now);
            (root, vec!["10k".to_owned(), "100k".to_owned()])
        }
    };
    for label in &labels {
        let dir = root.join("metrics").join(label);
        if dir.is_dir() {
            query_benches(c, label, &dir);
        }
    }
    let day = root.join("day100k");
    if day.is_dir() {
        build_benches(c, &day);
    }
}

// `criterion_group!` defines an undocumented public function.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(rollups, super::benches);
}
criterion_main!(group::rollups);
