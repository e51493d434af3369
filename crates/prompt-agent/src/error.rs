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
    /// The provider could not be set up (bad base URL, TLS backend failure).
    #[error("{provider}: {message}")]
    Setup {
        /// Provider name.
        provider: String,
        /// What is wrong.
        message: String,
    },
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
        )
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
        }
    }
}
