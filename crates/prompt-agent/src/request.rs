//! Provider-neutral chat request and response types.
//!
//! The agent layers speak only these types; each provider module turns them into its own
//! wire format.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use prompt_cache::CacheKey;
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

/// Every option of a request that can change the reply, each one optional: `None` means "not
/// set at this layer", so a lower layer (or, at the end, the server's own default) decides.
///
/// This is the one list of request options. The layering rule ([`over`](Self::over), used by
/// [`RequestOptions::layered`]), the cache key ([`ChatRequest::cache_key`]) and the provider
/// wire formats all destructure it field by field, so a new option that one of them forgets
/// does not compile. Batch jobs and library calls take the same fields.
///
/// ```
/// use prompt_agent::RequestOptions;
///
/// let call = RequestOptions { temperature: Some(0.2), ..RequestOptions::default() };
/// let template = RequestOptions {
///     model: Some("qwen3:30b".into()),
///     temperature: Some(0.8),
///     max_tokens: Some(2048),
///     ..RequestOptions::default()
/// };
/// let agent = RequestOptions::agent("qwen3:8b", 0.7);
/// let o = RequestOptions::layered(&call, Some(&template), &agent);
/// assert_eq!(o.model.as_deref(), Some("qwen3:30b")); // template over agent
/// assert_eq!(o.temperature, Some(0.2));              // call over template
/// assert_eq!(o.max_tokens, Some(2048));
/// assert_eq!(o.min_length, Some(10));                // the default layer
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RequestOptions {
    /// Model name as the provider knows it (`"qwen3:8b"`, `"gpt-4o-mini"`).
    pub model: Option<String>,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    pub top_p: Option<f64>,
    /// Largest number of tokens to generate (Ollama `num_predict`, OpenAI `max_tokens`).
    pub max_tokens: Option<u64>,
    /// Sampling seed.
    pub seed: Option<u64>,
    /// Stop sequences; `Some(vec![])` sends none even when a lower layer has some.
    pub stop: Option<Vec<String>>,
    /// Context window size (Ollama `num_ctx`; OpenAI-compatible servers have no such option).
    pub context_size: Option<u64>,
    /// Required reply format.
    pub format: Option<ResponseFormat>,
    /// Any other provider option, passed through as is: Ollama puts these inside `options`,
    /// OpenAI-compatible servers at the top level of the body. Merged key by key across
    /// layers (the upper layer's value wins).
    pub provider_options: serde_json::Map<String, serde_json::Value>,
    /// The shortest reply (in characters, after removing `<think>` blocks) the caller accepts.
    /// Never sent to a server; offline providers such as [`EchoProvider`](crate::EchoProvider)
    /// honour it.
    pub min_length: Option<usize>,
    /// The longest reply (in characters) the caller accepts. Never sent to a server.
    pub max_length: Option<usize>,
}

impl RequestOptions {
    /// The agent layer: an agent's model and temperature.
    pub fn agent(model: &str, temperature: f64) -> Self {
        Self {
            model: Some(model.to_owned()),
            temperature: Some(temperature),
            ..Self::default()
        }
    }

    /// The default layer, under every other: [`DEFAULT_MIN_LENGTH`](crate::DEFAULT_MIN_LENGTH)
    /// (the Python original's rule); everything else is left to the server.
    pub fn defaults() -> Self {
        Self {
            min_length: Some(crate::agent::DEFAULT_MIN_LENGTH),
            ..Self::default()
        }
    }

    /// The layering rule, written once: the call's options over the template's over the
    /// agent's over [`defaults`](Self::defaults).
    pub fn layered(call: &Self, template: Option<&Self>, agent: &Self) -> Self {
        let mut out = call.clone();
        if let Some(template) = template {
            out = out.over(template);
        }
        out.over(agent).over(&Self::defaults())
    }

    /// These options over `lower`: every field set here wins; unset ones come from `lower`;
    /// `provider_options` are merged key by key.
    #[must_use]
    pub fn over(mut self, lower: &Self) -> Self {
        let Self {
            model,
            temperature,
            top_p,
            max_tokens,
            seed,
            stop,
            context_size,
            format,
            provider_options,
            min_length,
            max_length,
        } = lower;
        fn fill<T: Clone>(upper: &mut Option<T>, lower: &Option<T>) {
            if upper.is_none() {
                upper.clone_from(lower);
            }
        }
        fill(&mut self.model, model);
        fill(&mut self.temperature, temperature);
        fill(&mut self.top_p, top_p);
        fill(&mut self.max_tokens, max_tokens);
        fill(&mut self.seed, seed);
        fill(&mut self.stop, stop);
        fill(&mut self.context_size, context_size);
        fill(&mut self.format, format);
        fill(&mut self.min_length, min_length);
        fill(&mut self.max_length, max_length);
        for (k, v) in provider_options {
            if !self.provider_options.contains_key(k) {
                self.provider_options.insert(k.clone(), v.clone());
            }
        }
        self
    }

    /// The stop sequences to send (none when unset).
    pub fn stop_sequences(&self) -> &[String] {
        self.stop.as_deref().unwrap_or(&[])
    }

    /// The pass-through options as a server receives them: `provider_options` with `top_p`
    /// added (the typed field wins over a `top_p` key in the map).
    pub fn wire_options(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut out = self.provider_options.clone();
        if let Some(top_p) = self.top_p {
            out.insert("top_p".to_owned(), serde_json::json!(top_p));
        }
        out
    }
}

/// A provider-neutral chat request: the messages and the options they are sent with.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ChatRequest {
    /// The conversation, system messages first.
    pub messages: Vec<ChatMessage>,
    /// The request's options, every layer already applied. `None` options are not sent, so
    /// the server's own defaults apply.
    pub options: RequestOptions,
}

impl ChatRequest {
    /// A request for `model` with the given messages and no other options.
    pub fn new(model: impl Into<String>, messages: Vec<ChatMessage>) -> Self {
        Self {
            messages,
            options: RequestOptions {
                model: Some(model.into()),
                ..RequestOptions::default()
            },
        }
    }

    /// The model the request is for (empty when no layer named one).
    pub fn model(&self) -> &str {
        self.options.model.as_deref().unwrap_or_default()
    }

    /// The last user message, if any.
    pub fn last_user_message(&self) -> Option<&ChatMessage> {
        self.messages.iter().rev().find(|m| m.role == Role::User)
    }

    /// The cache key of the whole request, derived here and nowhere else: namespace,
    /// provider, model, every message with its role in order, and every option that can
    /// change the reply — validation bounds included, so a reply accepted under looser rules
    /// is never served under stricter ones.
    ///
    /// The encoding is prompt-cache's `promptkit.cache-key.v1`: the typed options it knows
    /// (temperature, max tokens, seed, stop, response format) in their own fields, every
    /// other one as a named option (`top_p` and the provider options under their own names,
    /// `promptkit.context_size`, `promptkit.min_length`, `promptkit.max_length`).
    pub fn cache_key(&self, namespace: &str, provider: &str) -> CacheKey {
        let RequestOptions {
            model,
            temperature,
            top_p: _, // in wire_options()
            max_tokens,
            seed,
            stop: _, // stop_sequences()
            context_size,
            format,
            provider_options: _, // in wire_options()
            min_length,
            max_length,
        } = &self.options;
        let mut builder = CacheKey::builder(namespace)
            .provider(provider)
            .model(model.as_deref().unwrap_or_default());
        for m in &self.messages {
            builder = builder.message(m.role.as_str(), &m.content);
        }
        let format = format.as_ref().map(ResponseFormat::to_key_value);
        builder = builder
            .temperature(*temperature)
            .max_tokens(*max_tokens)
            .seed(*seed)
            .stop(self.options.stop_sequences())
            .response_format(format.as_ref());
        let named = [
            (
                "promptkit.context_size",
                context_size.map(|n| serde_json::json!(n)),
            ),
            (
                "promptkit.min_length",
                min_length.map(|n| serde_json::json!(n)),
            ),
            (
                "promptkit.max_length",
                max_length.map(|n| serde_json::json!(n)),
            ),
        ];
        for (name, value) in named {
            if let Some(value) = value {
                builder = builder.option(name, &value);
            }
        }
        for (k, v) in &self.options.wire_options() {
            builder = builder.option(k, v);
        }
        builder.finish()
    }
}

/// One piece of a streamed reply, in the order the server sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "text", rename_all = "snake_case")]
pub enum Delta {
    /// Reply text.
    Text(String),
    /// Reasoning ("thinking") text, where the server sends it apart from the reply.
    Reasoning(String),
}

impl Delta {
    /// The delta's text, whatever its kind.
    pub fn text(&self) -> &str {
        match self {
            Delta::Text(t) | Delta::Reasoning(t) => t,
        }
    }
}

/// A delta with its time offset from the start of the request, as recorded for a faithful
/// replay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimedDelta {
    /// Milliseconds from sending the request to receiving this delta.
    pub offset_ms: f64,
    /// The delta.
    #[serde(flatten)]
    pub delta: Delta,
}

/// The end of a streamed reply: what the server reported in its final frame.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamEnd {
    /// The model that answered, when the server names it.
    pub model: Option<String>,
    /// Tokens in the prompt, when reported.
    pub tokens_prompt: Option<u64>,
    /// Tokens generated, when reported.
    pub tokens_completion: Option<u64>,
    /// Why generation stopped, when reported.
    pub finish_reason: Option<String>,
}

/// What a provider's stream yields: deltas, then exactly one [`StreamEvent::Done`].
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// A piece of the reply.
    Delta(Delta),
    /// The final frame.
    Done(StreamEnd),
}

/// A provider's answer to a [`ChatRequest`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
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
    /// Reasoning text the server sent apart from the reply (streamed replies), when any.
    pub reasoning: Option<String>,
    /// The deltas of a streamed reply, in order, with their time offsets (empty when the
    /// reply was not streamed).
    pub deltas: Vec<TimedDelta>,
    /// Time from sending the request to the first delta (streamed replies only).
    pub time_to_first_token: Option<Duration>,
}

impl ChatResponse {
    /// [`time_to_first_token`](Self::time_to_first_token) in milliseconds, as every record
    /// and reply reports it.
    pub fn time_to_first_token_ms(&self) -> Option<f64> {
        self.time_to_first_token.map(|t| t.as_secs_f64() * 1000.0)
    }
}

/// Assembles a stream's events into a [`ChatResponse`], keeping every delta with its offset.
#[derive(Debug)]
pub struct StreamAssembler {
    started: std::time::Instant,
    response: ChatResponse,
    received_chars: usize,
    done: bool,
}

impl StreamAssembler {
    /// An assembler for a request to `model` sent at `started`.
    pub fn new(model: &str, started: std::time::Instant) -> Self {
        Self {
            started,
            response: ChatResponse {
                model: model.to_owned(),
                ..ChatResponse::default()
            },
            received_chars: 0,
            done: false,
        }
    }

    /// Adds one event.
    pub fn push(&mut self, event: &StreamEvent) {
        let elapsed = self.started.elapsed();
        match event {
            StreamEvent::Delta(delta) => {
                if self.response.time_to_first_token.is_none() {
                    self.response.time_to_first_token = Some(elapsed);
                }
                self.received_chars += delta.text().chars().count();
                match delta {
                    Delta::Text(t) => self.response.content.push_str(t),
                    Delta::Reasoning(t) => self
                        .response
                        .reasoning
                        .get_or_insert_with(String::new)
                        .push_str(t),
                }
                self.response.deltas.push(TimedDelta {
                    offset_ms: elapsed.as_secs_f64() * 1000.0,
                    delta: delta.clone(),
                });
            }
            StreamEvent::Done(end) => {
                if let Some(model) = &end.model {
                    self.response.model.clone_from(model);
                }
                self.response.tokens_prompt = end.tokens_prompt;
                self.response.tokens_completion = end.tokens_completion;
                self.response.finish_reason.clone_from(&end.finish_reason);
                self.done = true;
            }
        }
    }

    /// Characters (text and reasoning) received so far.
    pub fn received_chars(&self) -> usize {
        self.received_chars
    }

    /// Whether the final frame has arrived.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The assembled response (its latency is the time until now).
    pub fn finish(mut self) -> ChatResponse {
        self.response.latency = self.started.elapsed();
        self.response
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A request with every option set.
    fn full() -> ChatRequest {
        let mut r = ChatRequest::new(
            "qwen3:30b",
            vec![ChatMessage::system("sys"), ChatMessage::user("hi")],
        );
        r.options = RequestOptions {
            temperature: Some(0.8),
            top_p: Some(0.9),
            max_tokens: Some(2048),
            seed: Some(7),
            stop: Some(vec!["THE END".into()]),
            context_size: Some(8192),
            format: Some(ResponseFormat::Json),
            provider_options: [("top_k".to_owned(), json!(20))].into_iter().collect(),
            min_length: Some(200),
            max_length: Some(8000),
            ..r.options
        };
        r
    }

    /// The key encoding is the one keys had before `RequestOptions` (`promptkit.cache-key.v1`,
    /// top_p among the named options): existing cache entries stay valid.
    #[test]
    fn cache_key_keeps_the_v1_encoding() {
        let r = full();
        let by_hand = CacheKey::builder("ns")
            .provider("ollama")
            .model("qwen3:30b")
            .message("system", "sys")
            .message("user", "hi")
            .temperature(Some(0.8))
            .max_tokens(Some(2048))
            .seed(Some(7))
            .stop(&["THE END".to_owned()])
            .response_format(Some(&json!("json")))
            .option("promptkit.context_size", &json!(8192))
            .option("promptkit.min_length", &json!(200))
            .option("promptkit.max_length", &json!(8000))
            .option("top_k", &json!(20))
            .option("top_p", &json!(0.9))
            .finish();
        assert_eq!(r.cache_key("ns", "ollama"), by_hand);
    }

    #[test]
    fn unset_and_empty_stop_share_a_key_and_every_option_changes_it() {
        let base = ChatRequest::new("m", vec![ChatMessage::user("hi")]);
        let mut empty_stop = base.clone();
        empty_stop.options.stop = Some(Vec::new());
        assert_eq!(base.cache_key("ns", "p"), empty_stop.cache_key("ns", "p"));
        let full = full();
        let RequestOptions {
            model,
            temperature,
            top_p,
            max_tokens,
            seed,
            stop,
            context_size,
            format,
            provider_options,
            min_length,
            max_length,
        } = full.options.clone();
        let variants = [
            RequestOptions {
                model,
                ..RequestOptions::default()
            },
            RequestOptions {
                temperature,
                ..RequestOptions::default()
            },
            RequestOptions {
                top_p,
                ..RequestOptions::default()
            },
            RequestOptions {
                max_tokens,
                ..RequestOptions::default()
            },
            RequestOptions {
                seed,
                ..RequestOptions::default()
            },
            RequestOptions {
                stop,
                ..RequestOptions::default()
            },
            RequestOptions {
                context_size,
                ..RequestOptions::default()
            },
            RequestOptions {
                format,
                ..RequestOptions::default()
            },
            RequestOptions {
                provider_options,
                ..RequestOptions::default()
            },
            RequestOptions {
                min_length,
                ..RequestOptions::default()
            },
            RequestOptions {
                max_length,
                ..RequestOptions::default()
            },
        ];
        let mut keys: Vec<CacheKey> = variants
            .into_iter()
            .map(|options| {
                let mut r = base.clone();
                r.options = options.over(&base.options);
                r.cache_key("ns", "p")
            })
            .collect();
        keys.push(base.cache_key("ns", "p"));
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), 12, "each option alone gives its own key");
    }

    #[test]
    fn layering_fills_only_unset_options_and_merges_provider_options() {
        let call = RequestOptions {
            stop: Some(Vec::new()),
            provider_options: [("a".to_owned(), json!(1))].into_iter().collect(),
            ..RequestOptions::default()
        };
        let template = RequestOptions {
            stop: Some(vec!["x".into()]),
            max_length: Some(5),
            provider_options: [("a".to_owned(), json!(2)), ("b".to_owned(), json!(3))]
                .into_iter()
                .collect(),
            ..RequestOptions::default()
        };
        let o = RequestOptions::layered(&call, Some(&template), &RequestOptions::agent("m", 0.7));
        assert_eq!(
            o.stop,
            Some(Vec::new()),
            "an explicit empty stop clears the template's"
        );
        assert_eq!(o.max_length, Some(5));
        assert_eq!(o.provider_options["a"], json!(1));
        assert_eq!(o.provider_options["b"], json!(3));
        assert_eq!(o.model.as_deref(), Some("m"));
        assert_eq!(o.min_length, Some(crate::DEFAULT_MIN_LENGTH));
    }

    #[test]
    fn request_options_read_from_json_and_refuse_unknown_fields() {
        let o: RequestOptions = serde_json::from_str(
            r#"{"model": "m", "stop": ["x"], "provider_options": {"top_k": 5}}"#,
        )
        .expect("parse");
        assert_eq!(o.model.as_deref(), Some("m"));
        assert_eq!(o.provider_options["top_k"], json!(5));
        let e = serde_json::from_str::<RequestOptions>(r#"{"temprature": 1}"#).unwrap_err();
        assert!(e.to_string().contains("temprature"), "{e}");
    }
}
