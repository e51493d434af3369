//! Benchmarks: `record` on the caller's thread (and sustained, waiting for the writer), and
//! `agent_stats` / `model_comparison` over data sets shaped like the Python original's files,
//! 100,000 records (and 1,000,000 with `PROMPTKIT_BENCH_1M=1`) spread over 7 daily files.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, criterion_main};
use prompt_metrics::testdata::write_dataset;
use prompt_metrics::{JsonlStore, MetricsSink, PromptMetrics};

fn bench_record(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = JsonlStore::open(dir.path()).expect("open");
    let mut m = PromptMetrics::new(
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "writer",
        "write_chapter",
        "qwen3:30b",
        0.8,
        8523.25,
    );
    m.tokens_prompt = Some(1200);
    m.tokens_completion = Some(2400);
    m.response_length = 12_000;
    m.language_detected = Some("en".into());
    m.template_version = Some(2);
    m.provider = Some("ollama".into());
    let mut group = c.benchmark_group("metrics");
    // The caller's cost: bursts shorter than the writer's queue, with the writer given time to
    // catch up (untimed flush) between bursts.
    group.bench_function("record", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let burst = left.min(1_000);
                let batch: Vec<PromptMetrics> = (0..burst).map(|_| m.clone()).collect();
                let start = Instant::now();
                for r in batch {
                    store.record(r).expect("record");
                }
                total += start.elapsed();
                store.flush().expect("flush");
                left -= burst;
            }
            total
        })
    });
    // Sustained rate: a tight loop that fills the queue, so each call also waits for the
    // background writer (serializing and appending) to make room.
    group.bench_function("record_sustained", |b| {
        b.iter_batched(
            || m.clone(),
            |m| store.record(m).expect("record"),
            BatchSize::SmallInput,
        )
    });
    group.finish();
    store.flush().expect("flush");
}

fn bench_queries(c: &mut Criterion, label: &str, n_records: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    // `cargo xtask bench` writes this data set once (same generator, seed and size) into
    // `$PROMPTKIT_BENCH_DATA/metrics/<label>` and times DuckDB on the very same files.
    let shared = std::env::var_os("PROMPTKIT_BENCH_DATA")
        .map(|d| std::path::PathBuf::from(d).join("metrics").join(label))
        .filter(|d| d.is_dir());
    let data_dir = match shared {
        Some(shared) => shared,
        None => {
            write_dataset(dir.path(), n_records, 7, 42).expect("data set");
            dir.path().to_path_buf()
        }
    };
    let store = JsonlStore::open(&data_dir).expect("open");
    let mut group = c.benchmark_group("metrics");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(if n_records > 100_000 {
        20
    } else {
        5
    }));
    group.bench_function(format!("agent_stats_{label}"), |b| {
        b.iter(|| black_box(store.agent_stats("writer", 7).expect("agent_stats")))
    });
    group.bench_function(format!("model_comparison_{label}"), |b| {
        b.iter(|| black_box(store.model_comparison(7).expect("model_comparison")))
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    bench_record(c);
    bench_queries(c, "100k", 100_000);
    if std::env::var("PROMPTKIT_BENCH_1M").is_ok_and(|v| v == "1") {
        bench_queries(c, "1m", 1_000_000);
    }
}

// `criterion_group!` defines an undocumented public function.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(metrics, super::benches);
}
criterion_main!(group::metrics);
