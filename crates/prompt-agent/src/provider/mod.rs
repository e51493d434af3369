//! The [`Provider`] trait and its implementations. These modules are the only code in
//! promptkit that knows an LLM wire format.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use futures_core::Stream;
use futures_util::StreamExt;

use crate::error::ProviderError;
use crate::request::{
    ChatRequest, ChatResponse, Delta, RequestOptions, StreamEnd, StreamEvent, ToolCallDelta,
};

/// A streamed reply: [`StreamEvent::Delta`]s, then one [`StreamEvent::Done`]. Dropping it
/// closes the connection to the server.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<StreamEvent, ProviderError>> + Send>>;

pub(crate) mod echo;
pub(crate) mod ollama;
pub(crate) mod openai;

/// An LLM server (or an offline stand-in) that answers chat requests.
#[async_trait]
pub trait Provider: Send + Sync + Debug {
    /// Short provider name (`"ollama"`, `"openai"`, `"echo"`), used in metrics, cache keys
    /// and error messages.
    fn name(&self) -> &str;

    /// Sends one request and waits for the whole reply. Implementations do not retry.
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError>;

    /// Whether [`chat_stream`](Self::chat_stream) really streams (the reply as it is
    /// generated). When it does not (the default), agents call [`chat`](Self::chat) instead,
    /// and the reply has no time to first token.
    fn streams(&self) -> bool {
        false
    }

    /// Sends one request and streams the reply as it is generated. The default calls
    /// [`chat`](Self::chat) and yields the whole reply at once, for providers that cannot
    /// stream. Implementations do not retry and set no timeout on the body: the caller
    /// watches the gaps between events and the total time.
    async fn chat_stream(&self, request: &ChatRequest) -> Result<EventStream, ProviderError> {
        Ok(whole_reply_events(self.chat(request).await?))
    }

    /// The models the server offers. The default returns an empty list (unknown).
    async fn list_models(&self) -> Result<Vec<String>, ProviderError> {
        Ok(Vec::new())
    }

    /// Checks that the server answers; returns its models like
    /// [`list_models`](Self::list_models).
    async fn health(&self) -> Result<Vec<String>, ProviderError> {
        self.list_models().await
    }

    /// The base URL requests go to, for providers that talk to a server.
    fn base_url(&self) -> Option<&str> {
        None
    }

    /// Whether the provider runs models on the user's own machines (Ollama, the offline echo
    /// provider): their calls cost 0 unless the price table prices their model. Calls of any
    /// other provider on an unpriced model have an unknown cost.
    fn is_local(&self) -> bool {
        false
    }
}

/// Turns a base URL from config or the environment into `scheme://host[:port][/path]` with no
/// trailing slash. A value without a scheme gets `http://`; when `default_port` is given and
/// the value had neither scheme nor port, that port is added (`"myhost"` →
/// `"http://myhost:11434"` for Ollama).
pub fn normalize_base_url(raw: &str, default_port: Option<u16>) -> String {
    let raw = raw.trim().trim_end_matches('/');
    if raw.contains("://") {
        return raw.to_owned();
    }
    let (host, path) = match raw.find('/') {
        Some(i) => (&raw[..i], &raw[i..]),
        None => (raw, ""),
    };
    let host = if host.is_empty() || host.starts_with(':') {
        format!("127.0.0.1{host}")
    } else {
        host.to_owned()
    };
    let has_port = match host.rfind(':') {
        // "[::1]:11434" has a port, "[::1]" does not.
        Some(i) => !host[i..].contains(']'),
        None => false,
    };
    match default_port {
        Some(port) if !has_port => format!("http://{host}:{port}{path}"),
        _ => format!("http://{host}{path}"),
    }
}

/// Parses a `Retry-After` header value: delta seconds (`"2"`, also `"1.5"`) or an HTTP date
/// (`"Wed, 21 Oct 2015 07:28:00 GMT"`, turned into the time left from now, zero if past).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let left = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(left.to_std().unwrap_or(Duration::ZERO))
}

/// Maps a transport-level reqwest error to a [`ProviderError`].
pub(crate) fn transport_error(
    provider: &str,
    url: &str,
    timeout: Duration,
    err: &reqwest::Error,
) -> ProviderError {
    if err.is_timeout() {
        return ProviderError::Timeout {
            provider: provider.to_owned(),
            url: url.to_owned(),
            after: timeout,
        };
    }
    if err.is_decode() {
        return ProviderError::InvalidResponse {
            provider: provider.to_owned(),
            message: error_chain(err),
        };
    }
    ProviderError::Connection {
        provider: provider.to_owned(),
        url: url.to_owned(),
        message: error_chain(err),
    }
}

/// The error and its sources joined with `": "`, without reqwest's generic wrappers
/// ("error sending request for url (…)", "client error (Connect)"), which repeat the URL the
/// caller already names and hide the cause: `tcp connect error: Connection refused (os error
/// 111)` is what a user needs to read.
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    // reqwest calls every failure while reading a body a decoding error, even a dropped
    // connection; the cause below it says what happened.
    let is_wrapper = |p: &String| {
        p.starts_with("error sending request for url")
            || p.starts_with("client error (")
            || p == "error decoding response body"
    };
    let useful: Vec<&String> = parts.iter().filter(|p| !is_wrapper(p)).collect();
    if useful.is_empty() {
        parts.join(": ")
    } else {
        let useful: Vec<&str> = useful.into_iter().map(String::as_str).collect();
        useful.join(": ")
    }
}

/// How a wire format spells tool calls and results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ToolWire {
    /// Ollama: `{"function": {"name", "arguments": {…}}}`; results are `{"role": "tool",
    /// "tool_name", "content"}`.
    Ollama,
    /// OpenAI: `{"id", "type": "function", "function": {"name", "arguments": "<JSON text>"}}`;
    /// results are `{"role": "tool", "tool_call_id", "content"}`.
    OpenAi,
}

/// The conversation as a wire format sends it: `[{"role": …, "content": …}, …]`, with an
/// assistant turn's tool calls and a tool result's call id where present.
pub(crate) fn messages_json(request: &ChatRequest, wire: ToolWire) -> serde_json::Value {
    use serde_json::{Value, json};
    let name_of = |id: &str| {
        request
            .messages
            .iter()
            .flat_map(|m| &m.tool_calls)
            .find(|c| c.id == id)
            .map(|c| c.name.clone())
    };
    request
        .messages
        .iter()
        .map(|m| {
            let mut out = json!({ "role": m.role.as_str(), "content": m.content });
            if !m.tool_calls.is_empty() {
                let calls: Vec<Value> = m
                    .tool_calls
                    .iter()
                    .map(|c| match wire {
                        ToolWire::Ollama => {
                            json!({"function": {"name": c.name, "arguments": c.arguments}})
                        }
                        ToolWire::OpenAi => json!({
                            "id": c.id,
                            "type": "function",
                            "function": {"name": c.name, "arguments": c.arguments.to_string()},
                        }),
                    })
                    .collect();
                out["tool_calls"] = Value::Array(calls);
            }
            if let Some(id) = &m.tool_call_id {
                match wire {
                    ToolWire::OpenAi => out["tool_call_id"] = json!(id),
                    ToolWire::Ollama => {
                        if let Some(name) = name_of(id) {
                            out["tool_name"] = json!(name);
                        }
                    }
                }
            }
            out
        })
        .collect()
}

/// The offered tools as both wire formats send them:
/// `[{"type": "function", "function": {"name", "description", "parameters"}}]`.
pub(crate) fn tools_json(tools: &[crate::request::ToolDefinition]) -> serde_json::Value {
    tools
        .iter()
        .map(|t| {
            let mut function = serde_json::json!({ "name": t.name, "parameters": t.parameters });
            if let Some(d) = &t.description {
                function["description"] = serde_json::json!(d);
            }
            serde_json::json!({ "type": "function", "function": function })
        })
        .collect()
}

/// The events of a reply that arrived whole: its reasoning and text as one delta each, then
/// the end.
pub fn whole_reply_events(response: ChatResponse) -> EventStream {
    let mut events = Vec::with_capacity(3);
    if let Some(reasoning) = response.reasoning.filter(|r| !r.is_empty()) {
        events.push(Ok(StreamEvent::Delta(Delta::Reasoning(reasoning))));
    }
    if !response.content.is_empty() {
        events.push(Ok(StreamEvent::Delta(Delta::Text(response.content))));
    }
    for (index, call) in response.tool_calls.into_iter().enumerate() {
        events.push(Ok(StreamEvent::Delta(Delta::ToolCall(ToolCallDelta {
            index,
            id: Some(call.id),
            name: Some(call.name),
            arguments: match call.arguments {
                serde_json::Value::String(raw) => raw,
                other => other.to_string(),
            },
        }))));
    }
    events.push(Ok(StreamEvent::Done(StreamEnd {
        model: Some(response.model),
        tokens_prompt: response.tokens_prompt,
        tokens_completion: response.tokens_completion,
        tokens_cached: response.tokens_cached,
        tokens_reasoning: response.tokens_reasoning,
        finish_reason: response.finish_reason,
    })));
    Box::pin(futures_util::stream::iter(events))
}

/// A broken-stream error (the characters received are filled in by whoever counted them).
pub(crate) fn broken(provider: &str, message: impl Into<String>) -> ProviderError {
    ProviderError::StreamBroken {
        provider: provider.to_owned(),
        message: message.into(),
        received_chars: 0,
    }
}

/// Drives a stream of frames (NDJSON lines, SSE `data:` fields) through `parse`, which turns
/// each frame into events. Ends after the first [`StreamEvent::Done`]; a stream that ends
/// before it, or breaks, yields one [`ProviderError::StreamBroken`] (or the transport's
/// error) and ends. Stream errors carry the characters of the deltas yielded before them.
pub(crate) fn frames<S, F>(provider: &'static str, inner: S, parse: F) -> EventStream
where
    S: Stream<Item = Result<String, ProviderError>> + Send + 'static,
    F: FnMut(&str) -> Result<Vec<StreamEvent>, ProviderError> + Send + 'static,
{
    struct State<S, F> {
        inner: Pin<Box<S>>,
        parse: F,
        pending: VecDeque<StreamEvent>,
        finished: bool,
        /// Characters of the deltas yielded so far.
        received: usize,
    }
    let state = State {
        inner: Box::pin(inner),
        parse,
        pending: VecDeque::new(),
        finished: false,
        received: 0,
    };
    Box::pin(futures_util::stream::unfold(
        state,
        move |mut st| async move {
            loop {
                if let Some(event) = st.pending.pop_front() {
                    match &event {
                        StreamEvent::Delta(delta) => st.received += delta.text().chars().count(),
                        StreamEvent::Done(_) => {
                            st.pending.clear();
                            st.finished = true;
                        }
                    }
                    return Some((Ok(event), st));
                }
                if st.finished {
                    return None;
                }
                match st.inner.next().await {
                    Some(Ok(frame)) => match (st.parse)(&frame) {
                        Ok(events) => st.pending.extend(events),
                        Err(e) => {
                            st.finished = true;
                            let e = e.with_received(st.received);
                            return Some((Err(e), st));
                        }
                    },
                    Some(Err(e)) => {
                        st.finished = true;
                        let e = e.with_received(st.received);
                        return Some((Err(e), st));
                    }
                    None => {
                        st.finished = true;
                        let e = broken(provider, "the stream ended before its final frame");
                        return Some((Err(e.with_received(st.received)), st));
                    }
                }
            }
        },
    ))
}

/// Sends a streaming request. `Ok(Ok(response))` when the server answered 2xx (its body not
/// read yet); `Ok(Err(exchange))` with the whole body of an error answer.
pub(crate) async fn open_stream(
    provider: &str,
    url: &str,
    connect_timeout: Duration,
    request: reqwest::RequestBuilder,
) -> Result<Result<reqwest::Response, Exchange>, ProviderError> {
    let response = request
        .send()
        .await
        .map_err(|e| transport_error(provider, url, connect_timeout, &e))?;
    let status = response.status().as_u16();
    if (200..300).contains(&status) {
        return Ok(Ok(response));
    }
    let headers = response.headers().clone();
    let body = response
        .text()
        .await
        .map_err(|e| transport_error(provider, url, connect_timeout, &e))?;
    Ok(Err(Exchange {
        status,
        headers,
        body,
    }))
}

/// The body of a response as text lines (NDJSON), a transport failure as a broken stream.
pub(crate) fn body_lines(
    provider: &'static str,
    response: reqwest::Response,
) -> impl Stream<Item = Result<String, ProviderError>> + Send + 'static {
    struct State {
        body: Pin<Box<dyn Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
        buffer: Vec<u8>,
        ended: bool,
    }
    let state = State {
        body: Box::pin(response.bytes_stream()),
        buffer: Vec::new(),
        ended: false,
    };
    futures_util::stream::unfold(state, move |mut st| async move {
        loop {
            if let Some(end) = st.buffer.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = st.buffer.drain(..=end).collect();
                let text = String::from_utf8_lossy(&line).trim().to_owned();
                if text.is_empty() {
                    continue;
                }
                return Some((Ok(text), st));
            }
            if st.ended {
                // A last line without its newline is still a frame.
                if st.buffer.iter().any(|b| !b.is_ascii_whitespace()) {
                    let text = String::from_utf8_lossy(&st.buffer).trim().to_owned();
                    st.buffer.clear();
                    return Some((Ok(text), st));
                }
                return None;
            }
            match st.body.next().await {
                Some(Ok(chunk)) => st.buffer.extend_from_slice(&chunk),
                Some(Err(e)) => {
                    st.ended = true;
                    st.buffer.clear();
                    return Some((Err(broken(provider, error_chain(&e))), st));
                }
                None => st.ended = true,
            }
        }
    })
}

/// What a wire format calls the typed request options that have no common name.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WireNames {
    /// The token limit (`num_predict`, `max_tokens`).
    pub(crate) max_tokens: &'static str,
    /// The context window, where the format has one (`num_ctx`).
    pub(crate) context_size: Option<&'static str>,
}

/// The sampling options of a request as a wire format names them: temperature, token limit,
/// context size (where the format has it), seed, stop sequences, then `top_p` and the
/// provider options. Options never sent (the length bounds, checked by the agent) and the
/// ones each format shapes itself (model, response format) are left to the caller; absent
/// options are omitted so the server's defaults apply.
pub(crate) fn sampling_options(
    options: &RequestOptions,
    names: WireNames,
) -> serde_json::Map<String, serde_json::Value> {
    use serde_json::json;
    let RequestOptions {
        model: _,  // each format places it
        format: _, // each format shapes it
        temperature,
        top_p: _, // in wire_options()
        max_tokens,
        seed,
        stop: _, // stop_sequences()
        context_size,
        provider_options: _, // in wire_options()
        min_length: _,       // checked by the agent, never sent
        max_length: _,
        tools: _,       // each format places them (tools_json)
        tool_choice: _, // each format shapes it
        sample: _,      // a cache key matter, never sent
    } = options;
    let typed = [
        (Some("temperature"), temperature.map(|t| json!(t))),
        (Some(names.max_tokens), max_tokens.map(|n| json!(n))),
        (names.context_size, context_size.map(|n| json!(n))),
        (Some("seed"), seed.map(|s| json!(s))),
    ];
    let mut out = serde_json::Map::new();
    for (name, value) in typed {
        if let (Some(name), Some(value)) = (name, value) {
            out.insert(name.to_owned(), value);
        }
    }
    let stop = options.stop_sequences();
    if !stop.is_empty() {
        out.insert("stop".to_owned(), json!(stop));
    }
    out.extend(options.wire_options());
    out
}

/// Builds the shared reqwest client for a provider.
pub(crate) fn http_client(
    provider: &str,
    timeout: Duration,
) -> Result<reqwest::Client, ProviderError> {
    // No total timeout on the client: a streamed body may take as long as the caller allows
    // (the agent watches idle gaps and the wall clock); `exchange` sets one per request.
    reqwest::Client::builder()
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .user_agent(concat!("promptkit/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ProviderError::Setup {
            provider: provider.to_owned(),
            message: format!("cannot build HTTP client: {}", error_chain(&e)),
        })
}

/// Shortens a server body for an error message.
pub(crate) fn snippet(body: &str) -> String {
    const MAX: usize = 300;
    let body = body.trim();
    if body.chars().count() <= MAX {
        body.to_owned()
    } else {
        let cut: String = body.chars().take(MAX).collect();
        format!("{cut}…")
    }
}

/// A finished HTTP exchange: the status, the headers and the whole body.
#[derive(Debug)]
pub(crate) struct Exchange {
    pub(crate) status: u16,
    pub(crate) headers: reqwest::header::HeaderMap,
    pub(crate) body: String,
}

impl Exchange {
    /// Whether the status is 2xx.
    pub(crate) fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Sends `request` and reads the whole body, mapping transport failures (refused, reset,
/// timed out, dropped mid-body) to [`ProviderError`]s that name `url`.
pub(crate) async fn exchange(
    provider: &str,
    url: &str,
    timeout: Duration,
    request: reqwest::RequestBuilder,
) -> Result<Exchange, ProviderError> {
    let response = request
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| transport_error(provider, url, timeout, &e))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .text()
        .await
        .map_err(|e| transport_error(provider, url, timeout, &e))?;
    Ok(Exchange {
        status,
        headers,
        body,
    })
}

/// Parses a JSON response body; an [`ProviderError::InvalidResponse`] naming the call
/// (`method url`) and quoting the start of the body otherwise.
pub(crate) fn parse_body<T: serde::de::DeserializeOwned>(
    provider: &str,
    method: &str,
    url: &str,
    body: &str,
) -> Result<T, ProviderError> {
    serde_json::from_str(body).map_err(|e| ProviderError::InvalidResponse {
        provider: provider.to_owned(),
        message: format!("{method} {url}: {e}: {}", snippet(body)),
    })
}

/// The mapping of an HTTP error status every provider shares, after its own special cases:
/// 401/403 authentication, 429 rate limited (with `Retry-After`), 5xx server error, any other
/// status a bad request.
pub(crate) fn status_error(
    provider: &str,
    status: u16,
    headers: &reqwest::header::HeaderMap,
    message: String,
) -> ProviderError {
    let provider = provider.to_owned();
    match status {
        401 | 403 => ProviderError::Auth {
            provider,
            status,
            message,
        },
        429 => ProviderError::RateLimited {
            provider,
            retry_after: retry_after_header(headers),
            message,
        },
        500..=599 => ProviderError::Server {
            provider,
            status,
            message,
        },
        _ => ProviderError::BadRequest {
            provider,
            status,
            message,
        },
    }
}

/// `Retry-After` (or `retry-after-ms`) from response headers.
pub(crate) fn retry_after_header(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v >= 0.0)
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_normalized() {
        let cases = [
            (
                "http://localhost:11434/",
                Some(11434),
                "http://localhost:11434",
            ),
            ("127.0.0.1:11434", Some(11434), "http://127.0.0.1:11434"),
            ("myhost", Some(11434), "http://myhost:11434"),
            (":9999", Some(11434), "http://127.0.0.1:9999"),
            ("[::1]", Some(11434), "http://[::1]:11434"),
            ("[::1]:5000", Some(11434), "http://[::1]:5000"),
            (
                "https://api.example.com/v1",
                None,
                "https://api.example.com/v1",
            ),
            ("api.example.com/v1/", None, "http://api.example.com/v1"),
        ];
        for (raw, port, want) in cases {
            assert_eq!(normalize_base_url(raw, port), want, "input {raw:?}");
        }
    }

    #[test]
    fn retry_after_values() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("1.5"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_retry_after("-3"), None);
        assert_eq!(parse_retry_after("soon"), None);
        // A date in the past means "now".
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        let future = (chrono::Utc::now() + chrono::Duration::seconds(120))
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let left = parse_retry_after(&future).expect("HTTP date parses");
        assert!(
            left > Duration::from_secs(60) && left <= Duration::from_secs(120),
            "{left:?}"
        );
    }
}
