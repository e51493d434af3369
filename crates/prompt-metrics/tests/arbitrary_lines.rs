//! Arbitrary lines in a metrics file never panic a query, and every good line still counts.

use chrono::{DateTime, Duration, TimeZone, Utc};
use prompt_metrics::{JsonlStore, PromptMetrics};
use proptest::prelude::*;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 20, 12, 0, 0)
        .single()
        .expect("valid time")
}

#[derive(Debug, Clone)]
enum Line {
    Good {
        writer: bool,
        latency: u32,
        compact: bool,
    },
    Bytes(Vec<u8>),
    Text(String),
    Cut {
        at: usize,
    },
}

fn good_line(writer: bool, latency: u32, compact: bool) -> String {
    let agent = if writer { "writer" } else { "editor" };
    let line = format!(
        "{{\"prompt_hash\": \"h\", \"agent\": \"{agent}\", \"task\": \"t\", \"model\": \"m\", \"temperature\": 0.7, \"timestamp\": \"2026-01-20T10:00:00.5\", \"latency_ms\": {latency}.5, \"tokens_prompt\": 3, \"tokens_completion\": null, \"cache_hit\": true, \"validation_passed\": true, \"retry_count\": 1, \"error\": null, \"response_length\": 9, \"language_detected\": null}}"
    );
    if compact {
        line.replace(", ", ",").replace(": ", ":")
    } else {
        line
    }
}

fn line_strategy() -> impl Strategy<Value = Line> {
    prop_oneof![
        4 => (any::<bool>(), 0u32..100_000, any::<bool>())
            .prop_map(|(writer, latency, compact)| Line::Good { writer, latency, compact }),
        1 => prop::collection::vec(any::<u8>(), 0..120).prop_map(Line::Bytes),
        1 => "[ -~]{0,80}".prop_map(Line::Text),
        1 => (0usize..300).prop_map(|at| Line::Cut { at }),
    ]
}

fn render(line: &Line) -> Vec<u8> {
    match line {
        Line::Good {
            writer,
            latency,
            compact,
        } => good_line(*writer, *latency, *compact).into_bytes(),
        Line::Bytes(b) => b.clone(),
        Line::Text(t) => t.clone().into_bytes(),
        Line::Cut { at } => {
            let l = good_line(true, 7, false).into_bytes();
            l[..(*at).min(l.len())].to_vec()
        }
    }
}

/// What queries must find, line by line, judged by serde alone: writer records in the window,
/// bad lines, and bad lines an agent query reads in full (those holding `"writer"` or an escape).
fn oracle(content: &[u8]) -> (u64, u64, u64) {
    let cutoff = now() - Duration::hours(24);
    let mut writer = 0;
    let mut bad = 0;
    let mut bad_read = 0;
    for line in content.split(|&b| b == b'\n') {
        if line.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r')) {
            continue;
        }
        match serde_json::from_slice::<PromptMetrics>(line) {
            Ok(m) => {
                if m.agent == "writer" && m.timestamp >= cutoff && m.timestamp <= now() {
                    writer += 1;
                }
            }
            Err(_) => {
                bad += 1;
                let mentions = line.windows(8).any(|w| w == b"\"writer\"") || line.contains(&b'\\');
                bad_read += u64::from(mentions);
            }
        }
    }
    (writer, bad, bad_read)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn arbitrary_lines_never_hide_good_ones(lines in prop::collection::vec(line_strategy(), 0..40), trailing_newline in any::<bool>()) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut content = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            if i > 0 {
                content.push(b'\n');
            }
            content.extend(render(l));
        }
        if trailing_newline {
            content.push(b'\n');
        }
        std::fs::write(dir.path().join("metrics_2026-01-20.jsonl"), &content).expect("write");
        let good_writers = lines
            .iter()
            .filter(|l| matches!(l, Line::Good { writer: true, .. }))
            .count() as u64;

        let store = JsonlStore::open(dir.path()).expect("open").with_clock(now);
        let stats = store.agent_stats("writer", 1).expect("query");
        let (want, bad, bad_read) = oracle(&content);
        prop_assert_eq!(stats.total_calls, want);
        prop_assert_eq!(stats.skipped_lines, bad_read);
        prop_assert!(stats.total_calls >= good_writers);
        let models = store.model_comparison(1).expect("query");
        let all: u64 = models.iter().map(|m| m.stats.total_calls).sum();
        prop_assert!(all >= stats.total_calls);
        if let Some(row) = models.first() {
            prop_assert_eq!(row.stats.skipped_lines, bad);
        }
        let summary = store.scan(1, |_| {}).expect("scan");
        prop_assert_eq!(summary.records, all);
        prop_assert_eq!(summary.skipped_lines, bad);
    }
}
