//! The command line: every command, option and environment variable of `prompt`.

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};
use prompt_agent::{
    DEFAULT_CACHE_DIR, DEFAULT_CONCURRENCY, DEFAULT_IDLE_TIMEOUT_SECS, DEFAULT_METRICS_DIR,
    DEFAULT_MODEL, DEFAULT_RETRIES, DEFAULT_TEMPLATES_DIR, DEFAULT_TIMEOUT_SECS,
};
use prompt_eval::DEFAULT_RUNS_DIR;

const ROOT_AFTER_HELP: &str = "\
Settings come from, in order: a flag, its environment variable, the config file
(--config FILE, or ./prompt.toml when present), the built-in default.

Exit codes: 0 success, 1 failure, 2 usage error (bad arguments, no provider given), 130 interrupted.

Examples:
  prompt templates list
  prompt render writer/write_chapter --vars examples/chapter1.yaml
  prompt generate writer/write_chapter --vars examples/chapter1.yaml --provider echo
  prompt batch examples/jobs.jsonl --out results.jsonl --provider ollama --model qwen3:30b
  prompt metrics agent writer --days 7
  prompt metrics report --out report.html
  prompt eval evals/scene.yaml --provider ollama --compare last
  prompt label set writer/write_chapter production 2
  prompt serve --provider ollama --listen 127.0.0.1:8787";

/// `prompt`: versioned prompt templates, cached generations and metrics from one command.
#[derive(Debug, Parser)]
#[command(
    name = "prompt",
    version,
    about = "Render, run and measure versioned LLM prompt templates",
    long_about = "Render, run and measure versioned LLM prompt templates.\n\n\
        Templates are YAML files under templates/<agent>/<task>_v<N>.yaml; every generation goes \
        through a response cache and leaves a metrics record that `prompt metrics` aggregates.",
    after_help = ROOT_AFTER_HELP,
    propagate_version = true,
    arg_required_else_help = true
)]
pub struct Cli {
    /// Options every command accepts.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command accepts.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Config file (TOML) [default: ./prompt.toml when present]
    #[arg(long, global = true, env = "PROMPT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Template directory.
    #[arg(long, global = true, env = "PROMPT_TEMPLATES", value_name = "DIR",
          help = format!("Template directory [default: ./{DEFAULT_TEMPLATES_DIR}]"))]
    pub templates: Option<PathBuf>,
    /// Response cache directory.
    #[arg(long, global = true, env = "PROMPT_CACHE_DIR", value_name = "DIR",
          help = format!("Response cache directory [default: ./{DEFAULT_CACHE_DIR}]"))]
    pub cache_dir: Option<PathBuf>,
    /// Shared Redis cache instead of the directory, e.g. redis://127.0.0.1:6379/0
    #[arg(long, global = true, env = "PROMPT_CACHE_URL", value_name = "URL")]
    pub cache_url: Option<String>,
    /// Metrics directory.
    #[arg(long, global = true, env = "PROMPT_METRICS_DIR", value_name = "DIR",
          help = format!("Metrics directory (daily metrics_YYYY-MM-DD.jsonl files) [default: ./{DEFAULT_METRICS_DIR}]"))]
    pub metrics_dir: Option<PathBuf>,
    /// Machine-readable JSON on stdout (and nothing else on stdout)
    #[arg(long, global = true, env = "PROMPT_JSON")]
    pub json: bool,
    /// Print only errors (logs go to stderr)
    #[arg(short, long, global = true, action = ArgAction::Count, conflicts_with = "verbose")]
    pub quiet: u8,
    /// More log output on stderr (-v debug, -vv trace); RUST_LOG overrides
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,
}

/// The commands of `prompt`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List and show templates
    #[command(subcommand)]
    Templates(TemplatesCommand),
    /// Print the system and user prompts a template renders to
    #[command(after_help = "\
Examples:
  prompt render writer/write_chapter --vars examples/chapter1.yaml
  prompt render writer/write_chapter@1 --var chapter_number=2 --var chapter_title='The Storm'
  prompt render editor/edit_chapter --vars vars.json --examples 1 --json")]
    Render {
        /// Template as AGENT/TASK or AGENT/TASK@VERSION (e.g. writer/write_chapter@2)
        #[arg(value_name = "AGENT/TASK[@VERSION]")]
        template: String,
        /// Template variables.
        #[command(flatten)]
        vars: VarsArgs,
    },
    /// Lint the templates (same output as `cargo xtask validate-templates`)
    #[command(after_help = "\
Prints one line per problem (path:line:col: error|warning: message) and a summary; exits 1
when any error was found.

Examples:
  prompt validate
  prompt validate path/to/templates")]
    Validate {
        /// Template directory [default: the --templates directory]
        #[arg(value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Run a template through the provider (cached, measured) and print the response
    #[command(after_help = "\
Examples:
  prompt generate writer/write_chapter --vars examples/chapter1.yaml --provider echo
  prompt generate writer/write_chapter --vars examples/chapter1.yaml --provider ollama \\
      --model qwen3:30b
  PROMPT_PROVIDER=openai OPENAI_API_KEY=... prompt generate editor/edit_chapter --vars v.yaml")]
    Generate {
        /// Template as AGENT/TASK or AGENT/TASK@VERSION
        #[arg(value_name = "AGENT/TASK[@VERSION]")]
        template: String,
        /// Template variables.
        #[command(flatten)]
        vars: VarsArgs,
        /// Provider settings.
        #[command(flatten)]
        provider: ProviderArgs,
        /// On a terminal, also print the model's reasoning ("thinking") text as it arrives, dimmed
        #[arg(long)]
        show_thinking: bool,
        /// On a terminal, print a cached streamed reply with the pacing it first arrived at
        /// (default: at once)
        #[arg(long)]
        paced_replay: bool,
    },
    /// Run many generations from a JSONL file of jobs, resumable
    #[command(after_help = "\
Each line of JOBS is one job: {\"template\": \"writer/write_chapter\", \"vars\": {...}}
(blank lines and lines starting with # are skipped). Each result is one line of OUT:
{\"line\": N, \"template\": ..., \"vars\": ..., \"ok\": true, \"response\": ..., \"model\": ...,
 \"cache_hit\": ..., \"error\": null, ...}. Jobs that already have a line in OUT are skipped, so
running the same command again resumes an interrupted batch. Ctrl-C stops taking new jobs and
writes the lines of the jobs in flight before exiting (exit code 130).

Examples:
  prompt batch examples/jobs.jsonl --out results.jsonl --provider echo
  prompt batch jobs.jsonl --out results.jsonl --provider ollama --concurrency 4")]
    Batch {
        /// JSONL file, one job per line
        #[arg(value_name = "JOBS.jsonl")]
        jobs: PathBuf,
        /// JSONL file the results are appended to
        #[arg(long, value_name = "RESULTS.jsonl")]
        out: PathBuf,
        /// Jobs run at the same time.
        #[arg(long, env = "PROMPT_CONCURRENCY", value_name = "N",
              help = format!("Jobs run at the same time (and provider calls in flight) [default: {DEFAULT_CONCURRENCY}]"))]
        concurrency: Option<usize>,
        /// Run again the jobs whose line in OUT failed (a new line is appended; the last wins)
        #[arg(long)]
        retry_failed: bool,
        /// Provider settings.
        #[command(flatten)]
        provider: ProviderArgs,
    },
    /// Serve an OpenAI-compatible API (chat completions, models, health, Prometheus metrics)
    /// with the cache, metrics and templates in front of the provider
    #[command(after_help = "\
Point any OpenAI client at http://ADDR/v1. Every call goes through the response cache
(x-promptkit-cache: hit|miss; Cache-Control: no-cache skips the read) and leaves a metrics
record, under the agent and task of the X-Prompt-Agent and X-Prompt-Task headers (default
gateway/chat). A body with \"template\": \"agent/task[@version]\" and \"vars\" is rendered here.
SIGTERM or Ctrl-C stops taking requests, lets the ones in flight finish (at most 30 s), flushes
the cache and metrics and exits 0.

Examples:
  prompt serve --provider ollama
  PROMPT_CLIENT_KEY=s3cret prompt serve --provider openai --base-url http://10.0.0.5:8000/v1 \\
      --listen 0.0.0.0:8787 --client-key-env PROMPT_CLIENT_KEY
  prompt serve --provider ollama --replay-only     # answer from the cache only (CI)
  curl http://127.0.0.1:8787/v1/chat/completions -H 'content-type: application/json' \\
      -d '{\"model\": \"qwen3:8b\", \"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}]}'")]
    Serve {
        /// Server settings.
        #[command(flatten)]
        serve: ServeArgs,
        /// Provider settings.
        #[command(flatten)]
        provider: ProviderArgs,
    },
    /// Run an eval file: every case against each version, model and provider, with assertions
    #[command(after_help = "\
An eval file names a template, the versions (numbers or labels) to compare, optionally models
and providers to cross with them, and cases, each with vars (or a history) and assertions:
contains, not_contains, regex, equals, min_length, max_length, json (optionally a JSON Schema),
tool_call, expr (a minijinja expression over output, vars and tool_calls). The file is checked
against the templates before any call; errors name FILE:LINE. Every call goes through the cache
and leaves a metrics record. Each run is stored under --runs-dir; --compare last shows what
changed since the previous run. Exit code 1 when any assertion fails.

Examples:
  prompt eval examples/eval_write_scene.yaml --provider echo
  prompt eval evals/scene.yaml --provider ollama --repeat 3 --html output/eval.html
  prompt eval evals/scene.yaml --provider ollama --compare last --json")]
    Eval {
        /// The eval file (YAML)
        #[arg(value_name = "FILE.yaml")]
        file: PathBuf,
        /// Eval options.
        #[command(flatten)]
        eval: EvalArgs,
        /// Write a self-contained HTML page of the matrix to FILE
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
        /// Show what changed per cell since a stored run: `last` (the previous run of this
        /// file) or the run's PATH
        #[arg(long, value_name = "last|PATH")]
        compare: Option<String>,
        /// Provider settings.
        #[command(flatten)]
        provider: ProviderArgs,
    },
    /// Name template versions: `production`, `staging`… in templates/labels.toml
    #[command(subcommand)]
    Label(LabelCommand),
    /// Move a label to a version only when an eval finds no regression against the labelled one
    #[command(after_help = "\
Runs the eval file for the version LABEL names now and for VERSION, and moves LABEL to VERSION
only when VERSION passes every case the current version passes. The per-cell diff is printed
either way; exit code 1 when the label was not moved. --force moves it anyway and says so.

Examples:
  prompt promote writer/write_chapter production 3 --eval evals/chapter.yaml --provider ollama
  prompt promote writer/write_chapter production 3 --eval evals/chapter.yaml --provider echo --force")]
    Promote {
        /// The template, AGENT/TASK
        #[arg(value_name = "AGENT/TASK")]
        template: String,
        /// The label to move
        #[arg(value_name = "LABEL")]
        label: String,
        /// The candidate version (a number, or another label)
        #[arg(value_name = "VERSION")]
        candidate: String,
        /// The eval file whose cases decide
        #[arg(long, value_name = "FILE.yaml")]
        eval: PathBuf,
        /// Move the label even when the candidate regresses
        #[arg(long)]
        force: bool,
        /// Eval options.
        #[command(flatten)]
        eval_args: EvalArgs,
        /// Provider settings.
        #[command(flatten)]
        provider: ProviderArgs,
    },
    /// Inspect and clean the response cache
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Aggregate the metrics records: per agent, task, model, template version; HTML report
    #[command(subcommand)]
    Metrics(MetricsCommand),
    /// Check the provider, the model, the directories and the templates
    #[command(after_help = "\
Prints one line per check, ✓ or ✗ with the fix; exits 1 when any check fails.

Examples:
  prompt doctor --provider ollama --model qwen3:30b
  prompt doctor --provider echo")]
    Doctor {
        /// Provider settings.
        #[command(flatten)]
        provider: ProviderArgs,
    },
}

/// `prompt templates …`
#[derive(Debug, Subcommand)]
pub enum TemplatesCommand {
    /// List the templates (every version)
    #[command(after_help = "\
Examples:
  prompt templates list
  prompt templates list --agent writer --json")]
    List {
        /// Only this agent's templates
        #[arg(long, value_name = "AGENT")]
        agent: Option<String>,
    },
    /// Show one template: metadata, model defaults, variables, prompts
    #[command(after_help = "\
Examples:
  prompt templates show writer/write_chapter
  prompt templates show writer/write_chapter@1 --json")]
    Show {
        /// Template as AGENT/TASK or AGENT/TASK@VERSION
        #[arg(value_name = "AGENT/TASK[@VERSION]")]
        template: String,
    },
}

/// `prompt cache …`
#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Entries, size, hits of the cache
    #[command(after_help = "\
Examples:
  prompt cache stats
  prompt cache stats --cache-url redis://127.0.0.1:6379/0 --json")]
    Stats,
    /// Remove every entry
    #[command(after_help = "Example:\n  prompt cache clear")]
    Clear,
    /// Remove the expired entries
    #[command(after_help = "Example:\n  prompt cache prune")]
    Prune,
}

/// `prompt metrics …`
#[derive(Debug, Subcommand)]
pub enum MetricsCommand {
    /// Statistics of one agent
    #[command(after_help = "\
Examples:
  prompt metrics agent writer
  prompt metrics agent writer --days 30 --json")]
    Agent {
        /// Agent name (the template folder, e.g. writer)
        agent: String,
        /// How many days of metrics.
        #[command(flatten)]
        days: DaysArg,
    },
    /// Statistics of one agent's task
    #[command(after_help = "Example:\n  prompt metrics task writer write_chapter --days 7")]
    Task {
        /// Agent name
        agent: String,
        /// Task name
        task: String,
        /// How many days of metrics.
        #[command(flatten)]
        days: DaysArg,
    },
    /// Compare the models
    #[command(after_help = "Example:\n  prompt metrics models --days 30")]
    Models {
        /// How many days of metrics.
        #[command(flatten)]
        days: DaysArg,
    },
    /// Compare the template versions of one task
    #[command(after_help = "Example:\n  prompt metrics versions writer write_chapter")]
    Versions {
        /// Agent name
        agent: String,
        /// Task name
        task: String,
        /// How many days of metrics.
        #[command(flatten)]
        days: DaysArg,
    },
    /// Delete the daily metrics files older than N days
    #[command(after_help = "Example:\n  prompt metrics cleanup --keep 30")]
    Cleanup {
        /// Days of metrics files to keep
        #[arg(long, value_name = "N")]
        keep: u32,
    },
    /// Compare the tags: calls, cost and savings per tag (a call with two tags counts in both)
    #[command(after_help = "Example:\n  prompt metrics tags --days 30 --json")]
    Tags {
        /// How many days of metrics.
        #[command(flatten)]
        days: DaysArg,
    },
    /// Today's spend (UTC) against each limit of [budget] in the config
    #[command(after_help = "\
Limits come from the config file: [budget] daily_usd, [budget.agents] NAME = USD,
[budget.tags] TAG = USD. Spend is the sum of the records' cost_usd since 00:00 UTC in the
metrics directory, shared by every process writing there.

Example:\n  prompt metrics budget --json")]
    Budget,
    /// Write one self-contained HTML report with charts and tables
    #[command(after_help = "\
The file needs no network to be viewed: CSS and SVG charts are inline.

Examples:
  prompt metrics report --out report.html
  prompt metrics report --days 30 --out output/report.html")]
    Report {
        /// How many days of metrics.
        #[command(flatten)]
        days: DaysArg,
        /// HTML file to write
        #[arg(long, value_name = "FILE", default_value = "report.html")]
        out: PathBuf,
    },
}

/// The options of `prompt serve`.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Server")]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = prompt_gateway::DEFAULT_LISTEN)]
    pub listen: String,
    /// Environment variable holding the key clients must send as `Authorization: Bearer KEY`
    /// (401 otherwise; /health stays open). The client's key is never sent upstream
    #[arg(long, value_name = "NAME")]
    pub client_key_env: Option<String>,
    /// Largest request body accepted, in bytes (larger ones get HTTP 413)
    #[arg(long, value_name = "BYTES", default_value_t = prompt_gateway::DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// Longest a chat completion may take, in seconds (HTTP 504) [default: the attempts' own
    /// timeouts]
    #[arg(long, value_name = "SECS")]
    pub request_timeout: Option<f64>,
    /// Answer from the cache only, never call upstream: a miss is HTTP 404 with code cache_miss
    #[arg(long)]
    pub replay_only: bool,
    /// Upstream calls in flight at once.
    #[arg(long, env = "PROMPT_CONCURRENCY", value_name = "N",
          help = format!("Upstream calls in flight at once; more requests wait for a slot (identical ones share a call) [default: {DEFAULT_CONCURRENCY}]"))]
    pub concurrency: Option<usize>,
}

/// `--days N`
#[derive(Debug, Clone, Copy, Args)]
pub struct DaysArg {
    /// Days of metrics to read, today included
    #[arg(long, value_name = "N", default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..))]
    pub days: u32,
}

/// Template variables: `--var k=v`, `--vars FILE`, `--examples N`.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Variables")]
pub struct VarsArgs {
    /// A variable, KEY=VALUE (repeatable); parsed as the type the template declares
    #[arg(long = "var", value_name = "KEY=VALUE")]
    pub var: Vec<String>,
    /// Variables from a JSON or YAML file holding one mapping (- reads stdin); --var overrides it
    #[arg(long = "vars", value_name = "FILE.json|.yaml")]
    pub vars_file: Option<PathBuf>,
    /// Few-shot examples from the template rendered ahead of the user prompt
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub examples: usize,
}

/// Options of the commands that run an eval.
#[derive(Debug, Clone, Args)]
pub struct EvalArgs {
    /// Run each cell N times as distinct samples (each its own cache entry)
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub repeat: u32,
    /// Directory of the stored runs (one JSON file a run, under a folder per eval file)
    #[arg(long, env = "PROMPT_EVAL_RUNS_DIR", value_name = "DIR",
          help = format!("Directory of the stored runs (a JSON file a run, in a folder per eval file) [default: ./{DEFAULT_RUNS_DIR}]"))]
    pub runs_dir: Option<PathBuf>,
}

/// `prompt label …`
#[derive(Debug, Subcommand)]
pub enum LabelCommand {
    /// Point LABEL of a template at VERSION (templates/labels.toml)
    #[command(after_help = "\
Examples:
  prompt label set writer/write_chapter production 2
  prompt generate writer/write_chapter@production --vars examples/chapter1.yaml --provider echo")]
    Set {
        /// The template, AGENT/TASK
        #[arg(value_name = "AGENT/TASK")]
        template: String,
        /// The label (letters, digits, `_`, `-`, starting with a letter)
        #[arg(value_name = "LABEL")]
        label: String,
        /// The version it names (a number, or another label)
        #[arg(value_name = "VERSION")]
        target: String,
    },
    /// List the labels, of every template or of one
    List {
        /// Only this template, AGENT/TASK
        #[arg(value_name = "AGENT/TASK")]
        template: Option<String>,
    },
}

/// Where and how to generate.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Provider")]
pub struct ProviderArgs {
    /// Provider: ollama, openai (any OpenAI-compatible server; alias openai-compatible) or echo
    /// (offline, deterministic)
    #[arg(long, env = "PROMPT_PROVIDER", value_name = "NAME")]
    pub provider: Option<String>,
    /// Provider base URL [default: ollama $OLLAMA_HOST, else http://localhost:11434; openai https://api.openai.com/v1]
    #[arg(long, env = "PROMPT_BASE_URL", value_name = "URL")]
    pub base_url: Option<String>,
    /// Model.
    #[arg(long, env = "PROMPT_MODEL", value_name = "MODEL",
          help = format!("Model [default: the template's model, then {DEFAULT_MODEL}]"))]
    pub model: Option<String>,
    /// Sampling temperature [default: the template's]
    #[arg(long, env = "PROMPT_TEMPERATURE", value_name = "T")]
    pub temperature: Option<f64>,
    /// Timeout of one attempt, in seconds.
    #[arg(long, env = "PROMPT_TIMEOUT", value_name = "SECS",
          help = format!("Wall-clock limit of one attempt, in seconds [default: {DEFAULT_TIMEOUT_SECS}]; connecting may take at most 10 s of it"))]
    pub timeout: Option<f64>,
    /// Retries after a failed attempt.
    #[arg(long, env = "PROMPT_RETRIES", value_name = "N",
          help = format!("Retries after a failed attempt (connection errors, timeouts, 5xx, too-short replies) [default: {DEFAULT_RETRIES}]"))]
    pub retries: Option<u32>,
    /// Environment variable holding the API key of an OpenAI-compatible server. Without it,
    /// OPENAI_API_KEY is sent to https://api.openai.com only, and other servers get no key
    #[arg(long, env = "PROMPT_API_KEY_ENV", value_name = "NAME")]
    pub api_key_env: Option<String>,
    /// Do not read the response cache (the new reply is still stored)
    #[arg(long, env = "PROMPT_NO_CACHE")]
    pub no_cache: bool,
    /// Ask for whole replies instead of streams (for servers that cannot stream)
    #[arg(long, env = "PROMPT_NO_STREAM")]
    pub no_stream: bool,
    /// Longest gap between two chunks of a streamed reply, in seconds.
    #[arg(long, env = "PROMPT_IDLE_TIMEOUT", value_name = "SECS",
          help = format!("Longest gap between two chunks of a streamed reply before the attempt counts as stalled, in seconds [default: {DEFAULT_IDLE_TIMEOUT_SECS}]"))]
    pub idle_timeout: Option<f64>,
    /// A tag for the calls' metrics records (repeatable): `prompt metrics tags` groups by
    /// tag, `[budget.tags]` limits spend per tag. Not part of the cache key
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Price file (TOML, USD per million tokens by model name or glob), read before the
    /// shipped table
    #[arg(long, env = "PROMPT_PRICES", value_name = "FILE")]
    pub prices: Option<PathBuf>,
    /// Refuse the calls that could take this command's own spend over USD
    #[arg(long, value_name = "USD")]
    pub budget_usd: Option<f64>,
    /// Put messages and replies into the exported OpenTelemetry spans (gen_ai.input.messages,
    /// gen_ai.output.messages); off by default
    #[arg(long, env = "PROMPT_OTEL_CONTENT")]
    pub otel_content: bool,
}
