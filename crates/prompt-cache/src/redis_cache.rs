//! `RedisCache`: the cache over a Redis server (feature `redis`), for many processes and
//! machines sharing one cache.
//!
//! # Layout in Redis
//!
//! - `<prefix>:<64-hex key>`: a hash with fields `data` (the entry in the stored form of the
//!   `entry` module: JSON with a checksum, verified on every read), `hits` (hit count,
//!   incremented atomically by `get`) and `created` (milliseconds since the epoch). Its Redis
//!   expiry is the entry's TTL (`PEXPIRE`), so Redis drops expired entries by itself.
//! - `<prefix>:stats`: a hash of shared counters (`hits`, `misses`, `corrupt`).
//!
//! `clear` deletes only keys under `<prefix>:` (`SCAN` + `DEL`, never `FLUSHDB`); `stats` walks
//! them with `SCAN`. Redis expires entries silently, so `expired` counts only entries this
//! process found expired by its own clock, and `evictions` is always 0 (Redis's `maxmemory`
//! policy governs eviction). `max_size` is 0: the server bounds the cache.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::Utc;
use parking_lot::Mutex;

use crate::entry::Decoded;
use crate::store::add_duration;
use crate::{CacheError, CacheKey, CacheStats, CacheStore, CachedResponse};

/// How long `connect` waits for the server.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// Returns the entry and its new hit count, or nil when the key does not exist.
const GET_SCRIPT: &str = r"
local d = redis.call('HGET', KEYS[1], 'data')
if not d then return false end
local h = redis.call('HINCRBY', KEYS[1], 'hits', 1)
return {d, h}
";

/// A [`CacheStore`] over a Redis server; TTL through Redis expiry, hit counts kept in Redis,
/// keys under a prefix. Thread-safe (one connection behind a mutex, reconnected on failure).
pub struct RedisCache {
    client: redis::Client,
    conn: Mutex<Option<redis::Connection>>,
    url: String,
    prefix: String,
    ttl: Duration,
    timeout: Duration,
    expired: AtomicU64,
    get_script: redis::Script,
}

impl fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCache")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl RedisCache {
    /// Connects to `url` (`redis://[user:password@]host:port/db`), waiting at most two seconds,
    /// storing entries under `<prefix>:` with default TTL `ttl`.
    pub fn connect(url: &str, prefix: &str, ttl: Duration) -> Result<Self, CacheError> {
        Self::connect_with_timeout(url, prefix, ttl, DEFAULT_TIMEOUT)
    }

    /// Like [`RedisCache::connect`], with a connect and I/O timeout.
    pub fn connect_with_timeout(
        url: &str,
        prefix: &str,
        ttl: Duration,
        timeout: Duration,
    ) -> Result<Self, CacheError> {
        let shown = redact_url(url);
        let client = redis::Client::open(url).map_err(|e| CacheError::Redis {
            url: shown.clone(),
            message: format!("invalid URL: {}", redact_message(&e.to_string(), url)),
        })?;
        let cache = Self {
            client,
            conn: Mutex::new(None),
            url: shown,
            prefix: prefix.to_owned(),
            ttl,
            timeout,
            expired: AtomicU64::new(0),
            get_script: redis::Script::new(GET_SCRIPT),
        };
        let pong: String = cache.run(|c| redis::cmd("PING").query(c))?;
        if pong != "PONG" {
            return Err(cache.error(format!("unexpected answer to PING: {pong:?}")));
        }
        Ok(cache)
    }

    /// The server URL with any password replaced by `***`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn error(&self, message: String) -> CacheError {
        CacheError::Redis {
            url: self.url.clone(),
            message,
        }
    }

    fn redis_error(&self, e: &redis::RedisError) -> CacheError {
        let message = if e.is_timeout() || e.is_connection_refusal() || e.is_io_error() {
            format!("server unreachable: {e}")
        } else {
            e.to_string()
        };
        self.error(message)
    }

    fn connection(&self) -> Result<redis::Connection, CacheError> {
        let conn = self
            .client
            .get_connection_with_timeout(self.timeout)
            .map_err(|e| self.redis_error(&e))?;
        conn.set_read_timeout(Some(self.timeout))
            .and_then(|()| conn.set_write_timeout(Some(self.timeout)))
            .map_err(|e| self.redis_error(&e))?;
        Ok(conn)
    }

    /// Runs `f` on the connection, reconnecting once if the connection was lost.
    fn run<T>(
        &self,
        f: impl Fn(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, CacheError> {
        let mut slot = self.conn.lock();
        for attempt in 0..2 {
            if slot.is_none() {
                *slot = Some(self.connection()?);
            }
            let Some(conn) = slot.as_mut() else {
                continue;
            };
            match f(conn) {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let lost = e.is_connection_dropped() || e.is_io_error() || e.is_timeout();
                    if lost {
                        *slot = None;
                    }
                    if !lost || attempt == 1 {
                        return Err(self.redis_error(&e));
                    }
                }
            }
        }
        Err(self.error("server unreachable".to_owned()))
    }

    fn entry_key(&self, key: &CacheKey) -> String {
        format!("{}:{key}", self.prefix)
    }

    fn stats_key(&self) -> String {
        format!("{}:stats", self.prefix)
    }

    fn count(&self, field: &str) -> Result<(), CacheError> {
        let stats = self.stats_key();
        self.run(|c| {
            redis::cmd("HINCRBY")
                .arg(&stats)
                .arg(field)
                .arg(1)
                .query::<i64>(c)
        })?;
        Ok(())
    }

    /// Every entry key under the prefix.
    fn scan_entries(&self) -> Result<Vec<String>, CacheError> {
        let pattern = format!("{}:*", glob_escape(&self.prefix));
        let skip = self.prefix.len() + 1;
        let mut keys = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = self.run(|c| {
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(500)
                    .query(c)
            })?;
            keys.extend(
                batch
                    .into_iter()
                    .filter(|k| k.get(skip..).is_some_and(|s| s.parse::<CacheKey>().is_ok())),
            );
            if next == 0 {
                break;
            }
            cursor = next;
        }
        keys.sort_unstable();
        keys.dedup();
        Ok(keys)
    }

    fn delete(&self, keys: &[String]) -> Result<usize, CacheError> {
        let mut removed = 0;
        for chunk in keys.chunks(500) {
            let n: usize = self.run(|c| redis::cmd("DEL").arg(chunk).query(c))?;
            removed += n;
        }
        Ok(removed)
    }
}

impl CacheStore for RedisCache {
    fn get(&self, key: &CacheKey) -> Result<Option<CachedResponse>, CacheError> {
        let rkey = self.entry_key(key);
        let found: Option<(String, u64)> = self.run(|c| self.get_script.key(&rkey).invoke(c))?;
        let Some((data, hits)) = found else {
            self.count("misses")?;
            return Ok(None);
        };
        // A damaged or tampered entry (checksum mismatch) is a miss, deleted and counted as
        // corrupt like an unreadable one; one without a checksum (an older writer) is served
        // and gets one at its next `put`.
        match crate::entry::decode(data.as_bytes(), key, &key.to_hex()) {
            Decoded::Verified(mut entry) | Decoded::Unchecked(mut entry) => {
                if entry.is_expired_at(Utc::now()) {
                    self.expired.fetch_add(1, Ordering::Relaxed);
                    self.delete(&[rkey])?;
                    self.count("misses")?;
                    return Ok(None);
                }
                entry.hit_count = hits;
                self.count("hits")?;
                Ok(Some(entry))
            }
            Decoded::Corrupt => {
                self.delete(&[rkey])?;
                self.count("corrupt")?;
                self.count("misses")?;
                Ok(None)
            }
        }
    }

    fn put(&self, mut entry: CachedResponse, ttl: Option<Duration>) -> Result<(), CacheError> {
        if !entry.answers() {
            return Err(CacheError::EmptyResponse { key: entry.key });
        }
        // Redis's own limit on a string value is 512 MB; refuse well before that.
        const LIMIT: u64 = 64 * 1024 * 1024;
        let size = entry.approx_size();
        if size > LIMIT {
            return Err(CacheError::EntryTooLarge {
                key: entry.key,
                size,
                limit: LIMIT,
            });
        }
        let ttl = ttl.unwrap_or(self.ttl);
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        if ttl_ms == 0 {
            // Expired on arrival: nothing to store.
            return Ok(());
        }
        let now = Utc::now();
        entry.created_at = now;
        entry.expires_at = add_duration(now, ttl);
        let mut data = Vec::with_capacity(entry.response.len() + 512);
        crate::entry::encode(&entry, &mut data).map_err(|e| self.error(e.to_string()))?;
        let rkey = self.entry_key(&entry.key);
        let created = now.timestamp_millis();
        self.run(|c| {
            let mut pipe = redis::pipe();
            pipe.atomic()
                .cmd("DEL")
                .arg(&rkey)
                .ignore()
                .cmd("HSET")
                .arg(&rkey)
                .arg("data")
                .arg(&data)
                .arg("hits")
                .arg(entry.hit_count)
                .arg("created")
                .arg(created)
                .ignore();
            // Expiries past what Redis accepts (about 292 million years) mean "never".
            if entry.expires_at.is_some() && ttl_ms < i64::MAX as u64 / 2 {
                pipe.cmd("PEXPIRE").arg(&rkey).arg(ttl_ms).ignore();
            }
            pipe.query::<()>(c)
        })
    }

    fn remove(&self, key: &CacheKey) -> Result<bool, CacheError> {
        Ok(self.delete(&[self.entry_key(key)])? > 0)
    }

    fn clear(&self) -> Result<usize, CacheError> {
        let keys = self.scan_entries()?;
        let removed = self.delete(&keys)?;
        self.delete(&[self.stats_key()])?;
        Ok(removed)
    }

    fn prune_expired(&self) -> Result<usize, CacheError> {
        // Redis removes expired keys itself.
        Ok(0)
    }

    fn stats(&self) -> Result<CacheStats, CacheError> {
        let keys = self.scan_entries()?;
        let now_ms = Utc::now().timestamp_millis();
        let mut size = 0usize;
        let mut total_hits = 0u64;
        let mut bytes = 0u64;
        let mut age_sum = 0f64;
        let mut oldest = 0f64;
        for chunk in keys.chunks(200) {
            let rows: Vec<(Option<u64>, Option<i64>, u64)> = self.run(|c| {
                let mut pipe = redis::pipe();
                for k in chunk {
                    pipe.cmd("HMGET").arg(k).arg("hits").arg("created");
                    pipe.cmd("HSTRLEN").arg(k).arg("data");
                }
                let raw: Vec<redis::Value> = pipe.query(c)?;
                let mut out = Vec::with_capacity(chunk.len());
                for pair in raw.chunks(2) {
                    let (hc, len) = match pair {
                        [a, b] => (a.clone(), b.clone()),
                        _ => break,
                    };
                    let (hits, created): (Option<u64>, Option<i64>) = redis::from_redis_value(hc)?;
                    let len: u64 = redis::from_redis_value(len)?;
                    out.push((hits, created, len));
                }
                Ok(out)
            })?;
            for (hits, created, len) in rows {
                let Some(created) = created else {
                    continue; // expired between SCAN and HMGET
                };
                size += 1;
                total_hits += hits.unwrap_or(0);
                bytes += len;
                let age = (now_ms - created).max(0) as f64 / 1000.0;
                age_sum += age;
                oldest = oldest.max(age);
            }
        }
        let stats_key = self.stats_key();
        let (hits, misses, corrupt): (Option<u64>, Option<u64>, Option<u64>) = self.run(|c| {
            redis::cmd("HMGET")
                .arg(&stats_key)
                .arg("hits")
                .arg("misses")
                .arg("corrupt")
                .query(c)
        })?;
        let (hits, misses) = (hits.unwrap_or(0), misses.unwrap_or(0));
        Ok(CacheStats {
            size,
            max_size: 0,
            utilization: 0.0,
            total_hits,
            avg_age_seconds: if size == 0 {
                0.0
            } else {
                age_sum / size as f64
            },
            oldest_age_seconds: oldest,
            ttl_seconds: self.ttl.as_secs(),
            hits,
            misses,
            hit_rate: if hits + misses == 0 {
                0.0
            } else {
                hits as f64 / (hits + misses) as f64
            },
            evictions: 0,
            expired: self.expired.load(Ordering::Relaxed),
            bytes,
            corrupt: corrupt.unwrap_or(0),
            write_failures: 0,
            disk_entries: 0,
            disk_bytes: 0,
            disk_evictions: 0,
        })
    }

    fn flush(&self) -> Result<(), CacheError> {
        // Every write is acknowledged by the server before `put` returns.
        Ok(())
    }
}

/// `url` with the password (if any) replaced by `***` and any query string dropped.
pub(crate) fn redact_url(url: &str) -> String {
    let url = url.split('?').next().unwrap_or(url);
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let (scheme, rest) = url.split_at(scheme_end + 3);
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let host = &authority[at + 1..];
            let user = userinfo.split(':').next().unwrap_or("");
            if userinfo.contains(':') {
                format!("{scheme}{user}:***@{host}{path}")
            } else {
                format!("{scheme}{userinfo}@{host}{path}")
            }
        }
        None => format!("{scheme}{authority}{path}"),
    }
}

/// Removes the password of `url` from an error message that may quote it.
fn redact_message(message: &str, url: &str) -> String {
    match password_of(url) {
        Some(pw) if !pw.is_empty() => message.replace(pw, "***"),
        _ => message.to_owned(),
    }
}

fn password_of(url: &str) -> Option<&str> {
    let rest = &url[url.find("://")? + 3..];
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let userinfo = &authority[..authority.rfind('@')?];
    Some(&userinfo[userinfo.find(':')? + 1..])
}

/// Escapes Redis glob metacharacters so a prefix matches only itself.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        if matches!(ch, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_password() {
        for (url, shown) in [
            ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
            ("redis://:s3cret@host:6379/0", "redis://:***@host:6379/0"),
            ("redis://alice:s3cret@host/1", "redis://alice:***@host/1"),
            ("redis://alice@host", "redis://alice@host"),
            ("rediss://u:p@h:1?password=x", "rediss://u:***@h:1"),
            ("not a url", "not a url"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
        assert_eq!(redact_message("bad s3cret", "redis://:s3cret@h"), "bad ***");
    }

    #[test]
    fn prefixes_are_glob_escaped() {
        assert_eq!(glob_escape("app*[x]?\\"), "app\\*\\[x\\]\\?\\\\");
    }
}
