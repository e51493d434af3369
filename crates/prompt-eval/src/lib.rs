//! Eval files: compare template versions (or labels), models and providers on a fixed set of
//! cases, with assertions on every reply; store each run and show what changed since the last.
//!
//! - [`EvalFile`] reads an eval file (YAML: `template`, `versions`, `models`, `providers`,
//!   `cases` with `vars`, `history` and `assert`) and [`EvalFile::check`]s it against the
//!   templates before any call — every error names the file and line.
//! - [`Assertion`] is one check of a reply: `contains`, `not_contains`, `regex`, `equals`,
//!   `min_length`, `max_length`, `json` (optionally against a JSON Schema), `tool_call` and
//!   `expr` (a minijinja expression over `output`, `vars` and `tool_calls`).
//! - [`run`] calls every case for every version × model × provider through the agents'
//!   cached, measured path ([`RunOptions::repeat`] samples a cell, each a distinct cache
//!   entry) and returns an [`EvalRun`]: cells with their failures, latency, tokens and cost.
//! - [`RunStore`] keeps runs as JSON files named by time; [`compare_runs`] and
//!   [`compare_versions`] show what changed per cell.
//!
//! ```
//! use prompt_agent::{EchoProvider, PromptSystem};
//! use prompt_eval::{EvalFile, RunOptions, Systems, run};
//! use std::sync::Arc;
//!
//! let dir = tempfile::tempdir()?;
//! std::fs::create_dir(dir.path().join("writer"))?;
//! std::fs::write(
//!     dir.path().join("writer/greet_v1.yaml"),
//!     "version: 1\nagent: writer\ntask: greet\nsystem_prompt: Be kind.\n\
//!      user_prompt_template: Greet {{ name }} warmly.\nvariables:\n  name: \"string - Who\"\n",
//! )?;
//! let file = EvalFile::parse(
//!     "greet.yaml".as_ref(),
//!     "template: writer/greet\nversions: [1]\ncases:\n  - name: ada\n    vars: { name: Ada }\n    assert:\n      - contains: Ada\n      - not_contains: Bob\n",
//! )?;
//! let system = PromptSystem::builder()
//!     .templates_dir(dir.path())
//!     .provider(Arc::new(EchoProvider::new()))
//!     .build()?;
//! let versions = file.check(system.templates())?; // before any call
//! let result = tokio::runtime::Runtime::new()?
//!     .block_on(run(&file, &versions, &Systems::one(system), &RunOptions::default()));
//! assert!(result.passed());
//! assert_eq!(result.cells[0].resolved_version, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod assertion;
mod compare;
mod error;
mod file;
mod runner;

pub use assertion::{ASSERTION_KINDS, Assertion};
pub use compare::{
    CellChange, Change, Comparison, DEFAULT_RUNS_DIR, RunStore, compare_runs, compare_versions,
};
pub use error::EvalError;
pub use file::{Case, CaseAssertion, EvalFile, ResolvedVersion, VersionSpec};
pub use runner::{
    Cell, Column, ColumnKey, EVAL_TAG, EvalRun, Failure, RunOptions, Systems, eval_call_options,
    generation_cost, run,
};
