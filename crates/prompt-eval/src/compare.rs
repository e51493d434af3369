//! Stored runs and what changed between two of them (or between two versions of one run).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::EvalError;
use crate::runner::{Cell, EvalRun};

/// Where `prompt eval` stores its runs by default: `<this>/<eval file stem>/<time>.json`.
pub const DEFAULT_RUNS_DIR: &str = "output/evals";

/// How a cell changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// It passed before and fails now.
    PassToFail,
    /// It failed before and passes now.
    FailToPass,
    /// It is new (no such cell before).
    Added,
    /// It is gone (no such cell now).
    Removed,
    /// It passes or fails as before.
    Same,
}

impl Change {
    /// `pass → fail`, `fail → pass`, `new`, `gone`, `same`.
    pub fn label(self) -> &'static str {
        match self {
            Self::PassToFail => "pass → fail",
            Self::FailToPass => "fail → pass",
            Self::Added => "new",
            Self::Removed => "gone",
            Self::Same => "same",
        }
    }
}

/// One cell compared with its counterpart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellChange {
    /// The case.
    pub case: String,
    /// The version of the cell now (before, for a removed cell).
    pub version: String,
    /// The version it is compared with (the same one when comparing two runs).
    pub before_version: String,
    /// The model.
    pub model: String,
    /// The provider.
    pub provider: String,
    /// How it changed.
    pub change: Change,
    /// Whether it passed before.
    pub before_passed: Option<bool>,
    /// Whether it passes now.
    pub after_passed: Option<bool>,
    /// Latency now minus before, in milliseconds.
    pub latency_delta_ms: Option<f64>,
    /// Cost now minus before, in US dollars (when both are known).
    pub cost_delta_usd: Option<f64>,
    /// What fails now (for a pass → fail cell).
    pub failures: Vec<String>,
}

/// Every cell of two runs (or two columns) side by side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// What the "before" side is: a stored run's path, or a version.
    pub before: String,
    /// Every cell, in the order of the "after" side, then the removed ones.
    pub cells: Vec<CellChange>,
}

impl Comparison {
    /// The cells whose outcome changed (pass → fail, fail → pass, new, gone).
    pub fn changed(&self) -> impl Iterator<Item = &CellChange> {
        self.cells.iter().filter(|c| c.change != Change::Same)
    }

    /// The cells that passed before and fail now.
    pub fn regressions(&self) -> impl Iterator<Item = &CellChange> {
        self.cells.iter().filter(|c| c.change == Change::PassToFail)
    }
}

fn change_of(before: Option<&Cell>, after: Option<&Cell>) -> CellChange {
    let any = after.or(before);
    let (case, model, provider) = any.map_or_else(Default::default, |c| {
        (c.case.clone(), c.model.clone(), c.provider.clone())
    });
    let change = match (before.map(|c| c.passed), after.map(|c| c.passed)) {
        (Some(true), Some(false)) => Change::PassToFail,
        (Some(false), Some(true)) => Change::FailToPass,
        (None, Some(_)) => Change::Added,
        (Some(_), None) => Change::Removed,
        _ => Change::Same,
    };
    let delta = |f: fn(&Cell) -> Option<f64>| match (before.and_then(f), after.and_then(f)) {
        (Some(b), Some(a)) => Some(a - b),
        _ => None,
    };
    CellChange {
        case,
        version: any.map(|c| c.version.clone()).unwrap_or_default(),
        before_version: before
            .or(after)
            .map(|c| c.version.clone())
            .unwrap_or_default(),
        model,
        provider,
        change,
        before_passed: before.map(|c| c.passed),
        after_passed: after.map(|c| c.passed),
        latency_delta_ms: delta(|c| Some(c.latency_ms)),
        cost_delta_usd: delta(|c| c.cost_usd),
        failures: after
            .filter(|_| change == Change::PassToFail)
            .map(|c| {
                c.failures
                    .iter()
                    .map(|f| format!("{}: {}", f.assertion, f.reason))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// Pairs cells of `before` and `after` by `key`: every "after" cell with its counterpart, then
/// the "before" cells that have none.
fn pair<'a, K: PartialEq>(
    before: &[&'a Cell],
    after: &[&'a Cell],
    key: impl Fn(&Cell) -> K,
) -> Vec<CellChange> {
    let mut out: Vec<CellChange> = after
        .iter()
        .map(|a| {
            let k = key(a);
            change_of(before.iter().copied().find(|b| key(b) == k), Some(a))
        })
        .collect();
    for b in before {
        let k = key(b);
        if !after.iter().any(|a| key(a) == k) {
            out.push(change_of(Some(b), None));
        }
    }
    out
}

/// What changed per cell from a stored run to this one (cells matched by case, version,
/// model and provider).
pub fn compare_runs(before: &EvalRun, before_name: &str, after: &EvalRun) -> Comparison {
    let b: Vec<&Cell> = before.cells.iter().collect();
    let a: Vec<&Cell> = after.cells.iter().collect();
    Comparison {
        before: before_name.to_owned(),
        cells: pair(&b, &a, |c| (c.case.clone(), c.column())),
    }
}

/// What changes from one version's cells to another's in one run (cells matched by case,
/// model and provider): the diff a promotion decides on.
pub fn compare_versions(run: &EvalRun, from: &str, to: &str) -> Comparison {
    let b: Vec<&Cell> = run.cells.iter().filter(|c| c.version == from).collect();
    let a: Vec<&Cell> = run.cells.iter().filter(|c| c.version == to).collect();
    let mut comparison = Comparison {
        before: from.to_owned(),
        cells: pair(&b, &a, |c| {
            (c.case.clone(), c.model.clone(), c.provider.clone())
        }),
    };
    for c in &mut comparison.cells {
        from.clone_into(&mut c.before_version);
    }
    comparison
}

/// The stored runs of eval files: `<dir>/<eval file stem>/<time>.json`, one JSON file a run.
#[derive(Debug, Clone)]
pub struct RunStore {
    dir: PathBuf,
}

impl RunStore {
    /// The runs under `dir` (created on the first save).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The folder of one eval file's runs.
    pub fn folder(&self, eval_file: &Path) -> PathBuf {
        let stem = eval_file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("eval");
        self.dir.join(stem)
    }

    /// Stores a run as `<folder>/<UTC time to the millisecond>.json` (written to a temporary
    /// file and renamed into place) and returns its path.
    pub fn save(&self, eval_file: &Path, run: &EvalRun) -> Result<PathBuf, EvalError> {
        let folder = self.folder(eval_file);
        std::fs::create_dir_all(&folder).map_err(|e| EvalError::io(&folder, e))?;
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ").to_string();
        let mut path = folder.join(format!("{stamp}.json"));
        let mut n = 1;
        while path.exists() {
            path = folder.join(format!("{stamp}-{n}.json"));
            n += 1;
        }
        let text = serde_json::to_string_pretty(run).map_err(|e| EvalError::BadRun {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                EvalError::io(&path, e)
            })?;
        Ok(path)
    }

    /// Reads a stored run.
    pub fn load(path: &Path) -> Result<EvalRun, EvalError> {
        let text = std::fs::read_to_string(path).map_err(|e| EvalError::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| EvalError::BadRun {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// The newest readable stored run of this eval file, with its path and the number of
    /// unreadable files passed over (they are left where they are).
    pub fn last(&self, eval_file: &Path) -> Result<(Option<(PathBuf, EvalRun)>, usize), EvalError> {
        let folder = self.folder(eval_file);
        let entries = match std::fs::read_dir(&folder) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((None, 0)),
            Err(e) => return Err(EvalError::io(&folder, e)),
        };
        let mut paths: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        // Names are UTC times of one width (`-N` added on a clash), so the newest sorts last.
        paths.sort_by_key(|p| {
            let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
            match stem.rsplit_once('-') {
                Some((time, n)) => (time.to_owned(), n.parse::<u32>().unwrap_or(0)),
                None => (stem.to_owned(), 0),
            }
        });
        let mut skipped = 0;
        while let Some(path) = paths.pop() {
            match Self::load(&path) {
                Ok(run) => return Ok((Some((path, run)), skipped)),
                Err(_) => skipped += 1,
            }
        }
        Ok((None, skipped))
    }
}
