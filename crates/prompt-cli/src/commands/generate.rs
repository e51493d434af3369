//! `prompt generate`: one generation through cache, provider and metrics.

use std::sync::Arc;
use std::time::Duration;

use prompt_agent::{AgentError, GenerateOptions, Generation, PromptSystem};
use prompt_metrics::JsonlStore;
use prompt_templates::TemplateStore;
use serde_json::json;

use super::cache::open_cache;
use super::metrics::metrics_error;
use super::provider::{build_provider, provider_hint};
use super::templates::{collect_vars, load, open_store, template_error, version_req};
use crate::cli::{ProviderArgs, VarsArgs};
use crate::config::{ProviderKind, ProviderSettings, Settings};
use crate::error::{CliError, CliResult};
use crate::ui::{self, Paint};
use crate::vars::TemplateRef;

/// Everything a generation needs: the system and the provider settings it was built from.
#[derive(Debug)]
pub(crate) struct Generator {
    pub(crate) system: PromptSystem,
    pub(crate) settings: ProviderSettings,
    pub(crate) kind: ProviderKind,
}

/// Builds the prompt system: templates, cache, metrics, provider.
pub(crate) fn generator(
    settings: &Settings,
    args: &ProviderArgs,
    store: TemplateStore,
    concurrency: usize,
) -> CliResult<Generator> {
    let provider_settings = settings.provider(args);
    let timeout = Duration::from_secs_f64(provider_settings.timeout);
    let (kind, provider) = build_provider(&provider_settings, timeout)?;
    let metrics = JsonlStore::open(&settings.metrics_dir)
        .map_err(|e| metrics_error(e, &settings.metrics_dir))?;
    let mut builder = PromptSystem::builder()
        .templates(Arc::new(store))
        .provider(provider)
        .metrics(Arc::new(metrics))
        .concurrency(concurrency.max(1))
        .request_timeout(timeout)
        .max_attempts(provider_settings.retries.saturating_add(1));
    builder = builder.cache(open_cache(settings)?);
    if let Some(model) = &provider_settings.model {
        builder = builder.model(model);
    }
    if let Some(t) = provider_settings.temperature {
        builder = builder.temperature(t);
    }
    let system = builder
        .build()
        .map_err(|e| agent_error(e, &provider_settings, &settings.templates))?;
    Ok(Generator {
        system,
        settings: provider_settings,
        kind,
    })
}

/// A one-line error with a hint for a failed generation.
pub(crate) fn agent_error(
    e: AgentError,
    settings: &ProviderSettings,
    templates: &std::path::Path,
) -> CliError {
    match e {
        AgentError::Template(t) => template_error(t, templates),
        AgentError::Provider { ref source, .. } => {
            let hint = provider_hint(source, settings);
            CliError::failure(e.to_string()).hint(hint)
        }
        AgentError::Validation { .. } => CliError::failure(e.to_string()).hint(
            "the replies broke the template's validation rules (min_length/max_length); \
             try another model or adjust the template",
        ),
        AgentError::Config { .. } => CliError::usage(e.to_string())
            .hint("check the flags, environment variables and prompt.toml"),
        other => CliError::failure(other.to_string()),
    }
}

/// The JSON shape of a generation.
pub(crate) fn generation_json(
    r: &TemplateRef,
    g: &Generation,
    provider: &str,
) -> serde_json::Value {
    json!({
        "agent": r.agent,
        "task": r.task,
        "version": g.template_version,
        "template_hash": g.template_hash,
        "provider": provider,
        "model": g.model,
        "response": g.content,
        "tokens_prompt": g.tokens_prompt,
        "tokens_completion": g.tokens_completion,
        "latency_ms": g.latency_ms,
        "cache_hit": g.cache_hit,
        "retry_count": g.retry_count,
        "cache_key": g.cache_key,
    })
}

pub(crate) fn generate(
    template: &str,
    vars_args: &VarsArgs,
    args: &ProviderArgs,
    settings: &Settings,
    quiet: bool,
) -> CliResult<()> {
    let r = TemplateRef::parse(template)?;
    // The provider is checked first: `echo` is never chosen silently.
    settings.provider(args).kind()?;
    let store = open_store(settings)?;
    let t = load(&store, &r)?;
    let vars = collect_vars(&t, vars_args)?;
    let gen_ = generator(settings, args, store, 1)?;
    let options = GenerateOptions {
        version: version_req(&r)?,
        no_cache: gen_.settings.no_cache,
        model: gen_.settings.model.clone(),
        temperature: gen_.settings.temperature,
        examples: vars_args.examples,
        ..GenerateOptions::default()
    };
    let runtime = super::runtime()?;
    let agent = gen_.system.template_agent(&r.agent);
    let result = runtime.block_on(agent.generate_from_template(&r.task, &vars, &options));
    let flushed = gen_.system.flush();
    let g = result.map_err(|e| agent_error(e, &gen_.settings, &settings.templates))?;
    if let Err(e) = flushed {
        ui::print_warning(&format!("could not flush the cache or metrics: {e}"));
    }
    if settings.json {
        return ui::print_json(&generation_json(&r, &g, gen_.kind.name()));
    }
    let mut text = g.content.clone();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    ui::print_stdout(&text)?;
    if !quiet {
        let p = Paint::stderr();
        let tokens = match (g.tokens_prompt, g.tokens_completion) {
            (None, None) => String::new(),
            (a, b) => format!(" · {} tokens", a.unwrap_or(0) + b.unwrap_or(0)),
        };
        let retries = if g.retry_count > 0 {
            format!(
                " · {} retr{}",
                g.retry_count,
                if g.retry_count == 1 { "y" } else { "ies" }
            )
        } else {
            String::new()
        };
        eprintln!(
            "{}",
            p.dim(&format!(
                "{}/{} v{} · {} {}{tokens} · {}{retries} · {}",
                r.agent,
                r.task,
                g.template_version,
                gen_.kind.name(),
                g.model,
                ui::millis(g.latency_ms),
                if g.cache_hit {
                    "cache hit"
                } else {
                    "cache miss"
                }
            ))
        );
    }
    Ok(())
}
