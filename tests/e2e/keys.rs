//! The API key rule: `OPENAI_API_KEY` goes to OpenAI's own API only; any other server gets a
//! key only from a variable named with `--api-key-env`, `PROMPT_API_KEY_ENV` or `api_key_env`.

use crate::support::{FakeOllama, Sandbox, assert_error};

const KEY: &str = "sk-test-openai-key-that-must-stay-home";

fn generate_args(base_url: &str) -> Vec<String> {
    [
        "generate",
        "writer/write_chapter",
        "--vars",
        crate::support::root()
            .join("examples/chapter1.yaml")
            .to_str()
            .unwrap(),
        "--provider",
        "openai",
        "--base-url",
        &format!("{base_url}/v1"),
        "--model",
        "local-model",
        "--no-cache",
        "--json",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

#[test]
fn openai_api_key_never_reaches_a_custom_base_url() {
    let server = FakeOllama::start();
    let sb = Sandbox::new();
    let args = generate_args(&server.url);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = sb.run_env(&args, &[("OPENAI_API_KEY", KEY)]);
    out.ok();
    assert_eq!(server.chats(), 1);
    assert_eq!(
        server.last_authorization(),
        None,
        "no Authorization header for a server other than api.openai.com"
    );
}

#[test]
fn a_named_key_variable_is_sent_to_any_base_url() {
    let server = FakeOllama::start();
    let sb = Sandbox::new();
    let base = generate_args(&server.url);

    // --api-key-env NAME
    let mut args: Vec<&str> = base.iter().map(String::as_str).collect();
    args.extend(["--api-key-env", "LOCAL_LLM_KEY"]);
    sb.run_env(
        &args,
        &[("OPENAI_API_KEY", KEY), ("LOCAL_LLM_KEY", "local-secret-1")],
    )
    .ok();
    assert_eq!(
        server.last_authorization().as_deref(),
        Some("Bearer local-secret-1")
    );

    // PROMPT_API_KEY_ENV
    let args: Vec<&str> = base.iter().map(String::as_str).collect();
    sb.run_env(
        &args,
        &[
            ("PROMPT_API_KEY_ENV", "LOCAL_LLM_KEY"),
            ("LOCAL_LLM_KEY", "local-secret-2"),
        ],
    )
    .ok();
    assert_eq!(
        server.last_authorization().as_deref(),
        Some("Bearer local-secret-2")
    );

    // api_key_env in prompt.toml
    sb.write("prompt.toml", "api_key_env = \"LOCAL_LLM_KEY\"\n");
    sb.run_env(&args, &[("LOCAL_LLM_KEY", "local-secret-3")])
        .ok();
    assert_eq!(
        server.last_authorization().as_deref(),
        Some("Bearer local-secret-3")
    );
    assert_eq!(server.chats(), 3);

    // A named variable that is not set is an error before any request.
    let out = sb.run_env(&args, &[("LOCAL_LLM_KEY", "")]);
    assert_error(&out, 1, "LOCAL_LLM_KEY");
    assert_eq!(server.chats(), 3);
}
