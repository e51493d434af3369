//! [`ChatAgent`]: whole conversations from a client (no template) on the same cached,
//! single-flight, measured path as [`TemplateAgent`](crate::TemplateAgent).

use std::time::Instant;

use prompt_cache::CacheKey;

use crate::agent::GenerateOptions;
use crate::error::AgentError;
use crate::request::{ChatMessage, ChatRequest, RequestOptions};
use crate::stream::GenerationStream;
use crate::template_agent::{Call, Generation, TemplateAgent};

/// An agent that answers conversations given whole (an OpenAI-style `messages` list) through
/// the system's cache, single-flight, retry loop and metrics — the path of
/// [`TemplateAgent::generate_from_template`](crate::TemplateAgent::generate_from_template)
/// without the template. Its [`Generation`]s have `template_version` 0 and an empty
/// `template_hash`; their metrics records carry no template fields. Cheap to clone.
///
/// Made by [`PromptSystem::chat_agent`](crate::PromptSystem::chat_agent).
#[derive(Debug, Clone)]
pub struct ChatAgent {
    inner: TemplateAgent,
}

impl ChatAgent {
    pub(crate) fn new(inner: TemplateAgent) -> Self {
        Self { inner }
    }

    /// The agent's name (metrics `agent`).
    pub fn name(&self) -> &str {
        self.inner.name()
    }

    /// Streams replies from the provider (the system's `stream` setting) or asks for them
    /// whole, for this agent's calls ([`TemplateAgent::with_streaming`]).
    pub fn with_streaming(mut self, stream: bool) -> Self {
        self.inner = self.inner.with_streaming(stream);
        self
    }

    /// The request `messages` would be sent as and its cache key, without calling anything:
    /// the call's options over the agent's model over the defaults. A client's conversation
    /// goes upstream as the client sent it: no model quirks (such as qwen's ` /no_think`) and
    /// no agent temperature, so an option the client left out is the server's to choose.
    pub fn prepare(
        &self,
        messages: Vec<ChatMessage>,
        options: &GenerateOptions,
    ) -> (ChatRequest, CacheKey) {
        let model_only = RequestOptions {
            model: Some(self.inner.agent().model().to_owned()),
            ..RequestOptions::default()
        };
        let request = ChatRequest {
            messages,
            options: RequestOptions::layered(&options.request, None, &model_only),
        };
        let key = self.inner.cache_key_of(&request);
        (request, key)
    }

    /// Answers `messages`, recorded under this agent and `task`: a cache hit unless
    /// `options.no_cache`, else one provider call shared by identical concurrent calls, the
    /// validated reply stored, one metrics record (failed calls included).
    pub async fn chat(
        &self,
        messages: Vec<ChatMessage>,
        options: &GenerateOptions,
        task: &str,
    ) -> Result<Generation, AgentError> {
        let started = Instant::now();
        let (request, key) = self.prepare(messages, options);
        let call = Call {
            task,
            request: &request,
            key,
            template: None,
            started,
            replay_flag: None,
        };
        self.inner.run(&call, options, None).await
    }

    /// [`chat`](Self::chat) as a stream: deltas as they arrive (a hit replays the stored
    /// ones), then the [`Generation`]. Dropping the stream stops the call upstream; a reply
    /// that did not finish is never cached.
    pub fn chat_stream(
        &self,
        messages: Vec<ChatMessage>,
        options: &GenerateOptions,
        task: &str,
    ) -> GenerationStream<Generation> {
        let started = Instant::now();
        let (request, key) = self.prepare(messages, options);
        let inner = self.inner.clone();
        let (task, options) = (task.to_owned(), options.clone());
        GenerationStream::spawn_with_hit(move |events, flag| async move {
            let call = Call {
                task: &task,
                request: &request,
                key,
                template: None,
                started,
                replay_flag: Some(&flag),
            };
            inner.run(&call, &options, Some(&events)).await
        })
    }
}
