//! `prompt metrics agent|task|models|versions|cleanup|report`.

use std::path::Path;

use prompt_metrics::{JsonlStore, MetricsError};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::cli::MetricsCommand;
use crate::config::Settings;
use crate::error::{CliError, CliResult};
use crate::report::{ReportData, render_html};
use crate::ui::{self, Align, Paint, Table};

pub(crate) fn metrics_error(e: &MetricsError, dir: &Path) -> CliError {
    CliError::failure(e.to_string()).hint(format!(
        "check the metrics directory {} (--metrics-dir DIR or PROMPT_METRICS_DIR)",
        dir.display()
    ))
}

pub(crate) fn open_metrics(settings: &Settings) -> CliResult<JsonlStore> {
    JsonlStore::open(settings.metrics_dir()).map_err(|e| metrics_error(&e, &settings.metrics_dir()))
}

fn to_map<T: Serialize>(value: &T) -> CliResult<Map<String, Value>> {
    match serde_json::to_value(value) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Ok(Map::from_iter([("value".to_owned(), other)])),
        Err(e) => Err(CliError::failure(format!("cannot encode statistics: {e}"))),
    }
}

/// The statistics shown for one group, in this order, with how to show each.
const STAT_ROWS: &[(&str, &str, Fmt)] = &[
    ("total_calls", "calls", Fmt::Int),
    ("successful_calls", "successful", Fmt::Int),
    ("success_rate", "success rate", Fmt::Rate),
    ("error_rate", "error rate", Fmt::Rate),
    ("validation_pass_rate", "validation pass rate", Fmt::Rate),
    ("cache_hit_rate", "cache hit rate", Fmt::Rate),
    ("avg_latency_ms", "avg latency", Fmt::Ms),
    ("p50_latency_ms", "p50 latency", Fmt::Ms),
    ("p95_latency_ms", "p95 latency", Fmt::Ms),
    ("p99_latency_ms", "p99 latency", Fmt::Ms),
    ("avg_retries", "avg retries", Fmt::Float),
    ("avg_response_length", "avg response length", Fmt::Float),
    ("tokens_prompt", "prompt tokens", Fmt::Int),
    ("tokens_completion", "completion tokens", Fmt::Int),
    ("total_tokens_used", "total tokens", Fmt::Int),
    ("total_cost_usd", "cost", Fmt::Usd),
    ("saved_usd", "saved by the cache", Fmt::Usd),
];

/// The stream timing statistics, shown after [`STAT_ROWS`] when the group has streamed
/// records.
const STREAM_ROWS: &[(&str, &str, Fmt)] = &[
    ("streamed_calls", "streamed calls", Fmt::Int),
    (
        "p50_time_to_first_token_ms",
        "p50 time to first token",
        Fmt::Ms,
    ),
    (
        "p95_time_to_first_token_ms",
        "p95 time to first token",
        Fmt::Ms,
    ),
    ("avg_tokens_per_second", "avg tokens/s", Fmt::Float),
];

/// Whether a group's statistics include streamed records (and so stream timing figures).
fn has_stream_timing(map: &Map<String, Value>) -> bool {
    map.get("streamed_calls")
        .and_then(Value::as_u64)
        .is_some_and(|n| n > 0)
}

#[derive(Clone, Copy)]
enum Fmt {
    Int,
    Rate,
    Ms,
    Float,
    Usd,
}

fn fmt_stat(map: &Map<String, Value>, key: &str, fmt: Fmt) -> String {
    let Some(v) = map.get(key) else {
        return "-".to_owned();
    };
    let Some(f) = v.as_f64() else {
        return ui::cell(Some(v));
    };
    match fmt {
        Fmt::Int => format!("{f:.0}"),
        Fmt::Rate => ui::percent(f),
        Fmt::Ms => ui::millis(f),
        Fmt::Float => format!("{f:.2}"),
        Fmt::Usd => ui::usd(f),
    }
}

fn skipped_note(map: &Map<String, Value>) {
    let skipped = map
        .get("skipped_lines")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    if skipped > 0 {
        ui::print_warning(&format!(
            "{skipped} unreadable metrics line(s) were skipped"
        ));
    }
}

fn print_stats(title: &str, map: &Map<String, Value>) -> CliResult<()> {
    let p = Paint::stdout();
    if map.get("total_calls").and_then(Value::as_u64) == Some(0) {
        ui::print_warning(&format!("no calls recorded for {title}"));
    }
    let mut table = Table::new(&[("metric", Align::Left), ("value", Align::Right)]);
    let stream_rows = if has_stream_timing(map) {
        STREAM_ROWS
    } else {
        &[]
    };
    for (key, label, fmt) in STAT_ROWS.iter().chain(stream_rows) {
        table.row(vec![(*label).to_owned(), fmt_stat(map, key, *fmt)]);
    }
    skipped_note(map);
    ui::print_stdout(&format!("{}\n{}", p.bold(title), table.render(p)))
}

/// Columns of the comparison tables.
const CMP_COLUMNS: &[(&str, &str, Fmt)] = &[
    ("total_calls", "calls", Fmt::Int),
    ("success_rate", "success", Fmt::Rate),
    ("cache_hit_rate", "cache hits", Fmt::Rate),
    ("avg_latency_ms", "avg", Fmt::Ms),
    ("p50_latency_ms", "p50", Fmt::Ms),
    ("p95_latency_ms", "p95", Fmt::Ms),
    ("p99_latency_ms", "p99", Fmt::Ms),
    ("avg_retries", "retries", Fmt::Float),
    ("total_tokens_used", "tokens", Fmt::Int),
    ("total_cost_usd", "cost", Fmt::Usd),
    ("saved_usd", "saved", Fmt::Usd),
];

/// Columns added to the comparison tables when some row has streamed records (`-` in the
/// rows without).
const CMP_STREAM_COLUMNS: &[(&str, &str, Fmt)] = &[
    ("p50_time_to_first_token_ms", "ttft p50", Fmt::Ms),
    ("p95_time_to_first_token_ms", "ttft p95", Fmt::Ms),
    ("avg_tokens_per_second", "tok/s", Fmt::Float),
];

fn print_comparison(
    title: &str,
    first: &str,
    rows: &[(String, Map<String, Value>)],
) -> CliResult<()> {
    let p = Paint::stdout();
    let stream_columns = if rows.iter().any(|(_, m)| has_stream_timing(m)) {
        CMP_STREAM_COLUMNS
    } else {
        &[]
    };
    let shown = || CMP_COLUMNS.iter().chain(stream_columns);
    let mut columns = vec![(first, Align::Left)];
    columns.extend(shown().map(|(_, label, _)| (*label, Align::Right)));
    let mut table = Table::new(&columns);
    for (name, map) in rows {
        let mut cells = vec![name.clone()];
        cells.extend(shown().map(|(key, _, fmt)| fmt_stat(map, key, *fmt)));
        table.row(cells);
    }
    if let Some((_, m)) = rows.first() {
        skipped_note(m);
    }
    if table.is_empty() {
        return ui::print_stdout(&format!("{}\nno calls in this period\n", p.bold(title)));
    }
    ui::print_stdout(&format!("{}\n{}", p.bold(title), table.render(p)))
}

pub(crate) fn metrics(cmd: MetricsCommand, settings: &Settings) -> CliResult<()> {
    let dir = settings.metrics_dir();
    let store = open_metrics(settings)?;
    let err = |e: MetricsError| metrics_error(&e, &dir);
    match cmd {
        MetricsCommand::Agent { agent, days } => {
            let stats = store.agent_stats(&agent, days.days).map_err(err)?;
            if settings.json {
                return ui::print_json(&stats);
            }
            print_stats(
                &format!("agent {agent} — last {} day(s)", days.days),
                &to_map(&stats)?,
            )
        }
        MetricsCommand::Task { agent, task, days } => {
            let stats = store.task_stats(&agent, &task, days.days).map_err(err)?;
            if settings.json {
                return ui::print_json(&stats);
            }
            print_stats(
                &format!("task {agent}/{task} — last {} day(s)", days.days),
                &to_map(&stats)?,
            )
        }
        MetricsCommand::Models { days } => {
            let models = store.model_comparison(days.days).map_err(err)?;
            if settings.json {
                return ui::print_json(&models);
            }
            let mut rows = Vec::new();
            for m in &models {
                rows.push((m.model.clone(), to_map(&m.stats)?));
            }
            print_comparison(
                &format!("models — last {} day(s)", days.days),
                "model",
                &rows,
            )
        }
        MetricsCommand::Versions { agent, task, days } => {
            let versions = store
                .version_comparison(&agent, &task, days.days)
                .map_err(err)?;
            if settings.json {
                return ui::print_json(&versions);
            }
            let mut rows = Vec::new();
            for v in &versions {
                let name = v
                    .template_version
                    .map_or_else(|| "(none)".to_owned(), |n| format!("v{n}"));
                rows.push((name, to_map(&v.stats)?));
            }
            print_comparison(
                &format!("versions of {agent}/{task} — last {} day(s)", days.days),
                "version",
                &rows,
            )
        }
        MetricsCommand::Tags { days } => {
            let tags = store.tag_comparison(days.days).map_err(err)?;
            if settings.json {
                return ui::print_json(&tags);
            }
            let mut rows = Vec::new();
            for t in &tags {
                let name = t.tag.clone().unwrap_or_else(|| "(no tag)".to_owned());
                rows.push((name, to_map(&t.stats)?));
            }
            print_comparison(&format!("tags — last {} day(s)", days.days), "tag", &rows)
        }
        MetricsCommand::Budget => budget(&store, settings),
        MetricsCommand::Cleanup { keep } => {
            let removed = store.cleanup_old_logs(keep).map_err(err)?;
            if settings.json {
                return ui::print_json(&json!({"removed_files": removed, "kept_days": keep}));
            }
            ui::print_stdout(&format!(
                "removed {removed} metrics file(s) older than {keep} day(s) from {}\n",
                dir.display()
            ))
        }
        MetricsCommand::Report { days, out } => report(&store, days.days, &out, settings.json),
    }
}

/// `prompt metrics budget`: today's spend (UTC) against each limit of `[budget]`.
fn budget(store: &JsonlStore, settings: &Settings) -> CliResult<()> {
    let budget = settings.app.budget();
    budget
        .check()
        .map_err(|e| crate::config::settings_error(&e))?;
    let since = prompt_agent::budget_day_start(store.now());
    let spend = store
        .spend_since(since)
        .map_err(|e| metrics_error(&e, store.dir()))?;
    let limits = budget.against(&spend);
    if settings.json {
        let rows: Vec<Value> = limits
            .iter()
            .map(|l| {
                json!({
                    "limit": l.limit,
                    "limit_usd": l.limit_usd,
                    "spent_usd": l.spent_usd,
                    "remaining_usd": (l.limit_usd - l.spent_usd).max(0.0),
                })
            })
            .collect();
        return ui::print_json(&json!({
            "since": since.to_rfc3339(),
            "spent_usd": spend.total_usd,
            "agents": spend.agents,
            "tags": spend.tags,
            "limits": rows,
        }));
    }
    let p = Paint::stdout();
    let title = format!(
        "spend since {} — {} in total",
        since.format("%Y-%m-%d %H:%M UTC"),
        ui::usd(spend.total_usd)
    );
    if limits.is_empty() {
        return ui::print_stdout(&format!(
            "{}
no limits set: add [budget] daily_usd = 5.0, [budget.agents] or [budget.tags] to prompt.toml
",
            p.bold(&title)
        ));
    }
    let mut table = Table::new(&[
        ("limit", Align::Left),
        ("limit", Align::Right),
        ("spent", Align::Right),
        ("left", Align::Right),
        ("used", Align::Right),
    ]);
    for l in &limits {
        let used = if l.limit_usd > 0.0 {
            ui::percent(l.spent_usd / l.limit_usd)
        } else {
            "-".to_owned()
        };
        table.row(vec![
            l.limit.clone(),
            ui::usd(l.limit_usd),
            ui::usd(l.spent_usd),
            ui::usd((l.limit_usd - l.spent_usd).max(0.0)),
            used,
        ]);
    }
    ui::print_stdout(&format!(
        "{}
{}",
        p.bold(&title),
        table.render(p)
    ))
}

/// The report's figures all come from one `overview` query of prompt-metrics.
fn report(store: &JsonlStore, days: u32, out: &Path, json: bool) -> CliResult<()> {
    let overview = store
        .overview(days)
        .map_err(|e| metrics_error(&e, store.dir()))?;
    let data = ReportData::new(overview, days, store.now());
    let calls = data.total.calls();
    let skipped_lines = data.skipped_lines;
    let html = render_html(&data);
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| CliError::failure(format!("cannot create {}: {e}", parent.display())))?;
    }
    std::fs::write(out, html).map_err(|e| {
        CliError::failure(format!("cannot write report {}: {e}", out.display()))
            .hint("check the --out path is writable")
    })?;
    if json {
        return ui::print_json(&json!({
            "out": out.display().to_string(),
            "days": days,
            "calls": calls,
            "skipped_lines": skipped_lines,
        }));
    }
    ui::print_stdout(&format!(
        "wrote {} ({calls} call(s), last {days} day(s))\n",
        out.display()
    ))
}
