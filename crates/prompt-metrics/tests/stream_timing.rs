//! Time to first token and tokens per second: written, read back (old lines without them
//! too), and aggregated over the streamed records only, by every query alike.

use std::fs;
use std::path::Path;

use chrono::{DateTime, Duration, TimeZone, Utc};
use prompt_metrics::{AggregateStats, JsonlStore, MetricsSink, PromptMetrics, tokens_per_second};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 20, 12, 0, 0)
        .single()
        .expect("valid time")
}

fn store_at(dir: &Path) -> JsonlStore {
    JsonlStore::open(dir).expect("open").with_clock(now)
}

fn rec(model: &str, latency: f64) -> PromptMetrics {
    let mut m = PromptMetrics::new("h", "writer", "write_chapter", model, 0.7, latency);
    m.timestamp = now() - Duration::minutes(5);
    m.template_version = Some(2);
    m
}

/// A streamed record: `tokens` completion tokens, first delta after `ttft` ms, reply complete
/// after `latency` ms.
fn streamed(model: &str, latency: f64, ttft: f64, tokens: u64) -> PromptMetrics {
    let mut m = rec(model, latency);
    m.tokens_completion = Some(tokens);
    m.set_stream_timing(Some(ttft), latency);
    m
}

/// Every query's row for `writer/write_chapter` on `model`, and the overview's.
fn every_row(store: &JsonlStore, model: &str) -> Vec<AggregateStats> {
    let o = store.overview(1).expect("overview");
    let models = store.model_comparison(1).expect("models");
    let versions = store
        .version_comparison("writer", "write_chapter", 1)
        .expect("versions");
    vec![
        store.agent_stats("writer", 1).expect("agent"),
        store
            .task_stats("writer", "write_chapter", 1)
            .expect("task"),
        models
            .iter()
            .find(|m| m.model == model)
            .expect("model row")
            .stats
            .clone(),
        versions[0].stats.clone(),
        o.total.clone(),
        o.days[0].stats.clone(),
        o.models
            .iter()
            .find(|m| m.model == model)
            .expect("model row")
            .stats
            .clone(),
        o.tasks[0].stats.clone(),
        o.versions[0].stats.clone(),
    ]
}

#[test]
fn ttft_percentiles_are_over_the_streamed_records_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_at(dir.path());
    // 20 streamed records, TTFT 100..=2000 ms out of order; 10 not streamed, slower than any.
    for i in [
        7, 20, 3, 15, 1, 11, 19, 5, 13, 9, 2, 18, 6, 14, 10, 4, 17, 8, 16, 12,
    ] {
        let ttft = f64::from(i) * 100.0;
        store
            .record(streamed("m", ttft + 1000.0, ttft, 100))
            .expect("record");
    }
    for i in 0..10 {
        store
            .record(rec("m", 50_000.0 + f64::from(i)))
            .expect("record");
    }
    store.flush().expect("flush");

    for s in every_row(&store, "m") {
        assert_eq!(s.total_calls, 30);
        assert_eq!(s.streamed_calls, 20);
        // The Python original's rule over the 20 TTFTs: index floor(20 * 0.5) = 10 -> 1100,
        // floor(20 * 0.95) = 19 -> 2000 (nearest rank would give 1900).
        assert_eq!(s.p50_time_to_first_token_ms, Some(1_100.0));
        assert_eq!(s.p95_time_to_first_token_ms, Some(2_000.0));
        // 100 tokens in 1 s of generation each.
        assert_eq!(s.avg_tokens_per_second, Some(100.0));
        // Latency percentiles still count every record: floor(30 * 0.95) = 28 -> 50,008.
        assert_eq!(s.p95_latency_ms, 50_008.0);
    }
}

#[test]
fn groups_without_streamed_records_have_no_stream_figures() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_at(dir.path());
    store
        .record(streamed("fast", 900.0, 300.0, 60))
        .expect("record");
    store.record(rec("plain", 800.0)).expect("record");
    store.flush().expect("flush");

    let models = store.model_comparison(1).expect("models");
    let fast = &models
        .iter()
        .find(|m| m.model == "fast")
        .expect("fast")
        .stats;
    assert_eq!(fast.streamed_calls, 1);
    assert_eq!(fast.p50_time_to_first_token_ms, Some(300.0));
    assert_eq!(fast.p95_time_to_first_token_ms, Some(300.0));
    assert_eq!(fast.avg_tokens_per_second, Some(100.0));
    let plain = &models
        .iter()
        .find(|m| m.model == "plain")
        .expect("plain")
        .stats;
    assert_eq!(plain.total_calls, 1);
    assert_eq!(plain.streamed_calls, 0);
    assert_eq!(plain.p50_time_to_first_token_ms, None);
    assert_eq!(plain.p95_time_to_first_token_ms, None);
    assert_eq!(plain.avg_tokens_per_second, None);

    // No records at all: null, not 0.
    let none = store.agent_stats("nobody", 1).expect("stats");
    assert_eq!(none.p50_time_to_first_token_ms, None);
    assert_eq!(none.avg_tokens_per_second, None);
    let json = serde_json::to_value(&none).expect("json");
    assert_eq!(json["p50_time_to_first_token_ms"], serde_json::Value::Null);
    assert_eq!(json["p95_time_to_first_token_ms"], serde_json::Value::Null);
    assert_eq!(json["avg_tokens_per_second"], serde_json::Value::Null);
    assert_eq!(json["streamed_calls"], 0);
    // Every key of before is still there, with its meaning.
    assert_eq!(json["p95_latency_ms"], 0.0);
    assert_eq!(json["total_tokens_used"], 0);
}

#[test]
fn average_tokens_per_second_is_over_the_records_that_have_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_at(dir.path());
    // 200 tok/s and 50 tok/s; a streamed record without token counts has a TTFT but no rate.
    store
        .record(streamed("m", 1500.0, 500.0, 200))
        .expect("record");
    store
        .record(streamed("m", 2500.0, 500.0, 100))
        .expect("record");
    let mut no_tokens = rec("m", 700.0);
    no_tokens.set_stream_timing(Some(200.0), 700.0);
    assert_eq!(no_tokens.tokens_per_second, None);
    store.record(no_tokens).expect("record");
    store.flush().expect("flush");

    let s = store.agent_stats("writer", 1).expect("stats");
    assert_eq!(s.streamed_calls, 3);
    assert_eq!(s.avg_tokens_per_second, Some(125.0));
    // floor(3 * 0.5) = 1 of 200, 500, 500.
    assert_eq!(s.p50_time_to_first_token_ms, Some(500.0));
}

#[test]
fn tokens_per_second_rule() {
    // Completion tokens over the generation time after the first token.
    assert_eq!(
        tokens_per_second(Some(300), 2500.0, Some(500.0)),
        Some(150.0)
    );
    assert_eq!(tokens_per_second(Some(0), 2500.0, Some(500.0)), Some(0.0));
    assert_eq!(
        tokens_per_second(Some(1), 1500.0, Some(0.0)),
        Some(1.0 / 1.5)
    );
    // Unknown without token counts, without a first token, or without generation time.
    assert_eq!(tokens_per_second(None, 2500.0, Some(500.0)), None);
    assert_eq!(tokens_per_second(Some(300), 2500.0, None), None);
    assert_eq!(tokens_per_second(Some(300), 500.0, Some(500.0)), None);
    assert_eq!(tokens_per_second(Some(300), 400.0, Some(500.0)), None);
    assert_eq!(tokens_per_second(Some(300), 2500.0, Some(-1.0)), None);
    assert_eq!(tokens_per_second(Some(300), f64::NAN, Some(1.0)), None);
    assert_eq!(tokens_per_second(Some(300), f64::INFINITY, Some(1.0)), None);
    assert_eq!(tokens_per_second(Some(300), 2500.0, Some(f64::NAN)), None);
    assert_eq!(tokens_per_second(Some(u64::MAX), 1e-300, Some(0.0)), None);

    let mut m = rec("m", 4000.0);
    m.tokens_completion = Some(600);
    m.set_stream_timing(Some(1000.0), 4000.0);
    assert_eq!(
        (m.time_to_first_token_ms, m.tokens_per_second),
        (Some(1000.0), Some(200.0))
    );
    // Not streamed: both unknown.
    m.set_stream_timing(None, 4000.0);
    assert_eq!(
        (m.time_to_first_token_ms, m.tokens_per_second),
        (None, None)
    );
    // A TTFT that cannot be one is dropped, so the record stays writable.
    m.set_stream_timing(Some(f64::NAN), 4000.0);
    assert_eq!(
        (m.time_to_first_token_ms, m.tokens_per_second),
        (None, None)
    );
}

#[test]
fn lines_are_written_with_numbers_or_null_and_read_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_at(dir.path());
    let s = streamed("m", 2500.0, 412.5, 300);
    let plain = rec("m", 800.0);
    store.record(s.clone()).expect("record");
    store.record(plain.clone()).expect("record");
    store.flush().expect("flush");
    let text = fs::read_to_string(dir.path().join("metrics_2026-01-20.jsonl")).expect("read");
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0]
            .ends_with(r#""time_to_first_token_ms":412.5,"tokens_per_second":143.7125748502994,"cost_usd":null,"tags":[]}"#),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].ends_with(
            r#""time_to_first_token_ms":null,"tokens_per_second":null,"cost_usd":null,"tags":[]}"#
        ),
        "{}",
        lines[1]
    );
    let mut back = Vec::new();
    store.scan(1, |m| back.push(m.clone())).expect("scan");
    assert_eq!(back, vec![s, plain]);
}

#[test]
fn lines_without_the_fields_still_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lines = [
        // The Python original's line.
        r#"{"prompt_hash": "9f86", "agent": "writer", "task": "write_chapter", "model": "m", "temperature": 0.8, "timestamp": "2026-01-20T11:00:00.000001", "latency_ms": 1000.0, "tokens_prompt": 10, "tokens_completion": 20, "cache_hit": false, "validation_passed": true, "retry_count": 0, "error": null, "response_length": 1500, "language_detected": null}"#,
        // Ours from before streaming.
        r#"{"prompt_hash":"h","agent":"writer","task":"write_chapter","model":"m","temperature":0.7,"timestamp":"2026-01-20T11:00:00.000000+00:00","latency_ms":3000.0,"tokens_prompt":null,"tokens_completion":null,"cache_hit":true,"validation_passed":true,"retry_count":0,"error":null,"response_length":0,"language_detected":null,"template_version":2,"provider":"ollama"}"#,
        // Ours, streamed, fields in another order.
        r#"{"tokens_per_second":40,"time_to_first_token_ms":250,"prompt_hash":"h","agent":"writer","task":"write_chapter","model":"m","temperature":0.7,"timestamp":"2026-01-20T11:00:00Z","latency_ms":2000.0}"#,
    ];
    fs::write(
        dir.path().join("metrics_2026-01-20.jsonl"),
        lines.join("\n") + "\n",
    )
    .expect("write");
    let store = store_at(dir.path());

    let s = store.agent_stats("writer", 1).expect("stats");
    assert_eq!(s.total_calls, 3);
    assert_eq!(s.skipped_lines, 0);
    assert_eq!(s.avg_latency_ms, 2000.0);
    assert_eq!(s.total_tokens_used, 30);
    assert_eq!(s.streamed_calls, 1);
    assert_eq!(s.p50_time_to_first_token_ms, Some(250.0));
    assert_eq!(s.p95_time_to_first_token_ms, Some(250.0));
    assert_eq!(s.avg_tokens_per_second, Some(40.0));

    let mut back = Vec::new();
    let summary = store.scan(1, |m| back.push(m.clone())).expect("scan");
    assert_eq!(summary.skipped_lines, 0);
    let timing: Vec<_> = back
        .iter()
        .map(|m| (m.time_to_first_token_ms, m.tokens_per_second))
        .collect();
    assert_eq!(
        timing,
        vec![(None, None), (None, None), (Some(250.0), Some(40.0))]
    );
}

#[test]
fn non_finite_stream_figures_are_rejected_with_the_field_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_at(dir.path());
    let mut m = rec("m", 1.0);
    m.time_to_first_token_ms = Some(f64::NAN);
    let err = store.record(m).expect_err("NaN TTFT");
    assert!(err.to_string().contains("time_to_first_token_ms"), "{err}");
    let mut m = rec("m", 1.0);
    m.tokens_per_second = Some(f64::INFINITY);
    let err = store.record(m).expect_err("infinite rate");
    assert!(err.to_string().contains("tokens_per_second"), "{err}");
}
