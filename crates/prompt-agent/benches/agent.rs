//! The template agent's own overhead per call (template, render, key, cache, metrics) against
//! an instant in-process provider, with a real `ResponseCache` and a real `JsonlStore` in
//! temporary directories.
//!
//! - `agent/template_hit`: a cache hit (target ≤ 20 µs).
//! - `agent/template_miss`: a miss every time (a new variable value), so render, key, lookup,
//!   single-flight, provider, cache write and metrics record all run.
//! - `agent/concurrent_2_threads`: cache hits from two tasks on a two-thread runtime.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use criterion::{Criterion, Throughput, criterion_main};
use prompt_agent::{
    ChatRequest, ChatResponse, GenerateOptions, PromptSystem, Provider, ProviderError,
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

fn setup() -> Setup {
    let templates = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(templates.path().join("writer")).expect("mkdir");
    std::fs::write(
        templates.path().join("writer/write_scene_v1.yaml"),
        TEMPLATE,
    )
    .expect("write");
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

mod harness {
    //! The criterion entry points (the macro's functions carry no docs).
    #![allow(missing_docs)]
    criterion::criterion_group!(benches, super::bench);
}

criterion_main!(harness::benches);
