//! A parsed and compiled template, and rendering.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use minijinja::value::{DynObject, Enumerator, Object, StringInput, Value as JinjaValue};
use minijinja::{AutoEscape, Environment, Output, State, UndefinedBehavior, escape_formatter};
use serde_json::Value;

use crate::Vars;
use crate::error::{TemplateError, VarProblem};
use crate::limits::{CappedOutput, RenderBudget, RenderLimits};
use crate::messages::{Message, Role, ToolChoice, ToolDefinition, parse_messages};
use crate::simple::PlainBody;
use crate::spec::{
    Example, Metadata, ModelDefaults, ValidationRules, VarType, VariableSpec, json_type_name,
};

/// Name of the compiled system body inside a template's engine.
pub(crate) const SYSTEM: &str = "system_prompt";
/// Name of the compiled user body inside a template's engine.
pub(crate) const USER: &str = "user_prompt_template";

/// The name of the body of entry `index` of a `messages:` list, `messages[<index>]`: the
/// name it is compiled under and the `part` its errors name.
///
/// Names are made once per index and then shared for the life of the process (one short
/// string for each index any loaded template reaches), so errors can keep naming their
/// part with a `&'static str`.
pub(crate) fn message_part(index: usize) -> &'static str {
    static NAMES: parking_lot::Mutex<Vec<&'static str>> = parking_lot::Mutex::new(Vec::new());
    let mut names = NAMES.lock();
    while names.len() <= index {
        let name = format!("messages[{}]", names.len());
        names.push(Box::leak(name.into_boxed_str()));
    }
    names[index]
}

/// What a template renders to: the system and user prompts, and the whole list of
/// messages to send.
///
/// For a template with `system_prompt` and `user_prompt_template`, `messages` is exactly
/// `[system, user]` (the same strings as `system` and `user`). For a template with a
/// `messages:` list, `messages` is the rendered list (histories inserted in place); `system`
/// is then the content of its first `system` message and `user` the content of its last
/// `user` message (each `""` when there is none), for display: send `messages`.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct RenderedPrompt {
    /// The system prompt (for a `messages:` template: the first system message's content).
    pub system: String,
    /// The user prompt (for a `messages:` template: the last user message's content).
    pub user: String,
    /// Every message, in order: what a chat API is sent.
    pub messages: Vec<Message>,
}

impl RenderedPrompt {
    /// The two prompts of a template with `system_prompt` and `user_prompt_template`.
    fn pair(system: String, user: String) -> Self {
        Self {
            messages: vec![Message::system(system.clone()), Message::user(user.clone())],
            system,
            user,
        }
    }
}

/// One entry of a template's `messages:` list, as written in the file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(untagged)]
pub enum MessageEntry {
    /// `{role: ..., content: ...}`: a message whose content is a Jinja body.
    Content {
        /// `system`, `user` or `assistant`.
        role: Role,
        /// The Jinja source of the content.
        #[serde(rename = "content")]
        source: String,
    },
    /// `{history: VAR}`: the messages of a variable of type `messages`, inserted verbatim.
    History {
        /// The variable's name.
        #[serde(rename = "history")]
        variable: String,
    },
}

/// A compiled body: its name in the engine (also the `part` its errors name), its source,
/// and its plain form when it has one.
#[derive(Debug)]
pub(crate) struct Body {
    pub(crate) part: &'static str,
    pub(crate) source: String,
    /// The body, when it is only text and variables (rendered without the engine).
    pub(crate) plain: Option<PlainBody>,
}

/// One entry of a `messages:` list, compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry {
    /// A message rendered from `bodies[body]`.
    Content { role: Role, body: usize },
    /// The messages of the declared variable `variables[var]`.
    History { var: usize },
}

/// A loaded template: its declarations and its bodies, compiled once.
///
/// Obtain one from [`TemplateStore::load`](crate::TemplateStore::load). Rendering does no parsing.
pub struct PromptTemplate {
    pub(crate) agent: String,
    pub(crate) task: String,
    pub(crate) version: u32,
    pub(crate) path: PathBuf,
    pub(crate) content_hash: String,
    pub(crate) metadata: Metadata,
    pub(crate) model: Option<ModelDefaults>,
    pub(crate) validation: ValidationRules,
    pub(crate) variables: Vec<VariableSpec>,
    pub(crate) examples: Vec<Example>,
    /// Every body: `[system_prompt, user_prompt_template]`, or the content bodies of the
    /// `messages:` list in file order.
    pub(crate) bodies: Vec<Body>,
    /// The `messages:` list; empty for a template with the two bodies.
    pub(crate) entries: Vec<Entry>,
    /// The `messages:` list as written.
    pub(crate) message_entries: Vec<MessageEntry>,
    /// The body shown as the system prompt: `system_prompt`, or the first system entry.
    pub(crate) system_body: Option<usize>,
    /// The body shown as the user prompt, which also renders each example's input:
    /// `user_prompt_template`, or the last user entry.
    pub(crate) user_body: Option<usize>,
    /// Declared tools.
    pub(crate) tools: Vec<ToolDefinition>,
    /// Declared tool choice.
    pub(crate) tool_choice: Option<ToolChoice>,
    /// `agent/task vN (path)`, used in every error message.
    pub(crate) display_name: String,
    /// The declared names, shared with every render context.
    pub(crate) names: Arc<[Arc<str>]>,
    /// For each declared variable, its value when not given (`None` when required).
    pub(crate) fallbacks: Vec<Option<JinjaValue>>,
    /// For each declared variable of type `messages` (by index), its default messages when
    /// it is optional; empty when no variable has that type.
    pub(crate) fallback_messages: Vec<Option<Vec<Message>>>,
    /// Indices into `variables` in [`name_order`], to find a given variable's declaration
    /// by binary search.
    pub(crate) by_name: Vec<usize>,
    /// Owns the compiled bodies.
    pub(crate) env: Environment<'static>,
    /// The render budget (the engine's fuel is set from it too).
    pub(crate) limits: RenderLimits,
}

impl fmt::Debug for PromptTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PromptTemplate")
            .field("agent", &self.agent)
            .field("task", &self.task)
            .field("version", &self.version)
            .field("path", &self.path)
            .field("content_hash", &self.content_hash)
            .field("variables", &self.variables)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// Builds the engine every template uses: strict undefined, no auto-escape, Jinja2's
/// whitespace defaults, Python method compatibility (`d.items()`, `s.upper()`, ...).
pub(crate) fn new_environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_keep_trailing_newline(false);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.set_formatter(format_value);
    env.add_filter("trim", trim);
    env
}

/// The engine's `trim` filter, minus its intermediate copy of the result (the engine's
/// version builds a `String` and then copies it into the value).
#[allow(clippy::needless_pass_by_value)] // minijinja passes filter arguments by value
fn trim(value: StringInput<'_>, chars: Option<std::borrow::Cow<'_, str>>) -> JinjaValue {
    let trimmed = match chars {
        Some(chars) => {
            let chars: Vec<char> = chars.chars().collect();
            value.as_str().trim_matches(&chars[..])
        }
        None => value.as_str().trim(),
    };
    if value.is_safe() {
        JinjaValue::from_safe_string(trimmed.to_owned())
    } else {
        JinjaValue::from(trimmed)
    }
}

/// Writes a printed value: a string as it is when nothing is escaped (what the default
/// formatter does too, minus its trip through `fmt::Display`), anything else as the
/// default formatter writes it.
fn format_value(
    out: &mut Output,
    state: &State,
    value: &JinjaValue,
) -> Result<(), minijinja::Error> {
    match value.as_str() {
        Some(s) if state.auto_escape() == AutoEscape::None => Ok(out.write_str(s)?),
        _ => escape_formatter(out, state, value),
    }
}

impl PromptTemplate {
    /// The agent, such as `writer` (the folder name).
    pub fn agent(&self) -> &str {
        &self.agent
    }

    /// The task, such as `write_chapter`.
    pub fn task(&self) -> &str {
        &self.task
    }

    /// The version `N` of `<task>_v<N>.yaml`.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// SHA-256 of the file's bytes, 64 lowercase hex characters.
    pub fn content_hash(&self) -> &str {
        &self.content_hash
    }

    /// The file the template was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Descriptive fields.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// Suggested model settings, if the template has a `model` section.
    pub fn model(&self) -> Option<&ModelDefaults> {
        self.model.as_ref()
    }

    /// Rules for the response.
    pub fn validation(&self) -> &ValidationRules {
        &self.validation
    }

    /// The declared variables, in file order.
    pub fn variables(&self) -> &[VariableSpec] {
        &self.variables
    }

    /// The declared variable called `name`.
    pub fn variable(&self, name: &str) -> Option<&VariableSpec> {
        self.variables.iter().find(|v| v.name == name)
    }

    /// The few-shot examples.
    pub fn examples(&self) -> &[Example] {
        &self.examples
    }

    /// The Jinja source of the system prompt (for a `messages:` template, of its first
    /// `system` entry, or `""` when it has none).
    pub fn system_source(&self) -> &str {
        self.system_body
            .map_or("", |i| self.bodies[i].source.as_str())
    }

    /// The Jinja source of the user prompt (for a `messages:` template, of its last `user`
    /// entry, or `""` when it has none).
    pub fn user_source(&self) -> &str {
        self.user_body
            .map_or("", |i| self.bodies[i].source.as_str())
    }

    /// The `messages:` list as written in the file; empty for a template with
    /// `system_prompt` and `user_prompt_template`.
    pub fn message_entries(&self) -> &[MessageEntry] {
        &self.message_entries
    }

    /// The tools the template declares (`tools:`), in file order.
    pub fn tools(&self) -> &[ToolDefinition] {
        &self.tools
    }

    /// The template's `tool_choice`, when it has one.
    pub fn tool_choice(&self) -> Option<&ToolChoice> {
        self.tool_choice.as_ref()
    }

    /// `agent/task vN (path)`, the name used in error messages.
    pub fn display_name(&self) -> &str {
        &self.display_name
    }

    /// The render budget, from the [`TemplateStore`](crate::TemplateStore) that loaded it.
    pub fn limits(&self) -> RenderLimits {
        self.limits
    }

    /// Sets the render budget (the store does this when it loads a template).
    pub(crate) fn set_limits(&mut self, limits: RenderLimits) {
        self.limits = limits;
        self.env.set_fuel(Some(limits.engine_fuel()));
    }

    fn over_budget(&self, part: &'static str, budget: RenderBudget) -> TemplateError {
        TemplateError::RenderBudget {
            template: self.display_name.clone(),
            part,
            budget,
        }
    }

    /// Renders the prompts.
    ///
    /// Fails with [`TemplateError::Variables`] listing every missing required, unknown and
    /// mistyped variable at once (and every invalid item of a `messages` variable, with its
    /// index). Optional variables not given take their default, or `""`, `[]`, `{}` or
    /// `none` by type. Values are emitted verbatim, never re-read as Jinja. Fails with
    /// [`TemplateError::RenderBudget`] when a body runs past the template's
    /// [`limits`](Self::limits).
    ///
    /// A template with a `messages:` list renders each entry in order: a `content` body
    /// into one message of its role, a `{history: VAR}` entry into the messages of `VAR`,
    /// as given. A value's text stays inside the message its body renders, whatever it
    /// contains; see [`RenderedPrompt`] for `system` and `user`.
    pub fn render(&self, vars: &Vars) -> Result<RenderedPrompt, TemplateError> {
        let ctx = Arc::new(self.context(vars)?);
        if !self.entries.is_empty() {
            return self.render_messages(&ctx, 0);
        }
        let mut engine_ctx = None;
        let system = self.render_body(0, &ctx, &mut engine_ctx)?;
        let user = self.render_body(1, &ctx, &mut engine_ctx)?;
        Ok(RenderedPrompt::pair(system, user))
    }

    /// Renders the prompts, with up to `max_examples` few-shot examples.
    ///
    /// For a template with a `messages:` list, the examples become turns just before the
    /// message of its last `user` entry: for each, a user message (that entry's body
    /// rendered with the example's `input`, over the declared defaults) and an assistant
    /// message (the example's `output`, trailing blanks removed). The example's `context`
    /// is not sent.
    ///
    /// For a template with `system_prompt` and `user_prompt_template`, each example's
    /// `input` is rendered through the user prompt, and the user prompt becomes:
    ///
    /// ```text
    /// Here are some examples:
    ///
    /// Example 1 (<context, when given>):
    /// Input:
    /// <user prompt rendered with the example's input>
    /// Output:
    /// <the example's output>
    ///
    /// Now, your task:
    /// <user prompt>
    /// ```
    ///
    /// With `max_examples == 0` or no examples this is exactly [`render`](Self::render).
    pub fn render_with_examples(
        &self,
        vars: &Vars,
        max_examples: usize,
    ) -> Result<RenderedPrompt, TemplateError> {
        let count = max_examples.min(self.examples.len());
        if !self.entries.is_empty() {
            let ctx = Arc::new(self.context(vars)?);
            return self.render_messages(&ctx, count);
        }
        let mut rendered = self.render(vars)?;
        if count == 0 {
            return Ok(rendered);
        }
        let mut user = String::from("Here are some examples:\n\n");
        for (i, example) in self.examples.iter().take(count).enumerate() {
            let input = self.render_example_input(example)?;
            user.push_str(&format!("Example {}", i + 1));
            if let Some(context) = example.context.as_deref().filter(|c| !c.is_empty()) {
                user.push_str(&format!(" ({context})"));
            }
            user.push_str(":\nInput:\n");
            user.push_str(input.trim_end());
            user.push_str("\nOutput:\n");
            user.push_str(example.output.trim_end());
            user.push_str("\n\n");
        }
        user.push_str("Now, your task:\n");
        user.push_str(&rendered.user);
        if user.len() > self.limits.max_bytes {
            return Err(self.over_budget(USER, RenderBudget::MaxBytes(self.limits.max_bytes)));
        }
        rendered.messages[1].content.clone_from(&user);
        rendered.user = user;
        Ok(rendered)
    }

    /// Renders a `messages:` list, with the first `examples` examples as turns ahead of the
    /// last user entry.
    fn render_messages(
        &self,
        ctx: &Arc<RenderContext>,
        examples: usize,
    ) -> Result<RenderedPrompt, TemplateError> {
        let mut engine_ctx = None;
        let mut messages = Vec::with_capacity(
            self.entries.len()
                + 2 * examples
                + ctx.histories.iter().map(|(_, h)| h.len()).sum::<usize>(),
        );
        for entry in &self.entries {
            match *entry {
                Entry::Content { role, body } => {
                    if examples > 0 && Some(body) == self.user_body {
                        for example in self.examples.iter().take(examples) {
                            messages.push(Message::user(self.render_example_input(example)?));
                            messages.push(Message::assistant(example.output.trim_end()));
                        }
                    }
                    let content = self.render_body(body, ctx, &mut engine_ctx)?;
                    messages.push(Message {
                        role,
                        content,
                        tool_calls: Vec::new(),
                        tool_call_id: None,
                    });
                }
                Entry::History { var } => {
                    if let Some((_, history)) = ctx.histories.iter().find(|(v, _)| *v == var) {
                        messages.extend(history.iter().cloned());
                    }
                }
            }
        }
        let content = |message: Option<&Message>| message.map(|m| m.content.clone());
        Ok(RenderedPrompt {
            system: content(messages.iter().find(|m| m.role == Role::System)).unwrap_or_default(),
            user: content(messages.iter().rev().find(|m| m.role == Role::User)).unwrap_or_default(),
            messages,
        })
    }

    /// Renders the user prompt (for a `messages:` template, the last user entry) with an
    /// example's input.
    pub(crate) fn render_example_input(&self, example: &Example) -> Result<String, TemplateError> {
        let ctx = Arc::new(self.context(&example.input)?);
        let Some(body) = self.user_body else {
            return Ok(String::new());
        };
        self.render_body(body, &ctx, &mut None)
    }

    /// Renders `bodies[index]`: a plain one directly, any other with the engine (the
    /// engine's context value is made once per render, when first needed).
    fn render_body(
        &self,
        index: usize,
        ctx: &Arc<RenderContext>,
        engine_ctx: &mut Option<JinjaValue>,
    ) -> Result<String, TemplateError> {
        let body = &self.bodies[index];
        match &body.plain {
            Some(plain) => plain
                .render(&ctx.values, self.limits.max_bytes)
                .ok_or_else(|| {
                    self.over_budget(body.part, RenderBudget::MaxBytes(self.limits.max_bytes))
                }),
            None => {
                let value = engine_ctx.get_or_insert_with(|| {
                    JinjaValue::from_dyn_object(DynObject::new(Arc::clone(ctx)))
                });
                self.render_part(body, value)
            }
        }
    }

    /// Turns a command-line string into the variable's declared type: integers, numbers and
    /// booleans are parsed, lists and objects are JSON, strings are taken verbatim, `any`
    /// is JSON when it parses and a string otherwise.
    pub fn parse_var(&self, name: &str, raw: &str) -> Result<Value, TemplateError> {
        let Some(spec) = self.variable(name) else {
            return Err(TemplateError::Variables {
                template: self.display_name.clone(),
                problems: vec![VarProblem::Unknown {
                    name: name.to_owned(),
                }],
            });
        };
        let fail = |reason: String| TemplateError::ParseVar {
            template: self.display_name.clone(),
            name: name.to_owned(),
            expected: spec.ty,
            raw: raw.to_owned(),
            reason,
        };
        let trimmed = raw.trim();
        match spec.ty {
            VarType::String => Ok(Value::String(raw.to_owned())),
            VarType::Integer => {
                if let Ok(i) = trimmed.parse::<i64>() {
                    Ok(Value::from(i))
                } else {
                    trimmed
                        .parse::<u64>()
                        .map(Value::from)
                        .map_err(|e| fail(e.to_string()))
                }
            }
            VarType::Number => {
                if let Ok(i) = trimmed.parse::<i64>() {
                    return Ok(Value::from(i));
                }
                let f = trimmed.parse::<f64>().map_err(|e| fail(e.to_string()))?;
                serde_json::Number::from_f64(f)
                    .map(Value::Number)
                    .ok_or_else(|| fail("not a finite number".to_owned()))
            }
            VarType::Boolean => match trimmed.to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" | "1" => Ok(Value::Bool(true)),
                "false" | "no" | "off" | "0" => Ok(Value::Bool(false)),
                _ => Err(fail(
                    "expected true/false, yes/no, on/off or 1/0".to_owned(),
                )),
            },
            VarType::List | VarType::Object => {
                let value: Value = serde_json::from_str(trimmed)
                    .map_err(|e| fail(format!("invalid JSON: {e}")))?;
                if spec.ty.matches(&value) {
                    Ok(value)
                } else {
                    Err(fail(format!("JSON value is a {}", json_type_name(&value))))
                }
            }
            VarType::Messages => {
                let value: Value = serde_json::from_str(trimmed)
                    .map_err(|e| fail(format!("invalid JSON: {e}")))?;
                match parse_messages(&value) {
                    Ok(_) => Ok(value),
                    Err(problems) if value.is_array() => Err(fail(
                        problems
                            .iter()
                            .map(|(i, p)| format!("item {i}: {p}"))
                            .collect::<Vec<_>>()
                            .join("; "),
                    )),
                    Err(_) => Err(fail(format!("JSON value is a {}", json_type_name(&value)))),
                }
            }
            VarType::Any => {
                Ok(serde_json::from_str(trimmed).unwrap_or_else(|_| Value::String(raw.to_owned())))
            }
        }
    }

    /// Checks `vars` against the declarations and builds the render context.
    ///
    /// Each given name is found among the declared ones by binary search over `by_name`.
    /// Problems are listed in declaration order, then the unknown variables as `vars` gives
    /// them.
    fn context(&self, vars: &Vars) -> Result<RenderContext, TemplateError> {
        let count = self.variables.len();
        let mut on_stack = [None; 16];
        let mut on_heap;
        let given: &mut [Option<&Value>] = if count <= on_stack.len() {
            &mut on_stack[..count]
        } else {
            on_heap = vec![None; count];
            &mut on_heap
        };
        let mut unknown = Vec::new();
        for (name, value) in vars {
            match self
                .by_name
                .binary_search_by(|&i| name_order(&self.variables[i].name, name))
            {
                Ok(at) => given[self.by_name[at]] = Some(value),
                Err(_) => unknown.push(VarProblem::Unknown { name: name.clone() }),
            }
        }
        let mut problems = Vec::new();
        let mut values = Vec::with_capacity(self.variables.len());
        let mut histories = Vec::new();
        for (index, ((spec, fallback), value)) in self
            .variables
            .iter()
            .zip(&self.fallbacks)
            .zip(given)
            .enumerate()
        {
            let value = *value;
            if spec.ty == VarType::Messages {
                self.messages_value(index, value, &mut values, &mut histories, &mut problems);
                continue;
            }
            match value {
                Some(Value::Null) if !spec.required || spec.ty == VarType::Any => {
                    values.push(fallback.clone().unwrap_or_else(|| JinjaValue::from(())));
                }
                Some(value) if spec.ty.matches(value) => values.push(to_jinja(value)),
                Some(value) => problems.push(VarProblem::TypeMismatch {
                    name: spec.name.clone(),
                    expected: spec.ty,
                    found: json_type_name(value),
                }),
                None => match fallback {
                    Some(value) => values.push(value.clone()),
                    None => problems.push(VarProblem::Missing {
                        name: spec.name.clone(),
                        expected: spec.ty,
                    }),
                },
            }
        }
        problems.extend(unknown);
        if !problems.is_empty() {
            return Err(TemplateError::Variables {
                template: self.display_name.clone(),
                problems,
            });
        }
        Ok(RenderContext {
            names: Arc::clone(&self.names),
            values,
            histories,
        })
    }

    /// Checks the value of the `messages` variable `variables[index]` (given or not) and
    /// keeps its messages for the render.
    fn messages_value(
        &self,
        index: usize,
        value: Option<&Value>,
        values: &mut Vec<JinjaValue>,
        histories: &mut Vec<(usize, Vec<Message>)>,
        problems: &mut Vec<VarProblem>,
    ) {
        let spec = &self.variables[index];
        let fallback = self
            .fallback_messages
            .get(index)
            .and_then(Option::as_ref)
            .zip(self.fallbacks[index].as_ref());
        match (value, fallback) {
            (None | Some(Value::Null), Some((messages, jinja))) => {
                values.push(jinja.clone());
                histories.push((index, messages.clone()));
            }
            (None, None) => problems.push(VarProblem::Missing {
                name: spec.name.clone(),
                expected: spec.ty,
            }),
            (Some(value), _) if !value.is_array() => problems.push(VarProblem::TypeMismatch {
                name: spec.name.clone(),
                expected: spec.ty,
                found: json_type_name(value),
            }),
            (Some(value), _) => match parse_messages(value) {
                Ok(messages) => {
                    values.push(messages_to_jinja(&messages));
                    histories.push((index, messages));
                }
                Err(found) => {
                    problems.extend(found.into_iter().map(|(index, reason)| {
                        VarProblem::InvalidMessage {
                            name: spec.name.clone(),
                            index,
                            reason,
                        }
                    }));
                }
            },
        }
    }

    /// Renders one body with the engine, within the budget: the engine stops when it runs
    /// out of fuel or at the first write past `max_bytes`.
    fn render_part(&self, body: &Body, ctx: &JinjaValue) -> Result<String, TemplateError> {
        let part = body.part;
        let render_error = |message: String| TemplateError::Render {
            template: self.display_name.clone(),
            part,
            message,
        };
        let template = self
            .env
            .get_template(part)
            .map_err(|err| render_error(engine_message(&err)))?;
        let source_len = body.source.len();
        let mut out = CappedOutput::new(source_len + source_len / 2, self.limits.max_bytes);
        if let Err(err) = template.render_captured_to(ctx, &mut out) {
            return Err(if out.over {
                self.over_budget(part, RenderBudget::MaxBytes(self.limits.max_bytes))
            } else if err.kind() == minijinja::ErrorKind::OutOfFuel {
                self.over_budget(part, RenderBudget::Fuel(self.limits.engine_fuel()))
            } else {
                render_error(engine_message(&err))
            });
        }
        String::from_utf8(out.buf).map_err(|err| render_error(err.to_string()))
    }
}

/// The order of `by_name`: by length, then by bytes, so most comparisons while searching
/// are one integer comparison.
pub(crate) fn name_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.len()
        .cmp(&b.len())
        .then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

/// The engine's message with the line inside the body, without its debug dump.
pub(crate) fn engine_message(err: &minijinja::Error) -> String {
    let mut message = err.detail().map_or_else(
        || err.kind().to_string(),
        |d| format!("{}: {d}", err.kind()),
    );
    if let Some(line) = err.line() {
        message.push_str(&format!(" (line {line} of the body)"));
    }
    let mut source = std::error::Error::source(err);
    while let Some(inner) = source {
        message.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    message
}

/// Converts a JSON value into an engine value, key order kept as the map gives it.
pub(crate) fn to_jinja(value: &Value) -> JinjaValue {
    match value {
        Value::Null => JinjaValue::from(()),
        Value::Bool(b) => JinjaValue::from(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                JinjaValue::from(i)
            } else if let Some(u) = n.as_u64() {
                JinjaValue::from(u)
            } else {
                JinjaValue::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => JinjaValue::from(s.as_str()),
        Value::Array(items) => JinjaValue::from(items.iter().map(to_jinja).collect::<Vec<_>>()),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| (JinjaValue::from(k.as_str()), to_jinja(v)))
            .collect(),
    }
}

/// A list of messages as an engine value: the list of their mappings, in the form a
/// `messages` variable is read in (tool calls as `{id, name, arguments}`).
pub(crate) fn messages_to_jinja(messages: &[Message]) -> JinjaValue {
    to_jinja(&serde_json::to_value(messages).unwrap_or(Value::Null))
}

/// The variables of one render: declared names (shared) and their values.
#[derive(Debug)]
struct RenderContext {
    names: Arc<[Arc<str>]>,
    values: Vec<JinjaValue>,
    /// The messages of each variable of type `messages`, by variable index.
    histories: Vec<(usize, Vec<Message>)>,
}

impl Object for RenderContext {
    fn get_value(self: &Arc<Self>, key: &JinjaValue) -> Option<JinjaValue> {
        self.get_value_by_str(key.as_str()?)
    }

    /// The engine looks variables up by name; without this it would wrap each name in a
    /// temporary (allocated) value first.
    fn get_value_by_str(self: &Arc<Self>, key: &str) -> Option<JinjaValue> {
        // A linear scan (lengths first) beats a binary search over a dozen names.
        let index = self.names.iter().position(|n| &**n == key)?;
        self.values.get(index).cloned()
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(
            self.names
                .iter()
                .map(|n| JinjaValue::from(Arc::clone(n)))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The string shortcut of `format_value` prints exactly what the default formatter
    /// prints, for every kind of value and inside `{% autoescape %}` blocks.
    #[test]
    fn formatter_matches_the_default() {
        let body = "{{ s }}|{{ i }}|{{ f }}|{{ b }}|{{ l }}|{{ m }}|{{ n }}|{{ e }}|{{ u }}|{{ s ~ i }}|\
                    {% autoescape true %}{{ s }}|{{ l }}{% endautoescape %}|{{ s | safe }}|\
                    {% set c %}{{ s }}!{% endset %}{{ c }}|{% filter upper %}{{ s }}{% endfilter %}";
        let ctx = minijinja::context! {
            s => "<a href='x'>{{ not code }}</a> & ünï",
            i => 42, f => 2.5, b => true, l => vec!["x", "<y>"],
            m => minijinja::context! { k => "v" }, n => (), e => "",
            u => "a much longer string that does not fit in a small inline value at all",
        };
        let render = |env: &Environment<'static>| env.render_str(body, ctx.clone()).unwrap();
        let ours = new_environment();
        let mut default = new_environment();
        default.set_formatter(escape_formatter);
        assert_eq!(render(&ours), render(&default));
        assert!(render(&ours).contains("&lt;a href=&#x27;x&#x27;&gt;"));
    }

    /// Our `trim` filter gives what the engine's builtin gives, errors included.
    #[test]
    fn trim_matches_the_builtin() {
        let mut builtin = new_environment();
        builtin.add_filter("trim", minijinja::filters::trim);
        let ours = new_environment();
        let ctx = minijinja::context! {
            s => "  \n\t padded text \r\n ", t => "tight", e => "", w => " \n ",
            i => 42, f => -2.5, b => false, n => (), l => vec![" a ", "b"],
            x => "xxhixx", u => " ünï 🎉 ",
        };
        for body in [
            "[{{ s | trim }}][{{ t | trim }}][{{ e | trim }}][{{ w | trim }}][{{ u | trim }}]",
            "[{{ i | trim }}][{{ f | trim }}][{{ b | trim }}][{{ n | trim }}][{{ l | trim }}]",
            "[{{ x | trim('x') }}][{{ x | trim('xh') }}][{{ s | trim(' ') }}][{{ t | trim('') }}]",
            "[{{ s | safe | trim }}][{% autoescape true %}{{ '<b> ' | trim }}{{ '<b> ' | safe | trim }}{% endautoescape %}]",
            "[{{ (s | trim) ~ '|' ~ (s | trim | length) }}][{{ s | trim is string }}]",
            "{{ missing | trim }}",
            "{{ s | trim(1) }}",
            "{{ s | trim('a', 'b') }}",
            "{{ s | trim(chars='x') }}",
        ] {
            let a = builtin
                .render_str(body, ctx.clone())
                .map_err(|e| e.to_string());
            let b = ours
                .render_str(body, ctx.clone())
                .map_err(|e| e.to_string());
            assert_eq!(a, b, "body: {body}");
            assert_eq!(
                a.is_ok(),
                !body.contains("missing") && !body.contains("'b')") && !body.contains("chars="),
                "body: {body}: {a:?}"
            );
        }
    }
}
