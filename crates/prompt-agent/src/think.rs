//! Reasoning written inline as `<think>…</think>` in a reply's text: the one rule that takes
//! it out ([`split_think`], [`strip_think`]) and the same rule applied to a stream of deltas
//! as they arrive ([`ThinkSplitter`]), so a streamed reply's text is the text of the whole
//! reply and its thinking arrives as reasoning.

use std::collections::VecDeque;

use crate::request::Delta;

const OPEN: &str = "<think>";
const CLOSE: &str = "</think>";

/// Splits a reply into its text and its inline reasoning: `<think>…</think>` blocks, an
/// unclosed `<think>` with everything after it, and a leading part closed by a `</think>` that
/// was never opened are reasoning; the rest, trimmed, is the text. The reasoning is the
/// blocks' contents joined by blank lines, trimmed, or `None` when there is none.
pub fn split_think(text: &str) -> (String, Option<String>) {
    let mut thoughts: Vec<&str> = Vec::new();
    let mut rest = text;
    if let Some(close) = rest.find(CLOSE)
        && !rest[..close].contains(OPEN)
    {
        thoughts.push(&rest[..close]);
        rest = &rest[close + CLOSE.len()..];
    }
    let mut out = String::with_capacity(rest.len());
    while let Some(open) = rest.find(OPEN) {
        out.push_str(&rest[..open]);
        let after = &rest[open + OPEN.len()..];
        match after.find(CLOSE) {
            Some(close) => {
                thoughts.push(&after[..close]);
                rest = &after[close + CLOSE.len()..];
            }
            None => {
                thoughts.push(after);
                rest = "";
                break;
            }
        }
    }
    out.push_str(rest);
    let reasoning = thoughts
        .iter()
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join("\n\n");
    (
        out.trim().to_owned(),
        (!reasoning.is_empty()).then_some(reasoning),
    )
}

/// Removes `<think>…</think>` blocks, an unclosed `<think>` and everything after it, and a
/// leading reasoning part closed by a `</think>` that was never opened; then trims. The text
/// half of [`split_think`].
pub fn strip_think(text: &str) -> String {
    split_think(text).0
}

/// [`split_think`] for a stream: text deltas go in as they arrive, and out come text deltas
/// without the `<think>` blocks and reasoning deltas with the blocks' contents. The text put
/// together is the whole reply's text but for whitespace at its end (a delta cannot be taken
/// back once sent); leading whitespace is dropped. Deltas without tags pass through as they
/// came, so a replay keeps the provider's pieces; only a delta that ends in what may be the
/// start of a tag (`<`, `<th`, …) is held back until the next one tells.
///
/// One case cannot be decided while streaming: a reply whose first part is reasoning closed by
/// a `</think>` that was never opened (a chat template that opened the block in the prompt).
/// That part has already gone out as text when the `</think>` arrives; the whole reply, as the
/// stream's end gives it, is still split correctly.
#[derive(Debug, Default)]
pub(crate) struct ThinkSplitter {
    inside: bool,
    /// The end of the last delta that may be the start of a tag.
    held: String,
    text_started: bool,
}

impl ThinkSplitter {
    /// Takes one delta of the reply; what to pass on goes to `out`.
    pub(crate) fn push(&mut self, delta: Delta, out: &mut VecDeque<Delta>) {
        let Delta::Text(chunk) = delta else {
            out.push_back(delta);
            return;
        };
        let mut buffer = std::mem::take(&mut self.held);
        buffer.push_str(&chunk);
        let mut rest = buffer.as_str();
        loop {
            let tag = if self.inside { CLOSE } else { OPEN };
            if let Some(at) = rest.find(tag) {
                self.emit(&rest[..at], out);
                rest = &rest[at + tag.len()..];
                self.inside = !self.inside;
            } else {
                let keep = partial_tag_len(rest, tag);
                self.emit(&rest[..rest.len() - keep], out);
                self.held = rest[rest.len() - keep..].to_owned();
                return;
            }
        }
    }

    /// The reply ended: passes on what was held back as a possible tag.
    pub(crate) fn finish(&mut self, out: &mut VecDeque<Delta>) {
        let held = std::mem::take(&mut self.held);
        self.emit(&held, out);
        *self = Self::default();
    }

    fn emit(&mut self, piece: &str, out: &mut VecDeque<Delta>) {
        if piece.is_empty() {
            return;
        }
        if self.inside {
            out.push_back(Delta::Reasoning(piece.to_owned()));
            return;
        }
        let piece = if self.text_started {
            piece
        } else {
            piece.trim_start()
        };
        if !piece.is_empty() {
            out.push_back(Delta::Text(piece.to_owned()));
            self.text_started = true;
        }
    }
}

/// The length of the longest end of `text` that is a proper beginning of `tag`.
fn partial_tag_len(text: &str, tag: &str) -> usize {
    (1..tag.len())
        .rev()
        .find(|&n| {
            text.len() >= n && text.is_char_boundary(text.len() - n) && text.ends_with(&tag[..n])
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn think_blocks_are_stripped() {
        let cases = [
            ("<think>plan</think>Answer.", "Answer."),
            ("  <think>\na\n</think>\n\nAnswer. ", "Answer."),
            ("A<think>x</think>B<think>y</think>C", "ABC"),
            ("<think>only thinking, never closed", ""),
            ("<think>done</think>", ""),
            ("reasoning without an opening tag</think>Answer", "Answer"),
            ("Answer then <think>cut off", "Answer then"),
            ("No tags at all.", "No tags at all."),
        ];
        for (input, want) in cases {
            assert_eq!(strip_think(input), want, "input {input:?}");
        }
    }

    #[test]
    fn the_blocks_are_the_reasoning() {
        assert_eq!(
            split_think("<think> plan </think>A<think>more</think>B"),
            ("AB".to_owned(), Some("plan\n\nmore".to_owned()))
        );
        assert_eq!(
            split_think("before</think> after"),
            ("after".to_owned(), Some("before".to_owned()))
        );
        assert_eq!(split_think("plain"), ("plain".to_owned(), None));
        assert_eq!(split_think("<think> </think>x"), ("x".to_owned(), None));
    }

    /// Feeds `chunks` through a splitter; the text and the reasoning put together.
    fn stream(chunks: &[&str]) -> (String, String) {
        let mut splitter = ThinkSplitter::default();
        let mut out = VecDeque::new();
        for chunk in chunks {
            splitter.push(Delta::Text((*chunk).to_owned()), &mut out);
        }
        splitter.finish(&mut out);
        let (mut text, mut reasoning) = (String::new(), String::new());
        for delta in out {
            match delta {
                Delta::Text(t) => {
                    assert!(!t.is_empty());
                    text.push_str(&t);
                }
                Delta::Reasoning(r) => reasoning.push_str(&r),
                Delta::ToolCall(_) => unreachable!(),
            }
        }
        (text, reasoning)
    }

    #[test]
    fn tags_split_across_deltas_are_recognised() {
        assert_eq!(
            stream(&[
                "<thi",
                "nk>pl",
                "an</th",
                "ink>\n\nAns",
                "wer. <",
                "think>x"
            ]),
            ("Answer. ".to_owned(), "planx".to_owned())
        );
        assert_eq!(stream(&["a <", "b"]), ("a <b".to_owned(), String::new()));
        assert_eq!(
            stream(&["end <thi"]),
            ("end <thi".to_owned(), String::new())
        );
        assert_eq!(
            stream(&["é<", "/think>"]),
            ("é</think>".to_owned(), String::new())
        );
    }

    proptest! {
        /// However a reply is cut into deltas, the streamed text is the whole reply's text, up
        /// to whitespace at the end (for replies that do not begin with an unopened
        /// `</think>`), and a reply without tags keeps its deltas.
        #[test]
        fn streamed_text_is_the_whole_text(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just("<think>".to_owned()),
                    Just("</think>".to_owned()),
                    Just(" ".to_owned()),
                    Just("\n".to_owned()),
                    "[a-zé<>/ ]{0,6}",
                ],
                0..12,
            ),
            cuts in proptest::collection::vec(0usize..64, 0..8),
        ) {
            let reply: String = parts.concat();
            let leading_close = reply
                .find(CLOSE)
                .is_some_and(|close| !reply[..close].contains(OPEN));
            prop_assume!(!leading_close);
            let mut points: Vec<usize> = cuts
                .into_iter()
                .map(|c| c % (reply.len() + 1))
                .filter(|&c| reply.is_char_boundary(c))
                .collect();
            points.sort_unstable();
            points.dedup();
            let mut chunks = Vec::new();
            let mut from = 0;
            for at in points {
                chunks.push(&reply[from..at]);
                from = at;
            }
            chunks.push(&reply[from..]);
            let (text, _) = stream(&chunks);
            prop_assert_eq!(text.trim_end(), strip_think(&reply));
            if !reply.contains('<') && !reply.starts_with(char::is_whitespace) {
                let mut splitter = ThinkSplitter::default();
                let mut out = VecDeque::new();
                for chunk in &chunks {
                    splitter.push(Delta::Text((*chunk).to_owned()), &mut out);
                }
                splitter.finish(&mut out);
                let kept: Vec<Delta> = chunks
                    .iter()
                    .filter(|c| !c.is_empty())
                    .map(|c| Delta::Text((*c).to_owned()))
                    .collect();
                prop_assert_eq!(Vec::from(out), kept);
            }
        }
    }
}
