//! Properties over open-ended inputs: think stripping, backoff bounds, Retry-After parsing.

use std::time::Duration;

use prompt_agent::{RetryPolicy, check_length, parse_retry_after, strip_think};
use proptest::prelude::*;

fn text_with_tags() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("<think>".to_owned()),
            Just("</think>".to_owned()),
            Just("<thi".to_owned()),
            "[a-zA-Z ß\n]{0,8}",
        ],
        0..12,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #[test]
    fn stripped_text_has_no_think_blocks_and_is_stable(text in text_with_tags()) {
        let out = strip_think(&text);
        prop_assert!(!out.contains("<think>"), "{out:?}");
        prop_assert_eq!(out.trim(), out.as_str());
        // Stripping what is left changes nothing more unless a stray closing tag remains.
        if !out.contains("</think>") {
            prop_assert_eq!(strip_think(&out), out.clone());
        }
        prop_assert!(out.len() <= text.len());
    }

    #[test]
    fn text_without_tags_is_only_trimmed(text in "[a-z \n]{0,40}") {
        prop_assert_eq!(strip_think(&text), text.trim());
    }

    #[test]
    fn length_check_agrees_with_char_count(text in "\\PC{0,30}", min in 0usize..40, max in proptest::option::of(0usize..40)) {
        let n = text.chars().count();
        let ok = n >= min && max.is_none_or(|m| n <= m);
        prop_assert_eq!(check_length(&text, min, max).is_ok(), ok);
    }

    #[test]
    fn delays_stay_within_bounds(attempt in 1u32..100, base_ms in 0u64..2000, max_ms in 0u64..60_000, after_ms in proptest::option::of(0u64..500_000), cap_ms in 0u64..120_000) {
        let policy = RetryPolicy {
            backoff_base: Duration::from_millis(base_ms),
            backoff_max: Duration::from_millis(max_ms),
            retry_after_cap: Duration::from_millis(cap_ms),
            ..RetryPolicy::default()
        };
        let retry_after = after_ms.map(Duration::from_millis);
        let delay = policy.delay(attempt, retry_after);
        prop_assert!(delay <= Duration::from_millis(max_ms.max(cap_ms)), "{delay:?}");
        if let Some(after) = retry_after {
            prop_assert!(delay >= after.min(Duration::from_millis(cap_ms)));
        }
    }

    #[test]
    fn retry_after_never_panics(value in "\\PC{0,40}") {
        let _ = parse_retry_after(&value);
    }

    #[test]
    fn retry_after_seconds_round_trip(secs in 0u64..1_000_000) {
        prop_assert_eq!(parse_retry_after(&secs.to_string()), Some(Duration::from_secs(secs)));
    }
}

mod key_prefix_reuse {
    use prompt_agent::{ChatMessage, ChatRequest, Role, ToolCall};
    use prompt_cache::CacheKeyPrefixes;
    use proptest::prelude::*;
    use serde_json::json;

    /// System prompts that share most of their bytes, so a state kept for one must never serve
    /// another: a long one, one letter changed, one byte longer, a short one, an empty one.
    fn system(i: usize) -> String {
        let long =
            "You are the Writer. Keep the voice of the story, its tense and names. ".repeat(50);
        match i {
            0 => long,
            1 => long.replacen("Writer", "Editor", 1),
            2 => format!("{long}\n"),
            3 => "You are brief.".to_owned(),
            _ => String::new(),
        }
    }

    const ROLES: [Role; 4] = [Role::System, Role::User, Role::Assistant, Role::Tool];

    fn message() -> impl Strategy<Value = ChatMessage> {
        (0..4usize, "\\PC{0,30}", any::<bool>(), any::<bool>()).prop_map(
            |(role, content, call, id)| ChatMessage {
                role: ROLES[role],
                content,
                tool_calls: if call {
                    vec![ToolCall {
                        id: "call_1".to_owned(),
                        name: "lookup".to_owned(),
                        arguments: json!({"q": "x"}),
                    }]
                } else {
                    Vec::new()
                },
                tool_call_id: id.then(|| "call_1".to_owned()),
            },
        )
    }

    fn request() -> impl Strategy<Value = ChatRequest> {
        (
            0..5usize,
            0..4usize,
            any::<bool>(),
            prop::collection::vec(message(), 0..4),
            prop::option::of(0.0..2.0f64),
            prop::option::of(1..10_000u64),
            prop::option::of(0..100usize),
            "[a-z0-9:]{0,12}",
        )
            .prop_map(
                |(sys, first_role, first_has_call, rest, temperature, max_tokens, min, model)| {
                    let mut first = ChatMessage {
                        role: ROLES[first_role],
                        content: system(sys),
                        tool_calls: Vec::new(),
                        tool_call_id: None,
                    };
                    if first_has_call {
                        first.tool_call_id = Some("call_0".to_owned());
                    }
                    let mut messages = vec![first];
                    messages.extend(rest);
                    let mut r = ChatRequest::new(model, messages);
                    r.options.temperature = temperature;
                    r.options.max_tokens = max_tokens;
                    r.options.min_length = min;
                    r
                },
            )
    }

    proptest! {
        #[test]
        fn prefix_reused_keys_equal_plain_keys(
            requests in prop::collection::vec(request(), 1..30),
            capacity in 0..3usize,
            empty in any::<bool>(),
        ) {
            let prefixes = CacheKeyPrefixes::new(capacity);
            for mut r in requests {
                if empty {
                    r.messages.clear();
                }
                for (ns, provider) in [("promptkit", "ollama"), ("other", "openai")] {
                    prop_assert_eq!(
                        r.cache_key_reusing(ns, provider, &prefixes),
                        r.cache_key(ns, provider),
                        "{:?}", r
                    );
                }
            }
        }
    }
}
