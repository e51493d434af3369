//! `cargo xtask bench`: criterion benches of every crate and a peer comparison.

use std::path::Path;

/// Runs the benches; `args` are the words after `bench` (e.g. `--quick`).
pub(crate) fn run(_root: &Path, _args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("cargo xtask bench is not available yet")
}
