//! Streaming, parallel aggregation over daily files.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use rayon::prelude::*;

use crate::parse::{Rec, is_blank, parse_line};
use crate::store::Window;
use crate::{
    AggregateStats, DayStats, ModelStats, Overview, PromptMetrics, ScanSummary, Spend, TagStats,
    TaskStats, TaskVersionStats, VersionStats,
};

/// Bytes of a file one task reads and aggregates.
const CHUNK: u64 = 4 * 1024 * 1024;

/// Which records a query keeps and how it groups them.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Select<'q> {
    Agent(&'q str),
    Task(&'q str, &'q str),
    Models,
    Versions(&'q str, &'q str),
    /// Per UTC day.
    Days,
    /// Per agent and task.
    Tasks,
    /// Everything at once: all records, per day, per model, per task, per task version.
    Overview,
    /// Per tag.
    Tags,
    /// Spend: all records, per agent (through the tasks) and per tag.
    Spend,
}

/// Running sums for one group.
#[derive(Debug, Default, Clone)]
pub(crate) struct Acc {
    total: u64,
    successful: u64,
    validation_passed: u64,
    retries: u64,
    errors: u64,
    cache_hits: u64,
    response_length: u64,
    tokens_prompt: u64,
    tokens_completion: u64,
    latency_sum: f64,
    latencies: Vec<f64>,
    /// Times to first token of the records that have one (streamed replies).
    ttfts: Vec<f64>,
    tokens_per_second_sum: f64,
    tokens_per_second_count: u64,
    cost_usd: f64,
    saved_usd: f64,
}

impl Acc {
    fn add(&mut self, r: &Rec<'_>) {
        self.total += 1;
        self.successful += u64::from(r.validation_passed && !r.has_error);
        self.validation_passed += u64::from(r.validation_passed);
        self.retries = self.retries.saturating_add(u64::from(r.retry_count));
        self.errors += u64::from(r.has_error);
        self.cache_hits += u64::from(r.cache_hit);
        self.response_length = self.response_length.saturating_add(r.response_length);
        self.tokens_prompt = self
            .tokens_prompt
            .saturating_add(r.tokens_prompt.unwrap_or(0));
        self.tokens_completion = self
            .tokens_completion
            .saturating_add(r.tokens_completion.unwrap_or(0));
        self.latency_sum += r.latency_ms;
        self.latencies.push(r.latency_ms);
        if let Some(t) = r.time_to_first_token_ms {
            self.ttfts.push(t);
        }
        if let Some(v) = r.tokens_per_second {
            self.tokens_per_second_sum += v;
            self.tokens_per_second_count += 1;
        }
        self.cost_usd += r.cost_usd.unwrap_or(0.0);
        self.saved_usd += r.saved_usd.unwrap_or(0.0);
    }

    fn merge(&mut self, mut o: Acc) {
        self.total += o.total;
        self.successful += o.successful;
        self.validation_passed += o.validation_passed;
        self.retries = self.retries.saturating_add(o.retries);
        self.errors += o.errors;
        self.cache_hits += o.cache_hits;
        self.response_length = self.response_length.saturating_add(o.response_length);
        self.tokens_prompt = self.tokens_prompt.saturating_add(o.tokens_prompt);
        self.tokens_completion = self.tokens_completion.saturating_add(o.tokens_completion);
        self.latency_sum += o.latency_sum;
        if self.latencies.is_empty() {
            self.latencies = o.latencies;
        } else {
            self.latencies.append(&mut o.latencies);
        }
        if self.ttfts.is_empty() {
            self.ttfts = o.ttfts;
        } else {
            self.ttfts.append(&mut o.ttfts);
        }
        self.tokens_per_second_sum += o.tokens_per_second_sum;
        self.tokens_per_second_count += o.tokens_per_second_count;
        self.cost_usd += o.cost_usd;
        self.saved_usd += o.saved_usd;
    }

    fn finish(mut self, skipped_lines: u64, unreadable_files: u64) -> AggregateStats {
        let mut s = AggregateStats {
            skipped_lines,
            unreadable_files,
            total_cost_usd: self.cost_usd,
            saved_usd: self.saved_usd,
            ..AggregateStats::default()
        };
        if self.total == 0 {
            return s;
        }
        let n = self.total as f64;
        s.total_calls = self.total;
        s.successful_calls = self.successful;
        s.success_rate = self.successful as f64 / n;
        s.avg_latency_ms = self.latency_sum / n;
        let (min, max) = self
            .latencies
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        s.min_latency_ms = min;
        s.max_latency_ms = max;
        let [p25, p50, p75, p95, p99] =
            percentiles(&mut self.latencies, [0.25, 0.50, 0.75, 0.95, 0.99]);
        s.p25_latency_ms = p25;
        s.p50_latency_ms = p50;
        s.p75_latency_ms = p75;
        s.p95_latency_ms = p95;
        s.p99_latency_ms = p99;
        s.validation_pass_rate = self.validation_passed as f64 / n;
        s.avg_retries = self.retries as f64 / n;
        s.error_rate = self.errors as f64 / n;
        s.cache_hit_rate = self.cache_hits as f64 / n;
        s.avg_response_length = self.response_length as f64 / n;
        s.tokens_prompt = self.tokens_prompt;
        s.tokens_completion = self.tokens_completion;
        s.total_tokens_used = self.tokens_prompt.saturating_add(self.tokens_completion);
        s.streamed_calls = self.ttfts.len() as u64;
        if !self.ttfts.is_empty() {
            let [p50, p95] = percentiles(&mut self.ttfts, [0.50, 0.95]);
            s.p50_time_to_first_token_ms = Some(p50);
            s.p95_time_to_first_token_ms = Some(p95);
        }
        if self.tokens_per_second_count > 0 {
            s.avg_tokens_per_second =
                Some(self.tokens_per_second_sum / self.tokens_per_second_count as f64);
        }
        s
    }
}

/// The Python original's percentile rule, the one rule of every percentile promptkit shows: the
/// element at index `min(floor(n * p), n - 1)` of the values sorted (0 when there are none).
/// `ps` must be ascending. Selection finds the same elements as a full sort in linear time (it
/// reorders `values`); each selection after the first searches only the values above the
/// previous one.
pub(crate) fn percentiles<const N: usize>(values: &mut [f64], ps: [f64; N]) -> [f64; N] {
    let mut out = [0.0; N];
    let n = values.len();
    if n == 0 {
        return out;
    }
    // Every value before `base` is at most every value from `base` on.
    let mut base = 0;
    let mut last: Option<(usize, f64)> = None;
    for (slot, p) in out.iter_mut().zip(ps) {
        let idx = ((n as f64 * p).floor() as usize).min(n - 1);
        match last {
            Some((i, v)) if idx <= i => *slot = v,
            _ => {
                let v = *values[base..]
                    .select_nth_unstable_by(idx - base, f64::total_cmp)
                    .1;
                *slot = v;
                last = Some((idx, v));
                base = idx + 1;
            }
        }
    }
    out
}

/// Calls `f` on the value under `key`, inserted empty first when there is none; the key is
/// copied only then.
fn with_slot<V: Default>(map: &mut HashMap<String, V>, key: &str, f: impl FnOnce(&mut V)) {
    match map.get_mut(key) {
        Some(v) => f(v),
        None => {
            let mut v = V::default();
            f(&mut v);
            map.insert(key.to_owned(), v);
        }
    }
}

/// Running sums of one agent's task, and of its template versions when those are wanted.
#[derive(Debug, Default)]
struct TaskAcc {
    all: Acc,
    versions: HashMap<Option<u32>, Acc>,
}

impl TaskAcc {
    fn merge(&mut self, o: TaskAcc) {
        self.all.merge(o.all);
        for (k, acc) in o.versions {
            self.versions.entry(k).or_default().merge(acc);
        }
    }
}

/// Seconds in a day.
const DAY_SECS: i64 = 86_400;

/// What one chunk (or the whole query) gathered.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    single: Acc,
    models: HashMap<String, Acc>,
    versions: HashMap<Option<u32>, Acc>,
    /// Per UTC day, as days since the Unix epoch.
    days: HashMap<i64, Acc>,
    /// Per agent, then per task.
    tasks: HashMap<String, HashMap<String, TaskAcc>>,
    /// Per tag; `None` for records without tags.
    tags: HashMap<Option<String>, Acc>,
    skipped: u64,
    unreadable: Vec<usize>,
}

impl Outcome {
    fn add(&mut self, select: &Select<'_>, r: &Rec<'_>) {
        match *select {
            Select::Agent(a) => {
                if r.agent == a {
                    self.single.add(r);
                }
            }
            Select::Task(a, t) => {
                if r.agent == a && r.task == t {
                    self.single.add(r);
                }
            }
            Select::Models => self.add_model(r),
            Select::Versions(a, t) => {
                if r.agent == a && r.task == t {
                    self.versions.entry(r.template_version).or_default().add(r);
                }
            }
            Select::Days => self.add_day(r),
            Select::Tasks => self.add_task(r, false),
            Select::Overview => {
                self.single.add(r);
                self.add_day(r);
                self.add_model(r);
                self.add_task(r, true);
            }
            Select::Tags => self.add_tags(r),
            Select::Spend => {
                self.single.add(r);
                self.add_task(r, false);
                self.add_tags(r);
            }
        }
    }

    fn add_tags(&mut self, r: &Rec<'_>) {
        if r.tags.is_empty() {
            self.tags.entry(None).or_default().add(r);
        }
        for (i, tag) in r.tags.iter().enumerate() {
            // A tag given twice on one record counts once.
            if r.tags[..i].contains(tag) {
                continue;
            }
            match self.tags.get_mut(&Some(tag.as_ref().to_owned())) {
                Some(acc) => acc.add(r),
                None => {
                    let mut acc = Acc::default();
                    acc.add(r);
                    self.tags.insert(Some(tag.as_ref().to_owned()), acc);
                }
            }
        }
    }

    fn add_model(&mut self, r: &Rec<'_>) {
        with_slot(&mut self.models, &r.model, |acc| acc.add(r));
    }

    fn add_day(&mut self, r: &Rec<'_>) {
        self.days
            .entry(r.secs.div_euclid(DAY_SECS))
            .or_default()
            .add(r);
    }

    fn add_task(&mut self, r: &Rec<'_>, versions: bool) {
        with_slot(&mut self.tasks, &r.agent, |by_task| {
            with_slot(by_task, &r.task, |acc: &mut TaskAcc| {
                acc.all.add(r);
                if versions {
                    acc.versions.entry(r.template_version).or_default().add(r);
                }
            });
        });
    }

    fn merge(&mut self, o: Outcome) {
        self.single.merge(o.single);
        for (k, acc) in o.models {
            self.models.entry(k).or_default().merge(acc);
        }
        for (k, acc) in o.versions {
            self.versions.entry(k).or_default().merge(acc);
        }
        for (k, acc) in o.days {
            self.days.entry(k).or_default().merge(acc);
        }
        for (agent, by_task) in o.tasks {
            let mine = self.tasks.entry(agent).or_default();
            for (task, acc) in by_task {
                mine.entry(task).or_default().merge(acc);
            }
        }
        for (k, acc) in o.tags {
            self.tags.entry(k).or_default().merge(acc);
        }
        self.skipped += o.skipped;
        self.unreadable.extend(o.unreadable);
    }

    fn unreadable_files(&self) -> u64 {
        let mut files = self.unreadable.clone();
        files.sort_unstable();
        files.dedup();
        files.len() as u64
    }

    pub(crate) fn single(self) -> AggregateStats {
        let unreadable = self.unreadable_files();
        self.single.finish(self.skipped, unreadable)
    }

    pub(crate) fn models(self) -> Vec<ModelStats> {
        let unreadable = self.unreadable_files();
        let skipped = self.skipped;
        let mut rows: Vec<ModelStats> = self
            .models
            .into_iter()
            .map(|(model, acc)| ModelStats {
                model,
                stats: acc.finish(skipped, unreadable),
            })
            .collect();
        rows.sort_by(|a, b| {
            b.stats
                .total_calls
                .cmp(&a.stats.total_calls)
                .then_with(|| a.model.cmp(&b.model))
        });
        rows
    }

    pub(crate) fn versions(self) -> Vec<VersionStats> {
        let unreadable = self.unreadable_files();
        let skipped = self.skipped;
        let mut rows: Vec<VersionStats> = self
            .versions
            .into_iter()
            .map(|(template_version, acc)| VersionStats {
                template_version,
                stats: acc.finish(skipped, unreadable),
            })
            .collect();
        rows.sort_by_key(|r| version_order(r.template_version));
        rows
    }

    pub(crate) fn days(self) -> Vec<DayStats> {
        let unreadable = self.unreadable_files();
        day_rows(self.days, self.skipped, unreadable)
    }

    pub(crate) fn tasks(self) -> Vec<TaskStats> {
        let unreadable = self.unreadable_files();
        task_rows(self.tasks, self.skipped, unreadable).0
    }

    pub(crate) fn tags(self) -> Vec<TagStats> {
        let unreadable = self.unreadable_files();
        let skipped = self.skipped;
        let mut rows: Vec<TagStats> = self
            .tags
            .into_iter()
            .map(|(tag, acc)| TagStats {
                tag,
                stats: acc.finish(skipped, unreadable),
            })
            .collect();
        rows.sort_by(|a, b| (a.tag.is_none(), &a.tag).cmp(&(b.tag.is_none(), &b.tag)));
        rows
    }

    pub(crate) fn spend(self) -> Spend {
        let mut agents = std::collections::BTreeMap::new();
        for (agent, by_task) in &self.tasks {
            let sum: f64 = by_task.values().map(|t| t.all.cost_usd).sum();
            agents.insert(agent.clone(), sum);
        }
        let tags = self
            .tags
            .iter()
            .filter_map(|(tag, acc)| Some((tag.clone()?, acc.cost_usd)))
            .collect();
        Spend {
            total_usd: self.single.cost_usd,
            agents,
            tags,
        }
    }

    pub(crate) fn overview(mut self) -> Overview {
        let unreadable = self.unreadable_files();
        let skipped = self.skipped;
        let days = day_rows(std::mem::take(&mut self.days), skipped, unreadable);
        let (tasks, versions) = task_rows(std::mem::take(&mut self.tasks), skipped, unreadable);
        let total = std::mem::take(&mut self.single).finish(skipped, unreadable);
        Overview {
            total,
            days,
            models: self.models(),
            tasks,
            versions,
        }
    }
}

/// Versions ascending, then `None` (records written without a template version) last.
fn version_order(v: Option<u32>) -> (bool, Option<u32>) {
    (v.is_none(), v)
}

fn day_rows(days: HashMap<i64, Acc>, skipped: u64, unreadable: u64) -> Vec<DayStats> {
    let mut rows: Vec<DayStats> = days
        .into_iter()
        .filter_map(|(day, acc)| {
            let day = chrono::DateTime::from_timestamp(day.checked_mul(DAY_SECS)?, 0)?;
            Some(DayStats {
                day: day.date_naive(),
                stats: acc.finish(skipped, unreadable),
            })
        })
        .collect();
    rows.sort_by_key(|r| r.day);
    rows
}

/// The rows per task (agents, then tasks ascending) and per task version.
fn task_rows(
    tasks: HashMap<String, HashMap<String, TaskAcc>>,
    skipped: u64,
    unreadable: u64,
) -> (Vec<TaskStats>, Vec<TaskVersionStats>) {
    let mut rows = Vec::new();
    let mut versions = Vec::new();
    for (agent, by_task) in tasks {
        for (task, acc) in by_task {
            for (template_version, v) in acc.versions {
                versions.push(TaskVersionStats {
                    agent: agent.clone(),
                    task: task.clone(),
                    template_version,
                    stats: v.finish(skipped, unreadable),
                });
            }
            rows.push(TaskStats {
                agent: agent.clone(),
                task,
                stats: acc.all.finish(skipped, unreadable),
            });
        }
    }
    rows.sort_by(|a, b| (&a.agent, &a.task).cmp(&(&b.agent, &b.task)));
    versions.sort_by(|a, b| {
        (&a.agent, &a.task, version_order(a.template_version)).cmp(&(
            &b.agent,
            &b.task,
            version_order(b.template_version),
        ))
    });
    (rows, versions)
}

/// One piece of work: the lines of `file` that start within `start..end`.
#[derive(Debug, Clone, Copy)]
struct Task {
    file: usize,
    start: u64,
    end: u64,
}

fn plan(files: &[PathBuf], out: &mut Outcome) -> Vec<Task> {
    let mut tasks = Vec::new();
    for (i, path) in files.iter().enumerate() {
        let len = match std::fs::metadata(path) {
            Ok(m) => m.len(),
            Err(_) => {
                out.unreadable.push(i);
                continue;
            }
        };
        let mut start = 0;
        while start < len {
            let end = (start + CHUNK).min(len);
            tasks.push(Task {
                file: i,
                start,
                end,
            });
            start = end;
        }
    }
    tasks
}

/// Calls `line` for every line that starts within the task's range (without its newline), or
/// only for those that pass `filter`.
fn for_each_line(
    path: &PathBuf,
    task: &Task,
    filter: Option<&Prefilter>,
    mut line: impl FnMut(&[u8]),
) -> std::io::Result<()> {
    let mut file = File::open(path)?;
    let from = task.start.saturating_sub(1);
    file.seek(SeekFrom::Start(from))?;
    let want = (task.end - from) as usize;
    let mut buf = Vec::with_capacity(want + 4096);
    (&mut file).take(want as u64).read_to_end(&mut buf)?;
    // The first line starting in range: at 0 for the file's start, else after the first newline
    // at or after `start - 1`.
    let mut pos = if task.start == 0 {
        0
    } else {
        match memchr::memchr(b'\n', &buf) {
            Some(i) => i + 1,
            None => return Ok(()),
        }
    };
    let range_len = buf.len();
    if pos >= range_len {
        return Ok(());
    }
    // Complete the last line started in range by reading on to its newline (or the end).
    if buf.last() != Some(&b'\n') {
        let mut piece = [0u8; 16 * 1024];
        loop {
            let n = file.read(&mut piece)?;
            if n == 0 {
                break;
            }
            match memchr::memchr(b'\n', &piece[..n]) {
                Some(i) => {
                    buf.extend_from_slice(&piece[..=i]);
                    break;
                }
                None => buf.extend_from_slice(&piece[..n]),
            }
        }
    }
    let Some(filter) = filter else {
        while pos < buf.len() {
            let end = memchr::memchr(b'\n', &buf[pos..]).map_or(buf.len(), |i| pos + i);
            line(&buf[pos..end]);
            pos = end + 1;
        }
        return Ok(());
    };
    // Only the lines holding the needle or an escape (which might hide it) are handed on; the
    // next hit of each is remembered so the buffer is searched once.
    let find_needle = |from: usize| {
        filter
            .finder
            .find(&buf[from..])
            .map_or(usize::MAX, |i| from + i)
    };
    let find_escape =
        |from: usize| memchr::memchr(b'\\', &buf[from..]).map_or(usize::MAX, |i| from + i);
    let mut next_needle = find_needle(pos);
    let mut next_escape = find_escape(pos);
    while pos < buf.len() {
        if next_needle < pos {
            next_needle = find_needle(pos);
        }
        if next_escape < pos {
            next_escape = find_escape(pos);
        }
        let hit = next_needle.min(next_escape);
        if hit == usize::MAX {
            break;
        }
        let start = memchr::memrchr(b'\n', &buf[pos..hit]).map_or(pos, |i| pos + i + 1);
        let end = memchr::memchr(b'\n', &buf[hit..]).map_or(buf.len(), |i| hit + i);
        line(&buf[start..end]);
        pos = end + 1;
    }
    Ok(())
}

/// Lines that cannot hold the queried agent are passed over without being read in full: a line
/// whose `agent` is `writer` holds `"writer"` literally, or an escape.
#[derive(Debug)]
pub(crate) struct Prefilter {
    finder: memchr::memmem::Finder<'static>,
}

impl Prefilter {
    fn for_select(select: &Select<'_>) -> Option<Prefilter> {
        let agent = match *select {
            Select::Agent(a) | Select::Task(a, _) | Select::Versions(a, _) => a,
            Select::Models
            | Select::Days
            | Select::Tasks
            | Select::Overview
            | Select::Tags
            | Select::Spend => return None,
        };
        let plain = !agent.is_empty()
            && agent
                .bytes()
                .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\');
        plain.then(|| Prefilter {
            finder: memchr::memmem::Finder::new(format!("\"{agent}\"").as_bytes()).into_owned(),
        })
    }
}

fn run_task(
    files: &[PathBuf],
    task: &Task,
    window: &Window,
    select: &Select<'_>,
    filter: Option<&Prefilter>,
) -> Outcome {
    let mut out = Outcome::default();
    let res = for_each_line(&files[task.file], task, filter, |line| {
        if is_blank(line) {
            return;
        }
        match parse_line(line) {
            Some(r) => {
                if window.contains(r.secs, r.nanos) {
                    out.add(select, &r);
                }
            }
            None => out.skipped += 1,
        }
    });
    if res.is_err() {
        out.unreadable.push(task.file);
    }
    out
}

/// Aggregates the selected records of the window over `files`, chunks in parallel, merged in
/// file order so that results do not depend on scheduling.
pub(crate) fn aggregate(files: &[PathBuf], window: &Window, select: &Select<'_>) -> Outcome {
    let mut total = Outcome::default();
    let tasks = plan(files, &mut total);
    let filter = Prefilter::for_select(select);
    let parts: Vec<Outcome> = tasks
        .par_iter()
        .with_max_len(1)
        .map(|t| run_task(files, t, window, select, filter.as_ref()))
        .collect();
    for part in parts {
        total.merge(part);
    }
    total
}

/// Streams the window's records to `f`, in file order.
pub(crate) fn scan(
    files: &[PathBuf],
    window: &Window,
    mut f: impl FnMut(&PromptMetrics),
) -> ScanSummary {
    let mut summary = ScanSummary::default();
    let mut scratch = Outcome::default();
    let tasks = plan(files, &mut scratch);
    let mut unreadable = scratch.unreadable;
    let mut seen_files = Vec::new();
    for task in &tasks {
        seen_files.push(task.file);
        let res = for_each_line(&files[task.file], task, None, |line| {
            if is_blank(line) {
                return;
            }
            match parse_line(line) {
                Some(r) => {
                    if !window.contains(r.secs, r.nanos) {
                        return;
                    }
                    match serde_json::from_slice::<PromptMetrics>(line) {
                        Ok(m) => {
                            summary.records += 1;
                            f(&m);
                        }
                        Err(_) => summary.skipped_lines += 1,
                    }
                }
                None => summary.skipped_lines += 1,
            }
        });
        if res.is_err() {
            unreadable.push(task.file);
        }
    }
    unreadable.sort_unstable();
    unreadable.dedup();
    seen_files.sort_unstable();
    seen_files.dedup();
    summary.unreadable_files = unreadable.len() as u64;
    summary.files = seen_files
        .iter()
        .filter(|i| !unreadable.contains(i))
        .count() as u64;
    summary
}

#[cfg(test)]
mod tests {
    use super::percentiles;

    #[test]
    fn percentile_selection_matches_sorting() {
        let mut state = 12_345u64;
        for n in [1usize, 2, 3, 10, 19, 20, 21, 100, 1_001] {
            let values: Vec<f64> = (0..n)
                .map(|_| {
                    state = state
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1);
                    ((state >> 33) % 1_000) as f64 / 4.0
                })
                .collect();
            let mut sorted = values.clone();
            sorted.sort_by(f64::total_cmp);
            let ps = [0.0, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0];
            let mut work = values.clone();
            let got = percentiles(&mut work, ps);
            for (p, got) in ps.into_iter().zip(got) {
                let idx = ((n as f64 * p).floor() as usize).min(n - 1);
                assert_eq!(got, sorted[idx], "n {n} p {p}");
                let mut one = values.clone();
                assert_eq!(percentiles(&mut one, [p]), [sorted[idx]], "n {n} p {p}");
            }
        }
    }
}
