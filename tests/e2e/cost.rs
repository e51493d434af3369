//! Cost, tags, budgets and OpenTelemetry spans of the `prompt` binary: real processes sharing
//! one metrics directory, a fake Ollama server, and a loopback OTLP/HTTP receiver that decodes
//! what the exporter sends with the protocol's own protobuf messages.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use serde_json::Value;

use crate::support::{FakeOllama, Sandbox, assert_error, closed_url, root};

/// The fake server reports 120 prompt and 640 completion tokens per call; at these prices a
/// call costs 640 × 1000 / 1e6 = $0.64, and writer/write_chapter's worst case (max_tokens
/// 6000, the prompt free) is $6.00.
const PRICES: &str = "[prices.\"qwen3:*\"]\ninput = 0.0\noutput = 1000.0\n";
const CALL_COST: f64 = 0.64;

fn chapter_vars() -> String {
    root().join("examples/chapter1.yaml").display().to_string()
}

fn generate_args<'a>(server: &'a FakeOllama, vars: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "generate",
        "writer/write_chapter",
        "--vars",
        vars,
        "--provider",
        "ollama",
        "--base-url",
        &server.url,
        "--prices",
        "prices.toml",
        "--json",
    ];
    args.extend_from_slice(extra);
    args
}

fn close(v: &Value, want: f64) -> bool {
    v.as_f64().is_some_and(|x| (x - want).abs() < 1e-9)
}

#[test]
fn a_daily_budget_is_shared_by_two_processes_on_one_metrics_directory() {
    let server = FakeOllama::start();
    let sb = Sandbox::new();
    sb.write("prices.toml", PRICES);
    sb.write(
        "prompt.toml",
        "metrics_dir = \"shared-metrics\"\n[budget]\ndaily_usd = 6.5\n",
    );
    let vars = chapter_vars();
    // The first process: nothing spent, a worst case of $6.00 fits under $6.50.
    let first = sb
        .run(&generate_args(
            &server,
            &vars,
            &["--var", "chapter_number=1"],
        ))
        .json();
    assert!(close(&first["cost_usd"], CALL_COST), "{first}");
    // A second process on the same directory sees the $0.64 and refuses the next call.
    let second = sb.run(&generate_args(
        &server,
        &vars,
        &["--var", "chapter_number=2"],
    ));
    assert_error(&second, 1, "budget.daily_usd");
    assert!(second.stderr.contains("$6.5000"), "{}", second.stderr);
    assert!(
        second.stderr.contains("$0.6400 already spent"),
        "{}",
        second.stderr
    );
    assert_eq!(
        server.chats(),
        1,
        "the refused call never reached the server"
    );

    // The refusal left its record; the spend shows against the limit.
    let budget = sb.run(&["metrics", "budget", "--json"]).json();
    assert!(close(&budget["spent_usd"], CALL_COST), "{budget}");
    assert_eq!(budget["limits"][0]["limit"], "budget.daily_usd");
    assert!(close(&budget["limits"][0]["limit_usd"], 6.5), "{budget}");
    assert!(
        close(&budget["limits"][0]["remaining_usd"], 6.5 - CALL_COST),
        "{budget}"
    );
    let writer = sb.run(&["metrics", "agent", "writer", "--json"]).json();
    assert_eq!(writer["total_calls"], 2);
    assert_eq!(writer["error_rate"], 0.5);
    let text = sb.run(&["metrics", "budget"]).ok().to_owned();
    assert!(text.contains("budget.daily_usd"), "{text}");
    assert!(text.contains("$6.50"), "{text}");

    // --budget-usd: the command's own total, below one call's worst case.
    let sb = Sandbox::new();
    sb.write("prices.toml", PRICES);
    let own = sb.run(&generate_args(
        &server,
        &vars,
        &["--var", "chapter_number=3", "--budget-usd", "1"],
    ));
    assert_error(&own, 1, "--budget-usd");
}

#[test]
fn tags_group_calls_and_a_hit_records_what_it_saved() {
    let server = FakeOllama::start();
    let sb = Sandbox::new();
    sb.write("prices.toml", PRICES);
    let vars = chapter_vars();
    let first = sb
        .run(&generate_args(
            &server,
            &vars,
            &["--tag", "eval", "--tag", "nightly"],
        ))
        .json();
    assert_eq!(first["cache_hit"], false);
    // Another tag, the same request: a hit that cost nothing and saved a call.
    let second = sb
        .run(&generate_args(&server, &vars, &["--tag", "eval"]))
        .json();
    assert_eq!(second["cache_hit"], true);
    assert_eq!(second["cost_usd"], 0.0);
    assert!(close(&second["saved_usd"], CALL_COST), "{second}");
    assert_eq!(server.chats(), 1);

    let tags = sb.run(&["metrics", "tags", "--json"]).json();
    let row = |tag: &str| {
        tags.as_array()
            .unwrap()
            .iter()
            .find(|r| r["tag"] == tag)
            .unwrap_or_else(|| panic!("no row {tag} in {tags}"))
            .clone()
    };
    assert_eq!(row("eval")["total_calls"], 2);
    assert!(close(&row("eval")["total_cost_usd"], CALL_COST));
    assert!(close(&row("eval")["saved_usd"], CALL_COST));
    assert_eq!(row("nightly")["total_calls"], 1);
    let models = sb.run(&["metrics", "models", "--json"]).json();
    assert!(close(&models[0]["total_cost_usd"], CALL_COST), "{models}");

    // A batch job's tags join the command's.
    sb.write(
        "jobs.jsonl",
        r#"{"template": "writer/write_chapter", "vars": {"chapter_number": 9, "chapter_title": "T", "story_title": "S", "genre": "g", "outline": "o"}, "tags": ["job-tag"]}
"#,
    );
    let batch = sb.run(&[
        "batch",
        "jobs.jsonl",
        "--out",
        "out.jsonl",
        "--provider",
        "ollama",
        "--base-url",
        &server.url,
        "--tag",
        "batch",
    ]);
    batch.ok();
    let tags = sb.run(&["metrics", "tags", "--json"]).json();
    let names: Vec<&str> = tags
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["tag"].as_str())
        .collect();
    assert!(
        names.contains(&"job-tag") && names.contains(&"batch"),
        "{tags}"
    );

    // A bad tag is a usage error naming it.
    let bad = sb.run(&generate_args(&server, &vars, &["--tag", "a,b"]));
    assert_error(&bad, 2, "bad tag");
}

/// The bodies an OTLP receiver got, with their content types.
type Received = Arc<Mutex<Vec<(String, Bytes)>>>;

/// A loopback OTLP/HTTP receiver: keeps every `POST /v1/traces` body and answers 200.
struct Collector {
    url: String,
    bodies: Received,
}

impl Collector {
    fn start() -> Self {
        let bodies: Received = Arc::default();
        let app = axum::Router::new()
            .route(
                "/v1/traces",
                post(
                    |State(bodies): State<Received>, headers: HeaderMap, body: Bytes| async move {
                        let kind = headers
                            .get("content-type")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        bodies.lock().unwrap().push((kind, body));
                        (
                            [("content-type", "application/x-protobuf")],
                            Vec::<u8>::new(),
                        )
                    },
                ),
            )
            .with_state(bodies.clone());
        let url = crate::support::serve_on_loopback(app);
        Self { url, bodies }
    }

    /// Every span received: its name, its attributes as text, and the service name.
    fn spans(&self) -> Vec<(String, HashMap<String, String>, String)> {
        let mut out = Vec::new();
        for (kind, body) in self.bodies.lock().unwrap().iter() {
            assert_eq!(kind, "application/x-protobuf");
            let request = ExportTraceServiceRequest::decode(body.as_ref()).expect("OTLP protobuf");
            for rs in request.resource_spans {
                let service = rs
                    .resource
                    .iter()
                    .flat_map(|r| &r.attributes)
                    .find(|a| a.key == "service.name")
                    .map(|a| text(a.value.as_ref().and_then(|v| v.value.as_ref())))
                    .unwrap_or_default();
                for ss in rs.scope_spans {
                    for span in ss.spans {
                        let attrs = span
                            .attributes
                            .iter()
                            .map(|a| {
                                (
                                    a.key.clone(),
                                    text(a.value.as_ref().and_then(|v| v.value.as_ref())),
                                )
                            })
                            .collect();
                        out.push((span.name, attrs, service.clone()));
                    }
                }
            }
        }
        out
    }
}

fn text(v: Option<&AnyValue>) -> String {
    match v {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    }
}

#[test]
fn generation_spans_reach_an_otlp_collector_with_genai_attributes() {
    let server = FakeOllama::start();
    let collector = Collector::start();
    let sb = Sandbox::new();
    sb.write("prices.toml", PRICES);
    let vars = chapter_vars();
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url.as_str()),
        ("OTEL_SERVICE_NAME", "story-app"),
    ];
    sb.run_env(&generate_args(&server, &vars, &["--tag", "eval"]), &env)
        .ok();
    // The same again, now a hit, with content capture on.
    sb.run_env(&generate_args(&server, &vars, &["--otel-content"]), &env)
        .ok();

    let spans = collector.spans();
    let chats: Vec<_> = spans
        .iter()
        .filter(|(name, _, _)| name == "chat qwen3:30b")
        .collect();
    assert_eq!(chats.len(), 2, "{spans:?}");
    let (_, miss, service) = chats[0];
    assert_eq!(service, "story-app");
    for (key, want) in [
        ("gen_ai.operation.name", "chat"),
        ("gen_ai.provider.name", "ollama"),
        ("gen_ai.request.model", "qwen3:30b"),
        ("gen_ai.request.max_tokens", "6000"),
        ("gen_ai.response.model", "qwen3:30b"),
        ("gen_ai.response.finish_reasons", "stop"),
        ("gen_ai.usage.input_tokens", "120"),
        ("gen_ai.usage.output_tokens", "640"),
        ("promptkit.agent", "writer"),
        ("promptkit.task", "write_chapter"),
        ("promptkit.template_version", "1"),
        ("promptkit.cache_hit", "false"),
        ("promptkit.retries", "0"),
        ("promptkit.cost_usd", "0.64"),
        ("promptkit.tags", "eval"),
    ] {
        assert_eq!(
            miss.get(key).map(String::as_str),
            Some(want),
            "{key} in {miss:?}"
        );
    }
    assert!(miss.contains_key("gen_ai.request.temperature"), "{miss:?}");
    // Content is not exported unless asked for.
    assert!(!miss.contains_key("gen_ai.input.messages"), "{miss:?}");
    let (_, hit, _) = chats[1];
    assert_eq!(
        hit.get("promptkit.cache_hit").map(String::as_str),
        Some("true")
    );
    assert_eq!(
        hit.get("promptkit.saved_usd").map(String::as_str),
        Some("0.64")
    );
    let input = hit.get("gen_ai.input.messages").expect("captured input");
    let input: Value = serde_json::from_str(input).expect("JSON messages");
    assert_eq!(input[0]["role"], "system");
    assert!(
        input[1]["parts"][0]["content"]
            .as_str()
            .is_some_and(|c| c.contains("Chapter 1")),
        "{input}"
    );
    let output: Value =
        serde_json::from_str(hit.get("gen_ai.output.messages").expect("captured output"))
            .expect("JSON messages");
    assert_eq!(output[0]["role"], "assistant");
}

#[test]
fn a_dead_collector_never_fails_a_call() {
    let server = FakeOllama::start();
    let sb = Sandbox::new();
    let vars = chapter_vars();
    let dead = closed_url();
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
    let mut child = sb.cmd(&args);
    child.env("OTEL_EXPORTER_OTLP_ENDPOINT", &dead);
    let out = crate::support::wait_within(
        child
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
        Duration::from_secs(60),
    );
    let json = out.json();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(json["cache_hit"], false);
    // Told once, not once per span, and the count of spans lost at exit.
    assert_eq!(
        out.stderr.matches("cannot export spans").count(),
        1,
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("1 span(s) could not be exported"),
        "{}",
        out.stderr
    );
}
