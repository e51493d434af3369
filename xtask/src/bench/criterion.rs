//! Runs each crate's criterion bench and reads the mean of every benchmark it measured.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result};

use super::data::read_json;

/// One crate's criterion bench target.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CrateBench {
    pub(crate) package: &'static str,
    pub(crate) bench: &'static str,
}

pub(crate) const CRATE_BENCHES: &[CrateBench] = &[
    CrateBench {
        package: "prompt-templates",
        bench: "templates",
    },
    CrateBench {
        package: "prompt-cache",
        bench: "cache",
    },
    CrateBench {
        package: "prompt-metrics",
        bench: "metrics",
    },
    CrateBench {
        package: "prompt-agent",
        bench: "agent",
    },
];

/// The outcome of one crate's bench: its estimates by criterion id
/// (`group/function[/param]`) with, when the bench failed part-way, why; or why there are none.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    Measured(BTreeMap<String, Estimate>, Option<String>),
    Unavailable(String),
}

/// What criterion measured of one benchmark.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Estimate {
    /// Mean time per iteration, in nanoseconds.
    pub(crate) mean_ns: f64,
    /// The items one iteration handles, when the bench declares `Throughput::Elements`.
    pub(crate) elements: Option<u64>,
}

impl Estimate {
    /// An estimate without a declared throughput.
    #[cfg(test)]
    pub(crate) fn mean(mean_ns: f64) -> Self {
        Self {
            mean_ns,
            elements: None,
        }
    }
}

/// How criterion is asked to measure.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) quick: bool,
    pub(crate) data_dir: PathBuf,
    pub(crate) target_dir: PathBuf,
    pub(crate) log_dir: PathBuf,
}

pub(crate) fn run_crate(root: &Path, bench: CrateBench, settings: &Settings) -> Outcome {
    match try_run_crate(root, bench, settings) {
        Ok(outcome) => outcome,
        Err(err) => Outcome::Unavailable(format!("{err:#}")),
    }
}

fn try_run_crate(root: &Path, bench: CrateBench, settings: &Settings) -> Result<Outcome> {
    let crate_dir = root.join("crates").join(bench.package);
    if !crate_dir.join("Cargo.toml").is_file() {
        return Ok(Outcome::Unavailable(format!(
            "crate {} not found",
            bench.package
        )));
    }
    let file = crate_dir
        .join("benches")
        .join(format!("{}.rs", bench.bench));
    let dir_main = crate_dir.join("benches").join(bench.bench).join("main.rs");
    if !file.is_file() && !dir_main.is_file() {
        return Ok(Outcome::Unavailable(format!(
            "{}/benches/{}.rs not written yet",
            bench.package, bench.bench
        )));
    }

    fs::create_dir_all(&settings.log_dir)?;
    let log_path = settings.log_dir.join(format!("{}.log", bench.package));
    let log = fs::File::create(&log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut args: Vec<&str> = vec![
        "bench",
        "-p",
        bench.package,
        "--bench",
        bench.bench,
        "--",
        "--noplot",
    ];
    if settings.quick {
        args.extend([
            "--warm-up-time",
            "1",
            "--measurement-time",
            "2",
            "--sample-size",
            "10",
        ]);
    }
    let mut cmd = Command::new(&cargo);
    cmd.args(&args)
        .current_dir(root)
        .env("PROMPTKIT_BENCH_DATA", &settings.data_dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    if settings.quick {
        cmd.env_remove("PROMPTKIT_BENCH_1M");
    } else {
        cmd.env("PROMPTKIT_BENCH_1M", "1");
    }
    eprint!("  {:<17} cargo {} … ", bench.package, args.join(" "));
    let started = SystemTime::now();
    let clock = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cargo}"))?;
    let elapsed = clock.elapsed().as_secs_f64();
    // Only this bench's group: other benches may write into target/criterion meanwhile.
    let prefix = format!("{}/", bench.bench);
    let mut means = read_estimates(&settings.target_dir.join("criterion"), started);
    means.retain(|id, _| id.starts_with(&prefix));
    if !status.success() {
        eprintln!("failed after {elapsed:.0} s (log: {})", log_path.display());
        let reason = failure_reason(&log_path, status.code());
        // A bench that died half-way still measured what it finished; keep those.
        if means.is_empty() {
            return Ok(Outcome::Unavailable(reason));
        }
        return Ok(Outcome::Measured(means, Some(reason)));
    }
    eprintln!("ok in {elapsed:.0} s, {} result(s)", means.len());
    Ok(Outcome::Measured(means, None))
}

/// The first line of cargo's or the bench's error output that says what went wrong.
fn failure_reason(log_path: &Path, code: Option<i32>) -> String {
    let text = fs::read_to_string(log_path).unwrap_or_default();
    let line = text
        .lines()
        .find(|l| l.starts_with("error") || l.contains("panicked at"))
        .or_else(|| text.lines().rev().find(|l| !l.trim().is_empty()))
        .unwrap_or("no output");
    let code = code.map_or_else(|| "killed".to_owned(), |c| format!("exit {c}"));
    let mut line = line.trim().to_owned();
    if line.len() > 120 {
        let mut cut = 117;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push('…');
    }
    format!("cargo bench failed ({code}): {line}")
}

/// Every benchmark under `criterion_dir` whose `new/estimates.json` was written since
/// `since`: criterion id → mean point estimate in nanoseconds, with the declared elements.
pub(crate) fn read_estimates(
    criterion_dir: &Path,
    since: SystemTime,
) -> BTreeMap<String, Estimate> {
    let mut out = BTreeMap::new();
    let mut stack = vec![criterion_dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            if entry.file_name() == "new" {
                if let Some((id, estimate)) = read_one(&path, since) {
                    out.insert(id, estimate);
                }
            } else if entry.file_name() != "base" && entry.file_name() != "report" {
                stack.push(path);
            }
        }
    }
    out
}

fn read_one(new_dir: &Path, since: SystemTime) -> Option<(String, Estimate)> {
    let estimates_path = new_dir.join("estimates.json");
    let modified = fs::metadata(&estimates_path)
        .and_then(|m| m.modified())
        .ok()?;
    if modified < since {
        return None;
    }
    let estimates = read_json(&estimates_path)?;
    let benchmark = read_json(&new_dir.join("benchmark.json"))?;
    let id = benchmark["full_id"].as_str()?.to_owned();
    let mean_ns = estimates["mean"]["point_estimate"].as_f64()?;
    let elements = benchmark["throughput"]["Elements"].as_u64();
    Some((id, Estimate { mean_ns, elements }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn write_bench(dir: &Path, rel: &str, id: &str, mean: f64) {
        write_bench_with(dir, rel, id, mean, "null");
    }

    /// A criterion result as criterion 0.7 writes it, `throughput` as JSON.
    fn write_bench_with(dir: &Path, rel: &str, id: &str, mean: f64, throughput: &str) {
        let new = dir.join(rel).join("new");
        fs::create_dir_all(&new).unwrap();
        fs::write(
            new.join("benchmark.json"),
            format!("{{\"full_id\": \"{id}\", \"throughput\": {throughput}}}"),
        )
        .unwrap();
        fs::write(
            new.join("estimates.json"),
            format!("{{\"mean\": {{\"point_estimate\": {mean}}}, \"median\": {{\"point_estimate\": 1.0}}}}"),
        )
        .unwrap();
    }

    #[test]
    fn reads_means_by_full_id_and_skips_stale_results() {
        let dir = tempfile::tempdir().unwrap();
        write_bench(dir.path(), "cache/get_hit", "cache/get_hit", 150.5);
        write_bench(
            dir.path(),
            "metrics/agent_stats/100k",
            "metrics/agent_stats/100k",
            2.5e7,
        );
        write_bench_with(
            dir.path(),
            "agent/stream_hit_replay",
            "agent/stream_hit_replay",
            1.2e5,
            r#"{"Elements": 600}"#,
        );
        write_bench_with(
            dir.path(),
            "cache/checksum_2k/xxh3",
            "cache/checksum_2k/xxh3",
            185.0,
            r#"{"Bytes": 2422}"#,
        );
        let means = read_estimates(dir.path(), SystemTime::now() - Duration::from_secs(60));
        assert_eq!(means.get("cache/get_hit"), Some(&Estimate::mean(150.5)));
        assert_eq!(
            means.get("metrics/agent_stats/100k"),
            Some(&Estimate::mean(2.5e7))
        );
        assert_eq!(
            means.get("agent/stream_hit_replay"),
            Some(&Estimate {
                mean_ns: 1.2e5,
                elements: Some(600)
            })
        );
        assert_eq!(
            means.get("cache/checksum_2k/xxh3").and_then(|e| e.elements),
            None,
            "only Throughput::Elements counts items"
        );
        let later = read_estimates(dir.path(), SystemTime::now() + Duration::from_secs(60));
        assert!(
            later.is_empty(),
            "results older than the run must be ignored: {later:?}"
        );
    }

    #[test]
    fn failure_reason_names_the_error_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        fs::write(
            &log,
            "   Compiling x\nerror[E0425]: cannot find value `y`\nmore\n",
        )
        .unwrap();
        assert_eq!(
            failure_reason(&log, Some(101)),
            "cargo bench failed (exit 101): error[E0425]: cannot find value `y`"
        );
    }
}
