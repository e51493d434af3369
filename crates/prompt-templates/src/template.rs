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
use crate::simple::PlainBody;
use crate::spec::{
    Example, Metadata, ModelDefaults, ValidationRules, VarType, VariableSpec, json_type_name,
};

/// Name of the compiled system body inside a template's engine.
pub(crate) const SYSTEM: &str = "system_prompt";
/// Name of the compiled user body inside a template's engine.
pub(crate) const USER: &str = "user_prompt_template";

/// The two prompts a template renders to.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct RenderedPrompt {
    /// The system prompt.
    pub system: String,
    /// The user prompt.
    pub user: String,
}

/// A loaded template: its declarations and both bodies, compiled once.
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
    pub(crate) system_source: String,
    pub(crate) user_source: String,
    /// `agent/task vN (path)`, used in every error message.
    pub(crate) display_name: String,
    /// The declared names, shared with every render context.
    pub(crate) names: Arc<[Arc<str>]>,
    /// For each declared variable, its value when not given (`None` when required).
    pub(crate) fallbacks: Vec<Option<JinjaValue>>,
    /// Indices into `variables` in [`name_order`], to find a given variable's declaration
    /// by binary search.
    pub(crate) by_name: Vec<usize>,
    /// Owns both compiled bodies.
    pub(crate) env: Environment<'static>,
    /// The system body, when it is only text and variables (rendered without the engine).
    pub(crate) plain_system: Option<PlainBody>,
    /// The user body, when it is only text and variables (rendered without the engine).
    pub(crate) plain_user: Option<PlainBody>,
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

    /// The Jinja source of the system prompt.
    pub fn system_source(&self) -> &str {
        &self.system_source
    }

    /// The Jinja source of the user prompt.
    pub fn user_source(&self) -> &str {
        &self.user_source
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

    /// Renders both prompts.
    ///
    /// Fails with [`TemplateError::Variables`] listing every missing required, unknown and
    /// mistyped variable at once. Optional variables not given take their default, or `""`,
    /// `[]`, `{}` or `none` by type. Values are emitted verbatim, never re-read as Jinja.
    /// Fails with [`TemplateError::RenderBudget`] when a body runs past the template's
    /// [`limits`](Self::limits).
    pub fn render(&self, vars: &Vars) -> Result<RenderedPrompt, TemplateError> {
        let ctx = Arc::new(self.context(vars)?);
        let mut engine_ctx = None;
        Ok(RenderedPrompt {
            system: self.render_body(SYSTEM, &ctx, &mut engine_ctx)?,
            user: self.render_body(USER, &ctx, &mut engine_ctx)?,
        })
    }

    /// Renders both prompts, with up to `max_examples` few-shot examples ahead of the user
    /// prompt.
    ///
    /// Each example's `input` is rendered through the user prompt. The user prompt becomes:
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
        let mut rendered = self.render(vars)?;
        let count = max_examples.min(self.examples.len());
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
        rendered.user = user;
        Ok(rendered)
    }

    /// Renders the user prompt with an example's input.
    pub(crate) fn render_example_input(&self, example: &Example) -> Result<String, TemplateError> {
        let ctx = Arc::new(self.context(&example.input)?);
        self.render_body(USER, &ctx, &mut None)
    }

    /// Renders one body: a plain one directly, any other with the engine (the engine's
    /// context value is made once per render, when first needed).
    fn render_body(
        &self,
        part: &'static str,
        ctx: &Arc<RenderContext>,
        engine_ctx: &mut Option<JinjaValue>,
    ) -> Result<String, TemplateError> {
        let plain = if part == SYSTEM {
            &self.plain_system
        } else {
            &self.plain_user
        };
        match plain {
            Some(plain) => plain
                .render(&ctx.values, self.limits.max_bytes)
                .ok_or_else(|| {
                    self.over_budget(part, RenderBudget::MaxBytes(self.limits.max_bytes))
                }),
            None => {
                let value = engine_ctx.get_or_insert_with(|| {
                    JinjaValue::from_dyn_object(DynObject::new(Arc::clone(ctx)))
                });
                self.render_part(part, value)
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
        for ((spec, fallback), value) in self.variables.iter().zip(&self.fallbacks).zip(given) {
            let value = *value;
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
        })
    }

    /// Renders one body with the engine, within the budget: the engine stops when it runs
    /// out of fuel or at the first write past `max_bytes`.
    fn render_part(&self, part: &'static str, ctx: &JinjaValue) -> Result<String, TemplateError> {
        let render_error = |message: String| TemplateError::Render {
            template: self.display_name.clone(),
            part,
            message,
        };
        let template = self
            .env
            .get_template(part)
            .map_err(|err| render_error(engine_message(&err)))?;
        let source_len = if part == SYSTEM {
            self.system_source.len()
        } else {
            self.user_source.len()
        };
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

/// The variables of one render: declared names (shared) and their values.
#[derive(Debug)]
struct RenderContext {
    names: Arc<[Arc<str>]>,
    values: Vec<JinjaValue>,
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
