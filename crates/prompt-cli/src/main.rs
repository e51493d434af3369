//! The `prompt` command: templates, render, generate, batch, cache, metrics, report.

fn main() -> std::process::ExitCode {
    prompt_cli::main()
}
