//! Errors of the metrics store.

use std::path::PathBuf;

/// Everything that can go wrong while recording or querying metrics.
///
/// Bad lines in a metrics file are not errors: queries skip and count them.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// A file or directory could not be created, opened, read, written or removed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done ("cannot append to", "cannot remove", ...).
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A record cannot be written because one of its fields holds an invalid value
    /// (a NaN or infinite float would not read back as JSON).
    #[error("invalid metrics record: field `{field}` {reason}")]
    InvalidRecord {
        /// The Python original's name of the offending field.
        field: &'static str,
        /// Why the value is rejected.
        reason: String,
    },
    /// A price file could not be read: bad TOML, an unknown field, a negative price.
    #[error("{origin}: {message}")]
    Prices {
        /// The file (or "the shipped price table").
        origin: String,
        /// What is wrong, with the line or the key and field.
        message: String,
    },
    /// The background writer thread has stopped; no more records can be written.
    #[error("the metrics writer for {dir} has stopped")]
    WriterStopped {
        /// The metrics directory the writer appended to.
        dir: PathBuf,
    },
}

impl MetricsError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        MetricsError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
