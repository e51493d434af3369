//! The declarative parts of a template: variables, model defaults, validation, examples, metadata.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Vars;

/// The declared type of a template variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VarType {
    /// A string (`str` is accepted as an alias).
    String,
    /// A whole number (`int`).
    Integer,
    /// Any number, whole or not (`float`).
    Number,
    /// `true` or `false` (`bool`).
    Boolean,
    /// A list (`array`).
    List,
    /// A map from strings to values (`dict`, `map`).
    Object,
    /// Any value at all.
    Any,
    /// A conversation: a list of `{role, content}` mappings, with `tool_calls` on assistant
    /// messages and `tool_call_id` on tool messages (see [`Message`](crate::Message)).
    /// Inserted verbatim where a template's `messages:` list says `{history: VAR}`.
    Messages,
}

impl VarType {
    /// The canonical name: `string`, `integer`, `number`, `boolean`, `list`, `object`, `any`,
    /// `messages`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Integer => "integer",
            Self::Number => "number",
            Self::Boolean => "boolean",
            Self::List => "list",
            Self::Object => "object",
            Self::Any => "any",
            Self::Messages => "messages",
        }
    }

    /// Whether `value` has this type (`null` never does, except for [`VarType::Any`]).
    ///
    /// For [`VarType::Messages`], every item must be a valid message (a render reports the
    /// problems of each item, with its index).
    pub fn matches(self, value: &Value) -> bool {
        match self {
            Self::String => value.is_string(),
            Self::Integer => value.is_i64() || value.is_u64(),
            Self::Number => value.is_number(),
            Self::Boolean => value.is_boolean(),
            Self::List => value.is_array(),
            Self::Object => value.is_object(),
            Self::Any => true,
            Self::Messages => crate::messages::is_messages(value),
        }
    }

    /// The value an optional variable without a default takes: `""`, `[]` (also for
    /// `messages`), `{}` or `null`.
    pub fn empty_value(self) -> Value {
        match self {
            Self::String => Value::String(String::new()),
            Self::List | Self::Messages => Value::Array(Vec::new()),
            Self::Object => Value::Object(Vars::new()),
            Self::Integer | Self::Number | Self::Boolean | Self::Any => Value::Null,
        }
    }
}

/// What a JSON value is, with its article, for messages to users ("a mapping", "a list",
/// "null"); the wording every crate uses when a value has the wrong type.
pub fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// The JSON type name of a value, as used in error messages.
pub(crate) fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    }
}

impl fmt::Display for VarType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of [`VarType::from_str`]: the unknown type name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown variable type {0:?}: expected string, integer, number, boolean, list, object, any or messages"
)]
pub struct UnknownVarType(pub String);

impl FromStr for VarType {
    type Err = UnknownVarType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "string" | "str" => Self::String,
            "integer" | "int" => Self::Integer,
            "number" | "float" => Self::Number,
            "boolean" | "bool" => Self::Boolean,
            "list" | "array" => Self::List,
            "object" | "dict" | "map" => Self::Object,
            "any" => Self::Any,
            "messages" => Self::Messages,
            _ => return Err(UnknownVarType(s.trim().to_owned())),
        })
    }
}

/// One declared template variable.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VariableSpec {
    /// The name, a Jinja identifier.
    pub name: String,
    /// The declared type.
    pub ty: VarType,
    /// What the variable means (shown by `prompt templates show`).
    pub description: String,
    /// Whether a render must supply it.
    pub required: bool,
    /// The value an optional variable takes when not given.
    pub default: Option<Value>,
}

impl VariableSpec {
    /// The value used when an optional variable is not given: its default, or
    /// [`VarType::empty_value`].
    pub fn fallback_value(&self) -> Value {
        self.default
            .clone()
            .unwrap_or_else(|| self.ty.empty_value())
    }
}

/// Default model settings a template suggests (callers may override them).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelDefaults {
    /// The model name, such as `qwen3:30b`.
    #[serde(default)]
    pub name: Option<String>,
    /// Sampling temperature.
    #[serde(default)]
    pub temperature: Option<f64>,
    /// Upper bound on generated tokens.
    #[serde(default)]
    pub max_tokens: Option<u64>,
    /// Nucleus sampling.
    #[serde(default)]
    pub top_p: Option<f64>,
    /// Stop sequences.
    #[serde(default)]
    pub stop: Vec<String>,
    /// Any other provider option, passed through as given (for example `num_ctx`).
    #[serde(default)]
    pub options: Vars,
}

/// Rules a generated response should satisfy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationRules {
    /// Minimum length in characters.
    #[serde(default)]
    pub min_length: Option<usize>,
    /// Maximum length in characters.
    #[serde(default)]
    pub max_length: Option<usize>,
}

impl ValidationRules {
    /// Checks a response; `Err` says which rule failed.
    ///
    /// ```
    /// use prompt_templates::ValidationRules;
    /// let rules = ValidationRules { min_length: Some(3), max_length: Some(5) };
    /// assert!(rules.check("four").is_ok());
    /// assert_eq!(rules.check("no").unwrap_err(), "response has 2 characters, fewer than min_length 3");
    /// ```
    pub fn check(&self, response: &str) -> Result<(), String> {
        let len = response.chars().count();
        if let Some(min) = self.min_length
            && len < min
        {
            return Err(format!(
                "response has {len} characters, fewer than min_length {min}"
            ));
        }
        if let Some(max) = self.max_length
            && len > max
        {
            return Err(format!(
                "response has {len} characters, more than max_length {max}"
            ));
        }
        Ok(())
    }
}

/// One few-shot example: the variables of a request and a good answer to it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Example {
    /// A short note on the situation the example shows.
    pub context: Option<String>,
    /// The variables the user prompt is rendered with.
    pub input: Vars,
    /// The answer.
    pub output: String,
}

/// Descriptive fields of a template.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// What the template is for.
    #[serde(default)]
    pub description: Option<String>,
    /// Who wrote it.
    #[serde(default)]
    pub author: Option<String>,
    /// When it was written (free text, usually `YYYY-MM-DD`).
    #[serde(default)]
    pub created: Option<String>,
    /// Free-form tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Any other metadata field, kept as given.
    #[serde(flatten)]
    pub extra: Vars,
}
