//! `prompt doctor`: one line per check, ✓ or ✗ with the fix.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use prompt_templates::{TemplateStore, VersionReq};
use serde::Serialize;

use prompt_agent::ProviderKind;

use super::generate::agent_error;
use super::provider::provider_hint;
use crate::cli::ProviderArgs;
use crate::config::{CacheLocation, Settings};
use crate::error::{CliError, CliResult};
use crate::ui::{self, Paint};

/// The shortest and longest timeout of the provider health check.
const HEALTH_TIMEOUT_MIN: Duration = Duration::from_millis(500);
const HEALTH_TIMEOUT_MAX: Duration = Duration::from_secs(15);

/// The result of one check.
#[derive(Debug, Serialize)]
struct Check {
    check: &'static str,
    ok: bool,
    detail: String,
    fix: Option<String>,
}

impl Check {
    fn ok(check: &'static str, detail: impl Into<String>) -> Self {
        Self {
            check,
            ok: true,
            detail: detail.into(),
            fix: None,
        }
    }

    fn fail(check: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            check,
            ok: false,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Whether a directory exists (or can be made) and a file can be written in it.
fn writable(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let probe = dir.join(format!(".prompt-doctor-{}", std::process::id()));
    std::fs::write(&probe, b"ok").map_err(|e| format!("cannot write in {}: {e}", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

fn dir_check(name: &'static str, dir: &Path, flag: &str) -> Check {
    match writable(dir) {
        Ok(()) => Check::ok(name, format!("{} is writable", dir.display())),
        Err(e) => Check::fail(
            name,
            e,
            format!("make it writable, or pick another with {flag}"),
        ),
    }
}

fn template_checks(settings: &Settings) -> (Vec<Check>, BTreeSet<String>) {
    let dir = &settings.templates();
    let mut models = BTreeSet::new();
    if !dir.is_dir() {
        return (
            vec![Check::fail(
                "templates",
                format!("template directory {} does not exist", dir.display()),
                "pass --templates DIR or set PROMPT_TEMPLATES",
            )],
            models,
        );
    }
    let check = match prompt_templates::lint(dir) {
        Ok(report) if report.has_errors() => Check::fail(
            "templates",
            format!(
                "{} error(s), {} warning(s) in {} file(s) in {}",
                report.error_count(),
                report.warning_count(),
                report.files_checked,
                dir.display()
            ),
            format!(
                "run `prompt validate {}` and fix the lines it prints",
                dir.display()
            ),
        ),
        Ok(report) if report.files_checked == 0 => Check::fail(
            "templates",
            format!("no template files in {}", dir.display()),
            "add templates/<agent>/<task>_v<N>.yaml files or point --templates at them",
        ),
        Ok(report) => Check::ok(
            "templates",
            format!(
                "{} file(s) in {} validate ({} warning(s))",
                report.files_checked,
                dir.display(),
                report.warning_count()
            ),
        ),
        Err(e) => Check::fail(
            "templates",
            e.to_string(),
            format!("run `prompt validate {}`", dir.display()),
        ),
    };
    if let Ok(store) = TemplateStore::open(dir)
        && let Ok(infos) = store.list(None)
    {
        for info in infos {
            if let Ok(t) = store.load(&info.agent, &info.task, VersionReq::Exact(info.version))
                && let Some(name) = t.model().and_then(|m| m.name.clone())
            {
                models.insert(name);
            }
        }
    }
    (vec![check], models)
}

/// Whether `wanted` is among the server's models (`llama3` matches `llama3:latest`).
fn has_model(models: &[String], wanted: &str) -> bool {
    models.iter().any(|m| {
        m == wanted
            || m.strip_suffix(":latest") == Some(wanted)
            || wanted.strip_suffix(":latest") == Some(m.as_str())
    })
}

pub(crate) fn doctor(args: &ProviderArgs, settings: &Settings) -> CliResult<()> {
    let mut checks = Vec::new();
    checks.push(match &settings.config_path {
        Some(p) => Check::ok("config", format!("read {}", p.display())),
        None => Check::ok(
            "config",
            "no prompt.toml here; using flags, environment and defaults",
        ),
    });
    let (template_checks, template_models) = template_checks(settings);
    checks.extend(template_checks);
    match settings.cache_location() {
        CacheLocation::Dir(dir) => checks.push(dir_check("cache", &dir, "--cache-dir")),
        CacheLocation::Redis(url) => checks.push(
            match super::cache::open_cache(settings)
                .and_then(|c| c.stats().map_err(|e| CliError::failure(e.to_string())))
            {
                Ok(_) => Check::ok("cache", format!("Redis at {url} answers")),
                Err(e) => Check::fail(
                    "cache",
                    e.message,
                    "start the Redis server or fix --cache-url / PROMPT_CACHE_URL",
                ),
            },
        ),
    }
    checks.push(dir_check(
        "metrics",
        &settings.metrics_dir(),
        "--metrics-dir",
    ));

    let built = settings.for_provider(args).and_then(|p| {
        // A health check answers in seconds or not at all.
        let timeout = p
            .app
            .timeout()
            .clamp(HEALTH_TIMEOUT_MIN, HEALTH_TIMEOUT_MAX);
        let provider = p
            .app
            .build_provider_with_timeout(timeout)
            .map_err(|e| agent_error(e, &p))?;
        Ok((p, provider))
    });
    match built {
        Err(e) => checks.push(Check::fail(
            "provider",
            e.message,
            e.hint.unwrap_or_default(),
        )),
        Ok((provider_settings, provider)) => {
            let kind = provider_settings.kind;
            let runtime = super::runtime()?;
            let where_ = provider
                .base_url()
                .map(|u| format!(" at {u}"))
                .unwrap_or_default();
            match runtime.block_on(provider.health()) {
                Err(e) => checks.push(Check::fail(
                    "provider",
                    format!("{kind} is not reachable{where_}: {e}"),
                    provider_hint(&e, kind),
                )),
                Ok(models) => {
                    checks.push(Check::ok(
                        "provider",
                        format!("{kind}{where_} answers ({} model(s) listed)", models.len()),
                    ));
                    let wanted: Vec<String> = match &provider_settings.app.model {
                        Some(m) => vec![m.clone()],
                        None => template_models.into_iter().collect(),
                    };
                    for model in wanted {
                        checks.push(if kind == ProviderKind::Echo {
                            Check::ok("model", format!("{model}: echo answers for any model"))
                        } else if models.is_empty() {
                            Check::ok(
                                "model",
                                format!("{model}: the server does not list its models"),
                            )
                        } else if has_model(&models, &model) {
                            Check::ok("model", format!("{model} is available"))
                        } else {
                            Check::fail(
                                "model",
                                format!("{model} is not on the {kind} server"),
                                if kind == ProviderKind::Ollama {
                                    format!(
                                        "run `ollama pull {model}` or pick another with --model"
                                    )
                                } else {
                                    "pick an available model with --model".to_owned()
                                },
                            )
                        });
                    }
                }
            }
        }
    }

    let failed = checks.iter().filter(|c| !c.ok).count();
    if settings.json {
        ui::print_json(&serde_json::json!({"ok": failed == 0, "checks": checks}))?;
    } else {
        let p = Paint::stdout();
        let mut out = String::new();
        for c in &checks {
            if c.ok {
                out.push_str(&format!("{} {:<9} {}\n", p.green("✓"), c.check, c.detail));
            } else {
                out.push_str(&format!(
                    "{} {:<9} {} — fix: {}\n",
                    p.red("✗"),
                    c.check,
                    c.detail,
                    c.fix.as_deref().unwrap_or("")
                ));
            }
        }
        ui::print_stdout(&out)?;
    }
    if failed > 0 {
        return Err(CliError::failure(format!("{failed} check(s) failed"))
            .hint("apply the fixes above and run `prompt doctor` again"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_match_with_latest_tag() {
        let models = vec!["llama3:latest".to_owned(), "qwen3:30b".to_owned()];
        assert!(has_model(&models, "llama3"));
        assert!(has_model(&models, "qwen3:30b"));
        assert!(!has_model(&models, "qwen3"));
    }
}
