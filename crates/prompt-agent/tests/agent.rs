//! The plain agent over real HTTP: retries, validation, timeouts, the concurrency bound,
//! structured output, metrics for every call and GenAI tracing spans.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use prompt_agent::{
    Agent, ApiKey, GenerateOptions, OllamaProvider, OpenAiProvider, PromptSystem, Provider,
    RequestOptions, ResponseFormat,
};
use prompt_metrics::{JsonlStore, MetricsSink};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use support::{FakeServer, MemorySink, RawReply, RawServer, Reply, fast_builder, refused_url};

const LONG: &str = "A reply that is long enough to pass validation.";

fn ollama(url: &str, timeout: Duration) -> Arc<dyn Provider> {
    Arc::new(OllamaProvider::new(url, timeout).expect("provider"))
}

fn make_system(
    provider: Arc<dyn Provider>,
    metrics: Arc<MemorySink>,
) -> (PromptSystem, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let system = fast_builder(provider, dir.path())
        .metrics(metrics)
        .build()
        .expect("system");
    (system, dir)
}

/// What a scripted exchange must end in.
#[derive(Debug)]
enum Want {
    Ok {
        content: &'static str,
        retries: u32,
    },
    Err {
        kind: &'static str,
        requests: usize,
        text: &'static str,
    },
}

#[tokio::test]
async fn every_fault_gives_the_documented_retries_result_and_metrics_record() {
    let think_only = "<think>I should write something, but I will not.</think>";
    let cases: Vec<(&str, Vec<Reply>, Want)> = vec![
        (
            "ok at once",
            vec![Reply::ollama_ok(LONG)],
            Want::Ok {
                content: LONG,
                retries: 0,
            },
        ),
        (
            "500 twice then ok",
            vec![
                Reply::json(500, json!({"error": "boom"})),
                Reply::json(500, json!({"error": "boom"})),
                Reply::ollama_ok(LONG),
            ],
            Want::Ok {
                content: LONG,
                retries: 2,
            },
        ),
        (
            "500 every time",
            vec![Reply::json(500, json!({"error": "boom"})); 3],
            Want::Err {
                kind: "server_error",
                requests: 3,
                text: "HTTP 500",
            },
        ),
        (
            "429 with Retry-After then ok",
            vec![
                Reply::json(429, json!({"error": "busy"})).header("retry-after", "1"),
                Reply::ollama_ok(LONG),
            ],
            Want::Ok {
                content: LONG,
                retries: 1,
            },
        ),
        (
            "404 model not found fails at once",
            vec![Reply::ollama_model_not_found("llama3.2")],
            Want::Err {
                kind: "model_not_found",
                requests: 1,
                text: "ollama pull",
            },
        ),
        (
            "400 fails at once",
            vec![Reply::json(400, json!({"error": "invalid option num_ctx"}))],
            Want::Err {
                kind: "bad_request",
                requests: 1,
                text: "invalid option num_ctx",
            },
        ),
        (
            "invalid JSON then ok",
            vec![
                Reply::raw(200, "<html>proxy error</html>"),
                Reply::ollama_ok(LONG),
            ],
            Want::Ok {
                content: LONG,
                retries: 1,
            },
        ),
        (
            "truncated JSON then ok",
            vec![
                Reply::raw(200, "{\"message\":{\"content\":\"A reply th"),
                Reply::ollama_ok(LONG),
            ],
            Want::Ok {
                content: LONG,
                retries: 1,
            },
        ),
        (
            "think-only replies every time",
            vec![Reply::ollama_ok(think_only); 3],
            Want::Err {
                kind: "validation",
                requests: 3,
                text: "fewer than min_length 10",
            },
        ),
        (
            "too short then right",
            vec![Reply::ollama_ok("Hi."), Reply::ollama_ok(LONG)],
            Want::Ok {
                content: LONG,
                retries: 1,
            },
        ),
        (
            "think block then answer",
            vec![Reply::ollama_ok(&format!("<think>plan</think>\n\n{LONG}"))],
            Want::Ok {
                content: LONG,
                retries: 0,
            },
        ),
    ];
    for (name, script, want) in cases {
        let server = FakeServer::start(Reply::ollama_ok("default reply, never expected")).await;
        server.push(script);
        let sink = MemorySink::new();
        let (system, _dir) = make_system(
            ollama(&server.base_url, Duration::from_secs(5)),
            sink.clone(),
        );
        let agent = system.agent("writer", "Writer", "You write.");
        let result = agent
            .generate("Write.", None, &GenerateOptions::default())
            .await;

        let records = sink.records();
        assert_eq!(records.len(), 1, "{name}: one metrics record per call");
        let record = &records[0];
        assert_eq!(record.agent, "writer", "{name}");
        assert_eq!(record.task, "generate", "{name}");
        assert_eq!(record.provider.as_deref(), Some("ollama"), "{name}");
        assert!(!record.cache_hit, "{name}");
        match want {
            Want::Ok { content, retries } => {
                let reply = result.unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(reply.content, content, "{name}");
                assert_eq!(reply.retry_count, retries, "{name}");
                assert_eq!(server.requests(), retries as usize + 1, "{name}");
                assert_eq!(record.retry_count, retries, "{name}");
                assert!(record.validation_passed && record.error.is_none(), "{name}");
                assert_eq!(record.tokens_prompt, Some(12), "{name}");
                assert_eq!(record.tokens_completion, Some(34), "{name}");
                assert_eq!(
                    record.response_length,
                    content.chars().count() as u64,
                    "{name}"
                );
            }
            Want::Err {
                kind,
                requests,
                text,
            } => {
                let err = result.expect_err(name);
                assert_eq!(err.kind(), kind, "{name}: {err}");
                assert!(err.to_string().contains(text), "{name}: {err}");
                assert_eq!(server.requests(), requests, "{name}");
                assert_eq!(record.retry_count, requests as u32 - 1, "{name}");
                assert!(!record.validation_passed, "{name}");
                assert_eq!(
                    record.error.as_deref(),
                    Some(err.to_string().as_str()),
                    "{name}"
                );
            }
        }
    }
}

#[tokio::test]
async fn model_not_found_is_a_usage_error_and_quota_is_not_retried() {
    let server = FakeServer::start(Reply::ollama_model_not_found("nope:1b")).await;
    let sink = MemorySink::new();
    let (system, _dir) = make_system(
        ollama(&server.base_url, Duration::from_secs(5)),
        sink.clone(),
    );
    let options = GenerateOptions::with_request(RequestOptions {
        model: Some("nope:1b".into()),
        ..RequestOptions::default()
    });
    let err = system
        .agent("a", "r", "s")
        .generate("x", None, &options)
        .await
        .expect_err("404");
    assert!(err.is_usage_error(), "{err}");
    assert!(err.to_string().contains("\"nope:1b\""), "{err}");
    assert_eq!(sink.last().model, "nope:1b");

    let server = FakeServer::start(Reply::openai_error(
        429,
        "insufficient_quota",
        "You exceeded your current quota",
    ))
    .await;
    let provider = Arc::new(
        OpenAiProvider::new(&server.base_url, ApiKey::None, Duration::from_secs(5)).expect("p"),
    );
    let (system, _dir) = make_system(provider, sink.clone());
    let err = system
        .agent("a", "r", "s")
        .generate("x", None, &GenerateOptions::default())
        .await
        .expect_err("quota");
    assert_eq!(err.kind(), "quota_exhausted");
    assert!(!err.is_usage_error());
    assert_eq!(server.requests(), 1, "quota exhaustion is never retried");
    assert_eq!(sink.records().len(), 2);
}

#[tokio::test]
async fn slow_responses_time_out_per_attempt() {
    let server = FakeServer::start(Reply::ollama_ok(LONG).delayed(Duration::from_secs(10))).await;
    server.push([Reply::ollama_ok(LONG).delayed(Duration::from_secs(10))]);
    let sink = MemorySink::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let provider = ollama(&server.base_url, Duration::from_secs(10));
    let system = fast_builder(provider, dir.path())
        .request_timeout(Duration::from_millis(200))
        .metrics(sink.clone())
        .build()
        .expect("system");
    let agent = system.agent("a", "r", "s");

    // Every attempt is too slow: three attempts, then a timeout error.
    let err = agent
        .generate("x", None, &GenerateOptions::default())
        .await
        .expect_err("timeout");
    assert_eq!(err.kind(), "timeout", "{err}");
    assert_eq!(server.requests(), 3);
    assert_eq!(sink.last().retry_count, 2);
    assert!(
        sink.last()
            .error
            .as_deref()
            .is_some_and(|e| e.contains("within 0.2s")),
        "{:?}",
        sink.last().error
    );

    // Slow once, then fast.
    server.set_default(Reply::ollama_ok(LONG));
    server.push([Reply::ollama_ok(LONG).delayed(Duration::from_secs(10))]);
    let reply = agent
        .generate("x", None, &GenerateOptions::default())
        .await
        .expect("second attempt");
    assert_eq!(reply.retry_count, 1);
    assert_eq!(server.requests(), 5);
}

#[tokio::test]
async fn dropped_and_refused_connections_are_retried() {
    let ok = json!({ "model": "llama3.2", "message": { "role": "assistant", "content": LONG }, "done": true, "eval_count": 5 });
    let server = RawServer::start(vec![RawReply::Drop], RawReply::http_json(&ok)).await;
    let sink = MemorySink::new();
    let (system, _dir) = make_system(
        ollama(&server.base_url, Duration::from_secs(5)),
        sink.clone(),
    );
    let reply = system
        .agent("a", "r", "s")
        .generate("x", None, &GenerateOptions::default())
        .await
        .expect("retried");
    assert_eq!((reply.content.as_str(), reply.retry_count), (LONG, 1));
    assert_eq!(server.requests(), 2);

    let dropper = RawServer::start(vec![], RawReply::Drop).await;
    let (system, _dir) = make_system(
        ollama(&dropper.base_url, Duration::from_secs(5)),
        sink.clone(),
    );
    let err = system
        .agent("a", "r", "s")
        .generate("x", None, &GenerateOptions::default())
        .await
        .expect_err("drops");
    assert_eq!(err.kind(), "connection", "{err}");
    assert_eq!(dropper.requests(), 3);

    let (system, _dir) = make_system(
        ollama(&refused_url().await, Duration::from_secs(5)),
        sink.clone(),
    );
    let err = system
        .agent("a", "r", "s")
        .generate("x", None, &GenerateOptions::default())
        .await
        .expect_err("refused");
    assert_eq!(err.kind(), "connection", "{err}");
    assert!(err.to_string().contains("after 3 attempts"), "{err}");
    let records = sink.records();
    assert_eq!(records.len(), 3);
    assert_eq!(records[2].retry_count, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_bound_holds_under_200_concurrent_calls() {
    let server = FakeServer::start(Reply::ollama_ok(LONG).delayed(Duration::from_millis(5))).await;
    let sink = MemorySink::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let system = fast_builder(
        ollama(&server.base_url, Duration::from_secs(30)),
        dir.path(),
    )
    .concurrency(2)
    .request_timeout(Duration::from_secs(30))
    .metrics(sink.clone())
    .build()
    .expect("system");
    // Three different agents share the one limiter of their provider.
    let agents: Vec<Agent> = ["writer", "editor", "architect"]
        .iter()
        .map(|n| system.agent(n, n, "s"))
        .collect();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let agent = agents[i % agents.len()].clone();
        tasks.push(tokio::spawn(async move {
            agent
                .generate(&format!("prompt {i}"), None, &GenerateOptions::default())
                .await
        }));
    }
    for task in tasks {
        task.await.expect("join").expect("generate");
    }
    assert_eq!(server.requests(), 200);
    assert!(
        server.max_in_flight() <= 2,
        "max in flight {}",
        server.max_in_flight()
    );
    assert_eq!(
        server.max_in_flight(),
        2,
        "the two permits were used in parallel"
    );
    assert_eq!(sink.records().len(), 200);
    assert_eq!(
        system.limiter().available_permits(),
        2,
        "every permit returned"
    );
}

#[tokio::test]
async fn messages_context_and_quirks_reach_the_server() {
    let server = FakeServer::start(Reply::ollama_ok(LONG)).await;
    let sink = MemorySink::new();
    let (system, _dir) = make_system(
        ollama(&server.base_url, Duration::from_secs(5)),
        sink.clone(),
    );
    let agent = system
        .agent("writer", "Writer", "You are the Writer.")
        .with_model("qwen3:30b")
        .with_temperature(0.9);
    let options = GenerateOptions::with_request(RequestOptions {
        max_tokens: Some(50),
        seed: Some(7),
        ..RequestOptions::default()
    });
    agent
        .generate("Write chapter 1.", Some("A dark forest."), &options)
        .await
        .expect("ok");
    assert_eq!(
        server.last_body(),
        json!({
            "model": "qwen3:30b",
            "messages": [
                { "role": "system", "content": "You are the Writer." },
                { "role": "system", "content": "CURRENT STORY CONTEXT:\nA dark forest." },
                { "role": "user", "content": "Write chapter 1. /no_think" }
            ],
            "stream": true,
            "options": { "temperature": 0.9, "num_predict": 50, "seed": 7 }
        })
    );
    let record = sink.last();
    assert_eq!(
        (record.model.as_str(), record.temperature),
        ("qwen3:8b", 0.9),
        "model as the server reports it"
    );
    assert_eq!(record.prompt_hash.len(), 16);
}

#[derive(Debug, Deserialize, JsonSchema, PartialEq)]
struct Character {
    name: String,
    age: u32,
}

#[tokio::test]
async fn structured_output_feeds_parse_errors_back() {
    let server = FakeServer::start(Reply::ollama_ok("{}")).await;
    server.push([
        Reply::ollama_ok("Sure! Here is the character: Ada, 36"),
        Reply::ollama_ok("<think>fix it</think>```json\n{\"name\": \"Ada\", \"age\": 36}\n```"),
    ]);
    let sink = MemorySink::new();
    let (system, _dir) = make_system(
        ollama(&server.base_url, Duration::from_secs(5)),
        sink.clone(),
    );
    let agent = system.agent("architect", "Architect", "You design characters.");
    let out = agent
        .generate_structured::<Character>(
            "Create one character.",
            None,
            &GenerateOptions::default(),
        )
        .await
        .expect("second reply parses");
    assert_eq!(
        out.value,
        Character {
            name: "Ada".into(),
            age: 36
        }
    );
    assert_eq!(out.reply.retry_count, 1);

    let bodies: Vec<_> = server.captured().into_iter().map(|c| c.body).collect();
    assert_eq!(bodies.len(), 2);
    let schema = &bodies[0]["format"];
    assert_eq!(schema["type"], "object");
    assert!(schema["properties"]["age"].is_object(), "{schema}");
    let second = bodies[1]["messages"].as_array().expect("messages");
    assert_eq!(second.len(), 4);
    assert_eq!(
        second[2],
        json!({ "role": "assistant", "content": "Sure! Here is the character: Ada, 36" })
    );
    let feedback = second[3]["content"].as_str().expect("feedback");
    assert!(
        feedback.starts_with("Your reply was not valid JSON for the schema: "),
        "{feedback}"
    );
    assert!(feedback.ends_with("Reply with JSON only."), "{feedback}");
    assert_eq!(sink.last().retry_count, 1);

    // Never valid: a Structured error after max_attempts, recorded.
    server.set_default(Reply::ollama_ok("{\"name\": \"Ada\"}"));
    let err = agent
        .generate_structured::<Character>("Create one.", None, &GenerateOptions::default())
        .await
        .expect_err("missing field");
    assert_eq!(err.kind(), "structured");
    assert!(
        err.to_string().contains("Character") && err.to_string().contains("age"),
        "{err}"
    );
    assert_eq!(server.requests(), 5);
    assert!(!sink.last().validation_passed);
}

#[tokio::test]
async fn openai_structured_output_uses_json_schema_response_format() {
    let server = FakeServer::start(Reply::openai_ok("{\"name\": \"Bo\", \"age\": 7}")).await;
    let provider = Arc::new(
        OpenAiProvider::new(&server.base_url, ApiKey::None, Duration::from_secs(5)).expect("p"),
    );
    let (system, _dir) = make_system(provider, MemorySink::new());
    let out = system
        .agent("a", "r", "s")
        .generate_structured::<Character>("x", None, &GenerateOptions::default())
        .await
        .expect("ok");
    assert_eq!(out.value.age, 7);
    let format = &server.last_body()["response_format"];
    assert_eq!(format["type"], "json_schema");
    assert_eq!(format["json_schema"]["name"], "Character");
    assert_eq!(format["json_schema"]["strict"], true);
}

#[tokio::test]
async fn a_real_jsonl_store_gets_every_call() {
    let server = FakeServer::start(Reply::ollama_ok(LONG)).await;
    server.push([Reply::ollama_model_not_found("llama3.2")]);
    let metrics_dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(JsonlStore::open(metrics_dir.path()).expect("store"));
    let dir = tempfile::tempdir().expect("tempdir");
    let system = fast_builder(ollama(&server.base_url, Duration::from_secs(5)), dir.path())
        .metrics(store.clone())
        .build()
        .expect("system");
    let agent = system.agent("editor", "Editor", "You edit.");
    let options = GenerateOptions {
        task: Some("edit_chapter".into()),
        ..GenerateOptions::default()
    };
    agent.generate("x", None, &options).await.expect_err("404");
    agent.generate("x", None, &options).await.expect("ok");
    system.flush().expect("flush");
    store.flush().expect("flush");

    let stats = store
        .task_stats("editor", "edit_chapter", 1)
        .expect("stats");
    assert_eq!(stats.total_calls, 2);
    assert_eq!(stats.successful_calls, 1);
    let mut errors = Vec::new();
    store
        .scan(1, |m| {
            if let Some(e) = &m.error {
                errors.push(e.clone());
            }
        })
        .expect("scan");
    assert_eq!(errors.len(), 1);
    assert!(errors[0].contains("not found"), "{errors:?}");
}

#[tokio::test]
async fn json_format_option_is_sent() {
    let server = FakeServer::start(Reply::ollama_ok("{\"ok\": true, \"pad\": 1}")).await;
    let (system, _dir) = make_system(
        ollama(&server.base_url, Duration::from_secs(5)),
        MemorySink::new(),
    );
    let options = GenerateOptions::with_request(RequestOptions {
        format: Some(ResponseFormat::Json),
        ..RequestOptions::default()
    });
    system
        .agent("a", "r", "s")
        .generate("x", None, &options)
        .await
        .expect("ok");
    assert_eq!(server.last_body()["format"], "json");
}

/// Captures span names and fields.
#[derive(Clone, Default)]
struct SpanCapture(Arc<Mutex<Vec<CapturedSpan>>>);

type CapturedSpan = (String, HashMap<String, String>);

struct FieldVisitor<'a>(&'a mut HashMap<String, String>);

impl tracing::field::Visit for FieldVisitor<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(
            field.name().to_owned(),
            format!("{value:?}").trim_matches('"').to_owned(),
        );
    }
}

impl<S> tracing_subscriber::Layer<S> for SpanCapture
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = HashMap::new();
        attrs.record(&mut FieldVisitor(&mut fields));
        fields.insert("__id".into(), id.into_u64().to_string());
        self.0
            .lock()
            .push((attrs.metadata().name().to_owned(), fields));
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut spans = self.0.lock();
        if let Some((_, fields)) = spans
            .iter_mut()
            .find(|(_, f)| f.get("__id") == Some(&id.into_u64().to_string()))
        {
            values.record(&mut FieldVisitor(fields));
        }
    }
}

#[tokio::test]
async fn spans_carry_opentelemetry_genai_attributes() {
    use tracing_subscriber::layer::SubscriberExt;
    let capture = SpanCapture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = FakeServer::start(Reply::ollama_ok(LONG)).await;
    let (system, _dir) = make_system(
        ollama(&server.base_url, Duration::from_secs(5)),
        MemorySink::new(),
    );
    system
        .agent("writer", "Writer", "s")
        .generate("x", None, &GenerateOptions::default())
        .await
        .expect("ok");

    let spans = capture.0.lock().clone();
    let (_, chat) = spans
        .iter()
        .find(|(name, _)| name == "chat")
        .expect("a chat span");
    for (key, value) in [
        ("gen_ai.operation.name", "chat"),
        ("gen_ai.provider.name", "ollama"),
        ("gen_ai.agent.name", "writer"),
        ("gen_ai.request.model", "llama3.2"),
        ("gen_ai.response.model", "qwen3:8b"),
        ("gen_ai.usage.input_tokens", "12"),
        ("gen_ai.usage.output_tokens", "34"),
    ] {
        assert_eq!(
            chat.get(key).map(String::as_str),
            Some(value),
            "{key} in {chat:?}"
        );
    }
}
