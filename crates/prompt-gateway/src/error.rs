//! OpenAI-style errors: `{"error": {"message", "type", "param", "code"}}` with a fitting HTTP
//! status.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use prompt_agent::{AgentError, ProviderError};
use prompt_templates::TemplateError;
use serde_json::json;

use crate::CACHE_HEADER;

/// An error as the gateway answers it.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
    pub(crate) kind: &'static str,
    pub(crate) param: Option<String>,
    pub(crate) code: &'static str,
}

impl ApiError {
    pub(crate) fn new(
        status: StatusCode,
        kind: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            param: None,
            code,
        }
    }

    /// HTTP 400 `invalid_request_error`.
    pub(crate) fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            code,
            message,
        )
    }

    pub(crate) fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    /// The body, `{"error": {...}}`.
    pub(crate) fn body(&self) -> serde_json::Value {
        json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        })
    }

    /// The error of a failed generation.
    pub(crate) fn from_agent(error: &AgentError) -> Self {
        let message = error.to_string();
        match error {
            AgentError::Template(t) => Self::from_template(t, message),
            AgentError::Provider { source, .. } => Self::from_provider(source, message),
            AgentError::Validation { .. } | AgentError::Structured { .. } => Self::new(
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                "validation_failed",
                message,
            ),
            AgentError::CacheMiss { .. } => Self::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "cache_miss",
                message,
            ),
            AgentError::Budget { .. } => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "insufficient_quota",
                "budget_exceeded",
                message,
            ),
            AgentError::Shared(_) => Self::new(
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                "upstream_error",
                message,
            ),
            _ => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "internal_error",
                message,
            ),
        }
    }

    fn from_template(error: &TemplateError, message: String) -> Self {
        match error {
            TemplateError::NotFound { .. } | TemplateError::UnknownLabel { .. } => Self::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "template_not_found",
                message,
            )
            .with_param("template"),
            TemplateError::InvalidName { .. } | TemplateError::InvalidVersionReq(_) => {
                Self::bad_request("invalid_template_name", message).with_param("template")
            }
            TemplateError::Variables { .. }
            | TemplateError::ParseVar { .. }
            | TemplateError::Render { .. } => {
                Self::bad_request("invalid_template_vars", message).with_param("vars")
            }
            _ => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "template_error",
                message,
            ),
        }
    }

    fn from_provider(error: &ProviderError, message: String) -> Self {
        let (status, kind, code) = match error {
            ProviderError::RateLimited { .. } | ProviderError::QuotaExhausted { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                error.kind(),
            ),
            ProviderError::Timeout { .. } | ProviderError::Stalled { .. } => {
                (StatusCode::GATEWAY_TIMEOUT, "upstream_error", error.kind())
            }
            ProviderError::Busy { .. } | ProviderError::CircuitOpen { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                error.kind(),
            ),
            ProviderError::ModelNotFound { .. } => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "model_not_found",
            ),
            ProviderError::BadRequest { .. } => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "upstream_bad_request",
            ),
            _ => (StatusCode::BAD_GATEWAY, "upstream_error", error.kind()),
        };
        Self::new(status, kind, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        response
            .headers_mut()
            .insert(CACHE_HEADER, HeaderValue::from_static("miss"));
        response
    }
}
