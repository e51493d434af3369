//! Every lint error and warning, one case each: files written to a temporary directory,
//! diagnostics compared as the exact lines `cargo xtask validate-templates` prints.

#![allow(clippy::unwrap_used)] // test helpers fail loudly

use std::path::Path;

use prompt_templates::lint;

/// A valid template for `writer/t_v1.yaml`, with `{extra}` appended.
fn base(extra: &str) -> String {
    format!(
        "version: 1\nagent: writer\ntask: t\nsystem_prompt: You write.\nuser_prompt_template: \"Write about {{{{ topic }}}}.\"\nvariables:\n  topic: \"string - The topic\"\n{extra}"
    )
}

/// Writes `files` (path relative to the directory, content) and checks the lint output,
/// with paths shown relative to the directory.
fn check(files: &[(&str, &[u8])], expected: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    for (path, content) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
    }
    let report = lint(dir.path()).unwrap();
    let lines: Vec<String> = report
        .diagnostics
        .iter()
        .map(|d| {
            let shown = d.to_string();
            let prefix = format!("{}{}", dir.path().display(), std::path::MAIN_SEPARATOR);
            shown
                .strip_prefix(&prefix)
                .unwrap_or(&shown)
                .replace('\\', "/")
        })
        .collect();
    assert_eq!(lines, expected, "files: {files:?}");
    assert_eq!(
        report.files_checked,
        files
            .iter()
            .filter(|(p, _)| p.ends_with(".yaml") || p.ends_with(".yml"))
            .count()
    );
    let errors = expected.iter().filter(|l| l.contains(": error: ")).count();
    assert_eq!(report.error_count(), errors);
    assert_eq!(report.warning_count(), expected.len() - errors);
    assert_eq!(report.has_errors(), errors > 0);
}

fn one(content: &str, expected: &[&str]) {
    check(&[("writer/t_v1.yaml", content.as_bytes())], expected);
}

#[test]
fn a_valid_template_has_no_diagnostics() {
    one(&base(""), &[]);
}

#[test]
fn invalid_yaml() {
    one(
        "version: 1\nagent: [writer\n",
        &["writer/t_v1.yaml:2:8: error: invalid YAML: unclosed bracket '['"],
    );
    one(
        "- a list\n- not a map\n",
        &["writer/t_v1.yaml:1:1: error: invalid YAML: expected mapping start"],
    );
}

#[test]
fn not_utf8() {
    check(
        &[("writer/t_v1.yaml", b"version: 1\nagent: \xff\n")],
        &["writer/t_v1.yaml:2:8: error: file is not valid UTF-8"],
    );
}

#[test]
fn missing_or_empty_required_fields() {
    let cases: &[(&str, &str)] = &[
        (
            "version: 1\n",
            "writer/t_v1.yaml:1:1: error: missing required field `version`",
        ),
        (
            "agent: writer\n",
            "writer/t_v1.yaml:1:1: error: missing required field `agent`",
        ),
        (
            "task: t\n",
            "writer/t_v1.yaml:1:1: error: missing required field `task`",
        ),
        (
            "system_prompt: You write.\n",
            "writer/t_v1.yaml:1:1: error: missing required field `system_prompt`",
        ),
    ];
    for (line, expected) in cases {
        one(&base("").replace(line, ""), &[expected]);
    }
    one(
        &base("").replace("system_prompt: You write.", "system_prompt: \"  \""),
        &["writer/t_v1.yaml:4:16: error: required field `system_prompt` is empty"],
    );
    one(
        &base("").replace("agent: writer", "agent:"),
        &["writer/t_v1.yaml:2:6: error: required field `agent` is empty"],
    );
    one(
        &base("").replace("version: 1", "version: one"),
        &["writer/t_v1.yaml:1:10: error: `version` must be a whole number from 1, got \"one\""],
    );
}

#[test]
fn missing_user_prompt_template() {
    let content = base("").replace("user_prompt_template: \"Write about {{ topic }}.\"\n", "");
    one(
        &content,
        &["writer/t_v1.yaml:1:1: error: missing required field `user_prompt_template`"],
    );
}

#[test]
fn jinja_syntax_error_points_into_the_file() {
    let content = base("").replace(
        "user_prompt_template: \"Write about {{ topic }}.\"",
        "user_prompt_template: |\n  Line one {{ topic }}\n  Line two\n  Line three {% if topic %}",
    );
    one(
        &content,
        &[
            "writer/t_v1.yaml:8:26: error: Jinja syntax error in `user_prompt_template`: unexpected end of input, expected end of block",
        ],
    );
    let content = base("").replace(
        "system_prompt: You write.",
        "system_prompt: \"You {{ write }\"",
    );
    one(
        &content,
        &[
            "writer/t_v1.yaml:4:30: error: Jinja syntax error in `system_prompt`: unexpected `}`, expected end of variable block",
        ],
    );
}

#[test]
fn variable_used_but_not_declared() {
    let content = base("").replace(
        "You write.",
        "You write {{ genre }} in {{ language | upper }}.",
    );
    one(
        &content,
        &[
            "writer/t_v1.yaml:4:29: error: variable `genre` is used in `system_prompt` but not declared in `variables`",
            "writer/t_v1.yaml:4:44: error: variable `language` is used in `system_prompt` but not declared in `variables`",
        ],
    );
}

#[test]
fn file_name_and_folder_must_agree() {
    check(
        &[("writer/t_v2.yaml", base("").as_bytes())],
        &["writer/t_v2.yaml:1:10: error: version 1 does not match the file name `t_v2.yaml` (_v2)"],
    );
    check(
        &[("writer/other_v1.yaml", base("").as_bytes())],
        &[
            "writer/other_v1.yaml:3:7: error: task `t` does not match the file name `other_v1.yaml` (task `other`)",
        ],
    );
    check(
        &[("editor/t_v1.yaml", base("").as_bytes())],
        &[
            "editor/t_v1.yaml:2:8: error: agent `writer` does not match the folder `editor`: the file belongs in `writer/`",
        ],
    );
    check(
        &[("writer/t_v01.yaml", base("").as_bytes())],
        &[
            "writer/t_v01.yaml:1:1: error: file name `t_v01.yaml` is not `<task>_v<N>.yaml` (N from 1, no leading zeros)",
        ],
    );
    check(
        &[("writer/t_v1.yml", base("").as_bytes())],
        &[
            "writer/t_v1.yml:1:1: error: file name `t_v1.yml` is not `<task>_v<N>.yaml` (N from 1, no leading zeros)",
            "writer/t_v1.yml:1:1: error: template files end in `.yaml`: rename this `.yml` file",
        ],
    );
    let content = base("").replace("agent: writer", "agent: ../writer");
    one(
        &content,
        &[
            "writer/t_v1.yaml:2:8: error: `agent` \"../writer\" must be a plain name of letters, digits, `_` and `-`",
        ],
    );
}

#[test]
fn two_files_claiming_the_same_template() {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["writer", "other"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        std::fs::write(dir.path().join(sub).join("t_v1.yaml"), base("")).unwrap();
    }
    let report = lint(dir.path()).unwrap();
    let first = dir.path().join("other/t_v1.yaml");
    let duplicate = report
        .diagnostics
        .iter()
        .find(|d| d.message.starts_with("duplicate"))
        .unwrap();
    assert_eq!(duplicate.path, dir.path().join("writer/t_v1.yaml"));
    assert_eq!((duplicate.line, duplicate.col), (1, 10));
    assert_eq!(
        duplicate.message,
        format!(
            "duplicate template writer/t v1: {} claims it too",
            first.display()
        )
    );
}

#[test]
fn example_input_that_does_not_render() {
    let content = base(
        "examples:\n  - input: { topic: 3 }\n    output: \"An answer.\"\n  - input: {}\n    output: \"x\"\n  - input: { topic: \"ok\", colour: red }\n    output: \"x\"\n",
    );
    let dir_line = |line: usize, col: usize, msg: &str| {
        format!("writer/t_v1.yaml:{line}:{col}: error: example {msg}")
    };
    let expected = [
        dir_line(
            9,
            5,
            "1 input does not render: 1 variable problem(s): variable `topic` expects string, got integer",
        ),
        dir_line(
            11,
            5,
            "2 input does not render: 1 variable problem(s): missing required variable `topic` (string)",
        ),
        dir_line(
            13,
            5,
            "3 input does not render: 1 variable problem(s): unknown variable `colour` (not declared)",
        ),
    ];
    one(
        &content,
        &expected.iter().map(String::as_str).collect::<Vec<_>>(),
    );
}

#[test]
fn malformed_examples() {
    let content =
        base("examples:\n  - \"just text\"\n  - input: [1]\n    output: \"\"\n    extra: 1\n");
    one(
        &content,
        &[
            "writer/t_v1.yaml:9:5: error: example 1 must be a map with `input` and `output`",
            "writer/t_v1.yaml:10:5: error: example 2: `input` must be a map of variables, got list",
            "writer/t_v1.yaml:10:5: error: example 2: missing or empty required field `output`",
            "writer/t_v1.yaml:10:5: error: example 2: unknown key `extra` (expected context, input, output)",
        ],
    );
}

#[test]
fn bad_variable_declarations() {
    let cases: &[(&str, &str)] = &[
        (
            "  size: \"huge - how big\"\n",
            "writer/t_v1.yaml:8:9: error: variable `size`: unknown variable type \"huge\": expected string, integer, number, boolean, list, object, any or messages (short form: \"<type> - <description>\")",
        ),
        (
            "  size: { type: integer, required: true, default: 3 }\n",
            "writer/t_v1.yaml:8:9: error: variable `size` is required and has a default: drop one of them",
        ),
        (
            "  size: { type: integer, default: \"big\" }\n",
            "writer/t_v1.yaml:8:9: error: variable `size`: default is string, not integer",
        ),
        (
            "  size: { type: integer, color: red }\n",
            "writer/t_v1.yaml:8:9: error: variable `size`: unknown key `color` (expected type, description, required, default)",
        ),
        (
            "  size: { description: \"no type\" }\n",
            "writer/t_v1.yaml:8:9: error: variable `size`: missing `type`",
        ),
        (
            "  size:\n",
            "writer/t_v1.yaml:8:7: error: variable `size` has no declaration: write \"<type> - <description>\" or { type: ..., description: ... }",
        ),
        (
            "  2size: \"integer - bad name\"\n",
            "writer/t_v1.yaml:8:3: error: variable name `2size` is not an identifier (letters, digits and `_`, not starting with a digit)",
        ),
    ];
    for (decl, expected) in cases {
        // The body uses `size` so only the declaration is at fault.
        let content = base(decl).replace("{{ topic }}", "{{ topic }} {{ size }}");
        let content = if decl.contains("2size") {
            base(decl)
        } else {
            content
        };
        one(&content, &[expected]);
    }
}

#[test]
fn bad_sections() {
    one(
        &base("validation: { min_length: 10, max_length: 5 }\n"),
        &["writer/t_v1.yaml:8:13: error: validation: min_length 10 is greater than max_length 5"],
    );
    one(
        &base("validation: { min_len: 10 }\n"),
        &[
            "writer/t_v1.yaml:8:13: error: invalid `validation`: unknown field `min_len`, expected `min_length` or `max_length`",
        ],
    );
    one(
        &base("model: { name: m, temperature: hot }\n"),
        &[
            "writer/t_v1.yaml:8:8: error: invalid `model`: invalid type: string \"hot\", expected f64",
        ],
    );
}

#[test]
fn warning_declared_but_unused() {
    one(
        &base("  tone: { type: string, default: calm }\n"),
        &["writer/t_v1.yaml:8:3: warning: variable `tone` is declared but no body uses it"],
    );
}

#[test]
fn warning_single_brace_placeholder() {
    let content = base("").replace(
        "You write.",
        "You write {topic} and {other} and {% raw %}{topic}{% endraw %}.",
    );
    one(
        &content,
        &[
            "writer/t_v1.yaml:4:26: warning: `{topic}` in `system_prompt` is printed literally: Jinja needs `{{ topic }}`",
        ],
    );
}

#[test]
fn output_is_sorted_and_stable() {
    let bad = base("").replace("{{ topic }}", "{{ nope }}");
    let files: &[(&str, &[u8])] = &[
        ("writer/t_v1.yaml", bad.as_bytes()),
        ("architect/x_v1.yaml", b"version: 1\n"),
        ("README.md", b"not a template"),
        (".hidden/t_v1.yaml", b"ignored: true\n"),
    ];
    let expected = [
        "architect/x_v1.yaml:1:1: error: missing required field `agent`",
        "architect/x_v1.yaml:1:1: error: missing required field `system_prompt` (or a `messages` list)",
        "architect/x_v1.yaml:1:1: error: missing required field `task`",
        "architect/x_v1.yaml:1:1: error: missing required field `user_prompt_template` (or a `messages` list)",
        "writer/t_v1.yaml:5:39: error: variable `nope` is used in `user_prompt_template` but not declared in `variables`",
        "writer/t_v1.yaml:7:3: warning: variable `topic` is declared but no body uses it",
    ];
    check(&files[..3], &expected);
    // Hidden directories are skipped (and not counted).
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join(".hidden")).unwrap();
    std::fs::write(dir.path().join(".hidden/t_v1.yaml"), files[3].1).unwrap();
    assert_eq!(lint(dir.path()).unwrap().files_checked, 0);
}

#[test]
fn missing_directory_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let err = lint(&missing).unwrap_err();
    assert!(
        err.to_string().starts_with(&missing.display().to_string()),
        "{err}"
    );
}

#[test]
fn shipped_templates_are_clean() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../templates");
    let report = lint(&dir).unwrap();
    assert_eq!(report.files_checked, 6);
    assert!(report.diagnostics.is_empty(), "{:#?}", report.diagnostics);
}

/// What the include diagnostics end with: where a template name can resolve.
const ONLY_BODIES: &str = "only `system_prompt` and `user_prompt_template` (the bodies of the same file) can be included or imported";

/// A template whose user prompt has `lines` after its first line (line 6 of the file is
/// `Write about {{ topic }}.`, the given lines start at line 7).
fn with_body_lines(lines: &[&str]) -> String {
    let mut body = String::from("  Write about {{ topic }}.\n");
    for line in lines {
        body.push_str("  ");
        body.push_str(line);
        body.push('\n');
    }
    format!(
        "version: 1\nagent: writer\ntask: t\nsystem_prompt: You write.\nuser_prompt_template: |\n{body}variables:\n  topic: \"string - The topic\"\n"
    )
}

/// The (line, message) of each diagnostic of `content` as `writer/t_v1.yaml`. (Columns
/// inside block scalars are checked elsewhere; here the line is what matters.)
fn lines_and_messages(content: &str) -> Vec<(usize, String)> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("writer")).unwrap();
    std::fs::write(dir.path().join("writer/t_v1.yaml"), content).unwrap();
    lint(dir.path())
        .unwrap()
        .diagnostics
        .iter()
        .map(|d| (d.line, format!("{}: {}", d.severity, d.message)))
        .collect()
}

#[test]
fn includes_and_imports_that_do_not_resolve() {
    let found = lines_and_messages(&with_body_lines(&[
        "{% include \"../../../../etc/passwd\" %}",
        "{% include \"header.txt\" %}",
        "{% from \"macros\" import m %}",
        "{%- import '/abs/path' as x -%}",
        "{% extends \"base\" %}",
    ]));
    let expected: Vec<(usize, String)> = vec![
        (
            7,
            format!(
                "error: in `user_prompt_template`: `include` of \"../../../../etc/passwd\" tries to leave the template directory; templates never read files: {ONLY_BODIES}"
            ),
        ),
        (
            8,
            format!(
                "error: in `user_prompt_template`: `include` of \"header.txt\": no such template; {ONLY_BODIES}"
            ),
        ),
        (
            9,
            format!(
                "error: in `user_prompt_template`: `from` of \"macros\": no such template; {ONLY_BODIES}"
            ),
        ),
        (
            10,
            format!(
                "error: in `user_prompt_template`: `import` of \"/abs/path\" tries to leave the template directory; templates never read files: {ONLY_BODIES}"
            ),
        ),
        (
            11,
            format!(
                "error: in `user_prompt_template`: `extends` of \"base\": no such template; {ONLY_BODIES}"
            ),
        ),
    ];
    assert_eq!(found, expected);
    // With the column, in a one-line body: at the template name.
    one(
        &base("").replace(
            "system_prompt: You write.",
            "system_prompt: \"You write. {% include '../../../../etc/passwd' %}\"",
        ),
        &[&format!(
            "writer/t_v1.yaml:4:39: error: in `system_prompt`: `include` of \"../../../../etc/passwd\" tries to leave the template directory; templates never read files: {ONLY_BODIES}"
        )],
    );
    one(
        &base("").replace(
            "system_prompt: You write.",
            "system_prompt: \"You write. {% include 'nope' %}\"",
        ),
        &[&format!(
            "writer/t_v1.yaml:4:39: error: in `system_prompt`: `include` of \"nope\": no such template; {ONLY_BODIES}"
        )],
    );
}

#[test]
fn includes_lint_agrees_with_render() {
    use prompt_templates::{TemplateStore, VersionReq};
    use serde_json::json;

    let render = |content: &str| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("writer")).unwrap();
        std::fs::write(dir.path().join("writer/t_v1.yaml"), content).unwrap();
        let report = lint(dir.path()).unwrap();
        let store = TemplateStore::open(dir.path()).unwrap();
        let t = store.load("writer", "t", VersionReq::Latest).unwrap();
        let vars = json!({"topic": "owls"}).as_object().unwrap().clone();
        (report.error_count(), t.render(&vars).map(|r| r.user))
    };
    // What resolves: the other body (and a list whose first found name is one).
    let good = with_body_lines(&[
        "{% include \"system_prompt\" %}",
        "{%- import 'system_prompt' as s %}",
        "{% include ['missing', 'system_prompt'] %}",
        "{% include 'missing' ignore missing %}",
    ]);
    let (errors, rendered) = render(&good);
    assert_eq!(errors, 0);
    assert_eq!(
        rendered.unwrap(),
        "Write about owls.\nYou write.\nYou write.\n"
    );
    assert_eq!(
        lines_and_messages(&good),
        vec![(
            10,
            format!(
                "warning: in `user_prompt_template`: `include \"missing\" ignore missing` includes nothing: no such template; {ONLY_BODIES}"
            )
        )]
    );
    // What does not resolve fails both.
    for line in [
        "{% include \"../../../../etc/passwd\" %}",
        "{% include 'user_prompt_template.yaml' %}",
        "{% from 'x' import y %}",
    ] {
        let (errors, rendered) = render(&with_body_lines(&[line]));
        assert_eq!(errors, 1, "{line}");
        let err = rendered.unwrap_err().to_string();
        assert!(err.contains("template not found"), "{line}: {err}");
    }
    // A computed name is a warning: lint cannot know it.
    assert_eq!(
        lines_and_messages(&with_body_lines(&["{% include topic %}"])),
        vec![(
            7,
            format!(
                "warning: in `user_prompt_template`: `include` of a computed template name cannot be checked; {ONLY_BODIES}"
            )
        )]
    );
}

/// The labels file beside the templates must parse and name versions that exist.
#[test]
fn labels_name_existing_versions() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("writer")).unwrap();
    std::fs::write(
        dir.path().join("writer/t_v1.yaml"),
        "version: 1\nagent: writer\ntask: t\nsystem_prompt: S\nuser_prompt_template: U\n",
    )
    .unwrap();
    let labels = dir.path().join("labels.toml");
    std::fs::write(&labels, "[writer.t]\nproduction = 1\nstaging = 7\n").unwrap();
    let report = lint(dir.path()).unwrap();
    let lines: Vec<String> = report.diagnostics.iter().map(ToString::to_string).collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].ends_with(
            "labels.toml:3:1: error: label `staging` of writer/t names v7, which does not exist"
        ),
        "{lines:?}"
    );
    std::fs::write(&labels, "[writer.t]\nproduction = [1]\n").unwrap();
    let report = lint(dir.path()).unwrap();
    assert_eq!(report.error_count(), 1);
    assert_eq!(report.diagnostics[0].line, 2);
}
