//! `prompt batch`: many generations from a JSONL file, resumable, interruptible.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use prompt_agent::{
    AgentError, GenerateOptions, GenerationEvent, PromptSystem, StreamItem, VersionReq,
};
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

/// How often the line about the jobs in flight (under the bar) is rebuilt; the bar draws it
/// on its own, throttled, ticks.
const LIVE_REFRESH: Duration = Duration::from_millis(200);

/// Jobs in flight named under the bar; the rest are counted.
const LIVE_SHOWN: usize = 3;

/// What a job in flight has received so far, for the progress bar. The job's task adds to it
/// as deltas arrive (one atomic add each); the bar reads it on its refresh tick.
#[derive(Debug)]
struct Meter {
    /// Characters (reply text and reasoning) of the current attempt.
    chars: AtomicUsize,
    /// The attempt under way (1 for the first).
    attempt: AtomicU32,
}

impl Meter {
    fn event(&self, event: &GenerationEvent) {
        match event {
            GenerationEvent::Delta(delta) => {
                self.chars
                    .fetch_add(delta.text().chars().count(), Ordering::Relaxed);
            }
            // The deltas of the failed attempt are void: the count starts over.
            GenerationEvent::Retry { attempt, .. } => {
                self.chars.store(0, Ordering::Relaxed);
                self.attempt.store(*attempt, Ordering::Relaxed);
            }
        }
    }
}

/// The meters of the jobs in flight, by their line in the jobs file.
#[derive(Debug, Clone, Default)]
struct Running(Arc<Mutex<BTreeMap<usize, Arc<Meter>>>>);

impl Running {
    /// A meter for the job on `line`, listed until the returned guard is dropped.
    fn start(&self, line: usize) -> MeterGuard {
        let meter = Arc::new(Meter {
            chars: AtomicUsize::new(0),
            attempt: AtomicU32::new(1),
        });
        self.lock().insert(line, meter.clone());
        MeterGuard {
            running: self.clone(),
            line,
            meter,
        }
    }

    /// `(line, characters, attempt)` of each job in flight, by line.
    fn snapshot(&self) -> Vec<(usize, usize, u32)> {
        self.lock()
            .iter()
            .map(|(line, m)| {
                (
                    *line,
                    m.chars.load(Ordering::Relaxed),
                    m.attempt.load(Ordering::Relaxed),
                )
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<usize, Arc<Meter>>> {
        // A panic while holding the lock leaves a map that is still whole.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A job's place in [`Running`]; dropping it (the job ended or was stopped) removes it.
#[derive(Debug)]
struct MeterGuard {
    running: Running,
    line: usize,
    meter: Arc<Meter>,
}

impl Drop for MeterGuard {
    fn drop(&mut self) {
        self.running.lock().remove(&self.line);
    }
}

/// A count in few characters: `950`, `3.2k`, `48k`, `1.3M`.
fn compact(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..10_000 => format!("{:.1}k", n as f64 / 1e3),
        10_000..1_000_000 => format!("{}k", n / 1_000),
        _ => format!("{:.1}M", n as f64 / 1e6),
    }
}

/// The line under the bar: the characters received so far by the first [`LIVE_SHOWN`] jobs in
/// flight (token counts come only with the end of a reply, so a running job shows
/// characters), how many more run, and the completion tokens of the replies generated so far.
fn live_message(running: &[(usize, usize, u32)], tokens_out: u64) -> String {
    let mut parts: Vec<String> = running
        .iter()
        .take(LIVE_SHOWN)
        .map(|&(line, chars, attempt)| {
            let retry = if attempt > 1 {
                format!(" (try {attempt})")
            } else {
                String::new()
            };
            format!("line {line}{retry}: {} chars", compact(chars as u64))
        })
        .collect();
    if running.len() > LIVE_SHOWN {
        parts.push(format!("+{} running", running.len() - LIVE_SHOWN));
    }
    if tokens_out > 0 {
        parts.push(format!("{} tokens out", compact(tokens_out)));
    }
    parts.join(" · ")
}

/// Progress: a bar on a terminal (with what the jobs in flight have received so far), plain
/// lines otherwise, nothing with `-q`.
#[derive(Debug)]
enum Progress {
    Bar {
        bar: ProgressBar,
        running: Running,
        /// Completion tokens of the replies generated (not cache hits) so far.
        tokens_out: u64,
    },
    Lines {
        total: usize,
        done: usize,
    },
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
            // The jobs in flight get a line of their own under the bar (the bar's line is
            // about full on an 80-column terminal), cut to the terminal's width.
            let template = if Paint::stderr().on() {
                "{spinner:.cyan} [{elapsed_precise}] {bar:32.cyan/blue} {pos}/{len} jobs · {per_sec} · ETA {eta}\n  {wide_msg}"
            } else {
                "{spinner} [{elapsed_precise}] {bar:32} {pos}/{len} jobs · {per_sec} · ETA {eta}\n  {wide_msg}"
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("█▉▊▋▌▍▎▏ "));
            }
            bar.enable_steady_tick(Duration::from_millis(120));
            Self::Bar {
                bar,
                running: Running::default(),
                tokens_out: 0,
            }
        } else {
            Self::Lines { total, done: 0 }
        }
    }

    /// A meter for a job about to start, when the bar shows the jobs in flight.
    fn meter(&self, line: usize) -> Option<MeterGuard> {
        match self {
            Self::Bar { running, .. } => Some(running.start(line)),
            Self::Lines { .. } | Self::Quiet => None,
        }
    }

    /// Rebuilds the line under the bar from the meters of the jobs in flight.
    fn refresh(&self) {
        if let Self::Bar {
            bar,
            running,
            tokens_out,
        } = self
        {
            bar.set_message(live_message(&running.snapshot(), *tokens_out));
        }
    }

    fn job_done(&mut self, r: &ResultLine) {
        match self {
            Self::Bar {
                bar, tokens_out, ..
            } => {
                if r.ok && r.cache_hit != Some(true) {
                    *tokens_out += r.tokens_completion.unwrap_or(0);
                }
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
            Self::Bar { bar, .. } => bar.println(text),
            Self::Lines { .. } => eprintln!("{text}"),
            Self::Quiet => {}
        }
    }

    fn finish(&self) {
        if let Self::Bar { bar, .. } = self {
            bar.finish_and_clear();
        }
    }
}

/// Runs one job to its result line; never fails (a failure is a line with `ok: false`).
///
/// The reply is streamed (whole replies, with `stream = false`, arrive as one piece); `meter`,
/// when given, counts what has arrived for the progress bar. The result is the same as the
/// non-streaming call's.
async fn run_job(
    system: PromptSystem,
    job: Job,
    base: GenerateOptions,
    meter: Option<MeterGuard>,
) -> ResultLine {
    let version = match &job.template.version {
        None => VersionReq::Latest,
        Some(v) => match v.parse::<VersionReq>() {
            Ok(v) => v,
            Err(e) => return ResultLine::failed(&job, e.to_string()),
        },
    };
    let mut tags = base.tags.clone();
    for tag in &job.tags {
        if !tags.contains(tag) {
            tags.push(tag.clone());
        }
    }
    let options = GenerateOptions {
        version,
        request: job.options.clone().over(&base.request),
        tags,
        ..base
    };
    let agent = system.template_agent(&job.template.agent);
    let mut stream = agent.generate_stream(&job.template.task, &job.vars, &options);
    let mut result = Err(AgentError::Shared(
        "the generation ended without a result".to_owned(),
    ));
    while let Some(item) = stream.next().await {
        match item {
            Ok(StreamItem::Event(event)) => {
                if let Some(guard) = &meter {
                    guard.meter.event(&event);
                }
            }
            Ok(StreamItem::Done(generation)) => {
                result = Ok(generation);
                break;
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    drop(meter);
    match result {
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
            cost_usd: g.cost_usd,
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
        let live = matches!(progress, Progress::Bar { .. });
        let mut refresh = tokio::time::interval(LIVE_REFRESH);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            while !interrupted && set.len() < concurrency {
                match queue.next() {
                    Some(job) => {
                        let meter = progress.meter(job.line);
                        set.spawn(run_job(system.clone(), job, base.clone(), meter));
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
                            // A second Ctrl-C means "stop now": nothing is left to unwind.
                            #[allow(clippy::exit)]
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
                _ = refresh.tick(), if live => progress.refresh(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_compact() {
        assert_eq!(compact(0), "0");
        assert_eq!(compact(999), "999");
        assert_eq!(compact(3_214), "3.2k");
        assert_eq!(compact(48_100), "48k");
        assert_eq!(compact(1_340_000), "1.3M");
    }

    #[test]
    fn the_message_names_the_first_jobs_in_flight_and_counts_the_rest() {
        assert_eq!(live_message(&[], 0), "");
        assert_eq!(live_message(&[], 1_280), "1.3k tokens out");
        let running = [
            (2, 3_214, 1),
            (3, 0, 2),
            (5, 812, 1),
            (9, 40, 1),
            (11, 7, 1),
        ];
        assert_eq!(
            live_message(&running, 640),
            "line 2: 3.2k chars · line 3 (try 2): 0 chars · line 5: 812 chars · +2 running · 640 tokens out"
        );
    }

    #[test]
    fn meters_count_characters_start_over_on_a_retry_and_leave_with_their_job() {
        let running = Running::default();
        let guard = running.start(4);
        let other = running.start(7);
        guard
            .meter
            .event(&GenerationEvent::Delta(prompt_agent::Delta::Reasoning(
                "héllo".into(),
            )));
        guard
            .meter
            .event(&GenerationEvent::Delta(prompt_agent::Delta::Text(
                " world".into(),
            )));
        assert_eq!(running.snapshot(), [(4, 11, 1), (7, 0, 1)]);
        guard.meter.event(&GenerationEvent::Retry {
            attempt: 2,
            reason: "x".into(),
        });
        assert_eq!(running.snapshot(), [(4, 0, 2), (7, 0, 1)]);
        drop(guard);
        assert_eq!(running.snapshot(), [(7, 0, 1)]);
        drop(other);
        assert!(running.snapshot().is_empty());
    }
}
