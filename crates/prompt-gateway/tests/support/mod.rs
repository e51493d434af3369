//! Test doubles: a fake OpenAI-compatible upstream over real HTTP on 127.0.0.1 (axum), a
//! gateway in front of it, and an in-memory metrics sink.
//!
//! The fake's answer depends on the last user message: `TOOL` asks for the `weather` tool,
//! `SLOW` streams one piece and then waits, or takes a minute over a whole answer (to see a
//! client go away or a timeout end the call), `WAIT` answers after a short pause (to overlap
//! identical requests), `RATE` is HTTP 429 and `BOOM` HTTP 500; anything else gets a fixed
//! reply, streamed in three pieces or whole.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use parking_lot::Mutex;
use prompt_agent::{ApiKey, OpenAiProvider, PromptSystem};
use prompt_gateway::{GatewayConfig, router};
use prompt_metrics::{MetricsError, MetricsSink, PromptMetrics};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub const REPLY: &str = "Hello from the fake upstream.";
/// The reasoning the fake upstream writes inline (`<think>…</think>`) when asked to THINK.
pub const THOUGHT: &str = "Plan the answer.";

#[derive(Debug, Default)]
pub struct Upstream {
    pub calls: AtomicUsize,
    pub gone: AtomicUsize,
    pub bodies: Mutex<Vec<Value>>,
    pub auth: Mutex<Vec<Option<String>>>,
}

/// A running fake upstream.
#[derive(Debug)]
pub struct FakeUpstream {
    pub base_url: String,
    pub state: Arc<Upstream>,
    task: JoinHandle<()>,
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeUpstream {
    pub async fn start() -> Self {
        let state = Arc::new(Upstream::default());
        let app = Router::new()
            .route("/v1/chat/completions", post(completions))
            .route("/v1/models", get(models))
            .layer(axum::extract::DefaultBodyLimit::disable())
            .with_state(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            base_url: format!("http://{addr}"),
            state,
            task,
        }
    }

    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }
}

async fn models() -> Response {
    axum::Json(json!({"object": "list", "data": [{"id": "fake-model", "object": "model"}]}))
        .into_response()
}

/// Counts a stream the gateway stopped reading before its end.
struct GoneGuard(Arc<Upstream>, bool);

impl GoneGuard {
    fn finish(&mut self) {
        self.1 = true;
    }
}

impl Drop for GoneGuard {
    fn drop(&mut self) {
        if !self.1 {
            self.0.gone.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn sse(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

async fn completions(
    State(state): State<Arc<Upstream>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.calls.fetch_add(1, Ordering::SeqCst);
    let body: Value = serde_json::from_slice(&body).expect("json body");
    state.auth.lock().push(
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    );
    state.bodies.lock().push(body.clone());
    let last = body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_owned();
    let model = body["model"].as_str().unwrap_or("fake-model").to_owned();
    let stream = body["stream"].as_bool().unwrap_or(false);
    if last.contains("RATE") {
        return (
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            axum::Json(
                json!({"error": {"message": "slow down", "type": "rate_limit_error",
                                         "code": "rate_limit_exceeded"}}),
            ),
        )
            .into_response();
    }
    if last.contains("BOOM") {
        return (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({"error": {"message": "upstream exploded"}})),
        )
            .into_response();
    }
    if last.contains("WAIT") {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let tool = last.contains("TOOL");
    // A model that writes its reasoning inline, as `<think>…</think>` in the text.
    let think = last.contains("THINK");
    let usage = json!({"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18});
    let slow = last.contains("SLOW");
    if !stream {
        if slow {
            // A whole answer that takes a minute: dropping this handler before then (the
            // gateway let go of the call) counts as gone.
            let mut guard = GoneGuard(state.clone(), false);
            tokio::time::sleep(Duration::from_secs(60)).await;
            guard.finish();
        }
        let message = if tool {
            json!({"role": "assistant", "content": null, "tool_calls": [{
                "id": "call_1", "type": "function",
                "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}}]})
        } else if think {
            json!({"role": "assistant", "content": format!("<think>{THOUGHT}</think>\n\n{REPLY}")})
        } else {
            json!({"role": "assistant", "content": REPLY})
        };
        return axum::Json(json!({
            "id": "up-1", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": message,
                         "finish_reason": if tool { "tool_calls" } else { "stop" }}],
            "usage": usage,
        }))
        .into_response();
    }
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "up-1", "object": "chat.completion.chunk", "created": 1, "model": model,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let mut frames = vec![sse(&chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    ))];
    if tool {
        frames.push(sse(&chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                   "function": {"name": "weather", "arguments": "{\"city\":"}}]}),
            Value::Null,
        )));
        frames.push(sse(&chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Oslo\"}"}}]}),
            Value::Null,
        )));
        frames.push(sse(&chunk(json!({}), json!("tool_calls"))));
    } else if think {
        for piece in [
            "<thi",
            "nk>Plan the",
            " answer.</think>\n",
            "\nHello from the ",
            "fake upstream.",
        ] {
            frames.push(sse(&chunk(json!({"content": piece}), Value::Null)));
        }
        frames.push(sse(&chunk(json!({}), json!("stop"))));
    } else {
        for piece in ["Hello ", "from the ", "fake upstream."] {
            frames.push(sse(&chunk(json!({"content": piece}), Value::Null)));
        }
        frames.push(sse(&chunk(json!({}), json!("stop"))));
    }
    let mut tail = json!({"id": "up-1", "object": "chat.completion.chunk", "created": 1,
                          "model": model, "choices": []});
    tail["usage"] = usage;
    frames.push(sse(&tail));
    frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
    let guard = GoneGuard(state.clone(), false);
    let stream = futures_util::stream::unfold(
        (frames.into_iter(), guard, 0usize),
        move |(mut frames, mut guard, n)| async move {
            if slow && n == 2 {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            match frames.next() {
                Some(frame) => Some((Ok::<_, Infallible>(frame), (frames, guard, n + 1))),
                None => {
                    guard.finish();
                    None
                }
            }
        },
    );
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from_stream(stream))
        .expect("response")
}

/// Metrics records kept in memory.
#[derive(Debug, Default)]
pub struct MemorySink(pub Mutex<Vec<PromptMetrics>>);

impl MetricsSink for MemorySink {
    fn record(&self, record: PromptMetrics) -> Result<(), MetricsError> {
        self.0.lock().push(record);
        Ok(())
    }

    fn flush(&self) -> Result<(), MetricsError> {
        Ok(())
    }
}

pub const TEMPLATE: &str = r#"version: 1
agent: writer
task: greet
model: { name: "template-model", temperature: 0.3 }
system_prompt: You are the Writer.
user_prompt_template: Greet {{ name }} warmly.
variables:
  name: "string - Who to greet"
validation: { min_length: 5 }
"#;

/// A gateway in front of a fake upstream, with a memory cache and metrics.
pub struct Harness {
    pub upstream: FakeUpstream,
    pub url: String,
    pub metrics: Arc<MemorySink>,
    pub system: PromptSystem,
    pub client: reqwest::Client,
    _templates: tempfile::TempDir,
    _cache: tempfile::TempDir,
    task: JoinHandle<()>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Harness {
    pub async fn start(config: GatewayConfig) -> Self {
        Self::start_with(config, 1).await
    }

    /// With this many attempts per call.
    pub async fn start_with(config: GatewayConfig, attempts: u32) -> Self {
        let upstream = FakeUpstream::start().await;
        let templates = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(templates.path().join("writer")).expect("mkdir");
        std::fs::write(templates.path().join("writer/greet_v1.yaml"), TEMPLATE).expect("write");
        let cache_dir = tempfile::tempdir().expect("tempdir");
        let cache =
            prompt_cache::ResponseCache::open(prompt_cache::CacheConfig::new(cache_dir.path()))
                .expect("cache");
        let metrics = Arc::new(MemorySink::default());
        let provider =
            OpenAiProvider::new(&upstream.base_url, ApiKey::None, Duration::from_secs(30))
                .expect("provider");
        let system = PromptSystem::builder()
            .templates_dir(templates.path())
            .provider(Arc::new(provider))
            .cache(Arc::new(cache))
            .metrics(metrics.clone())
            .max_attempts(attempts)
            .build()
            .expect("system");
        let app = router(system.clone(), config);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            upstream,
            url: format!("http://{addr}"),
            metrics,
            system,
            client: reqwest::Client::new(),
            _templates: templates,
            _cache: cache_dir,
            task,
        }
    }

    /// A GET of `path` (`/health`, `/v1/models`, ...) on the gateway.
    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(format!("{}{path}", self.url))
    }

    pub fn post(&self, body: &Value) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}/v1/chat/completions", self.url))
            .json(body)
    }

    pub fn records(&self) -> Vec<PromptMetrics> {
        self.metrics.0.lock().clone()
    }
}

pub fn chat(content: &str) -> Value {
    json!({"model": "fake-model", "messages": [{"role": "user", "content": content}]})
}

/// The `data:` payloads of an SSE body, `[DONE]` included.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|frame| frame.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}
