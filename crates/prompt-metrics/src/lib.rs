//! One metrics record per generation, appended to daily JSONL files, with aggregate queries.
//!
//! [`JsonlStore`] writes [`PromptMetrics`] records to `metrics_dir/metrics_YYYY-MM-DD.jsonl`
//! (the UTC day of each record) through a background appender, and answers the questions of
//! the Python original (the Python system promptkit derives from) — which agent, task, model or
//! template version is slow, failing or expensive — by streaming the files of the last N days on
//! all cores. Files written by the Python original's `MetricsCollector` read back; bad lines are
//! skipped and counted, never fatal. The HTML report's groupings (per UTC day, per agent/task)
//! come from the same aggregation, so every figure follows one percentile rule.
//!
//! A streamed reply's record also carries its time to first token and its tokens per second
//! ([`PromptMetrics::set_stream_timing`], the rule in [`tokens_per_second`]); the aggregates
//! give their p50/p95 time to first token over the streamed records only, `None` when there
//! are none. Lines without these fields (the Python original's, ours from before) read as
//! not streamed.
//!
//! ```
//! use prompt_metrics::{JsonlStore, MetricsSink, PromptMetrics};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let store = JsonlStore::open(dir.path())?;
//!
//! let mut m = PromptMetrics::new("3f2a", "writer", "write_chapter", "qwen3:30b", 0.8, 8500.0);
//! m.tokens_prompt = Some(1200);
//! m.tokens_completion = Some(2400);
//! // Streamed: first delta after 500 ms, reply complete after 8,500 ms.
//! m.set_stream_timing(Some(500.0), 8500.0);
//! store.record(m)?;
//! store.flush()?;
//!
//! let stats = store.agent_stats("writer", 7)?;
//! assert_eq!(stats.total_calls, 1);
//! assert_eq!(stats.success_rate, 1.0);
//! assert_eq!(stats.total_tokens_used, 3600);
//! assert_eq!(stats.p95_time_to_first_token_ms, Some(500.0));
//! assert_eq!(stats.avg_tokens_per_second, Some(300.0));
//!
//! let models = store.model_comparison(7)?;
//! assert_eq!(models[0].model, "qwen3:30b");
//! # Ok(())
//! # }
//! ```

mod error;
mod fine;
mod parse;
mod prices;
mod query;
mod record;
mod rollup;
mod stats;
mod store;
mod sum;
#[cfg(feature = "testdata")]
pub mod testdata;
mod writer;

pub use error::MetricsError;
pub use prices::{Price, PriceTable, SHIPPED_PRICES, TokenUsage, estimate_tokens};
pub use record::{PromptMetrics, tokens_per_second};
pub use stats::{
    AggregateStats, DayStats, ModelStats, Overview, ScanSummary, Spend, TagStats, TaskStats,
    TaskVersionStats, VersionStats,
};
pub use store::{JsonlStore, MetricsSink};
