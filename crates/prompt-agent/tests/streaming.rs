//! Streaming providers over real HTTP on 127.0.0.1, against a scripted [`StreamServer`]: the
//! deltas and the final frame of both wire formats, the request bodies, and every way a stream
//! can go wrong (truncated, invalid frame, dropped connection, HTTP errors before streaming,
//! a client that goes away).

mod support;

use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::StreamExt;
use prompt_agent::{
    ApiKey, ChatMessage, ChatRequest, ChatResponse, Delta, EchoProvider, EventStream,
    OllamaProvider, OpenAiProvider, Provider, ProviderError, StreamAssembler, StreamEnd,
    StreamEvent,
};
use serde_json::{Value, json};
use support::{
    DONE_COMPLETION_TOKENS, DONE_PROMPT_TOKENS, Ending, Frame, Payload, Reply, STREAM_MODEL,
    StreamServer, Wire, ms, text_frames,
};

const TIMEOUT: Duration = Duration::from_secs(5);
/// Every wait on a stream is bounded by this, so a hanging stream fails the test instead of
/// hanging it.
const BOUND: Duration = Duration::from_secs(5);
const BOTH: [Wire; 2] = [Wire::Ollama, Wire::OpenAi];

fn provider(wire: Wire, base_url: &str) -> Box<dyn Provider> {
    match wire {
        Wire::Ollama => Box::new(OllamaProvider::new(base_url, TIMEOUT).expect("provider")),
        Wire::OpenAi => Box::new(
            OpenAiProvider::new(base_url, ApiKey::Value("sk-test".into()), TIMEOUT)
                .expect("provider"),
        ),
    }
}

fn request() -> ChatRequest {
    ChatRequest::new("qwen3:8b", vec![ChatMessage::user("Write chapter 1.")])
}

fn full_request() -> ChatRequest {
    let mut r = ChatRequest::new(
        "qwen3:8b",
        vec![
            ChatMessage::system("You are the Writer."),
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

async fn open(wire: Wire, server: &StreamServer) -> EventStream {
    tokio::time::timeout(
        BOUND,
        provider(wire, &server.base_url).chat_stream(&request()),
    )
    .await
    .expect("headers within the bound")
    .unwrap_or_else(|e| panic!("{wire:?}: chat_stream failed: {e}"))
}

async fn next(stream: &mut EventStream) -> Option<Result<StreamEvent, ProviderError>> {
    tokio::time::timeout(BOUND, stream.next())
        .await
        .expect("next event within the bound")
}

/// Every item until the stream ends.
async fn collect(mut stream: EventStream) -> Vec<Result<StreamEvent, ProviderError>> {
    let mut items = Vec::new();
    while let Some(item) = next(&mut stream).await {
        items.push(item);
    }
    items
}

fn text(t: &str) -> StreamEvent {
    StreamEvent::Delta(Delta::Text(t.to_owned()))
}

fn reasoning(t: &str) -> StreamEvent {
    StreamEvent::Delta(Delta::Reasoning(t.to_owned()))
}

fn done() -> StreamEvent {
    StreamEvent::Done(StreamEnd {
        model: Some(STREAM_MODEL.to_owned()),
        tokens_prompt: Some(DONE_PROMPT_TOKENS),
        tokens_completion: Some(DONE_COMPLETION_TOKENS),
        finish_reason: Some("stop".to_owned()),
        ..StreamEnd::default()
    })
}

/// Splits items into the events before the first error and that error (if any); asserts
/// nothing follows an error.
fn split(
    wire: Wire,
    items: Vec<Result<StreamEvent, ProviderError>>,
) -> (Vec<StreamEvent>, Option<ProviderError>) {
    let mut events = Vec::new();
    let mut iter = items.into_iter();
    for item in iter.by_ref() {
        match item {
            Ok(event) => events.push(event),
            Err(e) => {
                assert!(iter.next().is_none(), "{wire:?}: items after the error {e}");
                return (events, Some(e));
            }
        }
    }
    (events, None)
}

#[tokio::test]
async fn deltas_arrive_in_order_with_reasoning_apart_and_usage_in_done() {
    for wire in BOTH {
        let server = StreamServer::start().await;
        server.script(
            vec![
                Frame::reasoning("Let me think"),
                Frame::reasoning(" it through."),
                Frame::text("Once"),
                Frame::text(" upon"),
                Frame::reasoning(" (aside)"),
                Frame::text(" a time."),
            ],
            Ending::done(),
        );
        let items = collect(open(wire, &server).await).await;
        let (events, error) = split(wire, items);
        assert!(error.is_none(), "{wire:?}: {error:?}");
        assert_eq!(
            events,
            vec![
                reasoning("Let me think"),
                reasoning(" it through."),
                text("Once"),
                text(" upon"),
                reasoning(" (aside)"),
                text(" a time."),
                done(),
            ],
            "{wire:?}"
        );

        // The assembler keeps the two apart and takes the usage from the end.
        let mut assembler = StreamAssembler::new("qwen3:8b", Instant::now());
        for event in &events {
            assembler.push(event);
        }
        assert!(assembler.is_done());
        assert_eq!(assembler.received_chars(), 49);
        let response = assembler.finish();
        assert_eq!(response.content, "Once upon a time.");
        assert_eq!(
            response.reasoning.as_deref(),
            Some("Let me think it through. (aside)")
        );
        assert_eq!(response.model, STREAM_MODEL);
        assert_eq!(response.tokens_prompt, Some(DONE_PROMPT_TOKENS));
        assert_eq!(response.tokens_completion, Some(DONE_COMPLETION_TOKENS));
        assert_eq!(response.finish_reason.as_deref(), Some("stop"));
        assert_eq!(response.deltas.len(), 6);
        assert_eq!(server.completed(), 1);
        assert_eq!(server.client_disconnects(), 0);
    }
}

#[tokio::test]
async fn finish_reason_and_usage_come_from_the_final_frames() {
    for wire in BOTH {
        let server = StreamServer::start().await;
        let end = StreamEnd {
            model: Some("other-model".to_owned()),
            tokens_prompt: Some(7),
            tokens_completion: Some(4096),
            finish_reason: Some("length".to_owned()),
            ..StreamEnd::default()
        };
        server.script(vec![Frame::text("cut")], Ending::Done(end.clone()));
        let events = collect(open(wire, &server).await).await;
        let events: Vec<StreamEvent> = events.into_iter().map(|e| e.expect("event")).collect();
        assert_eq!(
            events,
            vec![text("cut"), StreamEvent::Done(end)],
            "{wire:?}"
        );

        // A server that reports no usage leaves the counts empty.
        let server = StreamServer::start().await;
        let bare = StreamEnd {
            model: None,
            tokens_prompt: None,
            tokens_completion: None,
            finish_reason: Some("stop".to_owned()),
            ..StreamEnd::default()
        };
        server.script(vec![Frame::text("x")], Ending::Done(bare));
        let events = collect(open(wire, &server).await).await;
        let Some(Ok(StreamEvent::Done(end))) = events.last() else {
            panic!("{wire:?}: no Done in {events:?}");
        };
        assert_eq!(end.tokens_prompt, None, "{wire:?}");
        assert_eq!(end.tokens_completion, None, "{wire:?}");
        assert_eq!(end.finish_reason.as_deref(), Some("stop"), "{wire:?}");
    }
}

#[tokio::test]
async fn openai_stream_variants_of_real_servers() {
    // A role-only first chunk (empty content), `reasoning` as Ollama's and OpenRouter's
    // compatible APIs name it, an SSE comment (keep-alive), a chunk with no choices and no
    // usage, and `\r\n` line ends: only the text counts.
    let server = StreamServer::start().await;
    let chunk = |delta: Value| {
        json!({
            "id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{ "index": 0, "delta": delta, "finish_reason": null }]
        })
    };
    server.script(
        vec![
            Frame::json(chunk(json!({ "role": "assistant", "content": "" }))),
            Frame::raw(": OPENROUTER PROCESSING\n\n"),
            Frame::json(chunk(json!({ "reasoning": "Thinking." }))),
            Frame::json(json!({ "id": "c", "object": "chat.completion.chunk", "choices": [] })),
            Frame::raw(format!(
                "data: {}\r\n\r\n",
                chunk(json!({ "content": "Answer", "reasoning_content": null }))
            )),
        ],
        Ending::done(),
    );
    let events = collect(open(Wire::OpenAi, &server).await).await;
    let events: Vec<StreamEvent> = events.into_iter().map(|e| e.expect("event")).collect();
    assert_eq!(events, vec![reasoning("Thinking."), text("Answer"), done()]);
}

#[tokio::test]
async fn frames_split_across_writes_are_put_back_together() {
    // One frame in two HTTP chunks, split inside a multi-byte character.
    for wire in BOTH {
        let server = StreamServer::start().await;
        let bytes = wire.frame_bytes(&Payload::Delta(Delta::Text("héllo ✓ wörld".into())));
        let check = bytes
            .windows(3)
            .position(|w| w == "✓".as_bytes())
            .expect("the check mark");
        server.script(
            vec![
                Frame::text("A"),
                Frame::raw(bytes[..check + 1].to_vec()),
                Frame::raw(bytes[check + 1..].to_vec()).after(ms(50)),
                Frame::text("Z"),
            ],
            Ending::done(),
        );
        let events = collect(open(wire, &server).await).await;
        let events: Vec<StreamEvent> = events.into_iter().map(|e| e.expect("event")).collect();
        assert_eq!(
            events,
            vec![text("A"), text("héllo ✓ wörld"), text("Z"), done()],
            "{wire:?}"
        );
    }
}

#[tokio::test]
async fn ollama_stream_body_is_the_chat_body_with_stream_true() {
    let server = StreamServer::start().await;
    server.script(vec![Frame::text("ok")], Ending::done());
    let req = full_request();
    let stream = OllamaProvider::new(&server.base_url, TIMEOUT)
        .expect("provider")
        .chat_stream(&req)
        .await
        .expect("stream");
    collect(stream).await;

    let captured = server.captured();
    assert_eq!(captured.len(), 1);
    assert_eq!(captured[0].method, "POST");
    assert_eq!(captured[0].path, "/api/chat");
    let mut expected = OllamaProvider::request_body(&req);
    assert_eq!(expected["stream"], json!(false), "the non-streaming body");
    expected["stream"] = json!(true);
    assert_eq!(captured[0].body, expected);
    assert_eq!(
        captured[0].body,
        json!({
            "model": "qwen3:8b",
            "messages": [
                { "role": "system", "content": "You are the Writer." },
                { "role": "user", "content": "Write chapter 1." }
            ],
            "stream": true,
            "options": { "temperature": 0.8, "num_predict": 4096, "num_ctx": 8192, "seed": 42, "stop": ["THE END"] }
        })
    );
}

#[tokio::test]
async fn openai_stream_body_is_the_chat_body_with_stream_and_usage_asked() {
    let server = StreamServer::start().await;
    server.script(vec![Frame::text("ok")], Ending::done());
    let req = full_request();
    let stream = OpenAiProvider::new(
        &format!("{}/v1", server.base_url),
        ApiKey::Value("sk-test".into()),
        TIMEOUT,
    )
    .expect("provider")
    .chat_stream(&req)
    .await
    .expect("stream");
    collect(stream).await;

    let captured = server.captured();
    assert_eq!(captured.len(), 1);
    assert_eq!(captured[0].method, "POST");
    assert_eq!(captured[0].path, "/v1/chat/completions");
    assert_eq!(captured[0].header("authorization"), Some("Bearer sk-test"));
    let mut expected = OpenAiProvider::request_body(&req);
    assert!(expected.get("stream").is_none(), "the non-streaming body");
    expected["stream"] = json!(true);
    expected["stream_options"] = json!({ "include_usage": true });
    assert_eq!(captured[0].body, expected);
    assert_eq!(captured[0].body["max_tokens"], json!(4096));
}

#[tokio::test]
async fn first_delta_arrives_while_the_server_is_still_sending() {
    // Eight frames 200 ms apart: the first event must be in hand while the server has not yet
    // written the last frame. Only the order is asserted, never the speed.
    let pieces = [
        "It ", "was ", "a ", "dark ", "and ", "stormy ", "night", ".",
    ];
    let servers = futures_util::future::join_all(BOTH.map(|wire| async move {
        let server = StreamServer::start().await;
        server.script(text_frames(&pieces, ms(200)), Ending::done());
        let mut stream = open(wire, &server).await;
        let first = next(&mut stream)
            .await
            .expect("an event")
            .expect("no error");
        let sent_at_first = server.frames_sent();
        assert_eq!(first, text("It "), "{wire:?}");
        assert!(
            sent_at_first < pieces.len(),
            "{wire:?}: the first delta came only after all {sent_at_first} frames were sent"
        );
        let rest = collect(stream).await;
        assert_eq!(rest.len(), pieces.len(), "{wire:?}: 7 deltas and Done");
        assert!(matches!(rest.last(), Some(Ok(StreamEvent::Done(_)))));
        assert_eq!(server.frames_sent(), pieces.len());
        server
    }))
    .await;
    assert_eq!(servers.len(), 2);
}

#[tokio::test]
async fn a_truncated_stream_is_broken_after_its_deltas() {
    for wire in BOTH {
        let server = StreamServer::start().await;
        server.script(
            vec![Frame::reasoning("Hmm. "), Frame::text("Once upon")],
            Ending::Truncated,
        );
        let (events, error) = split(wire, collect(open(wire, &server).await).await);
        assert_eq!(
            events,
            vec![reasoning("Hmm. "), text("Once upon")],
            "{wire:?}"
        );
        let error = error.expect("an error");
        let ProviderError::StreamBroken {
            received_chars,
            message,
            ..
        } = &error
        else {
            panic!("{wire:?}: want StreamBroken, got {error:?}");
        };
        assert_eq!(*received_chars, 14, "{wire:?}: {error}");
        assert!(message.contains("final frame"), "{wire:?}: {message}");
        assert!(error.to_string().contains("after 14 characters"), "{error}");
        assert!(error.is_retryable() && error.is_provider_failure());
    }
}

#[tokio::test]
async fn an_invalid_frame_breaks_the_stream() {
    for wire in BOTH {
        let server = StreamServer::start().await;
        server.script(
            vec![
                Frame::text("Good "),
                Frame::invalid(),
                Frame::text("never seen"),
            ],
            Ending::done(),
        );
        let (events, error) = split(wire, collect(open(wire, &server).await).await);
        assert_eq!(events, vec![text("Good ")], "{wire:?}");
        let error = error.expect("an error");
        assert!(
            matches!(&error, ProviderError::StreamBroken { received_chars: 5, message, .. } if message.contains("invalid frame")),
            "{wire:?}: {error:?}"
        );
    }
}

#[tokio::test]
async fn an_error_frame_mid_stream_breaks_the_stream() {
    for (wire, frame) in [
        (Wire::Ollama, json!({ "error": "model runner crashed" })),
        (
            Wire::OpenAi,
            json!({ "error": { "message": "model runner crashed", "type": "server_error" } }),
        ),
    ] {
        let server = StreamServer::start().await;
        server.script(
            vec![Frame::text("Part"), Frame::json(frame)],
            Ending::done(),
        );
        let (events, error) = split(wire, collect(open(wire, &server).await).await);
        assert_eq!(events, vec![text("Part")], "{wire:?}");
        let error = error.expect("an error");
        assert!(
            matches!(
                &error,
                ProviderError::StreamBroken {
                    received_chars: 4,
                    ..
                }
            ) && error.to_string().contains("model runner crashed"),
            "{wire:?}: {error:?}"
        );
    }
}

#[tokio::test]
async fn a_dropped_connection_breaks_the_stream() {
    for wire in BOTH {
        // Mid-stream.
        let server = StreamServer::start().await;
        server.script(
            vec![Frame::text("Once "), Frame::text("upon")],
            Ending::Drop,
        );
        let (events, error) = split(wire, collect(open(wire, &server).await).await);
        assert_eq!(events, vec![text("Once "), text("upon")], "{wire:?}");
        let error = error.expect("an error");
        // The message says what happened to the connection, not reqwest's "error decoding
        // response body".
        let message = error.to_string();
        assert!(
            message.contains("connection") && !message.contains("decoding"),
            "{wire:?}: {message}"
        );
        assert!(
            matches!(
                &error,
                ProviderError::StreamBroken {
                    received_chars: 9,
                    ..
                }
            ),
            "{wire:?}: {error:?}"
        );

        // After the headers, before any frame: the stream opened, so it is a broken stream
        // with nothing received.
        let server = StreamServer::start().await;
        server.script(Vec::new(), Ending::Drop);
        let (events, error) = split(wire, collect(open(wire, &server).await).await);
        assert!(events.is_empty(), "{wire:?}: {events:?}");
        let error = error.expect("an error");
        assert!(
            matches!(
                &error,
                ProviderError::StreamBroken {
                    received_chars: 0,
                    ..
                }
            ),
            "{wire:?}: {error:?}"
        );

        // Before any answer: the request itself failed, a connection error like `chat`'s.
        let server = StreamServer::start().await;
        server.script(Vec::new(), Ending::CloseBeforeResponse);
        let error = provider(wire, &server.base_url)
            .chat_stream(&request())
            .await
            .err()
            .expect("an error");
        assert!(
            matches!(error, ProviderError::Connection { .. }),
            "{wire:?}: {error:?}"
        );
        assert!(error.is_retryable() && error.is_provider_failure());
    }
}

/// The error `chat` and `chat_stream` give for the same HTTP answer.
async fn both_errors(wire: Wire, reply: Reply) -> (ProviderError, ProviderError) {
    let server = StreamServer::start().await;
    server.set_default(Vec::new(), Ending::Status(reply));
    let provider = provider(wire, &server.base_url);
    let plain = provider.chat(&request()).await.expect_err("chat fails");
    let streamed = provider
        .chat_stream(&request())
        .await
        .err()
        .expect("chat_stream fails");
    assert_eq!(server.requests(), 2);
    (plain, streamed)
}

#[tokio::test]
async fn http_errors_before_streaming_are_the_errors_chat_gives() {
    for wire in BOTH {
        let (plain, streamed) = both_errors(
            wire,
            Reply::json(429, json!({ "error": "slow down" })).header("retry-after", "2"),
        )
        .await;
        assert_eq!(streamed.kind(), "rate_limited", "{wire:?}: {streamed:?}");
        assert_eq!(streamed.retry_after(), Some(Duration::from_secs(2)));
        assert_eq!(streamed.to_string(), plain.to_string(), "{wire:?}");

        let (plain, streamed) = both_errors(wire, Reply::raw(500, "boom")).await;
        assert!(
            matches!(streamed, ProviderError::Server { status: 500, .. }),
            "{wire:?}: {streamed:?}"
        );
        assert_eq!(streamed.to_string(), plain.to_string(), "{wire:?}");

        let not_found = match wire {
            Wire::Ollama => Reply::ollama_model_not_found("qwen3:8b"),
            Wire::OpenAi => Reply::openai_error(404, "model_not_found", "no such model"),
        };
        let (plain, streamed) = both_errors(wire, not_found).await;
        assert!(
            matches!(&streamed, ProviderError::ModelNotFound { model, .. } if model == "qwen3:8b"),
            "{wire:?}: {streamed:?}"
        );
        assert_eq!(streamed.to_string(), plain.to_string(), "{wire:?}");

        let (plain, streamed) = both_errors(wire, Reply::raw(401, "who are you")).await;
        assert_eq!(streamed.kind(), "auth", "{wire:?}: {streamed:?}");
        assert_eq!(streamed.to_string(), plain.to_string(), "{wire:?}");
    }

    // OpenAI's 408 is a timeout; both paths name the URL and the timeout.
    let (plain, streamed) = both_errors(
        Wire::OpenAi,
        Reply::openai_error(408, "timeout", "request timed out"),
    )
    .await;
    assert!(
        matches!(&streamed, ProviderError::Timeout { url, after, .. } if url.ends_with("/v1/chat/completions") && *after == TIMEOUT),
        "{streamed:?}"
    );
    assert_eq!(streamed.to_string(), plain.to_string());
}

#[tokio::test]
async fn dropping_the_stream_closes_the_connection() {
    for wire in BOTH {
        // While the server is still sending.
        let server = StreamServer::start().await;
        server.script(
            text_frames(&["a", "b", "c", "d", "e"], ms(200)),
            Ending::done(),
        );
        let mut stream = open(wire, &server).await;
        assert_eq!(
            next(&mut stream).await.expect("event").expect("ok"),
            text("a")
        );
        drop(stream);
        server.wait_for_disconnects(1).await;
        assert_eq!(server.completed(), 0, "{wire:?}");
        assert!(
            server.frames_sent() < 5,
            "{wire:?}: the server stopped early"
        );

        // While the server is stalled: the provider sets no timeout on the body, so the
        // stream just waits; dropping it is how the caller gives up.
        let server = StreamServer::start().await;
        server.script(vec![Frame::text("a")], Ending::Stall);
        let mut stream = open(wire, &server).await;
        assert_eq!(
            next(&mut stream).await.expect("event").expect("ok"),
            text("a")
        );
        let waited = tokio::time::timeout(ms(300), stream.next()).await;
        assert!(
            waited.is_err(),
            "{wire:?}: a stalled stream yields nothing: {waited:?}"
        );
        assert_eq!(server.client_disconnects(), 0);
        drop(stream);
        server.wait_for_disconnects(1).await;
        assert_eq!(server.completed(), 0, "{wire:?}");
    }
}

#[tokio::test]
async fn the_server_answers_queued_scripts_in_order_then_the_default() {
    let server = StreamServer::start().await;
    server.script(vec![Frame::text("first")], Ending::Truncated);
    server.script(vec![Frame::text("second")], Ending::done());
    server.set_default(vec![Frame::text("default")], Ending::done());
    let mut seen = Vec::new();
    for _ in 0..3 {
        let items = collect(open(Wire::Ollama, &server).await).await;
        seen.push(items.first().cloned().map(|i| i.expect("a delta")));
    }
    assert_eq!(
        seen,
        vec![
            Some(text("first")),
            Some(text("second")),
            Some(text("default"))
        ]
    );
    assert_eq!(server.requests(), 3);
    assert_eq!(server.completed(), 3);

    // Nothing scripted: a 500 that says so.
    let bare = StreamServer::start().await;
    let error = provider(Wire::OpenAi, &bare.base_url)
        .chat_stream(&request())
        .await
        .err()
        .expect("an error");
    assert!(error.to_string().contains("nothing scripted"), "{error}");
}

/// A provider with no streaming of its own, whose replies carry reasoning.
#[derive(Debug)]
struct Whole;

#[async_trait]
impl Provider for Whole {
    fn name(&self) -> &str {
        "whole"
    }

    async fn chat(&self, _request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        Ok(ChatResponse {
            content: "The answer.".into(),
            reasoning: Some("Thought.".into()),
            model: "whole-model".into(),
            tokens_prompt: Some(3),
            tokens_completion: Some(2),
            finish_reason: Some("stop".into()),
            ..ChatResponse::default()
        })
    }
}

#[tokio::test]
async fn providers_without_streaming_yield_their_whole_reply() {
    let req = request();
    let events: Vec<StreamEvent> =
        collect(EchoProvider::new().chat_stream(&req).await.expect("stream"))
            .await
            .into_iter()
            .map(|e| e.expect("event"))
            .collect();
    let whole = EchoProvider::new().chat(&req).await.expect("chat");
    assert_eq!(
        events,
        vec![
            text(&EchoProvider::reply(&req)),
            StreamEvent::Done(StreamEnd {
                model: Some(whole.model),
                tokens_prompt: whole.tokens_prompt,
                tokens_completion: whole.tokens_completion,
                finish_reason: whole.finish_reason,
                ..StreamEnd::default()
            }),
        ]
    );

    let events: Vec<StreamEvent> = collect(Whole.chat_stream(&req).await.expect("stream"))
        .await
        .into_iter()
        .map(|e| e.expect("event"))
        .collect();
    assert_eq!(
        events,
        vec![
            reasoning("Thought."),
            text("The answer."),
            StreamEvent::Done(StreamEnd {
                model: Some("whole-model".into()),
                tokens_prompt: Some(3),
                tokens_completion: Some(2),
                finish_reason: Some("stop".into()),
                ..StreamEnd::default()
            }),
        ]
    );
}

#[tokio::test]
async fn dropping_the_call_while_waiting_for_the_answer_closes_the_connection() {
    // A server that reads the request and says nothing (a model still loading): the provider
    // waits for the headers with no timeout of its own; the caller's timeout drops the
    // future, and the server sees the client go.
    for wire in BOTH {
        let server = StreamServer::start().await;
        server.script(Vec::new(), Ending::StallBeforeResponse);
        let provider = provider(wire, &server.base_url);
        let call = tokio::time::timeout(ms(300), provider.chat_stream(&request())).await;
        assert!(call.is_err(), "{wire:?}: no answer was sent");
        server.wait_for_disconnects(1).await;
        assert_eq!(server.requests(), 1);
        assert_eq!(server.completed(), 0);
    }
}
