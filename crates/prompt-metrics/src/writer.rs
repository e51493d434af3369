//! The background appender behind [`crate::JsonlStore`].

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;

use chrono::{Datelike, NaiveDate};

use crate::{MetricsError, PromptMetrics};

/// Records waiting for the writer thread at most; `record` waits when the queue is full.
pub(crate) const QUEUE_CAPACITY: usize = 4096;
/// Messages the writer takes from the queue before it writes.
const MAX_BATCH: usize = 1024;
/// Bytes of whole lines gathered before one `write`.
const MAX_WRITE: usize = 256 * 1024;

// Records travel by value: boxing them would cost an allocation on the caller's thread.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Msg {
    Record(PromptMetrics),
    Flush(SyncSender<Result<(), MetricsError>>),
    Shutdown,
}

/// Handle to the writer thread.
#[derive(Debug)]
pub(crate) struct Writer {
    tx: SyncSender<Msg>,
    handle: Mutex<Option<JoinHandle<()>>>,
    dir: PathBuf,
}

/// The file name of a day: `metrics_YYYY-MM-DD.jsonl`.
pub(crate) fn file_name(day: NaiveDate) -> String {
    format!(
        "metrics_{:04}-{:02}-{:02}.jsonl",
        day.year(),
        day.month(),
        day.day()
    )
}

impl Writer {
    pub(crate) fn spawn(dir: &Path) -> Result<Writer, MetricsError> {
        let (tx, rx) = sync_channel(QUEUE_CAPACITY);
        let thread_dir = dir.to_path_buf();
        let handle = std::thread::Builder::new()
            .name("prompt-metrics-writer".into())
            .spawn(move || run(&thread_dir, &rx))
            .map_err(|e| MetricsError::io("cannot start the writer thread for", dir, e))?;
        Ok(Writer {
            tx,
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
        match self.tx.try_send(Msg::Record(metrics)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(msg)) => self.tx.send(msg).map_err(|_| self.stopped()),
            Err(TrySendError::Disconnected(_)) => Err(self.stopped()),
        }
    }

    pub(crate) fn flush(&self) -> Result<(), MetricsError> {
        let (tx, rx) = sync_channel(1);
        self.tx.send(Msg::Flush(tx)).map_err(|_| self.stopped())?;
        rx.recv().map_err(|_| self.stopped())?
    }

    /// Writes everything queued and stops the thread.
    pub(crate) fn shutdown(&self) {
        let handle = match self.handle.lock() {
            Ok(mut h) => h.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(handle) = handle {
            let _ = self.tx.send(Msg::Shutdown);
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

fn append(dir: &Path, path: &Path, buf: &mut Vec<u8>) -> Result<(), MetricsError> {
    let mut file = open_append(dir, path)?;
    if ends_mid_line(&mut file).unwrap_or(false) {
        buf.insert(0, b'\n');
    }
    file.write_all(buf)
        .map_err(|e| MetricsError::io("cannot append to", path, e))
}

fn run(dir: &Path, rx: &Receiver<Msg>) {
    let mut state = State {
        dir,
        day: None,
        buf: Vec::with_capacity(MAX_WRITE + 4096),
        error: None,
    };
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        match rx.recv() {
            Ok(msg) => batch.push(msg),
            Err(_) => break,
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(msg) => batch.push(msg),
                Err(_) => break,
            }
        }
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
    state.write_out();
}
