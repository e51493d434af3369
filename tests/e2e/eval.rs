//! `prompt eval`, `prompt label` and `prompt promote` against a fake OpenAI-compatible server
//! whose replies the test chooses (by the exact user message), on templates written here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::support::{Run, Sandbox, assert_error};

/// What the fake answers to a user message: text, or a call of the tool `lookup`.
#[derive(Clone)]
enum Reply {
    Text(&'static str),
    CallLookup,
}

#[derive(Default)]
struct Script {
    replies: Mutex<HashMap<String, Reply>>,
    chats: AtomicUsize,
}

/// An OpenAI-compatible `POST /v1/chat/completions` on loopback that answers each user
/// message with the reply the test set for it (unknown messages get "no reply scripted").
struct Scripted {
    url: String,
    script: Arc<Script>,
}

impl Scripted {
    fn start() -> Self {
        let script = Arc::new(Script::default());
        let app = Router::new()
            .route("/v1/chat/completions", post(answer))
            .with_state(script.clone());
        let url = format!("{}/v1", crate::support::serve_on_loopback(app));
        Self { url, script }
    }

    fn set(&self, user: &str, reply: Reply) {
        self.script
            .replies
            .lock()
            .unwrap()
            .insert(user.to_owned(), reply);
    }

    fn chats(&self) -> usize {
        self.script.chats.load(Ordering::SeqCst)
    }
}

async fn answer(State(script): State<Arc<Script>>, Json(body): Json<Value>) -> Json<Value> {
    script.chats.fetch_add(1, Ordering::SeqCst);
    let user = body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .trim()
        .to_owned();
    let reply = script.replies.lock().unwrap().get(&user).cloned();
    let message = match reply {
        Some(Reply::Text(text)) => json!({"role": "assistant", "content": text}),
        Some(Reply::CallLookup) => json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "lookup", "arguments": "{\"name\": \"Mira\"}"}}]}),
        None => json!({"role": "assistant", "content": format!("no reply scripted for {user}")}),
    };
    let finish = if message["tool_calls"].is_null() {
        "stop"
    } else {
        "tool_calls"
    };
    Json(json!({
        "id": "chatcmpl-eval", "object": "chat.completion", "model": body["model"],
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }))
}

/// Templates `qa/answer` v1..v3 whose user prompt is `vN:{{ q }}`, offering a `lookup` tool.
fn write_templates(sb: &Sandbox) {
    for n in 1..=3 {
        sb.write(
            &format!("templates/qa/answer_v{n}.yaml"),
            &format!(
                r#"version: {n}
agent: qa
task: answer
model: {{ name: "m1" }}
system_prompt: "Answer."
user_prompt_template: "v{n}:{{{{ q }}}}"
variables:
  q: "string - The question"
validation: {{ min_length: 1 }}
tools:
  - name: lookup
    description: "Looks a character up"
    parameters: {{ type: object, properties: {{ name: {{ type: string }} }}, required: [name] }}
"#
            ),
        );
    }
}

/// Runs `prompt` in the sandbox on its own templates against the scripted server.
fn prompt(sb: &Sandbox, server: &Scripted, args: &[&str]) -> Run {
    let templates = sb.path().join("templates");
    let mut all: Vec<&str> = args.to_vec();
    all.extend([
        "--provider",
        "openai",
        "--base-url",
        &server.url,
        "--no-stream",
    ]);
    sb.run_env(&all, &[("PROMPT_TEMPLATES", templates.to_str().unwrap())])
}

/// Runs `prompt` in the sandbox on its own templates, for commands that call no provider.
fn offline(sb: &Sandbox, args: &[&str]) -> Run {
    let templates = sb.path().join("templates");
    sb.run_env(args, &[("PROMPT_TEMPLATES", templates.to_str().unwrap())])
}

/// Every assertion kind: version 1's reply passes it, version 2's fails it.
const KINDS: &[(&str, &str, Reply, Reply)] = &[
    (
        "contains: \"pier\"",
        "contains",
        Reply::Text("on the pier tonight"),
        Reply::Text("on the dock tonight"),
    ),
    (
        "not_contains: \"As an AI\"",
        "not_contains",
        Reply::Text("Mira waits here."),
        Reply::Text("As an AI I cannot"),
    ),
    (
        "regex: \"^Chapter \\\\d+\"",
        "regex",
        Reply::Text("Chapter 12: Salt"),
        Reply::Text("Salt, chapter twelve"),
    ),
    (
        "equals: \"yes, certainly\"",
        "equals",
        Reply::Text("yes, certainly"),
        Reply::Text("no, certainly not"),
    ),
    (
        "min_length: 20",
        "min_length",
        Reply::Text("twenty-one characters"),
        Reply::Text("short reply"),
    ),
    (
        "max_length: 15",
        "max_length",
        Reply::Text("short reply"),
        Reply::Text("a much longer reply than that"),
    ),
    (
        "json: { type: object, required: [name] }",
        "json",
        Reply::Text("{\"name\": \"Mira\"}"),
        Reply::Text("{\"title\": \"Salt\"}"),
    ),
    (
        "tool_call: lookup",
        "tool_call",
        Reply::CallLookup,
        Reply::Text("I call nothing at all"),
    ),
    (
        "expr: \"vars.q in output and output | length > 12\"",
        "expr",
        Reply::Text("this is about expr"),
        Reply::Text("nothing relevant here"),
    ),
];

/// An eval file with one case per assertion kind (`q` is the kind's name).
fn kinds_eval(versions: &str) -> String {
    let mut text = format!("template: qa/answer\nversions: {versions}\ncases:\n");
    for (assertion, kind, _, _) in KINDS {
        text.push_str(&format!(
            "  - name: {kind}\n    vars: {{ q: \"{kind}\" }}\n    assert:\n      - {assertion}\n"
        ));
    }
    text
}

fn script_kinds(server: &Scripted) {
    for (_, kind, pass, fail) in KINDS {
        server.set(&format!("v1:{kind}"), pass.clone());
        server.set(&format!("v2:{kind}"), fail.clone());
        server.set(&format!("v3:{kind}"), pass.clone());
    }
}

fn cell<'a>(run: &'a Value, case: &str, version: &str) -> &'a Value {
    run["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["case"] == case && c["version"] == version)
        .unwrap_or_else(|| panic!("no cell {case} × {version} in {run}"))
}

#[test]
fn the_matrix_passes_and_fails_each_assertion_kind_as_scripted() {
    let sb = Sandbox::new();
    write_templates(&sb);
    let server = Scripted::start();
    script_kinds(&server);
    sb.write("kinds.yaml", &kinds_eval("[1, 2]"));

    sb.write(
        "prices.toml",
        "[prices.\"m1\"]\ninput = 1000000.0\noutput = 2000000.0\n",
    );
    let run = prompt(
        &sb,
        &server,
        &["eval", "kinds.yaml", "--json", "--prices", "prices.toml"],
    );
    assert_eq!(run.code, 1, "a failing assertion exits 1\n{}", run.stderr);
    assert!(
        run.stderr.contains("9 of 18 cell(s) failed"),
        "{}",
        run.stderr
    );
    let out = run.json();
    assert_eq!(out["passed"], json!(false));
    assert_eq!(out["cells"].as_array().unwrap().len(), 18);
    for (_, kind, _, _) in KINDS {
        let pass = cell(&out, kind, "1");
        assert_eq!(pass["passed"], json!(true), "{kind} v1: {pass}");
        assert_eq!(pass["failures"], json!([]), "{kind} v1");
        assert_eq!(pass["resolved_version"], json!(1));
        assert_eq!(pass["model"], json!("m1"));
        assert_eq!(pass["provider"], json!("openai"));
        assert!(pass["latency_ms"].as_f64().is_some());
        // Priced at $1 a prompt token and $2 a completion token: a cost of whole dollars.
        let cost = pass["cost_usd"]
            .as_f64()
            .expect("a priced model has a cost");
        assert!(cost >= 15.0 && cost.fract() == 0.0, "{kind}: {pass}");
        assert_eq!(pass["tokens"], json!(15));
        let fail = cell(&out, kind, "2");
        assert_eq!(fail["passed"], json!(false), "{kind} v2: {fail}");
        let failures = fail["failures"].as_array().unwrap();
        assert_eq!(failures.len(), 1, "{kind}: {fail}");
        assert!(
            failures[0]["assertion"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{kind}:")),
            "{kind}: {fail}"
        );
        assert!(!failures[0]["reason"].as_str().unwrap().is_empty());
    }
    assert_eq!(out["columns"][0]["pass_rate"], json!(1.0));
    assert_eq!(out["columns"][1]["pass_rate"], json!(0.0));
    assert_eq!(out["columns"][0]["tokens"], json!(9 * 15));
    assert_eq!(server.chats(), 18);
    let column_cost: f64 = out["cells"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["version"] == json!("1"))
        .map(|c| c["cost_usd"].as_f64().unwrap())
        .sum();
    assert_eq!(out["columns"][0]["cost_usd"].as_f64(), Some(column_cost));
    // Every call left a metrics record tagged `eval`.
    let mut text = String::new();
    for entry in std::fs::read_dir(sb.path().join("output/metrics")).unwrap() {
        text.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap());
    }
    let records: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(records.len(), 18, "{text}");
    assert!(
        records.iter().all(|r| r["tags"] == json!(["eval"])),
        "{text}"
    );

    // The terminal matrix and the HTML page show the same outcome.
    let run = prompt(&sb, &server, &["eval", "kinds.yaml", "--html", "eval.html"]);
    assert_eq!(run.code, 1);
    assert!(run.stdout.contains("1 · m1 · openai"), "{}", run.stdout);
    assert!(run.stdout.contains("pass rate"), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("FAIL equals × 2 · m1 · openai: equals: \"yes, certainly\""),
        "{}",
        run.stdout
    );
    let html = sb.read("eval.html");
    assert!(
        html.contains(r#"data-cells="18" data-failed="9""#),
        "{html}"
    );
    assert!(!html.contains("<script"));
    // Every call went through the cache: the second run made no new call.
    assert_eq!(server.chats(), 18);
}

#[test]
fn repeats_reach_the_server_once_per_sample_and_sample_zero_is_the_plain_request() {
    let sb = Sandbox::new();
    write_templates(&sb);
    let server = Scripted::start();
    server.set("v1:pier", Reply::Text("on the pier tonight"));
    sb.write(
        "repeat.yaml",
        "template: qa/answer\nversions: [1]\ncases:\n  - name: pier\n    vars: { q: pier }\n    assert:\n      - contains: pier\n",
    );
    let out = prompt(
        &sb,
        &server,
        &["eval", "repeat.yaml", "--repeat", "4", "--json"],
    );
    out.ok();
    let out = out.json();
    assert_eq!(server.chats(), 4, "4 samples, 4 distinct requests");
    assert_eq!(out["cells"][0]["samples"], json!(4));
    assert_eq!(out["cells"][0]["samples_passed"], json!(4));
    assert_eq!(out["cells"][0]["cache_hits"], json!(0));

    // Again: every sample is its own cache entry.
    let again = prompt(
        &sb,
        &server,
        &["eval", "repeat.yaml", "--repeat", "4", "--json"],
    )
    .json();
    assert_eq!(server.chats(), 4);
    assert_eq!(again["cells"][0]["cache_hits"], json!(4));
    // A plain generation of the same request is sample 0's entry.
    let plain = prompt(
        &sb,
        &server,
        &["generate", "qa/answer@1", "--var", "q=pier", "--json"],
    );
    assert_eq!(plain.json()["cache_hit"], json!(true), "{}", plain.stdout);
    assert_eq!(server.chats(), 4);
    // One more sample is one more call.
    prompt(&sb, &server, &["eval", "repeat.yaml", "--repeat", "5"]).ok();
    assert_eq!(server.chats(), 5);
}

#[test]
fn compare_shows_exactly_the_cells_that_changed() {
    let sb = Sandbox::new();
    write_templates(&sb);
    let server = Scripted::start();
    let cases = ["a", "b", "c", "d"];
    for q in cases {
        for v in [1, 2] {
            server.set(&format!("v{v}:{q}"), Reply::Text("a good reply"));
        }
    }
    server.set("v2:c", Reply::Text("a bad reply"));
    let mut eval = "template: qa/answer\nversions: [1, 2]\ncases:\n".to_owned();
    for q in cases {
        eval.push_str(&format!(
            "  - name: {q}\n    vars: {{ q: {q} }}\n    assert:\n      - contains: good\n"
        ));
    }
    sb.write("cmp.yaml", &eval);
    let first = prompt(&sb, &server, &["eval", "cmp.yaml", "--json"]);
    assert_eq!(first.code, 1);
    let first_path = first.json()["stored"].as_str().unwrap().to_owned();
    assert!(sb.path().join(&first_path).is_file(), "{first_path}");

    // b × 1 breaks, c × 2 is fixed; the rest stays as it was.
    server.set("v1:b", Reply::Text("a bad reply"));
    server.set("v2:c", Reply::Text("a good reply now"));
    let second = prompt(
        &sb,
        &server,
        &[
            "eval",
            "cmp.yaml",
            "--no-cache",
            "--compare",
            "last",
            "--json",
        ],
    );
    assert_eq!(second.code, 1);
    let out = second.json();
    let changed: Vec<(String, String, String)> = out["compare"]["changed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["case"].as_str().unwrap().to_owned(),
                c["version"].as_str().unwrap().to_owned(),
                c["change"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        changed,
        vec![
            ("b".into(), "1".into(), "pass_to_fail".into()),
            ("c".into(), "2".into(), "fail_to_pass".into()),
        ]
    );
    assert_eq!(out["compare"]["unchanged"], json!(6));
    assert_eq!(out["compare"]["before"], json!(first_path));
    assert!(
        out["compare"]["cells"][0]["latency_delta_ms"]
            .as_f64()
            .is_some()
    );

    // The same against a stored run by path, on the terminal: only the changed cells listed.
    let text = prompt(
        &sb,
        &server,
        &["eval", "cmp.yaml", "--compare", &first_path],
    );
    assert!(
        text.stdout.contains("2 cell(s) changed, 6 unchanged"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("pass → fail b × 1 · m1 · openai"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("fail → pass c × 2 · m1 · openai"),
        "{}",
        text.stdout
    );
    assert!(!text.stdout.contains(" a × "), "{}", text.stdout);

    // A stored run that is not one is refused by name; `last` passes over it.
    let bad = sb.write("output/evals/cmp/99999999T999999.999Z.json", "{not json");
    let run = prompt(
        &sb,
        &server,
        &["eval", "cmp.yaml", "--compare", bad.to_str().unwrap()],
    );
    assert_error(&run, 1, "not a stored eval run");
    let run = prompt(
        &sb,
        &server,
        &["eval", "cmp.yaml", "--compare", "last", "--json"],
    );
    assert!(
        run.stderr.contains("1 unreadable stored run(s)"),
        "{}",
        run.stderr
    );
    assert!(
        run.json()["compare"]["changed"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(bad.is_file(), "an unreadable run is left where it is");
}

#[test]
fn labels_resolve_in_render_generate_batch_and_eval() {
    let sb = Sandbox::new();
    write_templates(&sb);
    let server = Scripted::start();
    server.set("v2:pier", Reply::Text("on the pier tonight"));

    let run = offline(&sb, &["render", "qa/answer@production", "--var", "q=pier"]);
    assert_error(&run, 1, "qa/answer has no label `production`");

    offline(&sb, &["label", "set", "qa/answer", "production", "2"]).ok();
    offline(&sb, &["label", "set", "qa/answer", "staging", "v3"]).ok();
    let labels = sb.read("templates/labels.toml");
    assert!(
        labels.contains("[qa.answer]\nproduction = 2\nstaging = 3\n"),
        "{labels}"
    );
    let list = offline(&sb, &["label", "list", "--json"]).json();
    assert_eq!(
        list,
        json!([{"template": "qa/answer", "label": "production", "version": 2},
               {"template": "qa/answer", "label": "staging", "version": 3}])
    );

    let render = offline(&sb, &["render", "qa/answer@production", "--var", "q=pier"]);
    assert!(render.ok().contains("v2:pier"), "{}", render.stdout);

    let generated = prompt(
        &sb,
        &server,
        &[
            "generate",
            "qa/answer@production",
            "--var",
            "q=pier",
            "--json",
        ],
    );
    let generated = generated.json();
    assert_eq!(generated["version"], json!(2));
    assert_eq!(generated["response"], json!("on the pier tonight"));

    sb.write("jobs.jsonl", "{\"template\": \"qa/answer@production\", \"vars\": {\"q\": \"pier\"}}\n{\"template\": \"qa/answer@nolabel\", \"vars\": {\"q\": \"pier\"}}\n");
    let batch = prompt(&sb, &server, &["batch", "jobs.jsonl", "--out", "out.jsonl"]);
    assert_eq!(batch.code, 1, "{}", batch.stderr);
    let lines = crate::support::result_lines(&sb.read("out.jsonl"));
    let ok = lines.iter().find(|l| l["line"] == 1).unwrap();
    assert_eq!(ok["ok"], json!(true), "{ok}");
    assert_eq!(ok["template_version"], json!(2));
    let failed = lines.iter().find(|l| l["line"] == 2).unwrap();
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("no label `nolabel`"),
        "{failed}"
    );

    // An eval file names labels like versions; its cells keep the label and the number.
    sb.write(
        "labels.yaml",
        "template: qa/answer\nversions: [production]\ncases:\n  - name: pier\n    vars: { q: pier }\n    assert:\n      - contains: pier\n",
    );
    let out = prompt(&sb, &server, &["eval", "labels.yaml", "--json"]).json();
    assert_eq!(out["cells"][0]["version"], json!("production"));
    assert_eq!(out["cells"][0]["resolved_version"], json!(2));

    // The metrics records carry the resolved version number.
    let metrics_dir = sb.path().join("output/metrics");
    let mut text = String::new();
    for entry in std::fs::read_dir(&metrics_dir).unwrap() {
        text.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap());
    }
    let versions: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["agent"] == "qa" && r["error"].is_null())
        .map(|r| r["template_version"].clone())
        .collect();
    assert!(versions.len() >= 3, "{text}");
    assert!(versions.iter().all(|v| *v == json!(2)), "{versions:?}");
}

#[test]
fn promotion_is_refused_on_a_regression_and_accepted_without_one() {
    let sb = Sandbox::new();
    write_templates(&sb);
    let server = Scripted::start();
    script_kinds(&server);
    sb.write("kinds.yaml", &kinds_eval("[1]"));
    offline(&sb, &["label", "set", "qa/answer", "production", "1"]).ok();

    // v2 fails every case v1 passes: refused, label unchanged, the diff printed.
    let refused = prompt(
        &sb,
        &server,
        &[
            "promote",
            "qa/answer",
            "production",
            "2",
            "--eval",
            "kinds.yaml",
        ],
    );
    assert_eq!(refused.code, 1, "{}\n{}", refused.stdout, refused.stderr);
    assert!(
        refused.stdout.contains("9 cell(s) changed"),
        "{}",
        refused.stdout
    );
    assert!(
        refused.stdout.contains("pass → fail contains × v2"),
        "{}",
        refused.stdout
    );
    assert!(
        refused.stdout.contains("not promoted"),
        "{}",
        refused.stdout
    );
    assert!(
        refused.stderr.contains("not moved: 9 regression(s)"),
        "{}",
        refused.stderr
    );
    assert!(
        sb.read("templates/labels.toml")
            .contains("production = 1\n")
    );

    // v3 passes everything v1 passes: promoted.
    let accepted = prompt(
        &sb,
        &server,
        &[
            "promote",
            "qa/answer",
            "production",
            "3",
            "--eval",
            "kinds.yaml",
            "--json",
        ],
    );
    let out = accepted.json();
    assert_eq!(accepted.code, 0, "{}", accepted.stderr);
    assert_eq!(out["moved"], json!(true));
    assert_eq!(out["from"], json!(1));
    assert_eq!(out["to"], json!(3));
    assert_eq!(out["regressions"], json!(0));
    assert!(
        sb.read("templates/labels.toml")
            .contains("production = 3\n")
    );

    // --force moves it despite the regression, and says so.
    let forced = prompt(
        &sb,
        &server,
        &[
            "promote",
            "qa/answer",
            "production",
            "2",
            "--eval",
            "kinds.yaml",
            "--force",
        ],
    );
    assert_eq!(forced.code, 0, "{}", forced.stderr);
    assert!(
        forced.stdout.contains("promoted with --force"),
        "{}",
        forced.stdout
    );
    assert!(
        forced.stdout.contains("despite 9 regression(s)"),
        "{}",
        forced.stdout
    );
    assert!(
        sb.read("templates/labels.toml")
            .contains("production = 2\n")
    );

    // An eval file of another template is refused.
    sb.write(
        "other.yaml",
        "template: writer/write_scene\ncases:\n  - name: x\n    assert:\n      - contains: x\n",
    );
    let run = prompt(
        &sb,
        &server,
        &[
            "promote",
            "qa/answer",
            "production",
            "3",
            "--eval",
            "other.yaml",
        ],
    );
    assert_error(&run, 2, "evaluates writer/write_scene, not qa/answer");
}

#[test]
fn bad_eval_files_are_refused_with_their_line_before_any_call() {
    let sb = Sandbox::new();
    write_templates(&sb);
    let server = Scripted::start();
    let case = "cases:\n  - name: one\n    vars: { q: x }\n    assert:\n      - contains: x\n";
    let bad: &[(&str, String, &str)] = &[
        ("unknown-template.yaml", format!("template: qa/nothing\n{case}"), ":1: unknown template qa/nothing"),
        ("unknown-version.yaml", format!("template: qa/answer\nversions:\n  - 1\n  - 7\n{case}"), ":4: template qa/answer (v7) not found"),
        ("unknown-label.yaml", format!("template: qa/answer\nversions: [1, production]\n{case}"), ":2: template qa/answer has no label `production`"),
        ("unknown-kind.yaml", "template: qa/answer\ncases:\n  - name: one\n    vars: { q: x }\n    assert:\n      - contains: x\n      - sounds_like: y\n".to_owned(), ":7: case \"one\": unknown assertion kind `sounds_like`"),
        ("missing-var.yaml", "template: qa/answer\ncases:\n  - name: one\n    assert:\n      - contains: x\n  - name: two\n    vars: { r: x }\n    assert:\n      - contains: x\n".to_owned(), ":3: case \"one\" does not render with version latest"),
        ("bad-yaml.yaml", "template: qa/answer\ncases: [\n  - name\n".to_owned(), "bad-yaml.yaml:"),
        ("unknown-field.yaml", format!("template: qa/answer\nmodel: m1\n{case}"), "unknown field `model`"),
        ("bad-regex.yaml", "template: qa/answer\ncases:\n  - name: one\n    vars: { q: x }\n    assert:\n      - regex: \"(\"\n".to_owned(), ":6: case \"one\": bad `regex`"),
    ];
    for (name, text, needle) in bad {
        sb.write(name, text);
        let run = prompt(&sb, &server, &["eval", name]);
        assert_error(&run, 1, needle);
        assert!(
            run.stderr.contains(&format!("{name}:")),
            "{name}: {}",
            run.stderr
        );
    }
    assert_eq!(server.chats(), 0, "no call before the file is checked");
}

/// `models` and `providers` cross with the versions: one column each, and only the
/// OpenAI-compatible columns reach the server.
#[test]
fn models_and_providers_cross_with_versions() {
    let sb = Sandbox::new();
    write_templates(&sb);
    let server = Scripted::start();
    server.set("v1:pier", Reply::Text("on the pier tonight"));
    sb.write(
        "cross.yaml",
        "template: qa/answer\nversions: [1]\nmodels: [m1, m2]\nproviders: [openai, echo]\ncases:\n  - name: pier\n    vars: { q: pier }\n    assert:\n      - contains: pier\n",
    );
    let out = prompt(&sb, &server, &["eval", "cross.yaml", "--json"]);
    out.ok();
    let out = out.json();
    let columns: Vec<String> = out["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| format!("{}/{}/{}", c["version"], c["model"], c["provider"]).replace('"', ""))
        .collect();
    assert_eq!(
        columns,
        ["1/m1/openai", "1/m1/echo", "1/m2/openai", "1/m2/echo"]
    );
    assert_eq!(server.chats(), 2, "the echo columns are answered offline");
    let echo = cell_where(&out, "m2", "echo");
    assert!(
        echo["output"]
            .as_str()
            .unwrap()
            .starts_with("[echo] model=m2"),
        "{echo}"
    );
}

fn cell_where<'a>(run: &'a Value, model: &str, provider: &str) -> &'a Value {
    run["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["model"] == model && c["provider"] == provider)
        .unwrap_or_else(|| panic!("no cell {model} × {provider} in {run}"))
}
