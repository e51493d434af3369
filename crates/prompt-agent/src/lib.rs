//! The request model, the settings, LLM providers (Ollama, OpenAI-compatible, offline echo),
//! the base agent and the template agent, bundled in one cloneable [`PromptSystem`].
//!
//! - [`ChatRequest`] is messages plus [`RequestOptions`], the one list of request options;
//!   [`RequestOptions::layered`] is the one layering rule (call over template over agent over
//!   defaults) and [`ChatRequest::cache_key`] the one derivation of the cache key.
//! - [`Provider`] is the only seam that knows an LLM wire format: [`OllamaProvider`]
//!   (`POST /api/chat`), [`OpenAiProvider`] (`POST /v1/chat/completions`) and the offline
//!   [`EchoProvider`] for dry runs. Errors are [`ProviderError`]s that tell transient failures
//!   ([`is_retryable`](ProviderError::is_retryable)) from the caller's mistakes.
//! - [`Agent`] (the Python original's BaseAgent) builds `[system, optional
//!   "CURRENT STORY CONTEXT:\n…", user]`, takes a permit from the concurrency limiter its provider's agents share, calls the
//!   provider with a per-attempt timeout, strips `<think>` blocks, validates the length and
//!   retries with exponential backoff and jitter, honouring `Retry-After`. Every call, failed
//!   or not, leaves a metrics record. [`Agent::generate_structured`] parses the reply into a
//!   type, feeding parse errors back to the model.
//! - [`TemplateAgent`] (the Python original's EnhancedBaseAgent) loads and renders the
//!   agent's template, applies its model defaults and validation rules, looks the whole request up in the cache,
//!   shares one provider call among identical concurrent requests, stores validated replies and
//!   records metrics with the template version and hash.
//! - [`PromptSystem`] is built from [`Settings`] (the schema of `prompt.toml`, every default
//!   stated once) with [`PromptSystem::from_settings`], or from explicit parts with
//!   [`PromptSystem::builder`].
//!
//! ```
//! use std::sync::Arc;
//! use prompt_agent::{EchoProvider, GenerateOptions, PromptSystem, Vars};
//! use serde_json::json;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! std::fs::create_dir(dir.path().join("writer")).unwrap();
//! std::fs::write(dir.path().join("writer/write_scene_v1.yaml"), r#"
//! version: 1
//! agent: writer
//! task: write_scene
//! system_prompt: You are the Writer.
//! user_prompt_template: Write a scene set in {{ setting }}.
//! variables:
//!   setting: "string - Where the scene happens"
//! validation: { min_length: 200 }
//! "#).unwrap();
//!
//! let system = PromptSystem::builder()
//!     .templates_dir(dir.path())
//!     .provider(Arc::new(EchoProvider::new()))
//!     .build()
//!     .unwrap();
//! let writer = system.template_agent("writer");
//! let mut vars = Vars::new();
//! vars.insert("setting".into(), json!("a lighthouse"));
//! let generation = writer
//!     .generate_from_template("write_scene", &vars, &GenerateOptions::default())
//!     .await
//!     .unwrap();
//! assert!(generation.content.contains("Write a scene set in a lighthouse."));
//! assert!(generation.content.chars().count() >= 200); // the template's min_length
//! assert_eq!(generation.template_version, 1);
//! assert_eq!(generation.retry_count, 0);
//!
//! // Plain agents keep working without templates.
//! let editor = system.agent("editor", "Editor", "You edit prose.");
//! let reply = editor.generate("Tighten this sentence.", None, &GenerateOptions::default()).await.unwrap();
//! assert!(reply.content.starts_with("[echo] model="));
//! # });
//! ```

mod agent;
mod chat_agent;
mod cost;
mod error;
mod provider;
mod request;
mod settings;
mod stream;
mod system;
mod telemetry;
mod template_agent;
mod think;

pub use agent::{
    Agent, CONTEXT_HEADER, DEFAULT_MIN_LENGTH, DEFAULT_TASK, DEFAULT_TEMPERATURE, GenerateOptions,
    ModelQuirk, Reply, RetryPolicy, Structured, apply_quirks, check_length, default_quirks,
};
pub use chat_agent::ChatAgent;
pub use cost::{Budget, LimitSpend, budget_day_start, check_tag, parse_tags};
pub use error::{AgentError, ProviderError};
pub use settings::{
    DEFAULT_BREAKER_COOLDOWN_SECS, DEFAULT_BREAKER_FAILURES, DEFAULT_CACHE_DIR,
    DEFAULT_CACHE_MAX_SIZE, DEFAULT_CACHE_TTL_SECS, DEFAULT_CONCURRENCY, DEFAULT_IDLE_TIMEOUT_SECS,
    DEFAULT_METRICS_DIR, DEFAULT_MODEL, DEFAULT_NAMESPACE, DEFAULT_QUEUE_TIMEOUT_SECS,
    DEFAULT_REDIS_PREFIX, DEFAULT_RETRIES, DEFAULT_TEMPLATES_DIR, DEFAULT_TIMEOUT_SECS,
    ProviderKind, Settings, UnknownProviderKind,
};
pub use stream::{CircuitBreaker, GenerationEvent, GenerationStream, StreamItem};
pub use system::{PromptSystem, PromptSystemBuilder};
pub use template_agent::{Generation, PreparedRequest, TemplateAgent};
pub use think::{split_think, strip_think};

/// Re-exported from `prompt-metrics`: prices and the spend budgets are checked against.
pub use prompt_metrics::{Price, PriceTable, Spend, TokenUsage};
/// Re-exported from `prompt-templates`: template variables and version requests.
pub use prompt_templates::{Vars, VersionReq};
pub use provider::echo::EchoProvider;
pub use provider::ollama::{OLLAMA_DEFAULT_URL, OllamaProvider};
pub use provider::openai::{ApiKey, OPENAI_DEFAULT_URL, OPENAI_KEY_ENV, OpenAiProvider};
pub use provider::{
    EventStream, Provider, normalize_base_url, parse_retry_after, whole_reply_events,
};
pub use request::{
    ChatMessage, ChatRequest, ChatResponse, Delta, RequestOptions, ResponseFormat, Role,
    StreamAssembler, StreamEnd, StreamEvent, TimedDelta, ToolCall, ToolCallDelta, ToolChoice,
    ToolDefinition, UnknownRole, check_schema, check_tool_calls, tool_choice_json,
};
