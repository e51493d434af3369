//! Streaming from the command line: the reply appears on a terminal as it arrives.

use crate::support::{FakeOllama, Sandbox, Terminal, root, templates};

/// `prompt generate` on a pseudo-terminal (via `script`) prints the first pieces of a
/// streamed reply while the server still holds back its end.
#[test]
fn a_terminal_sees_the_reply_in_pieces_before_the_stream_ends() {
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
    let Some(mut terminal) = Terminal::start(sb.path(), &command, &[]) else {
        return;
    };
    // The first piece must show while the server holds the end of the stream.
    let early = terminal.wait_until(
        "no piece of the reply on the terminal before the stream ended",
        |seen| seen.contains("FAKE OLLAMA REPLY"),
    );
    assert!(
        !early.contains("cache miss"),
        "the status line comes only at the end: {early:?}"
    );
    assert_eq!(server.chats(), 1);
    server.release();
    let (ok, all) = terminal.finish();
    assert!(ok, "{all}");
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
