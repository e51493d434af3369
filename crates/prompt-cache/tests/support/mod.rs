//! What the disk tier's tests read of the segment layout themselves, without the cache.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::fs;
use std::path::Path;

/// The segment files (`segments/<8 hex>.seg`) by id, with their sizes, as listed by the test
/// itself.
pub fn segments(dir: &Path) -> Vec<(u32, u64)> {
    let Ok(items) = fs::read_dir(dir.join("segments")) else {
        return Vec::new();
    };
    let mut out: Vec<(u32, u64)> = items
        .flatten()
        .filter_map(|item| {
            let name = item.file_name().to_string_lossy().into_owned();
            let id = u32::from_str_radix(name.strip_suffix(".seg")?, 16).ok()?;
            // A file removed since the listing is not counted.
            Some((id, item.metadata().ok()?.len()))
        })
        .collect();
    out.sort_unstable();
    out
}

/// Bytes of segment files.
pub fn segment_bytes(dir: &Path) -> u64 {
    segments(dir).iter().map(|s| s.1).sum()
}
