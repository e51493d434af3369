//! Exporting the generation spans over OTLP/HTTP (protobuf) when the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set.
//!
//! The spans are prompt-agent's (`chat {model}`, GenAI attribute names); this module only
//! installs the exporter. Spans go through a batch processor on its own thread: a call never
//! waits for the collector, and an unreachable or slow collector costs the call nothing. Spans
//! that cannot be exported are counted; the first failure is logged once, the count at exit.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, SdkTracerProvider, SpanData, SpanExporter, Tracer,
};

/// The environment variables that turn the exporter on (the OpenTelemetry standard ones).
pub const ENDPOINT_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// The service name when `OTEL_SERVICE_NAME` is not set.
pub const DEFAULT_SERVICE_NAME: &str = "promptkit";

/// How long one export may take before it counts as failed (unless
/// `OTEL_EXPORTER_OTLP_TIMEOUT` says otherwise); it runs off the callers' path.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(3);

/// The installed exporter: flushed and shut down by [`Telemetry::shutdown`] at exit.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
    counts: Arc<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    dropped: AtomicU64,
    logged: AtomicBool,
}

/// The exporter the batch processor calls, counting the spans of failed exports.
#[derive(Debug)]
struct Counting<E> {
    inner: E,
    counts: Arc<Counts>,
}

impl<E: SpanExporter> SpanExporter for Counting<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len() as u64;
        let result = self.inner.export(batch).await;
        if let Err(e) = &result {
            self.counts.dropped.fetch_add(n, Ordering::Relaxed);
            if !self.counts.logged.swap(true, Ordering::Relaxed) {
                // Once: a dead collector must not flood the log.
                tracing::warn!(
                    "OpenTelemetry: cannot export spans ({e}); calls go on, later failures are counted"
                );
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

/// Whether an OTLP endpoint is configured in the environment.
pub fn configured() -> bool {
    ENDPOINT_VARS
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|s| !s.trim().is_empty()))
}

impl Telemetry {
    /// The exporter and the tracer for the tracing layer, when an endpoint is configured;
    /// `Ok(None)` when none is. The endpoint, headers and timeout come from the standard
    /// `OTEL_EXPORTER_OTLP_*` variables; the service name from `OTEL_SERVICE_NAME`, else
    /// [`DEFAULT_SERVICE_NAME`].
    pub fn from_env() -> Result<Option<(Telemetry, Tracer)>, String> {
        if !configured() {
            return Ok(None);
        }
        let service = std::env::var("OTEL_SERVICE_NAME")
            .ok()
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned());
        Telemetry::start(None, &service).map(Some)
    }

    /// The exporter to `traces_url` (the whole URL, `…/v1/traces`; `None`: from the
    /// `OTEL_EXPORTER_OTLP_*` variables) for `service`, and the tracer for the tracing layer.
    pub fn start(traces_url: Option<&str>, service: &str) -> Result<(Telemetry, Tracer), String> {
        let mut builder = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary);
        if let Some(url) = traces_url {
            builder = builder.with_endpoint(url);
        }
        if std::env::var("OTEL_EXPORTER_OTLP_TIMEOUT").is_err()
            && std::env::var("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT").is_err()
        {
            builder = builder.with_timeout(EXPORT_TIMEOUT);
        }
        let exporter = builder.build().map_err(|e| e.to_string())?;
        let counts = Arc::new(Counts::default());
        let counting = Counting {
            inner: exporter,
            counts: counts.clone(),
        };
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(service.to_owned())
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(BatchSpanProcessor::builder(counting).build())
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("promptkit");
        Ok((Telemetry { provider, counts }, tracer))
    }

    /// Spans that could not be exported so far.
    pub fn dropped_spans(&self) -> u64 {
        self.counts.dropped.load(Ordering::Relaxed)
    }

    /// Exports what is left and stops the exporter; logs how many spans could not be
    /// exported, if any.
    pub fn shutdown(&self) {
        let _ = self.provider.force_flush();
        let _ = self.provider.shutdown();
        let dropped = self.dropped_spans();
        if dropped > 0 {
            tracing::warn!("OpenTelemetry: {dropped} span(s) could not be exported");
        }
    }
}
