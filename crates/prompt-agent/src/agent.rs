//! [`Agent`]: the Python original's BaseAgent. Builds the messages, takes a permit from the shared
//! concurrency limiter, calls the provider with a per-attempt timeout, validates the reply and
//! retries with exponential backoff and jitter; writes one metrics record per call.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use prompt_metrics::{MetricsSink, PromptMetrics};
use prompt_templates::VersionReq;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::cost::CostBook;
use crate::error::{AgentError, ProviderError};
use crate::provider::Provider;
use crate::request::{
    ChatMessage, ChatRequest, ChatResponse, RequestOptions, ResponseFormat, Role, StreamAssembler,
    StreamEvent, ToolCall, check_tool_calls,
};
use crate::settings::{
    DEFAULT_BREAKER_COOLDOWN_SECS, DEFAULT_BREAKER_FAILURES, DEFAULT_CONCURRENCY,
    DEFAULT_IDLE_TIMEOUT_SECS, DEFAULT_QUEUE_TIMEOUT_SECS, DEFAULT_RETRIES, DEFAULT_TIMEOUT_SECS,
};
use crate::stream::{CircuitBreaker, EventSender, GenerationEvent, GenerationStream};
use crate::think::split_think;

/// The shortest acceptable reply, in characters, when neither the call nor the template sets
/// one (the Python original's rule).
pub const DEFAULT_MIN_LENGTH: usize = 10;
/// The default temperature of an agent.
pub const DEFAULT_TEMPERATURE: f64 = 0.7;
/// The header of the optional context message.
pub const CONTEXT_HEADER: &str = "CURRENT STORY CONTEXT:\n";
/// The metrics task name of plain [`Agent::generate`] calls without `options.task`.
pub const DEFAULT_TASK: &str = "generate";

/// How an agent retries.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts per call, the first included (at least 1).
    pub max_attempts: u32,
    /// Wall-clock limit of one attempt.
    pub request_timeout: Duration,
    /// Longest gap between two chunks of a streamed reply (and before the first) before the
    /// attempt counts as stalled.
    pub idle_timeout: Duration,
    /// Longest wait for a free slot of the concurrency limiter.
    pub queue_timeout: Duration,
    /// Backoff before the second attempt; doubles with each further attempt.
    pub backoff_base: Duration,
    /// Upper bound of the exponential backoff.
    pub backoff_max: Duration,
    /// Upper bound on how long a server's `Retry-After` is honoured.
    pub retry_after_cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: DEFAULT_RETRIES + 1,
            request_timeout: Duration::from_secs_f64(DEFAULT_TIMEOUT_SECS),
            idle_timeout: Duration::from_secs_f64(DEFAULT_IDLE_TIMEOUT_SECS),
            queue_timeout: Duration::from_secs_f64(DEFAULT_QUEUE_TIMEOUT_SECS),
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            retry_after_cap: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt number `attempt` (1-based): exponential backoff
    /// `base * 2^(attempt-1)` capped at `backoff_max`, with "equal jitter" (between half and
    /// all of it), but never less than the server's `Retry-After` (itself capped at
    /// `retry_after_cap`).
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .backoff_base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
            .min(self.backoff_max);
        let half = exp / 2;
        let jitter = if half.is_zero() {
            Duration::ZERO
        } else {
            half.mul_f64(rand::random::<f64>())
        };
        let backoff = half + jitter;
        match retry_after {
            Some(after) => backoff.max(after.min(self.retry_after_cap)),
            None => backoff,
        }
    }
}

/// A per-model adjustment, matched by model-name prefix (case-insensitive, ignoring an
/// `org/` part such as `Qwen/Qwen3-8B`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelQuirk {
    /// Applies to models whose name starts with this.
    pub model_prefix: String,
    /// Text appended to the last user message (once).
    #[serde(default)]
    pub append_to_user: String,
}

impl ModelQuirk {
    /// Whether this quirk applies to `model`.
    pub fn matches(&self, model: &str) -> bool {
        let name = model.rsplit('/').next().unwrap_or(model);
        let prefix = self.model_prefix.to_ascii_lowercase();
        !prefix.is_empty() && name.to_ascii_lowercase().starts_with(&prefix)
    }
}

/// The built-in quirks table: qwen models get ` /no_think` (as the Python original does), so they answer
/// without a long reasoning preamble.
pub fn default_quirks() -> Vec<ModelQuirk> {
    vec![ModelQuirk {
        model_prefix: "qwen".to_owned(),
        append_to_user: " /no_think".to_owned(),
    }]
}

/// Applies every matching quirk to `request` (in table order).
pub fn apply_quirks(quirks: &[ModelQuirk], request: &mut ChatRequest) {
    let model = request.model().to_owned();
    for quirk in quirks.iter().filter(|q| q.matches(&model)) {
        if quirk.append_to_user.is_empty() {
            continue;
        }
        if let Some(user) = request
            .messages
            .iter_mut()
            .rev()
            .find(|m| m.role == Role::User)
            && !user.content.ends_with(&quirk.append_to_user)
        {
            user.content.push_str(&quirk.append_to_user);
        }
    }
}

/// What the retry loop asks of a reply: its think-stripped text and its tool calls give the
/// value the caller wants, or the reason to try again.
pub(crate) type ReplyCheck<'a, V> = dyn Fn(&str, &[ToolCall]) -> Result<V, String> + Sync + 'a;

/// The length check of a request: its `min_length` (else [`DEFAULT_MIN_LENGTH`]) and
/// `max_length`. A reply that calls tools may have little or no text: only `max_length`
/// applies to it.
pub(crate) fn length_check(
    request: &ChatRequest,
) -> impl Fn(&str, &[ToolCall]) -> Result<(), String> + Sync + use<> {
    let min = request.options.min_length.unwrap_or(DEFAULT_MIN_LENGTH);
    let max = request.options.max_length;
    move |content: &str, calls: &[ToolCall]| {
        let min = if calls.is_empty() { min } else { 0 };
        check_length(content, min, max)
    }
}

/// Checks the length of a (think-stripped) reply in characters.
pub fn check_length(content: &str, min: usize, max: Option<usize>) -> Result<(), String> {
    let len = content.chars().count();
    if len < min {
        return Err(format!(
            "reply has {len} characters after removing <think> blocks, fewer than min_length {min}"
        ));
    }
    if let Some(max) = max
        && len > max
    {
        return Err(format!(
            "reply has {len} characters, more than max_length {max}"
        ));
    }
    Ok(())
}

/// Per-call settings. Every field is optional; the request options come from the call, then
/// the template (for a [`TemplateAgent`](crate::TemplateAgent)), then the agent, then the
/// defaults ([`RequestOptions::layered`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerateOptions {
    /// Template version ([`TemplateAgent`](crate::TemplateAgent) only).
    pub version: VersionReq,
    /// Skip the cache read but still store the reply ([`TemplateAgent`](crate::TemplateAgent)
    /// only).
    pub no_cache: bool,
    /// Render this many of the template's few-shot examples ahead of the user prompt
    /// ([`TemplateAgent`](crate::TemplateAgent) only).
    pub examples: usize,
    /// Story context, sent as a second system message `CURRENT STORY CONTEXT:\n…`
    /// ([`TemplateAgent`](crate::TemplateAgent); [`Agent::generate`] takes it as an argument).
    pub context: Option<String>,
    /// Task name for the metrics record of a plain [`Agent::generate`] call
    /// (default [`DEFAULT_TASK`]).
    pub task: Option<String>,
    /// The call's request options: model, temperature, max tokens, length bounds…
    pub request: RequestOptions,
    /// Replay a reply that did not stream from the provider for this call (a cache hit, an
    /// identical call's reply) with its original pacing, each delta at the offset it first
    /// arrived at, instead of all at once ([`TemplateAgent::generate_stream`] only).
    ///
    /// [`TemplateAgent::generate_stream`]: crate::TemplateAgent::generate_stream
    pub paced_replay: bool,
    /// Messages sent after the template's rendered ones (a conversation that continues a
    /// template; [`TemplateAgent`](crate::TemplateAgent) only).
    pub messages: Vec<ChatMessage>,
    /// Answer from the cache only: a miss is [`AgentError::CacheMiss`] and the provider is
    /// never called ([`TemplateAgent`](crate::TemplateAgent) and
    /// [`ChatAgent`](crate::ChatAgent) only).
    pub cache_only: bool,
    /// Tags written into the call's metrics record (`tags`), for `prompt metrics tags` and
    /// the per-tag budgets (`[budget.tags]`). Not part of the cache key: the same request
    /// with other tags is a hit.
    pub tags: Vec<String>,
}

impl GenerateOptions {
    /// Options with these request options and every other field at its default.
    pub fn with_request(request: RequestOptions) -> Self {
        Self {
            request,
            ..Self::default()
        }
    }
}

/// A successful reply of [`Agent::generate`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reply {
    /// The reply with `<think>` blocks removed.
    pub content: String,
    /// The model that answered.
    pub model: String,
    /// Prompt tokens, when reported.
    pub tokens_prompt: Option<u64>,
    /// Generated tokens, when reported.
    pub tokens_completion: Option<u64>,
    /// Why generation stopped, when reported.
    pub finish_reason: Option<String>,
    /// Wall time of the whole call, retries and waits included, in milliseconds.
    pub latency_ms: f64,
    /// Attempts after the first.
    pub retry_count: u32,
    /// Reasoning text the server sent apart from the reply, when any.
    pub reasoning: Option<String>,
    /// Milliseconds from sending the (last) request to its first delta, for streamed replies.
    pub time_to_first_token_ms: Option<f64>,
    /// The tools the model called, in order, arguments checked against their schemas (empty
    /// when it called none).
    pub tool_calls: Vec<ToolCall>,
    /// What the call cost in USD, as its metrics record says (`None`: the model has no price).
    pub cost_usd: Option<f64>,
}

/// A parsed reply of [`Agent::generate_structured`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Structured<T> {
    /// The parsed value.
    pub value: T,
    /// The reply it was parsed from.
    pub reply: Reply,
}

/// The result of the retry loop.
pub(crate) struct Attempted<V> {
    pub(crate) value: V,
    pub(crate) response: ChatResponse,
    pub(crate) retry_count: u32,
}

/// A failed retry loop.
#[derive(Debug)]
pub(crate) struct Failed {
    pub(crate) error: AgentError,
    pub(crate) retry_count: u32,
}

/// An LLM agent: a name, a role, a system prompt, a model and a temperature, over a shared
/// provider, concurrency limiter and metrics sink. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Agent {
    name: String,
    role: String,
    system_prompt: String,
    model: String,
    temperature: f64,
    provider: Arc<dyn Provider>,
    limiter: Arc<Semaphore>,
    permits: usize,
    breaker: Arc<CircuitBreaker>,
    stream: bool,
    metrics: Option<Arc<dyn MetricsSink>>,
    policy: RetryPolicy,
    quirks: Arc<[ModelQuirk]>,
    costs: Arc<CostBook>,
    capture_content: bool,
}

impl Agent {
    /// A standalone agent over `provider`, with its own limiter of [`DEFAULT_CONCURRENCY`]
    /// permits, the default retry policy and quirks, no metrics, model `model` and
    /// [`DEFAULT_TEMPERATURE`]. Agents made by [`PromptSystem::agent`](crate::PromptSystem::agent)
    /// share the system's parts instead.
    pub fn new(
        name: &str,
        role: &str,
        system_prompt: &str,
        model: &str,
        provider: Arc<dyn Provider>,
    ) -> Self {
        Self {
            name: name.to_owned(),
            role: role.to_owned(),
            system_prompt: system_prompt.to_owned(),
            model: model.to_owned(),
            temperature: DEFAULT_TEMPERATURE,
            provider,
            limiter: Arc::new(Semaphore::new(DEFAULT_CONCURRENCY)),
            permits: DEFAULT_CONCURRENCY,
            breaker: Arc::new(CircuitBreaker::new(
                DEFAULT_BREAKER_FAILURES,
                Duration::from_secs_f64(DEFAULT_BREAKER_COOLDOWN_SECS),
            )),
            stream: true,
            metrics: None,
            policy: RetryPolicy::default(),
            quirks: default_quirks().into(),
            costs: Arc::new(CostBook::default()),
            capture_content: false,
        }
    }

    /// Uses this model by default.
    pub fn with_model(mut self, model: &str) -> Self {
        model.clone_into(&mut self.model);
        self
    }

    /// Uses this temperature by default.
    pub fn with_temperature(mut self, temperature: f64) -> Self {
        self.temperature = temperature;
        self
    }

    /// Shares this concurrency limiter of `permits` permits (one per provider).
    pub fn with_limiter(mut self, limiter: Arc<Semaphore>, permits: usize) -> Self {
        self.limiter = limiter;
        self.permits = permits;
        self
    }

    /// Shares this circuit breaker (one per provider).
    pub fn with_breaker(mut self, breaker: Arc<CircuitBreaker>) -> Self {
        self.breaker = breaker;
        self
    }

    /// Streams replies from the provider (the default) or asks for them whole.
    pub fn with_streaming(mut self, stream: bool) -> Self {
        self.stream = stream;
        self
    }

    /// Writes a metrics record for every call to this sink.
    pub fn with_metrics(mut self, metrics: Arc<dyn MetricsSink>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Retries as this policy says.
    pub fn with_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Prices and limits its calls with this book (one per system).
    pub(crate) fn with_costs(mut self, costs: Arc<CostBook>) -> Self {
        self.costs = costs;
        self
    }

    /// Puts the messages and the reply into each generation's span
    /// (`gen_ai.input.messages`, `gen_ai.output.messages`); off by default.
    pub fn with_content_capture(mut self, capture: bool) -> Self {
        self.capture_content = capture;
        self
    }

    /// The span of one generation of `request` under `task`.
    pub(crate) fn generation_span(&self, task: &str, request: &ChatRequest) -> tracing::Span {
        crate::telemetry::generation_span(
            self.provider.name(),
            &self.name,
            task,
            request,
            self.capture_content,
        )
    }

    /// Before a provider call of `request`: refuses it when it could break a spending limit,
    /// else holds its worst case until the returned reservation drops.
    pub(crate) fn admit(
        &self,
        request: &ChatRequest,
        tags: &[String],
    ) -> Result<crate::cost::Reservation, AgentError> {
        self.costs
            .admit(self.metrics.as_ref(), &self.name, tags, request)
    }

    /// What `usage` on `model` costs with this agent's prices and provider (for savings).
    pub(crate) fn cost_of(
        &self,
        usage: Option<prompt_metrics::TokenUsage>,
        model: &str,
    ) -> Option<f64> {
        self.costs.cost(usage, model, self.provider.is_local())
    }

    /// Fills a record's `cost_usd` (unless set) by this agent's prices and provider.
    pub(crate) fn price(&self, record: &mut PromptMetrics) {
        self.costs.price_record(record, self.provider.is_local());
    }

    /// Records the reply on the current span (finish reason; its text with content capture).
    pub(crate) fn trace_reply(&self, response: &ChatResponse) {
        crate::telemetry::record_reply(response, self.capture_content);
    }

    /// Replaces the quirks table.
    pub fn with_quirks(mut self, quirks: impl Into<Arc<[ModelQuirk]>>) -> Self {
        self.quirks = quirks.into();
        self
    }

    /// The agent's name (metrics `agent`, template folder).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The agent's role, a free description.
    pub fn role(&self) -> &str {
        &self.role
    }

    /// The system prompt of plain [`generate`](Self::generate) calls.
    pub fn system_prompt(&self) -> &str {
        &self.system_prompt
    }

    /// The default model.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The default temperature.
    pub fn temperature(&self) -> f64 {
        self.temperature
    }

    /// The provider.
    pub fn provider(&self) -> &Arc<dyn Provider> {
        &self.provider
    }

    /// The retry policy.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// Messages `[system, optional "CURRENT STORY CONTEXT:\n…" system message, user]`; an
    /// empty system prompt or context is left out.
    pub fn build_messages(system: &str, context: Option<&str>, user: &str) -> Vec<ChatMessage> {
        let mut messages = Vec::with_capacity(3);
        if !system.trim().is_empty() {
            messages.push(ChatMessage::system(system));
        }
        if let Some(context) = context.filter(|c| !c.trim().is_empty()) {
            messages.push(Self::context_message(context));
        }
        messages.push(ChatMessage::user(user));
        messages
    }

    /// The story context as the system message it is sent as: `CURRENT STORY CONTEXT:\n…`.
    pub(crate) fn context_message(context: &str) -> ChatMessage {
        ChatMessage::system(format!("{CONTEXT_HEADER}{context}"))
    }

    /// The request a plain [`generate`](Self::generate) call sends (quirks applied).
    pub fn build_request(
        &self,
        prompt: &str,
        context: Option<&str>,
        options: &GenerateOptions,
    ) -> ChatRequest {
        self.request_for(
            Self::build_messages(&self.system_prompt, context, prompt),
            &options.request,
            None,
        )
    }

    /// The agent layer of the request options: its model and temperature.
    pub fn options_layer(&self) -> RequestOptions {
        RequestOptions::agent(&self.model, self.temperature)
    }

    /// A request of `messages` with the call's options over the template's (if any) over
    /// this agent's over the defaults, quirks applied.
    pub(crate) fn request_for(
        &self,
        messages: Vec<ChatMessage>,
        call: &RequestOptions,
        template: Option<&RequestOptions>,
    ) -> ChatRequest {
        let mut request = ChatRequest {
            messages,
            options: RequestOptions::layered(call, template, &self.options_layer()),
        };
        self.apply_quirks(&mut request);
        request
    }

    pub(crate) fn apply_quirks(&self, request: &mut ChatRequest) {
        apply_quirks(&self.quirks, request);
    }

    /// Generates a reply to `prompt` (with optional story `context`): builds the messages,
    /// calls the provider under the shared concurrency limit, strips `<think>` blocks,
    /// validates the length and retries as the policy says. Writes one metrics record, failed
    /// calls included.
    pub async fn generate(
        &self,
        prompt: &str,
        context: Option<&str>,
        options: &GenerateOptions,
    ) -> Result<Reply, AgentError> {
        self.generate_with(prompt, context, options, None).await
    }

    /// [`generate`](Self::generate) as a stream: the reply's deltas as they arrive, then the
    /// same [`Reply`]. Dropping the stream stops the call.
    pub fn generate_stream(
        &self,
        prompt: &str,
        context: Option<&str>,
        options: &GenerateOptions,
    ) -> GenerationStream<Reply> {
        let agent = self.clone();
        let (prompt, context, options) = (
            prompt.to_owned(),
            context.map(str::to_owned),
            options.clone(),
        );
        GenerationStream::spawn(move |events| async move {
            agent
                .generate_with(&prompt, context.as_deref(), &options, Some(&events))
                .await
        })
    }

    async fn generate_with(
        &self,
        prompt: &str,
        context: Option<&str>,
        options: &GenerateOptions,
        events: Option<&EventSender>,
    ) -> Result<Reply, AgentError> {
        let request = self.build_request(prompt, context, options);
        self.send(request, options, events).await
    }

    /// Answers a whole conversation: `messages` as given (this agent's system prompt is not
    /// added; put one first if you want it), with the call's options over this agent's. The
    /// reply may call tools ([`RequestOptions::tools`]); its calls are in
    /// [`Reply::tool_calls`], checked against the offered tools' schemas. Retries, validation
    /// and the metrics record as for [`generate`](Self::generate).
    pub async fn chat(
        &self,
        messages: &[ChatMessage],
        options: &GenerateOptions,
    ) -> Result<Reply, AgentError> {
        let request = self.request_for(messages.to_vec(), &options.request, None);
        self.send(request, options, None).await
    }

    /// [`chat`](Self::chat) as a stream of deltas (tool calls in pieces), then the [`Reply`].
    pub fn chat_stream(
        &self,
        messages: &[ChatMessage],
        options: &GenerateOptions,
    ) -> GenerationStream<Reply> {
        let agent = self.clone();
        let request = self.request_for(messages.to_vec(), &options.request, None);
        let options = options.clone();
        GenerationStream::spawn(move |events| async move {
            agent.send(request, &options, Some(&events)).await
        })
    }

    /// Runs a tool-calling conversation: asks the model, runs every tool it calls with
    /// `run_tool` (its `Ok` text, or its `Err` text marked as an error, goes back as the tool's
    /// result), and asks again, until a reply calls no tool or `max_rounds` replies have
    /// called tools. Returns the last reply and the whole conversation (`messages`, then each
    /// assistant turn and tool result). Each round is one [`chat`](Self::chat) call with its
    /// own metrics record.
    ///
    /// ```no_run
    /// # async fn demo(agent: prompt_agent::Agent) -> Result<(), prompt_agent::AgentError> {
    /// use prompt_agent::{ChatMessage, GenerateOptions, RequestOptions, ToolDefinition};
    /// use serde_json::json;
    ///
    /// let weather = ToolDefinition {
    ///     name: "weather".into(),
    ///     description: Some("Today's weather in a city".into()),
    ///     parameters: json!({"type": "object", "properties": {"city": {"type": "string"}},
    ///                        "required": ["city"]}),
    /// };
    /// let options = GenerateOptions::with_request(RequestOptions {
    ///     tools: Some(vec![weather]),
    ///     ..RequestOptions::default()
    /// });
    /// let (reply, _conversation) = agent
    ///     .run_tools(vec![ChatMessage::user("Should I take an umbrella in Oslo?")], &options, 4,
    ///         |call| match call.name.as_str() {
    ///             "weather" => Ok(format!("rain in {}", call.arguments["city"])),
    ///             other => Err(format!("no tool {other}")),
    ///         })
    ///     .await?;
    /// println!("{}", reply.content);
    /// # Ok(()) }
    /// ```
    pub async fn run_tools(
        &self,
        mut messages: Vec<ChatMessage>,
        options: &GenerateOptions,
        max_rounds: usize,
        mut run_tool: impl FnMut(&ToolCall) -> Result<String, String>,
    ) -> Result<(Reply, Vec<ChatMessage>), AgentError> {
        let mut rounds = 0;
        loop {
            let reply = self.chat(&messages, options).await?;
            if reply.tool_calls.is_empty() || rounds == max_rounds {
                return Ok((reply, messages));
            }
            rounds += 1;
            let mut turn = ChatMessage::assistant(reply.content.clone());
            turn.tool_calls.clone_from(&reply.tool_calls);
            messages.push(turn);
            for call in &reply.tool_calls {
                let result = run_tool(call).unwrap_or_else(|e| format!("error: {e}"));
                messages.push(ChatMessage::tool_result(call.id.clone(), result));
            }
        }
    }

    /// Sends a built request through the retry loop and records the call.
    async fn send(
        &self,
        request: ChatRequest,
        options: &GenerateOptions,
        events: Option<&EventSender>,
    ) -> Result<Reply, AgentError> {
        let span = self.generation_span(task_of(options), &request);
        self.send_inner(request, options, events)
            .instrument(span)
            .await
    }

    async fn send_inner(
        &self,
        request: ChatRequest,
        options: &GenerateOptions,
        events: Option<&EventSender>,
    ) -> Result<Reply, AgentError> {
        let started = Instant::now();
        let check = length_check(&request);
        let (result, _reservation) = self
            .admitted(&request, &options.tags, &check, false, events)
            .await;
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        let mut record = self.plain_record(&request, options, latency_ms);
        let out = match result {
            Ok(done) => {
                fill_success(&mut record, &done.response, done.retry_count);
                self.trace_reply(&done.response);
                self.price(&mut record);
                Ok(reply_from(
                    done.response,
                    done.retry_count,
                    latency_ms,
                    record.cost_usd,
                ))
            }
            Err(failed) => {
                fill_failure(&mut record, &failed);
                Err(failed.error)
            }
        };
        self.record(record);
        out
    }

    /// Generates a reply that parses as `T`: sends `T`'s JSON Schema as the response format,
    /// parses the reply (after removing `<think>` blocks and Markdown code fences) and, when it
    /// does not parse, retries with the bad reply and the parse error fed back to the model,
    /// up to the policy's `max_attempts`. Writes one metrics record.
    pub async fn generate_structured<T: DeserializeOwned + JsonSchema>(
        &self,
        prompt: &str,
        context: Option<&str>,
        options: &GenerateOptions,
    ) -> Result<Structured<T>, AgentError> {
        let started = Instant::now();
        let schema = schemars::schema_for!(T);
        let name = schema_name(&T::schema_name());
        let mut options = options.clone();
        options.request.format = Some(ResponseFormat::JsonSchema {
            name: name.clone(),
            schema: schema.to_value(),
        });
        options.request.min_length = Some(options.request.min_length.unwrap_or(0));
        let request = self.build_request(prompt, context, &options);
        let span = self.generation_span(task_of(&options), &request);
        async move {
            let check = |content: &str, _: &[ToolCall]| parse_json::<T>(content);
            let (result, _reservation) = self
                .admitted(&request, &options.tags, &check, true, None)
                .await;
            let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
            let mut record = self.plain_record(&request, &options, latency_ms);
            let out = match result {
                Ok(done) => {
                    fill_success(&mut record, &done.response, done.retry_count);
                    self.trace_reply(&done.response);
                    self.price(&mut record);
                    Ok(Structured {
                        value: done.value,
                        reply: reply_from(
                            done.response,
                            done.retry_count,
                            latency_ms,
                            record.cost_usd,
                        ),
                    })
                }
                Err(mut failed) => {
                    if let AgentError::Validation {
                        agent,
                        attempts,
                        reason,
                    } = failed.error
                    {
                        failed.error = AgentError::Structured {
                            agent,
                            attempts,
                            type_name: name,
                            reason,
                        };
                    }
                    fill_failure(&mut record, &failed);
                    Err(failed.error)
                }
            };
            self.record(record);
            out
        }
        .instrument(span)
        .await
    }

    /// The metrics record of a plain (template-less) call, before its outcome is filled in.
    fn plain_record(
        &self,
        request: &ChatRequest,
        options: &GenerateOptions,
        latency_ms: f64,
    ) -> PromptMetrics {
        let mut record = PromptMetrics::new(
            request_hash(request),
            &self.name,
            task_of(options),
            request.model(),
            request.options.temperature.unwrap_or(self.temperature),
            latency_ms,
        );
        record.provider = Some(self.provider.name().to_owned());
        record.tags.clone_from(&options.tags);
        record
    }

    /// Prices a metrics record (`cost_usd`), puts its outcome on the current span and writes
    /// it; a sink error is logged, never returned.
    pub(crate) fn record(&self, mut record: PromptMetrics) {
        self.price(&mut record);
        self.costs.count(&record);
        crate::telemetry::record_outcome(&record);
        if let Some(sink) = &self.metrics
            && let Err(e) = sink.record(record)
        {
            tracing::warn!(agent = %self.name, error = %e, "could not record metrics");
        }
    }

    /// The retry loop. `check` validates the think-stripped reply; with `feedback`, a rejected
    /// reply and the reason are appended to the conversation before the next attempt.
    /// [`Self::execute`] once the budget admits the call (a refusal is the call's failure);
    /// the reservation holds the call's worst case in this process's spend until dropped.
    async fn admitted<V>(
        &self,
        request: &ChatRequest,
        tags: &[String],
        check: &ReplyCheck<'_, V>,
        feedback: bool,
        events: Option<&EventSender>,
    ) -> (
        Result<Attempted<V>, Failed>,
        Option<crate::cost::Reservation>,
    ) {
        match self.admit(request, tags) {
            Ok(reservation) => (
                self.execute(request.clone(), check, feedback, events).await,
                Some(reservation),
            ),
            Err(error) => (
                Err(Failed {
                    error,
                    retry_count: 0,
                }),
                None,
            ),
        }
    }

    pub(crate) async fn execute<V>(
        &self,
        mut request: ChatRequest,
        check: &ReplyCheck<'_, V>,
        feedback: bool,
        events: Option<&EventSender>,
    ) -> Result<Attempted<V>, Failed> {
        self.execute_inner(&mut request, check, feedback, events)
            .await
    }

    async fn execute_inner<V>(
        &self,
        request: &mut ChatRequest,
        check: &ReplyCheck<'_, V>,
        feedback: bool,
        events: Option<&EventSender>,
    ) -> Result<Attempted<V>, Failed> {
        let max_attempts = self.policy.max_attempts.max(1);
        let mut last_rejection = String::new();
        let fail = |error: ProviderError, attempt: u32| Failed {
            error: AgentError::Provider {
                agent: self.name.clone(),
                attempts: attempt,
                source: error,
            },
            retry_count: attempt - 1,
        };
        for attempt in 1..=max_attempts {
            if attempt > 1
                && let Some(events) = events
            {
                let reason = if last_rejection.is_empty() {
                    "the previous attempt failed".to_owned()
                } else {
                    last_rejection.clone()
                };
                let _ = events.send(GenerationEvent::Retry { attempt, reason });
            }
            // An open circuit fails at once, without retries: the provider is known to be down.
            let pass = self
                .breaker
                .admit(self.provider.name())
                .map_err(|e| fail(e, attempt))?;
            let outcome = {
                let permit =
                    tokio::time::timeout(self.policy.queue_timeout, self.limiter.acquire()).await;
                let Ok(Ok(_permit)) = permit else {
                    drop(pass);
                    return Err(fail(
                        ProviderError::Busy {
                            provider: self.provider.name().to_owned(),
                            permits: self.limiter_permits(),
                            waited: self.policy.queue_timeout,
                        },
                        attempt,
                    ));
                };
                self.attempt(request, events).await
            };
            self.breaker.record(pass, outcome.as_ref().map(|_| ()));
            let error = match outcome {
                Err(e) => e,
                Ok(mut response) => {
                    let (cleaned, thought) = split_think(&response.content);
                    let offered = request.options.tool_definitions();
                    let verdict = check_tool_calls(&response.tool_calls, offered)
                        .and_then(|()| check(&cleaned, &response.tool_calls));
                    match verdict {
                        Ok(value) => {
                            response.content = cleaned;
                            if response.reasoning.is_none() {
                                response.reasoning = thought;
                            }
                            return Ok(Attempted {
                                value,
                                response,
                                retry_count: attempt - 1,
                            });
                        }
                        Err(reason) => {
                            tracing::warn!(attempt, max_attempts, %reason, "reply rejected");
                            if feedback {
                                request
                                    .messages
                                    .push(ChatMessage::assistant(response.content));
                                request.messages.push(ChatMessage::user(format!(
                                    "Your reply was not valid JSON for the schema: {reason}. Reply with JSON only."
                                )));
                            }
                            last_rejection = reason;
                            if attempt < max_attempts {
                                tokio::time::sleep(self.policy.delay(attempt, None)).await;
                            }
                            continue;
                        }
                    }
                }
            };
            if !error.is_retryable() || attempt == max_attempts {
                return Err(fail(error, attempt));
            }
            last_rejection = error.to_string();
            let delay = self.policy.delay(attempt, error.retry_after());
            tracing::warn!(attempt, max_attempts, error = %error, delay_ms = delay.as_millis() as u64, "retrying");
            tokio::time::sleep(delay).await;
        }
        Err(Failed {
            error: AgentError::Validation {
                agent: self.name.clone(),
                attempts: max_attempts,
                reason: last_rejection,
            },
            retry_count: max_attempts - 1,
        })
    }

    /// The permits of the concurrency limiter (for messages).
    fn limiter_permits(&self) -> usize {
        self.permits
    }

    /// One attempt: streamed (each delta sent to `events` as it arrives, gaps longer than the
    /// idle timeout are a stall) or whole, within the attempt's wall-clock limit.
    async fn attempt(
        &self,
        request: &ChatRequest,
        events: Option<&EventSender>,
    ) -> Result<ChatResponse, ProviderError> {
        let provider = self.provider.name();
        let url = || self.provider.base_url().unwrap_or_default().to_owned();
        let limit = self.policy.request_timeout;
        let timed_out = || ProviderError::Timeout {
            provider: provider.to_owned(),
            url: url(),
            after: limit,
        };
        let started = Instant::now();
        if !self.stream || !self.provider.streams() {
            let response = tokio::time::timeout(limit, self.provider.chat(request))
                .await
                .map_err(|_| timed_out())??;
            if let Some(events) = events {
                let mut whole = crate::provider::whole_reply_events(response.clone());
                while let Some(Ok(StreamEvent::Delta(delta))) = whole.next().await {
                    let _ = events.send(GenerationEvent::Delta(delta));
                }
            }
            return Ok(response);
        }
        let deadline = tokio::time::Instant::from_std(started + limit);
        let idle = self.policy.idle_timeout;
        let stalled = |received_chars: usize| ProviderError::Stalled {
            provider: provider.to_owned(),
            url: url(),
            idle,
            received_chars,
        };
        let mut stream = match within(deadline, idle, self.provider.chat_stream(request)).await {
            Ok(opened) => opened?,
            Err(None) => return Err(timed_out()),
            Err(Some(())) => return Err(stalled(0)),
        };
        let mut assembler = StreamAssembler::new(request.model(), started);
        loop {
            let next = match within(deadline, idle, stream.next()).await {
                Ok(next) => next,
                Err(None) => return Err(timed_out()),
                Err(Some(())) => return Err(stalled(assembler.received_chars())),
            };
            match next {
                Some(Ok(event)) => {
                    assembler.push(&event);
                    match event {
                        StreamEvent::Delta(delta) => {
                            if let Some(events) = events {
                                let _ = events.send(GenerationEvent::Delta(delta));
                            }
                        }
                        StreamEvent::Done(_) => return Ok(assembler.finish()),
                    }
                }
                Some(Err(e)) => return Err(e.with_received(assembler.received_chars())),
                None => {
                    return Err(ProviderError::StreamBroken {
                        provider: provider.to_owned(),
                        message: "the stream ended before its final frame".to_owned(),
                        received_chars: assembler.received_chars(),
                    });
                }
            }
        }
    }
}

/// Waits for one step of a stream: `Err(None)` when the attempt's wall clock runs out first,
/// `Err(Some(()))` when the gap since the last step passes the idle timeout.
async fn within<T>(
    deadline: tokio::time::Instant,
    idle: Duration,
    step: impl Future<Output = T>,
) -> Result<T, Option<()>> {
    match tokio::time::timeout_at(deadline, tokio::time::timeout(idle, step)).await {
        Err(_) => Err(None),
        Ok(Err(_)) => Err(Some(())),
        Ok(Ok(value)) => Ok(value),
    }
}

pub(crate) fn fill_success(record: &mut PromptMetrics, response: &ChatResponse, retry_count: u32) {
    record.tokens_prompt = response.tokens_prompt;
    record.tokens_completion = response.tokens_completion;
    record.tokens_cached = response.tokens_cached;
    record.tokens_reasoning = response.tokens_reasoning;
    record.retry_count = retry_count;
    record.validation_passed = true;
    record.response_length = response.content.chars().count() as u64;
    response.model.clone_into(&mut record.model);
    // After the token counts: tokens/s is derived from them.
    if let Some(ttft_ms) = response.time_to_first_token_ms() {
        record.set_stream_timing(Some(ttft_ms), response.latency.as_secs_f64() * 1000.0);
    }
}

pub(crate) fn fill_failure(record: &mut PromptMetrics, failed: &Failed) {
    crate::telemetry::record_error(failed.error.kind());
    record.retry_count = failed.retry_count;
    record.validation_passed = false;
    record.error = Some(failed.error.to_string());
}

/// The metrics task of a plain call.
fn task_of(options: &GenerateOptions) -> &str {
    options.task.as_deref().unwrap_or(DEFAULT_TASK)
}

fn reply_from(
    response: ChatResponse,
    retry_count: u32,
    latency_ms: f64,
    cost_usd: Option<f64>,
) -> Reply {
    Reply {
        cost_usd,
        time_to_first_token_ms: response.time_to_first_token_ms(),
        content: response.content,
        model: response.model,
        tokens_prompt: response.tokens_prompt,
        tokens_completion: response.tokens_completion,
        finish_reason: response.finish_reason,
        latency_ms,
        retry_count,
        reasoning: response.reasoning,
        tool_calls: response.tool_calls,
    }
}

/// First 16 hex chars of SHA-256 over the model and messages (the Python original's short prompt hash).
fn request_hash(request: &ChatRequest) -> String {
    let mut hasher = Sha256::new();
    hasher.update(request.model().as_bytes());
    for m in &request.messages {
        hasher.update([0]);
        hasher.update(m.role.as_str().as_bytes());
        hasher.update([0]);
        hasher.update(m.content.as_bytes());
    }
    hex::encode(&hasher.finalize()[..8])
}

/// A schema name OpenAI accepts: `[A-Za-z0-9_-]{1,64}`.
fn schema_name(raw: &str) -> String {
    let name: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if name.is_empty() {
        "response".to_owned()
    } else {
        name
    }
}

/// Parses JSON, tolerating a Markdown code fence around it.
pub(crate) fn parse_json<T: DeserializeOwned>(content: &str) -> Result<T, String> {
    let mut text = content.trim();
    if let Some(rest) = text.strip_prefix("```") {
        let rest = rest.strip_prefix("json").unwrap_or(rest);
        text = rest.trim_end().strip_suffix("```").unwrap_or(rest).trim();
    }
    serde_json::from_str(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_checks_count_characters() {
        assert!(check_length("ünïcödé!!!", 10, None).is_ok());
        assert!(
            check_length("short", 10, None)
                .unwrap_err()
                .contains("fewer than min_length 10")
        );
        assert!(
            check_length("0123456789AB", 0, Some(10))
                .unwrap_err()
                .contains("more than max_length 10")
        );
    }

    #[test]
    fn quirks_match_by_prefix_and_apply_once() {
        let quirks = default_quirks();
        for (model, applies) in [
            ("qwen3:30b", true),
            ("Qwen/Qwen3-8B", true),
            ("QWEN2.5", true),
            ("llama3.2", false),
            ("dolphin3:8b", false),
        ] {
            let mut r = ChatRequest::new(model, Agent::build_messages("s", None, "hi"));
            apply_quirks(&quirks, &mut r);
            apply_quirks(&quirks, &mut r);
            let want = if applies { "hi /no_think" } else { "hi" };
            assert_eq!(
                r.messages.last().map(|m| m.content.as_str()),
                Some(want),
                "{model}"
            );
            assert_eq!(r.messages[0].content, "s", "system untouched");
        }
    }

    #[test]
    fn messages_have_the_python_original_shape() {
        let m = Agent::build_messages("sys", Some("ctx"), "user");
        assert_eq!(
            m,
            vec![
                ChatMessage::system("sys"),
                ChatMessage::system("CURRENT STORY CONTEXT:\nctx"),
                ChatMessage::user("user")
            ]
        );
        assert_eq!(
            Agent::build_messages("", Some(" "), "u"),
            vec![ChatMessage::user("u")]
        );
    }

    #[test]
    fn delays_grow_are_jittered_capped_and_honour_retry_after() {
        let policy = RetryPolicy {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_millis(1000),
            retry_after_cap: Duration::from_secs(5),
            ..RetryPolicy::default()
        };
        for _ in 0..200 {
            let d1 = policy.delay(1, None);
            assert!(
                d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100),
                "{d1:?}"
            );
            let d3 = policy.delay(3, None);
            assert!(
                d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400),
                "{d3:?}"
            );
            let d9 = policy.delay(9, None);
            assert!(
                d9 >= Duration::from_millis(500) && d9 <= Duration::from_millis(1000),
                "{d9:?}"
            );
            assert!(policy.delay(40, None) <= Duration::from_millis(1000));
            assert!(policy.delay(1, Some(Duration::from_secs(2))) >= Duration::from_secs(2));
            assert_eq!(
                policy.delay(1, Some(Duration::from_secs(3600))),
                Duration::from_secs(5)
            );
        }
    }

    #[test]
    fn json_is_parsed_with_or_without_fences() {
        let v: serde_json::Value = parse_json("```json\n{\"a\": 1}\n```").expect("fenced");
        assert_eq!(v["a"], 1);
        let v: serde_json::Value = parse_json(" {\"a\": 2} ").expect("bare");
        assert_eq!(v["a"], 2);
        assert!(parse_json::<serde_json::Value>("{\"a\": ").is_err());
        assert_eq!(schema_name("Vec<Hero>"), "Vec_Hero_");
    }
}
