//! LLM providers (Ollama, OpenAI-compatible), the base agent and the template agent.
//!
//! ```
//! use prompt_agent::{ChatMessage, ChatRequest, EchoProvider, Provider};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let mut request = ChatRequest::new("qwen3:8b", vec![ChatMessage::user("Write a haiku.")]);
//! request.min_length = Some(40);
//! let reply = EchoProvider::new().chat(&request).await.unwrap();
//! assert!(reply.content.starts_with("[echo] model=qwen3:8b"));
//! assert!(reply.content.chars().count() >= 40);
//! # });
//! ```

mod agent;
mod error;
mod provider;
mod request;
mod system;
mod template_agent;

pub use agent::{
    Agent, CONTEXT_HEADER, DEFAULT_CONCURRENCY, DEFAULT_MIN_LENGTH, DEFAULT_TASK,
    DEFAULT_TEMPERATURE, GenerateOptions, ModelQuirk, Reply, RetryPolicy, Structured, apply_quirks,
    check_length, default_quirks, strip_think,
};
pub use error::{AgentError, ProviderError};
pub use system::{
    CacheSetting, DEFAULT_MODEL, DEFAULT_NAMESPACE, PromptSystem, PromptSystemBuilder,
    ProviderConfig, ProviderKind, SystemConfig, UnknownProviderKind,
};
pub use template_agent::{Generation, PreparedRequest, TemplateAgent};

/// Re-exported from `prompt-templates`: template variables and version requests.
pub use prompt_templates::{Vars, VersionReq};
pub use provider::echo::EchoProvider;
pub use provider::ollama::{OLLAMA_DEFAULT_URL, OllamaProvider};
pub use provider::openai::{ApiKey, OPENAI_DEFAULT_URL, OpenAiProvider};
pub use provider::{Provider, normalize_base_url, parse_retry_after};
pub use request::{ChatMessage, ChatRequest, ChatResponse, ResponseFormat, Role, UnknownRole};
