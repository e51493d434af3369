//! `prompt --help`, `templates`, `render`, `validate`.

use serde_json::{Value, json};

use crate::support::{Sandbox, root, templates};

/// Each shipped template with variables that render it, and text the user prompt must hold.
const RENDER_CASES: &[(&str, &[&str], &[&str])] = &[
    (
        "writer/write_chapter",
        &["--vars", "@examples/chapter1.yaml"],
        &["The Awakening", "The Glass Tower", "Mira"],
    ),
    (
        "writer/write_scene",
        &[
            "--var",
            "story_title=The Glass Tower",
            "--var",
            "setting=The archive at midnight",
            "--var",
            "pov_character=Mira",
            "--var",
            "goal=Find the ledger",
            "--var",
            "conflict=The archivist is watching",
            "--var",
            "target_words=600",
        ],
        &["The archive at midnight", "Mira", "Find the ledger", "600"],
    ),
    (
        "architect/create_characters",
        &[
            "--var",
            "story_title=The Glass Tower",
            "--var",
            "genre=fantasy",
            "--var",
            "premise=A cartographer without a memory",
            "--var",
            "num_characters=3",
            "--var",
            r#"themes=["memory", "duty"]"#,
        ],
        &[
            "The Glass Tower",
            "A cartographer without a memory",
            "memory",
        ],
    ),
    (
        "editor/edit_chapter@1",
        &[
            "--var",
            "chapter_number=4",
            "--var",
            "story_title=The Glass Tower",
            "--var",
            "draft=Mira woke up in the tower.",
        ],
        &["Mira woke up in the tower.", "The Glass Tower"],
    ),
    (
        "interviewer/ask_followup",
        &[
            "--var",
            "story_idea=A door in the rock",
            "--var",
            "answer=A keeper",
        ],
        &["A door in the rock", "A keeper"],
    ),
    (
        "editor/check_continuity",
        &[
            "--var",
            "chapter_number=4",
            "--var",
            "story_title=The Glass Tower",
            "--var",
            "draft=Mira woke up.",
        ],
        &["Mira woke up.", "The Glass Tower"],
    ),
];

fn args_with_root<'a>(args: &'a [&'a str]) -> Vec<String> {
    args.iter()
        .map(|a| match a.strip_prefix('@') {
            Some(rel) => root().join(rel).display().to_string(),
            None => (*a).to_owned(),
        })
        .collect()
}

#[test]
fn help_lists_every_command_with_examples() {
    let sb = Sandbox::new();
    let out = sb.run(&["--help"]);
    let text = out.ok();
    for cmd in [
        "templates",
        "render",
        "validate",
        "generate",
        "batch",
        "cache",
        "metrics",
        "doctor",
    ] {
        assert!(text.contains(cmd), "--help lacks {cmd}");
    }
    assert!(text.contains("Examples:"));
    for sub in [
        vec!["render"],
        vec!["validate"],
        vec!["generate"],
        vec!["batch"],
        vec!["doctor"],
        vec!["templates", "list"],
        vec!["templates", "show"],
        vec!["cache", "stats"],
        vec!["metrics", "agent"],
        vec!["metrics", "report"],
        vec!["metrics", "models"],
    ] {
        let mut args = sub.clone();
        args.push("--help");
        let out = sb.run(&args);
        assert!(
            out.ok().contains("Example"),
            "{sub:?} --help has no example"
        );
    }
    let version = sb.run(&["--version"]);
    assert!(version.ok().starts_with("prompt "));
}

/// The shipped templates as `agent/task@vN`, from the files.
fn shipped() -> Vec<String> {
    let mut out = Vec::new();
    for agent in std::fs::read_dir(templates()).unwrap() {
        let agent = agent.unwrap().path();
        if !agent.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&agent).unwrap() {
            let name = file.unwrap().file_name().to_string_lossy().into_owned();
            if let Some(stem) = name.strip_suffix(".yaml")
                && let Some((task, version)) = stem.rsplit_once("_v")
            {
                let agent = agent.file_name().unwrap().to_string_lossy();
                out.push(format!("{agent}/{task}@v{version}"));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn render_each_shipped_template() {
    let sb = Sandbox::new();
    // Every shipped template has a case below.
    for t in shipped() {
        let (name, _) = t.split_once('@').unwrap();
        assert!(
            RENDER_CASES
                .iter()
                .any(|(c, _, _)| c.split('@').next() == Some(name)),
            "no render case for the shipped template {t}"
        );
    }
    for (template, vars, expected) in RENDER_CASES {
        let mut args = vec!["render".to_owned(), (*template).to_owned()];
        args.extend(args_with_root(vars));
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = sb.run(&argv);
        let text = out.ok();
        assert!(
            text.contains("── system ──") && text.contains("── user ──"),
            "{text}"
        );
        for e in *expected {
            assert!(
                text.contains(e),
                "{template}: rendered text lacks {e:?}:\n{text}"
            );
        }
        // --json: exactly the documented keys, and the same user prompt.
        let mut json_args = argv.clone();
        json_args.push("--json");
        let out = sb.run(&json_args);
        let v = out.json();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        // `system` and `user` for two-message templates; `tools` where declared.
        let messages = v["messages"].as_array().expect("messages");
        let two_message = v.get("system").is_some();
        let mut want = vec!["agent", "messages", "task", "template_hash", "version"];
        if two_message {
            want.extend(["system", "user"]);
        }
        if v.get("tools").is_some() {
            want.extend(["tool_choice", "tools"]);
        }
        want.sort_unstable();
        assert_eq!(sorted, want, "{template}");
        let (agent, task) = template.split('@').next().unwrap().split_once('/').unwrap();
        assert_eq!(v["agent"], agent);
        assert_eq!(v["task"], task);
        assert_eq!(v["version"], 1);
        assert_eq!(v["template_hash"].as_str().unwrap().len(), 64);
        if two_message {
            assert_eq!(messages.len(), 2, "{template}");
            assert_eq!(
                messages[0],
                json!({"role": "system", "content": v["system"]})
            );
            assert_eq!(messages[1], json!({"role": "user", "content": v["user"]}));
        }
        let all: String = messages
            .iter()
            .map(|m| m["content"].as_str().unwrap_or_default())
            .collect();
        for e in *expected {
            assert!(all.contains(e), "{template} --json lacks {e:?}");
        }
    }
}

#[test]
fn render_with_examples_adds_the_few_shot_block() {
    let sb = Sandbox::new();
    let vars = root().join("examples/chapter1.yaml");
    let vars = vars.to_str().unwrap();
    let plain = sb
        .run(&["render", "writer/write_chapter", "--vars", vars, "--json"])
        .json();
    let with = sb
        .run(&[
            "render",
            "writer/write_chapter",
            "--vars",
            vars,
            "--examples",
            "1",
            "--json",
        ])
        .json();
    let (plain_user, with_user) = (
        plain["user"].as_str().unwrap(),
        with["user"].as_str().unwrap(),
    );
    assert!(with_user.len() > plain_user.len());
    assert!(with_user.contains(plain_user.trim()));
}

#[test]
fn var_overrides_vars_file_and_is_typed() {
    let sb = Sandbox::new();
    let vars = root().join("examples/chapter1.yaml");
    let out = sb
        .run(&[
            "render",
            "writer/write_chapter",
            "--vars",
            vars.to_str().unwrap(),
            "--var",
            "chapter_title=The Flood",
            "--var",
            "chapter_number=12",
            "--json",
        ])
        .json();
    let user = out["user"].as_str().unwrap();
    assert!(
        user.contains("The Flood") && !user.contains("The Awakening"),
        "{user}"
    );
    assert!(user.contains("12"), "{user}");
}

#[test]
fn templates_list_and_show() {
    let sb = Sandbox::new();
    let list = sb.run(&["templates", "list", "--json"]).json();
    let items = list.as_array().unwrap();
    let names: Vec<String> = items
        .iter()
        .map(|i| {
            format!(
                "{}/{}",
                i["agent"].as_str().unwrap(),
                i["task"].as_str().unwrap()
            )
        })
        .collect();
    for expected in [
        "architect/create_characters",
        "editor/edit_chapter",
        "writer/write_chapter",
        "writer/write_scene",
    ] {
        assert!(names.iter().any(|n| n == expected), "{names:?}");
    }
    assert!(
        items
            .iter()
            .all(|i| i["version"].as_u64() == Some(1) && i["path"].is_string())
    );

    let writer = sb
        .run(&["templates", "list", "--agent", "writer", "--json"])
        .json();
    assert_eq!(writer.as_array().unwrap().len(), 2);

    let table = sb.run(&["templates", "list"]);
    let first = table.ok().lines().next().unwrap();
    assert!(
        first.starts_with("template") && first.contains("version"),
        "{first}"
    );

    let show = sb
        .run(&["templates", "show", "writer/write_chapter@1", "--json"])
        .json();
    assert_eq!(show["version"], 1);
    let vars: Vec<&str> = show["variables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert!(
        vars.contains(&"chapter_number") && vars.contains(&"outline"),
        "{vars:?}"
    );
    assert!(
        show["user_prompt_template"]
            .as_str()
            .unwrap()
            .contains("{{")
    );
    let text = sb.run(&["templates", "show", "writer/write_chapter"]);
    assert!(text.ok().contains("chapter_number") && text.stdout.contains("integer"));
}

#[test]
fn validate_prints_the_xtask_format() {
    let sb = Sandbox::new();
    let out = sb.run(&["validate"]);
    let last = out.ok().lines().last().unwrap().to_owned();
    assert_eq!(
        last,
        format!(
            "checked {} template file(s) in {}: 0 error(s), 0 warning(s)",
            shipped().len(),
            templates().display()
        )
    );

    // A broken template: diagnostics as path:line:col: error: message, exit 1.
    let bad = sb.write(
        "bad/writer/oops_v1.yaml",
        "version: 2\nagent: writer\ntask: oops\nsystem_prompt: hi\nuser_prompt_template: \"{{ x \"\nvariables:\n  x: \"string - x\"\n",
    );
    let dir = bad.parent().unwrap().parent().unwrap();
    let out = sb.run(&["validate", dir.to_str().unwrap()]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines.len() >= 2, "{}", out.stdout);
    for line in &lines[..lines.len() - 1] {
        let mut parts = line.splitn(4, ':');
        let (path, l, c) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        assert!(path.ends_with("oops_v1.yaml"), "{line}");
        assert!(
            l.parse::<usize>().is_ok() && c.parse::<usize>().is_ok(),
            "{line}"
        );
        let rest = parts.next().unwrap();
        assert!(
            rest.starts_with(" error: ") || rest.starts_with(" warning: "),
            "{line}"
        );
    }
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with("checked 1 template file(s) in ")
    );
    assert!(!lines.last().unwrap().contains(" 0 error(s)"));

    let json = sb.run(&["validate", dir.to_str().unwrap(), "--json"]);
    assert_eq!(json.code, 1);
    let v: Value = json.json();
    assert!(v["errors"].as_u64().unwrap() >= 1);
    assert_eq!(v["files_checked"], 1);
}

/// Writes `<dir>/writer/loops_v1.yaml` with this user prompt and an integer variable `n`.
fn loops_template(sb: &Sandbox, dir: &str, user: &str) -> std::path::PathBuf {
    let yaml = format!(
        "version: 1\nagent: writer\ntask: loops\nsystem_prompt: You write.\nuser_prompt_template: {}\nvariables:\n  n: \"integer - loop size\"\n",
        serde_json::to_string(user).unwrap()
    );
    sb.write(&format!("{dir}/writer/loops_v1.yaml"), &yaml);
    sb.path().join(dir)
}

#[test]
fn render_stops_a_runaway_template_with_the_budget_error() {
    let sb = Sandbox::new();
    let dir = loops_template(
        &sb,
        "loops",
        "{% for i in range(n) %}{% for j in range(n) %}{% for k in range(n) %}.{% endfor %}{% endfor %}{% endfor %}",
    );
    let dir = dir.to_str().unwrap();
    let small = sb.run(&["--templates", dir, "render", "writer/loops", "--var", "n=2"]);
    assert!(small.ok().contains("........"), "{}", small.stdout);
    // 1e12 iterations: fails fast (the fuel budget), exit 1, naming template and budget.
    let out = sb.run(&[
        "--templates",
        dir,
        "render",
        "writer/loops",
        "--var",
        "n=10000",
    ]);
    crate::support::assert_error(&out, 1, "ran out of render fuel");
    assert!(out.stderr.contains("writer/loops v1"), "{}", out.stderr);
    assert!(out.stderr.contains("1000000"), "{}", out.stderr);
}

#[test]
fn validate_reports_includes_that_do_not_resolve() {
    let sb = Sandbox::new();
    sb.write(
        "inc/writer/loops_v1.yaml",
        "version: 1\nagent: writer\ntask: loops\nsystem_prompt: You write.\nuser_prompt_template: |\n  Intro {{ n }}.\n  {% include \"../../../../etc/passwd\" %}\n  {% include 'system_prompt' %}\nvariables:\n  n: \"integer - loop size\"\n",
    );
    let dir = sb.path().join("inc");
    let out = sb.run(&["validate", dir.to_str().unwrap()]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let first = out.stdout.lines().next().unwrap();
    assert!(first.contains("loops_v1.yaml:7:"), "{first}");
    assert!(
        first.contains("error: in `user_prompt_template`: `include` of \"../../../../etc/passwd\" tries to leave the template directory"),
        "{first}"
    );
    assert!(
        out.stdout.lines().last().unwrap().contains("1 error(s)"),
        "{}",
        out.stdout
    );
}

/// `templates show` of conversation templates: every entry in order, history and tools named.
#[test]
fn show_lists_the_entries_and_tools_of_a_conversation_template() {
    let sb = Sandbox::new();
    let out = sb.run(&["templates", "show", "interviewer/ask_followup"]);
    let text = out.ok();
    let (system, history, user) = (
        text.find("system:").expect("system entry"),
        text.find("history: history").expect("history entry"),
        text.rfind("user:").expect("user entry"),
    );
    assert!(system < history && history < user, "{text}");
    let v = sb
        .run(&["templates", "show", "editor/check_continuity", "--json"])
        .json();
    let entries = v["messages"].as_array().expect("messages");
    assert_eq!(entries.last().unwrap(), &json!({"history": "tool_turns"}));
    assert_eq!(entries[0]["role"], "system");
    assert_eq!(v["tools"][0]["name"], "lookup_character");
    assert_eq!(v["tool_choice"], "auto");
}
