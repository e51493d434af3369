//! The error type of this crate.

use std::fmt;
use std::path::PathBuf;

use crate::VarType;
use crate::limits::RenderBudget;
use crate::lint::Diagnostic;

/// Everything that can go wrong when loading, listing, rendering or linting templates.
///
/// Every message names the template (agent/task and version, and its file) or the path,
/// line and field involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// An agent or task name that is not a plain identifier (`[A-Za-z0-9_-]+`).
    #[error("invalid {what} name {name:?}: {reason}")]
    InvalidName {
        /// `"agent"` or `"task"`.
        what: &'static str,
        /// The name as given.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A version requirement that is not `latest`, `N`, `vN` or a label name.
    #[error(
        "invalid template version {0:?}: expected \"latest\", \"N\" or \"vN\" with N >= 1, or a label"
    )]
    InvalidVersionReq(String),
    /// A label name that is not letters, digits, `_` and `-` starting with a letter, or that
    /// reads as `latest` or a version.
    #[error(
        "invalid label {0:?}: a label is letters, digits, `_` and `-`, starting with a letter, and not `latest` or a version"
    )]
    InvalidLabel(String),
    /// A label that the labels file does not give this template.
    #[error("template {template} has no label `{label}` in {}{}", path.display(), known_suffix(known))]
    UnknownLabel {
        /// The template, as `agent/task`.
        template: String,
        /// The label asked for.
        label: String,
        /// The labels file.
        path: PathBuf,
        /// The labels it does have.
        known: Vec<String>,
    },
    /// The labels file is not valid.
    #[error("{}:{line}: {message}", path.display())]
    Labels {
        /// The labels file.
        path: PathBuf,
        /// The line of the problem (from 1).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// Reading a directory or file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// No template file for this agent, task and version.
    #[error("template {agent}/{task} ({version}) not found in {}{}", dir.display(), available_suffix(available))]
    NotFound {
        /// The agent asked for.
        agent: String,
        /// The task asked for.
        task: String,
        /// The version asked for, `latest` or `vN`.
        version: String,
        /// The template directory searched.
        dir: PathBuf,
        /// Versions of this agent/task that do exist.
        available: Vec<u32>,
    },
    /// The template file has errors (each with its line and column).
    #[error("invalid template {}: {}", path.display(), DiagnosticList(diagnostics))]
    Invalid {
        /// The template file.
        path: PathBuf,
        /// The error diagnostics, sorted by position.
        diagnostics: Vec<Diagnostic>,
    },
    /// The variables given to `render` do not fit the declared ones; lists every problem.
    #[error("template {template}: {} variable problem(s): {}", problems.len(), ProblemList(problems))]
    Variables {
        /// The template, as `agent/task vN (path)`.
        template: String,
        /// Every missing, unknown or mistyped variable.
        problems: Vec<VarProblem>,
    },
    /// A raw command-line value could not be parsed as the variable's declared type.
    #[error(
        "template {template}: variable `{name}` expects {expected}: cannot use {raw:?}: {reason}"
    )]
    ParseVar {
        /// The template, as `agent/task vN (path)`.
        template: String,
        /// The variable.
        name: String,
        /// Its declared type.
        expected: VarType,
        /// The raw value.
        raw: String,
        /// Why it was refused.
        reason: String,
    },
    /// The Jinja engine failed while rendering (for example an undefined attribute).
    #[error("template {template}: cannot render {part}: {message}")]
    Render {
        /// The template, as `agent/task vN (path)`.
        template: String,
        /// The body: `system_prompt`, `user_prompt_template`, or `messages[N]` (the entry of
        /// a `messages:` list, from 0).
        part: &'static str,
        /// The engine's message, with the line inside the body.
        message: String,
    },
    /// A render ran past its [`RenderLimits`](crate::RenderLimits): too much work or too
    /// much output. Raise the limit, or fix the template or the variables.
    #[error("template {template}: cannot render {part}: {budget}")]
    RenderBudget {
        /// The template, as `agent/task vN (path)`.
        template: String,
        /// The body: `system_prompt`, `user_prompt_template`, or `messages[N]`.
        part: &'static str,
        /// The bound it ran past.
        budget: RenderBudget,
    },
}

fn available_suffix(available: &[u32]) -> String {
    if available.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = available.iter().map(|v| format!("v{v}")).collect();
        format!(" (available: {})", list.join(", "))
    }
}

struct DiagnosticList<'a>(&'a [Diagnostic]);

impl fmt::Display for DiagnosticList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}:{}: {}", d.line, d.col, d.message)?;
        }
        Ok(())
    }
}

struct ProblemList<'a>(&'a [VarProblem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// One problem with the variables passed to a render.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VarProblem {
    /// A required variable was not given.
    Missing {
        /// The variable.
        name: String,
        /// Its declared type.
        expected: VarType,
    },
    /// A variable was given that the template does not declare.
    Unknown {
        /// The variable.
        name: String,
    },
    /// A variable's value does not have the declared type.
    TypeMismatch {
        /// The variable.
        name: String,
        /// Its declared type.
        expected: VarType,
        /// The JSON type of the value given (`string`, `integer`, `null`, ...).
        found: &'static str,
    },
    /// An item of a `messages` variable (a history) is not a valid message.
    InvalidMessage {
        /// The variable.
        name: String,
        /// The item's 0-based index in the list.
        index: usize,
        /// What is wrong with it, such as "role `admin` is not one of system, user,
        /// assistant, tool".
        reason: String,
    },
}

impl VarProblem {
    /// The variable this problem is about.
    pub fn name(&self) -> &str {
        match self {
            Self::Missing { name, .. }
            | Self::Unknown { name }
            | Self::TypeMismatch { name, .. }
            | Self::InvalidMessage { name, .. } => name,
        }
    }
}

impl fmt::Display for VarProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing { name, expected } => {
                write!(f, "missing required variable `{name}` ({expected})")
            }
            Self::Unknown { name } => write!(f, "unknown variable `{name}` (not declared)"),
            Self::TypeMismatch {
                name,
                expected,
                found,
            } => {
                write!(f, "variable `{name}` expects {expected}, got {found}")
            }
            Self::InvalidMessage {
                name,
                index,
                reason,
            } => write!(f, "variable `{name}` item {index}: {reason}"),
        }
    }
}

fn known_suffix(known: &[String]) -> String {
    if known.is_empty() {
        " (it has none; `prompt label set` adds one)".to_owned()
    } else {
        format!(" (it has: {})", known.join(", "))
    }
}
