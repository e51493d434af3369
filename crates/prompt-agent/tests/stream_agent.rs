//! Streaming through the agents, end to end over real HTTP on 127.0.0.1: a scripted
//! [`StreamServer`], real template files, a real `ResponseCache` on disk and the metrics
//! records. Long streams within a short idle timeout, stalls caught and retried, broken streams
//! never cached, faithful replay of cache hits (reasoning, usage, order, pacing), time to first
//! token in the records, the circuit breaker, and cancellation by dropping the stream.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use prompt_agent::{
    AgentError, ApiKey, CircuitBreaker, Delta, GenerateOptions, Generation, GenerationEvent,
    GenerationStream, OllamaProvider, OpenAiProvider, PromptSystem, Provider, ProviderError,
    StreamItem, Vars,
};
use prompt_cache::{CacheConfig, CacheStore, ResponseCache};
use serde_json::json;
use support::{
    DONE_COMPLETION_TOKENS, DONE_PROMPT_TOKENS, Ending, Frame, MemorySink, Reply, STREAM_MODEL,
    StreamServer, Wire, fast_builder, ms, text_frames, write_template,
};

/// Every wait on a generation is bounded by this, so a hang fails the test instead of hanging.
const BOUND: Duration = Duration::from_secs(20);

const SCENE: &str = r#"
model: { name: "qwen3:30b", temperature: 0.85 }
system_prompt: You are the Writer.
user_prompt_template: |
  Write a scene set in {{ setting }}.
variables:
  setting: "string - Where the scene happens"
validation: { min_length: 10 }
"#;

struct Fixture {
    server: StreamServer,
    system: PromptSystem,
    sink: Arc<MemorySink>,
    cache: Arc<ResponseCache>,
    _templates: tempfile::TempDir,
    _cache_dir: tempfile::TempDir,
}

/// A system on a fresh cache, streaming from `server` over `wire`, with `configure` applied
/// to the builder (idle timeout, breaker, attempts).
async fn fixture_with(
    wire: Wire,
    configure: impl FnOnce(prompt_agent::PromptSystemBuilder) -> prompt_agent::PromptSystemBuilder,
) -> Fixture {
    let server = StreamServer::start().await;
    let templates = tempfile::tempdir().expect("tempdir");
    write_template(templates.path(), "writer", "write_scene", 1, SCENE);
    let cache_dir = tempfile::tempdir().expect("tempdir");
    let cache = Arc::new(ResponseCache::open(CacheConfig::new(cache_dir.path())).expect("cache"));
    let sink = MemorySink::new();
    let timeout = Duration::from_secs(10);
    let provider: Arc<dyn Provider> = match wire {
        Wire::Ollama => Arc::new(OllamaProvider::new(&server.base_url, timeout).expect("provider")),
        Wire::OpenAi => Arc::new(
            OpenAiProvider::new(&server.base_url, ApiKey::Value("sk-test".into()), timeout)
                .expect("provider"),
        ),
    };
    let builder = fast_builder(provider, templates.path())
        .cache(cache.clone())
        .metrics(sink.clone())
        .idle_timeout(Duration::from_secs(5));
    let system = configure(builder).build().expect("system");
    Fixture {
        server,
        system,
        sink,
        cache,
        _templates: templates,
        _cache_dir: cache_dir,
    }
}

async fn fixture(wire: Wire) -> Fixture {
    fixture_with(wire, |b| b).await
}

fn vars(setting: &str) -> Vars {
    let mut v = Vars::new();
    v.insert("setting".into(), json!(setting));
    v
}

/// What a generation stream gave: its events in order, when each arrived (since the call
/// started), and its result.
struct Collected {
    events: Vec<GenerationEvent>,
    arrivals: Vec<Duration>,
    result: Result<Generation, AgentError>,
}

impl Collected {
    fn deltas(&self) -> Vec<Delta> {
        self.events
            .iter()
            .filter_map(|e| match e {
                GenerationEvent::Delta(d) => Some(d.clone()),
                GenerationEvent::Retry { .. } => None,
            })
            .collect()
    }

    fn retries(&self) -> Vec<(u32, String)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                GenerationEvent::Retry { attempt, reason } => Some((*attempt, reason.clone())),
                GenerationEvent::Delta(_) => None,
            })
            .collect()
    }

    fn generation(self) -> Generation {
        self.result.expect("generation")
    }
}

async fn collect(mut stream: GenerationStream<Generation>) -> Collected {
    let started = Instant::now();
    let mut events = Vec::new();
    let mut arrivals = Vec::new();
    let result = loop {
        let item = tokio::time::timeout(BOUND, stream.next())
            .await
            .expect("the stream moves within the bound");
        match item {
            Some(Ok(StreamItem::Event(event))) => {
                events.push(event);
                arrivals.push(started.elapsed());
            }
            Some(Ok(StreamItem::Done(generation))) => break Ok(generation),
            Some(Err(e)) => break Err(e),
            None => panic!("the stream ended without a result"),
        }
    };
    Collected {
        events,
        arrivals,
        result,
    }
}

async fn stream_scene(f: &Fixture, options: &GenerateOptions) -> Collected {
    let agent = f.system.template_agent("writer");
    collect(agent.generate_stream("write_scene", &vars("a pier at night"), options)).await
}

fn text(t: &str) -> Delta {
    Delta::Text(t.to_owned())
}

fn reasoning(t: &str) -> Delta {
    Delta::Reasoning(t.to_owned())
}

const PIECES: [&str; 8] = [
    "The tide ",
    "came in ",
    "under the ",
    "pier, and ",
    "Mira ",
    "waited ",
    "for the ",
    "ferry.",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_stream_within_a_short_idle_timeout_succeeds() {
    // Eight pieces 150 ms apart: well over a second in all, never more than 150 ms between
    // two chunks, so a 1 s idle timeout never fires.
    let f = fixture_with(Wire::Ollama, |b| b.idle_timeout(Duration::from_secs(1))).await;
    f.server
        .script(text_frames(&PIECES, ms(150)), Ending::done());
    let got = stream_scene(&f, &GenerateOptions::default()).await;
    let want: Vec<Delta> = PIECES.iter().map(|p| text(p)).collect();
    assert_eq!(got.deltas(), want);
    assert!(got.retries().is_empty());
    // The deltas arrived one by one, not all at the end.
    assert!(got.arrivals.windows(2).all(|w| w[0] <= w[1]));
    assert!(got.arrivals[0] < got.arrivals[PIECES.len() - 1]);
    let g = got.generation();
    assert_eq!(g.content, PIECES.concat());
    assert_eq!(g.retry_count, 0);
    assert_eq!(f.server.requests(), 1);
    assert_eq!(f.server.last_body()["stream"], json!(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_mid_stream_is_detected_retried_and_reported() {
    let f = fixture_with(Wire::Ollama, |b| b.idle_timeout(ms(300))).await;
    // First attempt: two pieces (17 characters), then nothing.
    f.server
        .script(text_frames(&PIECES[..2], ms(10)), Ending::Stall);
    f.server
        .script(text_frames(&PIECES, ms(10)), Ending::done());
    let got = stream_scene(&f, &GenerateOptions::default()).await;
    let retries = got.retries();
    assert_eq!(retries.len(), 1, "{retries:?}");
    let (attempt, reason) = &retries[0];
    assert_eq!(*attempt, 2);
    assert!(
        reason.contains("stalled") && reason.contains("after 17 characters"),
        "{reason}"
    );
    // The deltas before the retry are the stalled attempt's; after it, the whole reply.
    let retry_at = got
        .events
        .iter()
        .position(|e| matches!(e, GenerationEvent::Retry { .. }))
        .expect("retry event");
    let after: Vec<Delta> = got.events[retry_at + 1..]
        .iter()
        .filter_map(|e| match e {
            GenerationEvent::Delta(d) => Some(d.clone()),
            GenerationEvent::Retry { .. } => None,
        })
        .collect();
    assert_eq!(after, PIECES.iter().map(|p| text(p)).collect::<Vec<_>>());
    let g = got.generation();
    assert_eq!(g.retry_count, 1);
    assert_eq!(g.content, PIECES.concat());
    assert_eq!(f.server.requests(), 2);
    // The stalled connection was closed by the client.
    f.server.wait_for_disconnects(1).await;
    let record = f.sink.last();
    assert_eq!(record.retry_count, 1);
    assert!(record.error.is_none());

    // Every attempt stalls: the error is a stall, naming the idle timeout and what arrived.
    f.server
        .set_default(text_frames(&PIECES[..1], ms(10)), Ending::Stall);
    let options = GenerateOptions {
        no_cache: true,
        ..GenerateOptions::default()
    };
    let failed = stream_scene(&f, &options).await;
    let err = failed.result.expect_err("every attempt stalls");
    match &err {
        AgentError::Provider {
            source:
                ProviderError::Stalled {
                    received_chars,
                    idle,
                    ..
                },
            attempts,
            ..
        } => {
            assert_eq!(*received_chars, PIECES[0].chars().count());
            assert_eq!(*idle, ms(300));
            assert_eq!(*attempts, 3);
        }
        other => panic!("not a stall: {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("no data for 0.3 s after 9 characters"),
        "{message}"
    );
    let record = f.sink.last();
    assert!(
        record
            .error
            .as_deref()
            .is_some_and(|e| e.contains("stalled"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_did_not_finish_is_never_cached() {
    for ending in [Ending::Truncated, Ending::Drop] {
        let f = fixture_with(Wire::OpenAi, |b| b.max_attempts(1)).await;
        f.server
            .script(text_frames(&PIECES[..3], ms(5)), ending.clone());
        let first = stream_scene(&f, &GenerateOptions::default()).await;
        let err = first.result.expect_err("broken stream");
        assert!(
            matches!(
                err,
                AgentError::Provider {
                    source: ProviderError::StreamBroken { .. },
                    ..
                }
            ),
            "{ending:?}: {err:?}"
        );
        assert_eq!(f.cache.stats().expect("stats").size, 0, "{ending:?}");
        // The next call reaches the server, and its finished reply is cached.
        f.server.script(text_frames(&PIECES, ms(5)), Ending::done());
        let second = stream_scene(&f, &GenerateOptions::default())
            .await
            .generation();
        assert!(!second.cache_hit);
        assert_eq!(f.server.requests(), 2, "{ending:?}");
        let third = stream_scene(&f, &GenerateOptions::default())
            .await
            .generation();
        assert!(third.cache_hit);
        assert_eq!(f.server.requests(), 2, "{ending:?}: served from the cache");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_rejected_by_validation_is_retried_and_never_cached() {
    let f = fixture_with(Wire::Ollama, |b| b.max_attempts(2)).await;
    // min_length is 10 characters: "Too short" has 9.
    f.server
        .set_default(vec![Frame::text("Too short")], Ending::done());
    let got = stream_scene(&f, &GenerateOptions::default()).await;
    let retries = got.retries();
    assert_eq!(retries.len(), 1);
    assert!(retries[0].1.contains("min_length"), "{retries:?}");
    assert!(matches!(
        got.result,
        Err(AgentError::Validation { attempts: 2, .. })
    ));
    assert_eq!(f.cache.stats().expect("stats").size, 0);
    assert_eq!(f.server.requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_hit_replays_the_same_deltas_with_reasoning_and_usage() {
    for wire in [Wire::Ollama, Wire::OpenAi] {
        let f = fixture(wire).await;
        let frames = vec![
            Frame::reasoning("The pier first; ").after(ms(20)),
            Frame::reasoning("then the tide.").after(ms(20)),
            Frame::text("The tide ").after(ms(20)),
            Frame::text("came in, ").after(ms(20)),
            Frame::text("and Mira waited.").after(ms(20)),
        ];
        f.server.script(frames, Ending::done());
        let live = stream_scene(&f, &GenerateOptions::default()).await;
        let live_deltas = live.deltas();
        assert_eq!(
            live_deltas,
            [
                reasoning("The pier first; "),
                reasoning("then the tide."),
                text("The tide "),
                text("came in, "),
                text("and Mira waited."),
            ],
            "{wire:?}"
        );
        let first = live.generation();
        assert!(!first.cache_hit);

        let replayed = stream_scene(&f, &GenerateOptions::default()).await;
        assert_eq!(
            replayed.deltas(),
            live_deltas,
            "{wire:?}: same deltas, same order"
        );
        let hit = replayed.generation();
        assert!(hit.cache_hit, "{wire:?}");
        assert_eq!(f.server.requests(), 1, "{wire:?}");
        assert_eq!(hit.content, "The tide came in, and Mira waited.");
        assert_eq!(
            hit.reasoning.as_deref(),
            Some("The pier first; then the tide.")
        );
        assert_eq!(hit.reasoning, first.reasoning);
        assert_eq!(hit.tokens_prompt, Some(DONE_PROMPT_TOKENS));
        assert_eq!(hit.tokens_completion, Some(DONE_COMPLETION_TOKENS));
        assert_eq!(hit.model, STREAM_MODEL);
        assert_eq!(
            hit.time_to_first_token_ms, None,
            "a hit has no time to first token"
        );

        // The whole reply, without streaming, is the same hit.
        let whole = f
            .system
            .template_agent("writer")
            .generate_from_template(
                "write_scene",
                &vars("a pier at night"),
                &GenerateOptions::default(),
            )
            .await
            .expect("whole");
        assert!(whole.cache_hit);
        assert_eq!(whole.content, hit.content);
        assert_eq!(whole.reasoning, hit.reasoning);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hit_is_replayed_at_once_or_with_its_original_pacing() {
    let f = fixture(Wire::Ollama).await;
    // Pieces 100 ms apart: the last one arrived at least 400 ms after the request.
    f.server
        .script(text_frames(&PIECES[..4], ms(100)), Ending::done());
    let live = stream_scene(&f, &GenerateOptions::default()).await;
    let live_deltas = live.deltas();
    live.generation();

    let paced = stream_scene(
        &f,
        &GenerateOptions {
            paced_replay: true,
            ..GenerateOptions::default()
        },
    )
    .await;
    assert_eq!(paced.deltas(), live_deltas);
    // Each delta waits for its recorded offset: the last came no sooner than 400 ms in, and
    // the gaps between them were kept (each at least the 100 ms the server waited, give or
    // take the server's own timer rounding, which only adds).
    let last = *paced.arrivals.last().expect("deltas");
    assert!(last >= ms(400), "paced replay ended after {last:?}");
    assert!(paced.generation().cache_hit);
    assert_eq!(f.server.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_record_carries_time_to_first_token_and_tokens_per_second() {
    let f = fixture(Wire::OpenAi).await;
    // The first piece comes 300 ms after the request, the rest right after it.
    let mut frames = text_frames(&PIECES, ms(1));
    frames[0] = Frame::text(PIECES[0]).after(ms(300));
    f.server.script(frames, Ending::done());
    let g = stream_scene(&f, &GenerateOptions::default())
        .await
        .generation();
    let record = f.sink.last();
    let ttft = record
        .time_to_first_token_ms
        .expect("streamed: ttft recorded");
    assert!(ttft >= 300.0, "ttft {ttft} ms, server waited 300 ms");
    assert!(
        ttft <= record.latency_ms,
        "ttft {ttft} within latency {}",
        record.latency_ms
    );
    assert_eq!(g.time_to_first_token_ms, Some(ttft));
    assert_eq!(record.tokens_completion, Some(DONE_COMPLETION_TOKENS));
    let rate = record
        .tokens_per_second
        .expect("tokens known: rate recorded");
    assert!(rate > 0.0 && rate.is_finite());

    // A hit records neither.
    let hit = stream_scene(&f, &GenerateOptions::default())
        .await
        .generation();
    assert!(hit.cache_hit);
    let record = f.sink.last();
    assert!(record.cache_hit);
    assert_eq!(record.time_to_first_token_ms, None);
    assert_eq!(record.tokens_per_second, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_streaming_the_reply_comes_whole_and_the_record_has_no_ttft() {
    let f = fixture_with(Wire::Ollama, |b| b.stream(false)).await;
    // A server that cannot stream: one JSON body.
    f.server.script(
        Vec::new(),
        Ending::Status(Reply::ollama_ok(&PIECES.concat())),
    );
    let got = stream_scene(&f, &GenerateOptions::default()).await;
    assert!(got.result.is_ok(), "{:?}", got.result);
    assert_eq!(got.deltas(), [text(&PIECES.concat())]);
    assert_eq!(f.server.last_body()["stream"], json!(false));
    let g = got.generation();
    assert_eq!(g.time_to_first_token_ms, None);
    assert_eq!(f.sink.last().time_to_first_token_ms, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_stream_closes_the_upstream_connection_and_caches_nothing() {
    let f = fixture(Wire::Ollama).await;
    f.server
        .script(text_frames(&PIECES[..2], ms(5)), Ending::Stall);
    let agent = f.system.template_agent("writer");
    let mut stream = agent.generate_stream(
        "write_scene",
        &vars("a pier at night"),
        &GenerateOptions::default(),
    );
    let first = tokio::time::timeout(BOUND, stream.next())
        .await
        .expect("first delta within the bound");
    assert!(matches!(
        first,
        Some(Ok(StreamItem::Event(GenerationEvent::Delta(_))))
    ));
    drop(stream);
    f.server.wait_for_disconnects(1).await;
    assert_eq!(f.server.requests(), 1);
    assert_eq!(f.cache.stats().expect("stats").size, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_fails_calls_fast_and_lets_one_probe_through_when_the_time_is_up() {
    let cooldown = ms(400);
    let f = fixture_with(Wire::Ollama, |b| {
        b.max_attempts(1).breaker(CircuitBreaker::new(3, cooldown))
    })
    .await;
    f.server
        .set_default(Vec::new(), Ending::status(503, "loading"));
    let agent = f.system.template_agent("writer");
    let call = |setting: String| {
        let agent = agent.clone();
        async move {
            agent
                .generate_from_template("write_scene", &vars(&setting), &GenerateOptions::default())
                .await
        }
    };
    // Three failures open the breaker; the next seven calls never reach the server.
    for i in 0..10 {
        let err = call(format!("place {i}")).await.expect_err("server down");
        if i >= 3 {
            match &err {
                AgentError::Provider {
                    source:
                        ProviderError::CircuitOpen {
                            provider, failures, ..
                        },
                    ..
                } => {
                    assert_eq!(provider, "ollama");
                    assert_eq!(*failures, 3);
                }
                other => panic!("call {i}: not a fast failure: {other:?}"),
            }
            assert!(err.to_string().contains("next try in"), "{err}");
        }
    }
    assert_eq!(f.server.requests(), 3);
    // The server is back; once the cooldown is over, one probe goes through and closes it.
    f.server
        .set_default(text_frames(&PIECES, ms(1)), Ending::done());
    tokio::time::sleep(cooldown + ms(50)).await;
    let g = call("after the cooldown".to_owned())
        .await
        .expect("probe succeeds");
    assert_eq!(g.content, PIECES.concat());
    assert_eq!(f.server.requests(), 4);
    call("closed again".to_owned())
        .await
        .expect("closed breaker");
    assert_eq!(f.server.requests(), 5);
}

/// A provider that cannot stream (the offline echo provider) answers whole even when
/// streaming is on: one delta, and no time to first token in the reply or the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_cannot_stream_answers_whole_without_a_time_to_first_token() {
    let templates = tempfile::tempdir().expect("tempdir");
    write_template(templates.path(), "writer", "write_scene", 1, SCENE);
    let sink = MemorySink::new();
    let system = fast_builder(
        Arc::new(prompt_agent::EchoProvider::new()),
        templates.path(),
    )
    .metrics(sink.clone())
    .build()
    .expect("system");
    let got = collect(system.template_agent("writer").generate_stream(
        "write_scene",
        &vars("a pier at night"),
        &GenerateOptions::default(),
    ))
    .await;
    let deltas = got.deltas();
    let g = got.generation();
    assert_eq!(deltas, [text(&g.content)], "the whole reply as one delta");
    assert_eq!(g.time_to_first_token_ms, None);
    let record = sink.last();
    assert_eq!(record.time_to_first_token_ms, None);
    assert_eq!(record.tokens_per_second, None);
}
