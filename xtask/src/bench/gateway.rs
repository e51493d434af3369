//! The gateway section of `cargo xtask bench`: `prompt serve` and the LiteLLM proxy in front of
//! the same instant fake upstream, under the same open-loop loads.
//!
//! * The fake upstream is an axum server in this process (a runtime of its own, one thread): it
//!   answers every `POST /v1/chat/completions` at once with a fixed reply, whole or streamed,
//!   and counts the calls.
//! * `prompt serve` is built in release (`cargo build --release -p prompt-cli`) and started with
//!   `--provider openai --base-url <fake upstream>/v1`, a fresh cache directory and metrics
//!   directory per run. Where the build has no `serve` command the section says "not available".
//! * The LiteLLM proxy (`litellm[proxy]` in the bench venv) gets a `model_list` pointing at the
//!   same upstream and its in-memory cache (`cache_params: {type: local}`). Where pip could not
//!   install it, its rows say why.
//! * "upstream direct" sends the same load straight to the fake upstream: the floor both
//!   gateways add their overhead to.
//!
//! Workloads: `hit` (the same request every time, after one warm-up call) and `miss` (a request
//! of its own each time). Offered loads: 100, 500, 1,000, 2,000 QPS, each for a fixed time.
//! The load generator runs on the same machine (2 cores) as the gateways and the upstream.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::loadgen::{self, Bodies, LoadResult, LoadSpec};

/// The offered loads, requests per second.
pub(crate) const RATES: [f64; 4] = [100.0, 500.0, 1000.0, 2000.0];

/// The model name every request asks for.
const MODEL: &str = "fake-model";

/// The fixed reply of the fake upstream.
const REPLY: &str = "A fixed answer from the fake upstream, long enough to look like one.";

/// What the gateway section needs from the rest of the bench.
#[derive(Debug, Clone)]
pub(crate) struct GatewaySettings {
    /// Workspace root (to build `prompt`).
    pub(crate) root: PathBuf,
    /// `target/` (the `prompt` binary, work dirs).
    pub(crate) target_dir: PathBuf,
    /// Where the servers' logs go.
    pub(crate) log_dir: PathBuf,
    /// The bench venv's interpreter, if there is one (for LiteLLM).
    pub(crate) venv_python: Option<PathBuf>,
    /// Why LiteLLM cannot be used, if it cannot.
    pub(crate) litellm_missing: Option<String>,
    /// The LiteLLM version installed, if it is.
    pub(crate) litellm_version: Option<String>,
    /// How long each point sends requests.
    pub(crate) seconds: f64,
    /// Which gateways to measure (`promptkit`, `litellm`, `direct`); all when empty.
    pub(crate) only: Vec<String>,
}

/// One gateway under test, or why it is not.
#[derive(Debug)]
enum Target {
    Running {
        name: &'static str,
        base: String,
        /// Kept alive for as long as the target is measured; its process group's CPU time is
        /// read around each point.
        server: Option<Server>,
        counts_cache: bool,
    },
    Unavailable {
        name: &'static str,
        why: String,
    },
}

/// A child server process in a process group of its own; the whole group (a server's worker
/// processes too) is stopped when dropped: SIGTERM, then SIGKILL after 5 s.
#[derive(Debug)]
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let signal = |name: &str| {
            let _ = Command::new("kill")
                .args([name, "--", &group])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        };
        signal("-TERM");
        let clock = Instant::now();
        while clock.elapsed() < Duration::from_secs(5) {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Workers that outlive their parent go too.
        signal("-KILL");
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `cmd` in a new process group, so that [`Server`] can stop all it starts.
fn own_group(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0)
}

/// Runs the section and returns its JSON document (`points`: one per gateway, workload and
/// rate). Prints its table as it goes.
pub(crate) fn run(settings: &GatewaySettings) -> Result<Value> {
    let _ = fs::create_dir_all(&settings.log_dir);
    let work = settings.target_dir.join("bench-work").join("gateway");
    // Leftovers of a run that was stopped. A finished run removes its own files at its end:
    // ext4 skips the inodes of files deleted in the last ~30 s when it makes new ones, so
    // deleting thousands of cache entries just before the miss points made every cache write
    // search the inode tables (62 % of `prompt serve`'s CPU in `perf record`).
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;

    let upstream = FakeUpstream::start()?;
    // The client key both gateways require (LiteLLM refuses to start without one).
    let key = client_key();
    eprintln!("  fake upstream on {}", upstream.base_url());
    let wanted = |name: &str| settings.only.is_empty() || settings.only.iter().any(|o| o == name);

    // Each gateway is started just before its points and stopped after them, so that none
    // idles beside another's measurement.
    let names: Vec<&str> = ["direct", "promptkit", "litellm"]
        .into_iter()
        .filter(|n| wanted(n))
        .collect();
    let start = |which: &str| match which {
        "promptkit" => start_promptkit(settings, &upstream, &work, &key),
        "litellm" => start_litellm(settings, &upstream, &work, &key),
        _ => Target::Running {
            name: "upstream direct",
            base: upstream.base_url(),
            server: None,
            counts_cache: false,
        },
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the load generator's runtime")?;
    let client = loadgen::client();
    let duration = Duration::from_secs_f64(settings.seconds);
    let nonce = chrono::Utc::now().timestamp_micros();
    let mut points = Vec::new();
    println!();
    println!(
        "gateway: open-loop load, {:.0} s per point, non-streaming POST /v1/chat/completions; \
         the load generator, the gateways and the fake upstream share this machine ({} cores)",
        settings.seconds,
        cores()
    );
    println!("{}", header_line());
    for which in names {
        let target = start(which);
        let (name, base, counts_cache, group) = match &target {
            Target::Unavailable { name, why } => {
                println!("{name:<16} n/a: {why}");
                points.push(json!({ "gateway": name, "available": false, "why": why }));
                continue;
            }
            Target::Running {
                name,
                base,
                counts_cache,
                server,
            } => (
                *name,
                base.clone(),
                *counts_cache,
                server.as_ref().map(|s| s.0.id()),
            ),
        };
        // Warm-up: a few distinct calls, one after another, before the first point.
        let warm = workload_bodies("miss", &format!("{nonce}-{name}-warm-up"));
        for i in 0..20 {
            let _ = runtime.block_on(async {
                client
                    .post(format!("{base}/chat/completions"))
                    .header("content-type", "application/json")
                    .header("authorization", format!("Bearer {key}"))
                    .timeout(Duration::from_secs(10))
                    .body(warm.body(i))
                    .send()
                    .await
            });
        }
        for workload in ["hit", "miss"] {
            let mut gave_out: Option<f64> = None;
            for rate in RATES {
                if let Some(at) = gave_out {
                    let why = format!("not attempted: gave out at {at:.0} QPS");
                    println!("{name:<16} {workload:<5} {rate:>7.0} {why}");
                    points.push(json!({ "gateway": name, "workload": workload, "offered_qps": rate, "available": true, "skipped": why }));
                    continue;
                }
                let calls_before = upstream.calls();
                let spec = LoadSpec {
                    url: format!("{base}/chat/completions"),
                    rate,
                    duration,
                    timeout: Duration::from_secs(10),
                    count_header: counts_cache.then_some("x-promptkit-cache"),
                    headers: vec![("authorization".to_owned(), format!("Bearer {key}"))],
                };
                let bodies = workload_bodies(workload, &format!("{nonce}-{name}-{rate}"));
                if let Bodies::Same(body) = &bodies {
                    // The warm-up call leaves the entry the hits are served from.
                    let _ = runtime.block_on(async {
                        client
                            .post(&spec.url)
                            .header("content-type", "application/json")
                            .header("authorization", format!("Bearer {key}"))
                            .timeout(spec.timeout)
                            .body(body.as_ref().clone())
                            .send()
                            .await
                    });
                }
                let cpu_before = group.and_then(group_cpu_seconds);
                let result = loadgen::run(&runtime, &client, &spec, &bodies);
                let cpu_after = group.and_then(group_cpu_seconds);
                // CPU time of the gateway's processes per request answered: what a request
                // costs it, however busy the shared machine was; and the part of it spent in
                // promptkit's cache writer thread (writing entries to disk).
                let per_request = |secs: f64| secs * 1e6 / result.ok.max(1) as f64;
                let (cpu_us, writer_us) = match (cpu_before, cpu_after) {
                    (Some(before), Some(after)) if result.ok > 0 => (
                        Some(per_request(after.total - before.total)),
                        before
                            .writer
                            .zip(after.writer)
                            .map(|(b, a)| per_request(a - b)),
                    ),
                    _ => (None, None),
                };
                let upstream_calls = upstream.calls() - calls_before;
                println!(
                    "{}",
                    point_line(
                        name,
                        workload,
                        rate,
                        &result,
                        upstream_calls,
                        cpu_us,
                        writer_us
                    )
                );
                let mut doc = result.to_json(rate);
                doc["gateway"] = json!(name);
                doc["workload"] = json!(workload);
                doc["available"] = json!(true);
                doc["upstream_calls"] = json!(upstream_calls);
                doc["gateway_cpu_us_per_request"] = json!(cpu_us);
                doc["cache_writer_cpu_us_per_request"] = json!(writer_us);
                doc["sustained"] = json!(sustained(&result, rate));
                points.push(doc);
                if gave_out_at(&result, rate) {
                    gave_out = Some(rate);
                }
                // Let the sockets of this point close before the next.
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
    let _ = fs::remove_dir_all(&work);
    Ok(json!({
        "same_machine": true,
        "note": "the load generator runs on the same machine as the gateways and the fake upstream",
        "seconds_per_point": settings.seconds,
        "rates": RATES,
        "litellm": settings.litellm_version.as_deref().map_or_else(
            || json!({ "available": false, "why": settings.litellm_missing }),
            |v| json!({ "available": true, "version": v, "pin": LITELLM_PIN }),
        ),
        "points": points,
    }))
}

/// The column heads of the table.
fn header_line() -> String {
    format!(
        "{:<16} {:<5} {:>7} {:>9} {:>9} {:>9} {:>9} {:>7} {:>10} {:>9} {:>9}  {}",
        "gateway",
        "load",
        "offered",
        "achieved",
        "p50 ms",
        "p99 ms",
        "max ms",
        "errors",
        "upstream",
        "cpu µs/r",
        "writer",
        "notes"
    )
}

fn point_line(
    name: &str,
    workload: &str,
    rate: f64,
    r: &LoadResult,
    upstream_calls: u64,
    cpu_us: Option<f64>,
    writer_us: Option<f64>,
) -> String {
    let ms =
        |v: Option<u64>| v.map_or_else(|| "—".to_owned(), |ns| format!("{:.2}", ns as f64 / 1e6));
    let mut notes = Vec::new();
    if !r.header_counts.is_empty() {
        notes.push(
            r.header_counts
                .iter()
                .map(|(k, n)| format!("{k}:{n}"))
                .collect::<Vec<_>>()
                .join(" "),
        );
    }
    for (kind, n) in &r.errors {
        notes.push(format!("{kind}×{n}"));
    }
    let lag = loadgen::percentile(&r.send_lag_ns, 99.0).unwrap_or(0);
    if lag > 5_000_000 {
        notes.push(format!(
            "generator late by {:.1} ms at p99",
            lag as f64 / 1e6
        ));
    }
    if !sustained(r, rate) {
        notes.push("NOT SUSTAINED".to_owned());
    }
    format!(
        "{name:<16} {workload:<5} {rate:>7.0} {:>9.0} {:>9} {:>9} {:>9} {:>7} {:>10} {:>9} {:>9}  {}",
        r.achieved_qps(),
        ms(loadgen::percentile(&r.latencies_ns, 50.0)),
        ms(loadgen::percentile(&r.latencies_ns, 99.0)),
        ms(r.latencies_ns.last().copied()),
        r.error_count(),
        upstream_calls,
        cpu_us.map_or_else(|| "—".to_owned(), |us| format!("{us:.0}")),
        writer_us.map_or_else(|| "—".to_owned(), |us| format!("{us:.0}")),
        notes.join("; ")
    )
}

/// CPU time (user and system, in seconds) used so far by a process group.
#[derive(Debug, Clone, Copy)]
struct GroupCpu {
    total: f64,
    /// By threads named as promptkit's cache writer ([`prompt_cache::WRITER_THREAD`]);
    /// `None` when the group has none (another gateway).
    writer: Option<f64>,
}

/// The CPU time used so far by the processes of process group `group`, read from `/proc`;
/// `None` where `/proc` cannot be read.
fn group_cpu_seconds(group: u32) -> Option<GroupCpu> {
    let ticks_per_second = clock_ticks_per_second()?;
    // Linux keeps 15 bytes of a thread's name.
    let writer_name = &prompt_cache::WRITER_THREAD[..prompt_cache::WRITER_THREAD.len().min(15)];
    let (mut ticks, mut writer) = (0u64, None::<u64>);
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((pgrp, used)) = parse_proc_stat(&stat) else {
            continue;
        };
        if pgrp != group {
            continue;
        }
        ticks += used;
        for task in fs::read_dir(entry.path().join("task"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let Ok(stat) = fs::read_to_string(task.path().join("stat")) else {
                continue;
            };
            if let Some((name, used)) = parse_thread_stat(&stat)
                && name == writer_name
            {
                *writer.get_or_insert(0) += used;
            }
        }
    }
    Some(GroupCpu {
        total: ticks as f64 / ticks_per_second,
        writer: writer.map(|t| t as f64 / ticks_per_second),
    })
}

/// A `/proc/<pid>/stat` (or `/proc/<pid>/task/<tid>/stat`) line: the command name and the
/// fields after it, `fields[0]` being field 3 (state).
fn proc_stat_fields(stat: &str) -> Option<(&str, Vec<&str>)> {
    // The command name (field 2) is in parentheses and may hold spaces: count from its end.
    let close = stat.rfind(')')?;
    let name = &stat[stat.find('(')? + 1..close];
    Some((name, stat[close + 1..].split_whitespace().collect()))
}

/// The sum of `fields[range]` as CPU ticks.
fn ticks(fields: &[&str], range: std::ops::Range<usize>) -> Option<u64> {
    fields
        .get(range)?
        .iter()
        .map(|f| f.parse::<u64>().ok())
        .sum::<Option<u64>>()
}

/// The name and the CPU ticks (utime + stime, fields 14 and 15) of a thread's
/// `/proc/<pid>/task/<tid>/stat` line.
fn parse_thread_stat(stat: &str) -> Option<(&str, u64)> {
    let (name, fields) = proc_stat_fields(stat)?;
    Some((name, ticks(&fields, 11..13)?))
}

/// The process group (field 5) and the CPU ticks (utime + stime + cutime + cstime, fields 14
/// to 17) of a `/proc/<pid>/stat` line.
fn parse_proc_stat(stat: &str) -> Option<(u32, u64)> {
    let (_, fields) = proc_stat_fields(stat)?;
    Some((fields.get(2)?.parse().ok()?, ticks(&fields, 11..15)?))
}

fn clock_ticks_per_second() -> Option<f64> {
    static TICKS: std::sync::OnceLock<Option<f64>> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        let out = Command::new("getconf").arg("CLK_TCK").output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    })
}

/// Whether a point kept up: at most 0.1 % errors and at least 95 % of the offered rate.
pub(crate) fn sustained(r: &LoadResult, rate: f64) -> bool {
    r.sent > 0 && r.error_count() * 1000 <= r.sent && r.achieved_qps() >= 0.95 * rate
}

/// Whether a point failed so badly that higher rates are not worth sending: more than half the
/// requests failed, or fewer than half the offered rate came back.
pub(crate) fn gave_out_at(r: &LoadResult, rate: f64) -> bool {
    r.sent == 0 || r.error_count() * 2 > r.sent || r.achieved_qps() < 0.5 * rate
}

/// The request of a workload: the same one every time (`hit`) or one of its own each time
/// (`miss`, numbered after `tag` so that no earlier point's entry can serve it).
pub(crate) fn workload_bodies(workload: &str, tag: &str) -> Bodies {
    let body = |question: &str| {
        serde_json::to_vec(&json!({
            "model": MODEL,
            "messages": [
                { "role": "system", "content": "You answer in one short sentence." },
                { "role": "user", "content": question },
            ],
            "max_tokens": 64,
            "temperature": 0,
        }))
        .unwrap_or_default()
    };
    if workload == "hit" {
        Bodies::Same(Arc::new(body(&format!(
            "What is the capital of France? ({tag})"
        ))))
    } else {
        let tag = tag.to_owned();
        Bodies::Distinct(Arc::new(move |i| {
            body(&format!("Question {i} of run {tag}: what is {i} + {i}?"))
        }))
    }
}

/// The in-process fake upstream.
#[derive(Debug)]
pub(crate) struct FakeUpstream {
    addr: std::net::SocketAddr,
    calls: Arc<AtomicU64>,
    _runtime: tokio::runtime::Runtime,
}

impl FakeUpstream {
    /// Starts it on a free loopback port, on a one-thread runtime of its own.
    pub(crate) fn start() -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("fake-upstream")
            .enable_all()
            .build()
            .context("cannot start the fake upstream's runtime")?;
        let calls = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&calls);
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        let app = axum::Router::new()
            .route(
                "/v1/chat/completions",
                axum::routing::post(move |body: axum::body::Bytes| {
                    let counter = Arc::clone(&counter);
                    async move {
                        counter.fetch_add(1, Ordering::Relaxed);
                        upstream_reply(&body)
                    }
                }),
            )
            .route(
                "/v1/models",
                axum::routing::get(|| async {
                    axum::Json(json!({ "object": "list", "data": [{ "id": MODEL, "object": "model", "created": 0, "owned_by": "bench" }] }))
                }),
            );
        runtime.spawn(async move { axum::serve(listener, app).await });
        Ok(Self {
            addr,
            calls,
            _runtime: runtime,
        })
    }

    /// `http://127.0.0.1:PORT/v1`.
    pub(crate) fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Chat calls answered so far.
    pub(crate) fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}

/// The fake upstream's answer to one chat request: whole, or as SSE when `stream` is set.
fn upstream_reply(body: &[u8]) -> axum::response::Response {
    use axum::response::IntoResponse;
    let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let model = request["model"].as_str().unwrap_or(MODEL).to_owned();
    let usage = json!({ "prompt_tokens": 20, "completion_tokens": 14, "total_tokens": 34 });
    let created = 1_700_000_000;
    if request["stream"].as_bool() == Some(true) {
        let chunk = |delta: Value, finish: Value| {
            json!({ "id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }] })
        };
        let mut frames = vec![chunk(
            json!({ "role": "assistant", "content": "" }),
            Value::Null,
        )];
        for (i, word) in REPLY.split(' ').enumerate() {
            let piece = if i == 0 {
                word.to_owned()
            } else {
                format!(" {word}")
            };
            frames.push(chunk(json!({ "content": piece }), Value::Null));
        }
        frames.push(chunk(json!({}), json!("stop")));
        if request["stream_options"]["include_usage"].as_bool() == Some(true) {
            frames.push(json!({ "id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": created,
                                "model": model, "choices": [], "usage": usage }));
        }
        let mut text = String::new();
        for frame in frames {
            text.push_str("data: ");
            text.push_str(&frame.to_string());
            text.push_str("\n\n");
        }
        text.push_str("data: [DONE]\n\n");
        return ([("content-type", "text/event-stream")], text).into_response();
    }
    axum::Json(json!({
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{ "index": 0, "message": { "role": "assistant", "content": REPLY }, "finish_reason": "stop" }],
        "usage": usage,
    }))
    .into_response()
}

/// The LiteLLM release the bench installs: the newest whose `proxy` extra resolves from the
/// package index this project can reach (1.108 and later need `litellm-proxy-extras` releases
/// it does not have).
pub(crate) const LITELLM_PIN: &str = "litellm[proxy]==1.106.12";

/// Installs `LITELLM_PIN` into the bench venv when it is not there; its version, or why not.
pub(crate) fn ensure_litellm(python: Option<&Path>, log_dir: &Path) -> Result<String, String> {
    let python = python.ok_or("no bench venv (python3 -m venv failed)")?;
    let wanted = LITELLM_PIN.rsplit("==").next().unwrap_or_default();
    let version = || {
        Command::new(python)
            .args([
                "-c",
                "import importlib.metadata as m; print(m.version('litellm'), m.version('fastapi'))",
            ])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .next()
                    .map(str::to_owned)
            })
            .filter(|_| python.with_file_name("litellm").is_file())
    };
    if let Some(v) = version().filter(|v| v == wanted) {
        return Ok(v);
    }
    let _ = fs::create_dir_all(log_dir);
    let log = log_dir.join("pip-litellm.log");
    eprintln!("  pip install {LITELLM_PIN} (log: {}) …", log.display());
    if !super::peers::pip_install(python, &[LITELLM_PIN], &log) {
        return Err(format!(
            "pip could not install {LITELLM_PIN} (see {})",
            log.display()
        ));
    }
    version().ok_or_else(|| {
        format!(
            "{LITELLM_PIN} installed but `litellm` is missing (see {})",
            log.display()
        )
    })
}

/// The machine's cores.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// A fresh random client key: `sk-bench-` and 64 hex digits.
fn client_key() -> String {
    use std::hash::BuildHasher;
    let state = std::collections::hash_map::RandomState::new();
    let words: Vec<String> = (0..4u64)
        .map(|i| {
            format!(
                "{:016x}",
                state.hash_one((i, std::process::id(), Instant::now()))
            )
        })
        .collect();
    format!("sk-bench-{}", words.concat())
}

/// A free loopback port (bound, read, released).
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Builds `prompt` in release and starts `prompt serve`, or says why it cannot.
fn start_promptkit(
    settings: &GatewaySettings,
    upstream: &FakeUpstream,
    work: &Path,
    key: &str,
) -> Target {
    let name = "promptkit";
    let unavailable = |why: String| Target::Unavailable { name, why };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    eprintln!("  cargo build --release -p prompt-cli …");
    let log = settings.log_dir.join("gateway-build.log");
    let build = Command::new(&cargo)
        .args(["build", "--release", "-p", "prompt-cli", "--bin", "prompt"])
        .current_dir(&settings.root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file(&log))
        .status();
    match build {
        Ok(s) if s.success() => {}
        Ok(s) => {
            return unavailable(format!(
                "cargo build --release -p prompt-cli failed ({s}; see {})",
                log.display()
            ));
        }
        Err(e) => return unavailable(format!("cannot run cargo: {e}")),
    }
    let prompt = settings.target_dir.join("release").join("prompt");
    match serve_available(&prompt) {
        Ok(()) => {}
        Err(why) => return unavailable(why),
    }
    let port = match free_port() {
        Ok(p) => p,
        Err(e) => return unavailable(format!("no free port: {e}")),
    };
    let dir = work.join("promptkit");
    let _ = fs::create_dir_all(&dir);
    let listen = format!("127.0.0.1:{port}");
    let log = settings.log_dir.join("gateway-promptkit.log");
    let child = own_group(&mut Command::new(&prompt))
        .arg("serve")
        .args(["--listen", &listen])
        .args(["--provider", "openai", "--base-url", &upstream.base_url()])
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .arg("--metrics-dir")
        .arg(dir.join("metrics"))
        .args(["--templates"])
        .arg(settings.root.join("templates"))
        .args(["--client-key-env", "PROMPT_BENCH_CLIENT_KEY"])
        .env("PROMPT_BENCH_CLIENT_KEY", key)
        .arg("--quiet")
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(log_file(&log))
        .stderr(log_file(&log))
        .spawn();
    let server = match child {
        Ok(c) => Server(c),
        Err(e) => return unavailable(format!("cannot start {}: {e}", prompt.display())),
    };
    let started = Started {
        name,
        what: "prompt serve",
        base: format!("http://{listen}/v1"),
        health: format!("http://{listen}/health"),
        within: Duration::from_secs(30),
        counts_cache: true,
        log: &log,
    };
    started.ready(server)
}

/// A gateway process just started, and how to tell it is ready.
struct Started<'a> {
    name: &'static str,
    /// What to call it in errors.
    what: &'static str,
    base: String,
    health: String,
    within: Duration,
    counts_cache: bool,
    log: &'a Path,
}

impl Started<'_> {
    /// Waits for its health URL: a running target, or why it is not available.
    fn ready(self, mut server: Server) -> Target {
        match wait_ready(&self.health, self.within, Some(&mut server.0)) {
            Ok(()) => Target::Running {
                name: self.name,
                base: self.base,
                server: Some(server),
                counts_cache: self.counts_cache,
            },
            Err(why) => Target::Unavailable {
                name: self.name,
                why: format!(
                    "{} did not become ready: {why} (log: {})",
                    self.what,
                    self.log.display()
                ),
            },
        }
    }
}

/// Whether `prompt` has a `serve` command.
fn serve_available(prompt: &Path) -> Result<(), String> {
    let out = Command::new(prompt)
        .args(["serve", "--help"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", prompt.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err("not available: this build of `prompt` has no `serve` command".to_owned())
    }
}

/// The LiteLLM proxy's config: one model routed to the fake upstream, the in-memory cache on.
pub(crate) fn litellm_config(upstream_base: &str) -> String {
    format!(
        "model_list:
  - model_name: {MODEL}
    litellm_params:
      model: openai/{MODEL}
      api_base: {upstream_base}
      api_key: sk-upstream
litellm_settings:
  cache: true
  cache_params:
    type: local
  telemetry: false
  drop_params: true
general_settings:
  disable_spend_logs: true
"
    )
}

/// Starts the LiteLLM proxy from the bench venv, or says why it cannot.
fn start_litellm(
    settings: &GatewaySettings,
    upstream: &FakeUpstream,
    work: &Path,
    key: &str,
) -> Target {
    let name = "LiteLLM proxy";
    let unavailable = |why: String| Target::Unavailable { name, why };
    if let Some(why) = &settings.litellm_missing {
        return unavailable(why.clone());
    }
    let Some(python) = &settings.venv_python else {
        return unavailable("no bench venv".to_owned());
    };
    let litellm = python.with_file_name("litellm");
    if !litellm.is_file() {
        return unavailable(format!("{} missing", litellm.display()));
    }
    let dir = work.join("litellm");
    let _ = fs::create_dir_all(&dir);
    let config = dir.join("config.yaml");
    if let Err(e) = fs::write(&config, litellm_config(&upstream.base_url())) {
        return unavailable(format!("cannot write {}: {e}", config.display()));
    }
    let port = match free_port() {
        Ok(p) => p,
        Err(e) => return unavailable(format!("no free port: {e}")),
    };
    let log = settings.log_dir.join("gateway-litellm.log");
    let child = own_group(&mut Command::new(&litellm))
        .arg("--config")
        .arg(&config)
        // One worker per core, as `prompt serve` uses every core (each worker keeps its own
        // in-memory cache).
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--num_workers",
            &cores().to_string(),
        ])
        .current_dir(&dir)
        .env("LITELLM_MASTER_KEY", key)
        .env("LITELLM_TELEMETRY", "False")
        // The model cost map from the package, not fetched at start.
        .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        .env("LITELLM_LOG", "ERROR")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env_remove("DATABASE_URL")
        .stdin(Stdio::null())
        .stdout(log_file(&log))
        .stderr(log_file(&log))
        .spawn();
    let server = match child {
        Ok(c) => Server(c),
        Err(e) => return unavailable(format!("cannot start {}: {e}", litellm.display())),
    };
    let started = Started {
        name,
        what: "the LiteLLM proxy",
        base: format!("http://127.0.0.1:{port}/v1"),
        health: format!("http://127.0.0.1:{port}/health/liveliness"),
        within: Duration::from_secs(120),
        counts_cache: false,
        log: &log,
    };
    started.ready(server)
}

fn log_file(path: &Path) -> Stdio {
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_or_else(|_| Stdio::null(), Stdio::from)
}

/// Polls `url` with GET until it answers 200, for at most `limit`, or until `child` exits.
fn wait_ready(url: &str, limit: Duration, mut child: Option<&mut Child>) -> Result<()> {
    let clock = Instant::now();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = loadgen::client();
    let mut last = String::from("no answer");
    while clock.elapsed() < limit {
        if let Some(status) = child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            bail!("it exited ({status}) before {url} answered");
        }
        let answer = runtime
            .block_on(async { client.get(url).timeout(Duration::from_secs(2)).send().await });
        match answer {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => last = format!("status {}", r.status()),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    bail!("{url}: {last} after {} s", limit.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(sent: u64, ok: u64, errors: u64, secs: f64) -> LoadResult {
        LoadResult {
            sent,
            ok,
            errors: if errors > 0 {
                vec![("timeout".to_owned(), errors)]
            } else {
                Vec::new()
            },
            latencies_ns: vec![1; ok as usize],
            send_lag_ns: Vec::new(),
            elapsed: Duration::from_secs_f64(secs),
            header_counts: Vec::new(),
        }
    }

    #[test]
    fn proc_stat_lines_give_the_group_and_the_cpu_ticks() {
        let line = "4242 (prompt (serve)) S 1 4242 4242 0 -1 4194304 100 0 0 0 \
                    250 31 7 2 20 0 9 0 1000 0 0";
        assert_eq!(parse_proc_stat(line), Some((4242, 250 + 31 + 7 + 2)));
        assert_eq!(parse_proc_stat("garbage"), None);
        // This process's own line parses, with its own group.
        let own = fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
        assert!(parse_proc_stat(&own).is_some(), "{own}");
    }

    #[test]
    fn thread_stat_lines_give_the_name_and_the_cpu_ticks() {
        let line = "4243 (prompt-cache-wr) S 1 4242 4242 0 -1 4194304 100 0 0 0 \
                    250 31 7 2 20 0 9 0 1000 0 0";
        assert_eq!(parse_thread_stat(line), Some(("prompt-cache-wr", 250 + 31)));
        assert_eq!(parse_thread_stat("garbage"), None);
        // The writer's name as Linux keeps it is the bench's.
        assert!(prompt_cache::WRITER_THREAD.starts_with("prompt-cache-wr"));
    }

    #[test]
    fn sustained_and_gave_out_thresholds() {
        assert!(sustained(&result(1000, 1000, 0, 10.0), 100.0));
        assert!(sustained(&result(1000, 999, 1, 10.2), 100.0));
        assert!(!sustained(&result(1000, 998, 2, 10.0), 100.0));
        assert!(!sustained(&result(1000, 1000, 0, 12.0), 100.0));
        assert!(!gave_out_at(&result(1000, 900, 100, 12.0), 100.0));
        assert!(gave_out_at(&result(1000, 400, 600, 10.0), 100.0));
        assert!(gave_out_at(&result(1000, 1000, 0, 25.0), 100.0));
        assert!(gave_out_at(&result(0, 0, 0, 0.0), 100.0));
    }

    #[test]
    fn workloads_repeat_or_vary_the_request() {
        let Bodies::Same(hit) = workload_bodies("hit", "t") else {
            panic!("hit must repeat one request");
        };
        let doc: Value = serde_json::from_slice(&hit).unwrap_or_default();
        assert_eq!(doc["model"], MODEL);
        let Bodies::Distinct(miss) = workload_bodies("miss", "t") else {
            panic!("miss must vary the request");
        };
        assert_ne!(miss(1), miss(2));
        let Bodies::Distinct(other_run) = workload_bodies("miss", "u") else {
            panic!("miss must vary the request");
        };
        assert_ne!(miss(1), other_run(1));
    }

    #[test]
    fn litellm_config_points_at_the_upstream_with_the_local_cache() {
        let config = litellm_config("http://127.0.0.1:9/v1");
        let doc: Value = serde_saphyr::from_str(&config).unwrap_or_default();
        assert_eq!(
            doc["model_list"][0]["litellm_params"]["api_base"],
            "http://127.0.0.1:9/v1"
        );
        assert_eq!(doc["model_list"][0]["model_name"], MODEL);
        assert_eq!(doc["litellm_settings"]["cache_params"]["type"], "local");
    }

    /// The fake upstream answers whole and streamed requests in the OpenAI shapes and counts them.
    #[test]
    fn fake_upstream_answers_whole_and_streamed() {
        let upstream = FakeUpstream::start().unwrap_or_else(|e| panic!("{e:#}"));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let client = loadgen::client();
        let url = format!("{}/chat/completions", upstream.base_url());
        let whole: Value = runtime.block_on(async {
            client
                .post(&url)
                .json(&json!({ "model": "m", "messages": [] }))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .json()
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        });
        assert_eq!(whole["choices"][0]["message"]["content"], REPLY);
        assert_eq!(whole["usage"]["total_tokens"], 34);
        let streamed = runtime.block_on(async {
            client
                .post(&url)
                .json(&json!({ "model": "m", "messages": [], "stream": true, "stream_options": { "include_usage": true } }))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .text()
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        });
        assert!(streamed.ends_with("data: [DONE]\n\n"), "{streamed}");
        let text: String = streamed
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| {
                v["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        assert_eq!(text, REPLY);
        assert!(streamed.contains("\"total_tokens\":34"), "{streamed}");
        assert_eq!(upstream.calls(), 2);
    }

    /// Readiness is polled from outside any runtime (as `run` does) and gives up in time.
    #[test]
    fn wait_ready_polls_until_the_server_answers() {
        let upstream = FakeUpstream::start().unwrap_or_else(|e| panic!("{e:#}"));
        let models = format!("{}/models", upstream.base_url());
        wait_ready(&models, Duration::from_secs(5), None).unwrap_or_else(|e| panic!("{e:#}"));
        let port = free_port().unwrap_or_else(|e| panic!("{e:#}"));
        let err = wait_ready(
            &format!("http://127.0.0.1:{port}/health"),
            Duration::from_millis(600),
            None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("/health"), "{err:#}");
        // A server that exits is noticed at once, not after the whole limit.
        let mut child = Command::new("true")
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"));
        let clock = Instant::now();
        let err = wait_ready(
            &format!("http://127.0.0.1:{port}/health"),
            Duration::from_secs(20),
            Some(&mut child),
        )
        .unwrap_err();
        assert!(err.to_string().contains("exited"), "{err:#}");
        assert!(clock.elapsed() < Duration::from_secs(10));
    }

    /// Dropping a server stops its whole process group, children included.
    #[test]
    fn a_dropped_server_takes_its_workers_along() {
        let mut cmd = Command::new("sh");
        own_group(&mut cmd).args(["-c", "sleep 30 & echo $!; wait"]);
        let mut child = cmd
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"));
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line);
        }
        let worker = line.trim().to_owned();
        assert!(!worker.is_empty());
        drop(Server(child));
        // Gone, or a zombie its new parent has not reaped yet. The signal is delivered
        // asynchronously: the worker may still show as running for a moment, so it gets a
        // bounded while to go (a bound, not a timing assertion).
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let state = fs::read_to_string(format!("/proc/{worker}/stat")).unwrap_or_default();
            let running = state
                .rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X'));
            if !running {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "worker {worker} outlived its server by 10 s: {state}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A `prompt` without `serve` (any program that fails `serve --help`) is "not available".
    #[test]
    fn a_build_without_serve_is_not_available() {
        let why = serve_available(Path::new("false")).unwrap_err();
        assert!(why.contains("not available"), "{why}");
        let why = serve_available(Path::new("/nonexistent/prompt")).unwrap_err();
        assert!(why.contains("cannot run"), "{why}");
    }
}
