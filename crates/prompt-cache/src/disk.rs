//! The disk tier: file names, atomic writes, the background writer and start-up loading.
//!
//! Layout of `cache_dir`:
//! - `<64-hex key>.json`: one complete entry, only ever created by a rename;
//! - `.<64-hex key>.<pid>.<n>.tmp`: a write in progress (ignored by readers; removed by
//!   `open` once older than [`STALE_TEMP_AGE`], which covers writers that were killed);
//! - `corrupt/`: files that could not be read as an entry, moved aside rather than deleted.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use parking_lot::{Condvar, Mutex};
use rayon::prelude::*;

use crate::response_cache::KeyHasherBuilder;
use crate::{CacheError, CacheKey, CachedResponse};

/// Temporary files older than this are left over from a killed writer and are removed by `open`.
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

/// The key of an entry file name (`<64 lowercase hex>.json`), if it is one.
pub(crate) fn key_of_file_name(name: &str) -> Option<CacheKey> {
    name.strip_suffix(".json")?.parse().ok()
}

fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp")
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

/// Writes `entry` to `<dir>/<hex>.json` through a temporary file and a rename.
pub(crate) fn write_entry(dir: &Path, entry: &CachedResponse, fsync: bool) -> io::Result<()> {
    let bytes = serde_json::to_vec(entry).map_err(io::Error::other)?;
    let tmp = dir.join(format!(
        ".{}.{}.{}.tmp",
        entry.key,
        std::process::id(),
        next_seq()
    ));
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(&bytes)?;
        if fsync {
            file.sync_all()?;
        }
        drop(file);
        fs::rename(&tmp, entry_path(dir, &entry.key))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Removes `<dir>/<hex>.json`; missing files are fine.
pub(crate) fn remove_entry(dir: &Path, key: &CacheKey) -> io::Result<bool> {
    match fs::remove_file(entry_path(dir, key)) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// What reading one entry file gave.
#[derive(Debug)]
pub(crate) enum FileRead {
    /// A complete entry whose key matches its file name.
    Entry(Box<CachedResponse>),
    /// No such file (never written, or removed meanwhile).
    Missing,
    /// Unreadable, truncated, or not an entry for this key.
    Corrupt,
}

/// Reads and validates one entry file.
pub(crate) fn read_entry(path: &Path, key: &CacheKey) -> FileRead {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return FileRead::Missing,
        Err(_) => return FileRead::Corrupt,
    };
    match serde_json::from_slice::<CachedResponse>(&bytes) {
        Ok(entry) if entry.key == *key && !entry.response.trim().is_empty() => {
            FileRead::Entry(Box::new(entry))
        }
        _ => FileRead::Corrupt,
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

/// The result of scanning a cache directory at start-up.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    /// Live entries, oldest first.
    pub(crate) entries: Vec<CachedResponse>,
    pub(crate) expired: u64,
    pub(crate) corrupt: u64,
}

/// Loads at most `max` live entries from `dir`, newest first (by file modification time when
/// there are more files than `max`, else all), deleting expired files and quarantining bad ones.
pub(crate) fn load_dir(dir: &Path, max: usize, now: DateTime<Utc>) -> Result<Loaded, CacheError> {
    let io_err = |source| CacheError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut candidates: Vec<(CacheKey, PathBuf)> = Vec::new();
    for item in fs::read_dir(dir).map_err(io_err)? {
        let Ok(item) = item else { continue };
        let name = item.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(key) = key_of_file_name(name) {
            candidates.push((key, item.path()));
        } else if is_temp_name(name) {
            let stale = item
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age > STALE_TEMP_AGE);
            if stale {
                let _ = fs::remove_file(item.path());
            }
        }
    }

    let mut loaded = Loaded::default();
    if max == 0 {
        return Ok(loaded);
    }
    if candidates.len() > max {
        let mut dated: Vec<(SystemTime, CacheKey, PathBuf)> = candidates
            .into_par_iter()
            .map(|(k, p)| {
                let t = fs::metadata(&p)
                    .and_then(|m| m.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                (t, k, p)
            })
            .collect();
        dated.sort_unstable_by_key(|d| std::cmp::Reverse(d.0));
        candidates = dated.into_iter().map(|(_, k, p)| (k, p)).collect();
    }

    // Parse in chunks, in parallel, until `max` live entries are found.
    let mut rest = candidates.as_slice();
    while loaded.entries.len() < max && !rest.is_empty() {
        let want = max - loaded.entries.len();
        let take = want.min(rest.len());
        let (chunk, tail) = rest.split_at(take);
        rest = tail;
        let reads: Vec<FileRead> = chunk.par_iter().map(|(k, p)| read_entry(p, k)).collect();
        for ((_, path), read) in chunk.iter().zip(reads) {
            match read {
                FileRead::Entry(entry) if entry.is_expired_at(now) => {
                    let _ = fs::remove_file(path);
                    loaded.expired += 1;
                }
                FileRead::Entry(entry) => loaded.entries.push(*entry),
                FileRead::Missing => {}
                FileRead::Corrupt => {
                    if quarantine(dir, path).is_ok() {
                        loaded.corrupt += 1;
                    }
                }
            }
        }
    }
    loaded.entries.sort_by_key(|e| e.created_at);
    Ok(loaded)
}

/// One queued disk operation for a key; a newer operation on the same key replaces it.
#[derive(Debug)]
pub(crate) enum DiskOp {
    Write(Box<CachedResponse>),
    Remove,
}

#[derive(Debug, Default)]
struct WriterState {
    /// Operations not yet taken by the writer.
    pending: HashMap<CacheKey, DiskOp, KeyHasherBuilder>,
    /// Keys of the batch the writer is working on.
    inflight: HashSet<CacheKey, KeyHasherBuilder>,
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
    fsync: bool,
    capacity: usize,
    state: Mutex<WriterState>,
    /// Signals the writer: work arrived.
    work: Condvar,
    /// Signals waiters: progress was made.
    progress: Condvar,
    counters: Arc<Counters>,
}

/// The background writer thread and its queue.
#[derive(Debug)]
pub(crate) struct Writer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    pub(crate) fn spawn(
        dir: PathBuf,
        fsync: bool,
        capacity: usize,
        counters: Arc<Counters>,
    ) -> Result<Self, CacheError> {
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            fsync,
            capacity: capacity.max(1),
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
            .name("prompt-cache-writer".to_owned())
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
        st.pending.insert(key, op);
        drop(st);
        self.shared.work.notify_one();
        Ok(())
    }

    /// Whether a disk operation for `key` is queued or in progress (the file may be stale).
    pub(crate) fn is_busy(&self, key: &CacheKey) -> bool {
        let st = self.shared.state.lock();
        st.pending.contains_key(key) || st.inflight.contains(key)
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
    let mut st = shared.state.lock();
    loop {
        if let Some(&last) = st.clears.last() {
            let seqs = std::mem::take(&mut st.clears);
            drop(st);
            let removed = wipe(&shared.dir);
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
            let batch = std::mem::take(&mut st.pending);
            let batch_seq = st.submitted;
            st.inflight.extend(batch.keys().copied());
            drop(st);
            shared.progress.notify_all();
            for (key, op) in batch {
                let ok = match op {
                    DiskOp::Write(entry) => write_entry(&shared.dir, &entry, shared.fsync).is_ok(),
                    DiskOp::Remove => remove_entry(&shared.dir, &key).is_ok(),
                };
                if !ok {
                    Counters::add(&shared.counters.write_failures, 1);
                }
            }
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

/// Removes every entry file in `dir`; the keys removed.
fn wipe(dir: &Path) -> Vec<CacheKey> {
    let mut removed = Vec::new();
    let Ok(items) = fs::read_dir(dir) else {
        return removed;
    };
    for item in items.flatten() {
        let name = item.file_name();
        if let Some(key) = name.to_str().and_then(key_of_file_name)
            && fs::remove_file(item.path()).is_ok()
        {
            removed.push(key);
        }
    }
    removed
}
