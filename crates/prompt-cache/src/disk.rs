//! The disk tier: the background writer, and the older layout's files.
//!
//! Layout of `cache_dir`:
//! - `segments/`: the entries, appended to segment files and found through a shared index
//!   (the `segment` module describes both); every write goes there;
//! - `<64-hex key>.json`: one entry per file, in the stored form described in the `entry`
//!   module (JSON with a checksum) — the layout written before segments. Such files are still
//!   served (a key not in the index is looked up by file name), are rewritten into a segment at
//!   the next flush after they are read, and are removed with their key (`remove`, expiry,
//!   `clear`); new entries never go there;
//! - `corrupt/`: files that could not be read as an entry, or whose checksum does not match
//!   their content (and a damaged index), moved aside rather than deleted.
//!
//! Nothing is read at start-up but the index's header; the directory is listed only for
//! `stats`, `prune_expired` and `clear`, and the segments' directory when the writer enforces
//! the disk bounds.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::entry::Decoded;
use crate::response_cache::KeyHasherBuilder;
use crate::segment::{self, Appender, Bounds, Loc, Segments, segment_target};
use crate::{CacheError, CacheKey, CachedResponse};

/// Temporary files older than this are left over from a killed writer and are removed by the
/// next listing of the directory.
pub(crate) const STALE_TEMP_AGE: Duration = Duration::from_secs(10 * 60);

/// Counters shared by the memory tier and the writer.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) evictions: AtomicU64,
    pub(crate) expired: AtomicU64,
    pub(crate) corrupt: AtomicU64,
    pub(crate) write_failures: AtomicU64,
    pub(crate) disk_evictions: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// `<dir>/<hex>.json`.
pub(crate) fn entry_path(dir: &Path, key: &CacheKey) -> PathBuf {
    dir.join(format!("{key}.json"))
}

/// `<64 hex>.json` without allocating: the name of an entry file inside the cache directory.
#[derive(Clone, Copy)]
pub(crate) struct EntryName([u8; 69]);

impl EntryName {
    pub(crate) fn new(key: &CacheKey) -> Self {
        let mut name = [0u8; 69];
        // The output slice is exactly twice the key's length, so this cannot fail.
        let _ = hex::encode_to_slice(key.as_bytes(), &mut name[..64]);
        name[64..].copy_from_slice(b".json");
        Self(name)
    }

    pub(crate) fn as_str(&self) -> &str {
        // Hex digits and ".json" are ASCII.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The key's 64 hex digits.
    pub(crate) fn key_hex(&self) -> &str {
        &self.as_str()[..64]
    }
}

/// The key of an entry file name (`<64 lowercase hex>.json`), if it is one.
pub(crate) fn key_of_file_name(name: &str) -> Option<CacheKey> {
    name.strip_suffix(".json")?.parse().ok()
}

/// Checks that `dir` exists (creating it) and accepts new files.
pub(crate) fn ensure_writable(dir: &Path) -> Result<(), CacheError> {
    let fail = |source| CacheError::DirNotWritable {
        dir: dir.to_path_buf(),
        source,
    };
    fs::create_dir_all(dir).map_err(fail)?;
    let probe = dir.join(format!(".probe.{}.{}.tmp", std::process::id(), next_seq()));
    File::create(&probe).map_err(fail)?;
    fs::remove_file(&probe).map_err(fail)?;
    Ok(())
}

fn next_seq() -> u64 {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    SEQ.fetch_add(1, Ordering::Relaxed)
}

/// Encodes `entry` into `json` (the stored form, checksum included).
fn encode_entry(entry: &CachedResponse, json: &mut Vec<u8>) -> io::Result<()> {
    json.clear();
    crate::entry::encode(entry, json).map_err(io::Error::other)
}

/// Removes `<dir>/<hex>.json` (an entry of the older layout); missing files are fine.
fn remove_entry(dir: &Path, key: &CacheKey) -> io::Result<bool> {
    match fs::remove_file(entry_path(dir, key)) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// What reading one entry file gave.
#[derive(Debug)]
pub(crate) enum FileRead {
    /// A complete entry whose key matches its file name and whose checksum matches its
    /// content, or that has no checksum (written before they existed; the cache rewrites it
    /// with one).
    Entry(Box<CachedResponse>),
    /// No such file (never written, or removed meanwhile).
    Missing,
    /// Unreadable, truncated, not an entry for this key, or not its checksum.
    Corrupt,
}

/// Reads and validates one entry file.
pub(crate) fn read_entry(path: &Path, key: &CacheKey) -> FileRead {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return FileRead::Missing,
        Err(_) => return FileRead::Corrupt,
    };
    match crate::entry::decode(&bytes, key, EntryName::new(key).key_hex()) {
        Decoded::Verified(entry) | Decoded::Unchecked(entry) => FileRead::Entry(Box::new(entry)),
        Decoded::Corrupt => FileRead::Corrupt,
    }
}

/// Moves a bad file into `<dir>/corrupt/`, never overwriting an earlier one.
pub(crate) fn quarantine(dir: &Path, path: &Path) -> io::Result<PathBuf> {
    let corrupt = dir.join("corrupt");
    fs::create_dir_all(&corrupt)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "entry".to_owned());
    let mut target = corrupt.join(&name);
    let mut n = 1u32;
    while target.exists() {
        target = corrupt.join(format!("{name}.{n}"));
        n += 1;
    }
    fs::rename(path, &target)?;
    Ok(target)
}

/// Entries and bytes on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DiskUsage {
    pub(crate) entries: u64,
    pub(crate) bytes: u64,
}

/// Lists the `<key>.json` files of the older layout in `dir`, with their sizes, removing on
/// the way the temporary files its writers left (`.<key>.<pid>.<n>.tmp`) once older than
/// [`STALE_TEMP_AGE`].
fn legacy_files(dir: &Path) -> io::Result<Vec<(CacheKey, u64)>> {
    let mut files = Vec::new();
    for item in fs::read_dir(dir)? {
        let Ok(item) = item else { continue };
        let name = item.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(key) = key_of_file_name(name) {
            // A file removed since the listing is simply not counted.
            if let Ok(meta) = item.metadata() {
                files.push((key, meta.len()));
            }
        } else if name.starts_with('.') && name.ends_with(".tmp") && is_stale(&item) {
            let _ = fs::remove_file(item.path());
        }
    }
    Ok(files)
}

/// Whether a directory item was last modified more than [`STALE_TEMP_AGE`] ago.
pub(crate) fn is_stale(item: &fs::DirEntry) -> bool {
    item.metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > STALE_TEMP_AGE)
}

/// The entries and bytes of a cache directory as they are now (every process's writes): the
/// segments' live entries and files, and any `<key>.json` files of the older layout.
pub(crate) fn usage(dir: &Path, segments: &Segments) -> io::Result<DiskUsage> {
    let (entries, bytes) = segments.usage()?;
    let legacy = legacy_files(dir)?;
    Ok(DiskUsage {
        entries: entries + legacy.len() as u64,
        bytes: bytes + legacy.iter().map(|f| f.1).sum::<u64>(),
    })
}

/// One queued disk operation for a key; a newer operation on the same key replaces it.
#[derive(Debug)]
pub(crate) enum DiskOp {
    Write(Arc<CachedResponse>),
    Remove,
}

#[derive(Debug, Default)]
struct WriterState {
    /// Operations not yet taken by the writer.
    pending: HashMap<CacheKey, DiskOp, KeyHasherBuilder>,
    /// The batch the writer is working on: each key with the entry it is writing (`None`: a
    /// removal).
    inflight: HashMap<CacheKey, Option<Arc<CachedResponse>>, KeyHasherBuilder>,
    /// Sequence number of the last operation submitted.
    submitted: u64,
    /// Every operation with a sequence number up to this one is done.
    done: u64,
    /// Sequence numbers of requested directory wipes not yet done.
    clears: Vec<u64>,
    /// Keys whose files each wipe removed, by the wipe's sequence number.
    cleared: HashMap<u64, Vec<CacheKey>>,
    shutdown: bool,
    alive: bool,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    segments: Arc<Segments>,
    fsync: bool,
    capacity: usize,
    bounds: Bounds,
    state: Mutex<WriterState>,
    /// Signals the writer: work arrived.
    work: Condvar,
    /// Signals waiters: progress was made.
    progress: Condvar,
    counters: Arc<Counters>,
}

/// The name of the disk writer thread (as `ps -L` and `/proc/<pid>/task/*/comm` show it,
/// cut to 15 bytes by Linux: `prompt-cache-wr`), by which `cargo xtask bench` tells its CPU
/// time from the rest of a gateway's.
pub const WRITER_THREAD: &str = "prompt-cache-writer";

/// The background writer thread and its queue.
#[derive(Debug)]
pub(crate) struct Writer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    pub(crate) fn spawn(
        dir: PathBuf,
        segments: Arc<Segments>,
        fsync: bool,
        capacity: usize,
        bounds: Bounds,
        counters: Arc<Counters>,
    ) -> Result<Self, CacheError> {
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            segments,
            fsync,
            capacity: capacity.max(1),
            bounds,
            state: Mutex::new(WriterState {
                alive: true,
                ..WriterState::default()
            }),
            work: Condvar::new(),
            progress: Condvar::new(),
            counters,
        });
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(WRITER_THREAD.to_owned())
            .spawn(move || run(&thread_shared))
            .map_err(|source| CacheError::Io { path: dir, source })?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    fn stopped(&self) -> CacheError {
        CacheError::WriterStopped {
            dir: self.shared.dir.clone(),
        }
    }

    /// Queues `op` for `key`, waiting while the queue is full.
    pub(crate) fn submit(&self, key: CacheKey, op: DiskOp) -> Result<(), CacheError> {
        let mut st = self.shared.state.lock();
        while st.alive && st.pending.len() >= self.shared.capacity && !st.pending.contains_key(&key)
        {
            self.shared.progress.wait(&mut st);
        }
        if !st.alive {
            return Err(self.stopped());
        }
        st.submitted += 1;
        let replaced = st.pending.insert(key, op);
        drop(st);
        self.shared.work.notify_one();
        // A coalesced write may hold the last reference to an entry: free it outside the lock.
        drop(replaced);
        Ok(())
    }

    /// Queues `op` for `key` unless the queue is full (then nothing is queued): for writes that
    /// only carry a changed hit count, which must never make a `get` wait for the disk.
    pub(crate) fn try_submit(&self, key: CacheKey, op: DiskOp) -> Result<bool, CacheError> {
        let mut st = self.shared.state.lock();
        if !st.alive {
            return Err(self.stopped());
        }
        if st.pending.len() >= self.shared.capacity && !st.pending.contains_key(&key) {
            return Ok(false);
        }
        st.submitted += 1;
        let replaced = st.pending.insert(key, op);
        drop(st);
        self.shared.work.notify_one();
        drop(replaced);
        Ok(true)
    }

    /// Whether a disk operation for `key` is queued or in progress (the file may be stale).
    pub(crate) fn is_busy(&self, key: &CacheKey) -> bool {
        let st = self.shared.state.lock();
        st.pending.contains_key(key) || st.inflight.contains_key(key)
    }

    /// The newest disk operation queued or in progress for `key`: `None` when there is none
    /// (the file is the truth), `Some(None)` for a removal, `Some(Some(entry))` for a write.
    pub(crate) fn queued(&self, key: &CacheKey) -> Option<Option<Arc<CachedResponse>>> {
        let st = self.shared.state.lock();
        match st.pending.get(key) {
            Some(DiskOp::Write(entry)) => Some(Some(Arc::clone(entry))),
            Some(DiskOp::Remove) => Some(None),
            None => st.inflight.get(key).cloned(),
        }
    }

    /// Drops every queued operation and asks for every entry file to be removed; returns the
    /// wipe's sequence number for [`Writer::wait_clear`].
    pub(crate) fn request_clear(&self) -> Result<u64, CacheError> {
        let mut st = self.shared.state.lock();
        if !st.alive {
            return Err(self.stopped());
        }
        st.pending.clear();
        st.submitted += 1;
        let seq = st.submitted;
        st.clears.push(seq);
        drop(st);
        self.shared.work.notify_one();
        self.shared.progress.notify_all();
        Ok(seq)
    }

    /// Waits for the wipe `seq`; the keys whose files it removed.
    pub(crate) fn wait_clear(&self, seq: u64) -> Result<Vec<CacheKey>, CacheError> {
        self.wait_done(seq)?;
        Ok(self
            .shared
            .state
            .lock()
            .cleared
            .remove(&seq)
            .unwrap_or_default())
    }

    /// Waits until every operation submitted so far is on disk.
    pub(crate) fn flush(&self) -> Result<(), CacheError> {
        let target = self.shared.state.lock().submitted;
        self.wait_done(target)
    }

    fn wait_done(&self, target: u64) -> Result<(), CacheError> {
        let mut st = self.shared.state.lock();
        while st.done < target {
            if !st.alive {
                return Err(self.stopped());
            }
            self.shared.progress.wait(&mut st);
        }
        Ok(())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.shared.state.lock().shutdown = true;
        self.shared.work.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Marks the writer dead when its thread ends, however it ends.
struct AliveGuard<'a>(&'a Shared);

impl Drop for AliveGuard<'_> {
    fn drop(&mut self) {
        self.0.state.lock().alive = false;
        self.0.progress.notify_all();
    }
}

fn run(shared: &Shared) {
    let _guard = AliveGuard(shared);
    let mut json = Vec::with_capacity(8 * 1024);
    let mut appender = Appender::new(shared.fsync);
    let mut changes: Vec<(CacheKey, Option<Loc>)> = Vec::new();
    // The map the next batch is swapped into (kept with its capacity, so that `submit` on the
    // callers' threads does not grow a fresh map batch after batch).
    let mut spare: HashMap<CacheKey, DiskOp, KeyHasherBuilder> = HashMap::default();
    let mut st = shared.state.lock();
    loop {
        if let Some(&last) = st.clears.last() {
            let seqs = std::mem::take(&mut st.clears);
            drop(st);
            let removed = wipe(shared, &mut appender);
            st = shared.state.lock();
            for seq in seqs {
                st.cleared.insert(seq, Vec::new());
            }
            st.cleared.insert(last, removed);
            st.done = st.done.max(last);
            shared.progress.notify_all();
            continue;
        }
        if !st.pending.is_empty() {
            let mut batch = std::mem::replace(&mut st.pending, std::mem::take(&mut spare));
            let batch_seq = st.submitted;
            st.inflight.extend(batch.iter().map(|(key, op)| {
                let entry = match op {
                    DiskOp::Write(entry) => Some(Arc::clone(entry)),
                    DiskOp::Remove => None,
                };
                (*key, entry)
            }));
            drop(st);
            shared.progress.notify_all();
            write_batch(shared, &mut batch, &mut appender, &mut json, &mut changes);
            spare = batch;
            st = shared.state.lock();
            st.inflight.clear();
            st.done = st.done.max(batch_seq);
            shared.progress.notify_all();
            continue;
        }
        if st.shutdown {
            st.done = st.submitted;
            return;
        }
        shared.work.wait(&mut st);
    }
}

/// Writes one batch: appends the entries' records to this process's segment (no lock), then
/// publishes every change in the index at once under its lock, growing it and enforcing the
/// disk bounds. Counts what did not reach the disk in `write_failures`.
fn write_batch(
    shared: &Shared,
    batch: &mut HashMap<CacheKey, DiskOp, KeyHasherBuilder>,
    appender: &mut Appender,
    json: &mut Vec<u8>,
    changes: &mut Vec<(CacheKey, Option<Loc>)>,
) {
    let segments = &shared.segments;
    let target = segment_target(shared.bounds.max_bytes);
    let legacy = segments.legacy_seen.load(Ordering::Relaxed);
    let mut failures = 0u64;
    let mut appended = 0u64;
    changes.clear();
    for (key, op) in batch.drain() {
        match op {
            DiskOp::Write(entry) => {
                let written = encode_entry(&entry, json).and_then(|()| {
                    // An entry larger than the byte bound stays in memory only.
                    if (segment::RECORD_HEADER + json.len()) as u64 > shared.bounds.max_bytes {
                        return Err(io::Error::other("entry larger than the disk bound"));
                    }
                    appender.append(segments, &key, json, target)
                });
                match written {
                    Ok(loc) => {
                        appended += u64::from(loc.len);
                        changes.push((key, Some(loc)));
                    }
                    Err(_) => failures += 1,
                }
            }
            DiskOp::Remove => changes.push((key, None)),
        }
    }
    if !changes.is_empty() {
        let published = appender.sync().and_then(|()| {
            let mut locked = segments.lock()?;
            segments.reserve_slots(&mut locked, changes.len() as u64)?;
            for (key, loc) in changes.iter() {
                segments.set(&mut locked, key, *loc)?;
            }
            locked.header.segment_bytes += appended;
            let evicted = segments.make_room(&mut locked, shared.bounds, appender);
            locked.store_header()?;
            Counters::add(&shared.counters.disk_evictions, evicted?);
            Ok(())
        });
        if published.is_err() {
            failures += changes.iter().filter(|(_, loc)| loc.is_some()).count() as u64;
        }
        for (key, loc) in changes.iter() {
            // The older layout's file of this key would otherwise outlive a removal (and
            // count twice once rewritten into a segment); a rewrite that was not published
            // leaves the file, still the entry on disk.
            let rewritten = legacy && loc.is_some() && published.is_ok();
            if (loc.is_none() || rewritten) && remove_entry(&shared.dir, key).is_err() {
                failures += 1;
            }
        }
    }
    // The segments left during this batch are no longer needed by it.
    appender.published();
    if failures > 0 {
        Counters::add(&shared.counters.write_failures, failures);
    }
}

/// Removes every entry: the segments' (an empty index, segments no other process is writing
/// to) and the older layout's `<key>.json` files; the keys removed.
fn wipe(shared: &Shared, appender: &mut Appender) -> Vec<CacheKey> {
    // This process's segment goes too: the next write starts a new one.
    appender.finish();
    let mut removed = shared
        .segments
        .lock()
        .and_then(|mut locked| shared.segments.wipe(&mut locked))
        .unwrap_or_default();
    if let Ok(items) = fs::read_dir(&shared.dir) {
        for item in items.flatten() {
            let name = item.file_name();
            if let Some(key) = name.to_str().and_then(key_of_file_name)
                && fs::remove_file(item.path()).is_ok()
            {
                removed.push(key);
            }
        }
    }
    removed
}
