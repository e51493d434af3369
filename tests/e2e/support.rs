//! Helpers: run the built `prompt` binary in a temporary directory, and a fake Ollama (and
//! OpenAI-compatible) server on loopback that counts the chat requests it answers.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

/// The workspace root.
pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The shipped templates.
pub(crate) fn templates() -> PathBuf {
    root().join("templates")
}

/// A scratch directory to run `prompt` in.
pub(crate) struct Sandbox {
    pub(crate) dir: tempfile::TempDir,
}

/// The result of one run.
pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Run {
    fn from(out: &Output) -> Self {
        Self {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Asserts success and returns stdout.
    #[track_caller]
    pub(crate) fn ok(&self) -> &str {
        assert_eq!(
            self.code, 0,
            "expected success\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        &self.stdout
    }

    /// Parses stdout as JSON.
    #[track_caller]
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

impl Sandbox {
    pub(crate) fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A `prompt` command in the sandbox, with no PROMPT_* variables from the environment
    /// and the shipped templates.
    pub(crate) fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_prompt"));
        for (key, _) in std::env::vars() {
            if key.starts_with("PROMPT_")
                || key.starts_with("OTEL_")
                || key == "OLLAMA_HOST"
                || key == "RUST_LOG"
            {
                cmd.env_remove(key);
            }
        }
        cmd.current_dir(self.path())
            .env("PROMPT_TEMPLATES", templates())
            .env("NO_COLOR", "1")
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `prompt` with `args` to the end.
    pub(crate) fn run(&self, args: &[&str]) -> Run {
        Run::from(&self.cmd(args).output().unwrap())
    }

    /// Runs `prompt` with extra environment variables.
    pub(crate) fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = self.cmd(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Run::from(&cmd.output().unwrap())
    }

    pub(crate) fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, text).unwrap();
        path
    }

    pub(crate) fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path().join(name)).unwrap()
    }
}

/// The lines of a results file, parsed.
pub(crate) fn result_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad result line {l:?}: {e}")))
        .collect()
}

#[derive(Default)]
struct FakeState {
    chats: AtomicUsize,
    delay_ms: AtomicU64,
    models: Mutex<Vec<String>>,
    last_body: Mutex<Option<Value>>,
    last_authorization: Mutex<Option<String>>,
    /// When not 0, every chat request is answered with this HTTP status.
    fail_status: std::sync::atomic::AtomicU16,
    /// When set, streamed replies stop before their last piece until released.
    gate: Mutex<Option<Arc<tokio::sync::Semaphore>>>,
}

/// A fake Ollama server: `POST /api/chat` and `GET /api/tags`; it also answers OpenAI's
/// `POST /v1/chat/completions` and remembers the `Authorization` header it was sent.
pub(crate) struct FakeOllama {
    pub(crate) url: String,
    state: Arc<FakeState>,
}

impl FakeOllama {
    /// Starts the server on a free loopback port, serving `qwen3:30b` and `llama3:latest`.
    pub(crate) fn start() -> Self {
        let state = Arc::new(FakeState::default());
        *state.models.lock().unwrap() = vec!["qwen3:30b".to_owned(), "llama3:latest".to_owned()];
        let app = Router::new()
            .route("/api/chat", post(chat))
            .route("/api/tags", get(tags))
            .route("/v1/chat/completions", post(openai_chat))
            .with_state(state.clone());
        let url = serve_on_loopback(app);
        Self { url, state }
    }

    /// Chat requests answered so far.
    pub(crate) fn chats(&self) -> usize {
        self.state.chats.load(Ordering::SeqCst)
    }

    /// Delays every chat answer.
    pub(crate) fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// The `Authorization` header of the last OpenAI-style chat request (`None`: not sent).
    pub(crate) fn last_authorization(&self) -> Option<String> {
        self.state.last_authorization.lock().unwrap().clone()
    }

    /// From now on every chat request is answered with HTTP `status` (0: answer normally).
    pub(crate) fn fail_with(&self, status: u16) {
        self.state.fail_status.store(status, Ordering::SeqCst);
    }

    /// From now on a streamed reply (`"stream": true`) sends its first pieces, then waits
    /// before its last piece and final frame until [`release`](Self::release) is called.
    pub(crate) fn hold_stream_ends(&self) {
        *self.state.gate.lock().unwrap() = Some(Arc::new(tokio::sync::Semaphore::new(0)));
    }

    /// Lets held streams finish.
    pub(crate) fn release(&self) {
        if let Some(gate) = self.state.gate.lock().unwrap().as_ref() {
            gate.add_permits(1000);
        }
    }

    /// The body of the last chat request.
    pub(crate) fn last_body(&self) -> Option<Value> {
        self.state.last_body.lock().unwrap().clone()
    }
}

/// The fake reply's text pieces for a request: a marker naming the user message, then filler.
fn reply_pieces(user: &str) -> Vec<String> {
    let mut pieces = vec![format!("FAKE OLLAMA REPLY for {user:?}. ")];
    pieces.extend(std::iter::repeat_n(
        "The tide went out and the tower rose from the marsh. ".to_owned(),
        60,
    ));
    pieces
}

async fn chat(
    State(state): State<Arc<FakeState>>,
    Json(body): Json<Value>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let fail = state.fail_status.load(Ordering::SeqCst);
    if fail != 0 {
        state.chats.fetch_add(1, Ordering::SeqCst);
        let status = axum::http::StatusCode::from_u16(fail).unwrap();
        return (status, Json(json!({"error": "injected failure"}))).into_response();
    }
    if body["stream"] == json!(true) {
        return stream_chat(&state, body).into_response();
    }
    whole_chat(State(state), Json(body)).await.into_response()
}

/// A streamed `/api/chat` reply: one NDJSON line per piece, then the final frame; with a gate
/// set, the last piece waits for it.
fn stream_chat(state: &FakeState, body: Value) -> axum::response::Response {
    let model = body["model"].as_str().unwrap_or("unknown").to_owned();
    let user = last_user(&body);
    let calls = tool_calls_for(&body);
    *state.last_body.lock().unwrap() = Some(body);
    state.chats.fetch_add(1, Ordering::SeqCst);
    let gate = state.gate.lock().unwrap().clone();
    let delay = Duration::from_millis(state.delay_ms.load(Ordering::SeqCst));
    let mut lines: Vec<String> = match calls {
        Some(calls) => vec![
            json!({"model": model, "message": {"role": "assistant", "content": "",
                   "tool_calls": calls}, "done": false})
            .to_string(),
        ],
        None => reply_pieces(&user)
            .into_iter()
            .map(|piece| {
                json!({"model": model, "message": {"role": "assistant", "content": piece}, "done": false})
                    .to_string()
            })
            .collect(),
    };
    lines.push(
        json!({"model": model, "message": {"role": "assistant", "content": ""}, "done": true,
               "done_reason": "stop", "prompt_eval_count": 120, "eval_count": 640})
        .to_string(),
    );
    let total = lines.len();
    let stream = futures_util::stream::unfold(0usize, move |i| {
        let line = lines.get(i).cloned();
        let gate = gate.clone();
        async move {
            let line = line?;
            if i == 0 && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if i == total - 2
                && let Some(gate) = gate
            {
                let _ = gate.acquire().await.map(|p| p.forget());
            }
            Some((
                Ok::<_, std::convert::Infallible>(format!("{line}\n")),
                i + 1,
            ))
        }
    });
    axum::response::Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(axum::body::Body::from_stream(stream))
        .unwrap()
}

/// When the request offers tools, the fake calls the first one with `{"name": "Mira"}`.
fn tool_calls_for(body: &Value) -> Option<Value> {
    let name = body["tools"].as_array()?.first()?["function"]["name"].as_str()?;
    Some(json!([{"function": {"name": name, "arguments": {"name": "Mira"}}}]))
}

fn last_user(body: &Value) -> String {
    body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .chars()
        .take(80)
        .collect::<String>()
}

async fn whole_chat(State(state): State<Arc<FakeState>>, Json(body): Json<Value>) -> Json<Value> {
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let model = body["model"].as_str().unwrap_or("unknown").to_owned();
    let user = last_user(&body);
    let calls = tool_calls_for(&body);
    *state.last_body.lock().unwrap() = Some(body);
    state.chats.fetch_add(1, Ordering::SeqCst);
    let (content, calls) = match calls {
        Some(calls) => (String::new(), calls),
        None => (reply_pieces(&user).concat(), json!([])),
    };
    Json(json!({
        "model": model,
        "created_at": "2026-01-20T12:00:00Z",
        "message": {"role": "assistant", "content": content, "tool_calls": calls},
        "done": true,
        "done_reason": "stop",
        "prompt_eval_count": 120,
        "eval_count": 640,
    }))
}

async fn openai_chat(
    State(state): State<Arc<FakeState>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Json<Value> {
    *state.last_authorization.lock().unwrap() = headers
        .get("authorization")
        .map(|v| v.to_str().unwrap_or("<not text>").to_owned());
    let Json(ollama) = whole_chat(State(state), Json(body)).await;
    Json(json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": ollama["model"],
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": ollama["message"]["content"]},
            "finish_reason": "stop",
        }],
        "usage": {"prompt_tokens": 120, "completion_tokens": 640, "total_tokens": 760},
    }))
}

async fn tags(State(state): State<Arc<FakeState>>) -> Json<Value> {
    let models: Vec<Value> = state
        .models
        .lock()
        .unwrap()
        .iter()
        .map(|m| json!({"name": m, "model": m}))
        .collect();
    Json(json!({ "models": models }))
}

/// Serves `app` on a free loopback port from a thread of its own, for the rest of the test
/// process; returns `http://127.0.0.1:<port>`.
pub(crate) fn serve_on_loopback(app: Router) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    url
}

/// A loopback address nothing listens on.
pub(crate) fn closed_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

/// Asserts the one-line error contract: exit code, one `error:` line naming `needle`, at most
/// one `hint:` line, nothing on stdout, no panic.
#[track_caller]
pub(crate) fn assert_error(run: &Run, code: i32, needle: &str) {
    assert_eq!(
        run.code, code,
        "exit code for {needle:?}\nstdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    let errors: Vec<&&str> = lines.iter().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "one error line expected:\n{}", run.stderr);
    assert!(
        errors[0].contains(needle),
        "error line {:?} does not mention {needle:?}",
        errors[0]
    );
    assert!(
        lines.iter().filter(|l| l.starts_with("hint: ")).count() <= 1,
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    assert!(!run.stderr.contains("RUST_BACKTRACE"), "{}", run.stderr);
    assert!(
        run.stdout.is_empty(),
        "stdout should be empty:\n{}",
        run.stdout
    );
}

impl Sandbox {
    /// Starts `prompt` with `args`, its stdout and stderr piped; end it with [`wait_within`].
    pub(crate) fn spawn(&self, args: &[&str]) -> std::process::Child {
        self.cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Runs `prompt` with `args` to the end, failing the test (after killing it) when it has
    /// not ended within `limit`: a guard against hangs, not a speed check.
    pub(crate) fn run_within(&self, args: &[&str], limit: Duration) -> Run {
        wait_within(self.spawn(args), limit)
    }
}

/// Waits for a child started by [`Sandbox::spawn`], reading its output as it comes; kills it
/// and fails the test when it has not ended within `limit`.
pub(crate) fn wait_within(mut child: std::process::Child, limit: Duration) -> Run {
    use std::io::Read;
    fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = String::from_utf8_lossy(&stderr.join().unwrap()).into_owned();
            panic!("prompt did not end within {limit:?} (killed)\nstderr:\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&stderr.join().unwrap()).into_owned(),
    }
}

/// A command run on a pseudo-terminal (`script -qfec` from util-linux), with what it has
/// printed so far as it grows.
pub(crate) struct Terminal {
    child: std::process::Child,
    seen: std::sync::mpsc::Receiver<String>,
    reader: std::thread::JoinHandle<String>,
    last: String,
}

impl Terminal {
    /// Runs `command` (a shell command line) in `dir` with `env` set, `NO_COLOR` and no
    /// `PROMPT_PROVIDER`; `None`, after saying SKIPPED, where `script` is not installed.
    pub(crate) fn start(dir: &Path, command: &str, env: &[(&str, &str)]) -> Option<Self> {
        use std::io::Read;
        if Command::new("script").arg("--version").output().is_err() {
            eprintln!("SKIPPED: `script` (util-linux) is not installed");
            return None;
        }
        let mut child = Command::new("script")
            .args(["-qfec", command, "/dev/null"])
            .current_dir(dir)
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .env_remove("PROMPT_PROVIDER")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("script runs");
        let mut stdout = child.stdout.take().expect("stdout");
        let (tx, seen) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut all = String::new();
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                all.push_str(&String::from_utf8_lossy(&buf[..n]));
                let _ = tx.send(all.clone());
            }
            all
        });
        Some(Self {
            child,
            seen,
            reader,
            last: String::new(),
        })
    }

    /// Waits until `done` holds for the output so far and returns that output; kills the
    /// command and panics naming `what` when 20 s pass without new output first.
    pub(crate) fn wait_until(&mut self, what: &str, done: impl Fn(&str) -> bool) -> String {
        while !done(&self.last) {
            match self.seen.recv_timeout(Duration::from_secs(20)) {
                Ok(seen) => self.last = seen,
                Err(_) => {
                    let _ = self.child.kill();
                    panic!("{what}: {:?}", self.last);
                }
            }
        }
        self.last.clone()
    }

    /// Waits for the command to end: whether it succeeded, and all it printed.
    pub(crate) fn finish(mut self) -> (bool, String) {
        let status = self.child.wait().expect("wait");
        (status.success(), self.reader.join().expect("reader"))
    }
}
