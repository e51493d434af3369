//! Checks the gateway's client scripts (`tests/gateway_client/`) against `fake_openai.py` in its
//! gateway role, so they are known to run before `prompt serve` takes its place; the gateway's
//! own tests drive the same scripts through the same `driver.rs`.
//!
//! Skipped (with a `SKIPPED` line) where `PROMPT_TEST_PYTHON` is unset or lacks `openai`.

#[path = "../../tests/gateway_client/driver.rs"]
mod driver;

use serde_json::Value;

use self::driver::{FakeServer, client_python, run_client_script, run_client_script_with, script};

/// The names of the checks a summary passed.
fn passed(summary: &Value) -> Vec<&str> {
    summary["checks"]
        .as_array()
        .map(|checks| {
            checks
                .iter()
                .filter(|c| c["ok"] == Value::Bool(true))
                .filter_map(|c| c["name"].as_str())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn client_scripts_pass_against_the_fake_gateway() {
    let Some(python) = client_python() else {
        return;
    };
    let gateway = FakeServer::start(&python, &[]);
    let base = gateway.base_url();
    for name in [
        "chat_basic.py",
        "chat_stream.py",
        "cache_hit.py",
        "tools.py",
        "template.py",
    ] {
        let summary = run_client_script(&python, &script(name), &base, None);
        assert!(passed(&summary).len() >= 3, "{name}: {summary}");
    }
    let summary = run_client_script(&python, &script("cache_hit.py"), &base, None);
    assert!(
        passed(&summary).contains(&"second call is a hit"),
        "{summary}"
    );

    let replay = FakeServer::start(&python, &["--replay-only"]);
    let summary = run_client_script(&python, &script("replay_miss.py"), &replay.base_url(), None);
    assert!(
        passed(&summary).contains(&"code is cache_miss"),
        "{summary}"
    );

    let locked = FakeServer::start(
        &python,
        &[
            "--client-key",
            "sk-gateway-test",
            "--max-body-bytes",
            "4096",
        ],
    );
    let key = Some("sk-gateway-test");
    let summary = run_client_script(&python, &script("auth.py"), &locked.base_url(), key);
    assert!(
        passed(&summary).contains(&"/health needs no key"),
        "{summary}"
    );
    let summary = run_client_script_with(
        &python,
        &script("bad_input.py"),
        &locked.base_url(),
        key,
        &["--max-body-bytes", "4096"],
    );
    assert!(
        passed(&summary).contains(&"an oversize body: status"),
        "{summary}"
    );
}

/// A script whose checks fail makes the driver panic with the failed checks: the upstream role
/// sends no `x-promptkit-cache` header.
#[test]
#[should_panic(expected = "first call is a miss")]
fn a_failed_check_fails_the_test() {
    let Some(python) = client_python() else {
        panic!("skipped: first call is a miss");
    };
    let upstream = FakeServer::start(&python, &["--role", "upstream"]);
    run_client_script(&python, &script("cache_hit.py"), &upstream.base_url(), None);
}

/// The scripts are valid Python even where the client tests are skipped.
#[test]
fn client_scripts_parse() {
    let count = crate::python_scripts_parse(&driver::scripts_dir());
    assert!(count >= 10, "{count} client scripts");
}
