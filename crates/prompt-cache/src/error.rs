//! `CacheError`: everything that can go wrong in a cache operation.

use std::path::PathBuf;

use crate::CacheKey;

/// An error from a cache backend. Messages name the file, directory, field or URL involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// `put` was given an empty (or whitespace-only) response without tool calls; nothing was
    /// cached.
    #[error("refused to cache an empty response for key {key}")]
    EmptyResponse {
        /// The entry's key.
        key: CacheKey,
    },
    /// `put` was given an entry larger than the configured limit; nothing was cached.
    #[error(
        "refused to cache entry {key}: {size} bytes is over the limit of {limit} bytes (max_entry_bytes)"
    )]
    EntryTooLarge {
        /// The entry's key.
        key: CacheKey,
        /// The entry's approximate size in bytes.
        size: u64,
        /// The limit it exceeded.
        limit: u64,
    },
    /// The cache directory could not be created or written to.
    #[error("cache directory {} is not writable: {source}", dir.display())]
    DirNotWritable {
        /// The directory.
        dir: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Reading or writing a file failed.
    #[error("cache file {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A configuration value is out of range.
    #[error("invalid cache configuration: {field}: {message}")]
    InvalidConfig {
        /// The `CacheConfig` field.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The background disk writer has stopped (it cannot accept more work).
    #[error("the cache's background writer for {} has stopped", dir.display())]
    WriterStopped {
        /// The cache directory.
        dir: PathBuf,
    },
    /// The Redis server could not be reached or answered with an error.
    #[error("redis at {url}: {message}")]
    Redis {
        /// The server URL, password removed.
        url: String,
        /// What went wrong.
        message: String,
    },
}

impl CacheError {
    /// Whether the error only means "this entry was not cached" (empty or oversized response);
    /// a caller can log it and carry on with the response it already has.
    pub fn is_refused_entry(&self) -> bool {
        matches!(
            self,
            Self::EmptyResponse { .. } | Self::EntryTooLarge { .. }
        )
    }
}
