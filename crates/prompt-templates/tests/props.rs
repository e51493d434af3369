//! Property tests: arbitrary variable values render verbatim; arbitrary bytes as a template
//! file are an error, never a panic.

#![allow(clippy::unwrap_used)] // test helpers fail loudly

use std::path::Path;

use prompt_templates::{TemplateStore, Vars, VersionReq, lint};
use proptest::prelude::*;
use serde_json::json;

fn store_with(dir: &Path) -> TemplateStore {
    std::fs::create_dir_all(dir.join("writer")).unwrap();
    std::fs::write(
        dir.join("writer/t_v1.yaml"),
        "version: 1\nagent: writer\ntask: t\nsystem_prompt: \"[{{ a }}]\"\nuser_prompt_template: |\n  <{{ a }}|{{ items | join(\",\") }}|{% for k, v in m.items() %}{{ k }}={{ v }}{% endfor %}>\nvariables:\n  a: \"string - a\"\n  items: \"list - items\"\n  m: \"object - map\"\n",
    )
    .unwrap();
    TemplateStore::open(dir).unwrap()
}

/// Strings rich in Jinja syntax, braces, unicode and newlines.
fn nasty() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just("{{".to_owned()),
            Just("}}".to_owned()),
            Just("{%".to_owned()),
            Just("%}".to_owned()),
            Just("{#".to_owned()),
            Just("{% raw %}".to_owned()),
            Just("{name}".to_owned()),
            Just("\n".to_owned()),
            Just("\r\n".to_owned()),
            Just("é🎉\u{0}\u{200b}".to_owned()),
            any::<String>(),
        ],
        0..12,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn variable_values_render_verbatim(a in nasty(), items in prop::collection::vec(nasty(), 0..4), k in "[a-z]{1,8}", v in nasty()) {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with(dir.path());
        let t = store.load("writer", "t", VersionReq::Latest).unwrap();
        let mut vars = Vars::new();
        vars.insert("a".into(), json!(a));
        vars.insert("items".into(), json!(items));
        vars.insert("m".into(), json!({ k.clone(): v }));
        let r = t.render(&vars).unwrap();
        prop_assert_eq!(r.system, format!("[{a}]"));
        prop_assert_eq!(r.user, format!("<{a}|{}|{k}={v}>", items.join(",")));
        // A string value may be passed for the same variable through parse_var, unchanged.
        prop_assert_eq!(t.parse_var("a", &a).unwrap(), json!(a));
    }

    #[test]
    fn arbitrary_bytes_are_an_error_never_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("writer")).unwrap();
        std::fs::write(dir.path().join("writer/t_v1.yaml"), &bytes).unwrap();
        let store = TemplateStore::open(dir.path()).unwrap();
        prop_assert!(store.load("writer", "t", VersionReq::Latest).is_err());
        let report = lint(dir.path()).unwrap();
        prop_assert_eq!(report.files_checked, 1);
        prop_assert!(report.has_errors());
    }

    #[test]
    fn yaml_shaped_garbage_is_an_error_never_a_panic(
        lines in prop::collection::vec(
            prop_oneof![
                Just("version: 1".to_owned()), Just("agent: writer".to_owned()), Just("task: t".to_owned()),
                Just("system_prompt: |".to_owned()), Just("user_prompt_template: \"{{ x }}\"".to_owned()),
                Just("variables:".to_owned()), Just("  x: \"integer - x\"".to_owned()), Just("  {% if %}".to_owned()),
                Just("examples:".to_owned()), Just("  - input: { x: 1 }".to_owned()), Just("    output: o".to_owned()),
                Just("&a [*a]".to_owned()), Just("<<: *b".to_owned()), Just("- ".to_owned()), "[ -~]{0,30}",
            ],
            0..14,
        )
    ) {
        let text = lines.join("\n");
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("writer")).unwrap();
        std::fs::write(dir.path().join("writer/t_v1.yaml"), &text).unwrap();
        let store = TemplateStore::open(dir.path()).unwrap();
        let loaded = store.load("writer", "t", VersionReq::Latest);
        let report = lint(dir.path()).unwrap();
        // Whatever the text, load and lint agree on whether it is usable, and never panic.
        if loaded.is_ok() {
            let errors: Vec<String> = report.diagnostics.iter().filter(|d| d.message.contains("not declared") || d.message.starts_with("example")).map(ToString::to_string).collect();
            prop_assert_eq!(report.error_count(), errors.len(), "{:?}", report.diagnostics);
        } else {
            prop_assert!(report.has_errors());
        }
    }
}
