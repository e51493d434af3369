//! The providers over real HTTP on 127.0.0.1: exact request bodies and every error mapping.

mod support;

use std::time::Duration;

use prompt_agent::{
    ApiKey, ChatMessage, ChatRequest, OllamaProvider, OpenAiProvider, Provider, ProviderError,
    ResponseFormat,
};
use serde_json::json;
use support::{FakeServer, RawReply, RawServer, Reply, refused_url};

const TIMEOUT: Duration = Duration::from_secs(5);

fn full_request() -> ChatRequest {
    let mut r = ChatRequest::new(
        "qwen3:8b",
        vec![
            ChatMessage::system("You are the Writer."),
            ChatMessage::system("CURRENT STORY CONTEXT:\nA dark forest."),
            ChatMessage::user("Write chapter 1."),
        ],
    );
    r.options.temperature = Some(0.8);
    r.options.max_tokens = Some(4096);
    r.options.context_size = Some(8192);
    r.options.seed = Some(42);
    r.options.stop = Some(vec!["THE END".to_owned()]);
    r.options.min_length = Some(1000); // never sent
    r
}

fn ollama(server_url: &str) -> OllamaProvider {
    OllamaProvider::new(server_url, TIMEOUT).expect("provider")
}

fn openai(server_url: &str, key: ApiKey) -> OpenAiProvider {
    OpenAiProvider::new(server_url, key, TIMEOUT).expect("provider")
}

#[tokio::test]
async fn ollama_sends_exactly_the_native_chat_body() {
    let server = FakeServer::start(Reply::ollama_ok("Once upon a time.")).await;
    let response = ollama(&server.base_url)
        .chat(&full_request())
        .await
        .expect("chat");

    let captured = server.captured();
    assert_eq!(captured.len(), 1);
    assert_eq!(captured[0].method, "POST");
    assert_eq!(captured[0].path, "/api/chat");
    assert_eq!(
        captured[0].body,
        json!({
            "model": "qwen3:8b",
            "messages": [
                { "role": "system", "content": "You are the Writer." },
                { "role": "system", "content": "CURRENT STORY CONTEXT:\nA dark forest." },
                { "role": "user", "content": "Write chapter 1." }
            ],
            "stream": false,
            "options": { "temperature": 0.8, "num_predict": 4096, "num_ctx": 8192, "seed": 42, "stop": ["THE END"] }
        })
    );
    assert_eq!(response.content, "Once upon a time.");
    assert_eq!(response.model, "qwen3:8b");
    assert_eq!(response.tokens_prompt, Some(12));
    assert_eq!(response.tokens_completion, Some(34));
    assert_eq!(response.finish_reason.as_deref(), Some("stop"));
}

#[tokio::test]
async fn ollama_omits_absent_options_and_sends_formats() {
    let server = FakeServer::start(Reply::ollama_ok("{}")).await;
    let provider = ollama(&server.base_url);
    let bare = ChatRequest::new("llama3.2", vec![ChatMessage::user("hi")]);
    provider.chat(&bare).await.expect("chat");
    assert_eq!(
        server.last_body(),
        json!({ "model": "llama3.2", "messages": [{ "role": "user", "content": "hi" }], "stream": false })
    );

    let mut json_mode = bare.clone();
    json_mode.options.format = Some(ResponseFormat::Json);
    json_mode
        .options
        .provider_options
        .insert("top_k".into(), json!(20));
    provider.chat(&json_mode).await.expect("chat");
    assert_eq!(server.last_body()["format"], json!("json"));
    assert_eq!(server.last_body()["options"], json!({ "top_k": 20 }));

    let schema = json!({ "type": "object", "properties": { "name": { "type": "string" } }, "required": ["name"] });
    let mut schema_mode = bare;
    schema_mode.options.format = Some(ResponseFormat::JsonSchema {
        name: "Hero".into(),
        schema: schema.clone(),
    });
    provider.chat(&schema_mode).await.expect("chat");
    assert_eq!(server.last_body()["format"], schema);
}

#[tokio::test]
async fn openai_sends_exactly_the_chat_completions_body_with_bearer_key() {
    let server = FakeServer::start(Reply::openai_ok("{\"name\":\"Ada\"}")).await;
    let schema = json!({ "type": "object", "properties": { "name": { "type": "string" } }, "required": ["name"], "additionalProperties": false });
    let mut request = full_request();
    request.options.model = Some("gpt-test".into());
    request.options.format = Some(ResponseFormat::JsonSchema {
        name: "Hero".into(),
        schema: schema.clone(),
    });
    // A base that already ends in /v1 is accepted.
    let provider = openai(
        &format!("{}/v1/", server.base_url),
        ApiKey::Value("sk-test-123".into()),
    );
    let response = provider.chat(&request).await.expect("chat");

    let captured = server.captured();
    assert_eq!(captured[0].path, "/v1/chat/completions");
    assert_eq!(
        captured[0].header("authorization"),
        Some("Bearer sk-test-123")
    );
    assert_eq!(
        captured[0].body,
        json!({
            "model": "gpt-test",
            "messages": [
                { "role": "system", "content": "You are the Writer." },
                { "role": "system", "content": "CURRENT STORY CONTEXT:\nA dark forest." },
                { "role": "user", "content": "Write chapter 1." }
            ],
            "temperature": 0.8,
            "max_tokens": 4096,
            "seed": 42,
            "stop": ["THE END"],
            "response_format": {
                "type": "json_schema",
                "json_schema": { "name": "Hero", "schema": schema, "strict": true }
            }
        })
    );
    assert_eq!(response.content, "{\"name\":\"Ada\"}");
    assert_eq!(response.model, "gpt-test");
    assert_eq!(response.tokens_prompt, Some(21));
    assert_eq!(response.tokens_completion, Some(43));
    assert_eq!(response.finish_reason.as_deref(), Some("stop"));

    // The key never shows in Debug output.
    let debug = format!("{provider:?}");
    assert!(!debug.contains("sk-test-123"), "{debug}");
    assert!(debug.contains("redacted"), "{debug}");
}

#[tokio::test]
async fn openai_json_mode_and_no_key() {
    let server = FakeServer::start(Reply::openai_ok("{}")).await;
    let mut request = ChatRequest::new("m", vec![ChatMessage::user("hi")]);
    request.options.format = Some(ResponseFormat::Json);
    openai(&server.base_url, ApiKey::None)
        .chat(&request)
        .await
        .expect("chat");
    let captured = server.captured();
    assert_eq!(captured[0].header("authorization"), None);
    assert_eq!(
        captured[0].body,
        json!({ "model": "m", "messages": [{ "role": "user", "content": "hi" }], "response_format": { "type": "json_object" } })
    );
}

#[tokio::test]
async fn missing_api_key_fails_before_any_request() {
    let server = FakeServer::start(Reply::openai_ok("x")).await;
    let provider = openai(
        &server.base_url,
        ApiKey::Env("PROMPTKIT_TEST_KEY_THAT_IS_NEVER_SET".into()),
    );
    let err = provider
        .chat(&ChatRequest::new("m", vec![ChatMessage::user("hi")]))
        .await
        .expect_err("no key");
    assert!(
        matches!(err, ProviderError::MissingApiKey { ref env_var, .. } if env_var == "PROMPTKIT_TEST_KEY_THAT_IS_NEVER_SET")
    );
    assert!(!err.is_retryable());
    assert!(err.is_usage_error());
    assert_eq!(server.requests(), 0);
}

#[derive(Clone, Copy, Debug)]
enum Flavor {
    Ollama,
    OpenAi,
}

/// Each fault the server can send, and how the provider must classify it.
#[tokio::test]
async fn http_faults_are_classified() {
    let date_in_future = (chrono::Utc::now() + chrono::Duration::seconds(30))
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    let cases: Vec<(Flavor, Reply, &str, bool, &str)> = vec![
        (
            Flavor::Ollama,
            Reply::ollama_model_not_found("qwen9"),
            "model_not_found",
            false,
            "try pulling it first",
        ),
        (
            Flavor::Ollama,
            Reply::json(500, json!({"error": "llama runner crashed"})),
            "server_error",
            true,
            "llama runner crashed",
        ),
        (
            Flavor::Ollama,
            Reply::json(400, json!({"error": "invalid options"})),
            "bad_request",
            false,
            "invalid options",
        ),
        (
            Flavor::Ollama,
            Reply::json(429, json!({"error": "busy"})).header("retry-after", "3"),
            "rate_limited",
            true,
            "busy",
        ),
        (
            Flavor::Ollama,
            Reply::raw(200, "this is not json"),
            "invalid_response",
            true,
            "this is not json",
        ),
        (
            Flavor::Ollama,
            Reply::raw(
                200,
                "{\"message\":{\"role\":\"assistant\",\"content\":\"abc",
            ),
            "invalid_response",
            true,
            "abc",
        ),
        (
            Flavor::Ollama,
            Reply::json(200, json!({"done": true})),
            "invalid_response",
            true,
            "no message.content",
        ),
        (
            Flavor::OpenAi,
            Reply::openai_error(401, "invalid_api_key", "Incorrect API key"),
            "auth",
            false,
            "Incorrect API key",
        ),
        (
            Flavor::OpenAi,
            Reply::openai_error(403, "forbidden", "no access"),
            "auth",
            false,
            "no access",
        ),
        (
            Flavor::OpenAi,
            Reply::openai_error(404, "model_not_found", "The model `x` does not exist"),
            "model_not_found",
            false,
            "does not exist",
        ),
        (
            Flavor::OpenAi,
            Reply::openai_error(429, "insufficient_quota", "You exceeded your current quota"),
            "quota_exhausted",
            false,
            "exceeded",
        ),
        (
            Flavor::OpenAi,
            Reply::openai_error(429, "rate_limit_exceeded", "Slow down").header("retry-after", "7"),
            "rate_limited",
            true,
            "Slow down",
        ),
        (
            Flavor::OpenAi,
            Reply::openai_error(429, "rate_limit_exceeded", "Slow down")
                .header("retry-after", &date_in_future),
            "rate_limited",
            true,
            "Slow down",
        ),
        (
            Flavor::OpenAi,
            Reply::openai_error(503, "overloaded", "try later"),
            "server_error",
            true,
            "try later",
        ),
        (
            Flavor::OpenAi,
            Reply::openai_error(400, "invalid_request_error", "bad temperature"),
            "bad_request",
            false,
            "bad temperature",
        ),
        (
            Flavor::OpenAi,
            Reply::raw(200, "{\"choices\": ["),
            "invalid_response",
            true,
            "choices",
        ),
        (
            Flavor::OpenAi,
            Reply::json(200, json!({"choices": []})),
            "invalid_response",
            true,
            "no choices",
        ),
    ];
    for (flavor, reply, kind, retryable, text) in cases {
        let server = FakeServer::start(reply.clone()).await;
        let request = ChatRequest::new("qwen9", vec![ChatMessage::user("hi")]);
        let result = match flavor {
            Flavor::Ollama => ollama(&server.base_url).chat(&request).await,
            Flavor::OpenAi => openai(&server.base_url, ApiKey::None).chat(&request).await,
        };
        let err = result.expect_err("fault must fail");
        assert_eq!(err.kind(), kind, "{flavor:?} {reply:?}: {err}");
        assert_eq!(err.is_retryable(), retryable, "{flavor:?} {reply:?}: {err}");
        assert!(
            err.to_string().contains(text),
            "{flavor:?}: {err:?} should mention {text:?}"
        );
        assert_eq!(server.requests(), 1, "providers never retry on their own");
        if kind == "rate_limited" {
            let after = err.retry_after().expect("retry-after parsed");
            assert!(
                after > Duration::ZERO && after <= Duration::from_secs(30),
                "{after:?}"
            );
        }
    }
}

#[tokio::test]
async fn model_not_found_names_the_model_and_how_to_fix_it() {
    let server = FakeServer::start(Reply::ollama_model_not_found("qwen9")).await;
    let err = ollama(&server.base_url)
        .chat(&ChatRequest::new("qwen9", vec![ChatMessage::user("hi")]))
        .await
        .expect_err("404");
    let text = err.to_string();
    assert!(
        text.contains("\"qwen9\"") && text.contains("ollama pull"),
        "{text}"
    );
    assert!(err.is_usage_error());
}

#[tokio::test]
async fn transport_faults_are_classified() {
    let request = ChatRequest::new("m", vec![ChatMessage::user("hi")]);

    let refused = ollama(&refused_url().await)
        .chat(&request)
        .await
        .expect_err("refused");
    assert_eq!(refused.kind(), "connection", "{refused}");
    assert!(refused.is_retryable());
    // The message names the URL once and the cause, not the HTTP client's wrappers.
    let message = refused.to_string();
    assert!(message.contains("Connection refused"), "{message}");
    assert!(!message.contains("error sending request"), "{message}");

    let dropper = RawServer::start(vec![], RawReply::Drop).await;
    let dropped = ollama(&dropper.base_url)
        .chat(&request)
        .await
        .expect_err("dropped");
    assert_eq!(dropped.kind(), "connection", "{dropped}");
    assert!(dropped.is_retryable());
    assert_eq!(dropper.requests(), 1);

    let truncating = RawServer::start(vec![], RawReply::truncated("{\"message\":")).await;
    let truncated = openai(&truncating.base_url, ApiKey::None)
        .chat(&request)
        .await
        .expect_err("truncated");
    assert!(truncated.is_retryable(), "{truncated}");
    assert!(
        matches!(truncated.kind(), "connection" | "invalid_response"),
        "{truncated}"
    );

    let server = FakeServer::start(Reply::ollama_ok("late").delayed(Duration::from_secs(3))).await;
    let slow = OllamaProvider::new(&server.base_url, Duration::from_millis(200)).expect("provider");
    let timed_out = slow.chat(&request).await.expect_err("timeout");
    assert_eq!(timed_out.kind(), "timeout", "{timed_out}");
    assert!(timed_out.is_retryable());
}

#[tokio::test]
async fn raw_server_can_answer_after_dropping() {
    let body = json!({ "message": { "role": "assistant", "content": "fine" }, "done": true });
    let server = RawServer::start(vec![RawReply::Drop], RawReply::http_json(&body)).await;
    let provider = ollama(&server.base_url);
    let request = ChatRequest::new("m", vec![ChatMessage::user("hi")]);
    assert!(provider.chat(&request).await.is_err());
    let ok = provider
        .chat(&request)
        .await
        .expect("second connection answers");
    assert_eq!(ok.content, "fine");
    assert_eq!(ok.model, "m", "falls back to the requested model");
    assert_eq!(server.requests(), 2);
}

#[tokio::test]
async fn list_models_for_health_checks() {
    let server = FakeServer::start(Reply::json(
        200,
        json!({ "models": [ { "name": "qwen3:8b", "size": 1 }, { "name": "llama3.2:latest" } ] }),
    ))
    .await;
    let provider = ollama(&server.base_url);
    assert_eq!(
        provider.health().await.expect("tags"),
        vec!["qwen3:8b", "llama3.2:latest"]
    );
    assert_eq!(server.captured()[0].path, "/api/tags");
    assert_eq!(server.captured()[0].method, "GET");

    let server = FakeServer::start(Reply::json(
        200,
        json!({ "object": "list", "data": [ { "id": "gpt-test" } ] }),
    ))
    .await;
    let provider = openai(&server.base_url, ApiKey::Value("k".into()));
    assert_eq!(
        provider.list_models().await.expect("models"),
        vec!["gpt-test"]
    );
    assert_eq!(server.captured()[0].path, "/v1/models");

    let down = ollama(&refused_url().await)
        .health()
        .await
        .expect_err("down");
    assert_eq!(down.kind(), "connection");
}

#[test]
fn ollama_base_url_from_config_wins() {
    assert_eq!(
        OllamaProvider::resolve_base_url(Some("10.1.2.3:11434")),
        "http://10.1.2.3:11434"
    );
    assert_eq!(
        OllamaProvider::resolve_base_url(Some("https://gpu.example/")),
        "https://gpu.example"
    );
}

/// Runs in a child process (started by `ollama_host_is_read_from_the_environment`) whose
/// environment the parent set.
#[test]
fn child_reports_resolved_ollama_base_url() {
    if std::env::var_os("PROMPTKIT_EXPECT_BASE").is_none() {
        return; // only meaningful in the child
    }
    let want = std::env::var("PROMPTKIT_EXPECT_BASE").expect("expected value");
    assert_eq!(OllamaProvider::resolve_base_url(None), want);
}

#[test]
fn ollama_host_is_read_from_the_environment() {
    let cases = [
        (Some("127.0.0.1:11500"), "http://127.0.0.1:11500"),
        (Some("http://gpu-box:11434/"), "http://gpu-box:11434"),
        (Some("gpu-box"), "http://gpu-box:11434"),
        (Some(""), "http://localhost:11434"),
        (None, "http://localhost:11434"),
    ];
    for (host, want) in cases {
        let mut cmd = std::process::Command::new(std::env::current_exe().expect("test binary"));
        cmd.args([
            "--exact",
            "child_reports_resolved_ollama_base_url",
            "--test-threads=1",
        ])
        .env("PROMPTKIT_EXPECT_BASE", want);
        match host {
            Some(h) => cmd.env("OLLAMA_HOST", h),
            None => cmd.env_remove("OLLAMA_HOST"),
        };
        let out = cmd.output().expect("run child");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "OLLAMA_HOST={host:?}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("1 passed"),
            "the child ran the check: {stdout}"
        );
    }
}
