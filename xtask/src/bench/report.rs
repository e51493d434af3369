//! The rows of the comparison: which measurement is ours and which the peer's, the target,
//! the verdict, and the table and JSON they are shown as.

use std::fmt::Write as _;

use serde_json::{Value, json};

/// What a row must achieve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Target {
    /// No target: the figure is reported for information.
    None,
    /// Ours at most this many nanoseconds.
    AtMost(f64),
    /// Peer ÷ ours at least this ratio.
    RatioAtLeast(f64),
    /// Both of the above.
    Both(f64, f64),
}

impl Target {
    pub(crate) fn describe(self) -> String {
        match self {
            Target::None => "—".to_owned(),
            Target::AtMost(ns) => format!("≤ {}", format_round(ns)),
            Target::RatioAtLeast(r) if (r - 1.0).abs() < f64::EPSILON => {
                "≥ 1× (not slower)".to_owned()
            }
            Target::RatioAtLeast(r) => format!("≥ {r}× peer"),
            Target::Both(ns, r) => format!("≤ {}, ≥ {r}× peer", format_round(ns)),
        }
    }
}

/// How a row's figure is measured and shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    /// Time per operation: the criterion mean per iteration, shown in ns, µs, ms or s.
    Time,
    /// A rate of the named items (`"deltas"`): the figure is the time per item (the criterion
    /// mean divided by the bench's `Throughput::Elements`), shown as items per second. A
    /// target of such a row is a time per item.
    PerSecond(&'static str),
}

impl Unit {
    /// The unit's name in the JSON summary: `"time"` or `"<items>/s"`.
    pub(crate) fn label(self) -> String {
        match self {
            Unit::Time => "time".to_owned(),
            Unit::PerSecond(items) => format!("{items}/s"),
        }
    }

    /// `ns` (a time per operation or per item) as this unit shows it.
    pub(crate) fn format(self, ns: f64) -> String {
        match self {
            Unit::Time => format_auto(ns),
            Unit::PerSecond(items) => format!("{} {items}/s", format_rate(ns)),
        }
    }
}

/// Where a row's peer figure comes from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerRef {
    /// Peer script (its results file is keyed by this).
    pub(crate) script: &'static str,
    /// Name of the workload in the script's results.
    pub(crate) result: &'static str,
    /// Short name shown in the table.
    pub(crate) label: &'static str,
}

/// One row of the table, before measuring.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RowSpec {
    pub(crate) id: &'static str,
    pub(crate) workload: &'static str,
    /// The crate whose bench measures our side.
    pub(crate) package: &'static str,
    /// Criterion ids summed to make our figure; `a|b` accepts either name.
    pub(crate) ours: &'static [&'static str],
    /// Criterion ids whose means are subtracted from the sum of `ours`: the row is then the
    /// cost of one path over a baseline measured in the same run (time rows only).
    pub(crate) minus: &'static [&'static str],
    /// How the figure is measured and shown.
    pub(crate) unit: Unit,
    pub(crate) peer: Option<PeerRef>,
    pub(crate) target: Target,
    /// Only measured in full runs (the 1M-record data set).
    pub(crate) full_only: bool,
}

const JINJA_COMPILE: PeerRef = PeerRef {
    script: "templates_peer.py",
    result: "jinja2_compile",
    label: "Jinja2 compile",
};
const JINJA_RENDER: PeerRef = PeerRef {
    script: "templates_peer.py",
    result: "jinja2_render",
    label: "Jinja2",
};
const SHA256: PeerRef = PeerRef {
    script: "cache_peer.py",
    result: "sha256",
    label: "hashlib",
};
const DC_GET: PeerRef = PeerRef {
    script: "cache_peer.py",
    result: "diskcache_get_hit",
    label: "diskcache",
};
const DC_SHA_GET: PeerRef = PeerRef {
    script: "cache_peer.py",
    result: "diskcache_sha256_get",
    label: "diskcache",
};
const DC_MISS: PeerRef = PeerRef {
    script: "cache_peer.py",
    result: "diskcache_get_miss",
    label: "diskcache",
};
const DC_SET: PeerRef = PeerRef {
    script: "cache_peer.py",
    result: "diskcache_set",
    label: "diskcache",
};
const DC_OPEN: PeerRef = PeerRef {
    script: "cache_peer.py",
    result: "diskcache_open_10k",
    label: "diskcache open",
};
const fn duck(result: &'static str) -> PeerRef {
    PeerRef {
        script: "metrics_peer.py",
        result,
        label: "DuckDB",
    }
}

const US: f64 = 1e3;
const MS: f64 = 1e6;

/// Every row, in table order.
pub(crate) const ROWS: &[RowSpec] = &[
    RowSpec {
        id: "templates.cold_load",
        workload: "template cold load (open+parse+compile)",
        package: "prompt-templates",
        ours: &["templates/cold_load"],
        minus: &[],
        unit: Unit::Time,
        peer: Some(JINJA_COMPILE),
        target: Target::AtMost(100.0 * US),
        full_only: false,
    },
    RowSpec {
        id: "templates.warm_load",
        workload: "template warm load",
        package: "prompt-templates",
        ours: &["templates/warm_load"],
        minus: &[],
        unit: Unit::Time,
        peer: None,
        target: Target::AtMost(100.0),
        full_only: false,
    },
    RowSpec {
        id: "templates.render",
        workload: "render writer/write_chapter",
        package: "prompt-templates",
        ours: &["templates/render_write_chapter|templates/render"],
        minus: &[],
        unit: Unit::Time,
        peer: Some(JINJA_RENDER),
        target: Target::Both(3.0 * US, 4.0),
        full_only: false,
    },
    RowSpec {
        id: "cache.key_derivation",
        workload: "cache key derivation (2 KB + 1.5 KB)",
        package: "prompt-cache",
        ours: &["cache/key_derivation"],
        minus: &[],
        unit: Unit::Time,
        peer: Some(SHA256),
        target: Target::None,
        full_only: false,
    },
    RowSpec {
        id: "cache.get_hit",
        workload: "cache get hit (key given)",
        package: "prompt-cache",
        ours: &["cache/get_hit"],
        minus: &[],
        unit: Unit::Time,
        peer: Some(DC_GET),
        target: Target::AtMost(200.0),
        full_only: false,
    },
    RowSpec {
        id: "cache.get_hit_with_key",
        workload: "cache get hit incl. key derivation",
        package: "prompt-cache",
        ours: &["cache/key_derivation", "cache/get_hit"],
        minus: &[],
        unit: Unit::Time,
        peer: Some(DC_SHA_GET),
        target: Target::RatioAtLeast(5.0),
        full_only: false,
    },
    RowSpec {
        id: "cache.get_miss",
        workload: "cache get miss (memory, then disk)",
        package: "prompt-cache",
        ours: &["cache/get_miss"],
        minus: &[],
        unit: Unit::Time,
        peer: Some(DC_MISS),
        target: Target::None,
        full_only: false,
    },
    RowSpec {
        id: "cache.get_miss_memory_only",
        workload: "cache get miss, memory tier only",
        package: "prompt-cache",
        ours: &["cache/get_miss_memory_only"],
        minus: &[],
        unit: Unit::Time,
        peer: None,
        target: Target::None,
        full_only: false,
    },
    RowSpec {
        id: "cache.put",
        workload: "cache put (caller's thread)",
        package: "prompt-cache",
        ours: &["cache/put"],
        minus: &[],
        unit: Unit::Time,
        peer: Some(DC_SET),
        target: Target::AtMost(5.0 * US),
        full_only: false,
    },
    RowSpec {
        id: "cache.reload_10k",
        workload: "cache reload of 10k entries",
        package: "prompt-cache",
        ours: &["cache/reload_10k"],
        minus: &[],
        unit: Unit::Time,
        peer: Some(DC_OPEN),
        target: Target::AtMost(30.0 * MS),
        full_only: false,
    },
    RowSpec {
        id: "cache.put_full_cache_1k",
        workload: "cache put into a full cache, 1k entries",
        package: "prompt-cache",
        ours: &["cache/put_full_cache/1000"],
        minus: &[],
        unit: Unit::Time,
        peer: None,
        target: Target::AtMost(5.0 * US),
        full_only: false,
    },
    RowSpec {
        id: "cache.put_full_cache_10k",
        workload: "cache put into a full cache, 10k entries",
        package: "prompt-cache",
        ours: &["cache/put_full_cache/10000|cache/put_full_cache"],
        minus: &[],
        unit: Unit::Time,
        peer: None,
        target: Target::AtMost(5.0 * US),
        full_only: false,
    },
    RowSpec {
        id: "metrics.record",
        workload: "metrics record (caller's thread)",
        package: "prompt-metrics",
        ours: &["metrics/record"],
        minus: &[],
        unit: Unit::Time,
        peer: None,
        target: Target::AtMost(1.0 * US),
        full_only: false,
    },
    RowSpec {
        id: "metrics.record_sustained",
        workload: "metrics record, sustained (waits for the writer)",
        package: "prompt-metrics",
        ours: &["metrics/record_sustained"],
        minus: &[],
        unit: Unit::Time,
        peer: None,
        target: Target::None,
        full_only: false,
    },
    RowSpec {
        id: "metrics.agent_stats_100k",
        workload: "agent_stats, 100k records",
        package: "prompt-metrics",
        ours: &["metrics/agent_stats_100k|metrics/agent_stats/100k"],
        minus: &[],
        unit: Unit::Time,
        peer: Some(duck("duckdb_agent_stats_100k")),
        target: Target::None,
        full_only: false,
    },
    RowSpec {
        id: "metrics.model_comparison_100k",
        workload: "model_comparison, 100k records",
        package: "prompt-metrics",
        ours: &["metrics/model_comparison_100k|metrics/model_comparison/100k"],
        minus: &[],
        unit: Unit::Time,
        peer: Some(duck("duckdb_model_comparison_100k")),
        target: Target::None,
        full_only: false,
    },
    RowSpec {
        id: "metrics.agent_stats_1m",
        workload: "agent_stats, 1M records",
        package: "prompt-metrics",
        ours: &["metrics/agent_stats_1m|metrics/agent_stats/1m"],
        minus: &[],
        unit: Unit::Time,
        peer: Some(duck("duckdb_agent_stats_1m")),
        target: Target::RatioAtLeast(1.0),
        full_only: true,
    },
    RowSpec {
        id: "metrics.model_comparison_1m",
        workload: "model_comparison, 1M records",
        package: "prompt-metrics",
        ours: &["metrics/model_comparison_1m|metrics/model_comparison/1m"],
        minus: &[],
        unit: Unit::Time,
        peer: Some(duck("duckdb_model_comparison_1m")),
        target: Target::None,
        full_only: true,
    },
    RowSpec {
        id: "agent.template_hit",
        workload: "template agent overhead, cache hit",
        package: "prompt-agent",
        ours: &["agent/template_hit"],
        minus: &[],
        unit: Unit::Time,
        peer: None,
        target: Target::AtMost(20.0 * US),
        full_only: false,
    },
    RowSpec {
        id: "agent.template_miss",
        workload: "template agent overhead, cache miss",
        package: "prompt-agent",
        ours: &["agent/template_miss"],
        minus: &[],
        unit: Unit::Time,
        peer: None,
        target: Target::None,
        full_only: false,
    },
    RowSpec {
        id: "agent.concurrent_2_threads",
        workload: "template agent hits, 2 threads (wall time per call)",
        package: "prompt-agent",
        ours: &["agent/concurrent_2_threads"],
        minus: &[],
        unit: Unit::Time,
        peer: None,
        target: Target::None,
        full_only: false,
    },
    RowSpec {
        id: "agent.stream_hit_replay",
        workload: "streamed cache hit replayed (600 deltas)",
        package: "prompt-agent",
        ours: &["agent/stream_hit_replay"],
        minus: &[],
        unit: Unit::PerSecond("deltas"),
        peer: None,
        target: Target::None,
        full_only: false,
    },
    RowSpec {
        id: "agent.stream_call",
        workload: "streamed call, instant provider (600 deltas)",
        package: "prompt-agent",
        ours: &["agent/stream_call"],
        minus: &[],
        unit: Unit::Time,
        peer: None,
        target: Target::None,
        full_only: false,
    },
    RowSpec {
        id: "agent.whole_call",
        workload: "same call, streaming off (whole reply)",
        package: "prompt-agent",
        ours: &["agent/whole_call"],
        minus: &[],
        unit: Unit::Time,
        peer: None,
        target: Target::None,
        full_only: false,
    },
    RowSpec {
        id: "agent.stream_overhead",
        workload: "streaming overhead per call (streamed − whole)",
        package: "prompt-agent",
        ours: &["agent/stream_call"],
        minus: &["agent/whole_call"],
        unit: Unit::Time,
        peer: None,
        target: Target::None,
        full_only: false,
    },
];

/// A figure, or why there is none.
pub(crate) type Figure = Result<f64, String>;

/// The verdict on a row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Status {
    Pass,
    Short,
    /// No target to judge against.
    Info,
    /// A figure needed for the verdict is missing.
    NotAvailable,
    /// Not measured in this mode.
    Skipped,
}

impl Status {
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Short => "SHORT",
            Status::Info => "—",
            Status::NotAvailable => "n/a",
            Status::Skipped => "skipped",
        }
    }
}

/// A measured row.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) spec: RowSpec,
    pub(crate) ours: Figure,
    /// `None` when the row has no peer.
    pub(crate) peer: Option<Figure>,
    pub(crate) status: Status,
}

impl Row {
    pub(crate) fn new(spec: RowSpec, ours: Figure, peer: Option<Figure>, skipped: bool) -> Self {
        let status = if skipped {
            Status::Skipped
        } else {
            judge(spec.target, &ours, peer.as_ref())
        };
        Row {
            spec,
            ours,
            peer,
            status,
        }
    }

    pub(crate) fn ratio(&self) -> Option<f64> {
        match (&self.ours, &self.peer) {
            (Ok(ours), Some(Ok(peer))) if *ours > 0.0 => Some(peer / ours),
            _ => None,
        }
    }

    /// Why a figure of this row is missing, for the notes under the table.
    pub(crate) fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if let Err(why) = &self.ours {
            notes.push(format!("promptkit: {why}"));
        }
        if let Some(Err(why)) = &self.peer {
            notes.push(format!("peer: {why}"));
        }
        notes
    }

    pub(crate) fn to_json(&self) -> Value {
        json!({
            "id": self.spec.id,
            "workload": self.spec.workload,
            "unit": self.spec.unit.label(),
            "ours_ns": self.ours.as_ref().ok(),
            "ours_per_s": match self.spec.unit {
                Unit::PerSecond(_) => self.ours.as_ref().ok().filter(|ns| **ns > 0.0).map(|ns| 1e9 / ns),
                Unit::Time => None,
            },
            "ours_error": self.ours.as_ref().err(),
            "ours_criterion_ids": self.spec.ours,
            "ours_minus_criterion_ids": self.spec.minus,
            "peer": self.spec.peer.map(|p| p.label),
            "peer_ns": self.peer.as_ref().and_then(|p| p.as_ref().ok()),
            "peer_error": self.peer.as_ref().and_then(|p| p.as_ref().err()),
            "ratio_peer_over_ours": self.ratio(),
            "target": self.spec.target.describe(),
            "status": self.status.label(),
        })
    }
}

fn judge(target: Target, ours: &Figure, peer: Option<&Figure>) -> Status {
    let Ok(ours) = ours else {
        return Status::NotAvailable;
    };
    let ratio = match peer {
        Some(Ok(peer)) if *ours > 0.0 => Some(peer / ours),
        _ => None,
    };
    let checks: Vec<Option<bool>> = match target {
        Target::None => return Status::Info,
        Target::AtMost(max) => vec![Some(*ours <= max)],
        Target::RatioAtLeast(min) => vec![ratio.map(|r| r >= min)],
        Target::Both(max, min) => vec![Some(*ours <= max), ratio.map(|r| r >= min)],
    };
    if checks.contains(&Some(false)) {
        Status::Short
    } else if checks.iter().all(|c| *c == Some(true)) {
        Status::Pass
    } else {
        Status::NotAvailable
    }
}

/// A unit for nanoseconds (by magnitude, so that a negative difference reads like a positive
/// one): (divisor, suffix).
fn unit_for(ns: f64) -> (f64, &'static str) {
    let ns = ns.abs();
    if ns < 1e3 {
        (1.0, "ns")
    } else if ns < 1e6 {
        (1e3, "µs")
    } else if ns < 1e9 {
        (1e6, "ms")
    } else {
        (1e9, "s")
    }
}

fn format_in(ns: f64, (div, suffix): (f64, &str)) -> String {
    let v = ns / div;
    let decimals = if v.abs() >= 100.0 {
        0
    } else if v.abs() >= 10.0 {
        1
    } else {
        2
    };
    format!("{v:.decimals$} {suffix}")
}

/// Items per second for `ns` per item, with a decimal prefix (`4.41 M`); `n/a` when the time
/// is not positive.
fn format_rate(ns: f64) -> String {
    if ns <= 0.0 || !ns.is_finite() {
        return "n/a".to_owned();
    }
    let rate = 1e9 / ns;
    let (div, prefix) = if rate >= 1e9 {
        (1e9, "G")
    } else if rate >= 1e6 {
        (1e6, "M")
    } else if rate >= 1e3 {
        (1e3, "k")
    } else {
        (1.0, "")
    };
    let v = rate / div;
    let decimals = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    if prefix.is_empty() {
        format!("{v:.decimals$}")
    } else {
        format!("{v:.decimals$} {prefix}")
    }
}

/// A target in the unit that suits it, without trailing zeros (`100 µs`, `1.5 ms`).
fn format_round(ns: f64) -> String {
    let (div, suffix) = unit_for(ns);
    format!("{} {suffix}", ns / div)
}

/// `ns` in the unit that suits it.
pub(crate) fn format_auto(ns: f64) -> String {
    format_in(ns, unit_for(ns))
}

fn format_ratio(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}×")
    } else if r >= 10.0 {
        format!("{r:.1}×")
    } else {
        format!("{r:.2}×")
    }
}

/// The table: one unit per row, chosen for the smaller of the two figures.
pub(crate) fn table(rows: &[Row]) -> String {
    let header = [
        "workload",
        "promptkit",
        "peer",
        "ratio (peer ÷ ours)",
        "target",
        "result",
    ];
    let mut cells: Vec<[String; 6]> = Vec::new();
    for row in rows {
        let ours = row.ours.as_ref().ok().copied();
        let peer = row.peer.as_ref().and_then(|p| p.as_ref().ok()).copied();
        let smallest = match (ours, peer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let unit = unit_for(smallest.unwrap_or(1.0));
        let show = |v: f64| match row.spec.unit {
            Unit::Time => format_in(v, unit),
            rate @ Unit::PerSecond(_) => rate.format(v),
        };
        let na = if row.status == Status::Skipped {
            "skipped"
        } else {
            "n/a"
        };
        let ours_cell = ours.map_or_else(|| na.to_owned(), show);
        let peer_cell = match (&row.peer, row.spec.peer) {
            (None, _) | (_, None) => "—".to_owned(),
            (Some(Ok(v)), Some(p)) => format!("{} ({})", show(*v), p.label),
            (Some(Err(_)), Some(p)) => format!("{na} ({})", p.label),
        };
        let ratio_cell = match (&row.peer, row.ratio()) {
            (None, _) => "—".to_owned(),
            (Some(_), Some(r)) => format_ratio(r),
            (Some(_), None) => na.to_owned(),
        };
        cells.push([
            row.spec.workload.to_owned(),
            ours_cell,
            peer_cell,
            ratio_cell,
            row.spec.target.describe(),
            row.status.label().to_owned(),
        ]);
    }
    let width = |i: usize| {
        cells
            .iter()
            .map(|c| c[i].chars().count())
            .chain([header[i].chars().count()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..6).map(width).collect();
    let mut out = String::new();
    let line = |out: &mut String, cols: &[String]| {
        out.push('|');
        for (i, c) in cols.iter().enumerate() {
            let pad = widths[i] - c.chars().count();
            // Numbers right-aligned, text left-aligned.
            if (1..=3).contains(&i) {
                let _ = write!(out, " {}{} |", " ".repeat(pad), c);
            } else {
                let _ = write!(out, " {}{} |", c, " ".repeat(pad));
            }
        }
        out.push('\n');
    };
    line(&mut out, &header.map(str::to_owned));
    out.push('|');
    for (i, w) in widths.iter().enumerate() {
        let dashes = "-".repeat(*w);
        if (1..=3).contains(&i) {
            let _ = write!(out, " {dashes}:|");
        } else {
            let _ = write!(out, " {dashes} |");
        }
    }
    out.push('\n');
    for c in &cells {
        line(&mut out, c);
    }
    out
}

/// Lines comparing our figures with the previous summary's, row by row (rows whose previous
/// figure was not positive, e.g. an overhead lost in the noise, have no percentage to show).
pub(crate) fn compare(previous: &Value, rows: &[Row]) -> Vec<String> {
    let Some(old_rows) = previous["rows"].as_array() else {
        return Vec::new();
    };
    let mut lines = Vec::new();
    for row in rows {
        let Ok(new) = row.ours else { continue };
        let old = old_rows
            .iter()
            .find(|r| r["id"] == row.spec.id)
            .and_then(|r| r["ours_ns"].as_f64());
        let Some(old) = old.filter(|old| *old > 0.0) else {
            continue;
        };
        let change = (new - old) / old * 100.0;
        let word = if change <= -5.0 {
            "faster"
        } else if change >= 5.0 {
            "slower"
        } else {
            "same"
        };
        lines.push(format!(
            "  {:<52} {:>10} → {:>10}  {change:+6.1}%  {word}",
            row.spec.workload,
            row.spec.unit.format(old),
            row.spec.unit.format(new)
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(target: Target, peer: bool) -> RowSpec {
        RowSpec {
            id: "x.y",
            workload: "w",
            package: "p",
            ours: &["g/f"],
            minus: &[],
            unit: Unit::Time,
            peer: peer.then_some(JINJA_RENDER),
            target,
            full_only: false,
        }
    }

    #[test]
    fn verdicts() {
        let cases: &[(Target, Figure, Option<Figure>, Status)] = &[
            (Target::AtMost(200.0), Ok(150.0), None, Status::Pass),
            (Target::AtMost(200.0), Ok(250.0), None, Status::Short),
            (
                Target::AtMost(200.0),
                Err("missing".into()),
                None,
                Status::NotAvailable,
            ),
            (
                Target::RatioAtLeast(5.0),
                Ok(100.0),
                Some(Ok(600.0)),
                Status::Pass,
            ),
            (
                Target::RatioAtLeast(5.0),
                Ok(100.0),
                Some(Ok(400.0)),
                Status::Short,
            ),
            (
                Target::RatioAtLeast(1.0),
                Ok(100.0),
                Some(Err("pip".into())),
                Status::NotAvailable,
            ),
            (
                Target::Both(3000.0, 4.0),
                Ok(2000.0),
                Some(Ok(13000.0)),
                Status::Pass,
            ),
            (
                Target::Both(3000.0, 4.0),
                Ok(2000.0),
                Some(Ok(7000.0)),
                Status::Short,
            ),
            (
                Target::Both(3000.0, 4.0),
                Ok(4000.0),
                Some(Err("x".into())),
                Status::Short,
            ),
            (
                Target::Both(3000.0, 4.0),
                Ok(2000.0),
                Some(Err("x".into())),
                Status::NotAvailable,
            ),
            (Target::None, Ok(1.0), Some(Ok(2.0)), Status::Info),
        ];
        for (target, ours, peer, want) in cases {
            let row = Row::new(
                spec(*target, peer.is_some()),
                ours.clone(),
                peer.clone(),
                false,
            );
            assert_eq!(&row.status, want, "{target:?} {ours:?} {peer:?}");
        }
    }

    #[test]
    fn units_per_row() {
        assert_eq!(format_auto(150.0), "150 ns");
        assert_eq!(format_auto(2_500.0), "2.50 µs");
        assert_eq!(format_auto(31_000_000.0), "31.0 ms");
        assert_eq!(format_auto(1.5e9), "1.50 s");
        let row = Row::new(
            spec(Target::Both(3000.0, 4.0), true),
            Ok(2_000.0),
            Some(Ok(13_000.0)),
            false,
        );
        let t = table(&[row]);
        assert!(t.contains(" 2.00 µs |"), "{t}");
        assert!(t.contains("≤ 3 µs, ≥ 4× peer"), "{t}");
        assert!(t.contains("13.0 µs (Jinja2)"), "{t}");
        assert!(t.contains("6.50×"), "{t}");
        assert!(t.contains("pass"), "{t}");
    }

    #[test]
    fn missing_figures_show_na_and_peerless_rows_a_dash() {
        let row = Row::new(
            spec(Target::AtMost(100.0), false),
            Err("bench missing".into()),
            None,
            false,
        );
        let t = table(std::slice::from_ref(&row));
        let last = t.lines().last().unwrap();
        assert!(last.contains("n/a") && last.contains('—'), "{t}");
        assert_eq!(row.notes(), vec!["promptkit: bench missing".to_owned()]);
    }

    #[test]
    fn comparison_with_previous_summary() {
        let previous = json!({ "rows": [ { "id": "x.y", "ours_ns": 200.0 } ] });
        let row = Row::new(spec(Target::None, false), Ok(100.0), None, false);
        let lines = compare(&previous, &[row]);
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].contains("-50.0%") && lines[0].contains("faster"),
            "{lines:?}"
        );
    }

    #[test]
    fn rate_rows_show_items_per_second_and_overheads_may_be_negative() {
        assert_eq!(format_rate(226.5), "4.42 M");
        assert_eq!(format_rate(20_000.0), "50.0 k");
        assert_eq!(format_rate(2e9), "0.50");
        assert_eq!(format_rate(0.0), "n/a");
        let rate = Row::new(
            RowSpec {
                unit: Unit::PerSecond("deltas"),
                ..spec(Target::None, false)
            },
            Ok(226.5),
            None,
            false,
        );
        let t = table(std::slice::from_ref(&rate));
        assert!(t.contains(" 4.42 M deltas/s |"), "{t}");
        let json = rate.to_json();
        assert_eq!(json["unit"], "deltas/s");
        assert_eq!(json["ours_ns"], 226.5);
        let per_s = json["ours_per_s"].as_f64().unwrap();
        assert!((per_s - 1e9 / 226.5).abs() < 1e-3, "{json}");

        let overhead = Row::new(spec(Target::None, false), Ok(-1_500.0), None, false);
        assert!(table(&[overhead]).contains(" -1.50 µs |"));

        let previous = json!({ "rows": [ { "id": "x.y", "ours_ns": 200.0 } ] });
        let lines = compare(&previous, &[rate]);
        assert!(
            lines[0].contains("5.00 M deltas/s") && lines[0].contains("4.42 M deltas/s"),
            "{lines:?}"
        );
        let lost_in_noise = json!({ "rows": [ { "id": "x.y", "ours_ns": -10.0 } ] });
        let row = Row::new(spec(Target::None, false), Ok(100.0), None, false);
        assert!(compare(&lost_in_noise, &[row]).is_empty());
    }

    #[test]
    fn rate_rows_subtract_nothing_and_judge_no_time() {
        for row in ROWS {
            if let Unit::PerSecond(_) = row.unit {
                assert!(row.minus.is_empty(), "{}", row.id);
                assert_eq!(row.target, Target::None, "{}", row.id);
            }
        }
    }

    /// The agent rows name benchmarks its bench defines: a renamed bench would otherwise show
    /// up as n/a only in a full run.
    #[test]
    fn agent_rows_name_benchmarks_of_the_agent_bench() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../crates/prompt-agent/benches/agent.rs"
        );
        let source = std::fs::read_to_string(path).unwrap();
        assert!(source.contains("benchmark_group(\"agent\")"));
        for row in ROWS.iter().filter(|r| r.package == "prompt-agent") {
            for id in row.ours.iter().chain(row.minus) {
                let function = id.strip_prefix("agent/").unwrap_or_else(|| panic!("{id}"));
                assert!(
                    source.contains(&format!("bench_function(\"{function}\"")),
                    "{}: no benchmark `{function}` in {path}",
                    row.id
                );
            }
        }
    }

    #[test]
    fn row_ids_are_unique() {
        let mut ids: Vec<&str> = ROWS.iter().map(|r| r.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), ROWS.len());
    }
}
