//! The disk tier: file names, atomic writes, the background writer and start-up loading.
//!
//! Layout of `cache_dir`:
//! - `<64-hex key>.json`: one complete entry in the stored form described in the `entry`
//!   module (JSON with a checksum), only ever created by a rename;
//! - `.<64-hex key>.<pid>.<n>.tmp`: a write in progress (ignored by readers; removed by
//!   `open` once older than [`STALE_TEMP_AGE`], which covers writers that were killed);
//! - `corrupt/`: files that could not be read as an entry, or whose checksum does not match
//!   their content, moved aside rather than deleted.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use parking_lot::{Condvar, Mutex};
use rayon::prelude::*;
use rustix::fs::{AtFlags, Mode, OFlags};

use crate::entry::Decoded;
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

/// Reusable state of the writer thread: the serialisation buffer and the temporary file path.
#[derive(Debug)]
pub(crate) struct WriteBuffers {
    pid: u32,
    json: Vec<u8>,
    tmp: PathBuf,
    path: PathBuf,
}

impl WriteBuffers {
    pub(crate) fn new(dir: &Path) -> Self {
        Self {
            pid: std::process::id(),
            json: Vec::with_capacity(8 * 1024),
            tmp: dir.to_path_buf(),
            path: dir.to_path_buf(),
        }
    }
}

/// Sets `path` to `<dir>/<name>`, reusing its allocation.
fn set_path(path: &mut PathBuf, dir: &Path, name: std::fmt::Arguments<'_>) {
    use std::fmt::Write as _;
    path.as_mut_os_string().clear();
    path.push(dir);
    let text = path.as_mut_os_string();
    text.push(std::path::MAIN_SEPARATOR_STR);
    // Formatting into an `OsString` cannot fail.
    let _ = text.write_fmt(name);
}

/// Writes `entry` to `<dir>/<hex>.json` through a temporary file and a rename.
pub(crate) fn write_entry(
    dir: &Path,
    entry: &CachedResponse,
    fsync: bool,
    bufs: &mut WriteBuffers,
) -> io::Result<()> {
    bufs.json.clear();
    crate::entry::encode(entry, &mut bufs.json).map_err(io::Error::other)?;
    let name = EntryName::new(&entry.key);
    set_path(&mut bufs.path, dir, format_args!("{}", name.as_str()));
    let (hex, pid) = (name.key_hex(), bufs.pid);
    set_path(
        &mut bufs.tmp,
        dir,
        format_args!(".{hex}.{pid}.{}.tmp", next_seq()),
    );
    let tmp = &bufs.tmp;
    let result = (|| {
        let mut file = File::create(tmp)?;
        file.write_all(&bufs.json)?;
        if fsync {
            file.sync_all()?;
        }
        drop(file);
        fs::rename(tmp, &bufs.path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(tmp);
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
    /// A complete entry whose key matches its file name and whose checksum matches its
    /// content (`verified`), or that has no checksum (written before they existed).
    Entry {
        entry: Box<CachedResponse>,
        verified: bool,
    },
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
        Decoded::Verified(entry) => FileRead::Entry {
            entry: Box::new(entry),
            verified: true,
        },
        Decoded::Unchecked(entry) => FileRead::Entry {
            entry: Box::new(entry),
            verified: false,
        },
        Decoded::Corrupt => FileRead::Corrupt,
    }
}

/// Size of the read buffer each start-up worker starts with (entries are a few KiB).
const READ_BUFFER: usize = 64 * 1024;

/// Reads the rest of `file` into `buf` from the start, growing it as needed; the length read.
///
/// `buf`'s length is its usable size (it is zero-filled once and reused). A read that does not
/// fill the buffer is taken as the end of the file, which saves the extra `read` that would
/// confirm it; a caller that finds the bytes incomplete reads the file again in full.
fn read_file(file: &mut File, buf: &mut Vec<u8>) -> io::Result<usize> {
    if buf.is_empty() {
        buf.resize(READ_BUFFER, 0);
    }
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        match file.read(&mut buf[filled..]) {
            Ok(0) => return Ok(filled),
            Ok(n) => {
                filled += n;
                if filled < buf.len() {
                    return Ok(filled);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// What start-up made of one entry file.
enum Loading {
    /// A live entry; `verified` is false for one without a checksum.
    Live(Arc<CachedResponse>, bool),
    /// Expired; its file was removed.
    Expired,
    Missing,
    Corrupt,
}

/// One start-up worker: opens entry files relative to the directory (no path walk per file)
/// and reads each with one `read` into a reused buffer.
struct DirReader<'a> {
    dir: &'a Path,
    dirfd: BorrowedFd<'a>,
    buf: Vec<u8>,
}

impl<'a> DirReader<'a> {
    fn new(dir: &'a Path, dirfd: BorrowedFd<'a>) -> Self {
        Self {
            dir,
            dirfd,
            buf: Vec::new(),
        }
    }

    fn load(&mut self, key: &CacheKey, now: DateTime<Utc>) -> Loading {
        let name = EntryName::new(key);
        let flags = OFlags::RDONLY | OFlags::CLOEXEC;
        let mut file = match rustix::fs::openat(self.dirfd, name.as_str(), flags, Mode::empty()) {
            Ok(fd) => File::from(fd),
            Err(rustix::io::Errno::NOENT) => return Loading::Missing,
            Err(_) => return Loading::Corrupt,
        };
        let decoded = match read_file(&mut file, &mut self.buf) {
            Ok(len) => crate::entry::decode(&self.buf[..len], key, name.key_hex()),
            Err(_) => Decoded::Corrupt,
        };
        drop(file);
        let (entry, verified) = match decoded {
            Decoded::Verified(entry) => (entry, true),
            Decoded::Unchecked(entry) => (entry, false),
            // Not an entry as read: read it again, in full, before calling it corrupt.
            Decoded::Corrupt => match read_entry(&self.dir.join(name.as_str()), key) {
                FileRead::Entry { entry, verified } => (*entry, verified),
                FileRead::Missing => return Loading::Missing,
                FileRead::Corrupt => return Loading::Corrupt,
            },
        };
        if entry.is_expired_at(now) {
            let _ = rustix::fs::unlinkat(self.dirfd, name.as_str(), AtFlags::empty());
            return Loading::Expired;
        }
        Loading::Live(Arc::new(entry), verified)
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
    pub(crate) entries: Vec<Arc<CachedResponse>>,
    /// Keys of the live entries that had no checksum (to be rewritten with one).
    pub(crate) unchecked: Vec<CacheKey>,
    pub(crate) expired: u64,
    pub(crate) corrupt: u64,
}

/// The modification time of `key`'s file as (seconds, nanoseconds); the earliest possible when
/// it cannot be read.
// `Stat`'s field types differ between platforms.
#[allow(clippy::useless_conversion)]
fn mtime_at(dirfd: BorrowedFd<'_>, key: &CacheKey) -> (i64, u64) {
    rustix::fs::statat(dirfd, EntryName::new(key).as_str(), AtFlags::empty())
        .map(|st| (i64::from(st.st_mtime), u64::from(st.st_mtime_nsec)))
        .unwrap_or((i64::MIN, 0))
}

/// Loads at most `max` live entries from `dir`, newest first (by file modification time when
/// there are more files than `max`, else all), deleting expired files and quarantining bad ones.
///
/// Files are read on the rayon pool while the directory is still being listed: every
/// [`LOAD_BATCH`] names become one task, as long as no more than `max` names have been seen. Each
/// file is opened relative to the directory and read with a single `read`, so a file costs
/// `openat`, `read` and `close` (no `stat` unless there are more files than `max`).
pub(crate) fn load_dir(dir: &Path, max: usize, now: DateTime<Utc>) -> Result<Loaded, CacheError> {
    let io_err = |source| CacheError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let listing = fs::read_dir(dir).map_err(io_err)?;
    let dirfd = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_err(e.into()))?;

    // Names that look like entries (`<64 chars>.json`), in listing order; the first `max` are
    // read as they are found.
    let mut names: Vec<[u8; 64]> = Vec::new();
    let found: parking_lot::Mutex<Vec<LoadedBatch>> = Default::default();
    let load_batch = |first: usize, batch: Vec<[u8; 64]>| {
        let mut reader = DirReader::new(dir, dirfd.as_fd());
        let reads = batch
            .iter()
            .filter_map(key_of_hex)
            .map(|key| (key, reader.load(&key, now)))
            .collect();
        found.lock().push((first, reads));
    };
    // The next entry-like name into `names` (cleaning stale temporary files on the way);
    // false once the listing is done.
    let mut listing = listing;
    let mut next_name = |names: &mut Vec<[u8; 64]>| -> bool {
        for item in listing.by_ref() {
            let Ok(item) = item else { continue };
            let name = item.file_name();
            if let Some(hex) = name.as_encoded_bytes().strip_suffix(b".json")
                && let Ok(hex) = <[u8; 64]>::try_from(hex)
            {
                names.push(hex);
                return true;
            }
            if name.to_str().is_some_and(is_temp_name) {
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
        false
    };
    let mut more = true;
    while more && names.len() < LOAD_BATCH {
        more = next_name(&mut names);
    }
    if !more {
        // A small directory: read on this thread, without waking the thread pool.
        let end = names.len().min(max);
        if end > 0 {
            load_batch(0, names[..end].to_vec());
        }
    } else {
        rayon::in_place_scope(|scope| {
            let mut queued = 0;
            loop {
                let end = names.len().min(max);
                if end - queued >= LOAD_BATCH || (!more && end > queued) {
                    let batch = names[queued..end].to_vec();
                    let load_batch = &load_batch;
                    scope.spawn(move |_| load_batch(queued, batch));
                    queued = end;
                }
                if !more {
                    break;
                }
                more = next_name(&mut names);
            }
        });
    }
    let mut found = found.into_inner();
    found.sort_unstable_by_key(|(first, _)| *first);

    let mut loaded = Loaded::default();
    let record = |loaded: &mut Loaded, key: &CacheKey, read: Loading| match read {
        Loading::Live(entry, verified) => {
            if !verified {
                loaded.unchecked.push(*key);
            }
            loaded.entries.push(entry);
        }
        Loading::Expired => loaded.expired += 1,
        Loading::Missing => {}
        Loading::Corrupt => {
            if quarantine(dir, &dir.join(EntryName::new(key).as_str())).is_ok() {
                loaded.corrupt += 1;
            }
        }
    };
    if names.len() <= max || max == 0 {
        // Every entry was read: that is the whole answer.
        for (key, read) in found.into_iter().flat_map(|(_, reads)| reads) {
            record(&mut loaded, &key, read);
        }
    } else {
        // More files than `max`: the newest by modification time win. The files already read
        // are not read again (expired and corrupt ones among them are dealt with either way).
        let mut known = HashMap::with_hasher(KeyHasherBuilder);
        for (key, read) in found.into_iter().flat_map(|(_, reads)| reads) {
            match read {
                Loading::Live(entry, verified) => {
                    known.insert(key, (entry, verified));
                }
                other => record(&mut loaded, &key, other),
            }
        }
        let mut dated: Vec<((i64, u64), CacheKey)> = names
            .par_iter()
            .with_min_len(256)
            .filter_map(key_of_hex)
            .map(|k| (mtime_at(dirfd.as_fd(), &k), k))
            .collect();
        dated.par_sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let candidates: Vec<CacheKey> = dated.into_iter().map(|(_, k)| k).collect();
        // Parse in large runs, in parallel, until `max` live entries are found.
        let mut rest = candidates.as_slice();
        while loaded.entries.len() < max && !rest.is_empty() {
            let take = (max - loaded.entries.len()).min(rest.len());
            let (chunk, tail) = rest.split_at(take);
            rest = tail;
            let reads: Vec<Loading> = chunk
                .par_iter()
                .with_min_len(64)
                .map_init(
                    || DirReader::new(dir, dirfd.as_fd()),
                    |reader, key| match known.get(key) {
                        Some((entry, verified)) => Loading::Live(Arc::clone(entry), *verified),
                        None => reader.load(key, now),
                    },
                )
                .collect();
            for (key, read) in chunk.iter().zip(reads) {
                record(&mut loaded, key, read);
            }
        }
    }
    loaded
        .entries
        .par_sort_unstable_by(|a, b| a.created_at.cmp(&b.created_at).then(a.key.cmp(&b.key)));
    Ok(loaded)
}

/// What one start-up task read: the index of its first name, and the key and outcome of each file.
type LoadedBatch = (usize, Vec<(CacheKey, Loading)>);

/// Files per start-up reading task.
const LOAD_BATCH: usize = 512;

/// The key spelled by the 64 characters of an entry file name, if they are lowercase hex.
fn key_of_hex(hex: &[u8; 64]) -> Option<CacheKey> {
    std::str::from_utf8(hex).ok()?.parse().ok()
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
        let replaced = st.pending.insert(key, op);
        drop(st);
        self.shared.work.notify_one();
        // A coalesced write may hold the last reference to an entry: free it outside the lock.
        drop(replaced);
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
    let mut bufs = WriteBuffers::new(&shared.dir);
    // The map the next batch is swapped into (kept with its capacity, so that `submit` on the
    // callers' threads does not grow a fresh map batch after batch).
    let mut spare: HashMap<CacheKey, DiskOp, KeyHasherBuilder> = HashMap::default();
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
            let mut batch = std::mem::replace(&mut st.pending, std::mem::take(&mut spare));
            let batch_seq = st.submitted;
            st.inflight.extend(batch.keys().copied());
            drop(st);
            shared.progress.notify_all();
            for (key, op) in batch.drain() {
                let ok = match op {
                    DiskOp::Write(entry) => {
                        write_entry(&shared.dir, &entry, shared.fsync, &mut bufs).is_ok()
                    }
                    DiskOp::Remove => remove_entry(&shared.dir, &key).is_ok(),
                };
                if !ok {
                    Counters::add(&shared.counters.write_failures, 1);
                }
            }
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
