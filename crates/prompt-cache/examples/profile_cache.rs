//! A small driver for profiling the cache under `valgrind --tool=callgrind`, `perf` or
//! `strace -c`, with the same entries as the criterion benches (2 KB prompt, 1.5 KB system
//! prompt, ~2 KB response).
//!
//! ```text
//! cargo build --release -p prompt-cache --example profile_cache
//! target/release/examples/profile_cache fill   <dir> 10000   # write 10,000 entries
//! target/release/examples/profile_cache reload <dir> 10000   # open the directory 5 times
//! target/release/examples/profile_cache put    <dir> 10000   # time 10,000 puts (flush every 1000)
//! target/release/examples/profile_cache get    <dir> 100000  # time 100,000 hits
//! ```

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use prompt_cache::{CacheConfig, CacheStore, ResponseCache};

#[path = "../benches/workload/mod.rs"]
mod workload;
use workload::{entry, keys};

fn run(mode: &str, dir: &Path, n: usize) -> Result<(), Box<dyn std::error::Error>> {
    let response = workload::response();
    match mode {
        "fill" => {
            let cache = ResponseCache::open(CacheConfig::new(dir).max_size(n))?;
            for k in keys(n as u64) {
                cache.put(entry(k, &response), None)?;
            }
            cache.flush()?;
        }
        "reload" => {
            // Opens (five, or $REPS), each timed with its drop, as `cache/reload_10k` does.
            let reps = std::env::var("REPS")
                .ok()
                .and_then(|r| r.parse().ok())
                .unwrap_or(5);
            for _ in 0..reps {
                let start = Instant::now();
                let cache = ResponseCache::open(CacheConfig::new(dir).max_size(n))?;
                let opened = start.elapsed();
                let len = cache.len();
                drop(cache);
                let took = start.elapsed();
                println!(
                    "reload: {len} entries in {took:?} (open {opened:?}, drop {:?})",
                    took - opened
                );
            }
        }
        "put" => {
            // Rewrites of 1000 keys, the writer drained (untimed) every 1000 puts, as
            // `cache/put` does.
            let keys = keys(1000);
            let cache = ResponseCache::open(CacheConfig::new(dir).max_size(2000))?;
            let mut took = Duration::ZERO;
            for chunk in 0..n.div_ceil(1000) {
                let start = Instant::now();
                for i in chunk * 1000..((chunk + 1) * 1000).min(n) {
                    cache.put(entry(keys[i % keys.len()], &response), None)?;
                }
                took += start.elapsed();
                cache.flush()?;
            }
            println!("put: {n} puts in {took:?} ({:?} each)", took / n as u32);
        }
        "get" => {
            // Hits on a cache of 1000 entries, the key given, as `cache/get_hit` does.
            let keys = keys(1000);
            let cache = ResponseCache::open(CacheConfig::new(dir).max_size(1000))?;
            for k in &keys {
                cache.put(entry(*k, &response), None)?;
            }
            cache.flush()?;
            let start = Instant::now();
            for i in 0..n {
                let hit = cache.get(&keys[i % 7 + 500])?;
                assert!(hit.is_some(), "key {i} is cached");
            }
            let took = start.elapsed();
            println!("get: {n} hits in {took:?} ({:?} each)", took / n as u32);
        }
        other => {
            return Err(format!("unknown mode {other:?}: fill, reload, put or get").into());
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: profile_cache fill|reload|put|get <dir> <n>");
        return ExitCode::FAILURE;
    }
    let n = match args[3].parse::<usize>() {
        Ok(n) if n > 0 => n,
        _ => {
            eprintln!(
                "profile_cache: <n> must be a positive integer, got {:?}",
                args[3]
            );
            return ExitCode::FAILURE;
        }
    };
    match run(&args[1], Path::new(&args[2]), n) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("profile_cache: {e}");
            ExitCode::FAILURE
        }
    }
}
