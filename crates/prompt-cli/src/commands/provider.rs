//! Explaining provider errors: what to do about each.

use prompt_agent::{ProviderError, ProviderKind};

/// A hint for a provider error: how to fix it.
pub(crate) fn provider_hint(e: &ProviderError, kind: ProviderKind) -> String {
    let name = kind.as_str();
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
            format!(
                "export {env_var}=… (or name another variable with --api-key-env, \
                 PROMPT_API_KEY_ENV or api_key_env in prompt.toml)"
            )
        }
        ProviderError::Auth { .. } => "check the API key; a server other than api.openai.com \
            gets one only when its variable is named (--api-key-env NAME)"
            .to_owned(),
        ProviderError::RateLimited { .. } => {
            "wait and try again, or lower --concurrency".to_owned()
        }
        ProviderError::QuotaExhausted { .. } => "check the account's quota and billing".to_owned(),
        _ => format!("`prompt doctor --provider {name}` checks the provider setup"),
    }
}
