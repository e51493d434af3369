//! CacheKey: stability under reordering, and a change for every field that affects output.

use std::collections::HashSet;

use prompt_cache::{CacheKey, CacheKeyBuilder};
use serde_json::json;

/// A fully specified request; each case below changes exactly one thing.
fn base() -> CacheKeyBuilder {
    CacheKey::builder("writer")
        .provider("ollama")
        .model("qwen3:30b")
        .message("system", "You are the Writer.")
        .message("user", "Write chapter 1.")
        .temperature(Some(0.8))
        .max_tokens(Some(4096))
        .seed(Some(7))
        .stop(&["END".to_owned()])
        .response_format(Some(&json!({"type": "json_object"})))
        .option("top_p", &json!(0.9))
}

#[test]
fn same_request_same_key_and_hex_round_trip() {
    let a = base().finish();
    let b = base().finish();
    assert_eq!(a, b);
    let hex = a.to_hex();
    assert_eq!(hex.len(), 64);
    assert!(
        hex.bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    );
    assert_eq!(a.to_string(), hex);
    assert_eq!(hex.parse::<CacheKey>(), Ok(a));
    let json = serde_json::to_string(&a).expect("serialize");
    assert_eq!(json, format!("\"{hex}\""));
    assert_eq!(
        serde_json::from_str::<CacheKey>(&json).expect("deserialize"),
        a
    );
}

#[test]
fn bad_hex_is_rejected() {
    for bad in [
        "",
        "abc",
        &"g".repeat(64),
        &"A".repeat(64),
        &"0".repeat(63),
        &"0".repeat(65),
    ] {
        let err = bad.parse::<CacheKey>().expect_err(bad);
        assert!(err.to_string().contains("64 lowercase hex"), "{err}");
    }
    assert!(serde_json::from_str::<CacheKey>("\"xyz\"").is_err());
}

#[test]
fn option_order_and_setter_order_do_not_matter() {
    let a = CacheKey::builder("ns")
        .model("m")
        .option("b", &json!(1))
        .option("a", &json!(2))
        .temperature(Some(0.5))
        .message("user", "hi")
        .finish();
    let b = CacheKey::builder("ns")
        .message("user", "hi")
        .temperature(Some(0.5))
        .option("a", &json!(2))
        .option("b", &json!(1))
        .model("m")
        .finish();
    assert_eq!(a, b);
}

#[test]
fn json_object_key_order_and_number_spelling_do_not_matter() {
    let one: serde_json::Value = serde_json::from_str(
        r#"{"type":"json_schema","schema":{"b":[1,{"y":2,"x":1.0}],"a":null}}"#,
    )
    .expect("json");
    let two: serde_json::Value = serde_json::from_str(
        r#"{"schema":{"a":null,"b":[1.0,{"x":1,"y":2e0}]},"type":"json_schema"}"#,
    )
    .expect("json");
    let k = |v: &serde_json::Value| {
        CacheKey::builder("ns")
            .response_format(Some(v))
            .option("o", v)
            .finish()
    };
    assert_eq!(k(&one), k(&two));
    // Array order does matter.
    let three: serde_json::Value =
        serde_json::from_str(r#"{"schema":{"a":null,"b":[{"x":1,"y":2},1]},"type":"json_schema"}"#)
            .expect("json");
    assert_ne!(k(&one), k(&three));
}

#[test]
fn every_field_changes_the_key() {
    let cases: Vec<(&str, CacheKey)> = vec![
        ("base", base().finish()),
        ("namespace", {
            CacheKey::builder("editor")
                .provider("ollama")
                .model("qwen3:30b")
                .message("system", "You are the Writer.")
                .message("user", "Write chapter 1.")
                .temperature(Some(0.8))
                .max_tokens(Some(4096))
                .seed(Some(7))
                .stop(&["END".to_owned()])
                .response_format(Some(&json!({"type": "json_object"})))
                .option("top_p", &json!(0.9))
                .finish()
        }),
        ("provider", base().provider("openai").finish()),
        ("model", base().model("llama3").finish()),
        ("extra message", base().message("user", "again").finish()),
        ("temperature", base().temperature(Some(0.7)).finish()),
        ("temperature none", base().temperature(None).finish()),
        ("temperature zero", base().temperature(Some(0.0)).finish()),
        ("max_tokens", base().max_tokens(Some(4095)).finish()),
        ("max_tokens none", base().max_tokens(None).finish()),
        ("max_tokens zero", base().max_tokens(Some(0)).finish()),
        ("seed", base().seed(Some(8)).finish()),
        ("seed none", base().seed(None).finish()),
        ("seed zero", base().seed(Some(0)).finish()),
        ("stop", base().stop(&["STOP".to_owned()]).finish()),
        ("stop none", base().stop(&[]).finish()),
        (
            "stop two",
            base().stop(&["END".to_owned(), "X".to_owned()]).finish(),
        ),
        (
            "format",
            base()
                .response_format(Some(&json!({"type": "text"})))
                .finish(),
        ),
        ("format none", base().response_format(None).finish()),
        (
            "option value",
            base().option("top_p", &json!(0.95)).finish(),
        ),
        (
            "option string",
            base().option("top_p", &json!("0.9")).finish(),
        ),
        (
            "other option",
            base().option("num_ctx", &json!(8192)).finish(),
        ),
    ];
    let mut seen = HashSet::new();
    for (name, key) in &cases {
        assert!(
            seen.insert(*key),
            "case {name:?} collides with an earlier case"
        );
    }
}

#[test]
fn messages_roles_order_and_boundaries_matter() {
    let k = |msgs: &[(&str, &str)]| {
        msgs.iter()
            .fold(CacheKey::builder("ns"), |b, (r, c)| b.message(r, c))
            .finish()
    };
    let cases = [
        k(&[("system", "A"), ("user", "B")]),
        k(&[("user", "B"), ("system", "A")]),
        k(&[("user", "A"), ("user", "B")]),
        k(&[("system", "AB")]),
        k(&[("system", "A"), ("user", "")]),
        k(&[("system", "A")]),
        k(&[("system", "Au"), ("ser", "B")]),
        k(&[]),
    ];
    let distinct: HashSet<_> = cases.iter().collect();
    assert_eq!(distinct.len(), cases.len());
    // A changed system prompt changes the key (the Python original's stale-answer bug).
    assert_ne!(
        k(&[("system", "You are the Writer."), ("user", "Go")]),
        k(&[("system", "You are the Editor."), ("user", "Go")])
    );
    // Namespace and content cannot run into each other.
    assert_ne!(
        CacheKey::builder("ab").message("c", "d").finish(),
        CacheKey::builder("a").message("bc", "d").finish()
    );
}

#[test]
fn known_answer_is_stable_across_releases() {
    // Changing this value invalidates every cache on disk: bump the encoding's version tag.
    // The value was checked against an independent implementation of the documented encoding:
    // sha256(b"promptkit.cache-key.v1\0" + b"N" + L(b"ns") + b"m" + L(b"user") + L(b"hi")
    //        + b"E" + u64(1) + b"P\0" + b"M\1" + L(b"m") + b"T\0" + b"X\0" + b"S\0"
    //        + b"s" + u64(0) + b"F\0" + b"O" + u64(0)), where L(s) = u64(len(s)) + s, u64 little-endian.
    let key = CacheKey::builder("ns")
        .model("m")
        .message("user", "hi")
        .finish();
    let again = CacheKey::builder("ns")
        .message("user", "hi")
        .model("m")
        .finish();
    assert_eq!(key, again);
    assert_eq!(key.to_hex(), KNOWN);
}

const KNOWN: &str = "0b2f5c42df18f0ef816aeb5d99e80eae023bf05cbfcb89ba466a1e7cab902bc9";

mod prefix_reuse {
    use prompt_cache::{CacheKey, CacheKeyPrefixes};
    use proptest::prelude::*;

    /// System prompts that share most of their bytes (long, short, one letter apart, one byte
    /// longer), so a state kept for one must never serve another.
    fn system(i: usize) -> String {
        let long = "You are the Writer of a long story. Keep the voice. ".repeat(40);
        match i {
            0 => long,
            1 => long.replacen("Writer", "Editor", 1),
            2 => format!("{long} "),
            3 => "You are brief.".to_owned(),
            4 => long.replace('.', "!"),
            _ => String::new(),
        }
    }

    #[derive(Debug, Clone)]
    struct Request {
        namespace: usize,
        first_role: usize,
        system: usize,
        rest: Vec<(usize, String)>,
        temperature: Option<f64>,
    }

    fn request() -> impl Strategy<Value = Request> {
        (
            0..2usize,
            0..3usize,
            0..6usize,
            prop::collection::vec((0..3usize, ".{0,40}"), 0..4),
            prop::option::of(0.0..2.0f64),
        )
            .prop_map(
                |(namespace, first_role, system, rest, temperature)| Request {
                    namespace,
                    first_role,
                    system,
                    rest,
                    temperature,
                },
            )
    }

    const ROLES: [&str; 3] = ["system", "user", "assistant"];
    const NAMESPACES: [&str; 2] = ["writer", "writer2"];

    proptest! {
        #[test]
        fn prefix_reused_keys_equal_plain_keys(
            requests in prop::collection::vec(request(), 1..40),
            capacity in 0..4usize,
        ) {
            let prefixes = CacheKeyPrefixes::new(capacity);
            for r in &requests {
                let (ns, role, sys) = (NAMESPACES[r.namespace], ROLES[r.first_role], system(r.system));
                let mut reused = prefixes.builder(ns, role, &sys).temperature(r.temperature);
                let mut plain = CacheKey::builder(ns).temperature(r.temperature).message(role, &sys);
                for (role, content) in &r.rest {
                    reused = reused.message(ROLES[*role], content);
                    plain = plain.message(ROLES[*role], content);
                }
                prop_assert_eq!(reused.finish(), plain.finish(), "{:?}", r);
            }
        }
    }
}
