//! Data sets shaped like the Python original's metrics files, for benchmarks and tests.
//!
//! Behind the `testdata` cargo feature (off by default): the crate's own tests and benches turn
//! it on through a dev-dependency on the crate itself, and `cargo xtask bench` through its
//! dependency; it is not part of the crate's API.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, NaiveDate, Utc};

use crate::writer::file_name;

const AGENTS: [(&str, &[&str]); 3] = [
    (
        "writer",
        &["write_chapter", "revise_chapter", "write_scene"],
    ),
    ("editor", &["edit_chapter", "proofread"]),
    ("architect", &["outline_story", "design_characters"]),
];
const MODELS: [&str; 4] = [
    "qwen3:30b",
    "dolphin3:8b",
    "llama3.1:8b",
    "mistral-nemo:12b",
];

/// A small deterministic generator (SplitMix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A float in `0..1`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// An integer in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// Formats a float as Python's `repr` does for ordinary magnitudes (always a `.` or exponent).
fn py_float(out: &mut String, v: f64) {
    let start = out.len();
    let _ = write!(out, "{v}");
    if !out[start..].contains(['.', 'e', 'E', 'N', 'i']) {
        out.push_str(".0");
    }
}

/// One record line exactly as the Python original's collector writes it
/// (`json.dumps(asdict(m))`: `", "` and `": "` separators, naive ISO timestamp), without
/// the newline.
pub fn python_line(out: &mut String, rng: &mut Rng, timestamp: DateTime<Utc>) {
    let (agent, tasks) = AGENTS[rng.below(AGENTS.len() as u64) as usize];
    let task = tasks[rng.below(tasks.len() as u64) as usize];
    let model = MODELS[rng.below(MODELS.len() as u64) as usize];
    let _ = write!(
        out,
        "{{\"prompt_hash\": \"{:016x}{:016x}{:016x}{:016x}\", \"agent\": \"{agent}\", \"task\": \"{task}\", \"model\": \"{model}\", \"temperature\": ",
        rng.next_u64(),
        rng.next_u64(),
        rng.next_u64(),
        rng.next_u64()
    );
    py_float(out, [0.3, 0.7, 0.8, 1.0][rng.below(4) as usize]);
    let _ = write!(
        out,
        ", \"timestamp\": \"{}\", \"latency_ms\": ",
        timestamp.format("%Y-%m-%dT%H:%M:%S%.6f")
    );
    py_float(out, 500.0 + rng.unit() * 20_000.0);
    let cache_hit = rng.below(10) < 3;
    let errored = rng.below(100) < 4;
    if rng.below(10) == 0 {
        out.push_str(", \"tokens_prompt\": null, \"tokens_completion\": null");
    } else {
        let _ = write!(
            out,
            ", \"tokens_prompt\": {}, \"tokens_completion\": {}",
            200 + rng.below(3000),
            100 + rng.below(4000)
        );
    }
    let _ = write!(
        out,
        ", \"cache_hit\": {}, \"validation_passed\": {}, \"retry_count\": {}",
        if cache_hit { "true" } else { "false" },
        if rng.below(100) < 97 { "true" } else { "false" },
        if rng.below(10) == 0 {
            1 + rng.below(3)
        } else {
            0
        }
    );
    if errored {
        out.push_str(", \"error\": \"Request timed out after 120s\"");
    } else {
        out.push_str(", \"error\": null");
    }
    let _ = write!(
        out,
        ", \"response_length\": {}, \"language_detected\": \"en\"}}",
        1000 + rng.below(15_000)
    );
}

/// Writes `n_records` records shaped like the Python original's, spread evenly over `days`
/// daily files ending at the UTC day of `now` (every timestamp within the last `days * 24`
/// hours of `now`), returning the files written.
pub fn write_dataset_at(
    dir: &Path,
    n_records: u64,
    days: u32,
    seed: u64,
    now: DateTime<Utc>,
) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let days = days.max(1);
    let today = now.date_naive();
    let mut rng = Rng::new(seed);
    let mut files = Vec::new();
    let mut line = String::with_capacity(512);
    for d in 0..days {
        let back = i64::from(days - 1 - d);
        let day: NaiveDate = today - Duration::days(back);
        let start = day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
        // Today's records end at `now`; earlier days fill the whole day.
        let span_secs = if back == 0 {
            (now - start).num_seconds().max(1)
        } else {
            86_400
        };
        let count =
            n_records / u64::from(days) + u64::from(u64::from(d) < n_records % u64::from(days));
        let path = dir.join(file_name(day));
        let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&path)?);
        for i in 0..count {
            let offset_us = (i as f64 / count.max(1) as f64 * span_secs as f64 * 1e6) as i64;
            let ts = (start + Duration::microseconds(offset_us + rng.below(1000) as i64)).min(now);
            line.clear();
            python_line(&mut line, &mut rng, ts);
            line.push('\n');
            out.write_all(line.as_bytes())?;
        }
        out.flush()?;
        files.push(path);
    }
    Ok(files)
}

/// [`write_dataset_at`] with the current time.
pub fn write_dataset(
    dir: &Path,
    n_records: u64,
    days: u32,
    seed: u64,
) -> std::io::Result<Vec<PathBuf>> {
    write_dataset_at(dir, n_records, days, seed, Utc::now())
}
