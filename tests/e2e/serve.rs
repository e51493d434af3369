//! `prompt serve`: the gateway as a process — it answers over loopback, and SIGTERM drains,
//! flushes and exits 0.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::support::Sandbox;

/// A port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 request with `Connection: close`; the raw response.
fn http(port: u16, method: &str, path: &str, body: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = String::new();
    stream.read_to_string(&mut out)?;
    Ok(out)
}

/// Starts `prompt serve` with `args` on a free port and waits until /health answers.
fn start_serve(sb: &Sandbox, args: &[&str]) -> (Child, u16) {
    start_serve_with_env(sb, args, &[])
}

/// [`start_serve`] with these environment variables set for the server.
fn start_serve_with_env(sb: &Sandbox, args: &[&str], env: &[(&str, &str)]) -> (Child, u16) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut all = vec!["serve", "--listen", &listen];
    all.extend_from_slice(args);
    let child = sb
        .cmd(&all)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if http(port, "GET", "/health", "").is_ok_and(|r| r.starts_with("HTTP/1.1 200")) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the server did not come up"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, port)
}

/// SIGTERM, then the exit code and stderr.
fn stop(child: Child) -> (Option<i32>, String) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn serve_answers_caches_and_stops_cleanly_on_sigterm() {
    let sb = Sandbox::new();
    let (child, port) = start_serve(&sb, &["--provider", "echo"]);
    let body = r#"{"model": "m", "messages": [{"role": "user", "content": "Hello there"}]}"#;
    let first = http(port, "POST", "/v1/chat/completions", body).unwrap();
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(first.contains("x-promptkit-cache: miss"), "{first}");
    assert!(first.contains("\"chat.completion\""), "{first}");
    let second = http(port, "POST", "/v1/chat/completions", body).unwrap();
    assert!(second.contains("x-promptkit-cache: hit"), "{second}");
    let bad = http(port, "POST", "/v1/chat/completions", "{oops").unwrap();
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");

    let (code, stderr) = stop(child);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("prompt serve: stopped"), "{stderr}");
    // Both calls left their metrics record (flushed at shutdown).
    let metrics: String = std::fs::read_dir(sb.path().join("output/metrics"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    let records: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 2, "{metrics}");
    assert_eq!(records[0]["agent"], "gateway");
    assert_eq!(records[0]["task"], "chat");
    assert_eq!(records[1]["cache_hit"], true);
}

#[test]
fn serve_refuses_an_unset_client_key_variable_and_a_bad_address() {
    let sb = Sandbox::new();
    let run = sb.run(&[
        "serve",
        "--provider",
        "echo",
        "--client-key-env",
        "PROMPT_TEST_NO_SUCH_KEY",
    ]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("PROMPT_TEST_NO_SUCH_KEY"),
        "{}",
        run.stderr
    );
    let run = sb.run(&["serve", "--provider", "echo", "--listen", "nowhere"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("--listen"), "{}", run.stderr);
}

#[test]
fn two_gateways_share_one_redis_cache() {
    let Some(redis) = crate::redis::start_redis() else {
        eprintln!("redis-server is not installed: skipping the shared-cache gateway test");
        return;
    };
    let (a_sb, b_sb) = (Sandbox::new(), Sandbox::new());
    let args = ["--provider", "echo", "--cache-url", redis.url.as_str()];
    let (a, a_port) = start_serve(&a_sb, &args);
    let (b, b_port) = start_serve(&b_sb, &args);
    let body = r#"{"model": "m", "messages": [{"role": "user", "content": "Shared?"}]}"#;
    let first = http(a_port, "POST", "/v1/chat/completions", body).unwrap();
    assert!(first.contains("x-promptkit-cache: miss"), "{first}");
    let second = http(b_port, "POST", "/v1/chat/completions", body).unwrap();
    assert!(second.contains("x-promptkit-cache: hit"), "{second}");
    for child in [a, b] {
        let (code, stderr) = stop(child);
        assert_eq!(code, Some(0), "{stderr}");
    }
}

/// A real Prometheus server (the Debian package) scrapes `/metrics`: the target is up and the
/// gateway's counters arrive. Skipped, saying so, where `prometheus` is not installed.
#[test]
fn a_real_prometheus_scrapes_the_gateway() {
    let installed = std::process::Command::new("prometheus")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        eprintln!("SKIPPED: `prometheus` (Debian package prometheus) is not installed");
        return;
    }
    let sb = Sandbox::new();
    let (child, port) = start_serve(&sb, &["--provider", "echo"]);
    let body = r#"{"model": "m", "messages": [{"role": "user", "content": "Hello there"}]}"#;
    let answer = http(port, "POST", "/v1/chat/completions", body).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let dir = sb.path().join("prometheus");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: promptkit\n    \
             static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        ),
    )
    .unwrap();
    let prom_port = free_port();
    let mut prometheus = std::process::Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Ask until both series have a sample (a scrape a second), for a minute at most.
    let query = |q: &str| {
        http(prom_port, "GET", &format!("/api/v1/query?query={q}"), "").unwrap_or_default()
    };
    let started = Instant::now();
    let (up, requests) = loop {
        let up = query("up%7Bjob%3D%22promptkit%22%7D");
        let requests = query("promptkit_gateway_requests_total");
        if up.contains(r#""value":["#) && requests.contains(r#""value":["#) {
            break (up, requests);
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = prometheus.kill();
            let out = prometheus.wait_with_output().unwrap();
            panic!(
                "no scrape within 60 s: up={up} requests={requests}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    assert!(up.contains(r#""1"]"#), "the target is up: {up}");
    // The one chat completion, answered 200.
    assert!(
        requests.contains(r#""endpoint":"chat_completions""#)
            && requests.contains(r#""status":"200""#)
            && requests.contains(r#","1"]"#),
        "{requests}"
    );
    let (code, stderr) = stop(child);
    assert_eq!(code, Some(0), "{stderr}");
}

#[path = "../gateway_client/driver.rs"]
mod driver;

/// The official `openai` Python client against `prompt serve` in front of a fake upstream:
/// whole and streamed answers, a hit on the second call, tools, a template request, replay-only
/// misses, the client key and bad input (tests/gateway_client/*.py; each script checks its own
/// answers and the test fails on any failed check). Skipped, saying so, where
/// `PROMPT_TEST_PYTHON` has no `openai` (`.ci/run` sets it up).
#[test]
fn the_official_openai_client_against_prompt_serve() {
    let Some(python) = driver::client_python() else {
        return;
    };
    let upstream = driver::FakeServer::start(&python, &["--role", "upstream"]);
    let provider = ["--provider", "openai", "--base-url", &upstream.url];
    let failed = |summary: &serde_json::Value| summary["ok"] != serde_json::Value::Bool(true);

    // template.py's default template: `demo/greet`, a required `name` in the user message.
    let sb = Sandbox::new();
    let templates = sb.path().join("client-templates");
    std::fs::create_dir_all(templates.join("demo")).unwrap();
    std::fs::write(
        templates.join("demo/greet_v1.yaml"),
        "version: 1\nagent: demo\ntask: greet\nsystem_prompt: You greet people.\n\
         user_prompt_template: Greet {{ name }}.\nvariables:\n  name: \"string - Who\"\n",
    )
    .unwrap();
    let templates = templates.display().to_string();
    let mut args = provider.to_vec();
    args.extend(["--templates", &templates]);
    let (child, port) = start_serve(&sb, &args);
    let base = format!("http://127.0.0.1:{port}/v1");
    for name in [
        "chat_basic.py",
        "chat_stream.py",
        "cache_hit.py",
        "tools.py",
        "template.py",
    ] {
        let summary = driver::run_client_script(&python, &driver::script(name), &base, None);
        assert!(!failed(&summary), "{name}: {summary}");
    }
    let (code, stderr) = stop(child);
    assert_eq!(code, Some(0), "{stderr}");

    // Replay-only, on a fresh cache: every request is a miss answered 404 cache_miss.
    let sb = Sandbox::new();
    let mut args = provider.to_vec();
    args.push("--replay-only");
    let (child, port) = start_serve(&sb, &args);
    let base = format!("http://127.0.0.1:{port}/v1");
    let summary =
        driver::run_client_script(&python, &driver::script("replay_miss.py"), &base, None);
    assert!(!failed(&summary), "replay_miss.py: {summary}");
    let (code, stderr) = stop(child);
    assert_eq!(code, Some(0), "{stderr}");

    // A client key and a small body limit.
    let sb = Sandbox::new();
    let mut args = provider.to_vec();
    args.extend([
        "--client-key-env",
        "GATEWAY_TEST_KEY",
        "--max-body-bytes",
        "4096",
    ]);
    let (child, port) =
        start_serve_with_env(&sb, &args, &[("GATEWAY_TEST_KEY", "sk-gateway-test")]);
    let base = format!("http://127.0.0.1:{port}/v1");
    let key = Some("sk-gateway-test");
    let summary = driver::run_client_script(&python, &driver::script("auth.py"), &base, key);
    assert!(!failed(&summary), "auth.py: {summary}");
    let summary = driver::run_client_script_with(
        &python,
        &driver::script("bad_input.py"),
        &base,
        key,
        &["--max-body-bytes", "4096"],
    );
    assert!(!failed(&summary), "bad_input.py: {summary}");
    let (code, stderr) = stop(child);
    assert_eq!(code, Some(0), "{stderr}");
}
