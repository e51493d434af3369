//! `prompt batch`: many generations from a JSONL file, resumable, interruptible.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use prompt_agent::{GenerateOptions, PromptSystem, VersionReq};
use serde_json::json;
use tokio::task::JoinSet;

use super::generate::generator;
use crate::cli::ProviderArgs;
use crate::config::Settings;
use crate::error::{CliError, CliResult};
use crate::jobs::{Job, ResultLine, ResultsWriter, parse_jobs, read_done};
use crate::ui::{self, Paint};

/// The options of one `prompt batch` run.
#[derive(Debug)]
pub(crate) struct BatchArgs<'a> {
    pub(crate) jobs: &'a Path,
    pub(crate) out: &'a Path,
    pub(crate) concurrency: Option<usize>,
    pub(crate) retry_failed: bool,
    pub(crate) provider: &'a ProviderArgs,
}

/// Counts of a run.
#[derive(Debug, Default)]
struct Tally {
    ok: usize,
    failed: usize,
    cache_hits: usize,
    written: usize,
}

/// Progress: a bar on a terminal, plain lines otherwise, nothing with `-q`.
#[derive(Debug)]
enum Progress {
    Bar(ProgressBar),
    Lines { total: usize, done: usize },
    Quiet,
}

impl Progress {
    fn new(total: usize, quiet: bool) -> Self {
        if quiet {
            return Self::Quiet;
        }
        if std::io::stderr().is_terminal() {
            let bar =
                ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
            let template = if Paint::stderr().on() {
                "{spinner:.cyan} [{elapsed_precise}] {bar:32.cyan/blue} {pos}/{len} jobs · {per_sec} · ETA {eta} {msg}"
            } else {
                "{spinner} [{elapsed_precise}] {bar:32} {pos}/{len} jobs · {per_sec} · ETA {eta} {msg}"
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("█▉▊▋▌▍▎▏ "));
            }
            bar.enable_steady_tick(Duration::from_millis(120));
            Self::Bar(bar)
        } else {
            Self::Lines { total, done: 0 }
        }
    }

    fn job_done(&mut self, r: &ResultLine) {
        match self {
            Self::Bar(bar) => {
                bar.inc(1);
                if !r.ok {
                    bar.println(format!(
                        "line {} {} failed: {}",
                        r.line,
                        r.template,
                        r.error.as_deref().unwrap_or("")
                    ));
                }
            }
            Self::Lines { total, done } => {
                *done += 1;
                let status = if r.ok {
                    format!(
                        "ok {}{}",
                        r.latency_ms.map(ui::millis).unwrap_or_default(),
                        if r.cache_hit == Some(true) {
                            " (cache hit)"
                        } else {
                            ""
                        }
                    )
                } else {
                    format!("failed: {}", r.error.as_deref().unwrap_or(""))
                };
                eprintln!("[{done}/{total}] line {} {} {status}", r.line, r.template);
            }
            Self::Quiet => {}
        }
    }

    fn note(&self, text: &str) {
        match self {
            Self::Bar(bar) => bar.println(text),
            Self::Lines { .. } => eprintln!("{text}"),
            Self::Quiet => {}
        }
    }

    fn finish(&self) {
        if let Self::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

/// Runs one job to its result line; never fails (a failure is a line with `ok: false`).
async fn run_job(system: PromptSystem, job: Job, base: GenerateOptions) -> ResultLine {
    let version = match &job.template.version {
        None => VersionReq::Latest,
        Some(v) => match v.parse::<VersionReq>() {
            Ok(v) => v,
            Err(e) => return ResultLine::failed(&job, e.to_string()),
        },
    };
    let options = GenerateOptions {
        version,
        request: job.options.clone().over(&base.request),
        ..base
    };
    let agent = system.template_agent(&job.template.agent);
    match agent
        .generate_from_template(&job.template.task, &job.vars, &options)
        .await
    {
        Ok(g) => ResultLine {
            line: job.line,
            template: job.template_text.clone(),
            vars: job.vars.clone(),
            ok: true,
            response: Some(g.content),
            model: Some(g.model),
            cache_hit: Some(g.cache_hit),
            error: None,
            tokens_prompt: g.tokens_prompt,
            tokens_completion: g.tokens_completion,
            latency_ms: Some(g.latency_ms),
            retry_count: Some(g.retry_count),
            template_version: Some(g.template_version),
            template_hash: Some(g.template_hash),
        },
        Err(e) => ResultLine::failed(&job, crate::error::one_line(&e.to_string())),
    }
}

pub(crate) fn batch(args: &BatchArgs<'_>, settings: &Settings, quiet: bool) -> CliResult<()> {
    let mut settings = settings.clone();
    if args.concurrency.is_some() {
        settings.app.concurrency = args.concurrency;
    }
    let gen_ = generator(&settings, args.provider)?;
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same(args.jobs, args.out) {
        return Err(CliError::usage(format!(
            "--out {} is the jobs file itself",
            args.out.display()
        ))
        .hint("write the results to another file, e.g. --out results.jsonl"));
    }
    let text = std::fs::read_to_string(args.jobs).map_err(|e| {
        CliError::failure(format!(
            "cannot read jobs file {}: {e}",
            args.jobs.display()
        ))
        .hint("pass a JSONL file with one {\"template\": ..., \"vars\": {...}} a line")
    })?;
    let jobs = parse_jobs(&text, args.jobs)?;
    // One writer per results file (it is the resume state too), held until the end.
    let _lock = crate::lock::ResultsLock::acquire(args.out)?;
    let done = read_done(args.out)?;
    if done.unreadable > 0 {
        ui::print_warning(&format!(
            "{} unreadable line(s) in {} are ignored; their jobs run again",
            done.unreadable,
            args.out.display()
        ));
    }
    for job in &jobs {
        if let Some((_, Some(template))) = done.lines.get(&job.line)
            && template != &job.template_text
        {
            ui::print_warning(&format!(
                "line {} of {} is now {} but {} has a result for {template}; the jobs file changed since the last run?",
                job.line,
                args.jobs.display(),
                job.template_text,
                args.out.display()
            ));
        }
    }
    let total = jobs.len();
    let pending: Vec<Job> = jobs
        .into_iter()
        .filter(|j| !done.is_done(j, args.retry_failed))
        .collect();
    let skipped = total - pending.len();

    let mut writer = ResultsWriter::open(args.out)?;
    let base = gen_.options();
    let concurrency = gen_.settings.app.concurrency();

    if skipped > 0 && !quiet {
        eprintln!(
            "resuming: {skipped} of {total} job(s) already have a result in {}",
            args.out.display()
        );
    }
    let mut progress = Progress::new(pending.len(), quiet || pending.is_empty());
    let runtime = super::runtime()?;
    let system = gen_.system.clone();
    let (tally, interrupted, not_started) = runtime.block_on(async {
        let mut tally = Tally::default();
        let mut set = JoinSet::new();
        let mut queue = pending.into_iter();
        let mut interrupted = false;
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        loop {
            while !interrupted && set.len() < concurrency {
                match queue.next() {
                    Some(job) => {
                        set.spawn(run_job(system.clone(), job, base.clone()));
                    }
                    None => break,
                }
            }
            if set.is_empty() {
                break;
            }
            tokio::select! {
                biased;
                _ = &mut ctrl_c, if !interrupted => {
                    interrupted = true;
                    progress.note(&format!(
                        "interrupted: finishing the {} job(s) in flight (Ctrl-C again to stop now)",
                        set.len()
                    ));
                    tokio::spawn(async {
                        if tokio::signal::ctrl_c().await.is_ok() {
                            eprintln!("error: interrupted twice; the jobs in flight have no result line");
                            std::process::exit(130);
                        }
                    });
                }
                Some(joined) = set.join_next() => {
                    match joined {
                        Ok(line) => {
                            writer.append(&line)?;
                            tally.written += 1;
                            if line.ok { tally.ok += 1 } else { tally.failed += 1 }
                            if line.cache_hit == Some(true) { tally.cache_hits += 1 }
                            progress.job_done(&line);
                        }
                        Err(e) => {
                            tally.failed += 1;
                            progress.note(&format!("a job stopped unexpectedly: {e}"));
                        }
                    }
                }
            }
        }
        Ok::<_, CliError>((tally, interrupted, queue.len()))
    })?;
    progress.finish();
    if let Err(e) = gen_.system.flush() {
        ui::print_warning(&format!("could not flush the cache or metrics: {e}"));
    }

    if settings.json {
        ui::print_json(&json!({
            "jobs": total,
            "skipped": skipped,
            "run": tally.written,
            "ok": tally.ok,
            "failed": tally.failed,
            "cache_hits": tally.cache_hits,
            "not_started": not_started,
            "interrupted": interrupted,
            "out": args.out.display().to_string(),
        }))?;
    } else if !quiet {
        let p = Paint::stderr();
        let summary = format!(
            "{} job(s): {} ok, {} failed, {} cache hit(s), {} skipped (already done){} → {}",
            total,
            tally.ok,
            tally.failed,
            tally.cache_hits,
            skipped,
            if not_started > 0 {
                format!(", {not_started} not started")
            } else {
                String::new()
            },
            args.out.display()
        );
        eprintln!(
            "{}",
            if tally.failed > 0 {
                p.yellow(&summary)
            } else {
                p.green(&summary)
            }
        );
    }
    if interrupted {
        return Err(CliError::interrupted(format!(
            "interrupted: wrote {} result line(s); {not_started} job(s) not started",
            tally.written
        ))
        .hint("run the same command again to resume"));
    }
    if tally.failed > 0 {
        return Err(CliError::failure(format!(
            "{} of {} job(s) failed; their lines in {} have the error",
            tally.failed,
            tally.written,
            args.out.display()
        ))
        .hint("fix the cause and run again with --retry-failed"));
    }
    Ok(())
}
