//! `prompt generate`, `cache`, `doctor`, config and environment precedence.

use serde_json::Value;

use crate::support::{FakeOllama, Sandbox, closed_url, root};

fn chapter_vars() -> String {
    root().join("examples/chapter1.yaml").display().to_string()
}

/// A template with a tool: the tool reaches the server, and the reply's call comes back in
/// `--json` as `tool_calls` (streamed and whole), and as a line of plain output.
#[test]
fn a_reply_that_calls_a_tool_shows_its_calls() {
    let server = FakeOllama::start();
    let sb = Sandbox::new();
    let base = [
        "generate",
        "editor/check_continuity",
        "--var",
        "chapter_number=4",
        "--var",
        "story_title=The Glass Tower",
        "--var",
        "draft=Mira woke up.",
        "--provider",
        "ollama",
        "--base-url",
        &server.url,
        "--no-cache",
    ];
    for extra in [&["--json"][..], &["--json", "--no-stream"][..]] {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        let out = sb.run(&args).json();
        assert_eq!(
            out["tool_calls"],
            serde_json::json!([{"id": "call_0", "name": "lookup_character",
                                "arguments": {"name": "Mira"}}]),
            "{extra:?}: {out}"
        );
        assert_eq!(out["response"], "");
        let body = server.last_body().unwrap();
        assert_eq!(body["tools"][0]["function"]["name"], "lookup_character");
        assert_eq!(body["stream"], extra.len() == 1);
    }
    let plain = sb.run(&base);
    let text = plain.ok();
    assert!(
        text.contains(r#"tool call call_0: lookup_character {"name":"Mira"}"#),
        "{text}"
    );
}

#[test]
fn generate_against_fake_ollama_then_from_cache() {
    let server = FakeOllama::start();
    let sb = Sandbox::new();
    let vars = chapter_vars();
    let args = [
        "generate",
        "writer/write_chapter",
        "--vars",
        &vars,
        "--provider",
        "ollama",
        "--base-url",
        &server.url,
        "--json",
    ];
    let first = sb.run(&args).json();
    assert_eq!(server.chats(), 1);
    assert_eq!(first["cache_hit"], false);
    assert_eq!(first["model"], "qwen3:30b");
    assert_eq!(first["provider"], "ollama");
    assert_eq!(first["tokens_prompt"], 120);
    assert_eq!(first["tokens_completion"], 640);
    assert_eq!(first["retry_count"], 0);
    assert_eq!(first["version"], 1);
    assert!(first["latency_ms"].as_f64().unwrap() >= 0.0);
    assert!(
        first["response"]
            .as_str()
            .unwrap()
            .starts_with("FAKE OLLAMA REPLY")
    );
    let body = server.last_body().unwrap();
    assert_eq!(body["model"], "qwen3:30b");
    assert_eq!(body["stream"], true);
    let user = body["messages"].as_array().unwrap().last().unwrap()["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(user.contains("The Awakening"), "{user}");

    // The same call again: served from the cache, the server is not called.
    let second = sb.run(&args).json();
    assert_eq!(server.chats(), 1);
    assert_eq!(second["cache_hit"], true);
    assert_eq!(second["response"], first["response"]);
    assert_eq!(second["cache_key"], first["cache_key"]);

    // --no-cache goes to the server again.
    let mut no_cache = args.to_vec();
    no_cache.push("--no-cache");
    let third = sb.run(&no_cache).json();
    assert_eq!(third["cache_hit"], false);
    assert_eq!(server.chats(), 2);

    // Metrics saw three calls, one of them a cache hit.
    let stats = sb.run(&["metrics", "agent", "writer", "--json"]).json();
    assert_eq!(stats["total_calls"], 3);
    assert_eq!(stats["successful_calls"], 3);
    let rate = stats["cache_hit_rate"].as_f64().unwrap();
    assert!((rate - 1.0 / 3.0).abs() < 1e-6, "{rate}");
    for key in [
        "success_rate",
        "avg_latency_ms",
        "p95_latency_ms",
        "error_rate",
        "total_tokens_used",
    ] {
        assert!(stats.get(key).is_some(), "missing {key}: {stats}");
    }
    let lines: usize = std::fs::read_dir(sb.path().join("output/metrics"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .map(|t| {
            t.lines()
                .filter(|l| l.contains("\"cache_hit\":true"))
                .count()
        })
        .sum();
    assert_eq!(lines, 1, "one metrics record with cache_hit true");

    // The cache holds one entry, on disk (a new process reads nothing into memory until asked).
    let cache = sb.run(&["cache", "stats", "--json"]).json();
    assert_eq!(
        (&cache["size"], &cache["disk_entries"]),
        (&serde_json::json!(0), &serde_json::json!(1))
    );
    assert!(
        cache["disk_bytes"].as_u64().is_some_and(|b| b > 0),
        "{cache}"
    );
    let cleared = sb.run(&["cache", "clear", "--json"]).json();
    assert_eq!(cleared["removed"], 1);
    let cache = sb.run(&["cache", "stats", "--json"]).json();
    assert_eq!(
        (&cache["size"], &cache["disk_entries"]),
        (&serde_json::json!(0), &serde_json::json!(0))
    );
    let pruned = sb.run(&["cache", "prune", "--json"]).json();
    assert_eq!(pruned["removed"], 0);
}

#[test]
fn readme_command_runs_offline_with_echo() {
    let sb = Sandbox::new();
    let vars = chapter_vars();
    let out = sb.run(&[
        "generate",
        "writer/write_chapter",
        "--vars",
        &vars,
        "--provider",
        "echo",
    ]);
    let text = out.ok();
    assert!(text.starts_with("[echo]"), "{text}");
    assert!(text.chars().count() >= 1000, "echo honours min_length");
    assert!(out.stderr.contains("cache miss"), "{}", out.stderr);
    let table = sb.run(&["metrics", "agent", "writer"]);
    let text = table.ok();
    let calls = text.lines().find(|l| l.starts_with("calls ")).unwrap();
    assert!(calls.trim_end().ends_with(" 1"), "{calls}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("success rate") && l.ends_with("100.0%")),
        "{text}"
    );
}

#[test]
fn json_output_is_only_json() {
    let sb = Sandbox::new();
    let vars = chapter_vars();
    let out = sb.run(&[
        "generate",
        "writer/write_chapter",
        "--vars",
        &vars,
        "--provider",
        "echo",
        "--json",
        "-v",
    ]);
    let v: Value = out.json();
    assert!(v.is_object());
}

#[test]
fn config_file_env_and_flag_precedence() {
    let sb = Sandbox::new();
    let vars = chapter_vars();
    sb.write(
        "prompt.toml",
        "provider = \"echo\"\nmodel = \"from-config\"\n",
    );
    let gen_ = [
        "generate",
        "writer/write_chapter",
        "--vars",
        &vars,
        "--json",
    ];
    // config file: provider and model
    let v = sb.run(&gen_).json();
    assert_eq!(v["provider"], "echo");
    assert_eq!(v["model"], "from-config");
    // env over config
    let v = sb.run_env(&gen_, &[("PROMPT_MODEL", "from-env")]).json();
    assert_eq!(v["model"], "from-env");
    // flag over env
    let mut with_flag = gen_.to_vec();
    with_flag.extend(["--model", "from-flag"]);
    let v = sb
        .run_env(&with_flag, &[("PROMPT_MODEL", "from-env")])
        .json();
    assert_eq!(v["model"], "from-flag");
    // a bad provider in the environment beats the config file, and is a usage error
    let out = sb.run_env(&gen_, &[("PROMPT_PROVIDER", "gpt")]);
    crate::support::assert_error(&out, 2, "unknown provider `gpt`");
    // --config FILE elsewhere; relative paths are relative to it
    sb.write(
        "conf/other.toml",
        "provider = \"echo\"\nmetrics_dir = \"m\"\n",
    );
    let out = sb.run(&[
        "--config",
        "conf/other.toml",
        "generate",
        "writer/write_chapter",
        "--vars",
        &vars,
    ]);
    out.ok();
    assert!(
        sb.path().join("conf/m").is_dir(),
        "metrics_dir relative to the config file"
    );
}

#[test]
fn doctor_reports_each_check() {
    let server = FakeOllama::start();
    let sb = Sandbox::new();
    let out = sb.run(&["doctor", "--provider", "ollama", "--base-url", &server.url]);
    let text = out.ok();
    for check in [
        "config",
        "templates",
        "cache",
        "metrics",
        "provider",
        "model",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("✓") && l.contains(check)),
            "no ✓ {check}:\n{text}"
        );
    }
    assert!(text.contains("qwen3:30b is available"), "{text}");

    let missing = sb.run(&[
        "doctor",
        "--provider",
        "ollama",
        "--base-url",
        &server.url,
        "--model",
        "mistral:7b",
    ]);
    assert_eq!(missing.code, 1);
    let line = missing.stdout.lines().find(|l| l.starts_with("✗")).unwrap();
    assert!(
        line.contains("mistral:7b") && line.contains("ollama pull mistral:7b"),
        "{line}"
    );

    let down = sb.run(&[
        "doctor",
        "--provider",
        "ollama",
        "--base-url",
        &closed_url(),
    ]);
    assert_eq!(down.code, 1);
    let line = down.stdout.lines().find(|l| l.starts_with("✗")).unwrap();
    assert!(line.contains("provider") && line.contains("fix:"), "{line}");

    let none = sb.run(&["doctor"]);
    assert_eq!(none.code, 1);
    assert!(
        none.stdout
            .lines()
            .any(|l| l.starts_with("✗") && l.contains("no provider given"))
    );

    let json = sb.run(&["doctor", "--provider", "echo", "--json"]).json();
    assert_eq!(json["ok"], true);
    assert!(
        json["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["ok"] == true)
    );
}
