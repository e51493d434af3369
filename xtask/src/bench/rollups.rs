//! `cargo xtask bench --rollups`: how metrics query time grows with history, with and without
//! rollups, and DuckDB on the same files.
//!
//! 1. writes data sets of 10k, 100k, 1M (and, in full runs with room on disk, 10M) records over
//!    90 daily files ending today into `target/bench-data/curve/metrics/<label>`, and one closed
//!    day of 100k records into `target/bench-data/curve/day100k`;
//! 2. runs prompt-metrics' `rollups` criterion bench over them (scan, warm store, new store per
//!    query; rollup build of the day against scans of it);
//! 3. runs the DuckDB peer (`metrics_peer.py --days 90`) on the same files;
//! 4. prints a table, writes `target/bench-rollups.json` and the charts
//!    `docs/metrics-query-time-model-comparison.svg` and `docs/metrics-query-time-agent-stats.svg`;
//! 5. deletes the 10M data set (about 3.5 GB).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use super::chart::log_log_chart;
use super::criterion::{self, CrateBench, Estimate, Outcome, Settings};
use super::data::METRICS_SEED;
use super::peers;

/// Days of history in each data set (and the query window).
const DAYS: u32 = 90;
/// Free space wanted before writing the 10M set (it takes about 3.5 GB, its rollups 0.5 GB).
const ROOM_FOR_10M: u64 = 8 << 30;

/// What the section needs from the command.
#[derive(Debug)]
pub(crate) struct RollupSettings {
    pub(crate) root: PathBuf,
    pub(crate) target_dir: PathBuf,
    pub(crate) data_dir: PathBuf,
    pub(crate) log_dir: PathBuf,
    pub(crate) quick: bool,
    pub(crate) venv_python: Option<PathBuf>,
}

/// The data sets: label and records.
fn sets(quick: bool, room: Option<u64>) -> Vec<(&'static str, u64)> {
    let mut sets = vec![("10k", 10_000), ("100k", 100_000)];
    if !quick {
        sets.push(("1m", 1_000_000));
        if room.is_some_and(|r| r >= ROOM_FOR_10M) {
            sets.push(("10m", 10_000_000));
        }
    }
    sets
}

/// Free bytes on the file system holding `dir` (from `df`), if known.
fn free_bytes(dir: &Path) -> Option<u64> {
    let out = Command::new("df").arg("-Pk").arg(dir).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let kb: u64 = text
        .lines()
        .nth(1)?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Writes a data set unless one written today with the same size is there.
fn write_set(
    dir: &Path,
    records: u64,
    days: u32,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<()> {
    let marker = dir.join(".written");
    let want = format!("{records} {days} {}", now.date_naive());
    if fs::read_to_string(&marker).is_ok_and(|m| m == want) {
        return Ok(());
    }
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    eprintln!(
        "  writing {records} records over {days} daily files into {}",
        dir.display()
    );
    prompt_metrics::testdata::write_dataset_at(dir, records, days, METRICS_SEED, now)
        .with_context(|| format!("cannot write {}", dir.display()))?;
    fs::write(&marker, want)?;
    Ok(())
}

/// Runs the section and returns its figures.
pub(crate) fn run(s: &RollupSettings) -> Result<Value> {
    let curve = s.data_dir.join("curve");
    fs::create_dir_all(&curve)?;
    let room = free_bytes(&curve);
    let sets = sets(s.quick, room);
    let now = chrono::Utc::now();
    eprintln!("[1/3] data sets ({} GB free)", room.map_or(0, |r| r >> 30));
    // Sets from an earlier, larger run are not measured again.
    if let Ok(entries) = fs::read_dir(curve.join("metrics")) {
        for e in entries.filter_map(Result::ok) {
            let name = e.file_name().to_string_lossy().into_owned();
            if !sets.iter().any(|(l, _)| *l == name) {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
    for (label, records) in &sets {
        write_set(&curve.join("metrics").join(label), *records, DAYS, now)?;
    }
    let yesterday_end = now
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .context("midnight")?
        .and_utc()
        - chrono::Duration::seconds(1);
    write_set(&curve.join("day100k"), 100_000, 1, yesterday_end)?;

    eprintln!("[2/3] criterion: prompt-metrics rollups");
    let outcome = criterion::run_crate(
        &s.root,
        CrateBench {
            package: "prompt-metrics",
            bench: "rollups",
        },
        &Settings {
            quick: s.quick,
            data_dir: s.data_dir.clone(),
            target_dir: s.target_dir.clone(),
            log_dir: s.log_dir.clone(),
        },
    );
    let (estimates, failure) = match outcome {
        Outcome::Measured(e, f) => (e, f),
        Outcome::Unavailable(why) => (Default::default(), Some(why)),
    };
    let ms = |id: String| estimates.get(&id).map(|e: &Estimate| e.mean_ns / 1e6);

    eprintln!("[3/3] DuckDB on the same files");
    let labels: Vec<&str> = sets.iter().map(|(l, _)| *l).collect();
    let work = s.target_dir.join("bench-work");
    fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    let duck = match &s.venv_python {
        Some(python) => peers::script(&s.root, "metrics_peer.py")
            .map_err(|e| format!("{e:#}"))
            .and_then(|script| {
                peers::run_script(
                    python,
                    &script,
                    &curve,
                    &work.join("duckdb-curve.json"),
                    true,
                    &[
                        "--sets".to_owned(),
                        labels.join(","),
                        "--days".to_owned(),
                        DAYS.to_string(),
                    ],
                )
            }),
        None => Err("no Python venv".to_owned()),
    };
    let duck_ms = |query: &str, label: &str| {
        duck.as_ref().ok().and_then(|d| {
            d["results"][format!("duckdb_{query}_{label}")]["mean_ns"]
                .as_f64()
                .map(|ns| ns / 1e6)
        })
    };

    let mut rows = Vec::new();
    for (label, records) in &sets {
        let mut row = json!({ "set": label, "records": records });
        for query in ["agent_stats", "model_comparison"] {
            row[query] = json!({
                "scan_ms": ms(format!("rollups/scan_{query}/{label}")),
                "warm_ms": ms(format!("rollups/warm_{query}/{label}")),
                "new_store_ms": ms(format!("rollups/new_store_{query}/{label}")),
                "duckdb_ms": duck_ms(query, label),
            });
        }
        rows.push(row);
    }
    let build = json!({
        "build_day_100k_ms": ms("rollups/build_day/100k".to_owned()),
        "scan_day_model_comparison_100k_ms": ms("rollups/scan_day_model_comparison/100k".to_owned()),
        "scan_day_overview_100k_ms": ms("rollups/scan_day_overview/100k".to_owned()),
    });

    println!();
    println!(
        "metrics queries over {DAYS} daily files (mean ms; a warm store reads only what was appended to today's file since its last query, a new store scans it)"
    );
    println!();
    print!("{}", table(&rows));
    println!();
    println!(
        "rollup build, one closed day of 100k records: {} ms; scans of that day: model_comparison {} ms, overview {} ms",
        show(build["build_day_100k_ms"].as_f64()),
        show(build["scan_day_model_comparison_100k_ms"].as_f64()),
        show(build["scan_day_overview_100k_ms"].as_f64()),
    );
    if let Some(f) = &failure {
        println!("criterion: {f}");
    }
    if let Err(e) = &duck {
        println!("DuckDB n/a: {e}");
    }

    draw_charts(&s.root, &rows)?;

    // The 10M set takes gigabytes: do not keep it.
    let big = curve.join("metrics").join("10m");
    if big.exists() {
        fs::remove_dir_all(&big).with_context(|| format!("cannot remove {}", big.display()))?;
    }
    Ok(json!({
        "days": DAYS,
        "rows": rows,
        "build": build,
        "criterion_failure": failure,
        "duckdb_error": duck.as_ref().err(),
        "duckdb_versions": duck.as_ref().ok().map(|d| d["versions"].clone()),
    }))
}

/// Writes the charts of `rows` (as in `target/bench-rollups.json`) into docs/.
pub(crate) fn draw_charts(root: &Path, rows: &[Value]) -> Result<()> {
    for (query, title) in [
        (
            "model_comparison",
            "model_comparison: query time vs records (90 days)",
        ),
        (
            "agent_stats",
            "agent_stats: query time vs records (90 days)",
        ),
    ] {
        let series = |key: &str| -> Vec<(f64, f64)> {
            rows.iter()
                .filter_map(|r| Some((r["records"].as_f64()?, r[query][key].as_f64()?)))
                .collect()
        };
        let svg = log_log_chart(
            title,
            "records",
            "ms per query",
            &[
                ("scan of every file", series("scan_ms")),
                ("rollups, warm store", series("warm_ms")),
                ("rollups, new store", series("new_store_ms")),
                ("DuckDB read_ndjson", series("duckdb_ms")),
            ],
        );
        let path = root.join("docs").join(format!(
            "metrics-query-time-{}.svg",
            query.replace('_', "-")
        ));
        fs::write(&path, svg).with_context(|| format!("cannot write {}", path.display()))?;
        println!("chart written to {}", path.display());
    }
    Ok(())
}

/// `cargo xtask bench --rollups-charts`: the table and charts again from the figures of the
/// last `--rollups` run (`target/bench-rollups.json`), e.g. after adding figures measured apart.
pub(crate) fn redraw(root: &Path, target_dir: &Path) -> Result<()> {
    let path = target_dir.join("bench-rollups.json");
    let doc = super::data::read_json(&path).with_context(|| {
        format!(
            "no figures in {}: run cargo xtask bench --rollups",
            path.display()
        )
    })?;
    let rows = doc["rows"].as_array().cloned().unwrap_or_default();
    print!("{}", table(&rows));
    draw_charts(root, &rows)
}

fn show(v: Option<f64>) -> String {
    match v {
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
        None => "n/a".to_owned(),
    }
}

/// The figures as a Markdown table.
fn table(rows: &[Value]) -> String {
    let mut out = String::from(
        "| records | query | scan | rollups, warm store | rollups, new store | DuckDB | DuckDB ÷ warm |\n| ---: | --- | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for r in rows {
        for query in ["agent_stats", "model_comparison"] {
            let q = &r[query];
            let ratio = match (q["duckdb_ms"].as_f64(), q["warm_ms"].as_f64()) {
                (Some(d), Some(w)) if w > 0.0 => format!("{:.0}×", d / w),
                _ => "n/a".to_owned(),
            };
            out.push_str(&format!(
                "| {} | {query} | {} | {} | {} | {} | {ratio} |\n",
                r["set"].as_str().unwrap_or("?"),
                show(q["scan_ms"].as_f64()),
                show(q["warm_ms"].as_f64()),
                show(q["new_store_ms"].as_f64()),
                show(q["duckdb_ms"].as_f64()),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_10m_set_needs_room_and_a_full_run() {
        let labels = |quick, room| -> Vec<&str> { sets(quick, room).iter().map(|s| s.0).collect() };
        assert_eq!(labels(true, Some(u64::MAX)), ["10k", "100k"]);
        assert_eq!(labels(false, Some(ROOM_FOR_10M - 1)), ["10k", "100k", "1m"]);
        assert_eq!(labels(false, None), ["10k", "100k", "1m"]);
        assert_eq!(
            labels(false, Some(ROOM_FOR_10M)),
            ["10k", "100k", "1m", "10m"]
        );
    }

    #[test]
    fn table_shows_missing_figures_as_na() {
        let rows = vec![json!({
            "set": "10k",
            "records": 10_000,
            "agent_stats": { "scan_ms": 12.0, "warm_ms": 0.5, "new_store_ms": 3.0, "duckdb_ms": 150.0 },
            "model_comparison": { "scan_ms": null, "warm_ms": 1.0, "new_store_ms": null, "duckdb_ms": null },
        })];
        let t = table(&rows);
        assert!(
            t.contains("| 10k | agent_stats | 12.0 | 0.50 | 3.00 | 150 | 300× |"),
            "{t}"
        );
        assert!(
            t.contains("| 10k | model_comparison | n/a | 1.00 | n/a | n/a | n/a |"),
            "{t}"
        );
    }
}
