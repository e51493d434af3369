//! `prompt metrics report`: one self-contained HTML file whose charts carry the run's data.

use chrono::Utc;
use serde_json::json;

use crate::support::{FakeOllama, Sandbox, closed_url};

/// The value of `attr="…"` in the first element that has `marker` in it.
fn attr_after<'a>(html: &'a str, marker: &str, attr: &str) -> &'a str {
    let start = html
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker} in the report"));
    let rest = &html[start..];
    let end = rest.find('>').unwrap();
    let tag = &rest[..end];
    let key = format!("{attr}=\"");
    let i = tag
        .find(&key)
        .unwrap_or_else(|| panic!("no {attr} in {tag}"));
    let v = &tag[i + key.len()..];
    &v[..v.find('"').unwrap()]
}

/// The `<svg id="…">…</svg>` element of a chart.
fn chart<'a>(html: &'a str, id: &str) -> &'a str {
    let start = html
        .find(&format!("<svg id=\"{id}\""))
        .unwrap_or_else(|| panic!("chart {id} missing"));
    let end = html[start..].find("</svg>").unwrap();
    &html[start..start + end]
}

#[test]
fn report_has_every_chart_fed_with_the_run() {
    let server = FakeOllama::start();
    let sb = Sandbox::new();
    // 3 write_scene jobs on ollama/qwen3:30b, 2 more on llama3 of which one is repeated
    // (a cache hit), 1 failing call against a closed port.
    let mut jobs = String::new();
    for i in 0..3 {
        jobs.push_str(&json!({"template": "writer/write_scene", "vars": {"story_title": "T", "setting": format!("s{i}"), "pov_character": "M", "goal": "g", "conflict": "c"}}).to_string());
        jobs.push('\n');
    }
    for i in [0, 0] {
        jobs.push_str(&json!({"template": "architect/create_characters", "model": "llama3", "vars": {"story_title": "T", "genre": "g", "premise": format!("p{i}")}}).to_string());
        jobs.push('\n');
    }
    sb.write("jobs.jsonl", &jobs);
    let out = sb.run(&[
        "batch",
        "jobs.jsonl",
        "--out",
        "results.jsonl",
        "--provider",
        "ollama",
        "--base-url",
        &server.url,
        "--concurrency",
        "1",
    ]);
    out.ok();
    let failed = sb.run(&[
        "generate",
        "writer/write_scene",
        "--provider",
        "ollama",
        "--base-url",
        &closed_url(),
        "--retries",
        "0",
        "--var",
        "story_title=T",
        "--var",
        "setting=x",
        "--var",
        "pov_character=M",
        "--var",
        "goal=g",
        "--var",
        "conflict=c",
    ]);
    assert_eq!(failed.code, 1);

    let out = sb.run(&[
        "metrics",
        "report",
        "--days",
        "7",
        "--out",
        "reports/report.html",
    ]);
    assert!(out.ok().contains("reports/report.html"));
    let html = sb.read("reports/report.html");
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(!html.contains("<script"), "no script");
    assert!(
        !html.contains("src=\"http") && !html.contains("href=\"http"),
        "no network"
    );
    assert!(html.contains("<style>"), "inline CSS");
    assert_eq!(attr_after(&html, "<body", "data-total-calls"), "6");

    let today = Utc::now().date_naive().to_string();
    let calls = chart(&html, "chart-calls-per-day");
    assert_eq!(attr_after(calls, "<svg", "data-days"), "7");
    assert_eq!(attr_after(calls, "<svg", "data-total-calls"), "6");
    assert_eq!(attr_after(calls, "<svg", "data-total-errors"), "1");
    let day = format!("data-day=\"{today}\"");
    assert_eq!(attr_after(calls, &day, "data-calls"), "6");
    assert_eq!(attr_after(calls, &day, "data-errors"), "1");
    assert_eq!(attr_after(calls, &day, "data-cache-hits"), "1");

    let latency = chart(&html, "chart-latency-by-model");
    assert_eq!(
        attr_after(latency, "data-model=\"qwen3:30b\"", "data-calls"),
        "4"
    );
    assert_eq!(
        attr_after(latency, "data-model=\"llama3\"", "data-calls"),
        "2"
    );
    let p95: f64 = attr_after(latency, "data-model=\"qwen3:30b\"", "data-p95-ms")
        .parse()
        .unwrap();
    assert!(p95 >= 0.0);

    let p95_task = chart(&html, "chart-p95-by-task");
    assert_eq!(
        attr_after(p95_task, "data-key=\"writer/write_scene\"", "data-calls"),
        "4"
    );
    assert_eq!(
        attr_after(
            p95_task,
            "data-key=\"architect/create_characters\"",
            "data-calls"
        ),
        "2"
    );
    let success = chart(&html, "chart-success-by-task");
    assert_eq!(
        attr_after(
            success,
            "data-key=\"writer/write_scene\"",
            "data-success-rate"
        ),
        "0.75"
    );
    assert_eq!(
        attr_after(
            success,
            "data-key=\"architect/create_characters\"",
            "data-success-rate"
        ),
        "1"
    );

    let versions = chart(&html, "chart-p95-by-version");
    assert_eq!(
        attr_after(versions, "data-key=\"writer/write_scene@v1\"", "data-calls"),
        "4"
    );
    let v_success = chart(&html, "chart-success-by-version");
    assert_eq!(
        attr_after(
            v_success,
            "data-key=\"architect/create_characters@v1\"",
            "data-success-rate"
        ),
        "1"
    );

    let cache = chart(&html, "chart-cache-hit-rate");
    assert_eq!(attr_after(cache, "<svg", "data-hits"), "1");
    assert_eq!(attr_after(cache, "<svg", "data-calls"), "6");
    assert_eq!(
        attr_after(
            cache,
            "data-key=\"architect/create_characters\"",
            "data-hit-rate"
        ),
        "0.5"
    );

    // The tables behind the charts.
    for table in [
        "table-calls-per-day",
        "table-models",
        "table-tasks",
        "table-versions",
    ] {
        assert!(html.contains(&format!("<table id=\"{table}\"")), "{table}");
    }
}

#[test]
fn report_of_an_empty_period_still_renders() {
    let sb = Sandbox::new();
    let out = sb
        .run(&["metrics", "report", "--out", "r.html", "--json"])
        .json();
    assert_eq!(out["calls"], 0);
    let html = sb.read("r.html");
    for id in [
        "chart-calls-per-day",
        "chart-latency-by-model",
        "chart-p95-by-task",
        "chart-success-by-task",
        "chart-p95-by-version",
        "chart-success-by-version",
        "chart-cache-hit-rate",
    ] {
        assert!(html.contains(&format!("<svg id=\"{id}\"")), "{id}");
    }
    assert!(html.contains("no calls in this period"));
}

/// 20 latencies, where the nearest-rank p95 (the 19th value) and the Python original's rule
/// (index floor(20 · 0.95) = 19, the 20th value) differ: the report shows the same p95 as
/// `prompt metrics models --json` and `prompt metrics task --json`, the Python original's.
#[test]
fn report_p95_equals_the_metrics_commands() {
    let sb = Sandbox::new();
    let ts = Utc::now() - chrono::Duration::minutes(5);
    let mut text = String::new();
    // Latencies 100, 200, ..., 2000 ms, written out of order.
    for i in [
        7, 20, 3, 15, 1, 11, 19, 5, 13, 9, 2, 18, 6, 14, 10, 4, 17, 8, 16, 12,
    ] {
        text.push_str(&format!(
            "{{\"prompt_hash\": \"h{i}\", \"agent\": \"writer\", \"task\": \"write_scene\", \"model\": \"m20\", \"temperature\": 0.7, \"timestamp\": \"{}\", \"latency_ms\": {}.0, \"tokens_prompt\": 10, \"tokens_completion\": 20, \"cache_hit\": false, \"validation_passed\": true, \"retry_count\": 0, \"error\": null, \"response_length\": 100, \"language_detected\": \"en\", \"template_version\": 2}}\n",
            ts.format("%Y-%m-%dT%H:%M:%S%.6f"),
            i * 100
        ));
    }
    sb.write(
        &format!("metrics/metrics_{}.jsonl", ts.format("%Y-%m-%d")),
        &text,
    );
    let env = [("PROMPT_METRICS_DIR", "metrics")];

    let models = sb
        .run_env(&["metrics", "models", "--days", "7", "--json"], &env)
        .json();
    assert_eq!(models[0]["model"], "m20");
    assert_eq!(models[0]["total_calls"], 20);
    assert_eq!(models[0]["p95_latency_ms"], 2000.0);
    let task = sb
        .run_env(
            &[
                "metrics",
                "task",
                "writer",
                "write_scene",
                "--days",
                "7",
                "--json",
            ],
            &env,
        )
        .json();
    assert_eq!(task["p95_latency_ms"], 2000.0);

    let out = sb.run_env(
        &["metrics", "report", "--days", "7", "--out", "r.html"],
        &env,
    );
    out.ok();
    let html = sb.read("r.html");
    let want = models[0]["p95_latency_ms"].as_f64().unwrap();
    let p95 = |chart_id: &str, marker: &str| -> f64 {
        attr_after(chart(&html, chart_id), marker, "data-p95-ms")
            .parse()
            .unwrap()
    };
    assert_eq!(p95("chart-latency-by-model", "data-model=\"m20\""), want);
    assert_eq!(
        p95("chart-p95-by-task", "data-key=\"writer/write_scene\""),
        task["p95_latency_ms"].as_f64().unwrap()
    );
    assert_eq!(
        p95("chart-p95-by-version", "data-key=\"writer/write_scene@v2\""),
        want
    );
    // The tables say the same (2.00 s, not the nearest rank's 1.90 s).
    let models_table = &html[html.find("<table id=\"table-models\"").unwrap()..];
    let row = &models_table[models_table.find("<td>m20</td>").unwrap()..];
    let row = &row[..row.find("</tr>").unwrap()];
    let cells: Vec<&str> = row
        .split("<td>")
        .skip(1)
        .map(|c| c.trim_end_matches("</td>"))
        .collect();
    // key, calls, success, cache hits, avg, p50, p95, p99, max, tokens
    assert_eq!(cells[1], "20");
    assert_eq!(cells[6], cells[8], "p95 is the largest of the 20 latencies");
    assert_ne!(cells[6], cells[5]);
}

/// Hand-written lines: 20 streamed calls of model `s` (time to first token 100, 200, …,
/// 2000 ms, 40 tokens/s each, written out of order), 5 calls of `s` not streamed and lines
/// of model `p` without the fields (the Python original's and ours from before streaming).
/// `prompt metrics … --json`, the terminal tables and the report show the same TTFT figures,
/// computed over the streamed calls only.
#[test]
fn ttft_of_hand_written_lines_in_json_tables_and_report() {
    let sb = Sandbox::new();
    let ts = Utc::now() - chrono::Duration::minutes(5);
    let stamp = ts.format("%Y-%m-%dT%H:%M:%S%.6f").to_string();
    let mut text = String::new();
    for i in [
        7, 20, 3, 15, 1, 11, 19, 5, 13, 9, 2, 18, 6, 14, 10, 4, 17, 8, 16, 12,
    ] {
        text.push_str(&format!(
            "{{\"prompt_hash\":\"h{i}\",\"agent\":\"writer\",\"task\":\"write_scene\",\"model\":\"s\",\"temperature\":0.7,\"timestamp\":\"{stamp}+00:00\",\"latency_ms\":{}.0,\"tokens_prompt\":10,\"tokens_completion\":40,\"cache_hit\":false,\"validation_passed\":true,\"retry_count\":0,\"error\":null,\"response_length\":100,\"language_detected\":null,\"template_version\":2,\"provider\":\"ollama\",\"time_to_first_token_ms\":{}.0,\"tokens_per_second\":40.0}}\n",
            i * 100 + 1000,
            i * 100
        ));
    }
    for i in 0..5 {
        text.push_str(&format!(
            "{{\"prompt_hash\":\"n{i}\",\"agent\":\"writer\",\"task\":\"write_scene\",\"model\":\"s\",\"temperature\":0.7,\"timestamp\":\"{stamp}+00:00\",\"latency_ms\":60000.0,\"tokens_prompt\":10,\"tokens_completion\":40,\"cache_hit\":false,\"validation_passed\":true,\"retry_count\":0,\"error\":null,\"response_length\":100,\"language_detected\":null,\"template_version\":2,\"time_to_first_token_ms\":null,\"tokens_per_second\":null}}\n"
        ));
    }
    text.push_str(&format!(
        "{{\"prompt_hash\": \"py\", \"agent\": \"editor\", \"task\": \"edit\", \"model\": \"p\", \"temperature\": 0.7, \"timestamp\": \"{stamp}\", \"latency_ms\": 800.0, \"tokens_prompt\": 10, \"tokens_completion\": 20, \"cache_hit\": false, \"validation_passed\": true, \"retry_count\": 0, \"error\": null, \"response_length\": 100, \"language_detected\": \"en\"}}\n"
    ));
    text.push_str(&format!(
        "{{\"prompt_hash\":\"old\",\"agent\":\"editor\",\"task\":\"edit\",\"model\":\"p\",\"temperature\":0.7,\"timestamp\":\"{stamp}+00:00\",\"latency_ms\":900.0,\"tokens_prompt\":null,\"tokens_completion\":null,\"cache_hit\":true,\"validation_passed\":true,\"retry_count\":0,\"error\":null,\"response_length\":0,\"language_detected\":null,\"template_version\":1,\"provider\":\"ollama\"}}\n"
    ));
    sb.write(
        &format!("metrics/metrics_{}.jsonl", ts.format("%Y-%m-%d")),
        &text,
    );
    let env = [("PROMPT_METRICS_DIR", "metrics")];

    let models = sb
        .run_env(&["metrics", "models", "--days", "7", "--json"], &env)
        .json();
    let row = |name: &str| {
        models
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["model"] == name)
            .unwrap_or_else(|| panic!("no model {name} in {models}"))
            .clone()
    };
    let s = row("s");
    assert_eq!(s["total_calls"], 25);
    assert_eq!(s["streamed_calls"], 20);
    // The Python original's rule over the 20 TTFTs: index floor(20 · 0.5) = 10, floor(20 · 0.95) = 19.
    assert_eq!(s["p50_time_to_first_token_ms"], 1100.0);
    assert_eq!(s["p95_time_to_first_token_ms"], 2000.0);
    assert_eq!(s["avg_tokens_per_second"], 40.0);
    // Latency still over every call: floor(25 · 0.95) = 23 -> one of the 60 s calls.
    assert_eq!(s["p95_latency_ms"], 60000.0);
    let p = row("p");
    assert_eq!(p["total_calls"], 2);
    assert_eq!(p["skipped_lines"], 0);
    assert_eq!(p["streamed_calls"], 0);
    assert!(p["p50_time_to_first_token_ms"].is_null(), "{p}");
    assert!(p["p95_time_to_first_token_ms"].is_null(), "{p}");
    assert!(p["avg_tokens_per_second"].is_null(), "{p}");

    // The other queries agree.
    let task = sb
        .run_env(
            &[
                "metrics",
                "task",
                "writer",
                "write_scene",
                "--days",
                "7",
                "--json",
            ],
            &env,
        )
        .json();
    let agent = sb
        .run_env(
            &["metrics", "agent", "writer", "--days", "7", "--json"],
            &env,
        )
        .json();
    let versions = sb
        .run_env(
            &[
                "metrics",
                "versions",
                "writer",
                "write_scene",
                "--days",
                "7",
                "--json",
            ],
            &env,
        )
        .json();
    for stats in [&task, &agent, &versions[0]] {
        assert_eq!(stats["p50_time_to_first_token_ms"], 1100.0, "{stats}");
        assert_eq!(stats["p95_time_to_first_token_ms"], 2000.0, "{stats}");
        assert_eq!(stats["avg_tokens_per_second"], 40.0, "{stats}");
    }

    // Terminal tables: TTFT columns and rows, `-` where a group has none.
    let table = sb.run_env(&["metrics", "models", "--days", "7"], &env);
    let table = table.ok();
    assert!(
        table.contains("ttft p50") && table.contains("ttft p95"),
        "{table}"
    );
    let s_line = table
        .lines()
        .find(|l| l.trim_start().starts_with("s "))
        .unwrap();
    assert!(
        s_line.contains("1.10 s") && s_line.contains("2.00 s"),
        "{s_line}"
    );
    let p_line = table
        .lines()
        .find(|l| l.trim_start().starts_with("p "))
        .unwrap();
    assert!(p_line.trim_end().ends_with('-'), "{p_line}");
    let stats = sb.run_env(
        &["metrics", "task", "writer", "write_scene", "--days", "7"],
        &env,
    );
    let stats = stats.ok();
    assert!(stats.contains("p95 time to first token"), "{stats}");
    assert!(stats.contains("2.00 s"), "{stats}");
    let plain = sb.run_env(&["metrics", "agent", "editor", "--days", "7"], &env);
    assert!(
        !plain.ok().contains("time to first token"),
        "no TTFT rows without streamed calls"
    );

    // The report shows the same figures.
    sb.run_env(
        &["metrics", "report", "--days", "7", "--out", "r.html"],
        &env,
    )
    .ok();
    let html = sb.read("r.html");
    let by_model = chart(&html, "chart-ttft-by-model");
    assert_eq!(attr_after(by_model, "<svg", "data-groups"), "1");
    assert_eq!(
        attr_after(by_model, "data-key=\"s\"", "data-ttft-p50-ms"),
        "1100"
    );
    assert_eq!(
        attr_after(by_model, "data-key=\"s\"", "data-ttft-p95-ms"),
        "2000"
    );
    assert_eq!(
        attr_after(by_model, "data-key=\"s\"", "data-streamed-calls"),
        "20"
    );
    let by_task = chart(&html, "chart-ttft-by-task");
    assert_eq!(
        attr_after(
            by_task,
            "data-key=\"writer/write_scene\"",
            "data-ttft-p95-ms"
        ),
        "2000"
    );
    let models_table = &html[html.find("<table id=\"table-models\"").unwrap()..];
    let cells = |key: &str| -> Vec<String> {
        let r = &models_table[models_table.find(&format!("<td>{key}</td>")).unwrap()..];
        let r = &r[..r.find("</tr>").unwrap()];
        r.split("<td>")
            .skip(1)
            .map(|c| c.trim_end_matches("</td>").to_owned())
            .collect()
    };
    // key, calls, success, cache hits, avg, p50, p95, p99, max, tokens, cost, saved,
    // ttft p50, ttft p95, tok/s
    assert_eq!(cells("s")[12..], ["1.10 s", "2.00 s", "40.0"]);
    assert_eq!(cells("p")[12..], ["-", "-", "-"]);
    let versions_table = &html[html.find("<table id=\"table-versions\"").unwrap()..];
    assert!(versions_table.contains("<td>writer/write_scene@v2</td>"));
}
