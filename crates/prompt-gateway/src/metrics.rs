//! The gateway's own counters and histograms, written in the Prometheus text format
//! (version 0.0.4) for `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use parking_lot::Mutex;

/// Bucket bounds in seconds: from 100 µs (gateway overhead) to 5 minutes (long generations).
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

#[derive(Debug, Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS.len()];
        }
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                self.counts[i] += 1;
            }
        }
        self.sum += seconds;
        self.count += 1;
    }

    fn write(&self, out: &mut String, name: &str) {
        for (i, bound) in BUCKETS.iter().enumerate() {
            let n = self.counts.get(i).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {n}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}", self.sum);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

/// What the gateway counts.
#[derive(Debug, Default)]
pub(crate) struct GatewayMetrics {
    /// Requests by endpoint and status code.
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// Errors by kind (the OpenAI-style `code`).
    errors: Mutex<BTreeMap<String, u64>>,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    tokens_prompt: AtomicU64,
    tokens_completion: AtomicU64,
    in_flight: AtomicI64,
    upstream: Mutex<Histogram>,
    overhead: Mutex<Histogram>,
}

impl GatewayMetrics {
    pub(crate) fn request(&self, endpoint: &'static str, status: u16) {
        *self.requests.lock().entry((endpoint, status)).or_default() += 1;
    }

    pub(crate) fn error(&self, code: &str) {
        *self.errors.lock().entry(code.to_owned()).or_default() += 1;
    }

    pub(crate) fn cache(&self, hit: bool) {
        if hit {
            self.cache_hits.fetch_add(1, Ordering::Relaxed);
        } else {
            self.cache_misses.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn tokens(&self, prompt: Option<u64>, completion: Option<u64>) {
        self.tokens_prompt
            .fetch_add(prompt.unwrap_or(0), Ordering::Relaxed);
        self.tokens_completion
            .fetch_add(completion.unwrap_or(0), Ordering::Relaxed);
    }

    pub(crate) fn upstream_seconds(&self, seconds: f64) {
        self.upstream.lock().observe(seconds);
    }

    pub(crate) fn overhead_seconds(&self, seconds: f64) {
        self.overhead.lock().observe(seconds.max(0.0));
    }

    /// Counts one request in flight until the guard is dropped.
    pub(crate) fn in_flight(self: &std::sync::Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// The Prometheus text exposition.
    pub(crate) fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str("# HELP promptkit_gateway_requests_total Requests answered, by endpoint and HTTP status.\n");
        out.push_str("# TYPE promptkit_gateway_requests_total counter\n");
        for ((endpoint, status), n) in self.requests.lock().iter() {
            let _ = writeln!(
                out,
                "promptkit_gateway_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str("# HELP promptkit_gateway_errors_total Failed requests, by error kind.\n");
        out.push_str("# TYPE promptkit_gateway_errors_total counter\n");
        for (kind, n) in self.errors.lock().iter() {
            let _ = writeln!(
                out,
                "promptkit_gateway_errors_total{{kind=\"{}\"}} {n}",
                escape(kind)
            );
        }
        let counters = [
            (
                "promptkit_gateway_cache_hits_total",
                "Chat completions answered from the cache or an identical call in flight.",
                self.cache_hits.load(Ordering::Relaxed),
            ),
            (
                "promptkit_gateway_cache_misses_total",
                "Chat completions that called the upstream.",
                self.cache_misses.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, n) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {n}"
            );
        }
        out.push_str("# HELP promptkit_gateway_tokens_total Tokens reported by answers, by kind (hits report the original call's).\n");
        out.push_str("# TYPE promptkit_gateway_tokens_total counter\n");
        let _ = writeln!(
            out,
            "promptkit_gateway_tokens_total{{kind=\"prompt\"}} {}",
            self.tokens_prompt.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "promptkit_gateway_tokens_total{{kind=\"completion\"}} {}",
            self.tokens_completion.load(Ordering::Relaxed)
        );
        out.push_str(
            "# HELP promptkit_gateway_in_flight_requests Chat completions being answered now.\n",
        );
        out.push_str("# TYPE promptkit_gateway_in_flight_requests gauge\n");
        let _ = writeln!(
            out,
            "promptkit_gateway_in_flight_requests {}",
            self.in_flight.load(Ordering::Relaxed)
        );
        out.push_str("# HELP promptkit_gateway_upstream_latency_seconds Time of generations that called the upstream (retries included).\n");
        out.push_str("# TYPE promptkit_gateway_upstream_latency_seconds histogram\n");
        self.upstream
            .lock()
            .write(&mut out, "promptkit_gateway_upstream_latency_seconds");
        out.push_str("# HELP promptkit_gateway_overhead_seconds Time a chat completion spent in the gateway outside the generation (the whole request for hits).\n");
        out.push_str("# TYPE promptkit_gateway_overhead_seconds histogram\n");
        self.overhead
            .lock()
            .write(&mut out, "promptkit_gateway_overhead_seconds");
        out
    }
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A request in flight; dropping it counts it out.
#[derive(Debug)]
pub(crate) struct InFlight(std::sync::Arc<GatewayMetrics>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
