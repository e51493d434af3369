//! How the disk tier's costs grow with the entries on disk, and the key derivation with the
//! system prompt's hashing state reused.
//!
//! - `disk_tier/startup/<n>`: `ResponseCache::open` of a directory of `n` entries plus one
//!   `get` of an entry on disk (the cache is dropped outside the timed region).
//! - `disk_tier/get_disk_hit/<n>`: `get` of an entry that is not in memory (a memory tier of
//!   one entry) and is on disk, among `n`: read the index header, the key's slots and its
//!   record, parse and verify it.
//! - `disk_tier/key_derivation_reused`: the key of `cache/key_derivation`'s request (1.5 KB
//!   system prompt, 2 KB user prompt) with the system prompt's SHA-256 state kept by
//!   `CacheKeyPrefixes`; `disk_tier/key_derivation` (hashed in full, as `cache/key_derivation`)
//!   and `disk_tier/get_hit` (as `cache/get_hit`) are measured beside it, in the same run.
//!
//! Sizes: `PROMPTKIT_BENCH_DISK_SIZES` (comma-separated entry counts, default
//! `1000,10000,100000`; `1000000` takes about 4 GB of disk and minutes to write once). The
//! directories are written once into `$PROMPTKIT_BENCH_DATA/disk-tier-segments/<n>` (or a
//! temporary directory) and reused by later runs.

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use prompt_cache::{
    CacheConfig, CacheKey, CacheKeyPrefixes, CacheStore, CachedResponse, ResponseCache,
};

mod workload;
use workload::{finish_key, system_prompt, user_prompt};

/// Small keys for the directories: the disk tier's costs do not depend on how a key is made.
fn key(i: u64) -> CacheKey {
    CacheKey::builder("disk-tier")
        .message("user", &i.to_string())
        .finish()
}

fn entry(i: u64) -> CachedResponse {
    let mut e = CachedResponse::new(
        key(i),
        format!("The morning sun rose over the valley, chapter {i}."),
        "qwen3:30b",
    );
    e.tokens_prompt = Some(900);
    e.tokens_completion = Some(500);
    e
}

fn sizes() -> Vec<u64> {
    std::env::var("PROMPTKIT_BENCH_DISK_SIZES")
        .ok()
        .map(|v| {
            v.split(',')
                .filter_map(|n| n.trim().parse().ok())
                .filter(|&n| n > 0)
                .collect::<Vec<u64>>()
        })
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| vec![1000, 10_000, 100_000])
}

/// A directory holding entries `0..n`, written once (a `complete` marker says it was).
fn directory(root: &Path, n: u64) -> PathBuf {
    let dir = root.join(n.to_string());
    let marker = dir.join("complete");
    if marker.exists() {
        return dir;
    }
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = CacheConfig::new(&dir)
        .max_size(1000)
        .max_disk_bytes(u64::MAX / 2);
    let cache = ResponseCache::open(cfg).expect("open");
    for i in 0..n {
        cache.put(entry(i), None).expect("put");
    }
    cache.flush().expect("flush");
    drop(cache);
    std::fs::write(&marker, n.to_string()).expect("marker");
    dir
}

fn open(dir: &Path, max_size: usize) -> ResponseCache {
    let cfg = CacheConfig::new(dir)
        .max_size(max_size)
        .max_disk_bytes(u64::MAX / 2);
    ResponseCache::open(cfg).expect("open cache")
}

fn benches(c: &mut Criterion) {
    let system = system_prompt();
    let user = user_prompt(1);
    let prefixes = CacheKeyPrefixes::default();
    let plain = finish_key(
        CacheKey::builder("writer").message("system", &system),
        &user,
    );
    let reused = finish_key(prefixes.builder("writer", "system", &system), &user);
    assert_eq!(plain, reused, "the same key either way");
    c.bench_function("disk_tier/key_derivation", |b| {
        b.iter(|| {
            finish_key(
                CacheKey::builder("writer").message(black_box("system"), black_box(&system)),
                black_box(&user),
            )
        })
    });
    c.bench_function("disk_tier/key_derivation_reused", |b| {
        b.iter(|| {
            finish_key(
                prefixes.builder("writer", black_box("system"), black_box(&system)),
                black_box(&user),
            )
        })
    });
    let hit_dir = tempfile::tempdir().expect("tempdir");
    let cache = open(hit_dir.path(), 1000);
    for i in 0..1000 {
        cache.put(entry(i), None).expect("put");
    }
    let hit = key(500);
    c.bench_function("disk_tier/get_hit", |b| {
        b.iter(|| cache.get(black_box(&hit)).expect("get").expect("hit"))
    });
    drop(cache);

    let kept;
    let root = match std::env::var_os("PROMPTKIT_BENCH_DATA") {
        Some(data) => PathBuf::from(data).join("disk-tier-segments"),
        None => {
            kept = tempfile::tempdir().expect("tempdir");
            kept.path().to_path_buf()
        }
    };
    let mut startup = c.benchmark_group("disk_tier/startup");
    startup.sample_size(20);
    let sizes = sizes();
    let dirs: Vec<(u64, PathBuf)> = sizes.iter().map(|&n| (n, directory(&root, n))).collect();
    for (n, dir) in &dirs {
        let wanted = key(n / 2);
        startup.bench_with_input(BenchmarkId::from_parameter(n), n, |b, _| {
            b.iter_with_large_drop(|| {
                let cache = open(dir, 1000);
                assert!(cache.get(&wanted).expect("get").is_some());
                cache
            })
        });
    }
    startup.finish();

    let mut disk_hit = c.benchmark_group("disk_tier/get_disk_hit");
    for (n, dir) in &dirs {
        // One entry in memory: every get of another key misses memory and reads the disk.
        let cache = open(dir, 1);
        // A stride through the keys, so that no two consecutive gets share a key.
        let keys: Vec<CacheKey> = (0..(*n).min(10_000)).map(|j| key(j * 7919 % n)).collect();
        let mut next = 0;
        disk_hit.bench_with_input(BenchmarkId::from_parameter(n), n, |b, _| {
            b.iter(|| {
                next = (next + 1) % keys.len();
                cache.get(&keys[next]).expect("get").expect("hit from disk")
            })
        });
        drop(cache);
    }
    disk_hit.finish();
}

criterion_group!(disk_tier_benches, benches);
criterion_main!(disk_tier_benches);
