//! prompt-eval at its boundary: eval files (errors with lines), case inputs, the runner on
//! the offline echo provider, stored runs and comparisons.

#![allow(clippy::unwrap_used)] // tests fail loudly

use std::path::Path;
use std::sync::Arc;

use prompt_agent::{EchoProvider, PromptSystem, VersionReq};
use prompt_eval::{
    Change, EvalFile, EvalRun, RunOptions, RunStore, Systems, compare_runs, compare_versions,
    eval_call_options, run,
};
use prompt_templates::TemplateStore;
use serde_json::json;

fn templates() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("qa")).unwrap();
    for n in 1..=2 {
        std::fs::write(
            dir.path().join(format!("qa/answer_v{n}.yaml")),
            format!(
                "version: {n}\nagent: qa\ntask: answer\nsystem_prompt: Answer.\nuser_prompt_template: \"v{n}: {{{{ q }}}}\"\nvariables:\n  q: \"string - The question\"\n"
            ),
        )
        .unwrap();
    }
    std::fs::write(
        dir.path().join("qa/chat_v1.yaml"),
        "version: 1\nagent: qa\ntask: chat\nmessages:\n  - role: system\n    content: Talk.\n  - history: history\n  - role: user\n    content: \"{{ q }}\"\nvariables:\n  q: \"string - The question\"\n  history: { type: messages, default: [] }\n",
    )
    .unwrap();
    dir
}

/// Each bad file is refused with `file:line: message` (parse errors, then template checks).
#[test]
fn bad_files_name_their_line() {
    let dir = templates();
    let store = TemplateStore::open(dir.path()).unwrap();
    let case = "cases:\n  - name: one\n    vars: { q: x }\n    assert:\n      - contains: x\n";
    let cases: Vec<(String, &str)> = vec![
        (format!("template: qa\n{case}"), "e.yaml:1: `template` \"qa\": expected \"agent/task\""),
        (format!("template: qa/answer@2\n{case}"), "e.yaml:1: `template` \"qa/answer@2\""),
        (format!("template: qa/answer\nversions: [1, \"not a label\"]\n{case}"), "e.yaml:2: invalid template version"),
        (format!("template: qa/answer\nproviders:\n  - echo\n  - gpt\n{case}"), "e.yaml:4: `providers`:"),
        ("template: qa/answer\ncases: []\n".to_owned(), "e.yaml:2: `cases` is empty"),
        ("template: qa/answer\ncases:\n  - name: one\n    vars: { q: x }\n".to_owned(), "e.yaml:3: case \"one\" has no assertions"),
        ("template: qa/answer\ncases:\n  - name: one\n    vars: [1]\n    assert:\n      - contains: x\n".to_owned(), "e.yaml:4: case \"one\": `vars` is a mapping"),
        ("template: qa/answer\ncases:\n  - name: one\n    vars: { q: x }\n    assert:\n      - contains: x\n  - name: one\n    vars: { q: x }\n    assert:\n      - contains: x\n".to_owned(), "e.yaml:7: two cases are named \"one\""),
        ("template: qa/answer\ncases:\n  - name: one\n    vars: { q: x }\n    assert:\n      - max_length: many\n".to_owned(), "e.yaml:6: case \"one\": `max_length` expects a whole number"),
        ("template: qa/answer\ncases:\n  - name: one\n    vars: { q: x }\n    assert:\n      - expr: \"output |\"\n".to_owned(), "e.yaml:6: case \"one\": bad `expr`"),
        ("template: qa/answer\ncases:\n  - name: one\n    history: [{ role: wizard, content: hi }]\n    vars: { q: x }\n    assert:\n      - contains: x\n".to_owned(), "e.yaml:4: case \"one\": `history`"),
        (format!("template: qa/nothing\n{case}"), "e.yaml:1: unknown template qa/nothing"),
        (format!("template: qa/answer\nversions:\n  - 2\n  - 9\n{case}"), "e.yaml:4: template qa/answer (v9) not found"),
        (format!("template: qa/answer\nversions: [1, 1]\n{case}"), "e.yaml:2: version 1 is listed twice"),
        ("template: qa/answer\ncases:\n  - name: one\n    vars: { q: x, extra: 1 }\n    assert:\n      - contains: x\n".to_owned(), "e.yaml:3: case \"one\" does not render with version latest"),
    ];
    for (text, want) in cases {
        let got =
            EvalFile::parse(Path::new("e.yaml"), &text).and_then(|f| f.check(&store).map(|_| ()));
        let err = got.unwrap_err().to_string();
        assert!(
            err.starts_with(want),
            "{text}\nwanted: {want}\ngot:    {err}"
        );
    }
}

/// A history fills the template's `messages` variable; a template without one gets it after
/// the rendered messages.
#[test]
fn history_goes_where_the_template_takes_it() {
    let dir = templates();
    let store = TemplateStore::open(dir.path()).unwrap();
    let file = EvalFile::parse(
        Path::new("h.yaml"),
        "template: qa/chat\ncases:\n  - name: one\n    vars: { q: now }\n    history:\n      - { role: user, content: before }\n      - { role: assistant, content: noted }\n    assert:\n      - contains: now\n",
    )
    .unwrap();
    let chat = store.load("qa", "chat", VersionReq::Latest).unwrap();
    let (vars, extra) = file.cases[0].inputs(&chat);
    assert_eq!(
        vars["history"],
        json!([{"role": "user", "content": "before"}, {"role": "assistant", "content": "noted"}])
    );
    assert!(extra.is_empty());
    let rendered = chat.render(&vars).unwrap();
    assert_eq!(rendered.messages.len(), 4);

    let plain = store.load("qa", "answer", VersionReq::Latest).unwrap();
    let (vars, extra) = file.cases[0].inputs(&plain);
    assert!(!vars.contains_key("history"));
    assert_eq!(extra.len(), 2);
    assert_eq!(extra[1].content, "noted");
}

#[test]
fn sample_zero_is_the_plain_call_and_others_carry_their_index() {
    let base = prompt_agent::GenerateOptions::default();
    let zero = eval_call_options(&base, 2, Some("m"), 0, Vec::new());
    assert_eq!(zero.request.sample, None);
    assert_eq!(zero.version, VersionReq::Exact(2));
    assert_eq!(zero.request.model.as_deref(), Some("m"));
    assert_eq!(
        eval_call_options(&base, 2, None, 3, Vec::new())
            .request
            .sample,
        Some(3)
    );
}

fn echo_run(dir: &Path, eval: &str) -> EvalRun {
    let system = PromptSystem::builder()
        .templates_dir(dir)
        .provider(Arc::new(EchoProvider::new()))
        .build()
        .unwrap();
    let file = EvalFile::parse(Path::new("echo.yaml"), eval).unwrap();
    let versions = file.check(system.templates()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(
        &file,
        &versions,
        &Systems::one(system),
        &RunOptions {
            repeat: 2,
            ..RunOptions::default()
        },
    ))
}

/// The echo provider quotes the user prompt, so `v1: …` passes for version 1 only.
#[test]
fn the_runner_crosses_versions_and_models_on_the_echo_provider() {
    let dir = templates();
    let result = echo_run(
        dir.path(),
        "template: qa/answer\nversions: [1, 2]\nmodels: [m1, m2]\ncases:\n  - name: one\n    vars: { q: pier }\n    assert:\n      - contains: \"v1: pier\"\n      - regex: \"model=m[12]\"\n",
    );
    assert_eq!(result.cells.len(), 4);
    assert_eq!(result.columns.len(), 4);
    for cell in &result.cells {
        assert_eq!(cell.samples, 2);
        assert_eq!(cell.passed, cell.version == "1", "{cell:?}");
        assert_eq!(cell.provider, "echo");
        // The echo provider is local: its unpriced models cost 0.
        assert_eq!(cell.cost_usd, Some(0.0));
        if !cell.passed {
            assert_eq!(cell.failures.len(), 2, "one failure per sample: {cell:?}");
            assert!(cell.failures[0].assertion.starts_with("contains:"));
            assert_eq!(cell.failures[0].line, 8);
        }
    }
    let models: Vec<&str> = result
        .columns
        .iter()
        .map(|c| c.key.model.as_str())
        .collect();
    assert_eq!(models, ["m1", "m2", "m1", "m2"]);

    // Version 1 → 2 regresses on both models.
    let diff = compare_versions(&result, "1", "2");
    assert_eq!(diff.regressions().count(), 2);
    assert!(
        diff.cells
            .iter()
            .all(|c| c.before_version == "1" && c.version == "2")
    );
}

#[test]
fn stored_runs_compare_cell_by_cell_and_unreadable_ones_are_passed_over() {
    let dir = templates();
    let eval = "template: qa/answer\nversions: [1, 2]\ncases:\n  - name: one\n    vars: { q: pier }\n    assert:\n      - contains: \"v1: pier\"\n  - name: two\n    vars: { q: dock }\n    assert:\n      - contains: dock\n";
    let before = echo_run(dir.path(), eval);
    let mut after = before.clone();
    after.cells[0].passed = false; // one × 1: pass → fail
    after.cells[2].passed = true; // one × 2: fail → pass
    after.cells.pop(); // two × 2: gone
    let diff = compare_runs(&before, "before.json", &after);
    let changed: Vec<(&str, &str, Change)> = diff
        .changed()
        .map(|c| (c.case.as_str(), c.version.as_str(), c.change))
        .collect();
    assert_eq!(
        changed,
        [
            ("one", "1", Change::PassToFail),
            ("one", "2", Change::FailToPass),
            ("two", "2", Change::Removed)
        ]
    );
    assert_eq!(diff.cells.len(), 4);

    let runs = tempfile::tempdir().unwrap();
    let store = RunStore::new(runs.path());
    assert!(store.last(Path::new("e.yaml")).unwrap().0.is_none());
    let first = store.save(Path::new("evals/e.yaml"), &before).unwrap();
    let second = store.save(Path::new("evals/e.yaml"), &after).unwrap();
    assert_ne!(first, second);
    let (last, skipped) = store.last(Path::new("e.yaml")).unwrap();
    let (path, stored) = last.unwrap();
    assert_eq!(path, second);
    assert_eq!(stored.cells.len(), 3);
    assert!(!stored.cells[0].passed);
    assert_eq!(skipped, 0);
    // A newer file that is not a run is passed over, counted and left alone.
    let junk = store
        .folder(Path::new("e.yaml"))
        .join("99999999T000000.000Z.json");
    std::fs::write(&junk, "{\"cells\": 3").unwrap();
    let (last, skipped) = store.last(Path::new("e.yaml")).unwrap();
    assert_eq!(last.unwrap().0, second);
    assert_eq!(skipped, 1);
    assert!(junk.is_file());
    let err = RunStore::load(&junk).unwrap_err().to_string();
    assert!(err.contains("not a stored eval run"), "{err}");
}
