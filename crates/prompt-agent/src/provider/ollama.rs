//! Ollama's native API: `POST /api/chat`, `GET /api/tags`.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{
    EventStream, Provider, ToolWire, WireNames, body_lines, broken, exchange, frames, http_client,
    messages_json, normalize_base_url, open_stream, parse_body, sampling_options, snippet,
    status_error, tools_json,
};
use crate::error::ProviderError;
use crate::request::{
    ChatRequest, ChatResponse, Delta, ResponseFormat, StreamAssembler, StreamEnd, StreamEvent,
    ToolCallDelta,
};

const NAME: &str = "ollama";

/// Ollama's default address.
pub const OLLAMA_DEFAULT_URL: &str = "http://localhost:11434";

/// A client for an Ollama server's native chat API.
#[derive(Debug, Clone)]
pub struct OllamaProvider {
    base_url: String,
    timeout: Duration,
    client: reqwest::Client,
}

impl OllamaProvider {
    /// A client for the server at `base_url` (scheme optional, `"127.0.0.1:11434"` works) with
    /// the given per-request timeout.
    pub fn new(base_url: &str, timeout: Duration) -> Result<Self, ProviderError> {
        Ok(Self {
            base_url: normalize_base_url(base_url, Some(11434)),
            timeout,
            client: http_client(NAME, timeout)?,
        })
    }

    /// A client for `base_url` when given, else `OLLAMA_HOST`, else
    /// [`OLLAMA_DEFAULT_URL`].
    pub fn from_config(base_url: Option<&str>, timeout: Duration) -> Result<Self, ProviderError> {
        Self::new(&Self::resolve_base_url(base_url), timeout)
    }

    /// The base URL [`from_config`](Self::from_config) would use.
    pub fn resolve_base_url(base_url: Option<&str>) -> String {
        let chosen = match base_url.map(str::trim).filter(|s| !s.is_empty()) {
            Some(url) => url.to_owned(),
            None => std::env::var("OLLAMA_HOST")
                .ok()
                .filter(|s| !s.trim().is_empty())
                .unwrap_or_else(|| OLLAMA_DEFAULT_URL.to_owned()),
        };
        normalize_base_url(&chosen, Some(11434))
    }

    /// The JSON body sent to `POST /api/chat` for `request`.
    pub fn request_body(request: &ChatRequest) -> Value {
        let options = sampling_options(
            &request.options,
            WireNames {
                max_tokens: "num_predict",
                context_size: Some("num_ctx"),
            },
        );
        let mut body = Map::new();
        body.insert("model".into(), json!(request.model()));
        body.insert("messages".into(), messages_json(request, ToolWire::Ollama));
        body.insert("stream".into(), Value::Bool(false));
        // Ollama has no tool choice: the model decides whether to call one.
        let tools = request.options.tool_definitions();
        if !tools.is_empty() {
            body.insert("tools".into(), tools_json(tools));
        }
        if !options.is_empty() {
            body.insert("options".into(), Value::Object(options));
        }
        match &request.options.format {
            Some(ResponseFormat::Json) => {
                body.insert("format".into(), json!("json"));
            }
            Some(ResponseFormat::JsonSchema { schema, .. }) => {
                body.insert("format".into(), schema.clone());
            }
            None => {}
        }
        Value::Object(body)
    }

    /// The models the server has pulled (`GET /api/tags`).
    pub async fn list_models(&self) -> Result<Vec<String>, ProviderError> {
        #[derive(Deserialize)]
        struct Tags {
            models: Vec<Tag>,
        }
        #[derive(Deserialize)]
        struct Tag {
            name: String,
        }
        let url = format!("{}/api/tags", self.base_url);
        let reply = exchange(NAME, &url, self.timeout, self.client.get(&url)).await?;
        if !reply.is_success() {
            return Err(error_for_status(
                reply.status,
                &reply.headers,
                &reply.body,
                "",
            ));
        }
        let tags: Tags = parse_body(NAME, "GET", &url, &reply.body)?;
        Ok(tags.models.into_iter().map(|t| t.name).collect())
    }
}

fn error_message(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| snippet(body))
}

fn error_for_status(
    status: u16,
    headers: &reqwest::header::HeaderMap,
    body: &str,
    model: &str,
) -> ProviderError {
    let message = error_message(body);
    let lower = message.to_ascii_lowercase();
    if status == 404 && (lower.contains("not found") || lower.contains("model")) {
        return ProviderError::ModelNotFound {
            provider: NAME.to_owned(),
            model: model.to_owned(),
            message,
        };
    }
    status_error(NAME, status, headers, message)
}

#[derive(Deserialize)]
struct ChatBody {
    model: Option<String>,
    message: Option<MessageBody>,
    prompt_eval_count: Option<u64>,
    eval_count: Option<u64>,
    done_reason: Option<String>,
    error: Option<String>,
}

#[derive(Deserialize)]
struct MessageBody {
    content: Option<String>,
    /// Reasoning text, sent apart by thinking models.
    thinking: Option<String>,
    /// Tool calls, each whole.
    #[serde(default)]
    tool_calls: Vec<WireToolCall>,
}

/// A tool call as Ollama sends it: `{"function": {"name", "arguments": {…}}}` (newer servers
/// add an `id`; arguments are an object, or its JSON text on some servers).
#[derive(Deserialize)]
struct WireToolCall {
    id: Option<String>,
    function: WireFunction,
}

#[derive(Deserialize)]
struct WireFunction {
    #[serde(default)]
    name: String,
    #[serde(default)]
    arguments: Value,
}

/// The tool calls of one message as deltas, numbered from `first`.
fn tool_call_deltas(calls: Vec<WireToolCall>, first: usize) -> impl Iterator<Item = Delta> {
    calls.into_iter().enumerate().map(move |(i, call)| {
        Delta::ToolCall(ToolCallDelta {
            index: first + i,
            id: call.id,
            name: Some(call.function.name),
            arguments: match call.function.arguments {
                Value::String(text) => text,
                Value::Null => String::new(),
                other => other.to_string(),
            },
        })
    })
}

/// One NDJSON line of a streamed `/api/chat` reply.
#[derive(Deserialize)]
struct StreamLine {
    model: Option<String>,
    message: Option<MessageBody>,
    #[serde(default)]
    done: bool,
    done_reason: Option<String>,
    prompt_eval_count: Option<u64>,
    eval_count: Option<u64>,
    error: Option<String>,
}

/// The events of one streamed line; `calls` counts the tool calls seen so far (Ollama sends
/// each whole, possibly over several lines).
fn stream_line_events(line: &str, calls: &mut usize) -> Result<Vec<StreamEvent>, ProviderError> {
    let parsed: StreamLine = serde_json::from_str(line)
        .map_err(|e| broken(NAME, format!("invalid frame ({e}): {}", snippet(line))))?;
    if let Some(message) = parsed.error {
        return Err(broken(NAME, format!("the server reported: {message}")));
    }
    let mut events = Vec::with_capacity(2);
    if let Some(message) = parsed.message {
        for delta in [
            message.thinking.map(Delta::Reasoning),
            message.content.map(Delta::Text),
        ]
        .into_iter()
        .flatten()
        {
            if !delta.text().is_empty() {
                events.push(StreamEvent::Delta(delta));
            }
        }
        let n = message.tool_calls.len();
        events.extend(tool_call_deltas(message.tool_calls, *calls).map(StreamEvent::Delta));
        *calls += n;
    }
    if parsed.done {
        events.push(StreamEvent::Done(StreamEnd {
            model: parsed.model,
            tokens_prompt: parsed.prompt_eval_count,
            tokens_completion: parsed.eval_count,
            finish_reason: parsed.done_reason,
            ..StreamEnd::default()
        }));
    }
    Ok(events)
}

#[async_trait]
impl Provider for OllamaProvider {
    fn name(&self) -> &str {
        NAME
    }

    fn streams(&self) -> bool {
        true
    }

    fn is_local(&self) -> bool {
        true
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        let url = format!("{}/api/chat", self.base_url);
        let started = Instant::now();
        let send = self.client.post(&url).json(&Self::request_body(request));
        let reply = exchange(NAME, &url, self.timeout, send).await?;
        let (status, body) = (reply.status, &reply.body);
        if !reply.is_success() {
            return Err(error_for_status(
                status,
                &reply.headers,
                body,
                request.model(),
            ));
        }
        let parsed: ChatBody = parse_body(NAME, "POST", &url, body)?;
        if let Some(message) = parsed.error {
            let lower = message.to_ascii_lowercase();
            return Err(if lower.contains("not found") {
                ProviderError::ModelNotFound {
                    provider: NAME.to_owned(),
                    model: request.model().to_owned(),
                    message,
                }
            } else {
                ProviderError::Server {
                    provider: NAME.to_owned(),
                    status,
                    message,
                }
            });
        }
        let Some(message) = parsed.message.filter(|m| m.content.is_some()) else {
            return Err(ProviderError::InvalidResponse {
                provider: NAME.to_owned(),
                message: format!("POST {url}: no message.content in {}", snippet(body)),
            });
        };
        // The same assembly as a stream's pieces: one rule for ids and unparsable arguments.
        let mut calls = StreamAssembler::new(request.model(), started);
        for delta in tool_call_deltas(message.tool_calls, 0) {
            calls.push(&StreamEvent::Delta(delta));
        }
        Ok(ChatResponse {
            content: message.content.unwrap_or_default(),
            reasoning: message.thinking.filter(|t| !t.is_empty()),
            tool_calls: calls.finish().tool_calls,
            model: parsed.model.unwrap_or_else(|| request.model().to_owned()),
            tokens_prompt: parsed.prompt_eval_count,
            tokens_completion: parsed.eval_count,
            finish_reason: parsed.done_reason,
            latency: started.elapsed(),
            ..ChatResponse::default()
        })
    }

    async fn chat_stream(&self, request: &ChatRequest) -> Result<EventStream, ProviderError> {
        let url = format!("{}/api/chat", self.base_url);
        let mut body = Self::request_body(request);
        body["stream"] = Value::Bool(true);
        let send = self.client.post(&url).json(&body);
        match open_stream(NAME, &url, self.timeout, send).await? {
            Ok(response) => {
                let mut calls = 0;
                Ok(frames(NAME, body_lines(NAME, response), move |line| {
                    stream_line_events(line, &mut calls)
                }))
            }
            Err(reply) => Err(error_for_status(
                reply.status,
                &reply.headers,
                &reply.body,
                request.model(),
            )),
        }
    }

    async fn list_models(&self) -> Result<Vec<String>, ProviderError> {
        OllamaProvider::list_models(self).await
    }

    fn base_url(&self) -> Option<&str> {
        Some(&self.base_url)
    }
}
