//! Every error path: its exit code and its one-line message.

use crate::support::{Sandbox, assert_error, closed_url, root};

#[test]
fn every_error_path_has_its_exit_code_and_one_line() {
    let sb = Sandbox::new();
    sb.write("bad.toml", "provider = \"echo\"\nprovder = \"x\"\n");
    sb.write("list.json", "[1, 2]");
    sb.write("broken.yaml", "chapter_number: [1,\n");
    sb.write(
        "jobs.jsonl",
        "{\"template\": \"writer/write_chapter\", \"vars\": {}}\n{\"template\": 3}\n",
    );
    let vars = root().join("examples/chapter1.yaml").display().to_string();
    let closed = closed_url();
    let cases: &[(&[&str], i32, &str)] = &[
        // usage errors: exit 2
        (&["render"], 2, "required arguments"),
        (&["render", "writer/write_chapter", "--bogus"], 2, "--bogus"),
        (&["frobnicate"], 2, "frobnicate"),
        (&["render", "writer"], 2, "bad template `writer`"),
        (&["render", "writer/write_chapter@v0"], 2, "version"),
        (&["render", "writer/write_chapter@x!"], 2, "version"),
        (
            &["render", "writer/write_chapter", "--var", "chapter_number"],
            2,
            "bad --var `chapter_number`",
        ),
        (
            &["generate", "writer/write_chapter", "--vars", &vars],
            2,
            "no provider given",
        ),
        (
            &[
                "generate",
                "writer/write_chapter",
                "--vars",
                &vars,
                "--provider",
                "gpt",
            ],
            2,
            "unknown provider",
        ),
        (
            &[
                "generate",
                "writer/write_chapter",
                "--vars",
                &vars,
                "--provider",
                "echo",
                "--temperature",
                "9",
            ],
            2,
            "temperature",
        ),
        (
            &["batch", "jobs.jsonl", "--out", "r.jsonl"],
            2,
            "no provider given",
        ),
        (&["metrics", "agent", "writer", "--days", "0"], 2, "0"),
        // failures: exit 1
        (&["render", "writer/nope"], 1, "not found"),
        (&["render", "nobody/write_chapter"], 1, "not found"),
        (&["render", "writer/write_chapter@x"], 1, "has no label `x`"),
        (
            &["render", "writer/write_chapter"],
            1,
            "missing required variable `chapter_number`",
        ),
        (
            &[
                "render",
                "writer/write_chapter",
                "--vars",
                &vars,
                "--var",
                "chapter_number=abc",
            ],
            1,
            "expects integer",
        ),
        (
            &["render", "writer/write_chapter", "--vars", "nope.yaml"],
            1,
            "cannot read vars file nope.yaml",
        ),
        (
            &["render", "writer/write_chapter", "--vars", "list.json"],
            1,
            "expected a mapping",
        ),
        (
            &["render", "writer/write_chapter", "--vars", "broken.yaml"],
            1,
            "bad vars file broken.yaml",
        ),
        (
            &["--config", "bad.toml", "templates", "list"],
            1,
            "bad config file bad.toml:2:1",
        ),
        (
            &["--config", "missing.toml", "templates", "list"],
            1,
            "cannot read config file missing.toml",
        ),
        (
            &["--templates", "no-such-dir", "templates", "list"],
            1,
            "no-such-dir",
        ),
        (
            &[
                "generate",
                "writer/write_chapter",
                "--vars",
                &vars,
                "--provider",
                "ollama",
                "--base-url",
                &closed,
                "--retries",
                "0",
            ],
            1,
            "connection",
        ),
        (
            &[
                "batch",
                "jobs.jsonl",
                "--out",
                "r.jsonl",
                "--provider",
                "echo",
            ],
            1,
            "jobs.jsonl:2:",
        ),
        (
            &[
                "batch",
                "no-jobs.jsonl",
                "--out",
                "r.jsonl",
                "--provider",
                "echo",
            ],
            1,
            "cannot read jobs file",
        ),
    ];
    for (args, code, needle) in cases {
        let out = sb.run(args);
        assert_error(&out, *code, needle);
    }
}

#[test]
fn unreachable_provider_hint_says_how_to_fix() {
    let sb = Sandbox::new();
    let vars = root().join("examples/chapter1.yaml").display().to_string();
    let out = sb.run(&[
        "generate",
        "writer/write_chapter",
        "--vars",
        &vars,
        "--provider",
        "ollama",
        "--base-url",
        &closed_url(),
        "--retries",
        "0",
    ]);
    assert_error(&out, 1, "connection");
    assert!(
        out.stderr.contains("hint: is Ollama running"),
        "{}",
        out.stderr
    );
    // The failed call left a metrics record with its error.
    let stats = sb.run(&["metrics", "agent", "writer", "--json"]).json();
    assert_eq!(stats["total_calls"], 1);
    assert_eq!(stats["successful_calls"], 0);
}

#[test]
fn arbitrary_arguments_never_panic() {
    let sb = Sandbox::new();
    let inputs: &[&[&str]] = &[
        &["render", "a/b@v0"],
        &["render", "../../etc/passwd"],
        &["render", "writer/write_chapter", "--var", "=x"],
        &[
            "render",
            "writer/write_chapter",
            "--var",
            "chapter_number=99999999999999999999999",
        ],
        &["render", "writer/write_chapter", "--examples", "-1"],
        &["templates", "show", "writer/write_chapter@999"],
        &["metrics", "versions", "x", "y", "--days", "99999999999"],
        &["metrics", "cleanup", "--keep", "x"],
        &["batch", "/", "--out", "/", "--provider", "echo"],
        &["--config", "/", "doctor"],
        &["validate", "/nonexistent"],
    ];
    for args in inputs {
        let out = sb.run(args);
        assert!(
            out.code == 1 || out.code == 2,
            "{args:?}: {}\n{}",
            out.code,
            out.stderr
        );
        assert!(!out.stderr.contains("panicked"), "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.lines().any(|l| l.starts_with("error: ")),
            "{args:?}: {}",
            out.stderr
        );
    }
}

#[test]
fn vars_from_stdin_and_out_equal_to_jobs() {
    use std::io::Write;
    let sb = Sandbox::new();
    let mut child = sb
        .cmd(&["render", "writer/write_scene", "--vars", "-", "--json"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            b"story_title: T\nsetting: The ferry\npov_character: Oren\ngoal: g\nconflict: c\n",
        )
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["user"].as_str().unwrap().contains("The ferry"));

    sb.write("jobs.jsonl", "");
    let same = sb.run(&[
        "batch",
        "jobs.jsonl",
        "--out",
        "./jobs.jsonl",
        "--provider",
        "echo",
    ]);
    assert_error(&same, 2, "is the jobs file itself");
}
