//! The `tracing` span of one generation, with the OpenTelemetry GenAI semantic conventions'
//! attribute names. This crate only emits spans; the binary decides whether and where they are
//! exported (`tracing-opentelemetry` reads `otel.name`, `otel.kind` and `otel.status_code`).
//!
//! | attribute | value |
//! | --- | --- |
//! | span name (`otel.name`) | `chat {model}` |
//! | `gen_ai.operation.name` | `chat` |
//! | `gen_ai.provider.name` | the provider (`openai`, `ollama`, `echo`) |
//! | `gen_ai.request.model`, `gen_ai.request.temperature`, `gen_ai.request.max_tokens` | the request's |
//! | `gen_ai.response.model`, `gen_ai.response.finish_reasons` | the reply's (the finish reason as one string) |
//! | `gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens` | tokens spent by this call (none for a cache hit) |
//! | `error.type` | the failure's kind (`timeout`, `validation`, `budget`, …) |
//! | `gen_ai.agent.name`, `promptkit.agent`, `promptkit.task`, `promptkit.template_version` | who asked |
//! | `promptkit.cache_hit`, `promptkit.retries` | how it was answered |
//! | `promptkit.cost_usd`, `promptkit.saved_usd`, `promptkit.tags` | what it cost (tags comma-separated) |
//! | `gen_ai.input.messages`, `gen_ai.output.messages` | only with content capture on (`--otel-content`): the conventions' JSON messages |

use prompt_metrics::PromptMetrics;
use serde_json::json;
use tracing::Span;
use tracing::field::Empty;

use crate::request::{ChatRequest, ChatResponse};

/// The span of one generation of `request`, before anything is known of its outcome.
pub(crate) fn generation_span(
    provider: &str,
    agent: &str,
    task: &str,
    request: &ChatRequest,
    capture_content: bool,
) -> Span {
    let model = request.model();
    let span = tracing::info_span!(
        "chat",
        otel.name = %format_args!("chat {model}"),
        otel.kind = "client",
        otel.status_code = Empty,
        gen_ai.operation.name = "chat",
        gen_ai.provider.name = %provider,
        gen_ai.agent.name = %agent,
        gen_ai.request.model = %model,
        gen_ai.request.temperature = request.options.temperature,
        gen_ai.request.max_tokens = request.options.max_tokens,
        gen_ai.response.model = Empty,
        gen_ai.response.finish_reasons = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        error.type = Empty,
        promptkit.agent = %agent,
        promptkit.task = %task,
        promptkit.template_version = Empty,
        promptkit.cache_hit = Empty,
        promptkit.retries = Empty,
        promptkit.cost_usd = Empty,
        promptkit.saved_usd = Empty,
        promptkit.tags = Empty,
        gen_ai.input.messages = Empty,
        gen_ai.output.messages = Empty,
    );
    if capture_content && !span.is_disabled() {
        let messages: Vec<_> = request
            .messages
            .iter()
            .map(|m| {
                json!({
                    "role": m.role.as_str(),
                    "parts": [{"type": "text", "content": m.content}],
                })
            })
            .collect();
        span.record(
            "gen_ai.input.messages",
            serde_json::Value::Array(messages).to_string(),
        );
    }
    span
}

/// Fills the current span's outcome from the call's metrics record (the one place both agree).
pub(crate) fn record_outcome(record: &PromptMetrics) {
    let span = Span::current();
    if span.is_disabled() {
        return;
    }
    span.record("gen_ai.response.model", record.model.as_str());
    if let Some(n) = record.tokens_prompt {
        span.record("gen_ai.usage.input_tokens", n);
    }
    if let Some(n) = record.tokens_completion {
        span.record("gen_ai.usage.output_tokens", n);
    }
    if let Some(v) = record.template_version {
        span.record("promptkit.template_version", v);
    }
    span.record("promptkit.cache_hit", record.cache_hit);
    span.record("promptkit.retries", record.retry_count);
    if let Some(c) = record.cost_usd {
        span.record("promptkit.cost_usd", c);
    }
    if let Some(c) = record.saved_usd {
        span.record("promptkit.saved_usd", c);
    }
    if !record.tags.is_empty() {
        span.record("promptkit.tags", record.tags.join(",").as_str());
    }
    if record.error.is_some() {
        span.record("otel.status_code", "error");
    }
}

/// Records the reply's finish reason, and its text when content capture is on.
pub(crate) fn record_reply(response: &ChatResponse, capture_content: bool) {
    let span = Span::current();
    if span.is_disabled() {
        return;
    }
    if let Some(reason) = &response.finish_reason {
        span.record("gen_ai.response.finish_reasons", reason.as_str());
    }
    if capture_content {
        let finish = response.finish_reason.as_deref().unwrap_or("stop");
        let messages = json!([{
            "role": "assistant",
            "parts": [{"type": "text", "content": response.content}],
            "finish_reason": finish,
        }]);
        span.record("gen_ai.output.messages", messages.to_string());
    }
}

/// Records a failure's kind as `error.type`.
pub(crate) fn record_error(kind: &str) {
    let span = Span::current();
    span.record("error.type", kind);
    span.record("otel.status_code", "error");
}
