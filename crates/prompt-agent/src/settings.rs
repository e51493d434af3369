//! [`Settings`]: the one settings schema (`prompt.toml`), its defaults, and the one code path
//! that turns settings into a provider, a cache and a metrics store.
//!
//! Every setting is optional in a [`Settings`] value, which is one *layer*: the command line
//! builds one from its flags and `PROMPT_*` environment variables, reads another from the
//! config file, and lays the first over the second with [`Settings::over`]. The default of
//! each setting is stated once, in the accessor that reads it (and in the `DEFAULT_*`
//! constants those accessors use). This crate reads no files and no environment for settings:
//! finding and reading the config file is the binary's job.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use prompt_cache::{CacheConfig, CacheStore, ResponseCache};
use prompt_metrics::{JsonlStore, PriceTable};
use prompt_templates::{RenderLimits, TemplateStore};
use serde::{Deserialize, Serialize};

use crate::agent::{DEFAULT_TEMPERATURE, ModelQuirk, RetryPolicy, default_quirks};
use crate::cost::Budget;
use crate::error::{AgentError, ProviderError};
use crate::provider::Provider;
use crate::provider::echo::EchoProvider;
use crate::provider::ollama::OllamaProvider;
use crate::provider::openai::{ApiKey, OPENAI_DEFAULT_URL, OpenAiProvider};
use crate::request::RequestOptions;
use crate::stream::CircuitBreaker;

/// Default template directory.
pub const DEFAULT_TEMPLATES_DIR: &str = "templates";
/// Default response cache directory.
pub const DEFAULT_CACHE_DIR: &str = "output/cache";
/// Default metrics directory.
pub const DEFAULT_METRICS_DIR: &str = "output/metrics";
/// Default time a cached reply is served, in seconds (7 days).
pub const DEFAULT_CACHE_TTL_SECS: u64 = 7 * 24 * 60 * 60;
/// Default number of entries the cache keeps in memory.
pub const DEFAULT_CACHE_MAX_SIZE: usize = 1000;
/// Default key prefix of a Redis cache.
pub const DEFAULT_REDIS_PREFIX: &str = "promptkit:";
/// Default wall-clock limit of one provider attempt, in seconds.
pub const DEFAULT_TIMEOUT_SECS: f64 = 600.0;
/// Default longest gap between two chunks of a streamed reply, in seconds.
pub const DEFAULT_IDLE_TIMEOUT_SECS: f64 = 120.0;
/// Default longest wait for a free slot of the concurrency limiter, in seconds.
pub const DEFAULT_QUEUE_TIMEOUT_SECS: f64 = 600.0;
/// Default consecutive failed attempts that open a provider's circuit breaker.
pub const DEFAULT_BREAKER_FAILURES: u32 = 5;
/// Default time an open circuit breaker fails calls at once, in seconds.
pub const DEFAULT_BREAKER_COOLDOWN_SECS: f64 = 30.0;
/// Default retries after a failed attempt (so 3 attempts in all).
pub const DEFAULT_RETRIES: u32 = 2;
/// Default number of provider calls (and `prompt batch` jobs) in flight at once.
pub const DEFAULT_CONCURRENCY: usize = 4;
/// Default model when neither the call, the settings nor the template names one.
pub const DEFAULT_MODEL: &str = "qwen3:8b";
/// Default cache-key namespace.
pub const DEFAULT_NAMESPACE: &str = "promptkit";

/// The providers promptkit knows. Parses from its name or an alias (see
/// [`ProviderKind::NAMES`]), case-insensitively.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ProviderKind {
    /// Ollama's native API (`/api/chat`).
    Ollama,
    /// Any OpenAI-compatible chat completions API.
    OpenAi,
    /// The offline, deterministic [`EchoProvider`] (never chosen unless asked for).
    Echo,
}

impl ProviderKind {
    /// Every accepted name: the canonical one first, then its aliases.
    pub const NAMES: &[(ProviderKind, &'static [&'static str])] = &[
        (ProviderKind::Ollama, &["ollama"]),
        (
            ProviderKind::OpenAi,
            &[
                "openai",
                "openai-compatible",
                "openai_compatible",
                "open_ai",
            ],
        ),
        (ProviderKind::Echo, &["echo"]),
    ];

    /// The canonical name: `"ollama"`, `"openai"` or `"echo"`.
    pub fn as_str(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(kind, _)| *kind == self)
            .map_or("", |(_, names)| names[0])
    }

    /// The canonical names joined for messages: `ollama, openai, echo`.
    pub fn choices() -> String {
        Self::NAMES
            .iter()
            .map(|(_, names)| names[0])
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown provider name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown provider `{0}`: expected one of {choices}", choices = ProviderKind::choices())]
pub struct UnknownProviderKind(pub String);

impl FromStr for ProviderKind {
    type Err = UnknownProviderKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase();
        Self::NAMES
            .iter()
            .find(|(_, names)| names.contains(&wanted.as_str()))
            .map(|(kind, _)| *kind)
            .ok_or_else(|| UnknownProviderKind(s.to_owned()))
    }
}

impl TryFrom<String> for ProviderKind {
    type Error = UnknownProviderKind;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<ProviderKind> for String {
    fn from(kind: ProviderKind) -> String {
        kind.as_str().to_owned()
    }
}

/// One layer of settings: the schema of `prompt.toml`, whose keys are these field names.
/// Every field is optional; unset ones come from the layer below ([`over`](Self::over)) and
/// finally from the default its accessor names. Durations are seconds (integer or float).
///
/// ```
/// use prompt_agent::{ProviderKind, Settings};
///
/// let file: Settings = toml::from_str(r#"
///     provider = "openai"
///     base_url = "http://127.0.0.1:8000/v1"
///     model = "qwen3:30b"
///     timeout = 90
/// "#).unwrap();
/// let flags = Settings { model: Some("qwen3:8b".into()), ..Settings::default() };
/// let settings = flags.over(file);
/// assert_eq!(settings.provider, Some(ProviderKind::OpenAi));
/// assert_eq!(settings.model.as_deref(), Some("qwen3:8b")); // the flag wins
/// assert_eq!(settings.timeout().as_secs(), 90);
/// assert_eq!(settings.retries(), 2); // the default
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Template directory (`templates/<agent>/<task>_v<N>.yaml`) [default: `templates`].
    pub templates: Option<PathBuf>,
    /// Response cache directory [default: `output/cache`].
    pub cache_dir: Option<PathBuf>,
    /// Redis URL of a shared cache (`redis://127.0.0.1:6379/0`), used instead of `cache_dir`.
    pub cache_url: Option<String>,
    /// Seconds a cached reply is served [default: 7 days].
    pub cache_ttl: Option<u64>,
    /// Entries the cache keeps in memory [default: 1000].
    pub cache_max_size: Option<usize>,
    /// Bytes of segment files the cache keeps on disk; over it the oldest segments (the least
    /// recently written entries) go [default: 1 GiB].
    pub cache_max_disk_bytes: Option<u64>,
    /// Entries the cache keeps on disk [default: no bound but the bytes].
    pub cache_max_disk_entries: Option<u64>,
    /// Metrics directory (daily `metrics_YYYY-MM-DD.jsonl` files) [default: `output/metrics`].
    pub metrics_dir: Option<PathBuf>,
    /// The provider (no default: it must be named, so the offline echo provider is never
    /// chosen silently).
    pub provider: Option<ProviderKind>,
    /// Provider base URL [default: Ollama `$OLLAMA_HOST`, else `http://localhost:11434`;
    /// OpenAI `https://api.openai.com`].
    pub base_url: Option<String>,
    /// Model, over each template's [default: the template's, then `qwen3:8b`].
    pub model: Option<String>,
    /// Sampling temperature, over each template's [default: the template's, then 0.7].
    pub temperature: Option<f64>,
    /// Wall-clock limit of one provider attempt, in seconds [default: 600].
    pub timeout: Option<f64>,
    /// Longest gap between two chunks of a streamed reply, in seconds [default: 120].
    pub idle_timeout: Option<f64>,
    /// Stream replies from the provider [default: true]; `false` for servers that cannot.
    pub stream: Option<bool>,
    /// Longest wait for a free slot among the concurrent calls, in seconds [default: 600].
    pub queue_timeout: Option<f64>,
    /// Consecutive failed attempts (connection errors, timeouts, stalls, 5xx) that open a
    /// provider's circuit breaker; 0 never opens it [default: 5].
    pub breaker_failures: Option<u32>,
    /// Seconds an open circuit breaker fails calls at once before one probe [default: 30].
    pub breaker_cooldown: Option<f64>,
    /// Retries after a failed attempt [default: 2].
    pub retries: Option<u32>,
    /// Provider calls (and `prompt batch` jobs) in flight at once [default: 4].
    pub concurrency: Option<usize>,
    /// Name of the environment variable holding the API key of an OpenAI-compatible server
    /// (see [`ApiKey::for_base_url`] for who gets a key when none is named).
    pub api_key_env: Option<String>,
    /// Cache-key namespace; change it to start a fresh cache [default: `promptkit`].
    pub namespace: Option<String>,
    /// First retry backoff in seconds, doubling after [default: 0.5].
    pub backoff_base: Option<f64>,
    /// Longest retry backoff in seconds [default: 30].
    pub backoff_max: Option<f64>,
    /// Longest `Retry-After` honoured, in seconds [default: 60].
    pub retry_after_cap: Option<f64>,
    /// Per-model adjustments (`[[model_quirks]] model_prefix = "qwen"
    /// append_to_user = " /no_think"`) [default: the qwen rule].
    pub model_quirks: Option<Vec<ModelQuirk>>,
    /// Work one template body may take to render (minijinja fuel) [default: 1,000,000].
    pub render_fuel: Option<u64>,
    /// Largest rendered body, in bytes [default: 16 MiB].
    pub max_render_bytes: Option<usize>,
    /// A price file (TOML, USD per million tokens by model name or glob), read before the
    /// shipped table [default: the shipped table alone].
    pub prices: Option<PathBuf>,
    /// Spending limits per UTC day: `[budget] daily_usd`, `[budget.agents]`, `[budget.tags]`
    /// [default: none].
    pub budget: Option<Budget>,
    /// The most one command (one system) may spend, in USD (`--budget-usd`) [default: none].
    pub budget_usd: Option<f64>,
    /// Put messages and replies into the exported spans (`gen_ai.input.messages`,
    /// `gen_ai.output.messages`) [default: false].
    pub otel_content: Option<bool>,
}

/// A positive number of seconds from a setting, else the default.
fn secs_or(value: Option<f64>, default: f64) -> Duration {
    Duration::from_secs_f64(
        value
            .filter(|t| t.is_finite() && *t > 0.0)
            .unwrap_or(default),
    )
}

/// Seconds from a setting, or an error naming it.
fn seconds(field: &str, value: f64) -> Result<Duration, AgentError> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero() || field.starts_with("backoff"))
        .ok_or_else(|| AgentError::Config {
            field: field.to_owned(),
            message: format!("invalid {field} {value}: must be a positive number of seconds"),
        })
}

impl Settings {
    /// The keys of `prompt.toml`, for hints.
    pub const KEYS: &'static str = "templates, cache_dir, cache_url, cache_ttl, cache_max_size, \
        cache_max_disk_bytes, cache_max_disk_entries, metrics_dir, provider, base_url, model, temperature, timeout, idle_timeout, stream, \
        queue_timeout, breaker_failures, breaker_cooldown, retries, concurrency, \
        api_key_env, namespace, backoff_base, backoff_max, retry_after_cap, model_quirks, \
        render_fuel, max_render_bytes, prices, budget, budget_usd, otel_content";

    /// These settings over `lower`: every setting given here wins.
    #[must_use]
    pub fn over(self, lower: Settings) -> Settings {
        let Settings {
            templates,
            cache_dir,
            cache_url,
            cache_ttl,
            cache_max_size,
            cache_max_disk_bytes,
            cache_max_disk_entries,
            metrics_dir,
            provider,
            base_url,
            model,
            temperature,
            timeout,
            idle_timeout,
            stream,
            queue_timeout,
            breaker_failures,
            breaker_cooldown,
            retries,
            concurrency,
            api_key_env,
            namespace,
            backoff_base,
            backoff_max,
            retry_after_cap,
            model_quirks,
            render_fuel,
            max_render_bytes,
            prices,
            budget,
            budget_usd,
            otel_content,
        } = self;
        Settings {
            templates: templates.or(lower.templates),
            cache_dir: cache_dir.or(lower.cache_dir),
            cache_url: cache_url.or(lower.cache_url),
            cache_ttl: cache_ttl.or(lower.cache_ttl),
            cache_max_size: cache_max_size.or(lower.cache_max_size),
            cache_max_disk_bytes: cache_max_disk_bytes.or(lower.cache_max_disk_bytes),
            cache_max_disk_entries: cache_max_disk_entries.or(lower.cache_max_disk_entries),
            metrics_dir: metrics_dir.or(lower.metrics_dir),
            provider: provider.or(lower.provider),
            base_url: base_url.or(lower.base_url),
            model: model.or(lower.model),
            temperature: temperature.or(lower.temperature),
            timeout: timeout.or(lower.timeout),
            idle_timeout: idle_timeout.or(lower.idle_timeout),
            stream: stream.or(lower.stream),
            queue_timeout: queue_timeout.or(lower.queue_timeout),
            breaker_failures: breaker_failures.or(lower.breaker_failures),
            breaker_cooldown: breaker_cooldown.or(lower.breaker_cooldown),
            retries: retries.or(lower.retries),
            concurrency: concurrency.or(lower.concurrency),
            api_key_env: api_key_env.or(lower.api_key_env),
            namespace: namespace.or(lower.namespace),
            backoff_base: backoff_base.or(lower.backoff_base),
            backoff_max: backoff_max.or(lower.backoff_max),
            retry_after_cap: retry_after_cap.or(lower.retry_after_cap),
            model_quirks: model_quirks.or(lower.model_quirks),
            render_fuel: render_fuel.or(lower.render_fuel),
            max_render_bytes: max_render_bytes.or(lower.max_render_bytes),
            prices: prices.or(lower.prices),
            budget: budget.or(lower.budget),
            budget_usd: budget_usd.or(lower.budget_usd),
            otel_content: otel_content.or(lower.otel_content),
        }
    }

    /// Makes the relative paths relative to `base` (a config file's directory).
    #[must_use]
    pub fn rebase(mut self, base: &Path) -> Settings {
        for path in [
            &mut self.templates,
            &mut self.cache_dir,
            &mut self.metrics_dir,
            &mut self.prices,
        ]
        .into_iter()
        .flatten()
        {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
        self
    }

    /// The template directory.
    pub fn templates_dir(&self) -> PathBuf {
        self.templates
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_TEMPLATES_DIR))
    }

    /// The cache directory (used unless [`cache_url`](Self::cache_url) is set).
    pub fn cache_dir(&self) -> PathBuf {
        self.cache_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE_DIR))
    }

    /// The Redis URL of a shared cache, when one is set (an empty value counts as unset).
    pub fn cache_url(&self) -> Option<&str> {
        self.cache_url.as_deref().filter(|u| !u.trim().is_empty())
    }

    /// How long a cached reply is served.
    pub fn cache_ttl(&self) -> Duration {
        Duration::from_secs(self.cache_ttl.unwrap_or(DEFAULT_CACHE_TTL_SECS))
    }

    /// The metrics directory.
    pub fn metrics_dir(&self) -> PathBuf {
        self.metrics_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_METRICS_DIR))
    }

    /// The model of plain agents, under each template's.
    pub fn model(&self) -> &str {
        self.model
            .as_deref()
            .filter(|m| !m.trim().is_empty())
            .unwrap_or(DEFAULT_MODEL)
    }

    /// The temperature of plain agents, under each template's.
    pub fn temperature(&self) -> f64 {
        self.temperature.unwrap_or(DEFAULT_TEMPERATURE)
    }

    /// The timeout of one provider attempt.
    pub fn timeout(&self) -> Duration {
        secs_or(self.timeout, DEFAULT_TIMEOUT_SECS)
    }

    /// Whether replies are streamed from the provider.
    pub fn stream(&self) -> bool {
        self.stream.unwrap_or(true)
    }

    /// The circuit breaker of the provider these settings build.
    pub fn circuit_breaker(&self) -> CircuitBreaker {
        CircuitBreaker::new(
            self.breaker_failures.unwrap_or(DEFAULT_BREAKER_FAILURES),
            secs_or(self.breaker_cooldown, DEFAULT_BREAKER_COOLDOWN_SECS),
        )
    }

    /// Retries after a failed attempt.
    pub fn retries(&self) -> u32 {
        self.retries.unwrap_or(DEFAULT_RETRIES)
    }

    /// Provider calls in flight at once.
    pub fn concurrency(&self) -> usize {
        self.concurrency.unwrap_or(DEFAULT_CONCURRENCY)
    }

    /// The cache-key namespace.
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE)
    }

    /// The bounds on rendering one template body.
    pub fn render_limits(&self) -> RenderLimits {
        let defaults = RenderLimits::default();
        RenderLimits {
            fuel: self.render_fuel.unwrap_or(defaults.fuel),
            max_bytes: self.max_render_bytes.unwrap_or(defaults.max_bytes),
        }
    }

    /// Opens the template store in the template directory, with the render limits.
    pub fn open_templates(&self) -> Result<TemplateStore, AgentError> {
        Ok(TemplateStore::open(self.templates_dir())?.with_limits(self.render_limits()))
    }

    /// The model quirks table.
    pub fn model_quirks(&self) -> Vec<ModelQuirk> {
        self.model_quirks.clone().unwrap_or_else(default_quirks)
    }

    /// The request options these settings give every call: the model and temperature when
    /// set. They are call-level: over each template's `model:` defaults.
    pub fn request_options(&self) -> RequestOptions {
        RequestOptions {
            model: self.model.clone().filter(|m| !m.trim().is_empty()),
            temperature: self.temperature,
            ..RequestOptions::default()
        }
    }

    /// Checks every value that has a valid range; the error names the setting.
    pub fn check(&self) -> Result<(), AgentError> {
        let config = |field: &str, message: String| AgentError::Config {
            field: field.to_owned(),
            message,
        };
        if let Some(t) = self.temperature
            && !(0.0..=2.0).contains(&t)
        {
            return Err(config(
                "temperature",
                format!("invalid temperature {t}: must be between 0 and 2"),
            ));
        }
        if let Some(t) = self.timeout {
            seconds("timeout", t)?;
        }
        for (field, value) in [
            ("idle_timeout", self.idle_timeout),
            ("queue_timeout", self.queue_timeout),
            ("breaker_cooldown", self.breaker_cooldown),
            ("backoff_base", self.backoff_base),
            ("backoff_max", self.backoff_max),
            ("retry_after_cap", self.retry_after_cap),
        ] {
            if let Some(v) = value {
                seconds(field, v)?;
            }
        }
        if self.concurrency == Some(0) {
            return Err(config(
                "concurrency",
                "invalid concurrency 0: must be at least 1".to_owned(),
            ));
        }
        if self.max_render_bytes == Some(0) {
            return Err(config(
                "max_render_bytes",
                "invalid max_render_bytes 0: must be at least 1".to_owned(),
            ));
        }
        for (field, value) in [
            ("cache_max_size", self.cache_max_size.map(|n| n as u64)),
            ("cache_max_disk_bytes", self.cache_max_disk_bytes),
            ("cache_max_disk_entries", self.cache_max_disk_entries),
        ] {
            if value == Some(0) {
                return Err(config(
                    field,
                    format!("invalid {field} 0: must be at least 1"),
                ));
            }
        }
        if self.model.as_deref().is_some_and(|m| m.trim().is_empty()) {
            return Err(config("model", "the model name is empty".to_owned()));
        }
        if let Some(budget) = &self.budget {
            budget.check()?;
        }
        if let Some(v) = self.budget_usd {
            crate::cost::check_usd("budget_usd", v)?;
        }
        Ok(())
    }

    /// The price table: the file of [`prices`](Self::prices) (when set) read before the
    /// shipped one; an error names the file and the line or key.
    pub fn open_prices(&self) -> Result<PriceTable, AgentError> {
        PriceTable::load(self.prices.as_deref()).map_err(|e| AgentError::Config {
            field: "prices".to_owned(),
            message: e.to_string(),
        })
    }

    /// The spending limits per UTC day (none when `[budget]` is absent).
    pub fn budget(&self) -> Budget {
        self.budget.clone().unwrap_or_default()
    }

    /// Whether spans carry messages and replies.
    pub fn otel_content(&self) -> bool {
        self.otel_content.unwrap_or(false)
    }

    /// The retry policy: `retries` + 1 attempts of at most `timeout` each, with the backoff
    /// settings.
    pub fn retry_policy(&self) -> RetryPolicy {
        let base = RetryPolicy::default();
        let secs = |v: Option<f64>, default: Duration| {
            v.and_then(|s| Duration::try_from_secs_f64(s).ok())
                .unwrap_or(default)
        };
        RetryPolicy {
            max_attempts: self.retries().saturating_add(1),
            request_timeout: self.timeout(),
            idle_timeout: secs_or(self.idle_timeout, DEFAULT_IDLE_TIMEOUT_SECS),
            queue_timeout: secs_or(self.queue_timeout, DEFAULT_QUEUE_TIMEOUT_SECS),
            backoff_base: secs(self.backoff_base, base.backoff_base),
            backoff_max: secs(self.backoff_max, base.backoff_max),
            retry_after_cap: secs(self.retry_after_cap, base.retry_after_cap),
        }
    }

    /// The provider these settings name; [`AgentError::Config`] on `provider` when none is
    /// named, on `base_url` when the URL is unusable.
    pub fn build_provider(&self) -> Result<Arc<dyn Provider>, AgentError> {
        self.build_provider_with_timeout(self.timeout())
    }

    /// [`build_provider`](Self::build_provider) with another per-request timeout (a health
    /// check wants a short one).
    pub fn build_provider_with_timeout(
        &self,
        timeout: Duration,
    ) -> Result<Arc<dyn Provider>, AgentError> {
        let kind = self.provider.ok_or_else(|| AgentError::Config {
            field: "provider".to_owned(),
            message: format!("no provider given (one of {})", ProviderKind::choices()),
        })?;
        let base_url = self.base_url.as_deref().filter(|u| !u.trim().is_empty());
        let setup = |e: ProviderError| AgentError::Config {
            field: "base_url".to_owned(),
            message: e.to_string(),
        };
        Ok(match kind {
            ProviderKind::Echo => Arc::new(EchoProvider::new()),
            ProviderKind::Ollama => {
                Arc::new(OllamaProvider::from_config(base_url, timeout).map_err(setup)?)
            }
            ProviderKind::OpenAi => {
                let base = base_url.unwrap_or(OPENAI_DEFAULT_URL);
                let key = ApiKey::for_base_url(base, self.api_key_env.as_deref());
                Arc::new(OpenAiProvider::new(base, key, timeout).map_err(setup)?)
            }
        })
    }

    /// Opens the response cache: Redis when `cache_url` is set, else the directory.
    pub fn open_cache(&self) -> Result<Arc<dyn CacheStore>, AgentError> {
        let ttl = self.cache_ttl();
        match self.cache_url() {
            Some(url) => open_redis(url, ttl),
            None => {
                let config = CacheConfig::new(self.cache_dir())
                    .max_size(self.cache_max_size.unwrap_or(DEFAULT_CACHE_MAX_SIZE))
                    .max_disk_bytes(
                        self.cache_max_disk_bytes
                            .unwrap_or(prompt_cache::DEFAULT_MAX_DISK_BYTES),
                    )
                    .max_disk_entries(self.cache_max_disk_entries)
                    .ttl(ttl);
                Ok(Arc::new(ResponseCache::open(config)?))
            }
        }
    }

    /// Opens the metrics store in the metrics directory.
    pub fn open_metrics(&self) -> Result<JsonlStore, AgentError> {
        Ok(JsonlStore::open(self.metrics_dir())?)
    }
}

#[cfg(feature = "redis")]
fn open_redis(url: &str, ttl: Duration) -> Result<Arc<dyn CacheStore>, AgentError> {
    Ok(Arc::new(prompt_cache::RedisCache::connect(
        url,
        DEFAULT_REDIS_PREFIX,
        ttl,
    )?))
}

#[cfg(not(feature = "redis"))]
fn open_redis(url: &str, _ttl: Duration) -> Result<Arc<dyn CacheStore>, AgentError> {
    Err(AgentError::Config {
        field: "cache_url".to_owned(),
        message: format!(
            "a Redis cache ({url}) needs promptkit built with the `redis` feature; use cache_dir"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_names_and_aliases_parse_from_one_list() {
        for (s, k) in [
            ("ollama", ProviderKind::Ollama),
            ("OpenAI", ProviderKind::OpenAi),
            ("openai-compatible", ProviderKind::OpenAi),
            ("open_ai", ProviderKind::OpenAi),
            (" echo ", ProviderKind::Echo),
        ] {
            assert_eq!(s.parse::<ProviderKind>(), Ok(k), "{s}");
        }
        let err = "llamacpp".parse::<ProviderKind>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown provider `llamacpp`: expected one of ollama, openai, echo"
        );
        assert_eq!(ProviderKind::OpenAi.to_string(), "openai");
        let bad = toml::from_str::<Settings>("provider = \"gemini\"").unwrap_err();
        assert!(
            bad.to_string().contains("unknown provider `gemini`"),
            "{bad}"
        );
    }

    #[test]
    fn empty_settings_give_the_documented_defaults() {
        let s: Settings = toml::from_str("").expect("empty");
        assert_eq!(s, Settings::default());
        assert_eq!(s.templates_dir(), PathBuf::from("templates"));
        assert_eq!(s.cache_dir(), PathBuf::from("output/cache"));
        assert_eq!(s.metrics_dir(), PathBuf::from("output/metrics"));
        assert_eq!(s.cache_ttl(), Duration::from_secs(7 * 24 * 3600));
        assert_eq!(s.timeout(), Duration::from_secs(600));
        assert_eq!(s.retry_policy().idle_timeout, Duration::from_secs(120));
        assert!(s.stream());
        assert_eq!(s.retry_policy().max_attempts, 3);
        assert_eq!(s.concurrency(), 4);
        assert_eq!(s.model(), "qwen3:8b");
        assert_eq!(s.namespace(), "promptkit");
        assert_eq!(s.model_quirks(), default_quirks());
        assert_eq!(s.request_options(), RequestOptions::default());
        let e = s.build_provider().unwrap_err();
        assert!(e.to_string().contains("no provider given"), "{e}");
    }

    #[test]
    fn layers_and_checks() {
        let file: Settings =
            toml::from_str("model = \"a\"\ntimeout = 1.5\nretries = 0\n").expect("ok");
        let flags = Settings {
            model: Some("b".into()),
            ..Settings::default()
        };
        let s = flags.over(file);
        assert_eq!(s.model(), "b");
        assert_eq!(s.timeout(), Duration::from_millis(1500));
        assert_eq!(s.retry_policy().max_attempts, 1);
        for (text, field) in [
            ("temperature = 3.0", "temperature"),
            ("timeout = -1", "timeout"),
            ("timeout = 0", "timeout"),
            ("concurrency = 0", "concurrency"),
            ("backoff_base = -2", "backoff_base"),
            ("cache_max_size = 0", "cache_max_size"),
            ("cache_max_disk_bytes = 0", "cache_max_disk_bytes"),
            ("cache_max_disk_entries = 0", "cache_max_disk_entries"),
        ] {
            let s: Settings = toml::from_str(text).expect(text);
            match s.check() {
                Err(AgentError::Config { field: f, .. }) => assert_eq!(f, field, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        let unknown = toml::from_str::<Settings>("provder = \"x\"").unwrap_err();
        assert!(unknown.to_string().contains("provder"), "{unknown}");
    }

    #[test]
    fn the_disk_bound_reaches_the_cache() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = format!(
            "cache_dir = {:?}\ncache_max_size = 1\ncache_max_disk_entries = 3\n",
            dir.path().display().to_string()
        );
        let s: Settings = toml::from_str(&text).expect("settings");
        s.check().expect("valid");
        let cache = s.open_cache().expect("open");
        for i in 0..20 {
            let key = prompt_cache::CacheKey::builder("t")
                .message("user", &i.to_string())
                .finish();
            let entry = prompt_cache::CachedResponse::new(key, format!("reply {i}"), "m");
            cache.put(entry, None).expect("put");
        }
        cache.flush().expect("flush");
        let stats = cache.stats().expect("stats");
        assert!(stats.disk_entries <= 3, "{stats:?}");
        assert!(stats.disk_evictions >= 17, "{stats:?}");
    }

    #[test]
    fn relative_paths_rebase_on_the_config_directory() {
        let s = Settings {
            templates: Some("t".into()),
            cache_dir: Some("/abs".into()),
            ..Settings::default()
        }
        .rebase(Path::new("conf"));
        assert_eq!(s.templates_dir(), PathBuf::from("conf/t"));
        assert_eq!(s.cache_dir(), PathBuf::from("/abs"));
        assert_eq!(s.metrics_dir(), PathBuf::from("output/metrics"));
    }
}
