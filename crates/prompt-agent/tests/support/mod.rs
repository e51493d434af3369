//! Test doubles shared by the integration tests: a scriptable fake LLM server over real HTTP on
//! 127.0.0.1 (axum), a raw TCP server for faults HTTP servers will not produce (dropped
//! connections, truncated bodies), and an in-memory metrics sink.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// One scripted HTTP answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub headers: Vec<(String, String)>,
    pub delay: Duration,
}

impl Reply {
    pub fn json(status: u16, body: Value) -> Self {
        Self::raw(status, body.to_string())
    }

    pub fn raw(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            body: body.into(),
            headers: Vec::new(),
            delay: Duration::ZERO,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// A successful Ollama `/api/chat` answer.
    pub fn ollama_ok(content: &str) -> Self {
        Self::json(
            200,
            json!({
                "model": "qwen3:8b",
                "created_at": "2026-01-20T10:00:00Z",
                "message": { "role": "assistant", "content": content },
                "done": true,
                "done_reason": "stop",
                "total_duration": 1000,
                "prompt_eval_count": 12,
                "eval_count": 34
            }),
        )
    }

    /// Ollama's answer for a model it does not have.
    pub fn ollama_model_not_found(model: &str) -> Self {
        Self::json(
            404,
            json!({ "error": format!("model \"{model}\" not found, try pulling it first") }),
        )
    }

    /// A successful OpenAI `/v1/chat/completions` answer.
    pub fn openai_ok(content: &str) -> Self {
        Self::json(
            200,
            json!({
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1_700_000_000,
                "model": "gpt-test",
                "choices": [{
                    "index": 0,
                    "message": { "role": "assistant", "content": content },
                    "finish_reason": "stop"
                }],
                "usage": { "prompt_tokens": 21, "completion_tokens": 43, "total_tokens": 64 }
            }),
        )
    }

    /// An OpenAI-style error body.
    pub fn openai_error(status: u16, code: &str, message: &str) -> Self {
        Self::json(
            status,
            json!({ "error": { "message": message, "type": code, "param": null, "code": code } }),
        )
    }
}

/// One request the fake server received.
#[derive(Debug, Clone)]
pub struct Captured {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Captured {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug)]
struct Shared {
    script: Mutex<VecDeque<Reply>>,
    default: Mutex<Reply>,
    requests: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    captured: Mutex<Vec<Captured>>,
}

struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    fn enter(shared: &'a Shared) -> Self {
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(shared)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A fake LLM server (Ollama and OpenAI paths alike) that answers from a script, then with a
/// default reply, and records everything it receives.
#[derive(Debug)]
pub struct FakeServer {
    pub base_url: String,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl FakeServer {
    pub async fn start(default: Reply) -> Self {
        let shared = Arc::new(Shared {
            script: Mutex::new(VecDeque::new()),
            default: Mutex::new(default),
            requests: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            captured: Mutex::new(Vec::new()),
        });
        let router = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            base_url: format!("http://{addr}"),
            shared,
            task,
        }
    }

    /// Queues replies, answered in order before the default.
    pub fn push(&self, replies: impl IntoIterator<Item = Reply>) {
        self.shared.script.lock().extend(replies);
    }

    pub fn set_default(&self, reply: Reply) {
        *self.shared.default.lock() = reply;
    }

    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    pub fn captured(&self) -> Vec<Captured> {
        self.shared.captured.lock().clone()
    }

    pub fn last_body(&self) -> Value {
        self.shared
            .captured
            .lock()
            .last()
            .map(|c| c.body.clone())
            .unwrap_or(Value::Null)
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let _guard = InFlight::enter(&shared);
    let text = String::from_utf8_lossy(&body).into_owned();
    shared.captured.lock().push(Captured {
        method: method.to_string(),
        path: uri.path().to_owned(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect(),
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
    });
    let reply = shared
        .script
        .lock()
        .pop_front()
        .unwrap_or_else(|| shared.default.lock().clone());
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut response = (
        StatusCode::from_u16(reply.status).expect("status"),
        [("content-type", "application/json")],
        reply.body,
    )
        .into_response();
    for (k, v) in reply.headers {
        response.headers_mut().insert(
            HeaderName::from_bytes(k.as_bytes()).expect("header name"),
            HeaderValue::from_str(&v).expect("header value"),
        );
    }
    response
}

/// What the raw TCP server does with one connection, after reading the request.
#[derive(Debug, Clone)]
pub enum RawReply {
    /// Close the socket without answering.
    Drop,
    /// Write these bytes, then close.
    Bytes(Vec<u8>),
}

impl RawReply {
    /// A complete HTTP/1.1 200 answer with a JSON body, then close.
    pub fn http_json(body: &Value) -> Self {
        let body = body.to_string();
        RawReply::Bytes(
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        )
    }

    /// Headers promise a longer body than is sent before the socket closes.
    pub fn truncated(body_start: &str) -> Self {
        RawReply::Bytes(
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body_start}",
                body_start.len() + 500
            )
            .into_bytes(),
        )
    }
}

/// A raw TCP server on 127.0.0.1 that reads one HTTP request per connection and then follows
/// its script (then the default), closing the connection every time.
#[derive(Debug)]
pub struct RawServer {
    pub base_url: String,
    requests: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl RawServer {
    pub async fn start(script: Vec<RawReply>, default: RawReply) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let reply = script.lock().pop_front().unwrap_or_else(|| default.clone());
                let counter = counter.clone();
                tokio::spawn(async move {
                    serve_raw(stream, reply, &counter).await;
                });
            }
        });
        Self {
            base_url: format!("http://{addr}"),
            requests,
            task,
        }
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_raw(mut stream: TcpStream, reply: RawReply, counter: &AtomicUsize) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // Read headers, then as much body as content-length says.
    let (header_end, content_length) = loop {
        let Ok(n) = stream.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..pos]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            break (pos + 4, len);
        }
    };
    while buf.len() < header_end + content_length {
        let Ok(n) = stream.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    counter.fetch_add(1, Ordering::SeqCst);
    match reply {
        RawReply::Drop => {}
        RawReply::Bytes(bytes) => {
            let _ = stream.write_all(&bytes).await;
            let _ = stream.flush().await;
        }
    }
    let _ = stream.shutdown().await;
}

/// A loopback URL where nothing listens (the port was bound, then released).
pub async fn refused_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}")
}

/// An in-memory metrics sink.
#[derive(Debug, Default)]
pub struct MemorySink {
    records: Mutex<Vec<prompt_metrics::PromptMetrics>>,
}

impl MemorySink {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn records(&self) -> Vec<prompt_metrics::PromptMetrics> {
        self.records.lock().clone()
    }

    pub fn last(&self) -> prompt_metrics::PromptMetrics {
        self.records
            .lock()
            .last()
            .cloned()
            .expect("a metrics record")
    }
}

impl prompt_metrics::MetricsSink for MemorySink {
    fn record(
        &self,
        metrics: prompt_metrics::PromptMetrics,
    ) -> Result<(), prompt_metrics::MetricsError> {
        self.records.lock().push(metrics);
        Ok(())
    }

    fn flush(&self) -> Result<(), prompt_metrics::MetricsError> {
        Ok(())
    }
}

/// A cache whose every operation fails, to show a broken cache never fails a generation.
#[derive(Debug, Default)]
pub struct BrokenCache {
    pub gets: AtomicUsize,
    pub puts: AtomicUsize,
}

impl BrokenCache {
    fn error() -> prompt_cache::CacheError {
        prompt_cache::CacheError::Redis {
            url: "redis://127.0.0.1:1".into(),
            message: "connection refused".into(),
        }
    }
}

impl prompt_cache::CacheStore for BrokenCache {
    fn get(
        &self,
        _key: &prompt_cache::CacheKey,
    ) -> Result<Option<prompt_cache::CachedResponse>, prompt_cache::CacheError> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        Err(Self::error())
    }
    fn put(
        &self,
        _entry: prompt_cache::CachedResponse,
        _ttl: Option<Duration>,
    ) -> Result<(), prompt_cache::CacheError> {
        self.puts.fetch_add(1, Ordering::SeqCst);
        Err(Self::error())
    }
    fn remove(&self, _key: &prompt_cache::CacheKey) -> Result<bool, prompt_cache::CacheError> {
        Err(Self::error())
    }
    fn clear(&self) -> Result<usize, prompt_cache::CacheError> {
        Err(Self::error())
    }
    fn prune_expired(&self) -> Result<usize, prompt_cache::CacheError> {
        Err(Self::error())
    }
    fn stats(&self) -> Result<prompt_cache::CacheStats, prompt_cache::CacheError> {
        Err(Self::error())
    }
    fn flush(&self) -> Result<(), prompt_cache::CacheError> {
        Err(Self::error())
    }
}

/// Writes `<dir>/<agent>/<task>_v<version>.yaml`.
pub fn write_template(dir: &std::path::Path, agent: &str, task: &str, version: u32, body: &str) {
    let folder = dir.join(agent);
    std::fs::create_dir_all(&folder).expect("mkdir");
    let text = format!("version: {version}\nagent: {agent}\ntask: {task}\n{body}");
    std::fs::write(folder.join(format!("{task}_v{version}.yaml")), text).expect("write template");
}

/// A builder with test-friendly timings: tiny backoff, `Retry-After` capped at 20 ms.
pub fn fast_builder(
    provider: Arc<dyn prompt_agent::Provider>,
    templates_dir: &std::path::Path,
) -> prompt_agent::PromptSystemBuilder {
    prompt_agent::PromptSystem::builder()
        .templates_dir(templates_dir)
        .provider(provider)
        .model("llama3.2")
        .max_attempts(3)
        .request_timeout(Duration::from_secs(5))
        .backoff_base(Duration::from_millis(2))
        .retry_after_cap(Duration::from_millis(20))
}
