//! Reading one line of a metrics file into the fields the queries need.

use std::borrow::Cow;

use serde::Deserialize;

use crate::record::parse_timestamp;

/// The fields of one line the queries aggregate over; strings borrow from the line when
/// they hold no escapes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rec<'a> {
    pub(crate) agent: Cow<'a, str>,
    pub(crate) task: Cow<'a, str>,
    pub(crate) model: Cow<'a, str>,
    /// Seconds since the Unix epoch (UTC).
    pub(crate) secs: i64,
    /// Nanoseconds within the second.
    pub(crate) nanos: u32,
    pub(crate) latency_ms: f64,
    pub(crate) tokens_prompt: Option<u64>,
    pub(crate) tokens_completion: Option<u64>,
    pub(crate) cache_hit: bool,
    pub(crate) validation_passed: bool,
    pub(crate) retry_count: u32,
    pub(crate) has_error: bool,
    pub(crate) response_length: u64,
    pub(crate) template_version: Option<u32>,
}

fn default_true() -> bool {
    true
}

/// The shape a line must have: the same as [`crate::PromptMetrics`], strings borrowed.
#[derive(Deserialize)]
struct SerdeRec<'a> {
    #[serde(borrow)]
    #[allow(dead_code)]
    prompt_hash: Cow<'a, str>,
    #[serde(borrow)]
    agent: Cow<'a, str>,
    #[serde(borrow)]
    task: Cow<'a, str>,
    #[serde(borrow)]
    model: Cow<'a, str>,
    #[allow(dead_code)]
    temperature: f64,
    #[serde(borrow)]
    timestamp: Cow<'a, str>,
    latency_ms: f64,
    #[serde(default)]
    tokens_prompt: Option<u64>,
    #[serde(default)]
    tokens_completion: Option<u64>,
    #[serde(default)]
    cache_hit: bool,
    #[serde(default = "default_true")]
    validation_passed: bool,
    #[serde(default)]
    retry_count: u32,
    #[serde(default, borrow)]
    error: Option<Cow<'a, str>>,
    #[serde(default)]
    response_length: u64,
    #[serde(default, borrow)]
    #[allow(dead_code)]
    language_detected: Option<Cow<'a, str>>,
    #[serde(default)]
    template_version: Option<u32>,
    #[serde(default, borrow)]
    #[allow(dead_code)]
    template_hash: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    #[allow(dead_code)]
    provider: Option<Cow<'a, str>>,
}

/// Reads one line (without its newline) with serde; `None` when the line is not a record.
pub(crate) fn parse_line_serde(line: &[u8]) -> Option<Rec<'_>> {
    let r: SerdeRec<'_> = serde_json::from_slice(line).ok()?;
    let (secs, nanos) = parse_timestamp(r.timestamp.as_bytes())?;
    Some(Rec {
        agent: r.agent,
        task: r.task,
        model: r.model,
        secs,
        nanos,
        latency_ms: r.latency_ms,
        tokens_prompt: r.tokens_prompt,
        tokens_completion: r.tokens_completion,
        cache_hit: r.cache_hit,
        validation_passed: r.validation_passed,
        retry_count: r.retry_count,
        has_error: r.error.is_some(),
        response_length: r.response_length,
        template_version: r.template_version,
    })
}

/// Reads one line (without its newline); `None` when the line is not a record.
pub(crate) fn parse_line(line: &[u8]) -> Option<Rec<'_>> {
    parse_line_serde(line)
}

/// Whether a line holds nothing but whitespace (such lines are neither records nor errors).
pub(crate) fn is_blank(line: &[u8]) -> bool {
    line.iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
}
