//! Cost, savings and tags on real files: sums in every query, per-tag rows, and the spend that
//! budgets read, shared by every store writing to one directory.

use std::fs;
use std::path::Path;

use chrono::{DateTime, Duration, TimeZone, Utc};
use prompt_metrics::{JsonlStore, MetricsSink, PriceTable, PromptMetrics};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 20, 12, 0, 0)
        .single()
        .expect("valid time")
}

fn store_at(dir: &Path) -> JsonlStore {
    JsonlStore::open(dir).expect("open").with_clock(now)
}

fn rec(agent: &str, cost: Option<f64>, saved: Option<f64>, tags: &[&str]) -> PromptMetrics {
    let mut m = PromptMetrics::new("h", agent, "t", "gpt-4o", 0.5, 100.0);
    m.timestamp = now() - Duration::hours(1);
    m.cost_usd = cost;
    m.saved_usd = saved;
    m.cache_hit = saved.is_some();
    m.tags = tags.iter().map(|t| (*t).to_owned()).collect();
    m
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[test]
fn cost_and_savings_are_summed_per_group_and_per_tag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_at(dir.path());
    store
        .record(rec("writer", Some(0.25), None, &["eval", "nightly"]))
        .expect("record");
    store
        .record(rec("writer", Some(0.0), Some(0.25), &["eval"]))
        .expect("record");
    store
        .record(rec("editor", None, None, &[]))
        .expect("record");
    store
        .record(rec("editor", Some(1.0), None, &["nightly", "nightly"]))
        .expect("record");
    store.flush().expect("flush");

    let writer = store.agent_stats("writer", 1).expect("query");
    assert!(close(writer.total_cost_usd, 0.25), "{writer:?}");
    assert!(close(writer.saved_usd, 0.25), "{writer:?}");
    let models = store.model_comparison(1).expect("query");
    assert!(close(models[0].stats.total_cost_usd, 1.25), "{models:?}");

    let tags = store.tag_comparison(1).expect("query");
    let shown: Vec<(Option<&str>, u64, f64)> = tags
        .iter()
        .map(|r| {
            (
                r.tag.as_deref(),
                r.stats.total_calls,
                r.stats.total_cost_usd,
            )
        })
        .collect();
    assert_eq!(
        shown,
        vec![
            (Some("eval"), 2, 0.25),
            // A tag given twice on one record counts once.
            (Some("nightly"), 2, 1.25),
            (None, 1, 0.0),
        ]
    );

    let overview = store.overview(1).expect("query");
    assert!(close(overview.total.total_cost_usd, 1.25));
    assert!(close(overview.total.saved_usd, 0.25));
    assert!(close(overview.days[0].stats.total_cost_usd, 1.25));
}

#[test]
fn spend_is_shared_by_every_store_on_one_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = store_at(dir.path());
    let b = store_at(dir.path());
    a.record(rec("writer", Some(0.5), None, &["eval"]))
        .expect("record");
    b.record(rec("editor", Some(0.25), None, &["eval", "ci"]))
        .expect("record");
    b.flush().expect("flush");
    // Yesterday's spend is not today's.
    let mut old = rec("writer", Some(9.0), None, &["eval"]);
    old.timestamp = now() - Duration::days(1);
    b.record(old).expect("record");
    b.flush().expect("flush");

    let midnight = now()
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc();
    // `a` has not flushed: its own queued record counts too.
    for store in [&a, &b] {
        let spend = store.spend_since(midnight).expect("spend");
        assert!(close(spend.total_usd, 0.75), "{spend:?}");
        assert!(close(spend.agents["writer"], 0.5), "{spend:?}");
        assert!(close(spend.agents["editor"], 0.25), "{spend:?}");
        assert!(close(spend.tags["eval"], 0.75), "{spend:?}");
        assert!(close(spend.tags["ci"], 0.25), "{spend:?}");
    }
    let through_trait: &dyn MetricsSink = &a;
    let spend = through_trait
        .spend_since(midnight)
        .expect("spend")
        .expect("the store answers");
    assert!(close(spend.total_usd, 0.75));
}

#[test]
fn records_round_trip_and_old_lines_read_without_cost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_at(dir.path());
    let mut m = rec("writer", Some(0.0265), None, &["eval"]);
    m.tokens_prompt = Some(1_000);
    m.tokens_completion = Some(500);
    m.tokens_cached = Some(400);
    m.tokens_reasoning = Some(100);
    store.record(m.clone()).expect("record");
    store.flush().expect("flush");
    let day_file = dir.path().join("metrics_2026-01-20.jsonl");
    let text = fs::read_to_string(&day_file).expect("read");
    assert!(
        text.contains(
            r#""tokens_cached":400,"tokens_reasoning":100,"cost_usd":0.0265,"tags":["eval"]"#
        ),
        "{text}"
    );
    // The Python original's line, without any of the new fields.
    let original = r#"{"prompt_hash": "9f86", "agent": "writer", "task": "t", "model": "m", "temperature": 0.8, "timestamp": "2026-01-20T11:30:00", "latency_ms": 10.0, "tokens_prompt": 1, "tokens_completion": 2, "cache_hit": false, "validation_passed": true, "retry_count": 0, "error": null, "response_length": 3, "language_detected": null}"#;
    fs::write(&day_file, format!("{text}{original}\n")).expect("append");
    let mut back = Vec::new();
    let summary = store.scan(1, |r| back.push(r.clone())).expect("scan");
    assert_eq!(summary.skipped_lines, 0);
    assert_eq!(back[0], m);
    assert_eq!(
        (back[1].cost_usd, back[1].saved_usd, back[1].tags.len()),
        (None, None, 0)
    );
    let stats = store.agent_stats("writer", 1).expect("query");
    assert_eq!(stats.total_calls, 2);
    assert!(close(stats.total_cost_usd, 0.0265));
    // The usage of the record prices as the table says.
    let table = PriceTable::from_toml(
        "[prices.\"gpt-4o\"]\ninput = 2.5\ncached_input = 1.25\noutput = 10.0\n",
        "t.toml",
    )
    .expect("table");
    let cost = table
        .cost(&m.usage().expect("usage"), "gpt-4o")
        .expect("priced");
    assert!(close(
        cost,
        (600.0 * 2.5 + 400.0 * 1.25 + 500.0 * 10.0) / 1e6
    ));
}

#[test]
fn non_finite_cost_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_at(dir.path());
    let err = store
        .record(rec("writer", Some(f64::NAN), None, &[]))
        .expect_err("NaN cost")
        .to_string();
    assert!(err.contains("cost_usd"), "{err}");
}
