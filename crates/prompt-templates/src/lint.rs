//! Checking a whole template directory.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::TemplateError;
use crate::parse::{Checks, parse_file};

/// How serious a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The template cannot be used.
    Error,
    /// The template works but is probably not what its author meant.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Error => "error",
            Self::Warning => "warning",
        })
    }
}

/// One problem found in a template file, at a 1-based line and column.
///
/// Displays as `path:line:col: error|warning: message`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct Diagnostic {
    /// The file.
    pub path: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub col: usize,
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.path.display(),
            self.line,
            self.col,
            self.severity,
            self.message
        )
    }
}

/// The result of [`lint`]: how many files were read and what was found, sorted by path,
/// line and column.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LintReport {
    /// Template files read (`*.yaml` and `*.yml` under the directory).
    pub files_checked: usize,
    /// Every error and warning.
    pub diagnostics: Vec<Diagnostic>,
}

impl LintReport {
    /// Whether any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.error_count() > 0
    }

    /// The number of errors.
    pub fn error_count(&self) -> usize {
        self.count(Severity::Error)
    }

    /// The number of warnings.
    pub fn warning_count(&self) -> usize {
        self.count(Severity::Warning)
    }

    fn count(&self, severity: Severity) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == severity)
            .count()
    }
}

/// Checks every template file under `dir` (recursively; hidden entries are skipped).
///
/// Errors: invalid YAML or UTF-8; a missing or empty required field (both bodies or a
/// `messages` list, not both); Jinja syntax errors (at the line inside the file); a variable
/// used in a body but not declared; a bad variable declaration; a file name or folder that
/// disagrees with `version`/`agent`/`task`; two files claiming the same agent/task/version;
/// an example whose `input` does not render; an `include`/`import`/`from`/`extends` of a
/// template name that does not resolve (only the file's bodies do) or that tries to leave
/// the template directory; a `messages` entry with an invalid role, a missing or empty
/// `content`, or an unknown key; a `history` entry whose variable is not declared as
/// `messages`; a tool whose `parameters` is not a JSON Schema object, or whose name is
/// invalid or taken; a `tool_choice` naming a tool not declared.
/// Warnings: a declared variable no body (or `history` entry) uses; a single-brace `{name}` placeholder naming a
/// declared variable; an `include ... ignore missing` of a name that does not resolve; an
/// include or import of a computed name.
///
/// Fails only when `dir` itself cannot be read.
pub fn lint(dir: impl AsRef<Path>) -> Result<LintReport, TemplateError> {
    let dir = dir.as_ref();
    let mut files = Vec::new();
    collect_files(dir, &mut files)?;
    files.sort();
    let mut report = LintReport {
        files_checked: files.len(),
        diagnostics: Vec::new(),
    };
    let mut claims: BTreeMap<(String, String, u32), PathBuf> = BTreeMap::new();
    for path in files {
        if path.extension().is_some_and(|e| e == "yml") {
            report.diagnostics.push(Diagnostic {
                path: path.clone(),
                line: 1,
                col: 1,
                severity: Severity::Error,
                message: "template files end in `.yaml`: rename this `.yml` file".to_owned(),
            });
        }
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) => {
                report.diagnostics.push(Diagnostic {
                    path: path.clone(),
                    line: 1,
                    col: 1,
                    severity: Severity::Error,
                    message: format!("cannot read file: {err}"),
                });
                continue;
            }
        };
        let parsed = parse_file(&path, &bytes, Checks::Lint);
        report.diagnostics.extend(parsed.diagnostics);
        if let Some(claim) = parsed.claim {
            let key = (claim.agent.clone(), claim.task.clone(), claim.version);
            if let Some(first) = claims.get(&key) {
                report.diagnostics.push(Diagnostic {
                    path: path.clone(),
                    line: claim.line,
                    col: claim.col,
                    severity: Severity::Error,
                    message: format!(
                        "duplicate template {}/{} v{}: {} claims it too",
                        claim.agent,
                        claim.task,
                        claim.version,
                        first.display()
                    ),
                });
            } else {
                claims.insert(key, path);
            }
        }
    }
    check_labels(dir, &claims, &mut report.diagnostics);
    report.diagnostics.sort();
    report.diagnostics.dedup();
    Ok(report)
}

/// The labels file, when there is one, must parse and name versions that exist.
fn check_labels(
    dir: &Path,
    claims: &BTreeMap<(String, String, u32), PathBuf>,
    out: &mut Vec<Diagnostic>,
) {
    let path = dir.join(crate::labels::LABELS_FILE);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return;
    };
    let error = |line: usize, message: String| Diagnostic {
        path: path.clone(),
        line,
        col: 1,
        severity: Severity::Error,
        message,
    };
    match crate::labels::Labels::parse(&path, &text) {
        Err(TemplateError::Labels { line, message, .. }) => out.push(error(line, message)),
        Err(other) => out.push(error(1, other.to_string())),
        Ok(labels) => {
            for (agent, task, label, version) in labels.iter() {
                if !claims.contains_key(&(agent.to_owned(), task.to_owned(), version)) {
                    out.push(error(
                        crate::labels::label_line(&text, agent, task, label),
                        format!(
                            "label `{label}` of {agent}/{task} names v{version}, which does not exist"
                        ),
                    ));
                }
            }
        }
    }
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), TemplateError> {
    let io = |source| TemplateError::Io {
        path: dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let file_type = entry.file_type().map_err(io)?;
        if file_type.is_dir() {
            collect_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
    Ok(())
}
