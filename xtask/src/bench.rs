//! `cargo xtask bench [--quick]`: criterion benches of every crate and a peer comparison on
//! the same inputs in the same run.
//!
//! 1. writes the shared inputs once into `target/bench-data/` (fixed seeds and sizes);
//! 2. sets up a private venv `target/bench-venv` with `jinja2`, `diskcache` and `duckdb`;
//! 3. runs `cargo bench -p <crate> --bench <name>` for every crate and reads criterion's means;
//! 4. runs the Python peers (`xtask/peers/*.py`) on the same inputs;
//! 5. prints one table and writes `target/bench-summary.json` (with the change since the last one).
//!
//! A missing bench, a failing bench or a peer pip cannot install makes its rows "n/a" with the
//! reason; only an error of the command itself fails it.

mod chart;
mod criterion;
mod data;
mod disk_tier;
mod gateway;
mod loadgen;
mod peers;
mod report;
mod rollups;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Result, bail};
use serde_json::{Value, json};

use self::criterion::{CRATE_BENCHES, Estimate, Outcome, Settings};
use self::data::{BenchData, METRICS_1M, METRICS_100K};
use self::report::{Figure, ROWS, Row, RowSpec, Unit};

const USAGE: &str =
    "usage: cargo xtask bench [--quick] [--gateway | --no-gateway] [--gateway-seconds N]
                        [--gateway-targets promptkit,litellm,direct]
                        [--rollups | --rollups-charts | --disk-tier]

  --quick              short criterion runs (1 s warm-up, 2 s measurement, 10 samples), the
                       100k-record data set only, few Python repetitions, 3 s gateway points
  (none)               criterion defaults, 100k and 1M records (PROMPTKIT_BENCH_1M=1)
  --gateway            only the gateway section: `prompt serve` and the LiteLLM proxy in front
                       of one fake upstream at 100, 500, 1,000 and 2,000 QPS (open loop)
  --no-gateway         everything but the gateway section
  --gateway-seconds N  how long each gateway point sends requests [default: 10, --quick: 3]
  --gateway-targets L  which gateways to measure [default: all three]
  --rollups            only the metrics history section: agent_stats and model_comparison over
                       90 daily files of 10k, 100k, 1M (and 10M, when 8 GB are free; deleted
                       after) records, scanning, from rollups and with DuckDB; rollup build of
                       one day; charts in docs/metrics-query-time-*.svg (--quick: 10k, 100k)
  --rollups-charts     the table and charts again from target/bench-rollups.json
  --disk-tier          only the cache disk tier section: start-up and a get from disk against
                       the entries on disk (PROMPTKIT_BENCH_DISK_SIZES, default 1k, 10k, 100k),
                       its table and docs/disk-tier.svg, without the Python peers (their
                       diskcache figures come with a full run)
";

/// Runs the benches; `args` are the words after `bench` (e.g. `--quick`).
pub(crate) fn run(root: &Path, args: &[String]) -> Result<()> {
    let mut quick = false;
    let mut gateway_mode = GatewayMode::Also;
    let mut gateway_seconds: Option<f64> = None;
    let mut gateway_targets = Vec::new();
    let mut rollups_only = false;
    let mut disk_tier_only = false;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--gateway" => gateway_mode = GatewayMode::Only,
            "--no-gateway" => gateway_mode = GatewayMode::Skip,
            "--rollups" => rollups_only = true,
            "--disk-tier" => disk_tier_only = true,
            "--rollups-charts" => {
                return rollups::redraw(root, &target_dir(root));
            }
            "--gateway-seconds" => {
                let value = args.next().and_then(|v| v.parse::<f64>().ok());
                match value {
                    Some(v) if v > 0.0 && v <= 600.0 => gateway_seconds = Some(v),
                    _ => {
                        bail!("--gateway-seconds needs a number of seconds in (0, 600]\n\n{USAGE}")
                    }
                }
            }
            "--gateway-targets" => {
                let Some(list) = args.next() else {
                    bail!("--gateway-targets needs a list\n\n{USAGE}");
                };
                for name in list.split(',') {
                    if !["promptkit", "litellm", "direct"].contains(&name) {
                        bail!("unknown gateway `{name}` (promptkit, litellm, direct)\n\n{USAGE}");
                    }
                    gateway_targets.push(name.to_owned());
                }
            }
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument `{other}`\n\n{USAGE}"),
        }
    }
    let clock = Instant::now();
    let target_dir = target_dir(root);
    let data_dir = target_dir.join("bench-data");
    let log_dir = target_dir.join("bench-logs");
    let mode = if quick { "quick" } else { "full" };
    let gateway_settings = |venv: &peers::Venv| {
        let litellm =
            if gateway_targets.is_empty() || gateway_targets.iter().any(|t| t == "litellm") {
                gateway::ensure_litellm(venv.python.as_deref(), &log_dir)
            } else {
                Err("not asked for".to_owned())
            };
        gateway::GatewaySettings {
            root: root.to_path_buf(),
            target_dir: target_dir.clone(),
            log_dir: log_dir.clone(),
            venv_python: venv.python.clone(),
            litellm_missing: litellm.as_ref().err().cloned(),
            litellm_version: litellm.ok(),
            seconds: gateway_seconds.unwrap_or(if quick { 3.0 } else { 10.0 }),
            only: gateway_targets.clone(),
        }
    };
    if disk_tier_only {
        eprintln!("cargo xtask bench --disk-tier ({mode})");
        let settings = Settings {
            quick,
            data_dir: data_dir.clone(),
            target_dir: target_dir.clone(),
            log_dir: log_dir.clone(),
        };
        disk_tier::run(root, &settings, &BTreeMap::new());
        eprintln!("({:.0} s in all)", clock.elapsed().as_secs_f64());
        return Ok(());
    }
    if rollups_only {
        eprintln!("cargo xtask bench --rollups ({mode})");
        let venv = peers::ensure_venv(&target_dir.join("bench-venv"), &log_dir);
        let mut doc = rollups::run(&rollups::RollupSettings {
            root: root.to_path_buf(),
            target_dir: target_dir.clone(),
            data_dir: data_dir.clone(),
            log_dir: log_dir.clone(),
            quick,
            venv_python: venv.python.clone(),
        })?;
        doc["machine"] = machine_info(root);
        doc["mode"] = json!(mode);
        let path = target_dir.join("bench-rollups.json");
        data::write_json(&path, &doc)?;
        println!();
        println!(
            "figures written to {} ({:.0} s in all; logs in {})",
            path.display(),
            clock.elapsed().as_secs_f64(),
            log_dir.display()
        );
        return Ok(());
    }
    if gateway_mode == GatewayMode::Only {
        eprintln!("cargo xtask bench --gateway ({mode})");
        eprintln!("[1/2] bench venv");
        let venv = peers::ensure_venv(&target_dir.join("bench-venv"), &log_dir);
        eprintln!("[2/2] gateway section");
        let settings = gateway_settings(&venv);
        let mut doc = gateway::run(&settings)?;
        doc["machine"] = machine_info(root);
        doc["mode"] = json!(mode);
        let path = target_dir.join("bench-gateway.json");
        data::write_json(&path, &doc)?;
        println!();
        println!(
            "gateway figures written to {} ({:.0} s in all; logs in {})",
            path.display(),
            clock.elapsed().as_secs_f64(),
            log_dir.display()
        );
        return Ok(());
    }
    eprintln!(
        "cargo xtask bench ({mode}): inputs in {}",
        data_dir.display()
    );

    // 1. shared inputs
    let sets = if quick {
        vec![METRICS_100K]
    } else {
        vec![METRICS_100K, METRICS_1M]
    };
    eprintln!("[1/5] shared inputs");
    let data = data::prepare(root, &data_dir, &sets)?;

    // 2. peers' venv
    eprintln!("[2/5] Python peers' venv");
    let venv = peers::ensure_venv(&target_dir.join("bench-venv"), &log_dir);

    // 3. criterion
    eprintln!("[3/5] criterion benches");
    let settings = Settings {
        quick,
        data_dir: data_dir.clone(),
        target_dir: target_dir.clone(),
        log_dir: log_dir.clone(),
    };
    let outcomes: BTreeMap<&str, Outcome> = CRATE_BENCHES
        .iter()
        .map(|b| (b.package, criterion::run_crate(root, *b, &settings)))
        .collect();

    // 4. peers
    eprintln!("[4/5] Python peers");
    let peer_docs = run_peers(root, &venv, &data, quick, &target_dir);
    disk_tier::run(root, &settings, &peer_docs);

    // 4b. gateway
    let gateway_doc = if gateway_mode == GatewayMode::Skip {
        json!({ "skipped": "--no-gateway" })
    } else {
        eprintln!("[4/5] gateway section");
        match gateway::run(&gateway_settings(&venv)) {
            Ok(doc) => doc,
            Err(err) => {
                eprintln!("  gateway section n/a: {err:#}");
                json!({ "error": format!("{err:#}") })
            }
        }
    };

    // 5. report
    eprintln!(
        "[5/5] report ({:.0} s so far)",
        clock.elapsed().as_secs_f64()
    );
    let rows: Vec<Row> = ROWS
        .iter()
        .map(|spec| {
            let skipped = quick && spec.full_only;
            let ours = if skipped {
                Err("not measured in --quick runs".to_owned())
            } else {
                our_figure(spec, outcomes.get(spec.package))
            };
            let peer = spec.peer.map(|p| {
                if skipped {
                    return Err("not measured in --quick runs".to_owned());
                }
                peer_figure(&peer_docs, p.script, p.result)
            });
            Row::new(*spec, ours, peer, skipped)
        })
        .collect();

    println!();
    println!(
        "promptkit bench ({mode}) — mean time per operation (a rate where the unit ends in /s); ratio = peer ÷ promptkit (> 1: we are faster)"
    );
    println!();
    let table = report::table(&rows);
    print!("{table}");
    // Why figures are missing, each reason once with the rows it affects.
    let mut notes: Vec<(String, Vec<&str>)> = Vec::new();
    for row in rows.iter().filter(|r| r.status != report::Status::Skipped) {
        for note in row.notes() {
            match notes.iter_mut().find(|(n, _)| *n == note) {
                Some((_, workloads)) => workloads.push(row.spec.workload),
                None => notes.push((note, vec![row.spec.workload])),
            }
        }
    }
    if !notes.is_empty() {
        println!();
        println!("n/a:");
        for (note, workloads) in &notes {
            println!("  {note}");
            println!("    ({})", workloads.join("; "));
        }
    }
    let checks = cross_checks(&data, &peer_docs);
    println!();
    println!("peers: {}", peer_versions(&venv));
    for line in PEER_NOTES {
        println!("  {line}");
    }
    if !checks.is_empty() {
        println!("checks:");
        for c in &checks {
            println!("  {c}");
        }
    }

    let summary_path = target_dir.join("bench-summary.json");
    let previous = data::read_json(&summary_path);
    if let Some(previous) = &previous {
        let lines = report::compare(previous, &rows);
        if !lines.is_empty() {
            println!();
            println!(
                "change vs previous run ({}, {}, {}):",
                previous["machine"]["date"].as_str().unwrap_or("?"),
                previous["mode"].as_str().unwrap_or("?"),
                previous["machine"]["git_commit"].as_str().unwrap_or("?"),
            );
            if previous["mode"].as_str() != Some(mode) {
                println!(
                    "  (the previous run was {}: its figures are not directly comparable)",
                    previous["mode"].as_str().unwrap_or("?")
                );
            }
            for l in lines {
                println!("{l}");
            }
        }
    }
    let summary = json!({
        "mode": mode,
        "machine": machine_info(root),
        "peers": venv.packages.iter().map(|(k, v)| (k.to_string(), json!(v.as_ref().ok()))).collect::<serde_json::Map<_, _>>(),
        "data_dir": data_dir,
        "rows": rows.iter().map(|row| {
            // Keep the peer's spread (median, min, samples) beside its mean.
            let mut json = row.to_json();
            if let Some(p) = row.spec.peer
                && let Some(Ok(doc)) = peer_docs.get(p.script)
            {
                json["peer_detail"] = doc["results"][p.result].clone();
            }
            json
        }).collect::<Vec<_>>(),
        "checks": checks,
        "gateway": gateway_doc,
        "table": table,
        "elapsed_s": clock.elapsed().as_secs_f64(),
    });
    data::write_json(&summary_path, &summary)?;
    println!();
    println!(
        "summary written to {} ({:.0} s in all; logs in {})",
        summary_path.display(),
        clock.elapsed().as_secs_f64(),
        log_dir.display()
    );
    Ok(())
}

/// Whether a run measures the gateways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GatewayMode {
    /// With the rest (the default).
    Also,
    /// Nothing else (`--gateway`).
    Only,
    /// Not at all (`--no-gateway`).
    Skip,
}

/// What each peer figure is, printed under the table.
const PEER_NOTES: &[&str] = &[
    "Jinja2 compile: Environment(undefined=StrictUndefined) + from_string of both bodies (ours also reads the file and parses the YAML)",
    "Jinja2: render of both bodies (system and user) with the same variables",
    "hashlib: SHA-256 hex digest of the same request text; diskcache: Cache(dir) holding 1,000 entries, 64-hex keys, the same 2 KB value",
    "diskcache incl. key derivation: sha256 + get, against our key_derivation + get_hit",
    "diskcache open: Cache(dir) over 10,000 entries + one get (diskcache reads lazily from SQLite)",
    "DuckDB: read_ndjson with the needed columns typed (its fastest form) over the same 7 JSONL files, equivalent SQL (count, rates, avg, quantile_disc p50/p95/p99, tokens), end to end per query",
];

fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir),
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}

/// A row's figure: the sum of the criterion means named in `spec.ours` (each `a|b` takes
/// whichever exists) less those named in `spec.minus`; for a rate row, that sum divided by the
/// items (`Throughput::Elements`) its benches declare, i.e. the time per item.
fn our_figure(spec: &RowSpec, outcome: Option<&Outcome>) -> Figure {
    let (estimates, failure) = match outcome {
        Some(Outcome::Measured(estimates, failure)) => (estimates, failure),
        Some(Outcome::Unavailable(why)) => return Err(why.clone()),
        None => return Err("no bench for this crate".to_owned()),
    };
    let find = |id: &str| -> Result<&Estimate, String> {
        if let Some(found) = id.split('|').find_map(|alt| estimates.get(alt)) {
            return Ok(found);
        }
        if let Some(failure) = failure {
            return Err(format!("bench stopped before `{id}`: {failure}"));
        }
        let have: Vec<&str> = estimates.keys().map(String::as_str).collect();
        Err(format!(
            "no criterion result `{id}` (measured: {})",
            have.join(", ")
        ))
    };
    let mut total = 0.0;
    let mut elements = 0;
    for id in spec.ours {
        let estimate = find(id)?;
        total += estimate.mean_ns;
        if let Unit::PerSecond(items) = spec.unit {
            elements += estimate.elements.ok_or_else(|| {
                format!("`{id}` declares no Throughput::Elements to count {items} by")
            })?;
        }
    }
    for id in spec.minus {
        total -= find(id)?.mean_ns;
    }
    match spec.unit {
        Unit::Time => Ok(total),
        Unit::PerSecond(_) if elements == 0 => Err(format!(
            "`{}` declares zero elements",
            spec.ours.join(" + ")
        )),
        Unit::PerSecond(_) => Ok(total / elements as f64),
    }
}

fn peer_figure(docs: &BTreeMap<&str, Result<Value, String>>, script: &str, result: &str) -> Figure {
    let doc = match docs.get(script) {
        Some(Ok(doc)) => doc,
        Some(Err(why)) => return Err(why.clone()),
        None => return Err(format!("{script} was not run")),
    };
    let entry = &doc["results"][result];
    if let Some(mean) = entry["mean_ns"].as_f64() {
        Ok(mean)
    } else if let Some(err) = entry["error"].as_str() {
        Err(format!("{script}: {err}"))
    } else {
        Err(format!("{script} reported no `{result}`"))
    }
}

fn run_peers<'a>(
    root: &Path,
    venv: &peers::Venv,
    data: &BenchData,
    quick: bool,
    target_dir: &Path,
) -> BTreeMap<&'a str, Result<Value, String>> {
    let mut docs = BTreeMap::new();
    let work = target_dir.join("bench-work");
    let sets: Vec<&str> = data.metrics_sets.iter().map(|s| s.name).collect();
    let plan: [(&str, &str, Option<String>, Vec<String>); 3] = [
        (
            "templates_peer.py",
            "jinja2",
            data.template_problem.clone(),
            Vec::new(),
        ),
        (
            "cache_peer.py",
            "diskcache",
            None,
            vec![
                "--work".to_owned(),
                work.join("diskcache").to_string_lossy().into_owned(),
            ],
        ),
        (
            "metrics_peer.py",
            "duckdb",
            data.metrics_sets
                .iter()
                .find_map(|s| data::check_metrics_dir(&data.dir.join("metrics").join(s.name)).err())
                .map(|e| format!("{e:#}")),
            vec!["--sets".to_owned(), sets.join(",")],
        ),
    ];
    for (script, package, input_problem, extra) in plan {
        let result = (|| {
            if let Some(problem) = input_problem {
                return Err(format!("input missing: {problem}"));
            }
            if let Some(why) = venv.missing(package) {
                return Err(why);
            }
            let python = venv.python.as_deref().ok_or("no venv")?;
            let path = peers::script(root, script).map_err(|e| format!("{e:#}"))?;
            let _ = fs::create_dir_all(&work);
            let out = work.join(script.replace(".py", ".json"));
            peers::run_script(python, &path, &data.dir, &out, quick, &extra)
        })();
        if let Err(why) = &result {
            eprintln!("  {script:<17} n/a: {why}");
        }
        docs.insert(script, result);
    }
    docs
}

/// Checks that both sides did the same work: the peer's counts against the generator's.
fn cross_checks(data: &BenchData, docs: &BTreeMap<&str, Result<Value, String>>) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(Ok(doc)) = docs.get("templates_peer.py") {
        lines.push(
            match render_matches(&data.dir, &doc["checks"]["rendered"]) {
                Ok(()) => {
                    "Jinja2 and promptkit render writer/write_chapter byte for byte alike: ok"
                        .to_owned()
                }
                Err(why) => format!("Jinja2 and promptkit renders differ: {why}"),
            },
        );
    }
    let manifest = data::read_json(&data.dir.join("manifest.json")).unwrap_or(Value::Null);
    if let Some(Ok(doc)) = docs.get("metrics_peer.py") {
        for set in &data.metrics_sets {
            let expected = &manifest["metrics"][set.name]["stats_agent_calls"];
            let got = &doc["checks"][format!("agent_calls_{}", set.name)];
            let verdict = if expected == got && !got.is_null() {
                "ok"
            } else {
                "MISMATCH"
            };
            lines.push(format!(
                "DuckDB counted {got} `{}` records in the {} set, the generator wrote {expected}: {verdict}",
                data::STATS_AGENT,
                set.name
            ));
        }
        for set in &data.metrics_sets {
            let expected: Vec<(String, u64)> = manifest["metrics"][set.name]["models"]
                .as_array()
                .map(|models| {
                    models
                        .iter()
                        .filter_map(|m| {
                            Some((m["model"].as_str()?.to_owned(), m["total_calls"].as_u64()?))
                        })
                        .collect()
                })
                .unwrap_or_default();
            let got: Vec<(String, u64)> = doc["checks"][format!("models_{}", set.name)]
                .as_array()
                .map(|rows| {
                    rows.iter()
                        .filter_map(|r| Some((r[0].as_str()?.to_owned(), r[1].as_u64()?)))
                        .collect()
                })
                .unwrap_or_default();
            let verdict = if !got.is_empty() && got == expected {
                "ok"
            } else {
                "MISMATCH"
            };
            lines.push(format!(
                "DuckDB's model comparison of the {} set ({} models, by calls) matches the generator's counts: {verdict}",
                set.name,
                got.len()
            ));
        }
        if let Some(threads) = doc["checks"]["threads"].as_i64() {
            lines.push(format!("DuckDB used {threads} thread(s)"));
        }
    }
    if let Some(Ok(doc)) = docs.get("cache_peer.py") {
        let ok = doc["checks"]["hit_value_matches"].as_bool() == Some(true);
        lines.push(format!(
            "diskcache returned the stored value on a hit: {}",
            if ok { "ok" } else { "MISMATCH" }
        ));
    }
    lines
}

/// Renders the shared template with prompt-templates and compares it with Jinja2's output.
fn render_matches(data_dir: &Path, jinja: &Value) -> Result<(), String> {
    let dir = data_dir.join("templates");
    let vars: prompt_templates::Vars = data::read_json(&dir.join("vars.json"))
        .and_then(|v| v.as_object().cloned())
        .ok_or("vars.json unreadable")?;
    let store = prompt_templates::TemplateStore::open(&dir).map_err(|e| e.to_string())?;
    let template = store
        .load(
            "writer",
            "write_chapter",
            prompt_templates::VersionReq::Latest,
        )
        .map_err(|e| e.to_string())?;
    let ours = template.render(&vars).map_err(|e| e.to_string())?;
    for (part, ours, theirs) in [
        ("system", &ours.system, &jinja["system"]),
        ("user", &ours.user, &jinja["user"]),
    ] {
        let theirs = theirs.as_str().ok_or("Jinja2 output missing")?;
        if ours != theirs {
            let at = ours
                .bytes()
                .zip(theirs.bytes())
                .take_while(|(a, b)| a == b)
                .count();
            return Err(format!(
                "{part} differs at byte {at} (ours {} bytes, Jinja2 {} bytes)",
                ours.len(),
                theirs.len()
            ));
        }
    }
    Ok(())
}

fn peer_versions(venv: &peers::Venv) -> String {
    venv.packages
        .iter()
        .map(|(p, v)| match v {
            Ok(version) => format!("{p} {version}"),
            Err(_) => format!("{p} n/a"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn machine_info(root: &Path) -> Value {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned());
    let nproc = std::thread::available_parallelism().map(usize::from).ok();
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let rustc = Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    json!({
        "nproc": nproc,
        "cpu": cpu,
        "date": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "git_commit": git(&["rev-parse", "HEAD"]),
        "git_dirty": git(&["status", "--porcelain"]).map(|s| !s.is_empty()),
        "rustc": rustc,
        "os": std::env::consts::OS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A time row over these criterion ids.
    fn spec(ours: &'static [&'static str]) -> RowSpec {
        RowSpec {
            ours,
            minus: &[],
            unit: Unit::Time,
            ..ROWS[0]
        }
    }

    fn measured(estimates: &[(&str, Estimate)], failure: Option<&str>) -> Outcome {
        Outcome::Measured(
            estimates
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            failure.map(str::to_owned),
        )
    }

    #[test]
    fn our_figure_sums_components_and_takes_either_alternative() {
        let estimates = [
            ("cache/key_derivation", Estimate::mean(2000.0)),
            ("cache/get_hit", Estimate::mean(100.0)),
            ("metrics/agent_stats/100k", Estimate::mean(5.0)),
        ];
        let ok = measured(&estimates, None);
        assert_eq!(
            our_figure(&spec(&["cache/key_derivation", "cache/get_hit"]), Some(&ok)),
            Ok(2100.0)
        );
        assert_eq!(
            our_figure(
                &spec(&["metrics/agent_stats_100k|metrics/agent_stats/100k"]),
                Some(&ok)
            ),
            Ok(5.0)
        );
        let missing = our_figure(&spec(&["cache/put"]), Some(&ok)).unwrap_err();
        assert!(
            missing.contains("no criterion result `cache/put`"),
            "{missing}"
        );
        let stopped = measured(&estimates, Some("cargo bench failed (exit 101): boom"));
        let why = our_figure(&spec(&["cache/put"]), Some(&stopped)).unwrap_err();
        assert!(
            why.contains("bench stopped before `cache/put`") && why.contains("boom"),
            "{why}"
        );
        let unavailable =
            Outcome::Unavailable("prompt-agent/benches/agent.rs not written yet".into());
        assert_eq!(
            our_figure(&spec(&["agent/template_hit"]), Some(&unavailable)),
            Err("prompt-agent/benches/agent.rs not written yet".to_owned())
        );
    }

    #[test]
    fn our_figure_subtracts_a_baseline_and_divides_rates_by_elements() {
        let outcome = measured(
            &[
                ("agent/stream_call", Estimate::mean(250_000.0)),
                ("agent/whole_call", Estimate::mean(20_000.0)),
                (
                    "agent/stream_hit_replay",
                    Estimate {
                        mean_ns: 120_000.0,
                        elements: Some(600),
                    },
                ),
            ],
            None,
        );
        let overhead = RowSpec {
            minus: &["agent/whole_call"],
            ..spec(&["agent/stream_call"])
        };
        assert_eq!(our_figure(&overhead, Some(&outcome)), Ok(230_000.0));
        let missing_baseline = RowSpec {
            minus: &["agent/nothing"],
            ..overhead
        };
        assert!(our_figure(&missing_baseline, Some(&outcome)).is_err());

        let rate = RowSpec {
            unit: Unit::PerSecond("deltas"),
            ..spec(&["agent/stream_hit_replay"])
        };
        assert_eq!(our_figure(&rate, Some(&outcome)), Ok(200.0));
        let no_elements = RowSpec {
            unit: Unit::PerSecond("deltas"),
            ..spec(&["agent/stream_call"])
        };
        let why = our_figure(&no_elements, Some(&outcome)).unwrap_err();
        assert!(why.contains("no Throughput::Elements"), "{why}");
    }

    #[test]
    fn peer_figure_reports_the_mean_or_the_peer_error() {
        let mut docs: BTreeMap<&str, Result<Value, String>> = BTreeMap::new();
        docs.insert(
            "cache_peer.py",
            Ok(json!({ "results": { "diskcache_set": { "mean_ns": 2.5e5 }, "sha256": { "error": "ValueError: x" } } })),
        );
        docs.insert(
            "metrics_peer.py",
            Err("pip could not install duckdb".to_owned()),
        );
        assert_eq!(
            peer_figure(&docs, "cache_peer.py", "diskcache_set"),
            Ok(2.5e5)
        );
        assert_eq!(
            peer_figure(&docs, "cache_peer.py", "sha256"),
            Err("cache_peer.py: ValueError: x".to_owned())
        );
        assert_eq!(
            peer_figure(&docs, "metrics_peer.py", "duckdb_agent_stats_100k"),
            Err("pip could not install duckdb".to_owned())
        );
        assert!(peer_figure(&docs, "templates_peer.py", "jinja2_render").is_err());
    }

    #[test]
    fn unknown_arguments_are_refused() {
        let err = run(Path::new("/nonexistent"), &["--fast".to_owned()]).unwrap_err();
        assert!(
            err.to_string().contains("unknown argument `--fast`"),
            "{err}"
        );
    }
}
