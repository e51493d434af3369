//! The provider's circuit breaker in `prompt batch`: a failing server costs a handful of
//! upstream requests, not one (or three) per job, and the batch recovers once it is back.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::batch::scene_jobs;
use crate::support::{FakeOllama, Sandbox, result_lines, wait_within};

/// Jobs in each batch.
const JOBS: usize = 30;
/// Long enough that only a hang reaches it.
const HANG: Duration = Duration::from_secs(120);

/// The breaker settings of the first test, written to its prompt.toml.
const BREAKER_FAILURES: usize = 3;
const COOLDOWN_SECS: f64 = 1.0;
const CONCURRENCY: usize = 2;
const RETRIES: usize = 1;

/// The last result line of each job line (a rerun appends; the last line wins).
fn latest(results: &[Value]) -> BTreeMap<u64, &Value> {
    results
        .iter()
        .map(|r| (r["line"].as_u64().unwrap(), r))
        .collect()
}

#[test]
fn a_failing_server_costs_a_handful_of_requests_and_a_rerun_recovers() {
    let server = FakeOllama::start();
    server.fail_with(500);
    let sb = Sandbox::new();
    sb.write("jobs.jsonl", &scene_jobs(JOBS));
    sb.write(
        "prompt.toml",
        &format!(
            "provider = \"ollama\"\n\
             base_url = \"{}\"\n\
             breaker_failures = {BREAKER_FAILURES}\n\
             breaker_cooldown = {COOLDOWN_SECS}\n\
             concurrency = {CONCURRENCY}\n\
             retries = {RETRIES}\n\
             backoff_base = 0.01\n\
             backoff_max = 0.05\n",
            server.url
        ),
    );
    let args = ["batch", "jobs.jsonl", "--out", "results.jsonl"];

    let started = Instant::now();
    let run = sb.run_within(&args, HANG);
    let elapsed = started.elapsed();

    // Without a breaker every job would make 1 + RETRIES requests (60 here). With it:
    // - while it is closed, requests go up until the BREAKER_FAILURES-th failure is recorded;
    //   each of the CONCURRENCY jobs in flight has at most one attempt out at a time, so up
    //   to CONCURRENCY - 1 more were already admitted and reach the server too;
    // - once open, calls fail at once; one probe goes through per cooldown that has passed
    //   since it opened, and the run lasted `elapsed`, so at most elapsed / cooldown probes.
    let probes = (elapsed.as_secs_f64() / COOLDOWN_SECS).floor() as usize;
    let bound = BREAKER_FAILURES + (CONCURRENCY - 1) + probes;
    let upstream = server.chats();
    eprintln!("upstream chat requests while failing: {upstream} (bound {bound}, run {elapsed:?})");
    assert!(
        upstream >= BREAKER_FAILURES,
        "the breaker opens only after {BREAKER_FAILURES} failures reached the server: {upstream}"
    );
    assert!(
        upstream <= bound,
        "{upstream} upstream requests for {JOBS} jobs, more than the {bound} the breaker allows\n{}",
        run.stderr
    );

    // Every job failed, with an error naming the provider; most with the open circuit.
    assert_eq!(run.code, 1, "the documented failure code\n{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("error: {JOBS} of {JOBS} job(s) failed")),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("--retry-failed"), "{}", run.stderr);
    let results = result_lines(&sb.read("results.jsonl"));
    assert_eq!(results.len(), JOBS, "one line per job");
    let mut circuit_open = 0;
    for r in &results {
        assert_eq!(r["ok"], false, "{r}");
        let error = r["error"].as_str().unwrap();
        assert!(
            error.contains("ollama"),
            "the error names the provider: {r}"
        );
        if error.contains("circuit open") {
            circuit_open += 1;
            assert!(error.contains("next try in"), "{r}");
        } else {
            assert!(error.contains("HTTP 500"), "{r}");
        }
    }
    // A job that did not meet the open circuit made at least one request.
    assert!(
        JOBS - circuit_open <= upstream,
        "{circuit_open} of {JOBS} jobs met the open circuit, {upstream} requests"
    );

    // The server is back: the failed jobs run again, each once, and succeed.
    server.fail_with(0);
    let rerun = sb.run_within(&[&args[..], &["--retry-failed", "--json"]].concat(), HANG);
    assert_eq!(rerun.code, 0, "{}", rerun.stderr);
    let summary = rerun.json();
    assert_eq!(summary["ok"], JOBS);
    assert_eq!(summary["failed"], 0);
    assert_eq!(server.chats(), upstream + JOBS, "one request per job");
    let results = result_lines(&sb.read("results.jsonl"));
    let last = latest(&results);
    assert_eq!(last.len(), JOBS);
    for r in last.values() {
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(r["retry_count"], 0, "{r}");
    }
}

/// The cooldown in one run: the breaker opens on the first failure; the job's retry comes
/// after the cooldown, so it is the probe; the server is back by then, so the probe
/// succeeds, the circuit closes and every later job goes through.
#[test]
fn the_probe_after_the_cooldown_closes_the_circuit_within_one_batch() {
    let server = FakeOllama::start();
    server.fail_with(500);
    let sb = Sandbox::new();
    sb.write("jobs.jsonl", &scene_jobs(JOBS));
    // The retry waits between half and all of backoff_base (jitter): 2 to 4 s, well after
    // the 0.2 s cooldown, and time enough for the test to bring the server back.
    sb.write(
        "prompt.toml",
        &format!(
            "provider = \"ollama\"\n\
             base_url = \"{}\"\n\
             breaker_failures = 1\n\
             breaker_cooldown = 0.2\n\
             concurrency = 1\n\
             retries = 1\n\
             backoff_base = 4\n\
             backoff_max = 4\n",
            server.url
        ),
    );
    let child = sb.spawn(&["batch", "jobs.jsonl", "--out", "results.jsonl", "--json"]);
    let started = Instant::now();
    while server.chats() == 0 {
        assert!(started.elapsed() < HANG, "no request reached the server");
        std::thread::sleep(Duration::from_millis(5));
    }
    server.fail_with(0);
    let run = wait_within(child, HANG);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let summary = run.json();
    assert_eq!(summary["ok"], JOBS, "{}", run.stderr);
    // The failed first attempt, the probe, and one request for each later job.
    assert_eq!(server.chats(), 1 + JOBS);
    let results = result_lines(&sb.read("results.jsonl"));
    assert_eq!(results.len(), JOBS);
    let first = results.iter().find(|r| r["line"] == 2).unwrap();
    assert_eq!(first["ok"], true, "{first}");
    assert_eq!(first["retry_count"], 1, "the probe was its retry: {first}");
    assert!(
        results
            .iter()
            .filter(|r| r["line"] != 2)
            .all(|r| r["ok"] == true && r["retry_count"] == 0),
        "every later job went straight through"
    );
}
