//! `prompt cache stats|clear|prune`, and opening the cache for generations.

use std::sync::Arc;

use prompt_agent::{AgentError, Settings as AppSettings};
use prompt_cache::{CacheError, CacheStore};
use serde_json::{Map, Value, json};

use crate::cli::CacheCommand;
use crate::config::{CacheLocation, Settings, settings_error};
use crate::error::{CliError, CliResult};
use crate::ui::{self, Align, Paint, Table};

/// A one-line error for a cache that cannot be opened or used, with where to fix it.
pub(crate) fn cache_error(e: &CacheError, settings: &AppSettings) -> CliError {
    let hint = match settings.cache_url() {
        None => format!(
            "check that {} is a writable directory (--cache-dir DIR or PROMPT_CACHE_DIR)",
            settings.cache_dir().display()
        ),
        Some(url) => {
            format!("is the Redis server at {url} running? (--cache-url or PROMPT_CACHE_URL)")
        }
    };
    CliError::failure(e.to_string()).hint(hint)
}

/// Opens the cache the settings name: the directory, or Redis with `--cache-url`.
pub(crate) fn open_cache(settings: &Settings) -> CliResult<Arc<dyn CacheStore>> {
    settings.app.open_cache().map_err(|e| match e {
        AgentError::Cache(c) => cache_error(&c, &settings.app),
        other => settings_error(&other),
    })
}

fn describe(location: &CacheLocation) -> String {
    match location {
        CacheLocation::Dir(d) => d.display().to_string(),
        CacheLocation::Redis(u) => u.clone(),
    }
}

const STAT_ROWS: &[(&str, &str)] = &[
    ("size", "entries in memory"),
    ("max_size", "max entries in memory"),
    ("utilization", "utilization"),
    ("bytes", "bytes in memory"),
    ("disk_entries", "entries on disk"),
    ("disk_bytes", "bytes on disk"),
    ("total_hits", "hits recorded on entries"),
    ("avg_age_seconds", "average age"),
    ("oldest_age_seconds", "oldest entry age"),
    ("ttl_seconds", "time to live"),
    ("expired", "expired entries"),
    ("corrupt", "corrupt entries"),
];

fn fmt(key: &str, v: Option<&Value>) -> String {
    let Some(f) = v.and_then(Value::as_f64) else {
        return ui::cell(v);
    };
    match key {
        "utilization" | "hit_rate" => ui::percent(f),
        "bytes" | "disk_bytes" => ui::bytes(f as u64),
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

pub(crate) fn cache(cmd: &CacheCommand, settings: &Settings) -> CliResult<()> {
    let location = settings.cache_location();
    let store = open_cache(settings)?;
    let err = |e: CacheError| cache_error(&e, &settings.app);
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
