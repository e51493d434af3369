//! The render budget ([`RenderLimits`]): runaway bodies fail fast with an error naming the
//! template and the budget, and the shipped templates render well within the defaults.
//!
//! `cargo nextest run -p prompt-templates --test budget --no-capture` prints the fuel and
//! bytes each shipped template needs (the figures quoted in `docs/TEMPLATE_FORMAT.md`).

#![allow(clippy::unwrap_used)] // test helpers fail loudly

use std::path::{Path, PathBuf};
use std::sync::Arc;

use prompt_templates::{
    PromptTemplate, RenderBudget, RenderLimits, RenderedPrompt, TemplateError, TemplateStore, Vars,
    VersionReq,
};
use serde_json::{Value, json};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn vars(value: Value) -> Vars {
    match value {
        Value::Object(map) => map,
        _ => panic!("vars must be an object"),
    }
}

/// Writes `writer/t_v1.yaml` with these bodies and variables, and loads it with `limits`.
fn template(
    system: &str,
    user: &str,
    variables: &str,
    limits: RenderLimits,
) -> (tempfile::TempDir, Arc<PromptTemplate>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("writer")).unwrap();
    let yaml = format!(
        "version: 1\nagent: writer\ntask: t\nsystem_prompt: {}\nuser_prompt_template: {}\nvariables:\n{}",
        serde_json::to_string(system).unwrap(),
        serde_json::to_string(user).unwrap(),
        variables
    );
    std::fs::write(dir.path().join("writer/t_v1.yaml"), yaml).unwrap();
    let store = TemplateStore::open(dir.path()).unwrap().with_limits(limits);
    let t = store.load("writer", "t", VersionReq::Latest).unwrap();
    (dir, t)
}

const NESTED: &str = "{% for i in range(n) %}{% for j in range(n) %}{% for k in range(n) %}.{% endfor %}{% endfor %}{% endfor %}";

#[test]
fn nested_loops_run_out_of_fuel() {
    let (_dir, t) = template(
        "System.",
        NESTED,
        "  n: \"integer - loop size\"\n",
        RenderLimits::default(),
    );
    assert_eq!(t.limits(), RenderLimits::default());
    // Small loops are fine.
    assert_eq!(t.render(&vars(json!({"n": 3}))).unwrap().user.len(), 27);
    let err = t.render(&vars(json!({"n": 10000}))).unwrap_err();
    match &err {
        TemplateError::RenderBudget {
            template,
            part,
            budget,
        } => {
            assert!(template.contains("writer/t v1"), "{template}");
            assert_eq!(*part, "user_prompt_template");
            assert_eq!(*budget, RenderBudget::Fuel(RenderLimits::DEFAULT_FUEL));
        }
        other => panic!("expected a budget error, got {other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains("writer/t v1"), "{message}");
    assert!(message.contains("ran out of render fuel"), "{message}");
    assert!(message.contains("1000000"), "{message}");
    assert!(message.contains("render_fuel"), "{message}");
}

#[test]
fn a_smaller_fuel_budget_is_honoured() {
    let body = "{% for i in range(n) %}{{ i }}{% endfor %}";
    let decl = "  n: \"integer - loop size\"\n";
    let limits = RenderLimits {
        fuel: 200,
        ..RenderLimits::default()
    };
    let (_dir, t) = template("System.", body, decl, limits);
    assert_eq!(
        t.render(&vars(json!({"n": 10}))).unwrap().user,
        "0123456789"
    );
    let err = t.render(&vars(json!({"n": 1000}))).unwrap_err();
    assert!(
        matches!(
            err,
            TemplateError::RenderBudget {
                budget: RenderBudget::Fuel(200),
                ..
            }
        ),
        "{err:?}"
    );
    // A self-calling macro still meets the engine's recursion limit first, as before.
    let (_dir, t) = template(
        "System.",
        "{% macro f(x) %}{{ f(x) }}{% endmacro %}{{ f(n) }}",
        decl,
        RenderLimits::default(),
    );
    let err = t.render(&vars(json!({"n": 1}))).unwrap_err().to_string();
    assert!(err.contains("recursion limit"), "{err}");
}

#[test]
fn output_size_is_bounded_on_both_paths() {
    let limits = RenderLimits {
        max_bytes: 100,
        ..RenderLimits::default()
    };
    let decl = "  a: \"string - text\"\n";
    // The plain path (text and variables only, no engine).
    let (_dir, t) = template("System {{ a }}", "User {{ a }}{{ a }}", decl, limits);
    assert_eq!(
        t.render(&vars(json!({"a": "x".repeat(40)})))
            .unwrap()
            .user
            .len(),
        85
    );
    let err = t.render(&vars(json!({"a": "x".repeat(60)}))).unwrap_err();
    match &err {
        TemplateError::RenderBudget { part, budget, .. } => {
            assert_eq!(*part, "user_prompt_template");
            assert_eq!(*budget, RenderBudget::MaxBytes(100));
        }
        other => panic!("expected a budget error, got {other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains("writer/t v1"), "{message}");
    assert!(message.contains("100 bytes"), "{message}");
    assert!(message.contains("max_render_bytes"), "{message}");
    // The system prompt too.
    let err = t.render(&vars(json!({"a": "x".repeat(200)}))).unwrap_err();
    assert!(
        matches!(
            err,
            TemplateError::RenderBudget {
                part: "system_prompt",
                ..
            }
        ),
        "{err:?}"
    );

    // The engine path: stops at the first write past the bound.
    let (_dir, t) = template(
        "System.",
        "{% for i in range(n) %}{{ a }}{% endfor %}",
        "  a: \"string - text\"\n  n: \"integer - count\"\n",
        limits,
    );
    assert_eq!(
        t.render(&vars(json!({"a": "xy", "n": 50})))
            .unwrap()
            .user
            .len(),
        100
    );
    let err = t.render(&vars(json!({"a": "xy", "n": 51}))).unwrap_err();
    assert!(
        matches!(
            err,
            TemplateError::RenderBudget {
                budget: RenderBudget::MaxBytes(100),
                ..
            }
        ),
        "{err:?}"
    );
    // Multi-byte characters count in bytes.
    let err = t.render(&vars(json!({"a": "é", "n": 51}))).unwrap_err();
    assert!(matches!(err, TemplateError::RenderBudget { .. }), "{err:?}");
}

#[test]
fn with_limits_applies_to_templates_already_loaded() {
    let dir = root().join("templates");
    let store = TemplateStore::open(&dir).unwrap();
    let before = store
        .load("writer", "write_scene", VersionReq::Latest)
        .unwrap();
    assert_eq!(before.limits(), RenderLimits::default());
    let tight = RenderLimits {
        fuel: 1,
        max_bytes: 10,
    };
    let store = store.with_limits(tight);
    assert_eq!(store.limits(), tight);
    let after = store
        .load("writer", "write_scene", VersionReq::Latest)
        .unwrap();
    assert_eq!(after.limits(), tight);
    let input = after.examples()[0].input.clone();
    assert!(matches!(
        after.render(&input),
        Err(TemplateError::RenderBudget { .. })
    ));
}

/// The shipped templates with the variables the tests and examples give them.
fn shipped(store: &TemplateStore) -> Vec<(String, Arc<PromptTemplate>, Vars)> {
    let chapter1: Vars = serde_saphyr::from_str(
        &std::fs::read_to_string(root().join("examples/chapter1.yaml")).unwrap(),
    )
    .unwrap();
    let mut out = vec![(
        "writer/write_chapter".to_owned(),
        store
            .load("writer", "write_chapter", VersionReq::Latest)
            .unwrap(),
        chapter1,
    )];
    for (agent, task) in [
        ("writer", "write_scene"),
        ("editor", "edit_chapter"),
        ("architect", "create_characters"),
        ("interviewer", "ask_followup"),
        ("editor", "check_continuity"),
    ] {
        let t = store.load(agent, task, VersionReq::Latest).unwrap();
        let input = t.examples()[0].input.clone();
        out.push((format!("{agent}/{task}"), t, input));
    }
    out
}

/// Renders with the examples; what `prompt render --examples` and the agents send.
fn render_all(t: &PromptTemplate, vars: &Vars) -> Result<RenderedPrompt, TemplateError> {
    t.render_with_examples(vars, t.examples().len())
}

/// The least fuel with which `name` renders (a binary search over the budget).
fn fuel_needed(name: &str, vars: &Vars) -> u64 {
    let dir = root().join("templates");
    let (agent, task) = name.split_once('/').unwrap();
    let (mut lo, mut hi) = (1u64, RenderLimits::DEFAULT_FUEL);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let store = TemplateStore::open(&dir)
            .unwrap()
            .with_limits(RenderLimits {
                fuel: mid,
                ..RenderLimits::default()
            });
        let t = store.load(agent, task, VersionReq::Latest).unwrap();
        if render_all(&t, vars).is_ok() {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

#[test]
fn shipped_templates_render_well_under_the_default_budget() {
    let store = TemplateStore::open(root().join("templates")).unwrap();
    for (name, t, vars) in shipped(&store) {
        let rendered = render_all(&t, &vars).unwrap();
        let bytes = rendered
            .messages
            .iter()
            .map(|m| m.content.len())
            .max()
            .unwrap_or(0)
            .max(rendered.system.len())
            .max(rendered.user.len());
        let fuel = fuel_needed(&name, &vars);
        println!("{name}: fuel {fuel}, largest prompt {bytes} bytes");
        assert!(
            fuel * 1000 <= RenderLimits::DEFAULT_FUEL,
            "{name} needs {fuel} fuel"
        );
        assert!(
            bytes * 1000 <= RenderLimits::DEFAULT_MAX_BYTES,
            "{name} renders {bytes} bytes"
        );
        // And they render within a budget a thousand times smaller than the default.
        let tight = TemplateStore::open(root().join("templates"))
            .unwrap()
            .with_limits(RenderLimits {
                fuel: RenderLimits::DEFAULT_FUEL / 1000,
                max_bytes: RenderLimits::DEFAULT_MAX_BYTES / 1000,
            });
        let (agent, task) = name.split_once('/').unwrap();
        let t = tight.load(agent, task, VersionReq::Latest).unwrap();
        assert_eq!(render_all(&t, &vars).unwrap(), rendered, "{name}");
    }
}

#[test]
fn a_long_list_renders_within_the_default_budget() {
    // A prompt that lists 10,000 items (far more than any shipped template) with a few
    // expressions each.
    let body = "{% for x in xs %}{{ loop.index }}. {{ x | trim }}{% if not loop.last %}\n{% endif %}{% endfor %}";
    let decl = "  xs: \"list - items\"\n";
    let items: Vec<String> = (0..10_000).map(|i| format!("item {i}")).collect();
    let given = vars(json!({ "xs": items }));
    let (_dir, t) = template("System.", body, decl, RenderLimits::default());
    let rendered = t.render(&given).unwrap();
    assert!(rendered.user.ends_with("10000. item 9999"));
    let (mut lo, mut hi) = (1u64, RenderLimits::DEFAULT_FUEL);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let limits = RenderLimits {
            fuel: mid,
            ..RenderLimits::default()
        };
        let (_dir, t) = template("System.", body, decl, limits);
        if t.render(&given).is_ok() {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    println!(
        "10,000-item list: fuel {lo}, prompt {} bytes",
        rendered.user.len()
    );
    assert!(lo * 4 <= RenderLimits::DEFAULT_FUEL, "needs {lo} fuel");
}
