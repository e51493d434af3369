//! An open-loop load generator: `POST` requests sent at a fixed offered rate, whatever the
//! server's pace, for a fixed time.
//!
//! Request `i` is due at `start + i / rate`. Its latency is measured from the time it was due,
//! not from the time it was sent, so a server (or a generator) that falls behind shows as
//! latency instead of silently lowering the offered load (no coordinated omission). How late
//! the generator itself sent is recorded apart (`send_lag_p99_ms`): when that grows, the figures
//! describe the machine, not the server. Every request is bounded by a timeout and the run by
//! its duration plus that timeout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::Mutex;

/// One run at one offered rate.
#[derive(Debug, Clone)]
pub(crate) struct LoadSpec {
    /// Full URL of the endpoint, e.g. `http://127.0.0.1:8787/v1/chat/completions`.
    pub(crate) url: String,
    /// Offered load, requests per second.
    pub(crate) rate: f64,
    /// How long requests are sent for.
    pub(crate) duration: Duration,
    /// Limit of one request; a request past it counts as an error (`timeout`).
    pub(crate) timeout: Duration,
    /// A header whose values are counted (e.g. `x-promptkit-cache`), if any.
    pub(crate) count_header: Option<&'static str>,
    /// Extra request headers (e.g. `authorization`).
    pub(crate) headers: Vec<(String, String)>,
}

/// The request bodies of a workload.
#[derive(Clone)]
pub(crate) enum Bodies {
    /// The same body every time: cache hits after the first.
    Same(Arc<Vec<u8>>),
    /// A body of its own for each request: `make(i)`; cache misses.
    Distinct(Arc<dyn Fn(u64) -> Vec<u8> + Send + Sync>),
}

impl std::fmt::Debug for Bodies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Same(body) => write!(f, "Bodies::Same({} bytes)", body.len()),
            Self::Distinct(_) => f.write_str("Bodies::Distinct(..)"),
        }
    }
}

impl Bodies {
    /// The body of request `i`.
    pub(crate) fn body(&self, i: u64) -> Vec<u8> {
        match self {
            Self::Same(body) => body.as_ref().clone(),
            Self::Distinct(make) => make(i),
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LoadResult {
    /// Requests due within the duration (all were sent).
    pub(crate) sent: u64,
    /// 2xx responses read whole.
    pub(crate) ok: u64,
    /// Failed requests by kind: `status 500`, `timeout`, `connect`, `other`.
    pub(crate) errors: Vec<(String, u64)>,
    /// Latency of the 2xx responses from the time each was due, in nanoseconds, sorted.
    pub(crate) latencies_ns: Vec<u64>,
    /// How late each request was sent after its due time, in nanoseconds, sorted.
    pub(crate) send_lag_ns: Vec<u64>,
    /// From the first due time to the last response.
    pub(crate) elapsed: Duration,
    /// Values of the counted header, with their counts.
    pub(crate) header_counts: Vec<(String, u64)>,
}

impl LoadResult {
    /// 2xx responses per second over the whole run.
    pub(crate) fn achieved_qps(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.ok as f64 / secs
        } else {
            0.0
        }
    }

    /// All failed requests.
    pub(crate) fn error_count(&self) -> u64 {
        self.errors.iter().map(|(_, n)| n).sum()
    }

    /// The run as JSON (latencies in milliseconds).
    pub(crate) fn to_json(&self, offered: f64) -> Value {
        let ms = |ns: Option<u64>| ns.map(|v| v as f64 / 1e6);
        json!({
            "offered_qps": offered,
            "achieved_qps": self.achieved_qps(),
            "sent": self.sent,
            "ok": self.ok,
            "errors": self.error_count(),
            "errors_by_kind": self.errors.iter().map(|(k, n)| (k.clone(), json!(n))).collect::<serde_json::Map<_, _>>(),
            "p50_ms": ms(percentile(&self.latencies_ns, 50.0)),
            "p99_ms": ms(percentile(&self.latencies_ns, 99.0)),
            "max_ms": ms(self.latencies_ns.last().copied()),
            "send_lag_p99_ms": ms(percentile(&self.send_lag_ns, 99.0)),
            "elapsed_s": self.elapsed.as_secs_f64(),
            "headers": self.header_counts.iter().map(|(k, n)| (k.clone(), json!(n))).collect::<serde_json::Map<_, _>>(),
        })
    }
}

/// The offsets from the start at which requests are due: `i / rate` for every `i` with
/// `i / rate < duration`. Empty for a rate that is not positive.
pub(crate) fn schedule(rate: f64, duration: Duration) -> impl Iterator<Item = Duration> {
    let count = if rate > 0.0 && rate.is_finite() {
        // The number of i ≥ 0 with i / rate < duration.
        (duration.as_secs_f64() * rate).ceil() as u64
    } else {
        0
    };
    let step = if rate > 0.0 { 1.0 / rate } else { 0.0 };
    (0..count).map(move |i| Duration::from_secs_f64(i as f64 * step))
}

/// The `p`-th percentile (0 < p ≤ 100) of `sorted` by the nearest-rank rule: the smallest value
/// with at least `p`% of the values at or below it. `None` when empty.
pub(crate) fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[derive(Debug, Default)]
struct Tally {
    ok: u64,
    errors: Vec<(String, u64)>,
    latencies_ns: Vec<u64>,
    header_counts: Vec<(String, u64)>,
    last_done: Option<Instant>,
}

fn bump(list: &mut Vec<(String, u64)>, key: &str) {
    match list.iter_mut().find(|(k, _)| k == key) {
        Some((_, n)) => *n += 1,
        None => list.push((key.to_owned(), 1)),
    }
}

/// Runs `spec` with `bodies`: the calling thread keeps the schedule (`std::thread::sleep`,
/// precise to tens of microseconds where tokio's timer rounds to a millisecond) and hands each
/// request to `runtime` when it is due.
pub(crate) fn run(
    runtime: &tokio::runtime::Runtime,
    client: &reqwest::Client,
    spec: &LoadSpec,
    bodies: &Bodies,
) -> LoadResult {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let start = Instant::now() + Duration::from_millis(20);
    let mut send_lag_ns = Vec::new();
    let mut tasks = Vec::new();
    let mut sent = 0;
    for (i, offset) in schedule(spec.rate, spec.duration).enumerate() {
        let due = start + offset;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        send_lag_ns.push(Instant::now().saturating_duration_since(due).as_nanos() as u64);
        sent += 1;
        let mut request = client
            .post(&spec.url)
            .header("content-type", "application/json")
            .timeout(spec.timeout)
            .body(bodies.body(i as u64));
        for (k, v) in &spec.headers {
            request = request.header(k, v);
        }
        let tally = Arc::clone(&tally);
        let count_header = spec.count_header;
        tasks.push(runtime.spawn(async move {
            let outcome = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let header = count_header.map(|h| {
                        response
                            .headers()
                            .get(h)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("(none)")
                            .to_owned()
                    });
                    match response.bytes().await {
                        Ok(_) if status.is_success() => Ok(header),
                        Ok(_) => Err(format!("status {}", status.as_u16())),
                        Err(e) => Err(error_kind(&e).to_owned()),
                    }
                }
                Err(e) => Err(error_kind(&e).to_owned()),
            };
            let done = Instant::now();
            let mut t = tally.lock().await;
            match outcome {
                Ok(header) => {
                    t.ok += 1;
                    t.latencies_ns
                        .push(done.saturating_duration_since(due).as_nanos() as u64);
                    if let Some(value) = header {
                        bump(&mut t.header_counts, &value);
                    }
                }
                Err(kind) => bump(&mut t.errors, &kind),
            }
            t.last_done = Some(t.last_done.map_or(done, |d| d.max(done)));
        }));
    }
    runtime.block_on(async {
        for task in tasks {
            let _ = task.await;
        }
    });
    let mut t = runtime.block_on(async { std::mem::take(&mut *tally.lock().await) });
    t.latencies_ns.sort_unstable();
    send_lag_ns.sort_unstable();
    let elapsed = t
        .last_done
        .map_or(Duration::ZERO, |d| d.saturating_duration_since(start));
    LoadResult {
        sent,
        ok: t.ok,
        errors: t.errors,
        latencies_ns: t.latencies_ns,
        send_lag_ns,
        elapsed,
        header_counts: t.header_counts,
    }
}

fn error_kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else {
        "other"
    }
}

/// A client for the load: no proxy, HTTP/1.1 keep-alive with a pool large enough for the
/// highest rate's requests in flight.
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(4096)
        .pool_idle_timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_spaces_requests_evenly_within_the_duration() {
        let due: Vec<Duration> = schedule(4.0, Duration::from_secs(1)).collect();
        assert_eq!(due, [0, 250, 500, 750].map(Duration::from_millis).to_vec());
        assert_eq!(schedule(100.0, Duration::from_secs(10)).count(), 1000);
        assert_eq!(schedule(2000.0, Duration::from_secs(3)).count(), 6000);
        let last = schedule(1000.0, Duration::from_secs(2))
            .last()
            .unwrap_or_default();
        assert!(last < Duration::from_secs(2), "{last:?}");
        // A rate that does not divide the duration: every request due before its end.
        let due: Vec<Duration> = schedule(3.0, Duration::from_millis(1500)).collect();
        assert_eq!(due.len(), 5);
        assert!(due.iter().all(|d| *d < Duration::from_millis(1500)));
        assert_eq!(schedule(0.0, Duration::from_secs(1)).count(), 0);
        assert_eq!(schedule(-5.0, Duration::from_secs(1)).count(), 0);
        assert_eq!(schedule(f64::NAN, Duration::from_secs(1)).count(), 0);
    }

    #[test]
    fn percentiles_follow_the_nearest_rank_rule() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&values, 50.0), Some(50));
        assert_eq!(percentile(&values, 99.0), Some(99));
        assert_eq!(percentile(&values, 100.0), Some(100));
        assert_eq!(percentile(&values, 0.1), Some(1));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[1, 2], 50.0), Some(1));
        assert_eq!(percentile(&[1, 2], 51.0), Some(2));
        assert_eq!(percentile(&[], 50.0), None);
        // 1,000 values with a slow tail of 10: p99 is the last fast one, max the slowest.
        let mut tail: Vec<u64> = vec![1; 990];
        tail.extend([1000; 10]);
        assert_eq!(percentile(&tail, 99.0), Some(1));
        assert_eq!(percentile(&tail, 99.1), Some(1000));
    }

    #[test]
    fn results_count_rates_and_errors() {
        let result = LoadResult {
            sent: 10,
            ok: 8,
            errors: vec![("timeout".to_owned(), 1), ("status 500".to_owned(), 1)],
            latencies_ns: vec![1_000_000; 8],
            send_lag_ns: vec![0; 10],
            elapsed: Duration::from_secs(2),
            header_counts: vec![("hit".to_owned(), 8)],
        };
        assert_eq!(result.achieved_qps(), 4.0);
        assert_eq!(result.error_count(), 2);
        let json = result.to_json(5.0);
        assert_eq!(json["p99_ms"], 1.0);
        assert_eq!(json["errors_by_kind"]["timeout"], 1);
        assert_eq!(json["headers"]["hit"], 8);
    }

    /// Against a local server: the offered rate is kept, every request is answered, a 500 is
    /// counted as an error and the counted header is tallied.
    #[test]
    fn run_keeps_the_offered_rate_against_a_local_server() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = runtime.block_on(async {
            let app = axum::Router::new().route(
                "/",
                axum::routing::post(|body: String| async move {
                    if body == "fail" {
                        (
                            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                            [("x-c", "no")],
                            "",
                        )
                    } else {
                        (axum::http::StatusCode::OK, [("x-c", "yes")], "ok")
                    }
                }),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
            tokio::spawn(async move { axum::serve(listener, app).await });
            addr
        });
        {
            let spec = LoadSpec {
                url: format!("http://{addr}/"),
                rate: 200.0,
                duration: Duration::from_millis(500),
                timeout: Duration::from_secs(5),
                count_header: Some("x-c"),
                headers: Vec::new(),
            };
            let bodies = Bodies::Distinct(Arc::new(|i| {
                if i == 3 {
                    b"fail".to_vec()
                } else {
                    b"x".to_vec()
                }
            }));
            let result = run(&runtime, &client(), &spec, &bodies);
            assert_eq!(result.sent, 100);
            assert_eq!(result.ok, 99);
            assert_eq!(result.errors, vec![("status 500".to_owned(), 1)]);
            assert_eq!(result.header_counts, vec![("yes".to_owned(), 99)]);
            assert_eq!(result.latencies_ns.len(), 99);
            // Sent over ~0.5 s: the achieved rate is near the offered one.
            let qps = result.achieved_qps();
            assert!((120.0..=260.0).contains(&qps), "{qps}");
            // The schedule itself is kept to well under a millisecond.
            let lag = percentile(&result.send_lag_ns, 50.0).unwrap_or(u64::MAX);
            assert!(lag < 1_000_000, "median send lag {lag} ns");
            assert!(
                result.elapsed >= Duration::from_millis(490),
                "{:?}",
                result.elapsed
            );
        }
    }
}
