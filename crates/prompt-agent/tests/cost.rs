//! Cost, savings, tags and budgets end to end: a fake OpenAI-compatible server over loopback
//! reporting cached and reasoning tokens, a real ResponseCache and real metrics files.

mod support;

use std::sync::Arc;
use std::time::Duration;

use prompt_agent::{
    AgentError, ApiKey, Budget, EchoProvider, GenerateOptions, OpenAiProvider, PriceTable,
    PromptSystem, Provider, RequestOptions, StreamEnd, Vars,
};
use prompt_cache::{CacheConfig, ResponseCache};
use prompt_metrics::{JsonlStore, MetricsSink, PromptMetrics};
use serde_json::json;
use support::{Ending, FakeServer, Frame, Reply, StreamServer, fast_builder, write_template};

const LONG: &str = "The morning sun rose over the quiet valley, long enough to pass.";

/// USD per million tokens of `priced-model`.
const PRICES: &str = r#"
[prices."priced-*"]
input = 2.0
cached_input = 1.0
output = 10.0
reasoning = 20.0
"#;

/// 1,000 prompt tokens (400 cached), 500 completion tokens (100 reasoning).
fn usage_reply() -> Reply {
    Reply::json(
        200,
        json!({
            "id": "c1", "object": "chat.completion", "created": 1, "model": "priced-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": LONG}, "finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500,
                "prompt_tokens_details": {"cached_tokens": 400},
                "completion_tokens_details": {"reasoning_tokens": 100}
            }
        }),
    )
}

/// The cost of [`usage_reply`] at [`PRICES`].
const USAGE_COST: f64 = (600.0 * 2.0 + 400.0 * 1.0 + 400.0 * 10.0 + 100.0 * 20.0) / 1e6;

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-12)
}

fn openai(url: &str) -> Arc<dyn Provider> {
    Arc::new(OpenAiProvider::new(url, ApiKey::None, Duration::from_secs(5)).expect("provider"))
}

struct World {
    system: PromptSystem,
    metrics: Arc<JsonlStore>,
    _templates: tempfile::TempDir,
}

fn world(
    provider: Arc<dyn Provider>,
    metrics_dir: &std::path::Path,
    cache_dir: &std::path::Path,
    budget: Budget,
) -> World {
    let templates = tempfile::tempdir().expect("tempdir");
    write_template(
        templates.path(),
        "writer",
        "scene",
        1,
        "model: { name: priced-model, max_tokens: 1000 }\nsystem_prompt: You write.\nuser_prompt_template: \"Write about {{ topic }}.\"\nvariables:\n  topic: \"string - what\"\n",
    );
    let metrics = Arc::new(JsonlStore::open(metrics_dir).expect("metrics"));
    let cache = ResponseCache::open(CacheConfig::new(cache_dir)).expect("cache");
    let system = fast_builder(provider, templates.path())
        .metrics(metrics.clone())
        .cache(Arc::new(cache))
        .prices(PriceTable::from_toml(PRICES, "test prices").expect("prices"))
        .budget(budget)
        .build()
        .expect("system");
    World {
        system,
        metrics,
        _templates: templates,
    }
}

fn vars(topic: &str) -> Vars {
    let mut v = Vars::new();
    v.insert("topic".into(), json!(topic));
    v
}

fn records(store: &JsonlStore) -> Vec<PromptMetrics> {
    store.flush().expect("flush");
    let mut out = Vec::new();
    store.scan(1, |m| out.push(m.clone())).expect("scan");
    out
}

#[tokio::test]
async fn a_call_is_priced_per_token_class_and_a_hit_records_what_it_saved() {
    let server = FakeServer::start(usage_reply()).await;
    let dirs = (
        tempfile::tempdir().expect("t"),
        tempfile::tempdir().expect("t"),
    );
    let w = world(
        openai(&server.base_url),
        dirs.0.path(),
        dirs.1.path(),
        Budget::default(),
    );
    let writer = w.system.template_agent("writer");
    let tagged = |tags: &[&str]| GenerateOptions {
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        ..GenerateOptions::default()
    };
    let first = writer
        .generate_from_template("scene", &vars("rain"), &tagged(&["eval", "nightly"]))
        .await
        .expect("first");
    assert!(!first.cache_hit);
    // The same request with other tags: tags are not part of the cache key.
    let second = writer
        .generate_from_template("scene", &vars("rain"), &tagged(&["other"]))
        .await
        .expect("second");
    assert!(second.cache_hit);
    assert_eq!(server.requests(), 1);

    let recs = records(&w.metrics);
    assert_eq!(recs.len(), 2);
    assert_eq!(
        (recs[0].tokens_cached, recs[0].tokens_reasoning),
        (Some(400), Some(100))
    );
    assert!(close(recs[0].cost_usd, USAGE_COST), "{:?}", recs[0]);
    assert_eq!(recs[0].saved_usd, None);
    assert_eq!(recs[0].tags, vec!["eval", "nightly"]);
    assert_eq!(recs[1].cost_usd, Some(0.0));
    assert!(close(recs[1].saved_usd, USAGE_COST), "{:?}", recs[1]);
    assert_eq!(recs[1].tags, vec!["other"]);

    let stats = w.metrics.agent_stats("writer", 1).expect("stats");
    assert!((stats.total_cost_usd - USAGE_COST).abs() < 1e-12);
    assert!((stats.saved_usd - USAGE_COST).abs() < 1e-12);

    // A hit in a new process (the entry read back from disk) still knows what it saved.
    w.system.flush().expect("flush");
    drop(writer);
    drop(w);
    let again = world(
        openai(&server.base_url),
        dirs.0.path(),
        dirs.1.path(),
        Budget::default(),
    );
    let hit = again
        .system
        .template_agent("writer")
        .generate_from_template("scene", &vars("rain"), &GenerateOptions::default())
        .await
        .expect("hit");
    assert!(hit.cache_hit);
    let last = records(&again.metrics).pop().expect("record");
    assert!(close(last.saved_usd, USAGE_COST), "{last:?}");
}

#[tokio::test]
async fn streamed_usage_details_are_read_and_priced() {
    let server = StreamServer::start().await;
    server.script(
        vec![Frame::text(LONG)],
        Ending::Done(StreamEnd {
            model: Some("priced-model".into()),
            tokens_prompt: Some(1000),
            tokens_completion: Some(500),
            tokens_cached: Some(400),
            tokens_reasoning: Some(100),
            finish_reason: Some("stop".into()),
        }),
    );
    let dirs = (
        tempfile::tempdir().expect("t"),
        tempfile::tempdir().expect("t"),
    );
    let w = world(
        openai(&server.base_url),
        dirs.0.path(),
        dirs.1.path(),
        Budget::default(),
    );
    let reply = w
        .system
        .agent("editor", "Editor", "You edit.")
        .generate("Tighten this.", None, &GenerateOptions::default())
        .await
        .expect("reply");
    assert_eq!(reply.model, "priced-model");
    let rec = records(&w.metrics).pop().expect("record");
    assert_eq!(
        (rec.tokens_cached, rec.tokens_reasoning),
        (Some(400), Some(100))
    );
    assert!(close(rec.cost_usd, USAGE_COST), "{rec:?}");
}

#[tokio::test]
async fn local_models_cost_nothing_and_unpriced_hosted_ones_are_unknown() {
    let dirs = (
        tempfile::tempdir().expect("t"),
        tempfile::tempdir().expect("t"),
    );
    let echo = world(
        Arc::new(EchoProvider::new()),
        dirs.0.path(),
        dirs.1.path(),
        Budget::default(),
    );
    echo.system
        .agent("editor", "Editor", "You edit.")
        .generate(
            "Tighten this sentence, please, it is long.",
            None,
            &GenerateOptions::with_request(RequestOptions {
                model: Some("unpriced-local".into()),
                ..RequestOptions::default()
            }),
        )
        .await
        .expect("echo");
    assert_eq!(records(&echo.metrics).pop().expect("r").cost_usd, Some(0.0));

    let server = FakeServer::start(Reply::openai_ok(LONG)).await;
    let dirs = (
        tempfile::tempdir().expect("t"),
        tempfile::tempdir().expect("t"),
    );
    let hosted = world(
        openai(&server.base_url),
        dirs.0.path(),
        dirs.1.path(),
        Budget::default(),
    );
    hosted
        .system
        .agent("editor", "Editor", "You edit.")
        .generate("Tighten this.", None, &GenerateOptions::default())
        .await
        .expect("hosted");
    // `gpt-test` is in neither the test's table nor the shipped one.
    let rec = records(&hosted.metrics).pop().expect("r");
    assert_eq!(rec.model, "gpt-test");
    assert_eq!(rec.cost_usd, None);
}

#[tokio::test]
async fn a_budget_shared_by_two_systems_on_one_directory_refuses_the_call_that_would_cross_it() {
    let server = FakeServer::start(usage_reply()).await;
    let metrics_dir = tempfile::tempdir().expect("t");
    // One call costs USAGE_COST (0.0076); its worst case here is a little over 0.02 (1,000 max
    // tokens at the reasoning price, plus the prompt). The first call fits under 0.025; a
    // second, with the first's spend, does not.
    let budget = Budget {
        daily_usd: Some(0.025),
        ..Budget::default()
    };
    let caches = (
        tempfile::tempdir().expect("t"),
        tempfile::tempdir().expect("t"),
    );
    let a = world(
        openai(&server.base_url),
        metrics_dir.path(),
        caches.0.path(),
        budget.clone(),
    );
    let b = world(
        openai(&server.base_url),
        metrics_dir.path(),
        caches.1.path(),
        budget,
    );
    a.system
        .template_agent("writer")
        .generate_from_template("scene", &vars("one"), &GenerateOptions::default())
        .await
        .expect("a spends");
    // `b` sees what `a` spent through the files once `a`'s record is written.
    a.metrics.flush().expect("flush");
    let err = b
        .system
        .template_agent("writer")
        .generate_from_template("scene", &vars("two"), &GenerateOptions::default())
        .await
        .expect_err("b would cross the limit");
    let AgentError::Budget {
        limit,
        spent_usd,
        estimate_usd,
        ..
    } = &err
    else {
        panic!("not a budget error: {err}");
    };
    assert_eq!(limit, "budget.daily_usd");
    assert!((spent_usd - USAGE_COST).abs() < 1e-12, "{err}");
    assert!(spent_usd + estimate_usd > 0.025, "{err}");
    let message = err.to_string();
    assert!(message.contains("budget.daily_usd"), "{message}");
    assert!(message.contains("$0.0250"), "{message}");
    assert_eq!(
        server.requests(),
        1,
        "the refused call never reached the server"
    );

    // The refusal left a record carrying the error.
    let recs = records(&b.metrics);
    let refused = recs
        .iter()
        .find(|r| r.error.is_some())
        .expect("a refused record");
    assert!(
        refused
            .error
            .as_deref()
            .is_some_and(|e| e.contains("budget.daily_usd")),
        "{refused:?}"
    );
    // A cache hit costs nothing and is never refused.
    let hit = b
        .system
        .template_agent("writer")
        .generate_from_template("scene", &vars("one"), &GenerateOptions::default())
        .await;
    assert!(
        hit.is_err(),
        "b's cache is its own: this is a miss, refused too"
    );
    let hit = a
        .system
        .template_agent("writer")
        .generate_from_template("scene", &vars("one"), &GenerateOptions::default())
        .await
        .expect("a hit is served whatever the budget");
    assert!(hit.cache_hit);
}

#[tokio::test]
async fn agent_tag_and_own_limits_name_themselves() {
    let server = FakeServer::start(usage_reply()).await;
    let dirs = (
        tempfile::tempdir().expect("t"),
        tempfile::tempdir().expect("t"),
    );
    let budget = Budget {
        agents: [("editor".to_owned(), 0.0)].into(),
        tags: [("eval".to_owned(), 0.0)].into(),
        ..Budget::default()
    };
    let w = world(
        openai(&server.base_url),
        dirs.0.path(),
        dirs.1.path(),
        budget,
    );
    let err = w
        .system
        .agent("editor", "Editor", "You edit.")
        .generate("Tighten.", None, &GenerateOptions::default())
        .await
        .expect_err("editor limit");
    assert!(err.to_string().contains("budget.agents.editor"), "{err}");
    let tagged = GenerateOptions {
        tags: vec!["eval".into()],
        ..GenerateOptions::default()
    };
    let err = w
        .system
        .agent("writer", "Writer", "You write.")
        .generate("Write.", None, &tagged)
        .await
        .expect_err("eval limit");
    assert!(err.to_string().contains("budget.tags.eval"), "{err}");
    // Untagged writer calls are under no limit.
    w.system
        .agent("writer", "Writer", "You write.")
        .generate("Write.", None, &GenerateOptions::default())
        .await
        .expect("no limit applies");

    // `--budget-usd`: the system's own total.
    let dirs = (
        tempfile::tempdir().expect("t"),
        tempfile::tempdir().expect("t"),
    );
    let templates = tempfile::tempdir().expect("t");
    let own = fast_builder(openai(&server.base_url), templates.path())
        .metrics(Arc::new(JsonlStore::open(dirs.0.path()).expect("m")))
        .prices(PriceTable::from_toml(PRICES, "test prices").expect("prices"))
        .budget_usd(Some(USAGE_COST + 0.0001))
        .build()
        .expect("system");
    let agent = own.agent("writer", "Writer", "You write.");
    let capped = GenerateOptions::with_request(RequestOptions {
        model: Some("priced-model".into()),
        max_tokens: Some(10),
        ..RequestOptions::default()
    });
    agent
        .generate("One.", None, &capped)
        .await
        .expect("first fits");
    let err = agent
        .generate("Two.", None, &capped)
        .await
        .expect_err("second would cross --budget-usd");
    assert!(err.to_string().contains("--budget-usd"), "{err}");
    assert_eq!(err.kind(), "budget");
}
