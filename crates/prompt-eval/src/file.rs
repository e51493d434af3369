//! The eval file: the template, the versions (or labels), models and providers to cross, and
//! the cases with their assertions — read with the position of every part, and checked
//! against the templates before any call.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use prompt_agent::{ChatMessage, Vars, VersionReq};
use prompt_templates::{PromptTemplate, TemplateError, TemplateStore, VarType, json_kind};
use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::Spanned;

use crate::assertion::Assertion;
use crate::error::EvalError;

/// A version to run, as written in the file (`2`, `v2`, `production`) and what it asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionSpec {
    /// As written (`"2"`, `"production"`).
    pub text: String,
    /// What it asks for.
    pub req: VersionReq,
    /// Its line in the eval file (0 when it came from elsewhere, such as `prompt promote`).
    pub line: usize,
}

impl VersionSpec {
    /// A version given outside the file (a command's argument).
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        Ok(Self {
            text: text.trim().to_owned(),
            req: text.parse()?,
            line: 0,
        })
    }
}

/// One assertion of a case, with its line.
#[derive(Debug, Clone)]
pub struct CaseAssertion {
    /// The check.
    pub assertion: Assertion,
    /// Its line in the eval file.
    pub line: usize,
}

/// One case: variables (and optionally a conversation so far) and what every reply to them
/// must satisfy.
#[derive(Debug, Clone)]
pub struct Case {
    /// The case's name, unique in the file.
    pub name: String,
    /// The template variables.
    pub vars: Vars,
    /// Earlier turns of a conversation: they fill the template's `messages` variable when it
    /// has one that `vars` leaves unset, else they are sent after the rendered messages.
    pub history: Vec<ChatMessage>,
    /// The assertions, in file order.
    pub assertions: Vec<CaseAssertion>,
    /// The line of the case in the eval file.
    pub line: usize,
}

/// An eval file, read and checked for its own shape (not yet against the templates: see
/// [`EvalFile::check`]).
#[derive(Debug, Clone)]
pub struct EvalFile {
    /// The file it was read from.
    pub path: PathBuf,
    /// The template's agent.
    pub agent: String,
    /// The template's task.
    pub task: String,
    /// The line of `template:`.
    pub template_line: usize,
    /// The versions to compare (`[latest]` when the file names none).
    pub versions: Vec<VersionSpec>,
    /// The models to cross with them (empty: the settings' or template's model).
    pub models: Vec<String>,
    /// The providers to cross with them (empty: the settings' provider).
    pub providers: Vec<String>,
    /// The cases.
    pub cases: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    template: Spanned<Value>,
    #[serde(default)]
    versions: Option<Spanned<Vec<Spanned<Value>>>>,
    #[serde(default)]
    models: Option<Vec<Spanned<Value>>>,
    #[serde(default)]
    providers: Option<Vec<Spanned<Value>>>,
    cases: Spanned<Vec<Spanned<RawCase>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: Spanned<Value>,
    #[serde(default)]
    vars: Option<Spanned<Value>>,
    #[serde(default)]
    history: Option<Spanned<Value>>,
    #[serde(default, rename = "assert")]
    assertions: Option<Vec<Spanned<Value>>>,
}

fn line<T>(s: &Spanned<T>) -> usize {
    usize::try_from(s.referenced.line()).unwrap_or(0)
}

/// A YAML error's first line, without the position (reported apart).
fn yaml_message(err: &serde_saphyr::Error) -> String {
    let text = err.to_string();
    let first = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    match first
        .strip_prefix("line ")
        .and_then(|rest| rest.split_once(": "))
    {
        Some((position, message)) if position.contains("column") => message.to_owned(),
        _ => first.to_owned(),
    }
}

impl EvalFile {
    /// Reads and parses an eval file.
    pub fn read(path: &Path) -> Result<Self, EvalError> {
        let text = std::fs::read_to_string(path).map_err(|e| EvalError::io(path, e))?;
        Self::parse(path, &text)
    }

    /// Parses the text of an eval file (`path` is for messages). Every error names the line.
    pub fn parse(path: &Path, text: &str) -> Result<Self, EvalError> {
        let at = |line: usize, message: String| EvalError::at(path, line, message);
        let raw: RawFile = serde_saphyr::from_str(text).map_err(|e| {
            let line = e
                .location()
                .and_then(|l| usize::try_from(l.line()).ok())
                .unwrap_or(1);
            at(line, format!("invalid eval file: {}", yaml_message(&e)))
        })?;

        let template_line = line(&raw.template);
        let name = match &raw.template.value {
            Value::String(s) => s.trim().to_owned(),
            other => {
                return Err(at(
                    template_line,
                    format!(
                        "`template` expects \"agent/task\", found {}",
                        json_kind(other)
                    ),
                ));
            }
        };
        let Some((agent, task)) = name.split_once('/') else {
            return Err(at(
                template_line,
                format!(
                    "`template` {name:?}: expected \"agent/task\" (versions go in `versions:`)"
                ),
            ));
        };
        if agent.is_empty() || task.is_empty() || task.contains(['/', '@']) {
            return Err(at(
                template_line,
                format!(
                    "`template` {name:?}: expected \"agent/task\" (versions go in `versions:`)"
                ),
            ));
        }

        let mut versions = Vec::new();
        if let Some(list) = &raw.versions {
            if list.value.is_empty() {
                return Err(at(
                    line(list),
                    "`versions` is empty; omit it to run the latest".to_owned(),
                ));
            }
            for item in &list.value {
                let text = match &item.value {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    other => {
                        return Err(at(
                            line(item),
                            format!(
                                "a version is a number or a label, found {}",
                                json_kind(other)
                            ),
                        ));
                    }
                };
                let req = text
                    .parse::<VersionReq>()
                    .map_err(|e| at(line(item), e.to_string()))?;
                versions.push(VersionSpec {
                    text: text.trim().to_owned(),
                    req,
                    line: line(item),
                });
            }
        } else {
            versions.push(VersionSpec {
                text: "latest".to_owned(),
                req: VersionReq::Latest,
                line: template_line,
            });
        }

        // A model is any non-empty name; a provider must be one the settings know.
        let names = |list: Option<Vec<Spanned<Value>>>,
                     what: &str,
                     check: &dyn Fn(&str) -> Result<(), String>|
         -> Result<Vec<String>, EvalError> {
            list.unwrap_or_default()
                .into_iter()
                .map(|item| match &item.value {
                    Value::String(s) if !s.trim().is_empty() => check(s.trim())
                        .map(|()| s.trim().to_owned())
                        .map_err(|why| at(line(&item), why)),
                    other => Err(at(
                        line(&item),
                        format!("a {what} is a non-empty name, found {other}"),
                    )),
                })
                .collect()
        };
        let models = names(raw.models, "model", &|_| Ok(()))?;
        let providers = names(raw.providers, "provider", &|p| {
            p.parse::<prompt_agent::ProviderKind>()
                .map(|_| ())
                .map_err(|e| format!("`providers`: {e}"))
        })?;

        if raw.cases.value.is_empty() {
            return Err(at(
                line(&raw.cases),
                "`cases` is empty: an eval needs at least one case".to_owned(),
            ));
        }
        let mut cases: Vec<Case> = Vec::new();
        for case in raw.cases.value {
            let case_line = line(&case);
            let case = case.value;
            let name = match &case.name.value {
                Value::String(s) if !s.trim().is_empty() => s.trim().to_owned(),
                Value::Number(n) => n.to_string(),
                other => {
                    return Err(at(
                        line(&case.name),
                        format!("a case `name` is a non-empty string, found {other}"),
                    ));
                }
            };
            if cases.iter().any(|c| c.name == name) {
                return Err(at(
                    line(&case.name),
                    format!("two cases are named {name:?}"),
                ));
            }
            let vars = match case.vars.as_ref().map(|v| (&v.value, line(v))) {
                None | Some((Value::Null, _)) => Vars::new(),
                Some((Value::Object(map), _)) => map.clone(),
                Some((other, l)) => {
                    return Err(at(
                        l,
                        format!(
                            "case {name:?}: `vars` is a mapping of names to values, found {}",
                            json_kind(other)
                        ),
                    ));
                }
            };
            let history = match case.history.as_ref() {
                None => Vec::new(),
                Some(h) => serde_json::from_value::<Vec<ChatMessage>>(h.value.clone()).map_err(|e| {
                    at(line(h), format!("case {name:?}: `history` is a list of messages ({{role, content}}): {e}"))
                })?,
            };
            let mut assertions = Vec::new();
            for a in case.assertions.unwrap_or_default() {
                let assertion = Assertion::from_yaml(&a.value)
                    .map_err(|why| at(line(&a), format!("case {name:?}: {why}")))?;
                assertions.push(CaseAssertion {
                    assertion,
                    line: line(&a),
                });
            }
            if assertions.is_empty() {
                return Err(at(
                    case_line,
                    format!("case {name:?} has no assertions (`assert:`)"),
                ));
            }
            cases.push(Case {
                name,
                vars,
                history,
                assertions,
                line: case_line,
            });
        }

        Ok(Self {
            path: path.to_path_buf(),
            agent: agent.to_owned(),
            task: task.to_owned(),
            template_line,
            versions,
            models,
            providers,
            cases,
        })
    }

    /// `agent/task`.
    pub fn template_name(&self) -> String {
        format!("{}/{}", self.agent, self.task)
    }

    /// Checks the file against the templates, before any call: the template exists, each
    /// version or label resolves and loads, and every case renders with each version (no
    /// required variable missing, none unknown or mistyped). Returns the resolved versions in
    /// file order; every error names the file and line.
    pub fn check(&self, store: &TemplateStore) -> Result<Vec<ResolvedVersion>, EvalError> {
        if store
            .list(Some(&self.agent))
            .is_ok_and(|all| all.iter().all(|i| i.task != self.task))
        {
            return Err(EvalError::at(
                &self.path,
                self.template_line,
                format!(
                    "unknown template {} in {}",
                    self.template_name(),
                    store.dir().display()
                ),
            ));
        }
        let mut resolved = Vec::new();
        for spec in &self.versions {
            let line = if spec.line == 0 {
                self.template_line
            } else {
                spec.line
            };
            let template = store
                .load(&self.agent, &self.task, spec.req.clone())
                .map_err(|e| EvalError::at(&self.path, line, one_line(&e.to_string())))?;
            if let Some(dup) = resolved
                .iter()
                .find(|r: &&ResolvedVersion| r.spec.text == spec.text)
            {
                return Err(EvalError::at(
                    &self.path,
                    line,
                    format!("version {} is listed twice", dup.spec.text),
                ));
            }
            for case in &self.cases {
                let (vars, _) = case.inputs(&template);
                if let Err(e) = template.render(&vars) {
                    return Err(EvalError::at(
                        &self.path,
                        case.line,
                        format!(
                            "case {:?} does not render with version {}: {}",
                            case.name,
                            spec.text,
                            one_line(&e.to_string())
                        ),
                    ));
                }
            }
            resolved.push(ResolvedVersion {
                spec: spec.clone(),
                template,
            });
        }
        Ok(resolved)
    }
}

/// A version of the eval's template, resolved and loaded.
#[derive(Debug, Clone)]
pub struct ResolvedVersion {
    /// As the file (or the command) gave it.
    pub spec: VersionSpec,
    /// The template it resolved to (its `version()` is the number).
    pub template: Arc<PromptTemplate>,
}

impl Case {
    /// The variables and extra messages a call for this case sends with `template`: the
    /// history fills the template's `messages` variable when it has one that `vars` leaves
    /// unset; otherwise it follows the rendered messages.
    pub fn inputs(&self, template: &PromptTemplate) -> (Vars, Vec<ChatMessage>) {
        let mut vars = self.vars.clone();
        if self.history.is_empty() {
            return (vars, Vec::new());
        }
        let slot = template
            .variables()
            .iter()
            .find(|v| v.ty == VarType::Messages && !vars.contains_key(&v.name));
        match slot {
            Some(v) => {
                let history =
                    serde_json::to_value(&self.history).unwrap_or(Value::Array(Vec::new()));
                vars.insert(v.name.clone(), history);
                (vars, Vec::new())
            }
            None => (vars, self.history.clone()),
        }
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
