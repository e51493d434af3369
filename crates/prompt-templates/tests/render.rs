//! Rendering: variable checks, defaults, Jinja2 compatibility, examples, `parse_var`, and
//! snapshots of the shipped templates (`UPDATE_SNAPSHOTS=1` rewrites them).

#![allow(clippy::unwrap_used)] // test helpers fail loudly

use std::path::{Path, PathBuf};
use std::sync::Arc;

use prompt_templates::{
    PromptTemplate, TemplateError, TemplateStore, VarProblem, VarType, Vars, VersionReq,
};
use serde_json::{Value, json};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Writes `writer/t_v1.yaml` with these bodies and variables, and loads it.
fn template(system: &str, user: &str, variables: &str) -> (tempfile::TempDir, Arc<PromptTemplate>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("writer")).unwrap();
    let yaml = format!(
        "version: 1\nagent: writer\ntask: t\nsystem_prompt: {}\nuser_prompt_template: {}\nvariables:\n{}",
        serde_json::to_string(system).unwrap(),
        serde_json::to_string(user).unwrap(),
        variables
    );
    std::fs::write(dir.path().join("writer/t_v1.yaml"), yaml).unwrap();
    let store = TemplateStore::open(dir.path()).unwrap();
    let t = store.load("writer", "t", VersionReq::Latest).unwrap();
    (dir, t)
}

fn vars(value: Value) -> Vars {
    match value {
        Value::Object(map) => map,
        _ => panic!("vars must be an object"),
    }
}

/// Renders `user` with `variables` declared and `given` passed; returns the user prompt.
fn render(user: &str, variables: &str, given: Value) -> Result<String, TemplateError> {
    let (_dir, t) = template("System.", user, variables);
    t.render(&vars(given)).map(|r| r.user)
}

#[test]
fn jinja2_compatible_rendering() {
    let decl = "  d: \"object - a map\"\n  xs: \"list - items\"\n  pairs: \"list - pairs\"\n  name: \"string - a name\"\n  n: \"integer - a number\"\n  flag: \"boolean - a flag\"\n";
    let given = json!({
        "d": {"a": 1, "b": "two"}, "xs": ["x", "y", "z"], "pairs": [["k1", "v1"], ["k2", "v2"]],
        "name": "Ada", "n": 3, "flag": false
    });
    let cases: &[(&str, &str)] = &[
        (
            "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}",
            "a=1;b=two;",
        ),
        (
            "{% for x in xs %}{{ loop.index }}.{{ x }} {% endfor %}",
            "1.x 2.y 3.z ",
        ),
        ("{{ xs | join(\", \") }}", "x, y, z"),
        (
            "{% for a, b in pairs %}{{ a }}:{{ b }} {% endfor %}",
            "k1:v1 k2:v2 ",
        ),
        (
            "{{ name.upper() }} {{ name | lower }} {{ name | length }}",
            "ADA ada 3",
        ),
        (
            "{% if flag %}yes{% else %}no{% endif %} {{ n * 2 }} {{ n / 2 }}",
            "no 6 1.5",
        ),
        (
            "{% raw %}{{ name }} {name}{% endraw %}",
            "{{ name }} {name}",
        ),
        ("<b>{{ name }} & co</b>", "<b>Ada & co</b>"),
        ("a\n{% if flag %}\nhidden\n{% endif %}\nb\n", "a\n\nb"),
        (
            "{{ d.keys() | list | join(\",\") }} {{ xs[-1] }} {{ xs | length }}",
            "a,b z 3",
        ),
    ];
    for (body, expected) in cases {
        let rendered = render(body, decl, given.clone()).unwrap();
        assert_eq!(rendered, *expected, "body: {body}");
    }
}

#[test]
fn errors_list_every_problem_and_name_the_template() {
    let (_dir, t) = template(
        "Sys {{ a }}",
        "{{ a }} {{ b }} {{ c }}",
        "  a: \"integer - a\"\n  b: \"string - b\"\n  c: { type: list, required: false }\n",
    );
    let err = t
        .render(&vars(
            json!({"a": "seven", "c": {"no": 1}, "zz": 1, "yy": 2}),
        ))
        .unwrap_err();
    let TemplateError::Variables { template, problems } = &err else {
        panic!("{err:?}")
    };
    assert!(template.starts_with("writer/t v1 ("), "{template}");
    assert!(template.ends_with("t_v1.yaml)"), "{template}");
    assert_eq!(
        problems,
        &[
            VarProblem::TypeMismatch {
                name: "a".into(),
                expected: VarType::Integer,
                found: "string"
            },
            VarProblem::Missing {
                name: "b".into(),
                expected: VarType::String
            },
            VarProblem::TypeMismatch {
                name: "c".into(),
                expected: VarType::List,
                found: "object"
            },
            VarProblem::Unknown { name: "yy".into() },
            VarProblem::Unknown { name: "zz".into() },
        ]
    );
    let text = err.to_string();
    assert!(text.contains("5 variable problem(s): variable `a` expects integer, got string; missing required variable `b` (string);"), "{text}");
}

#[test]
fn each_render_error_alone() {
    let decl = "  a: \"integer - a\"\n  o: { type: string, required: false }\n";
    let cases: &[(Value, &str)] = &[
        (
            json!({}),
            "1 variable problem(s): missing required variable `a` (integer)",
        ),
        (
            json!({"a": 1, "b": 2}),
            "1 variable problem(s): unknown variable `b` (not declared)",
        ),
        (
            json!({"a": 1.5}),
            "1 variable problem(s): variable `a` expects integer, got number",
        ),
        (
            json!({"a": null}),
            "1 variable problem(s): variable `a` expects integer, got null",
        ),
        (
            json!({"a": 1, "o": 3}),
            "1 variable problem(s): variable `o` expects string, got integer",
        ),
    ];
    for (given, expected) in cases {
        let err = render("{{ a }}{{ o }}", decl, given.clone())
            .unwrap_err()
            .to_string();
        assert!(err.ends_with(expected), "given {given}: {err}");
    }
    // An engine error (undefined attribute) names the template, the part and the line.
    let err = render(
        "line\n{{ d.missing }}",
        "  d: \"object - d\"\n",
        json!({"d": {}}),
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(
            err,
            TemplateError::Render {
                part: "user_prompt_template",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        text.contains("writer/t v1")
            && text.contains("undefined value")
            && text.contains("line 2 of the body"),
        "{text}"
    );
}

#[test]
fn optional_variables_take_defaults_or_empty_values() {
    let decl = "  s: { type: string, required: false }\n  l: { type: list, required: false }\n  o: { type: object, required: false }\n  i: { type: integer, required: false }\n  d: { type: string, default: \"dflt\" }\n  n: { type: number, default: 0.5 }\n";
    let body = "[{{ s }}][{{ l | length }}][{{ o | length }}][{% if i %}{{ i }}{% else %}no i{% endif %}][{{ i is none }}][{{ d }}][{{ n }}]";
    assert_eq!(
        render(body, decl, json!({})).unwrap(),
        "[][0][0][no i][True][dflt][0.5]"
    );
    assert_eq!(
        render(body, decl, json!({"s": "S", "i": 4, "d": "given", "n": 2})).unwrap(),
        "[S][0][0][4][False][given][2]"
    );
    // `null` for an optional variable means "not given".
    assert_eq!(
        render(body, decl, json!({"d": null, "s": null})).unwrap(),
        "[][0][0][no i][True][dflt][0.5]"
    );
}

#[test]
fn values_are_emitted_verbatim() {
    let evil = "{{ 7 * 7 }} {% if true %}x{% endif %} {# c #} <script>&amp;</script> {name}\n\"quoted\" ünïcødé 🎉";
    let rendered = render("<<{{ v }}>>", "  v: \"string - v\"\n", json!({"v": evil})).unwrap();
    assert_eq!(rendered, format!("<<{evil}>>"));
}

#[test]
fn system_prompt_uses_variables_too() {
    let (_dir, t) = template(
        "You write in {{ lang }}.",
        "Go.",
        "  lang: { type: string, default: English }\n",
    );
    let r = t.render(&Vars::new()).unwrap();
    assert_eq!(
        (r.system.as_str(), r.user.as_str()),
        ("You write in English.", "Go.")
    );
}

#[test]
fn render_with_examples_layout() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("writer")).unwrap();
    std::fs::write(
        dir.path().join("writer/t_v1.yaml"),
        r#"version: 1
agent: writer
task: t
system_prompt: Sys.
user_prompt_template: "Write about {{ topic }}."
variables:
  topic: "string - the topic"
examples:
  - context: "Short"
    input: { topic: "cats" }
    output: "Cats purr.\n"
  - input: { topic: "dogs" }
    output: "Dogs bark."
"#,
    )
    .unwrap();
    let store = TemplateStore::open(dir.path()).unwrap();
    let t = store.load("writer", "t", VersionReq::Latest).unwrap();
    let given = vars(json!({"topic": "birds"}));
    assert_eq!(
        t.render_with_examples(&given, 0).unwrap(),
        t.render(&given).unwrap()
    );
    let one = t.render_with_examples(&given, 1).unwrap();
    assert_eq!(one.system, "Sys.");
    assert_eq!(
        one.user,
        "Here are some examples:\n\nExample 1 (Short):\nInput:\nWrite about cats.\nOutput:\nCats purr.\n\nNow, your task:\nWrite about birds."
    );
    let all = t.render_with_examples(&given, 10).unwrap();
    assert_eq!(
        all.user,
        "Here are some examples:\n\nExample 1 (Short):\nInput:\nWrite about cats.\nOutput:\nCats purr.\n\nExample 2:\nInput:\nWrite about dogs.\nOutput:\nDogs bark.\n\nNow, your task:\nWrite about birds."
    );
}

#[test]
fn parse_var_by_declared_type() {
    let (_dir, t) = template(
        "S",
        "{{ s }}{{ i }}{{ n }}{{ b }}{{ l }}{{ o }}{{ a }}",
        "  s: \"string - s\"\n  i: \"integer - i\"\n  n: \"number - n\"\n  b: \"boolean - b\"\n  l: \"list - l\"\n  o: \"object - o\"\n  a: \"any - a\"\n",
    );
    let ok: &[(&str, &str, Value)] = &[
        ("s", " 42 ", json!(" 42 ")),
        ("i", "42", json!(42)),
        ("i", "-7", json!(-7)),
        ("n", "2.5", json!(2.5)),
        ("n", "3", json!(3)),
        ("b", "true", json!(true)),
        ("b", "No", json!(false)),
        ("l", "[1, \"a\"]", json!([1, "a"])),
        ("o", "{\"k\": [1]}", json!({"k": [1]})),
        ("a", "{\"k\": 1}", json!({"k": 1})),
        ("a", "plain text", json!("plain text")),
    ];
    for (name, raw, expected) in ok {
        assert_eq!(&t.parse_var(name, raw).unwrap(), expected, "{name} {raw:?}");
    }
    let bad: &[(&str, &str, &str)] = &[
        (
            "i",
            "4.2",
            "variable `i` expects integer: cannot use \"4.2\": invalid digit found in string",
        ),
        (
            "n",
            "lots",
            "variable `n` expects number: cannot use \"lots\": invalid float literal",
        ),
        (
            "n",
            "inf",
            "variable `n` expects number: cannot use \"inf\": not a finite number",
        ),
        (
            "b",
            "maybe",
            "variable `b` expects boolean: cannot use \"maybe\": expected true/false, yes/no, on/off or 1/0",
        ),
        (
            "l",
            "a,b",
            "variable `l` expects list: cannot use \"a,b\": invalid JSON: expected value at line 1 column 1",
        ),
        (
            "o",
            "[1]",
            "variable `o` expects object: cannot use \"[1]\": JSON value is a list",
        ),
        (
            "zz",
            "1",
            "1 variable problem(s): unknown variable `zz` (not declared)",
        ),
    ];
    for (name, raw, expected) in bad {
        let err = t.parse_var(name, raw).unwrap_err().to_string();
        assert!(err.starts_with("template writer/t v1 ("), "{err}");
        assert!(err.ends_with(expected), "{name} {raw:?}: {err}");
    }
}

/// Rendered text of a template for the snapshot files.
fn shown(system: &str, user: &str) -> String {
    format!("=== system ===\n{system}\n=== user ===\n{user}\n")
}

/// Rendered messages of a template for the snapshot files.
fn shown_messages(messages: &[prompt_templates::Message]) -> String {
    let mut out = String::new();
    for m in messages {
        out.push_str(&format!("=== {} ===\n{}\n", m.role, m.content));
        for call in &m.tool_calls {
            out.push_str(&format!(
                "[tool call {} {}({})]\n",
                call.id, call.name, call.arguments
            ));
        }
        if let Some(id) = &m.tool_call_id {
            out.push_str(&format!("[result of {id}]\n"));
        }
    }
    out
}

fn check_snapshot(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_SNAPSHOTS=1)", path.display()));
    assert_eq!(
        actual, expected,
        "snapshot {name} differs (UPDATE_SNAPSHOTS=1 rewrites it)"
    );
}

#[test]
fn shipped_templates_render_as_expected() {
    let store = TemplateStore::open(root().join("templates")).unwrap();
    let chapter1: Vars = serde_saphyr::from_str(
        &std::fs::read_to_string(root().join("examples/chapter1.yaml")).unwrap(),
    )
    .unwrap();
    let t = store
        .load("writer", "write_chapter", VersionReq::Latest)
        .unwrap();
    let r = t.render(&chapter1).unwrap();
    check_snapshot("writer__write_chapter.txt", &shown(&r.system, &r.user));
    for (agent, task) in [
        ("writer", "write_scene"),
        ("editor", "edit_chapter"),
        ("architect", "create_characters"),
    ] {
        let t = store.load(agent, task, VersionReq::Latest).unwrap();
        assert_eq!(t.examples().len(), 1);
        assert!(t.model().and_then(|m| m.name.as_deref()).is_some());
        assert!(t.validation().min_length.is_some());
        let input = t.examples()[0].input.clone();
        let r = t.render_with_examples(&input, 1).unwrap();
        check_snapshot(&format!("{agent}__{task}.txt"), &shown(&r.system, &r.user));
        assert_eq!(r.messages.len(), 2);
    }
    // The message-list templates, with their example as turns and a history.
    let histories = [
        (
            "interviewer",
            "ask_followup",
            "history",
            json!([
                {"role": "user", "content": "I am ready. What is your first question?"},
                {"role": "assistant", "content": "Who finds the door, and why are they alone?"},
            ]),
        ),
        (
            "editor",
            "check_continuity",
            "tool_turns",
            json!([
                {"role": "assistant", "content": "", "tool_calls": [
                    {"id": "call_1", "name": "lookup_character", "arguments": {"name": "Mira", "before_chapter": 2}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "Mira: a young cartographer, left-handed."},
            ]),
        ),
    ];
    for (agent, task, history_var, history) in histories {
        let t = store.load(agent, task, VersionReq::Latest).unwrap();
        assert_eq!(t.examples().len(), 1);
        assert!(t.model().and_then(|m| m.name.as_deref()).is_some());
        assert!(t.validation().min_length.is_some());
        let mut input = t.examples()[0].input.clone();
        input.insert(history_var.to_owned(), history);
        let r = t.render_with_examples(&input, 1).unwrap();
        check_snapshot(
            &format!("{agent}__{task}.txt"),
            &shown_messages(&r.messages),
        );
    }
}
