//! Provider-neutral chat request and response types.
//!
//! The agent layers speak only these types; each provider module turns them into its own
//! wire format.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Who wrote a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions for the model.
    System,
    /// The user's turn.
    User,
    /// The model's own (earlier) turn.
    Assistant,
}

impl Role {
    /// The role's wire name: `"system"`, `"user"` or `"assistant"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error returned when parsing an unknown [`Role`] name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}: expected \"system\", \"user\" or \"assistant\"")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "system" => Ok(Role::System),
            "user" => Ok(Role::User),
            "assistant" => Ok(Role::Assistant),
            _ => Err(UnknownRole(s.to_owned())),
        }
    }
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who wrote it.
    pub role: Role,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A message with the given role and content.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
        }
    }

    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new(Role::System, content)
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new(Role::User, content)
    }

    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new(Role::Assistant, content)
    }
}

/// The shape the reply must have.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    /// Any JSON object (Ollama `"format": "json"`, OpenAI `{"type": "json_object"}`).
    Json,
    /// JSON matching a JSON Schema (Ollama `"format": <schema>`, OpenAI `json_schema`).
    JsonSchema {
        /// Schema name (OpenAI requires one: letters, digits, `_` and `-`).
        name: String,
        /// The JSON Schema document.
        schema: serde_json::Value,
    },
}

impl ResponseFormat {
    /// A provider-neutral JSON value describing this format, used for cache keys.
    pub fn to_key_value(&self) -> serde_json::Value {
        match self {
            ResponseFormat::Json => serde_json::Value::String("json".to_owned()),
            ResponseFormat::JsonSchema { name, schema } => {
                serde_json::json!({ "name": name, "schema": schema })
            }
        }
    }
}

/// A provider-neutral chat request.
///
/// `None` options are not sent, so the server's own defaults apply.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ChatRequest {
    /// Model name as the provider knows it (`"qwen3:8b"`, `"gpt-4o-mini"`).
    pub model: String,
    /// The conversation, system messages first.
    pub messages: Vec<ChatMessage>,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Largest number of tokens to generate (Ollama `num_predict`, OpenAI `max_tokens`).
    pub max_tokens: Option<u64>,
    /// Sampling seed.
    pub seed: Option<u64>,
    /// Stop sequences (not sent when empty).
    pub stop: Vec<String>,
    /// Context window size (Ollama `num_ctx`; OpenAI-compatible servers have no such option).
    pub context_size: Option<u64>,
    /// Required reply format.
    pub format: Option<ResponseFormat>,
    /// Any other provider option, passed through as is: Ollama puts these inside `options`,
    /// OpenAI-compatible servers at the top level of the body.
    pub options: serde_json::Map<String, serde_json::Value>,
    /// The shortest reply (in characters) the caller will accept. Never sent to a server;
    /// offline providers such as [`EchoProvider`](crate::EchoProvider) honour it.
    pub min_length: Option<usize>,
    /// The longest reply (in characters) the caller will accept. Never sent to a server.
    pub max_length: Option<usize>,
}

impl ChatRequest {
    /// A request for `model` with the given messages and no options.
    pub fn new(model: impl Into<String>, messages: Vec<ChatMessage>) -> Self {
        Self {
            model: model.into(),
            messages,
            ..Self::default()
        }
    }

    /// The last user message, if any.
    pub fn last_user_message(&self) -> Option<&ChatMessage> {
        self.messages.iter().rev().find(|m| m.role == Role::User)
    }
}

/// A provider's answer to a [`ChatRequest`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatResponse {
    /// The reply text, exactly as the model wrote it.
    pub content: String,
    /// The model that answered (as reported by the server, else the requested one).
    pub model: String,
    /// Tokens in the prompt, when the server reports them.
    pub tokens_prompt: Option<u64>,
    /// Tokens generated, when the server reports them.
    pub tokens_completion: Option<u64>,
    /// Why generation stopped (`"stop"`, `"length"`, ...), when reported.
    pub finish_reason: Option<String>,
    /// Time from sending the request to having the whole reply.
    pub latency: Duration,
}
