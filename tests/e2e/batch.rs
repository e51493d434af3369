//! `prompt batch`: results, resume after an interrupted run, Ctrl-C, metrics tables after it.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{FakeOllama, Sandbox, Terminal, result_lines, root};

/// A jobs file of `n` write_scene jobs (distinct variables, so no cache hits between them).
pub(crate) fn scene_jobs(n: usize) -> String {
    let mut text = String::from("# scenes\n");
    for i in 0..n {
        let job = json!({
            "template": "writer/write_scene",
            "vars": {
                "story_title": "The Glass Tower",
                "setting": format!("Room {i} of the archive"),
                "pov_character": "Mira",
                "goal": "Find the ledger",
                "conflict": "The archivist",
            }
        });
        text.push_str(&job.to_string());
        text.push('\n');
    }
    text
}

fn lines_of(results: &[Value]) -> BTreeSet<u64> {
    results
        .iter()
        .map(|r| r["line"].as_u64().unwrap())
        .collect()
}

#[test]
fn batch_writes_one_result_line_per_job() {
    let server = FakeOllama::start();
    let sb = Sandbox::new();
    let mut jobs = scene_jobs(4);
    jobs.push_str("{\"template\": \"writer/nope\", \"vars\": {}}\n");
    sb.write("jobs.jsonl", &jobs);
    let out = sb.run(&[
        "batch",
        "jobs.jsonl",
        "--out",
        "out/results.jsonl",
        "--provider",
        "ollama",
        "--base-url",
        &server.url,
        "--concurrency",
        "3",
        "--json",
    ]);
    assert_eq!(out.code, 1, "one job failed: {}", out.stderr);
    let summary = out.json();
    assert_eq!(summary["jobs"], 5);
    assert_eq!(summary["ok"], 4);
    assert_eq!(summary["failed"], 1);
    assert_eq!(server.chats(), 4);
    let results = result_lines(&sb.read("out/results.jsonl"));
    assert_eq!(results.len(), 5);
    assert_eq!(lines_of(&results), BTreeSet::from([2, 3, 4, 5, 6]));
    for r in &results {
        for key in [
            "line",
            "template",
            "vars",
            "ok",
            "response",
            "model",
            "cache_hit",
            "error",
        ] {
            assert!(r.get(key).is_some(), "result line lacks {key}: {r}");
        }
        if r["ok"] == true {
            assert_eq!(r["error"], Value::Null);
            assert_eq!(r["model"], "qwen3:30b");
            assert_eq!(r["cache_hit"], false);
            assert!(
                r["response"]
                    .as_str()
                    .unwrap()
                    .starts_with("FAKE OLLAMA REPLY")
            );
        } else {
            assert_eq!(r["line"], 6);
            assert!(r["error"].as_str().unwrap().contains("not found"), "{r}");
        }
    }
    // Plain progress lines on stderr when not a terminal.
    assert!(out.stderr.contains("[1/5] line "), "{}", out.stderr);
}

#[test]
fn batch_resumes_after_an_interrupted_run() {
    let server = FakeOllama::start();
    let sb = Sandbox::new();
    sb.write("jobs.jsonl", &scene_jobs(6));
    let args = [
        "batch",
        "jobs.jsonl",
        "--out",
        "results.jsonl",
        "--provider",
        "ollama",
        "--base-url",
        &server.url,
    ];
    sb.run(&args).ok();
    assert_eq!(server.chats(), 6);
    // Keep the first two result lines and half of the third, as a crash would.
    let full = sb.read("results.jsonl");
    let kept: Vec<&str> = full.lines().take(3).collect();
    let cut = format!(
        "{}\n{}\n{}",
        kept[0],
        kept[1],
        &kept[2][..kept[2].len() / 2]
    );
    sb.write("results.jsonl", &cut);
    // The cache would answer the rerun; clear it so the server sees the rerun jobs.
    sb.run(&["cache", "clear"]).ok();

    let out = sb.run(&args);
    out.ok();
    assert!(
        out.stderr.contains("2 of 6 job(s) already have a result"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("unreadable line"), "{}", out.stderr);
    assert_eq!(
        server.chats(),
        6 + 4,
        "only the 4 jobs without a result ran again"
    );
    let text = sb.read("results.jsonl");
    let results: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(results.len(), 6);
    assert_eq!(lines_of(&results), (2..=7).collect());

    // A third run has nothing to do.
    let again = sb.run(&[&args[..], &["--json"]].concat());
    let v = again.json();
    assert_eq!(v["skipped"], 6);
    assert_eq!(v["run"], 0);
    assert_eq!(server.chats(), 10);
}

#[test]
fn ctrl_c_finishes_the_jobs_in_flight_and_loses_none() {
    let server = FakeOllama::start();
    server.set_delay(Duration::from_millis(400));
    let sb = Sandbox::new();
    sb.write("jobs.jsonl", &scene_jobs(10));
    let args = [
        "batch",
        "jobs.jsonl",
        "--out",
        "results.jsonl",
        "--provider",
        "ollama",
        "--base-url",
        &server.url,
        "--concurrency",
        "2",
    ];
    let child = sb
        .cmd(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the first result line, then interrupt.
    let started = Instant::now();
    let results = sb.path().join("results.jsonl");
    loop {
        let n = std::fs::read_to_string(&results)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if n >= 1 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no result line appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("error: interrupted"), "{stderr}");
    assert!(
        stderr.contains("hint: run the same command again to resume"),
        "{stderr}"
    );
    // Every job the server answered has its complete line: none lost.
    let written = result_lines(&sb.read("results.jsonl"));
    assert_eq!(written.len(), server.chats(), "{stderr}");
    assert!(written.len() < 10, "interrupted before the end");

    // Resume: the rest runs, each job exactly once overall.
    server.set_delay(Duration::ZERO);
    sb.run(&args).ok();
    let all = result_lines(&sb.read("results.jsonl"));
    assert_eq!(all.len(), 10);
    assert_eq!(lines_of(&all), (2..=11).collect());
    assert_eq!(server.chats(), 10);
}

#[test]
fn metrics_tables_after_a_batch() {
    let sb = Sandbox::new();
    let jobs = std::fs::read_to_string(root().join("examples/jobs.jsonl")).unwrap();
    sb.write("jobs.jsonl", &jobs);
    let out = sb.run(&[
        "batch",
        "jobs.jsonl",
        "--out",
        "results.jsonl",
        "--provider",
        "echo",
    ]);
    out.ok();
    let n_jobs = jobs.lines().filter(|l| l.starts_with('{')).count() as u64;

    let models = sb.run(&["metrics", "models"]);
    let text = models.ok();
    let mut lines = text.lines().skip(1);
    let header = lines.next().unwrap();
    let cols: Vec<&str> = header.split_whitespace().collect();
    assert_eq!(&cols[..3], ["model", "calls", "success"], "{text}");
    let row = lines.next().unwrap();
    assert!(row.starts_with("qwen3:30b"), "{text}");
    assert_eq!(row.split_whitespace().nth(1).unwrap(), n_jobs.to_string());
    // aligned: every row as wide as the header up to the last column
    let p95 = header.find("p95").unwrap();
    assert_eq!(&row[p95 + 3 - 2..p95 + 3], "ms", "{text}");

    let models = sb.run(&["metrics", "models", "--json"]).json();
    assert_eq!(models[0]["model"], "qwen3:30b");
    assert_eq!(models[0]["total_calls"], n_jobs);

    let task = sb
        .run(&["metrics", "task", "writer", "write_chapter", "--json"])
        .json();
    assert_eq!(task["total_calls"], 3);
    assert_eq!(task["success_rate"], 1.0);

    let versions = sb
        .run(&["metrics", "versions", "writer", "write_scene", "--json"])
        .json();
    assert_eq!(versions[0]["template_version"], 1);
    assert_eq!(versions[0]["total_calls"], 2);

    let table = sb.run(&["metrics", "task", "writer", "write_chapter"]);
    assert!(
        table
            .ok()
            .lines()
            .any(|l| l.starts_with("calls") && l.ends_with(" 3")),
        "{}",
        table.stdout
    );

    let cleanup = sb
        .run(&["metrics", "cleanup", "--keep", "7", "--json"])
        .json();
    assert_eq!(cleanup["removed_files"], 0);
    let after = sb.run(&["metrics", "models", "--json"]).json();
    assert_eq!(
        after[0]["total_calls"], n_jobs,
        "cleanup keeps today's file"
    );
}

/// Waits until `path` has at least `n` lines (a running batch wrote its first results).
fn wait_for_lines(path: &std::path::Path, n: usize) {
    let started = Instant::now();
    loop {
        let have = std::fs::read_to_string(path)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if have >= n {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no result line appeared in {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_second_batch_on_the_same_results_file_refuses() {
    let server = FakeOllama::start();
    server.set_delay(Duration::from_millis(150));
    let sb = Sandbox::new();
    sb.write("jobs.jsonl", &scene_jobs(8));
    let args = [
        "batch",
        "jobs.jsonl",
        "--out",
        "results.jsonl",
        "--provider",
        "ollama",
        "--base-url",
        &server.url,
        "--concurrency",
        "1",
    ];
    let first = sb
        .cmd(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_lines(&sb.path().join("results.jsonl"), 1);

    // Another spelling of the same file, while the first batch runs.
    let second = sb.run(&[
        "batch",
        "jobs.jsonl",
        "--out",
        "./results.jsonl",
        "--provider",
        "ollama",
        "--base-url",
        &server.url,
    ]);
    crate::support::assert_error(&second, 1, "results.jsonl is in use");
    assert!(
        second.stderr.contains(&format!("process {}", first.id())),
        "names the holder: {}",
        second.stderr
    );
    assert!(second.stderr.contains("hint:"), "{}", second.stderr);

    let out = first.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    // Every job exactly once, and only by the first batch.
    let results = result_lines(&sb.read("results.jsonl"));
    assert_eq!(results.len(), 8, "{stderr}");
    assert_eq!(lines_of(&results), (2..=9).collect());
    assert_eq!(server.chats(), 8);
    // The lock is gone with the first batch: a third run resumes with nothing to do.
    assert!(!sb.path().join("results.jsonl.lock").exists());
    let again = sb.run(&[&args[..], &["--json"]].concat()).json();
    assert_eq!(again["skipped"], 8);
}

#[test]
fn a_killed_batch_leaves_no_lock_that_blocks_the_next() {
    let server = FakeOllama::start();
    server.set_delay(Duration::from_millis(300));
    let sb = Sandbox::new();
    sb.write("jobs.jsonl", &scene_jobs(6));
    let args = [
        "batch",
        "jobs.jsonl",
        "--out",
        "out/results.jsonl",
        "--provider",
        "ollama",
        "--base-url",
        &server.url,
        "--concurrency",
        "1",
    ];
    let mut child = sb
        .cmd(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_lines(&sb.path().join("out/results.jsonl"), 1);
    child.kill().unwrap(); // SIGKILL: no destructor runs
    child.wait().unwrap();
    // The sidecar is left behind with the dead process's PID; it must not block.
    let stale = sb.read("out/results.jsonl.lock");
    assert_eq!(stale.trim(), child.id().to_string());

    server.set_delay(Duration::ZERO);
    let out = sb.run(&[&args[..], &["--json"]].concat());
    let summary = out.json();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(summary["jobs"], 6);
    let results = result_lines(&sb.read("out/results.jsonl"));
    assert_eq!(lines_of(&results), (2..=7).collect());
    assert_eq!(results.len(), 6, "each job once");
    assert!(!sb.path().join("out/results.jsonl.lock").exists());
}

/// On a terminal (a pseudo-terminal via `script`) the line under the progress bar shows the
/// characters each job in flight has received so far, while the server still holds back the
/// ends of the replies; the results are the same as elsewhere.
#[test]
fn a_terminal_sees_the_jobs_in_flight_grow_under_the_bar() {
    let server = FakeOllama::start();
    server.hold_stream_ends();
    let sb = Sandbox::new();
    sb.write("jobs.jsonl", &scene_jobs(3));
    let command = format!(
        "{} batch jobs.jsonl --out results.jsonl --provider ollama --base-url {} --templates {} --concurrency 3",
        env!("CARGO_BIN_EXE_prompt"),
        server.url,
        crate::support::templates().display()
    );
    let Some(mut terminal) = Terminal::start(sb.path(), &command, &[("COLUMNS", "120")]) else {
        return;
    };
    // Every piece but the last of each reply has arrived (over 3,000 characters): the line
    // under the bar names each job with a count in thousands, before any job is done.
    let in_thousands = |seen: &str, line: usize| {
        seen.split(&format!("line {line}: ")).skip(1).any(|rest| {
            rest.split(" chars")
                .next()
                .is_some_and(|n| n.ends_with('k'))
        })
    };
    let early = terminal.wait_until("the jobs in flight never showed their characters", |seen| {
        (2..=4).all(|line| in_thousands(seen, line))
    });
    assert!(early.contains("0/3 jobs"), "{early:?}");
    assert!(
        !early.contains("tokens out"),
        "no job is done yet: {early:?}"
    );
    assert_eq!(server.chats(), 3);
    server.release();
    let (ok, all) = terminal.finish();
    assert!(ok, "{all}");
    assert!(all.contains("3 job(s): 3 ok"), "{all}");
    let results = result_lines(&sb.read("results.jsonl"));
    assert_eq!(lines_of(&results), BTreeSet::from([2, 3, 4]));
    for r in &results {
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(r["tokens_completion"], 640, "{r}");
    }
}

/// Batch jobs stream their replies unless streaming is off; with `--no-stream` the server is
/// asked for whole replies and the result lines are the same.
#[test]
fn batch_streams_unless_streaming_is_off() {
    let server = FakeOllama::start();
    let sb = Sandbox::new();
    sb.write("jobs.jsonl", &scene_jobs(2));
    let mut results = Vec::new();
    for (flags, streamed) in [(&[][..], true), (&["--no-stream"][..], false)] {
        let out = format!("results-{streamed}.jsonl");
        let mut args = vec![
            "batch",
            "jobs.jsonl",
            "--out",
            &out,
            "--provider",
            "ollama",
            "--base-url",
            &server.url,
            "--no-cache",
        ];
        args.extend_from_slice(flags);
        let run = sb.run(&args);
        run.ok();
        assert_eq!(server.last_body().unwrap()["stream"], streamed);
        let mut lines = result_lines(&sb.read(&out));
        lines.sort_by_key(|r| r["line"].as_u64());
        for r in &mut lines {
            assert_eq!(r["ok"], true, "{r}");
            r.as_object_mut().unwrap().remove("latency_ms");
        }
        results.push(lines);
    }
    assert_eq!(server.chats(), 4);
    assert_eq!(results[0], results[1], "the same lines, latency aside");
}
