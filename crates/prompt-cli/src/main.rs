//! The `prompt` command: templates, render, generate, batch, cache, metrics, report.

fn main() {}
