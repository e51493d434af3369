//! The `prompt` command of promptkit: render, run and measure versioned LLM prompt templates.
//!
//! The binary is a thin `main` over [`main`]; the library exposes the parsed command line
//! ([`cli::Cli`]), the settings resolution ([`config`]) and the HTML report ([`report`]) so
//! they can be tested and reused.
//!
//! ```
//! use clap::Parser;
//! use prompt_cli::cli::{Cli, Command};
//!
//! let cli = Cli::try_parse_from(["prompt", "render", "writer/write_chapter", "--var", "n=1"])?;
//! let Command::Render { template, vars } = cli.command else { unreachable!() };
//! assert_eq!(template, "writer/write_chapter");
//! assert_eq!(vars.var, ["n=1"]);
//! # Ok::<(), clap::Error>(())
//! ```

pub mod cli;

pub mod config;
pub mod error;
pub mod jobs;
mod lock;
pub mod report;
pub mod ui;
pub mod vars;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::Cli;
use crate::error::CliError;

/// Runs `prompt` with the process arguments and returns its exit code.
pub fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned());
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        ui::print_error(
            &CliError::failure(format!("internal error: {message}{location}"))
                .hint("this is a bug in prompt; please report it with the command you ran"),
        );
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_error(&e),
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            ui::print_error(&e);
            e.exit_code()
        }
    }
}

/// Help and version go to stdout with exit 0; every other parse error is one `error:` line,
/// a `hint:` line and exit code 2.
fn clap_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind as K;
    match e.kind() {
        K::DisplayHelp | K::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        K::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::from(2)
        }
        _ => {
            let text = e.render().to_string();
            let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
            let first = lines.next().unwrap_or("invalid arguments");
            let mut message = first.strip_prefix("error: ").unwrap_or(first).to_owned();
            if message.ends_with(':') {
                let more: Vec<&str> = lines
                    .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("tip:"))
                    .collect();
                message = format!("{message} {}", more.join(", "));
            }
            let tip = text
                .lines()
                .map(str::trim)
                .find_map(|l| l.strip_prefix("tip: "))
                .filter(|t| t.contains("similar"))
                .map(str::to_owned);
            let usage = text
                .lines()
                .map(str::trim)
                .find_map(|l| l.strip_prefix("Usage: "))
                .map(|u| format!("usage: {u}; see --help"));
            let hint = tip
                .or(usage)
                .unwrap_or_else(|| "run `prompt --help` for usage".to_owned());
            ui::print_error(&CliError::usage(message).hint(hint));
            ExitCode::from(2)
        }
    }
}

/// Installs the log output on stderr and, when an OTLP endpoint is configured, the span
/// exporter (returned, to be shut down at exit).
fn init_tracing(quiet: u8, verbose: u8) -> Option<otel::Telemetry> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};
    let level = match (quiet, verbose) {
        (q, _) if q > 0 => "error",
        (_, 0) => "warn",
        (_, 1) => "debug",
        _ => "trace",
    };
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(level));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ui::Paint::stderr().on())
        .with_target(false)
        .with_filter(filter);
    let (telemetry, tracer) = match otel::Telemetry::from_env() {
        Ok(Some((telemetry, tracer))) => (Some(telemetry), Some(tracer)),
        Ok(None) => (None, None),
        Err(e) => {
            eprintln!("warning: OpenTelemetry: cannot set up the OTLP exporter: {e}");
            (None, None)
        }
    };
    // The generation spans of prompt-agent (and the gateway's), whatever the log level.
    let spans = tracer.map(|tracer| {
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target("prompt_agent", tracing::Level::INFO)
                    .with_target("prompt_gateway", tracing::Level::INFO),
            )
    });
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(spans)
        .try_init();
    telemetry
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<(), CliError> {
    let telemetry = init_tracing(cli.global.quiet, cli.global.verbose);
    let result = (|| {
        let (config, config_path) = config::load_config(cli.global.config.as_deref())?;
        let settings = config::Settings::resolve(&cli.global, config, config_path);
        tracing::debug!(?settings, "settings");
        commands::dispatch(cli.command, &settings, cli.global.quiet > 0)
    })();
    if let Some(telemetry) = telemetry {
        telemetry.shutdown();
    }
    result
}

mod commands;
pub mod otel;
