//! Test doubles shared by the integration tests: a scriptable fake LLM server over real HTTP on
//! 127.0.0.1 (axum), a raw TCP server for faults HTTP servers will not produce (dropped
//! connections, truncated bodies), a scripted streaming server ([`StreamServer`]: Ollama NDJSON
//! and OpenAI SSE streams with delays, every way a stream ends or breaks, and a count of the
//! clients that went away), and an in-memory metrics sink.
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
    #[allow(clippy::needless_pass_by_value)] // callers build the body in place with json!
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

// ---------------------------------------------------------------------------------------------
// The streaming fake server.
//
// Quick use:
//
//     let server = StreamServer::start().await;
//     server.script(
//         vec![Frame::reasoning("Hmm."), Frame::text("Once").after(ms(50)), Frame::text(" upon")],
//         Ending::done(),
//     );
//     let provider = OllamaProvider::new(&server.base_url, TIMEOUT)?; // or OpenAiProvider
//     ... provider.chat_stream(&request) ...
//     assert_eq!(server.requests(), 1);
//     assert_eq!(server.last_body()["stream"], true);
//
// The same script serves both wire formats: the server frames every piece for the path the
// request went to (NDJSON lines on `/api/chat`, SSE `data:` events on `…/chat/completions`).
// ---------------------------------------------------------------------------------------------

/// The model named in the frames [`StreamServer`] renders and in [`Ending::done`].
pub const STREAM_MODEL: &str = "stream-model";
/// Prompt tokens reported by [`Ending::done`].
pub const DONE_PROMPT_TOKENS: u64 = 12;
/// Generated tokens reported by [`Ending::done`].
pub const DONE_COMPLETION_TOKENS: u64 = 34;
/// How long [`Ending::Stall`] holds a connection open at most before the server closes it
/// (as [`Ending::Drop`] would); a test's client is expected to give up well before.
pub const STALL_CAP: Duration = Duration::from_secs(30);

/// Shorthand for a duration in milliseconds.
pub fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

/// The two streaming wire formats, chosen by the request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// Ollama `POST /api/chat`: one JSON object a line (`application/x-ndjson`).
    Ollama,
    /// OpenAI-compatible `POST /v1/chat/completions`: SSE `data:` events, `data: [DONE]` last.
    OpenAi,
}

impl Wire {
    /// The format for a request path, `None` for paths the server does not stream.
    pub fn for_path(path: &str) -> Option<Wire> {
        if path.ends_with("/api/chat") {
            Some(Wire::Ollama)
        } else if path.ends_with("/chat/completions") {
            Some(Wire::OpenAi)
        } else {
            None
        }
    }

    /// The bytes a payload is written as in this format (one NDJSON line or one SSE event).
    pub fn frame_bytes(self, payload: &Payload) -> Vec<u8> {
        match payload {
            Payload::Raw(bytes) => bytes.clone(),
            Payload::Json(value) => self.wrap(&value.to_string()),
            Payload::Invalid => self.wrap(r#"{"model": "stream-model", "message": {"content": "#),
            Payload::Delta(delta) => self.wrap(&self.delta_json(delta).to_string()),
        }
    }

    /// The final frame(s) of a finished stream: Ollama's `done: true` line; OpenAI's chunk with
    /// the finish reason, the usage chunk (empty `choices`, when token counts are given) and
    /// `data: [DONE]`.
    pub fn final_bytes(self, end: &prompt_agent::StreamEnd) -> Vec<u8> {
        let model = end.model.clone().unwrap_or_else(|| STREAM_MODEL.to_owned());
        match self {
            Wire::Ollama => {
                let mut line = json!({
                    "model": model,
                    "created_at": "2026-01-20T10:00:00Z",
                    "message": { "role": "assistant", "content": "" },
                    "done": true,
                    "total_duration": 1_000_000,
                });
                if let Some(reason) = &end.finish_reason {
                    line["done_reason"] = json!(reason);
                }
                if let Some(n) = end.tokens_prompt {
                    line["prompt_eval_count"] = json!(n);
                }
                if let Some(n) = end.tokens_completion {
                    line["eval_count"] = json!(n);
                }
                self.wrap(&line.to_string())
            }
            Wire::OpenAi => {
                let mut out = self.wrap(
                    &json!({
                        "id": "chatcmpl-stream",
                        "object": "chat.completion.chunk",
                        "created": 1_700_000_000,
                        "model": model,
                        "choices": [{ "index": 0, "delta": {}, "finish_reason": end.finish_reason }],
                        "usage": null
                    })
                    .to_string(),
                );
                if end.tokens_prompt.is_some() || end.tokens_completion.is_some() {
                    let (p, c) = (
                        end.tokens_prompt.unwrap_or(0),
                        end.tokens_completion.unwrap_or(0),
                    );
                    let mut usage = json!({ "prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c });
                    if let Some(n) = end.tokens_cached {
                        usage["prompt_tokens_details"] = json!({ "cached_tokens": n });
                    }
                    if let Some(n) = end.tokens_reasoning {
                        usage["completion_tokens_details"] = json!({ "reasoning_tokens": n });
                    }
                    out.extend(
                        self.wrap(
                            &json!({
                                "id": "chatcmpl-stream",
                                "object": "chat.completion.chunk",
                                "created": 1_700_000_000,
                                "model": model,
                                "choices": [],
                                "usage": usage
                            })
                            .to_string(),
                        ),
                    );
                }
                out.extend(self.wrap("[DONE]"));
                out
            }
        }
    }

    fn wrap(self, data: &str) -> Vec<u8> {
        match self {
            Wire::Ollama => format!("{data}\n").into_bytes(),
            Wire::OpenAi => format!("data: {data}\n\n").into_bytes(),
        }
    }

    fn delta_json(self, delta: &prompt_agent::Delta) -> Value {
        use prompt_agent::Delta;
        match self {
            Wire::Ollama => {
                let message = match delta {
                    Delta::Text(t) => json!({ "role": "assistant", "content": t }),
                    Delta::Reasoning(r) => {
                        json!({ "role": "assistant", "content": "", "thinking": r })
                    }
                    // Ollama sends each call whole, arguments as an object.
                    Delta::ToolCall(call) => {
                        let arguments = serde_json::from_str::<Value>(&call.arguments)
                            .unwrap_or_else(|_| json!(call.arguments));
                        json!({ "role": "assistant", "content": "", "tool_calls": [
                            { "function": { "name": call.name, "arguments": arguments } }
                        ]})
                    }
                };
                json!({
                    "model": STREAM_MODEL,
                    "created_at": "2026-01-20T10:00:00Z",
                    "message": message,
                    "done": false
                })
            }
            Wire::OpenAi => {
                let delta = match delta {
                    Delta::Text(t) => json!({ "content": t }),
                    Delta::Reasoning(r) => json!({ "reasoning_content": r }),
                    Delta::ToolCall(call) => {
                        let mut piece = json!({
                            "index": call.index,
                            "function": { "arguments": call.arguments },
                        });
                        if let Some(id) = &call.id {
                            piece["id"] = json!(id);
                            piece["type"] = json!("function");
                        }
                        if let Some(name) = &call.name {
                            piece["function"]["name"] = json!(name);
                        }
                        json!({ "tool_calls": [piece] })
                    }
                };
                json!({
                    "id": "chatcmpl-stream",
                    "object": "chat.completion.chunk",
                    "created": 1_700_000_000,
                    "model": STREAM_MODEL,
                    "choices": [{ "index": 0, "delta": delta, "finish_reason": null }],
                    "usage": null
                })
            }
        }
    }
}

/// What one scripted frame carries.
#[derive(Debug, Clone)]
pub enum Payload {
    /// A piece of reply or reasoning text, rendered in the request's wire format (Ollama
    /// `message.content` / `message.thinking`; OpenAI `delta.content` /
    /// `delta.reasoning_content`).
    Delta(prompt_agent::Delta),
    /// A JSON value framed for the wire format (an NDJSON line, an SSE `data:` event).
    Json(Value),
    /// Bytes written exactly as given, with no framing (half a frame, an SSE comment, ...).
    Raw(Vec<u8>),
    /// A frame that is not valid JSON, framed for the wire format.
    Invalid,
}

/// One scripted frame: written as one HTTP chunk after waiting `delay`.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Wait before writing the frame (counted from the previous frame, or from the response
    /// headers, which go out as soon as the request is read).
    pub delay: Duration,
    /// What is written.
    pub payload: Payload,
}

impl Frame {
    /// A reply-text delta.
    pub fn text(text: &str) -> Self {
        Self::of(Payload::Delta(prompt_agent::Delta::Text(text.to_owned())))
    }

    /// A reasoning ("thinking") delta.
    pub fn reasoning(text: &str) -> Self {
        Self::of(Payload::Delta(prompt_agent::Delta::Reasoning(
            text.to_owned(),
        )))
    }

    /// Any delta.
    pub fn delta(delta: prompt_agent::Delta) -> Self {
        Self::of(Payload::Delta(delta))
    }

    /// A JSON frame, framed for the wire format.
    pub fn json(value: Value) -> Self {
        Self::of(Payload::Json(value))
    }

    /// Bytes written as they are.
    pub fn raw(bytes: impl Into<Vec<u8>>) -> Self {
        Self::of(Payload::Raw(bytes.into()))
    }

    /// A frame that is not valid JSON.
    pub fn invalid() -> Self {
        Self::of(Payload::Invalid)
    }

    /// The same frame, written `delay` after the previous one.
    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    fn of(payload: Payload) -> Self {
        Self {
            delay: Duration::ZERO,
            payload,
        }
    }
}

/// Text deltas, one frame each, `every` apart (the first one too).
pub fn text_frames(pieces: &[&str], every: Duration) -> Vec<Frame> {
    pieces.iter().map(|p| Frame::text(p).after(every)).collect()
}

/// How a scripted answer ends, after its frames.
#[derive(Debug, Clone)]
pub enum Ending {
    /// The wire format's final frame(s) with these values, then the body ends cleanly (see
    /// [`Wire::final_bytes`]). [`Ending::done`] gives the usual ones.
    Done(prompt_agent::StreamEnd),
    /// The body ends cleanly (terminating HTTP chunk) without the final frame.
    Truncated,
    /// The server closes the connection in the middle of the chunked body.
    Drop,
    /// Nothing more is written; the connection stays open until the client goes away (counted
    /// by [`StreamServer::client_disconnects`]) or [`STALL_CAP`] passes.
    Stall,
    /// The server closes the connection after reading the request, before any response
    /// (the frames are not sent).
    CloseBeforeResponse,
    /// The server reads the request and never answers (a server busy loading a model): the
    /// connection stays open until the client goes away (counted by
    /// [`StreamServer::client_disconnects`]) or [`STALL_CAP`] passes. The frames are not sent.
    StallBeforeResponse,
    /// A plain HTTP answer instead of a stream (the frames are not sent): e.g.
    /// `Reply::json(429, …).header("retry-after", "2")`, `Reply::raw(500, "boom")`,
    /// `Reply::ollama_model_not_found("m")`, `Reply::openai_error(404, "model_not_found", …)`.
    Status(Reply),
}

impl Ending {
    /// A normal end: model [`STREAM_MODEL`], [`DONE_PROMPT_TOKENS`],
    /// [`DONE_COMPLETION_TOKENS`], finish reason `"stop"`.
    pub fn done() -> Self {
        Ending::Done(prompt_agent::StreamEnd {
            model: Some(STREAM_MODEL.to_owned()),
            tokens_prompt: Some(DONE_PROMPT_TOKENS),
            tokens_completion: Some(DONE_COMPLETION_TOKENS),
            finish_reason: Some("stop".to_owned()),
            ..prompt_agent::StreamEnd::default()
        })
    }

    /// A plain HTTP error answer with a JSON body `{"error": message}`.
    pub fn status(status: u16, message: &str) -> Self {
        Ending::Status(Reply::json(status, json!({ "error": message })))
    }
}

/// One scripted answer: frames, then an ending.
#[derive(Debug, Clone)]
pub struct Script {
    /// The frames, in order.
    pub frames: Vec<Frame>,
    /// What happens after them.
    pub ending: Ending,
}

#[derive(Debug)]
struct StreamShared {
    queue: Mutex<VecDeque<Script>>,
    default: Mutex<Script>,
    requests: AtomicUsize,
    captured: Mutex<Vec<Captured>>,
    frames_sent: AtomicUsize,
    client_disconnects: AtomicUsize,
    completed: AtomicUsize,
}

/// A fake streaming LLM server on 127.0.0.1 over real HTTP/1.1 (raw TCP, chunked bodies, one
/// connection per request): answers each request with the next queued [`Script`], else the
/// default one, records every request, counts the frames it wrote and the clients that went
/// away before the end. Dropping it stops the server and every connection it holds.
#[derive(Debug)]
pub struct StreamServer {
    /// `http://127.0.0.1:PORT`, the base URL for either provider.
    pub base_url: String,
    shared: Arc<StreamShared>,
    task: JoinHandle<()>,
}

impl StreamServer {
    /// Starts a server whose default answer (when nothing is queued) is an HTTP 500 saying
    /// nothing was scripted.
    pub async fn start() -> Self {
        let shared = Arc::new(StreamShared {
            queue: Mutex::new(VecDeque::new()),
            default: Mutex::new(Script {
                frames: Vec::new(),
                ending: Ending::status(500, "StreamServer: nothing scripted"),
            }),
            requests: AtomicUsize::new(0),
            captured: Mutex::new(Vec::new()),
            frames_sent: AtomicUsize::new(0),
            client_disconnects: AtomicUsize::new(0),
            completed: AtomicUsize::new(0),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = shared.clone();
        let task = tokio::spawn(async move {
            // Dropping the set (when this task is aborted) aborts every connection.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { return };
                        connections.spawn(serve_stream(stream, state.clone()));
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        Self {
            base_url: format!("http://{addr}"),
            shared,
            task,
        }
    }

    /// Queues one answer: `frames`, then `ending`. Queued answers go out in order, one per
    /// request, before the default.
    pub fn script(&self, frames: Vec<Frame>, ending: Ending) {
        self.shared
            .queue
            .lock()
            .push_back(Script { frames, ending });
    }

    /// The answer given whenever the queue is empty (e.g. a failing server for every call).
    pub fn set_default(&self, frames: Vec<Frame>, ending: Ending) {
        *self.shared.default.lock() = Script { frames, ending };
    }

    /// Requests received (read in full), on any path.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Every request received, in order.
    pub fn captured(&self) -> Vec<Captured> {
        self.shared.captured.lock().clone()
    }

    /// The JSON body of the last request (`Null` before any).
    pub fn last_body(&self) -> Value {
        self.shared
            .captured
            .lock()
            .last()
            .map(|c| c.body.clone())
            .unwrap_or(Value::Null)
    }

    /// Frames written so far, over all streams (final frames not counted).
    pub fn frames_sent(&self) -> usize {
        self.shared.frames_sent.load(Ordering::SeqCst)
    }

    /// Streams whose client closed the connection before the server finished its script
    /// (frames and ending), including stalled streams the client gave up on.
    pub fn client_disconnects(&self) -> usize {
        self.shared.client_disconnects.load(Ordering::SeqCst)
    }

    /// Answers written to their end (a normal or truncated end, a drop, an HTTP status).
    pub fn completed(&self) -> usize {
        self.shared.completed.load(Ordering::SeqCst)
    }

    /// Waits (up to 5 s) until at least `n` clients have disconnected early; panics otherwise.
    pub async fn wait_for_disconnects(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.client_disconnects() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "expected {n} client disconnect(s), saw {}",
                self.client_disconnects()
            );
            tokio::time::sleep(ms(10)).await;
        }
    }
}

impl Drop for StreamServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one HTTP/1.1 request (headers, then a `content-length` body).
async fn read_request<R: AsyncReadExt + Unpin>(reader: &mut R) -> Option<Captured> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        let n = reader.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split_whitespace();
    let method = request_line.next()?.to_owned();
    let path = request_line.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let body_start = header_end + 4;
    while buf.len() < body_start + length {
        let n = reader.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf[body_start..body_start + length]).into_owned();
    Some(Captured {
        method,
        path,
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
    })
}

/// How writing a script went.
enum Written {
    /// Everything was written.
    Finished,
    /// A write failed: the client is gone.
    ClientGone,
}

async fn serve_stream(stream: TcpStream, shared: Arc<StreamShared>) {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let Some(request) = read_request(&mut reader).await else {
        return;
    };
    let wire = Wire::for_path(&request.path);
    shared.captured.lock().push(request);
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let script = shared
        .queue
        .lock()
        .pop_front()
        .unwrap_or_else(|| shared.default.lock().clone());
    let Some(wire) = wire else {
        let reply = Reply::json(404, json!({ "error": "StreamServer: no such path" }));
        let _ = writer.write_all(&http_reply(&reply)).await;
        let _ = writer.shutdown().await;
        return;
    };
    // The client sends nothing after its request: a read that ends means it closed the
    // connection.
    let client_gone = async move {
        let mut sink = [0u8; 1024];
        while let Ok(n) = reader.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    };
    let outcome = tokio::select! {
        written = write_script(&mut writer, wire, &script, &shared) => written,
        () = client_gone => Written::ClientGone,
    };
    match outcome {
        Written::Finished => {
            shared.completed.fetch_add(1, Ordering::SeqCst);
        }
        Written::ClientGone => {
            shared.client_disconnects.fetch_add(1, Ordering::SeqCst);
        }
    }
    let _ = writer.shutdown().await;
}

async fn write_script(
    writer: &mut tokio::net::tcp::OwnedWriteHalf,
    wire: Wire,
    script: &Script,
    shared: &StreamShared,
) -> Written {
    async fn send(writer: &mut tokio::net::tcp::OwnedWriteHalf, bytes: &[u8]) -> bool {
        writer.write_all(bytes).await.is_ok() && writer.flush().await.is_ok()
    }
    async fn chunk(writer: &mut tokio::net::tcp::OwnedWriteHalf, data: &[u8]) -> bool {
        if data.is_empty() {
            return true; // a zero-length chunk would end the body
        }
        let mut bytes = format!("{:x}\r\n", data.len()).into_bytes();
        bytes.extend_from_slice(data);
        bytes.extend_from_slice(b"\r\n");
        send(writer, &bytes).await
    }
    match &script.ending {
        Ending::CloseBeforeResponse => return Written::Finished,
        Ending::StallBeforeResponse => {
            tokio::time::sleep(STALL_CAP).await;
            return Written::Finished;
        }
        Ending::Status(reply) => {
            tokio::time::sleep(reply.delay).await;
            return if send(writer, &http_reply(reply)).await {
                Written::Finished
            } else {
                Written::ClientGone
            };
        }
        _ => {}
    }
    let content_type = match wire {
        Wire::Ollama => "application/x-ndjson",
        Wire::OpenAi => "text/event-stream\r\ncache-control: no-cache",
    };
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    if !send(writer, head.as_bytes()).await {
        return Written::ClientGone;
    }
    for frame in &script.frames {
        tokio::time::sleep(frame.delay).await;
        if !chunk(writer, &wire.frame_bytes(&frame.payload)).await {
            return Written::ClientGone;
        }
        shared.frames_sent.fetch_add(1, Ordering::SeqCst);
    }
    let ok = match &script.ending {
        Ending::Done(end) => {
            // The final frame(s) and the end of the body in one write: a client that stops
            // reading at the final frame must not race the server into a failed write.
            let data = wire.final_bytes(end);
            let mut bytes = format!("{:x}\r\n", data.len()).into_bytes();
            bytes.extend_from_slice(&data);
            bytes.extend_from_slice(b"\r\n0\r\n\r\n");
            send(writer, &bytes).await
        }
        Ending::Truncated => send(writer, b"0\r\n\r\n").await,
        Ending::Drop => true,
        Ending::Stall => {
            tokio::time::sleep(STALL_CAP).await;
            true
        }
        Ending::CloseBeforeResponse | Ending::StallBeforeResponse | Ending::Status(_) => {
            unreachable!("handled above")
        }
    };
    if ok {
        Written::Finished
    } else {
        Written::ClientGone
    }
}

/// A whole HTTP answer with a body and `connection: close`.
fn http_reply(reply: &Reply) -> Vec<u8> {
    let reason = StatusCode::from_u16(reply.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Status");
    let mut head = format!(
        "HTTP/1.1 {} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        reply.status,
        reply.body.len()
    );
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(reply.body.as_bytes());
    bytes
}
