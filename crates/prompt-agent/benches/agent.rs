//! The template agent's own overhead per call (template, render, key, cache, metrics) against
//! an instant in-process provider, with a real `ResponseCache` and a real `JsonlStore` in
//! temporary directories.
//!
//! - `agent/template_hit`: a cache hit (target ≤ 20 µs).
//! - `agent/template_miss`: a miss every time (a new variable value), so render, key, lookup,
//!   single-flight, provider, cache write and metrics record all run.
//! - `agent/concurrent_2_threads`: cache hits from two tasks on a two-thread runtime.
//!
//! Streaming, with a realistic reply (2,500 words of text in 540 deltas after 60 reasoning
//! deltas, 600 in all) on a current-thread runtime, every event consumed:
//!
//! - `agent/stream_hit_replay`: `generate_stream` on a cache hit whose entry was stored from a
//!   streamed reply, so its 600 deltas are replayed at once (throughput in deltas).
//! - `agent/stream_call` and `agent/whole_call`: the same call without a cache or metrics,
//!   against a provider that answers at once, streamed (`generate_stream` with streaming on:
//!   the provider's 600 deltas through the spawned task, the assembler and the channel) and
//!   whole (`generate_from_template` with streaming off). Their difference is the cost of the
//!   streaming machinery.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use criterion::{Criterion, Throughput, criterion_main};
use futures_util::StreamExt;
use prompt_agent::{
    ChatRequest, ChatResponse, Delta, EventStream, GenerateOptions, Generation, GenerationEvent,
    GenerationStream, PromptSystem, Provider, ProviderError, StreamEnd, StreamEvent, StreamItem,
    TemplateAgent, Vars,
};
use prompt_cache::{CacheConfig, ResponseCache};
use prompt_metrics::JsonlStore;
use serde_json::json;

const TEMPLATE: &str = r#"version: 1
agent: writer
task: write_scene
model: { name: "llama3.2", temperature: 0.8, max_tokens: 2000 }
system_prompt: |
  You are the Writer of a novel-writing team, drafting a single scene in {{ language }}.
  Stay in one point of view, use concrete detail and natural dialogue.
user_prompt_template: |
  Write a scene for "{{ story_title }}".
  SETTING: {{ setting }}
  POINT OF VIEW: {{ pov }}
  {% if characters %}ALSO PRESENT: {{ characters | join(", ") }}{% endif %}
  Length: about {{ words }} words.
variables:
  language: { type: string, default: "English" }
  story_title: "string - Title"
  setting: "string - Where"
  pov: "string - Point of view"
  characters: { type: list, required: false, default: [] }
  words: { type: integer, default: 800 }
validation: { min_length: 10 }
"#;

/// A provider that answers at once with a fixed reply.
#[derive(Debug)]
struct InstantProvider;

#[async_trait]
impl Provider for InstantProvider {
    fn name(&self) -> &str {
        "instant"
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        Ok(ChatResponse {
            content: "The lighthouse keeper climbed the stairs for the last time. ".repeat(20),
            model: request.model().to_owned(),
            tokens_prompt: Some(120),
            tokens_completion: Some(300),
            finish_reason: Some("stop".to_owned()),
            latency: Duration::ZERO,
            ..ChatResponse::default()
        })
    }
}

struct Setup {
    agent: TemplateAgent,
    system: PromptSystem,
    _dirs: [tempfile::TempDir; 3],
}

/// A temporary template directory holding `writer/write_scene_v1.yaml`.
fn templates_dir() -> tempfile::TempDir {
    let templates = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(templates.path().join("writer")).expect("mkdir");
    std::fs::write(
        templates.path().join("writer/write_scene_v1.yaml"),
        TEMPLATE,
    )
    .expect("write");
    templates
}

fn setup() -> Setup {
    let templates = templates_dir();
    let cache_dir = tempfile::tempdir().expect("tempdir");
    let metrics_dir = tempfile::tempdir().expect("tempdir");
    let cache =
        ResponseCache::open(CacheConfig::new(cache_dir.path()).max_size(100_000)).expect("cache");
    let metrics = JsonlStore::open(metrics_dir.path()).expect("metrics");
    let system = PromptSystem::builder()
        .templates_dir(templates.path())
        .provider(Arc::new(InstantProvider))
        .cache(Arc::new(cache))
        .metrics(Arc::new(metrics))
        .build()
        .expect("system");
    Setup {
        agent: system.template_agent("writer"),
        system,
        _dirs: [templates, cache_dir, metrics_dir],
    }
}

fn vars(setting: &str) -> Vars {
    let mut v = Vars::new();
    v.insert("story_title".into(), json!("The Last Light"));
    v.insert("setting".into(), json!(setting));
    v.insert("pov".into(), json!("Mara, the keeper"));
    v.insert("characters".into(), json!(["Tomas", "the inspector"]));
    v
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let s = setup();
    let options = GenerateOptions::default();
    let hit_vars = vars("a lighthouse in a storm");
    let first = rt
        .block_on(
            s.agent
                .generate_from_template("write_scene", &hit_vars, &options),
        )
        .expect("warm");
    assert!(!first.cache_hit);

    let mut group = c.benchmark_group("agent");
    group.throughput(Throughput::Elements(1));
    group.bench_function("template_hit", |b| {
        b.iter(|| {
            let g = rt
                .block_on(s.agent.generate_from_template(
                    "write_scene",
                    black_box(&hit_vars),
                    &options,
                ))
                .expect("hit");
            debug_assert!(g.cache_hit);
            black_box(g)
        })
    });

    let counter = AtomicU64::new(0);
    group.bench_function("template_miss", |b| {
        b.iter_batched(
            || {
                vars(&format!(
                    "harbour number {}",
                    counter.fetch_add(1, Ordering::Relaxed)
                ))
            },
            |v| {
                let g = rt
                    .block_on(s.agent.generate_from_template("write_scene", &v, &options))
                    .expect("miss");
                debug_assert!(!g.cache_hit);
                black_box(g)
            },
            criterion::BatchSize::SmallInput,
        )
    });

    let mt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    group.bench_function("concurrent_2_threads", |b| {
        b.iter_custom(|iters| {
            let started = Instant::now();
            mt.block_on(async {
                let tasks: Vec<_> = (0..2)
                    .map(|_| {
                        let agent = s.agent.clone();
                        let v = hit_vars.clone();
                        tokio::spawn(async move {
                            let options = GenerateOptions::default();
                            for _ in 0..iters.div_ceil(2) {
                                let g = agent
                                    .generate_from_template("write_scene", &v, &options)
                                    .await
                                    .expect("hit");
                                black_box(g);
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.expect("join");
                }
            });
            started.elapsed()
        })
    });
    group.finish();
    s.system.flush().expect("flush");
}

/// Deltas of the streamed reply, reasoning included.
const REPLY_DELTAS: usize = 600;
/// Reasoning deltas, sent before the text.
const REASONING_DELTAS: usize = 60;
/// Words of reply text, spread over the text deltas.
const REPLY_WORDS: usize = 2_500;
/// Words of reasoning, spread over the reasoning deltas.
const REASONING_WORDS: usize = 240;

const PROSE: &str = "The lamp turned above her while the sea threw itself against the rocks \
    below. Mara counted the seconds between the flashes, as her father had taught her, and \
    listened for the inspector's boots on the iron stairs. Tomas had not come back from the \
    harbour. She wrote the hour in the log, her hand steady, and wondered whether anyone on \
    the mainland still read it.";
const THOUGHTS: &str = "The scene needs the storm first, then the log book, then the \
    knock at the door. Keep Mara's point of view and let the inspector stay unseen until the \
    end.";

/// `words` words cycled from `source`, cut into `pieces` deltas of nearly equal word counts
/// (each word after the first with its leading space or paragraph break).
fn pieces(source: &str, words: usize, pieces: usize, kind: fn(String) -> Delta) -> Vec<Delta> {
    assert!(words >= pieces, "every delta needs a word");
    let source: Vec<&str> = source.split_whitespace().collect();
    let mut start = 0;
    (0..pieces)
        .map(|i| {
            let end = (i + 1) * words / pieces;
            let mut text = String::new();
            for n in start..end {
                if n > 0 {
                    text.push_str(if n % 120 == 0 { "\n\n" } else { " " });
                }
                text.push_str(source[n % source.len()]);
            }
            start = end;
            kind(text)
        })
        .collect()
}

/// A provider that answers at once with a fixed reply: whole from `chat`, and from
/// `chat_stream` as its deltas, one at a time, then the end.
#[derive(Debug)]
struct InstantStreamProvider {
    deltas: Arc<[Delta]>,
    content: String,
    reasoning: String,
}

impl InstantStreamProvider {
    fn new() -> Self {
        let mut deltas = pieces(
            THOUGHTS,
            REASONING_WORDS,
            REASONING_DELTAS,
            Delta::Reasoning,
        );
        deltas.extend(pieces(
            PROSE,
            REPLY_WORDS,
            REPLY_DELTAS - REASONING_DELTAS,
            Delta::Text,
        ));
        let join = |reasoning: bool| -> String {
            deltas
                .iter()
                .filter(|d| matches!(d, Delta::Reasoning(_)) == reasoning)
                .map(Delta::text)
                .collect()
        };
        let (content, reasoning) = (join(false), join(true));
        assert_eq!(content.split_whitespace().count(), REPLY_WORDS);
        Self {
            deltas: deltas.into(),
            content,
            reasoning,
        }
    }

    fn end(request: &ChatRequest) -> StreamEnd {
        StreamEnd {
            model: Some(request.model().to_owned()),
            tokens_prompt: Some(120),
            tokens_completion: Some(3_400),
            finish_reason: Some("stop".to_owned()),
            ..StreamEnd::default()
        }
    }
}

#[async_trait]
impl Provider for InstantStreamProvider {
    fn name(&self) -> &str {
        "instant-stream"
    }

    fn streams(&self) -> bool {
        true
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        let end = Self::end(request);
        Ok(ChatResponse {
            content: self.content.clone(),
            model: end.model.unwrap_or_default(),
            tokens_prompt: end.tokens_prompt,
            tokens_completion: end.tokens_completion,
            finish_reason: end.finish_reason,
            reasoning: Some(self.reasoning.clone()),
            latency: Duration::ZERO,
            ..ChatResponse::default()
        })
    }

    async fn chat_stream(&self, request: &ChatRequest) -> Result<EventStream, ProviderError> {
        let deltas = self.deltas.clone();
        let end = Self::end(request);
        let events = (0..deltas.len())
            .map(move |i| Ok(StreamEvent::Delta(deltas[i].clone())))
            .chain(std::iter::once(Ok(StreamEvent::Done(end))));
        Ok(Box::pin(futures_util::stream::iter(events)))
    }
}

/// What a consumed stream yielded.
struct Drained {
    deltas: usize,
    reasoning_deltas: usize,
    generation: Generation,
}

/// Starts a stream (inside the runtime, which runs its task) and consumes every event;
/// panics on a retry or an error.
async fn drain(start: impl FnOnce() -> GenerationStream<Generation>) -> Drained {
    let mut stream = start();
    let (mut deltas, mut reasoning_deltas) = (0, 0);
    while let Some(item) = stream.next().await {
        match item.expect("stream") {
            StreamItem::Event(GenerationEvent::Delta(delta)) => {
                deltas += 1;
                reasoning_deltas += usize::from(matches!(delta, Delta::Reasoning(_)));
                black_box(delta);
            }
            StreamItem::Event(GenerationEvent::Retry { reason, .. }) => {
                panic!("unexpected retry: {reason}")
            }
            StreamItem::Done(generation) => {
                return Drained {
                    deltas,
                    reasoning_deltas,
                    generation,
                };
            }
        }
    }
    panic!("the stream ended without a result")
}

fn bench_stream(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let provider = Arc::new(InstantStreamProvider::new());
    let templates = templates_dir();
    let cache_dir = tempfile::tempdir().expect("tempdir");
    let metrics_dir = tempfile::tempdir().expect("tempdir");
    let system = |stream: bool, cached: bool| {
        let mut builder = PromptSystem::builder()
            .templates_dir(templates.path())
            .provider(provider.clone())
            .stream(stream);
        if cached {
            let cache = ResponseCache::open(CacheConfig::new(cache_dir.path()).max_size(1_000))
                .expect("cache");
            let metrics = JsonlStore::open(metrics_dir.path()).expect("metrics");
            builder = builder.cache(Arc::new(cache)).metrics(Arc::new(metrics));
        }
        builder.build().expect("system")
    };
    let options = GenerateOptions::default();
    let v = vars("a lighthouse in a storm");

    // The cache entry is the one a streamed miss stores.
    let cached = system(true, true);
    let replaying = cached.template_agent("writer");
    let stream = || replaying.generate_stream("write_scene", black_box(&v), &options);
    let miss = rt.block_on(drain(stream));
    assert!(!miss.generation.cache_hit);
    let hit = rt.block_on(drain(stream));
    assert!(hit.generation.cache_hit, "the second call must hit");
    assert_eq!(
        (hit.deltas, hit.reasoning_deltas),
        (REPLY_DELTAS, REASONING_DELTAS),
        "the hit must replay the stored deltas"
    );
    assert_eq!(hit.generation.content, provider.content);
    assert_eq!(hit.generation.reasoning, miss.generation.reasoning);

    let streaming = system(true, false).template_agent("writer");
    let whole = system(false, false).template_agent("writer");
    let streamed = rt.block_on(drain(|| {
        streaming.generate_stream("write_scene", &v, &options)
    }));
    let plain = rt
        .block_on(whole.generate_from_template("write_scene", &v, &options))
        .expect("whole");
    assert_eq!(streamed.deltas, REPLY_DELTAS);
    assert_eq!(
        (&streamed.generation.content, &streamed.generation.reasoning),
        (&plain.content, &plain.reasoning),
        "both paths must give the same reply"
    );
    assert!(!streamed.generation.cache_hit && !plain.cache_hit);

    // Short runs: this group stays well under a minute in full runs too.
    let mut group = c.benchmark_group("agent");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(REPLY_DELTAS as u64));
    group.bench_function("stream_hit_replay", |b| {
        b.iter(|| {
            let d = rt.block_on(drain(stream));
            debug_assert!(d.generation.cache_hit && d.deltas == REPLY_DELTAS);
            black_box(d.generation)
        })
    });
    group.throughput(Throughput::Elements(1));
    group.bench_function("stream_call", |b| {
        b.iter(|| {
            let d = rt.block_on(drain(|| {
                streaming.generate_stream("write_scene", black_box(&v), &options)
            }));
            debug_assert!(!d.generation.cache_hit && d.deltas == REPLY_DELTAS);
            black_box(d.generation)
        })
    });
    group.bench_function("whole_call", |b| {
        b.iter(|| {
            let g = rt
                .block_on(whole.generate_from_template("write_scene", black_box(&v), &options))
                .expect("whole");
            debug_assert!(!g.cache_hit);
            black_box(g)
        })
    });
    group.finish();
    cached.flush().expect("flush");
}

mod harness {
    //! The criterion entry points (the macro's functions carry no docs).
    #![allow(missing_docs)]
    criterion::criterion_group!(benches, super::bench, super::bench_stream);
}

criterion_main!(harness::benches);
