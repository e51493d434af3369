//! [`TemplateAgent`]: the Python original's EnhancedBaseAgent. Template → cache → provider → metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use prompt_cache::{CacheKey, CachedResponse};
use prompt_metrics::PromptMetrics;
use prompt_templates::{PromptTemplate, Vars};
use serde::Serialize;
use tokio::sync::OnceCell;

use crate::agent::{Agent, Failed, GenerateOptions, fill_failure, fill_success, length_check};
use crate::error::AgentError;
use crate::request::{
    ChatMessage, ChatRequest, ChatResponse, Delta, RequestOptions, Role, StreamEvent, TimedDelta,
    ToolCall, ToolCallDelta,
};
use crate::stream::{EventSender, GenerationEvent, GenerationStream};
use crate::system::SystemInner;
use futures_util::StreamExt;
use tracing::Instrument;

/// The result of [`TemplateAgent::generate_from_template`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Generation {
    /// The reply, `<think>` blocks removed.
    pub content: String,
    /// The model that answered.
    pub model: String,
    /// Prompt tokens, when known (a cache hit reports the original call's).
    pub tokens_prompt: Option<u64>,
    /// Generated tokens, when known (a cache hit reports the original call's).
    pub tokens_completion: Option<u64>,
    /// Wall time of this call in milliseconds.
    pub latency_ms: f64,
    /// Whether the reply came without a provider call of this caller (from the cache, or
    /// shared with an identical call in flight).
    pub cache_hit: bool,
    /// Provider attempts after the first.
    pub retry_count: u32,
    /// The template version used.
    pub template_version: u32,
    /// SHA-256 of the template file (64 hex chars).
    pub template_hash: String,
    /// The cache key of the whole request (64 hex chars).
    pub cache_key: String,
    /// Reasoning text the server sent apart from the reply, when any.
    pub reasoning: Option<String>,
    /// Milliseconds from sending the (last) request to its first delta, for replies streamed
    /// from the provider by this call (`None` for cache hits and whole replies).
    pub time_to_first_token_ms: Option<f64>,
    /// The tools the model called, in order, arguments checked against the template's tool
    /// schemas (empty when it called none).
    pub tool_calls: Vec<ToolCall>,
    /// Why generation stopped, when reported (a cache hit reports the original call's).
    pub finish_reason: Option<String>,
    /// What this call cost in USD, as its metrics record says: 0 for a cache hit, `None`
    /// when the model has no price.
    pub cost_usd: Option<f64>,
    /// What a cache hit saved in USD (the cost of the call it replays), when priced.
    pub saved_usd: Option<f64>,
}

/// A template rendered into a request, before any cache lookup or provider call.
#[derive(Debug, Clone)]
pub struct PreparedRequest {
    /// The template used.
    pub template: Arc<PromptTemplate>,
    /// The request that would be sent (model defaults and quirks applied).
    pub request: ChatRequest,
    /// The cache key of the whole request.
    pub cache_key: CacheKey,
}

/// What one provider call shared by identical concurrent requests produced.
#[derive(Debug)]
pub(crate) struct FlightOk {
    response: ChatResponse,
    retry_count: u32,
    /// The call's worst case held against the spending limits until its record is written
    /// (the last holder of the result drops it).
    _reservation: crate::cost::Reservation,
}

/// One call on the cached path: the request, its key and where its metrics record goes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Call<'a> {
    /// The metrics task.
    pub(crate) task: &'a str,
    /// The request to send.
    pub(crate) request: &'a ChatRequest,
    /// Its cache key.
    pub(crate) key: CacheKey,
    /// The template it was rendered from, if any.
    pub(crate) template: Option<&'a Arc<PromptTemplate>>,
    /// When the call began (for its latency).
    pub(crate) started: Instant,
    /// Set before a reply that did not stream from the provider for this call is replayed.
    pub(crate) replay_flag: Option<&'a AtomicBool>,
}

pub(crate) type FlightResult = Result<Arc<FlightOk>, Arc<Failed>>;
pub(crate) type Flight = Arc<OnceCell<FlightResult>>;

/// An agent whose prompts come from its templates (`templates/<name>/<task>_v<N>.yaml`), with
/// the system's cache and metrics. Cheap to clone.
#[derive(Debug, Clone)]
pub struct TemplateAgent {
    agent: Agent,
    system: Arc<SystemInner>,
}

impl TemplateAgent {
    pub(crate) fn new(agent: Agent, system: Arc<SystemInner>) -> Self {
        Self { agent, system }
    }

    /// The agent's name (the template folder).
    pub fn name(&self) -> &str {
        self.agent.name()
    }

    /// The cache key of a request of this agent's provider in the system's namespace, reusing
    /// the hashing state of its system prompt.
    pub(crate) fn cache_key_of(&self, request: &ChatRequest) -> CacheKey {
        request.cache_key_reusing(
            &self.system.namespace,
            self.agent.provider().name(),
            &self.system.key_prefixes,
        )
    }

    /// The underlying plain agent (same provider, limiter, metrics and retry policy).
    pub fn agent(&self) -> &Agent {
        &self.agent
    }

    /// Streams replies from the provider (the system's `stream` setting) or asks for them
    /// whole, for this agent's calls ([`Agent::with_streaming`]).
    pub fn with_streaming(mut self, stream: bool) -> Self {
        self.agent = self.agent.with_streaming(stream);
        self
    }

    /// Loads and renders the template for `task` and builds the request and its cache key,
    /// without calling anything: for dry runs and `--show-key` style tools.
    ///
    /// Request options: `options.request` first, then the template's `model:` defaults and
    /// `validation:` rules, then the agent's, then the defaults ([`RequestOptions::layered`]).
    pub fn prepare(
        &self,
        task: &str,
        vars: &Vars,
        options: &GenerateOptions,
    ) -> Result<PreparedRequest, AgentError> {
        let template =
            self.system
                .templates
                .load(self.agent.name(), task, options.version.clone())?;
        let rendered = if options.examples > 0 {
            template.render_with_examples(vars, options.examples)?
        } else {
            template.render(vars)?
        };
        let mut messages = if template.message_entries().is_empty() {
            Agent::build_messages(&rendered.system, options.context.as_deref(), &rendered.user)
        } else {
            with_context(rendered.messages, options.context.as_deref())
        };
        messages.extend(options.messages.iter().cloned());
        let request = self.agent.request_for(
            messages,
            &options.request,
            Some(&RequestOptions::from_template(&template)),
        );
        let cache_key = self.cache_key_of(&request);
        Ok(PreparedRequest {
            template,
            request,
            cache_key,
        })
    }

    /// Generates from the template for `task`: load, render, apply the template's model
    /// defaults and validation rules, look the whole request up in the cache (unless
    /// `options.no_cache`), call the provider on a miss (identical concurrent calls share one
    /// provider call), store the validated reply, and write one metrics record — failed calls
    /// included.
    pub async fn generate_from_template(
        &self,
        task: &str,
        vars: &Vars,
        options: &GenerateOptions,
    ) -> Result<Generation, AgentError> {
        self.generate_with(task, vars, options, None, None).await
    }

    /// [`generate_from_template`](Self::generate_from_template) as a stream: the reply's
    /// deltas as they arrive (a cache hit replays the stored ones at once), then the same
    /// [`Generation`]. Dropping the stream stops the call upstream; a reply that did not
    /// finish, or failed validation, is never cached.
    pub fn generate_stream(
        &self,
        task: &str,
        vars: &Vars,
        options: &GenerateOptions,
    ) -> GenerationStream<Generation> {
        let agent = self.clone();
        let (task, vars, options) = (task.to_owned(), vars.clone(), options.clone());
        GenerationStream::spawn_with_hit(move |events, flag| async move {
            agent
                .generate_with(&task, &vars, &options, Some(&events), Some(&flag))
                .await
        })
    }

    async fn generate_with(
        &self,
        task: &str,
        vars: &Vars,
        options: &GenerateOptions,
        events: Option<&EventSender>,
        replay_flag: Option<&AtomicBool>,
    ) -> Result<Generation, AgentError> {
        let started = Instant::now();
        let prepared = match self.prepare(task, vars, options) {
            Ok(p) => p,
            Err(error) => {
                let mut record = PromptMetrics::new(
                    "",
                    self.agent.name(),
                    task,
                    options
                        .request
                        .model
                        .as_deref()
                        .unwrap_or(self.agent.model()),
                    options
                        .request
                        .temperature
                        .unwrap_or(self.agent.temperature()),
                    elapsed_ms(started),
                );
                record.provider = Some(self.agent.provider().name().to_owned());
                record.tags.clone_from(&options.tags);
                record.validation_passed = false;
                record.error = Some(error.to_string());
                self.agent.record(record);
                return Err(error);
            }
        };
        let call = Call {
            task,
            request: &prepared.request,
            key: prepared.cache_key,
            template: Some(&prepared.template),
            started,
            replay_flag,
        };
        self.run(&call, options, events).await
    }

    /// The cached, single-flight path of one prepared request, template or not: look the
    /// request up in the cache (unless `options.no_cache`), call the provider on a miss
    /// (identical concurrent calls share one provider call), store the validated reply and
    /// write one metrics record — failed calls included.
    pub(crate) async fn run(
        &self,
        call: &Call<'_>,
        options: &GenerateOptions,
        events: Option<&EventSender>,
    ) -> Result<Generation, AgentError> {
        let span = self.agent.generation_span(call.task, call.request);
        self.run_inner(call, options, events).instrument(span).await
    }

    async fn run_inner(
        &self,
        call: &Call<'_>,
        options: &GenerateOptions,
        events: Option<&EventSender>,
    ) -> Result<Generation, AgentError> {
        let Call {
            task: _,
            request,
            key,
            template,
            started,
            replay_flag,
        } = *call;
        let mark_replay = || {
            if let Some(flag) = replay_flag {
                flag.store(true, Ordering::Release);
            }
        };
        let key_hex = key.to_hex();
        let (template_version, template_hash) = template.map_or((0, String::new()), |t| {
            (t.version(), t.content_hash().to_owned())
        });

        if !options.no_cache
            && let Some(hit) = self.cache_get(&key)
        {
            let latency_ms = elapsed_ms(started);
            let mut record = self.base_record(call, options, &key_hex, latency_ms);
            record.cache_hit = true;
            hit.model.clone_into(&mut record.model);
            record.response_length = hit.response.chars().count() as u64;
            let response = response_from_hit(&hit);
            record.saved_usd = self.agent.cost_of(usage_of(&response), &hit.model);
            self.agent.trace_reply(&response);
            self.agent.price(&mut record);
            let (cost_usd, saved_usd) = (record.cost_usd, record.saved_usd);
            self.agent.record(record);
            mark_replay();
            replay(&response, events, options.paced_replay).await;
            return Ok(Generation {
                content: response.content,
                model: response.model,
                tokens_prompt: response.tokens_prompt,
                tokens_completion: response.tokens_completion,
                latency_ms,
                cache_hit: true,
                retry_count: 0,
                template_version,
                template_hash,
                cache_key: key_hex,
                reasoning: response.reasoning,
                time_to_first_token_ms: None,
                tool_calls: response.tool_calls,
                finish_reason: response.finish_reason,
                cost_usd,
                saved_usd,
            });
        }

        if options.cache_only {
            let error = AgentError::CacheMiss {
                agent: self.agent.name().to_owned(),
                key: key_hex.clone(),
            };
            let mut record = self.base_record(call, options, &key_hex, elapsed_ms(started));
            record.validation_passed = false;
            record.error = Some(error.to_string());
            crate::telemetry::record_error(error.kind());
            self.agent.record(record);
            return Err(error);
        }

        let (result, leader) = if options.no_cache {
            (
                self.call_and_store(request, &key, &options.tags, events)
                    .await,
                true,
            )
        } else {
            self.single_flight(request, &key, &options.tags, events)
                .await
        };

        let latency_ms = elapsed_ms(started);
        let mut record = self.base_record(call, options, &key_hex, latency_ms);
        let generation = |response: &ChatResponse,
                          retry_count: u32,
                          cache_hit: bool,
                          record: &PromptMetrics| Generation {
            content: response.content.clone(),
            model: response.model.clone(),
            tokens_prompt: response.tokens_prompt,
            tokens_completion: response.tokens_completion,
            latency_ms,
            cache_hit,
            retry_count,
            template_version,
            template_hash: template_hash.clone(),
            cache_key: key_hex.clone(),
            reasoning: response.reasoning.clone(),
            time_to_first_token_ms: (!cache_hit)
                .then(|| response.time_to_first_token_ms())
                .flatten(),
            tool_calls: response.tool_calls.clone(),
            finish_reason: response.finish_reason.clone(),
            cost_usd: record.cost_usd,
            saved_usd: record.saved_usd,
        };
        let out = match (&result, leader) {
            (Ok(ok), true) => {
                fill_success(&mut record, &ok.response, ok.retry_count);
                self.agent.trace_reply(&ok.response);
                self.agent.price(&mut record);
                Ok(generation(&ok.response, ok.retry_count, false, &record))
            }
            (Ok(ok), false) => {
                // Served by an identical call in flight: no tokens spent by this call.
                mark_replay();
                replay(&ok.response, events, options.paced_replay).await;
                record.cache_hit = true;
                ok.response.model.clone_into(&mut record.model);
                record.response_length = ok.response.content.chars().count() as u64;
                record.saved_usd = self
                    .agent
                    .cost_of(usage_of(&ok.response), &ok.response.model);
                self.agent.trace_reply(&ok.response);
                self.agent.price(&mut record);
                Ok(generation(&ok.response, 0, true, &record))
            }
            (Err(failed), true) => {
                fill_failure(&mut record, failed);
                Err(failed.error.duplicate())
            }
            (Err(failed), false) => {
                record.validation_passed = false;
                record.error = Some(failed.error.to_string());
                crate::telemetry::record_error(failed.error.kind());
                Err(failed.error.duplicate())
            }
        };
        self.agent.record(record);
        out
    }

    fn base_record(
        &self,
        call: &Call<'_>,
        options: &GenerateOptions,
        key_hex: &str,
        latency_ms: f64,
    ) -> PromptMetrics {
        let request = call.request;
        let mut record = PromptMetrics::new(
            &key_hex[..16],
            self.agent.name(),
            call.task,
            request.model(),
            request
                .options
                .temperature
                .unwrap_or(self.agent.temperature()),
            latency_ms,
        );
        if let Some(template) = call.template {
            record.template_version = Some(template.version());
            record.template_hash = Some(template.content_hash().to_owned());
        }
        record.provider = Some(self.agent.provider().name().to_owned());
        record.tags.clone_from(&options.tags);
        record
    }

    fn cache_get(&self, key: &CacheKey) -> Option<CachedResponse> {
        let cache = self.system.cache.as_ref()?;
        match cache.get(key) {
            Ok(hit) => hit,
            Err(e) => {
                tracing::warn!(agent = %self.agent.name(), key = %key, error = %e, "cache read failed; calling the provider");
                None
            }
        }
    }

    /// Joins the in-flight call for this key, or starts it. Returns the result and whether
    /// this caller made the provider call.
    async fn single_flight(
        &self,
        request: &ChatRequest,
        key: &CacheKey,
        tags: &[String],
        events: Option<&EventSender>,
    ) -> (FlightResult, bool) {
        let flight: Flight = self.system.inflight.lock().entry(*key).or_default().clone();
        let mut leader = false;
        let result = flight
            .get_or_init(|| {
                leader = true;
                self.call_and_store(request, key, tags, events)
            })
            .await
            .clone();
        let mut inflight = self.system.inflight.lock();
        if inflight.get(key).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
            inflight.remove(key);
        }
        (result, leader)
    }

    /// Calls the provider through the agent's retry loop, once the spending limits allow it;
    /// stores a validated, non-empty reply.
    async fn call_and_store(
        &self,
        request: &ChatRequest,
        key: &CacheKey,
        tags: &[String],
        events: Option<&EventSender>,
    ) -> FlightResult {
        let reservation = match self.agent.admit(request, tags) {
            Ok(r) => r,
            Err(error) => {
                return Err(Arc::new(Failed {
                    error,
                    retry_count: 0,
                }));
            }
        };
        let check = length_check(request);
        match self
            .agent
            .execute(request.clone(), &check, false, events)
            .await
        {
            Ok(done) => {
                if let Some(cache) = &self.system.cache {
                    let response = &done.response;
                    let mut entry =
                        CachedResponse::new(*key, response.content.as_str(), &response.model);
                    entry.provider = Some(self.agent.provider().name().to_owned());
                    entry.temperature = request.options.temperature;
                    entry.tokens_prompt = response.tokens_prompt;
                    entry.tokens_completion = response.tokens_completion;
                    entry.tokens_cached = response.tokens_cached;
                    entry.tokens_reasoning = response.tokens_reasoning;
                    entry.finish_reason = response.finish_reason.clone();
                    entry.latency_ms = Some(response.latency.as_secs_f64() * 1000.0);
                    entry.reasoning.clone_from(&response.reasoning);
                    if !response.deltas.is_empty() {
                        // Text and reasoning as pieces; tool calls are stored whole below.
                        entry.set_pieces(response.deltas.iter().filter_map(|d| {
                            let reasoning = match d.delta {
                                Delta::Text(_) => false,
                                Delta::Reasoning(_) => true,
                                Delta::ToolCall(_) => return None,
                            };
                            let offset_us = (d.offset_ms * 1000.0).round() as u64;
                            Some((reasoning, d.delta.text(), offset_us))
                        }));
                    }
                    if !response.tool_calls.is_empty() {
                        entry.tool_calls = serde_json::to_string(&response.tool_calls).ok();
                    }
                    // A reply with nothing to serve (blank, no tool calls) is not stored.
                    if entry.answers()
                        && let Err(e) = cache.put(entry, self.system.cache_ttl)
                    {
                        tracing::warn!(agent = %self.agent.name(), key = %key, error = %e, "cache write failed");
                    }
                }
                Ok(Arc::new(FlightOk {
                    response: done.response,
                    retry_count: done.retry_count,
                    _reservation: reservation,
                }))
            }
            Err(failed) => Err(Arc::new(failed)),
        }
    }
}

impl RequestOptions {
    /// The template layer of the request options: its `model:` defaults (name, temperature,
    /// max tokens, top_p, stop, other options), its `validation:` length bounds and its
    /// `tools:` and `tool_choice`.
    pub fn from_template(template: &PromptTemplate) -> RequestOptions {
        let rules = template.validation();
        let mut layer = RequestOptions {
            min_length: rules.min_length,
            max_length: rules.max_length,
            tools: (!template.tools().is_empty()).then(|| template.tools().to_vec()),
            tool_choice: template.tool_choice().cloned(),
            ..RequestOptions::default()
        };
        if let Some(d) = template.model() {
            layer.model.clone_from(&d.name);
            layer.temperature = d.temperature;
            layer.max_tokens = d.max_tokens;
            layer.top_p = d.top_p;
            if !d.stop.is_empty() {
                layer.stop = Some(d.stop.clone());
            }
            layer.provider_options = d
                .options
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
        }
        layer
    }
}

/// A message template's rendered conversation with the story context (if any) as a system
/// message `CURRENT STORY CONTEXT:\n…` after its leading system messages, where a two-message
/// template has it.
fn with_context(mut messages: Vec<ChatMessage>, context: Option<&str>) -> Vec<ChatMessage> {
    if let Some(context) = context.filter(|c| !c.trim().is_empty()) {
        let at = messages
            .iter()
            .position(|m| m.role != Role::System)
            .unwrap_or(messages.len());
        messages.insert(at, Agent::context_message(context));
    }
    messages
}

/// A cache hit as the response it stored: text, usage, finish reason, reasoning, tool calls,
/// and the deltas of a streamed reply as they first arrived (tool calls as one delta each,
/// after the text).
fn response_from_hit(hit: &CachedResponse) -> ChatResponse {
    let tool_calls: Vec<ToolCall> = hit
        .tool_calls
        .as_deref()
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_default();
    let mut response = ChatResponse {
        content: hit.response.to_string(),
        model: hit.model.clone(),
        tokens_prompt: hit.tokens_prompt,
        tokens_completion: hit.tokens_completion,
        tokens_cached: hit.tokens_cached,
        tokens_reasoning: hit.tokens_reasoning,
        finish_reason: hit.finish_reason.clone(),
        reasoning: hit.reasoning.clone(),
        deltas: hit
            .pieces()
            .map(|p| TimedDelta {
                offset_ms: p.offset_us as f64 / 1000.0,
                delta: if p.reasoning {
                    Delta::Reasoning(p.text.to_owned())
                } else {
                    Delta::Text(p.text.to_owned())
                },
            })
            .collect(),
        ..ChatResponse::default()
    };
    if !response.deltas.is_empty() {
        let last = response.deltas.last().map_or(0.0, |d| d.offset_ms);
        for (index, call) in tool_calls.iter().enumerate() {
            response.deltas.push(TimedDelta {
                offset_ms: last,
                delta: Delta::ToolCall(ToolCallDelta {
                    index,
                    id: Some(call.id.clone()),
                    name: Some(call.name.clone()),
                    arguments: call.arguments.to_string(),
                }),
            });
        }
    }
    if response.reasoning.is_none() && !response.deltas.is_empty() {
        // Reasoning written inline in a streamed reply is stored in its text pieces.
        let streamed: String = response
            .deltas
            .iter()
            .filter(|d| matches!(d.delta, Delta::Text(_)))
            .map(|d| d.delta.text())
            .collect();
        response.reasoning = crate::think::split_think(&streamed).1;
    }
    response.tool_calls = tool_calls;
    response
}

/// Sends a reply that did not come from this call's own stream (a cache hit, an identical
/// call's reply) to a streaming caller: its recorded deltas when it has them, at once or
/// (`paced`) each at its original offset; else its reasoning and text whole.
async fn replay(response: &ChatResponse, events: Option<&EventSender>, paced: bool) {
    let Some(events) = events else { return };
    if response.deltas.is_empty() {
        let mut whole = crate::provider::whole_reply_events(response.clone());
        while let Some(Ok(StreamEvent::Delta(delta))) = whole.next().await {
            let _ = events.send(GenerationEvent::Delta(delta));
        }
        return;
    }
    let start = tokio::time::Instant::now();
    for timed in &response.deltas {
        if paced {
            let offset = Duration::try_from_secs_f64(timed.offset_ms / 1000.0).unwrap_or_default();
            tokio::time::sleep_until(start + offset).await;
        }
        if events
            .send(GenerationEvent::Delta(timed.delta.clone()))
            .is_err()
        {
            return; // The caller dropped the stream.
        }
    }
}

/// A reply's token counts for pricing (what a hit saved).
fn usage_of(response: &ChatResponse) -> Option<prompt_metrics::TokenUsage> {
    prompt_metrics::TokenUsage::from_counts(
        response.tokens_prompt,
        response.tokens_completion,
        response.tokens_cached,
        response.tokens_reasoning,
    )
}

fn elapsed_ms(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1000.0
}
