//! The shared inputs: written once into `target/bench-data/` with fixed seeds and fixed sizes,
//! read by the criterion benches (through `PROMPTKIT_BENCH_DATA`) and by the Python peers.
//!
//! Layout:
//!
//! ```text
//! manifest.json                      what was written, with which seed, sizes and expected counts
//! templates/writer/write_chapter_v1.yaml   copy of the project's template
//! templates/vars.json                the variables (example file + declared defaults)
//! templates/peer.json                { system, user, vars } for Jinja2
//! cache/system.txt  cache/prompt.txt cache/response.txt   1.5 KB, 2 KB, 2 KB (prompt-cache's bench texts)
//! cache/request.json                 namespace, provider, model, temperature, max_tokens
//! cache/keys.txt                     10,000 keys (64 hex chars), one a line
//! metrics/100k/metrics_YYYY-MM-DD.jsonl   7 daily files, the Python original's record shape
//!                                         (prompt-metrics' `testdata` generator)
//! metrics/1m/metrics_YYYY-MM-DD.jsonl     (full runs only)
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

/// Bumped whenever the generated content changes, so stale data sets are rewritten.
const FORMAT: u64 = 4;
/// The seed of every generator here.
pub(crate) const SEED: u64 = 0x5EED_2026_0001;
/// The seed of the metrics data sets: the one prompt-metrics' bench uses, so that its data
/// set is the same with or without `PROMPTKIT_BENCH_DATA`.
pub(crate) const METRICS_SEED: u64 = 42;
/// Size of the cached prompt, the system prompt and the cached response, in bytes.
pub(crate) const PROMPT_BYTES: usize = 2048;
pub(crate) const SYSTEM_BYTES: usize = 1536;
pub(crate) const RESPONSE_BYTES: usize = 2052;
/// Keys written to `cache/keys.txt`.
pub(crate) const CACHE_KEYS: usize = 10_000;
/// Number of daily metrics files per data set.
pub(crate) const METRICS_DAYS: u32 = 7;
/// The agent whose stats are queried.
pub(crate) const STATS_AGENT: &str = "writer";

/// One metrics data set: its name (directory) and record count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MetricsSet {
    pub(crate) name: &'static str,
    pub(crate) records: usize,
}

pub(crate) const METRICS_100K: MetricsSet = MetricsSet {
    name: "100k",
    records: 100_000,
};
pub(crate) const METRICS_1M: MetricsSet = MetricsSet {
    name: "1m",
    records: 1_000_000,
};

/// What `prepare` wrote; `problems` name the inputs that could not be written (their rows
/// become n/a), e.g. a template file that does not exist yet.
#[derive(Debug)]
pub(crate) struct BenchData {
    pub(crate) dir: PathBuf,
    pub(crate) template_problem: Option<String>,
    pub(crate) metrics_sets: Vec<MetricsSet>,
}

/// Writes (or reuses) the shared inputs under `dir`.
pub(crate) fn prepare(root: &Path, dir: &Path, sets: &[MetricsSet]) -> Result<BenchData> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let manifest_path = dir.join("manifest.json");
    let mut manifest = read_json(&manifest_path)
        .filter(|m| m["format"] == FORMAT && m["seed"] == SEED)
        .unwrap_or_else(|| json!({ "format": FORMAT, "seed": SEED }));

    let template_problem = match write_template_inputs(root, &dir.join("templates")) {
        Ok(()) => None,
        Err(err) => Some(format!("{err:#}")),
    };
    manifest["template"] = match &template_problem {
        None => json!({ "ok": true }),
        Some(p) => json!({ "ok": false, "problem": p }),
    };

    if manifest["cache"].is_null() || !dir.join("cache/keys.txt").is_file() {
        write_cache_inputs(&dir.join("cache"))?;
        manifest["cache"] = json!({
            "prompt_bytes": PROMPT_BYTES, "system_bytes": SYSTEM_BYTES,
            "response_bytes": RESPONSE_BYTES, "keys": CACHE_KEYS,
        });
    }

    // The queries look at the last N days, so the files are dated relative to today (UTC):
    // a data set written on an earlier day is rewritten.
    let now = Utc::now();
    let today = now.date_naive().to_string();
    for set in sets {
        let set_dir = dir.join("metrics").join(set.name);
        let entry = &manifest["metrics"][set.name];
        let fresh = entry["date"] == today.as_str()
            && entry["records"] == set.records
            && set_dir.join(format!("metrics_{today}.jsonl")).is_file();
        if !fresh {
            eprintln!(
                "  writing {} metrics records over {METRICS_DAYS} daily files…",
                set.records
            );
            let summary = write_metrics_set(&set_dir, set.records, now)?;
            manifest["metrics"][set.name] = summary;
        }
    }
    write_json(&manifest_path, &manifest)?;
    Ok(BenchData {
        dir: dir.to_path_buf(),
        template_problem,
        metrics_sets: sets.to_vec(),
    })
}

pub(crate) fn read_json(path: &Path) -> Option<Value> {
    let text = fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

pub(crate) fn write_json(path: &Path, value: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// templates

const TEMPLATE_REL: &str = "templates/writer/write_chapter_v1.yaml";
const EXAMPLE_REL: &str = "examples/chapter1.yaml";

fn write_template_inputs(root: &Path, out: &Path) -> Result<()> {
    let template_path = root.join(TEMPLATE_REL);
    let example_path = root.join(EXAMPLE_REL);
    let template_text = fs::read_to_string(&template_path)
        .with_context(|| format!("{TEMPLATE_REL} not readable"))?;
    let example_text =
        fs::read_to_string(&example_path).with_context(|| format!("{EXAMPLE_REL} not readable"))?;
    let template: Value = serde_saphyr::from_str(&template_text)
        .map_err(|e| anyhow::anyhow!("{TEMPLATE_REL}: {e}"))?;
    let example: Value =
        serde_saphyr::from_str(&example_text).map_err(|e| anyhow::anyhow!("{EXAMPLE_REL}: {e}"))?;
    let peer = peer_template(&template, &example)?;

    let yaml_out = out.join("writer");
    fs::create_dir_all(&yaml_out)?;
    fs::write(yaml_out.join("write_chapter_v1.yaml"), &template_text)?;
    write_json(&out.join("vars.json"), &peer["vars"])?;
    write_json(&out.join("peer.json"), &peer)
}

/// `{ system, user, vars }`: the two bodies and the variables a strict Jinja2 render needs —
/// the example's values for declared variables, and the declared defaults for the rest.
pub(crate) fn peer_template(template: &Value, example: &Value) -> Result<Value> {
    let body = |field: &str| -> Result<String> {
        template[field]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("{TEMPLATE_REL}: field `{field}` missing or not text"))
    };
    let system = body("system_prompt")?;
    let user = body("user_prompt_template")?;
    let declared = template["variables"]
        .as_object()
        .with_context(|| format!("{TEMPLATE_REL}: field `variables` missing or not a map"))?;
    // The example file is either a plain map of variables or has them under `vars`/`variables`.
    let given = ["vars", "variables"]
        .iter()
        .find_map(|k| example[*k].as_object())
        .or_else(|| example.as_object())
        .with_context(|| format!("{EXAMPLE_REL}: not a map of variables"))?;
    let mut vars = Map::new();
    for (name, spec) in declared {
        if let Some(value) = given.get(name) {
            vars.insert(name.clone(), value.clone());
        } else if let Some(fallback) = fallback_value(spec) {
            vars.insert(name.clone(), fallback);
        }
    }
    Ok(json!({ "system": system, "user": user, "vars": vars }))
}

/// The value an optional variable takes when not given, as prompt-templates renders it: its
/// default, else `""`, `[]`, `{}` or `null` by type. `None` for a required variable.
fn fallback_value(spec: &Value) -> Option<Value> {
    if let Some(default) = spec.get("default") {
        return Some(default.clone());
    }
    // Short form "type - description" is required; the long form is unless `required: false`.
    let ty = spec.as_str().map_or_else(
        || spec["type"].as_str().unwrap_or("any").to_owned(),
        |short| short.split(" - ").next().unwrap_or("any").trim().to_owned(),
    );
    if spec.is_string() || spec["required"].as_bool() != Some(false) {
        return None;
    }
    Some(match ty.as_str() {
        "string" | "str" => json!(""),
        "list" | "array" => json!([]),
        "object" | "dict" | "map" => json!({}),
        _ => Value::Null,
    })
}

// ---------------------------------------------------------------------------------------------
// deterministic generator

/// SplitMix64: tiny, fast, and the same numbers on every machine.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(crate) fn hex(&mut self, chars: usize) -> String {
        let mut s = String::with_capacity(chars + 16);
        while s.len() < chars {
            let _ = write!(s, "{:016x}", self.next_u64());
        }
        s.truncate(chars);
        s
    }
}

// ---------------------------------------------------------------------------------------------
// cache

/// The texts prompt-cache's bench caches (`benches/cache.rs`), so both sides store the same
/// values: a 1.5 KB system prompt, a 2 KB user prompt and a 2 KB response.
pub(crate) fn cache_texts() -> (String, String, String) {
    let system = "You are the Writer, a novelist who writes vivid, coherent chapters. ".repeat(23)
        [..SYSTEM_BYTES]
        .to_owned();
    let mut prompt = "Write chapter 1. ".to_owned();
    while prompt.len() < PROMPT_BYTES {
        prompt.push_str("The heroine crosses the river at dawn and meets the ferryman. ");
    }
    prompt.truncate(PROMPT_BYTES);
    let response = "The morning sun rose over the valley. ".repeat(54);
    (system, prompt, response)
}

fn write_cache_inputs(out: &Path) -> Result<()> {
    fs::create_dir_all(out)?;
    let mut rng = Rng::new(SEED ^ 0xCAC4E);
    let (system, prompt, response) = cache_texts();
    fs::write(out.join("system.txt"), system)?;
    fs::write(out.join("prompt.txt"), prompt)?;
    fs::write(out.join("response.txt"), response)?;
    let mut keys = String::with_capacity(CACHE_KEYS * 65);
    for _ in 0..CACHE_KEYS {
        keys.push_str(&rng.hex(64));
        keys.push('\n');
    }
    fs::write(out.join("keys.txt"), keys)?;
    write_json(
        &out.join("request.json"),
        &json!({
            "namespace": "writer", "provider": "ollama", "model": "qwen3:30b",
            "temperature": 0.8, "max_tokens": 4096, "top_p": 0.9, "num_ctx": 8192,
        }),
    )
}

// ---------------------------------------------------------------------------------------------
// metrics

/// Writes `records` records shaped like the Python original's over the `METRICS_DAYS` UTC days ending today into
/// `out` (replacing whatever was there) with prompt-metrics' own generator, the one its bench
/// uses, and returns the counts the queries should find.
fn write_metrics_set(out: &Path, records: usize, now: DateTime<Utc>) -> Result<Value> {
    if out.exists() {
        fs::remove_dir_all(out).with_context(|| format!("cannot clear {}", out.display()))?;
    }
    let files = prompt_metrics::testdata::write_dataset_at(
        out,
        records as u64,
        METRICS_DAYS,
        METRICS_SEED,
        now,
    )
    .with_context(|| format!("cannot write the metrics data set in {}", out.display()))?;
    let needle = format!("\"agent\": \"{STATS_AGENT}\"");
    let mut per_model: BTreeMap<String, u64> = BTreeMap::new();
    let (mut agent_calls, mut bytes, mut lines) = (0u64, 0u64, 0u64);
    for file in &files {
        let text =
            fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
        bytes += text.len() as u64;
        for line in text.lines() {
            lines += 1;
            agent_calls += u64::from(line.contains(&needle));
            if let Some(model) = line
                .split("\"model\": \"")
                .nth(1)
                .and_then(|r| r.split('"').next())
            {
                *per_model.entry(model.to_owned()).or_default() += 1;
            }
        }
    }
    let mut by_count: Vec<(String, u64)> = per_model.into_iter().collect();
    by_count.sort_by_key(|entry| std::cmp::Reverse(entry.1));
    Ok(json!({
        "date": now.date_naive().to_string(),
        "records": lines,
        "days": METRICS_DAYS,
        "bytes": bytes,
        "stats_agent": STATS_AGENT,
        "stats_agent_calls": agent_calls,
        "models": by_count.iter().map(|(m, c)| json!({ "model": m, "total_calls": c })).collect::<Vec<_>>(),
    }))
}

/// Fails when `dir` holds no `metrics_*.jsonl` file (used before handing a set to a peer).
pub(crate) fn check_metrics_dir(dir: &Path) -> Result<()> {
    let found = fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().starts_with("metrics_"));
    if !found {
        bail!("no metrics files in {}", dir.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generator_is_deterministic_and_text_has_exact_size() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        assert_eq!(a.hex(64), b.hex(64));
        let (system, prompt, response) = cache_texts();
        assert_eq!(
            (system.len(), prompt.len(), response.len()),
            (SYSTEM_BYTES, PROMPT_BYTES, RESPONSE_BYTES)
        );
        assert_eq!(a.hex(64).len(), 64);
    }

    #[test]
    fn metrics_set_summary_counts_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let now = Utc::now();
        let summary = write_metrics_set(dir.path(), 700, now).unwrap();
        let mut total = 0;
        let mut writer = 0;
        for entry in fs::read_dir(dir.path()).unwrap() {
            let text = fs::read_to_string(entry.unwrap().path()).unwrap();
            for line in text.lines() {
                let v: Value = serde_json::from_str(line).unwrap();
                for field in [
                    "agent",
                    "model",
                    "timestamp",
                    "latency_ms",
                    "validation_passed",
                ] {
                    assert!(v.get(field).is_some(), "missing {field} in {line}");
                }
                total += 1;
                writer += usize::from(v["agent"] == STATS_AGENT);
            }
        }
        assert_eq!(total, 700);
        assert_eq!(summary["records"], 700);
        assert_eq!(summary["stats_agent_calls"], writer);
        let models: u64 = summary["models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["total_calls"].as_u64().unwrap())
            .sum();
        assert_eq!(models, 700);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            METRICS_DAYS as usize
        );
    }

    #[test]
    fn peer_template_takes_example_values_then_defaults() {
        let template = json!({
            "system_prompt": "S {{ a }}", "user_prompt_template": "U {{ b }} {{ c }}",
            "variables": { "a": "string - x", "b": { "type": "integer", "default": 3 },
                           "c": { "type": "string", "required": false, "default": "" },
                           "d": { "type": "list", "required": false },
                           "e": { "type": "string", "required": false },
                           "f": { "type": "integer" } },
        });
        let example = json!({ "vars": { "a": "hello", "c": "given", "zzz": 1 } });
        let peer = peer_template(&template, &example).unwrap();
        assert_eq!(
            peer["vars"],
            json!({ "a": "hello", "b": 3, "c": "given", "d": [], "e": "" })
        );
        assert_eq!(peer["system"], "S {{ a }}");
        let flat = peer_template(&template, &json!({ "a": "x" })).unwrap();
        assert_eq!(
            flat["vars"],
            json!({ "a": "x", "b": 3, "c": "", "d": [], "e": "" })
        );
    }
}
