//! One module per command group.

mod batch;
mod cache;
mod doctor;
mod eval;
mod generate;
mod metrics;
mod provider;
mod serve;
mod templates;

use crate::cli::Command;
use crate::config::Settings;
use crate::error::{CliError, CliResult};

/// The async runtime of the commands that talk to a provider.
pub(crate) fn runtime() -> CliResult<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failure(format!("cannot start the async runtime: {e}")))
}

/// Runs one command.
pub(crate) fn dispatch(command: Command, settings: &Settings, quiet: bool) -> CliResult<()> {
    match command {
        Command::Templates(cmd) => templates::templates(cmd, settings),
        Command::Render { template, vars } => templates::render(&template, &vars, settings),
        Command::Validate { dir } => templates::validate(dir.as_deref(), settings),
        Command::Cache(cmd) => cache::cache(&cmd, settings),
        Command::Metrics(cmd) => metrics::metrics(cmd, settings),
        Command::Doctor { provider } => doctor::doctor(&provider, settings),
        Command::Generate {
            template,
            vars,
            provider,
            show_thinking,
            paced_replay,
        } => generate::generate(
            &generate::GenerateArgs {
                template: &template,
                vars: &vars,
                provider: &provider,
                show_thinking,
                paced_replay,
            },
            settings,
            quiet,
        ),
        Command::Eval {
            file,
            eval,
            html,
            compare,
            provider,
        } => eval::eval(
            &eval::EvalCommand {
                file: &file,
                eval: &eval,
                html: html.as_deref(),
                compare: compare.as_deref(),
                provider: &provider,
            },
            settings,
        ),
        Command::Label(cmd) => eval::label(cmd, settings),
        Command::Promote {
            template,
            label,
            candidate,
            eval,
            force,
            eval_args,
            provider,
        } => eval::promote(
            &eval::PromoteCommand {
                template: &template,
                label: &label,
                version: &candidate,
                eval: &eval,
                force,
                eval_args: &eval_args,
                provider: &provider,
            },
            settings,
        ),
        Command::Serve { serve, provider } => serve::serve(&serve, &provider, settings, quiet),
        Command::Batch {
            jobs,
            out,
            concurrency,
            retry_failed,
            provider,
        } => batch::batch(
            &batch::BatchArgs {
                jobs: &jobs,
                out: &out,
                concurrency,
                retry_failed,
                provider: &provider,
            },
            settings,
            quiet,
        ),
    }
}
