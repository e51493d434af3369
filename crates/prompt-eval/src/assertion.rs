//! Assertions: what a reply must satisfy, each kind read from one YAML key.

use prompt_agent::{ToolCall, Vars, check_schema};
use prompt_templates::json_kind;
use serde_json::Value;

/// The assertion kinds an eval file may use, in the order the docs list them.
pub const ASSERTION_KINDS: &[&str] = &[
    "contains",
    "not_contains",
    "regex",
    "equals",
    "min_length",
    "max_length",
    "json",
    "tool_call",
    "expr",
];

/// One check of a reply.
#[derive(Debug, Clone)]
pub enum Assertion {
    /// The reply contains this text.
    Contains(String),
    /// The reply does not contain this text.
    NotContains(String),
    /// The reply matches this regular expression (anywhere; anchor it with `^…$`).
    Regex(regex::Regex),
    /// The reply is exactly this text (both trimmed).
    Equals(String),
    /// The reply has at least this many characters.
    MinLength(usize),
    /// The reply has at most this many characters.
    MaxLength(usize),
    /// The reply parses as JSON (a ```` ```json ```` fence around it is allowed), and fits the
    /// JSON Schema when one is given (the subset [`check_schema`] checks).
    Json(Option<Value>),
    /// The reply calls the tool of this name.
    ToolCall(String),
    /// A minijinja expression over `output`, `vars` and `tool_calls` that must be true.
    Expr(String),
}

impl Assertion {
    /// Reads an assertion from its YAML form (`{contains: "pier"}`, `{json: true}`, …);
    /// the error says what is wrong (the caller adds the file and line).
    pub fn from_yaml(value: &Value) -> Result<Self, String> {
        let map = match value {
            Value::Object(map) if map.len() == 1 => map,
            Value::Object(map) if map.is_empty() => {
                return Err("an assertion needs a kind, e.g. `contains: \"text\"`".to_owned());
            }
            Value::Object(map) => {
                let keys: Vec<&str> = map.keys().map(String::as_str).collect();
                return Err(format!(
                    "one kind per assertion, found {}; write each as its own `- kind: value` item",
                    keys.join(", ")
                ));
            }
            _ => {
                return Err(format!(
                    "an assertion is a mapping of one kind to its value (`- contains: \"text\"`), found {}",
                    json_kind(value)
                ));
            }
        };
        let Some((kind, arg)) = map.iter().next() else {
            return Err("an assertion needs a kind".to_owned());
        };
        let text = || match arg {
            Value::String(s) => Ok(s.clone()),
            other => Err(format!(
                "`{kind}` expects a string, found {}",
                json_kind(other)
            )),
        };
        let count = || {
            arg.as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| {
                    format!("`{kind}` expects a whole number of characters, found {arg}")
                })
        };
        match kind.as_str() {
            "contains" => text().map(Self::Contains),
            "not_contains" => text().map(Self::NotContains),
            "equals" => text().map(Self::Equals),
            "regex" => {
                let pattern = text()?;
                regex::Regex::new(&pattern)
                    .map(Self::Regex)
                    .map_err(|e| format!("bad `regex` {pattern:?}: {}", one_line(&e.to_string())))
            }
            "min_length" => count().map(Self::MinLength),
            "max_length" => count().map(Self::MaxLength),
            "json" => match arg {
                Value::Bool(true) | Value::Null => Ok(Self::Json(None)),
                Value::Object(_) => Ok(Self::Json(Some(arg.clone()))),
                other => Err(format!(
                    "`json` expects `true` or a JSON Schema (a mapping), found {}",
                    json_kind(other)
                )),
            },
            "tool_call" => text().map(Self::ToolCall),
            "expr" => {
                let source = text()?;
                let env = expr_environment();
                env.compile_expression(&source)
                    .map_err(|e| format!("bad `expr` {source:?}: {}", one_line(&e.to_string())))?;
                Ok(Self::Expr(source))
            }
            other => Err(format!(
                "unknown assertion kind `{other}` (known: {})",
                ASSERTION_KINDS.join(", ")
            )),
        }
    }

    /// The kind's name, as written in the file.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Contains(_) => "contains",
            Self::NotContains(_) => "not_contains",
            Self::Regex(_) => "regex",
            Self::Equals(_) => "equals",
            Self::MinLength(_) => "min_length",
            Self::MaxLength(_) => "max_length",
            Self::Json(_) => "json",
            Self::ToolCall(_) => "tool_call",
            Self::Expr(_) => "expr",
        }
    }

    /// The assertion as written, for reports: `contains: "pier"`.
    pub fn describe(&self) -> String {
        let arg = match self {
            Self::Contains(s) | Self::NotContains(s) | Self::Equals(s) | Self::ToolCall(s) => {
                format!("{s:?}")
            }
            Self::Expr(s) => s.clone(),
            Self::Regex(r) => format!("{:?}", r.as_str()),
            Self::MinLength(n) | Self::MaxLength(n) => n.to_string(),
            Self::Json(None) => "true".to_owned(),
            Self::Json(Some(schema)) => schema.to_string(),
        };
        format!("{}: {arg}", self.kind())
    }

    /// Checks a reply (think-stripped text and tool calls) made from `vars`: `Ok` when it
    /// passes, else why not.
    pub fn check(&self, output: &str, tool_calls: &[ToolCall], vars: &Vars) -> Result<(), String> {
        let chars = || output.chars().count();
        match self {
            Self::Contains(s) => ok_if(output.contains(s.as_str()), || {
                format!("the reply does not contain {s:?}")
            }),
            Self::NotContains(s) => ok_if(!output.contains(s.as_str()), || {
                format!("the reply contains {s:?}")
            }),
            Self::Regex(r) => ok_if(r.is_match(output), || {
                format!("the reply does not match /{}/", r.as_str())
            }),
            Self::Equals(s) => ok_if(output.trim() == s.trim(), || {
                format!("the reply is {:?}, not {s:?}", short(output))
            }),
            Self::MinLength(n) => ok_if(chars() >= *n, || {
                format!("the reply has {} characters, fewer than {n}", chars())
            }),
            Self::MaxLength(n) => ok_if(chars() <= *n, || {
                format!("the reply has {} characters, more than {n}", chars())
            }),
            Self::Json(schema) => {
                let value: Value = serde_json::from_str(strip_fence(output))
                    .map_err(|e| format!("the reply is not JSON: {e}"))?;
                match schema {
                    Some(schema) => check_schema(&value, schema, "reply"),
                    None => Ok(()),
                }
            }
            Self::ToolCall(name) => ok_if(tool_calls.iter().any(|c| &c.name == name), || {
                let called: Vec<&str> = tool_calls.iter().map(|c| c.name.as_str()).collect();
                if called.is_empty() {
                    format!("the reply calls no tool, not `{name}`")
                } else {
                    format!("the reply calls {}, not `{name}`", called.join(", "))
                }
            }),
            Self::Expr(source) => {
                let env = expr_environment();
                let expr = env
                    .compile_expression(source)
                    .map_err(|e| one_line(&e.to_string()))?;
                let calls: Vec<Value> = tool_calls
                    .iter()
                    .map(|c| serde_json::json!({"name": c.name, "arguments": c.arguments}))
                    .collect();
                let ctx = minijinja::context! {
                    output => output,
                    vars => minijinja::Value::from_serialize(vars),
                    tool_calls => minijinja::Value::from_serialize(&calls),
                };
                let result = expr
                    .eval(ctx)
                    .map_err(|e| format!("`{source}` failed: {}", one_line(&e.to_string())))?;
                ok_if(result.is_true(), || {
                    format!("`{source}` is not true (got {result})")
                })
            }
        }
    }
}

/// The engine for `expr` assertions: the template engine's settings that matter for an
/// expression (strict undefined, Python method calls such as `output.startswith("A")`).
fn expr_environment() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env
}

fn ok_if(ok: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(why()) }
}

/// The text inside a ```` ```json ```` (or bare ```` ``` ````) fence, else the trimmed text.
fn strip_fence(text: &str) -> &str {
    let t = text.trim();
    t.strip_prefix("```")
        .and_then(|rest| rest.strip_suffix("```"))
        .map_or(t, |inner| {
            inner.strip_prefix("json").unwrap_or(inner).trim()
        })
}

fn short(text: &str) -> String {
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(60).collect::<String>())
    } else {
        text.to_owned()
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(assertion: &Value, output: &str, calls: &[ToolCall]) -> Result<(), String> {
        let mut vars = Vars::new();
        vars.insert("setting".into(), json!("a pier at night"));
        Assertion::from_yaml(assertion)?.check(output, calls, &vars)
    }

    /// Every kind, once passing and once failing (with its reason).
    #[test]
    fn each_kind_both_ways() {
        let call = ToolCall {
            id: "call_1".into(),
            name: "lookup".into(),
            arguments: json!({"name": "Mira"}),
        };
        let cases: Vec<(Value, &str, &[ToolCall], Option<&str>)> = vec![
            (json!({"contains": "pier"}), "on the pier", &[], None),
            (
                json!({"contains": "pier"}),
                "on the dock",
                &[],
                Some("does not contain \"pier\""),
            ),
            (
                json!({"not_contains": "As an AI"}),
                "Mira waits.",
                &[],
                None,
            ),
            (
                json!({"not_contains": "As an AI"}),
                "As an AI, no",
                &[],
                Some("contains \"As an AI\""),
            ),
            (
                json!({"regex": "^Chapter \\d+"}),
                "Chapter 12: Salt",
                &[],
                None,
            ),
            (
                json!({"regex": "^Chapter \\d+"}),
                "Salt",
                &[],
                Some("does not match"),
            ),
            (json!({"equals": "yes"}), " yes\n", &[], None),
            (
                json!({"equals": "yes"}),
                "no",
                &[],
                Some("the reply is \"no\", not \"yes\""),
            ),
            (json!({"min_length": 3}), "abc", &[], None),
            (
                json!({"min_length": 4}),
                "abc",
                &[],
                Some("3 characters, fewer than 4"),
            ),
            (json!({"max_length": 3}), "abc", &[], None),
            (
                json!({"max_length": 2}),
                "abc",
                &[],
                Some("3 characters, more than 2"),
            ),
            (json!({"json": true}), "```json\n{\"a\": 1}\n```", &[], None),
            (json!({"json": true}), "{\"a\": ", &[], Some("not JSON")),
            (
                json!({"json": {"type": "object", "required": ["a"]}}),
                "{\"a\": 1}",
                &[],
                None,
            ),
            (
                json!({"json": {"type": "object", "required": ["b"]}}),
                "{\"a\": 1}",
                &[],
                Some("b"),
            ),
            (
                json!({"tool_call": "lookup"}),
                "",
                std::slice::from_ref(&call),
                None,
            ),
            (
                json!({"tool_call": "lookup"}),
                "text",
                &[],
                Some("calls no tool"),
            ),
            (
                json!({"expr": "output | length > 3 and vars.setting in output"}),
                "at a pier at night",
                &[],
                None,
            ),
            (
                json!({"expr": "output | length > 3 and vars.setting in output"}),
                "elsewhere",
                &[],
                Some("is not true (got False)"),
            ),
            (
                json!({"expr": "output.startswith('Ch') and tool_calls | length == 0"}),
                "Chapter",
                &[],
                None,
            ),
            (
                json!({"expr": "vars.nothing == 1"}),
                "x",
                &[],
                Some("failed"),
            ),
        ];
        for (assertion, output, calls, want) in cases {
            let got = check(&assertion, output, calls);
            match (want, got) {
                (None, Ok(())) => {}
                (Some(part), Err(why)) => assert!(why.contains(part), "{assertion}: {why}"),
                (want, got) => panic!("{assertion} on {output:?}: wanted {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn bad_assertions_say_why() {
        for (value, part) in [
            (
                json!({"contians": "x"}),
                "unknown assertion kind `contians` (known: contains,",
            ),
            (
                json!({"contains": 3}),
                "`contains` expects a string, found a number",
            ),
            (json!({"regex": "("}), "bad `regex`"),
            (json!({"expr": "output |"}), "bad `expr`"),
            (json!({"min_length": -1}), "expects a whole number"),
            (
                json!({"json": "yes"}),
                "`json` expects `true` or a JSON Schema",
            ),
            (
                json!({"contains": "a", "regex": "b"}),
                "one kind per assertion",
            ),
            (json!("contains"), "found a string"),
        ] {
            let err = Assertion::from_yaml(&value).map(|_| ()).unwrap_err();
            assert!(err.contains(part), "{value}: {err}");
        }
    }
}
