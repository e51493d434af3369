//! A fast reader for the usual shape of a template file.
//!
//! It drives the same YAML parser serde-saphyr uses (`granit-parser`, with the same limits)
//! and builds the template's fields straight from its events, without serde's machinery.
//! It only accepts what it can read exactly as serde-saphyr would: one document whose root
//! is a map, no anchors, aliases or tags, no duplicate keys, map keys that are plain words
//! or quoted, and scalars that are strings, `null`, booleans or plain decimal numbers. For
//! anything else, and for every error, it gives up (`None`) and the caller reads the file
//! with serde-saphyr, which then decides and reports with its own messages and positions.

use std::borrow::Cow;

use granit_parser::{Event, Options, Parser, ScalarStyle, Span, StrInput};
use serde_json::Value;

use crate::Vars;
use crate::parse::{Declarations, Doc, Item, Items, Pos, Sp};

/// Files larger than this go to serde-saphyr (far below its own limits on scalar bytes).
const MAX_SOURCE_BYTES: usize = 1 << 20;
/// Deeper nesting goes to serde-saphyr (its limit is 64).
const MAX_DEPTH: usize = 32;
/// More events go to serde-saphyr (its limit is 1,000,000 events and 250,000 nodes).
const MAX_EVENTS: usize = 100_000;

/// Reads a template file's fields, or `None` when serde-saphyr must read it.
pub(crate) fn read(source: &str) -> Option<Doc> {
    if source.len() > MAX_SOURCE_BYTES {
        return None;
    }
    let mut reader = Reader::new(source);
    let doc = reader.document();
    // Whatever happened, the parser must have reached the end of the stream cleanly.
    doc.filter(|_| reader.at_stream_end())
}

struct Reader<'a> {
    parser: Parser<'a, StrInput<'a>>,
    events: usize,
}

/// Where a top-level key's value goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    Version,
    Agent,
    Task,
    System,
    User,
    Variables,
    Validation,
    Examples,
    Metadata,
    Model,
    Messages,
    Tools,
    ToolChoice,
    Other,
}

impl<'a> Reader<'a> {
    fn new(source: &'a str) -> Self {
        // The options serde-saphyr passes with its default budget and without its
        // `comments` feature (the workspace turns it off: nothing reads comments, and
        // following them costs more than a third of the parse).
        let mut options = Options::default();
        options.simple_key_max_lookahead = 1024;
        options.flow_nesting_limit = 255;
        options.block_nesting_limit = options.block_nesting_limit.max(65);
        options.emit_comments = false;
        Self {
            parser: Parser::new_from_str_with_options(source, options),
            events: 0,
        }
    }

    /// The next event; `None` on a parse error or too many events.
    fn next(&mut self) -> Option<(Event<'a>, Span)> {
        let (event, span) = self.parser.next_event()?.ok()?;
        self.events += 1;
        (self.events <= MAX_EVENTS).then_some((event, span))
    }

    fn at_stream_end(&mut self) -> bool {
        matches!(self.next(), Some((Event::StreamEnd, _)))
    }

    fn document(&mut self) -> Option<Doc> {
        if !matches!(self.next()?.0, Event::StreamStart) {
            return None;
        }
        let Event::DocumentStart(_, None) = self.next()?.0 else {
            return None;
        };
        let (root, _) = self.next()?;
        if !matches!(root, Event::MappingStart(_, 0, None)) {
            return None;
        }
        let mut doc = Doc::default();
        let mut seen: Vec<Cow<'a, str>> = Vec::new();
        loop {
            let (event, _) = self.next()?;
            let key = match event {
                Event::MappingEnd => break,
                Event::Scalar(text, style, 0, None) if key_is_string(&text, style) => text,
                _ => return None,
            };
            if seen.contains(&key) {
                return None;
            }
            let field = match key.as_ref() {
                "version" => Field::Version,
                "agent" => Field::Agent,
                "task" => Field::Task,
                "system_prompt" => Field::System,
                "user_prompt_template" => Field::User,
                "variables" => Field::Variables,
                "validation" => Field::Validation,
                "examples" => Field::Examples,
                "metadata" => Field::Metadata,
                "model" => Field::Model,
                "messages" => Field::Messages,
                "tools" => Field::Tools,
                "tool_choice" => Field::ToolChoice,
                _ => Field::Other,
            };
            seen.push(key);
            let (event, span) = self.next()?;
            let pos = pos_of(&span);
            match field {
                Field::Variables => doc.variables = Some(self.variables(&event, pos)?),
                Field::Examples => doc.examples = Some(self.examples(&event, pos)?),
                Field::Messages => doc.messages = Some(self.items(&event, pos)?),
                Field::Tools => doc.tools = Some(self.items(&event, pos)?),
                _ => {
                    let value = Sp {
                        value: self.value(event, 1)?,
                        pos,
                    };
                    let slot = match field {
                        Field::Version => &mut doc.version,
                        Field::Agent => &mut doc.agent,
                        Field::Task => &mut doc.task,
                        Field::System => &mut doc.system_prompt,
                        Field::User => &mut doc.user_prompt_template,
                        Field::Validation => &mut doc.validation,
                        Field::Metadata => &mut doc.metadata,
                        Field::Model => &mut doc.model,
                        Field::ToolChoice => &mut doc.tool_choice,
                        Field::Variables
                        | Field::Examples
                        | Field::Messages
                        | Field::Tools
                        | Field::Other => continue,
                    };
                    let optional = matches!(
                        field,
                        Field::Validation | Field::Metadata | Field::Model | Field::ToolChoice
                    );
                    if optional && value.value.is_null() {
                        return None;
                    }
                    *slot = Some(value);
                }
            }
        }
        if !matches!(self.next()?.0, Event::DocumentEnd) {
            return None;
        }
        Some(doc)
    }

    /// `variables:` — a map of names (in file order, each with its position) to declarations.
    fn variables(&mut self, event: &Event<'a>, pos: Pos) -> Option<Sp<Declarations>> {
        if !matches!(event, Event::MappingStart(_, 0, None)) {
            return None;
        }
        let mut out: Vec<(Sp<String>, Sp<Value>)> = Vec::new();
        loop {
            let (event, span) = self.next()?;
            let name = match event {
                Event::MappingEnd => break,
                Event::Scalar(text, style, 0, None) if key_is_string(&text, style) => text,
                _ => return None,
            };
            if out.iter().any(|(n, _)| n.value == name) {
                return None;
            }
            let name = Sp {
                value: name.into_owned(),
                pos: pos_of(&span),
            };
            let (event, span) = self.next()?;
            let decl = Sp {
                value: self.value(event, 2)?,
                pos: pos_of(&span),
            };
            out.push((name, decl));
        }
        Some(Sp { value: out, pos })
    }

    /// `examples:` — a list of values, each with its position.
    fn examples(&mut self, event: &Event<'a>, pos: Pos) -> Option<Sp<Vec<Sp<Value>>>> {
        if !matches!(event, Event::SequenceStart(_, 0, None)) {
            return None;
        }
        let mut out = Vec::new();
        loop {
            let (event, span) = self.next()?;
            if matches!(event, Event::SequenceEnd) {
                break;
            }
            out.push(Sp {
                value: self.value(event, 2)?,
                pos: pos_of(&span),
            });
        }
        Some(Sp { value: out, pos })
    }

    /// `messages:` or `tools:` — a list of maps, each key and value with its position.
    /// Anything else (an empty value, a scalar, an entry that is not a map) is left to
    /// serde-saphyr.
    fn items(&mut self, event: &Event<'a>, pos: Pos) -> Option<Sp<Items>> {
        if !matches!(event, Event::SequenceStart(_, 0, None)) {
            return None;
        }
        let mut out = Vec::new();
        loop {
            let (event, span) = self.next()?;
            match event {
                Event::SequenceEnd => break,
                Event::MappingStart(_, 0, None) => {}
                _ => return None,
            }
            let item_pos = pos_of(&span);
            let mut entries: Vec<(Sp<String>, Sp<Value>)> = Vec::new();
            loop {
                let (event, span) = self.next()?;
                let key = match event {
                    Event::MappingEnd => break,
                    Event::Scalar(text, style, 0, None) if key_is_string(&text, style) => text,
                    _ => return None,
                };
                if entries.iter().any(|(k, _)| k.value == key) {
                    return None;
                }
                let key = Sp {
                    value: key.into_owned(),
                    pos: pos_of(&span),
                };
                let (event, span) = self.next()?;
                let value = Sp {
                    value: self.value(event, 3)?,
                    pos: pos_of(&span),
                };
                entries.push((key, value));
            }
            out.push(Sp {
                value: Item::Map(entries),
                pos: item_pos,
            });
        }
        Some(Sp {
            value: Items::List(out),
            pos,
        })
    }

    /// The value starting with `event`, at nesting `depth`.
    fn value(&mut self, event: Event<'a>, depth: usize) -> Option<Value> {
        if depth > MAX_DEPTH {
            return None;
        }
        match event {
            Event::Scalar(text, style, 0, None) => scalar(text, style),
            Event::SequenceStart(_, 0, None) => {
                let mut items = Vec::new();
                loop {
                    let (event, _) = self.next()?;
                    if matches!(event, Event::SequenceEnd) {
                        break;
                    }
                    items.push(self.value(event, depth + 1)?);
                }
                Some(Value::Array(items))
            }
            Event::MappingStart(_, 0, None) => {
                let mut map = Vars::new();
                loop {
                    let (event, _) = self.next()?;
                    let key = match event {
                        Event::MappingEnd => break,
                        Event::Scalar(text, style, 0, None) if key_is_string(&text, style) => {
                            text.into_owned()
                        }
                        _ => return None,
                    };
                    let (event, _) = self.next()?;
                    let value = self.value(event, depth + 1)?;
                    if map.insert(key, value).is_some() {
                        return None;
                    }
                }
                Some(Value::Object(map))
            }
            _ => None,
        }
    }
}

/// The position serde-saphyr gives a node: its first line, and its column from 1.
fn pos_of(span: &Span) -> Pos {
    Pos::new(span.start.line(), span.start.col() + 1)
}

/// Whether a map key reads as the same string under serde-saphyr: quoted or block keys,
/// and plain keys that cannot be taken for a null, boolean or number.
fn key_is_string(text: &str, style: ScalarStyle) -> bool {
    style != ScalarStyle::Plain || plain_word(text)
}

/// A plain scalar that is a string under every rule serde-saphyr applies: it starts with
/// a letter and is none of the words it reads as a boolean, null or non-finite number.
fn plain_word(text: &str) -> bool {
    text.as_bytes().first().is_some_and(u8::is_ascii_alphabetic)
        && ![
            "y", "yes", "n", "no", "true", "false", "on", "off", "null", "inf", "infinity", "nan",
        ]
        .iter()
        .any(|w| text.eq_ignore_ascii_case(w))
}

/// A scalar's value, as serde-saphyr gives it to `serde_json::Value`, or `None` when the
/// text needs serde-saphyr's full rules.
fn scalar(text: Cow<'_, str>, style: ScalarStyle) -> Option<Value> {
    if style != ScalarStyle::Plain {
        return Some(Value::String(text.into_owned()));
    }
    match text.as_ref() {
        "" | "~" | "null" | "Null" | "NULL" => return Some(Value::Null),
        _ => {}
    }
    if plain_word(&text) {
        return Some(Value::String(text.into_owned()));
    }
    // Booleans as YAML 1.1 spells them (serde-saphyr's default), in any case.
    for (word, b) in [
        ("true", true),
        ("yes", true),
        ("y", true),
        ("on", true),
        ("false", false),
        ("no", false),
        ("n", false),
        ("off", false),
    ] {
        if text.eq_ignore_ascii_case(word) {
            return Some(Value::Bool(b));
        }
    }
    number(&text)
}

/// `-?(0|[1-9][0-9]*)` up to 18 digits as an integer, and the same followed by `.` and
/// digits as a float; anything else (signs, exponents, radixes, leading zeros,
/// underscores, dates) is left to serde-saphyr.
fn number(text: &str) -> Option<Value> {
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = match unsigned.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (unsigned, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || whole.len() > 18 || (whole.len() > 1 && whole.starts_with('0')) {
        return None;
    }
    match fraction {
        None if text.starts_with('-') => text.parse::<i64>().ok().map(Value::from),
        None => text.parse::<u64>().ok().map(Value::from),
        Some(fraction) if digits(fraction) && fraction.len() <= 17 => text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::read;
    use crate::parse::read_doc_saphyr;

    /// Whenever the fast reader accepts a text, serde-saphyr reads exactly the same fields,
    /// values and positions from it.
    fn agrees(text: &str) -> bool {
        let fast = read(text);
        if let Some(doc) = &fast {
            let saphyr = read_doc_saphyr(text);
            assert_eq!(
                saphyr.as_ref().ok(),
                Some(doc),
                "text:\n{text}\nserde-saphyr: {saphyr:?}"
            );
        }
        fast.is_some()
    }

    fn templates() -> Vec<(std::path::PathBuf, String)> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../templates");
        let mut out = Vec::new();
        for agent in std::fs::read_dir(root).unwrap() {
            let agent = agent.unwrap().path();
            if !agent.is_dir() {
                continue;
            }
            for file in std::fs::read_dir(agent).unwrap() {
                let path = file.unwrap().path();
                if path.extension().is_some_and(|e| e == "yaml") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    out.push((path, text));
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn shipped_templates_take_the_fast_path_and_agree() {
        let all = templates();
        assert!(all.len() >= 4);
        for (path, text) in all {
            assert!(
                agrees(&text),
                "{} should take the fast path",
                path.display()
            );
        }
    }

    const BASE: &str = "version: 1\nagent: writer\ntask: t\nsystem_prompt: You write.\nuser_prompt_template: \"Write about {{ topic }}.\"\nvariables:\n  topic: \"string - The topic\"\n";

    #[test]
    fn scalars_agree_or_fall_back() {
        let scalars = [
            "",
            "~",
            "null",
            "Null",
            "NULL",
            "nULL",
            "true",
            "True",
            "TRUE",
            "tRuE",
            "false",
            "yes",
            "Yes",
            "no",
            "NO",
            "y",
            "Y",
            "n",
            "on",
            "OFF",
            "inf",
            "-inf",
            ".inf",
            "-.Inf",
            ".nan",
            "NaN",
            "Infinity",
            "0",
            "-0",
            "1",
            "-1",
            "007",
            "+1",
            "1_000",
            "0x1F",
            "0o17",
            "0b101",
            "1e5",
            "1E-5",
            "1.5e3",
            "0.8",
            "-0.8",
            "-0.0",
            "10.",
            ".5",
            "3.14159265358979323846",
            "123456789012345678",
            "1234567890123456789",
            "12345678901234567890",
            "99999999999999999999",
            "-9223372036854775808",
            "2026-01-20",
            "12:30",
            "1:20:30",
            "a",
            "abc",
            "Abc def",
            "a: b",
            "a-b",
            "a_b",
            "x1",
            "é",
            "日本",
            "\"quoted\"",
            "'single'",
            "\"\"",
            "''",
            "\"1\"",
            "'true'",
            "|\n    block\n",
            ">\n    folded\n    text\n",
            "|-\n    x\n",
            "[a, b, 1]",
            "{a: 1}",
            "[]",
            "{}",
            "!!str 1",
            "!custom x",
            "&a x",
            "*a",
            "[1, [2, [3]]]",
            "- a\n  - b",
            "{ type: string, default: \"English\" }",
            "\"\\u263A\\n\"",
            "'it''s'",
            "<<",
            "= x",
            "@x",
            "`x`",
            "%x",
        ];
        let mut fast = 0;
        for scalar in scalars {
            for key in ["metadata", "model", "zzz_unknown"] {
                let text = format!("{BASE}{key}:\n  field: {scalar}\n  other: x\n");
                fast += usize::from(agrees(&text));
                let text = format!("{BASE}{key}: {scalar}\n");
                fast += usize::from(agrees(&text));
            }
            let text = format!(
                "{BASE}examples:\n  - input: {{ topic: {scalar} }}\n    output: x\n  - {scalar}\n"
            );
            fast += usize::from(agrees(&text));
            let text = format!("{BASE}  other: {scalar}\n  third:\n    {scalar}\n");
            fast += usize::from(agrees(&text));
            let text = format!(
                "version: {scalar}\nagent: {scalar}\ntask: {scalar}\nsystem_prompt: {scalar}\nuser_prompt_template: {scalar}\n"
            );
            fast += usize::from(agrees(&text));
        }
        assert!(fast > 300, "only {fast} texts took the fast path");
    }

    #[test]
    fn keys_and_structure_agree_or_fall_back() {
        let texts = [
            String::new(),
            "# only a comment\n".to_owned(),
            "- a list\n- not a map\n".to_owned(),
            "just a string\n".to_owned(),
            "version: 1\nagent: [writer\n".to_owned(),
            format!("---\n{BASE}"),
            format!("---\n{BASE}...\n"),
            format!("{BASE}---\n{BASE}"),
            format!("%YAML 1.2\n---\n{BASE}"),
            format!("{BASE}version: 2\n"),
            format!("{BASE}\"version\": 2\n"),
            format!("{BASE}  topic: \"string - again\"\n"),
            format!("{BASE}metadata:\n  a: 1\n  a: 2\n"),
            format!("{BASE}metadata:\n  1: one\n"),
            format!("{BASE}metadata:\n  true: one\n"),
            format!("{BASE}metadata:\n  ~: one\n"),
            format!("{BASE}metadata:\n  \"1\": one\n  'true': two\n"),
            format!("{BASE}metadata:\n  ? [a, b]\n  : x\n"),
            format!("{BASE}metadata: &m\n  a: 1\nmodel: *m\n"),
            format!("{BASE}metadata:\n  <<: {{a: 1}}\n"),
            format!("{BASE}variables: ~\n"),
            format!("{BASE}examples: ~\n"),
            format!("{BASE}examples: x\n"),
            format!("{BASE}examples: []\n"),
            format!("{BASE}examples:\n- input: {{a: 1}}\n  output: |\n    text\n"),
            format!("{BASE}validation: ~\n"),
            format!("{BASE}validation:\n  min_length: 10\n  max_length: 5\n"),
            format!("{BASE}# trailing comment\n\n\n"),
            format!("# head\n{BASE}  # inside\n  other: x # after\n"),
            format!("{}{BASE}", "# comment\n".repeat(40)),
            format!("{BASE}model:\n{}  name: x\n", "  # comment\n".repeat(40)),
            format!("{BASE}deep: {}x{}\n", "[".repeat(40), "]".repeat(40)),
            format!("{BASE}deep: {}x{}\n", "[".repeat(70), "]".repeat(70)),
            "version: 1\r\nagent: writer\r\ntask: t\r\nsystem_prompt: |\r\n  You write.\r\n  More.\r\nuser_prompt_template: >\r\n  x\r\n  y\r\n".to_owned(),
            "\u{feff}version: 1\nagent: writer\n".to_owned(),
            "version: 1\nagent:\ntask:\n".to_owned(),
            "version: 1\nsystem_prompt: |\n    indented more\n  less\n".to_owned(),
            "version: 1\nsystem_prompt: \"multi\n  line\n  quoted\"\n".to_owned(),
            "version: 1\nsystem_prompt: plain\n  multi line\n  scalar\n".to_owned(),
            "{version: 1, agent: writer, task: t, system_prompt: x, user_prompt_template: y}\n".to_owned(),
            "version: 1\nvariables:\n  a: string - A\n  \"b\": { type: integer, default: 3 }\n  c:\n    type: list\n    required: false\n".to_owned(),
            "version: 1\nvariables:\n  a: \"string - A\"\n  a: \"string - B\"\n".to_owned(),
            "version: 1\nvariables:\n  1: \"string - A\"\n".to_owned(),
            "version: 1\nvariables: [a, b]\n".to_owned(),
            "version: 1\nagent: \t writer \t\n".to_owned(),
            "version: 1\nagent: 'wri\n  ter'\n".to_owned(),
            "version: 1\n\tagent: x\n".to_owned(),
            "version: 1\nagent: x\n  bad: indent\n".to_owned(),
            "version: 1\nagent: \"unterminated\n".to_owned(),
            "version: 1\nagent: \"\\q\"\n".to_owned(),
        ];
        for text in &texts {
            agrees(text);
        }
        assert!(agrees(&format!(
            "# head\n{BASE}  # inside\n  other: x # after\n"
        )));
        // Long runs of comments anywhere are fine for both readers.
        for text in [
            format!("{}{BASE}", "# comment\n".repeat(100)),
            format!("{BASE}model:\n{}  name: x\n", "  # comment\n".repeat(100)),
            format!(
                "{BASE}model:\n  stop:\n{}    - x\n",
                "    # comment\n".repeat(100)
            ),
        ] {
            assert!(agrees(&text));
            assert!(read_doc_saphyr(&text).is_ok());
        }
        assert!(agrees(&format!(
            "{BASE}examples:\n- input: {{a: 1}}\n  output: |\n    text\n"
        )));
    }

    /// `messages`, `tools` and `tool_choice`: read the same by both readers, or left to
    /// serde-saphyr.
    #[test]
    fn message_lists_and_tools_agree_or_fall_back() {
        const HEAD: &str = "version: 1\nagent: writer\ntask: t\n";
        let fast = [
            "messages:\n  - role: system\n    content: |\n      Be {{ mood }}.\n  - history: h\n  - {role: user, content: \"Go {{ x }}\"}\n",
            "messages:\n- role: user\n  content: >\n    folded\n    text\n- history: h\n",
            "messages: [{role: user, content: hi}, {history: h}]\n",
            "messages: []\n",
            "messages:\n  - {}\n",
            "messages:\n  - role: user\n    content: x\n    extra: [1, {a: b}]\n",
            "tools:\n  - name: f\n    description: \"Find\"\n    parameters:\n      type: object\n      properties:\n        name: { type: string }\n      required: [name]\ntool_choice: auto\n",
            "tools: []\ntool_choice: { name: f }\n",
            "tool_choice: required\n",
        ];
        for text in fast {
            assert!(agrees(&format!("{HEAD}{text}")), "{text}");
        }
        let slow = [
            "messages:\n",
            "messages: ~\n",
            "messages: hello\n",
            "messages: {role: user}\n",
            "messages:\n  - hello\n  - [a]\n",
            "messages:\n  - role: user\n    role: system\n",
            "messages:\n  - &m {role: user, content: x}\n  - *m\n",
            "messages:\n  - 1: x\n",
            "tools:\n",
            "tools: 3\n",
            "tool_choice:\n",
            "tool_choice: ~\n",
        ];
        for text in slow {
            assert!(!agrees(&format!("{HEAD}{text}")), "{text}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

        /// Documents assembled from YAML fragments: the fast reader never disagrees.
        #[test]
        fn fragments_agree(parts in proptest::collection::vec(prop_oneof![
            Just("version: 1\n".to_owned()), Just("agent: writer\n".to_owned()),
            Just("task: t\n".to_owned()), Just("system_prompt: |\n  Hi {{ a }}\n".to_owned()),
            Just("user_prompt_template: \"x\"\n".to_owned()), Just("variables:\n".to_owned()),
            Just("  a: \"string - A\"\n".to_owned()), Just("  b: { type: integer, default: 2 }\n".to_owned()),
            Just("examples:\n".to_owned()), Just("  - input: {a: x}\n    output: y\n".to_owned()),
            Just("metadata:\n".to_owned()), Just("  tags: [a, 1, 2.5, yes, ~]\n".to_owned()),
            Just("# comment\n".to_owned()), Just("---\n".to_owned()), Just("- item\n".to_owned()),
            Just("messages:\n".to_owned()), Just("  - role: user\n    content: \"{{ a }}\"\n".to_owned()),
            Just("  - history: h\n".to_owned()), Just("  - {role: system, content: x}\n".to_owned()),
            Just("tools:\n".to_owned()), Just("  - name: f\n    parameters: { type: object }\n".to_owned()),
            Just("tool_choice: auto\n".to_owned()), Just("tool_choice: { name: f }\n".to_owned()),
            Just("&a [*a]\n".to_owned()), Just("<<: *b\n".to_owned()), Just("  \n".to_owned()),
            "[a-z_]{1,8}: [ -~]{0,20}\n", "  [a-z]{1,4}: [ -~]{0,12}\n", "[ -~\n]{0,30}",
        ], 0..12)) {
            let text: String = parts.concat();
            agrees(&text);
        }
    }
}
