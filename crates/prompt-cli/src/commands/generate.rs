//! `prompt generate`: one generation through cache, provider and metrics.

use std::io::IsTerminal;

use futures_util::StreamExt;
use prompt_agent::{
    AgentError, Delta, GenerateOptions, Generation, GenerationEvent, PromptSystem, StreamItem,
};
use serde_json::json;

use super::cache::cache_error;
use super::metrics::metrics_error;
use super::provider::provider_hint;
use super::templates::{check_templates_dir, collect_vars, load, template_error, version_req};
use crate::cli::{ProviderArgs, VarsArgs};
use crate::config::{ProviderSettings, Settings, settings_error};
use crate::error::{CliError, CliResult};
use crate::ui::{self, Paint};
use crate::vars::TemplateRef;

/// Everything a generation needs: the system and the settings it was built from.
#[derive(Debug)]
pub(crate) struct Generator {
    pub(crate) system: PromptSystem,
    pub(crate) settings: ProviderSettings,
}

impl Generator {
    /// The call options every generation of this command starts from: `--no-cache`, `--tag`
    /// and the settings' model and temperature (over each template's).
    pub(crate) fn options(&self) -> GenerateOptions {
        GenerateOptions {
            no_cache: self.settings.no_cache,
            tags: self.settings.tags.clone(),
            ..GenerateOptions::with_request(self.settings.app.request_options())
        }
    }

    /// A one-line error with a hint for a failed generation.
    pub(crate) fn error(&self, e: AgentError) -> CliError {
        agent_error(e, &self.settings)
    }
}

/// Builds the prompt system (templates, cache, metrics, provider) from the settings, the
/// command's provider flags over the rest. The provider is checked first: a usage error when
/// none is named (`echo` is never chosen silently).
pub(crate) fn generator(settings: &Settings, args: &ProviderArgs) -> CliResult<Generator> {
    let provider_settings = settings.for_provider(args)?;
    check_templates_dir(&provider_settings.app.templates_dir())?;
    let system = PromptSystem::from_settings(&provider_settings.app)
        .map_err(|e| agent_error(e, &provider_settings))?;
    Ok(Generator {
        system,
        settings: provider_settings,
    })
}

/// A one-line error with a hint for a failed generation or a system that could not be built.
pub(crate) fn agent_error(e: AgentError, settings: &ProviderSettings) -> CliError {
    let app = &settings.app;
    match e {
        AgentError::Template(t) => template_error(&t, &app.templates_dir()),
        AgentError::Cache(c) => cache_error(&c, app),
        AgentError::Metrics(m) => metrics_error(&m, &app.metrics_dir()),
        AgentError::Provider { ref source, .. } => {
            let hint = provider_hint(source, settings.kind);
            CliError::failure(e.to_string()).hint(hint)
        }
        AgentError::Validation { .. } => CliError::failure(e.to_string()).hint(
            "the replies broke the template's validation rules (min_length/max_length); \
             try another model or adjust the template",
        ),
        AgentError::Config { .. } => settings_error(&e),
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
        "reasoning": g.reasoning,
        "time_to_first_token_ms": g.time_to_first_token_ms,
        "tool_calls": g.tool_calls,
        "cost_usd": g.cost_usd,
        "saved_usd": g.saved_usd,
    })
}

/// The arguments of `prompt generate`.
#[derive(Debug)]
pub(crate) struct GenerateArgs<'a> {
    pub(crate) template: &'a str,
    pub(crate) vars: &'a VarsArgs,
    pub(crate) provider: &'a ProviderArgs,
    pub(crate) show_thinking: bool,
    pub(crate) paced_replay: bool,
}

/// Prints a streamed reply on a terminal as it arrives: text as is, reasoning dimmed (only
/// with `--show-thinking`), a note on stderr when an attempt starts over.
#[derive(Debug)]
struct LivePrinter {
    show_thinking: bool,
    paint: Paint,
    in_reasoning: bool,
    printed: bool,
    ends_with_newline: bool,
}

impl LivePrinter {
    fn print(&mut self, text: &str) {
        use std::io::Write;
        if text.is_empty() {
            return;
        }
        let mut out = std::io::stdout().lock();
        // A closed stdout is noticed when the final line is printed.
        let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
        self.printed = true;
        self.ends_with_newline = text.ends_with('\n');
    }

    fn event(&mut self, event: GenerationEvent) {
        match event {
            GenerationEvent::Delta(Delta::Reasoning(text)) => {
                if self.show_thinking {
                    self.in_reasoning = true;
                    let dimmed = self.paint.dim(&text);
                    self.print(&dimmed);
                }
            }
            GenerationEvent::Delta(Delta::Text(text)) => {
                if self.in_reasoning {
                    self.in_reasoning = false;
                    self.print("\n\n");
                }
                self.print(&text);
            }
            // Tool calls are printed whole once the reply is complete and checked.
            GenerationEvent::Delta(Delta::ToolCall(_)) => {}
            GenerationEvent::Retry { attempt, reason } => {
                if self.printed && !self.ends_with_newline {
                    self.print("\n");
                }
                self.in_reasoning = false;
                eprintln!(
                    "{}",
                    Paint::stderr().yellow(&format!(
                        "[attempt {attempt}: starting over — {}]",
                        crate::error::one_line(&reason)
                    ))
                );
            }
        }
    }
}

pub(crate) fn generate(args: &GenerateArgs<'_>, settings: &Settings, quiet: bool) -> CliResult<()> {
    let r = TemplateRef::parse(args.template)?;
    let gen_ = generator(settings, args.provider)?;
    let t = load(gen_.system.templates(), &r)?;
    let vars = collect_vars(&t, args.vars)?;
    let options = GenerateOptions {
        version: version_req(&r)?,
        examples: args.vars.examples,
        paced_replay: args.paced_replay,
        ..gen_.options()
    };
    let runtime = super::runtime()?;
    let agent = gen_.system.template_agent(&r.agent);
    // On a terminal the reply is printed as it arrives; otherwise (a pipe, --json) once whole.
    let live = !settings.json && std::io::stdout().is_terminal();
    let mut printer = LivePrinter {
        show_thinking: args.show_thinking,
        paint: Paint::stdout(),
        in_reasoning: false,
        printed: false,
        ends_with_newline: true,
    };
    let result = runtime.block_on(async {
        if !live {
            return agent.generate_from_template(&r.task, &vars, &options).await;
        }
        let mut stream = agent.generate_stream(&r.task, &vars, &options);
        while let Some(item) = stream.next().await {
            match item? {
                StreamItem::Event(event) => printer.event(event),
                StreamItem::Done(generation) => return Ok(generation),
            }
        }
        Err(AgentError::Shared(
            "the generation ended without a result".to_owned(),
        ))
    });
    let flushed = gen_.system.flush();
    let g = result.map_err(|e| gen_.error(e))?;
    if let Err(e) = flushed {
        ui::print_warning(&format!("could not flush the cache or metrics: {e}"));
    }
    if settings.json {
        return ui::print_json(&generation_json(&r, &g, gen_.settings.kind.as_str()));
    }
    if live {
        if !printer.ends_with_newline {
            ui::print_stdout("\n")?;
        }
    } else if !g.content.is_empty() || g.tool_calls.is_empty() {
        let mut text = g.content.clone();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        ui::print_stdout(&text)?;
    }
    // One line per tool call: `tool call <id>: <name> <arguments as JSON>`.
    for call in &g.tool_calls {
        ui::print_stdout(&format!(
            "tool call {}: {} {}\n",
            call.id, call.name, call.arguments
        ))?;
    }
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
                gen_.settings.kind.as_str(),
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
