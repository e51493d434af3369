//! Streaming from the command line: the reply appears on a terminal as it arrives.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::support::{FakeOllama, Sandbox, root, templates};

/// `prompt generate` on a pseudo-terminal (via `script`) prints the first pieces of a
/// streamed reply while the server still holds back its end.
#[test]
fn a_terminal_sees_the_reply_in_pieces_before_the_stream_ends() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("SKIPPED: `script` (util-linux) is not installed");
        return;
    }
    let server = FakeOllama::start();
    server.hold_stream_ends();
    let sb = Sandbox::new();
    let exe = env!("CARGO_BIN_EXE_prompt");
    let vars = root().join("examples/chapter1.yaml");
    let command = format!(
        "{exe} generate writer/write_chapter --vars {} --provider ollama --base-url {} --templates {}",
        vars.display(),
        server.url,
        templates().display()
    );
    let mut child = Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .current_dir(sb.path())
        .env("NO_COLOR", "1")
        .env_remove("PROMPT_PROVIDER")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script runs");
    let mut stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut seen = String::new();
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            let _ = tx.send(seen.clone());
        }
        seen
    });
    // The first piece must show while the server holds the end of the stream.
    let mut early = String::new();
    while !early.contains("FAKE OLLAMA REPLY") {
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(seen) => early = seen,
            Err(_) => {
                let _ = child.kill();
                panic!("no piece of the reply on the terminal before the stream ended: {early:?}");
            }
        }
    }
    assert!(
        !early.contains("cache miss"),
        "the status line comes only at the end: {early:?}"
    );
    assert_eq!(server.chats(), 1);
    server.release();
    let status = child.wait().expect("wait");
    let all = reader.join().expect("reader");
    assert!(status.success(), "{all}");
    let pieces = all.matches("The tide went out").count();
    assert_eq!(pieces, 60, "every piece printed once: {all}");
}

/// `--json` gains `reasoning` and `time_to_first_token_ms`; `--no-stream` asks for a whole
/// reply, which has no time to first token.
#[test]
fn json_reports_time_to_first_token_and_no_stream_asks_for_whole_replies() {
    let server = FakeOllama::start();
    let sb = Sandbox::new();
    let vars = root().join("examples/chapter1.yaml");
    let vars = vars.to_str().unwrap();
    let args = [
        "generate",
        "writer/write_chapter",
        "--vars",
        vars,
        "--provider",
        "ollama",
        "--base-url",
        &server.url,
        "--no-cache",
        "--json",
    ];
    let streamed = sb.run(&args).json();
    assert_eq!(server.last_body().unwrap()["stream"], true);
    assert!(
        streamed["time_to_first_token_ms"].as_f64().is_some(),
        "{streamed}"
    );
    assert!(streamed["reasoning"].is_null());
    assert!(
        streamed["response"]
            .as_str()
            .unwrap()
            .starts_with("FAKE OLLAMA REPLY")
    );

    let mut whole_args = args.to_vec();
    whole_args.push("--no-stream");
    let whole = sb.run(&whole_args).json();
    assert_eq!(server.last_body().unwrap()["stream"], false);
    assert!(whole["time_to_first_token_ms"].is_null(), "{whole}");
    assert_eq!(whole["response"], streamed["response"]);
}
