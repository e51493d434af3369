//! An OpenAI-compatible HTTP gateway with promptkit's cache, metrics and templates in front
//! of any model: [`router`] turns a [`PromptSystem`] into an [`axum::Router`] serving
//!
//! - `POST /v1/chat/completions` — the OpenAI request and response shapes, streamed (SSE
//!   `data:` frames, a usage chunk on `stream_options.include_usage`, `data: [DONE]`) or
//!   whole, tools and tool calls passed through. Every call goes through the agents' cache
//!   (`x-promptkit-cache: hit|miss` on every response; `Cache-Control: no-cache` skips the
//!   read), single-flight, retry loop and metrics. Plain requests are recorded under the
//!   headers `X-Prompt-Agent` / `X-Prompt-Task` (default `gateway` / `chat`), tagged with the
//!   comma-separated `X-Prompt-Tags` (any request; not part of the cache key); a body with
//!   `"template": "agent/task[@version]"` and `"vars"` is rendered on the server (any
//!   `messages` follow the rendered ones) and recorded under the template's agent and task.
//! - `GET /v1/models` — the upstream's models (replay-only: the configured model and the
//!   templates' default models, without asking upstream).
//! - `GET /health` — always open, even with a client key.
//! - `GET /metrics` — the Prometheus text format.
//!
//! Errors are always OpenAI-style: `{"error": {"message", "type", "param", "code"}}`: 400 for
//! malformed JSON, wrong types and bad template variables (naming the field), 401 without the
//! client key, 404 for an unknown template or a replay-only miss (code `cache_miss`), 413 over
//! the body limit, 429/502/503/504 for upstream failures. A streamed request that fails before
//! its first delta gets the HTTP error; once deltas have been sent, a failure (or an upstream
//! attempt that broke off and would be retried — a client cannot take back text it has
//! received) ends the stream with one `data: {"error": …}` frame and no `[DONE]`. A client that
//! goes away drops the generation: the upstream call stops and nothing is cached.
//!
//! The gateway knows the OpenAI wire format of the *server* side; the provider modules of
//! `prompt-agent` keep the client side. Binding, configuration files and shutdown are the
//! binary's (`prompt serve`).
//!
//! ```
//! use std::sync::Arc;
//! use prompt_agent::{EchoProvider, PromptSystem};
//! use prompt_gateway::{GatewayConfig, router};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let templates = tempfile::tempdir().unwrap();
//! let system = PromptSystem::builder()
//!     .templates_dir(templates.path())
//!     .provider(Arc::new(EchoProvider::new()))
//!     .build()
//!     .unwrap();
//! let app = router(system, GatewayConfig::default());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! let addr = listener.local_addr().unwrap();
//! tokio::spawn(async move { axum::serve(listener, app).await });
//!
//! let reply: serde_json::Value = reqwest::Client::new()
//!     .post(format!("http://{addr}/v1/chat/completions"))
//!     .json(&serde_json::json!({
//!         "model": "any",
//!         "messages": [{"role": "user", "content": "Say hello."}],
//!     }))
//!     .send().await.unwrap()
//!     .json().await.unwrap();
//! assert_eq!(reply["object"], "chat.completion");
//! assert!(reply["choices"][0]["message"]["content"].as_str().unwrap().contains("Say hello."));
//! # });
//! ```

mod error;
mod metrics;
mod wire;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use prompt_agent::{
    AgentError, GenerateOptions, Generation, GenerationEvent, GenerationStream, PromptSystem,
    StreamItem, Vars, VersionReq,
};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::metrics::GatewayMetrics;
use crate::wire::{Chunks, CompletionRequest};

/// The response header that says whether the answer came from the cache: `hit` or `miss`.
pub const CACHE_HEADER: &str = "x-promptkit-cache";
/// The request header naming the agent a plain request is recorded under.
pub const AGENT_HEADER: &str = "x-prompt-agent";
/// The request header naming the task a plain request is recorded under.
pub const TASK_HEADER: &str = "x-prompt-task";
/// The request header carrying the request's tags, comma-separated (`eval, nightly`): written
/// into its metrics record and counted against `[budget.tags]`, never part of the cache key.
pub const TAGS_HEADER: &str = "x-prompt-tags";
/// The agent of plain requests without [`AGENT_HEADER`].
pub const DEFAULT_AGENT: &str = "gateway";
/// The task of plain requests without [`TASK_HEADER`].
pub const DEFAULT_TASK: &str = "chat";
/// The default body size limit: 32 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 32 * 1024 * 1024;
/// The default listen address of `prompt serve`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8787";

/// How the gateway serves; every field has a default ([`GatewayConfig::default`]).
#[derive(Clone)]
pub struct GatewayConfig {
    /// The key clients must send as `Authorization: Bearer <key>` (401 otherwise; `/health`
    /// stays open). `None` lets every client in. Never forwarded upstream.
    pub client_key: Option<String>,
    /// The largest request body accepted (413 above it).
    pub max_body_bytes: usize,
    /// The longest a chat completion may take, streaming included (504, or an error event
    /// in a stream that has begun). `None` leaves it to the agents' own timeouts.
    pub request_timeout: Option<Duration>,
    /// Answer from the cache only and never call upstream: a miss is HTTP 404 with code
    /// `cache_miss`, and `/v1/models` lists the configured model and the templates' models.
    pub replay_only: bool,
    /// Skip the cache read for every request, as if each sent `Cache-Control: no-cache`
    /// (replies are still stored).
    pub no_cache: bool,
    /// Tags added to every request's own (`X-Prompt-Tags`) in its metrics record.
    pub tags: Vec<String>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            client_key: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            request_timeout: None,
            replay_only: false,
            no_cache: false,
            tags: Vec::new(),
        }
    }
}

impl std::fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayConfig")
            .field(
                "client_key",
                &self.client_key.as_ref().map(|_| "<redacted>"),
            )
            .field("max_body_bytes", &self.max_body_bytes)
            .field("request_timeout", &self.request_timeout)
            .field("replay_only", &self.replay_only)
            .field("no_cache", &self.no_cache)
            .field("tags", &self.tags)
            .finish()
    }
}

#[derive(Debug)]
struct Gateway {
    system: PromptSystem,
    config: GatewayConfig,
    metrics: Arc<GatewayMetrics>,
    ids: AtomicU64,
}

type Shared = Arc<Gateway>;

/// The OpenAI-compatible API over `system`: `POST /v1/chat/completions`, `GET /v1/models`,
/// `GET /health` and `GET /metrics`. Mount it in your own server or serve it with
/// [`axum::serve()`].
pub fn router(system: PromptSystem, config: GatewayConfig) -> Router {
    let state = Arc::new(Gateway {
        system,
        config,
        metrics: Arc::new(GatewayMetrics::default()),
        ids: AtomicU64::new(0),
    });
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/metrics", get(prometheus))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn not_found() -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "unknown_url",
        "no such endpoint",
    )
    .into_response()
}

async fn method_not_allowed() -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        "method_not_allowed",
        "this endpoint does not take that HTTP method",
    )
    .into_response()
}

async fn health() -> Response {
    with_cache_header(axum::Json(json!({"status": "ok"})).into_response(), false)
}

async fn prometheus(State(gateway): State<Shared>, headers: HeaderMap) -> Response {
    if let Err(e) = gateway.authorize(&headers) {
        return e.into_response();
    }
    let mut response = gateway.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    with_cache_header(response, false)
}

/// The models a replay-only gateway can name without asking upstream: the configured model
/// and every template's default model, sorted, each once.
fn offline_models(system: &PromptSystem) -> Vec<String> {
    let store = system.templates();
    let mut names = vec![system.model().to_owned()];
    for info in store.list(None).unwrap_or_default() {
        if let Ok(template) = store.load(&info.agent, &info.task, VersionReq::Exact(info.version))
            && let Some(name) = template.model().and_then(|m| m.name.clone())
        {
            names.push(name);
        }
    }
    names.sort();
    names.dedup();
    names
}

async fn models(State(gateway): State<Shared>, headers: HeaderMap) -> Response {
    let result = match gateway.authorize(&headers) {
        Ok(()) if gateway.config.replay_only => Ok(offline_models(&gateway.system)),
        Ok(()) => gateway.system.provider().list_models().await.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                e.kind(),
                e.to_string(),
            )
        }),
        Err(e) => Err(e),
    };
    let response = match result {
        Ok(names) => {
            let owner = gateway.system.provider().name().to_owned();
            let data: Vec<Value> = names
                .into_iter()
                .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": owner}))
                .collect();
            with_cache_header(
                axum::Json(json!({"object": "list", "data": data})).into_response(),
                false,
            )
        }
        Err(e) => gateway.fail(e),
    };
    gateway
        .metrics
        .request("models", response.status().as_u16());
    response
}

fn with_cache_header(mut response: Response, hit: bool) -> Response {
    response.headers_mut().insert(
        CACHE_HEADER,
        HeaderValue::from_static(if hit { "hit" } else { "miss" }),
    );
    response
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Compares without an early exit, so the time taken does not tell how much of a guess fit.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A name for metrics from a header: letters, digits, `_`, `-`, `.`, at most 64.
fn header_name(headers: &HeaderMap, name: &str, default: &str) -> Result<String, ApiError> {
    let Some(value) = headers.get(name) else {
        return Ok(default.to_owned());
    };
    let text = value.to_str().unwrap_or_default().trim();
    let ok = !text.is_empty()
        && text.len() <= 64
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(text.to_owned())
    } else {
        Err(ApiError::bad_request(
            "invalid_header",
            format!("header {name} must be 1 to 64 letters, digits, `_`, `-` or `.`"),
        ))
    }
}

/// The configured tags, then those of the `X-Prompt-Tags` header (comma-separated, by
/// prompt-agent's one rule for tags), without repeats.
fn request_tags(headers: &HeaderMap, configured: &[String]) -> Result<Vec<String>, ApiError> {
    let mut tags = configured.to_vec();
    for value in headers.get_all(TAGS_HEADER) {
        let text = value.to_str().map_err(|_| {
            ApiError::bad_request(
                "invalid_header",
                format!("header {TAGS_HEADER} must be visible ASCII text"),
            )
        })?;
        let parsed = prompt_agent::parse_tags(text).map_err(|e| {
            ApiError::bad_request("invalid_header", format!("header {TAGS_HEADER}: {e}"))
        })?;
        for tag in parsed {
            if !tags.contains(&tag) {
                tags.push(tag);
            }
        }
    }
    Ok(tags)
}

/// `agent/task[@version]`.
fn parse_template(name: &str) -> Result<(String, String, VersionReq), ApiError> {
    let bad = |why: &str| {
        ApiError::bad_request(
            "invalid_template_name",
            format!("template {name:?}: {why} (expected \"agent/task\" or \"agent/task@version\")"),
        )
        .with_param("template")
    };
    let (path, version) = match name.split_once('@') {
        Some((path, version)) => (
            path,
            version
                .parse::<VersionReq>()
                .map_err(|e| bad(&e.to_string()))?,
        ),
        None => (name, VersionReq::Latest),
    };
    let Some((agent, task)) = path.split_once('/') else {
        return Err(bad("no `/` between agent and task"));
    };
    if agent.is_empty() || task.is_empty() || task.contains('/') {
        return Err(bad("agent and task must be non-empty names"));
    }
    Ok((agent.to_owned(), task.to_owned(), version))
}

/// How one chat completion will be generated.
struct Plan {
    agent: String,
    task: String,
    template: bool,
    messages: Vec<prompt_agent::ChatMessage>,
    vars: Vars,
    options: GenerateOptions,
    stream: bool,
    include_usage: bool,
    model: String,
}

impl Gateway {
    fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(key) = &self.config.client_key else {
            return Ok(());
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match given {
            Some(given) if same_secret(given.as_bytes(), key.as_bytes()) => Ok(()),
            _ => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "invalid_api_key",
                "missing or wrong API key: send `Authorization: Bearer <key>`",
            )),
        }
    }

    fn fail(&self, error: ApiError) -> Response {
        self.metrics.error(error.code);
        error.into_response()
    }

    fn next_id(&self) -> String {
        let n = self.ids.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        format!("chatcmpl-{nanos:08x}{n:016x}")
    }

    /// Reads the body within the size limit.
    async fn read_body(&self, request: Request) -> Result<Bytes, ApiError> {
        let limit = self.config.max_body_bytes;
        let too_large = || {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                "request_too_large",
                format!("the request body is larger than {limit} bytes"),
            )
        };
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        axum::body::to_bytes(request.into_body(), limit)
            .await
            .map_err(|e| {
                let mut cause: Option<&dyn std::error::Error> = Some(&e);
                let mut over_limit = false;
                while let Some(c) = cause {
                    over_limit |= c.to_string().contains("length limit");
                    cause = c.source();
                }
                if over_limit {
                    too_large()
                } else {
                    ApiError::bad_request(
                        "invalid_body",
                        format!("could not read the request body: {e}"),
                    )
                }
            })
    }

    fn plan(&self, headers: &HeaderMap, body: &[u8]) -> Result<Plan, ApiError> {
        let parsed = CompletionRequest::parse(body)?;
        let no_cache = self.config.no_cache
            || headers
                .get_all(header::CACHE_CONTROL)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|d| {
                    d.trim().eq_ignore_ascii_case("no-cache")
                        || d.trim().eq_ignore_ascii_case("no-store")
                });
        let mut options = GenerateOptions {
            no_cache,
            cache_only: self.config.replay_only,
            tags: request_tags(headers, &self.config.tags)?,
            ..GenerateOptions::with_request(parsed.options)
        };
        let (agent, task, template) = match &parsed.template {
            Some(name) => {
                let (agent, task, version) = parse_template(name)?;
                options.version = version;
                (agent, task, true)
            }
            None => {
                // An OpenAI-style client accepts any reply, short ones included.
                options.request.min_length = Some(options.request.min_length.unwrap_or(0));
                (
                    header_name(headers, AGENT_HEADER, DEFAULT_AGENT)?,
                    header_name(headers, TASK_HEADER, DEFAULT_TASK)?,
                    false,
                )
            }
        };
        let model = options
            .request
            .model
            .clone()
            .unwrap_or_else(|| self.system.model().to_owned());
        let (messages, vars) = if template {
            options.messages = parsed.messages;
            (Vec::new(), parsed.vars.into_iter().collect())
        } else {
            (parsed.messages, Vars::new())
        };
        Ok(Plan {
            agent,
            task,
            template,
            messages,
            vars,
            options,
            stream: parsed.stream,
            include_usage: parsed.include_usage,
            model,
        })
    }

    /// Counts a finished generation.
    fn count(&self, generation: &Generation, started: Instant) {
        let total = started.elapsed().as_secs_f64();
        self.metrics.cache(generation.cache_hit);
        self.metrics
            .tokens(generation.tokens_prompt, generation.tokens_completion);
        if generation.cache_hit {
            self.metrics.overhead_seconds(total);
        } else {
            let upstream = generation.latency_ms / 1000.0;
            self.metrics.upstream_seconds(upstream);
            self.metrics.overhead_seconds(total - upstream);
        }
    }

    /// A client that asked for a whole reply: the upstream is asked for a whole reply too —
    /// nobody watches this one arrive, so streaming it from upstream would only add the
    /// stream's assembly to every miss. Stalls are then bounded by the attempt's wall clock
    /// (`timeout`) and `request_timeout`, not the idle timeout; the entry has no deltas, and
    /// a streaming client served from it gets the reply as one delta.
    async fn whole(self: &Arc<Self>, plan: Plan, started: Instant) -> Response {
        let work = async {
            if plan.template {
                self.system
                    .template_agent(&plan.agent)
                    .with_streaming(false)
                    .generate_from_template(&plan.task, &plan.vars, &plan.options)
                    .await
            } else {
                self.system
                    .chat_agent(&plan.agent)
                    .with_streaming(false)
                    .chat(plan.messages, &plan.options, &plan.task)
                    .await
            }
        };
        let result = match self.config.request_timeout {
            Some(limit) => match tokio::time::timeout(limit, work).await {
                Ok(result) => result.map_err(|e| ApiError::from_agent(&e)),
                Err(_) => Err(timeout_error(limit)),
            },
            None => work.await.map_err(|e| ApiError::from_agent(&e)),
        };
        match result {
            Ok(generation) => {
                self.count(&generation, started);
                let body = wire::completion(&self.next_id(), unix_now(), &generation);
                with_cache_header(axum::Json(body).into_response(), generation.cache_hit)
            }
            Err(e) => self.fail(e),
        }
    }

    async fn streamed(
        self: &Arc<Self>,
        plan: Plan,
        started: Instant,
        in_flight: metrics::InFlight,
    ) -> Response {
        let mut stream: GenerationStream<Generation> = if plan.template {
            self.system.template_agent(&plan.agent).generate_stream(
                &plan.task,
                &plan.vars,
                &plan.options,
            )
        } else {
            self.system.chat_agent(&plan.agent).chat_stream(
                plan.messages,
                &plan.options,
                &plan.task,
            )
        };
        let deadline: Deadline = self
            .config
            .request_timeout
            .map(|limit| (tokio::time::Instant::now() + limit, limit));
        // The first item decides the status: an error before anything streamed is an HTTP
        // error, not a stream.
        let first = match next_item(&mut stream, deadline).await {
            Err(e) => return self.fail(e),
            Ok(None) => {
                return self.fail(ApiError::from_agent(&AgentError::Shared(
                    "the generation ended without a result".to_owned(),
                )));
            }
            Ok(Some(Err(e))) => return self.fail(ApiError::from_agent(&e)),
            Ok(Some(Ok(item))) => item,
        };
        let hit = match &first {
            StreamItem::Done(generation) => generation.cache_hit,
            StreamItem::Event(_) => stream.is_replay(),
        };
        let mut model = plan.model;
        if plan.template && plan.options.request.model.is_none() {
            // The template's model default, as the request will name it.
            let agent = self.system.template_agent(&plan.agent);
            if let Ok(prepared) = agent.prepare(&plan.task, &plan.vars, &plan.options) {
                prepared.request.model().clone_into(&mut model);
            }
        }
        let chunks = Chunks {
            id: self.next_id(),
            created: unix_now(),
            model,
        };
        let gateway = self.clone();
        let include_usage = plan.include_usage;
        let frames = async_stream(move |tx| async move {
            let _in_flight = in_flight;
            let mut state = StreamState::default();
            let send = |value: &Value| tx.send(frame(value));
            if send(&chunks.role()).is_err() {
                return;
            }
            let mut item = Some(Ok(first));
            loop {
                let current = match item.take() {
                    Some(current) => current,
                    None => match next_item(&mut stream, deadline).await {
                        Ok(Some(current)) => current,
                        Ok(None) => return,
                        Err(e) => {
                            gateway.metrics.error(e.code);
                            let _ = send(&e.body());
                            return;
                        }
                    },
                };
                match current {
                    Ok(StreamItem::Event(GenerationEvent::Delta(delta))) => {
                        state.note(&delta);
                        if send(&chunks.piece(&delta)).is_err() {
                            return; // The client went away: dropping the stream stops upstream.
                        }
                    }
                    Ok(StreamItem::Event(GenerationEvent::Retry { reason, .. })) => {
                        if state.sent_any {
                            let e = ApiError::new(
                                StatusCode::BAD_GATEWAY,
                                "upstream_error",
                                "stream_retry",
                                format!(
                                    "the upstream reply broke off after it began streaming and was retried: {reason}"
                                ),
                            );
                            gateway.metrics.error(e.code);
                            let _ = send(&e.body());
                            return;
                        }
                    }
                    Ok(StreamItem::Done(generation)) => {
                        gateway.count(&generation, started);
                        if !state.sent_text && !generation.content.is_empty() {
                            let _ = send(
                                &chunks
                                    .piece(&prompt_agent::Delta::Text(generation.content.clone())),
                            );
                        }
                        if !state.sent_tool_calls {
                            for (i, call) in generation.tool_calls.iter().enumerate() {
                                let _ = send(&chunks.whole_tool_call(i, call));
                            }
                        }
                        let _ = send(&chunks.finish(&generation));
                        if include_usage {
                            let _ = send(&chunks.usage(&generation));
                        }
                        let _ = tx.send(Bytes::from_static(b"data: [DONE]\n\n"));
                        return;
                    }
                    Err(e) => {
                        let e = ApiError::from_agent(&e);
                        gateway.metrics.error(e.code);
                        let _ = send(&e.body());
                        return;
                    }
                }
            }
        });
        let mut response = Response::new(Body::from_stream(frames));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        with_cache_header(response, hit)
    }
}

type Deadline = Option<(tokio::time::Instant, Duration)>;

/// The next item of a generation, within the request's deadline.
async fn next_item(
    stream: &mut GenerationStream<Generation>,
    deadline: Deadline,
) -> Result<Option<Result<StreamItem<Generation>, AgentError>>, ApiError> {
    match deadline {
        Some((at, limit)) => tokio::time::timeout_at(at, stream.next())
            .await
            .map_err(|_| timeout_error(limit)),
        None => Ok(stream.next().await),
    }
}

#[derive(Debug, Default)]
struct StreamState {
    sent_any: bool,
    sent_text: bool,
    sent_tool_calls: bool,
}

impl StreamState {
    fn note(&mut self, delta: &prompt_agent::Delta) {
        self.sent_any = true;
        match delta {
            prompt_agent::Delta::Text(_) => self.sent_text = true,
            prompt_agent::Delta::ToolCall(_) => self.sent_tool_calls = true,
            prompt_agent::Delta::Reasoning(_) => {}
        }
    }
}

fn frame(value: &Value) -> Bytes {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(b"data: ");
    // A `Value` always serializes.
    let _ = serde_json::to_writer(&mut out, value);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

fn timeout_error(limit: Duration) -> ApiError {
    ApiError::new(
        StatusCode::GATEWAY_TIMEOUT,
        "upstream_error",
        "timeout",
        format!(
            "no complete answer within the gateway's request timeout of {} s",
            limit.as_secs_f64()
        ),
    )
}

/// A body stream fed by `work` through a channel; when the client goes away the receiver is
/// dropped, the sends fail and `work` (with the generation it holds) is dropped too.
fn async_stream<F, Fut>(work: F) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::UnboundedSender<Bytes>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(work(tx));
    let guard = AbortOnDrop(task);
    futures_util::stream::unfold((rx, guard), |(mut rx, guard)| async move {
        rx.recv().await.map(|bytes| (Ok(bytes), (rx, guard)))
    })
}

/// Aborts the task feeding a body when the body is dropped (the client went away).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn chat_completions(State(gateway): State<Shared>, request: Request) -> Response {
    let started = Instant::now();
    let in_flight = gateway.metrics.in_flight();
    let response = gateway.chat(request, started, in_flight).await;
    gateway
        .metrics
        .request("chat_completions", response.status().as_u16());
    response
}

impl Gateway {
    async fn chat(
        self: &Arc<Self>,
        request: Request,
        started: Instant,
        in_flight: metrics::InFlight,
    ) -> Response {
        if let Err(e) = self.authorize(request.headers()) {
            return self.fail(e);
        }
        let headers = request.headers().clone();
        let body = match self.read_body(request).await {
            Ok(body) => body,
            Err(e) => return self.fail(e),
        };
        let plan = match self.plan(&headers, &body) {
            Ok(plan) => plan,
            Err(e) => return self.fail(e),
        };
        if plan.stream {
            self.streamed(plan, started, in_flight).await
        } else {
            self.whole(plan, started).await
        }
    }
}
