//! The template agent end to end: real template files, a real ResponseCache on disk, metrics,
//! a fake provider over loopback HTTP.

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use prompt_agent::{
    GenerateOptions, OllamaProvider, PromptSystem, Provider, ProviderKind, RequestOptions,
    Settings, Vars, VersionReq,
};
use prompt_cache::{CacheConfig, CacheStore, ResponseCache};
use prompt_metrics::{JsonlStore, MetricsSink};
use serde_json::json;
use support::{BrokenCache, FakeServer, MemorySink, Reply, fast_builder, write_template};

const LONG: &str = "The morning sun rose over the quiet valley, long enough to pass.";

const SCENE: &str = r#"
model: { name: "qwen3:30b", temperature: 0.85, max_tokens: 2500 }
system_prompt: You are the Writer, writing in {{ language }}.
user_prompt_template: |
  Write a scene set in {{ setting }}.
variables:
  language: { type: string, default: "English" }
  setting: "string - Where the scene happens"
validation: { min_length: 20, max_length: 2000 }
examples:
  - input: { setting: "a harbour" }
    output: "Gulls wheeled over the harbour."
"#;

struct Fixture {
    server: FakeServer,
    system: PromptSystem,
    sink: Arc<MemorySink>,
    cache: Arc<ResponseCache>,
    _templates: tempfile::TempDir,
    _cache_dir: tempfile::TempDir,
}

async fn fixture(default: Reply) -> Fixture {
    let server = FakeServer::start(default).await;
    let templates = tempfile::tempdir().expect("tempdir");
    write_template(templates.path(), "writer", "write_scene", 1, SCENE);
    write_template(
        templates.path(),
        "writer",
        "write_scene",
        2,
        &SCENE.replace("Write a scene", "Write a vivid scene"),
    );
    let cache_dir = tempfile::tempdir().expect("tempdir");
    let cache = Arc::new(ResponseCache::open(CacheConfig::new(cache_dir.path())).expect("cache"));
    let sink = MemorySink::new();
    let provider: Arc<dyn Provider> =
        Arc::new(OllamaProvider::new(&server.base_url, Duration::from_secs(10)).expect("provider"));
    let system = fast_builder(provider, templates.path())
        .cache(cache.clone())
        .metrics(sink.clone())
        .build()
        .expect("system");
    Fixture {
        server,
        system,
        sink,
        cache,
        _templates: templates,
        _cache_dir: cache_dir,
    }
}

fn vars(setting: &str) -> Vars {
    let mut v = Vars::new();
    v.insert("setting".into(), json!(setting));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_identical_concurrent_calls_reach_the_provider_once() {
    let f = fixture(Reply::ollama_ok(LONG).delayed(Duration::from_millis(200))).await;
    let agent = f.system.template_agent("writer");
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let agent = agent.clone();
        tasks.push(tokio::spawn(async move {
            agent
                .generate_from_template(
                    "write_scene",
                    &vars("a forest"),
                    &GenerateOptions::default(),
                )
                .await
        }));
    }
    let mut generations = Vec::new();
    for task in tasks {
        generations.push(task.await.expect("join").expect("generate"));
    }
    assert_eq!(f.server.requests(), 1, "single flight");
    assert!(generations.iter().all(|g| g.content == LONG));
    assert_eq!(
        generations.iter().filter(|g| !g.cache_hit).count(),
        1,
        "one caller made the call"
    );
    let key = &generations[0].cache_key;
    assert!(generations.iter().all(|g| &g.cache_key == key));
    let records = f.sink.records();
    assert_eq!(records.len(), 50);
    assert_eq!(records.iter().filter(|r| !r.cache_hit).count(), 1);
    let leader = records
        .iter()
        .find(|r| !r.cache_hit)
        .expect("leader record");
    assert_eq!(
        (leader.tokens_prompt, leader.tokens_completion),
        (Some(12), Some(34))
    );
    assert!(
        records
            .iter()
            .filter(|r| r.cache_hit)
            .all(|r| r.tokens_prompt.is_none()),
        "hits spend no tokens"
    );

    // The next call is a cache hit, recorded as one.
    let next = agent
        .generate_from_template(
            "write_scene",
            &vars("a forest"),
            &GenerateOptions::default(),
        )
        .await
        .expect("hit");
    assert!(next.cache_hit);
    assert_eq!(next.content, LONG);
    assert_eq!(
        next.tokens_completion,
        Some(34),
        "a hit reports the original call's tokens"
    );
    assert_eq!(f.server.requests(), 1);
    let record = f.sink.last();
    assert!(record.cache_hit && record.validation_passed && record.error.is_none());
    assert_eq!(record.prompt_hash, key[..16]);
    assert_eq!(f.cache.stats().expect("stats").size, 1);
}

#[tokio::test]
async fn template_defaults_validation_and_metadata_are_applied() {
    let f = fixture(Reply::ollama_ok(LONG)).await;
    let agent = f.system.template_agent("writer");
    let g = agent
        .generate_from_template(
            "write_scene",
            &vars("a harbour"),
            &GenerateOptions {
                version: VersionReq::Exact(1),
                ..Default::default()
            },
        )
        .await
        .expect("ok");
    assert_eq!(
        f.server.last_body(),
        json!({
            "model": "qwen3:30b",
            "messages": [
                { "role": "system", "content": "You are the Writer, writing in English." },
                { "role": "user", "content": "Write a scene set in a harbour. /no_think" }
            ],
            "stream": true,
            "options": { "temperature": 0.85, "num_predict": 2500 }
        })
    );
    assert_eq!(g.template_version, 1);
    assert_eq!(g.template_hash.len(), 64);
    assert_eq!(g.cache_key.len(), 64);
    assert!(!g.cache_hit);
    let record = f.sink.last();
    assert_eq!(
        (record.agent.as_str(), record.task.as_str()),
        ("writer", "write_scene")
    );
    assert_eq!(record.template_version, Some(1));
    assert_eq!(
        record.template_hash.as_deref(),
        Some(g.template_hash.as_str())
    );
    assert_eq!(record.temperature, 0.85);
    assert_eq!(record.provider.as_deref(), Some("ollama"));

    // Overrides win; latest is v2; examples render ahead of the prompt; context is a second
    // system message.
    let options = GenerateOptions {
        request: RequestOptions {
            model: Some("llama3.2".into()),
            temperature: Some(0.1),
            ..RequestOptions::default()
        },
        examples: 1,
        context: Some("Chapter 3.".into()),
        ..Default::default()
    };
    let g = agent
        .generate_from_template("write_scene", &vars("a harbour"), &options)
        .await
        .expect("ok");
    assert_eq!(g.template_version, 2);
    let body = f.server.last_body();
    assert_eq!(body["model"], "llama3.2");
    assert_eq!(body["options"]["temperature"], 0.1);
    assert_eq!(
        body["messages"][1],
        json!({ "role": "system", "content": "CURRENT STORY CONTEXT:\nChapter 3." })
    );
    let user = body["messages"][2]["content"].as_str().expect("user");
    assert!(
        user.contains("Gulls wheeled over the harbour.") && user.contains("Write a vivid scene"),
        "{user}"
    );
    assert!(!user.ends_with("/no_think"), "no qwen quirk for llama");

    // The template's min_length (20) is enforced: short replies are retried.
    f.server.push([Reply::ollama_ok("Too short.")]);
    let g = agent
        .generate_from_template("write_scene", &vars("a cave"), &GenerateOptions::default())
        .await
        .expect("ok");
    assert_eq!(g.retry_count, 1);
}

#[tokio::test]
async fn no_cache_skips_the_read_but_still_writes() {
    let f = fixture(Reply::ollama_ok(LONG)).await;
    let agent = f.system.template_agent("writer");
    let first = agent
        .generate_from_template("write_scene", &vars("a mill"), &GenerateOptions::default())
        .await
        .expect("ok");
    assert!(!first.cache_hit);

    let fresh = "A fresher reply that also passes validation easily.";
    f.server.push([Reply::ollama_ok(fresh)]);
    let no_cache = GenerateOptions {
        no_cache: true,
        ..Default::default()
    };
    let second = agent
        .generate_from_template("write_scene", &vars("a mill"), &no_cache)
        .await
        .expect("ok");
    assert!(!second.cache_hit);
    assert_eq!(second.content, fresh);
    assert_eq!(f.server.requests(), 2);

    let third = agent
        .generate_from_template("write_scene", &vars("a mill"), &GenerateOptions::default())
        .await
        .expect("ok");
    assert!(third.cache_hit);
    assert_eq!(third.content, fresh, "the no_cache reply was stored");
    assert_eq!(f.server.requests(), 2);
}

#[tokio::test]
async fn failures_and_think_only_replies_are_never_cached() {
    let f = fixture(Reply::ollama_ok(LONG)).await;
    let agent = f.system.template_agent("writer");
    f.server
        .push(vec![Reply::json(500, json!({"error": "oom"})); 3]);
    let err = agent
        .generate_from_template("write_scene", &vars("a ship"), &GenerateOptions::default())
        .await
        .expect_err("500s");
    assert_eq!(err.kind(), "server_error");
    let record = f.sink.last();
    assert_eq!(record.retry_count, 2);
    assert!(record.error.is_some() && !record.validation_passed && !record.cache_hit);
    assert_eq!(record.template_version, Some(2));

    f.server.push(vec![
        Reply::ollama_ok(
            "<think>only thoughts, long enough to pass otherwise</think>"
        );
        3
    ]);
    let err = agent
        .generate_from_template("write_scene", &vars("a ship"), &GenerateOptions::default())
        .await
        .expect_err("think");
    assert_eq!(err.kind(), "validation");
    assert_eq!(f.cache.stats().expect("stats").size, 0);

    let ok = agent
        .generate_from_template("write_scene", &vars("a ship"), &GenerateOptions::default())
        .await
        .expect("ok");
    assert!(!ok.cache_hit);
    assert_eq!(f.server.requests(), 7);
}

#[tokio::test]
async fn every_part_of_the_request_is_in_the_key() {
    let f = fixture(Reply::ollama_ok(LONG)).await;
    let agent = f.system.template_agent("writer");
    let key = |options: &GenerateOptions, setting: &str| {
        agent
            .prepare("write_scene", &vars(setting), options)
            .expect("prepare")
            .cache_key
    };
    let base = GenerateOptions::default();
    let k0 = key(&base, "a");
    assert_eq!(k0, key(&base, "a"), "stable");
    let with = |change: fn(&mut RequestOptions)| {
        let mut options = base.clone();
        change(&mut options.request);
        options
    };
    let variants = [
        with(|o| o.model = Some("m".into())),
        with(|o| o.temperature = Some(0.2)),
        with(|o| o.top_p = Some(0.5)),
        with(|o| o.max_tokens = Some(9)),
        with(|o| o.seed = Some(1)),
        with(|o| o.stop = Some(vec!["x".into()])),
        with(|o| o.context_size = Some(4096)),
        with(|o| o.format = Some(prompt_agent::ResponseFormat::Json)),
        with(|o| o.min_length = Some(1)),
        with(|o| o.max_length = Some(99)),
        with(|o| {
            o.provider_options = [("top_k".to_owned(), json!(5))].into_iter().collect();
        }),
        GenerateOptions {
            context: Some("c".into()),
            ..base.clone()
        },
        GenerateOptions {
            version: VersionReq::Exact(1),
            ..base.clone()
        },
        GenerateOptions {
            examples: 1,
            ..base.clone()
        },
    ];
    let mut all: Vec<_> = variants.iter().map(|o| key(o, "a")).collect();
    all.push(key(&base, "b"));
    all.push(k0);
    all.sort();
    all.dedup();
    assert_eq!(
        all.len(),
        variants.len() + 2,
        "every change gives a new key"
    );
}

#[tokio::test]
async fn a_broken_cache_never_fails_a_generation() {
    let server = FakeServer::start(Reply::ollama_ok(LONG)).await;
    let templates = tempfile::tempdir().expect("tempdir");
    write_template(templates.path(), "writer", "write_scene", 1, SCENE);
    let broken = Arc::new(BrokenCache::default());
    let provider: Arc<dyn Provider> =
        Arc::new(OllamaProvider::new(&server.base_url, Duration::from_secs(5)).expect("p"));
    let system = fast_builder(provider, templates.path())
        .cache(broken.clone())
        .build()
        .expect("system");
    let agent = system.template_agent("writer");
    for _ in 0..2 {
        let g = agent
            .generate_from_template("write_scene", &vars("x"), &GenerateOptions::default())
            .await
            .expect("ok");
        assert!(!g.cache_hit);
    }
    assert_eq!(broken.gets.load(Ordering::SeqCst), 2);
    assert_eq!(broken.puts.load(Ordering::SeqCst), 2);
    assert_eq!(server.requests(), 2);
}

#[tokio::test]
async fn template_problems_are_usage_errors_with_a_metrics_record() {
    let f = fixture(Reply::ollama_ok(LONG)).await;
    let agent = f.system.template_agent("writer");
    let err = agent
        .generate_from_template("write_poem", &Vars::new(), &GenerateOptions::default())
        .await
        .expect_err("missing");
    assert!(err.is_usage_error(), "{err}");
    assert!(err.to_string().contains("write_poem"), "{err}");
    assert_eq!(
        f.sink.last().error.as_deref(),
        Some(err.to_string().as_str())
    );

    let err = agent
        .generate_from_template("write_scene", &Vars::new(), &GenerateOptions::default())
        .await
        .expect_err("vars");
    assert!(err.is_usage_error(), "{err}");
    assert!(err.to_string().contains("setting"), "{err}");
    assert_eq!(f.server.requests(), 0);
    assert_eq!(f.sink.records().len(), 2);
}

#[tokio::test]
async fn from_settings_with_the_echo_provider_runs_offline_end_to_end() {
    let root = tempfile::tempdir().expect("tempdir");
    let templates = root.path().join("templates");
    write_template(
        &templates,
        "writer",
        "write_scene",
        1,
        &SCENE.replace("min_length: 20", "min_length: 500"),
    );
    let settings = Settings {
        templates: Some(templates),
        cache_dir: Some(root.path().join("cache")),
        cache_max_size: Some(10),
        cache_ttl: Some(60),
        metrics_dir: Some(root.path().join("metrics")),
        provider: Some(ProviderKind::Echo),
        ..Settings::default()
    };
    let system = PromptSystem::from_settings(&settings).expect("system");
    assert_eq!(system.provider().name(), "echo");
    let agent = system.template_agent("writer");
    let g = agent
        .generate_from_template(
            "write_scene",
            &vars("a lighthouse"),
            &GenerateOptions::default(),
        )
        .await
        .expect("ok");
    assert!(
        g.content.starts_with("[echo] model=qwen3:30b"),
        "{}",
        g.content
    );
    assert!(
        g.content.contains("Write a scene set in a lighthouse."),
        "{}",
        g.content
    );
    let len = g.content.chars().count();
    assert!(
        (500..=2000).contains(&len),
        "honours the template's validation: {len}"
    );
    let again = agent
        .generate_from_template(
            "write_scene",
            &vars("a lighthouse"),
            &GenerateOptions::default(),
        )
        .await
        .expect("ok");
    assert!(again.cache_hit);
    assert_eq!(again.content, g.content);
    system.flush().expect("flush");

    let store = JsonlStore::open(root.path().join("metrics")).expect("metrics");
    let stats = store.task_stats("writer", "write_scene", 1).expect("stats");
    assert_eq!(stats.total_calls, 2);
    assert_eq!(stats.cache_hit_rate, 0.5);
    // On disk: another cache opened on the directory serves it.
    let key: prompt_cache::CacheKey = g.cache_key.parse().expect("key");
    let reopened = ResponseCache::open(CacheConfig::new(root.path().join("cache"))).expect("open");
    let stored = reopened.get(&key).expect("get").expect("on disk");
    assert_eq!(&*stored.response, g.content.as_str());
    store.flush().expect("flush");
}

#[tokio::test]
async fn from_settings_reports_bad_settings() {
    let root = tempfile::tempdir().expect("tempdir");
    let base = Settings {
        templates: Some(root.path().to_owned()),
        cache_dir: Some(root.path().join("cache")),
        metrics_dir: Some(root.path().join("metrics")),
        provider: Some(ProviderKind::Ollama),
        ..Settings::default()
    };
    let cases: Vec<(Settings, &str)> = vec![
        (
            Settings {
                concurrency: Some(0),
                ..base.clone()
            },
            "concurrency",
        ),
        (
            Settings {
                timeout: Some(0.0),
                ..base.clone()
            },
            "timeout",
        ),
        (
            Settings {
                model: Some(" ".into()),
                ..base.clone()
            },
            "model",
        ),
        (
            Settings {
                provider: None,
                ..base.clone()
            },
            "provider",
        ),
    ];
    for (settings, field) in cases {
        let err = PromptSystem::from_settings(&settings).expect_err(field);
        assert!(err.is_usage_error(), "{err}");
        assert!(err.to_string().contains(field), "{err}");
    }
    if !cfg!(feature = "redis") {
        let settings = Settings {
            cache_url: Some("redis://127.0.0.1:1/0".into()),
            ..base.clone()
        };
        let err = PromptSystem::from_settings(&settings).expect_err("no redis feature");
        assert!(err.to_string().contains("redis"), "{err}");
    }
    let ok = PromptSystem::from_settings(&base).expect("minimal settings");
    assert!(ok.cache().is_some() && ok.metrics().is_some());
    assert_eq!(ok.provider().name(), "ollama");
    assert_eq!(ok.policy().max_attempts, 3);
}
