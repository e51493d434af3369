//! `prompt templates list|show`, `prompt render`, `prompt validate`.

use std::path::Path;
use std::sync::Arc;

use prompt_agent::AgentError;
use prompt_templates::{MessageEntry, PromptTemplate, TemplateError, TemplateStore, VersionReq};
use serde_json::{Value, json};

use crate::cli::{TemplatesCommand, VarsArgs};
use crate::config::Settings;
use crate::error::{CliError, CliResult};
use crate::ui::{self, Align, Paint, Table};
use crate::vars::{self, TemplateRef, VarMap};

/// Maps a template error to a one-line error with a hint.
pub(crate) fn template_error(e: &TemplateError, dir: &Path) -> CliError {
    let hint = match &e {
        TemplateError::NotFound { .. } => {
            format!("`prompt templates list` shows the templates in {}", dir.display())
        }
        TemplateError::Variables { .. } | TemplateError::ParseVar { .. } => {
            "pass variables with --var NAME=VALUE or --vars FILE; `prompt templates show AGENT/TASK` lists them"
                .to_owned()
        }
        TemplateError::Invalid { .. } => "`prompt validate` shows every problem".to_owned(),
        TemplateError::UnknownLabel { .. } | TemplateError::Labels { .. } => {
            "`prompt label list` shows the labels; `prompt label set AGENT/TASK LABEL VERSION` sets one"
                .to_owned()
        }
        TemplateError::InvalidVersionReq(_) | TemplateError::InvalidName { .. } => {
            return CliError::usage(e.to_string())
                .hint("write the template as AGENT/TASK or AGENT/TASK@VERSION, e.g. writer/write_chapter@2");
        }
        TemplateError::Io { .. } => {
            "check the template directory (--templates DIR or PROMPT_TEMPLATES)".to_owned()
        }
        _ => "`prompt validate` checks the templates".to_owned(),
    };
    CliError::failure(e.to_string()).hint(hint)
}

/// Opens the template store of the settings.
pub(crate) fn open_store(settings: &Settings) -> CliResult<TemplateStore> {
    let dir = settings.templates();
    check_templates_dir(&dir)?;
    settings.app.open_templates().map_err(|e| match e {
        AgentError::Template(e) => template_error(&e, &dir),
        other => CliError::failure(other.to_string()),
    })
}

/// An error with a hint when the template directory does not exist.
pub(crate) fn check_templates_dir(dir: &Path) -> CliResult<()> {
    if dir.is_dir() {
        return Ok(());
    }
    Err(CliError::failure(format!(
        "template directory {} does not exist",
        dir.display()
    ))
    .hint("pass --templates DIR, set PROMPT_TEMPLATES, or run from a directory with templates/"))
}

/// The version requirement of a template reference.
pub(crate) fn version_req(r: &TemplateRef) -> CliResult<VersionReq> {
    match &r.version {
        None => Ok(VersionReq::Latest),
        Some(v) => v.parse::<VersionReq>().map_err(|_| {
            CliError::usage(format!(
                "bad template version `{v}` in `{r}`: expected latest, N, vN or a label"
            ))
            .hint("e.g. writer/write_chapter@2 or writer/write_chapter@production")
        }),
    }
}

/// Loads the template a reference names.
pub(crate) fn load(store: &TemplateStore, r: &TemplateRef) -> CliResult<Arc<PromptTemplate>> {
    let version = version_req(r)?;
    store
        .load(&r.agent, &r.task, version)
        .map_err(|e| template_error(&e, store.dir()))
}

/// Collects the variables of `--vars FILE` and `--var k=v` (parsed by the template's types).
pub(crate) fn collect_vars(template: &PromptTemplate, args: &VarsArgs) -> CliResult<VarMap> {
    let mut map = match &args.vars_file {
        Some(path) => vars::read_vars_file(path)?,
        None => VarMap::new(),
    };
    for raw in &args.var {
        let (key, value) = vars::split_var(raw)?;
        let parsed = if template.variables().iter().any(|v| v.name == key) {
            template
                .parse_var(key, value)
                .map_err(|e| template_error(&e, Path::new(".")))?
        } else {
            Value::String(value.to_owned())
        };
        map.insert(key.to_owned(), parsed);
    }
    Ok(map)
}

pub(crate) fn templates(cmd: TemplatesCommand, settings: &Settings) -> CliResult<()> {
    let store = open_store(settings)?;
    match cmd {
        TemplatesCommand::List { agent } => list(&store, agent.as_deref(), settings.json),
        TemplatesCommand::Show { template } => {
            let r = TemplateRef::parse(&template)?;
            let t = load(&store, &r)?;
            show(&t, settings.json)
        }
    }
}

fn list(store: &TemplateStore, agent: Option<&str>, json: bool) -> CliResult<()> {
    let infos = store
        .list(agent)
        .map_err(|e| template_error(&e, store.dir()))?;
    if json {
        let items: Vec<Value> = infos
            .iter()
            .map(|i| {
                json!({"agent": i.agent, "task": i.task, "version": i.version,
                       "path": i.path.display().to_string()})
            })
            .collect();
        return ui::print_json(&items);
    }
    if infos.is_empty() {
        let which = agent
            .map(|a| format!(" for agent `{a}`"))
            .unwrap_or_default();
        ui::print_warning(&format!("no templates{which} in {}", store.dir().display()));
        return Ok(());
    }
    let mut table = Table::new(&[
        ("template", Align::Left),
        ("version", Align::Right),
        ("description", Align::Left),
        ("path", Align::Left),
    ]);
    for i in &infos {
        let description = store
            .load(&i.agent, &i.task, VersionReq::Exact(i.version))
            .ok()
            .and_then(|t| t.metadata().description.clone())
            .unwrap_or_default();
        table.row(vec![
            format!("{}/{}", i.agent, i.task),
            format!("v{}", i.version),
            first_line(&description, 60),
            i.path.display().to_string(),
        ]);
    }
    ui::print_stdout(&table.render(Paint::stdout()))
}

fn first_line(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or("").trim();
    if line.chars().count() > max {
        let mut s: String = line.chars().take(max - 1).collect();
        s.push('…');
        s
    } else {
        line.to_owned()
    }
}

fn show(t: &PromptTemplate, json: bool) -> CliResult<()> {
    if json {
        return ui::print_json(&json!({
            "agent": t.agent(),
            "task": t.task(),
            "version": t.version(),
            "path": t.path().display().to_string(),
            "template_hash": t.content_hash(),
            "metadata": t.metadata(),
            "model": t.model(),
            "validation": t.validation(),
            "variables": t.variables(),
            "examples": t.examples(),
            "system_prompt": t.system_source(),
            "user_prompt_template": t.user_source(),
            "messages": t.message_entries(),
            "tools": t.tools(),
            "tool_choice": t.tool_choice(),
        }));
    }
    let p = Paint::stdout();
    let mut out = format!(
        "{} {}\n",
        p.bold(&format!("{}/{} v{}", t.agent(), t.task(), t.version())),
        p.dim(&format!("({})", t.path().display()))
    );
    let m = t.metadata();
    if let Some(d) = &m.description {
        out.push_str(&format!("{}\n", d.trim()));
    }
    let mut facts = Vec::new();
    if let Some(a) = &m.author {
        facts.push(format!("author {a}"));
    }
    if let Some(c) = &m.created {
        facts.push(format!("created {c}"));
    }
    if let Some(model) = t.model() {
        if let Some(name) = &model.name {
            facts.push(format!("model {name}"));
        }
        if let Some(temp) = model.temperature {
            facts.push(format!("temperature {temp}"));
        }
        if let Some(max) = model.max_tokens {
            facts.push(format!("max_tokens {max}"));
        }
    }
    let v = t.validation();
    if let Some(min) = v.min_length {
        facts.push(format!("min_length {min}"));
    }
    if let Some(max) = v.max_length {
        facts.push(format!("max_length {max}"));
    }
    facts.push(format!("{} example(s)", t.examples().len()));
    facts.push(format!(
        "hash {}",
        &t.content_hash()[..t.content_hash().len().min(12)]
    ));
    out.push_str(&format!("{}\n\n", p.dim(&facts.join(" · "))));
    let mut table = Table::new(&[
        ("variable", Align::Left),
        ("type", Align::Left),
        ("required", Align::Left),
        ("default", Align::Left),
        ("description", Align::Left),
    ]);
    for var in t.variables() {
        table.row(vec![
            var.name.clone(),
            var.ty.to_string(),
            if var.required { "yes" } else { "no" }.to_owned(),
            var.default
                .as_ref()
                .map(|d| d.to_string())
                .unwrap_or_default(),
            first_line(&var.description, 60),
        ]);
    }
    if !table.is_empty() {
        out.push_str(&table.render(p));
        out.push('\n');
    }
    if t.message_entries().is_empty() {
        out.push_str(&format!(
            "{}\n{}\n",
            p.bold("system_prompt:"),
            t.system_source().trim_end()
        ));
        out.push_str(&format!(
            "\n{}\n{}\n",
            p.bold("user_prompt_template:"),
            t.user_source().trim_end()
        ));
    } else {
        // Every entry of a conversation template, in order.
        for (i, entry) in t.message_entries().iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            match entry {
                MessageEntry::Content { role, source } => {
                    out.push_str(&format!(
                        "{}\n{}\n",
                        p.bold(&format!("{role}:")),
                        source.trim_end()
                    ));
                }
                MessageEntry::History { variable } => {
                    out.push_str(&format!("{}\n", p.bold(&format!("history: {variable}"))));
                }
            }
        }
    }
    if !t.tools().is_empty() {
        out.push_str(&format!("\n{}\n", p.bold("tools:")));
        for tool in t.tools() {
            let description = tool.description.as_deref().unwrap_or_default();
            out.push_str(&format!(
                "  {} — {}\n",
                tool.name,
                first_line(description, 70)
            ));
        }
    }
    ui::print_stdout(&out)
}

pub(crate) fn render(template: &str, args: &VarsArgs, settings: &Settings) -> CliResult<()> {
    let r = TemplateRef::parse(template)?;
    let store = open_store(settings)?;
    let t = load(&store, &r)?;
    let vars = collect_vars(&t, args)?;
    let rendered = if args.examples > 0 {
        t.render_with_examples(&vars, args.examples)
    } else {
        t.render(&vars)
    }
    .map_err(|e| template_error(&e, store.dir()))?;
    let two_message = t.message_entries().is_empty();
    if settings.json {
        let mut out = json!({
            "agent": t.agent(),
            "task": t.task(),
            "version": t.version(),
            "template_hash": t.content_hash(),
            "messages": rendered.messages,
        });
        // The keys of two-message templates, as before `messages` existed.
        if two_message {
            out["system"] = json!(rendered.system);
            out["user"] = json!(rendered.user);
        }
        if !t.tools().is_empty() {
            out["tools"] = json!(t.tools());
            out["tool_choice"] = json!(t.tool_choice());
        }
        return ui::print_json(&out);
    }
    let p = Paint::stdout();
    let mut out = String::new();
    for (i, m) in rendered.messages.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let heading = match &m.tool_call_id {
            Some(id) => format!("── {} ({id}) ──", m.role),
            None => format!("── {} ──", m.role),
        };
        out.push_str(&format!("{}\n", p.bold(&heading)));
        if !m.content.trim_end().is_empty() {
            out.push_str(&format!("{}\n", m.content.trim_end()));
        }
        for call in &m.tool_calls {
            out.push_str(&format!(
                "tool call {}: {} {}\n",
                call.id, call.name, call.arguments
            ));
        }
    }
    ui::print_stdout(&out)
}

pub(crate) fn validate(dir: Option<&Path>, settings: &Settings) -> CliResult<()> {
    let default = settings.templates();
    let dir = dir.unwrap_or(&default);
    if !dir.is_dir() {
        return Err(CliError::failure(format!(
            "template directory {} does not exist",
            dir.display()
        ))
        .hint("pass the directory: prompt validate DIR"));
    }
    let report = prompt_templates::lint(dir).map_err(|e| template_error(&e, dir))?;
    if settings.json {
        let diagnostics: Vec<Value> = report
            .diagnostics
            .iter()
            .map(|d| {
                json!({"path": d.path.display().to_string(), "line": d.line, "col": d.col,
                       "severity": d.severity.to_string(), "message": d.message})
            })
            .collect();
        ui::print_json(&json!({
            "dir": dir.display().to_string(),
            "files_checked": report.files_checked,
            "errors": report.error_count(),
            "warnings": report.warning_count(),
            "diagnostics": diagnostics,
        }))?;
    } else {
        let mut out = String::new();
        for d in &report.diagnostics {
            out.push_str(&format!("{d}\n"));
        }
        out.push_str(&format!(
            "checked {} template file(s) in {}: {} error(s), {} warning(s)\n",
            report.files_checked,
            dir.display(),
            report.error_count(),
            report.warning_count()
        ));
        ui::print_stdout(&out)?;
    }
    if report.has_errors() {
        // The diagnostics above are the message.
        return Err(CliError::failure(""));
    }
    Ok(())
}
