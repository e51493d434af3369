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

mod error;
mod provider;
mod request;

pub use error::ProviderError;
pub use provider::echo::EchoProvider;
pub use provider::ollama::{OLLAMA_DEFAULT_URL, OllamaProvider};
pub use provider::openai::{ApiKey, OPENAI_DEFAULT_URL, OpenAiProvider};
pub use provider::{Provider, normalize_base_url, parse_retry_after};
pub use request::{ChatMessage, ChatRequest, ChatResponse, ResponseFormat, Role, UnknownRole};
