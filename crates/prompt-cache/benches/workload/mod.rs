//! The request and entry every cache bench and the profiling driver use: a 1.5 KB system
//! prompt, a 2 KB user prompt and a ~2 KB response, written once here (`mod workload;` in a
//! bench, `#[path]` from the example).

// Each bench uses the part it needs.
#![allow(dead_code)]

use std::sync::Arc;

use prompt_cache::{CacheKey, CacheKeyBuilder, CachedResponse};
use serde_json::json;

/// The system prompt (1,536 bytes).
pub(crate) fn system_prompt() -> String {
    "You are the Writer, a novelist who writes vivid, coherent chapters. ".repeat(23)[..1536]
        .to_owned()
}

/// The `i`-th user prompt (2,048 bytes).
pub(crate) fn user_prompt(i: u64) -> String {
    let mut s = format!("Write chapter {i}. ");
    while s.len() < 2048 {
        s.push_str("The heroine crosses the river at dawn and meets the ferryman. ");
    }
    s.truncate(2048);
    s
}

/// The request's key, from a builder that already holds the system message (so a bench can
/// start from a reused prefix).
pub(crate) fn finish_key(builder: CacheKeyBuilder, user: &str) -> CacheKey {
    builder
        .provider("ollama")
        .model("qwen3:30b")
        .message("user", user)
        .temperature(Some(0.8))
        .max_tokens(Some(4096))
        .seed(None)
        .option("top_p", &json!(0.9))
        .option("num_ctx", &json!(8192))
        .finish()
}

/// The whole request's key.
pub(crate) fn request_key(system: &str, user: &str) -> CacheKey {
    finish_key(CacheKey::builder("writer").message("system", system), user)
}

/// Keys of `n` requests with the same system prompt.
pub(crate) fn keys(n: u64) -> Vec<CacheKey> {
    let system = system_prompt();
    (0..n)
        .map(|i| request_key(&system, &user_prompt(i)))
        .collect()
}

/// The response (~2 KB).
pub(crate) fn response() -> Arc<str> {
    "The morning sun rose over the valley. ".repeat(54).into()
}

/// An entry of `key` holding `response`.
pub(crate) fn entry(key: CacheKey, response: &Arc<str>) -> CachedResponse {
    let mut e = CachedResponse::new(key, response.clone(), "qwen3:30b");
    e.provider = Some("ollama".to_owned());
    e.temperature = Some(0.8);
    e.tokens_prompt = Some(900);
    e.tokens_completion = Some(500);
    e
}
