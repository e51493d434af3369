//! `prompt batch` files: the jobs file (one job a line), the results file and resuming.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use prompt_agent::RequestOptions;
use serde::{Deserialize, Serialize};

use crate::error::{CliError, CliResult};
use crate::vars::{TemplateRef, VarMap};

/// One line of a jobs file, as written: the template, its variables, and any request option
/// (`model`, `temperature`, `max_tokens`, `seed`, `stop`, … — the fields of
/// [`RequestOptions`]) at the top level.
#[derive(Debug, Clone, Deserialize)]
struct JobSpec {
    template: String,
    #[serde(default)]
    vars: VarMap,
    /// Tags of the job's metrics record, added to the command's `--tag`s.
    #[serde(default)]
    tags: Vec<String>,
    #[serde(flatten)]
    options: serde_json::Map<String, serde_json::Value>,
}

/// One job of a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// Line number in the jobs file (1-based): the job's identity in the results file.
    pub line: usize,
    /// The template as written in the job.
    pub template_text: String,
    /// The parsed template reference.
    pub template: TemplateRef,
    /// Variables.
    pub vars: VarMap,
    /// This job's request options, over the command's.
    pub options: RequestOptions,
    /// This job's tags (`"tags": [...]`), added to the command's.
    pub tags: Vec<String>,
}

/// Parses a jobs file: one JSON object a line; blank lines and `#` comments are skipped.
/// Errors name the file, line and column.
pub fn parse_jobs(text: &str, path: &Path) -> CliResult<Vec<Job>> {
    let mut jobs = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let bad = |e: serde_json::Error, column: usize| {
            CliError::failure(format!("{}:{line}:{column}: bad job: {e}", path.display())).hint(
                r#"each line is one job: {"template": "agent/task", "vars": {"name": "value"}}, with any request option (model, temperature, max_tokens, seed, stop, …) beside them"#,
            )
        };
        let spec: JobSpec = serde_json::from_str(trimmed).map_err(|e| {
            let column = e.column();
            bad(e, column)
        })?;
        // The request options are read apart so that an unknown key is an error naming it.
        let options = RequestOptions::deserialize(serde_json::Value::Object(spec.options))
            .map_err(|e| bad(e, 1))?;
        let template = TemplateRef::parse(&spec.template).map_err(|e| {
            CliError::failure(format!("{}:{line}: {}", path.display(), e.message))
                .hint("`prompt templates list` shows the templates")
        })?;
        for tag in &spec.tags {
            prompt_agent::check_tag(tag).map_err(|e| {
                CliError::failure(format!("{}:{line}: field `tags`: {e}", path.display()))
                    .hint(r#"e.g. "tags": ["eval", "nightly"]"#)
            })?;
        }
        jobs.push(Job {
            line,
            template_text: spec.template,
            template,
            vars: spec.vars,
            options,
            tags: spec.tags,
        });
    }
    Ok(jobs)
}

/// One line of the results file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultLine {
    /// Line of the job in the jobs file.
    pub line: usize,
    /// The template as written in the job.
    pub template: String,
    /// The job's variables.
    pub vars: VarMap,
    /// Whether the generation succeeded.
    pub ok: bool,
    /// The response text.
    pub response: Option<String>,
    /// The model that answered.
    pub model: Option<String>,
    /// Served from the cache.
    pub cache_hit: Option<bool>,
    /// The error, when `ok` is false.
    pub error: Option<String>,
    /// Prompt tokens.
    pub tokens_prompt: Option<u64>,
    /// Completion tokens.
    pub tokens_completion: Option<u64>,
    /// Latency in milliseconds.
    pub latency_ms: Option<f64>,
    /// Retries the generation needed.
    pub retry_count: Option<u32>,
    /// Template version used.
    pub template_version: Option<u32>,
    /// SHA-256 of the template file.
    pub template_hash: Option<String>,
    /// What the call cost in USD (0 for a cache hit; `null` for an unpriced model).
    #[serde(default)]
    pub cost_usd: Option<f64>,
}

impl ResultLine {
    /// A failed job's line.
    pub fn failed(job: &Job, error: impl Into<String>) -> Self {
        Self {
            line: job.line,
            template: job.template_text.clone(),
            vars: job.vars.clone(),
            ok: false,
            response: None,
            model: None,
            cache_hit: None,
            error: Some(error.into()),
            tokens_prompt: None,
            tokens_completion: None,
            latency_ms: None,
            retry_count: None,
            template_version: None,
            template_hash: None,
            cost_usd: None,
        }
    }
}

#[derive(Debug, Deserialize)]
struct DoneLine {
    line: usize,
    ok: bool,
    #[serde(default)]
    template: Option<String>,
}

/// What an existing results file says: the last result of each job line.
#[derive(Debug, Clone, Default)]
pub struct Done {
    /// Job line → (succeeded, template as written).
    pub lines: BTreeMap<usize, (bool, Option<String>)>,
    /// Lines of the results file that could not be read (ignored; their jobs run again).
    pub unreadable: usize,
}

impl Done {
    /// Whether `job` is already done: it has a line (a successful one when `retry_failed`).
    pub fn is_done(&self, job: &Job, retry_failed: bool) -> bool {
        match self.lines.get(&job.line) {
            Some((ok, _)) => *ok || !retry_failed,
            None => false,
        }
    }
}

/// Reads the results of an earlier run; a missing file means nothing is done.
pub fn read_done(path: &Path) -> CliResult<Done> {
    let text = match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Done::default()),
        Err(e) => {
            return Err(CliError::failure(format!(
                "cannot read results file {}: {e}",
                path.display()
            )));
        }
    };
    let mut done = Done::default();
    for raw in text.lines() {
        if raw.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<DoneLine>(raw) {
            Ok(d) => {
                done.lines.insert(d.line, (d.ok, d.template));
            }
            Err(_) => done.unreadable += 1,
        }
    }
    Ok(done)
}

/// Appends result lines, each in one `write` and flushed, so an interrupted run loses none.
#[derive(Debug)]
pub struct ResultsWriter {
    file: File,
    path: PathBuf,
}

impl ResultsWriter {
    /// Opens (creating) `path` for appending; completes a last line cut short by a crash.
    pub fn open(path: &Path) -> CliResult<Self> {
        let err = |e: std::io::Error| {
            CliError::failure(format!("cannot write results file {}: {e}", path.display()))
                .hint("check the --out path and that its directory exists and is writable")
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(err)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(err)?;
        let len = file.metadata().map_err(err)?.len();
        if len > 0 {
            let mut last = [0u8; 1];
            file.seek(SeekFrom::Start(len - 1)).map_err(err)?;
            file.read_exact(&mut last).map_err(err)?;
            if last[0] != b'\n' {
                file.write_all(b"\n").map_err(err)?;
            }
        }
        Ok(Self {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Appends one result line.
    pub fn append(&mut self, result: &ResultLine) -> CliResult<()> {
        let mut text = serde_json::to_string(result)
            .map_err(|e| CliError::failure(format!("cannot encode result line: {e}")))?;
        text.push('\n');
        self.file
            .write_all(text.as_bytes())
            .and_then(|()| self.file.flush())
            .map_err(|e| {
                CliError::failure(format!(
                    "cannot write results file {}: {e}",
                    self.path.display()
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_jobs_with_comments_and_blank_lines() {
        let text = "# jobs\n\n{\"template\": \"writer/write_chapter\", \"vars\": {\"n\": 1}}\n{\"template\": \"editor/edit_chapter@2\"}\n";
        let jobs = parse_jobs(text, Path::new("jobs.jsonl")).unwrap();
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0].line, 3);
        assert_eq!(jobs[0].vars["n"], serde_json::json!(1));
        assert_eq!(jobs[1].line, 4);
        assert_eq!(jobs[1].template.version.as_deref(), Some("2"));
    }

    #[test]
    fn jobs_take_every_request_option() {
        let text = r#"{"template": "a/b", "model": "m", "temperature": 0.2, "max_tokens": 9, "seed": 3, "stop": ["x"], "provider_options": {"top_k": 5}}"#;
        let jobs = parse_jobs(text, Path::new("jobs.jsonl")).unwrap();
        let o = &jobs[0].options;
        assert_eq!(o.model.as_deref(), Some("m"));
        assert_eq!(o.temperature, Some(0.2));
        assert_eq!(o.max_tokens, Some(9));
        assert_eq!(o.seed, Some(3));
        assert_eq!(o.stop, Some(vec!["x".to_owned()]));
        assert_eq!(o.provider_options["top_k"], serde_json::json!(5));
    }

    #[test]
    fn job_errors_name_file_and_line() {
        let cases = [
            ("{\"template\": \"a/b\"}\n{\"vars\": {}}\n", "jobs.jsonl:2:"),
            (
                "{\"template\": \"a/b\"}\n\n{oops\n",
                "jobs.jsonl:3:2: bad job",
            ),
            ("{\"template\": \"nope\"}\n", "jobs.jsonl:1: bad template"),
            (
                "{\"template\": \"a/b\", \"varz\": {}}\n",
                "unknown field `varz`",
            ),
            (
                "{\"template\": \"a/b\", \"temperature\": \"hot\"}\n",
                "jobs.jsonl:1:",
            ),
        ];
        for (text, expected) in cases {
            let e = parse_jobs(text, Path::new("jobs.jsonl")).unwrap_err();
            assert_eq!(e.code(), 1);
            assert!(e.message.contains(expected), "{} !~ {expected}", e.message);
        }
    }

    #[test]
    fn resume_reads_done_lines_and_repairs_a_cut_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out").join("results.jsonl");
        let jobs = parse_jobs(
            "{\"template\": \"a/b\"}\n{\"template\": \"a/b\"}\n{\"template\": \"a/b\"}\n",
            Path::new("j"),
        )
        .unwrap();
        assert!(read_done(&path).unwrap().lines.is_empty());
        let mut w = ResultsWriter::open(&path).unwrap();
        let mut ok = ResultLine::failed(&jobs[0], "x");
        ok.ok = true;
        ok.error = None;
        w.append(&ok).unwrap();
        w.append(&ResultLine::failed(&jobs[1], "boom")).unwrap();
        drop(w);
        // a crash left half a line
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"line\": 3, \"ok\"").unwrap();
        drop(f);
        let done = read_done(&path).unwrap();
        assert_eq!(done.unreadable, 1);
        assert!(done.is_done(&jobs[0], true));
        assert!(done.is_done(&jobs[1], false));
        assert!(!done.is_done(&jobs[1], true));
        assert!(!done.is_done(&jobs[2], false));
        let mut w = ResultsWriter::open(&path).unwrap();
        w.append(&ResultLine::failed(&jobs[2], "late")).unwrap();
        let done = read_done(&path).unwrap();
        assert_eq!(done.unreadable, 1);
        assert!(done.is_done(&jobs[2], false));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_jobs_files_never_panic(lines in proptest::collection::vec(".{0,80}", 0..8)) {
            let text = lines.join("\n");
            if let Ok(jobs) = parse_jobs(&text, Path::new("j.jsonl")) {
                for job in jobs {
                    proptest::prop_assert!(job.line >= 1 && job.line <= lines.len());
                }
            }
        }

        #[test]
        fn arbitrary_results_files_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("r.jsonl");
            std::fs::write(&path, &bytes).unwrap();
            let done = read_done(&path).unwrap();
            proptest::prop_assert!(done.lines.len() + done.unreadable <= bytes.len() + 1);
            // appending after arbitrary bytes always starts a new line
            let mut w = ResultsWriter::open(&path).unwrap();
            let job = &parse_jobs("{\"template\": \"a/b\"}", Path::new("j")).unwrap()[0];
            w.append(&ResultLine::failed(job, "x")).unwrap();
            let after = read_done(&path).unwrap();
            proptest::prop_assert!(after.lines.contains_key(&1));
        }
    }
}
