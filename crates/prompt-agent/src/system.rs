//! [`PromptSystem`]: the shared parts (templates, cache, metrics, provider, concurrency
//! limiter, retry policy) that every agent of one application uses, built from
//! [`Settings`] or from explicit parts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use prompt_cache::{CacheKey, CacheKeyPrefixes, CacheStore};
use prompt_metrics::{MetricsSink, PriceTable};
use prompt_templates::TemplateStore;
use tokio::sync::Semaphore;

use crate::agent::{Agent, DEFAULT_TEMPERATURE, ModelQuirk, RetryPolicy, default_quirks};
use crate::chat_agent::ChatAgent;
use crate::cost::{Budget, CostBook};
use crate::error::AgentError;
use crate::provider::Provider;
use crate::settings::{DEFAULT_CONCURRENCY, DEFAULT_MODEL, DEFAULT_NAMESPACE, Settings};
use crate::stream::CircuitBreaker;
use crate::template_agent::{Flight, TemplateAgent};

/// The shared state behind a [`PromptSystem`].
#[derive(Debug)]
pub(crate) struct SystemInner {
    pub(crate) templates: Arc<TemplateStore>,
    pub(crate) cache: Option<Arc<dyn CacheStore>>,
    pub(crate) cache_ttl: Option<Duration>,
    pub(crate) metrics: Option<Arc<dyn MetricsSink>>,
    pub(crate) provider: Arc<dyn Provider>,
    pub(crate) limiter: Arc<Semaphore>,
    pub(crate) permits: usize,
    pub(crate) breaker: Arc<CircuitBreaker>,
    pub(crate) stream: bool,
    pub(crate) policy: RetryPolicy,
    pub(crate) quirks: Arc<[ModelQuirk]>,
    pub(crate) namespace: String,
    pub(crate) model: String,
    pub(crate) temperature: f64,
    pub(crate) inflight: Mutex<HashMap<CacheKey, Flight>>,
    pub(crate) costs: Arc<CostBook>,
    pub(crate) capture_content: bool,
    /// Hashing states after each system prompt, so a cache key hashes only the rest.
    pub(crate) key_prefixes: CacheKeyPrefixes,
}

/// One application's shared parts: the template store, the response cache, the metrics sink,
/// the provider and the concurrency limiter that every agent of that provider shares. Clone it
/// freely (it is an `Arc`).
#[derive(Debug, Clone)]
pub struct PromptSystem {
    inner: Arc<SystemInner>,
}

impl PromptSystem {
    /// Opens everything the settings name — the template store, the cache (directory or
    /// Redis), the metrics store and the provider — after [`Settings::check`]. This is the
    /// one path from settings to a system: the `prompt` binary takes it for every command.
    pub fn from_settings(settings: &Settings) -> Result<Self, AgentError> {
        settings.check()?;
        let provider = settings.build_provider()?;
        PromptSystem::builder()
            .templates(Arc::new(settings.open_templates()?))
            .provider(provider)
            .cache(settings.open_cache()?)
            .metrics(Arc::new(settings.open_metrics()?))
            .model(settings.model())
            .temperature(settings.temperature())
            .concurrency(settings.concurrency())
            .policy(settings.retry_policy())
            .stream(settings.stream())
            .breaker(settings.circuit_breaker())
            .quirks(settings.model_quirks())
            .namespace(settings.namespace())
            .prices(settings.open_prices()?)
            .budget(settings.budget())
            .budget_usd(settings.budget_usd)
            .capture_content(settings.otel_content())
            .build()
    }

    /// A builder from explicit parts, for tests and embedding.
    pub fn builder() -> PromptSystemBuilder {
        PromptSystemBuilder::default()
    }

    /// A plain agent with the system's provider, limiter, metrics, retry policy and quirks.
    pub fn agent(&self, name: &str, role: &str, system_prompt: &str) -> Agent {
        let inner = &self.inner;
        let mut agent = Agent::new(
            name,
            role,
            system_prompt,
            &inner.model,
            inner.provider.clone(),
        )
        .with_temperature(inner.temperature)
        .with_limiter(inner.limiter.clone(), inner.permits)
        .with_breaker(inner.breaker.clone())
        .with_streaming(inner.stream)
        .with_policy(inner.policy.clone())
        .with_quirks(inner.quirks.clone())
        .with_costs(inner.costs.clone())
        .with_content_capture(inner.capture_content);
        if let Some(metrics) = &inner.metrics {
            agent = agent.with_metrics(metrics.clone());
        }
        agent
    }

    /// The template agent `name` (templates in `<templates_dir>/<name>/`).
    pub fn template_agent(&self, name: &str) -> TemplateAgent {
        TemplateAgent::new(self.agent(name, name, ""), self.inner.clone())
    }

    /// The chat agent `name`: whole conversations (no template) on the template agents'
    /// cached, single-flight, measured path, recorded under `name`.
    pub fn chat_agent(&self, name: &str) -> ChatAgent {
        ChatAgent::new(self.template_agent(name))
    }

    /// The template store.
    pub fn templates(&self) -> &Arc<TemplateStore> {
        &self.inner.templates
    }

    /// The response cache, unless disabled.
    pub fn cache(&self) -> Option<&Arc<dyn CacheStore>> {
        self.inner.cache.as_ref()
    }

    /// The metrics sink, unless disabled.
    pub fn metrics(&self) -> Option<&Arc<dyn MetricsSink>> {
        self.inner.metrics.as_ref()
    }

    /// The provider.
    pub fn provider(&self) -> &Arc<dyn Provider> {
        &self.inner.provider
    }

    /// The default model.
    pub fn model(&self) -> &str {
        &self.inner.model
    }

    /// The retry policy.
    pub fn policy(&self) -> &RetryPolicy {
        &self.inner.policy
    }

    /// The concurrency limiter shared by every agent of this system.
    pub fn limiter(&self) -> &Arc<Semaphore> {
        &self.inner.limiter
    }

    /// Writes out pending cache entries and metrics records (call before exiting). Errors are
    /// returned after trying both.
    pub fn flush(&self) -> Result<(), AgentError> {
        let cache = self.inner.cache.as_ref().map(|c| c.flush()).transpose();
        let metrics = self.inner.metrics.as_ref().map(|m| m.flush()).transpose();
        cache?;
        metrics?;
        Ok(())
    }
}

/// Builds a [`PromptSystem`] from explicit parts. A template store (or directory) and a
/// provider are required; cache and metrics are optional.
#[derive(Debug, Default)]
pub struct PromptSystemBuilder {
    templates: Option<Arc<TemplateStore>>,
    templates_dir: Option<PathBuf>,
    cache: Option<Arc<dyn CacheStore>>,
    cache_ttl: Option<Duration>,
    metrics: Option<Arc<dyn MetricsSink>>,
    provider: Option<Arc<dyn Provider>>,
    model: Option<String>,
    temperature: Option<f64>,
    concurrency: Option<usize>,
    policy: RetryPolicy,
    quirks: Option<Vec<ModelQuirk>>,
    namespace: Option<String>,
    stream: Option<bool>,
    breaker: Option<CircuitBreaker>,
    prices: Option<PriceTable>,
    budget: Budget,
    budget_usd: Option<f64>,
    capture_content: bool,
}

impl PromptSystemBuilder {
    /// Uses this template store.
    pub fn templates(mut self, templates: Arc<TemplateStore>) -> Self {
        self.templates = Some(templates);
        self
    }

    /// Opens the template store in this directory (unless [`templates`](Self::templates) is
    /// given).
    pub fn templates_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.templates_dir = Some(dir.as_ref().to_owned());
        self
    }

    /// Uses this response cache.
    pub fn cache(mut self, cache: Arc<dyn CacheStore>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Stores responses with this TTL instead of the cache's default.
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = Some(ttl);
        self
    }

    /// Records metrics to this sink.
    pub fn metrics(mut self, metrics: Arc<dyn MetricsSink>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Uses this provider.
    pub fn provider(mut self, provider: Arc<dyn Provider>) -> Self {
        self.provider = Some(provider);
        self
    }

    /// The default model (else [`DEFAULT_MODEL`]).
    pub fn model(mut self, model: &str) -> Self {
        self.model = Some(model.to_owned());
        self
    }

    /// The default temperature of agents (else 0.7).
    pub fn temperature(mut self, temperature: f64) -> Self {
        self.temperature = Some(temperature);
        self
    }

    /// Provider calls in flight at once (else [`DEFAULT_CONCURRENCY`]).
    pub fn concurrency(mut self, permits: usize) -> Self {
        self.concurrency = Some(permits);
        self
    }

    /// The whole retry policy.
    pub fn policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Attempts per generation, the first included.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.policy.max_attempts = attempts;
        self
    }

    /// Timeout of one attempt.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.policy.request_timeout = timeout;
        self
    }

    /// First retry backoff (doubling after).
    pub fn backoff_base(mut self, base: Duration) -> Self {
        self.policy.backoff_base = base;
        self
    }

    /// Longest `Retry-After` honoured.
    pub fn retry_after_cap(mut self, cap: Duration) -> Self {
        self.policy.retry_after_cap = cap;
        self
    }

    /// Streams replies from the provider (else true).
    pub fn stream(mut self, stream: bool) -> Self {
        self.stream = Some(stream);
        self
    }

    /// The provider's circuit breaker (else 5 failures, 30 s).
    pub fn breaker(mut self, breaker: CircuitBreaker) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// Longest gap between two chunks of a streamed reply.
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.policy.idle_timeout = idle;
        self
    }

    /// The model quirks table (else [`default_quirks`]).
    pub fn quirks(mut self, quirks: Vec<ModelQuirk>) -> Self {
        self.quirks = Some(quirks);
        self
    }

    /// The cache-key namespace (else [`DEFAULT_NAMESPACE`]).
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = Some(namespace.to_owned());
        self
    }

    /// Prices calls with this table (else the shipped one, [`PriceTable::shipped`]).
    pub fn prices(mut self, prices: PriceTable) -> Self {
        self.prices = Some(prices);
        self
    }

    /// Refuses calls that could break these limits per UTC day (spend read from the metrics
    /// sink, [`MetricsSink::spend_since`]).
    pub fn budget(mut self, budget: Budget) -> Self {
        self.budget = budget;
        self
    }

    /// Refuses calls that could take this system's own spend over `usd` (`--budget-usd`).
    pub fn budget_usd(mut self, usd: Option<f64>) -> Self {
        self.budget_usd = usd;
        self
    }

    /// Puts messages and replies into each generation's span (`--otel-content`).
    pub fn capture_content(mut self, capture: bool) -> Self {
        self.capture_content = capture;
        self
    }

    /// Checks the parts and builds the system.
    pub fn build(self) -> Result<PromptSystem, AgentError> {
        let templates = match (self.templates, self.templates_dir) {
            (Some(t), _) => t,
            (None, Some(dir)) => Arc::new(TemplateStore::open(dir)?),
            (None, None) => {
                return Err(AgentError::Config {
                    field: "templates_dir".to_owned(),
                    message: "no template store or directory given".to_owned(),
                });
            }
        };
        let provider = self.provider.ok_or_else(|| AgentError::Config {
            field: "provider".to_owned(),
            message: "no provider given".to_owned(),
        })?;
        let concurrency = self.concurrency.unwrap_or(DEFAULT_CONCURRENCY);
        if concurrency == 0 {
            return Err(AgentError::Config {
                field: "concurrency".to_owned(),
                message: "must be at least 1".to_owned(),
            });
        }
        if self.policy.max_attempts == 0 {
            return Err(AgentError::Config {
                field: "max_attempts".to_owned(),
                message: "must be at least 1".to_owned(),
            });
        }
        if self.policy.request_timeout.is_zero() {
            return Err(AgentError::Config {
                field: "request_timeout_secs".to_owned(),
                message: "must be more than 0".to_owned(),
            });
        }
        let model = self.model.unwrap_or_else(|| DEFAULT_MODEL.to_owned());
        if model.trim().is_empty() {
            return Err(AgentError::Config {
                field: "provider.model".to_owned(),
                message: "must not be empty".to_owned(),
            });
        }
        self.budget.check()?;
        if let Some(v) = self.budget_usd {
            crate::cost::check_usd("budget_usd", v)?;
        }
        let costs = Arc::new(match self.prices {
            Some(prices) => CostBook::new(prices, self.budget, self.budget_usd),
            None => CostBook::new(PriceTable::shipped(), self.budget, self.budget_usd),
        });
        let temperature = self.temperature.unwrap_or(DEFAULT_TEMPERATURE);
        if !temperature.is_finite() || temperature < 0.0 {
            return Err(AgentError::Config {
                field: "temperature".to_owned(),
                message: format!("{temperature} is not a temperature (a number >= 0)"),
            });
        }
        Ok(PromptSystem {
            inner: Arc::new(SystemInner {
                templates,
                cache: self.cache,
                cache_ttl: self.cache_ttl,
                metrics: self.metrics,
                provider,
                limiter: Arc::new(Semaphore::new(concurrency)),
                permits: concurrency,
                breaker: Arc::new(
                    self.breaker
                        .unwrap_or_else(|| Settings::default().circuit_breaker()),
                ),
                stream: self.stream.unwrap_or(true),
                policy: self.policy,
                quirks: self.quirks.unwrap_or_else(default_quirks).into(),
                namespace: self
                    .namespace
                    .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned()),
                model,
                temperature,
                inflight: Mutex::new(HashMap::new()),
                costs,
                capture_content: self.capture_content,
                key_prefixes: CacheKeyPrefixes::default(),
            }),
        })
    }
}
