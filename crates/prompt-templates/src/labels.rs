//! Labels: names for template versions (`production`, `staging`), kept in `labels.toml`
//! beside the templates so they are reviewed and versioned with them.
//!
//! The file has one table per template, `[<agent>.<task>]`, mapping each label to a version:
//!
//! ```toml
//! [writer.write_chapter]
//! production = 2
//! staging = 3
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use crate::error::TemplateError;

/// The name of the labels file in a template directory.
pub const LABELS_FILE: &str = "labels.toml";

/// The heading written at the top of the labels file.
const HEADING: &str = "# Template labels: [<agent>.<task>] tables of `label = version`.\n\
# `prompt label set AGENT/TASK LABEL VERSION` edits this file (comments stay); `AGENT/TASK@LABEL` loads the version.\n\n";

/// Whether `name` can be a label: letters, digits, `_` and `-`, starting with a letter, and
/// neither `latest` nor a version (`N`, `vN`).
pub fn is_label_name(name: &str) -> bool {
    let starts_with_letter = name.bytes().next().is_some_and(|b| b.is_ascii_alphabetic());
    let rest = name.strip_prefix(['v', 'V']).unwrap_or(name);
    let is_version = !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit());
    starts_with_letter
        && !is_version
        && !name.eq_ignore_ascii_case("latest")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The labels of a template directory: agent → task → label → version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels {
    map: BTreeMap<String, BTreeMap<String, BTreeMap<String, u32>>>,
}

impl Labels {
    /// Reads a labels file; a missing file is no labels. A file that is not valid TOML, or
    /// holds something other than `label = version` tables, is an error naming its line.
    pub fn read(path: &Path) -> Result<Self, TemplateError> {
        Self::parse(path, &read_text(path)?)
    }

    /// Parses the text of a labels file (`path` is for messages).
    pub fn parse(path: &Path, text: &str) -> Result<Self, TemplateError> {
        let bad = |line: usize, message: String| TemplateError::Labels {
            path: path.to_path_buf(),
            line,
            message,
        };
        let map: BTreeMap<String, BTreeMap<String, BTreeMap<String, u32>>> = toml::from_str(text)
            .map_err(|e| {
            let line = e.span().map_or(1, |s| {
                text[..s.start.min(text.len())].matches('\n').count() + 1
            });
            bad(
                line,
                format!(
                    "{} (expected [agent.task] tables of `label = version`)",
                    e.message().trim()
                ),
            )
        })?;
        for (agent, tasks) in &map {
            for (task, labels) in tasks {
                for (label, version) in labels {
                    let line = line_of(text, label);
                    if !is_label_name(label) {
                        return Err(bad(
                            line,
                            format!(
                                "label `{label}` of {agent}/{task}: a label is letters, digits, `_` and `-`, starting with a letter, and not `latest` or a version"
                            ),
                        ));
                    }
                    if *version == 0 {
                        return Err(bad(
                            line,
                            format!("label `{label}` of {agent}/{task}: versions start at 1"),
                        ));
                    }
                }
            }
        }
        Ok(Self { map })
    }

    /// The version `label` names for `agent/task`.
    pub fn get(&self, agent: &str, task: &str, label: &str) -> Option<u32> {
        self.map.get(agent)?.get(task)?.get(label).copied()
    }

    /// The labels of `agent/task` and their versions, sorted by label.
    pub fn of<'a>(&'a self, agent: &str, task: &str) -> impl Iterator<Item = (&'a str, u32)> {
        self.map
            .get(agent)
            .and_then(|tasks| tasks.get(task))
            .into_iter()
            .flatten()
            .map(|(label, version)| (label.as_str(), *version))
    }

    /// Every label as `(agent, task, label, version)`, sorted.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, &str, u32)> {
        self.map.iter().flat_map(|(agent, tasks)| {
            tasks.iter().flat_map(move |(task, labels)| {
                labels
                    .iter()
                    .map(move |(label, v)| (agent.as_str(), task.as_str(), label.as_str(), *v))
            })
        })
    }

    /// Points `label` of `agent/task` at `version`; returns the version it named before.
    pub fn set(&mut self, agent: &str, task: &str, label: &str, version: u32) -> Option<u32> {
        self.map
            .entry(agent.to_owned())
            .or_default()
            .entry(task.to_owned())
            .or_default()
            .insert(label.to_owned(), version)
    }

    /// The file's text: a heading, then one `[agent.task]` table per template.
    pub fn to_toml(&self) -> String {
        let mut out = String::from(HEADING);
        for (agent, tasks) in &self.map {
            for (task, labels) in tasks {
                if labels.is_empty() {
                    continue;
                }
                out.push_str(&format!("[{agent}.{task}]\n"));
                for (label, version) in labels {
                    out.push_str(&format!("{label} = {version}\n"));
                }
                out.push('\n');
            }
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
        out
    }

    /// Writes the file: to a temporary file beside it, then renamed into place, so a reader
    /// never sees half of it.
    pub fn write(&self, path: &Path) -> Result<(), TemplateError> {
        write_file(path, &self.to_toml())
    }
}

/// The text of a labels file; a missing file is an empty text (no labels).
pub(crate) fn read_text(path: &Path) -> Result<String, TemplateError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(TemplateError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The text of a labels file with `label` of `agent/task` set to `version` and everything
/// else — comments, order, spacing, the other labels — kept as it was (an empty text starts
/// with the heading). `text` must read as a labels file ([`Labels::parse`]); `path` is for
/// messages.
pub(crate) fn set_in_text(
    path: &Path,
    text: &str,
    agent: &str,
    task: &str,
    label: &str,
    version: u32,
) -> Result<String, TemplateError> {
    use toml_edit::{DocumentMut, InlineTable, Item, Table, Value};
    let fresh = text.trim().is_empty();
    let source = if fresh { "" } else { text };
    let mut doc: DocumentMut = source.parse().map_err(|e: toml_edit::TomlError| {
        let line = e.span().map_or(1, |s| {
            source[..s.start.min(source.len())].matches('\n').count() + 1
        });
        TemplateError::Labels {
            path: path.to_path_buf(),
            line,
            message: e.message().trim().to_owned(),
        }
    })?;
    let not_a_table = |what: &str| TemplateError::Labels {
        path: path.to_path_buf(),
        line: 1,
        message: format!("`{what}` is not a table of labels"),
    };
    let agents = doc.as_table_mut();
    let tasks = agents.entry(agent).or_insert_with(|| {
        let mut t = Table::new();
        t.set_implicit(true);
        Item::Table(t)
    });
    // A new task's table takes the form of its agent's: `[agent.task]` under a table,
    // `task = { ... }` inside an inline one.
    let inline = tasks.is_inline_table();
    let tasks = tasks
        .as_table_like_mut()
        .ok_or_else(|| not_a_table(agent))?;
    if tasks.get(task).is_none() {
        let item = if inline {
            Item::Value(Value::InlineTable(InlineTable::new()))
        } else {
            Item::Table(Table::new())
        };
        tasks.insert(task, item);
    }
    let labels = tasks
        .get_mut(task)
        .and_then(Item::as_table_like_mut)
        .ok_or_else(|| not_a_table(&format!("{agent}.{task}")))?;
    let new = Value::from(i64::from(version));
    match labels.get_mut(label).and_then(Item::as_value_mut) {
        // Keep the comment after the value, and the spacing around it.
        Some(old) => {
            let decor = old.decor().clone();
            *old = new;
            *old.decor_mut() = decor;
        }
        None => {
            labels.insert(label, Item::Value(new));
        }
    }
    if fresh {
        return Ok(format!("{HEADING}{doc}"));
    }
    Ok(doc.to_string())
}

/// Writes `text` to a temporary file beside `path`, then renames it into place, so a reader
/// never sees half of it.
pub(crate) fn write_file(path: &Path, text: &str) -> Result<(), TemplateError> {
    let io = |source| TemplateError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension(format!("toml.tmp{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

/// The line of `label` in the `[agent.task]` table (1 when it cannot be found).
pub(crate) fn label_line(text: &str, agent: &str, task: &str, label: &str) -> usize {
    let header = format!("[{agent}.{task}]");
    let mut inside = false;
    for (i, l) in text.lines().enumerate() {
        let t = l.trim();
        if t.starts_with('[') {
            inside = t.replace([' ', '"'], "") == header;
        } else if inside
            && t.strip_prefix(label)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        {
            return i + 1;
        }
    }
    1
}

/// The first line that assigns `key` (for messages about a value the parser accepted).
fn line_of(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| {
            l.trim_start()
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map_or(1, |i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_names() {
        for good in ["production", "staging", "v2-candidate", "prod_1", "Vx"] {
            assert!(is_label_name(good), "{good}");
        }
        for bad in [
            "", "latest", "LATEST", "3", "v3", "V12", "1abc", "a b", "a/b", "-x",
        ] {
            assert!(!is_label_name(bad), "{bad}");
        }
    }

    #[test]
    fn setting_a_label_keeps_comments_layout_and_other_labels() {
        let path = Path::new("labels.toml");
        let text = "# Our labels: production is what the app loads.\n\n\
            [writer.write_chapter]\n\
            production = 2 # promoted after eval run 14\n\
            staging    = 3\n\n\
            # The editor's tables.\n\
            [editor]\n\
            edit_chapter = { production = 1 }\n";
        let set = |text: &str, agent, task, label, v| {
            let out = set_in_text(path, text, agent, task, label, v).expect("set");
            let labels = Labels::parse(path, &out).expect("reads back");
            assert_eq!(labels.get(agent, task, label), Some(v), "{out}");
            out
        };
        // An existing label: its trailing comment and the spacing stay.
        let out = set(text, "writer", "write_chapter", "production", 3);
        assert!(
            out.contains("production = 3 # promoted after eval run 14\n"),
            "{out}"
        );
        assert!(out.contains("staging    = 3\n"), "{out}");
        assert!(out.starts_with("# Our labels: production is what the app loads.\n"));
        assert!(out.contains("# The editor's tables.\n"), "{out}");
        // A new label in an existing table, a new task under an agent written inline, a new
        // agent: the rest of the file is unchanged.
        let out = set(&out, "writer", "write_chapter", "canary", 4);
        let out = set(&out, "editor", "proofread", "production", 2);
        let out = set(&out, "architect", "create_characters", "production", 1);
        let labels = Labels::parse(path, &out).expect("reads back");
        let all: Vec<_> = labels.iter().collect();
        assert_eq!(
            all,
            [
                ("architect", "create_characters", "production", 1),
                ("editor", "edit_chapter", "production", 1),
                ("editor", "proofread", "production", 2),
                ("writer", "write_chapter", "canary", 4),
                ("writer", "write_chapter", "production", 3),
                ("writer", "write_chapter", "staging", 3),
            ]
        );
        assert!(
            out.contains("[architect.create_characters]\nproduction = 1\n"),
            "{out}"
        );
        assert!(!out.contains("[architect]"), "{out}");
        // An empty file starts with the heading.
        let out = set("", "writer", "write_scene", "production", 1);
        assert!(out.starts_with(HEADING), "{out}");
        assert!(
            out.contains("[writer.write_scene]\nproduction = 1\n"),
            "{out}"
        );
    }

    #[test]
    fn round_trip_and_errors_with_lines() {
        let path = Path::new("labels.toml");
        let mut labels = Labels::default();
        assert_eq!(labels.set("writer", "write_chapter", "production", 2), None);
        assert_eq!(labels.set("writer", "write_chapter", "staging", 3), None);
        assert_eq!(
            labels.set("writer", "write_chapter", "production", 3),
            Some(2)
        );
        let text = labels.to_toml();
        assert!(text.contains("[writer.write_chapter]\nproduction = 3\nstaging = 3\n"));
        assert_eq!(Labels::parse(path, &text).ok(), Some(labels));

        let err = Labels::parse(path, "[writer.t]\nproduction = 2\nstaging = \"x\"\n")
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("labels.toml:3: "), "{err}");
        let err = Labels::parse(path, "[writer.t]\nproduction = 2\nlatest = 1\n")
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("labels.toml:3: label `latest`"), "{err}");
    }
}
