//! What a rollup holds of some lines, gathered in one pass that adds each record once.
//!
//! A scan for a query adds a record to each of the groups the query shows (per day, per model,
//! per task, ...). A rollup needs all of its groups ([`GroupKey`]) and every group's values
//! sorted; adding each record to five or more groups and sorting each group apart would cost
//! more than any query's scan. Instead each record goes to one *fine* group — its day, agent,
//! task, model, template version and tags at once — with one lookup; at the end each fine
//! group's counts and sums are added to the rollup groups it belongs to (exact sums, so the
//! order does not matter), and the values of all records are sorted once, together, then
//! handed out in that order to the groups of their fine group: each group's values come out
//! sorted without being sorted apart.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rayon::slice::ParallelSliceMut;

use crate::parse::Rec;
use crate::query::{self, DAY_SECS, Prefilter, Span, Sums};
use crate::rollup::GroupKey;
use crate::store::Window;

/// Bytes of bad lines a rollup keeps (to count them for an agent's query as a scan would);
/// a day with more is scanned for agent queries.
const MAX_BAD_LINE_BYTES: usize = 1 << 20;

/// The keys of a fine group.
#[derive(Debug, Clone)]
struct FineKey {
    day: i64,
    agent: String,
    task: String,
    model: String,
    version: Option<u32>,
    /// The record's tags, each once, in the record's order.
    tags: Vec<String>,
}

impl FineKey {
    fn of(r: &Rec<'_>) -> FineKey {
        let mut tags: Vec<String> = Vec::new();
        for t in &r.tags {
            if !tags.iter().any(|k| k == t.as_ref()) {
                tags.push(t.as_ref().to_owned());
            }
        }
        FineKey {
            day: r.secs.div_euclid(DAY_SECS),
            agent: r.agent.as_ref().to_owned(),
            task: r.task.as_ref().to_owned(),
            model: r.model.as_ref().to_owned(),
            version: r.template_version,
            tags,
        }
    }

    /// The rollup groups a record of this fine group belongs to.
    fn groups(&self) -> Vec<GroupKey> {
        let mut keys = vec![
            GroupKey::Day(self.day),
            GroupKey::Agent(self.agent.clone()),
            GroupKey::Task(self.agent.clone(), self.task.clone()),
            GroupKey::Model(self.model.clone()),
            GroupKey::Version(self.agent.clone(), self.task.clone(), self.version),
        ];
        if self.tags.is_empty() {
            keys.push(GroupKey::Tag(None));
        }
        for t in &self.tags {
            keys.push(GroupKey::Tag(Some(t.clone())));
        }
        keys
    }
}

/// Writes the bytes that identify a record's fine group: fixed-width numbers, then the strings
/// each followed by `0xFF` (a byte no UTF-8 string holds), tags deduplicated in order.
fn encode(r: &Rec<'_>, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&r.secs.div_euclid(DAY_SECS).to_le_bytes());
    match r.template_version {
        Some(v) => {
            out.push(1);
            out.extend_from_slice(&v.to_le_bytes());
        }
        None => out.push(0),
    }
    for s in [&r.agent, &r.task, &r.model] {
        out.extend_from_slice(s.as_bytes());
        out.push(0xFF);
    }
    for (i, t) in r.tags.iter().enumerate() {
        if !r.tags[..i].contains(t) {
            out.extend_from_slice(t.as_bytes());
            out.push(0xFF);
        }
    }
}

/// The bad lines of a day, kept (in file order) so that an agent's query over a summary counts
/// those that could name the agent, as its scan does — up to [`MAX_BAD_LINE_BYTES`] in all,
/// and none once there were more (such a day is scanned for agent queries).
#[derive(Debug, Clone)]
pub(crate) struct BadLines {
    lines: Option<Vec<Vec<u8>>>,
    bytes: usize,
}

impl Default for BadLines {
    fn default() -> Self {
        BadLines {
            lines: Some(Vec::new()),
            bytes: 0,
        }
    }
}

impl BadLines {
    fn keep<'l>(&mut self, lines: impl IntoIterator<Item = &'l [u8]>) {
        let Some(kept) = &mut self.lines else {
            return;
        };
        for line in lines {
            self.bytes += line.len();
            if self.bytes > MAX_BAD_LINE_BYTES {
                self.lines = None;
                return;
            }
            kept.push(line.to_vec());
        }
    }

    /// Adds the bad lines that follow these.
    pub(crate) fn extend(&mut self, later: &BadLines) {
        match &later.lines {
            Some(lines) => self.keep(lines.iter().map(Vec::as_slice)),
            None => self.lines = None,
        }
    }

    /// The lines joined by newlines; `None` when there were too many to keep.
    pub(crate) fn joined(&self) -> Option<Vec<u8>> {
        self.lines.as_ref().map(|lines| lines.join(&b'\n'))
    }
}

/// The earliest and latest of some records' timestamps, as (seconds, nanoseconds).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TimeSpan {
    pub(crate) first: Option<(i64, u32)>,
    pub(crate) last: Option<(i64, u32)>,
}

impl TimeSpan {
    fn add(&mut self, t: (i64, u32)) {
        self.widen(TimeSpan {
            first: Some(t),
            last: Some(t),
        });
    }

    /// Widens this span to cover `o` too.
    pub(crate) fn widen(&mut self, o: TimeSpan) {
        let pick = |a: Option<(i64, u32)>, b: Option<(i64, u32)>, f: fn(_, _) -> _| match (a, b) {
            (Some(a), Some(b)) => Some(f(a, b)),
            (a, b) => a.or(b),
        };
        self.first = pick(self.first, o.first, std::cmp::min);
        self.last = pick(self.last, o.last, std::cmp::max);
    }
}

/// What one chunk of lines gathered.
#[derive(Debug, Default)]
struct Part {
    ids: HashMap<Vec<u8>, u32>,
    groups: Vec<(FineKey, Sums)>,
    /// Latencies and times to first token as [`query::order_key`]s, with their fine group.
    latencies: Vec<(u64, u32)>,
    ttfts: Vec<(u64, u32)>,
    skipped: u64,
    span: TimeSpan,
    bad_lines: BadLines,
    scratch: Vec<u8>,
}

impl Part {
    fn add(&mut self, r: &Rec<'_>) {
        let mut key = std::mem::take(&mut self.scratch);
        encode(r, &mut key);
        let id = match self.ids.get(key.as_slice()) {
            Some(&id) => id,
            None => {
                let id = self.groups.len() as u32;
                self.ids.insert(key.clone(), id);
                self.groups.push((FineKey::of(r), Sums::default()));
                id
            }
        };
        self.scratch = key;
        self.groups[id as usize].1.add(r);
        self.latencies.push((query::order_key(r.latency_ms), id));
        if let Some(t) = r.time_to_first_token_ms {
            self.ttfts.push((query::order_key(t), id));
        }
        self.span.add((r.secs, r.nanos));
    }

    fn add_bad_line(&mut self, line: &[u8]) {
        self.skipped += 1;
        self.bad_lines.keep(std::iter::once(line));
    }

    /// Adds `o` (the lines after this part's).
    fn merge(&mut self, o: Part) {
        let mut map = vec![0u32; o.groups.len()];
        let mut theirs: Vec<Option<(FineKey, Sums)>> = o.groups.into_iter().map(Some).collect();
        for (bytes, oid) in o.ids {
            let Some((key, sums)) = theirs[oid as usize].take() else {
                continue;
            };
            let id = match self.ids.get(bytes.as_slice()) {
                Some(&id) => {
                    self.groups[id as usize].1.merge(&sums);
                    id
                }
                None => {
                    let id = self.groups.len() as u32;
                    self.ids.insert(bytes, id);
                    self.groups.push((key, sums));
                    id
                }
            };
            map[oid as usize] = id;
        }
        self.latencies
            .extend(o.latencies.into_iter().map(|(k, g)| (k, map[g as usize])));
        self.ttfts
            .extend(o.ttfts.into_iter().map(|(k, g)| (k, map[g as usize])));
        self.skipped += o.skipped;
        self.span.widen(o.span);
        self.bad_lines.extend(&o.bad_lines);
    }
}

/// One rollup group: its counts and sums, its latencies and times to first token sorted by
/// `f64::total_cmp`.
pub(crate) type Group = (GroupKey, Sums, Vec<f64>, Vec<f64>);

/// What a rollup holds of some lines.
#[derive(Debug, Default)]
pub(crate) struct Gathered {
    pub(crate) groups: Vec<Group>,
    pub(crate) span: TimeSpan,
    pub(crate) skipped: u64,
    pub(crate) bad_lines: BadLines,
    /// Whether some of the lines could not be read.
    pub(crate) unreadable: bool,
}

/// Gathers what a rollup holds of the lines of `daily` within `span`, every record whatever
/// its timestamp.
pub(crate) fn gather(daily: &Path, span: Span) -> Gathered {
    let files: [PathBuf; 1] = [daily.to_path_buf()];
    let (parts, unreadable) = query::gather(
        &files,
        &[span],
        &Window::everything(),
        None::<&Prefilter>,
        Part::default,
        Part::add,
        Part::add_bad_line,
    );
    let mut all = Part::default();
    for part in parts {
        all.merge(part);
    }
    let Part {
        groups: fine,
        mut latencies,
        mut ttfts,
        skipped,
        span,
        bad_lines,
        ..
    } = all;
    // Each fine group's rollup groups, by index into `groups`.
    let mut index: HashMap<GroupKey, usize> = HashMap::new();
    let mut groups: Vec<Group> = Vec::new();
    let mut member_of: Vec<Vec<usize>> = Vec::with_capacity(fine.len());
    for (key, sums) in &fine {
        let mut of = Vec::new();
        for g in key.groups() {
            let i = *index.entry(g.clone()).or_insert_with(|| {
                groups.push((g, Sums::default(), Vec::new(), Vec::new()));
                groups.len() - 1
            });
            groups[i].1.merge(sums);
            of.push(i);
        }
        member_of.push(of);
    }
    for g in &mut groups {
        g.2.reserve_exact(g.1.total as usize);
    }
    latencies.par_sort_unstable_by_key(|&(k, _)| k);
    for (k, f) in latencies {
        let v = query::from_order_key(k);
        for &i in &member_of[f as usize] {
            groups[i].2.push(v);
        }
    }
    ttfts.par_sort_unstable_by_key(|&(k, _)| k);
    for (k, f) in ttfts {
        let v = query::from_order_key(k);
        for &i in &member_of[f as usize] {
            groups[i].3.push(v);
        }
    }
    Gathered {
        groups,
        span,
        skipped,
        bad_lines,
        unreadable: !unreadable.is_empty(),
    }
}
