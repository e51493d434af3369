//! The OpenAI wire format of the server side: a `/v1/chat/completions` body read into
//! messages and [`RequestOptions`], and a [`Generation`] written back as a
//! `chat.completion` or as `chat.completion.chunk`s.
//!
//! Every field is read on its own, so a wrong type is an HTTP 400 naming the field.

use prompt_agent::{
    ChatMessage, Delta, Generation, RequestOptions, ResponseFormat, Role, ToolCall, ToolCallDelta,
    ToolChoice, ToolDefinition,
};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::error::ApiError;

/// Sampling options OpenAI-compatible servers (and Ollama, inside `options`) know, passed
/// through as provider options.
const PASS_THROUGH: &[&str] = &[
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "top_k",
    "min_p",
    "repetition_penalty",
    "repeat_penalty",
    "reasoning_effort",
    "parallel_tool_calls",
];

/// Fields that change nothing the gateway answers (delivery, bookkeeping), ignored.
const IGNORED: &[&str] = &[
    "user",
    "metadata",
    "store",
    "service_tier",
    "logprobs",
    "top_logprobs",
    "stream",
    "stream_options",
];

/// A chat completion request as the gateway understands it.
#[derive(Debug, Default)]
pub(crate) struct CompletionRequest {
    pub(crate) messages: Vec<ChatMessage>,
    pub(crate) options: RequestOptions,
    pub(crate) stream: bool,
    pub(crate) include_usage: bool,
    /// `agent/task[@version]`.
    pub(crate) template: Option<String>,
    pub(crate) vars: Map<String, Value>,
}

fn field<T: DeserializeOwned>(name: &str, value: Value) -> Result<T, ApiError> {
    serde_json::from_value(value).map_err(|e| {
        ApiError::bad_request("invalid_type", format!("invalid value for `{name}`: {e}"))
            .with_param(name)
    })
}

/// `null` as "not given".
fn optional<T: DeserializeOwned>(name: &str, value: Value) -> Result<Option<T>, ApiError> {
    if value.is_null() {
        Ok(None)
    } else {
        field(name, value).map(Some)
    }
}

impl CompletionRequest {
    /// Reads a request body.
    pub(crate) fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(
                "invalid_json",
                format!("the request body is not valid JSON: {e}"),
            )
        })?;
        let Value::Object(object) = value else {
            return Err(ApiError::bad_request(
                "invalid_json",
                "the request body must be a JSON object",
            ));
        };
        let mut out = Self::default();
        let mut saw_messages = false;
        for (name, value) in object {
            let o = &mut out.options;
            match name.as_str() {
                "model" => o.model = optional::<String>(&name, value)?.filter(|m| !m.is_empty()),
                "messages" => {
                    saw_messages = true;
                    let items: Vec<Value> = field(&name, value)?;
                    out.messages = items
                        .into_iter()
                        .enumerate()
                        .map(|(i, m)| message(i, m))
                        .collect::<Result<_, _>>()?;
                }
                "temperature" => o.temperature = optional(&name, value)?,
                "top_p" => o.top_p = optional(&name, value)?,
                "max_tokens" | "max_completion_tokens" => {
                    if let Some(n) = optional(&name, value)? {
                        o.max_tokens = Some(n);
                    }
                }
                "seed" => o.seed = optional(&name, value)?,
                "stop" => {
                    o.stop = match value {
                        Value::Null => None,
                        Value::String(s) => Some(vec![s]),
                        other => Some(field(&name, other)?),
                    }
                }
                "response_format" => o.format = response_format(&value)?,
                "tools" => {
                    let items: Option<Vec<Value>> = optional(&name, value)?;
                    o.tools = items
                        .map(|items| {
                            items
                                .into_iter()
                                .enumerate()
                                .map(|(i, t)| tool(i, &t))
                                .collect::<Result<Vec<_>, _>>()
                        })
                        .transpose()?;
                }
                "tool_choice" => o.tool_choice = tool_choice(&value)?,
                "n" => {
                    let n: Option<u64> = optional(&name, value)?;
                    if n.is_some_and(|n| n != 1) {
                        return Err(ApiError::bad_request(
                            "unsupported_value",
                            "only n = 1 is supported",
                        )
                        .with_param("n"));
                    }
                }
                "stream" => out.stream = optional(&name, value)?.unwrap_or(false),
                "stream_options" => {
                    let options: Option<Map<String, Value>> = optional(&name, value)?;
                    if let Some(v) = options.and_then(|mut o| o.remove("include_usage")) {
                        out.include_usage =
                            optional("stream_options.include_usage", v)?.unwrap_or(false);
                    }
                }
                "template" => out.template = optional(&name, value)?,
                "vars" => out.vars = optional(&name, value)?.unwrap_or_default(),
                n if PASS_THROUGH.contains(&n) && !value.is_null() => {
                    o.provider_options.insert(name, value);
                }
                n if IGNORED.contains(&n) => {}
                _ => {} // Unknown fields are ignored, as OpenAI-compatible servers do.
            }
        }
        if out.template.is_none() {
            if !saw_messages || out.messages.is_empty() {
                return Err(ApiError::bad_request(
                    "missing_required_parameter",
                    "`messages` must be a non-empty list (or give `template` and `vars`)",
                )
                .with_param("messages"));
            }
            if out.options.model.is_none() {
                return Err(ApiError::bad_request(
                    "missing_required_parameter",
                    "`model` is required",
                )
                .with_param("model"));
            }
        }
        if out.template.is_none() && !out.vars.is_empty() {
            return Err(
                ApiError::bad_request("invalid_value", "`vars` needs `template`")
                    .with_param("vars"),
            );
        }
        Ok(out)
    }
}

/// `messages[i]`: role, content (text or a list of text parts), tool calls, tool call id.
fn message(i: usize, value: Value) -> Result<ChatMessage, ApiError> {
    let param = format!("messages[{i}]");
    let bad = |what: String| ApiError::bad_request("invalid_value", what).with_param(param.clone());
    let Value::Object(mut m) = value else {
        return Err(bad(format!("{param} must be an object")));
    };
    let role = match m.remove("role") {
        Some(Value::String(r)) => match r.as_str() {
            "system" | "developer" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" => Role::Tool,
            other => return Err(bad(format!("{param}.role: unknown role {other:?}"))),
        },
        _ => return Err(bad(format!("{param}.role is required (a string)"))),
    };
    let content = match m.remove("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s,
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for part in parts {
                match (part.get("type").and_then(Value::as_str), part.get("text")) {
                    (Some("text"), Some(Value::String(t))) => text.push_str(t),
                    (kind, _) => {
                        return Err(bad(format!(
                            "{param}.content: only text parts are supported, got {}",
                            kind.unwrap_or("a part without a type")
                        )));
                    }
                }
            }
            text
        }
        Some(_) => {
            return Err(bad(format!(
                "{param}.content must be a string or a list of parts"
            )));
        }
    };
    let mut out = ChatMessage {
        role,
        content,
        tool_calls: Vec::new(),
        tool_call_id: None,
    };
    if let Some(calls) = m.remove("tool_calls").filter(|v| !v.is_null()) {
        let Value::Array(calls) = calls else {
            return Err(bad(format!("{param}.tool_calls must be a list")));
        };
        for (j, call) in calls.into_iter().enumerate() {
            let id = call.get("id").and_then(Value::as_str);
            let function = call.get("function");
            let name = function.and_then(|f| f.get("name")).and_then(Value::as_str);
            let (Some(id), Some(name)) = (id, name) else {
                return Err(bad(format!(
                    "{param}.tool_calls[{j}] needs an `id` and a `function.name`"
                )));
            };
            let arguments = match function.and_then(|f| f.get("arguments")) {
                Some(Value::String(text)) => {
                    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone()))
                }
                Some(other) => other.clone(),
                None => json!({}),
            };
            out.tool_calls.push(ToolCall {
                id: id.to_owned(),
                name: name.to_owned(),
                arguments,
            });
        }
    }
    if let Some(id) = m.remove("tool_call_id").filter(|v| !v.is_null()) {
        let Value::String(id) = id else {
            return Err(bad(format!("{param}.tool_call_id must be a string")));
        };
        out.tool_call_id = Some(id);
    }
    if role == Role::Tool && out.tool_call_id.is_none() {
        return Err(bad(format!("{param}: a tool message needs `tool_call_id`")));
    }
    Ok(out)
}

/// `tools[i]`: `{"type": "function", "function": {name, description, parameters}}`.
fn tool(i: usize, value: &Value) -> Result<ToolDefinition, ApiError> {
    let param = format!("tools[{i}]");
    let function = value.get("function").cloned().unwrap_or(Value::Null);
    let name = function.get("name").and_then(Value::as_str);
    let Some(name) = name else {
        return Err(ApiError::bad_request(
            "invalid_value",
            format!("{param}.function.name is required"),
        )
        .with_param(param));
    };
    Ok(ToolDefinition {
        name: name.to_owned(),
        description: function
            .get("description")
            .and_then(Value::as_str)
            .map(str::to_owned),
        parameters: function
            .get("parameters")
            .cloned()
            .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
    })
}

fn tool_choice(value: &Value) -> Result<Option<ToolChoice>, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "invalid_value",
            "tool_choice must be \"auto\", \"none\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": …}}",
        )
        .with_param("tool_choice")
    };
    Ok(Some(match value {
        Value::Null => return Ok(None),
        Value::String(s) => match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            _ => return Err(bad()),
        },
        Value::Object(_) => {
            let name = value
                .pointer("/function/name")
                .and_then(Value::as_str)
                .ok_or_else(bad)?;
            ToolChoice::Tool(name.to_owned())
        }
        _ => return Err(bad()),
    }))
}

fn response_format(value: &Value) -> Result<Option<ResponseFormat>, ApiError> {
    let bad = |what: &str| {
        ApiError::bad_request("invalid_value", format!("response_format: {what}"))
            .with_param("response_format")
    };
    if value.is_null() {
        return Ok(None);
    }
    match value.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(ResponseFormat::Json)),
        Some("json_schema") => {
            let spec = value
                .get("json_schema")
                .ok_or_else(|| bad("`json_schema` is missing"))?;
            let name = spec
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("response")
                .to_owned();
            let schema = spec
                .get("schema")
                .cloned()
                .ok_or_else(|| bad("`json_schema.schema` is missing"))?;
            Ok(Some(ResponseFormat::JsonSchema { name, schema }))
        }
        _ => Err(bad("`type` must be text, json_object or json_schema")),
    }
}

/// The OpenAI `finish_reason` of a generation.
pub(crate) fn finish_reason(generation: &Generation) -> &'static str {
    if !generation.tool_calls.is_empty() {
        return "tool_calls";
    }
    match generation.finish_reason.as_deref() {
        Some("length") => "length",
        Some("content_filter") => "content_filter",
        _ => "stop",
    }
}

fn tool_call_json(call: &ToolCall) -> Value {
    let arguments = match &call.arguments {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    json!({
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": arguments},
    })
}

/// `usage` of a generation (a hit reports the original call's).
pub(crate) fn usage(generation: &Generation) -> Value {
    let prompt = generation.tokens_prompt.unwrap_or(0);
    let completion = generation.tokens_completion.unwrap_or(0);
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    })
}

/// A whole `chat.completion`.
pub(crate) fn completion(id: &str, created: u64, generation: &Generation) -> Value {
    let mut message = json!({
        "role": "assistant",
        "content": if generation.content.is_empty() && !generation.tool_calls.is_empty() {
            Value::Null
        } else {
            Value::String(generation.content.clone())
        },
    });
    if !generation.tool_calls.is_empty() {
        message["tool_calls"] = generation.tool_calls.iter().map(tool_call_json).collect();
    }
    if let Some(reasoning) = &generation.reasoning {
        message["reasoning_content"] = json!(reasoning);
    }
    json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": generation.model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason(generation),
        }],
        "usage": usage(generation),
    })
}

/// Builds the `chat.completion.chunk`s of one streamed answer.
#[derive(Debug)]
pub(crate) struct Chunks {
    pub(crate) id: String,
    pub(crate) created: u64,
    pub(crate) model: String,
}

impl Chunks {
    fn chunk(&self, choices: &Value) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        })
    }

    fn delta(&self, delta: &Value, finish: Option<&str>) -> Value {
        self.chunk(
            &json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]),
        )
    }

    /// The first chunk: the role.
    pub(crate) fn role(&self) -> Value {
        self.delta(&json!({"role": "assistant", "content": ""}), None)
    }

    /// A piece of the reply.
    pub(crate) fn piece(&self, delta: &Delta) -> Value {
        match delta {
            Delta::Text(text) => self.delta(&json!({"content": text}), None),
            Delta::Reasoning(text) => self.delta(&json!({"reasoning_content": text}), None),
            Delta::ToolCall(call) => self.tool_call(call),
        }
    }

    fn tool_call(&self, call: &ToolCallDelta) -> Value {
        let mut item = json!({"index": call.index, "function": {"arguments": call.arguments}});
        if let Some(id) = &call.id {
            item["id"] = json!(id);
            item["type"] = json!("function");
        }
        if let Some(name) = &call.name {
            item["function"]["name"] = json!(name);
        }
        self.delta(&json!({"tool_calls": [item]}), None)
    }

    /// A whole tool call as one piece (for replies whose calls did not stream).
    pub(crate) fn whole_tool_call(&self, index: usize, call: &ToolCall) -> Value {
        let mut item = tool_call_json(call);
        item["index"] = json!(index);
        self.delta(&json!({"tool_calls": [item]}), None)
    }

    /// The last chunk with choices: the finish reason.
    pub(crate) fn finish(&self, generation: &Generation) -> Value {
        self.delta(&json!({}), Some(finish_reason(generation)))
    }

    /// The usage chunk (`stream_options.include_usage`).
    pub(crate) fn usage(&self, generation: &Generation) -> Value {
        let mut chunk = self.chunk(&json!([]));
        chunk["usage"] = usage(generation);
        chunk
    }
}
