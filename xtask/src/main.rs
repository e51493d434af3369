//! Project tasks: `cargo xtask ci | validate-templates [DIR] | bench [--quick] [--gateway]`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

mod bench;
#[cfg(test)]
mod gateway_client;

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  ci                         fmt --check, clippy -D warnings, validate-templates, all tests
  validate-templates [DIR]   lint the templates in DIR (default: templates/)
  bench [--quick] [--gateway | --no-gateway]
                             criterion benches, peer comparison and the gateway load test
                             (not run in CI; `bench --help` for the options)
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<ExitCode> {
    let root = project_root();
    match args.first().map(String::as_str) {
        Some("ci") => ci(&root).map(|()| ExitCode::SUCCESS),
        Some("validate-templates") => {
            let dir = args
                .get(1)
                .map_or_else(|| root.join("templates"), PathBuf::from);
            let clean = validate_templates(&dir)?;
            Ok(if clean {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Some("bench") => bench::run(&root, &args[1..]).map(|()| ExitCode::SUCCESS),
        Some("-h" | "--help" | "help") => {
            print!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        Some(other) => {
            eprint!("xtask: unknown task `{other}`\n\n{USAGE}");
            Ok(ExitCode::from(2))
        }
        None => {
            eprint!("{USAGE}");
            Ok(ExitCode::from(2))
        }
    }
}

/// The workspace root: the parent of this crate's manifest directory.
fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Prints one line per problem and a summary; returns `false` when any error was found.
fn validate_templates(dir: &Path) -> Result<bool> {
    let report = prompt_templates::lint(dir)
        .with_context(|| format!("cannot lint templates in {}", dir.display()))?;
    for diagnostic in &report.diagnostics {
        println!("{diagnostic}");
    }
    println!(
        "checked {} template file(s) in {}: {} error(s), {} warning(s)",
        report.files_checked,
        dir.display(),
        report.error_count(),
        report.warning_count()
    );
    Ok(!report.has_errors())
}

fn cargo(root: &Path, args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    eprintln!("$ cargo {}", args.join(" "));
    let status = Command::new(&cargo)
        .args(args)
        .current_dir(root)
        .status()
        .with_context(|| format!("cannot run {cargo}"))?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

fn has_nextest() -> bool {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    Command::new(cargo)
        .args(["nextest", "--version"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether an executable named `name` is on `PATH`.
fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
}

fn ci(root: &Path) -> Result<()> {
    cargo(root, &["fmt", "--all", "--", "--check"])?;
    cargo(
        root,
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    if !validate_templates(&root.join("templates"))? {
        bail!("templates/ has errors");
    }
    let redis = on_path("redis-server");
    if !redis {
        eprintln!(
            "xtask ci: redis-server not found on PATH: the Redis cache tests will be SKIPPED \
             (they pass without testing anything); install it (e.g. `apt-get install redis-server`) \
             to run them — .ci/run does"
        );
    }
    cargo(root, &["test", "--workspace", "--doc"])?;
    if has_nextest() {
        cargo(root, &["nextest", "run", "--workspace", "--no-fail-fast"])?;
    } else {
        eprintln!("cargo-nextest not found: running the tests with cargo test");
        cargo(
            root,
            &["test", "--workspace", "--all-targets", "--no-fail-fast"],
        )?;
    }
    if redis {
        eprintln!("xtask ci: all checks passed");
    } else {
        eprintln!(
            "xtask ci: all checks passed, but the Redis cache tests were SKIPPED (no redis-server)"
        );
    }
    Ok(())
}

/// Checks that every `.py` file in `dir` is valid Python (parsed by `python3`, not run: the
/// packages they import may live in a venv); the number of files. Without `python3` the parse
/// is skipped, saying so.
#[cfg(test)]
pub(crate) fn python_scripts_parse(dir: &Path) -> usize {
    let scripts: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "py"))
        .collect();
    let parse = Command::new("python3")
        .args([
            "-c",
            "import ast, sys\nfor f in sys.argv[1:]:\n    ast.parse(open(f).read(), f)",
        ])
        .args(&scripts)
        .output();
    match parse {
        Ok(out) => assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => eprintln!(
            "python3 not available, scripts in {} not checked: {e}",
            dir.display()
        ),
    }
    scripts.len()
}

#[cfg(test)]
mod tests {
    use super::on_path;

    #[test]
    fn on_path_finds_installed_commands_only() {
        assert!(on_path("sh"));
        assert!(!on_path("promptkit-no-such-command"));
    }
}
