//! An offline provider for dry runs and CI of templates: answers deterministically from the
//! request, with no network.

use std::time::Instant;

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use super::Provider;
use crate::error::ProviderError;
use crate::request::{ChatRequest, ChatResponse};

/// Filler appended until the reply reaches the request's `min_length`.
const FILLER: &str = " This is an offline echo reply.";
/// Lines of the user prompt quoted in the reply.
const QUOTED_LINES: usize = 3;
/// Characters kept of each quoted line.
const QUOTED_LINE_CHARS: usize = 200;

/// An offline provider that builds its reply from the request: a header with the model and a
/// short hash of the messages, then the first lines of the last user message, padded so the
/// reply honours the request's `min_length` (and cut to its `max_length`).
///
/// The same request always gets the same reply. It is only used when chosen explicitly
/// (`ProviderKind::Echo`); it is meant for dry runs of templates and for CI.
#[derive(Debug, Clone, Default)]
pub struct EchoProvider;

impl EchoProvider {
    /// A new echo provider.
    pub fn new() -> Self {
        Self
    }

    /// The reply [`chat`](Provider::chat) gives for `request`.
    pub fn reply(request: &ChatRequest) -> String {
        let mut hasher = Sha256::new();
        for m in &request.messages {
            hasher.update(m.role.as_str().as_bytes());
            hasher.update([0]);
            hasher.update(m.content.as_bytes());
            hasher.update([0]);
        }
        let digest = hex::encode(&hasher.finalize()[..4]);
        let mut text = format!("[echo] model={} request={digest}", request.model());
        if let Some(user) = request.last_user_message() {
            for line in user
                .content
                .lines()
                .filter(|l| !l.trim().is_empty())
                .take(QUOTED_LINES)
            {
                text.push('\n');
                text.extend(line.trim_end().chars().take(QUOTED_LINE_CHARS));
            }
        }
        let min = request.options.min_length.unwrap_or(0);
        let mut len = text.chars().count();
        while len < min {
            text.push_str(FILLER);
            len += FILLER.len();
        }
        if let Some(max) = request.options.max_length
            && len > max
        {
            text = text.chars().take(max).collect();
        }
        if request.options.format.is_some() {
            // Keep the reply valid JSON when JSON was asked for.
            return serde_json::json!({ "echo": text }).to_string();
        }
        text
    }
}

#[async_trait]
impl Provider for EchoProvider {
    fn name(&self) -> &str {
        "echo"
    }

    fn is_local(&self) -> bool {
        true
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        let started = Instant::now();
        let content = Self::reply(request);
        let prompt_chars: usize = request
            .messages
            .iter()
            .map(|m| m.content.chars().count())
            .sum();
        Ok(ChatResponse {
            tokens_prompt: Some(prompt_chars.div_ceil(4) as u64),
            tokens_completion: Some(content.chars().count().div_ceil(4) as u64),
            content,
            model: request.model().to_owned(),
            finish_reason: Some("stop".to_owned()),
            latency: started.elapsed(),
            ..ChatResponse::default()
        })
    }

    async fn list_models(&self) -> Result<Vec<String>, ProviderError> {
        Ok(vec!["echo".to_owned()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::ChatMessage;

    fn request(user: &str) -> ChatRequest {
        ChatRequest::new(
            "m1",
            vec![ChatMessage::system("sys"), ChatMessage::user(user)],
        )
    }

    #[test]
    fn reply_is_deterministic_and_quotes_the_prompt() {
        let r = request("line one\n\nline two\nline three\nline four");
        let a = EchoProvider::reply(&r);
        assert_eq!(a, EchoProvider::reply(&r));
        assert!(a.starts_with("[echo] model=m1 request="), "{a}");
        assert!(a.contains("line one\nline two\nline three"), "{a}");
        assert!(!a.contains("line four"), "{a}");
        assert_ne!(a, EchoProvider::reply(&request("other")));
    }

    #[test]
    fn reply_honours_min_and_max_length() {
        for min in [0, 10, 100, 1000, 5000] {
            let mut r = request("hi");
            r.options.min_length = Some(min);
            assert!(EchoProvider::reply(&r).chars().count() >= min, "min {min}");
        }
        let mut r = request("hi");
        r.options.min_length = Some(500);
        r.options.max_length = Some(600);
        let n = EchoProvider::reply(&r).chars().count();
        assert!((500..=600).contains(&n), "{n}");
    }

    #[test]
    fn json_requests_get_json() {
        let mut r = request("hi");
        r.options.format = Some(crate::request::ResponseFormat::Json);
        let v: serde_json::Value = serde_json::from_str(&EchoProvider::reply(&r)).expect("json");
        assert!(v["echo"].as_str().is_some_and(|s| s.contains("hi")));
    }
}
