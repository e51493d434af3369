//! Aggregate results of queries.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

/// Aggregates over the records a query selected, with the Python original's field names.
///
/// Rates are fractions between 0 and 1; with no records every figure is 0 (the stream timing
/// figures, which the Python original does not have, are `None`).
/// Percentiles follow the Python original's rule: sort the latencies and take the element at index
/// `min(floor(n * p), n - 1)`; the time-to-first-token percentiles follow the same rule over the
/// records that have a time to first token.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AggregateStats {
    /// Number of records selected.
    pub total_calls: u64,
    /// Records whose validation passed and that carry no error.
    pub successful_calls: u64,
    /// `successful_calls / total_calls`.
    pub success_rate: f64,
    /// Mean latency in milliseconds.
    pub avg_latency_ms: f64,
    /// Median latency in milliseconds (the Python original's percentile rule).
    pub p50_latency_ms: f64,
    /// 95th percentile latency in milliseconds (the Python original's percentile rule).
    pub p95_latency_ms: f64,
    /// 99th percentile latency in milliseconds (the Python original's percentile rule).
    pub p99_latency_ms: f64,
    /// Smallest latency in milliseconds.
    #[serde(default)]
    pub min_latency_ms: f64,
    /// 25th percentile latency in milliseconds (the Python original's percentile rule).
    #[serde(default)]
    pub p25_latency_ms: f64,
    /// 75th percentile latency in milliseconds (the Python original's percentile rule).
    #[serde(default)]
    pub p75_latency_ms: f64,
    /// Largest latency in milliseconds.
    #[serde(default)]
    pub max_latency_ms: f64,
    /// Fraction of records whose validation passed.
    pub validation_pass_rate: f64,
    /// Mean retry count.
    pub avg_retries: f64,
    /// Fraction of records carrying an error.
    pub error_rate: f64,
    /// Fraction of records served from the cache.
    pub cache_hit_rate: f64,
    /// Mean response length in characters.
    pub avg_response_length: f64,
    /// `tokens_prompt + tokens_completion` (missing counts as 0).
    pub total_tokens_used: u64,
    /// Sum of prompt tokens.
    pub tokens_prompt: u64,
    /// Sum of completion tokens.
    pub tokens_completion: u64,
    /// Records with a time to first token (streamed replies); the two figures below are over
    /// these alone.
    #[serde(default)]
    pub streamed_calls: u64,
    /// Median time to first token in milliseconds, over the records that have one (the
    /// Python original's percentile rule); `None` when none has.
    #[serde(default)]
    pub p50_time_to_first_token_ms: Option<f64>,
    /// 95th percentile time to first token in milliseconds, over the records that have one
    /// (the Python original's percentile rule); `None` when none has.
    #[serde(default)]
    pub p95_time_to_first_token_ms: Option<f64>,
    /// Mean of the records' [`tokens_per_second`](crate::PromptMetrics::tokens_per_second),
    /// over the records that have it; `None` when none has.
    #[serde(default)]
    pub avg_tokens_per_second: Option<f64>,
    /// Sum of the records' `cost_usd` in USD (records without a price count 0; cache hits
    /// cost 0).
    #[serde(default)]
    pub total_cost_usd: f64,
    /// Sum of the records' `saved_usd` in USD: what cache hits saved.
    #[serde(default)]
    pub saved_usd: f64,
    /// Malformed, truncated or unknown-shaped lines skipped in the files the query read,
    /// whatever group they might have belonged to. Agent, task and version queries read in
    /// full only the lines that can hold the agent (those holding `"<agent>"` literally, or an
    /// escape), so they count the bad lines among those; model comparison and scan count every
    /// bad line.
    pub skipped_lines: u64,
    /// Files in the window that could not be opened or read to the end (the query went on
    /// without them).
    #[serde(default)]
    pub unreadable_files: u64,
}

/// One row of [`JsonlStore::model_comparison`](crate::JsonlStore::model_comparison).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelStats {
    /// The model name.
    pub model: String,
    /// Aggregates over the model's records.
    #[serde(flatten)]
    pub stats: AggregateStats,
}

/// One row of [`JsonlStore::version_comparison`](crate::JsonlStore::version_comparison).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VersionStats {
    /// The template version; `None` for records written without a template version.
    pub template_version: Option<u32>,
    /// Aggregates over the version's records.
    #[serde(flatten)]
    pub stats: AggregateStats,
}

/// One row of [`JsonlStore::daily_stats`](crate::JsonlStore::daily_stats): the records of one
/// UTC day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DayStats {
    /// The UTC day of the records' timestamps.
    pub day: NaiveDate,
    /// Aggregates over the day's records.
    #[serde(flatten)]
    pub stats: AggregateStats,
}

/// One row of [`JsonlStore::task_comparison`](crate::JsonlStore::task_comparison): the records
/// of one agent's task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskStats {
    /// The agent.
    pub agent: String,
    /// The task.
    pub task: String,
    /// Aggregates over the task's records.
    #[serde(flatten)]
    pub stats: AggregateStats,
}

/// One row of [`JsonlStore::tag_comparison`](crate::JsonlStore::tag_comparison): the records
/// carrying one tag (a record with two tags counts in both rows).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TagStats {
    /// The tag; `None` for the records without tags.
    pub tag: Option<String>,
    /// Aggregates over the tag's records.
    #[serde(flatten)]
    pub stats: AggregateStats,
}

/// What was spent since a moment (the start of the UTC day, for budgets), from
/// [`JsonlStore::spend_since`](crate::JsonlStore::spend_since): the sums of `cost_usd` in USD.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Spend {
    /// All records.
    pub total_usd: f64,
    /// Per agent.
    pub agents: std::collections::BTreeMap<String, f64>,
    /// Per tag.
    pub tags: std::collections::BTreeMap<String, f64>,
}

/// One row of [`Overview::versions`]: the records of one template version of one agent's task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskVersionStats {
    /// The agent.
    pub agent: String,
    /// The task.
    pub task: String,
    /// The template version; `None` for records written without a template version.
    pub template_version: Option<u32>,
    /// Aggregates over the version's records.
    #[serde(flatten)]
    pub stats: AggregateStats,
}

/// Every grouping of one window at once, from one pass over the files
/// ([`JsonlStore::overview`](crate::JsonlStore::overview)); each row is computed exactly as the
/// query of its own grouping computes it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Overview {
    /// All records of the window.
    pub total: AggregateStats,
    /// Per UTC day with records, days ascending (as [`JsonlStore::daily_stats`](crate::JsonlStore::daily_stats)).
    pub days: Vec<DayStats>,
    /// Per model (as [`JsonlStore::model_comparison`](crate::JsonlStore::model_comparison)).
    pub models: Vec<ModelStats>,
    /// Per agent and task (as [`JsonlStore::task_comparison`](crate::JsonlStore::task_comparison)).
    pub tasks: Vec<TaskStats>,
    /// Per agent, task and template version: agents and tasks ascending, then versions as in
    /// [`JsonlStore::version_comparison`](crate::JsonlStore::version_comparison).
    pub versions: Vec<TaskVersionStats>,
}

/// What [`JsonlStore::scan`](crate::JsonlStore::scan) went through.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanSummary {
    /// Records in the window handed to the closure.
    pub records: u64,
    /// Malformed, truncated or unknown-shaped lines skipped.
    pub skipped_lines: u64,
    /// Files opened and read.
    pub files: u64,
    /// Files in the window that could not be opened or read to the end.
    pub unreadable_files: u64,
}
