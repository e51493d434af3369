//! Benchmarks for prompt-cache with a 2 KB user prompt and a 1.5 KB system prompt.
//!
//! - `cache/key_derivation`: building a `CacheKey` from the whole request.
//! - `cache/get_hit`: `get` of a present key (the key given), entry cloned out.
//! - `cache/get_miss`: `get` of an absent key, including the read-through look at the disk;
//!   `cache/get_miss_memory_only` without read-through.
//! - `cache/put`: `put` on the caller's thread (the disk write happens on the writer thread;
//!   the writer is drained outside the timed region every 1000 puts).
//! - `cache/get_from_disk`: `get` of a key another cache wrote and this one has not loaded
//!   (a read-through hit: open, read, parse and verify the file, insert into memory).
//! - `cache/reload_10k`: `ResponseCache::open` of a directory holding 10,000 entries, then one
//!   `get` (start-up reads nothing; the get reads its one file), as the diskcache peer does.
//! - `cache/checksum_2k/<hash>`: one hash of a stored entry's ~2.3 KB, XXH3-64 (the entry
//!   checksum) and SHA-256 (the alternative already linked), to compare their cost.
//! - `cache/put_full_cache/<n>`: `put` of a new key into a full cache of `n` entries (one
//!   eviction per put), for two sizes to show the cost does not grow with `n`.

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use std::fs;
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use prompt_cache::{CacheConfig, CacheKey, CacheStore, ResponseCache};

mod workload;
use workload::{entry, keys, request_key, response, system_prompt, user_prompt};

fn open(dir: &Path, max_size: usize) -> ResponseCache {
    ResponseCache::open(CacheConfig::new(dir).max_size(max_size)).expect("open cache")
}

fn fill(cache: &ResponseCache, keys: &[CacheKey]) {
    let response = response();
    for k in keys {
        cache.put(entry(*k, &response), None).expect("put");
    }
    cache.flush().expect("flush");
}

/// Times `iters` calls of `f(i)`, draining the disk writer (untimed) every 1000 calls so the
/// figure is the caller's cost and never waits on a full write queue.
fn timed_puts(cache: &ResponseCache, iters: u64, mut f: impl FnMut(u64)) -> Duration {
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let chunk = (iters - done).min(1000);
        let start = Instant::now();
        for i in done..done + chunk {
            f(i);
        }
        total += start.elapsed();
        cache.flush().expect("flush");
        done += chunk;
    }
    total
}

fn benches(c: &mut Criterion) {
    let system = system_prompt();
    let user = user_prompt(1);
    assert_eq!((system.len(), user.len()), (1536, 2048));
    c.bench_function("cache/key_derivation", |b| {
        b.iter(|| request_key(black_box(&system), black_box(&user)))
    });

    let dir = tempfile::tempdir().expect("tempdir");
    let present = keys(1000);
    let cache = open(dir.path(), 1000);
    fill(&cache, &present);
    let hit = present[500];
    c.bench_function("cache/get_hit", |b| {
        b.iter(|| cache.get(black_box(&hit)).expect("get").expect("hit"))
    });
    let absent = request_key(&system, "not cached");
    c.bench_function("cache/get_miss", |b| {
        b.iter(|| assert!(cache.get(black_box(&absent)).expect("get").is_none()))
    });
    drop(cache);
    let mut cfg = CacheConfig::new(dir.path()).max_size(1000);
    cfg.read_through = false;
    let memory_only = ResponseCache::open(cfg).expect("open");
    c.bench_function("cache/get_miss_memory_only", |b| {
        b.iter(|| assert!(memory_only.get(black_box(&absent)).expect("get").is_none()))
    });
    drop(memory_only);

    // The cost of the checksum's hash over one stored entry, for the two candidates.
    let stored = fs::read(dir.path().join(format!("{hit}.json"))).expect("entry file");
    let mut group = c.benchmark_group("cache/checksum_2k");
    group.bench_function("xxh3", |b| {
        b.iter(|| xxhash_rust::xxh3::xxh3_64(black_box(&stored)))
    });
    group.bench_function("sha256", |b| {
        b.iter(|| <sha2::Sha256 as sha2::Digest>::digest(black_box(&stored)))
    });
    group.finish();

    // put: rewrites of 1000 keys into a cache that has room for them all.
    let put_dir = tempfile::tempdir().expect("tempdir");
    let cache = open(put_dir.path(), 2000);
    let response = response();
    c.bench_function("cache/put", |b| {
        b.iter_custom(|iters| {
            timed_puts(&cache, iters, |i| {
                let e = entry(present[(i % 1000) as usize], &response);
                cache.put(black_box(e), None).expect("put");
            })
        })
    });
    drop(cache);

    // put into a full cache: every put is a new key and evicts the least recently used.
    let fresh = keys(20_000);
    let mut group = c.benchmark_group("cache/put_full_cache");
    for size in [1000usize, 10_000] {
        let full_dir = tempfile::tempdir().expect("tempdir");
        let cache = open(full_dir.path(), size);
        fill(&cache, &fresh[..size]);
        assert_eq!(cache.len(), size);
        let mut next = size;
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter_custom(|iters| {
                timed_puts(&cache, iters, |_| {
                    let e = entry(fresh[next % fresh.len()], &response);
                    next += 1;
                    cache.put(black_box(e), None).expect("put");
                })
            })
        });
    }
    group.finish();

    // get from disk: a read-through hit. Each round writes up to 1000 entries through another
    // cache into a fresh directory that the reading cache opened empty, then times its gets.
    let mut group = c.benchmark_group("cache");
    group.sample_size(20);
    group.bench_function("get_from_disk", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0;
            while done < iters {
                let n = (iters - done).min(1000) as usize;
                let round = tempfile::tempdir().expect("tempdir");
                let reader = open(round.path(), 2000);
                fill(&open(round.path(), 2000), &fresh[..n]);
                let start = Instant::now();
                for k in &fresh[..n] {
                    black_box(reader.get(k).expect("get").expect("hit from disk"));
                }
                total += start.elapsed();
                done += n as u64;
            }
            total
        })
    });
    group.finish();

    // reload: open a directory of 10,000 entries and get one of them.
    let reload_dir = tempfile::tempdir().expect("tempdir");
    {
        let cache = open(reload_dir.path(), 10_000);
        fill(&cache, &fresh[..10_000]);
    }
    let mut group = c.benchmark_group("cache");
    group.sample_size(10);
    // Only the start-up is timed: the cache is dropped (flushed, its writer joined, its
    // entries freed) outside the timed region, as a reload is what this measures.
    let first = fresh[0];
    group.bench_function("reload_10k", |b| {
        b.iter_with_large_drop(|| {
            let cache = open(reload_dir.path(), 10_000);
            assert!(cache.get(&first).expect("get").is_some());
            cache
        })
    });
    group.finish();
}

criterion_group!(cache_benches, benches);
criterion_main!(cache_benches);
