//! Reading one template file: YAML with positions, checks, compilation, diagnostics.

#[cfg(test)]
use std::collections::BTreeSet;
use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_saphyr::Spanned;
use sha2::{Digest, Sha256};

use crate::Vars;
use crate::limits::RenderLimits;
use crate::lint::{Diagnostic, Severity};
use crate::messages::{
    Message, Role, ToolChoice, ToolDefinition, is_tool_name, parse_messages, schema_problems,
};
use crate::simple::PlainBody;
use crate::spec::{
    Example, Metadata, ModelDefaults, ValidationRules, VarType, VariableSpec, json_type_name,
};
use crate::template::{
    Body, Entry, MessageEntry, PromptTemplate, SYSTEM, USER, message_part, messages_to_jinja,
    name_order, new_environment, to_jinja,
};

/// The outcome of reading one file: the template when it has no error, and every diagnostic.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub(crate) template: Option<PromptTemplate>,
    pub(crate) diagnostics: Vec<Diagnostic>,
    /// The agent/task/version the content claims, with the position of `version`.
    pub(crate) claim: Option<Claim>,
}

/// What a file says it is.
#[derive(Debug, Clone)]
pub(crate) struct Claim {
    pub(crate) agent: String,
    pub(crate) task: String,
    pub(crate) version: u32,
    pub(crate) line: usize,
    pub(crate) col: usize,
}

#[derive(Deserialize)]
struct RawTemplate {
    #[serde(default)]
    version: Field,
    #[serde(default)]
    agent: Field,
    #[serde(default)]
    task: Field,
    #[serde(default)]
    system_prompt: Field,
    #[serde(default)]
    user_prompt_template: Field,
    variables: Option<Spanned<RawVariables>>,
    validation: Option<Spanned<Value>>,
    examples: Option<Spanned<Vec<Spanned<Value>>>>,
    metadata: Option<Spanned<Value>>,
    model: Option<Spanned<Value>>,
    #[serde(default)]
    messages: ListField,
    #[serde(default)]
    tools: ListField,
    tool_choice: Option<Spanned<Value>>,
}

/// A list field (`messages`, `tools`): `None` when the key is absent, `Some` with whatever
/// it holds when present (also when empty).
#[derive(Default)]
struct ListField(Option<Spanned<RawList>>);

impl<'de> Deserialize<'de> for ListField {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Spanned::<RawList>::deserialize(deserializer).map(|v| ListField(Some(v)))
    }
}

/// A list of mappings, each entry with its position; or, for messages about a value of
/// another kind, its type name.
enum RawList {
    Items(Vec<Spanned<RawItem>>),
    Other(&'static str),
}

/// A mapping in file order, with the position of each key and value; or, for messages
/// about a value of another kind, its type name.
enum RawItem {
    Map(Vec<(Spanned<String>, Spanned<Value>)>),
    Other(&'static str),
}

/// Reads any other kind of YAML value as its type name (the value itself is skipped).
macro_rules! visit_others {
    ($ty:ident) => {
        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<$ty, E> {
            Ok($ty::Other("boolean"))
        }
        fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<$ty, E> {
            Ok($ty::Other("integer"))
        }
        fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<$ty, E> {
            Ok($ty::Other("integer"))
        }
        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<$ty, E> {
            Ok($ty::Other("number"))
        }
        fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<$ty, E> {
            Ok($ty::Other("string"))
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<$ty, E> {
            Ok($ty::Other("null"))
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<$ty, E> {
            Ok($ty::Other("null"))
        }
    };
}

impl<'de> Deserialize<'de> for RawList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListVisitor;
        impl<'de> Visitor<'de> for ListVisitor {
            type Value = RawList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list")
            }
            visit_others!(RawList);
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawList, A::Error> {
                let mut out = Vec::new();
                while let Some(item) = seq.next_element::<Spanned<RawItem>>()? {
                    out.push(item);
                }
                Ok(RawList::Items(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawList, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(RawList::Other("object"))
            }
        }
        deserializer.deserialize_any(ListVisitor)
    }
}

impl<'de> Deserialize<'de> for RawItem {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ItemVisitor;
        impl<'de> Visitor<'de> for ItemVisitor {
            type Value = RawItem;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping")
            }
            visit_others!(RawItem);
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawItem, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(RawItem::Other("list"))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawItem, A::Error> {
                let mut out = Vec::new();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    let value = map.next_value::<Spanned<Value>>()?;
                    out.push((key, value));
                }
                Ok(RawItem::Map(out))
            }
        }
        deserializer.deserialize_any(ItemVisitor)
    }
}

/// A required field: `None` when the key is absent, `Some(null)` when present but empty.
#[derive(Default)]
struct Field(Option<Spanned<Value>>);

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Spanned::<Value>::deserialize(deserializer).map(|v| Field(Some(v)))
    }
}

/// `variables:` in file order, with the position of each name.
struct RawVariables(Vec<(Spanned<String>, Spanned<Value>)>);

impl<'de> Deserialize<'de> for RawVariables {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor;
        impl<'de> Visitor<'de> for MapVisitor {
            type Value = RawVariables;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map from variable names to declarations")
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<RawVariables, E> {
                Ok(RawVariables(Vec::new()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawVariables, A::Error> {
                let mut out = Vec::new();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    let value = map.next_value::<Spanned<Value>>()?;
                    out.push((key, value));
                }
                Ok(RawVariables(out))
            }
        }
        deserializer.deserialize_map(MapVisitor)
    }
}

/// A 1-based position in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pos {
    pub(crate) line: usize,
    pub(crate) col: usize,
}

impl Pos {
    pub(crate) const START: Pos = Pos { line: 1, col: 1 };

    /// A position from a 1-based line and column; line 0 (unknown) is the start of the file.
    pub(crate) fn new(line: usize, col: usize) -> Pos {
        if line == 0 {
            Pos::START
        } else {
            Pos {
                line,
                col: col.max(1),
            }
        }
    }

    fn of<T>(spanned: &Sp<T>) -> Pos {
        spanned.pos
    }

    fn of_saphyr<T>(spanned: &Spanned<T>) -> Pos {
        let line = usize::try_from(spanned.referenced.line()).unwrap_or(0);
        let col = usize::try_from(spanned.referenced.column()).unwrap_or(0);
        Pos::new(line, col)
    }
}

/// `variables:` in file order: each name and its declaration, with their positions.
pub(crate) type Declarations = Vec<(Sp<String>, Sp<Value>)>;

/// A value with the position of its YAML node.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sp<T> {
    pub(crate) value: T,
    pub(crate) pos: Pos,
}

impl<T> Sp<T> {
    fn from_saphyr(spanned: Spanned<T>) -> Self {
        Sp {
            pos: Pos::of_saphyr(&spanned),
            value: spanned.value,
        }
    }
}

/// The top-level fields of a template file, each with its position. A required field is
/// `None` when its key is absent and `Some(null)` when present but empty.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Doc {
    pub(crate) version: Option<Sp<Value>>,
    pub(crate) agent: Option<Sp<Value>>,
    pub(crate) task: Option<Sp<Value>>,
    pub(crate) system_prompt: Option<Sp<Value>>,
    pub(crate) user_prompt_template: Option<Sp<Value>>,
    /// `variables:` in file order, with the position of each name.
    pub(crate) variables: Option<Sp<Declarations>>,
    pub(crate) validation: Option<Sp<Value>>,
    pub(crate) examples: Option<Sp<Vec<Sp<Value>>>>,
    pub(crate) metadata: Option<Sp<Value>>,
    pub(crate) model: Option<Sp<Value>>,
    /// `messages:`, each entry with its keys and values and their positions.
    pub(crate) messages: Option<Sp<Items>>,
    /// `tools:`, each entry with its keys and values and their positions.
    pub(crate) tools: Option<Sp<Items>>,
    pub(crate) tool_choice: Option<Sp<Value>>,
}

/// A list of mappings (`messages`, `tools`), or the type name of another kind of value.
#[derive(Debug, PartialEq)]
pub(crate) enum Items {
    List(Vec<Sp<Item>>),
    Other(&'static str),
}

/// A mapping in file order with the positions of its keys and values, or the type name of
/// another kind of value.
#[derive(Debug, PartialEq)]
pub(crate) enum Item {
    Map(Vec<(Sp<String>, Sp<Value>)>),
    Other(&'static str),
}

impl From<Spanned<RawList>> for Sp<Items> {
    fn from(list: Spanned<RawList>) -> Self {
        Sp {
            pos: Pos::of_saphyr(&list),
            value: match list.value {
                RawList::Items(items) => Items::List(
                    items
                        .into_iter()
                        .map(|item| Sp {
                            pos: Pos::of_saphyr(&item),
                            value: match item.value {
                                RawItem::Map(entries) => Item::Map(
                                    entries
                                        .into_iter()
                                        .map(|(k, v)| (Sp::from_saphyr(k), Sp::from_saphyr(v)))
                                        .collect(),
                                ),
                                RawItem::Other(kind) => Item::Other(kind),
                            },
                        })
                        .collect(),
                ),
                RawList::Other(kind) => Items::Other(kind),
            },
        }
    }
}

impl From<RawTemplate> for Doc {
    fn from(raw: RawTemplate) -> Self {
        let value = |v: Option<Spanned<Value>>| v.map(Sp::from_saphyr);
        Doc {
            version: value(raw.version.0),
            agent: value(raw.agent.0),
            task: value(raw.task.0),
            system_prompt: value(raw.system_prompt.0),
            user_prompt_template: value(raw.user_prompt_template.0),
            variables: raw.variables.map(|v| Sp {
                pos: Pos::of_saphyr(&v),
                value: v
                    .value
                    .0
                    .into_iter()
                    .map(|(name, decl)| (Sp::from_saphyr(name), Sp::from_saphyr(decl)))
                    .collect(),
            }),
            validation: value(raw.validation),
            examples: raw.examples.map(|e| Sp {
                pos: Pos::of_saphyr(&e),
                value: e.value.into_iter().map(Sp::from_saphyr).collect(),
            }),
            metadata: value(raw.metadata),
            model: value(raw.model),
            messages: raw.messages.0.map(Sp::from),
            tools: raw.tools.0.map(Sp::from),
            tool_choice: value(raw.tool_choice),
        }
    }
}

/// Reads the YAML of a template file: the fast reader for the usual shape of a file, and
/// serde-saphyr for everything else (anchors, tags, unusual scalars, errors), so both give
/// the same result and every error comes from serde-saphyr with its position.
pub(crate) fn read_doc(source: &str) -> Result<Doc, serde_saphyr::Error> {
    if let Some(doc) = crate::fast_yaml::read(source) {
        return Ok(doc);
    }
    read_doc_saphyr(source)
}

/// Reads the YAML of a template file with serde-saphyr alone.
pub(crate) fn read_doc_saphyr(source: &str) -> Result<Doc, serde_saphyr::Error> {
    serde_saphyr::from_str::<RawTemplate>(source).map(Doc::from)
}

struct Ctx<'a> {
    path: &'a Path,
    source: &'a str,
    diagnostics: Vec<Diagnostic>,
}

impl Ctx<'_> {
    fn push(&mut self, severity: Severity, pos: Pos, message: impl Into<String>) {
        self.diagnostics.push(Diagnostic {
            path: self.path.to_path_buf(),
            line: pos.line,
            col: pos.col,
            severity,
            message: message.into(),
        });
    }

    fn error(&mut self, pos: Pos, message: impl Into<String>) {
        self.push(Severity::Error, pos, message);
    }

    fn warning(&mut self, pos: Pos, message: impl Into<String>) {
        self.push(Severity::Warning, pos, message);
    }

    fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    }
}

/// Whether `name` is a plain identifier as agent and task names must be.
pub(crate) fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Whether `name` is a Jinja identifier, as variable names must be.
fn is_identifier(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Splits `<task>_v<N>.yaml` into task and N (N written without leading zeros, N >= 1).
pub(crate) fn split_file_name(file_name: &str) -> Option<(&str, u32)> {
    let stem = file_name.strip_suffix(".yaml")?;
    let (task, n) = stem.rsplit_once("_v")?;
    Some((task, parse_version_number(n)?)).filter(|(task, _)| is_plain_name(task))
}

/// Parses `N` (digits, no leading zero, at least 1).
pub(crate) fn parse_version_number(n: &str) -> Option<u32> {
    if n.is_empty() || n.starts_with('0') || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

/// SHA-256 of `bytes` as 64 lowercase hex characters.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// How thoroughly [`parse_file`] checks a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Checks {
    /// What loading needs: YAML, fields, declarations, file name, Jinja syntax.
    Load,
    /// Everything: also variables used but not declared, example inputs, and warnings.
    Lint,
}

/// Reads one template file. `path` is used for messages and to check the folder and file name.
pub(crate) fn parse_file(path: &Path, bytes: &[u8], checks: Checks) -> Parsed {
    let mut parsed = Parsed {
        template: None,
        diagnostics: Vec::new(),
        claim: None,
    };
    let source = match std::str::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => {
            let valid = &bytes[..e.valid_up_to()];
            let valid = std::str::from_utf8(valid).unwrap_or_default();
            let pos = offset_pos(valid, valid.len());
            parsed.diagnostics.push(Diagnostic {
                path: path.to_path_buf(),
                line: pos.line,
                col: pos.col,
                severity: Severity::Error,
                message: "file is not valid UTF-8".to_owned(),
            });
            return parsed;
        }
    };
    let mut ctx = Ctx {
        path,
        source,
        diagnostics: Vec::new(),
    };
    let (template, claim) = check(&mut ctx, bytes, checks);
    ctx.diagnostics.sort();
    parsed.template = if ctx.has_errors() { None } else { template };
    parsed.claim = claim;
    parsed.diagnostics = ctx.diagnostics;
    parsed
}

fn check(
    ctx: &mut Ctx<'_>,
    bytes: &[u8],
    checks: Checks,
) -> (Option<PromptTemplate>, Option<Claim>) {
    let raw = match read_doc(ctx.source) {
        Ok(raw) => raw,
        Err(err) => {
            let pos = err
                .location()
                .and_then(|l| {
                    let line = usize::try_from(l.line()).ok()?;
                    let col = usize::try_from(l.column()).ok()?;
                    (line > 0).then_some(Pos {
                        line,
                        col: col.max(1),
                    })
                })
                .unwrap_or(Pos::START);
            ctx.error(pos, format!("invalid YAML: {}", yaml_message(&err)));
            return (None, None);
        }
    };

    // Identity: version, agent, task, and the file name and folder they must agree with.
    let version = raw.version.as_ref().and_then(|v| {
        let pos = Pos::of(v);
        match v.value.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) if n >= 1 => Some((n, pos)),
            _ if v.value.is_null() => {
                ctx.error(pos, "required field `version` is empty");
                None
            }
            _ => {
                ctx.error(
                    pos,
                    format!(
                        "`version` must be a whole number from 1, got {}",
                        short(&v.value)
                    ),
                );
                None
            }
        }
    });
    if raw.version.is_none() {
        ctx.error(Pos::START, "missing required field `version`");
    }
    let agent = name_field(ctx, "agent", raw.agent.as_ref());
    let task = name_field(ctx, "task", raw.task.as_ref());
    check_location(ctx, agent.as_ref(), task.as_ref(), version);

    // Bodies: `system_prompt` and `user_prompt_template`, or a `messages:` list.
    let (system, user) = if let Some(messages) = &raw.messages {
        for (field, value) in [
            (SYSTEM, &raw.system_prompt),
            (USER, &raw.user_prompt_template),
        ] {
            if let Some(value) = value {
                ctx.error(
                    Pos::of(value),
                    format!(
                        "`{field}` cannot be used together with `messages` (line {}): a template has either `system_prompt` and `user_prompt_template`, or `messages`",
                        key_line(ctx.source, "messages").unwrap_or(messages.pos.line)
                    ),
                );
            }
        }
        (None, None)
    } else {
        let neither = raw.system_prompt.is_none() && raw.user_prompt_template.is_none();
        let hint = if neither {
            " (or a `messages` list)"
        } else {
            ""
        };
        (
            body_field(ctx, SYSTEM, raw.system_prompt.as_ref(), hint),
            body_field(ctx, USER, raw.user_prompt_template.as_ref(), hint),
        )
    };

    // Declarations.
    let mut broken = Vec::new();
    let variables = raw
        .variables
        .as_ref()
        .map(|v| variables(ctx, v, &mut broken))
        .unwrap_or_default();
    let validation: Option<ValidationRules> = section(ctx, "validation", raw.validation.as_ref());
    if let (Some(v), Some(spanned)) = (&validation, &raw.validation)
        && let (Some(min), Some(max)) = (v.min_length, v.max_length)
        && min > max
    {
        ctx.error(
            Pos::of(spanned),
            format!("validation: min_length {min} is greater than max_length {max}"),
        );
    }
    let metadata: Option<Metadata> = section(ctx, "metadata", raw.metadata.as_ref());
    let model: Option<ModelDefaults> = section(ctx, "model", raw.model.as_ref());
    let examples = raw
        .examples
        .as_ref()
        .map(|e| examples(ctx, e))
        .unwrap_or_default();
    let entries = raw
        .messages
        .as_ref()
        .map(|m| message_entries(ctx, m, &variables, &broken));
    if let (Some(entries), Some(raw_examples)) = (&entries, &raw.examples)
        && entries.complete
        && !examples.is_empty()
        && !entries.list.iter().any(|e| {
            matches!(
                e,
                ParsedEntry::Content {
                    role: Role::User,
                    ..
                }
            )
        })
    {
        ctx.error(
            Pos::of(raw_examples),
            "`examples` need a `user` entry in `messages`: its body renders each example's `input`",
        );
    }
    let tools = raw
        .tools
        .as_ref()
        .map(|t| tools(ctx, t))
        .unwrap_or_default();
    let tool_choice = raw
        .tool_choice
        .as_ref()
        .and_then(|c| tool_choice(ctx, c, &tools));

    // Compile every body and compare the variables they use with the declared ones.
    let sources: Vec<(&'static str, &String, BodyOrigin)> = match &entries {
        Some(entries) => entries
            .list
            .iter()
            .filter_map(|e| match e {
                ParsedEntry::Content {
                    part, text, origin, ..
                } => Some((*part, text, *origin)),
                ParsedEntry::History { .. } => None,
            })
            .collect(),
        None => [(SYSTEM, &system), (USER, &user)]
            .into_iter()
            .filter_map(|(part, body)| body.as_ref().map(|(text, origin)| (part, text, *origin)))
            .collect(),
    };
    let expected_bodies = match &entries {
        Some(entries) if entries.complete => sources.len(),
        Some(_) => usize::MAX,
        None => 2,
    };
    let resolvable = if entries.is_some() {
        "only the content bodies of the same file's `messages` entries (`messages[0]`, `messages[1]`, ...) can be included or imported"
    } else {
        "only `system_prompt` and `user_prompt_template` (the bodies of the same file) can be included or imported"
    };
    let mut env = new_environment();
    let globals: HashSet<String> = if checks == Checks::Lint {
        env.globals().map(|(name, _)| name.to_owned()).collect()
    } else {
        HashSet::new()
    };
    let mut used: HashSet<String> = HashSet::new();
    if let Some(entries) = &entries {
        for entry in &entries.list {
            if let ParsedEntry::History { var, .. } = entry {
                used.insert(variables[*var].0.name.clone());
            }
        }
    }
    let mut compiled_bodies = 0;
    for &(part, text, origin) in &sources {
        if let Err(err) = env.add_template_owned(part, text.clone()) {
            let pos = err.line().map_or(origin.start(), |line| {
                let col = err.range().map_or(1, |r| col_at(text, r.start));
                origin.map(ctx.source, text, line, col)
            });
            ctx.error(
                pos,
                format!("Jinja syntax error in `{part}`: {}", syntax_message(&err)),
            );
            continue;
        }
        let Ok(compiled) = env.get_template(part) else {
            continue;
        };
        compiled_bodies += 1;
        if checks == Checks::Load {
            continue;
        }
        let mut names: Vec<String> = compiled
            .undeclared_variables(false)
            .into_iter()
            .filter(|n| !globals.contains(n))
            .collect();
        names.sort();
        for name in names {
            if !variables.iter().any(|(v, _)| v.name == name) {
                let pos = first_use(text, &name).map_or(origin.start(), |off| {
                    let p = offset_pos(text, off);
                    origin.map(ctx.source, text, p.line, p.col)
                });
                ctx.error(
                    pos,
                    format!(
                        "variable `{name}` is used in `{part}` but not declared in `variables`"
                    ),
                );
            }
            used.insert(name);
        }
        // The Python original's str.format placeholders, which Jinja prints literally.
        for (off, name) in brace_placeholders(text) {
            if variables.iter().any(|(v, _)| v.name == name) {
                let p = offset_pos(text, off);
                let pos = origin.map(ctx.source, text, p.line, p.col);
                ctx.warning(pos, format!("`{{{name}}}` in `{part}` is printed literally: Jinja needs `{{{{ {name} }}}}`"));
            }
        }
    }
    // Templates named by `include`, `import`, `from ... import` and `extends` must resolve
    // exactly as they do at render time: only to the bodies compiled in this engine.
    if checks == Checks::Lint {
        for &(part, text, origin) in &sources {
            if env.get_template(part).is_err() {
                continue;
            }
            for problem in
                template_ref_problems(text, |name| env.get_template(name).is_ok(), resolvable)
            {
                let p = offset_pos(text, problem.at);
                let pos = origin.map(ctx.source, text, p.line, p.col);
                let message = format!("in `{part}`: {}", problem.message);
                if problem.error {
                    ctx.error(pos, message);
                } else {
                    ctx.warning(pos, message);
                }
            }
        }
    }
    if compiled_bodies == expected_bodies && checks == Checks::Lint {
        for (spec, pos) in &variables {
            if !used.contains(&spec.name) {
                ctx.warning(
                    *pos,
                    if entries.is_some() {
                        format!(
                            "variable `{}` is declared but no body or `history` entry uses it",
                            spec.name
                        )
                    } else {
                        format!("variable `{}` is declared but no body uses it", spec.name)
                    },
                );
            }
        }
    }

    let claim = match (&agent, &task, version) {
        (Some((agent, _)), Some((task, _)), Some((version, pos))) => Some(Claim {
            agent: agent.clone(),
            task: task.clone(),
            version,
            line: pos.line,
            col: pos.col,
        }),
        _ => None,
    };
    if ctx.has_errors() {
        return (None, claim);
    }
    let (Some((agent, _)), Some((task, _)), Some((version, _))) = (agent, task, version) else {
        return (None, claim);
    };

    let display_name = format!("{agent}/{task} v{version} ({})", ctx.path.display());
    let (example_specs, example_pos): (Vec<Example>, Vec<Pos>) = examples.into_iter().unzip();
    let (specs, _): (Vec<VariableSpec>, Vec<Pos>) = variables.into_iter().unzip();
    let names: Arc<[Arc<str>]> = specs.iter().map(|s| Arc::from(s.name.as_str())).collect();

    // The bodies, and the `messages:` list over them.
    let mut bodies = Vec::new();
    let mut compiled_entries = Vec::new();
    let mut message_entries = Vec::new();
    let (mut system_body, mut user_body) = (None, None);
    match entries {
        Some(entries) => {
            for entry in entries.list {
                match entry {
                    ParsedEntry::Content {
                        role, part, text, ..
                    } => {
                        let body = bodies.len();
                        if role == Role::System && system_body.is_none() {
                            system_body = Some(body);
                        }
                        if role == Role::User {
                            user_body = Some(body);
                        }
                        compiled_entries.push(Entry::Content { role, body });
                        message_entries.push(MessageEntry::Content {
                            role,
                            source: text.clone(),
                        });
                        bodies.push(Body {
                            part,
                            plain: PlainBody::parse(&text, &names),
                            source: text,
                        });
                    }
                    ParsedEntry::History { var, .. } => {
                        compiled_entries.push(Entry::History { var });
                        message_entries.push(MessageEntry::History {
                            variable: specs[var].name.clone(),
                        });
                    }
                }
            }
        }
        None => {
            let (Some((system, _)), Some((user, _))) = (system, user) else {
                return (None, claim);
            };
            for (part, source) in [(SYSTEM, system), (USER, user)] {
                bodies.push(Body {
                    part,
                    plain: PlainBody::parse(&source, &names),
                    source,
                });
            }
            (system_body, user_body) = (Some(0), Some(1));
        }
    }
    let fallback_messages: Vec<Option<Vec<Message>>> =
        if specs.iter().any(|s| s.ty == VarType::Messages) {
            specs
                .iter()
                .map(|s| {
                    (s.ty == VarType::Messages && !s.required)
                        .then(|| parse_messages(&s.fallback_value()).unwrap_or_default())
                })
                .collect()
        } else {
            Vec::new()
        };
    let mut template = PromptTemplate {
        bodies,
        entries: compiled_entries,
        message_entries,
        system_body,
        user_body,
        tools,
        tool_choice,
        names,
        by_name: {
            let mut order: Vec<usize> = (0..specs.len()).collect();
            order.sort_by(|a, b| name_order(&specs[*a].name, &specs[*b].name));
            order
        },
        fallbacks: specs
            .iter()
            .enumerate()
            .map(|(i, s)| {
                (!s.required).then(|| match fallback_messages.get(i).and_then(Option::as_ref) {
                    Some(messages) => messages_to_jinja(messages),
                    None => to_jinja(&s.fallback_value()),
                })
            })
            .collect(),
        fallback_messages,
        agent,
        task,
        version,
        path: ctx.path.to_path_buf(),
        content_hash: sha256_hex(bytes),
        metadata: metadata.unwrap_or_default(),
        model,
        validation: validation.unwrap_or_default(),
        variables: specs,
        examples: example_specs,
        display_name,
        env,
        limits: RenderLimits::default(),
    };
    template.set_limits(RenderLimits::default());
    // Every example's input must render the user prompt.
    let example_pos = if checks == Checks::Lint {
        example_pos
    } else {
        Vec::new()
    };
    for (i, (example, pos)) in template.examples.iter().zip(&example_pos).enumerate() {
        if let Err(err) = template.render_example_input(example) {
            let message = err.to_string();
            let message = message
                .strip_prefix(&format!("template {}: ", template.display_name))
                .unwrap_or(&message);
            ctx.error(
                *pos,
                format!("example {} input does not render: {message}", i + 1),
            );
        }
    }
    (Some(template), claim)
}

/// Shortens serde-saphyr's message to its first line (the position is reported separately).
fn yaml_message(err: &serde_saphyr::Error) -> String {
    let text = err.to_string();
    let mut first = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    first = first.strip_prefix("error: ").unwrap_or(first);
    if let Some(rest) = first.strip_prefix("line ")
        && let Some((position, message)) = rest.split_once(": ")
        && position.contains("column")
    {
        first = message;
    }
    first.to_owned()
}

/// Reads an optional section (`validation`, `metadata`, `model`) into its type; an error
/// names the section and points at it.
fn section<T: serde::de::DeserializeOwned>(
    ctx: &mut Ctx<'_>,
    name: &str,
    value: Option<&Sp<Value>>,
) -> Option<T> {
    let value = value?;
    if value.value.is_null() {
        return serde_json::from_value(Value::Object(Vars::new())).ok();
    }
    match serde_json::from_value(value.value.clone()) {
        Ok(parsed) => Some(parsed),
        Err(err) => {
            ctx.error(Pos::of(value), format!("invalid `{name}`: {err}"));
            None
        }
    }
}

/// The engine's syntax message without its position suffix.
fn syntax_message(err: &minijinja::Error) -> String {
    err.detail()
        .map_or_else(|| err.kind().to_string(), ToOwned::to_owned)
}

/// A JSON value shown briefly in messages.
fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 40 {
        format!("{}...", text.chars().take(40).collect::<String>())
    } else {
        text
    }
}

fn name_field(ctx: &mut Ctx<'_>, field: &str, value: Option<&Sp<Value>>) -> Option<(String, Pos)> {
    let Some(value) = value else {
        ctx.error(Pos::START, format!("missing required field `{field}`"));
        return None;
    };
    let pos = Pos::of(value);
    match &value.value {
        Value::Null => ctx.error(pos, format!("required field `{field}` is empty")),
        Value::String(s) if s.trim().is_empty() => {
            ctx.error(pos, format!("required field `{field}` is empty"));
        }
        Value::String(s) if !is_plain_name(s) => ctx.error(
            pos,
            format!("`{field}` {s:?} must be a plain name of letters, digits, `_` and `-`"),
        ),
        Value::String(s) => return Some((s.clone(), pos)),
        other => ctx.error(
            pos,
            format!("`{field}` must be a string, got {}", json_type_name(other)),
        ),
    }
    None
}

fn check_location(
    ctx: &mut Ctx<'_>,
    agent: Option<&(String, Pos)>,
    task: Option<&(String, Pos)>,
    version: Option<(u32, Pos)>,
) {
    let path = ctx.path;
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let folder = path
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("");
    if let Some((agent, pos)) = agent
        && folder != agent
    {
        ctx.error(*pos, format!("agent `{agent}` does not match the folder `{folder}`: the file belongs in `{agent}/`"));
    }
    let Some((file_task, file_version)) = split_file_name(file_name) else {
        ctx.error(
            Pos::START,
            format!(
                "file name `{file_name}` is not `<task>_v<N>.yaml` (N from 1, no leading zeros)"
            ),
        );
        return;
    };
    if let Some((task, pos)) = task
        && task != file_task
    {
        ctx.error(
            *pos,
            format!(
                "task `{task}` does not match the file name `{file_name}` (task `{file_task}`)"
            ),
        );
    }
    if let Some((version, pos)) = version
        && version != file_version
    {
        ctx.error(
            pos,
            format!(
                "version {version} does not match the file name `{file_name}` (_v{file_version})"
            ),
        );
    }
}

/// Where a body's text starts in the file, to report positions inside it.
#[derive(Debug, Clone, Copy)]
struct BodyOrigin {
    /// The position of the scalar (for a block scalar, of its `|` or `>`).
    pos: Pos,
    block: bool,
    quoted: bool,
}

impl BodyOrigin {
    fn new(source: &str, pos: Pos) -> Self {
        let first = source
            .lines()
            .nth(pos.line - 1)
            .and_then(|l| l.chars().nth(pos.col - 1));
        Self {
            pos,
            block: matches!(first, Some('|' | '>')),
            quoted: matches!(first, Some('"' | '\'')),
        }
    }

    fn start(&self) -> Pos {
        if self.block {
            Pos {
                line: self.pos.line + 1,
                col: 1,
            }
        } else {
            self.pos
        }
    }

    /// Maps a 1-based line and column inside the body to the file.
    fn map(&self, source: &str, body: &str, line: usize, col: usize) -> Pos {
        if self.block {
            let file_line = self.pos.line + line;
            let indent = match (
                source.lines().nth(file_line - 1),
                body.lines().nth(line - 1),
            ) {
                (Some(f), Some(b)) => leading_ws(f).saturating_sub(leading_ws(b)),
                _ => 0,
            };
            Pos {
                line: file_line,
                col: indent + col,
            }
        } else if line == 1 {
            Pos {
                line: self.pos.line,
                col: self.pos.col + usize::from(self.quoted) + col - 1,
            }
        } else {
            // A block scalar whose position is its first line of text: its lines follow one
            // by one, each indented by the block's indentation.
            let file_line = self.pos.line + line - 1;
            let indent = match (
                source.lines().nth(file_line - 1),
                body.lines().nth(line - 1),
            ) {
                (Some(f), Some(b)) => leading_ws(f).saturating_sub(leading_ws(b)),
                _ => 0,
            };
            Pos {
                line: file_line,
                col: indent + col,
            }
        }
    }
}

/// The line of a top-level key written in block style (`key:` at the start of a line).
fn key_line(source: &str, key: &str) -> Option<usize> {
    source
        .lines()
        .position(|line| {
            [
                format!("{key}:"),
                format!("\"{key}\":"),
                format!("'{key}':"),
            ]
            .iter()
            .any(|k| line.starts_with(k.as_str()))
        })
        .map(|i| i + 1)
}

fn leading_ws(line: &str) -> usize {
    line.chars().take_while(|c| *c == ' ' || *c == '\t').count()
}

/// A required body; `hint` is added to the message when it is missing.
fn body_field(
    ctx: &mut Ctx<'_>,
    field: &str,
    value: Option<&Sp<Value>>,
    hint: &str,
) -> Option<(String, BodyOrigin)> {
    let Some(value) = value else {
        ctx.error(
            Pos::START,
            format!("missing required field `{field}`{hint}"),
        );
        return None;
    };
    let pos = Pos::of(value);
    match &value.value {
        Value::String(s) if !s.trim().is_empty() => {
            Some((s.clone(), BodyOrigin::new(ctx.source, pos)))
        }
        Value::String(_) | Value::Null => {
            ctx.error(pos, format!("required field `{field}` is empty"));
            None
        }
        other => {
            ctx.error(
                pos,
                format!("`{field}` must be a string, got {}", json_type_name(other)),
            );
            None
        }
    }
}

/// The declared variables, in file order; a declaration with errors is kept as a required
/// variable of type `any` so that its uses are not reported as undeclared, and its name is
/// added to `broken`.
fn variables(
    ctx: &mut Ctx<'_>,
    raw: &Sp<Declarations>,
    broken: &mut Vec<String>,
) -> Vec<(VariableSpec, Pos)> {
    let mut out: Vec<(VariableSpec, Pos)> = Vec::new();
    for (name, decl) in &raw.value {
        let pos = Pos::of(name);
        let name = name.value.clone();
        if !is_identifier(&name) {
            ctx.error(pos, format!("variable name `{name}` is not an identifier (letters, digits and `_`, not starting with a digit)"));
            continue;
        }
        if out.iter().any(|(v, _)| v.name == name) {
            ctx.error(pos, format!("variable `{name}` is declared twice"));
            continue;
        }
        let spec = variable(ctx, &name, decl).unwrap_or_else(|| {
            broken.push(name.clone());
            VariableSpec {
                name,
                ty: VarType::Any,
                description: String::new(),
                required: true,
                default: None,
            }
        });
        out.push((spec, pos));
    }
    out
}

fn variable(ctx: &mut Ctx<'_>, name: &str, decl: &Sp<Value>) -> Option<VariableSpec> {
    let pos = Pos::of(decl);
    match &decl.value {
        Value::String(short_form) => {
            let (ty, description) = short_form
                .split_once('-')
                .map_or((short_form.as_str(), ""), |(t, d)| (t, d.trim()));
            match ty.parse::<VarType>() {
                Ok(ty) => Some(VariableSpec {
                    name: name.to_owned(),
                    ty,
                    description: description.to_owned(),
                    required: true,
                    default: None,
                }),
                Err(e) => {
                    ctx.error(
                        pos,
                        format!("variable `{name}`: {e} (short form: \"<type> - <description>\")"),
                    );
                    None
                }
            }
        }
        Value::Object(map) => {
            let mut ok = true;
            for key in map.keys() {
                if !matches!(
                    key.as_str(),
                    "type" | "description" | "required" | "default"
                ) {
                    ctx.error(pos, format!("variable `{name}`: unknown key `{key}` (expected type, description, required, default)"));
                    ok = false;
                }
            }
            let ty = match map.get("type") {
                Some(Value::String(t)) => match t.parse::<VarType>() {
                    Ok(ty) => Some(ty),
                    Err(e) => {
                        ctx.error(pos, format!("variable `{name}`: {e}"));
                        None
                    }
                },
                Some(other) => {
                    ctx.error(
                        pos,
                        format!(
                            "variable `{name}`: `type` must be a string, got {}",
                            json_type_name(other)
                        ),
                    );
                    None
                }
                None => {
                    ctx.error(pos, format!("variable `{name}`: missing `type`"));
                    None
                }
            };
            let description = match map.get("description") {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(d)) => d.trim().to_owned(),
                Some(other) => {
                    ctx.error(
                        pos,
                        format!(
                            "variable `{name}`: `description` must be a string, got {}",
                            json_type_name(other)
                        ),
                    );
                    ok = false;
                    String::new()
                }
            };
            let default = map.get("default").filter(|d| !d.is_null()).cloned();
            let required = match map.get("required") {
                None | Some(Value::Null) => default.is_none(),
                Some(Value::Bool(b)) => *b,
                Some(other) => {
                    ctx.error(
                        pos,
                        format!(
                            "variable `{name}`: `required` must be true or false, got {}",
                            json_type_name(other)
                        ),
                    );
                    ok = false;
                    true
                }
            };
            let ty = ty?;
            if let Some(default) = &default {
                if required {
                    ctx.error(
                        pos,
                        format!(
                            "variable `{name}` is required and has a default: drop one of them"
                        ),
                    );
                    ok = false;
                }
                if ty == VarType::Messages && default.is_array() {
                    if let Err(problems) = parse_messages(default) {
                        for (i, problem) in problems {
                            ctx.error(
                                pos,
                                format!("variable `{name}`: default item {i}: {problem}"),
                            );
                        }
                        ok = false;
                    }
                } else if !ty.matches(default) {
                    ctx.error(
                        pos,
                        format!(
                            "variable `{name}`: default is {}, not {ty}",
                            json_type_name(default)
                        ),
                    );
                    ok = false;
                }
            }
            ok.then(|| VariableSpec {
                name: name.to_owned(),
                ty,
                description,
                required,
                default,
            })
        }
        Value::Null => {
            ctx.error(pos, format!("variable `{name}` has no declaration: write \"<type> - <description>\" or {{ type: ..., description: ... }}"));
            None
        }
        other => {
            ctx.error(
                pos,
                format!(
                    "variable `{name}`: expected \"<type> - <description>\" or a map, got {}",
                    json_type_name(other)
                ),
            );
            None
        }
    }
}

fn examples(ctx: &mut Ctx<'_>, raw: &Sp<Vec<Sp<Value>>>) -> Vec<(Example, Pos)> {
    let mut out = Vec::new();
    for (i, item) in raw.value.iter().enumerate() {
        let n = i + 1;
        let pos = Pos::of(item);
        let Value::Object(map) = &item.value else {
            ctx.error(
                pos,
                format!("example {n} must be a map with `input` and `output`"),
            );
            continue;
        };
        let mut ok = true;
        for key in map.keys() {
            if !matches!(key.as_str(), "context" | "input" | "output") {
                ctx.error(
                    pos,
                    format!("example {n}: unknown key `{key}` (expected context, input, output)"),
                );
                ok = false;
            }
        }
        let input = match map.get("input") {
            Some(Value::Object(input)) => input.clone(),
            None | Some(Value::Null) => {
                ctx.error(pos, format!("example {n}: missing required field `input`"));
                ok = false;
                Vars::new()
            }
            Some(other) => {
                ctx.error(
                    pos,
                    format!(
                        "example {n}: `input` must be a map of variables, got {}",
                        json_type_name(other)
                    ),
                );
                ok = false;
                Vars::new()
            }
        };
        let output = match map.get("output") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            None | Some(Value::Null | Value::String(_)) => {
                ctx.error(
                    pos,
                    format!("example {n}: missing or empty required field `output`"),
                );
                ok = false;
                String::new()
            }
            Some(other) => {
                ctx.error(
                    pos,
                    format!(
                        "example {n}: `output` must be a string, got {}",
                        json_type_name(other)
                    ),
                );
                ok = false;
                String::new()
            }
        };
        let context = match map.get("context") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                ctx.error(
                    pos,
                    format!(
                        "example {n}: `context` must be a string, got {}",
                        json_type_name(other)
                    ),
                );
                ok = false;
                None
            }
        };
        if ok {
            out.push((
                Example {
                    context,
                    input,
                    output,
                },
                pos,
            ));
        }
    }
    out
}

/// A `messages:` list as read: its valid entries, and whether every entry was valid.
struct ParsedEntries {
    list: Vec<ParsedEntry>,
    complete: bool,
}

/// One valid entry of a `messages:` list.
enum ParsedEntry {
    /// `{role, content}`: `part` is the body's name, `messages[<index>]`.
    Content {
        role: Role,
        part: &'static str,
        text: String,
        origin: BodyOrigin,
    },
    /// `{history: VAR}`, with the index of the declared variable.
    History { var: usize },
}

/// Reads `messages:`: each entry is `{role: system|user|assistant, content: <Jinja>}` or
/// `{history: VAR}` with `VAR` declared as `messages`.
fn message_entries(
    ctx: &mut Ctx<'_>,
    raw: &Sp<Items>,
    variables: &[(VariableSpec, Pos)],
    broken: &[String],
) -> ParsedEntries {
    let mut out = ParsedEntries {
        list: Vec::new(),
        complete: false,
    };
    let items = match &raw.value {
        Items::List(items) if !items.is_empty() => items,
        Items::List(_) | Items::Other("null") => {
            ctx.error(
                raw.pos,
                "`messages` is empty: list the messages, each `{role: ..., content: ...}` or `{history: VAR}`",
            );
            return out;
        }
        Items::Other(kind) => {
            ctx.error(
                raw.pos,
                format!("`messages` must be a list of `{{role: ..., content: ...}}` or `{{history: VAR}}` entries, got {kind}"),
            );
            return out;
        }
    };
    let mut complete = true;
    for (index, item) in items.iter().enumerate() {
        let at = format!("messages[{index}]");
        let entries = match &item.value {
            Item::Map(entries) if !entries.is_empty() => entries,
            Item::Map(_) => {
                ctx.error(
                    item.pos,
                    format!(
                        "`{at}` is empty: write `{{role: ..., content: ...}}` or `{{history: VAR}}`"
                    ),
                );
                complete = false;
                continue;
            }
            Item::Other(kind) => {
                ctx.error(
                    item.pos,
                    format!("`{at}` must be `{{role: ..., content: ...}}` or `{{history: VAR}}`, got {kind}"),
                );
                complete = false;
                continue;
            }
        };
        let get = |key: &str| entries.iter().find(|(k, _)| k.value == key).map(|(_, v)| v);
        let errors_before = ctx.diagnostics.len();
        if let Some(history) = get("history") {
            for (key, _) in entries {
                if key.value != "history" {
                    ctx.error(
                        key.pos,
                        format!("`{at}`: unknown key `{}` in a history entry (write `{{history: VAR}}` alone)", key.value),
                    );
                }
            }
            match &history.value {
                Value::String(name) => {
                    match variables.iter().position(|(v, _)| &v.name == name) {
                        Some(var) if variables[var].0.ty == VarType::Messages => {
                            if ctx.diagnostics.len() == errors_before {
                                out.list.push(ParsedEntry::History { var });
                            }
                        }
                        // Its declaration has errors of its own, already reported.
                        Some(_) if broken.contains(name) => {}
                        Some(var) => ctx.error(
                            history.pos,
                            format!(
                                "`{at}`: history variable `{name}` is declared as {}, not messages",
                                variables[var].0.ty
                            ),
                        ),
                        None => ctx.error(
                            history.pos,
                            format!("`{at}`: history variable `{name}` is not declared in `variables` (declare it with `type: messages`)"),
                        ),
                    }
                }
                other => ctx.error(
                    history.pos,
                    format!(
                        "`{at}`: `history` must name a variable of type messages, got {}",
                        json_type_name(other)
                    ),
                ),
            }
            complete &= ctx.diagnostics.len() == errors_before;
            continue;
        }
        for (key, _) in entries {
            if !matches!(key.value.as_str(), "role" | "content") {
                ctx.error(
                    key.pos,
                    format!(
                        "`{at}`: unknown key `{}` (expected role and content, or history)",
                        key.value
                    ),
                );
            }
        }
        let role = match get("role") {
            None => {
                ctx.error(item.pos, format!("`{at}`: missing `role`"));
                None
            }
            Some(role) => match &role.value {
                Value::String(name) => match name.parse::<Role>() {
                    Ok(Role::Tool) => {
                        ctx.error(
                            role.pos,
                            format!("`{at}`: role `tool` cannot be written in a template: tool results come in a `history` variable"),
                        );
                        None
                    }
                    Ok(r) => Some(r),
                    Err(_) => {
                        ctx.error(
                            role.pos,
                            format!("`{at}`: role `{name}` is not one of system, user, assistant"),
                        );
                        None
                    }
                },
                other => {
                    ctx.error(
                        role.pos,
                        format!(
                            "`{at}`: `role` must be system, user or assistant, got {}",
                            json_type_name(other)
                        ),
                    );
                    None
                }
            },
        };
        let content = match get("content") {
            None => {
                ctx.error(item.pos, format!("`{at}`: missing `content`"));
                None
            }
            Some(content) => match &content.value {
                Value::String(text) if !text.trim().is_empty() => {
                    Some((text.clone(), BodyOrigin::new(ctx.source, content.pos)))
                }
                Value::String(_) | Value::Null => {
                    ctx.error(content.pos, format!("`{at}`: `content` is empty"));
                    None
                }
                other => {
                    ctx.error(
                        content.pos,
                        format!(
                            "`{at}`: `content` must be a string, got {}",
                            json_type_name(other)
                        ),
                    );
                    None
                }
            },
        };
        match (role, content) {
            (Some(role), Some((text, origin))) if ctx.diagnostics.len() == errors_before => {
                out.list.push(ParsedEntry::Content {
                    role,
                    part: message_part(index),
                    text,
                    origin,
                });
            }
            _ => complete = false,
        }
    }
    out.complete = complete;
    out
}

/// Reads `tools:`: OpenAI-style function definitions `{name, description, parameters}`
/// with distinct names and a JSON Schema object as `parameters` (an empty object schema
/// when not given).
fn tools(ctx: &mut Ctx<'_>, raw: &Sp<Items>) -> Vec<ToolDefinition> {
    let items = match &raw.value {
        Items::List(items) => items,
        Items::Other("null") => return Vec::new(),
        Items::Other(kind) => {
            ctx.error(
                raw.pos,
                format!(
                    "`tools` must be a list of `{{name, description, parameters}}`, got {kind}"
                ),
            );
            return Vec::new();
        }
    };
    let mut out: Vec<(ToolDefinition, Pos)> = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let at = format!("tools[{index}]");
        let Item::Map(entries) = &item.value else {
            let kind = match &item.value {
                Item::Other(kind) => kind,
                Item::Map(_) => "object",
            };
            ctx.error(
                item.pos,
                format!("`{at}` must be `{{name, description, parameters}}`, got {kind}"),
            );
            continue;
        };
        let errors_before = ctx.diagnostics.len();
        let get = |key: &str| entries.iter().find(|(k, _)| k.value == key).map(|(_, v)| v);
        for (key, _) in entries {
            if !matches!(key.value.as_str(), "name" | "description" | "parameters") {
                ctx.error(
                    key.pos,
                    format!(
                        "`{at}`: unknown key `{}` (expected name, description, parameters)",
                        key.value
                    ),
                );
            }
        }
        let name = match get("name") {
            None => {
                ctx.error(item.pos, format!("`{at}`: missing `name`"));
                None
            }
            Some(name) => match &name.value {
                Value::String(text) if is_tool_name(text) => {
                    if let Some((_, first)) = out.iter().find(|(t, _)| &t.name == text) {
                        ctx.error(
                            name.pos,
                            format!(
                                "`{at}`: duplicate tool name `{text}` (first declared at line {})",
                                first.line
                            ),
                        );
                    }
                    Some((text.clone(), name.pos))
                }
                Value::String(text) => {
                    ctx.error(
                        name.pos,
                        format!("`{at}`: tool name {text:?} must be 1 to 64 letters, digits, `_` and `-`"),
                    );
                    None
                }
                other => {
                    ctx.error(
                        name.pos,
                        format!(
                            "`{at}`: `name` must be a string, got {}",
                            json_type_name(other)
                        ),
                    );
                    None
                }
            },
        };
        let shown = name
            .as_ref()
            .map_or_else(|| format!("`{at}`"), |(n, _)| format!("tool `{n}`"));
        let description = match get("description") {
            None => None,
            Some(d) => match &d.value {
                Value::Null => None,
                Value::String(text) => Some(text.trim().to_owned()),
                other => {
                    ctx.error(
                        d.pos,
                        format!(
                            "{shown}: `description` must be a string, got {}",
                            json_type_name(other)
                        ),
                    );
                    None
                }
            },
        };
        let parameters = match get("parameters") {
            None => serde_json::json!({ "type": "object", "properties": {} }),
            Some(p) => {
                for problem in schema_problems(&p.value) {
                    ctx.error(
                        p.pos,
                        format!("{shown}: not a valid JSON Schema object: {problem}"),
                    );
                }
                p.value.clone()
            }
        };
        if let Some((name, pos)) = name
            && ctx.diagnostics.len() == errors_before
        {
            out.push((
                ToolDefinition {
                    name,
                    description,
                    parameters,
                },
                pos,
            ));
        }
    }
    out.into_iter().map(|(tool, _)| tool).collect()
}

/// Reads `tool_choice:`, which must name a declared tool when it names one.
fn tool_choice(ctx: &mut Ctx<'_>, raw: &Sp<Value>, tools: &[ToolDefinition]) -> Option<ToolChoice> {
    let choice = match ToolChoice::from_value(&raw.value) {
        Ok(choice) => choice,
        Err(e) => {
            ctx.error(raw.pos, format!("invalid `tool_choice`: {e}"));
            return None;
        }
    };
    match &choice {
        ToolChoice::Tool(name) if !tools.iter().any(|t| &t.name == name) => {
            ctx.error(
                raw.pos,
                format!("`tool_choice` names `{name}`, which is not declared in `tools`"),
            );
            None
        }
        ToolChoice::Required if tools.is_empty() => {
            ctx.error(
                raw.pos,
                "`tool_choice: required` needs `tools`: the template declares none",
            );
            None
        }
        _ => Some(choice),
    }
}

/// The 1-based line and column (in characters) of byte `offset` in `text`.
fn offset_pos(text: &str, offset: usize) -> Pos {
    let offset = floor_char_boundary(text, offset);
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Pos {
        line,
        col: before[line_start..].chars().count() + 1,
    }
}

/// The 1-based column of byte `offset` within its line.
fn col_at(text: &str, offset: usize) -> usize {
    offset_pos(text, offset).col
}

fn floor_char_boundary(text: &str, mut offset: usize) -> usize {
    offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

/// A region of a Jinja body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Region {
    /// Plain text (also the inside of `{% raw %}`, with `raw` true).
    Text { raw: bool },
    /// `{{ ... }}` or `{% ... %}`.
    Tag,
    /// `{# ... #}`.
    Comment,
}

/// Splits a body into text, tag and comment regions (byte ranges).
fn regions(text: &str) -> Vec<(Region, std::ops::Range<usize>)> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut text_start = 0;
    while i + 1 < bytes.len() {
        let close = match (bytes[i], bytes[i + 1]) {
            (b'{', b'{') => "}}",
            (b'{', b'%') => "%}",
            (b'{', b'#') => "#}",
            _ => {
                i += 1;
                continue;
            }
        };
        if text_start < i {
            out.push((Region::Text { raw: false }, text_start..i));
        }
        let end = text[i + 2..]
            .find(close)
            .map_or(text.len(), |e| i + 2 + e + 2);
        let region = if close == "#}" {
            Region::Comment
        } else {
            Region::Tag
        };
        out.push((region, i..end));
        i = end;
        text_start = end;
        if close == "%}" && is_raw_start(&text[out[out.len() - 1].1.clone()]) {
            // Everything up to `{% endraw %}` is literal text.
            let rest = &text[end..];
            let mut search = 0;
            let mut raw_end = text.len();
            while let Some(open) = rest[search..].find("{%") {
                let at = search + open;
                let tag_end = rest[at + 2..]
                    .find("%}")
                    .map_or(rest.len(), |e| at + 2 + e + 2);
                if tag_inner(&rest[at..tag_end]) == "endraw" {
                    out.push((Region::Text { raw: true }, end..end + at));
                    out.push((Region::Tag, end + at..end + tag_end));
                    raw_end = end + tag_end;
                    break;
                }
                search = at + 2;
            }
            if raw_end == text.len() {
                out.push((Region::Text { raw: true }, end..text.len()));
            }
            i = raw_end;
            text_start = raw_end;
        }
    }
    if text_start < text.len() {
        out.push((Region::Text { raw: false }, text_start..text.len()));
    }
    out
}

fn tag_inner(tag: &str) -> &str {
    let inner = tag.get(2..tag.len().saturating_sub(2)).unwrap_or("");
    inner.trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace())
}

fn is_raw_start(tag: &str) -> bool {
    tag_inner(tag) == "raw"
}

/// Byte offset of the first use of `name` as a whole word inside a tag.
fn first_use(text: &str, name: &str) -> Option<usize> {
    for (region, range) in regions(text) {
        if region != Region::Tag {
            continue;
        }
        let tag = &text[range.clone()];
        let mut from = 0;
        while let Some(found) = tag[from..].find(name) {
            let at = from + found;
            let before = tag[..at].chars().next_back();
            let after = tag[at + name.len()..].chars().next();
            let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
            if !word(before) && !word(after) && before != Some('.') {
                return Some(range.start + at);
            }
            from = at + name.len();
        }
    }
    None
}

/// A problem with a template named by a tag, at a byte offset of the body.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RefProblem {
    at: usize,
    error: bool,
    message: String,
}

/// What the tags that load another template (`include`, `import`, `from`, `extends`) name,
/// checked with `resolves` (the engine's own lookup). The engine has no loader: a name
/// resolves only to a body of the same file (`system_prompt`, `user_prompt_template`, or
/// `messages[N]`), and no tag ever reads a file; `resolvable` says which names do.
fn template_ref_problems(
    text: &str,
    resolves: impl Fn(&str) -> bool,
    resolvable: &str,
) -> Vec<RefProblem> {
    // A name the linter cannot know before render time: a warning.
    let computed_name = |keyword: &str, at: usize| RefProblem {
        at,
        error: false,
        message: format!("`{keyword}` of a computed template name cannot be checked; {resolvable}"),
    };
    let mut out = Vec::new();
    for (region, range) in regions(text) {
        let tag = &text[range.clone()];
        if region != Region::Tag || !tag.starts_with("{%") {
            continue;
        }
        // Skip `{%`, whitespace control and blanks up to the keyword.
        let mut at = 2;
        at += tag[at..]
            .find(|c: char| c != '-' && c != '+' && !c.is_whitespace())
            .unwrap_or(tag.len() - at);
        let keyword_len = tag[at..]
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(tag.len() - at);
        let keyword = &tag[at..at + keyword_len];
        if !matches!(keyword, "include" | "import" | "from" | "extends") {
            continue;
        }
        at += keyword_len;
        at += tag[at..]
            .find(|c: char| !c.is_whitespace())
            .unwrap_or(tag.len() - at);
        let expr_at = range.start + at;
        let (names, rest) = match template_names(&tag[at..]) {
            Some((names, rest)) if keyword == "include" || !tag[at..].starts_with(['[', '(']) => {
                (names, rest)
            }
            Some(_) => {
                out.push(RefProblem {
                    at: expr_at,
                    error: true,
                    message: format!("`{keyword}` needs one template name, not a list"),
                });
                continue;
            }
            None => {
                out.push(computed_name(keyword, expr_at));
                continue;
            }
        };
        let rest = rest.trim_start();
        let follows = match keyword {
            "include" => ["ignore", "with", "without"].as_slice(),
            "import" => ["as"].as_slice(),
            "from" => ["import"].as_slice(),
            _ => [].as_slice(),
        };
        let ends = rest
            .trim_end_matches("%}")
            .trim_end_matches(['-', '+'])
            .trim()
            .is_empty();
        let next_word = rest
            .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .next();
        if !ends && !next_word.is_some_and(|w| follows.contains(&w)) {
            // More expression after the literal (`"a" ~ b`, `"a" if c else "b"`, ...).
            out.push(computed_name(keyword, expr_at));
            continue;
        }
        let ignore_missing = keyword == "include" && {
            let mut words = rest.split_whitespace();
            words.next() == Some("ignore") && words.next() == Some("missing")
        };
        let shown = names
            .iter()
            .map(|n| format!("{n:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        if let Some(escaping) = names.iter().find(|n| leaves_directory(n)) {
            out.push(RefProblem {
                at: expr_at,
                error: true,
                message: format!(
                    "`{keyword}` of {escaping:?} tries to leave the template directory; templates never read files: {resolvable}"
                ),
            });
        } else if !names.iter().any(|n| resolves(n)) {
            if ignore_missing {
                out.push(RefProblem {
                    at: expr_at,
                    error: false,
                    message: format!(
                        "`{keyword} {shown} ignore missing` includes nothing: no such template; {resolvable}"
                    ),
                });
            } else {
                out.push(RefProblem {
                    at: expr_at,
                    error: true,
                    message: format!("`{keyword}` of {shown}: no such template; {resolvable}"),
                });
            }
        }
    }
    out
}

/// Whether a template name is a path that would leave the template directory: absolute,
/// a drive, or a `..` segment.
fn leaves_directory(name: &str) -> bool {
    name.starts_with(['/', '\\'])
        || name.as_bytes().get(1) == Some(&b':')
        || name.split(['/', '\\']).any(|segment| segment == "..")
}

/// The constant template names at the start of an expression — a string literal, or a
/// list or tuple of string literals — and the text after it; `None` when the expression is
/// anything else.
fn template_names(expr: &str) -> Option<(Vec<String>, &str)> {
    if let Some((name, rest)) = string_literal(expr) {
        return Some((vec![name], rest));
    }
    let close = match expr.chars().next()? {
        '[' => ']',
        '(' => ')',
        _ => return None,
    };
    let mut names = Vec::new();
    let mut rest = expr[1..].trim_start();
    loop {
        if let Some(after) = rest.strip_prefix(close) {
            return (!names.is_empty()).then_some((names, after));
        }
        let (name, after) = string_literal(rest)?;
        names.push(name);
        rest = after.trim_start();
        if let Some(after) = rest.strip_prefix(',') {
            rest = after.trim_start();
        } else if !rest.starts_with(close) {
            return None;
        }
    }
}

/// A Jinja string literal at the start of `text` (its value) and the text after it.
fn string_literal(text: &str) -> Option<(String, &str)> {
    let quote = text.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let mut value = String::new();
    let mut chars = text[1..].char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            c if c == quote => return Some((value, &text[1 + i + 1..])),
            '\\' => {
                let (_, escaped) = chars.next()?;
                value.push(match escaped {
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    other => other,
                });
            }
            c => value.push(c),
        }
    }
    None
}

/// `{name}`-style placeholders in plain text (outside tags, comments and raw blocks):
/// byte offset and name.
fn brace_placeholders(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (region, range) in regions(text) {
        if region != (Region::Text { raw: false }) {
            continue;
        }
        let chunk = &text[range.clone()];
        let bytes = chunk.as_bytes();
        for (i, _) in chunk.match_indices('{') {
            if i > 0 && bytes[i - 1] == b'{' {
                continue;
            }
            let rest = &chunk[i + 1..];
            let ident_len = rest
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                .count();
            let ident = &rest[..ident_len];
            if !is_identifier(ident) {
                continue;
            }
            let tail = &rest[ident_len..];
            let closes = match tail.bytes().next() {
                Some(b'}') => true,
                Some(b'.' | b'[' | b':' | b'!') => tail
                    .find('}')
                    .is_some_and(|end| !tail[..end].contains(['{', '\n'])),
                _ => false,
            };
            if closes {
                out.push((range.start + i, ident.to_owned()));
            }
        }
    }
    out
}

/// Every name a body uses, for tests of the analysis.
#[cfg(test)]
pub(crate) fn used_names(body: &str) -> BTreeSet<String> {
    let mut env = new_environment();
    let globals: HashSet<String> = env.globals().map(|(n, _)| n.to_owned()).collect();
    if env.add_template_owned("t", body.to_owned()).is_err() {
        return BTreeSet::new();
    }
    env.get_template("t")
        .map(|t| {
            t.undeclared_variables(false)
                .into_iter()
                .filter(|n| !globals.contains(n))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn analysis_ignores_loop_and_globals_and_locals() {
        let names = used_names(
            "{% for k, v in d.items() %}{{ loop.index }}{{ k }}{% endfor %}{% set x = 1 %}{{ x }}{{ range(3) | join(', ') }}{{ a.b }}",
        );
        assert_eq!(names.into_iter().collect::<Vec<_>>(), vec!["a", "d"]);
    }

    #[test]
    fn brace_placeholders_skip_tags_and_raw() {
        let found =
            brace_placeholders("{name} {{ a }} {% raw %}{b}{% endraw %} {c:>3} {{ {'k': 1} }} {d");
        assert_eq!(found, vec![(0, "name".to_owned()), (40, "c".to_owned())]);
    }

    #[test]
    fn template_refs_are_read_from_tags() {
        let known = |n: &str| n == "system_prompt";
        let problems = template_ref_problems(
            "{% include 'system_prompt' %}{%- include \"nope\" -%}\n{{ x }}{% include ['a', \"system_prompt\"] %}\
             {% import \"../x\" as m %}{% from 'b' import f %}{% include name %}{% include 'a' ~ b %}\
             {% include 'gone' ignore missing %}{% raw %}{% include 'raw' %}{% endraw %}{# {% include 'c' %} #}\
             {% extends ['system_prompt'] %}{% include \"/etc/passwd\" ignore missing %}",
            known,
            "only the bodies",
        );
        let found: Vec<(bool, &str)> = problems
            .iter()
            .map(|p| (p.error, p.message.split(';').next().unwrap_or("")))
            .collect();
        assert_eq!(
            found,
            vec![
                (true, "`include` of \"nope\": no such template"),
                (
                    true,
                    "`import` of \"../x\" tries to leave the template directory"
                ),
                (true, "`from` of \"b\": no such template"),
                (
                    false,
                    "`include` of a computed template name cannot be checked"
                ),
                (
                    false,
                    "`include` of a computed template name cannot be checked"
                ),
                (
                    false,
                    "`include \"gone\" ignore missing` includes nothing: no such template"
                ),
                (true, "`extends` needs one template name, not a list"),
                (
                    true,
                    "`include` of \"/etc/passwd\" tries to leave the template directory"
                ),
            ]
        );
        assert!(
            leaves_directory("a/../../b") && leaves_directory("C:\\x") && !leaves_directory("a..b")
        );
        assert_eq!(
            string_literal("'it\\'s' rest"),
            Some(("it's".to_owned(), " rest"))
        );
    }

    #[test]
    fn file_names() {
        assert_eq!(
            split_file_name("write_chapter_v12.yaml"),
            Some(("write_chapter", 12))
        );
        assert_eq!(split_file_name("a_v01.yaml"), None);
        assert_eq!(split_file_name("a_v0.yaml"), None);
        assert_eq!(split_file_name("a.yaml"), None);
        assert_eq!(split_file_name("a_v1.yml"), None);
        assert_eq!(split_file_name("_v1.yaml"), None);
    }
}
