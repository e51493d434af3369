//! [`PromptSystem`]: the shared parts (templates, cache, metrics, provider, concurrency
//! limiter, retry policy) that every agent of one application uses; and its
//! [`SystemConfig`].

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use prompt_cache::{CacheConfig, CacheKey, CacheStore, ResponseCache};
use prompt_metrics::{JsonlStore, MetricsSink};
use prompt_templates::TemplateStore;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::agent::{
    Agent, DEFAULT_CONCURRENCY, DEFAULT_TEMPERATURE, ModelQuirk, RetryPolicy, default_quirks,
};
use crate::error::AgentError;
use crate::provider::Provider;
use crate::provider::echo::EchoProvider;
use crate::provider::ollama::OllamaProvider;
use crate::provider::openai::{ApiKey, OPENAI_DEFAULT_URL, OpenAiProvider};
use crate::template_agent::{Flight, TemplateAgent};

/// The default model when the config names none.
pub const DEFAULT_MODEL: &str = "qwen3:8b";
/// The default cache-key namespace.
pub const DEFAULT_NAMESPACE: &str = "promptkit";

/// Durations in config files are seconds (integer or float): `request_timeout_secs = 120`.
mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(|_| {
            D::Error::custom(format!(
                "{secs} is not a valid number of seconds (must be >= 0)"
            ))
        })
    }
}

/// Which provider a [`SystemConfig`] uses. Parses from `"ollama"`, `"openai"` or `"echo"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Ollama's native API.
    #[default]
    Ollama,
    /// An OpenAI-compatible chat completions API.
    #[serde(alias = "openai_compatible", alias = "open_ai")]
    OpenAi,
    /// The offline [`EchoProvider`] (never chosen unless asked for).
    Echo,
}

impl ProviderKind {
    /// The kind's name as written in config: `"ollama"`, `"openai"` or `"echo"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Ollama => "ollama",
            ProviderKind::OpenAi => "openai",
            ProviderKind::Echo => "echo",
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown provider kind name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown provider {0:?}: expected \"ollama\", \"openai\" or \"echo\"")]
pub struct UnknownProviderKind(pub String);

impl FromStr for ProviderKind {
    type Err = UnknownProviderKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "ollama" => Ok(ProviderKind::Ollama),
            "openai" | "open_ai" | "openai_compatible" | "openai-compatible" => {
                Ok(ProviderKind::OpenAi)
            }
            "echo" => Ok(ProviderKind::Echo),
            _ => Err(UnknownProviderKind(s.to_owned())),
        }
    }
}

/// The provider part of a [`SystemConfig`] (`[provider]` in `prompt.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProviderConfig {
    /// Which provider.
    pub kind: ProviderKind,
    /// Server URL. Ollama: else `OLLAMA_HOST`, else `http://localhost:11434`. OpenAI: else
    /// `https://api.openai.com` (a trailing `/v1` is accepted).
    pub base_url: Option<String>,
    /// Default model, used when neither the call nor the template names one.
    pub model: String,
    /// Name of the environment variable holding the API key (OpenAI-compatible only; read at
    /// every request, never stored). When unset and `base_url` is unset too, `OPENAI_API_KEY`.
    pub api_key_env: Option<String>,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        Self {
            kind: ProviderKind::Ollama,
            base_url: None,
            model: DEFAULT_MODEL.to_owned(),
            api_key_env: None,
        }
    }
}

/// Where responses are cached (`[cache]` in `prompt.toml`, `kind = "dir" | "redis" |
/// "disabled"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CacheSetting {
    /// No cache.
    Disabled,
    /// The embedded memory-over-disk cache in a directory.
    Dir {
        /// The cache directory.
        dir: PathBuf,
        /// Most entries kept in memory.
        #[serde(default = "default_max_size")]
        max_size: usize,
        /// Time to live (`ttl_secs` in config).
        #[serde(rename = "ttl_secs", with = "secs", default = "default_ttl")]
        ttl: Duration,
    },
    /// A Redis server shared by processes and machines (needs the `redis` feature).
    Redis {
        /// `redis://host:port/db`.
        url: String,
        /// Key prefix.
        #[serde(default = "default_prefix")]
        prefix: String,
        /// Time to live (`ttl_secs` in config).
        #[serde(rename = "ttl_secs", with = "secs", default = "default_ttl")]
        ttl: Duration,
    },
}

fn default_max_size() -> usize {
    1000
}

fn default_ttl() -> Duration {
    Duration::from_secs(24 * 60 * 60)
}

fn default_prefix() -> String {
    "promptkit:".to_owned()
}

impl Default for CacheSetting {
    fn default() -> Self {
        CacheSetting::Dir {
            dir: PathBuf::from("output/cache"),
            max_size: default_max_size(),
            ttl: default_ttl(),
        }
    }
}

/// Everything [`PromptSystem::from_config`] needs. Field names are the `prompt.toml` keys;
/// durations are seconds (`*_secs`, integer or float). Every field has a default.
///
/// ```
/// use prompt_agent::{CacheSetting, ProviderKind, SystemConfig};
///
/// let config: SystemConfig = toml::from_str(r#"
///     templates_dir = "templates"
///     metrics_dir = "output/metrics"
///     concurrency = 4
///     request_timeout_secs = 90
///     backoff_base_secs = 0.25
///     [provider]
///     kind = "openai"
///     base_url = "http://127.0.0.1:8000/v1"
///     model = "gpt-4o-mini"
///     api_key_env = "MY_KEY"
///     [cache]
///     kind = "dir"
///     dir = "output/cache"
///     ttl_secs = 3600
/// "#).unwrap();
/// assert_eq!(config.provider.kind, ProviderKind::OpenAi);
/// assert_eq!(config.request_timeout.as_secs(), 90);
/// assert!(matches!(config.cache, CacheSetting::Dir { max_size: 1000, .. }));
/// assert_eq!(config.max_attempts, 3);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SystemConfig {
    /// The template directory (`templates/<agent>/<task>_v<N>.yaml`). Default `templates`.
    pub templates_dir: PathBuf,
    /// The response cache. Default: directory `output/cache`, 1000 entries, 24 h.
    pub cache: CacheSetting,
    /// Where metrics files go; `None` records nothing. Default `output/metrics`.
    pub metrics_dir: Option<PathBuf>,
    /// The provider.
    pub provider: ProviderConfig,
    /// Provider calls in flight at once, across all agents. Default 2.
    pub concurrency: usize,
    /// Attempts per generation, the first included. Default 3.
    pub max_attempts: u32,
    /// Timeout of one attempt (`request_timeout_secs`). Default 300 s.
    #[serde(rename = "request_timeout_secs", with = "secs")]
    pub request_timeout: Duration,
    /// First retry backoff, doubling after (`backoff_base_secs`). Default 0.5 s.
    #[serde(rename = "backoff_base_secs", with = "secs")]
    pub backoff_base: Duration,
    /// Longest backoff (`backoff_max_secs`). Default 30 s.
    #[serde(rename = "backoff_max_secs", with = "secs")]
    pub backoff_max: Duration,
    /// Longest `Retry-After` honoured (`retry_after_cap_secs`). Default 60 s.
    #[serde(rename = "retry_after_cap_secs", with = "secs")]
    pub retry_after_cap: Duration,
    /// Cache-key namespace; change it to start a fresh cache. Default `promptkit`.
    pub namespace: String,
    /// Default temperature of agents. Default 0.7.
    pub temperature: f64,
    /// Per-model adjustments (`[[model_quirks]] model_prefix = "qwen"
    /// append_to_user = " /no_think"`). Default: the qwen rule.
    pub model_quirks: Vec<ModelQuirk>,
}

impl Default for SystemConfig {
    fn default() -> Self {
        let policy = RetryPolicy::default();
        Self {
            templates_dir: PathBuf::from("templates"),
            cache: CacheSetting::default(),
            metrics_dir: Some(PathBuf::from("output/metrics")),
            provider: ProviderConfig::default(),
            concurrency: DEFAULT_CONCURRENCY,
            max_attempts: policy.max_attempts,
            request_timeout: policy.request_timeout,
            backoff_base: policy.backoff_base,
            backoff_max: policy.backoff_max,
            retry_after_cap: policy.retry_after_cap,
            namespace: DEFAULT_NAMESPACE.to_owned(),
            temperature: DEFAULT_TEMPERATURE,
            model_quirks: default_quirks(),
        }
    }
}

impl SystemConfig {
    /// The retry policy these settings describe.
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_attempts,
            request_timeout: self.request_timeout,
            backoff_base: self.backoff_base,
            backoff_max: self.backoff_max,
            retry_after_cap: self.retry_after_cap,
        }
    }

    /// Builds the provider the config names.
    pub fn build_provider(&self) -> Result<Arc<dyn Provider>, AgentError> {
        let p = &self.provider;
        let setup = |e: crate::error::ProviderError| AgentError::Config {
            field: "provider.base_url".to_owned(),
            message: e.to_string(),
        };
        Ok(match p.kind {
            ProviderKind::Ollama => Arc::new(
                OllamaProvider::from_config(p.base_url.as_deref(), self.request_timeout)
                    .map_err(setup)?,
            ),
            ProviderKind::OpenAi => {
                let key = match (&p.api_key_env, &p.base_url) {
                    (Some(var), _) if !var.trim().is_empty() => ApiKey::Env(var.trim().to_owned()),
                    (_, None) => ApiKey::Env("OPENAI_API_KEY".to_owned()),
                    _ => ApiKey::None,
                };
                let base = p.base_url.as_deref().unwrap_or(OPENAI_DEFAULT_URL);
                Arc::new(OpenAiProvider::new(base, key, self.request_timeout).map_err(setup)?)
            }
            ProviderKind::Echo => Arc::new(EchoProvider::new()),
        })
    }
}

/// The shared state behind a [`PromptSystem`].
#[derive(Debug)]
pub(crate) struct SystemInner {
    pub(crate) templates: Arc<TemplateStore>,
    pub(crate) cache: Option<Arc<dyn CacheStore>>,
    pub(crate) cache_ttl: Option<Duration>,
    pub(crate) metrics: Option<Arc<dyn MetricsSink>>,
    pub(crate) provider: Arc<dyn Provider>,
    pub(crate) limiter: Arc<Semaphore>,
    pub(crate) policy: RetryPolicy,
    pub(crate) quirks: Arc<[ModelQuirk]>,
    pub(crate) namespace: String,
    pub(crate) model: String,
    pub(crate) temperature: f64,
    pub(crate) inflight: Mutex<HashMap<CacheKey, Flight>>,
}

/// One application's shared parts: the template store, the response cache, the metrics sink,
/// the provider and the concurrency limiter that every agent of that provider shares. Clone it
/// freely (it is an `Arc`).
#[derive(Debug, Clone)]
pub struct PromptSystem {
    inner: Arc<SystemInner>,
}

impl PromptSystem {
    /// Opens everything the config names: the template store, the cache (directory or Redis),
    /// the metrics store and the provider.
    pub fn from_config(config: SystemConfig) -> Result<Self, AgentError> {
        let templates = Arc::new(TemplateStore::open(&config.templates_dir)?);
        let provider = config.build_provider()?;
        let (cache, ttl): (Option<Arc<dyn CacheStore>>, Option<Duration>) = match &config.cache {
            CacheSetting::Disabled => (None, None),
            CacheSetting::Dir { dir, max_size, ttl } => {
                let cache =
                    ResponseCache::open(CacheConfig::new(dir).max_size(*max_size).ttl(*ttl))?;
                (Some(Arc::new(cache)), None)
            }
            CacheSetting::Redis { url, prefix, ttl } => {
                (Some(open_redis(url, prefix, *ttl)?), None)
            }
        };
        let mut builder = PromptSystem::builder()
            .templates(templates)
            .provider(provider)
            .model(&config.provider.model)
            .temperature(config.temperature)
            .concurrency(config.concurrency)
            .policy(config.retry_policy())
            .quirks(config.model_quirks.clone())
            .namespace(&config.namespace);
        if let Some(cache) = cache {
            builder = builder.cache(cache);
        }
        if let Some(ttl) = ttl {
            builder = builder.cache_ttl(ttl);
        }
        if let Some(dir) = &config.metrics_dir {
            builder = builder.metrics(Arc::new(JsonlStore::open(dir)?));
        }
        builder.build()
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
        .with_limiter(inner.limiter.clone())
        .with_policy(inner.policy.clone())
        .with_quirks(inner.quirks.clone());
        if let Some(metrics) = &inner.metrics {
            agent = agent.with_metrics(metrics.clone());
        }
        agent
    }

    /// The template agent `name` (templates in `<templates_dir>/<name>/`).
    pub fn template_agent(&self, name: &str) -> TemplateAgent {
        TemplateAgent::new(self.agent(name, name, ""), self.inner.clone())
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

#[cfg(feature = "redis")]
fn open_redis(url: &str, prefix: &str, ttl: Duration) -> Result<Arc<dyn CacheStore>, AgentError> {
    Ok(Arc::new(prompt_cache::RedisCache::connect(
        url, prefix, ttl,
    )?))
}

#[cfg(not(feature = "redis"))]
fn open_redis(url: &str, _prefix: &str, _ttl: Duration) -> Result<Arc<dyn CacheStore>, AgentError> {
    Err(AgentError::Config {
        field: "cache.kind".to_owned(),
        message: format!("a Redis cache ({url}) needs promptkit built with the `redis` feature"),
    })
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

    /// Provider calls in flight at once (else 2).
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
                policy: self.policy,
                quirks: self.quirks.unwrap_or_else(default_quirks).into(),
                namespace: self
                    .namespace
                    .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned()),
                model,
                temperature,
                inflight: Mutex::new(HashMap::new()),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_kinds_parse() {
        for (s, k) in [
            ("ollama", ProviderKind::Ollama),
            ("OpenAI", ProviderKind::OpenAi),
            ("openai-compatible", ProviderKind::OpenAi),
            (" echo ", ProviderKind::Echo),
        ] {
            assert_eq!(s.parse::<ProviderKind>(), Ok(k));
        }
        let err = "llamacpp".parse::<ProviderKind>().unwrap_err();
        assert!(err.to_string().contains("\"llamacpp\""));
        assert_eq!(ProviderKind::OpenAi.to_string(), "openai");
    }

    #[test]
    fn config_defaults_and_errors() {
        let empty: SystemConfig = toml::from_str("").expect("empty config");
        assert_eq!(empty, SystemConfig::default());
        assert_eq!(
            empty.provider.kind,
            ProviderKind::Ollama,
            "echo is never the default"
        );
        assert_eq!(empty.model_quirks, default_quirks());

        let disabled: SystemConfig =
            toml::from_str("metrics_dir = \"m\"\n[cache]\nkind = \"disabled\"\n").expect("ok");
        assert_eq!(disabled.cache, CacheSetting::Disabled);

        let bad = toml::from_str::<SystemConfig>("request_timeout_secs = -1").unwrap_err();
        assert!(bad.to_string().contains("seconds"), "{bad}");
        let bad = toml::from_str::<SystemConfig>("[provider]\nkind = \"gemini\"").unwrap_err();
        assert!(bad.to_string().contains("gemini"), "{bad}");

        let quirks: SystemConfig = toml::from_str(
            "[[model_quirks]]\nmodel_prefix = \"deepseek-r1\"\nappend_to_user = \"\\n\"\n",
        )
        .expect("ok");
        assert_eq!(quirks.model_quirks.len(), 1);
        assert_eq!(quirks.model_quirks[0].model_prefix, "deepseek-r1");
    }

    #[test]
    fn config_round_trips_through_toml() {
        let config = SystemConfig {
            cache: CacheSetting::Redis {
                url: "redis://127.0.0.1/0".into(),
                prefix: "p:".into(),
                ttl: Duration::from_secs(60),
            },
            request_timeout: Duration::from_millis(1500),
            ..SystemConfig::default()
        };
        let text = toml::to_string(&config).expect("serialize");
        assert!(text.contains("request_timeout_secs = 1.5"), "{text}");
        let back: SystemConfig = toml::from_str(&text).expect("parse");
        assert_eq!(back, config);
    }
}
