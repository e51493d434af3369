//! `prompt serve`: binds the OpenAI-compatible gateway of `prompt-gateway`, configured from
//! the same settings as every command, and shuts it down on SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::time::Duration;

use prompt_gateway::GatewayConfig;

use crate::cli::{ProviderArgs, ServeArgs};
use crate::commands::generate::generator;
use crate::commands::runtime;
use crate::config::Settings;
use crate::error::{CliError, CliResult};

/// How long in-flight requests may take to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Runs the gateway until SIGTERM or Ctrl-C, then lets in-flight requests finish (at most
/// [`SHUTDOWN_GRACE`]), flushes the metrics and the cache and returns.
pub(crate) fn serve(
    args: &ServeArgs,
    provider: &ProviderArgs,
    settings: &Settings,
    quiet: bool,
) -> CliResult<()> {
    let addr: SocketAddr = args.listen.parse().map_err(|e| {
        CliError::usage(format!(
            "--listen {}: not an address like 127.0.0.1:8787 ({e})",
            args.listen
        ))
    })?;
    let client_key = match &args.client_key_env {
        Some(name) => match std::env::var(name) {
            Ok(key) if !key.trim().is_empty() => Some(key.trim().to_owned()),
            _ => {
                return Err(CliError::usage(format!(
                    "--client-key-env {name}: the environment variable is not set or empty"
                )));
            }
        },
        None => None,
    };
    if args.max_body_bytes == 0 {
        return Err(CliError::usage("--max-body-bytes must be at least 1"));
    }
    let request_timeout = match args.request_timeout {
        Some(secs) if !secs.is_finite() || secs <= 0.0 => {
            return Err(CliError::usage(
                "--request-timeout must be a number of seconds above 0",
            ));
        }
        Some(secs) => Some(Duration::from_secs_f64(secs)),
        None => None,
    };
    let mut settings = settings.clone();
    if args.concurrency.is_some() {
        settings.app.concurrency = args.concurrency;
    }
    let generator = generator(&settings, provider)?;
    let system = generator.system.clone();
    if !addr.ip().is_loopback() && client_key.is_none() {
        eprintln!(
            "warning: listening on {addr}, which is not a loopback address, without \
             --client-key-env: anyone who can reach it can use the upstream model"
        );
    }
    let config = GatewayConfig {
        client_key,
        max_body_bytes: args.max_body_bytes,
        request_timeout,
        replay_only: args.replay_only,
        no_cache: generator.settings.no_cache,
        tags: generator.settings.tags.clone(),
    };
    let app = prompt_gateway::router(system.clone(), config);
    let upstream = system.provider().name().to_owned();
    let served = runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| CliError::failure(format!("cannot listen on {addr}: {e}")))?;
        let bound = listener.local_addr().unwrap_or(addr);
        if !quiet {
            eprintln!(
                "prompt serve: OpenAI-compatible API on http://{bound}/v1 ({} upstream{}); \
                 Ctrl-C stops",
                upstream,
                if args.replay_only {
                    ", replay only"
                } else {
                    ""
                }
            );
        }
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = stop.send(true);
        });
        let mut graceful = stopped.clone();
        let server = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = graceful.wait_for(|stop| *stop).await;
        });
        let mut grace = stopped;
        tokio::select! {
            result = server.into_future() => result
                .map_err(|e| CliError::failure(format!("the server on {bound} failed: {e}"))),
            () = async move {
                let _ = grace.wait_for(|stop| *stop).await;
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } => {
                eprintln!(
                    "prompt serve: requests still in flight after {} s were cut off",
                    SHUTDOWN_GRACE.as_secs()
                );
                Ok(())
            }
        }
    });
    let flushed = system
        .flush()
        .map_err(|e| CliError::failure(format!("flushing the cache and metrics: {e}")));
    served?;
    flushed?;
    if !quiet {
        eprintln!("prompt serve: stopped");
    }
    Ok(())
}

/// Waits for Ctrl-C or (on Unix) SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
