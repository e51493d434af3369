//! Chat messages, tool definitions and the checks on `messages` variables.
//!
//! A template renders to a list of [`Message`]s. A variable of type
//! [`messages`](crate::VarType::Messages) carries a conversation so far (a history), checked
//! item by item and inserted verbatim where the template's `messages:` list says
//! `{history: VAR}`: its text is never read as Jinja and never split into other messages.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::spec::json_type_name;

/// Who a message is from.
///
/// The wire names are `system`, `user`, `assistant` and `tool`, as the chat APIs spell them.
///
/// ```
/// use prompt_templates::Role;
/// assert_eq!("assistant".parse::<Role>(), Ok(Role::Assistant));
/// assert_eq!(Role::Tool.as_str(), "tool");
/// assert_eq!(
///     "admin".parse::<Role>().unwrap_err().to_string(),
///     "role `admin` is not one of system, user, assistant, tool"
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions to the model.
    System,
    /// A request from the user.
    User,
    /// A reply of the model (possibly with tool calls).
    Assistant,
    /// The result of a tool call, answering the call with the message's `tool_call_id`.
    Tool,
}

impl Role {
    /// Every role, in the order error messages list them.
    pub const ALL: [Role; 4] = [Role::System, Role::User, Role::Assistant, Role::Tool];

    /// The wire name: `system`, `user`, `assistant` or `tool`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::User => "user",
            Self::Assistant => "assistant",
            Self::Tool => "tool",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of [`Role::from_str`]: the name that is not a role.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("role `{0}` is not one of system, user, assistant, tool")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    /// Parses a wire name exactly (lowercase, no surrounding blanks).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

/// A call of a tool, made by the model in an assistant message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The call's id; the `tool` message with the result carries it as `tool_call_id`.
    pub id: String,
    /// The tool's name, as declared in the template's `tools:`.
    pub name: String,
    /// The arguments, a JSON value (usually an object).
    pub arguments: Value,
}

/// One message of a conversation.
///
/// Serialized as `{role, content}`, with `tool_calls` only when there are some and
/// `tool_call_id` only when set:
///
/// ```
/// use prompt_templates::Message;
/// let m = Message::tool_result("call_1", "Mira is 19.");
/// assert_eq!(
///     serde_json::to_string(&m)?,
///     r#"{"role":"tool","content":"Mira is 19.","tool_call_id":"call_1"}"#
/// );
/// assert_eq!(serde_json::to_string(&Message::user("Hi"))?, r#"{"role":"user","content":"Hi"}"#);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Who the message is from.
    pub role: Role,
    /// The text (empty for an assistant message that only calls tools).
    #[serde(default)]
    pub content: String,
    /// The tools an assistant message calls.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For a `tool` message: the id of the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl Message {
    fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }

    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new(Role::System, content)
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new(Role::User, content)
    }

    /// An assistant message without tool calls.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new(Role::Assistant, content)
    }

    /// A tool message: the result of the call with id `tool_call_id`.
    pub fn tool_result(tool_call_id: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            tool_call_id: Some(tool_call_id.into()),
            ..Self::new(Role::Tool, content)
        }
    }
}

/// A tool the model may call: an OpenAI-style function definition.
///
/// In a template: `{name, description, parameters}`, where `parameters` is a JSON Schema
/// object describing the arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolDefinition {
    /// The function's name (letters, digits, `_` and `-`, at most 64 characters).
    pub name: String,
    /// What the tool does, for the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A JSON Schema object for the arguments (`{"type": "object", "properties": {...}}`).
    pub parameters: Value,
}

/// Whether and which tool the model should call.
///
/// In a template: `tool_choice: auto`, `none`, `required`, or `tool_choice: { name: TOOL }`.
///
/// ```
/// use prompt_templates::ToolChoice;
/// let choice: ToolChoice = serde_json::from_str(r#"{"name": "lookup_character"}"#)?;
/// assert_eq!(choice, ToolChoice::Tool("lookup_character".into()));
/// assert_eq!(serde_json::to_string(&ToolChoice::Required)?, r#""required""#);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ToolChoice {
    /// The model decides (the APIs' default).
    Auto,
    /// The model must not call a tool.
    None,
    /// The model must call some tool.
    Required,
    /// The model must call this tool.
    Tool(String),
}

impl ToolChoice {
    /// Reads `auto`, `none`, `required` or `{name: TOOL}`; `Err` says what is wrong.
    pub(crate) fn from_value(value: &Value) -> Result<Self, String> {
        const EXPECTED: &str = "expected auto, none, required or { name: TOOL }";
        match value {
            Value::String(s) => match s.as_str() {
                "auto" => Ok(Self::Auto),
                "none" => Ok(Self::None),
                "required" => Ok(Self::Required),
                other => Err(format!("unknown value {other:?}: {EXPECTED}")),
            },
            Value::Object(map) => {
                if let Some(key) = map.keys().find(|k| *k != "name") {
                    return Err(format!("unknown key `{key}`: {EXPECTED}"));
                }
                match map.get("name") {
                    Some(Value::String(name)) if !name.trim().is_empty() => {
                        Ok(Self::Tool(name.clone()))
                    }
                    Some(other) => Err(format!(
                        "`name` must be a tool name, got {}",
                        json_type_name(other)
                    )),
                    None => Err(format!("missing `name`: {EXPECTED}")),
                }
            }
            other => Err(format!("got {}: {EXPECTED}", json_type_name(other))),
        }
    }
}

impl Serialize for ToolChoice {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Auto => serializer.serialize_str("auto"),
            Self::None => serializer.serialize_str("none"),
            Self::Required => serializer.serialize_str("required"),
            Self::Tool(name) => {
                let mut map = Map::new();
                map.insert("name".to_owned(), Value::String(name.clone()));
                map.serialize(serializer)
            }
        }
    }
}

impl<'de> Deserialize<'de> for ToolChoice {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Self::from_value(&value).map_err(serde::de::Error::custom)
    }
}

/// Reads a `messages` value: a list of `{role, content, tool_calls?, tool_call_id?}`
/// mappings. Tool calls are `{id, name, arguments}` or OpenAI's
/// `{id, type: function, function: {name, arguments: "<JSON text>"}}`, read into
/// [`ToolCall`]. `Err` lists every problem, each with the 0-based index of its item.
pub(crate) fn parse_messages(value: &Value) -> Result<Vec<Message>, Vec<(usize, String)>> {
    let Value::Array(items) = value else {
        return Err(vec![(
            0,
            format!("expected a list of messages, got {}", json_type_name(value)),
        )]);
    };
    let mut out = Vec::with_capacity(items.len());
    let mut problems = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let mut item_problems = Vec::new();
        if let Some(message) = parse_message(item, &mut item_problems) {
            out.push(message);
        }
        problems.extend(item_problems.into_iter().map(|p| (index, p)));
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// Whether `value` is a valid `messages` value.
pub(crate) fn is_messages(value: &Value) -> bool {
    parse_messages(value).is_ok()
}

/// One history item; problems go to `problems` (and then the result is `None`).
fn parse_message(item: &Value, problems: &mut Vec<String>) -> Option<Message> {
    let Value::Object(map) = item else {
        problems.push(format!(
            "expected a mapping with `role` and `content`, got {}",
            json_type_name(item)
        ));
        return None;
    };
    let before = problems.len();
    for key in map.keys() {
        if !matches!(
            key.as_str(),
            "role" | "content" | "tool_calls" | "tool_call_id"
        ) {
            problems.push(format!(
                "unknown key `{key}` (expected role, content, tool_calls, tool_call_id)"
            ));
        }
    }
    let role = match map.get("role") {
        Some(Value::String(s)) => match s.parse::<Role>() {
            Ok(role) => Some(role),
            Err(e) => {
                problems.push(e.to_string());
                None
            }
        },
        None | Some(Value::Null) => {
            problems.push("missing `role`".to_owned());
            None
        }
        Some(other) => {
            problems.push(format!(
                "`role` must be a string, got {}",
                json_type_name(other)
            ));
            None
        }
    };
    let tool_calls = match map.get("tool_calls") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(calls)) => {
            let mut out = Vec::with_capacity(calls.len());
            for (i, call) in calls.iter().enumerate() {
                match parse_tool_call(call) {
                    Ok(call) => out.push(call),
                    Err(e) => problems.push(format!("tool_calls[{i}]: {e}")),
                }
            }
            out
        }
        Some(other) => {
            problems.push(format!(
                "`tool_calls` must be a list, got {}",
                json_type_name(other)
            ));
            Vec::new()
        }
    };
    let content = match map.get("content") {
        Some(Value::String(s)) => Some(s.clone()),
        None | Some(Value::Null) => None,
        Some(other) => {
            problems.push(format!(
                "`content` must be a string, got {}",
                json_type_name(other)
            ));
            Some(String::new())
        }
    };
    let id_given = map.get("tool_call_id").is_some_and(|id| !id.is_null());
    let tool_call_id = match map.get("tool_call_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(other) => {
            problems.push(format!(
                "`tool_call_id` must be a non-empty string, got {}",
                json_type_name(other)
            ));
            None
        }
    };
    let role = role?;
    let calls_given = map.get("tool_calls").is_some_and(|c| !c.is_null());
    if calls_given && role != Role::Assistant {
        problems.push(format!(
            "`tool_calls` belong to an assistant message, not {role}"
        ));
    }
    let calls_listed = map
        .get("tool_calls")
        .and_then(Value::as_array)
        .is_some_and(|calls| !calls.is_empty());
    if content.is_none() && !(role == Role::Assistant && calls_listed) {
        problems.push(
            "missing `content` (only an assistant message with tool_calls may omit it)".to_owned(),
        );
    }
    if role == Role::Tool && !id_given {
        problems.push("missing `tool_call_id` (a tool message answers a call)".to_owned());
    } else if role != Role::Tool && id_given {
        problems.push(format!(
            "`tool_call_id` belongs to a tool message, not {role}"
        ));
    }
    if problems.len() > before {
        return None;
    }
    Some(Message {
        role,
        content: content.unwrap_or_default(),
        tool_calls,
        tool_call_id,
    })
}

/// A tool call in our form or OpenAI's (normalised to ours).
fn parse_tool_call(call: &Value) -> Result<ToolCall, String> {
    let Value::Object(map) = call else {
        return Err(format!(
            "expected a mapping with `id`, `name` and `arguments`, got {}",
            json_type_name(call)
        ));
    };
    let id = match map.get("id") {
        Some(Value::String(id)) if !id.is_empty() => id.clone(),
        None | Some(Value::Null) => return Err("missing `id`".to_owned()),
        Some(other) => {
            return Err(format!(
                "`id` must be a non-empty string, got {}",
                json_type_name(other)
            ));
        }
    };
    let (fields, prefix, allowed): (&Map<String, Value>, &str, &[&str]) = match map.get("function")
    {
        Some(Value::Object(function)) => {
            for key in map.keys() {
                if !matches!(key.as_str(), "id" | "type" | "function") {
                    return Err(format!("unknown key `{key}` (expected id, type, function)"));
                }
            }
            match map.get("type") {
                None | Some(Value::Null) => {}
                Some(Value::String(t)) if t == "function" => {}
                Some(other) => {
                    return Err(format!("`type` must be \"function\", got {other}"));
                }
            }
            (function, "function.", &["name", "arguments"])
        }
        Some(other) => {
            return Err(format!(
                "`function` must be a mapping, got {}",
                json_type_name(other)
            ));
        }
        None => (map, "", &["id", "name", "arguments"]),
    };
    if let Some(key) = fields.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!(
            "unknown key `{prefix}{key}` (expected {})",
            allowed.join(", ")
        ));
    }
    let name = match fields.get("name") {
        Some(Value::String(name)) if !name.is_empty() => name.clone(),
        None | Some(Value::Null) => return Err(format!("missing `{prefix}name`")),
        Some(other) => {
            return Err(format!(
                "`{prefix}name` must be a non-empty string, got {}",
                json_type_name(other)
            ));
        }
    };
    let arguments = match fields.get("arguments") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        // OpenAI sends the arguments as JSON text.
        Some(Value::String(text)) if !prefix.is_empty() => serde_json::from_str(text)
            .map_err(|e| format!("`{prefix}arguments` is not valid JSON: {e}"))?,
        Some(other) => other.clone(),
    };
    Ok(ToolCall {
        id,
        name,
        arguments,
    })
}

/// Whether `name` is a valid function name for the chat APIs: 1 to 64 letters, digits,
/// `_` and `-`.
pub(crate) fn is_tool_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The JSON Schema type names.
const SCHEMA_TYPES: &[&str] = &[
    "object", "array", "string", "number", "integer", "boolean", "null",
];

/// Problems with a tool's `parameters`, a structural check of a JSON Schema object: a
/// mapping whose `type` (when given) is `object`, whose `properties` map names to schemas,
/// and whose `required` lists declared properties. Nested schemas are checked the same
/// way (`type` a known type name, `properties` mappings, `items` a schema, `enum` a list).
pub(crate) fn schema_problems(parameters: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let Value::Object(root) = parameters else {
        out.push(format!(
            "`parameters` must be a JSON Schema object (a mapping), got {}",
            json_type_name(parameters)
        ));
        return out;
    };
    match root.get("type") {
        None => {}
        Some(Value::String(t)) if t == "object" => {}
        Some(other) => out.push(format!(
            "`parameters.type` must be \"object\" (the arguments are a mapping), got {other}"
        )),
    }
    check_schema(root, "parameters", &mut out, 0);
    out
}

fn check_schema(schema: &Map<String, Value>, path: &str, out: &mut Vec<String>, depth: usize) {
    if depth > 32 {
        out.push(format!("`{path}` is nested too deeply"));
        return;
    }
    match schema.get("type") {
        None => {}
        Some(Value::String(t)) if SCHEMA_TYPES.contains(&t.as_str()) => {}
        Some(Value::Array(types))
            if types
                .iter()
                .all(|t| t.as_str().is_some_and(|t| SCHEMA_TYPES.contains(&t))) => {}
        Some(other) => out.push(format!(
            "`{path}.type` must be one of {} (or a list of them), got {other}",
            SCHEMA_TYPES.join(", ")
        )),
    }
    let properties = match schema.get("properties") {
        None => None,
        Some(Value::Object(properties)) => {
            for (name, property) in properties {
                let at = format!("{path}.properties.{name}");
                match property {
                    Value::Object(property) => check_schema(property, &at, out, depth + 1),
                    other => out.push(format!(
                        "`{at}` must be a schema (a mapping), got {}",
                        json_type_name(other)
                    )),
                }
            }
            Some(properties)
        }
        Some(other) => {
            out.push(format!(
                "`{path}.properties` must be a mapping of property names to schemas, got {}",
                json_type_name(other)
            ));
            None
        }
    };
    match schema.get("required") {
        None => {}
        Some(Value::Array(names)) => {
            for name in names {
                match name {
                    Value::String(name) if properties.is_none_or(|p| p.contains_key(name)) => {}
                    Value::String(name) => out.push(format!(
                        "`{path}.required` names `{name}`, which is not in `{path}.properties`"
                    )),
                    other => out.push(format!(
                        "`{path}.required` must list property names, got {}",
                        json_type_name(other)
                    )),
                }
            }
        }
        Some(other) => out.push(format!(
            "`{path}.required` must be a list of property names, got {}",
            json_type_name(other)
        )),
    }
    match schema.get("items") {
        None | Some(Value::Bool(_)) => {}
        Some(Value::Object(items)) => check_schema(items, &format!("{path}.items"), out, depth + 1),
        Some(other) => out.push(format!(
            "`{path}.items` must be a schema (a mapping), got {}",
            json_type_name(other)
        )),
    }
    match schema.get("enum") {
        None | Some(Value::Array(_)) => {}
        Some(other) => out.push(format!(
            "`{path}.enum` must be a list, got {}",
            json_type_name(other)
        )),
    }
    match schema.get("description") {
        None | Some(Value::String(_)) => {}
        Some(other) => out.push(format!(
            "`{path}.description` must be a string, got {}",
            json_type_name(other)
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    fn problems(value: &Value) -> Vec<(usize, String)> {
        parse_messages(value).unwrap_err()
    }

    #[test]
    fn history_items_in_both_tool_call_forms() {
        let list = parse_messages(&json!([
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Who is Mira?"},
            {"role": "assistant", "tool_calls": [{"id": "c1", "name": "lookup", "arguments": {"n": "Mira"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "A cartographer."},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "c2", "type": "function", "function": {"name": "lookup", "arguments": "{\"n\": \"Ada\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "c2", "content": ""},
            {"role": "assistant", "content": "Mira is a cartographer."},
        ]))
        .unwrap();
        assert_eq!(list.len(), 7);
        assert_eq!(list[2].content, "");
        assert_eq!(list[4].tool_calls[0].name, "lookup");
        assert_eq!(list[4].tool_calls[0].arguments, json!({"n": "Ada"}));
        assert_eq!(list[3], Message::tool_result("c1", "A cartographer."));
        // Normalised lists read back to themselves.
        let again = parse_messages(&serde_json::to_value(&list).unwrap()).unwrap();
        assert_eq!(again, list);
    }

    #[test]
    fn every_problem_with_its_index() {
        assert_eq!(
            problems(&json!([
                {"role": "user", "content": "ok"},
                "hello",
                {"role": "admin", "content": "x"},
                {"role": "user"},
                {"role": "tool", "content": "r"},
                {"role": "user", "content": 3, "name": "bob"},
                {"role": "user", "content": "x", "tool_calls": [], "tool_call_id": "c"},
                {"role": "assistant", "tool_calls": [{"name": "f"}, {"id": "c", "function": {"name": "f", "arguments": "{"}}]},
            ])),
            vec![
                (
                    1,
                    "expected a mapping with `role` and `content`, got string".to_owned()
                ),
                (
                    2,
                    "role `admin` is not one of system, user, assistant, tool".to_owned()
                ),
                (
                    3,
                    "missing `content` (only an assistant message with tool_calls may omit it)"
                        .to_owned()
                ),
                (
                    4,
                    "missing `tool_call_id` (a tool message answers a call)".to_owned()
                ),
                (
                    5,
                    "unknown key `name` (expected role, content, tool_calls, tool_call_id)"
                        .to_owned()
                ),
                (5, "`content` must be a string, got integer".to_owned()),
                (
                    6,
                    "`tool_calls` belong to an assistant message, not user".to_owned()
                ),
                (
                    6,
                    "`tool_call_id` belongs to a tool message, not user".to_owned()
                ),
                (7, "tool_calls[0]: missing `id`".to_owned()),
                (
                    7,
                    "tool_calls[1]: `function.arguments` is not valid JSON: EOF while parsing an object at line 1 column 1"
                        .to_owned()
                ),
            ]
        );
        assert_eq!(
            problems(&json!("text")),
            vec![(0, "expected a list of messages, got string".to_owned())]
        );
    }

    #[test]
    fn schemas() {
        assert!(schema_problems(&json!({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]})).is_empty());
        assert!(schema_problems(&json!({})).is_empty());
        assert_eq!(
            schema_problems(
                &json!({"type": "string", "properties": {"a": "string", "b": {"type": "text"}}, "required": ["c", 1]})
            ),
            vec![
                "`parameters.type` must be \"object\" (the arguments are a mapping), got \"string\"",
                "`parameters.properties.a` must be a schema (a mapping), got string",
                "`parameters.properties.b.type` must be one of object, array, string, number, integer, boolean, null (or a list of them), got \"text\"",
                "`parameters.required` names `c`, which is not in `parameters.properties`",
                "`parameters.required` must list property names, got integer",
            ]
        );
        assert_eq!(
            schema_problems(&json!("object")),
            vec!["`parameters` must be a JSON Schema object (a mapping), got string"]
        );
    }

    #[test]
    fn tool_choice_forms() {
        assert_eq!(ToolChoice::from_value(&json!("auto")), Ok(ToolChoice::Auto));
        assert_eq!(
            ToolChoice::from_value(&json!({"name": "f"})),
            Ok(ToolChoice::Tool("f".into()))
        );
        assert!(ToolChoice::from_value(&json!("sometimes")).is_err());
        assert!(ToolChoice::from_value(&json!({"tool": "f"})).is_err());
        for choice in [
            ToolChoice::Auto,
            ToolChoice::None,
            ToolChoice::Required,
            ToolChoice::Tool("f".into()),
        ] {
            let text = serde_json::to_string(&choice).unwrap();
            assert_eq!(serde_json::from_str::<ToolChoice>(&text).unwrap(), choice);
        }
    }
}
