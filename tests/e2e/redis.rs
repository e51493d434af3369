//! `--cache-url redis://…`: the shared Redis cache, against a real `redis-server` on loopback.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{Sandbox, root};

pub(crate) struct RedisServer {
    child: Child,
    pub(crate) url: String,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `redis-server` on a free loopback port; `None` when it is not installed.
pub(crate) fn start_redis() -> Option<RedisServer> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let server = RedisServer {
        child,
        url: format!("redis://127.0.0.1:{port}/0"),
    };
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "redis-server did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(server)
}

#[test]
fn generate_through_a_shared_redis_cache() {
    let Some(redis) = start_redis() else {
        eprintln!("redis-server is not installed: skipping the Redis cache test");
        return;
    };
    let vars = root().join("examples/chapter1.yaml").display().to_string();
    let args = [
        "generate",
        "writer/write_chapter",
        "--vars",
        &vars,
        "--provider",
        "echo",
        "--cache-url",
        &redis.url,
        "--json",
    ];
    // Two sandboxes: two machines sharing one cache.
    let (a, b) = (Sandbox::new(), Sandbox::new());
    let first = a.run(&args).json();
    assert_eq!(first["cache_hit"], false);
    let second = b.run(&args).json();
    assert_eq!(
        second["cache_hit"], true,
        "the other machine's reply is served"
    );
    assert_eq!(second["response"], first["response"]);
    assert!(
        !a.path().join("output/cache").exists(),
        "no directory cache is used"
    );

    let env = [("PROMPT_CACHE_URL", redis.url.as_str())];
    let stats = a.run_env(&["cache", "stats", "--json"], &env).json();
    assert_eq!(stats["size"], 1);
    let cleared = a.run_env(&["cache", "clear", "--json"], &env).json();
    assert_eq!(cleared["removed"], 1);
    let third = b.run(&args).json();
    assert_eq!(third["cache_hit"], false);
}

#[test]
fn unreachable_redis_is_a_one_line_failure() {
    let sb = Sandbox::new();
    let url = format!(
        "redis://{}",
        &crate::support::closed_url()["http://".len()..]
    );
    let out = sb.run(&["cache", "stats", "--cache-url", &url]);
    crate::support::assert_error(&out, 1, "");
    assert!(
        out.stderr.contains("hint: is the Redis server at"),
        "{}",
        out.stderr
    );
}
