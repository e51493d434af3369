//! Finding and reading `prompt.toml`, and laying the command line over it: flag > environment
//! > config file > default.
//!
//! The schema, the defaults and the path from settings to a provider, a cache and a metrics
//! store are prompt-agent's [`AppSettings`]; this module only reads the file (errors with
//! line and column, paths relative to the file's directory) and turns flags into a layer of
//! the same type.

use std::path::{Path, PathBuf};

use prompt_agent::{AgentError, ProviderKind, Settings as AppSettings};

use crate::cli::{GlobalArgs, ProviderArgs};
use crate::error::{CliError, CliResult};

/// The config file read when `--config` is not given and it exists in the working directory.
pub const DEFAULT_CONFIG: &str = "prompt.toml";

/// Parses a config file's text; `path` names the file in errors.
pub fn parse_config(text: &str, path: &Path) -> CliResult<AppSettings> {
    toml::from_str::<AppSettings>(text).map_err(|e| {
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
        .hint(format!("keys: {}", AppSettings::KEYS))
    })
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
/// Relative paths in it are made relative to its directory.
pub fn load_config(explicit: Option<&Path>) -> CliResult<(AppSettings, Option<PathBuf>)> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => {
            let default = PathBuf::from(DEFAULT_CONFIG);
            if !default.is_file() {
                return Ok((AppSettings::default(), None));
            }
            default
        }
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        CliError::failure(format!("cannot read config file {}: {e}", path.display()))
            .hint("check the --config path (or PROMPT_CONFIG)")
    })?;
    let config = parse_config(&text, &path)?;
    let config = match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(base) if base != Path::new(".") => config.rebase(base),
        _ => config,
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

/// What every command works with: the settings given by the global flags (and their
/// environment variables) over the config file, and how to print.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Every setting given so far; the commands that generate add their provider flags with
    /// [`for_provider`](Self::for_provider).
    pub app: AppSettings,
    /// JSON on stdout.
    pub json: bool,
    /// The config file read, if any.
    pub config_path: Option<PathBuf>,
}

impl Settings {
    /// Lays the global flags over the config file.
    pub fn resolve(global: &GlobalArgs, config: AppSettings, config_path: Option<PathBuf>) -> Self {
        let flags = AppSettings {
            templates: global.templates.clone(),
            cache_dir: global.cache_dir.clone(),
            cache_url: global.cache_url.clone(),
            metrics_dir: global.metrics_dir.clone(),
            ..AppSettings::default()
        };
        Self {
            app: flags.over(config),
            json: global.json,
            config_path,
        }
    }

    /// The template directory.
    pub fn templates(&self) -> PathBuf {
        self.app.templates_dir()
    }

    /// The metrics directory.
    pub fn metrics_dir(&self) -> PathBuf {
        self.app.metrics_dir()
    }

    /// The cache backend chosen by `--cache-url` or `--cache-dir`.
    pub fn cache_location(&self) -> CacheLocation {
        match self.app.cache_url() {
            Some(url) => CacheLocation::Redis(url.to_owned()),
            None => CacheLocation::Dir(self.app.cache_dir()),
        }
    }

    /// The settings of a command that generates: its provider flags over everything else,
    /// checked. A usage error when no provider is named or a value is out of range.
    pub fn for_provider(&self, args: &ProviderArgs) -> CliResult<ProviderSettings> {
        let provider = match args.provider.as_deref().filter(|p| !p.trim().is_empty()) {
            None => None,
            Some(name) => Some(name.parse::<ProviderKind>().map_err(|e| {
                CliError::usage(e.to_string())
                    .hint(format!("use one of: {}", ProviderKind::choices()))
            })?),
        };
        let flags = AppSettings {
            provider,
            base_url: args.base_url.clone().filter(|u| !u.is_empty()),
            model: args.model.clone().filter(|m| !m.is_empty()),
            temperature: args.temperature,
            timeout: args.timeout,
            idle_timeout: args.idle_timeout,
            stream: args.no_stream.then_some(false),
            retries: args.retries,
            api_key_env: args.api_key_env.clone().filter(|v| !v.is_empty()),
            prices: args.prices.clone().filter(|p| !p.as_os_str().is_empty()),
            budget_usd: args.budget_usd,
            otel_content: args.otel_content.then_some(true),
            ..AppSettings::default()
        };
        let app = flags.over(self.app.clone());
        let kind = app.provider.ok_or_else(|| {
            CliError::usage("no provider given").hint(format!(
                "pass --provider {}, set PROMPT_PROVIDER, or add `provider = \"ollama\"` to \
                 prompt.toml",
                ProviderKind::choices().replace(", ", "|")
            ))
        })?;
        app.check().map_err(|e| settings_error(&e))?;
        for tag in &args.tags {
            prompt_agent::check_tag(tag)
                .map_err(|e| CliError::usage(e).hint("pass e.g. --tag eval"))?;
        }
        Ok(ProviderSettings {
            app,
            kind,
            no_cache: args.no_cache,
            tags: args.tags.clone(),
        })
    }
}

/// A usage error for a bad setting, with the flag that sets it.
pub(crate) fn settings_error(e: &AgentError) -> CliError {
    let hint = match e {
        AgentError::Config { field, .. } => match field.as_str() {
            "temperature" => "pass e.g. --temperature 0.7".to_owned(),
            "timeout" => "pass e.g. --timeout 120".to_owned(),
            "concurrency" => "pass e.g. --concurrency 4".to_owned(),
            "budget_usd" => "pass e.g. --budget-usd 2.5".to_owned(),
            "prices" => {
                "check the --prices file (or PROMPT_PRICES, or `prices` in prompt.toml)".to_owned()
            }
            "provider" => format!("use one of: {}", ProviderKind::choices()),
            field => format!("check `{field}` in the flags, environment and prompt.toml"),
        },
        _ => "check the flags, environment variables and prompt.toml".to_owned(),
    };
    let message = match e {
        AgentError::Config { message, .. } => message.clone(),
        other => other.to_string(),
    };
    CliError::usage(message).hint(hint)
}

/// The settings of a command that generates.
#[derive(Debug, Clone)]
pub struct ProviderSettings {
    /// Every setting, the command's provider flags included, checked.
    pub app: AppSettings,
    /// The provider named.
    pub kind: ProviderKind,
    /// Skip the cache read (`--no-cache`).
    pub no_cache: bool,
    /// The calls' tags (`--tag`).
    pub tags: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_config() {
        let c = parse_config(
            "templates = \"t\"\nprovider = \"ollama\"\nmodel = \"m\"\ntemperature = 0.5\n",
            Path::new("prompt.toml"),
        )
        .unwrap();
        assert_eq!(c.templates, Some(PathBuf::from("t")));
        assert_eq!(c.provider, Some(ProviderKind::Ollama));
        assert_eq!(c.temperature, Some(0.5));
    }

    #[test]
    fn the_shipped_example_config_parses() {
        let text = include_str!("../../../examples/prompt.toml");
        let c = parse_config(text, Path::new("examples/prompt.toml")).unwrap();
        assert_eq!(c.provider, Some(ProviderKind::Ollama));
        assert_eq!(c.timeout, Some(300.0));
        c.check().unwrap();
    }

    #[test]
    fn bad_config_names_file_line_and_key() {
        let e = parse_config("model = \"m\"\nprovder = \"x\"\n", Path::new("p.toml")).unwrap_err();
        assert_eq!(e.code(), 1);
        assert!(
            e.message.starts_with("bad config file p.toml:2:1:"),
            "{}",
            e.message
        );
        assert!(e.message.contains("provder"), "{}", e.message);
        let e = parse_config("provider = \"gpt\"\n", Path::new("p.toml")).unwrap_err();
        assert!(
            e.message.starts_with("bad config file p.toml:1:12:")
                && e.message.contains("unknown provider `gpt`"),
            "{}",
            e.message
        );
    }

    #[test]
    fn precedence_flag_over_config_over_default() {
        let config = AppSettings {
            templates: Some("from-config".into()),
            model: Some("config-model".into()),
            ..AppSettings::default()
        };
        let global = GlobalArgs {
            metrics_dir: Some("from-flag".into()),
            ..GlobalArgs::default()
        };
        let s = Settings::resolve(&global, config, None);
        assert_eq!(s.templates(), PathBuf::from("from-config"));
        assert_eq!(s.metrics_dir(), PathBuf::from("from-flag"));
        assert_eq!(
            s.cache_location(),
            CacheLocation::Dir(PathBuf::from("output/cache"))
        );
        let e = s
            .for_provider(&ProviderArgs {
                model: Some("flag-model".into()),
                ..ProviderArgs::default()
            })
            .unwrap_err();
        assert_eq!(e.code(), 2);
        let p = s
            .for_provider(&ProviderArgs {
                provider: Some("echo".into()),
                model: Some("flag-model".into()),
                ..ProviderArgs::default()
            })
            .unwrap();
        assert_eq!(p.app.model(), "flag-model");
        assert_eq!(p.kind, ProviderKind::Echo);
    }

    #[test]
    fn unknown_provider_and_bad_values_are_usage_errors() {
        let s = Settings::resolve(&GlobalArgs::default(), AppSettings::default(), None);
        let e = s
            .for_provider(&ProviderArgs {
                provider: Some("gpt".into()),
                ..ProviderArgs::default()
            })
            .unwrap_err();
        assert_eq!(e.code(), 2);
        assert!(
            e.message.contains("unknown provider `gpt`"),
            "{}",
            e.message
        );
        let e = s
            .for_provider(&ProviderArgs {
                provider: Some("echo".into()),
                temperature: Some(5.0),
                ..ProviderArgs::default()
            })
            .unwrap_err();
        assert_eq!(e.code(), 2);
        assert!(e.message.contains("invalid temperature 5"), "{}", e.message);
    }
}
