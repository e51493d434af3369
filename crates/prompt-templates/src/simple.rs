//! Plain bodies: literal text and `{{ name }}` of declared variables, and nothing else.
//!
//! Such a body (a typical system prompt) renders to its text with each variable's value
//! printed in place, exactly what the engine would produce, without the engine's fixed
//! cost per render (template lookup, state, stack, context serialization). Anything else
//! (blocks, comments, filters, expressions, whitespace control, names that are not declared
//! variables or that the engine reads as keywords) is not plain, and the engine renders it.

use std::fmt::Write as _;
use std::ops::Range;

use minijinja::value::Value as JinjaValue;

/// One part of a plain body.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    /// Literal text: a byte range of the body.
    Text(Range<usize>),
    /// The value of the declared variable with this index.
    Var(usize),
}

/// A body that renders without the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PlainBody {
    source: String,
    pieces: Vec<Piece>,
    /// Bytes of literal text, to size the output.
    text_len: usize,
}

/// Names the engine does not look up as variables (literals, operators, special names).
const NOT_VARIABLES: &[&str] = &[
    "true", "false", "none", "True", "False", "None", "and", "or", "not", "in", "is", "if", "else",
    "loop", "self", "super", "caller", "varargs", "kwargs",
];

impl PlainBody {
    /// The body as plain pieces, when it is plain; `names` are the declared variables.
    pub(crate) fn parse(body: &str, names: &[impl AsRef<str>]) -> Option<PlainBody> {
        // The engine drops one trailing newline (`keep_trailing_newline` is off).
        let mut source = body;
        if let Some(s) = source.strip_suffix('\n') {
            source = s;
        }
        if let Some(s) = source.strip_suffix('\r') {
            source = s;
        }
        let bytes = source.as_bytes();
        let mut pieces = Vec::new();
        let mut text_len = 0;
        let mut text_start = 0;
        let mut at = 0;
        while let Some(found) = source[at..].find('{') {
            let open = at + found;
            match bytes.get(open + 1) {
                Some(b'%' | b'#') => return None,
                Some(b'{') => {}
                _ => {
                    at = open + 1;
                    continue;
                }
            }
            let inner_start = open + 2;
            let close = inner_start + source[inner_start..].find("}}")?;
            let name = source[inner_start..close].trim_matches([' ', '\t', '\n', '\r']);
            let is_name = name
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !is_name || NOT_VARIABLES.contains(&name) {
                return None;
            }
            let index = names.iter().position(|n| n.as_ref() == name)?;
            if text_start < open {
                pieces.push(Piece::Text(text_start..open));
                text_len += open - text_start;
            }
            pieces.push(Piece::Var(index));
            at = close + 2;
            text_start = at;
        }
        if text_start < source.len() {
            pieces.push(Piece::Text(text_start..source.len()));
            text_len += source.len() - text_start;
        }
        Some(PlainBody {
            source: source.to_owned(),
            pieces,
            text_len,
        })
    }

    /// Renders with the declared variables' values (in declaration order), printing each as
    /// the engine does with auto-escaping off: a string as it is, anything else as its
    /// `Display`. `None` when the text would be longer than `max_bytes` (found before
    /// anything is copied when the values are strings).
    pub(crate) fn render(&self, values: &[JinjaValue], max_bytes: usize) -> Option<String> {
        let vars_len: usize = self
            .pieces
            .iter()
            .map(|p| match p {
                Piece::Var(i) => values
                    .get(*i)
                    .and_then(JinjaValue::as_str)
                    .map_or(8, str::len),
                Piece::Text(_) => 0,
            })
            .fold(0usize, usize::saturating_add);
        let expected = self.text_len.saturating_add(vars_len);
        if expected > max_bytes {
            return None;
        }
        let mut out = String::with_capacity(expected);
        for piece in &self.pieces {
            match piece {
                Piece::Text(range) => out.push_str(&self.source[range.clone()]),
                Piece::Var(i) => {
                    let value = values.get(*i).unwrap_or(&JinjaValue::UNDEFINED);
                    match value.as_str() {
                        Some(s) => out.push_str(s),
                        // Writing to a `String` cannot fail.
                        None => {
                            let _ = write!(out, "{value}");
                        }
                    }
                }
            }
            if out.len() > max_bytes {
                return None;
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::PlainBody;
    use crate::template::new_environment;
    use minijinja::value::Value as JinjaValue;

    const NAMES: [&str; 6] = ["a", "b_2", "none_", "lst", "map", "nul"];

    fn values() -> Vec<JinjaValue> {
        vec![
            JinjaValue::from("plain {{ not code }} ünï <&>"),
            JinjaValue::from(42),
            JinjaValue::from(2.5),
            JinjaValue::from(vec![JinjaValue::from("x"), JinjaValue::from(true)]),
            [("k", JinjaValue::from("v"))].into_iter().collect(),
            JinjaValue::from(()),
        ]
    }

    /// When a body is plain, rendering it gives exactly what the engine renders.
    fn agrees(body: &str) -> bool {
        let Some(plain) = PlainBody::parse(body, &NAMES) else {
            return false;
        };
        let values = values();
        let mut env = new_environment();
        env.add_template_owned("t", body.to_owned()).unwrap();
        let ctx: JinjaValue = NAMES
            .iter()
            .zip(&values)
            .map(|(n, v)| (*n, v.clone()))
            .collect();
        let engine = env.get_template("t").unwrap().render(ctx).unwrap();
        assert_eq!(
            plain.render(&values, usize::MAX).unwrap(),
            engine,
            "body: {body:?}"
        );
        true
    }

    #[test]
    fn plain_bodies_render_like_the_engine() {
        for body in [
            "",
            "no variables at all\n",
            "{{ a }}",
            "x {{a}} y {{ b_2 }}{{\tnone_ }}{{\nlst\n}} {{ map }} {{ nul }}\n",
            "ends with CRLF {{ a }}\r\n",
            "ends with CR {{ a }}\r",
            "two newlines\n\n",
            "single braces {a} { b } } {{ a }} }}} {",
            "unicode ünïcødé 🎉 {{ a }} 日本",
            "You are the Writer.\n  - in {{ a }}.\n",
        ] {
            assert!(agrees(body), "{body:?} should be plain");
        }
    }

    #[test]
    fn other_bodies_are_not_plain() {
        for body in [
            "{% if a %}x{% endif %}",
            "{# comment #}",
            "{{ a | trim }}",
            "{{ a.b }}",
            "{{ a ~ b_2 }}",
            "{{- a }}",
            "{{ a -}}",
            "{{ a +}}",
            "{{ undeclared }}",
            "{{ none }}",
            "{{ true }}",
            "{{ True }}",
            "{{ loop }}",
            "{{ 'a' }}",
            "{{ a }",
            "{{{ a }}",
            "{% raw %}{{ a }}{% endraw %}",
            "{{ a }}{{",
        ] {
            // Declared names the engine reads as literals or special names stay with it.
            let names = [&NAMES[..], &["none", "true", "loop", "True"]].concat();
            assert!(PlainBody::parse(body, &names).is_none(), "{body:?}");
        }
    }

    proptest! {
        #[test]
        fn assembled_bodies_agree(parts in proptest::collection::vec(prop_oneof![
            Just("{{ a }}".to_owned()), Just("{{b_2}}".to_owned()), Just("{{ lst }}".to_owned()),
            Just("{{ map }}".to_owned()), Just("{{ nul }}".to_owned()), Just("{".to_owned()),
            Just("}".to_owned()), Just("\n".to_owned()), Just("\r".to_owned()),
            Just(" ".to_owned()), "[^{}%#]{0,12}",
        ], 0..10)) {
            let body: String = parts.concat();
            // Bodies the engine cannot compile are not plain either.
            let mut env = new_environment();
            if env.add_template_owned("t", body.clone()).is_ok() {
                agrees(&body);
            } else {
                prop_assert!(PlainBody::parse(&body, &NAMES).is_none());
            }
        }
    }
}
