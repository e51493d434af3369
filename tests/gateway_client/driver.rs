//! Runs the gateway's client scripts (`tests/gateway_client/*.py`, the official `openai` Python
//! client) from Rust tests.
//!
//! Include it in a test crate with
//! `#[path = "<relative path to>/tests/gateway_client/driver.rs"] mod driver;`. It needs only
//! `serde_json`.
//!
//! The interpreter comes from `PROMPT_TEST_PYTHON` (`.ci/run` creates the venv
//! `target/pyenv-gateway` with `openai` and exports its `bin/python` there). Where that variable
//! is unset, or its interpreter cannot import `openai`, [`client_python`] prints a line starting
//! with `SKIPPED` and returns `None`: the test then returns early and passes without testing
//! anything, the same rule as the Redis tests without `redis-server`.
//!
//! Each script takes `--base-url` (the gateway's base URL, ending in `/v1`) and reads the client
//! key from `PROMPT_GATEWAY_API_KEY`; the gateway under test must point at
//! `fake_openai.py --role upstream`, whose answers the scripts check. A script prints a JSON
//! summary (`{"script", "ok", "checks": [{"name", "ok", "detail"}], "openai"}`) on its last line.

#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The variable naming the Python interpreter that has `openai` installed.
pub(crate) const PYTHON_ENV: &str = "PROMPT_TEST_PYTHON";

/// The variable the scripts read the client key from.
pub(crate) const KEY_ENV: &str = "PROMPT_GATEWAY_API_KEY";

/// How long one script may run before it is killed and the test fails.
pub(crate) const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

/// The directory holding the scripts: `tests/gateway_client/` in the first ancestor of the
/// including crate's manifest directory that has one.
pub(crate) fn scripts_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .map(|dir| dir.join("tests").join("gateway_client"))
        .find(|dir| dir.join("common.py").is_file())
        .unwrap_or_else(|| manifest.join("tests").join("gateway_client"))
}

/// The path of one script, e.g. `script("chat_basic.py")`.
pub(crate) fn script(name: &str) -> PathBuf {
    scripts_dir().join(name)
}

/// The interpreter to run the scripts with, or `None` after printing why the test is skipped:
/// `PROMPT_TEST_PYTHON` unset, or its interpreter cannot import `openai`.
pub(crate) fn client_python() -> Option<PathBuf> {
    let Some(python) = std::env::var_os(PYTHON_ENV).filter(|p| !p.is_empty()) else {
        eprintln!(
            "SKIPPED: {PYTHON_ENV} is not set, so the openai client tests do not run \
             (they pass without testing anything); .ci/run sets it to target/pyenv-gateway/bin/python \
             after `pip install openai`"
        );
        return None;
    };
    let python = PathBuf::from(python);
    let probe = Command::new(&python)
        .args(["-c", "import openai; print(openai.__version__)"])
        .stdin(Stdio::null())
        .output();
    match probe {
        Ok(out) if out.status.success() => Some(python),
        Ok(out) => {
            eprintln!(
                "SKIPPED: {PYTHON_ENV}={} cannot import openai ({}), so the openai client tests \
                 do not run (they pass without testing anything); `{} -m pip install openai` fixes it",
                python.display(),
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("no output"),
                python.display()
            );
            None
        }
        Err(err) => {
            eprintln!(
                "SKIPPED: {PYTHON_ENV}={} cannot be run ({err}), so the openai client tests do \
                 not run (they pass without testing anything)",
                python.display()
            );
            None
        }
    }
}

/// Runs `script` with `python` against the gateway at `base_url` (e.g.
/// `http://127.0.0.1:PORT/v1`), sending `api_key` as the client key when given, and returns
/// the script's JSON summary.
///
/// Panics — failing the test — when the script fails a check, cannot run, runs longer than
/// [`SCRIPT_TIMEOUT`] or prints no summary; the panic message carries the failed checks and
/// the script's stderr.
pub(crate) fn run_client_script(
    python: &Path,
    script: &Path,
    base_url: &str,
    api_key: Option<&str>,
) -> serde_json::Value {
    run_client_script_with(python, script, base_url, api_key, &[])
}

/// [`run_client_script`] with the script's own options after `--base-url`, e.g.
/// `["--template", "writer/write_scene", "--vars", "{...}", "--var", "scene"]` for
/// `template.py`, `["--max-body-bytes", "4096"]` for `bad_input.py`.
pub(crate) fn run_client_script_with(
    python: &Path,
    script: &Path,
    base_url: &str,
    api_key: Option<&str>,
    extra_args: &[&str],
) -> serde_json::Value {
    let mut cmd = Command::new(python);
    cmd.arg(script)
        .arg("--base-url")
        .arg(base_url)
        .args(extra_args)
        // No __pycache__ beside the scripts; no proxy between the client and the loopback.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("OPENAI_API_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match api_key {
        Some(key) => cmd.env(KEY_ENV, key),
        None => cmd.env_remove(KEY_ENV),
    };
    let name = script.display();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|err| panic!("cannot run {} {name}: {err}", python.display()));
    // Read both pipes on threads so a chatty script cannot block on a full pipe.
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let out_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > SCRIPT_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{name} still ran after {} s: killed; stderr:\n{}",
                    SCRIPT_TIMEOUT.as_secs(),
                    err_reader.join().unwrap_or_default()
                );
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(err) => panic!("cannot wait for {name}: {err}"),
        }
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    let summary: Option<serde_json::Value> = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .and_then(|l| serde_json::from_str(l).ok());
    let Some(summary) = summary else {
        panic!("{name} printed no JSON summary ({status}); stdout:\n{stdout}\nstderr:\n{stderr}");
    };
    if !status.success() || summary["ok"] != serde_json::Value::Bool(true) {
        let failed: Vec<String> = summary["checks"]
            .as_array()
            .map(|checks| {
                checks
                    .iter()
                    .filter(|c| c["ok"] != serde_json::Value::Bool(true))
                    .map(|c| format!("  {}: {}", c["name"], c["detail"]))
                    .collect()
            })
            .unwrap_or_default();
        panic!(
            "{name} failed ({status}){}\nfailed checks:\n{}\nstderr:\n{stderr}",
            summary["error"]
                .as_str()
                .map(|e| format!(": {e}"))
                .unwrap_or_default(),
            failed.join("\n")
        );
    }
    summary
}

/// A running `fake_openai.py`: `--role upstream` is the model a gateway under test points at
/// (`--provider openai --base-url {url}/v1`); `--role gateway` stands in for the gateway itself.
/// Killed when dropped; it also stops by itself after 10 minutes.
#[derive(Debug)]
pub(crate) struct FakeServer {
    /// `http://127.0.0.1:PORT`, without `/v1`.
    pub(crate) url: String,
    child: std::process::Child,
}

impl FakeServer {
    /// Starts `fake_openai.py` with `args` (e.g. `["--role", "upstream"]`) on a free loopback
    /// port and waits for its `listening on URL` line.
    pub(crate) fn start(python: &Path, args: &[&str]) -> Self {
        use std::io::BufRead;
        let mut child = Command::new(python)
            .arg(script("fake_openai.py"))
            .args(["--port", "0", "--seconds", "600"])
            .args(args)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start fake_openai.py: {err}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut line = String::new();
        let read = std::io::BufReader::new(stdout).read_line(&mut line);
        let url = line.trim().strip_prefix("listening on ").map(str::to_owned);
        match (read, url) {
            (Ok(_), Some(url)) => Self { url, child },
            (read, _) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("fake_openai.py did not start: {read:?}, first line {line:?}");
            }
        }
    }

    /// The OpenAI base URL: `{url}/v1`.
    pub(crate) fn base_url(&self) -> String {
        format!("{}/v1", self.url)
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
