//! OpenAI-compatible servers: `POST {base}/v1/chat/completions`, `GET {base}/v1/models`.

use std::fmt;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use eventsource_stream::{EventStreamError, Eventsource};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{
    EventStream, Exchange, Provider, ToolWire, WireNames, broken, error_chain, exchange, frames,
    http_client, messages_json, normalize_base_url, open_stream, parse_body, sampling_options,
    snippet, status_error, tools_json, transport_error, whole_reply_events,
};
use crate::error::ProviderError;
use crate::request::{
    ChatRequest, ChatResponse, Delta, ResponseFormat, StreamAssembler, StreamEnd, StreamEvent,
    ToolCallDelta, tool_choice_json,
};

const NAME: &str = "openai";

/// OpenAI's own API.
pub const OPENAI_DEFAULT_URL: &str = "https://api.openai.com";

/// Where the bearer token comes from. The key itself is never logged, cached, recorded in
/// metrics or printed by `Debug`.
#[derive(Clone, Default)]
pub enum ApiKey {
    /// No `Authorization` header (local servers).
    #[default]
    None,
    /// Read this environment variable at every request.
    Env(String),
    /// A key held in memory (for embedding code that gets it from a secret store).
    Value(String),
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiKey::None => f.write_str("None"),
            ApiKey::Env(name) => f.debug_tuple("Env").field(name).finish(),
            ApiKey::Value(_) => f.write_str("Value(<redacted>)"),
        }
    }
}

/// The environment variable whose key is sent to OpenAI's own API when no other is named.
pub const OPENAI_KEY_ENV: &str = "OPENAI_API_KEY";

impl ApiKey {
    /// The key rule, in one place: a variable named by the caller (`api_key_env` in the
    /// settings, `--api-key-env`, `PROMPT_API_KEY_ENV`) is sent to whatever server
    /// `base_url` names; without one, [`OPENAI_KEY_ENV`] is sent to OpenAI's own API
    /// (`https://api.openai.com`) only, and any other server gets no key at all.
    ///
    /// ```
    /// use prompt_agent::ApiKey;
    ///
    /// assert!(matches!(ApiKey::for_base_url("https://api.openai.com/v1", None), ApiKey::Env(v) if v == "OPENAI_API_KEY"));
    /// assert!(matches!(ApiKey::for_base_url("http://127.0.0.1:8000/v1", None), ApiKey::None));
    /// assert!(matches!(ApiKey::for_base_url("http://127.0.0.1:8000/v1", Some("VLLM_KEY")), ApiKey::Env(v) if v == "VLLM_KEY"));
    /// ```
    pub fn for_base_url(base_url: &str, api_key_env: Option<&str>) -> ApiKey {
        if let Some(name) = api_key_env.map(str::trim).filter(|n| !n.is_empty()) {
            return ApiKey::Env(name.to_owned());
        }
        if is_openai_host(base_url) {
            ApiKey::Env(OPENAI_KEY_ENV.to_owned())
        } else {
            ApiKey::None
        }
    }

    fn resolve(&self) -> Result<Option<String>, ProviderError> {
        match self {
            ApiKey::None => Ok(None),
            ApiKey::Value(v) => Ok(Some(v.clone())),
            ApiKey::Env(name) => match std::env::var(name) {
                Ok(v) if !v.trim().is_empty() => Ok(Some(v.trim().to_owned())),
                _ => Err(ProviderError::MissingApiKey {
                    provider: NAME.to_owned(),
                    env_var: name.clone(),
                }),
            },
        }
    }
}

/// Whether `base_url` is OpenAI's own API: `https://api.openai.com` on the default port.
fn is_openai_host(base_url: &str) -> bool {
    reqwest::Url::parse(&normalize_base_url(base_url, None)).is_ok_and(|url| {
        url.scheme() == "https" && url.host_str() == Some("api.openai.com") && url.port().is_none()
    })
}

/// A client for an OpenAI-compatible chat completions API (OpenAI, vLLM, llama.cpp's server,
/// LM Studio, Ollama's `/v1`, ...).
#[derive(Debug, Clone)]
pub struct OpenAiProvider {
    base_url: String,
    api_key: ApiKey,
    timeout: Duration,
    client: reqwest::Client,
}

impl OpenAiProvider {
    /// A client for `base_url` (with or without a trailing `/v1`).
    pub fn new(base_url: &str, api_key: ApiKey, timeout: Duration) -> Result<Self, ProviderError> {
        let mut base = normalize_base_url(base_url, None);
        if base.ends_with("/v1") {
            base.truncate(base.len() - 3);
        }
        Ok(Self {
            base_url: base,
            api_key,
            timeout,
            client: http_client(NAME, timeout)?,
        })
    }

    /// The JSON body sent to `POST /v1/chat/completions` for `request`.
    ///
    /// `max_tokens` is sent as `max_tokens`, which every compatible server understands;
    /// `context_size` has no counterpart and is not sent.
    pub fn request_body(request: &ChatRequest) -> Value {
        let mut body = Map::new();
        body.insert("model".into(), json!(request.model()));
        body.insert("messages".into(), messages_json(request, ToolWire::OpenAi));
        let tools = request.options.tool_definitions();
        if !tools.is_empty() {
            body.insert("tools".into(), tools_json(tools));
        }
        if let Some(choice) = &request.options.tool_choice {
            body.insert("tool_choice".into(), tool_choice_json(choice));
        }
        match &request.options.format {
            Some(ResponseFormat::Json) => {
                body.insert("response_format".into(), json!({ "type": "json_object" }));
            }
            Some(ResponseFormat::JsonSchema { name, schema }) => {
                body.insert(
                    "response_format".into(),
                    json!({
                        "type": "json_schema",
                        "json_schema": { "name": name, "schema": schema, "strict": true }
                    }),
                );
            }
            None => {}
        }
        // No context window option in this API.
        body.extend(sampling_options(
            &request.options,
            WireNames {
                max_tokens: "max_tokens",
                context_size: None,
            },
        ));
        Value::Object(body)
    }

    /// The error for a chat call's HTTP error answer; a 408 names the URL and the timeout.
    fn call_error(&self, reply: &Exchange, url: &str, model: &str) -> ProviderError {
        match error_for_status(reply.status, &reply.headers, &reply.body, model) {
            ProviderError::Timeout { provider, .. } => ProviderError::Timeout {
                provider,
                url: url.to_owned(),
                after: self.timeout,
            },
            other => other,
        }
    }

    fn authorize(
        &self,
        builder: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, ProviderError> {
        Ok(match self.api_key.resolve()? {
            Some(key) => builder.bearer_auth(key),
            None => builder,
        })
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    message: Option<String>,
    code: Option<Value>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

fn error_for_status(
    status: u16,
    headers: &reqwest::header::HeaderMap,
    body: &str,
    model: &str,
) -> ProviderError {
    let detail = serde_json::from_str::<ErrorBody>(body)
        .ok()
        .map(|b| b.error);
    let code = detail
        .as_ref()
        .and_then(|d| d.code.as_ref())
        .map(|c| {
            c.as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| c.to_string())
        })
        .unwrap_or_default();
    let kind = detail
        .as_ref()
        .and_then(|d| d.kind.clone())
        .unwrap_or_default();
    let message = detail
        .and_then(|d| d.message)
        .unwrap_or_else(|| snippet(body));
    let provider = NAME.to_owned();
    match status {
        404 => ProviderError::ModelNotFound {
            provider,
            model: model.to_owned(),
            message,
        },
        429 if code == "insufficient_quota" || kind == "insufficient_quota" => {
            ProviderError::QuotaExhausted { provider, message }
        }
        408 => ProviderError::Timeout {
            provider,
            url: String::new(),
            after: Duration::ZERO,
        },
        _ => status_error(NAME, status, headers, message),
    }
}

#[derive(Deserialize)]
struct CompletionBody {
    model: Option<String>,
    choices: Vec<Choice>,
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    message: ChoiceMessage,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct ChoiceMessage {
    content: Option<String>,
    /// Reasoning text, as vLLM and DeepSeek name it.
    reasoning_content: Option<String>,
    /// Reasoning text, as Ollama's and OpenRouter's compatible APIs name it.
    reasoning: Option<String>,
    /// Tool calls (whole in a completion, in pieces in a stream's deltas).
    #[serde(default)]
    tool_calls: Vec<WireToolCall>,
}

/// A tool call as this API sends it; in a stream, a piece of one (`index` says which).
#[derive(Deserialize)]
struct WireToolCall {
    #[serde(default)]
    index: Option<usize>,
    id: Option<String>,
    #[serde(default)]
    function: WireFunction,
}

#[derive(Deserialize, Default)]
struct WireFunction {
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

impl WireToolCall {
    fn into_delta(self, position: usize) -> ToolCallDelta {
        ToolCallDelta {
            index: self.index.unwrap_or(position),
            id: self.id,
            name: self.function.name,
            arguments: self.function.arguments.unwrap_or_default(),
        }
    }
}

impl ChoiceMessage {
    fn reasoning(&mut self) -> Option<String> {
        self.reasoning_content
            .take()
            .or_else(|| self.reasoning.take())
            .filter(|r| !r.is_empty())
    }
}

/// One `data:` frame of a streamed completion.
#[derive(Deserialize)]
struct ChunkBody {
    model: Option<String>,
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    usage: Option<Usage>,
    error: Option<Value>,
}

#[derive(Deserialize)]
struct ChunkChoice {
    delta: Option<ChoiceMessage>,
    finish_reason: Option<String>,
}

/// Whether a response is one JSON document rather than an event stream.
fn is_json(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"))
}

/// A whole chat completion body as a response.
fn completion(
    url: &str,
    body: &str,
    requested_model: &str,
    started: Instant,
) -> Result<ChatResponse, ProviderError> {
    let parsed: CompletionBody = parse_body(NAME, "POST", url, body)?;
    let Some(choice) = parsed.choices.into_iter().next() else {
        return Err(ProviderError::InvalidResponse {
            provider: NAME.to_owned(),
            message: format!("POST {url}: no choices in {}", snippet(body)),
        });
    };
    let usage = parsed.usage;
    let mut message = choice.message;
    // The same assembly as a stream's pieces: one rule for ids and unparsable arguments.
    let mut calls = StreamAssembler::new(requested_model, started);
    for (position, call) in std::mem::take(&mut message.tool_calls)
        .into_iter()
        .enumerate()
    {
        calls.push(&StreamEvent::Delta(Delta::ToolCall(
            call.into_delta(position),
        )));
    }
    Ok(ChatResponse {
        tool_calls: calls.finish().tool_calls,
        reasoning: message.reasoning(),
        content: message.content.unwrap_or_default(),
        model: parsed.model.unwrap_or_else(|| requested_model.to_owned()),
        tokens_prompt: usage.as_ref().and_then(|u| u.prompt_tokens),
        tokens_completion: usage.as_ref().and_then(|u| u.completion_tokens),
        tokens_cached: usage.as_ref().and_then(Usage::cached),
        tokens_reasoning: usage.as_ref().and_then(Usage::reasoning),
        finish_reason: choice.finish_reason,
        latency: started.elapsed(),
        ..ChatResponse::default()
    })
}

/// Turns SSE `data:` frames into events: deltas as they come; the model, usage (sent in a
/// last chunk when `stream_options.include_usage` is set) and finish reason are kept for the
/// `[DONE]` frame, which ends the stream.
#[derive(Default)]
struct ChunkParser {
    end: StreamEnd,
}

impl ChunkParser {
    fn frame(&mut self, data: &str) -> Result<Vec<StreamEvent>, ProviderError> {
        if data.trim() == "[DONE]" {
            return Ok(vec![StreamEvent::Done(std::mem::take(&mut self.end))]);
        }
        let chunk: ChunkBody = serde_json::from_str(data)
            .map_err(|e| broken(NAME, format!("invalid frame ({e}): {}", snippet(data))))?;
        if let Some(error) = chunk.error {
            return Err(broken(NAME, format!("the server reported: {error}")));
        }
        if chunk.model.is_some() {
            self.end.model = chunk.model;
        }
        if let Some(usage) = chunk.usage {
            self.end.tokens_prompt = usage.prompt_tokens;
            self.end.tokens_completion = usage.completion_tokens;
            self.end.tokens_cached = usage.cached();
            self.end.tokens_reasoning = usage.reasoning();
        }
        let mut events = Vec::new();
        for choice in chunk.choices.into_iter().take(1) {
            if choice.finish_reason.is_some() {
                self.end.finish_reason = choice.finish_reason;
            }
            if let Some(mut delta) = choice.delta {
                if let Some(reasoning) = delta.reasoning() {
                    events.push(StreamEvent::Delta(Delta::Reasoning(reasoning)));
                }
                if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                    events.push(StreamEvent::Delta(Delta::Text(text)));
                }
                for (position, call) in delta.tool_calls.into_iter().enumerate() {
                    events.push(StreamEvent::Delta(Delta::ToolCall(
                        call.into_delta(position),
                    )));
                }
            }
        }
        Ok(events)
    }
}

/// OpenAI's usage: `prompt_tokens` includes `prompt_tokens_details.cached_tokens` and
/// `completion_tokens` includes `completion_tokens_details.reasoning_tokens`.
#[derive(Deserialize)]
struct Usage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Deserialize)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct CompletionDetails {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

impl Usage {
    fn cached(&self) -> Option<u64> {
        self.prompt_tokens_details.as_ref()?.cached_tokens
    }

    fn reasoning(&self) -> Option<u64> {
        self.completion_tokens_details.as_ref()?.reasoning_tokens
    }
}

#[async_trait]
impl Provider for OpenAiProvider {
    fn name(&self) -> &str {
        NAME
    }

    fn streams(&self) -> bool {
        true
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        let url = format!("{}/v1/chat/completions", self.base_url);
        let builder = self.authorize(self.client.post(&url))?;
        let started = Instant::now();
        let send = builder.json(&Self::request_body(request));
        let reply = exchange(NAME, &url, self.timeout, send).await?;
        let body = &reply.body;
        if !reply.is_success() {
            return Err(self.call_error(&reply, &url, request.model()));
        }
        completion(&url, body, request.model(), started)
    }

    async fn chat_stream(&self, request: &ChatRequest) -> Result<EventStream, ProviderError> {
        let url = format!("{}/v1/chat/completions", self.base_url);
        let builder = self.authorize(self.client.post(&url))?;
        let mut body = Self::request_body(request);
        body["stream"] = Value::Bool(true);
        body["stream_options"] = json!({ "include_usage": true });
        match open_stream(NAME, &url, self.timeout, builder.json(&body)).await? {
            Ok(response) if is_json(&response) => {
                // A server that ignores `stream` answers with one whole completion.
                let started = Instant::now();
                let body = response
                    .text()
                    .await
                    .map_err(|e| transport_error(NAME, &url, self.timeout, &e))?;
                let whole = completion(&url, &body, request.model(), started)?;
                Ok(whole_reply_events(whole))
            }
            Ok(response) => {
                let data = response
                    .bytes_stream()
                    .eventsource()
                    .map(|event| match event {
                        Ok(event) => Ok(event.data),
                        // The transport's own chain ("error reading a body from connection:
                        // unexpected EOF …"), not the wrapper's "Transport error: error
                        // decoding response body", which hides the cause.
                        Err(EventStreamError::Transport(e)) => Err(broken(NAME, error_chain(&e))),
                        Err(e) => Err(broken(NAME, e.to_string())),
                    });
                let mut parser = ChunkParser::default();
                Ok(frames(NAME, data, move |frame| parser.frame(frame)))
            }
            Err(reply) => Err(self.call_error(&reply, &url, request.model())),
        }
    }

    async fn list_models(&self) -> Result<Vec<String>, ProviderError> {
        #[derive(Deserialize)]
        struct Models {
            data: Vec<Model>,
        }
        #[derive(Deserialize)]
        struct Model {
            id: String,
        }
        let url = format!("{}/v1/models", self.base_url);
        let send = self.authorize(self.client.get(&url))?;
        let reply = exchange(NAME, &url, self.timeout, send).await?;
        if !reply.is_success() {
            return Err(error_for_status(
                reply.status,
                &reply.headers,
                &reply.body,
                "",
            ));
        }
        let models: Models = parse_body(NAME, "GET", &url, &reply.body)?;
        Ok(models.data.into_iter().map(|m| m.id).collect())
    }

    fn base_url(&self) -> Option<&str> {
        Some(&self.base_url)
    }
}
