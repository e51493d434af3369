//! The Python peers: a private venv under `target/` and the scripts in `xtask/peers/`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::Value;

use super::data::read_json;

/// The pip packages the peers need, with the module each one installs.
const PACKAGES: &[(&str, &str)] = &[
    ("jinja2", "jinja2"),
    ("diskcache", "diskcache"),
    ("duckdb", "duckdb"),
];

/// The venv: its interpreter, and for each package either its version or why it is missing.
#[derive(Debug)]
pub(crate) struct Venv {
    pub(crate) python: Option<PathBuf>,
    pub(crate) packages: BTreeMap<&'static str, Result<String, String>>,
}

impl Venv {
    /// Why `package` cannot be used, if it cannot.
    pub(crate) fn missing(&self, package: &str) -> Option<String> {
        match self.packages.get(package) {
            Some(Ok(_)) => None,
            Some(Err(reason)) => Some(reason.clone()),
            None => Some(format!("{package}: not a known peer package")),
        }
    }
}

/// Creates `dir` with `python3 -m venv` (or reuses it) and pip-installs the peers into it.
/// Never fails: what could not be set up is recorded per package.
pub(crate) fn ensure_venv(dir: &Path, log_dir: &Path) -> Venv {
    let python = dir.join("bin").join("python");
    let fail_all = |reason: String| Venv {
        python: None,
        packages: PACKAGES
            .iter()
            .map(|(p, _)| (*p, Err(reason.clone())))
            .collect(),
    };
    let _ = fs::create_dir_all(log_dir);
    let log_path = log_dir.join("pip.log");
    if !python.is_file() {
        eprintln!("  creating {} …", dir.display());
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        match status {
            Ok(s) if s.success() && python.is_file() => {}
            Ok(s) => return fail_all(format!("python3 -m venv failed ({s})")),
            Err(e) => return fail_all(format!("python3 not available: {e}")),
        }
    }
    let mut packages = versions(&python);
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(p, _)| packages[p].is_err())
        .map(|(p, _)| *p)
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "  pip install {} (log: {}) …",
            missing.join(" "),
            log_path.display()
        );
        if !pip_install(&python, &missing, &log_path) {
            // One package that cannot be installed must not cost the others.
            for package in &missing {
                pip_install(&python, &[package], &log_path);
            }
        }
        packages = versions(&python);
        for (package, result) in &mut packages {
            if let Err(reason) = result {
                *reason = format!(
                    "pip could not install {package} (see {}): {reason}",
                    log_path.display()
                );
            }
        }
    }
    Venv {
        python: Some(python),
        packages,
    }
}

/// `python -m pip install packages`, its output appended to `log_path`; whether it succeeded.
pub(crate) fn pip_install(python: &Path, packages: &[&str], log_path: &Path) -> bool {
    let Ok(log) = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
    else {
        return false;
    };
    let Ok(log2) = log.try_clone() else {
        return false;
    };
    Command::new(python)
        // Short timeouts: an unreachable index must cost seconds, not the whole run.
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--timeout",
            "30",
            "--retries",
            "1",
        ])
        .args(packages)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .status()
        .is_ok_and(|s| s.success())
}

fn versions(python: &Path) -> BTreeMap<&'static str, Result<String, String>> {
    PACKAGES
        .iter()
        .map(|(package, module)| {
            let out = Command::new(python)
                .args([
                    "-c",
                    &format!("import {module}; print({module}.__version__)"),
                ])
                .stdin(Stdio::null())
                .output();
            let result = match out {
                Ok(o) if o.status.success() => {
                    Ok(String::from_utf8_lossy(&o.stdout).trim().to_owned())
                }
                Ok(o) => Err(String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .last()
                    .unwrap_or("import failed")
                    .to_owned()),
                Err(e) => Err(e.to_string()),
            };
            (*package, result)
        })
        .collect()
}

/// Runs one peer script and returns the document it wrote (`results`: name → `{mean_ns, ..}`
/// or `{error}`; `checks`; `versions`), or why it could not run.
pub(crate) fn run_script(
    python: &Path,
    script: &Path,
    data_dir: &Path,
    out: &Path,
    quick: bool,
    extra: &[String],
) -> Result<Value, String> {
    let _ = fs::remove_file(out);
    let mut cmd = Command::new(python);
    cmd.arg(script)
        .arg("--data")
        .arg(data_dir)
        .arg("--out")
        .arg(out)
        .args(extra);
    if quick {
        cmd.arg("--quick");
    }
    let name = script
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    eprint!("  {name:<17} … ");
    let clock = Instant::now();
    // No __pycache__ inside xtask/peers/.
    cmd.env("PYTHONDONTWRITEBYTECODE", "1");
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {name}: {e}"));
    let elapsed = clock.elapsed().as_secs_f64();
    let output = match output {
        Ok(o) => o,
        Err(e) => {
            eprintln!("failed");
            return Err(e);
        }
    };
    if !output.status.success() {
        eprintln!("failed after {elapsed:.0} s");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no output");
        return Err(format!("{name} failed ({}): {last}", output.status));
    }
    eprintln!("ok in {elapsed:.0} s");
    read_json(out).ok_or_else(|| format!("{name} wrote no readable {}", out.display()))
}

/// The script for a peer, checked to exist.
pub(crate) fn script(root: &Path, name: &str) -> Result<PathBuf> {
    let path = root.join("xtask").join("peers").join(name);
    fs::metadata(&path).with_context(|| format!("peer script {} missing", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The peer scripts are valid Python (parsed, not run: the peers' packages live in the venv).
    #[test]
    fn peer_scripts_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers");
        assert_eq!(crate::python_scripts_parse(&dir), 4);
    }

    #[test]
    fn a_missing_package_names_its_reason() {
        let venv = Venv {
            python: None,
            packages: [
                ("jinja2", Ok("3.1.6".to_owned())),
                ("duckdb", Err("pip could not install duckdb".to_owned())),
            ]
            .into_iter()
            .collect(),
        };
        assert_eq!(venv.missing("jinja2"), None);
        assert_eq!(
            venv.missing("duckdb").as_deref(),
            Some("pip could not install duckdb")
        );
        assert!(venv.missing("numpy").is_some());
    }
}
