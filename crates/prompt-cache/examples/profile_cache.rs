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
use std::sync::Arc;
use std::time::{Duration, Instant};

use prompt_cache::{CacheConfig, CacheKey, CacheStore, CachedResponse, ResponseCache};
use serde_json::json;

fn system_prompt() -> String {
    "You are the Writer, a novelist who writes vivid, coherent chapters. ".repeat(23)[..1536]
        .to_owned()
}

fn user_prompt(i: u64) -> String {
    let mut s = format!("Write chapter {i}. ");
    while s.len() < 2048 {
        s.push_str("The heroine crosses the river at dawn and meets the ferryman. ");
    }
    s.truncate(2048);
    s
}

fn keys(n: u64) -> Vec<CacheKey> {
    let system = system_prompt();
    (0..n)
        .map(|i| {
            CacheKey::builder("writer")
                .provider("ollama")
                .model("qwen3:30b")
                .message("system", &system)
                .message("user", &user_prompt(i))
                .temperature(Some(0.8))
                .max_tokens(Some(4096))
                .seed(None)
                .option("top_p", &json!(0.9))
                .option("num_ctx", &json!(8192))
                .finish()
        })
        .collect()
}

fn entry(key: CacheKey, response: &Arc<str>) -> CachedResponse {
    let mut e = CachedResponse::new(key, response.clone(), "qwen3:30b");
    e.provider = Some("ollama".to_owned());
    e.temperature = Some(0.8);
    e.tokens_prompt = Some(900);
    e.tokens_completion = Some(500);
    e
}

fn run(mode: &str, dir: &Path, n: usize) -> Result<(), Box<dyn std::error::Error>> {
    let response: Arc<str> = "The morning sun rose over the valley. ".repeat(54).into();
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
