//! Error types: [`ProviderError`] for one provider call, [`AgentError`] for a whole generation.

use std::time::Duration;

/// Why one call to a provider failed.
///
/// Every variant names the provider; [`is_retryable`](Self::is_retryable) says whether trying
/// the same request again may succeed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// The connection was refused, reset or closed before a complete answer arrived.
    #[error("{provider}: connection to {url} failed: {message}")]
    Connection {
        /// Provider name.
        provider: String,
        /// The URL that was called.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// No complete answer within the request timeout.
    #[error("{provider}: no answer from {url} within {}s", .after.as_secs_f64())]
    Timeout {
        /// Provider name.
        provider: String,
        /// The URL that was called.
        url: String,
        /// The timeout that expired.
        after: Duration,
    },
    /// HTTP 429: too many requests; try again after `retry_after` when given.
    #[error("{provider}: rate limited (HTTP 429){}: {message}", fmt_retry_after(*.retry_after))]
    RateLimited {
        /// Provider name.
        provider: String,
        /// The server's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
        /// The server's message.
        message: String,
    },
    /// The account's quota or credit is used up (HTTP 429 `insufficient_quota`); retrying
    /// does not help.
    #[error("{provider}: quota exhausted: {message}")]
    QuotaExhausted {
        /// Provider name.
        provider: String,
        /// The server's message.
        message: String,
    },
    /// HTTP 5xx.
    #[error("{provider}: server error (HTTP {status}): {message}")]
    Server {
        /// Provider name.
        provider: String,
        /// HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// The server does not have the requested model.
    #[error(
        "{provider}: model {model:?} not found: {message}{}",
        model_hint(provider)
    )]
    ModelNotFound {
        /// Provider name.
        provider: String,
        /// The model that was requested.
        model: String,
        /// The server's message.
        message: String,
    },
    /// HTTP 401/403: the API key is missing, wrong or lacks permission.
    #[error("{provider}: not authorized (HTTP {status}): {message}")]
    Auth {
        /// Provider name.
        provider: String,
        /// HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// Any other HTTP 4xx: the request itself is wrong.
    #[error("{provider}: bad request (HTTP {status}): {message}")]
    BadRequest {
        /// Provider name.
        provider: String,
        /// HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// The answer arrived but is not what the provider's API promises (not JSON, truncated,
    /// a field missing).
    #[error("{provider}: invalid response body: {message}")]
    InvalidResponse {
        /// Provider name.
        provider: String,
        /// What is wrong with it.
        message: String,
    },
    /// The environment variable that should hold the API key is unset or empty.
    #[error("{provider}: API key environment variable {env_var} is not set")]
    MissingApiKey {
        /// Provider name.
        provider: String,
        /// Name of the variable.
        env_var: String,
    },
    /// A streamed reply stopped arriving: no data for `idle` after `received_chars` characters.
    #[error("{provider}: stream from {url} stalled: no data for {} s after {} characters", .idle.as_secs_f64(), thousands(*.received_chars))]
    Stalled {
        /// Provider name.
        provider: String,
        /// The URL that was called.
        url: String,
        /// The longest gap allowed between two chunks (the idle timeout).
        idle: Duration,
        /// Characters (text and reasoning) received before the stall.
        received_chars: usize,
    },
    /// A streamed reply broke off: the connection dropped, the stream ended without its final
    /// frame, or a frame was not valid.
    #[error("{provider}: stream broken after {} characters: {message}", thousands(*.received_chars))]
    StreamBroken {
        /// Provider name.
        provider: String,
        /// What went wrong.
        message: String,
        /// Characters (text and reasoning) received before it broke.
        received_chars: usize,
    },
    /// The provider's circuit breaker is open after repeated failures: calls fail at once until
    /// `retry_in` has passed, when one probe call goes through.
    #[error("{provider}: circuit open after {failures} consecutive failures; next try in {}s", .retry_in.as_secs_f64().ceil())]
    CircuitOpen {
        /// Provider name.
        provider: String,
        /// Consecutive failed attempts that opened it.
        failures: u32,
        /// Time left until a probe call is let through.
        retry_in: Duration,
    },
    /// No permit of the concurrency limiter within the allowed wait.
    #[error("{provider}: no free slot among the {permits} concurrent calls within {}s", .waited.as_secs_f64())]
    Busy {
        /// Provider name.
        provider: String,
        /// The concurrency limit.
        permits: usize,
        /// How long the call waited.
        waited: Duration,
    },
    /// The provider could not be set up (bad base URL, TLS backend failure).
    #[error("{provider}: {message}")]
    Setup {
        /// Provider name.
        provider: String,
        /// What is wrong.
        message: String,
    },
}

/// `1234567` as `1,234,567`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn fmt_retry_after(retry_after: Option<Duration>) -> String {
    match retry_after {
        Some(d) => format!(", retry after {}s", d.as_secs_f64()),
        None => String::new(),
    }
}

fn model_hint(provider: &str) -> &'static str {
    if provider == "ollama" {
        " (pull it with `ollama pull <model>` or pick another model)"
    } else {
        ""
    }
}

impl ProviderError {
    /// Whether the same request may succeed if tried again: connection failures, timeouts,
    /// rate limits, 5xx and invalid (e.g. truncated) bodies are; quota, auth, model not found
    /// and other 4xx are not.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ProviderError::Connection { .. }
                | ProviderError::Timeout { .. }
                | ProviderError::RateLimited { .. }
                | ProviderError::Server { .. }
                | ProviderError::InvalidResponse { .. }
                | ProviderError::Stalled { .. }
                | ProviderError::StreamBroken { .. }
        )
    }

    /// Whether the failure says the provider itself is unwell (it counts toward opening the
    /// circuit breaker): connection errors, timeouts, stalls, broken streams and 5xx.
    pub fn is_provider_failure(&self) -> bool {
        matches!(
            self,
            ProviderError::Connection { .. }
                | ProviderError::Timeout { .. }
                | ProviderError::Server { .. }
                | ProviderError::Stalled { .. }
                | ProviderError::StreamBroken { .. }
        )
    }

    /// The same error with the characters received before it, for stream errors.
    #[must_use]
    pub fn with_received(mut self, chars: usize) -> Self {
        if let ProviderError::Stalled { received_chars, .. }
        | ProviderError::StreamBroken { received_chars, .. } = &mut self
        {
            *received_chars = chars;
        }
        self
    }

    /// The server's `Retry-After`, for rate limits that carried one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether the error is the caller's to fix (model name, API key, request), as opposed to a
    /// transient or server-side failure.
    pub fn is_usage_error(&self) -> bool {
        matches!(
            self,
            ProviderError::ModelNotFound { .. }
                | ProviderError::Auth { .. }
                | ProviderError::BadRequest { .. }
                | ProviderError::MissingApiKey { .. }
                | ProviderError::Setup { .. }
        )
    }

    /// A short, stable name of the variant (`"timeout"`, `"rate_limited"`, ...), for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderError::Connection { .. } => "connection",
            ProviderError::Timeout { .. } => "timeout",
            ProviderError::RateLimited { .. } => "rate_limited",
            ProviderError::QuotaExhausted { .. } => "quota_exhausted",
            ProviderError::Server { .. } => "server_error",
            ProviderError::ModelNotFound { .. } => "model_not_found",
            ProviderError::Auth { .. } => "auth",
            ProviderError::BadRequest { .. } => "bad_request",
            ProviderError::InvalidResponse { .. } => "invalid_response",
            ProviderError::MissingApiKey { .. } => "missing_api_key",
            ProviderError::Setup { .. } => "setup",
            ProviderError::Stalled { .. } => "stalled",
            ProviderError::StreamBroken { .. } => "stream_broken",
            ProviderError::CircuitOpen { .. } => "circuit_open",
            ProviderError::Busy { .. } => "busy",
        }
    }
}

/// Why a generation (or building a [`PromptSystem`](crate::PromptSystem)) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// Loading or rendering the template failed (not found, invalid, missing variables).
    #[error("{0}")]
    Template(#[from] prompt_templates::TemplateError),
    /// The provider failed, and retrying did not help or was pointless.
    #[error("agent {agent}: {source} (after {attempts} attempt{})", plural(*.attempts))]
    Provider {
        /// The agent's name.
        agent: String,
        /// Attempts made.
        attempts: u32,
        /// The last provider error.
        #[source]
        source: ProviderError,
    },
    /// Every reply failed validation (too short or too long after removing `<think>` blocks).
    #[error("agent {agent}: reply failed validation after {attempts} attempt{}: {reason}", plural(*.attempts))]
    Validation {
        /// The agent's name.
        agent: String,
        /// Attempts made.
        attempts: u32,
        /// Why the last reply was rejected.
        reason: String,
    },
    /// Every reply failed to parse as the requested type.
    #[error("agent {agent}: reply was not valid JSON for {type_name} after {attempts} attempt{}: {reason}", plural(*.attempts))]
    Structured {
        /// The agent's name.
        agent: String,
        /// Attempts made.
        attempts: u32,
        /// The schema (type) name.
        type_name: String,
        /// The last parse error.
        reason: String,
    },
    /// A configuration value is wrong.
    #[error("config field `{field}`: {message}")]
    Config {
        /// The field, as written in `prompt.toml` (`provider.kind`, `cache.dir`).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// Opening the response cache failed.
    #[error("cache: {0}")]
    Cache(#[from] prompt_cache::CacheError),
    /// Opening the metrics store failed.
    #[error("metrics: {0}")]
    Metrics(#[from] prompt_metrics::MetricsError),
    /// A call that waited on an identical in-flight call got that call's failure.
    #[error("{0}")]
    Shared(String),
    /// A cache-only call ([`GenerateOptions::cache_only`](crate::GenerateOptions::cache_only))
    /// found nothing stored for its request.
    #[error(
        "agent {agent}: no cached reply for this request (key {key}) and the provider may not be called"
    )]
    CacheMiss {
        /// The agent's name.
        agent: String,
        /// The request's cache key (64 hex chars).
        key: String,
    },
    /// The call could break a spending limit, so it was refused before reaching the provider.
    #[error(
        "budget {limit} of ${limit_usd:.4} would be exceeded: ${spent_usd:.4} already spent against it and this call may cost up to ${estimate_usd:.4}"
    )]
    Budget {
        /// The limit, as named in `prompt.toml` (`budget.daily_usd`, `budget.agents.writer`,
        /// `budget.tags.eval`) or `--budget-usd` for the command's own.
        limit: String,
        /// The limit in USD.
        limit_usd: f64,
        /// Already spent against it in USD (calls in flight in this process included).
        spent_usd: f64,
        /// The call's worst case in USD.
        estimate_usd: f64,
    },
}

fn plural(n: u32) -> &'static str {
    if n == 1 { "" } else { "s" }
}

impl AgentError {
    /// Whether the user must fix something (template name or file, variables, configuration,
    /// model name, API key, request options) rather than wait and retry. Useful for exit codes.
    pub fn is_usage_error(&self) -> bool {
        match self {
            AgentError::Template(_) | AgentError::Config { .. } => true,
            AgentError::Provider { source, .. } => source.is_usage_error(),
            _ => false,
        }
    }

    /// The provider error behind this one, if any.
    pub fn provider_error(&self) -> Option<&ProviderError> {
        match self {
            AgentError::Provider { source, .. } => Some(source),
            _ => None,
        }
    }

    /// A short, stable name of the failure (`"template"`, `"validation"`, or the provider
    /// error's kind such as `"timeout"`), for logs and span attributes.
    pub fn kind(&self) -> &'static str {
        match self {
            AgentError::Template(_) => "template",
            AgentError::Provider { source, .. } => source.kind(),
            AgentError::Validation { .. } => "validation",
            AgentError::Structured { .. } => "structured",
            AgentError::Config { .. } => "config",
            AgentError::Cache(_) => "cache",
            AgentError::Metrics(_) => "metrics",
            AgentError::Shared(_) => "shared",
            AgentError::CacheMiss { .. } => "cache_miss",
            AgentError::Budget { .. } => "budget",
        }
    }

    /// A copy for callers that shared one in-flight call (provider, validation and budget
    /// failures are copied exactly; anything else by its message).
    pub(crate) fn duplicate(&self) -> AgentError {
        match self {
            AgentError::Provider {
                agent,
                attempts,
                source,
            } => AgentError::Provider {
                agent: agent.clone(),
                attempts: *attempts,
                source: source.clone(),
            },
            AgentError::Validation {
                agent,
                attempts,
                reason,
            } => AgentError::Validation {
                agent: agent.clone(),
                attempts: *attempts,
                reason: reason.clone(),
            },
            AgentError::Budget {
                limit,
                limit_usd,
                spent_usd,
                estimate_usd,
            } => AgentError::Budget {
                limit: limit.clone(),
                limit_usd: *limit_usd,
                spent_usd: *spent_usd,
                estimate_usd: *estimate_usd,
            },
            other => AgentError::Shared(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_have_thousands_separators() {
        for (n, want) in [
            (0, "0"),
            (999, "999"),
            (1_234, "1,234"),
            (1_234_567, "1,234,567"),
        ] {
            assert_eq!(super::thousands(n), want);
        }
    }
}
