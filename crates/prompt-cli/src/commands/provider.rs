//! Building the provider a command generates with, and explaining provider errors.

use std::sync::Arc;
use std::time::Duration;

use prompt_agent::{
    ApiKey, EchoProvider, OPENAI_DEFAULT_URL, OllamaProvider, OpenAiProvider, Provider,
    ProviderError,
};

use crate::config::{ProviderKind, ProviderSettings};
use crate::error::{CliError, CliResult};

/// The environment variable read for the API key of an OpenAI-compatible provider when the
/// config file names none: `PROMPT_API_KEY` when set, else `OPENAI_API_KEY`.
fn api_key(settings: &ProviderSettings, base_url: &str) -> ApiKey {
    if let Some(name) = &settings.api_key_env {
        return ApiKey::Env(name.clone());
    }
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    if set("PROMPT_API_KEY") {
        ApiKey::Env("PROMPT_API_KEY".to_owned())
    } else if set("OPENAI_API_KEY")
        || base_url
            .trim_end_matches('/')
            .starts_with(OPENAI_DEFAULT_URL)
    {
        ApiKey::Env("OPENAI_API_KEY".to_owned())
    } else {
        // A local OpenAI-compatible server (vLLM, llama.cpp, LM Studio) needs no key.
        ApiKey::None
    }
}

/// Builds the provider; a usage error when none was given.
pub(crate) fn build_provider(
    settings: &ProviderSettings,
    timeout: Duration,
) -> CliResult<(ProviderKind, Arc<dyn Provider>)> {
    settings.check()?;
    let kind = settings.kind()?;
    let provider: Arc<dyn Provider> = match kind {
        ProviderKind::Echo => Arc::new(EchoProvider::new()),
        ProviderKind::Ollama => Arc::new(
            OllamaProvider::from_config(settings.base_url.as_deref(), timeout)
                .map_err(|e| provider_error(&e, settings))?,
        ),
        ProviderKind::OpenAi => {
            let base = settings.base_url.as_deref().unwrap_or(OPENAI_DEFAULT_URL);
            Arc::new(
                OpenAiProvider::new(base, api_key(settings, base), timeout)
                    .map_err(|e| provider_error(&e, settings))?,
            )
        }
    };
    Ok((kind, provider))
}

/// A hint for a provider error: how to fix it.
pub(crate) fn provider_hint(e: &ProviderError, settings: &ProviderSettings) -> String {
    let name = settings.provider.as_deref().unwrap_or("the provider");
    match e {
        ProviderError::Connection { .. } | ProviderError::Timeout { .. } => {
            if name == "ollama" {
                "is Ollama running (`ollama serve`)? set the address with --base-url or PROMPT_BASE_URL"
                    .to_owned()
            } else {
                format!("is {name} reachable? check --base-url / PROMPT_BASE_URL and the network")
            }
        }
        ProviderError::ModelNotFound { .. } => {
            if name == "ollama" {
                "pull it with `ollama pull MODEL`, or pick another with --model / PROMPT_MODEL"
                    .to_owned()
            } else {
                "pick another model with --model / PROMPT_MODEL".to_owned()
            }
        }
        ProviderError::MissingApiKey { env_var, .. } => {
            format!("export {env_var}=… (or set api_key_env in prompt.toml)")
        }
        ProviderError::Auth { .. } => "check the API key".to_owned(),
        ProviderError::RateLimited { .. } => {
            "wait and try again, or lower --concurrency".to_owned()
        }
        ProviderError::QuotaExhausted { .. } => "check the account's quota and billing".to_owned(),
        _ => format!("`prompt doctor --provider {name}` checks the provider setup"),
    }
}

/// A one-line error for a provider failure.
pub(crate) fn provider_error(e: &ProviderError, settings: &ProviderSettings) -> CliError {
    CliError::failure(e.to_string()).hint(provider_hint(e, settings))
}
