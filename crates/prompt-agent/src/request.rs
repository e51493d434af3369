//! Provider-neutral chat request and response types.
//!
//! The agent layers speak only these types; each provider module turns them into its own
//! wire format.

use std::time::Duration;

use prompt_cache::{CacheKey, CacheKeyBuilder, CacheKeyPrefixes};
use serde::{Deserialize, Serialize};

pub use prompt_templates::{
    Message as ChatMessage, Role, ToolCall, ToolChoice, ToolDefinition, UnknownRole,
};

/// A tool choice as OpenAI's API spells it (`"auto"`, `"none"`, `"required"`, or
/// `{"type": "function", "function": {"name": …}}`), for the wire and the cache key alike.
pub fn tool_choice_json(choice: &ToolChoice) -> serde_json::Value {
    match choice {
        ToolChoice::Auto => serde_json::json!("auto"),
        ToolChoice::None => serde_json::json!("none"),
        ToolChoice::Required => serde_json::json!("required"),
        ToolChoice::Tool(name) => {
            serde_json::json!({"type": "function", "function": {"name": name}})
        }
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
    /// Tools the model may call (OpenAI-style function definitions); replaced whole by an
    /// upper layer, `Some(vec![])` offers none.
    pub tools: Option<Vec<ToolDefinition>>,
    /// Whether and which tool the model must call (OpenAI-compatible servers; Ollama has no
    /// such option and decides itself).
    pub tool_choice: Option<ToolChoice>,
    /// Which independent sample of the same request this is (an eval's `--repeat`). Never
    /// sent to a server; it enters the cache key from 1 on, so sample 0 (or unset) is the
    /// plain request and keeps its key, and samples 1, 2, … each get their own entry.
    pub sample: Option<u32>,
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
            tools,
            tool_choice,
            sample,
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
        fill(&mut self.tools, tools);
        fill(&mut self.tool_choice, tool_choice);
        fill(&mut self.sample, sample);
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

    /// The tools to offer (none when unset).
    pub fn tool_definitions(&self) -> &[ToolDefinition] {
        self.tools.as_deref().unwrap_or(&[])
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
        self.derive_key(CacheKey::builder(namespace), 0, provider)
    }

    /// [`cache_key`](Self::cache_key), the same key, with the hashing state after the first
    /// message (the system prompt of a template or an agent) taken from `prefixes` when a
    /// request started with that message before: only the rest of the request is hashed.
    pub fn cache_key_reusing(
        &self,
        namespace: &str,
        provider: &str,
        prefixes: &CacheKeyPrefixes,
    ) -> CacheKey {
        match self.messages.first() {
            Some(first) => self.derive_key(
                prefixes.builder(namespace, first.role.as_str(), &first.content),
                1,
                provider,
            ),
            None => self.cache_key(namespace, provider),
        }
    }

    /// The key from `builder`, which has the first `hashed` messages in it already.
    fn derive_key(&self, builder: CacheKeyBuilder, hashed: usize, provider: &str) -> CacheKey {
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
            tools: _, // tool_definitions()
            tool_choice,
            sample,
        } = &self.options;
        let mut builder = builder
            .provider(provider)
            .model(model.as_deref().unwrap_or_default());
        for (i, m) in self.messages.iter().enumerate() {
            if i >= hashed {
                builder = builder.message(m.role.as_str(), &m.content);
            }
            // Tool calls and results as named options, so plain conversations keep their keys.
            if !m.tool_calls.is_empty() {
                let calls = serde_json::to_value(&m.tool_calls).unwrap_or_default();
                builder = builder.option(&format!("promptkit.message.{i}.tool_calls"), &calls);
            }
            if let Some(id) = &m.tool_call_id {
                builder = builder.option(
                    &format!("promptkit.message.{i}.tool_call_id"),
                    &serde_json::json!(id),
                );
            }
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
            (
                "promptkit.tools",
                Some(self.options.tool_definitions())
                    .filter(|t| !t.is_empty())
                    .map(|t| serde_json::to_value(t).unwrap_or_default()),
            ),
            (
                "promptkit.tool_choice",
                tool_choice.as_ref().map(tool_choice_json),
            ),
            // Sample 0 is the plain request: same key as a call without a sample index.
            (
                "promptkit.sample",
                sample.filter(|n| *n > 0).map(|n| serde_json::json!(n)),
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
    /// A piece of a tool call: the pieces with one `index` make one call.
    ToolCall(ToolCallDelta),
}

impl Delta {
    /// The delta's text, whatever its kind (a tool call's piece of arguments).
    pub fn text(&self) -> &str {
        match self {
            Delta::Text(t) | Delta::Reasoning(t) => t,
            Delta::ToolCall(call) => &call.arguments,
        }
    }
}

/// A piece of a tool call as it streams: OpenAI-compatible servers send the id and name first
/// and the arguments (JSON text) in fragments; Ollama sends each call whole.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCallDelta {
    /// Which call of the reply this piece belongs to (0 for the first).
    pub index: usize,
    /// The call's id, on its first piece.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The tool's name, on its first piece.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A fragment of the arguments' JSON text.
    #[serde(default)]
    pub arguments: String,
}

/// A tool call being put together from its [`ToolCallDelta`]s.
#[derive(Debug, Clone, Default)]
struct PartialCall {
    id: Option<String>,
    name: String,
    arguments: String,
}

/// The tool calls of a reply from their pieces, in index order. Arguments that are not a
/// JSON object are kept as the JSON string of their text, for the agent to reject with the
/// model's own words ([`check_tool_calls`]); a call without an id gets `call_<index>`.
fn finish_calls(partial: Vec<PartialCall>) -> Vec<ToolCall> {
    partial
        .into_iter()
        .enumerate()
        .filter(|(_, p)| !p.name.is_empty() || !p.arguments.is_empty())
        .map(|(i, p)| {
            let text = if p.arguments.trim().is_empty() {
                "{}"
            } else {
                &p.arguments
            };
            let arguments = match serde_json::from_str::<serde_json::Value>(text) {
                Ok(v @ serde_json::Value::Object(_)) => v,
                _ => serde_json::Value::String(p.arguments.clone()),
            };
            ToolCall {
                id: p.id.unwrap_or_else(|| format!("call_{i}")),
                name: p.name,
                arguments,
            }
        })
        .collect()
}

/// Checks a reply's tool calls against the tools the request offered: each names an offered
/// tool, its arguments are a JSON object, and they fit the tool's `parameters` schema
/// ([`check_schema`]). The reason names the call and the problem.
pub fn check_tool_calls(calls: &[ToolCall], tools: &[ToolDefinition]) -> Result<(), String> {
    for call in calls {
        let Some(tool) = tools.iter().find(|t| t.name == call.name) else {
            let offered: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
            return Err(format!(
                "tool call `{}` ({}) names a tool that was not offered (offered: {})",
                call.name,
                call.id,
                if offered.is_empty() {
                    "none".to_owned()
                } else {
                    offered.join(", ")
                }
            ));
        };
        if let serde_json::Value::String(text) = &call.arguments {
            return Err(format!(
                "tool call `{}` ({}): arguments are not a JSON object: {}",
                call.name,
                call.id,
                crate::provider::snippet(text)
            ));
        }
        check_schema(&call.arguments, &tool.parameters, "arguments")
            .map_err(|problem| format!("tool call `{}` ({}): {problem}", call.name, call.id))?;
    }
    Ok(())
}

/// Checks `value` against the common subset of JSON Schema that tool parameters use: `type`
/// (one name or a list), `properties`, `required`, `additionalProperties: false`, `items`
/// and `enum`. Other keywords are not checked. The error names the path (`arguments.city`).
pub fn check_schema(
    value: &serde_json::Value,
    schema: &serde_json::Value,
    path: &str,
) -> Result<(), String> {
    use serde_json::Value;
    let Some(schema) = schema.as_object() else {
        return Ok(());
    };
    if let Some(kinds) = schema.get("type") {
        let names: Vec<&str> = match kinds {
            Value::String(k) => vec![k.as_str()],
            Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let fits = |k: &str| match k {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "number" => value.is_number(),
            "integer" => value.is_i64() || value.is_u64(),
            "boolean" => value.is_boolean(),
            "null" => value.is_null(),
            _ => true,
        };
        if !names.is_empty() && !names.iter().any(|k| fits(k)) {
            return Err(format!(
                "{path} should be {}, got {value}",
                names.join(" or ")
            ));
        }
    }
    if let Some(Value::Array(allowed)) = schema.get("enum")
        && !allowed.contains(value)
    {
        return Err(format!(
            "{path} is {value}, not one of {}",
            Value::Array(allowed.clone())
        ));
    }
    if let Value::Object(map) = value {
        let properties = schema.get("properties").and_then(Value::as_object);
        if let Some(Value::Array(required)) = schema.get("required") {
            for name in required.iter().filter_map(Value::as_str) {
                if !map.contains_key(name) {
                    return Err(format!("{path}.{name} is required but missing"));
                }
            }
        }
        for (name, item) in map {
            match properties.and_then(|p| p.get(name)) {
                Some(sub) => check_schema(item, sub, &format!("{path}.{name}"))?,
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    return Err(format!("{path}.{name} is not a parameter of the tool"));
                }
                None => {}
            }
        }
    }
    if let (Value::Array(items), Some(sub)) = (value, schema.get("items")) {
        for (i, item) in items.iter().enumerate() {
            check_schema(item, sub, &format!("{path}[{i}]"))?;
        }
    }
    Ok(())
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
    /// Of the prompt tokens, those read from the server's prompt cache, when reported.
    pub tokens_cached: Option<u64>,
    /// Of the completion tokens, those spent on reasoning, when reported.
    pub tokens_reasoning: Option<u64>,
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
    /// Of the prompt tokens, those read from the server's prompt cache, when reported
    /// (OpenAI's `prompt_tokens_details.cached_tokens`).
    pub tokens_cached: Option<u64>,
    /// Of the completion tokens, those spent on reasoning, when reported (OpenAI's
    /// `completion_tokens_details.reasoning_tokens`).
    pub tokens_reasoning: Option<u64>,
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
    /// The tools the model called, in order (arguments parsed; see [`check_tool_calls`]).
    pub tool_calls: Vec<ToolCall>,
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
    calls: Vec<PartialCall>,
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
            calls: Vec::new(),
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
                    // A server cannot make us hold more calls than a reply could sensibly
                    // have: pieces of calls past the 1,024th are dropped.
                    Delta::ToolCall(piece) if piece.index >= 1024 => {}
                    Delta::ToolCall(piece) => {
                        if self.calls.len() <= piece.index {
                            self.calls.resize(piece.index + 1, PartialCall::default());
                        }
                        let call = &mut self.calls[piece.index];
                        if let Some(id) = &piece.id {
                            call.id = Some(id.clone());
                        }
                        if let Some(name) = &piece.name {
                            call.name.push_str(name);
                        }
                        call.arguments.push_str(&piece.arguments);
                    }
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
                self.response.tokens_cached = end.tokens_cached;
                self.response.tokens_reasoning = end.tokens_reasoning;
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
        self.response.tool_calls = finish_calls(self.calls);
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
            tools: Some(vec![lookup_tool("Looks a character up")]),
            tool_choice: Some(ToolChoice::Auto),
            ..r.options
        };
        r
    }

    fn lookup_tool(description: &str) -> ToolDefinition {
        ToolDefinition {
            name: "lookup_character".into(),
            description: Some(description.into()),
            parameters: json!({
                "type": "object",
                "properties": {"name": {"type": "string"}, "chapter": {"type": "integer"}},
                "required": ["name"],
            }),
        }
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
            .option(
                "promptkit.tools",
                &serde_json::to_value(vec![lookup_tool("Looks a character up")])
                    .unwrap_or_default(),
            )
            .option("promptkit.tool_choice", &json!("auto"))
            .finish();
        assert_eq!(r.cache_key("ns", "ollama"), by_hand);
    }

    /// A changed tool description is another request; the same schema with its keys in
    /// another order is the same one.
    #[test]
    fn tools_are_keyed_by_content_not_key_order() {
        let r = full();
        let mut described = r.clone();
        described.options.tools = Some(vec![lookup_tool("Finds a character")]);
        assert_ne!(r.cache_key("ns", "p"), described.cache_key("ns", "p"));
        let mut reordered = r.clone();
        let parameters: serde_json::Value = serde_json::from_str(
            r#"{"required": ["name"], "properties": {"chapter": {"type": "integer"},
                "name": {"type": "string"}}, "type": "object"}"#,
        )
        .unwrap_or_default();
        reordered.options.tools = Some(vec![ToolDefinition {
            parameters,
            ..lookup_tool("Looks a character up")
        }]);
        assert_eq!(r.cache_key("ns", "p"), reordered.cache_key("ns", "p"));
        // Tool calls and results in the conversation are part of the key too.
        let mut called = r.clone();
        let mut turn = ChatMessage::assistant("");
        turn.tool_calls.push(ToolCall {
            id: "call_0".into(),
            name: "lookup_character".into(),
            arguments: json!({"name": "Mira"}),
        });
        called.messages.push(turn);
        let mut answered = called.clone();
        answered
            .messages
            .push(ChatMessage::tool_result("call_0", "Mira: ferry pilot"));
        let keys = [&r, &called, &answered].map(|q| q.cache_key("ns", "p"));
        assert!(keys[0] != keys[1] && keys[1] != keys[2] && keys[0] != keys[2]);
    }

    #[test]
    fn tool_calls_are_checked_against_the_offered_schemas() {
        let tools = [lookup_tool("Looks a character up")];
        let call = |arguments: serde_json::Value| ToolCall {
            id: "call_0".into(),
            name: "lookup_character".into(),
            arguments,
        };
        assert_eq!(
            check_tool_calls(&[call(json!({"name": "Mira"}))], &tools),
            Ok(())
        );
        let cases = [
            (
                call(json!("{\"name\": ")),
                "arguments are not a JSON object: {\"name\":",
            ),
            (call(json!({})), "arguments.name is required but missing"),
            (
                call(json!({"name": 7})),
                "arguments.name should be string, got 7",
            ),
            (
                call(json!({"name": "M", "chapter": 1.5})),
                "arguments.chapter should be integer",
            ),
            (
                ToolCall {
                    name: "delete_story".into(),
                    ..call(json!({}))
                },
                "`delete_story` (call_0) names a tool that was not offered (offered: lookup_character)",
            ),
        ];
        for (c, want) in cases {
            let err = check_tool_calls(&[c], &tools).expect_err(want);
            assert!(err.contains(want), "{err}");
        }
    }

    /// Pieces of calls become whole calls in index order; unparsable arguments stay as text for
    /// the check to reject; a call without an id gets one.
    #[test]
    fn the_assembler_puts_tool_calls_together() {
        let mut a = StreamAssembler::new("m", std::time::Instant::now());
        let piece = |index, id: Option<&str>, name: Option<&str>, arguments: &str| {
            StreamEvent::Delta(Delta::ToolCall(ToolCallDelta {
                index,
                id: id.map(str::to_owned),
                name: name.map(str::to_owned),
                arguments: arguments.to_owned(),
            }))
        };
        for event in [
            piece(0, Some("call_a"), Some("lookup_character"), "{\"na"),
            piece(1, None, Some("weather"), "{\"city\""),
            piece(0, None, None, "me\": \"Mira\"}"),
            piece(1, None, None, ": "),
        ] {
            a.push(&event);
        }
        let r = a.finish();
        assert_eq!(
            r.tool_calls,
            [
                ToolCall {
                    id: "call_a".into(),
                    name: "lookup_character".into(),
                    arguments: json!({"name": "Mira"})
                },
                ToolCall {
                    id: "call_1".into(),
                    name: "weather".into(),
                    arguments: json!("{\"city\": ")
                },
            ]
        );
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
            tools,
            tool_choice,
            sample: _, // below: sample 0 keeps the plain key
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
            RequestOptions {
                tools,
                ..RequestOptions::default()
            },
            RequestOptions {
                tool_choice,
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
        assert_eq!(keys.len(), 14, "each option alone gives its own key");
        // Sample 0 is the plain request; samples 1 and 2 are two more.
        let sample = |n: u32| {
            let mut r = base.clone();
            r.options.sample = Some(n);
            r.cache_key("ns", "p")
        };
        assert_eq!(sample(0), base.cache_key("ns", "p"));
        assert_ne!(sample(1), base.cache_key("ns", "p"));
        assert_ne!(sample(1), sample(2));
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
