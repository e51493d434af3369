//! What exporting the generation spans costs a call, with the binary's own exporter
//! (`prompt_cli::otel`), on a plain agent over the offline echo provider (no cache, no
//! metrics), on a current-thread runtime:
//!
//! - `otel/no_exporter`: no subscriber at all (spans disabled).
//! - `otel/dead_collector`: spans exported to a loopback port nobody listens on (every export
//!   fails at once).
//! - `otel/stalled_collector`: spans exported to a loopback listener that accepts connections
//!   and never answers (every export waits for its timeout on the exporter's thread; the queue
//!   fills and spans are dropped and counted).
//!
//! The three should agree within noise: the batch processor takes a span in a bounded queue
//! and exports on its own thread, so the collector is never on the caller's path.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_main};
use prompt_agent::{Agent, EchoProvider, GenerateOptions, PromptSystem};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;

fn agent(dir: &std::path::Path) -> Agent {
    let system = PromptSystem::builder()
        .templates_dir(dir)
        .provider(Arc::new(EchoProvider::new()))
        .build()
        .expect("system");
    system.agent("writer", "Writer", "You write.")
}

fn run(c: &mut Criterion, name: &str, agent: &Agent, rt: &tokio::runtime::Runtime) {
    let options = GenerateOptions::default();
    c.bench_function(name, |b| {
        b.iter(|| {
            let reply = rt
                .block_on(agent.generate("Write one line about the sea.", None, &options))
                .expect("reply");
            black_box(reply);
        });
    });
}

fn with_exporter(
    c: &mut Criterion,
    name: &str,
    url: &str,
    agent: &Agent,
    rt: &tokio::runtime::Runtime,
) {
    let (telemetry, tracer) =
        prompt_cli::otel::Telemetry::start(Some(url), "bench").expect("exporter");
    let subscriber = tracing_subscriber::registry().with(
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target("prompt_agent", tracing::Level::INFO),
            ),
    );
    tracing::subscriber::with_default(subscriber, || run(c, name, agent, rt));
    eprintln!(
        "{name}: {} span(s) could not be exported",
        telemetry.dropped_spans()
    );
    telemetry.shutdown();
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = agent(dir.path());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    run(c, "otel/no_exporter", &agent, &rt);

    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = format!("http://{}/v1/traces", closed.local_addr().expect("addr"));
    drop(closed);
    with_exporter(c, "otel/dead_collector", &dead, &agent, &rt);

    // Accepts connections (the kernel's backlog) and never reads or answers.
    let stalled = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/v1/traces", stalled.local_addr().expect("addr"));
    with_exporter(c, "otel/stalled_collector", &url, &agent, &rt);
    drop(stalled);
}

mod harness {
    #![allow(missing_docs)]
    criterion::criterion_group!(benches, super::bench);
}

criterion_main!(harness::benches);
