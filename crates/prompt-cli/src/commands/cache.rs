//! `prompt cache stats|clear|prune`, and opening the cache for generations.

use std::sync::Arc;
use std::time::Duration;

use prompt_cache::{CacheConfig, CacheError, CacheStore, ResponseCache};
use serde_json::{Map, Value, json};

use crate::cli::CacheCommand;
use crate::config::{CacheLocation, Settings};
use crate::error::{CliError, CliResult};
use crate::ui::{self, Align, Paint, Table};

/// Key prefix of the entries `prompt` keeps in a shared Redis cache.
#[cfg(feature = "redis")]
pub(crate) const REDIS_PREFIX: &str = "promptkit:";

/// Default time to live of a cache entry: 7 days.
const DEFAULT_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

fn cache_error(e: CacheError, location: &CacheLocation) -> CliError {
    let hint = match location {
        CacheLocation::Dir(dir) => format!(
            "check that {} is a writable directory (--cache-dir DIR or PROMPT_CACHE_DIR)",
            dir.display()
        ),
        CacheLocation::Redis(url) => {
            format!("is the Redis server at {url} running? (--cache-url or PROMPT_CACHE_URL)")
        }
    };
    CliError::failure(e.to_string()).hint(hint)
}

/// Opens the cache the settings name: the directory, or Redis with `--cache-url`.
pub(crate) fn open_cache(settings: &Settings) -> CliResult<Arc<dyn CacheStore>> {
    let location = settings.cache_location();
    let ttl = settings
        .config
        .cache_ttl
        .map_or(DEFAULT_TTL, Duration::from_secs);
    match &location {
        CacheLocation::Dir(dir) => {
            let cache = ResponseCache::open(CacheConfig::new(dir).ttl(ttl))
                .map_err(|e| cache_error(e, &location))?;
            Ok(Arc::new(cache))
        }
        #[cfg(feature = "redis")]
        CacheLocation::Redis(url) => {
            let cache = prompt_cache::RedisCache::connect(url, REDIS_PREFIX, ttl)
                .map_err(|e| cache_error(e, &location))?;
            Ok(Arc::new(cache))
        }
        #[cfg(not(feature = "redis"))]
        CacheLocation::Redis(url) => Err(CliError::usage(format!(
            "cannot use the Redis cache {url}: this prompt was built without the `redis` feature"
        ))
        .hint("rebuild with the default features, or use --cache-dir DIR")),
    }
}

fn describe(location: &CacheLocation) -> String {
    match location {
        CacheLocation::Dir(d) => d.display().to_string(),
        CacheLocation::Redis(u) => u.clone(),
    }
}

const STAT_ROWS: &[(&str, &str)] = &[
    ("size", "entries"),
    ("max_size", "max entries"),
    ("utilization", "utilization"),
    ("bytes", "bytes"),
    ("total_hits", "hits recorded on entries"),
    ("avg_age_seconds", "average age"),
    ("oldest_age_seconds", "oldest entry age"),
    ("ttl_seconds", "time to live"),
    ("expired", "expired entries"),
    ("corrupt", "corrupt files"),
];

fn fmt(key: &str, v: Option<&Value>) -> String {
    let Some(f) = v.and_then(Value::as_f64) else {
        return ui::cell(v);
    };
    match key {
        "utilization" | "hit_rate" => ui::percent(f),
        "bytes" => ui::bytes(f as u64),
        k if k.ends_with("_seconds") => duration(f),
        _ => format!("{f:.0}"),
    }
}

fn duration(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

pub(crate) fn cache(cmd: CacheCommand, settings: &Settings) -> CliResult<()> {
    let location = settings.cache_location();
    let store = open_cache(settings)?;
    let err = |e: CacheError| cache_error(e, &location);
    let where_ = describe(&location);
    match cmd {
        CacheCommand::Stats => {
            let stats = store.stats().map_err(err)?;
            if settings.json {
                return ui::print_json(&stats);
            }
            let map: Map<String, Value> = match serde_json::to_value(&stats) {
                Ok(Value::Object(m)) => m,
                _ => Map::new(),
            };
            let p = Paint::stdout();
            let mut table = Table::new(&[("cache", Align::Left), ("value", Align::Right)]);
            for (key, label) in STAT_ROWS {
                if map.contains_key(*key) {
                    table.row(vec![(*label).to_owned(), fmt(key, map.get(*key))]);
                }
            }
            ui::print_stdout(&format!(
                "{}\n{}",
                p.bold(&format!("cache {where_}")),
                table.render(p)
            ))
        }
        CacheCommand::Clear => {
            let removed = store.clear().map_err(err)?;
            store.flush().map_err(err)?;
            if settings.json {
                return ui::print_json(&json!({"removed": removed, "cache": where_}));
            }
            ui::print_stdout(&format!(
                "removed {removed} cache entr{} from {where_}\n",
                if removed == 1 { "y" } else { "ies" }
            ))
        }
        CacheCommand::Prune => {
            let removed = store.prune_expired().map_err(err)?;
            store.flush().map_err(err)?;
            if settings.json {
                return ui::print_json(&json!({"removed": removed, "cache": where_}));
            }
            ui::print_stdout(&format!(
                "removed {removed} expired cache entr{} from {where_}\n",
                if removed == 1 { "y" } else { "ies" }
            ))
        }
    }
}
