//! Rollups: per closed UTC day, the accumulators every query needs, kept beside the daily file
//! (`metrics_YYYY-MM-DD.rollup` next to `metrics_YYYY-MM-DD.jsonl`), so a query over a long
//! history reads a few summaries instead of every line.
//!
//! A rollup holds, for each group of its day's records — per UTC day of the timestamp, per
//! agent, per agent and task, per model, per agent, task and template version, per tag — the
//! group's [`Sums`] (counts and exact sums, stored as they are) and its latencies and times to
//! first token sorted, so that a query merging rollups gives exactly the figures of a scan:
//! the same counts and sums (exact sums do not depend on the order of addition) and the same
//! elements for every percentile (selected across the sorted runs without merging them). It
//! also keeps the day's first and last timestamps (a window that cuts through the file's
//! records scans the file) and its bad lines (an agent's query counts those that name it, as
//! its scan does).
//!
//! Validity: a rollup records the size and modification time of the daily file it was built
//! from; a query uses it only while the file still has them, and otherwise rebuilds it (a late
//! write to a closed day). Today's file (by the store's clock) has no rollup: from its second
//! query on, a store keeps a summary of it in memory ([`Today`], the same groups a rollup
//! holds) up to its last complete line and reads only the lines appended since — the file
//! only grows while it is today's; a file replaced (another inode), cut short, or whose first
//! bytes or bytes before the summarized end changed is summarized anew. A missing,
//! stale, unreadable or corrupt rollup (every part is checksummed) is never fatal: the query
//! scans the file and writes a new rollup, never touching the daily file. Rollups are written
//! to a temporary file and renamed into place, so processes that query and rebuild at once
//! only ever see whole rollups.
//!
//! File layout (little-endian): the magic `PKMROLUP`, the header's length (u64) and its XXH3-64
//! checksum (u64), the header as JSON ([`Header`]), then the body: the sections the header
//! points into (sorted `f64` values, and the bad lines joined by newlines), each with its
//! own checksum, read only when a query needs it.
//!
//! Building: one pass over the file adds each record once, to the group of all its keys
//! (`fine.rs`); the groups above are then made from those, and the values sorted once.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

use crate::fine;
use crate::query::{self, Acc, Outcome, Prefilter, Run, Select, Sums, Values};
use crate::store::Window;

/// Bumped whenever the layout or the meaning of a stored figure changes; a rollup of another
/// format is rebuilt.
const FORMAT: u32 = 2;
const MAGIC: &[u8; 8] = b"PKMROLUP";

/// One group of a day's records. A new way of grouping (tags, say) is a new variant: the
/// builder adds each record to it, [`Outcome::add_group`] says which query reads it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) enum GroupKey {
    /// The records whose timestamp falls on this UTC day (days since the Unix epoch).
    Day(i64),
    /// One agent's records.
    Agent(String),
    /// One agent's records for one task.
    Task(String, String),
    /// One model's records.
    Model(String),
    /// One template version of an agent's task.
    Version(String, String, Option<u32>),
    /// The records carrying one tag (a record with two tags is in both); `None`: without tags.
    Tag(Option<String>),
}

/// What identifies the content of a daily file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Fingerprint {
    len: u64,
    modified_secs: i64,
    modified_nanos: u32,
}

fn fingerprint(path: &Path) -> std::io::Result<Fingerprint> {
    let meta = std::fs::metadata(path)?;
    let modified = meta.modified()?;
    let (secs, nanos) = match modified.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
        Err(e) => (
            -(e.duration().as_secs() as i64),
            e.duration().subsec_nanos(),
        ),
    };
    Ok(Fingerprint {
        len: meta.len(),
        modified_secs: secs,
        modified_nanos: nanos,
    })
}

/// Where a part of the body lies, and its checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Section {
    offset: u64,
    len: u64,
    checksum: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct GroupEntry {
    key: GroupKey,
    sums: Sums,
    latencies: Section,
    ttfts: Section,
}

/// The header of a rollup file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    format: u32,
    source: Fingerprint,
    /// The earliest and latest record timestamps, as (seconds, nanoseconds) since the epoch.
    first: Option<(i64, u32)>,
    last: Option<(i64, u32)>,
    /// Bad lines in the file.
    skipped: u64,
    /// The bad lines, joined by newlines; `None` when there were too many to keep.
    bad_lines: Option<Section>,
    groups: Vec<GroupEntry>,
}

/// A rollup file was damaged or does not match its header.
#[derive(Debug)]
struct Corrupt;

/// One day's rollup: its header, and the sections read so far.
#[derive(Debug)]
struct DayRollup {
    header: Header,
    /// The open rollup file (kept open so that a rollup renamed over it by another process
    /// does not change what this one reads) and where its body starts.
    file: Mutex<File>,
    body_start: u64,
    /// Per group: latencies, then times to first token.
    values: Vec<[OnceLock<Run>; 2]>,
    bad_lines: OnceLock<Arc<[u8]>>,
}

impl DayRollup {
    /// Reads a rollup's header; sections are read when needed.
    fn open(path: &Path) -> Result<DayRollup, Corrupt> {
        let mut file = File::open(path).map_err(|_| Corrupt)?;
        let mut head = [0u8; 24];
        file.read_exact(&mut head).map_err(|_| Corrupt)?;
        if &head[..8] != MAGIC {
            return Err(Corrupt);
        }
        let len = u64::from_le_bytes(head[8..16].try_into().map_err(|_| Corrupt)?);
        let checksum = u64::from_le_bytes(head[16..24].try_into().map_err(|_| Corrupt)?);
        let file_len = file.metadata().map_err(|_| Corrupt)?.len();
        if len > file_len.saturating_sub(24) {
            return Err(Corrupt);
        }
        let mut json = vec![0u8; len as usize];
        file.read_exact(&mut json).map_err(|_| Corrupt)?;
        if xxh3_64(&json) != checksum {
            return Err(Corrupt);
        }
        let header: Header = serde_json::from_slice(&json).map_err(|_| Corrupt)?;
        if header.format != FORMAT {
            return Err(Corrupt);
        }
        let body_start = 24 + len;
        let body_len = file_len - body_start;
        let sections = header
            .groups
            .iter()
            .flat_map(|g| [g.latencies, g.ttfts])
            .chain(header.bad_lines);
        for s in sections {
            if s.offset.checked_add(s.len).is_none_or(|end| end > body_len) {
                return Err(Corrupt);
            }
        }
        for g in &header.groups {
            if g.latencies.len != g.sums.total.saturating_mul(8)
                || g.ttfts.len > g.latencies.len
                || g.ttfts.len % 8 != 0
            {
                return Err(Corrupt);
            }
        }
        let values = header.groups.iter().map(|_| Default::default()).collect();
        Ok(DayRollup {
            header,
            file: Mutex::new(file),
            body_start,
            values,
            bad_lines: OnceLock::new(),
        })
    }

    fn read_section(&self, s: Section) -> Result<Vec<u8>, Corrupt> {
        let mut buf = vec![0u8; s.len as usize];
        let mut file = self.file.lock().map_err(|_| Corrupt)?;
        file.seek(SeekFrom::Start(self.body_start + s.offset))
            .map_err(|_| Corrupt)?;
        file.read_exact(&mut buf).map_err(|_| Corrupt)?;
        drop(file);
        if xxh3_64(&buf) != s.checksum {
            return Err(Corrupt);
        }
        Ok(buf)
    }

    /// Group `g`'s latencies (`which` 0) or times to first token (1), sorted.
    fn values(&self, g: usize, which: usize) -> Result<Run, Corrupt> {
        let cell = &self.values[g][which];
        if let Some(v) = cell.get() {
            return Ok(v.clone());
        }
        let entry = &self.header.groups[g];
        let section = if which == 0 {
            entry.latencies
        } else {
            entry.ttfts
        };
        let bytes = self.read_section(section)?;
        let values: Vec<f64> = bytes
            .chunks_exact(8)
            .map(|c| {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                f64::from_le_bytes(b)
            })
            .collect();
        let sorted = values.windows(2).all(|w| w[0].total_cmp(&w[1]).is_le());
        if !sorted || values.iter().any(|v| !v.is_finite()) {
            return Err(Corrupt);
        }
        Ok(cell.get_or_init(|| Run::new(values.into())).clone())
    }

    fn bad_lines(&self) -> Result<Option<Arc<[u8]>>, Corrupt> {
        let Some(section) = self.header.bad_lines else {
            return Ok(None);
        };
        if let Some(v) = self.bad_lines.get() {
            return Ok(Some(v.clone()));
        }
        let bytes = self.read_section(section)?;
        Ok(Some(self.bad_lines.get_or_init(|| bytes.into()).clone()))
    }

    /// Adds what `select` reads of this day to `out`: `Ok(false)` when the rollup cannot
    /// answer (the window cuts through the day's records, or an agent's bad lines were too
    /// many to keep) and the file must be scanned. Nothing is added unless all of it is.
    fn answer(
        &self,
        window: &Window,
        select: &Select<'_>,
        out: &mut Outcome,
    ) -> Result<bool, Corrupt> {
        let h = &self.header;
        let summary = DaySummary {
            span: fine::TimeSpan {
                first: h.first,
                last: h.last,
            },
            skipped: h.skipped,
        };
        answer_day(
            &summary,
            h.groups.iter().map(|g| &g.key),
            |g| {
                let entry = &self.header.groups[g];
                let mut acc = Acc {
                    sums: entry.sums.clone(),
                    latencies: Values::sorted(self.values(g, 0)?),
                    ttfts: Values::default(),
                };
                if entry.ttfts.len > 0 {
                    acc.ttfts = Values::sorted(self.values(g, 1)?);
                }
                Ok(acc)
            },
            || self.bad_lines(),
            window,
            select,
            out,
        )
    }
}

/// What a day's summary knows of its records besides its groups.
#[derive(Debug, Clone, Copy, Default)]
struct DaySummary {
    span: fine::TimeSpan,
    skipped: u64,
}

/// Adds what `select` reads of one summarized day (a rollup, or today's lines summarized so
/// far) to `out`: `Ok(false)` when the summary cannot answer — the window cuts through its
/// records, or an agent's bad lines were too many to keep — and the lines must be scanned.
/// `keys` are the summary's groups in order, `acc(i)` the accumulator of the `i`-th, read only
/// when `select` wants it. Nothing is added unless all of it is.
fn answer_day<'k>(
    summary: &DaySummary,
    keys: impl Iterator<Item = &'k GroupKey>,
    acc: impl Fn(usize) -> Result<Acc, Corrupt>,
    bad_lines: impl FnOnce() -> Result<Option<Arc<[u8]>>, Corrupt>,
    window: &Window,
    select: &Select<'_>,
    out: &mut Outcome,
) -> Result<bool, Corrupt> {
    let cutoff = (window.cutoff_secs, window.cutoff_nanos);
    let now = (window.now_secs, window.now_nanos);
    let records_wanted = match (summary.span.first, summary.span.last) {
        (Some(first), Some(last)) => {
            if window.contains(first.0, first.1) && window.contains(last.0, last.1) {
                true
            } else if last < cutoff || first > now {
                false
            } else {
                return Ok(false);
            }
        }
        _ => false,
    };
    let skipped = match Prefilter::for_select(select) {
        None => summary.skipped,
        Some(filter) => match bad_lines()? {
            None => return Ok(false),
            Some(lines) => lines
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty() && filter.passes(l))
                .count() as u64,
        },
    };
    let mut groups = Vec::new();
    if records_wanted {
        for (g, key) in keys.enumerate() {
            if Outcome::wants(select, key) {
                groups.push((key, acc(g)?));
            }
        }
    }
    for (key, acc) in groups {
        out.add_group(select, key, acc);
    }
    out.skipped += skipped;
    Ok(true)
}

/// The rollup file beside a daily file.
fn rollup_path(daily: &Path) -> PathBuf {
    daily.with_extension("rollup")
}

/// Builds the rollup of one daily file and writes it beside the file. `None` when the file
/// could not be read to the end, or changed while it was read (the next query tries again).
fn build(daily: &Path, source: Fingerprint) -> Option<(Header, Vec<u8>)> {
    let all = fine::gather(daily, query::Span::default());
    if all.unreadable || fingerprint(daily).ok() != Some(source) {
        return None;
    }
    let values: usize = all.groups.iter().map(|g| g.2.len() + g.3.len()).sum();
    let mut body = Vec::with_capacity(values * 8);
    let mut put_floats = |v: &[f64]| {
        let offset = body.len();
        for x in v {
            body.extend_from_slice(&x.to_le_bytes());
        }
        Section {
            offset: offset as u64,
            len: (body.len() - offset) as u64,
            checksum: xxh3_64(&body[offset..]),
        }
    };
    let mut entries = Vec::with_capacity(all.groups.len());
    for (key, sums, latencies, ttfts) in all.groups {
        let latencies = put_floats(&latencies);
        let ttfts = put_floats(&ttfts);
        entries.push(GroupEntry {
            key,
            sums,
            latencies,
            ttfts,
        });
    }
    let bad_lines = all.bad_lines.joined().map(|joined| {
        let offset = body.len();
        body.extend_from_slice(&joined);
        Section {
            offset: offset as u64,
            len: joined.len() as u64,
            checksum: xxh3_64(&joined),
        }
    });
    let header = Header {
        format: FORMAT,
        source,
        first: all.span.first,
        last: all.span.last,
        skipped: all.skipped,
        bad_lines,
        groups: entries,
    };
    Some((header, body))
}

/// Writes a rollup to a temporary file beside `path` and renames it into place.
fn write(path: &Path, header: &Header, body: &[u8]) -> std::io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let json = serde_json::to_vec(header).map_err(std::io::Error::other)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        let mut head = Vec::with_capacity(24 + json.len());
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&(json.len() as u64).to_le_bytes());
        head.extend_from_slice(&xxh3_64(&json).to_le_bytes());
        head.extend_from_slice(&json);
        f.write_all(&head)?;
        f.write_all(body)?;
        // No fsync: a rollup torn by a crash fails its checksums and is rebuilt.
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Today's file summarized up to the end of a complete line, kept by a store between queries
/// so that each query reads only the lines appended since (while a file is today's it only
/// grows). Checked before each use — the same file (device and inode), at least as long, the
/// same bytes at its start and just before the summarized end — and made anew otherwise.
#[derive(Debug)]
struct Today {
    path: PathBuf,
    id: (u64, u64),
    /// The summarized bytes: `0..upto`, ending with a newline (or empty).
    upto: u64,
    head: Vec<u8>,
    before: Vec<u8>,
    summary: DaySummary,
    bad_lines: fine::BadLines,
    /// `bad_lines` joined by newlines, as a rollup keeps them.
    bad_joined: Option<Arc<[u8]>>,
    /// The groups of a rollup, each group's values as a few sorted runs.
    groups: Vec<(GroupKey, Acc)>,
    index: HashMap<GroupKey, usize>,
    /// The file grew past the largest kept summarized ([`TODAY_MAX_BYTES`]): it is scanned.
    given_up: bool,
}

/// Bytes compared at the start of today's file and before the summarized end.
const CHECK_BYTES: u64 = 64;

/// The largest today's file a store keeps summarized in memory (about 2M records, whose values
/// take ~100 MB in the summary's groups); a busier day's file is scanned by every query, as
/// closed days without a rollup are.
const TODAY_MAX_BYTES: u64 = 1 << 30;

#[cfg(unix)]
fn file_id(meta: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

#[cfg(not(unix))]
fn file_id(_meta: &std::fs::Metadata) -> (u64, u64) {
    (0, 0)
}

fn read_at(file: &mut File, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len as usize];
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(&mut buf)?;
    Ok(buf)
}

/// The end of the last complete line of `file` (the offset after its newline) in `from..len`;
/// `from` when no newline lies there.
fn last_line_end(file: &mut File, from: u64, len: u64) -> std::io::Result<u64> {
    const BLOCK: u64 = 64 * 1024;
    let mut end = len;
    while end > from {
        let start = end.saturating_sub(BLOCK).max(from);
        let block = read_at(file, start, end - start)?;
        if let Some(i) = memchr::memrchr(b'\n', &block) {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(from)
}

impl Today {
    fn new(path: &Path, id: (u64, u64)) -> Today {
        Today {
            path: path.to_path_buf(),
            id,
            upto: 0,
            head: Vec::new(),
            before: Vec::new(),
            summary: DaySummary::default(),
            bad_lines: fine::BadLines::default(),
            bad_joined: Some(Arc::from(Vec::new())),
            groups: Vec::new(),
            index: HashMap::new(),
            given_up: false,
        }
    }

    /// Whether this summary still describes the start of `file` (or, given up on as too big,
    /// is still about the same file).
    fn holds_for(&self, path: &Path, id: (u64, u64), len: u64, file: &mut File) -> bool {
        if self.path != path || self.id != id {
            return false;
        }
        if self.given_up {
            return true;
        }
        if len < self.upto {
            return false;
        }
        let head = read_at(file, 0, self.head.len() as u64);
        let before_at = self.upto - self.before.len() as u64;
        let before = read_at(file, before_at, self.before.len() as u64);
        head.is_ok_and(|h| h == self.head) && before.is_ok_and(|b| b == self.before)
    }

    /// Adds what a rollup holds of the lines from `upto` to `end`.
    fn extend(&mut self, part: fine::Gathered, end: u64, file: &mut File) -> std::io::Result<()> {
        self.summary.span.widen(part.span);
        if part.skipped > 0 {
            self.summary.skipped += part.skipped;
            self.bad_lines.extend(&part.bad_lines);
            self.bad_joined = self.bad_lines.joined().map(Arc::from);
        }
        for (key, sums, latencies, ttfts) in part.groups {
            let i = match self.index.get(&key) {
                Some(&i) => i,
                None => {
                    self.index.insert(key.clone(), self.groups.len());
                    self.groups.push((key, Acc::default()));
                    self.groups.len() - 1
                }
            };
            let acc = &mut self.groups[i].1;
            acc.sums.merge(&sums);
            acc.latencies.add_sorted(latencies);
            acc.ttfts.add_sorted(ttfts);
        }
        self.upto = end;
        self.head = read_at(file, 0, end.min(CHECK_BYTES))?;
        self.before = read_at(file, end - end.min(CHECK_BYTES), end.min(CHECK_BYTES))?;
        Ok(())
    }
}

/// The rollups a store has read, by day, and the way to them; and today's file summarized so
/// far.
#[derive(Debug)]
pub(crate) struct Rollups {
    days: Mutex<HashMap<PathBuf, Arc<DayRollup>>>,
    today: Mutex<Option<Today>>,
    /// Whether a query has read today's file: the summary is made by the second (summarizing
    /// costs more than the cheapest scans, so a process that queries once does not pay it).
    today_seen: std::sync::atomic::AtomicBool,
    /// [`TODAY_MAX_BYTES`] (smaller in tests).
    today_max_bytes: u64,
}

impl Default for Rollups {
    fn default() -> Self {
        Rollups {
            days: Mutex::default(),
            today: Mutex::default(),
            today_seen: std::sync::atomic::AtomicBool::new(false),
            today_max_bytes: TODAY_MAX_BYTES,
        }
    }
}

impl Rollups {
    /// The rollup of a closed day's file, valid for its current content: from memory, from
    /// disk, or built now (and written beside the file). `None` when none can be had.
    fn get(&self, daily: &Path, source: Fingerprint, rebuild: bool) -> Option<Arc<DayRollup>> {
        let path = rollup_path(daily);
        if !rebuild {
            if let Some(r) = self.cached(daily)
                && r.header.source == source
            {
                return Some(r);
            }
            if let Ok(r) = DayRollup::open(&path)
                && r.header.source == source
            {
                return Some(self.remember(daily, r));
            }
        }
        let (header, body) = build(daily, source)?;
        match write(&path, &header, &body) {
            Ok(()) => {
                if let Ok(r) = DayRollup::open(&path)
                    && r.header.source == source
                {
                    return Some(self.remember(daily, r));
                }
                None
            }
            // A directory we may not write to: the file is scanned.
            Err(_) => None,
        }
    }

    fn cached(&self, daily: &Path) -> Option<Arc<DayRollup>> {
        self.days.lock().ok()?.get(daily).cloned()
    }

    fn remember(&self, daily: &Path, r: DayRollup) -> Arc<DayRollup> {
        let r = Arc::new(r);
        if let Ok(mut days) = self.days.lock() {
            days.insert(daily.to_path_buf(), r.clone());
        }
        r
    }

    fn forget(&self, daily: &Path) {
        if let Ok(mut days) = self.days.lock() {
            days.remove(daily);
        }
    }

    /// Adds what `select` reads of a closed day's file to `out` from its rollup (built first
    /// when missing, stale or corrupt); `false` when the file must be scanned instead.
    fn answer(
        &self,
        daily: &Path,
        window: &Window,
        select: &Select<'_>,
        out: &mut Outcome,
    ) -> bool {
        let Ok(source) = fingerprint(daily) else {
            return false;
        };
        for rebuild in [false, true] {
            let Some(r) = self.get(daily, source, rebuild) else {
                return false;
            };
            match r.answer(window, select, out) {
                Ok(used) => return used,
                Err(Corrupt) => self.forget(daily),
            }
        }
        false
    }

    /// Adds what `select` reads of today's file to `out` from the summary of its lines read so
    /// far, brought up to its last complete line first. Returns where the lines not summarized
    /// start (at most a line being written is left: it is scanned), or `None` when the summary
    /// cannot answer (nothing added) and the whole file must be scanned.
    fn answer_today(
        &self,
        daily: &Path,
        window: &Window,
        select: &Select<'_>,
        out: &mut Outcome,
    ) -> Option<u64> {
        if !self.today_seen.swap(true, Ordering::Relaxed) {
            return None;
        }
        let mut guard = self.today.lock().ok()?;
        let mut file = File::open(daily).ok()?;
        let meta = file.metadata().ok()?;
        let id = file_id(&meta);
        let holds = guard
            .as_ref()
            .is_some_and(|t| t.holds_for(daily, id, meta.len(), &mut file));
        if !holds {
            *guard = Some(Today::new(daily, id));
        }
        let today = guard.as_mut()?;
        if today.given_up {
            return None;
        }
        let end = last_line_end(&mut file, today.upto, meta.len()).ok()?;
        if end > self.today_max_bytes {
            // Too big to keep: remembered (for this file) so later queries scan at once.
            let mut given_up = Today::new(daily, id);
            given_up.given_up = true;
            *guard = Some(given_up);
            return None;
        }
        if end > today.upto {
            let span = query::Span {
                start: today.upto,
                end: Some(end),
            };
            let part = fine::gather(daily, span);
            if part.unreadable || today.extend(part, end, &mut file).is_err() {
                *guard = None;
                return None;
            }
        }
        let used = answer_day(
            &today.summary,
            today.groups.iter().map(|(key, _)| key),
            |g| Ok(today.groups[g].1.clone()),
            || Ok(today.bad_joined.clone()),
            window,
            select,
            out,
        );
        matches!(used, Ok(true)).then_some(today.upto)
    }

    /// Builds and writes the rollup of one daily file whatever is there already; whether a
    /// rollup could be built.
    pub(crate) fn rebuild(&self, daily: &Path) -> bool {
        let Ok(source) = fingerprint(daily) else {
            return false;
        };
        self.forget(daily);
        self.get(daily, source, true).is_some()
    }
}

/// Aggregates the window's records over the daily `files`: closed days (before `today`) from
/// their rollups where those can answer, today's file from the store's summary of the lines
/// it has read plus a scan of the lines appended since, everything else by scanning.
pub(crate) fn aggregate(
    files: &[(NaiveDate, PathBuf)],
    today: NaiveDate,
    window: &Window,
    select: &Select<'_>,
    rollups: Option<&Rollups>,
) -> Outcome {
    let mut out = Outcome::default();
    let mut scan = Vec::new();
    let mut spans = Vec::new();
    for (day, path) in files {
        let mut span = query::Span::default();
        match rollups {
            Some(r) if *day < today && r.answer(path, window, select, &mut out) => continue,
            Some(r) if *day == today => {
                if let Some(start) = r.answer_today(path, window, select, &mut out) {
                    span.start = start;
                }
            }
            _ => {}
        }
        scan.push(path.clone());
        spans.push(span);
    }
    out.merge(query::aggregate_spans(&scan, &spans, window, select));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A today's file past the size kept summarized is scanned by every query, with the same
    /// figures, and the summary is given up (its values freed) until the file changes.
    #[test]
    fn a_today_file_past_the_limit_is_scanned_and_the_summary_given_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = chrono::Utc::now();
        let today = now.date_naive();
        let path = dir.path().join(crate::writer::file_name(today));
        let at = (now - chrono::Duration::seconds(1)).format("%Y-%m-%dT%H:%M:%S%.6f");
        let mut text = String::new();
        for i in 0..20 {
            text.push_str(&format!(
                "{{\"prompt_hash\": \"9f86\", \"agent\": \"writer\", \"task\": \"t\", \"model\": \"m\", \"temperature\": 0.8, \"timestamp\": \"{at}\", \"latency_ms\": {i}.5, \"tokens_prompt\": 1, \"tokens_completion\": 2, \"cache_hit\": false, \"validation_passed\": true, \"retry_count\": 0, \"error\": null, \"response_length\": 10, \"language_detected\": null}}\n"
            ));
        }
        std::fs::write(&path, &text).expect("write today");
        let files = vec![(today, path.clone())];
        let window = Window::new(now, 1);
        let query = |rollups: &Rollups| {
            aggregate(
                &files,
                today,
                &window,
                &Select::Agent("writer"),
                Some(rollups),
            )
            .single()
        };
        let tight = Rollups {
            today_max_bytes: 100,
            ..Rollups::default()
        };
        let roomy = Rollups::default();
        for _ in 0..3 {
            let (a, b) = (query(&tight), query(&roomy));
            assert_eq!(a.total_calls, 20);
            assert_eq!(format!("{a:?}"), format!("{b:?}"));
        }
        let kept = |r: &Rollups| {
            let t = r.today.lock().expect("lock");
            t.as_ref()
                .map(|t| (t.given_up, t.upto, t.groups.is_empty()))
        };
        assert_eq!(kept(&tight), Some((true, 0, true)));
        assert_eq!(kept(&roomy), Some((false, text.len() as u64, false)));
    }
}
