//! Rollups: per closed UTC day, the accumulators every query needs, kept beside the daily file
//! (`metrics_YYYY-MM-DD.rollup` next to `metrics_YYYY-MM-DD.jsonl`), so a query over a long
//! history reads a few summaries instead of every line.
//!
//! A rollup holds, for each group of its day's records — per UTC day of the timestamp, per
//! agent, per agent and task, per model, per agent, task and template version — the
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
//! write to a closed day). Today's file (by the store's clock) is always scanned. A missing,
//! stale, unreadable or corrupt rollup (every part is checksummed) is never fatal: the query
//! scans the file and writes a new rollup, never touching the daily file. Rollups are written
//! to a temporary file and renamed into place, so processes that query and rebuild at once
//! only ever see whole rollups.
//!
//! File layout (little-endian): the magic `PKMROLUP`, the header's length (u64) and its XXH3-64
//! checksum (u64), the header as JSON ([`Header`]), then the body: the sections the header
//! points into (sorted `f64` values, and the bad lines joined by newlines), each with its
//! own checksum, read only when a query needs it.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use chrono::NaiveDate;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

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
        let cutoff = (window.cutoff_secs, window.cutoff_nanos);
        let now = (window.now_secs, window.now_nanos);
        let records_wanted = match (h.first, h.last) {
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
            None => h.skipped,
            Some(filter) => match self.bad_lines()? {
                None => return Ok(false),
                Some(lines) => lines
                    .split(|&b| b == b'\n')
                    .filter(|l| !l.is_empty() && filter.passes(l))
                    .count() as u64,
            },
        };
        let mut groups = Vec::new();
        if records_wanted {
            for (g, entry) in h.groups.iter().enumerate() {
                if !Outcome::wants(select, &entry.key) {
                    continue;
                }
                let mut acc = Acc {
                    sums: entry.sums.clone(),
                    latencies: Values::sorted(self.values(g, 0)?),
                    ttfts: Values::default(),
                };
                if entry.ttfts.len > 0 {
                    acc.ttfts = Values::sorted(self.values(g, 1)?);
                }
                groups.push((&entry.key, acc));
            }
        }
        for (key, acc) in groups {
            out.add_group(select, key, acc);
        }
        out.skipped += skipped;
        Ok(true)
    }
}

/// The rollup file beside a daily file.
fn rollup_path(daily: &Path) -> PathBuf {
    daily.with_extension("rollup")
}

/// Builds the rollup of one daily file and writes it beside the file. `None` when the file
/// could not be read to the end, or changed while it was read (the next query tries again).
fn build(daily: &Path, source: Fingerprint) -> Option<(Header, Vec<u8>)> {
    let all = Window::everything();
    let out = query::aggregate(&[daily.to_path_buf()], &all, &Select::Rollup);
    if !out.unreadable.is_empty() || fingerprint(daily).ok() != Some(source) {
        return None;
    }
    let (first, last, skipped) = (out.first, out.last, out.skipped);
    let bad = out.bad_lines.clone();
    let groups: Vec<(GroupKey, Sums, Vec<f64>, Vec<f64>)> = out
        .into_groups()
        .into_par_iter()
        .map(|(key, acc)| {
            (
                key,
                acc.sums,
                acc.latencies.into_sorted(),
                acc.ttfts.into_sorted(),
            )
        })
        .collect();
    let mut body = Vec::new();
    let mut put = |bytes: &[u8]| {
        let s = Section {
            offset: body.len() as u64,
            len: bytes.len() as u64,
            checksum: xxh3_64(bytes),
        };
        body.extend_from_slice(bytes);
        s
    };
    let floats = |v: &[f64]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let mut entries = Vec::with_capacity(groups.len());
    for (key, sums, latencies, ttfts) in groups {
        let latencies = put(&floats(&latencies));
        let ttfts = put(&floats(&ttfts));
        entries.push(GroupEntry {
            key,
            sums,
            latencies,
            ttfts,
        });
    }
    let bad_lines = bad.map(|lines| put(&lines.join(&b'\n')));
    let header = Header {
        format: FORMAT,
        source,
        first,
        last,
        skipped,
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

/// The rollups a store has read, by day, and the way to them.
#[derive(Debug, Default)]
pub(crate) struct Rollups {
    days: Mutex<HashMap<PathBuf, Arc<DayRollup>>>,
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
/// their rollups where those can answer, everything else by scanning.
pub(crate) fn aggregate(
    files: &[(NaiveDate, PathBuf)],
    today: NaiveDate,
    window: &Window,
    select: &Select<'_>,
    rollups: Option<&Rollups>,
) -> Outcome {
    let mut out = Outcome::default();
    let mut scan = Vec::new();
    for (day, path) in files {
        let answered = match rollups {
            Some(r) if *day < today => r.answer(path, window, select, &mut out),
            _ => false,
        };
        if !answered {
            scan.push(path.clone());
        }
    }
    out.merge(query::aggregate(&scan, window, select));
    out
}
