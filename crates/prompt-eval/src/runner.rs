//! Running an eval: every case against every version × model × provider, `repeat` samples
//! each, through the agents' cached, measured path.

use std::collections::BTreeMap;

use futures_util::future::join_all;
use prompt_agent::{GenerateOptions, Generation, PromptSystem, RequestOptions, VersionReq};
use serde::{Deserialize, Serialize};

use crate::file::{Case, EvalFile, ResolvedVersion};

/// What one run is made of besides the file: the systems to call and the call options.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Samples per cell (at least 1). Sample `i` carries index `i` in its cache key, so
    /// samples are distinct requests; sample 0 is the plain request.
    pub repeat: u32,
    /// The options every call starts from (`no_cache`, the settings' request options).
    pub base: GenerateOptions,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            repeat: 1,
            base: GenerateOptions::default(),
        }
    }
}

/// The systems an eval calls: the default one, and one per provider the file names.
#[derive(Debug, Clone)]
pub struct Systems {
    /// The system of the settings' provider (used when the file names no providers).
    pub default: PromptSystem,
    /// A system per provider name of the file's `providers:`.
    pub by_provider: BTreeMap<String, PromptSystem>,
}

impl Systems {
    /// One system for everything.
    pub fn one(system: PromptSystem) -> Self {
        Self {
            default: system,
            by_provider: BTreeMap::new(),
        }
    }
}

/// One assertion that a sample failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// The sample (0 when the eval ran once).
    pub sample: u32,
    /// The assertion as written (`contains: "pier"`), or `generation` when the call failed.
    pub assertion: String,
    /// Its line in the eval file (0 for a failed call).
    pub line: usize,
    /// Why it failed.
    pub reason: String,
}

/// One cell of the matrix: a case under one version, model and provider, over its samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// The case name.
    pub case: String,
    /// The version as the file gives it (`2`, `production`).
    pub version: String,
    /// The version number it resolved to.
    pub resolved_version: u32,
    /// The model asked for (or, when the file names none, the one the request used).
    pub model: String,
    /// The provider.
    pub provider: String,
    /// Whether every sample passed every assertion.
    pub passed: bool,
    /// Samples run.
    pub samples: u32,
    /// Samples that passed.
    pub samples_passed: u32,
    /// The assertions that failed, and why, per sample.
    pub failures: Vec<Failure>,
    /// Mean latency of the samples in milliseconds.
    pub latency_ms: f64,
    /// Prompt tokens of the samples, summed (when any reported them).
    pub tokens_prompt: Option<u64>,
    /// Generated tokens of the samples, summed (when any reported them).
    pub tokens_completion: Option<u64>,
    /// Prompt and generated tokens together (when any were reported).
    pub tokens: Option<u64>,
    /// Cost of the samples in US dollars, when known.
    pub cost_usd: Option<f64>,
    /// Samples served from the cache.
    pub cache_hits: u32,
    /// The first sample's reply (for reports).
    pub output: String,
}

impl Cell {
    /// The column this cell belongs to.
    pub fn column(&self) -> ColumnKey {
        ColumnKey {
            version: self.version.clone(),
            model: self.model.clone(),
            provider: self.provider.clone(),
        }
    }
}

/// A column of the matrix: one version, model and provider.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ColumnKey {
    /// The version as the file gives it.
    pub version: String,
    /// The model.
    pub model: String,
    /// The provider.
    pub provider: String,
}

impl std::fmt::Display for ColumnKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} · {} · {}", self.version, self.model, self.provider)
    }
}

/// A column's totals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Column {
    /// Which column.
    #[serde(flatten)]
    pub key: ColumnKey,
    /// The version number the column's version resolved to.
    pub resolved_version: u32,
    /// Cells that passed.
    pub passed: usize,
    /// Cells.
    pub cells: usize,
    /// `passed / cells`.
    pub pass_rate: f64,
    /// Mean of the cells' latencies in milliseconds.
    pub latency_ms: f64,
    /// Tokens (prompt and generated) of every sample.
    pub tokens: u64,
    /// Cost of every sample in US dollars, when known for all.
    pub cost_usd: Option<f64>,
}

/// The result of one eval run: what is shown, written as `--json` and stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRun {
    /// The eval file.
    pub eval_file: String,
    /// The template, `agent/task`.
    pub template: String,
    /// When the run started (RFC 3339, UTC).
    pub started_at: String,
    /// Samples per cell.
    pub repeat: u32,
    /// Per-column totals, in matrix order.
    pub columns: Vec<Column>,
    /// Every cell: cases in file order within each column.
    pub cells: Vec<Cell>,
}

impl EvalRun {
    /// Whether every cell passed.
    pub fn passed(&self) -> bool {
        self.cells.iter().all(|c| c.passed)
    }

    /// Cells that failed.
    pub fn failed_cells(&self) -> usize {
        self.cells.iter().filter(|c| !c.passed).count()
    }

    /// The case names in file order.
    pub fn case_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for c in &self.cells {
            if !names.contains(&c.case.as_str()) {
                names.push(&c.case);
            }
        }
        names
    }
}

/// The options of one eval call, made here and nowhere else: the run's base options, the
/// resolved version, the column's model, the sample index and the metrics tag
/// [`EVAL_TAG`].
pub fn eval_call_options(
    base: &GenerateOptions,
    version: u32,
    model: Option<&str>,
    sample: u32,
    messages: Vec<prompt_agent::ChatMessage>,
) -> GenerateOptions {
    let call = RequestOptions {
        model: model.map(ToOwned::to_owned),
        sample: (sample > 0).then_some(sample),
        ..RequestOptions::default()
    };
    let mut tags = base.tags.clone();
    if !tags.iter().any(|t| t == EVAL_TAG) {
        tags.push(EVAL_TAG.to_owned());
    }
    GenerateOptions {
        version: VersionReq::Exact(version),
        request: call.over(&base.request),
        messages,
        tags,
        ..base.clone()
    }
}

/// The metrics tag every eval call carries (beside the caller's own tags).
pub const EVAL_TAG: &str = "eval";

/// The cost of one generation in US dollars, as its metrics record has it: 0 for a cache hit,
/// `None` for a model without a price.
pub fn generation_cost(generation: &Generation) -> Option<f64> {
    generation.cost_usd
}

/// One sample's outcome.
struct Sample {
    latency_ms: f64,
    tokens_prompt: Option<u64>,
    tokens_completion: Option<u64>,
    cost_usd: Option<f64>,
    cache_hit: bool,
    output: String,
    failures: Vec<Failure>,
}

/// Runs an eval file's versions (already [checked](EvalFile::check)) against every model and
/// provider it names, `options.repeat` samples a cell. Calls run concurrently, bounded by the
/// systems' own concurrency limits; a failed call is a failed cell, never an error of the run.
pub async fn run(
    file: &EvalFile,
    versions: &[ResolvedVersion],
    systems: &Systems,
    options: &RunOptions,
) -> EvalRun {
    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let repeat = options.repeat.max(1);
    let models: Vec<Option<&str>> = if file.models.is_empty() {
        vec![None]
    } else {
        file.models.iter().map(|m| Some(m.as_str())).collect()
    };
    let providers: Vec<(String, &PromptSystem)> = if file.providers.is_empty() {
        vec![(
            systems.default.provider().name().to_owned(),
            &systems.default,
        )]
    } else {
        file.providers
            .iter()
            .map(|p| {
                (
                    p.clone(),
                    systems.by_provider.get(p).unwrap_or(&systems.default),
                )
            })
            .collect()
    };

    let mut cells = Vec::new();
    for version in versions {
        for model in &models {
            for (provider, system) in &providers {
                let agent = system.template_agent(&file.agent);
                let futures = file.cases.iter().map(|case| {
                    run_cell(
                        &agent, file, case, version, *model, provider, options, repeat,
                    )
                });
                cells.extend(join_all(futures).await);
            }
        }
    }
    let columns = columns(&cells, versions);
    EvalRun {
        eval_file: file.path.display().to_string(),
        template: file.template_name(),
        started_at,
        repeat,
        columns,
        cells,
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_cell(
    agent: &prompt_agent::TemplateAgent,
    file: &EvalFile,
    case: &Case,
    version: &ResolvedVersion,
    model: Option<&str>,
    provider: &str,
    options: &RunOptions,
    repeat: u32,
) -> Cell {
    let number = version.template.version();
    let (vars, messages) = case.inputs(&version.template);
    let first = eval_call_options(&options.base, number, model, 0, messages.clone());
    let model_name = match model {
        Some(m) => m.to_owned(),
        None => agent
            .prepare(&file.task, &vars, &first)
            .map(|p| p.request.model().to_owned())
            .unwrap_or_default(),
    };
    let samples = (0..repeat).map(|sample| {
        let call = eval_call_options(&options.base, number, model, sample, messages.clone());
        let vars = &vars;
        async move {
            let result = agent.generate_from_template(&file.task, vars, &call).await;
            judge(case, vars, sample, result)
        }
    });
    let samples: Vec<Sample> = join_all(samples).await;
    let n = samples.len().max(1) as f64;
    let sum = |f: fn(&Sample) -> Option<u64>| {
        samples
            .iter()
            .filter_map(f)
            .fold(None, |acc: Option<u64>, v| Some(acc.unwrap_or(0) + v))
    };
    let cost_usd = samples
        .iter()
        .map(|s| s.cost_usd)
        .try_fold(0.0, |acc, c| c.map(|c| acc + c));
    Cell {
        case: case.name.clone(),
        version: version.spec.text.clone(),
        resolved_version: number,
        model: model_name,
        provider: provider.to_owned(),
        passed: samples.iter().all(|s| s.failures.is_empty()),
        samples: repeat,
        samples_passed: samples.iter().filter(|s| s.failures.is_empty()).count() as u32,
        latency_ms: samples.iter().map(|s| s.latency_ms).sum::<f64>() / n,
        tokens_prompt: sum(|s| s.tokens_prompt),
        tokens_completion: sum(|s| s.tokens_completion),
        tokens: match (sum(|s| s.tokens_prompt), sum(|s| s.tokens_completion)) {
            (None, None) => None,
            (p, c) => Some(p.unwrap_or(0) + c.unwrap_or(0)),
        },
        cost_usd,
        cache_hits: samples.iter().filter(|s| s.cache_hit).count() as u32,
        output: samples
            .first()
            .map(|s| s.output.clone())
            .unwrap_or_default(),
        failures: samples.into_iter().flat_map(|s| s.failures).collect(),
    }
}

/// Checks one sample's reply against the case's assertions.
fn judge(
    case: &Case,
    vars: &prompt_agent::Vars,
    sample: u32,
    result: Result<Generation, prompt_agent::AgentError>,
) -> Sample {
    match result {
        Ok(g) => {
            let failures = case
                .assertions
                .iter()
                .filter_map(|a| {
                    a.assertion
                        .check(&g.content, &g.tool_calls, vars)
                        .err()
                        .map(|reason| Failure {
                            sample,
                            assertion: a.assertion.describe(),
                            line: a.line,
                            reason,
                        })
                })
                .collect();
            Sample {
                latency_ms: g.latency_ms,
                tokens_prompt: g.tokens_prompt,
                tokens_completion: g.tokens_completion,
                cost_usd: generation_cost(&g),
                cache_hit: g.cache_hit,
                failures,
                output: g.content,
            }
        }
        Err(e) => Sample {
            latency_ms: 0.0,
            tokens_prompt: None,
            tokens_completion: None,
            cost_usd: None,
            cache_hit: false,
            output: String::new(),
            failures: vec![Failure {
                sample,
                assertion: "generation".to_owned(),
                line: case.line,
                reason: e.to_string(),
            }],
        },
    }
}

/// The per-column totals, in the order the columns first appear.
fn columns(cells: &[Cell], versions: &[ResolvedVersion]) -> Vec<Column> {
    let mut order: Vec<ColumnKey> = Vec::new();
    for c in cells {
        let key = c.column();
        if !order.contains(&key) {
            order.push(key);
        }
    }
    order
        .into_iter()
        .map(|key| {
            let mine: Vec<&Cell> = cells.iter().filter(|c| c.column() == key).collect();
            let passed = mine.iter().filter(|c| c.passed).count();
            let n = mine.len().max(1);
            Column {
                resolved_version: versions
                    .iter()
                    .find(|v| v.spec.text == key.version)
                    .map_or(0, |v| v.template.version()),
                passed,
                cells: mine.len(),
                pass_rate: passed as f64 / n as f64,
                latency_ms: mine.iter().map(|c| c.latency_ms).sum::<f64>() / n as f64,
                tokens: mine.iter().filter_map(|c| c.tokens).sum(),
                cost_usd: mine
                    .iter()
                    .map(|c| c.cost_usd)
                    .try_fold(0.0, |acc, c| c.map(|c| acc + c)),
                key,
            }
        })
        .collect()
}
