//! `JsonlStore`: daily JSONL files, a background appender and aggregate queries.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Datelike, NaiveDate, Utc};

use crate::query::{self, Select};
use crate::rollup::{self, Rollups};
use crate::writer::Writer;
use crate::{
    AggregateStats, DayStats, MetricsError, ModelStats, Overview, PromptMetrics, ScanSummary,
    Spend, TagStats, TaskStats, VersionStats,
};

/// Where metrics records go. Implemented by [`JsonlStore`]; shared as `Arc<dyn MetricsSink>`.
pub trait MetricsSink: Send + Sync + fmt::Debug {
    /// Queues one record for writing. Does not wait for the disk, but waits for room when the
    /// writer has fallen behind (a record is never dropped).
    fn record(&self, metrics: PromptMetrics) -> Result<(), MetricsError>;
    /// Returns once every record queued so far is written to its file (handed to the OS), or
    /// reports the first write error since the previous flush.
    fn flush(&self) -> Result<(), MetricsError>;
    /// What the records from `since` to now cost, for budgets; `None` when the sink cannot
    /// tell (the default), in which case budgets cannot be checked against it.
    /// [`JsonlStore`] answers from its files ([`JsonlStore::spend_since`]), so every process
    /// writing to one metrics directory shares the spend.
    fn spend_since(&self, since: DateTime<Utc>) -> Result<Option<Spend>, MetricsError> {
        let _ = since;
        Ok(None)
    }
}

type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// Metrics in `metrics_dir/metrics_YYYY-MM-DD.jsonl` (UTC day of each record), one JSON object
/// a line.
///
/// Writing: [`MetricsSink::record`] hands the record to a background thread (started on the
/// first record) that appends whole lines on a file opened for append, holding an advisory
/// `flock` on the day file from its "does the file end mid-line?" check to the end of the
/// append, so lines from many threads and processes neither interleave nor leave empty lines;
/// a line torn by a killed writer is ended before the next append. Dropping the store flushes.
///
/// Reading: queries cover the records whose timestamp lies within the last `days * 24` hours
/// (from `now - days * 24h` to `now`, both included) and open only the files whose date can
/// hold such records. They stream the files in large chunks on all cores, read only the fields
/// they need (agent queries pass over lines that cannot name the agent without reading them in
/// full), and skip and count lines that are not records (see
/// [`AggregateStats::skipped_lines`]).
///
/// Rollups: a query reads each closed UTC day (before today by the store's clock) from a
/// summary beside its file, `metrics_YYYY-MM-DD.rollup`, built by the first query that needs
/// it and rebuilt when the day's file changes (its size or modification time); the figures are
/// exactly those of a scan of the file. Today's file is scanned by the first query; from the
/// second on, the store keeps it summarized in memory and reads only the lines appended since
/// (a file replaced or cut short is read again whole). A day the window cuts through, and a
/// day whose rollup is missing, stale or corrupt and cannot be rebuilt (a read-only directory)
/// are scanned. [`JsonlStore::with_rollups`] turns all of this off.
pub struct JsonlStore {
    dir: PathBuf,
    clock: Clock,
    writer: OnceLock<Result<Writer, String>>,
    rollups: Option<Rollups>,
}

impl fmt::Debug for JsonlStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonlStore")
            .field("dir", &self.dir)
            .field("writer_started", &self.writer.get().is_some())
            .finish_non_exhaustive()
    }
}

impl JsonlStore {
    /// A store over `metrics_dir`. Nothing is created until the first record is written; a
    /// missing directory simply holds no records.
    pub fn open(metrics_dir: impl AsRef<Path>) -> Result<Self, MetricsError> {
        let dir = metrics_dir.as_ref().to_path_buf();
        if dir.exists() && !dir.is_dir() {
            return Err(MetricsError::io(
                "not a directory:",
                &dir,
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "expected a directory"),
            ));
        }
        Ok(JsonlStore {
            dir,
            clock: Arc::new(Utc::now),
            writer: OnceLock::new(),
            rollups: Some(Rollups::default()),
        })
    }

    /// Whether queries read closed days from rollups (the default) or scan every file.
    /// Either way they give the same figures; without rollups nothing but the daily files is
    /// read or written.
    pub fn with_rollups(mut self, enabled: bool) -> Self {
        self.rollups = enabled.then(Rollups::default);
        self
    }

    /// Builds (or rebuilds) the rollup of one closed UTC day from its daily file and writes it
    /// beside the file, whatever rollup was there; queries do this by themselves when they
    /// need one. Returns whether a rollup was written: `false` for today or a later day (always
    /// scanned), a day without a file, or a file that could not be read whole or changed while
    /// it was read.
    pub fn rebuild_rollup(&self, day: NaiveDate) -> Result<bool, MetricsError> {
        if day >= self.now().date_naive() {
            return Ok(false);
        }
        let Some((_, path)) = list_files(&self.dir)?.into_iter().find(|(d, _)| *d == day) else {
            return Ok(false);
        };
        match &self.rollups {
            Some(rollups) => Ok(rollups.rebuild(&path)),
            None => Ok(Rollups::default().rebuild(&path)),
        }
    }

    /// Replaces the clock that queries and cleanup take "now" from (for tests and replays).
    pub fn with_clock(mut self, clock: impl Fn() -> DateTime<Utc> + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The metrics directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The current time by the store's clock.
    pub fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    /// Aggregates over one agent's records of the last `days` days.
    pub fn agent_stats(&self, agent: &str, days: u32) -> Result<AggregateStats, MetricsError> {
        let out = self.query(days, &Select::Agent(agent))?;
        Ok(out.single())
    }

    /// Aggregates over one agent's records for one task, last `days` days.
    pub fn task_stats(
        &self,
        agent: &str,
        task: &str,
        days: u32,
    ) -> Result<AggregateStats, MetricsError> {
        let out = self.query(days, &Select::Task(agent, task))?;
        Ok(out.single())
    }

    /// One row per model over the last `days` days, most calls first (ties by model name).
    pub fn model_comparison(&self, days: u32) -> Result<Vec<ModelStats>, MetricsError> {
        let out = self.query(days, &Select::Models)?;
        Ok(out.models())
    }

    /// One row per template version of an agent's task over the last `days` days, for A/B
    /// comparison: versions ascending, then records written without a template version
    /// (`template_version: None`) last.
    pub fn version_comparison(
        &self,
        agent: &str,
        task: &str,
        days: u32,
    ) -> Result<Vec<VersionStats>, MetricsError> {
        let out = self.query(days, &Select::Versions(agent, task))?;
        Ok(out.versions())
    }

    /// One row per UTC day that has records in the last `days` days, days ascending.
    pub fn daily_stats(&self, days: u32) -> Result<Vec<DayStats>, MetricsError> {
        let out = self.query(days, &Select::Days)?;
        Ok(out.days())
    }

    /// One row per agent and task over the last `days` days, agents then tasks ascending.
    pub fn task_comparison(&self, days: u32) -> Result<Vec<TaskStats>, MetricsError> {
        let out = self.query(days, &Select::Tasks)?;
        Ok(out.tasks())
    }

    /// Every grouping of the last `days` days from one pass over the files: all records, per
    /// UTC day, per model, per agent and task, and per template version of each task. Each row
    /// equals the one the grouping's own query returns ([`Self::daily_stats`],
    /// [`Self::model_comparison`], [`Self::task_comparison`], [`Self::version_comparison`]),
    /// apart from `skipped_lines`, which here counts every bad line of the window's files.
    pub fn overview(&self, days: u32) -> Result<Overview, MetricsError> {
        let out = self.query(days, &Select::Overview)?;
        Ok(out.overview())
    }

    /// One row per tag over the last `days` days, tags ascending, then the records without
    /// tags (`tag: None`) last. A record with several tags counts in each of their rows.
    pub fn tag_comparison(&self, days: u32) -> Result<Vec<TagStats>, MetricsError> {
        let out = self.query(days, &Select::Tags)?;
        Ok(out.tags())
    }

    /// What the records from `since` to now cost, in total, per agent and per tag: the spend
    /// budgets are checked against. Records still queued in this store are written first, so
    /// they count; records of other processes count once they reach the files.
    pub fn spend_since(&self, since: DateTime<Utc>) -> Result<Spend, MetricsError> {
        self.flush()?;
        let now = self.now();
        Ok(self
            .query_window(now, &Window::between(since, now), &Select::Spend)?
            .spend())
    }

    /// Streams every record of the last `days` days to `f`, files in date order, lines in file
    /// order.
    pub fn scan(
        &self,
        days: u32,
        f: impl FnMut(&PromptMetrics),
    ) -> Result<ScanSummary, MetricsError> {
        let window = Window::new(self.now(), days);
        let files: Vec<PathBuf> = files_in_window(&self.dir, &window)?
            .into_iter()
            .map(|(_, p)| p)
            .collect();
        Ok(query::scan(&files, &window, f))
    }

    /// Removes the daily files whose whole day lies before the cut-off `now - days_to_keep * 24h`
    /// (that is, dated before the cut-off's date), and their rollups; nothing else in the
    /// directory is touched. Returns how many daily files were removed.
    pub fn cleanup_old_logs(&self, days_to_keep: u32) -> Result<usize, MetricsError> {
        let window = Window::new(self.now(), days_to_keep);
        let mut removed = 0;
        for (day, path) in list_files(&self.dir)? {
            if day < window.cutoff_day {
                let _ = std::fs::remove_file(path.with_extension("rollup"));
                match std::fs::remove_file(&path) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(MetricsError::io("cannot remove", path, e)),
                }
            }
        }
        Ok(removed)
    }

    fn query(&self, days: u32, select: &Select<'_>) -> Result<query::Outcome, MetricsError> {
        let now = self.now();
        self.query_window(now, &Window::new(now, days), select)
    }

    /// The records of `window` (closed days from their rollups), as of `now`.
    fn query_window(
        &self,
        now: DateTime<Utc>,
        window: &Window,
        select: &Select<'_>,
    ) -> Result<query::Outcome, MetricsError> {
        let files = files_in_window(&self.dir, window)?;
        Ok(rollup::aggregate(
            &files,
            now.date_naive(),
            window,
            select,
            self.rollups.as_ref(),
        ))
    }

    fn writer(&self) -> Result<&Writer, MetricsError> {
        match self
            .writer
            .get_or_init(|| Writer::spawn(&self.dir).map_err(|e| e.to_string()))
        {
            Ok(w) => Ok(w),
            Err(_) => Err(MetricsError::WriterStopped {
                dir: self.dir.clone(),
            }),
        }
    }
}

fn check_finite(field: &'static str, v: f64) -> Result<(), MetricsError> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(MetricsError::InvalidRecord {
            field,
            reason: format!("is {v}, which JSON cannot hold"),
        })
    }
}

impl MetricsSink for JsonlStore {
    fn record(&self, metrics: PromptMetrics) -> Result<(), MetricsError> {
        check_finite("temperature", metrics.temperature)?;
        check_finite("latency_ms", metrics.latency_ms)?;
        if let Some(v) = metrics.time_to_first_token_ms {
            check_finite("time_to_first_token_ms", v)?;
        }
        if let Some(v) = metrics.tokens_per_second {
            check_finite("tokens_per_second", v)?;
        }
        if let Some(v) = metrics.cost_usd {
            check_finite("cost_usd", v)?;
        }
        if let Some(v) = metrics.saved_usd {
            check_finite("saved_usd", v)?;
        }
        let year = metrics.timestamp.year();
        if !(0..=9999).contains(&year) {
            return Err(MetricsError::InvalidRecord {
                field: "timestamp",
                reason: format!("has year {year}, outside 0..=9999"),
            });
        }
        self.writer()?.send(metrics)
    }

    fn spend_since(&self, since: DateTime<Utc>) -> Result<Option<Spend>, MetricsError> {
        JsonlStore::spend_since(self, since).map(Some)
    }

    fn flush(&self) -> Result<(), MetricsError> {
        match self.writer.get() {
            Some(Ok(w)) => w.flush(),
            Some(Err(_)) => Err(MetricsError::WriterStopped {
                dir: self.dir.clone(),
            }),
            None => Ok(()),
        }
    }
}

impl Drop for JsonlStore {
    fn drop(&mut self) {
        if let Some(Ok(w)) = self.writer.get() {
            w.shutdown();
        }
    }
}

/// The records a query covers: timestamp from `now - days * 24h` to `now`, both included.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    pub(crate) cutoff_secs: i64,
    pub(crate) cutoff_nanos: u32,
    pub(crate) cutoff_day: NaiveDate,
    pub(crate) now_secs: i64,
    pub(crate) now_nanos: u32,
}

impl Window {
    pub(crate) fn new(now: DateTime<Utc>, days: u32) -> Window {
        let cutoff = now - chrono::Duration::hours(i64::from(days) * 24);
        Window {
            cutoff_secs: cutoff.timestamp(),
            cutoff_nanos: cutoff.timestamp_subsec_nanos(),
            cutoff_day: cutoff.date_naive(),
            now_secs: now.timestamp(),
            now_nanos: now.timestamp_subsec_nanos(),
        }
    }

    /// A window holding every record.
    pub(crate) fn everything() -> Window {
        Window {
            cutoff_secs: i64::MIN,
            cutoff_nanos: 0,
            cutoff_day: NaiveDate::MIN,
            now_secs: i64::MAX,
            now_nanos: u32::MAX,
        }
    }

    /// The records from `since` to `now`, both included.
    pub(crate) fn between(since: DateTime<Utc>, now: DateTime<Utc>) -> Window {
        Window {
            cutoff_secs: since.timestamp(),
            cutoff_nanos: since.timestamp_subsec_nanos(),
            cutoff_day: since.date_naive(),
            now_secs: now.timestamp(),
            now_nanos: now.timestamp_subsec_nanos(),
        }
    }

    pub(crate) fn contains(&self, secs: i64, nanos: u32) -> bool {
        let t = (secs, nanos);
        t >= (self.cutoff_secs, self.cutoff_nanos) && t <= (self.now_secs, self.now_nanos)
    }
}

/// Parses `metrics_YYYY-MM-DD.jsonl`.
fn day_of(name: &str) -> Option<NaiveDate> {
    let date = name.strip_prefix("metrics_")?.strip_suffix(".jsonl")?;
    if date.len() != 10 {
        return None;
    }
    NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()
}

/// Every daily file in `dir`, in date order. A missing directory holds none.
fn list_files(dir: &Path) -> Result<Vec<(NaiveDate, PathBuf)>, MetricsError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(MetricsError::io("cannot list", dir, e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| MetricsError::io("cannot list", dir, e))?;
        let name = entry.file_name();
        let Some(day) = name.to_str().and_then(day_of) else {
            continue;
        };
        files.push((day, entry.path()));
    }
    files.sort();
    Ok(files)
}

/// The daily files that can hold records of the window, with their days. A file's records
/// normally carry its own UTC date, but lines written with a local-time offset may fall on the
/// day before or after, so the day before the cut-off's date is read too (its lines are
/// filtered by time).
fn files_in_window(dir: &Path, window: &Window) -> Result<Vec<(NaiveDate, PathBuf)>, MetricsError> {
    let first = window.cutoff_day.pred_opt().unwrap_or(window.cutoff_day);
    Ok(list_files(dir)?
        .into_iter()
        .filter(|(day, _)| *day >= first)
        .collect())
}
