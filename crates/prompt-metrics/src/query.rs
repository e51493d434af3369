//! Streaming, parallel aggregation over daily files.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::parse::{Rec, is_blank, parse_line};
use crate::rollup::GroupKey;
use crate::store::Window;
use crate::sum::ExactSum;
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

/// Counts and sums of one group: everything of [`Acc`] but the values percentiles are taken
/// of. A rollup stores it as it is (serde), so a figure added here is stored with no more code.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Sums {
    pub(crate) total: u64,
    successful: u64,
    validation_passed: u64,
    retries: u64,
    errors: u64,
    cache_hits: u64,
    response_length: u64,
    tokens_prompt: u64,
    tokens_completion: u64,
    latency_sum: ExactSum,
    tokens_per_second_sum: ExactSum,
    tokens_per_second_count: u64,
    cost_usd: ExactSum,
    saved_usd: ExactSum,
}

impl Sums {
    pub(crate) fn add(&mut self, r: &Rec<'_>) {
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
        self.latency_sum.add(r.latency_ms);
        if let Some(v) = r.tokens_per_second {
            self.tokens_per_second_sum.add(v);
            self.tokens_per_second_count += 1;
        }
        if let Some(v) = r.cost_usd {
            self.cost_usd.add(v);
        }
        if let Some(v) = r.saved_usd {
            self.saved_usd.add(v);
        }
    }

    /// Adds `o`'s figures; every one of them is order-independent (exact or saturating sums of
    /// non-negative counts), so groups merge to the same figures in any order.
    pub(crate) fn merge(&mut self, o: &Sums) {
        self.total += o.total;
        self.successful += o.successful;
        self.validation_passed += o.validation_passed;
        self.retries = self.retries.saturating_add(o.retries);
        self.errors += o.errors;
        self.cache_hits += o.cache_hits;
        self.response_length = self.response_length.saturating_add(o.response_length);
        self.tokens_prompt = self.tokens_prompt.saturating_add(o.tokens_prompt);
        self.tokens_completion = self.tokens_completion.saturating_add(o.tokens_completion);
        self.latency_sum.merge(&o.latency_sum);
        self.tokens_per_second_sum.merge(&o.tokens_per_second_sum);
        self.tokens_per_second_count += o.tokens_per_second_count;
        self.cost_usd.merge(&o.cost_usd);
        self.saved_usd.merge(&o.saved_usd);
    }
}

/// The values of one figure of a group that percentiles are taken of: values read from lines,
/// in no order, and sorted runs read from rollups.
#[derive(Debug, Default, Clone)]
pub(crate) struct Values {
    loose: Vec<f64>,
    runs: Vec<Run>,
}

impl Values {
    /// A sorted run.
    pub(crate) fn sorted(run: Run) -> Values {
        Values {
            loose: Vec::new(),
            runs: vec![run],
        }
    }

    fn push(&mut self, v: f64) {
        self.loose.push(v);
    }

    pub(crate) fn len(&self) -> usize {
        self.loose.len() + self.runs.iter().map(|r| r.values.len()).sum::<usize>()
    }

    fn append(&mut self, mut o: Values) {
        if self.loose.is_empty() {
            self.loose = o.loose;
        } else {
            self.loose.append(&mut o.loose);
        }
        self.runs.append(&mut o.runs);
    }

    /// Adds values sorted by `f64::total_cmp` as a run, keeping few runs: the newest two are
    /// merged while the newer is at least half as long as the older, so a group fed many small
    /// runs (today's lines, a few at a time) holds O(log n) runs and each value is merged
    /// O(log n) times in all.
    pub(crate) fn add_sorted(&mut self, values: Vec<f64>) {
        if values.is_empty() {
            return;
        }
        self.runs.push(Run::new(values.into()));
        while let [.., older, newer] = self.runs.as_slice() {
            if newer.values.len() * 2 < older.values.len() {
                break;
            }
            let merged = merge_sorted(&older.values, &newer.values);
            self.runs.truncate(self.runs.len() - 2);
            self.runs.push(Run::new(merged.into()));
        }
    }

    /// The elements the percentile rule picks for each of `ps` (ascending), 0 when empty.
    fn percentiles<const N: usize>(&mut self, ps: [f64; N]) -> [f64; N] {
        if self.runs.is_empty() {
            return percentiles(&mut self.loose, ps);
        }
        let n = self.len();
        if !self.loose.is_empty() {
            let loose = std::mem::take(&mut self.loose);
            self.runs.push(Run::new(sort_floats(loose).into()));
        }
        let mut out = [0.0; N];
        if n == 0 {
            return out;
        }
        let mut scratch = Vec::new();
        for (slot, p) in out.iter_mut().zip(ps) {
            *slot = select_in_runs(&self.runs, percentile_index(n, p), &mut scratch);
        }
        out
    }
}

/// Floats sorted by `f64::total_cmp` (through their order keys: integer sorting is faster).
fn sort_floats(values: Vec<f64>) -> Vec<f64> {
    let mut keys: Vec<u64> = values.into_iter().map(order_key).collect();
    keys.sort_unstable();
    keys.into_iter().map(from_order_key).collect()
}

/// Two runs sorted by `f64::total_cmp` merged into one.
fn merge_sorted(a: &[f64], b: &[f64]) -> Vec<f64> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if b[j].total_cmp(&a[i]).is_lt() {
            out.push(b[j]);
            j += 1;
        } else {
            out.push(a[i]);
            i += 1;
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

/// A float's place in `f64::total_cmp`'s order, as an unsigned integer.
pub(crate) fn order_key(v: f64) -> u64 {
    let b = v.to_bits();
    if b >> 63 == 1 { !b } else { b | 1 << 63 }
}

pub(crate) fn from_order_key(k: u64) -> f64 {
    f64::from_bits(if k >> 63 == 1 { k & !(1 << 63) } else { !k })
}

/// Bits of [`order_key`] that make a bucket of [`Run`]'s index: sign, exponent and 8 bits of
/// mantissa (256 buckets per power of two).
const BUCKET_BITS: u32 = 20;

fn bucket(v: f64) -> u32 {
    (order_key(v) >> (64 - BUCKET_BITS)) as u32
}

/// Values sorted by `f64::total_cmp`, with an index of where each bucket of values ends, so
/// that ranks across many runs are counted without touching the values.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    values: Arc<[f64]>,
    /// (bucket, end of its values), buckets ascending, empty ones left out.
    index: Arc<[(u32, u32)]>,
}

impl Run {
    /// A run of values sorted by `f64::total_cmp` (at most `u32::MAX` of them).
    pub(crate) fn new(values: Arc<[f64]>) -> Run {
        let mut index: Vec<(u32, u32)> = Vec::new();
        for (i, &v) in values.iter().enumerate() {
            let b = bucket(v);
            match index.last_mut() {
                Some(last) if last.0 == b => last.1 = i as u32 + 1,
                _ => index.push((b, i as u32 + 1)),
            }
        }
        Run {
            values,
            index: index.into(),
        }
    }

    /// Values in buckets up to `b` included.
    fn count_upto(&self, b: u32) -> usize {
        let i = self.index.partition_point(|&(x, _)| x <= b);
        if i == 0 {
            0
        } else {
            self.index[i - 1].1 as usize
        }
    }

    /// The values of bucket `b`.
    fn bucket(&self, b: u32) -> &[f64] {
        let i = self.index.partition_point(|&(x, _)| x < b);
        match self.index.get(i) {
            Some(&(x, end)) if x == b => {
                let start = if i == 0 { 0 } else { self.index[i - 1].1 };
                &self.values[start as usize..end as usize]
            }
            _ => &[],
        }
    }
}

/// The `k`-th smallest (from 0, by `f64::total_cmp`) of the union of sorted runs, without
/// merging them: a binary search over the buckets finds the one holding it from the runs'
/// indexes alone, then only that bucket's values are gathered and selected from.
fn select_in_runs(runs: &[Run], k: usize, scratch: &mut Vec<f64>) -> f64 {
    let count = |b: u32| -> usize { runs.iter().map(|r| r.count_upto(b)).sum() };
    let (mut lo, mut hi) = (0u32, (1u32 << BUCKET_BITS) - 1);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if count(mid) > k {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let before = if lo == 0 { 0 } else { count(lo - 1) };
    scratch.clear();
    for r in runs {
        scratch.extend_from_slice(r.bucket(lo));
    }
    match scratch.get_mut(..) {
        Some(s) if k >= before && k - before < s.len() => {
            *s.select_nth_unstable_by(k - before, f64::total_cmp).1
        }
        _ => 0.0,
    }
}

/// Running sums for one group.
#[derive(Debug, Default, Clone)]
pub(crate) struct Acc {
    pub(crate) sums: Sums,
    pub(crate) latencies: Values,
    /// Times to first token of the records that have one (streamed replies).
    pub(crate) ttfts: Values,
}

impl Acc {
    fn add(&mut self, r: &Rec<'_>) {
        self.sums.add(r);
        self.latencies.push(r.latency_ms);
        if let Some(t) = r.time_to_first_token_ms {
            self.ttfts.push(t);
        }
    }

    pub(crate) fn merge(&mut self, o: Acc) {
        self.sums.merge(&o.sums);
        self.latencies.append(o.latencies);
        self.ttfts.append(o.ttfts);
    }

    fn finish(mut self, skipped_lines: u64, unreadable_files: u64) -> AggregateStats {
        let mut s = AggregateStats {
            skipped_lines,
            unreadable_files,
            total_cost_usd: self.sums.cost_usd.value(),
            saved_usd: self.sums.saved_usd.value(),
            ..AggregateStats::default()
        };
        let sums = &self.sums;
        if sums.total == 0 {
            return s;
        }
        let n = sums.total as f64;
        s.total_calls = sums.total;
        s.successful_calls = sums.successful;
        s.success_rate = sums.successful as f64 / n;
        s.avg_latency_ms = sums.latency_sum.value() / n;
        // The smallest and largest are the elements at 0 and n - 1 of the same sorted order.
        let [min, p25, p50, p75, p95, p99, max] = self
            .latencies
            .percentiles([0.0, 0.25, 0.50, 0.75, 0.95, 0.99, 1.0]);
        s.min_latency_ms = min;
        s.max_latency_ms = max;
        s.p25_latency_ms = p25;
        s.p50_latency_ms = p50;
        s.p75_latency_ms = p75;
        s.p95_latency_ms = p95;
        s.p99_latency_ms = p99;
        s.validation_pass_rate = sums.validation_passed as f64 / n;
        s.avg_retries = sums.retries as f64 / n;
        s.error_rate = sums.errors as f64 / n;
        s.cache_hit_rate = sums.cache_hits as f64 / n;
        s.avg_response_length = sums.response_length as f64 / n;
        s.tokens_prompt = sums.tokens_prompt;
        s.tokens_completion = sums.tokens_completion;
        s.total_tokens_used = sums.tokens_prompt.saturating_add(sums.tokens_completion);
        s.streamed_calls = self.ttfts.len() as u64;
        if s.streamed_calls > 0 {
            let [p50, p95] = self.ttfts.percentiles([0.50, 0.95]);
            s.p50_time_to_first_token_ms = Some(p50);
            s.p95_time_to_first_token_ms = Some(p95);
        }
        if sums.tokens_per_second_count > 0 {
            s.avg_tokens_per_second =
                Some(sums.tokens_per_second_sum.value() / sums.tokens_per_second_count as f64);
        }
        s
    }
}

/// The index the Python original's percentile rule picks among `n > 0` sorted values:
/// `min(floor(n * p), n - 1)`.
pub(crate) fn percentile_index(n: usize, p: f64) -> usize {
    ((n as f64 * p).floor() as usize).min(n - 1)
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
        let idx = percentile_index(n, p);
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
pub(crate) const DAY_SECS: i64 = 86_400;

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
    pub(crate) skipped: u64,
    pub(crate) unreadable: Vec<usize>,
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

    fn add_bad_line(&mut self) {
        self.skipped += 1;
    }

    /// Whether `select` reads the rollup group `key`.
    pub(crate) fn wants(select: &Select<'_>, key: &GroupKey) -> bool {
        match (*select, key) {
            (Select::Agent(a), GroupKey::Agent(g)) => g == a,
            (Select::Task(a, t), GroupKey::Task(ga, gt))
            | (Select::Versions(a, t), GroupKey::Version(ga, gt, _)) => ga == a && gt == t,
            (Select::Models, GroupKey::Model(_))
            | (Select::Days, GroupKey::Day(_))
            | (Select::Tasks, GroupKey::Task(..))
            | (Select::Tags, GroupKey::Tag(_))
            | (Select::Spend, GroupKey::Day(_) | GroupKey::Task(..) | GroupKey::Tag(_))
            | (
                Select::Overview,
                GroupKey::Day(_) | GroupKey::Model(_) | GroupKey::Task(..) | GroupKey::Version(..),
            ) => true,
            _ => false,
        }
    }

    /// Adds a rollup group's accumulator where `select` counts its records, as adding the
    /// records one by one would.
    pub(crate) fn add_group(&mut self, select: &Select<'_>, key: &GroupKey, acc: Acc) {
        if !Self::wants(select, key) {
            return;
        }
        match key {
            GroupKey::Agent(_) => self.single.merge(acc),
            GroupKey::Task(a, t) => {
                if let Select::Task(..) = select {
                    self.single.merge(acc);
                } else {
                    let slot = self.tasks.entry(a.clone()).or_default();
                    slot.entry(t.clone()).or_default().all.merge(acc);
                }
            }
            GroupKey::Version(a, t, v) => {
                if let Select::Versions(..) = select {
                    self.versions.entry(*v).or_default().merge(acc);
                } else {
                    let slot = self.tasks.entry(a.clone()).or_default();
                    let task = slot.entry(t.clone()).or_default();
                    task.versions.entry(*v).or_default().merge(acc);
                }
            }
            GroupKey::Model(m) => self.models.entry(m.clone()).or_default().merge(acc),
            GroupKey::Day(d) => match select {
                Select::Overview => {
                    self.single.merge(acc.clone());
                    self.days.entry(*d).or_default().merge(acc);
                }
                Select::Spend => self.single.merge(acc),
                _ => self.days.entry(*d).or_default().merge(acc),
            },
            GroupKey::Tag(tag) => self.tags.entry(tag.clone()).or_default().merge(acc),
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

    pub(crate) fn merge(&mut self, o: Outcome) {
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
            let mut sum = ExactSum::default();
            for task in by_task.values() {
                sum.merge(&task.all.sums.cost_usd);
            }
            let sum = sum.value();
            agents.insert(agent.clone(), sum);
        }
        let tags = self
            .tags
            .iter()
            .filter_map(|(tag, acc)| Some((tag.clone()?, acc.sums.cost_usd.value())))
            .collect();
        Spend {
            total_usd: self.single.sums.cost_usd.value(),
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

/// The part of a file a query reads: the lines that start at `start` or later and before `end`
/// (`None`: to the end of the file as it is when the query plans its work).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Span {
    pub(crate) start: u64,
    pub(crate) end: Option<u64>,
}

/// The tasks reading `spans` of `files`, and the indexes of the files that cannot be read.
fn plan(files: &[PathBuf], spans: &[Span]) -> (Vec<Task>, Vec<usize>) {
    let mut tasks = Vec::new();
    let mut unreadable = Vec::new();
    for (i, path) in files.iter().enumerate() {
        let len = match std::fs::metadata(path) {
            Ok(m) => m.len(),
            Err(_) => {
                unreadable.push(i);
                continue;
            }
        };
        let span = spans.get(i).copied().unwrap_or_default();
        let len = span.end.map_or(len, |end| end.min(len));
        let mut start = span.start;
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
    (tasks, unreadable)
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
    pub(crate) fn for_select(select: &Select<'_>) -> Option<Prefilter> {
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

    /// Whether a line (without its newline) is one the filter hands on to be read.
    pub(crate) fn passes(&self, line: &[u8]) -> bool {
        self.finder.find(line).is_some() || memchr::memchr(b'\\', line).is_some()
    }
}

/// What one task gathers: each record of the window with `record`, each bad line with `bad`
/// (blank lines are neither); `Err` when the file could not be read.
fn run_task<G>(
    files: &[PathBuf],
    task: &Task,
    window: &Window,
    filter: Option<&Prefilter>,
    part: &mut G,
    record: impl Fn(&mut G, &Rec<'_>),
    bad: impl Fn(&mut G, &[u8]),
) -> std::io::Result<()> {
    for_each_line(&files[task.file], task, filter, |line| {
        if is_blank(line) {
            return;
        }
        match parse_line(line) {
            Some(r) => {
                if window.contains(r.secs, r.nanos) {
                    record(part, &r);
                }
            }
            None => bad(part, line),
        }
    })
}

/// Reads `spans` of `files` in chunks, in parallel: one `G` per chunk (made by `init`, fed by
/// `record` and `bad`), in file order so that results do not depend on scheduling, with the
/// indexes of the files that could not be read (a file once per chunk that failed).
pub(crate) fn gather<G: Send>(
    files: &[PathBuf],
    spans: &[Span],
    window: &Window,
    filter: Option<&Prefilter>,
    init: impl Fn() -> G + Sync,
    record: impl Fn(&mut G, &Rec<'_>) + Sync,
    bad: impl Fn(&mut G, &[u8]) + Sync,
) -> (Vec<G>, Vec<usize>) {
    let (tasks, mut unreadable) = plan(files, spans);
    let parts: Vec<(G, bool)> = tasks
        .par_iter()
        .with_max_len(1)
        .map(|t| {
            let mut part = init();
            let ok = run_task(files, t, window, filter, &mut part, &record, &bad).is_ok();
            (part, ok)
        })
        .collect();
    let mut out = Vec::with_capacity(parts.len());
    for (task, (part, ok)) in tasks.iter().zip(parts) {
        if !ok {
            unreadable.push(task.file);
        }
        out.push(part);
    }
    (out, unreadable)
}

/// Aggregates the selected records of the window over `spans` of `files` (`spans[i]` of
/// `files[i]`, the whole file when `spans` has no entry for it), chunks in parallel, merged in
/// file order so that results do not depend on scheduling.
pub(crate) fn aggregate_spans(
    files: &[PathBuf],
    spans: &[Span],
    window: &Window,
    select: &Select<'_>,
) -> Outcome {
    let filter = Prefilter::for_select(select);
    let (parts, unreadable) = gather(
        files,
        spans,
        window,
        filter.as_ref(),
        Outcome::default,
        |out, r| out.add(select, r),
        |out, _line| out.add_bad_line(),
    );
    let mut total = Outcome {
        unreadable,
        ..Outcome::default()
    };
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
    let (tasks, mut unreadable) = plan(files, &[]);
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
    use super::{Values, percentiles};

    /// Runs of many sizes added one by one: few runs kept, and every percentile the element a
    /// sort of all the values gives.
    #[test]
    fn sorted_runs_added_one_by_one_stay_few_and_select_exactly() {
        let mut state = 99u64;
        let mut next = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            state >> 33
        };
        let mut values = Values::default();
        let mut all = Vec::new();
        for _ in 0..500 {
            let len = (next() % 40) as usize;
            let mut run: Vec<f64> = (0..len).map(|_| (next() % 5_000) as f64 / 8.0).collect();
            run.sort_by(f64::total_cmp);
            all.extend_from_slice(&run);
            values.add_sorted(run);
            assert!(
                values.runs.len() <= 2 * (usize::BITS - all.len().leading_zeros()) as usize + 1,
                "{} runs for {} values",
                values.runs.len(),
                all.len()
            );
        }
        all.sort_by(f64::total_cmp);
        let ps = [0.0, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0];
        let got = values.clone().percentiles(ps);
        for (p, got) in ps.into_iter().zip(got) {
            let idx = ((all.len() as f64 * p).floor() as usize).min(all.len() - 1);
            assert_eq!(got, all[idx], "p {p}");
        }
        assert_eq!(values.len(), all.len());
    }

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
