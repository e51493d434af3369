//! The disk tier's section of `cargo xtask bench`: how start-up and a get from disk grow with
//! the entries on disk (a table and an SVG chart), and a cache hit including the key
//! derivation with the system prompt's hashing state reused, against diskcache.
//!
//! Runs prompt-cache's `disk_tier` criterion bench (sizes from `PROMPTKIT_BENCH_DISK_SIZES`,
//! see `crates/prompt-cache/benches/disk_tier.rs`), writes `target/bench-disk-tier.json` and
//! `docs/disk-tier.svg`, and prints its table. A bench that cannot run makes the section n/a;
//! it never fails the command.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use serde_json::{Value, json};

use super::chart::log_log_chart;
use super::criterion::{CrateBench, Estimate, Outcome, Settings, run_crate};
use super::data::write_json;

const BENCH: CrateBench = CrateBench {
    package: "prompt-cache",
    bench: "disk_tier",
};

/// The targets: start-up at any size, a get that reads the disk, and a hit including
/// the key derivation against diskcache's `sha256 + get`.
const STARTUP_TARGET_NS: f64 = 5e6;
const DISK_HIT_TARGET_NS: f64 = 20e3;
const HIT_RATIO_TARGET: f64 = 6.0;

/// `(entries, mean ns)` of every `<group>/<n>` estimate, by entries.
fn curve(means: &BTreeMap<String, Estimate>, group: &str) -> Vec<(f64, f64)> {
    let mut points: Vec<(f64, f64)> = means
        .iter()
        .filter_map(|(id, e)| {
            let n: f64 = id.strip_prefix(group)?.strip_prefix('/')?.parse().ok()?;
            Some((n, e.mean_ns))
        })
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    points
}

fn time(ns: f64) -> String {
    match ns {
        n if n >= 1e6 => format!("{:.2} ms", n / 1e6),
        n if n >= 1e3 => format!("{:.2} µs", n / 1e3),
        n => format!("{n:.0} ns"),
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "meets" } else { "misses" }
}

/// Runs the section; the JSON it wrote (also on failure, with the reason).
pub(crate) fn run(
    root: &Path,
    settings: &Settings,
    peer_docs: &BTreeMap<&str, Result<Value, String>>,
) -> Value {
    eprintln!("  disk tier section");
    let means = match run_crate(root, BENCH, settings) {
        Outcome::Measured(means, failure) => {
            if let Some(why) = failure {
                eprintln!("  disk tier: part of the bench failed: {why}");
            }
            means
        }
        Outcome::Unavailable(why) => {
            eprintln!("  disk tier section n/a: {why}");
            return json!({ "error": why });
        }
    };
    let startup = curve(&means, "disk_tier/startup");
    let disk_hit = curve(&means, "disk_tier/get_disk_hit");
    let mean = |id: &str| means.get(id).map(|e| e.mean_ns);
    let hit_with_key = mean("disk_tier/key_derivation_reused")
        .zip(mean("disk_tier/get_hit"))
        .map(|(k, g)| k + g);
    let hit_with_full_key = mean("disk_tier/key_derivation")
        .zip(mean("disk_tier/get_hit"))
        .map(|(k, g)| k + g);
    let peer = |result: &str| {
        peer_docs
            .get("cache_peer.py")
            .and_then(|d| d.as_ref().ok())
            .and_then(|d| d["results"][result]["mean_ns"].as_f64())
    };
    let diskcache_hit = peer("diskcache_sha256_get");
    let diskcache_open = peer("diskcache_open_10k");

    let mut lines = vec![
        String::new(),
        "disk tier (entries on disk → mean time; the machine may be shared, see docs/PERFORMANCE.md)".to_owned(),
        format!(
            "  {:<44} {:>12} {:>12}  target",
            "workload", "promptkit", "diskcache"
        ),
    ];
    for &(n, ns) in &startup {
        let peer = if n == 10_000.0 {
            diskcache_open.map_or_else(|| "n/a".to_owned(), time)
        } else {
            String::new()
        };
        lines.push(format!(
            "  {:<44} {:>12} {:>12}  ≤ 5 ms: {}",
            format!("start-up + one get, {n:.0} entries"),
            time(ns),
            peer,
            verdict(ns <= STARTUP_TARGET_NS)
        ));
    }
    for &(n, ns) in &disk_hit {
        lines.push(format!(
            "  {:<44} {:>12} {:>12}  ≤ 20 µs: {}",
            format!("get, miss in memory, hit on disk, {n:.0}"),
            time(ns),
            "",
            verdict(ns <= DISK_HIT_TARGET_NS)
        ));
    }
    if let Some(ours) = hit_with_full_key {
        lines.push(format!(
            "  {:<44} {:>12} {:>12}  {}",
            "hit incl. key derivation (hashed in full)",
            time(ours),
            diskcache_hit.map_or_else(|| "n/a".to_owned(), time),
            diskcache_hit.map_or_else(String::new, |peer| format!("{:.1}×", peer / ours))
        ));
    }
    let ratio = hit_with_key
        .zip(diskcache_hit)
        .map(|(ours, peer)| peer / ours);
    if let Some(ours) = hit_with_key {
        lines.push(format!(
            "  {:<44} {:>12} {:>12}  ≥ 6×: {}",
            "hit incl. key derivation (prefix reused)",
            time(ours),
            diskcache_hit.map_or_else(|| "n/a".to_owned(), time),
            ratio.map_or_else(
                || "n/a (no diskcache figure)".to_owned(),
                |r| format!("{r:.1}× ({})", verdict(r >= HIT_RATIO_TARGET))
            )
        ));
    }
    println!("{}", lines.join("\n"));

    let svg = log_log_chart(
        "Disk tier: cost vs entries on disk",
        "entries on disk",
        "mean time (ns)",
        &[
            ("start-up + one get", startup.clone()),
            ("get from disk", disk_hit.clone()),
        ],
    );
    let svg_path = root.join("docs").join("disk-tier.svg");
    if let Err(err) = fs::write(&svg_path, svg) {
        eprintln!("  cannot write {}: {err}", svg_path.display());
    }
    let doc = json!({
        "startup_ns": startup,
        "get_disk_hit_ns": disk_hit,
        "hit_with_key_ns": hit_with_key,
        "hit_with_full_key_ns": hit_with_full_key,
        "diskcache_sha256_get_ns": diskcache_hit,
        "diskcache_open_10k_ns": diskcache_open,
        "ratio_vs_diskcache": ratio,
        "estimates": means.iter().map(|(k, e)| (k.clone(), json!(e.mean_ns))).collect::<serde_json::Map<_, _>>(),
        "chart": svg_path,
        "table": lines.join("\n"),
    });
    let path = settings.target_dir.join("bench-disk-tier.json");
    if let Err(err) = write_json(&path, &doc) {
        eprintln!("  cannot write {}: {err:#}", path.display());
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curves_are_read_by_group_and_sorted_by_size() {
        let mut means = BTreeMap::new();
        for (id, ns) in [
            ("disk_tier/startup/100000", 3.0),
            ("disk_tier/startup/1000", 1.0),
            ("disk_tier/startup_other/5", 9.0),
            ("disk_tier/get_disk_hit/1000", 2.0),
        ] {
            means.insert(
                id.to_owned(),
                Estimate {
                    mean_ns: ns,
                    elements: None,
                },
            );
        }
        assert_eq!(
            curve(&means, "disk_tier/startup"),
            vec![(1000.0, 1.0), (100_000.0, 3.0)]
        );
        assert_eq!(curve(&means, "disk_tier/get_disk_hit"), vec![(1000.0, 2.0)]);
        assert_eq!(time(2_500_000.0), "2.50 ms");
        assert_eq!(time(12_340.0), "12.34 µs");
    }
}
