//! `prompt metrics report`: one self-contained HTML file (inline CSS, inline SVG charts drawn
//! here), with the tables behind every chart. No script, no network.
//!
//! The figures come from [`prompt_metrics::JsonlStore::overview`]: this module aggregates
//! nothing itself, so the report and `prompt metrics models|task|versions` show the same numbers
//! (one percentile rule, one notion of success).
//!
//! Every chart is an `<svg>` with a stable id and `data-*` attributes carrying its numbers:
//! `chart-calls-per-day`, `chart-latency-by-model`, `chart-p95-by-task`, `chart-success-by-task`,
//! `chart-p95-by-version`, `chart-success-by-version`, `chart-cache-hit-rate`,
//! `chart-ttft-by-model`, `chart-ttft-by-task` (p50/p95 time to first token of the groups with
//! streamed replies).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use prompt_metrics::{AggregateStats, Overview};

/// One row of the report (a model, a task, a version, or all calls): its label and the
/// statistics prompt-metrics computed for it, the same figures `prompt metrics models|task|
/// versions` show.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Group {
    /// The group's label.
    pub key: String,
    /// The group's figures, from prompt-metrics.
    pub stats: AggregateStats,
}

impl Group {
    fn new(key: String, stats: AggregateStats) -> Self {
        Self { key, stats }
    }

    /// Calls.
    pub fn calls(&self) -> u64 {
        self.stats.total_calls
    }

    /// Calls that failed (an error, or a response that did not pass validation).
    pub fn failed(&self) -> u64 {
        failed(&self.stats)
    }

    /// Calls served from the cache.
    pub fn cache_hits(&self) -> u64 {
        cache_hits(&self.stats)
    }
}

/// Calls that did not succeed.
fn failed(s: &AggregateStats) -> u64 {
    s.total_calls.saturating_sub(s.successful_calls)
}

/// Calls served from the cache, back from the rate prompt-metrics gives (exact for any count
/// below 2^50).
fn cache_hits(s: &AggregateStats) -> u64 {
    (s.cache_hit_rate * s.total_calls as f64).round() as u64
}

/// Everything the report shows, as prompt-metrics computed it.
#[derive(Debug, Clone)]
pub struct ReportData {
    /// Days covered, today included.
    pub days: u32,
    /// When the report was made.
    pub generated_at: DateTime<Utc>,
    /// All records together.
    pub total: Group,
    /// Per UTC day, every day of the window present (days without calls are empty).
    pub per_day: BTreeMap<NaiveDate, AggregateStats>,
    /// Per model, most calls first.
    pub models: Vec<Group>,
    /// Per `agent/task`.
    pub tasks: Vec<Group>,
    /// Per `agent/task@vN` (records without a template version are left out).
    pub versions: Vec<Group>,
    /// Metrics lines that could not be read.
    pub skipped_lines: u64,
}

impl ReportData {
    /// The report of `overview` ([`prompt_metrics::JsonlStore::overview`] over `days` days
    /// ending at `now`).
    pub fn new(overview: Overview, days: u32, now: DateTime<Utc>) -> Self {
        let today = now.date_naive();
        let mut per_day = BTreeMap::new();
        for back in 0..i64::from(days.max(1)) {
            per_day.insert(today - Duration::days(back), AggregateStats::default());
        }
        for d in overview.days {
            per_day.insert(d.day, d.stats);
        }
        let skipped_lines = overview.total.skipped_lines;
        Self {
            days,
            generated_at: now,
            total: Group::new("all".to_owned(), overview.total),
            per_day,
            models: overview
                .models
                .into_iter()
                .map(|m| Group::new(m.model, m.stats))
                .collect(),
            tasks: overview
                .tasks
                .into_iter()
                .map(|t| Group::new(format!("{}/{}", t.agent, t.task), t.stats))
                .collect(),
            versions: overview
                .versions
                .into_iter()
                .filter_map(|v| {
                    let n = v.template_version?;
                    Some(Group::new(format!("{}/{}@v{n}", v.agent, v.task), v.stats))
                })
                .collect(),
            skipped_lines,
        }
    }
}

/// `text` escaped for HTML text and attribute values.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn ms(v: f64) -> String {
    crate::ui::millis(v)
}

fn pct(v: f64) -> String {
    crate::ui::percent(v)
}

/// A number for a `data-*` attribute: integers bare, others with 3 decimals at most.
fn num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// A "nice" axis maximum at or above `v`.
fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let exp = v.log10().floor();
    let base = 10f64.powf(exp);
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if v <= m * base {
            return m * base;
        }
    }
    10.0 * base
}

const W: f64 = 600.0;
const BLUE: &str = "#3b6fd8";
const RED: &str = "#d8453b";
const GREEN: &str = "#2f9e64";
const ORANGE: &str = "#e08a1e";
const GRAY: &str = "#8a94a6";

fn empty_note(out: &mut String, w: f64, h: f64) {
    let _ = write!(
        out,
        r##"<text x="{}" y="{}" text-anchor="middle" class="empty">no calls in this period</text>"##,
        w / 2.0,
        h / 2.0
    );
}

/// Calls per day: stacked bars of successes and errors.
fn chart_calls_per_day(data: &ReportData) -> String {
    let days: Vec<(&NaiveDate, &AggregateStats)> = data.per_day.iter().collect();
    let h = 260.0;
    let (left, right, top, bottom) = (44.0, 12.0, 14.0, 40.0);
    let max = nice_max(days.iter().map(|(_, d)| d.total_calls).max().unwrap_or(0) as f64);
    let plot_w = W - left - right;
    let plot_h = h - top - bottom;
    let slot = plot_w / days.len().max(1) as f64;
    let bar_w = (slot * 0.7).min(48.0);
    let mut s = format!(
        r#"<svg id="chart-calls-per-day" class="chart" viewBox="0 0 {W} {h}" role="img" aria-label="Calls per day" data-days="{}" data-total-calls="{}" data-total-errors="{}">"#,
        days.len(),
        data.total.calls(),
        data.total.failed()
    );
    let ticks = if (max / 5.0).fract() == 0.0 { 5 } else { 4 };
    for i in 0..=ticks {
        let v = max * f64::from(i) / f64::from(ticks);
        let y = top + plot_h - plot_h * f64::from(i) / f64::from(ticks);
        let _ = write!(
            s,
            r#"<line x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}" class="grid"/><text x="{}" y="{:.1}" text-anchor="end" class="tick">{}</text>"#,
            W - right,
            left - 6.0,
            y + 4.0,
            num(v)
        );
    }
    let label_every = (days.len() / 10).max(1);
    for (i, (date, day)) in days.iter().enumerate() {
        let x = left + slot * i as f64 + (slot - bar_w) / 2.0;
        let (calls, errors, hits) = (day.total_calls, failed(day), cache_hits(day));
        let ok_h = plot_h * (calls - errors) as f64 / max;
        let err_h = plot_h * errors as f64 / max;
        let base = top + plot_h;
        let _ = write!(
            s,
            r#"<g class="bar" data-day="{date}" data-calls="{}" data-errors="{}" data-cache-hits="{}"><title>{date}: {} calls, {} errors, {} cache hits</title><rect x="{x:.1}" y="{:.1}" width="{bar_w:.1}" height="{ok_h:.1}" fill="{BLUE}"/><rect x="{x:.1}" y="{:.1}" width="{bar_w:.1}" height="{err_h:.1}" fill="{RED}"/>"#,
            calls,
            errors,
            hits,
            calls,
            errors,
            hits,
            base - ok_h,
            base - ok_h - err_h
        );
        if calls > 0 {
            let _ = write!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" class="value">{}</text>"#,
                x + bar_w / 2.0,
                base - ok_h - err_h - 4.0,
                calls
            );
        }
        if i % label_every == 0 || i + 1 == days.len() {
            let _ = write!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" class="tick">{}</text>"#,
                x + bar_w / 2.0,
                base + 16.0,
                date.format("%b %d")
            );
        }
        s.push_str("</g>");
    }
    let _ = write!(
        s,
        r#"<g class="legend"><rect x="{left}" y="{}" width="10" height="10" fill="{BLUE}"/><text x="{}" y="{}" class="tick">succeeded</text><rect x="{}" y="{}" width="10" height="10" fill="{RED}"/><text x="{}" y="{}" class="tick">failed</text></g>"#,
        h - 14.0,
        left + 14.0,
        h - 5.0,
        left + 90.0,
        h - 14.0,
        left + 104.0,
        h - 5.0
    );
    if data.total.calls() == 0 {
        empty_note(&mut s, W, h);
    }
    s.push_str("</svg>");
    s
}

/// Latency distribution per model: box (p25–p75), median, p95 tick, whiskers min–max.
fn chart_latency_by_model(data: &ReportData) -> String {
    let row_h = 44.0;
    let (left, right, top, bottom) = (150.0, 24.0, 10.0, 34.0);
    let h = top + bottom + row_h * data.models.len().max(1) as f64;
    let max = nice_max(
        data.models
            .iter()
            .map(|g| g.stats.max_latency_ms)
            .fold(0.0, f64::max),
    );
    let plot_w = W - left - right;
    let xs = |v: f64| left + plot_w * v / max;
    let mut s = format!(
        r#"<svg id="chart-latency-by-model" class="chart" viewBox="0 0 {W} {h}" role="img" aria-label="Latency distribution per model" data-models="{}" data-max-ms="{}">"#,
        data.models.len(),
        num(max)
    );
    for i in 0..=4 {
        let v = max * f64::from(i) / 4.0;
        let x = xs(v);
        let _ = write!(
            s,
            r#"<line x1="{x:.1}" x2="{x:.1}" y1="{top}" y2="{:.1}" class="grid"/><text x="{x:.1}" y="{:.1}" text-anchor="middle" class="tick">{}</text>"#,
            h - bottom,
            h - bottom + 16.0,
            esc(&ms(v))
        );
    }
    for (i, g) in data.models.iter().enumerate() {
        let cy = top + row_h * i as f64 + row_h / 2.0;
        let st = &g.stats;
        let (min, p25, p50, p75, p95, max_ms) = (
            st.min_latency_ms,
            st.p25_latency_ms,
            st.p50_latency_ms,
            st.p75_latency_ms,
            st.p95_latency_ms,
            st.max_latency_ms,
        );
        let _ = write!(
            s,
            r#"<g class="box" data-model="{}" data-calls="{}" data-min-ms="{}" data-p50-ms="{}" data-p95-ms="{}" data-max-ms="{}"><title>{}: {} calls, median {}, p95 {}, max {}</title><text x="{:.1}" y="{:.1}" text-anchor="end" class="label">{}</text><line x1="{:.1}" x2="{:.1}" y1="{cy:.1}" y2="{cy:.1}" stroke="{GRAY}" stroke-width="1.5"/><rect x="{:.1}" y="{:.1}" width="{:.1}" height="22" rx="2" fill="{BLUE}" fill-opacity="0.35" stroke="{BLUE}"/><line x1="{:.1}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="{BLUE}" stroke-width="3"/><line x1="{:.1}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="{ORANGE}" stroke-width="2.5"/></g>"#,
            esc(&g.key),
            g.calls(),
            num(min),
            num(p50),
            num(p95),
            num(max_ms),
            esc(&g.key),
            g.calls(),
            esc(&ms(p50)),
            esc(&ms(p95)),
            esc(&ms(max_ms)),
            left - 8.0,
            cy + 4.0,
            esc(&truncate(&g.key, 22)),
            xs(min),
            xs(max_ms),
            xs(p25),
            cy - 11.0,
            (xs(p75) - xs(p25)).max(1.5),
            xs(p50),
            xs(p50),
            cy - 12.0,
            cy + 12.0,
            xs(p95),
            xs(p95),
            cy - 15.0,
            cy + 15.0,
        );
    }
    if data.models.is_empty() {
        empty_note(&mut s, W, h);
    }
    let _ = write!(
        s,
        r#"<g class="legend"><rect x="{left}" y="{}" width="14" height="9" fill="{BLUE}" fill-opacity="0.35" stroke="{BLUE}"/><text x="{}" y="{}" class="tick">p25–p75, median</text><rect x="{}" y="{}" width="3" height="12" fill="{ORANGE}"/><text x="{}" y="{}" class="tick">p95</text><text x="{}" y="{}" class="tick">whiskers: min–max</text></g>"#,
        h - 12.0,
        left + 18.0,
        h - 4.0,
        left + 140.0,
        h - 14.0,
        left + 148.0,
        h - 4.0,
        left + 200.0,
        h - 4.0
    );
    s.push_str("</svg>");
    s
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut t: String = text.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

/// A time in milliseconds that may be unknown (`-`).
fn opt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), ms)
}

/// Time to first token: per group with streamed replies, a bar to the p95 with the p50 inside.
fn chart_ttft(id: &str, label: &str, groups: &[Group]) -> String {
    let streamed: Vec<(&Group, f64, f64)> = groups
        .iter()
        .filter_map(|g| {
            let p50 = g.stats.p50_time_to_first_token_ms?;
            let p95 = g.stats.p95_time_to_first_token_ms?;
            Some((g, p50, p95))
        })
        .collect();
    let row_h = 28.0;
    let (left, right, top, bottom) = (230.0, 120.0, 8.0, 30.0);
    let h = top + bottom + row_h * streamed.len().max(1) as f64;
    let max = nice_max(streamed.iter().map(|r| r.2).fold(0.0, f64::max));
    let plot_w = W - left - right;
    let mut s = format!(
        r#"<svg id="{id}" class="chart" viewBox="0 0 {W} {h}" role="img" aria-label="{label}" data-groups="{}">"#,
        streamed.len()
    );
    for (i, (g, p50, p95)) in streamed.iter().enumerate() {
        let y = top + row_h * i as f64;
        let text = format!("p50 {} · p95 {}", ms(*p50), ms(*p95));
        let _ = write!(
            s,
            r#"<g class="bar" data-key="{}" data-streamed-calls="{}" data-ttft-p50-ms="{}" data-ttft-p95-ms="{}"><title>{}: time to first token {} ({} streamed calls)</title><text x="{:.1}" y="{:.1}" text-anchor="end" class="label">{}</text><rect x="{left}" y="{:.1}" width="{plot_w:.1}" height="18" class="track"/><rect x="{left}" y="{:.1}" width="{:.1}" height="18" fill="{BLUE}" fill-opacity="0.35"/><rect x="{left}" y="{:.1}" width="{:.1}" height="18" fill="{BLUE}"/><text x="{:.1}" y="{:.1}" class="value">{}</text></g>"#,
            esc(&g.key),
            g.stats.streamed_calls,
            num(*p50),
            num(*p95),
            esc(&g.key),
            esc(&text),
            g.stats.streamed_calls,
            left - 8.0,
            y + 14.0,
            esc(&truncate(&g.key, 34)),
            y + 2.0,
            y + 2.0,
            (plot_w * p95 / max).max(if *p95 > 0.0 { 2.0 } else { 0.0 }),
            y + 2.0,
            (plot_w * p50 / max).max(if *p50 > 0.0 { 2.0 } else { 0.0 }),
            left + plot_w + 6.0,
            y + 15.0,
            esc(&text)
        );
    }
    if streamed.is_empty() {
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle" class="empty">no streamed replies in this period</text>"#,
            W / 2.0,
            h / 2.0
        );
    } else {
        let _ = write!(
            s,
            r#"<g class="legend"><rect x="{left}" y="{}" width="14" height="9" fill="{BLUE}"/><text x="{}" y="{}" class="tick">p50</text><rect x="{}" y="{}" width="14" height="9" fill="{BLUE}" fill-opacity="0.35"/><text x="{}" y="{}" class="tick">p95 (over streamed calls only)</text></g>"#,
            h - 14.0,
            left + 18.0,
            h - 5.0,
            left + 60.0,
            h - 14.0,
            left + 78.0,
            h - 5.0
        );
    }
    s.push_str("</svg>");
    s
}

/// What a horizontal bar chart shows of each group.
#[derive(Clone, Copy)]
enum Measure {
    P95,
    SuccessRate,
    Cost,
}

fn chart_bars(id: &str, label: &str, groups: &[Group], measure: Measure) -> String {
    let row_h = 28.0;
    let (left, right, top, bottom) = (230.0, 64.0, 8.0, 10.0);
    let h = top + bottom + row_h * groups.len().max(1) as f64;
    let value = |g: &Group| match measure {
        Measure::P95 => g.stats.p95_latency_ms,
        Measure::SuccessRate => g.stats.success_rate,
        Measure::Cost => g.stats.total_cost_usd,
    };
    let max = match measure {
        Measure::P95 | Measure::Cost => nice_max(groups.iter().map(value).fold(0.0, f64::max)),
        Measure::SuccessRate => 1.0,
    };
    let plot_w = W - left - right;
    let mut s = format!(
        r#"<svg id="{id}" class="chart" viewBox="0 0 {W} {h}" role="img" aria-label="{label}" data-groups="{}">"#,
        groups.len()
    );
    for (i, g) in groups.iter().enumerate() {
        let y = top + row_h * i as f64;
        let v = value(g);
        let w = plot_w * v / max;
        let (text, color) = match measure {
            Measure::P95 => (ms(v), BLUE),
            Measure::Cost => (crate::ui::usd(v), ORANGE),
            Measure::SuccessRate => (
                pct(v),
                if v >= 0.95 {
                    GREEN
                } else if v >= 0.8 {
                    ORANGE
                } else {
                    RED
                },
            ),
        };
        let _ = write!(
            s,
            r#"<g class="bar" data-key="{}" data-calls="{}" data-p95-ms="{}" data-success-rate="{}" data-cost-usd="{}"><title>{}: {} ({} calls)</title><text x="{:.1}" y="{:.1}" text-anchor="end" class="label">{}</text><rect x="{left}" y="{:.1}" width="{plot_w:.1}" height="18" class="track"/><rect x="{left}" y="{:.1}" width="{:.1}" height="18" fill="{color}"/><text x="{:.1}" y="{:.1}" class="value">{}</text></g>"#,
            esc(&g.key),
            g.calls(),
            num(g.stats.p95_latency_ms),
            num(g.stats.success_rate),
            num(g.stats.total_cost_usd),
            esc(&g.key),
            esc(&text),
            g.calls(),
            left - 8.0,
            y + 14.0,
            esc(&truncate(&g.key, 34)),
            y + 2.0,
            y + 2.0,
            w.max(if v > 0.0 { 2.0 } else { 0.0 }),
            left + plot_w + 6.0,
            y + 15.0,
            esc(&text)
        );
    }
    if groups.is_empty() {
        empty_note(&mut s, W, h);
    }
    s.push_str("</svg>");
    s
}

/// Cache hit rate: a donut of the whole period plus bars per task.
fn chart_cache(data: &ReportData) -> String {
    let h = 200.0;
    let rate = data.total.stats.cache_hit_rate;
    let (cx, cy, r) = (100.0, 100.0, 70.0);
    let circumference = 2.0 * std::f64::consts::PI * r;
    let mut s = format!(
        r##"<svg id="chart-cache-hit-rate" class="chart" viewBox="0 0 {W} {h}" role="img" aria-label="Cache hit rate" data-hit-rate="{}" data-hits="{}" data-calls="{}"><circle cx="{cx}" cy="{cy}" r="{r}" fill="none" stroke="#e3e8f0" stroke-width="24"/><circle cx="{cx}" cy="{cy}" r="{r}" fill="none" stroke="{GREEN}" stroke-width="24" stroke-dasharray="{:.2} {:.2}" transform="rotate(-90 {cx} {cy})"/><text x="{cx}" y="{}" text-anchor="middle" class="big">{}</text><text x="{cx}" y="{}" text-anchor="middle" class="tick">{} of {} calls</text>"##,
        num(rate),
        data.total.cache_hits(),
        data.total.calls(),
        circumference * rate,
        circumference,
        cy + 6.0,
        esc(&pct(rate)),
        cy + 24.0,
        data.total.cache_hits(),
        data.total.calls()
    );
    let rows: Vec<&Group> = data.tasks.iter().take(6).collect();
    let (left, plot_w) = (400.0, 140.0);
    let _ = write!(
        s,
        r#"<text x="210" y="20" class="label">per agent/task</text>"#
    );
    for (i, g) in rows.iter().enumerate() {
        let y = 34.0 + 26.0 * i as f64;
        let v = g.stats.cache_hit_rate;
        let _ = write!(
            s,
            r#"<g class="bar" data-key="{}" data-hit-rate="{}" data-hits="{}" data-calls="{}"><text x="{}" y="{:.1}" text-anchor="end" class="label">{}</text><rect x="{left}" y="{:.1}" width="{plot_w}" height="16" class="track"/><rect x="{left}" y="{:.1}" width="{:.1}" height="16" fill="{GREEN}"/><text x="{:.1}" y="{:.1}" class="value">{}</text></g>"#,
            esc(&g.key),
            num(v),
            g.cache_hits(),
            g.calls(),
            left - 8.0,
            y + 12.0,
            esc(&truncate(&g.key, 30)),
            y,
            y,
            plot_w * v,
            left + plot_w + 6.0,
            y + 12.0,
            esc(&pct(v))
        );
    }
    s.push_str("</svg>");
    s
}

fn group_table(title: &str, id: &str, groups: &[Group]) -> String {
    let mut s = format!(
        r#"<table id="{id}"><caption>{}</caption><thead><tr><th>{}</th><th>calls</th><th>success</th><th>cache hits</th><th>avg</th><th>p50</th><th>p95</th><th>p99</th><th>max</th><th>tokens</th><th>cost</th><th>saved</th><th>ttft p50</th><th>ttft p95</th><th>tok/s</th></tr></thead><tbody>"#,
        esc(title),
        esc(title)
    );
    for g in groups {
        let st = &g.stats;
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&g.key),
            st.total_calls,
            pct(st.success_rate),
            pct(st.cache_hit_rate),
            esc(&ms(st.avg_latency_ms)),
            esc(&ms(st.p50_latency_ms)),
            esc(&ms(st.p95_latency_ms)),
            esc(&ms(st.p99_latency_ms)),
            esc(&ms(st.max_latency_ms)),
            st.total_tokens_used,
            esc(&crate::ui::usd(st.total_cost_usd)),
            esc(&crate::ui::usd(st.saved_usd)),
            esc(&opt_ms(st.p50_time_to_first_token_ms)),
            esc(&opt_ms(st.p95_time_to_first_token_ms)),
            st.avg_tokens_per_second
                .map_or_else(|| "-".to_owned(), |v| format!("{v:.1}")),
        );
    }
    if groups.is_empty() {
        s.push_str(r#"<tr><td colspan="15" class="empty">no calls in this period</td></tr>"#);
    }
    s.push_str("</tbody></table>");
    s
}

fn day_table(data: &ReportData) -> String {
    let mut s = String::from(
        r#"<table id="table-calls-per-day"><caption>Calls per day (UTC)</caption><thead><tr><th>day</th><th>calls</th><th>failed</th><th>cache hits</th><th>cost</th><th>saved</th></tr></thead><tbody>"#,
    );
    for (date, d) in data.per_day.iter().rev() {
        let _ = write!(
            s,
            "<tr><td>{date}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            d.total_calls,
            failed(d),
            cache_hits(d),
            esc(&crate::ui::usd(d.total_cost_usd)),
            esc(&crate::ui::usd(d.saved_usd))
        );
    }
    s.push_str("</tbody></table>");
    s
}

/// The stylesheet of the HTML pages (the metrics report, the eval matrix).
pub(crate) const CSS: &str = r#"
:root{--fg:#1d2433;--muted:#5b6476;--bg:#f5f7fb;--card:#fff;--line:#e3e8f0}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 -apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:var(--fg);background:var(--bg)}
header{padding:24px 32px 8px}
h1{margin:0 0 4px;font-size:24px}
h2{margin:0 0 10px;font-size:16px}
.sub{color:var(--muted)}
main{padding:8px 32px 32px}
.cards{display:grid;grid-template-columns:repeat(6,1fr);gap:14px;margin-bottom:18px}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:14px 16px}
.card .v{font-size:24px;font-weight:650}
.card .k{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:16px;margin-bottom:16px}
section{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:16px 18px}
svg.chart{width:100%;height:auto;display:block}
svg .grid{stroke:var(--line);stroke-width:1}
svg .tick{font-size:11px;fill:var(--muted)}
svg .label{font-size:12px;fill:var(--fg)}
svg .value{font-size:11px;fill:var(--fg);font-weight:600}
svg .big{font-size:22px;font-weight:700;fill:var(--fg)}
svg .empty{font-size:13px;fill:var(--muted)}
svg .track{fill:#eef1f6}
table{border-collapse:collapse;width:100%;margin:8px 0 18px;font-size:13px;background:var(--card)}
caption{text-align:left;font-weight:650;padding:6px 0}
th,td{padding:5px 8px;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}
th{color:var(--muted);font-weight:600;font-size:12px}
td.empty{text-align:center;color:var(--muted)}
.tables{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:8px 18px}
footer{color:var(--muted);font-size:12px;padding:0 32px 24px}
"#;

/// Renders the report as one HTML document.
pub fn render_html(data: &ReportData) -> String {
    let t = &data.total;
    let mut s = String::with_capacity(32 * 1024);
    let _ = write!(
        s,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>promptkit report — last {days} day(s)</title><style>{CSS}</style></head>
<body data-total-calls="{calls}" data-days="{days}">
<header><h1>promptkit metrics report</h1><div class="sub">Last {days} day(s), up to {generated} UTC · {calls} calls{skipped}</div></header>
<main>
<div class="cards">
<div class="card"><div class="k">calls</div><div class="v" id="total-calls">{calls}</div></div>
<div class="card"><div class="k">success rate</div><div class="v">{success}</div></div>
<div class="card"><div class="k">p95 latency</div><div class="v">{p95}</div></div>
<div class="card"><div class="k">cache hit rate</div><div class="v">{hit}</div></div>
<div class="card"><div class="k">tokens</div><div class="v">{tokens}</div></div>
<div class="card"><div class="k">cost</div><div class="v" id="total-cost" title="saved by the cache: {saved}">{cost}</div></div>
</div>
"#,
        days = data.days,
        generated = data.generated_at.format("%Y-%m-%d %H:%M"),
        calls = t.calls(),
        skipped = if data.skipped_lines > 0 {
            format!(" · {} unreadable line(s) skipped", data.skipped_lines)
        } else {
            String::new()
        },
        success = pct(t.stats.success_rate),
        p95 = esc(&ms(t.stats.p95_latency_ms)),
        hit = pct(t.stats.cache_hit_rate),
        tokens = t.stats.total_tokens_used,
        cost = esc(&crate::ui::usd(t.stats.total_cost_usd)),
        saved = esc(&crate::ui::usd(t.stats.saved_usd)),
    );
    let _ = write!(
        s,
        r#"<div class="grid2"><section><h2>Calls per day</h2>{}</section><section><h2>Latency distribution per model</h2>{}</section></div>
<div class="grid2"><section><h2>p95 latency per agent/task</h2>{}</section><section><h2>Success rate per agent/task</h2>{}</section></div>
<div class="grid2"><section><h2>p95 latency per template version</h2>{}</section><section><h2>Success rate per template version</h2>{}</section></div>
<div class="grid2"><section><h2>Time to first token per model</h2>{}</section><section><h2>Time to first token per agent/task</h2>{}</section></div>
<div class="grid2"><section><h2>Cache hit rate</h2>{}</section><section><h2>Per day</h2>{}</section></div>
<div class="grid2"><section><h2>Cost per model</h2>{}</section><section><h2>Cost per template version</h2>{}</section></div>
<div class="tables">{}{}{}</div>
</main>
<footer>Generated by <code>prompt metrics report</code>. Latencies are per call; cache hits count as calls. Every figure comes from prompt-metrics, as <code>prompt metrics models|task|versions</code> show it: a call succeeds when it has no error and passed validation; a percentile p is the latency at index min(⌊n·p⌋, n−1) of the n latencies sorted. Time to first token (ttft) is from sending the request to the first piece of a streamed reply; its percentiles follow the same rule over the streamed calls only (calls whose reply was not streamed have none). tok/s is the mean of the calls' completion tokens over their generation time after the first token.</footer>
</body></html>
"#,
        chart_calls_per_day(data),
        chart_latency_by_model(data),
        chart_bars(
            "chart-p95-by-task",
            "p95 latency per agent/task",
            &data.tasks,
            Measure::P95
        ),
        chart_bars(
            "chart-success-by-task",
            "Success rate per agent/task",
            &data.tasks,
            Measure::SuccessRate
        ),
        chart_bars(
            "chart-p95-by-version",
            "p95 latency per template version",
            &data.versions,
            Measure::P95
        ),
        chart_bars(
            "chart-success-by-version",
            "Success rate per template version",
            &data.versions,
            Measure::SuccessRate
        ),
        chart_ttft(
            "chart-ttft-by-model",
            "Time to first token per model",
            &data.models
        ),
        chart_ttft(
            "chart-ttft-by-task",
            "Time to first token per agent/task",
            &data.tasks
        ),
        chart_cache(data),
        day_table(data),
        chart_bars(
            "chart-cost-by-model",
            "Cost per model",
            &data.models,
            Measure::Cost
        ),
        chart_bars(
            "chart-cost-by-version",
            "Cost per template version",
            &data.versions,
            Measure::Cost
        ),
        group_table("model", "table-models", &data.models),
        group_table("agent/task", "table-tasks", &data.tasks),
        group_table("template version", "table-versions", &data.versions),
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use prompt_metrics::{JsonlStore, MetricsSink, PromptMetrics};

    struct Rec<'a> {
        day_offset: i64,
        model: &'a str,
        task: &'a str,
        latency: f64,
        ok: bool,
        hit: bool,
    }

    fn rec<'a>(
        day_offset: i64,
        model: &'a str,
        task: &'a str,
        latency: f64,
        ok: bool,
        hit: bool,
    ) -> Rec<'a> {
        Rec {
            day_offset,
            model,
            task,
            latency,
            ok,
            hit,
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-20T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    /// The report of `records`, written to a metrics directory and read back by prompt-metrics.
    fn data<'a>(records: impl IntoIterator<Item = Rec<'a>>, days: u32) -> ReportData {
        let dir = tempfile::tempdir().unwrap();
        let store = JsonlStore::open(dir.path()).unwrap().with_clock(now);
        for r in records {
            let mut m = PromptMetrics::new("h", "writer", r.task, r.model, 0.7, r.latency);
            m.timestamp = now() - Duration::days(r.day_offset);
            m.error = (!r.ok).then(|| "failed".to_owned());
            m.cache_hit = r.hit;
            m.template_version = Some(1);
            m.tokens_prompt = Some(10);
            store.record(m).unwrap();
        }
        store.flush().unwrap();
        ReportData::new(store.overview(days).unwrap(), days, now())
    }

    #[test]
    fn cost_is_shown_per_day_model_and_template_version() {
        let dir = tempfile::tempdir().unwrap();
        let store = JsonlStore::open(dir.path()).unwrap().with_clock(now);
        for (model, version, cost, saved) in [
            ("gpt-4o", 1, 0.25, None),
            ("gpt-4o", 2, 0.0, Some(0.25)),
            ("qwen3:30b", 2, 0.0, None),
        ] {
            let mut m = PromptMetrics::new("h", "writer", "t", model, 0.7, 100.0);
            m.timestamp = now() - Duration::hours(1);
            m.template_version = Some(version);
            m.cost_usd = Some(cost);
            m.saved_usd = saved;
            m.cache_hit = saved.is_some();
            store.record(m).unwrap();
        }
        store.flush().unwrap();
        let data = ReportData::new(store.overview(2).unwrap(), 2, now());
        let html = render_html(&data);
        assert!(html.contains(r#"<svg id="chart-cost-by-model""#));
        assert!(html.contains(r#"<svg id="chart-cost-by-version""#));
        assert!(html.contains(r#"id="total-cost" title="saved by the cache: $0.2500">$0.2500<"#));
        assert!(
            html.contains(r#"data-key="gpt-4o" data-calls="2" data-p95-ms="100" data-success-rate="1" data-cost-usd="0.25""#),
            "{html}"
        );
        assert!(html.contains(r#"data-key="writer/t@v2""#));
        // Per day: today's row carries the cost and the savings.
        assert!(
            html.contains("<tr><td>2026-01-20</td><td>3</td><td>0</td><td>1</td><td>$0.2500</td><td>$0.2500</td></tr>"),
            "{html}"
        );
    }

    #[test]
    fn aggregates_and_percentiles() {
        let records = (1..=100).map(|i| rec(0, "m", "t", f64::from(i), i % 10 != 0, i % 4 == 0));
        let data = data(records, 3);
        assert_eq!(data.per_day.len(), 3);
        assert_eq!(data.total.calls(), 100);
        // The Python original's rule: index floor(100 * 0.95) = 95 of the sorted latencies.
        assert_eq!(data.total.stats.p95_latency_ms, 96.0);
        assert_eq!(data.total.stats.p50_latency_ms, 51.0);
        assert!((data.total.stats.success_rate - 0.9).abs() < 1e-9);
        assert_eq!(data.total.failed(), 10);
        assert_eq!(data.total.cache_hits(), 25);
        assert_eq!(data.total.stats.total_tokens_used, 1_000);
        assert_eq!(data.versions[0].key, "writer/t@v1");
    }

    #[test]
    fn html_has_every_chart_fed_with_the_data() {
        let records = vec![
            rec(0, "qwen3:30b", "write_chapter", 1200.0, true, false),
            rec(0, "qwen3:30b", "write_chapter", 10.0, true, true),
            rec(1, "dolphin<3>", "write_scene", 800.0, false, false),
        ];
        let html = render_html(&data(records, 7));
        for id in [
            "chart-calls-per-day",
            "chart-latency-by-model",
            "chart-p95-by-task",
            "chart-success-by-task",
            "chart-p95-by-version",
            "chart-success-by-version",
            "chart-cache-hit-rate",
            "chart-ttft-by-model",
            "chart-ttft-by-task",
        ] {
            assert!(html.contains(&format!(r#"<svg id="{id}""#)), "{id}");
        }
        assert!(html.contains(r#"data-total-calls="3""#));
        assert!(html.contains(r#"data-day="2026-01-20" data-calls="2" data-errors="0""#));
        assert!(html.contains(r#"data-day="2026-01-19" data-calls="1" data-errors="1""#));
        assert!(html.contains(r#"data-model="dolphin&lt;3&gt;""#));
        assert!(html.contains(r#"data-key="writer/write_scene" data-calls="1""#));
        assert!(html.contains(
            r#"data-model="qwen3:30b" data-calls="2" data-min-ms="10" data-p50-ms="1200" data-p95-ms="1200" data-max-ms="1200""#
        ));
        assert!(!html.contains("<script"));
        assert!(!html.contains("http://") && !html.contains("https://"));
    }

    #[test]
    fn ttft_is_shown_per_model_and_task_over_streamed_calls_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = JsonlStore::open(dir.path()).unwrap().with_clock(now);
        // qwen3: TTFT 100..=2000 ms on 20 streamed calls, plus 5 calls not streamed.
        for i in 1..=20 {
            let ttft = f64::from(i) * 100.0;
            let mut m =
                PromptMetrics::new("h", "writer", "write_chapter", "qwen3", 0.7, ttft + 2000.0);
            m.timestamp = now();
            m.tokens_completion = Some(100);
            m.set_stream_timing(Some(ttft), ttft + 2000.0);
            store.record(m).unwrap();
        }
        for _ in 0..5 {
            let mut m = PromptMetrics::new("h", "writer", "write_chapter", "qwen3", 0.7, 90_000.0);
            m.timestamp = now();
            store.record(m).unwrap();
        }
        // llama: never streamed.
        let mut m = PromptMetrics::new("h", "editor", "edit", "llama", 0.7, 500.0);
        m.timestamp = now();
        store.record(m).unwrap();
        store.flush().unwrap();
        let html = render_html(&ReportData::new(store.overview(1).unwrap(), 1, now()));

        let chart = &html[html.find(r#"<svg id="chart-ttft-by-model""#).unwrap()..];
        let chart = &chart[..chart.find("</svg>").unwrap()];
        assert!(chart.contains(r#"data-groups="1""#), "{chart}");
        assert!(
            chart.contains(r#"data-key="qwen3" data-streamed-calls="20" data-ttft-p50-ms="1100" data-ttft-p95-ms="2000""#),
            "{chart}"
        );
        assert!(!chart.contains("llama"));
        assert!(html.contains(r#"<svg id="chart-ttft-by-task""#));
        assert!(html.contains(r#"data-key="writer/write_chapter" data-streamed-calls="20""#));

        // The tables: p50, p95 and tok/s last; `-` for a group never streamed.
        let row = |table: &str, key: &str| -> Vec<String> {
            let t = &html[html.find(&format!(r#"<table id="{table}""#)).unwrap()..];
            let r = &t[t.find(&format!("<td>{key}</td>")).unwrap()..];
            let r = &r[..r.find("</tr>").unwrap()];
            r.split("<td>")
                .skip(1)
                .map(|c| c.trim_end_matches("</td>").to_owned())
                .collect()
        };
        let qwen = row("table-models", "qwen3");
        assert_eq!(qwen.len(), 15);
        assert_eq!(qwen[12..], ["1.10 s", "2.00 s", "50.0"]);
        assert_eq!(row("table-models", "llama")[12..], ["-", "-", "-"]);
        assert_eq!(
            row("table-tasks", "writer/write_chapter")[12..],
            ["1.10 s", "2.00 s", "50.0"]
        );
    }

    #[test]
    fn empty_report_still_renders() {
        let html = render_html(&ReportData::new(Overview::default(), 7, now()));
        assert!(html.contains("no calls in this period"));
        assert!(html.contains("no streamed replies in this period"));
        assert!(html.contains(r#"data-total-calls="0""#));
    }
}
