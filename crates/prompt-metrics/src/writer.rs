//! The background appender behind [`crate::JsonlStore`].

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::NaiveDate;

use crate::{MetricsError, PromptMetrics};

/// Records waiting for the writer thread at most; `record` waits when the queue is full.
pub(crate) const QUEUE_CAPACITY: usize = 4096;
/// Bytes of whole lines gathered before one `write`.
const MAX_WRITE: usize = 256 * 1024;
/// How long the writer lets records gather once one arrives, so that a steady stream of
/// records (a gateway's) is appended a batch at a time rather than with one wake-up and one
/// append per record; a flush or a shutdown ends the wait at once.
const LINGER: Duration = Duration::from_millis(10);
/// Records that end the wait early.
const LINGER_RECORDS: usize = 512;

// Records travel by value: boxing them would cost an allocation on the caller's thread.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Msg {
    Record(PromptMetrics),
    Flush(SyncSender<Result<(), MetricsError>>),
    Shutdown,
}

/// The queue between callers and the writer thread: callers push under a short lock; the
/// writer takes everything queued at once, so a full queue wakes waiting callers once per batch
/// rather than once per record.
#[derive(Debug, Default)]
struct Queue {
    state: Mutex<QueueState>,
    not_empty: Condvar,
    not_full: Condvar,
}

#[derive(Debug, Default)]
struct QueueState {
    msgs: Vec<Msg>,
    /// Records among `msgs` (control messages do not count against the capacity).
    records: usize,
    /// A flush or shutdown is among `msgs`.
    control: bool,
    /// The writer thread has stopped; nothing will take messages any more.
    closed: bool,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a message, waiting for room if it is a record and the queue is full.
    /// Returns false (dropping the message) when the writer has stopped.
    fn push(&self, msg: Msg) -> bool {
        let is_record = matches!(msg, Msg::Record(_));
        let mut state = self.lock();
        while is_record && state.records >= QUEUE_CAPACITY && !state.closed {
            state = self
                .not_full
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if state.closed {
            return false;
        }
        let wake = state.msgs.is_empty() || !is_record || state.records + 1 == LINGER_RECORDS;
        state.msgs.push(msg);
        state.records += usize::from(is_record);
        state.control |= !is_record;
        drop(state);
        if wake {
            self.not_empty.notify_one();
        }
        true
    }

    /// Swaps everything queued into `batch` (which must be empty), waiting while there is
    /// nothing, then up to [`LINGER`] for more records unless a flush or shutdown is queued.
    fn take_all(&self, batch: &mut Vec<Msg>) {
        let mut state = self.lock();
        while state.msgs.is_empty() {
            state = self
                .not_empty
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        let deadline = Instant::now() + LINGER;
        while !state.control && state.records < LINGER_RECORDS {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            state = self
                .not_empty
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        std::mem::swap(&mut state.msgs, batch);
        let was_full = state.records >= QUEUE_CAPACITY;
        state.records = 0;
        state.control = false;
        drop(state);
        if was_full {
            self.not_full.notify_all();
        }
    }

    fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        drop(state);
        self.not_full.notify_all();
    }
}

/// Marks the queue closed when the writer thread ends, however it ends.
struct CloseOnExit(Arc<Queue>);

impl Drop for CloseOnExit {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Handle to the writer thread.
#[derive(Debug)]
pub(crate) struct Writer {
    queue: Arc<Queue>,
    handle: Mutex<Option<JoinHandle<()>>>,
    dir: PathBuf,
}

/// The file name of a day: `metrics_YYYY-MM-DD.jsonl` (read back by `store::day_of`, both
/// with chrono).
pub(crate) fn file_name(day: NaiveDate) -> String {
    day.format("metrics_%Y-%m-%d.jsonl").to_string()
}

impl Writer {
    pub(crate) fn spawn(dir: &Path) -> Result<Writer, MetricsError> {
        let queue = Arc::new(Queue::default());
        let thread_queue = Arc::clone(&queue);
        let thread_dir = dir.to_path_buf();
        let handle = std::thread::Builder::new()
            .name("prompt-metrics-writer".into())
            .spawn(move || {
                let _close = CloseOnExit(Arc::clone(&thread_queue));
                run(&thread_dir, &thread_queue);
            })
            .map_err(|e| MetricsError::io("cannot start the writer thread for", dir, e))?;
        Ok(Writer {
            queue,
            handle: Mutex::new(Some(handle)),
            dir: dir.to_path_buf(),
        })
    }

    fn stopped(&self) -> MetricsError {
        MetricsError::WriterStopped {
            dir: self.dir.clone(),
        }
    }

    pub(crate) fn send(&self, metrics: PromptMetrics) -> Result<(), MetricsError> {
        if self.queue.push(Msg::Record(metrics)) {
            Ok(())
        } else {
            Err(self.stopped())
        }
    }

    pub(crate) fn flush(&self) -> Result<(), MetricsError> {
        let (tx, rx) = sync_channel(1);
        if !self.queue.push(Msg::Flush(tx)) {
            return Err(self.stopped());
        }
        rx.recv().map_err(|_| self.stopped())?
    }

    /// Writes everything queued and stops the thread.
    pub(crate) fn shutdown(&self) {
        let handle = self
            .handle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            let _ = self.queue.push(Msg::Shutdown);
            let _ = handle.join();
        }
    }
}

struct State<'d> {
    dir: &'d Path,
    day: Option<NaiveDate>,
    buf: Vec<u8>,
    error: Option<MetricsError>,
}

impl State<'_> {
    fn add(&mut self, m: &PromptMetrics) {
        let day = m.timestamp.date_naive();
        if self.day != Some(day) || self.buf.len() >= MAX_WRITE {
            self.write_out();
            self.day = Some(day);
        }
        let mark = self.buf.len();
        match serde_json::to_writer(&mut self.buf, m) {
            Ok(()) => self.buf.push(b'\n'),
            Err(e) => {
                self.buf.truncate(mark);
                self.error.get_or_insert(MetricsError::InvalidRecord {
                    field: "record",
                    reason: e.to_string(),
                });
            }
        }
    }

    /// Appends the gathered lines to their day's file in one `write_all` on an append-mode file.
    fn write_out(&mut self) {
        let Some(day) = self.day else {
            return;
        };
        if self.buf.is_empty() {
            return;
        }
        let path = self.dir.join(file_name(day));
        if let Err(e) = append(self.dir, &path, &mut self.buf) {
            self.error.get_or_insert(e);
        }
        self.buf.clear();
    }
}

fn open_append(dir: &Path, path: &Path) -> Result<File, MetricsError> {
    let open = || {
        OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
    };
    match open() {
        Ok(f) => Ok(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)
                .map_err(|e| MetricsError::io("cannot create metrics directory", dir, e))?;
            open().map_err(|e| MetricsError::io("cannot open for append", path, e))
        }
        Err(e) => Err(MetricsError::io("cannot open for append", path, e)),
    }
}

/// Whether a file ends in the middle of a line (a writer was killed mid-line, or another
/// program wrote without a final newline): then our lines must start on a fresh line.
fn ends_mid_line(file: &mut File) -> std::io::Result<bool> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(false);
    }
    file.seek(SeekFrom::Start(len - 1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    Ok(last[0] != b'\n')
}

/// Takes an exclusive advisory lock (`flock`) on the open file, waiting for it; released when
/// the file is closed, also when the process dies. Returns false where the file system does not
/// support it (the append then goes ahead unlocked, as it would without this lock).
#[cfg(unix)]
fn lock_exclusive(file: &File) -> bool {
    use rustix::fs::{FlockOperation, flock};
    loop {
        match flock(file, FlockOperation::LockExclusive) {
            Ok(()) => return true,
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return false,
        }
    }
}

#[cfg(not(unix))]
fn lock_exclusive(_file: &File) -> bool {
    false
}

/// Appends whole lines: under an exclusive `flock` on the day file, held from the mid-line check
/// to the end of the append, so that the check never sees another appender's batch half
/// written (it would then start our lines with a newline of their own and leave an empty line
/// once that batch ends). Every appender of ours takes the lock, threads of other stores and
/// other processes alike. A writer killed mid-append loses its lock with its process; the
/// next appender finds the file ending mid-line and starts on a fresh line, so the torn line
/// stays one unreadable line and the records after it read.
fn append(dir: &Path, path: &Path, buf: &mut Vec<u8>) -> Result<(), MetricsError> {
    let mut file = open_append(dir, path)?;
    let _locked = lock_exclusive(&file);
    if ends_mid_line(&mut file).unwrap_or(false) {
        buf.insert(0, b'\n');
    }
    let written = file
        .write_all(buf)
        .map_err(|e| MetricsError::io("cannot append to", path, e));
    // Closing the file releases the lock.
    drop(file);
    written
}

fn run(dir: &Path, queue: &Queue) {
    let mut state = State {
        dir,
        day: None,
        buf: Vec::with_capacity(MAX_WRITE + 4096),
        error: None,
    };
    let mut batch = Vec::new();
    loop {
        queue.take_all(&mut batch);
        for msg in batch.drain(..) {
            match msg {
                Msg::Record(m) => state.add(&m),
                Msg::Flush(reply) => {
                    state.write_out();
                    let _ = reply.send(state.error.take().map_or(Ok(()), Err));
                }
                Msg::Shutdown => {
                    state.write_out();
                    return;
                }
            }
        }
        state.write_out();
    }
}
