//! RedisCache against a real `redis-server` started by the test on a free loopback port.
//! Without `redis-server` on PATH these tests print "SKIPPED: redis-server not found" and pass.
#![cfg(feature = "redis")]

use std::io::Write;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use prompt_cache::{CacheError, CacheKey, CacheStore, CachedResponse, RedisCache};

/// A `redis-server` child process, killed on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    /// Starts a server, or `None` (after saying so) when `redis-server` is not installed.
    fn start(test: &str) -> Option<Self> {
        let port = free_port();
        let spawned = Command::new("redis-server")
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
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Written to the stderr handle directly so the test harness does not capture it.
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED: redis-server not found on PATH; skipping Redis test {test}"
                );
                return None;
            }
            Err(e) => panic!("cannot start redis-server: {e}"),
        };
        let server = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(client) = redis::Client::open(server.url().as_str())
                && let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_millis(200))
                && redis::cmd("PING").query::<String>(&mut conn).is_ok()
            {
                return Some(server);
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn raw(&self) -> redis::Connection {
        redis::Client::open(self.url().as_str())
            .and_then(|c| c.get_connection())
            .expect("raw connection")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn key(i: u64) -> CacheKey {
    CacheKey::builder("redis-test")
        .message("user", &i.to_string())
        .finish()
}

fn entry(i: u64) -> CachedResponse {
    let mut e = CachedResponse::new(key(i), format!("response {i}"), "m");
    e.tokens_prompt = Some(i);
    e
}

const DAY: Duration = Duration::from_secs(86_400);

#[test]
fn put_get_hit_counts_shared_between_clients() {
    let Some(server) = Server::start("put_get_hit_counts_shared_between_clients") else {
        return;
    };
    let a = RedisCache::connect(&server.url(), "app", DAY).expect("connect a");
    let b = RedisCache::connect(&server.url(), "app", DAY).expect("connect b");
    assert!(a.get(&key(1)).expect("get").is_none());
    a.put(entry(1), None).expect("put");
    let e = b
        .get(&key(1))
        .expect("get")
        .expect("hit via the other client");
    assert_eq!(&*e.response, "response 1");
    assert_eq!(e.tokens_prompt, Some(1));
    assert_eq!(e.hit_count, 1);
    assert!(e.expires_at.is_some());
    assert_eq!(a.get(&key(1)).expect("get").expect("hit").hit_count, 2);
    let stats = b.stats().expect("stats");
    assert_eq!(stats.size, 1);
    assert_eq!(stats.total_hits, 2);
    assert_eq!((stats.hits, stats.misses), (2, 1));
    assert!(stats.bytes > 0);
    assert_eq!(stats.ttl_seconds, 86_400);
    // The Redis key carries the TTL.
    let pttl: i64 = redis::cmd("PTTL")
        .arg(format!("app:{}", key(1)))
        .query(&mut server.raw())
        .expect("pttl");
    assert!(pttl > 0 && pttl <= 86_400_000, "pttl {pttl}");
    assert!(a.remove(&key(1)).expect("remove"));
    assert!(!a.remove(&key(1)).expect("remove again"));
    assert!(b.get(&key(1)).expect("get").is_none());
    assert!(a.flush().is_ok());
}

#[test]
fn a_streamed_reply_comes_back_piece_by_piece() {
    let Some(server) = Server::start("a_streamed_reply_comes_back_piece_by_piece") else {
        return;
    };
    let cache = RedisCache::connect(&server.url(), "app", DAY).expect("connect");
    let mut e = entry(7);
    e.set_pieces([
        (true, "Hmm.", 400),
        (false, "Once ", 900),
        (false, "upon.", 1_400),
    ]);
    cache.put(e, None).expect("put");
    let hit = cache.get(&key(7)).expect("get").expect("hit");
    assert_eq!(&*hit.response, "response 7");
    assert_eq!(hit.streamed_response.as_deref(), Some("Once upon."));
    assert_eq!(hit.reasoning.as_deref(), Some("Hmm."));
    let pieces: Vec<_> = hit
        .pieces()
        .map(|p| (p.reasoning, p.text, p.offset_us))
        .collect();
    assert_eq!(
        pieces,
        [
            (true, "Hmm.", 400),
            (false, "Once ", 900),
            (false, "upon.", 1_400)
        ]
    );
}

#[test]
fn ttl_is_redis_expiry() {
    let Some(server) = Server::start("ttl_is_redis_expiry") else {
        return;
    };
    let cache = RedisCache::connect(&server.url(), "ttl", DAY).expect("connect");
    cache
        .put(entry(1), Some(Duration::from_millis(150)))
        .expect("put");
    cache.put(entry(2), None).expect("put");
    assert!(cache.get(&key(1)).expect("get").is_some());
    let deadline = Instant::now() + Duration::from_secs(10);
    while cache.get(&key(1)).expect("get").is_some() {
        assert!(Instant::now() < deadline, "entry 1 never expired");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(cache.get(&key(2)).expect("get").is_some());
    let exists: bool = redis::cmd("EXISTS")
        .arg(format!("ttl:{}", key(1)))
        .query(&mut server.raw())
        .expect("exists");
    assert!(!exists, "Redis dropped the expired key itself");
    assert_eq!(cache.prune_expired().expect("prune"), 0);
}

#[test]
fn prefix_is_a_namespace_and_clear_stays_inside_it() {
    let Some(server) = Server::start("prefix_is_a_namespace_and_clear_stays_inside_it") else {
        return;
    };
    let a = RedisCache::connect(&server.url(), "team-a", DAY).expect("connect");
    let b = RedisCache::connect(&server.url(), "team-b", DAY).expect("connect");
    // A prefix with glob characters matches only itself.
    let star = RedisCache::connect(&server.url(), "team-*", DAY).expect("connect");
    for i in 0..30 {
        a.put(entry(i), None).expect("put a");
    }
    for i in 0..5 {
        b.put(entry(i), None).expect("put b");
    }
    star.put(entry(0), None).expect("put star");
    let mut raw = server.raw();
    redis::cmd("SET")
        .arg("unrelated")
        .arg("keep me")
        .query::<()>(&mut raw)
        .expect("set");
    assert!(
        b.get(&key(10)).expect("get").is_none(),
        "namespaces do not share entries"
    );
    assert_eq!(star.clear().expect("clear star"), 1);
    assert_eq!(a.clear().expect("clear a"), 30);
    assert_eq!(a.stats().expect("stats").size, 0);
    assert_eq!(b.stats().expect("stats").size, 5);
    assert!(b.get(&key(3)).expect("get").is_some());
    let kept: String = redis::cmd("GET")
        .arg("unrelated")
        .query(&mut raw)
        .expect("get");
    assert_eq!(kept, "keep me");
}

#[test]
fn bad_input_and_corrupt_data() {
    let Some(server) = Server::start("bad_input_and_corrupt_data") else {
        return;
    };
    let cache = RedisCache::connect(&server.url(), "bad", DAY).expect("connect");
    let err = cache
        .put(CachedResponse::new(key(1), "  ", "m"), None)
        .expect_err("empty");
    assert!(matches!(err, CacheError::EmptyResponse { .. }), "{err}");
    redis::cmd("HSET")
        .arg(format!("bad:{}", key(2)))
        .arg("data")
        .arg("{not json")
        .query::<()>(&mut server.raw())
        .expect("hset");
    assert!(cache.get(&key(2)).expect("get").is_none());
    assert_eq!(cache.stats().expect("stats").corrupt, 1);
}

#[test]
fn reconnects_after_the_server_restarts() {
    let Some(mut server) = Server::start("reconnects_after_the_server_restarts") else {
        return;
    };
    let cache = RedisCache::connect(&server.url(), "re", DAY).expect("connect");
    cache.put(entry(1), None).expect("put");
    let port = server.port;
    drop(server);
    let err = cache.get(&key(1)).expect_err("server down");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    // Same port again (best effort: skip the rest if it was taken meanwhile).
    server = match restart_on(port) {
        Some(s) => s,
        None => return,
    };
    assert!(
        cache.get(&key(1)).expect("get after restart").is_none(),
        "no persistence configured"
    );
    cache.put(entry(2), None).expect("put after restart");
    assert!(cache.get(&key(2)).expect("get").is_some());
    drop(server);
}

fn restart_on(port: u16) -> Option<Server> {
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
    let server = Server { child, port };
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(client) = redis::Client::open(server.url().as_str())
            && let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_millis(200))
            && redis::cmd("PING").query::<String>(&mut conn).is_ok()
        {
            return Some(server);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn unreachable_server_is_a_clear_error_without_the_password() {
    let port = free_port(); // nothing listens here
    let url = format!("redis://:hunter2@127.0.0.1:{port}/0");
    let err = RedisCache::connect_with_timeout(&url, "x", DAY, Duration::from_millis(500))
        .expect_err("unreachable");
    let text = err.to_string();
    assert!(matches!(err, CacheError::Redis { .. }), "{text}");
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(text.contains("unreachable"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    let err = RedisCache::connect("not-a-url", "x", DAY).expect_err("invalid");
    assert!(err.to_string().contains("not-a-url"), "{err}");
}

/// The stored `data` field of `key` in `prefix`.
fn stored_data(server: &Server, prefix: &str, key: &CacheKey) -> String {
    redis::cmd("HGET")
        .arg(format!("{prefix}:{key}"))
        .arg("data")
        .query(&mut server.raw())
        .expect("hget")
}

fn set_data(server: &Server, prefix: &str, key: &CacheKey, data: &str) {
    redis::cmd("HSET")
        .arg(format!("{prefix}:{key}"))
        .arg("data")
        .arg(data)
        .query::<()>(&mut server.raw())
        .expect("hset");
}

#[test]
fn a_tampered_field_is_a_miss_and_counted_as_corrupt() {
    let Some(server) = Server::start("a_tampered_field_is_a_miss_and_counted_as_corrupt") else {
        return;
    };
    let cache = RedisCache::connect(&server.url(), "tamper", DAY).expect("connect");
    let mut e = entry(1);
    e.response = "The answer is 42.".into();
    e.model = "qwen3:30b".to_owned();
    e.finish_reason = Some("stop".to_owned());
    e.latency_ms = Some(12_171.220_160_481_445); // not read back bit for bit by serde_json
    cache.put(e.clone(), None).expect("put");
    let data = stored_data(&server, "tamper", &key(1));
    assert!(data.contains("\"checksum\":\"xxh3:"), "{data}");
    // Untouched, it verifies.
    assert!(cache.get(&key(1)).expect("get").is_some());

    // Each tampering keeps the JSON valid and changes one field a hit returns.
    let tampered = [
        data.replace("The answer is 42.", "The answer is 41."),
        data.replace("qwen3:30b", "qwen3:31b"),
        data.replace("\"stop\"", "\"length\""),
        data.replace("\"tokens_prompt\":1", "\"tokens_prompt\":7"),
        data.replace("\"finish_reason\":\"stop\"", "\"finish_reason\":null"),
    ];
    for (n, bad) in tampered.iter().enumerate() {
        assert_ne!(bad, &data, "tampering {n} changed nothing");
        set_data(&server, "tamper", &key(1), bad);
        assert!(
            cache.get(&key(1)).expect("get").is_none(),
            "tampered entry {n} was served: {bad}"
        );
        assert_eq!(cache.stats().expect("stats").corrupt, n as u64 + 1);
        let exists: bool = redis::cmd("EXISTS")
            .arg(format!("tamper:{}", key(1)))
            .query(&mut server.raw())
            .expect("exists");
        assert!(!exists, "a corrupt entry is deleted");
    }
}

#[test]
fn an_entry_without_a_checksum_is_still_served() {
    let Some(server) = Server::start("an_entry_without_a_checksum_is_still_served") else {
        return;
    };
    let cache = RedisCache::connect(&server.url(), "old", DAY).expect("connect");
    let e = entry(3);
    // What the cache wrote before entries carried a checksum.
    let old = serde_json::to_string(&e).expect("json");
    assert!(!old.contains("checksum"));
    set_data(&server, "old", &key(3), &old);
    let got = cache.get(&key(3)).expect("get").expect("old entry served");
    assert_eq!(&*got.response, "response 3");
    assert_eq!(got.tokens_prompt, Some(3));
    assert_eq!(cache.stats().expect("stats").corrupt, 0);
    // Its next put stores it with a checksum.
    cache.put(got, None).expect("put");
    assert!(stored_data(&server, "old", &key(3)).contains("\"checksum\":\"xxh3:"));
}
