//! `prompt.toml` and the resolution of every setting: flag > environment > config file > default.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::cli::{GlobalArgs, ProviderArgs};
use crate::error::{CliError, CliResult};

/// The config file read when `--config` is not given and it exists in the working directory.
pub const DEFAULT_CONFIG: &str = "prompt.toml";

/// The contents of a `prompt.toml`. Every key is optional; relative paths are relative to the
/// directory of the config file.
///
/// ```toml
/// templates = "templates"
/// cache_dir = "output/cache"
/// metrics_dir = "output/metrics"
/// provider = "ollama"
/// base_url = "http://127.0.0.1:11434"
/// model = "qwen3:30b"
/// ```
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Template directory.
    pub templates: Option<PathBuf>,
    /// Response cache directory.
    pub cache_dir: Option<PathBuf>,
    /// Redis URL of a shared cache (used instead of `cache_dir`).
    pub cache_url: Option<String>,
    /// Metrics directory.
    pub metrics_dir: Option<PathBuf>,
    /// Provider: `ollama`, `openai` or `echo`.
    pub provider: Option<String>,
    /// Provider base URL.
    pub base_url: Option<String>,
    /// Model name.
    pub model: Option<String>,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Request timeout in seconds.
    pub timeout: Option<f64>,
    /// Jobs run at the same time by `prompt batch`.
    pub concurrency: Option<usize>,
    /// Retries after a failed attempt.
    pub retries: Option<u32>,
    /// Name of the environment variable holding the API key (OpenAI-compatible providers).
    pub api_key_env: Option<String>,
    /// Time to live of new cache entries, in seconds.
    pub cache_ttl: Option<u64>,
}

impl ConfigFile {
    /// Parses a config file's text; `path` names the file in errors.
    pub fn parse(text: &str, path: &Path) -> CliResult<Self> {
        toml::from_str::<Self>(text).map_err(|e| {
            let location = e
                .span()
                .map(|span| {
                    let (line, col) = line_col(text, span.start);
                    format!(":{line}:{col}")
                })
                .unwrap_or_default();
            CliError::failure(format!(
                "bad config file {}{location}: {}",
                path.display(),
                e.message()
            ))
            .hint(
                "keys: templates, cache_dir, cache_url, metrics_dir, provider, base_url, model, \
                 temperature, timeout, retries, concurrency, api_key_env, cache_ttl",
            )
        })
    }

    /// Makes relative paths relative to `base` (the config file's directory).
    fn rebase(mut self, base: &Path) -> Self {
        for p in [
            &mut self.templates,
            &mut self.cache_dir,
            &mut self.metrics_dir,
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        self
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |i| before.len() - i - 1)
        + 1;
    (line, col)
}

/// Loads the config file: `explicit` (which must exist), else `./prompt.toml` when present.
pub fn load_config(explicit: Option<&Path>) -> CliResult<(ConfigFile, Option<PathBuf>)> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => {
            let default = PathBuf::from(DEFAULT_CONFIG);
            if !default.is_file() {
                return Ok((ConfigFile::default(), None));
            }
            default
        }
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        CliError::failure(format!("cannot read config file {}: {e}", path.display()))
            .hint("check the --config path (or PROMPT_CONFIG)")
    })?;
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let config = ConfigFile::parse(&text, &path)?;
    let config = if base == Path::new(".") {
        config
    } else {
        config.rebase(&base)
    };
    Ok((config, Some(path)))
}

/// Where the cache lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheLocation {
    /// The embedded cache in a directory.
    Dir(PathBuf),
    /// A shared Redis cache.
    Redis(String),
}

/// Settings every command uses, resolved from flags, environment, config file and defaults.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Template directory.
    pub templates: PathBuf,
    /// Cache directory (used when `cache_url` is `None`).
    pub cache_dir: PathBuf,
    /// Redis URL of a shared cache.
    pub cache_url: Option<String>,
    /// Metrics directory.
    pub metrics_dir: PathBuf,
    /// JSON on stdout.
    pub json: bool,
    /// The config file read, if any.
    pub config_path: Option<PathBuf>,
    /// The config file's contents (defaults when none was read).
    pub config: ConfigFile,
}

impl Settings {
    /// Resolves the global settings.
    pub fn resolve(global: &GlobalArgs, config: ConfigFile, config_path: Option<PathBuf>) -> Self {
        Self {
            templates: global
                .templates
                .clone()
                .or_else(|| config.templates.clone())
                .unwrap_or_else(|| PathBuf::from("templates")),
            cache_dir: global
                .cache_dir
                .clone()
                .or_else(|| config.cache_dir.clone())
                .unwrap_or_else(|| PathBuf::from("output/cache")),
            cache_url: global
                .cache_url
                .clone()
                .or_else(|| config.cache_url.clone())
                .filter(|u| !u.is_empty()),
            metrics_dir: global
                .metrics_dir
                .clone()
                .or_else(|| config.metrics_dir.clone())
                .unwrap_or_else(|| PathBuf::from("output/metrics")),
            json: global.json,
            config_path,
            config,
        }
    }

    /// The cache backend chosen by `--cache-url` or `--cache-dir`.
    pub fn cache_location(&self) -> CacheLocation {
        match &self.cache_url {
            Some(url) => CacheLocation::Redis(url.clone()),
            None => CacheLocation::Dir(self.cache_dir.clone()),
        }
    }

    /// Resolves the provider settings; `None` provider when neither flag, env nor config names one.
    pub fn provider(&self, args: &ProviderArgs) -> ProviderSettings {
        let c = &self.config;
        ProviderSettings {
            provider: args
                .provider
                .clone()
                .or_else(|| c.provider.clone())
                .filter(|p| !p.is_empty()),
            base_url: args
                .base_url
                .clone()
                .or_else(|| c.base_url.clone())
                .filter(|p| !p.is_empty()),
            model: args
                .model
                .clone()
                .or_else(|| c.model.clone())
                .filter(|p| !p.is_empty()),
            temperature: args.temperature.or(c.temperature),
            timeout: args.timeout.or(c.timeout).unwrap_or(120.0),
            retries: args.retries.or(c.retries).unwrap_or(2),
            no_cache: args.no_cache,
            api_key_env: c.api_key_env.clone(),
        }
    }
}

/// The provider a command generates with.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderSettings {
    /// `ollama`, `openai` or `echo`; `None` when not given anywhere.
    pub provider: Option<String>,
    /// Base URL override.
    pub base_url: Option<String>,
    /// Model override.
    pub model: Option<String>,
    /// Temperature override.
    pub temperature: Option<f64>,
    /// Request timeout in seconds.
    pub timeout: f64,
    /// Retries after a failed attempt.
    pub retries: u32,
    /// Bypass the cache.
    pub no_cache: bool,
    /// Environment variable holding the API key.
    pub api_key_env: Option<String>,
}

/// The providers `prompt` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// A local or remote Ollama server.
    Ollama,
    /// Any OpenAI-compatible chat completions server.
    OpenAi,
    /// The offline, deterministic echo provider.
    Echo,
}

impl ProviderKind {
    /// The provider's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ollama => "ollama",
            Self::OpenAi => "openai",
            Self::Echo => "echo",
        }
    }
}

impl ProviderSettings {
    /// The provider kind; a usage error when none was given or the name is unknown.
    pub fn kind(&self) -> CliResult<ProviderKind> {
        match self.provider.as_deref() {
            None => Err(CliError::usage("no provider given").hint(
                "pass --provider ollama|openai|echo, set PROMPT_PROVIDER, or add \
                 `provider = \"ollama\"` to prompt.toml",
            )),
            Some(name) => match name.to_ascii_lowercase().as_str() {
                "ollama" => Ok(ProviderKind::Ollama),
                "openai" | "openai-compatible" => Ok(ProviderKind::OpenAi),
                "echo" => Ok(ProviderKind::Echo),
                _ => Err(CliError::usage(format!("unknown provider `{name}`"))
                    .hint("use one of: ollama, openai, echo")),
            },
        }
    }

    /// Checks the temperature and timeout values.
    pub fn check(&self) -> CliResult<()> {
        if let Some(t) = self.temperature
            && !(0.0..=2.0).contains(&t)
        {
            return Err(CliError::usage(format!(
                "invalid temperature {t}: must be between 0 and 2"
            ))
            .hint("pass e.g. --temperature 0.7"));
        }
        if !(self.timeout.is_finite() && self.timeout > 0.0) {
            return Err(CliError::usage(format!(
                "invalid timeout {}: must be a positive number of seconds",
                self.timeout
            ))
            .hint("pass e.g. --timeout 120"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_config() {
        let c = ConfigFile::parse(
            "templates = \"t\"\nprovider = \"ollama\"\nmodel = \"m\"\ntemperature = 0.5\n",
            Path::new("prompt.toml"),
        )
        .unwrap();
        assert_eq!(c.templates, Some(PathBuf::from("t")));
        assert_eq!(c.provider.as_deref(), Some("ollama"));
        assert_eq!(c.temperature, Some(0.5));
    }

    #[test]
    fn bad_config_names_file_line_and_key() {
        let e =
            ConfigFile::parse("model = \"m\"\nprovder = \"x\"\n", Path::new("p.toml")).unwrap_err();
        assert_eq!(e.code(), 1);
        assert!(
            e.message.starts_with("bad config file p.toml:2:1:"),
            "{}",
            e.message
        );
        assert!(e.message.contains("provder"), "{}", e.message);
    }

    #[test]
    fn precedence_flag_over_config_over_default() {
        let config = ConfigFile {
            templates: Some("from-config".into()),
            model: Some("config-model".into()),
            ..ConfigFile::default()
        };
        let global = GlobalArgs {
            metrics_dir: Some("from-flag".into()),
            ..GlobalArgs::default()
        };
        let s = Settings::resolve(&global, config, None);
        assert_eq!(s.templates, PathBuf::from("from-config"));
        assert_eq!(s.metrics_dir, PathBuf::from("from-flag"));
        assert_eq!(s.cache_dir, PathBuf::from("output/cache"));
        let p = s.provider(&ProviderArgs {
            model: Some("flag-model".into()),
            ..ProviderArgs::default()
        });
        assert_eq!(p.model.as_deref(), Some("flag-model"));
        assert_eq!(p.kind().unwrap_err().code(), 2);
    }

    #[test]
    fn unknown_provider_is_a_usage_error() {
        let s = Settings::resolve(&GlobalArgs::default(), ConfigFile::default(), None);
        let p = s.provider(&ProviderArgs {
            provider: Some("gpt".into()),
            ..ProviderArgs::default()
        });
        let e = p.kind().unwrap_err();
        assert_eq!(e.code(), 2);
        assert!(e.message.contains("gpt"));
    }
}
