//! The disk tier: file names, atomic writes, the background writer and the disk bounds.
//!
//! Layout of `cache_dir`:
//! - `<64-hex key>.json`: one complete entry in the stored form described in the `entry`
//!   module (JSON with a checksum), only ever created by a rename;
//! - `.<64-hex key>.<pid>.<n>.tmp`: a write in progress (ignored by readers; removed by the
//!   next listing of the directory once older than [`STALE_TEMP_AGE`], which covers writers
//!   that were killed);
//! - `corrupt/`: files that could not be read as an entry, or whose checksum does not match
//!   their content, moved aside rather than deleted.
//!
//! This is also the layout written before the disk tier had bounds of its own, so an older
//! cache directory is served as it is. Files are found by name only: nothing is read at
//! start-up, and the directory is listed only to measure or enforce the disk bounds (by the
//! writer, when a write would go over them) and for `stats`, `prune_expired` and `clear`.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use parking_lot::{Condvar, Mutex};
use rustix::fs::{AtFlags, Mode, OFlags};

use crate::entry::Decoded;
use crate::response_cache::KeyHasherBuilder;
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

/// Encodes `entry` into `bufs.json` (the stored form, checksum included).
fn encode_entry(entry: &CachedResponse, bufs: &mut WriteBuffers) -> io::Result<()> {
    bufs.json.clear();
    crate::entry::encode(entry, &mut bufs.json).map_err(io::Error::other)
}

/// Writes the encoded entry in `bufs.json` to `<dir>/<hex>.json` through a temporary file and
/// a rename.
fn write_encoded(
    dir: &Path,
    key: &CacheKey,
    fsync: bool,
    bufs: &mut WriteBuffers,
) -> io::Result<()> {
    let name = EntryName::new(key);
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

/// One entry file as the disk bound sees it.
#[derive(Debug, Clone, Copy)]
struct FileInfo {
    key: CacheKey,
    size: u64,
    /// Modification time (seconds, nanoseconds): when the entry was last written, which a
    /// `flush` after a hit also does, so the oldest is the least recently used.
    mtime: (i64, u64),
}

/// Entry files and their bytes in a cache directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DiskUsage {
    pub(crate) entries: u64,
    pub(crate) bytes: u64,
}

/// The disk tier's bounds, enforced by the writer before each write.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DiskBounds {
    /// Most bytes of entry files.
    pub(crate) max_bytes: u64,
    /// Most entry files (`u64::MAX`: no bound).
    pub(crate) max_entries: u64,
}

impl DiskBounds {
    fn fit(&self, usage: DiskUsage) -> bool {
        usage.bytes <= self.max_bytes && usage.entries <= self.max_entries
    }

    /// What eviction brings the directory down to, so that it runs once per tenth of the
    /// bound written rather than at every write: 90 % of each bound.
    fn low_water(&self) -> DiskUsage {
        DiskUsage {
            entries: self.max_entries - self.max_entries / 10,
            bytes: self.max_bytes - self.max_bytes / 10,
        }
    }
}

/// The usage the writer knows is trusted this long; after it, the next write reads the usage
/// journal again (other processes write to the directory too).
const REREAD_AFTER: Duration = Duration::from_secs(60);

/// `<dir>/.usage`, the disk usage journal: the entry files and bytes the last listing of the
/// directory measured (first line), then one line per batch of writes with the change it made
/// (`<entries> <bytes>`, signed), appended with one `write` on an `O_APPEND` file so that
/// writers in several processes add up. A writer starts from it instead of listing the
/// directory; the next listing rewrites it (by rename) with what it measured. A missing or
/// unreadable journal, or one of more than [`JOURNAL_MAX_LINES`], means a listing.
const JOURNAL: &str = ".usage";

/// Journal lines beyond which the next write lists the directory (and so compacts it).
const JOURNAL_MAX_LINES: usize = 4096;

/// The usage the journal adds up to, if it is there and well-formed.
fn read_journal(dir: &Path) -> Option<DiskUsage> {
    let text = fs::read_to_string(dir.join(JOURNAL)).ok()?;
    let (mut entries, mut bytes, mut lines) = (0i128, 0i128, 0usize);
    for line in text.lines() {
        let (e, b) = line.split_once(' ')?;
        entries += e.parse::<i64>().ok()? as i128;
        bytes += b.parse::<i64>().ok()? as i128;
        lines += 1;
    }
    if lines == 0 || lines > JOURNAL_MAX_LINES {
        return None;
    }
    let clamp = |v: i128| u64::try_from(v.max(0)).unwrap_or(u64::MAX);
    Some(DiskUsage {
        entries: clamp(entries),
        bytes: clamp(bytes),
    })
}

/// Replaces the journal with one line: `usage`, as just measured.
fn reset_journal(dir: &Path, usage: DiskUsage) {
    let tmp = dir.join(format!(".usage.{}.{}.tmp", std::process::id(), next_seq()));
    let text = format!("{} {}\n", usage.entries, usage.bytes);
    if fs::write(&tmp, text).is_err() || fs::rename(&tmp, dir.join(JOURNAL)).is_err() {
        let _ = fs::remove_file(&tmp);
    }
}

/// Appends one change to the journal (nothing when there is no journal to add to).
fn append_journal(dir: &Path, entries: i64, bytes: i64) {
    let file = fs::OpenOptions::new().append(true).open(dir.join(JOURNAL));
    if let Ok(mut file) = file {
        let _ = file.write_all(format!("{entries} {bytes}\n").as_bytes());
    }
}

// `Stat`'s field types differ between platforms.
#[allow(clippy::useless_conversion, clippy::unnecessary_cast)]
fn file_info(st: &rustix::fs::Stat) -> (u64, (i64, u64)) {
    (
        st.st_size as u64,
        (i64::from(st.st_mtime), u64::from(st.st_mtime_nsec)),
    )
}

/// Lists the entry files of `dir` with their sizes and modification times (one `getdents`
/// pass and one `statat` a file), removing temporary files older than [`STALE_TEMP_AGE`]
/// (left by killed writers) on the way.
fn scan(dir: &Path) -> io::Result<Vec<FileInfo>> {
    let dirfd = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut files = Vec::new();
    for item in fs::read_dir(dir)? {
        let Ok(item) = item else { continue };
        let name = item.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(key) = key_of_file_name(name) {
            // A file removed since the listing is simply not counted.
            if let Ok(st) = rustix::fs::statat(dirfd.as_fd(), name, AtFlags::SYMLINK_NOFOLLOW) {
                let (size, mtime) = file_info(&st);
                files.push(FileInfo { key, size, mtime });
            }
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
    Ok(files)
}

/// The entry files of `dir` and their bytes, as they are now (every process's writes).
pub(crate) fn usage(dir: &Path) -> io::Result<DiskUsage> {
    let files = scan(dir)?;
    Ok(DiskUsage {
        entries: files.len() as u64,
        bytes: files.iter().map(|f| f.size).sum(),
    })
}

/// The size of `key`'s entry file, if there is one.
fn file_size(dir: &Path, key: &CacheKey) -> Option<u64> {
    fs::symlink_metadata(dir.join(EntryName::new(key).as_str()))
        .ok()
        .map(|m| m.len())
}

/// The writer's view of the disk tier: the usage it knows (from the journal or a listing,
/// plus its own writes since), when it learnt it, and its changes not yet in the journal.
#[derive(Debug)]
struct DiskTier {
    bounds: DiskBounds,
    /// `None` until the first write reads the journal or lists the directory (start-up does
    /// neither).
    usage: Option<DiskUsage>,
    known_at: std::time::Instant,
    /// Entries and bytes this writer added since it last wrote to the journal.
    delta: (i64, i64),
}

impl DiskTier {
    /// Makes room for a file of `len` bytes replacing one of `old` bytes (if any) for `key`:
    /// when the usage is unknown, old, or would go over a bound, lists the directory and, if
    /// the write would still go over, removes the least recently written entries (never
    /// `key`'s) down to the low-water mark. False when `len` alone exceeds the byte bound.
    fn make_room(
        &mut self,
        dir: &Path,
        key: &CacheKey,
        len: u64,
        old: Option<u64>,
        counters: &Counters,
    ) -> bool {
        if len > self.bounds.max_bytes || self.bounds.max_entries == 0 {
            return false;
        }
        let after = |u: DiskUsage| DiskUsage {
            entries: u.entries + u64::from(old.is_none()),
            bytes: (u.bytes - old.unwrap_or(0).min(u.bytes)) + len,
        };
        if self.usage.is_none() || self.known_at.elapsed() >= REREAD_AFTER {
            // Every writer's changes as the journal has them, and this one's not yet in it.
            self.usage = read_journal(dir).map(|u| DiskUsage {
                entries: u.entries.saturating_add_signed(self.delta.0),
                bytes: u.bytes.saturating_add_signed(self.delta.1),
            });
            self.known_at = std::time::Instant::now();
        }
        if let Some(u) = self.usage
            && self.bounds.fit(after(u))
        {
            return true;
        }
        let Ok(mut files) = scan(dir) else {
            // Cannot list: write anyway (the next write tries again).
            self.usage = None;
            return true;
        };
        self.known_at = std::time::Instant::now();
        let mut now = DiskUsage {
            entries: files.len() as u64,
            bytes: files.iter().map(|f| f.size).sum(),
        };
        if !self.bounds.fit(after(now)) {
            let low = self.bounds.low_water();
            files.sort_unstable_by(|a, b| a.mtime.cmp(&b.mtime).then(a.key.cmp(&b.key)));
            for file in files.iter().filter(|f| f.key != *key) {
                let target = after(now);
                if target.bytes <= low.bytes.max(len) && target.entries <= low.entries.max(1) {
                    break;
                }
                let name = EntryName::new(&file.key);
                match fs::remove_file(dir.join(name.as_str())) {
                    Ok(()) => Counters::add(&counters.disk_evictions, 1),
                    // Removed meanwhile by another process: gone either way.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(_) => continue,
                }
                now.entries -= 1;
                now.bytes -= file.size.min(now.bytes);
            }
        }
        // The listing saw every change so far, this writer's included.
        self.usage = Some(now);
        self.delta = (0, 0);
        reset_journal(dir, now);
        true
    }

    /// Counts a write of `len` bytes that replaced a file of `old` bytes.
    fn wrote(&mut self, len: u64, old: Option<u64>) {
        let entries = i64::from(old.is_none());
        let bytes = signed(len) - signed(old.unwrap_or(0));
        self.change(entries, bytes);
    }

    /// Counts the removal of a file of `old` bytes.
    fn removed(&mut self, old: Option<u64>) {
        if let Some(old) = old {
            self.change(-1, -signed(old));
        }
    }

    fn change(&mut self, entries: i64, bytes: i64) {
        if let Some(u) = &mut self.usage {
            u.entries = u.entries.saturating_add_signed(entries);
            u.bytes = u.bytes.saturating_add_signed(bytes);
        }
        self.delta.0 += entries;
        self.delta.1 += bytes;
    }

    /// Appends this writer's changes to the journal (after each batch).
    fn record(&mut self, dir: &Path) {
        if self.delta != (0, 0) {
            append_journal(dir, self.delta.0, self.delta.1);
            self.delta = (0, 0);
        }
    }

    /// Forgets the usage after the directory was wiped: the next write lists it.
    fn wiped(&mut self, dir: &Path) {
        let _ = fs::remove_file(dir.join(JOURNAL));
        self.usage = None;
        self.delta = (0, 0);
    }
}

fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
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
    fsync: bool,
    capacity: usize,
    bounds: DiskBounds,
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
        fsync: bool,
        capacity: usize,
        bounds: DiskBounds,
        counters: Arc<Counters>,
    ) -> Result<Self, CacheError> {
        let shared = Arc::new(Shared {
            dir: dir.clone(),
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
    let mut bufs = WriteBuffers::new(&shared.dir);
    let mut tier = DiskTier {
        bounds: shared.bounds,
        usage: None,
        known_at: std::time::Instant::now(),
        delta: (0, 0),
    };
    // The map the next batch is swapped into (kept with its capacity, so that `submit` on the
    // callers' threads does not grow a fresh map batch after batch).
    let mut spare: HashMap<CacheKey, DiskOp, KeyHasherBuilder> = HashMap::default();
    let mut st = shared.state.lock();
    loop {
        if let Some(&last) = st.clears.last() {
            let seqs = std::mem::take(&mut st.clears);
            drop(st);
            let removed = wipe(&shared.dir);
            tier.wiped(&shared.dir);
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
            let dir = &shared.dir;
            for (key, op) in batch.drain() {
                let old = file_size(dir, &key);
                let ok = match op {
                    DiskOp::Write(entry) => {
                        write_bounded(shared, &entry, old, &mut tier, &mut bufs)
                    }
                    DiskOp::Remove => {
                        let done = remove_entry(dir, &key);
                        if matches!(done, Ok(true)) {
                            tier.removed(old);
                        }
                        done.is_ok()
                    }
                };
                if !ok {
                    Counters::add(&shared.counters.write_failures, 1);
                }
            }
            tier.record(dir);
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

/// Writes one entry within the disk bounds (an entry larger than the byte bound is not
/// written); whether it reached the disk.
fn write_bounded(
    shared: &Shared,
    entry: &CachedResponse,
    old: Option<u64>,
    tier: &mut DiskTier,
    bufs: &mut WriteBuffers,
) -> bool {
    if encode_entry(entry, bufs).is_err() {
        return false;
    }
    let len = bufs.json.len() as u64;
    if !tier.make_room(&shared.dir, &entry.key, len, old, &shared.counters) {
        return false;
    }
    if write_encoded(&shared.dir, &entry.key, shared.fsync, bufs).is_err() {
        return false;
    }
    tier.wrote(len, old);
    true
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
