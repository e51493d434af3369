//! Template variables from `--vars FILE` and `--var KEY=VALUE`, and template references.

use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{CliError, CliResult};

/// Template variables (the same type as `prompt_templates::Vars`).
pub type VarMap = Map<String, Value>;

/// Splits `KEY=VALUE`; a usage error when there is no `=` or the key is empty.
pub fn split_var(raw: &str) -> CliResult<(&str, &str)> {
    match raw.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => Ok((key.trim(), value)),
        _ => Err(
            CliError::usage(format!("bad --var `{raw}`: expected KEY=VALUE"))
                .hint("e.g. --var chapter_number=3 --var chapter_title='The Storm'"),
        ),
    }
}

/// Reads a JSON (`.json`) or YAML (any other extension) file holding one mapping of variables;
/// `-` reads standard input (JSON or YAML).
pub fn read_vars_file(path: &Path) -> CliResult<VarMap> {
    let text = if path == Path::new("-") {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map_err(|e| {
            CliError::failure(format!("cannot read variables from standard input: {e}"))
        })?;
        text
    } else {
        std::fs::read_to_string(path).map_err(|e| {
            CliError::failure(format!("cannot read vars file {}: {e}", path.display()))
                .hint("check the --vars path; it takes a .json or .yaml file with one mapping")
        })?
    };
    let is_json = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let value: Value = if is_json {
        serde_json::from_str(&text).map_err(|e| {
            CliError::failure(format!(
                "bad vars file {}:{}:{}: {e}",
                path.display(),
                e.line(),
                e.column()
            ))
        })?
    } else if text.trim().is_empty() {
        Value::Object(Map::new())
    } else {
        serde_saphyr::from_str(&text).map_err(|e| {
            CliError::failure(format!("bad vars file {}: {e}", path.display()))
                .hint("the file must hold one YAML mapping, e.g. `chapter_number: 1`")
        })?
    };
    match value {
        Value::Object(map) => Ok(map),
        Value::Null => Ok(Map::new()),
        other => Err(CliError::failure(format!(
            "bad vars file {}: expected a mapping of variable names to values, found {}",
            path.display(),
            prompt_templates::json_kind(&other)
        ))
        .hint("write one `name: value` per line (YAML) or one JSON object")),
    }
}

/// A parsed `AGENT/TASK[@VERSION]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateRef {
    /// Agent (the template folder).
    pub agent: String,
    /// Task.
    pub task: String,
    /// Version text after `@` (`3`, `v3`, `latest`), if any.
    pub version: Option<String>,
}

impl TemplateRef {
    /// Parses `AGENT/TASK[@VERSION]`; a usage error otherwise.
    pub fn parse(raw: &str) -> CliResult<Self> {
        let bad = || {
            CliError::usage(format!(
                "bad template `{raw}`: expected AGENT/TASK or AGENT/TASK@VERSION"
            ))
            .hint("e.g. writer/write_chapter or writer/write_chapter@2; `prompt templates list` shows them")
        };
        let (path, version) = match raw.split_once('@') {
            Some((p, v)) if !v.is_empty() => (p, Some(v.to_owned())),
            Some(_) => return Err(bad()),
            None => (raw, None),
        };
        let (agent, task) = path.split_once('/').ok_or_else(bad)?;
        let ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
                && s != "."
                && s != ".."
        };
        if !ok(agent) || !ok(task) {
            return Err(bad());
        }
        Ok(Self {
            agent: agent.to_owned(),
            task: task.to_owned(),
            version,
        })
    }
}

impl std::fmt::Display for TemplateRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.agent, self.task)?;
        if let Some(v) = &self.version {
            write!(f, "@{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_vars() {
        assert_eq!(split_var("a=b=c").unwrap(), ("a", "b=c"));
        assert_eq!(split_var("a=").unwrap(), ("a", ""));
        for bad in ["a", "=b", ""] {
            assert_eq!(split_var(bad).unwrap_err().code(), 2, "{bad}");
        }
    }

    #[test]
    fn parses_template_refs() {
        let r = TemplateRef::parse("writer/write_chapter@v2").unwrap();
        assert_eq!(
            (r.agent.as_str(), r.task.as_str(), r.version.as_deref()),
            ("writer", "write_chapter", Some("v2"))
        );
        assert_eq!(TemplateRef::parse("a/b").unwrap().version, None);
        for bad in [
            "writer", "writer/", "/x", "a/b@", "a/b/c", "../x/y", "a/b c",
        ] {
            assert_eq!(TemplateRef::parse(bad).unwrap_err().code(), 2, "{bad}");
        }
    }

    #[test]
    fn reads_yaml_and_json_vars_files() {
        let dir = tempfile::tempdir().unwrap();
        let y = dir.path().join("v.yaml");
        std::fs::write(&y, "chapter_number: 1\ntitle: \"The Awakening\"\n").unwrap();
        let m = read_vars_file(&y).unwrap();
        assert_eq!(m["chapter_number"], serde_json::json!(1));
        assert_eq!(m["title"], serde_json::json!("The Awakening"));
        let j = dir.path().join("v.json");
        std::fs::write(&j, "{\"a\": [1, 2]}").unwrap();
        assert_eq!(read_vars_file(&j).unwrap()["a"], serde_json::json!([1, 2]));
        std::fs::write(&j, "[1]").unwrap();
        assert!(
            read_vars_file(&j)
                .unwrap_err()
                .message
                .contains("expected a mapping")
        );
        std::fs::write(&j, "{\n\"a\": }").unwrap();
        assert!(
            read_vars_file(&j)
                .unwrap_err()
                .message
                .contains("v.json:2:")
        );
        let missing = read_vars_file(&dir.path().join("nope.yaml")).unwrap_err();
        assert_eq!(missing.code(), 1);
        assert!(missing.message.contains("nope.yaml"));
    }
}
