//! Behaviour of `JsonlStore` on real files: the Python original's format, windows, bad lines, queries,
//! concurrent appends from threads and processes, killed writers and cleanup.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use prompt_metrics::{JsonlStore, MetricsSink, PromptMetrics};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 20, 12, 0, 0)
        .single()
        .expect("valid time")
}

fn store_at(dir: &Path, now: DateTime<Utc>) -> JsonlStore {
    JsonlStore::open(dir).expect("open").with_clock(move || now)
}

/// A line exactly as the Python original writes it: `json.dumps(asdict(m))`, with `", "` and
/// `": "` separators and every field of the dataclass in order.
#[allow(clippy::too_many_arguments)]
fn py_line(
    agent: &str,
    task: &str,
    model: &str,
    ts: &str,
    latency: &str,
    tokens: (&str, &str),
    ok: bool,
    error: &str,
) -> String {
    format!(
        "{{\"prompt_hash\": \"9f86d081884c7d65\", \"agent\": \"{agent}\", \"task\": \"{task}\", \"model\": \"{model}\", \"temperature\": 0.8, \"timestamp\": \"{ts}\", \"latency_ms\": {latency}, \"tokens_prompt\": {}, \"tokens_completion\": {}, \"cache_hit\": false, \"validation_passed\": {}, \"retry_count\": 0, \"error\": {error}, \"response_length\": 1500, \"language_detected\": null}}",
        tokens.0,
        tokens.1,
        if ok { "true" } else { "false" }
    )
}

fn write_file(dir: &Path, day: &str, lines: &[String]) {
    let mut text = String::new();
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    fs::write(dir.join(format!("metrics_{day}.jsonl")), text).expect("write file");
}

fn rec(agent: &str, task: &str, model: &str, latency: f64, ts: DateTime<Utc>) -> PromptMetrics {
    let mut m = PromptMetrics::new("h", agent, task, model, 0.7, latency);
    m.timestamp = ts;
    m
}

#[test]
fn python_original_lines_read_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lines = vec![
        py_line("writer", "write_chapter", "qwen3:30b", "2026-01-20T09:03:22.123456", "8523.5", ("1200", "2400"), true, "null"),
        py_line("writer", "write_chapter", "qwen3:30b", "2026-01-20T10:00:00+00:00", "1000.0", ("null", "null"), true, "null"),
        py_line("writer", "revise", "dolphin3:8b", "2026-01-20T11:30:00+02:00", "500.0", ("10", "20"), false, "\"Ollama timed out: caf\\u00e9 \\\"x\\\"\""),
        // The Python original's oldest shape: optional fields left out take the dataclass defaults.
        "{\"prompt_hash\": \"abc\", \"agent\": \"writer\", \"task\": \"write_chapter\", \"model\": \"qwen3:30b\", \"temperature\": 0.8, \"timestamp\": \"2026-01-20T11:00:00\", \"latency_ms\": 2000}".to_owned(),
    ];
    write_file(dir.path(), "2026-01-20", &lines);
    let store = store_at(dir.path(), now());

    let s = store.agent_stats("writer", 1).expect("stats");
    assert_eq!(s.total_calls, 4);
    assert_eq!(s.successful_calls, 3);
    assert_eq!(s.success_rate, 0.75);
    assert_eq!(s.validation_pass_rate, 0.75);
    assert_eq!(s.error_rate, 0.25);
    assert_eq!(s.cache_hit_rate, 0.0);
    assert_eq!(s.avg_latency_ms, (8523.5 + 1000.0 + 500.0 + 2000.0) / 4.0);
    assert_eq!(s.tokens_prompt, 1210);
    assert_eq!(s.tokens_completion, 2420);
    assert_eq!(s.total_tokens_used, 3630);
    assert_eq!(s.avg_response_length, (1500.0 * 3.0) / 4.0);
    assert_eq!(s.skipped_lines, 0);

    let mut seen = Vec::new();
    let summary = store.scan(1, |m| seen.push(m.clone())).expect("scan");
    assert_eq!(summary.records, 4);
    assert_eq!(
        seen[0].timestamp,
        Utc.with_ymd_and_hms(2026, 1, 20, 9, 3, 22)
            .single()
            .expect("t")
            + Duration::microseconds(123_456)
    );
    assert_eq!(
        seen[2].timestamp,
        Utc.with_ymd_and_hms(2026, 1, 20, 9, 30, 0)
            .single()
            .expect("t")
    );
    assert_eq!(
        seen[2].error.as_deref(),
        Some("Ollama timed out: café \"x\"")
    );
    assert!(!seen[2].is_success());
    assert_eq!(seen[3].tokens_prompt, None);
    assert!(seen[3].validation_passed);
    assert_eq!(seen[3].retry_count, 0);
    assert_eq!(seen[3].response_length, 0);
    assert_eq!(seen[3].language_detected, None);
}

#[test]
fn our_lines_round_trip_through_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_at(dir.path(), now());
    let mut m = rec("editor", "edit", "m1", 12.25, now() - Duration::hours(1));
    m.tokens_prompt = Some(5);
    m.error = Some("boom\nline two".into());
    m.language_detected = Some("de".into());
    m.template_version = Some(3);
    m.template_hash = Some("ab".repeat(32));
    m.provider = Some("ollama".into());
    store.record(m.clone()).expect("record");
    let plain = rec("editor", "edit", "m1", 1.0, now() - Duration::hours(1));
    store.record(plain.clone()).expect("record");
    store.flush().expect("flush");
    let text = fs::read_to_string(dir.path().join("metrics_2026-01-20.jsonl")).expect("read");
    assert_eq!(text.lines().count(), 2);
    assert!(
        text.contains("\"timestamp\":\"2026-01-20T11:00:00.000000+00:00\""),
        "{text}"
    );
    assert!(
        !text
            .lines()
            .nth(1)
            .expect("line")
            .contains("template_version")
    );
    let mut back = Vec::new();
    store.scan(1, |r| back.push(r.clone())).expect("scan");
    assert_eq!(back, vec![m, plain]);
}

#[test]
fn records_go_to_the_file_of_their_utc_day() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_at(dir.path(), now());
    let late = Utc
        .with_ymd_and_hms(2026, 1, 18, 23, 59, 59)
        .single()
        .expect("t");
    store.record(rec("a", "t", "m", 1.0, late)).expect("record");
    store
        .record(rec("a", "t", "m", 1.0, late + Duration::seconds(1)))
        .expect("record");
    store.record(rec("a", "t", "m", 1.0, late)).expect("record");
    store.flush().expect("flush");
    let count = |day: &str| {
        fs::read_to_string(dir.path().join(format!("metrics_{day}.jsonl")))
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    assert_eq!(count("2026-01-18"), 2);
    assert_eq!(count("2026-01-19"), 1);
}

#[test]
fn window_is_the_last_n_times_24_hours() {
    let dir = tempfile::tempdir().expect("tempdir");
    let at = |s: &str| py_line("writer", "t", "m", s, "1.0", ("1", "1"), true, "null");
    // now = 2026-01-20T12:00Z; 2 days back is 2026-01-18T12:00Z.
    write_file(
        dir.path(),
        "2026-01-18",
        &[
            at("2026-01-18T11:59:59.999999"), // just outside
            at("2026-01-18T12:00:00"),        // exactly the cut-off: inside
            at("2026-01-18T13:00:00+02:00"),  // 11:00Z: outside
        ],
    );
    write_file(
        dir.path(),
        "2026-01-19",
        &[at("2026-01-19T00:00:00"), at("2026-01-19T23:59:59")],
    );
    write_file(
        dir.path(),
        "2026-01-20",
        &[at("2026-01-20T11:59:00"), at("2026-01-20T23:00:00")],
    );
    // Local-time files: a record with an offset can sit in another day's file.
    write_file(dir.path(), "2026-01-21", &[at("2026-01-21T01:30:00+14:00")]); // 2026-01-20T11:30Z
    // Older files are not opened at all: their bad lines would otherwise be counted.
    let garbage = "{\"agent\": \"writer\", garbage\n";
    fs::write(dir.path().join("metrics_2026-01-16.jsonl"), garbage).expect("write");
    fs::write(dir.path().join("metrics_2026-01-10.jsonl"), garbage).expect("write");
    let store = store_at(dir.path(), now());

    // (days, records, skipped lines): records after `now` never count.
    let cases = [(0, 0, 0), (1, 3, 0), (2, 5, 0), (3, 7, 1), (30, 7, 2)];
    for (days, want, skipped) in cases {
        let s = store.agent_stats("writer", days).expect("stats");
        assert_eq!(
            (s.total_calls, s.skipped_lines),
            (want, skipped),
            "days {days}"
        );
    }
}

#[test]
fn bad_lines_are_skipped_and_counted_without_hiding_good_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = |agent: &str| {
        py_line(
            agent,
            "t",
            "m",
            "2026-01-20T10:00:00",
            "5.0",
            ("1", "2"),
            true,
            "null",
        )
    };
    let truncated = good("writer")[..100].to_string();
    let lines = vec![
        good("writer"),
        "not json at all".to_owned(),
        truncated,
        good("writer").replace("\"agent\": \"writer\", ", ""), // unknown shape: no agent
        good("writer").replace("5.0", "NaN"),                  // Python's float('nan')
        good("writer").replace("5.0", "Infinity"),
        good("writer").replace("\"cache_hit\": false", "\"cache_hit\": \"no\""),
        "[1, 2, 3]".to_owned(),
        String::new(), // blank lines are neither records nor errors
        "   ".to_owned(),
        good("editor"),
        good("writer"),
    ];
    write_file(dir.path(), "2026-01-20", &lines);
    // A final line torn mid-write, without its newline.
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(dir.path().join("metrics_2026-01-20.jsonl"))
        .expect("open");
    f.write_all(&good("writer").as_bytes()[..60])
        .expect("append");
    drop(f);

    let store = store_at(dir.path(), now());
    let s = store.agent_stats("writer", 1).expect("stats");
    assert_eq!(s.total_calls, 2);
    // Agent queries read in full only the lines that mention the agent: the bad lines that
    // do not ("not json at all", the one without an agent, "[1, 2, 3]") are passed over.
    assert_eq!(s.skipped_lines, 5);
    let models = store.model_comparison(1).expect("models");
    assert_eq!(models.len(), 1);
    assert_eq!(models[0].stats.total_calls, 3);
    assert_eq!(models[0].stats.skipped_lines, 8);
    let summary = store.scan(1, |_| {}).expect("scan");
    assert_eq!(
        (summary.records, summary.skipped_lines, summary.files),
        (3, 8, 1)
    );

    // The next record starts on a fresh line instead of gluing onto the torn one.
    store
        .record(rec("writer", "t", "m", 1.0, now()))
        .expect("record");
    store.flush().expect("flush");
    let s = store.agent_stats("writer", 1).expect("stats");
    assert_eq!((s.total_calls, s.skipped_lines), (3, 5));
    assert_eq!(
        store.model_comparison(1).expect("models")[0]
            .stats
            .skipped_lines,
        8
    );
}

#[test]
fn percentiles_follow_the_python_original_rule() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_at(dir.path(), now());
    // n = 10, in shuffled order: sorted 10, 20, ..., 100.
    // p50: index floor(10 * 0.5) = 5 -> 60; p95: floor(9.5) = 9 -> 100; p99: floor(9.9) = 9 -> 100.
    for v in [70.0, 10.0, 100.0, 40.0, 20.0, 90.0, 30.0, 60.0, 80.0, 50.0] {
        store.record(rec("a", "t", "m", v, now())).expect("record");
    }
    // n = 21 for task "u": 1..=21. p50: floor(10.5) = 10 -> 11; p95: floor(19.95) = 19 -> 20;
    // p99: floor(20.79) = 20 -> 21.
    for v in 1..=21 {
        store
            .record(rec("a", "u", "m", f64::from(v), now()))
            .expect("record");
    }
    store.flush().expect("flush");
    let s = store.task_stats("a", "t", 1).expect("stats");
    assert_eq!(
        (s.p50_latency_ms, s.p95_latency_ms, s.p99_latency_ms),
        (60.0, 100.0, 100.0)
    );
    assert_eq!(s.avg_latency_ms, 55.0);
    let s = store.task_stats("a", "u", 1).expect("stats");
    assert_eq!(
        (s.p50_latency_ms, s.p95_latency_ms, s.p99_latency_ms),
        (11.0, 20.0, 21.0)
    );
    let s = store.task_stats("a", "none", 1).expect("stats");
    assert_eq!(s.total_calls, 0);
    assert_eq!(s.p95_latency_ms, 0.0);
    assert_eq!(s.success_rate, 0.0);
}

#[test]
fn model_and_version_comparisons() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_at(dir.path(), now());
    let plan = [("small", 3), ("big", 5), ("alpha", 3), ("zeta", 1)];
    for (model, n) in plan {
        for i in 0..n {
            let mut m = rec("writer", "write", model, 100.0, now());
            m.cache_hit = i == 0;
            m.retry_count = 2;
            store.record(m).expect("record");
        }
    }
    for (version, n) in [(Some(2), 2), (None, 1), (Some(1), 3), (Some(10), 1)] {
        for _ in 0..n {
            let mut m = rec("editor", "edit", "m", 10.0, now());
            m.template_version = version;
            store.record(m).expect("record");
        }
    }
    // Another task's versions stay out of the comparison.
    let mut other = rec("editor", "other", "m", 10.0, now());
    other.template_version = Some(7);
    store.record(other).expect("record");
    store.flush().expect("flush");

    let rows = store.model_comparison(7).expect("models");
    let order: Vec<(&str, u64)> = rows
        .iter()
        .map(|r| (r.model.as_str(), r.stats.total_calls))
        .collect();
    assert_eq!(
        order,
        vec![
            ("m", 8),
            ("big", 5),
            ("alpha", 3),
            ("small", 3),
            ("zeta", 1)
        ]
    );
    assert_eq!(rows[1].stats.cache_hit_rate, 0.2);
    assert_eq!(rows[1].stats.avg_retries, 2.0);

    let rows = store
        .version_comparison("editor", "edit", 7)
        .expect("versions");
    let order: Vec<(Option<u32>, u64)> = rows
        .iter()
        .map(|r| (r.template_version, r.stats.total_calls))
        .collect();
    assert_eq!(
        order,
        vec![(Some(1), 3), (Some(2), 2), (Some(10), 1), (None, 1)]
    );

    let json = serde_json::to_value(&rows[0]).expect("json");
    assert_eq!(json["template_version"], 1);
    assert_eq!(json["total_calls"], 3);
    assert!(json.get("p95_latency_ms").is_some());
}

#[test]
fn missing_directory_is_empty_and_not_created() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope");
    let store = store_at(&missing, now());
    assert_eq!(
        store.agent_stats("writer", 7).expect("stats").total_calls,
        0
    );
    assert!(store.model_comparison(7).expect("models").is_empty());
    assert_eq!(store.cleanup_old_logs(7).expect("cleanup"), 0);
    store.flush().expect("flush with nothing recorded");
    assert!(!missing.exists());
    // The first record creates it.
    store
        .record(rec("a", "t", "m", 1.0, now()))
        .expect("record");
    store.flush().expect("flush");
    assert_eq!(store.agent_stats("a", 1).expect("stats").total_calls, 1);
}

#[test]
fn invalid_records_are_rejected_with_the_field_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_at(dir.path(), now());
    let err = store
        .record(rec("a", "t", "m", f64::NAN, now()))
        .expect_err("NaN latency");
    assert!(err.to_string().contains("latency_ms"), "{err}");
    let mut m = rec("a", "t", "m", 1.0, now());
    m.temperature = f64::INFINITY;
    let err = store.record(m).expect_err("infinite temperature");
    assert!(err.to_string().contains("temperature"), "{err}");
}

#[test]
fn drop_flushes() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = store_at(dir.path(), now());
        for i in 0..10_000 {
            store
                .record(rec("a", "t", "m", f64::from(i), now()))
                .expect("record");
        }
    }
    let store = store_at(dir.path(), now());
    assert_eq!(
        store.agent_stats("a", 1).expect("stats").total_calls,
        10_000
    );
}

/// Records reach the file by themselves, without a flush or a drop: the writer gathers them
/// for a moment but never holds them back for want of more (a bounded wait, not a timing
/// assertion).
#[test]
fn records_reach_the_file_without_a_flush() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_at(dir.path(), now());
    let reader = store_at(dir.path(), now()).with_rollups(false);
    for round in 1..=3u64 {
        store
            .record(rec("a", "t", "m", 1.0, now()))
            .expect("record");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let seen = reader.agent_stats("a", 1).expect("stats").total_calls;
            if seen == round {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "record {round} not in the file after 20 s without a flush ({seen} seen)"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

#[test]
fn cleanup_removes_whole_days_before_the_cutoff_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    for day in [
        "2026-01-10",
        "2026-01-16",
        "2026-01-17",
        "2026-01-18",
        "2026-01-20",
    ] {
        write_file(dir.path(), day, &["x".to_owned()]);
    }
    for other in [
        "notes.txt",
        "metrics_2026-01-01.jsonl.bak",
        "metrics_latest.jsonl",
    ] {
        fs::write(dir.path().join(other), "keep").expect("write");
    }
    fs::create_dir(dir.path().join("metrics_2020-01-01.d")).expect("mkdir");
    let store = store_at(dir.path(), now());
    // Cut-off 2026-01-17T12:00Z: the 17th still holds records of the window, so it stays.
    assert_eq!(store.cleanup_old_logs(3).expect("cleanup"), 2);
    let mut left: Vec<String> = fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        vec![
            "metrics_2020-01-01.d",
            "metrics_2026-01-01.jsonl.bak",
            "metrics_2026-01-17.jsonl",
            "metrics_2026-01-18.jsonl",
            "metrics_2026-01-20.jsonl",
            "metrics_latest.jsonl",
            "notes.txt",
        ]
    );
    assert_eq!(store.cleanup_old_logs(3).expect("cleanup again"), 0);
}

#[test]
fn many_threads_append_whole_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(store_at(dir.path(), now()));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for i in 0..2_000u32 {
                    let mut m = rec("writer", &format!("t{t}"), "m", f64::from(i), now());
                    m.prompt_hash = format!("{t}-{i}");
                    // Long lines make torn or interleaved writes visible.
                    m.error = i.is_multiple_of(7).then(|| "e".repeat(5_000));
                    store.record(m).expect("record");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    store.flush().expect("flush");
    let mut hashes = std::collections::HashSet::new();
    let s = store
        .scan(1, |m| {
            hashes.insert(m.prompt_hash.clone());
        })
        .expect("scan");
    assert_eq!((s.records, s.skipped_lines), (16_000, 0));
    assert_eq!(hashes.len(), 16_000);
}

#[test]
fn queries_over_many_chunks_agree_with_a_plain_scan() {
    let dir = tempfile::tempdir().expect("tempdir");
    // About 12 MB over 2 files: several read chunks per file, split in the middle of lines.
    prompt_metrics::testdata::write_dataset_at(dir.path(), 30_000, 2, 7, now()).expect("data");
    let store = store_at(dir.path(), now());

    let mut writer_latencies = Vec::new();
    let mut per_model = std::collections::BTreeMap::<String, u64>::new();
    let mut writer_ok = 0u64;
    let summary = store
        .scan(2, |m| {
            *per_model.entry(m.model.clone()).or_default() += 1;
            if m.agent == "writer" {
                writer_latencies.push(m.latency_ms);
                writer_ok += u64::from(m.is_success());
            }
        })
        .expect("scan");
    assert_eq!(
        (summary.records, summary.skipped_lines, summary.files),
        (30_000, 0, 2)
    );

    let s = store.agent_stats("writer", 2).expect("stats");
    assert_eq!(s.total_calls, writer_latencies.len() as u64);
    assert_eq!(s.successful_calls, writer_ok);
    writer_latencies.sort_by(f64::total_cmp);
    let n = writer_latencies.len();
    let p95 = writer_latencies[((n as f64 * 0.95).floor() as usize).min(n - 1)];
    assert_eq!(s.p95_latency_ms, p95);
    let mean = writer_latencies.iter().sum::<f64>() / n as f64;
    assert!((s.avg_latency_ms - mean).abs() < 1e-6 * mean);

    let rows = store.model_comparison(2).expect("models");
    let got: std::collections::BTreeMap<String, u64> = rows
        .iter()
        .map(|r| (r.model.clone(), r.stats.total_calls))
        .collect();
    assert_eq!(got, per_model);
}

#[test]
fn write_errors_surface_on_flush_with_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let blocker = dir.path().join("blocker");
    fs::write(&blocker, "a file where the metrics directory should be").expect("write");
    let metrics_dir = blocker.join("metrics");
    let store = store_at(&metrics_dir, now());
    let sink: Arc<dyn MetricsSink> = Arc::new(store);
    sink.record(rec("a", "t", "m", 1.0, now()))
        .expect("record is queued");
    let err = sink.flush().expect_err("the directory cannot be created");
    assert!(err.to_string().contains("blocker"), "{err}");
    // The error is reported once; the sink keeps working for later flushes.
    sink.flush().expect("nothing new to write");
}

#[test]
fn overview_rows_equal_the_queries_of_their_own_grouping() {
    let dir = tempfile::tempdir().expect("tempdir");
    prompt_metrics::testdata::write_dataset_at(dir.path(), 6_000, 3, 11, now()).expect("data");
    // Some records with template versions, one without, and one on a day of its own.
    let store = store_at(dir.path(), now());
    for (i, v) in [Some(1), Some(2), Some(2), None].into_iter().enumerate() {
        let mut m = rec(
            "writer",
            "write_chapter",
            "qwen3:30b",
            100.0 * i as f64,
            now(),
        );
        m.template_version = v;
        store.record(m).expect("record");
    }
    store.flush().expect("flush");

    let o = store.overview(3).expect("overview");
    assert_eq!(o.models, store.model_comparison(3).expect("models"));
    assert_eq!(o.tasks, store.task_comparison(3).expect("tasks"));
    assert_eq!(o.days, store.daily_stats(3).expect("days"));
    for row in &o.tasks {
        assert_eq!(
            row.stats,
            store.task_stats(&row.agent, &row.task, 3).expect("task")
        );
        let versions: Vec<_> = o
            .versions
            .iter()
            .filter(|v| v.agent == row.agent && v.task == row.task)
            .map(|v| (v.template_version, v.stats.clone()))
            .collect();
        let want: Vec<_> = store
            .version_comparison(&row.agent, &row.task, 3)
            .expect("versions")
            .into_iter()
            .map(|v| (v.template_version, v.stats))
            .collect();
        assert_eq!(versions, want, "{}/{}", row.agent, row.task);
    }
    let writer = store.agent_stats("writer", 3).expect("writer");
    let writer_calls: u64 = o
        .tasks
        .iter()
        .filter(|t| t.agent == "writer")
        .map(|t| t.stats.total_calls)
        .sum();
    assert_eq!(writer_calls, writer.total_calls);

    // Per UTC day: the days' calls add up to the total, and each equals a plain count.
    let mut per_day = std::collections::BTreeMap::new();
    store
        .scan(3, |m| {
            *per_day.entry(m.timestamp.date_naive()).or_insert(0u64) += 1
        })
        .expect("scan");
    let got: std::collections::BTreeMap<_, _> = o
        .days
        .iter()
        .map(|d| (d.day, d.stats.total_calls))
        .collect();
    assert_eq!(got, per_day);
    assert_eq!(o.total.total_calls, 6_004);
    assert_eq!(
        o.days.iter().map(|d| d.stats.total_calls).sum::<u64>(),
        6_004
    );
    assert!(o.total.min_latency_ms <= o.total.p25_latency_ms);
    assert!(o.total.p25_latency_ms <= o.total.p50_latency_ms);
    assert!(o.total.p50_latency_ms <= o.total.p75_latency_ms);
    assert!(o.total.p99_latency_ms <= o.total.max_latency_ms);
}

#[test]
fn overview_of_twenty_latencies_takes_the_python_original_p95() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_at(dir.path(), now());
    // Nearest rank would give the 19th value (1900); the Python original's rule the 20th.
    for i in 1..=20 {
        let mut m = rec("writer", "t", "m", f64::from(i) * 100.0, now());
        m.template_version = Some(1);
        store.record(m).expect("record");
    }
    store.flush().expect("flush");
    let o = store.overview(1).expect("overview");
    for stats in [
        &o.total,
        &o.days[0].stats,
        &o.models[0].stats,
        &o.tasks[0].stats,
        &o.versions[0].stats,
    ] {
        assert_eq!(stats.p95_latency_ms, 2_000.0);
        assert_eq!(stats.p50_latency_ms, 1_100.0);
        assert_eq!(stats.p25_latency_ms, 600.0);
        assert_eq!(stats.p75_latency_ms, 1_600.0);
        assert_eq!(stats.min_latency_ms, 100.0);
        assert_eq!(stats.max_latency_ms, 2_000.0);
    }
}
