//! Rollups on real files: every query reading closed days from rollups gives exactly the figures
//! of a scan of every file (random data sets and windows), after a late write to a closed
//! day, with corrupt or foreign rollup files, and with several stores rebuilding at once.

use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use prompt_metrics::JsonlStore;
use proptest::prelude::*;

fn noon() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 20, 12, 0, 0)
        .single()
        .expect("valid time")
}

/// One line of a day file.
#[derive(Debug, Clone)]
enum Line {
    Record {
        agent: usize,
        task: usize,
        model: usize,
        version: Option<u32>,
        /// Seconds from the file's UTC midnight (may fall on the day before or after).
        at_secs: i64,
        /// Written with a `+02:00` offset rather than naive UTC.
        offset: bool,
        latency: f64,
        ttft: Option<f64>,
        tokens_per_second: Option<f64>,
        tokens: Option<(u64, u64)>,
        cache_hit: bool,
        ok: bool,
        error: bool,
        retries: u32,
        /// `cost_usd` and `saved_usd`, and indexes into [`TAGS`].
        cost: Option<f64>,
        saved: Option<f64>,
        tags: Vec<usize>,
    },
    Bad(usize),
    Blank,
}

/// Agents as they appear in lines: the last one is `writer` spelled with an escape.
const AGENTS: [&str; 4] = ["writer", "editor", "architect", "wr\\u0069ter"];
const TASKS: [&str; 3] = ["write_chapter", "proofread", "outline"];
const MODELS: [&str; 3] = ["qwen3:30b", "llama3.1:8b", "mistral-nemo:12b"];
const TAGS: [&str; 3] = ["eval", "nightly", "batch-7"];
/// Bad lines: some name an agent, one holds an escape, one is a truncated record.
const BAD: [&str; 5] = [
    "not json at all",
    "{\"agent\": \"writer\", \"task\": broken",
    "{\"agent\": \"editor\"}",
    "{\"note\": \"a \\\\ backslash\"}",
    "{\"prompt_hash\": \"ab\", \"agent\": \"architect\", \"task\": \"outline\", \"mod",
];

fn line_text(day: NaiveDate, line: &Line) -> String {
    match line {
        Line::Bad(i) => BAD[*i].to_owned(),
        Line::Blank => "   ".to_owned(),
        Line::Record {
            agent,
            task,
            model,
            version,
            at_secs,
            offset,
            latency,
            ttft,
            tokens_per_second,
            tokens,
            cache_hit,
            ok,
            error,
            retries,
            cost,
            saved,
            tags,
        } => {
            let midnight = day.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
            let ts = midnight + Duration::seconds(*at_secs) + Duration::microseconds(123);
            let ts = if *offset {
                (ts + Duration::hours(2))
                    .format("%Y-%m-%dT%H:%M:%S%.6f+02:00")
                    .to_string()
            } else {
                ts.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
            };
            let opt = |v: Option<String>| v.unwrap_or_else(|| "null".to_owned());
            let (tp, tc) = match tokens {
                Some((p, c)) => (p.to_string(), c.to_string()),
                None => ("null".into(), "null".into()),
            };
            format!(
                "{{\"prompt_hash\": \"9f86\", \"agent\": \"{}\", \"task\": \"{}\", \"model\": \"{}\", \"temperature\": 0.8, \"timestamp\": \"{ts}\", \"latency_ms\": {latency:?}, \"tokens_prompt\": {tp}, \"tokens_completion\": {tc}, \"cache_hit\": {cache_hit}, \"validation_passed\": {ok}, \"retry_count\": {retries}, \"error\": {}, \"response_length\": 1500, \"language_detected\": null, \"template_version\": {}, \"time_to_first_token_ms\": {}, \"tokens_per_second\": {}, \"cost_usd\": {}, \"saved_usd\": {}, \"tags\": [{}]}}",
                AGENTS[*agent],
                TASKS[*task],
                MODELS[*model],
                if *error { "\"timed out\"" } else { "null" },
                opt(version.map(|v| v.to_string())),
                opt(ttft.map(|v| format!("{v:?}"))),
                opt(tokens_per_second.map(|v| format!("{v:?}"))),
                opt(cost.map(|v| format!("{v:?}"))),
                opt(saved.map(|v| format!("{v:?}"))),
                tags.iter()
                    .map(|t| format!("\"{}\"", TAGS[*t]))
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        }
    }
}

fn line_strategy() -> impl Strategy<Value = Line> {
    // Few distinct latencies (ties across days and groups) and arbitrary ones.
    let latency = prop_oneof![
        prop::sample::select(vec![0.0, 1.5, 250.0, 250.0, 8523.25, 20_000.0]),
        0.0f64..30_000.0,
    ];
    let record = (
        (0usize..4, 0usize..3, 0usize..3, prop::option::of(1u32..4)),
        (
            prop_oneof![8 => 0i64..86_400, 1 => -7_200i64..0, 1 => 86_400i64..93_600],
            any::<bool>(),
        ),
        (
            latency,
            prop::option::of(0.0f64..5_000.0),
            prop::option::of(0.5f64..300.0),
        ),
        (
            prop::option::of((0u64..5_000, 0u64..5_000)),
            any::<bool>(),
            prop::bool::weighted(0.9),
            prop::bool::weighted(0.1),
            0u32..3,
        ),
        (
            prop::option::of(prop_oneof![Just(0.0), 0.0f64..2.0]),
            prop::option::of(0.0f64..2.0),
            prop::collection::vec(0usize..TAGS.len(), 0..3),
        ),
    )
        .prop_map(
            |(
                (agent, task, model, version),
                (at_secs, offset),
                (latency, ttft, tokens_per_second),
                (tokens, cache_hit, ok, error, retries),
                (cost, saved, tags),
            )| Line::Record {
                agent,
                task,
                model,
                version,
                at_secs,
                offset,
                latency,
                ttft,
                tokens_per_second,
                tokens,
                cache_hit,
                ok,
                error,
                retries,
                cost,
                saved,
                tags,
            },
        );
    prop_oneof![20 => record, 1 => (0usize..BAD.len()).prop_map(Line::Bad), 1 => Just(Line::Blank)]
}

/// Writes day files `days_back` days before `now`'s date (0 = today).
fn write_days(dir: &Path, now: DateTime<Utc>, days: &[(i64, Vec<Line>)]) {
    for (back, lines) in days {
        let day = now.date_naive() - Duration::days(*back);
        let mut text = String::new();
        for l in lines {
            text.push_str(&line_text(day, l));
            text.push('\n');
        }
        fs::write(day_file(dir, day), text).expect("write day");
    }
}

fn day_file(dir: &Path, day: NaiveDate) -> PathBuf {
    dir.join(format!("metrics_{day}.jsonl"))
}

fn rollup_file(dir: &Path, day: NaiveDate) -> PathBuf {
    dir.join(format!("metrics_{day}.rollup"))
}

/// Every query's answer, shown exactly (`{:?}` tells `-0.0` from `0.0` and prints each float
/// so that it reads back to the same bits).
fn every_query(store: &JsonlStore, days: u32) -> String {
    let mut out = String::new();
    for agent in ["writer", "editor", "architect", "nobody", "wr\\iter"] {
        out += &format!("{:?}\n", store.agent_stats(agent, days).expect("agent"));
        for task in TASKS {
            out += &format!("{:?}\n", store.task_stats(agent, task, days).expect("task"));
            out += &format!(
                "{:?}\n",
                store
                    .version_comparison(agent, task, days)
                    .expect("versions")
            );
        }
    }
    out += &format!("{:?}\n", store.model_comparison(days).expect("models"));
    out += &format!("{:?}\n", store.daily_stats(days).expect("days"));
    out += &format!("{:?}\n", store.task_comparison(days).expect("tasks"));
    out += &format!("{:?}\n", store.overview(days).expect("overview"));
    out += &format!("{:?}\n", store.tag_comparison(days).expect("tags"));
    out
}

fn scan_only(dir: &Path, now: DateTime<Utc>) -> JsonlStore {
    JsonlStore::open(dir)
        .expect("open")
        .with_clock(move || now)
        .with_rollups(false)
}

fn with_rollups(dir: &Path, now: DateTime<Utc>) -> JsonlStore {
    JsonlStore::open(dir).expect("open").with_clock(move || now)
}

fn days_strategy() -> impl Strategy<Value = Vec<(i64, Vec<Line>)>> {
    prop::collection::vec(prop::collection::vec(line_strategy(), 0..40), 1..6).prop_map(|days| {
        days.into_iter()
            .enumerate()
            .map(|(i, lines)| (i as i64, lines))
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Random days (records on neighbouring days, offsets, bad and blank lines, ties, streamed
    /// and plain records) and random windows: rollups built, read back from disk and read from
    /// memory all give exactly the figures of a scan; after a late write to a closed day and
    /// with a corrupt rollup too.
    #[test]
    fn rollups_agree_exactly_with_a_scan(
        days in days_strategy(),
        minutes in 0i64..1_440,
        window in 1u32..8,
        late in prop::collection::vec(line_strategy(), 1..4),
        damage in 0usize..4,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = noon().date_naive().and_hms_opt(0, 0, 0).expect("midnight").and_utc()
            + Duration::minutes(minutes);
        write_days(dir.path(), now, &days);
        let scan = every_query(&scan_only(dir.path(), now), window);

        let store = with_rollups(dir.path(), now);
        prop_assert_eq!(&every_query(&store, window), &scan, "building");
        prop_assert_eq!(&every_query(&store, window), &scan, "from memory");
        prop_assert_eq!(&every_query(&with_rollups(dir.path(), now), window), &scan, "from disk");
        let closed: Vec<NaiveDate> = days
            .iter()
            .filter(|(back, _)| *back > 0)
            .map(|(back, _)| now.date_naive() - Duration::days(*back))
            .collect();

        // A late write to the oldest closed day.
        if let Some(&day) = closed.last() {
            let mut text = fs::read_to_string(day_file(dir.path(), day)).expect("read");
            for l in &late {
                text.push_str(&line_text(day, l));
                text.push('\n');
            }
            fs::write(day_file(dir.path(), day), text).expect("late write");
            let scan = every_query(&scan_only(dir.path(), now), window);
            prop_assert_eq!(&every_query(&store, window), &scan, "after a late write");
        }

        // A damaged rollup: the query scans, then rebuilds; the daily files stay as they were.
        if let Some(&day) = closed.first() {
            let path = rollup_file(dir.path(), day);
            if let Ok(mut bytes) = fs::read(&path) {
                let before = fs::read(day_file(dir.path(), day)).expect("day");
                match damage {
                    0 => bytes.truncate(bytes.len() / 2),
                    1 => {
                        let at = bytes.len() - 1;
                        bytes[at] ^= 0x40;
                    }
                    2 => bytes[30] ^= 0x01,
                    _ => bytes = b"garbage".to_vec(),
                }
                fs::write(&path, &bytes).expect("damage");
                let scan = every_query(&scan_only(dir.path(), now), window);
                let fresh = with_rollups(dir.path(), now);
                prop_assert_eq!(&every_query(&fresh, window), &scan, "with a damaged rollup");
                prop_assert_eq!(fs::read(day_file(dir.path(), day)).expect("day"), before);
            }
        }
    }
}

/// Every query's answer from `store` and from a scan of the same files.
fn against_a_scan(
    store: &JsonlStore,
    dir: &Path,
    now: DateTime<Utc>,
    days: u32,
) -> (String, String) {
    (
        every_query(store, days),
        every_query(&scan_only(dir, now), days),
    )
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .expect("open today");
    f.write_all(text.as_bytes()).expect("append");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// One store reading today's file as it grows — lines appended, a line written in two
    /// pieces with a query between them, the file replaced by another (new inode) and cut
    /// short — gives at every step exactly the figures of a scan.
    #[test]
    fn todays_file_read_as_it_grows_agrees_with_a_scan(
        first in prop::collection::vec(line_strategy(), 0..30),
        appends in prop::collection::vec(prop::collection::vec(line_strategy(), 0..10), 1..4),
        cut in 0usize..400,
        minutes in 0i64..1_440,
        window in 1u32..3,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = noon().date_naive().and_hms_opt(0, 0, 0).expect("midnight").and_utc()
            + Duration::minutes(minutes);
        let today = now.date_naive();
        let path = day_file(dir.path(), today);
        let text = |lines: &[Line]| -> String {
            lines.iter().map(|l| line_text(today, l) + "\n").collect()
        };
        fs::write(&path, text(&first)).expect("write today");
        let store = with_rollups(dir.path(), now);
        for label in ["first query", "summarized"] {
            let (got, scan) = against_a_scan(&store, dir.path(), now, window);
            prop_assert_eq!(got, scan, "{}", label);
        }
        for batch in &appends {
            let t = text(batch);
            let cut = cut.min(t.len());
            append(&path, &t[..cut]);
            let (got, scan) = against_a_scan(&store, dir.path(), now, window);
            prop_assert_eq!(got, scan, "a line half written");
            append(&path, &t[cut..]);
            let (got, scan) = against_a_scan(&store, dir.path(), now, window);
            prop_assert_eq!(got, scan, "lines appended");
        }
        // Replaced by another file (written beside it and renamed over it, a new inode).
        let tmp = dir.path().join("replacement.tmp");
        let mut reversed = first.clone();
        reversed.reverse();
        fs::write(&tmp, text(&reversed) + &text(&first)).expect("replacement");
        fs::rename(&tmp, &path).expect("rename");
        let (got, scan) = against_a_scan(&store, dir.path(), now, window);
        prop_assert_eq!(got, scan, "file replaced");
        // Cut short.
        let bytes = fs::read(&path).expect("read");
        let keep = bytes.len() / 3;
        fs::write(&path, &bytes[..keep]).expect("truncate");
        let (got, scan) = against_a_scan(&store, dir.path(), now, window);
        prop_assert_eq!(got, scan, "file cut short");
    }
}

/// A data set of `records` per day over `days` days ending today.
fn dataset(dir: &Path, now: DateTime<Utc>, records: u64, days: u32) {
    prompt_metrics::testdata::write_dataset_at(dir, records * u64::from(days), days, 11, now)
        .expect("data set");
}

#[test]
fn closed_days_get_rollups_today_is_scanned_and_a_change_rebuilds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = noon();
    dataset(dir.path(), now, 300, 4);
    let store = with_rollups(dir.path(), now);
    let first = store.model_comparison(7).expect("models");
    let today = now.date_naive();
    for back in 1..4 {
        assert!(
            rollup_file(dir.path(), today - Duration::days(back)).is_file(),
            "closed day {back} has a rollup"
        );
    }
    assert!(!rollup_file(dir.path(), today).exists(), "today has none");

    // Today's new records show at once.
    let mut today_text = fs::read_to_string(day_file(dir.path(), today)).expect("today");
    let extra = line_text(
        today,
        &Line::Record {
            agent: 0,
            task: 0,
            model: 0,
            version: None,
            at_secs: 3_600,
            offset: false,
            latency: 1.0,
            ttft: None,
            tokens_per_second: None,
            tokens: None,
            cache_hit: false,
            ok: true,
            error: false,
            retries: 0,
            cost: Some(0.25),
            saved: None,
            tags: vec![0],
        },
    );
    today_text.push_str(&extra);
    today_text.push('\n');
    fs::write(day_file(dir.path(), today), today_text).expect("append today");
    let second = store.model_comparison(7).expect("models");
    let calls = |rows: &[prompt_metrics::ModelStats]| -> u64 {
        rows.iter().map(|r| r.stats.total_calls).sum()
    };
    assert_eq!(calls(&second), calls(&first) + 1);

    // A late write to a closed day rebuilds its rollup.
    let yesterday = today - Duration::days(1);
    let before = fs::read(rollup_file(dir.path(), yesterday)).expect("rollup");
    let mut text = fs::read_to_string(day_file(dir.path(), yesterday)).expect("yesterday");
    text.push_str(&extra.replace(&today.to_string(), &yesterday.to_string()));
    text.push('\n');
    fs::write(day_file(dir.path(), yesterday), text).expect("late write");
    let third = store.model_comparison(7).expect("models");
    assert_eq!(calls(&third), calls(&first) + 2);
    let after = fs::read(rollup_file(dir.path(), yesterday)).expect("rollup");
    assert_ne!(before, after, "the rollup was rebuilt");
    assert_eq!(
        format!("{third:?}"),
        format!(
            "{:?}",
            scan_only(dir.path(), now)
                .model_comparison(7)
                .expect("scan")
        )
    );

    // Cleanup takes the rollups of the days it removes.
    let oldest = today - Duration::days(3);
    assert!(rollup_file(dir.path(), oldest).is_file());
    assert_eq!(store.cleanup_old_logs(2).expect("cleanup"), 1);
    assert!(!rollup_file(dir.path(), oldest).exists());
    assert!(rollup_file(dir.path(), yesterday).is_file());
}

#[test]
fn rebuild_rollup_writes_closed_days_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = noon();
    dataset(dir.path(), now, 50, 2);
    let store = with_rollups(dir.path(), now);
    let today = now.date_naive();
    assert!(!store.rebuild_rollup(today).expect("today"));
    assert!(
        !store
            .rebuild_rollup(today - Duration::days(5))
            .expect("no file")
    );
    assert!(
        store
            .rebuild_rollup(today - Duration::days(1))
            .expect("yesterday")
    );
    assert!(rollup_file(dir.path(), today - Duration::days(1)).is_file());
    assert!(!rollup_file(dir.path(), today).exists());
    // A store without rollups reads and writes nothing but the daily files.
    let before: Vec<_> = fs::read_dir(dir.path()).expect("dir").collect();
    fs::remove_file(rollup_file(dir.path(), today - Duration::days(1))).expect("remove");
    scan_only(dir.path(), now).overview(7).expect("overview");
    assert!(!rollup_file(dir.path(), today - Duration::days(1)).exists());
    assert_eq!(before.len(), 3);
}

#[test]
fn a_foreign_file_in_place_of_a_rollup_is_replaced_not_trusted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = noon();
    dataset(dir.path(), now, 200, 3);
    let yesterday = now.date_naive() - Duration::days(1);
    let scan = every_query(&scan_only(dir.path(), now), 7);
    // A valid rollup of another day put in yesterday's place (its source does not match).
    let store = with_rollups(dir.path(), now);
    assert!(
        store
            .rebuild_rollup(yesterday - Duration::days(1))
            .expect("rebuild")
    );
    fs::copy(
        rollup_file(dir.path(), yesterday - Duration::days(1)),
        rollup_file(dir.path(), yesterday),
    )
    .expect("copy");
    assert_eq!(every_query(&with_rollups(dir.path(), now), 7), scan);
    // An empty rollup file and a directory in its place.
    fs::write(rollup_file(dir.path(), yesterday), b"").expect("empty");
    assert_eq!(every_query(&with_rollups(dir.path(), now), 7), scan);
    fs::remove_file(rollup_file(dir.path(), yesterday)).expect("remove");
    fs::create_dir(rollup_file(dir.path(), yesterday)).expect("dir");
    assert_eq!(every_query(&with_rollups(dir.path(), now), 7), scan);
    assert!(day_file(dir.path(), yesterday).is_file());
}

#[test]
fn stores_querying_and_rebuilding_at_once_agree_with_a_scan() {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = noon();
    dataset(dir.path(), now, 600, 6);
    let scan = every_query(&scan_only(dir.path(), now), 7);
    let days: Vec<NaiveDate> = (1..6)
        .map(|b| now.date_naive() - Duration::days(b))
        .collect();
    std::thread::scope(|s| {
        for i in 0..4 {
            let (dir, scan, days) = (dir.path(), &scan, &days);
            s.spawn(move || {
                // Each store has its own memory, as separate processes would.
                for round in 0..3 {
                    let store = with_rollups(dir, now);
                    if (i + round) % 2 == 0 {
                        for d in days {
                            store.rebuild_rollup(*d).expect("rebuild");
                        }
                    }
                    assert_eq!(&every_query(&store, 7), scan, "store {i} round {round}");
                }
            });
        }
    });
    // No temporary file is left behind.
    let leftovers: Vec<String> = fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
