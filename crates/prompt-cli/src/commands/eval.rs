//! `prompt eval`, `prompt label` and `prompt promote`: arguments in, the eval crate's results
//! out as a table, JSON or an HTML page.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use prompt_eval::{
    Change, Column, Comparison, DEFAULT_RUNS_DIR, EvalError, EvalFile, EvalRun, ResolvedVersion,
    RunOptions, RunStore, Systems, VersionSpec, compare_runs, compare_versions,
};
use prompt_templates::TemplateStore;
use serde_json::json;

use super::generate::{Generator, agent_error, generator};
use super::runtime;
use super::templates::{open_store, template_error};
use crate::cli::{EvalArgs, LabelCommand, ProviderArgs};
use crate::config::Settings;
use crate::error::{CliError, CliResult};
use crate::report::{CSS, esc};
use crate::ui::{self, Align, Paint, Table};
use crate::vars::TemplateRef;

/// The arguments of `prompt eval`.
#[derive(Debug)]
pub(crate) struct EvalCommand<'a> {
    pub(crate) file: &'a Path,
    pub(crate) eval: &'a EvalArgs,
    pub(crate) html: Option<&'a Path>,
    pub(crate) compare: Option<&'a str>,
    pub(crate) provider: &'a ProviderArgs,
}

/// The arguments of `prompt promote`.
#[derive(Debug)]
pub(crate) struct PromoteCommand<'a> {
    pub(crate) template: &'a str,
    pub(crate) label: &'a str,
    pub(crate) version: &'a str,
    pub(crate) eval: &'a Path,
    pub(crate) force: bool,
    pub(crate) eval_args: &'a EvalArgs,
    pub(crate) provider: &'a ProviderArgs,
}

fn eval_error(e: &EvalError) -> CliError {
    let hint = match e {
        EvalError::File { .. } => {
            "fix the eval file; `prompt templates list` shows the templates, `prompt label list` the labels"
        }
        EvalError::BadRun { .. } => "pass another stored run, or `--compare last`",
        _ => "check the path",
    };
    CliError::failure(e.to_string()).hint(hint)
}

fn runs_store(args: &EvalArgs) -> RunStore {
    RunStore::new(
        args.runs_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_RUNS_DIR)),
    )
}

/// Reads and checks the eval file (before any call), builds the systems and runs it.
fn run_file(
    file: &EvalFile,
    versions: &[ResolvedVersion],
    built: &Generator,
    args: &EvalArgs,
    settings: &Settings,
    provider: &ProviderArgs,
) -> CliResult<EvalRun> {
    let mut systems = Systems::one(built.system.clone());
    for name in &file.providers {
        let args = ProviderArgs {
            provider: Some(name.clone()),
            ..provider.clone()
        };
        let other = generator(settings, &args)?;
        systems.by_provider.insert(name.clone(), other.system);
    }
    let options = RunOptions {
        repeat: args.repeat,
        base: built.options(),
    };
    let run = runtime()?.block_on(prompt_eval::run(file, versions, &systems, &options));
    for system in std::iter::once(&systems.default).chain(systems.by_provider.values()) {
        system
            .flush()
            .map_err(|e| agent_error(e, &built.settings))?;
    }
    Ok(run)
}

/// `prompt eval FILE`.
pub(crate) fn eval(cmd: &EvalCommand<'_>, settings: &Settings) -> CliResult<()> {
    let file = EvalFile::read(cmd.file).map_err(|e| eval_error(&e))?;
    let built = generator(settings, cmd.provider)?;
    let versions = file
        .check(built.system.templates())
        .map_err(|e| eval_error(&e))?;
    let store = runs_store(cmd.eval);
    // The run compared with is read before this run is stored.
    let before = match cmd.compare {
        None => None,
        Some("last") => {
            let (found, skipped) = store.last(cmd.file).map_err(|e| eval_error(&e))?;
            if skipped > 0 {
                ui::print_warning(&format!(
                    "{skipped} unreadable stored run(s) in {} passed over",
                    store.folder(cmd.file).display()
                ));
            }
            if found.is_none() {
                ui::print_warning(&format!(
                    "no stored run of {} to compare with yet",
                    cmd.file.display()
                ));
            }
            found
        }
        Some(path) => {
            let path = PathBuf::from(path);
            let run = RunStore::load(&path).map_err(|e| eval_error(&e))?;
            Some((path, run))
        }
    };
    let run = run_file(&file, &versions, &built, cmd.eval, settings, cmd.provider)?;
    let stored = store.save(cmd.file, &run).map_err(|e| eval_error(&e))?;
    let comparison = before
        .as_ref()
        .map(|(path, old)| compare_runs(old, &path.display().to_string(), &run));

    if let Some(path) = cmd.html {
        let page = render_html(&run, comparison.as_ref());
        std::fs::write(path, page)
            .map_err(|e| CliError::failure(format!("cannot write {}: {e}", path.display())))?;
    }
    if settings.json {
        let mut value = serde_json::to_value(&run)
            .map_err(|e| CliError::failure(format!("cannot encode JSON output: {e}")))?;
        value["passed"] = json!(run.passed());
        value["stored"] = json!(stored.display().to_string());
        if let Some(c) = &comparison {
            value["compare"] = comparison_json(c);
        }
        ui::print_json(&value)?;
    } else {
        let paint = Paint::stdout();
        let mut out = matrix_text(&run, paint);
        if let Some(c) = &comparison {
            out.push_str(&comparison_text(c, paint));
        }
        let _ = writeln!(
            out,
            "{}",
            paint.dim(&format!("stored {}", stored.display()))
        );
        if let Some(path) = cmd.html {
            let _ = writeln!(out, "{}", paint.dim(&format!("wrote {}", path.display())));
        }
        ui::print_stdout(&out)?;
    }
    if run.passed() {
        Ok(())
    } else {
        Err(CliError::failure(format!(
            "{} of {} cell(s) failed their assertions",
            run.failed_cells(),
            run.cells.len()
        ))
        .hint("the failures above say which assertion failed and why"))
    }
}

fn comparison_json(c: &Comparison) -> serde_json::Value {
    let changed: Vec<_> = c.changed().collect();
    json!({
        "before": c.before,
        "changed": changed,
        "unchanged": c.cells.len() - changed.len(),
        "cells": c.cells,
    })
}

/// A total shown under the matrix: its name and how a column's figure is written.
type Figure = (&'static str, fn(&Column) -> String);

/// The totals under the matrix, on the terminal and in the HTML page alike.
const FIGURES: [Figure; 4] = [
    ("pass rate", |c| {
        format!("{} ({}/{})", ui::percent(c.pass_rate), c.passed, c.cells)
    }),
    ("latency (mean)", |c| ui::millis(c.latency_ms)),
    ("tokens", |c| c.tokens.to_string()),
    ("cost", |c| {
        c.cost_usd
            .map_or_else(|| "-".to_owned(), |v| format!("${v:.4}"))
    }),
];

/// The matrix: cases down, version · model · provider across; totals under it; then the
/// failures with their reasons.
fn matrix_text(run: &EvalRun, paint: Paint) -> String {
    let headers: Vec<String> = run.columns.iter().map(|c| c.key.to_string()).collect();
    let mut spec: Vec<(&str, Align)> = vec![("case", Align::Left)];
    spec.extend(headers.iter().map(|h| (h.as_str(), Align::Right)));
    let mut table = Table::new(&spec);
    for case in run.case_names() {
        let mut row = vec![case.to_owned()];
        for column in &run.columns {
            let cell = run
                .cells
                .iter()
                .find(|c| c.case == case && c.column() == column.key);
            row.push(match cell {
                None => String::new(),
                Some(c) if c.samples > 1 => format!(
                    "{} {}/{}",
                    if c.passed { "pass" } else { "FAIL" },
                    c.samples_passed,
                    c.samples
                ),
                Some(c) if c.passed => "pass".to_owned(),
                Some(_) => "FAIL".to_owned(),
            });
        }
        table.row(row);
    }
    for (name, figure) in FIGURES {
        let mut row = vec![name.to_owned()];
        row.extend(run.columns.iter().map(figure));
        table.row(row);
    }
    let mut out = format!(
        "{}\n",
        paint.bold(&format!(
            "eval {} · {} · {} sample(s) a cell",
            run.eval_file, run.template, run.repeat
        ))
    );
    out.push_str(&table.render(paint));
    let failed: Vec<_> = run.cells.iter().filter(|c| !c.passed).collect();
    if !failed.is_empty() {
        out.push('\n');
        for cell in failed {
            for f in &cell.failures {
                let sample = if run.repeat > 1 {
                    format!(" sample {}", f.sample)
                } else {
                    String::new()
                };
                let _ = writeln!(
                    out,
                    "{} {} × {}{sample}: {} — {}",
                    paint.red("FAIL"),
                    cell.case,
                    cell.column(),
                    f.assertion,
                    f.reason
                );
            }
        }
    }
    out
}

fn comparison_text(c: &Comparison, paint: Paint) -> String {
    let changed: Vec<_> = c.changed().collect();
    let mut out = format!(
        "\n{}\n",
        paint.bold(&format!(
            "compared with {}: {} cell(s) changed, {} unchanged",
            c.before,
            changed.len(),
            c.cells.len() - changed.len()
        ))
    );
    for cell in &changed {
        let label = match cell.change {
            Change::PassToFail => paint.red(cell.change.label()),
            Change::FailToPass => paint.green(cell.change.label()),
            _ => paint.yellow(cell.change.label()),
        };
        let delta = cell
            .latency_delta_ms
            .map(|d| format!(" (latency {d:+.0} ms)"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{label} {} × {} · {} · {}{delta}",
            cell.case, cell.version, cell.model, cell.provider
        );
        for f in &cell.failures {
            let _ = writeln!(out, "    {f}");
        }
    }
    let latency: Vec<f64> = c.cells.iter().filter_map(|x| x.latency_delta_ms).collect();
    if !latency.is_empty() {
        let mean = latency.iter().sum::<f64>() / latency.len() as f64;
        let cost: Option<f64> = c
            .cells
            .iter()
            .map(|x| x.cost_delta_usd)
            .try_fold(0.0, |acc, d| d.map(|d| acc + d));
        let cost = cost
            .map(|d| format!(", cost {d:+.4} USD"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{}",
            paint.dim(&format!("mean latency delta {mean:+.0} ms{cost}"))
        );
    }
    out
}

/// The matrix as one self-contained HTML page (the metrics report's style, no script).
fn render_html(run: &EvalRun, comparison: Option<&Comparison>) -> String {
    let mut s = String::with_capacity(16 * 1024);
    let failed = run.failed_cells();
    let _ = write!(
        s,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>promptkit eval — {template}</title><style>{CSS}
td.pass{{color:#2f9e64;font-weight:600}} td.fail{{color:#d8453b;font-weight:700}}
</style></head>
<body data-cells="{cells}" data-failed="{failed}">
<header><h1>promptkit eval: {template}</h1><div class="sub">{file} · {started} · {repeat} sample(s) a cell</div></header>
<main>
<div class="cards">
<div class="card"><div class="k">cells</div><div class="v">{cells}</div></div>
<div class="card"><div class="k">passed</div><div class="v">{passed}</div></div>
<div class="card"><div class="k">failed</div><div class="v" id="failed-cells">{failed}</div></div>
<div class="card"><div class="k">columns</div><div class="v">{columns}</div></div>
<div class="card"><div class="k">cases</div><div class="v">{cases}</div></div>
</div>
<div class="tables"><table id="matrix"><caption>Matrix</caption><tr><th>case</th>"#,
        template = esc(&run.template),
        file = esc(&run.eval_file),
        started = esc(&run.started_at),
        repeat = run.repeat,
        cells = run.cells.len(),
        passed = run.cells.len() - failed,
        columns = run.columns.len(),
        cases = run.case_names().len(),
    );
    for c in &run.columns {
        let _ = write!(s, "<th>{}</th>", esc(&c.key.to_string()));
    }
    s.push_str("</tr>\n");
    for case in run.case_names() {
        let _ = write!(s, "<tr><td>{}</td>", esc(case));
        for column in &run.columns {
            match run
                .cells
                .iter()
                .find(|c| c.case == case && c.column() == column.key)
            {
                Some(cell) => {
                    let title: Vec<String> = cell
                        .failures
                        .iter()
                        .map(|f| format!("{}: {}", f.assertion, f.reason))
                        .collect();
                    let _ = write!(
                        s,
                        r#"<td class="{class}" title="{title}">{text} {n}/{m}</td>"#,
                        class = if cell.passed { "pass" } else { "fail" },
                        title = esc(&title.join("\n")),
                        text = if cell.passed { "pass" } else { "FAIL" },
                        n = cell.samples_passed,
                        m = cell.samples,
                    );
                }
                None => s.push_str("<td></td>"),
            }
        }
        s.push_str("</tr>\n");
    }
    for (name, figure) in FIGURES {
        let _ = write!(s, "<tr><th>{name}</th>");
        for c in &run.columns {
            let _ = write!(s, "<td>{}</td>", esc(&figure(c)));
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</table>\n<table id=\"failures\"><caption>Failures</caption><tr><th>case</th><th>column</th><th>sample</th><th>assertion</th><th>why</th></tr>\n");
    for cell in run.cells.iter().filter(|c| !c.passed) {
        for f in &cell.failures {
            let _ = writeln!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td style=\"text-align:left;white-space:normal\">{}</td></tr>",
                esc(&cell.case),
                esc(&cell.column().to_string()),
                f.sample,
                esc(&f.assertion),
                esc(&f.reason)
            );
        }
    }
    s.push_str("</table>\n");
    if let Some(c) = comparison {
        let _ = writeln!(
            s,
            "<table id=\"compare\"><caption>Changed since {}</caption><tr><th>case</th><th>column</th><th>change</th><th>latency Δ</th></tr>",
            esc(&c.before)
        );
        for cell in c.changed() {
            let _ = writeln!(
                s,
                "<tr><td>{}</td><td>{} · {} · {}</td><td>{}</td><td>{}</td></tr>",
                esc(&cell.case),
                esc(&cell.version),
                esc(&cell.model),
                esc(&cell.provider),
                cell.change.label(),
                cell.latency_delta_ms
                    .map(|d| format!("{d:+.0} ms"))
                    .unwrap_or_default()
            );
        }
        s.push_str("</table>\n");
    }
    s.push_str("</div>\n</main>\n<footer>Generated by <code>prompt eval</code>. A cell passes when every sample passes every assertion; latency is the mean of its samples.</footer>\n</body></html>\n");
    s
}

/// `prompt label set|list`.
pub(crate) fn label(cmd: LabelCommand, settings: &Settings) -> CliResult<()> {
    let store = open_store(settings)?;
    match cmd {
        LabelCommand::Set {
            template,
            label,
            target,
        } => {
            let r = plain_template(&template)?;
            let number = version_number(&store, &r, &target)?;
            let before = store
                .set_label(&r.agent, &r.task, &label, number)
                .map_err(|e| template_error(&e, store.dir()))?;
            if settings.json {
                return ui::print_json(&json!({
                    "template": r.to_string(), "label": label, "version": number, "previous": before,
                }));
            }
            let was = before.map_or_else(|| "new".to_owned(), |v| format!("was v{v}"));
            ui::print_stdout(&format!(
                "{r}@{label} → v{number} ({was}) in {}\n",
                store.labels_path().display()
            ))
        }
        LabelCommand::List { template } => {
            let only = template.as_deref().map(plain_template).transpose()?;
            let labels = store
                .labels()
                .map_err(|e| template_error(&e, store.dir()))?;
            let rows: Vec<(&str, &str, &str, u32)> = labels
                .iter()
                .filter(|(a, t, _, _)| only.as_ref().is_none_or(|r| r.agent == *a && r.task == *t))
                .collect();
            if settings.json {
                let items: Vec<_> = rows
                    .iter()
                    .map(|(a, t, l, v)| json!({"template": format!("{a}/{t}"), "label": l, "version": v}))
                    .collect();
                return ui::print_json(&items);
            }
            if rows.is_empty() {
                ui::print_warning(&format!(
                    "no labels in {}; `prompt label set AGENT/TASK LABEL VERSION` adds one",
                    store.labels_path().display()
                ));
                return Ok(());
            }
            let mut table = Table::new(&[
                ("template", Align::Left),
                ("label", Align::Left),
                ("version", Align::Right),
            ]);
            for (a, t, l, v) in rows {
                table.row(vec![format!("{a}/{t}"), l.to_owned(), format!("v{v}")]);
            }
            ui::print_stdout(&table.render(Paint::stdout()))
        }
    }
}

/// `AGENT/TASK` without a version.
fn plain_template(raw: &str) -> CliResult<TemplateRef> {
    let r = TemplateRef::parse(raw)?;
    if r.version.is_some() {
        return Err(CliError::usage(format!(
            "`{raw}`: give the template as AGENT/TASK here, and the version as its own argument"
        )));
    }
    Ok(r)
}

/// The version number a version argument (a number, `vN`, `latest` or a label) names.
fn version_number(store: &TemplateStore, r: &TemplateRef, version: &str) -> CliResult<u32> {
    let spec = VersionSpec::parse(version).map_err(|e| {
        CliError::usage(e.to_string()).hint("give a version number (2, v2) or a label")
    })?;
    store
        .load(&r.agent, &r.task, spec.req)
        .map(|t| t.version())
        .map_err(|e| template_error(&e, store.dir()))
}

/// `prompt promote AGENT/TASK LABEL VERSION --eval FILE [--force]`.
pub(crate) fn promote(cmd: &PromoteCommand<'_>, settings: &Settings) -> CliResult<()> {
    let r = plain_template(cmd.template)?;
    let mut file = EvalFile::read(cmd.eval).map_err(|e| eval_error(&e))?;
    if file.agent != r.agent || file.task != r.task {
        return Err(CliError::usage(format!(
            "{} evaluates {}, not {r}",
            cmd.eval.display(),
            file.template_name()
        )));
    }
    let built = generator(settings, cmd.provider)?;
    let store = built.system.templates();
    let candidate = version_number(store, &r, cmd.version)?;
    let labels = store
        .labels()
        .map_err(|e| template_error(&e, store.dir()))?;
    let current = labels.get(&r.agent, &r.task, cmd.label);
    if current == Some(candidate) {
        return ui::print_stdout(&format!("{r}@{} is already v{candidate}\n", cmd.label));
    }
    let spec = |n: u32| VersionSpec {
        text: format!("v{n}"),
        req: prompt_agent::VersionReq::Exact(n),
        line: 0,
    };
    file.versions = current.into_iter().chain([candidate]).map(spec).collect();
    let versions = file.check(store).map_err(|e| eval_error(&e))?;
    let run = run_file(
        &file,
        &versions,
        &built,
        cmd.eval_args,
        settings,
        cmd.provider,
    )?;
    let comparison =
        current.map(|n| compare_versions(&run, &format!("v{n}"), &format!("v{candidate}")));
    let regressions = comparison.as_ref().map_or(0, |c| c.regressions().count());
    let moved = regressions == 0 || cmd.force;
    if moved {
        store
            .set_label(&r.agent, &r.task, cmd.label, candidate)
            .map_err(|e| template_error(&e, store.dir()))?;
    }
    if settings.json {
        ui::print_json(&json!({
            "template": r.to_string(),
            "label": cmd.label,
            "from": current,
            "to": candidate,
            "moved": moved,
            "forced": moved && regressions > 0,
            "regressions": regressions,
            "compare": comparison.as_ref().map(comparison_json),
            "run": run,
        }))?;
    } else {
        let paint = Paint::stdout();
        let mut out = matrix_text(&run, paint);
        if let Some(c) = &comparison {
            out.push_str(&comparison_text(c, paint));
        }
        let from = current.map_or_else(|| "unset".to_owned(), |n| format!("v{n}"));
        let verdict = match (moved, regressions) {
            (true, 0) => paint.green(&format!(
                "promoted: {r}@{} {from} → v{candidate} (no regression)",
                cmd.label
            )),
            (true, n) => paint.yellow(&format!(
                "promoted with --force: {r}@{} {from} → v{candidate} despite {n} regression(s)",
                cmd.label
            )),
            (false, n) => paint.red(&format!(
                "not promoted: v{candidate} fails {n} case(s) that {from} passes; {r}@{} stays {from}",
                cmd.label
            )),
        };
        let _ = writeln!(out, "\n{verdict}");
        ui::print_stdout(&out)?;
    }
    if moved {
        Ok(())
    } else {
        Err(CliError::failure(format!(
            "{r}@{} not moved: {regressions} regression(s)",
            cmd.label
        ))
        .hint("fix the candidate, or pass --force to move the label anyway"))
    }
}
