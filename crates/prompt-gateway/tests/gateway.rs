//! The gateway over real HTTP on 127.0.0.1, in front of a fake OpenAI-compatible upstream.

mod support;

use std::sync::Arc;
use std::time::Duration;

use prompt_agent::GenerateOptions;
use prompt_gateway::GatewayConfig;
use serde_json::{Value, json};
use support::{Harness, REPLY, THOUGHT, chat, sse_data};

/// How long a test waits for something that should happen at once.
const BOUND: Duration = Duration::from_secs(20);

async fn json_of(response: reqwest::Response) -> (u16, Option<String>, Value) {
    let status = response.status().as_u16();
    let cache = response
        .headers()
        .get("x-promptkit-cache")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.json().await.expect("json body");
    (status, cache, body)
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn a_whole_answer_then_a_hit_with_the_original_usage() {
    let h = Harness::start(GatewayConfig::default()).await;
    let (status, cache, body) = json_of(h.post(&chat("Say hi.")).send().await.expect("send")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(cache.as_deref(), Some("miss"));
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["message"]["content"], REPLY);
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["prompt_tokens"], 11);
    assert_eq!(body["usage"]["completion_tokens"], 7);
    assert_eq!(body["usage"]["total_tokens"], 18);
    assert!(
        body["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("chatcmpl-"))
    );

    let (status, cache, again) =
        json_of(h.post(&chat("Say hi.")).send().await.expect("send")).await;
    assert_eq!(status, 200);
    assert_eq!(cache.as_deref(), Some("hit"));
    assert_eq!(again["choices"][0]["message"]["content"], REPLY);
    assert_eq!(
        again["usage"], body["usage"],
        "a hit reports the original usage"
    );
    assert_eq!(h.upstream.calls(), 1);

    let records = h.records();
    assert_eq!(records.len(), 2, "one metrics record per call");
    assert_eq!(records[0].agent, "gateway");
    assert_eq!(records[0].task, "chat");
    assert!(!records[0].cache_hit);
    assert!(records[1].cache_hit);
    assert_eq!(records[0].prompt_hash, records[1].prompt_hash);
    assert_eq!(records[0].prompt_hash.len(), 16);
    assert_eq!(records[0].tokens_prompt, Some(11));
}

#[tokio::test]
async fn streams_chunks_with_usage_and_done_and_replays_a_hit() {
    let h = Harness::start(GatewayConfig::default()).await;
    let mut request = chat("Stream please.");
    request["stream"] = json!(true);
    request["stream_options"] = json!({"include_usage": true});
    let response = h.post(&request).send().await.expect("send");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-promptkit-cache"], "miss");
    assert!(
        response.headers()["content-type"]
            .to_str()
            .is_ok_and(|t| t.starts_with("text/event-stream"))
    );
    let first = sse_data(&response.text().await.expect("body"));
    assert_eq!(first.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = first[..first.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).expect("chunk json"))
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, REPLY);
    let finish: Vec<&Value> = chunks
        .iter()
        .map(|c| &c["choices"][0]["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finish, [&json!("stop")]);
    let usage = chunks.last().expect("usage chunk");
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 7);

    // `stream` is not part of the key: a whole request is served from the streamed entry.
    let (status, cache, whole) =
        json_of(h.post(&chat("Stream please.")).send().await.expect("send")).await;
    assert_eq!((status, cache.as_deref()), (200, Some("hit")));
    assert_eq!(whole["choices"][0]["message"]["content"], REPLY);

    // A streamed hit replays the same pieces.
    let response = h.post(&request).send().await.expect("send");
    assert_eq!(response.headers()["x-promptkit-cache"], "hit");
    let again = sse_data(&response.text().await.expect("body"));
    let pieces = |frames: &[String]| -> Vec<Value> {
        frames
            .iter()
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str::<Value>(d).expect("json"))
            .map(|c| c["choices"][0]["delta"].clone())
            .collect()
    };
    assert_eq!(pieces(&again), pieces(&first));
    assert_eq!(h.upstream.calls(), 1);
    // The gateway asked upstream to stream; its own client's stream flags are not forwarded
    // as options.
    assert_eq!(h.upstream.state.bodies.lock()[0]["stream"], true);
}

#[tokio::test]
async fn inline_think_blocks_stream_as_reasoning_and_the_text_matches_the_whole_reply() {
    let h = Harness::start(GatewayConfig::default()).await;
    let mut request = chat("THINK, then answer.");
    request["stream"] = json!(true);
    let streamed_parts = |body: &str| -> (String, String) {
        let frames = sse_data(body);
        let mut text = String::new();
        let mut reasoning = String::new();
        for frame in frames.iter().filter(|f| *f != "[DONE]") {
            let chunk: Value = serde_json::from_str(frame).expect("chunk json");
            let delta = &chunk["choices"][0]["delta"];
            assert!(
                !delta["content"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("think>")
            );
            text.push_str(delta["content"].as_str().unwrap_or_default());
            reasoning.push_str(delta["reasoning_content"].as_str().unwrap_or_default());
        }
        (text, reasoning)
    };
    for expect_cache in ["miss", "hit"] {
        let response = h.post(&request).send().await.expect("send");
        assert_eq!(response.headers()["x-promptkit-cache"], expect_cache);
        let (text, reasoning) = streamed_parts(&response.text().await.expect("body"));
        assert_eq!((text.as_str(), reasoning.as_str()), (REPLY, THOUGHT));
    }
    // The whole reply, from the streamed entry and straight from upstream, says the same.
    for no_cache in [false, true] {
        let mut post = h.post(&chat("THINK, then answer."));
        if no_cache {
            post = post.header("cache-control", "no-cache");
        }
        let (status, _, whole) = json_of(post.send().await.expect("send")).await;
        assert_eq!(status, 200);
        assert_eq!(whole["choices"][0]["message"]["content"], REPLY);
        assert_eq!(whole["choices"][0]["message"]["reasoning_content"], THOUGHT);
    }
    assert_eq!(h.upstream.calls(), 2);
}

#[tokio::test]
async fn cache_control_no_cache_skips_the_read() {
    let h = Harness::start(GatewayConfig::default()).await;
    let body = chat("Fresh, please.");
    h.post(&body).send().await.expect("send");
    let response = h
        .post(&body)
        .header("Cache-Control", "no-cache")
        .send()
        .await
        .expect("send");
    assert_eq!(response.headers()["x-promptkit-cache"], "miss");
    assert_eq!(h.upstream.calls(), 2);
    let response = h.post(&body).send().await.expect("send");
    assert_eq!(response.headers()["x-promptkit-cache"], "hit");
}

fn weather_request(stream: bool) -> Value {
    json!({
        "model": "fake-model",
        "stream": stream,
        "messages": [{"role": "user", "content": "TOOL: weather in Oslo?"}],
        "tools": [{"type": "function", "function": {
            "name": "weather", "description": "Today's weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                           "required": ["city"]}}}],
        "tool_choice": "auto",
    })
}

#[tokio::test]
async fn tools_pass_through_and_calls_come_back_whole_and_streamed() {
    let h = Harness::start(GatewayConfig::default()).await;
    let (status, _, body) =
        json_of(h.post(&weather_request(false)).send().await.expect("send")).await;
    assert_eq!(status, 200, "{body}");
    let message = &body["choices"][0]["message"];
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(message["tool_calls"][0]["id"], "call_1");
    assert_eq!(message["tool_calls"][0]["type"], "function");
    assert_eq!(message["tool_calls"][0]["function"]["name"], "weather");
    let arguments: Value = serde_json::from_str(
        message["tool_calls"][0]["function"]["arguments"]
            .as_str()
            .expect("arguments are JSON text"),
    )
    .expect("json");
    assert_eq!(arguments, json!({"city": "Oslo"}));
    let sent = h.upstream.state.bodies.lock()[0].clone();
    assert_eq!(sent["tools"][0]["function"]["name"], "weather");
    assert_eq!(sent["tool_choice"], "auto");

    // The conversation goes on with the tool's result.
    let follow_up = json!({
        "model": "fake-model",
        "messages": [
            {"role": "user", "content": "TOOL: weather in Oslo?"},
            {"role": "assistant", "content": null, "tool_calls": message["tool_calls"]},
            {"role": "tool", "tool_call_id": "call_1", "content": "rain"},
            {"role": "user", "content": "So?"},
        ],
    });
    let (status, _, body) = json_of(h.post(&follow_up).send().await.expect("send")).await;
    assert_eq!(status, 200, "{body}");
    let sent = h.upstream.state.bodies.lock()[1].clone();
    assert_eq!(sent["messages"][2]["role"], "tool");
    assert_eq!(sent["messages"][2]["tool_call_id"], "call_1");
    assert_eq!(sent["messages"][1]["tool_calls"][0]["id"], "call_1");

    // Streamed (a hit now: stream is not in the key), the call arrives as tool-call deltas.
    let response = h.post(&weather_request(true)).send().await.expect("send");
    let frames = sse_data(&response.text().await.expect("body"));
    let chunks: Vec<Value> = frames
        .iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).expect("json"))
        .collect();
    let calls: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"].get("tool_calls"))
        .collect();
    assert!(!calls.is_empty());
    assert_eq!(calls[0][0]["function"]["name"], "weather");
    let arguments: String = calls
        .iter()
        .filter_map(|c| c[0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&arguments).expect("json"),
        json!({"city": "Oslo"})
    );
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"] == "tool_calls")
    );
}

#[tokio::test]
async fn template_requests_render_on_the_server_and_name_bad_variables() {
    let h = Harness::start(GatewayConfig::default()).await;
    let request = json!({
        "template": "writer/greet",
        "vars": {"name": "Mira"},
        "messages": [{"role": "user", "content": "And keep it short."}],
    });
    let (status, cache, body) = json_of(h.post(&request).send().await.expect("send")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(cache.as_deref(), Some("miss"));
    let sent = h.upstream.state.bodies.lock()[0].clone();
    assert_eq!(
        sent["model"], "template-model",
        "the template's model default applies"
    );
    assert_eq!(sent["temperature"], 0.3);
    assert_eq!(sent["messages"][0]["content"], "You are the Writer.");
    assert_eq!(sent["messages"][1]["content"], "Greet Mira warmly.");
    assert_eq!(
        sent["messages"][2]["content"], "And keep it short.",
        "request messages follow the rendered ones"
    );
    let records = h.records();
    assert_eq!(records[0].agent, "writer");
    assert_eq!(records[0].task, "greet");
    assert_eq!(records[0].template_version, Some(1));

    let (status, cache, _) = json_of(h.post(&request).send().await.expect("send")).await;
    assert_eq!((status, cache.as_deref()), (200, Some("hit")));

    // The call's model wins over the template's; a version may be named.
    let mut pinned = request.clone();
    pinned["template"] = json!("writer/greet@1");
    pinned["model"] = json!("other-model");
    let (status, _, _) = json_of(h.post(&pinned).send().await.expect("send")).await;
    assert_eq!(status, 200);
    assert_eq!(h.upstream.state.bodies.lock()[1]["model"], "other-model");

    for (vars, needle) in [
        (json!({}), "name"),
        (json!({"name": "Mira", "mood": "glad"}), "mood"),
    ] {
        let bad = json!({"template": "writer/greet", "vars": vars});
        let (status, _, body) = json_of(h.post(&bad).send().await.expect("send")).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["param"], "vars");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(needle)),
            "{body}"
        );
    }
    let (status, _, body) = json_of(
        h.post(&json!({"template": "writer/nothing", "vars": {}}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(error_code(&body), "template_not_found");
    // A label names a version like a number (the same request: a hit); an unknown label is
    // a 404 like an unknown version.
    h.system
        .templates()
        .set_label("writer", "greet", "production", 1)
        .expect("label");
    let mut labelled = request.clone();
    labelled["template"] = json!("writer/greet@production");
    let (status, cache, body) = json_of(h.post(&labelled).send().await.expect("send")).await;
    assert_eq!((status, cache.as_deref()), (200, Some("hit")), "{body}");
    assert_eq!(h.records().last().and_then(|r| r.template_version), Some(1));
    labelled["template"] = json!("writer/greet@staging");
    let (status, _, body) = json_of(h.post(&labelled).send().await.expect("send")).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(error_code(&body), "template_not_found");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no label `staging`")),
        "{body}"
    );
    for name in ["writer", "writer/greet@v0", "writer/greet@a b", "/greet"] {
        let (status, _, body) = json_of(
            h.post(&json!({"template": name, "vars": {}}))
                .send()
                .await
                .expect("send"),
        )
        .await;
        assert_eq!(status, 400, "{name}: {body}");
    }
    // Streamed, the chunks name the template's model.
    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    let response = h.post(&streamed).send().await.expect("send");
    assert_eq!(response.headers()["x-promptkit-cache"], "hit");
    let frames = sse_data(&response.text().await.expect("body"));
    let first: Value = serde_json::from_str(&frames[0]).expect("json");
    assert_eq!(first["model"], "template-model");

    // Streamed template errors are HTTP errors too, before any stream begins.
    let (status, _, body) = json_of(
        h.post(&json!({"template": "writer/greet", "vars": {}, "stream": true}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn tags_header_tags_the_record_without_changing_the_cache_key() {
    let h = Harness::start(GatewayConfig {
        tags: vec!["gateway".into()],
        ..GatewayConfig::default()
    })
    .await;
    let response = h
        .post(&chat("Tag me."))
        .header("X-Prompt-Tags", "eval, nightly,eval")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-promptkit-cache"], "miss");
    // The same request with other tags is a hit.
    let response = h
        .post(&chat("Tag me."))
        .header("X-Prompt-Tags", "other")
        .send()
        .await
        .expect("send");
    assert_eq!(response.headers()["x-promptkit-cache"], "hit");
    let records = h.records();
    assert_eq!(records[0].tags, vec!["gateway", "eval", "nightly"]);
    assert_eq!(records[1].tags, vec!["gateway", "other"]);
    assert!(records[1].cache_hit);
    assert_eq!(records[1].cost_usd, Some(0.0));
    // A tag with a control character is refused, naming the header.
    let response = h
        .post(&chat("Tag me."))
        .header("X-Prompt-Tags", "ok,b\tad")
        .send()
        .await
        .expect("send");
    let (status, _, body) = json_of(response).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("x-prompt-tags"), "{body}");
}

#[tokio::test]
async fn attribution_headers_name_the_agent_and_task() {
    let h = Harness::start(GatewayConfig::default()).await;
    let response = h
        .post(&chat("Plan it."))
        .header("X-Prompt-Agent", "planner")
        .header("X-Prompt-Task", "plan_trip")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
    let records = h.records();
    assert_eq!(records[0].agent, "planner");
    assert_eq!(records[0].task, "plan_trip");
    let response = h
        .post(&chat("Plan it."))
        .header("X-Prompt-Agent", "no spaces/please")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn replay_only_answers_hits_and_misses_with_cache_miss() {
    let h = Harness::start(GatewayConfig {
        replay_only: true,
        ..GatewayConfig::default()
    })
    .await;
    let (status, cache, body) =
        json_of(h.post(&chat("Never seen.")).send().await.expect("send")).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(cache.as_deref(), Some("miss"));
    assert_eq!(error_code(&body), "cache_miss");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let mut streamed = chat("Never seen.");
    streamed["stream"] = json!(true);
    let (status, _, body) = json_of(h.post(&streamed).send().await.expect("send")).await;
    assert_eq!((status, error_code(&body)), (404, "cache_miss"));
    // The model list is answered offline too: the configured model and the templates' models.
    let (status, _, models) = json_of(h.get("/v1/models").send().await.expect("send")).await;
    assert_eq!(status, 200, "{models}");
    let ids: Vec<&str> = models["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    let mut want = vec![h.system.model(), "template-model"];
    want.sort_unstable();
    assert_eq!(ids, want);
    assert_eq!(h.upstream.calls(), 0, "replay-only never calls upstream");

    // Record with a normal system over the same cache, then replay.
    let recorder = h.system.chat_agent("gateway");
    let mut options = GenerateOptions::default();
    options.request.model = Some("fake-model".into());
    options.request.min_length = Some(0);
    recorder
        .chat(
            vec![prompt_agent::ChatMessage::user("Seen once.")],
            &options,
            "chat",
        )
        .await
        .expect("recorded");
    let (status, cache, body) =
        json_of(h.post(&chat("Seen once.")).send().await.expect("send")).await;
    assert_eq!((status, cache.as_deref()), (200, Some("hit")), "{body}");
    assert_eq!(h.upstream.calls(), 1);
}

#[tokio::test]
async fn a_client_key_guards_everything_but_health_and_is_never_forwarded() {
    let h = Harness::start(GatewayConfig {
        client_key: Some("sekrit-key".into()),
        ..GatewayConfig::default()
    })
    .await;
    let (status, _, body) = json_of(h.post(&chat("hi there")).send().await.expect("send")).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(error_code(&body), "invalid_api_key");
    let (status, _, _) = json_of(
        h.post(&chat("hi there"))
            .bearer_auth("wrong")
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _, _) = json_of(
        h.post(&chat("hi there"))
            .bearer_auth("sekrit-key")
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(h.upstream.state.auth.lock().as_slice(), [None]);
    for path in ["/v1/models", "/metrics"] {
        let response = h.get(path).send().await.expect("send");
        assert_eq!(response.status(), 401, "{path}");
    }
    let response = h.get("/health").send().await.expect("send");
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn bad_input_gets_openai_style_errors_and_the_server_keeps_serving() {
    let h = Harness::start(GatewayConfig {
        max_body_bytes: 4096,
        ..GatewayConfig::default()
    })
    .await;
    let url = format!("{}/v1/chat/completions", h.url);
    let raw = |body: &'static str| {
        h.client
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
    };
    let cases: Vec<(reqwest::RequestBuilder, u16, &str, Option<&str>)> = vec![
        (raw("{not json"), 400, "invalid_json", None),
        (raw("[1, 2]"), 400, "invalid_json", None),
        (raw(""), 400, "invalid_json", None),
        (
            raw(
                r#"{"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}"#,
            ),
            400,
            "invalid_type",
            Some("temperature"),
        ),
        (
            raw(r#"{"model": "m", "messages": "hello"}"#),
            400,
            "invalid_type",
            Some("messages"),
        ),
        (
            raw(r#"{"model": "m"}"#),
            400,
            "missing_required_parameter",
            Some("messages"),
        ),
        (
            raw(r#"{"messages": [{"role": "user", "content": "x"}]}"#),
            400,
            "missing_required_parameter",
            Some("model"),
        ),
        (
            raw(r#"{"model": "m", "messages": [{"role": "wizard", "content": "x"}]}"#),
            400,
            "invalid_value",
            Some("messages[0]"),
        ),
        (
            raw(r#"{"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 3}"#),
            400,
            "unsupported_value",
            Some("n"),
        ),
        (
            raw(
                r#"{"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": 5}"#,
            ),
            400,
            "invalid_value",
            Some("tool_choice"),
        ),
        (
            h.client
                .post(&url)
                .header("content-type", "application/json")
                .body("x".repeat(10_000)),
            413,
            "request_too_large",
            None,
        ),
    ];
    for (request, want_status, want_code, want_param) in cases {
        let (status, _, body) = json_of(request.send().await.expect("send")).await;
        assert_eq!(status, want_status, "{body}");
        assert_eq!(error_code(&body), want_code, "{body}");
        assert!(body["error"]["message"].is_string(), "{body}");
        assert!(body["error"]["type"].is_string(), "{body}");
        if let Some(param) = want_param {
            assert_eq!(body["error"]["param"], param, "{body}");
        }
    }
    // A body streamed without a length, over the limit.
    let chunks = futures_util::stream::iter(
        (0..10).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b' '; 1000]))),
    );
    let response = h
        .client
        .post(&url)
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 413);
    let response = h.get("/nowhere").send().await.expect("send");
    assert_eq!(response.status(), 404);
    // Still serving.
    let response = h.post(&chat("Still there?")).send().await.expect("send");
    assert_eq!(response.status(), 200);
    assert_eq!(h.upstream.calls(), 1);
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_cancels_upstream_and_nothing_is_cached() {
    let h = Harness::start(GatewayConfig::default()).await;
    let mut request = chat("SLOW: take your time.");
    request["stream"] = json!(true);
    let mut response = h.post(&request).send().await.expect("send");
    assert_eq!(response.status(), 200);
    // Read until the first piece of text has arrived, then hang up.
    let mut seen = String::new();
    while !seen.contains("Hello") {
        let chunk = tokio::time::timeout(BOUND, response.chunk())
            .await
            .expect("a chunk within the bound")
            .expect("read")
            .expect("more body");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(response);
    tokio::time::timeout(BOUND, async {
        while h
            .upstream
            .state
            .gone
            .load(std::sync::atomic::Ordering::SeqCst)
            == 0
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the upstream call is dropped");
    let mut options = GenerateOptions::default();
    options.request.model = Some("fake-model".into());
    options.request.min_length = Some(0);
    let (_, key) = h.system.chat_agent("gateway").prepare(
        vec![prompt_agent::ChatMessage::user("SLOW: take your time.")],
        &options,
    );
    let cache = h.system.cache().expect("cache");
    assert!(cache.get(&key).expect("get").is_none(), "nothing cached");
    // And the server keeps serving.
    let response = h
        .post(&chat("After the hang-up."))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn identical_concurrent_requests_make_one_upstream_call() {
    let h = Arc::new(Harness::start(GatewayConfig::default()).await);
    let mut tasks = Vec::new();
    for t in 0..20 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            let mut errors = 0;
            for i in 0..10 {
                let mut body = chat("WAIT: the same question for everyone.");
                if (t + i) % 2 == 0 {
                    body["stream"] = json!(true);
                }
                match h.post(&body).send().await {
                    Ok(r) if r.status() == 200 => {
                        let text = r.text().await.unwrap_or_default();
                        if !text.contains("fake upstream") && !text.contains("fake ") {
                            errors += 1;
                        }
                    }
                    _ => errors += 1,
                }
            }
            errors
        }));
    }
    let mut errors = 0;
    for task in tasks {
        errors += tokio::time::timeout(BOUND, task)
            .await
            .expect("within the bound")
            .expect("join");
    }
    assert_eq!(errors, 0);
    assert_eq!(h.upstream.calls(), 1, "single-flight and then the cache");
    let records = h.records();
    assert_eq!(records.len(), 200);
    assert_eq!(records.iter().filter(|r| !r.cache_hit).count(), 1);
}

#[tokio::test]
async fn models_health_and_prometheus_metrics() {
    let h = Harness::start(GatewayConfig::default()).await;
    let (status, _, body) = json_of(h.get("/v1/models").send().await.expect("send")).await;
    assert_eq!(status, 200);
    assert_eq!(body["object"], "list");
    assert_eq!(body["data"][0]["id"], "fake-model");
    let (status, _, body) = json_of(h.get("/health").send().await.expect("send")).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));

    h.post(&chat("Count me.")).send().await.expect("send");
    h.post(&chat("Count me.")).send().await.expect("send");
    h.post(&json!({"model": "m"})).send().await.expect("send");
    let response = h.get("/metrics").send().await.expect("send");
    assert!(
        response.headers()["content-type"]
            .to_str()
            .is_ok_and(|t| t.starts_with("text/plain"))
    );
    let text = response.text().await.expect("text");
    for line in [
        "promptkit_gateway_requests_total{endpoint=\"chat_completions\",status=\"200\"} 2",
        "promptkit_gateway_requests_total{endpoint=\"chat_completions\",status=\"400\"} 1",
        "promptkit_gateway_errors_total{kind=\"missing_required_parameter\"} 1",
        "promptkit_gateway_cache_hits_total 1",
        "promptkit_gateway_cache_misses_total 1",
        "promptkit_gateway_tokens_total{kind=\"prompt\"} 22",
        "promptkit_gateway_in_flight_requests 0",
        "promptkit_gateway_upstream_latency_seconds_count 1",
        "promptkit_gateway_overhead_seconds_count 2",
        "# TYPE promptkit_gateway_overhead_seconds histogram",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}

#[tokio::test]
async fn upstream_failures_map_to_429_and_502() {
    let h = Harness::start(GatewayConfig::default()).await;
    let (status, cache, body) = json_of(h.post(&chat("RATE me")).send().await.expect("send")).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(cache.as_deref(), Some("miss"));
    assert_eq!(error_code(&body), "rate_limited");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    let (status, _, body) = json_of(h.post(&chat("BOOM now")).send().await.expect("send")).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["type"], "upstream_error");
    let mut streamed = chat("BOOM streamed");
    streamed["stream"] = json!(true);
    let (status, _, body) = json_of(h.post(&streamed).send().await.expect("send")).await;
    assert_eq!(
        status, 502,
        "an error before the first delta is an HTTP error: {body}"
    );
    let records = h.records();
    assert_eq!(records.len(), 3, "failed calls leave their records too");
    assert!(records.iter().all(|r| r.error.is_some()));
}

#[tokio::test]
async fn the_request_timeout_answers_504_or_ends_the_stream_with_an_error() {
    let h = Harness::start(GatewayConfig {
        request_timeout: Some(Duration::from_millis(300)),
        ..GatewayConfig::default()
    })
    .await;
    // SLOW hangs upstream for far longer than the timeout (whole: before answering; streamed:
    // after its first piece).
    let (status, _, body) = json_of(h.post(&chat("SLOW whole")).send().await.expect("send")).await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(error_code(&body), "timeout");
    let mut streamed = chat("SLOW streamed");
    streamed["stream"] = json!(true);
    let response = h.post(&streamed).send().await.expect("send");
    assert_eq!(response.status(), 200, "the stream had begun");
    let text = tokio::time::timeout(BOUND, response.text())
        .await
        .expect("the stream ends within the bound")
        .expect("body");
    let frames = sse_data(&text);
    let last: Value = serde_json::from_str(frames.last().expect("a frame")).expect("json");
    assert_eq!(error_code(&last), "timeout", "{text}");
    assert!(!text.contains("[DONE]"));
}

#[tokio::test]
async fn known_sampling_fields_pass_through_and_bookkeeping_fields_do_not() {
    let h = Harness::start(GatewayConfig::default()).await;
    let mut request = chat("Sample me.");
    request["presence_penalty"] = json!(0.5);
    request["top_p"] = json!(0.9);
    request["seed"] = json!(7);
    request["stop"] = json!("END");
    request["max_completion_tokens"] = json!(64);
    request["response_format"] = json!({"type": "json_object"});
    request["user"] = json!("someone@example.com");
    request["metadata"] = json!({"run": "1"});
    let (status, _, body) = json_of(h.post(&request).send().await.expect("send")).await;
    assert_eq!(status, 200, "{body}");
    let sent = h.upstream.state.bodies.lock()[0].clone();
    assert_eq!(sent["presence_penalty"], 0.5);
    assert_eq!(sent["top_p"], 0.9);
    assert_eq!(sent["seed"], 7);
    assert_eq!(sent["stop"], json!(["END"]));
    assert_eq!(sent["max_tokens"], 64);
    assert_eq!(sent["response_format"]["type"], "json_object");
    assert!(sent.get("user").is_none(), "{sent}");
    assert!(sent.get("metadata").is_none(), "{sent}");
    // Each option is part of the key: without presence_penalty it is a miss.
    let mut other = request.clone();
    other
        .as_object_mut()
        .expect("object")
        .remove("presence_penalty");
    let response = h.post(&other).send().await.expect("send");
    assert_eq!(response.headers()["x-promptkit-cache"], "miss");
}

#[tokio::test]
async fn bodies_up_to_the_limit_are_read_whole_and_no_cache_config_skips_every_read() {
    let h = Harness::start(GatewayConfig {
        no_cache: true,
        ..GatewayConfig::default()
    })
    .await;
    // Larger than axum's default extractor limit (2 MiB), far below the gateway's 32 MiB.
    let big = "x".repeat(3 * 1024 * 1024);
    let (status, _, body) = json_of(h.post(&chat(&big)).send().await.expect("send")).await;
    assert_eq!(status, 200, "{body}");
    let response = h.post(&chat(&big)).send().await.expect("send");
    assert_eq!(response.headers()["x-promptkit-cache"], "miss");
    assert_eq!(h.upstream.calls(), 2);
}

#[tokio::test]
async fn a_client_that_leaves_a_whole_request_cancels_upstream() {
    let h = Harness::start(GatewayConfig::default()).await;
    // SLOW takes a minute over a whole answer upstream; the client gives up long before.
    let result = h
        .post(&chat("SLOW: whole, then gone."))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(result.is_err(), "the client timed out");
    tokio::time::timeout(BOUND, async {
        while h
            .upstream
            .state
            .gone
            .load(std::sync::atomic::Ordering::SeqCst)
            == 0
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the upstream call is dropped");
    let response = h.post(&chat("Next one.")).send().await.expect("send");
    assert_eq!(response.status(), 200);
}

/// A client's conversation goes upstream as it was sent: no temperature the client left out,
/// no model quirk (qwen models get ` /no_think` only from the agents, never from a client).
#[tokio::test]
async fn a_plain_request_goes_upstream_as_the_client_sent_it() {
    let h = Harness::start(GatewayConfig::default()).await;
    let request = json!({"model": "qwen3:8b", "messages": [{"role": "user", "content": "Hi."}]});
    let (status, _, body) = json_of(h.post(&request).send().await.expect("send")).await;
    assert_eq!(status, 200, "{body}");
    let sent = h.upstream.state.bodies.lock()[0].clone();
    assert!(sent.get("temperature").is_none(), "{sent}");
    assert_eq!(sent["model"], "qwen3:8b");
    assert_eq!(
        sent["messages"],
        json!([{"role": "user", "content": "Hi."}])
    );
}
