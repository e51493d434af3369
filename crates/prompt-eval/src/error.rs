//! The error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong reading an eval file, checking it or storing a run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    /// A problem in an eval file, at a line: bad YAML, an unknown assertion kind, an unknown
    /// template, version or label, a case that does not render.
    #[error("{}:{line}: {message}", path.display())]
    File {
        /// The eval file.
        path: PathBuf,
        /// The line (from 1).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A stored run that cannot be read.
    #[error("{}: not a stored eval run: {message}", path.display())]
    BadRun {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl EvalError {
    pub(crate) fn at(path: &std::path::Path, line: usize, message: impl Into<String>) -> Self {
        Self::File {
            path: path.to_path_buf(),
            line: line.max(1),
            message: message.into(),
        }
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
