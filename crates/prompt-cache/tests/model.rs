//! Property: for any sequence of put/get/remove/clock moves, `ResponseCache` agrees with a
//! simple model (an LRU list with expiry times over a disk that keeps every entry), and after
//! a restart it still does.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use prompt_cache::{CacheConfig, CacheKey, CacheStore, CachedResponse, ManualClock, ResponseCache};
use proptest::prelude::*;

const CAP: usize = 4;
const KEYS: u64 = 7;
const DEFAULT_TTL: u64 = 100;

#[derive(Debug, Clone)]
enum Op {
    Put { k: u64, v: u8, ttl: Option<u64> },
    Get(u64),
    Remove(u64),
    Advance(u64),
    Flush,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..KEYS, 0..3u8, prop::option::of(1..60u64)).prop_map(|(k, v, ttl)| Op::Put { k, v, ttl }),
        4 => (0..KEYS).prop_map(Op::Get),
        1 => (0..KEYS).prop_map(Op::Remove),
        2 => (0..40u64).prop_map(Op::Advance),
        1 => Just(Op::Flush),
    ]
}

#[derive(Debug, Clone)]
struct ModelEntry {
    k: u64,
    response: String,
    expires: u64,
    hits: u64,
}

/// Two tiers: memory, least recently used first, bounded by `CAP`; and the disk, every stored
/// entry (an entry evicted from memory stays there, with its hit count written back).
#[derive(Debug, Default)]
struct Model {
    entries: Vec<ModelEntry>,
    disk: std::collections::BTreeMap<u64, ModelEntry>,
    now: u64,
}

impl Model {
    fn pos(&self, k: u64) -> Option<usize> {
        self.entries.iter().position(|e| e.k == k)
    }

    /// Adds `e` to memory as the most recently used, evicting to the disk over `CAP`.
    fn admit(&mut self, e: ModelEntry) {
        self.entries.push(e);
        while self.entries.len() > CAP {
            let evicted = self.entries.remove(0);
            self.disk.insert(evicted.k, evicted);
        }
    }

    fn put(&mut self, k: u64, response: String, ttl: u64) {
        if let Some(p) = self.pos(k) {
            self.entries.remove(p);
        }
        let e = ModelEntry {
            k,
            response,
            expires: self.now + ttl,
            hits: 0,
        };
        self.disk.insert(k, e.clone());
        self.admit(e);
    }

    fn get(&mut self, k: u64) -> Option<(String, u64)> {
        let mut e = match self.pos(k) {
            Some(p) => self.entries.remove(p),
            None => self.disk.get(&k)?.clone(),
        };
        if self.now >= e.expires {
            self.disk.remove(&k);
            return None;
        }
        e.hits += 1;
        let out = (e.response.clone(), e.hits);
        self.admit(e);
        Some(out)
    }

    fn remove(&mut self, k: u64) -> bool {
        let on_disk = self.disk.remove(&k);
        let e = match self.pos(k) {
            Some(p) => Some(self.entries.remove(p)),
            None => on_disk,
        };
        e.is_some_and(|e| self.now < e.expires)
    }

    /// `flush`: memory's hit counts reach the disk.
    fn flush(&mut self) {
        for e in &self.entries {
            self.disk.insert(e.k, e.clone());
        }
    }

    /// A restart: memory starts empty (after the drop's flush).
    fn restart(&mut self) {
        self.flush();
        self.entries.clear();
    }
}

fn key(k: u64) -> CacheKey {
    CacheKey::builder("model")
        .message("user", &k.to_string())
        .finish()
}

fn response(k: u64, v: u8) -> String {
    format!("key {k} version {v}")
}

fn open(dir: &std::path::Path, clock: &Arc<ManualClock>) -> ResponseCache {
    let mut cfg = CacheConfig::new(dir)
        .max_size(CAP)
        .ttl(Duration::from_secs(DEFAULT_TTL))
        .clock(clock.clone());
    cfg.shards = 1;
    ResponseCache::open(cfg).expect("open")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn cache_agrees_with_model(ops in prop::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().expect("date");
        let clock = Arc::new(ManualClock::new(start));
        let cache = open(dir.path(), &clock);
        let mut model = Model::default();

        for op in &ops {
            match *op {
                Op::Put { k, v, ttl } => {
                    cache
                        .put(CachedResponse::new(key(k), response(k, v), "m"), ttl.map(Duration::from_secs))
                        .expect("put");
                    model.put(k, response(k, v), ttl.unwrap_or(DEFAULT_TTL));
                }
                Op::Get(k) => {
                    let got = cache.get(&key(k)).expect("get").map(|e| (e.response.to_string(), e.hit_count));
                    prop_assert_eq!(got, model.get(k), "get {} after {:?}", k, ops);
                }
                Op::Remove(k) => {
                    prop_assert_eq!(cache.remove(&key(k)).expect("remove"), model.remove(k), "remove {}", k);
                }
                Op::Advance(s) => {
                    clock.advance(Duration::from_secs(s));
                    model.now += s;
                }
                Op::Flush => {
                    cache.flush().expect("flush");
                    model.flush();
                }
            }
            prop_assert_eq!(cache.len(), model.entries.len());
        }

        // Restart: every live entry comes back with its content and hit count.
        drop(cache);
        model.restart();
        let cache = open(dir.path(), &clock);
        for k in 0..KEYS {
            let got = cache.get(&key(k)).expect("get").map(|e| (e.response.to_string(), e.hit_count));
            prop_assert_eq!(got, model.get(k), "after restart, key {}", k);
        }
    }
}
