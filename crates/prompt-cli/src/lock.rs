//! One writer per results file: the advisory lock `prompt batch` holds on `--out`.
//!
//! The lock is an exclusive `flock` on a sidecar file next to the results, `<out>.lock`
//! (the results file is also the resume state, so this covers both), which holds the PID of
//! the process holding it. The kernel releases a `flock` when its process ends however it
//! ends, so a lock left by a killed run never blocks the next one: a PID left in the file
//! is only read to name the holder while the lock is actually held. The sidecar is removed
//! when the lock is released normally.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};

use crate::error::{CliError, CliResult};

/// Tries to take the lock this many times when the sidecar is removed or replaced between
/// opening it and locking it (by a run that was just releasing it).
const ATTEMPTS: usize = 8;

/// An exclusive lock on a results file, held until dropped.
#[derive(Debug)]
pub(crate) struct ResultsLock {
    /// The sidecar lock file (locked while this value lives).
    file: File,
    /// The sidecar's path.
    path: PathBuf,
}

impl ResultsLock {
    /// Locks `out` for this process, or fails at once (exit 1) naming `out` and, when it
    /// can, the PID of the process that holds it. Creates `out`'s directory if needed (the
    /// results writer would next).
    pub(crate) fn acquire(out: &Path) -> CliResult<Self> {
        let path = sidecar(out)?;
        let cannot = |e: std::io::Error| {
            CliError::failure(format!(
                "cannot lock results file {}: {}: {e}",
                out.display(),
                path.display()
            ))
            .hint("check that the --out directory is writable")
        };
        for _ in 0..ATTEMPTS {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(cannot)?;
            match flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {}
                Err(rustix::io::Errno::WOULDBLOCK) => {
                    let holder = read_pid(&mut file).map_or_else(
                        || "another process".to_owned(),
                        |pid| format!("process {pid}"),
                    );
                    return Err(CliError::failure(format!(
                        "results file {} is in use: {holder} (another `prompt batch`) is writing to it",
                        out.display()
                    ))
                    .hint(format!(
                        "only one batch at a time can write a results file: wait for it to finish, or pass another --out (lock: {})",
                        path.display()
                    )));
                }
                Err(e) => return Err(cannot(e.into())),
            }
            // The holder we waited on may have removed the sidecar as it released it; then
            // this lock is on a file nobody else will open: start again with a fresh one.
            let held = file.metadata().map_err(cannot)?;
            match std::fs::metadata(&path) {
                Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => {}
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(cannot(e)),
            }
            file.set_len(0).map_err(cannot)?;
            file.seek(SeekFrom::Start(0)).map_err(cannot)?;
            writeln!(file, "{}", std::process::id()).map_err(cannot)?;
            return Ok(Self { file, path });
        }
        Err(cannot(std::io::Error::other(
            "the lock file kept being replaced while locking it",
        )))
    }
}

impl Drop for ResultsLock {
    /// Removes the sidecar while still holding the lock; closing the file releases it.
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = flock(&self.file, FlockOperation::Unlock);
    }
}

/// `<dir>/<name>.lock` for `--out <dir>/<name>`, with `<dir>` (and `out` itself when it is a
/// symbolic link) resolved, so every spelling of one results file shares one lock.
fn sidecar(out: &Path) -> CliResult<PathBuf> {
    let target = std::fs::canonicalize(out).unwrap_or_else(|_| out.to_path_buf());
    let Some(name) = target.file_name() else {
        return Err(
            CliError::usage(format!("--out {} is not a file name", out.display()))
                .hint("e.g. --out results.jsonl"),
        );
    };
    let dir = match target.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => dir.to_path_buf(),
        None => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(|e| {
        CliError::failure(format!("cannot write results file {}: {e}", out.display()))
            .hint("check the --out path and that its directory exists and is writable")
    })?;
    let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
    let mut lock_name = name.to_os_string();
    lock_name.push(".lock");
    Ok(dir.join(lock_name))
}

/// The PID written in a held lock file, if it holds one.
fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.take(64).read_to_string(&mut text).ok()?;
    text.trim().parse().ok().filter(|pid| *pid > 0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn one_holder_at_a_time_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("sub/results.jsonl");
        let first = ResultsLock::acquire(&out).unwrap();
        let lock_file = dir.path().join("sub/results.jsonl.lock");
        let pid = std::fs::read_to_string(&lock_file).unwrap();
        assert_eq!(pid.trim(), std::process::id().to_string());
        // Another spelling of the same file meets the same lock.
        let again = dir.path().join("sub/../sub/./results.jsonl");
        let err = ResultsLock::acquire(&again).unwrap_err().to_string();
        assert!(err.contains("results.jsonl is in use"), "{err}");
        assert!(
            err.contains(&format!("process {}", std::process::id())),
            "{err}"
        );
        drop(first);
        assert!(!lock_file.exists());
        let second = ResultsLock::acquire(&out).unwrap();
        drop(second);
    }

    #[test]
    fn a_stale_pid_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("results.jsonl");
        std::fs::write(dir.path().join("results.jsonl.lock"), "999999999\n").unwrap();
        let lock = ResultsLock::acquire(&out).unwrap();
        let pid = std::fs::read_to_string(dir.path().join("results.jsonl.lock")).unwrap();
        assert_eq!(pid.trim(), std::process::id().to_string());
        drop(lock);
    }
}
