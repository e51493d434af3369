//! `prompt metrics agent --json` against the Python original's collector rules, run by Python
//! on the same files: the figures agree to 1e-6 whether the closed days are scanned or read
//! from their rollups.

use std::path::Path;
use std::process::Command;

use chrono::{Duration, Utc};
use serde_json::Value;

use crate::support::Sandbox;

/// The Python original's `MetricsCollector.get_agent_stats`, as its design describes it: every
/// `metrics_*.jsonl` file of the window read with `json.loads`, bad lines skipped, the records
/// of one agent aggregated; p95 is the element at index `min(int(n * 0.95), n - 1)` of the
/// sorted latencies.
const COLLECTOR: &str = r#"
import datetime, glob, json, os, sys

directory, agent, days = sys.argv[1], sys.argv[2], int(sys.argv[3])
now = datetime.datetime.now(datetime.timezone.utc)
cutoff = now - datetime.timedelta(days=days)
records = []
for path in sorted(glob.glob(os.path.join(directory, "metrics_*.jsonl"))):
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if r.get("agent") != agent:
                continue
            ts = datetime.datetime.fromisoformat(r["timestamp"])
            if ts.tzinfo is None:
                ts = ts.replace(tzinfo=datetime.timezone.utc)
            if cutoff <= ts <= now:
                records.append(r)
n = len(records)
latencies = sorted(r["latency_ms"] for r in records)
def pct(p):
    return latencies[min(int(n * p), n - 1)]
print(json.dumps({
    "total_calls": n,
    "success_rate": sum(1 for r in records if r["validation_passed"] and not r.get("error")) / n,
    "avg_latency_ms": sum(latencies) / n,
    "p50_latency_ms": pct(0.50),
    "p95_latency_ms": pct(0.95),
    "p99_latency_ms": pct(0.99),
    "validation_pass_rate": sum(1 for r in records if r["validation_passed"]) / n,
    "avg_retries": sum(r["retry_count"] for r in records) / n,
    "error_rate": sum(1 for r in records if r.get("error")) / n,
    "cache_hit_rate": sum(1 for r in records if r["cache_hit"]) / n,
    "total_tokens_used": sum((r.get("tokens_prompt") or 0) + (r.get("tokens_completion") or 0)
                             for r in records),
}))
"#;

/// The interpreter: `PROMPT_TEST_PYTHON`, else `python3` on the PATH.
fn python() -> Option<String> {
    let candidate = std::env::var("PROMPT_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    Command::new(&candidate)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| candidate)
}

fn collector(python: &str, dir: &Path, agent: &str, days: u32) -> Value {
    let out = Command::new(python)
        .args(["-c", COLLECTOR])
        .arg(dir)
        .arg(agent)
        .arg(days.to_string())
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "collector failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("collector JSON")
}

fn agree(ours: &Value, theirs: &Value, what: &str) {
    let fields = theirs.as_object().expect("object");
    for (field, want) in fields {
        let want = want.as_f64().expect("number");
        let got = ours[field]
            .as_f64()
            .unwrap_or_else(|| panic!("{what}: no {field} in {ours}"));
        let tolerance = 1e-6 * want.abs().max(1.0);
        assert!(
            (got - want).abs() <= tolerance,
            "{what}: {field} is {got}, the collector says {want}"
        );
    }
}

#[test]
fn agent_stats_agree_with_the_python_collector_from_scans_and_rollups() {
    let Some(python) = python() else {
        eprintln!("SKIPPED: no python3 (or PROMPT_TEST_PYTHON) to run the collector");
        return;
    };
    let sb = Sandbox::new();
    let metrics = sb.path().join("metrics");
    // Ten days of records ending today (closed days get rollups; today is always scanned),
    // and a line the collector and we both skip.
    prompt_metrics::testdata::write_dataset_at(&metrics, 20_000, 10, 7, Utc::now())
        .expect("data set");
    let yesterday = (Utc::now() - Duration::days(1)).date_naive();
    let file = metrics.join(format!("metrics_{yesterday}.jsonl"));
    let mut text = std::fs::read_to_string(&file).expect("a day file");
    text.push_str("{\"agent\": \"writer\", broken\n");
    std::fs::write(&file, text).expect("append a bad line");

    let metrics_arg = metrics.to_string_lossy().into_owned();
    for agent in ["writer", "editor"] {
        let theirs = collector(&python, &metrics, agent, 30);
        assert!(
            theirs["total_calls"].as_u64().unwrap_or(0) > 1_000,
            "{theirs}"
        );
        // The first query builds the rollups of the closed days, the second reads them.
        for pass in ["scan and build", "from rollups"] {
            let ours = sb
                .run(&[
                    "metrics",
                    "agent",
                    agent,
                    "--days",
                    "30",
                    "--json",
                    "--metrics-dir",
                    &metrics_arg,
                ])
                .json();
            agree(&ours, &theirs, &format!("{agent}, {pass}"));
        }
    }
    let rollups = std::fs::read_dir(&metrics)
        .expect("metrics dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".rollup"))
        .count();
    assert_eq!(rollups, 9, "one rollup per closed day");
}
