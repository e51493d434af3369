//! Entry integrity on disk: a damaged entry file is a miss (set aside and counted as corrupt),
//! never an answer; entries written before checksums existed still load.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use prompt_cache::{
    CacheConfig, CacheKey, CacheStore, CachedResponse, Clock, ManualClock, ResponseCache,
};
use proptest::prelude::*;

fn key(i: u64) -> CacheKey {
    CacheKey::builder("integrity")
        .model("qwen3:30b")
        .message("user", &format!("prompt {i}"))
        .finish()
}

/// An entry with every field a hit returns set (the latency is one `serde_json` does not read
/// back bit for bit).
fn full_entry(i: u64) -> CachedResponse {
    let mut e = CachedResponse::new(
        key(i),
        format!("The morning sun rose over the valley, chapter {i}.\nShe said \"go\"."),
        "qwen3:30b",
    );
    e.provider = Some("ollama".to_owned());
    e.temperature = Some(0.8);
    e.tokens_prompt = Some(900);
    e.tokens_completion = Some(512);
    e.finish_reason = Some("stop".to_owned());
    e.latency_ms = Some(12_171.220_160_481_445);
    // Streamed, with reasoning and an inline think block the stored `response` left out:
    // the pieces and the streamed text are covered by the checksum too.
    let chapter = format!(" chapter {i}.\nShe said \"go\".");
    e.set_pieces([
        (true, "The valley first.", 700),
        (false, "<think>\n</think>\n\n", 900),
        (false, "The morning sun rose over the valley,", 1_250),
        (false, chapter.as_str(), 1_900),
    ]);
    e
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 1, 20, 12, 0, 0)
            .single()
            .expect("valid date"),
    ))
}

fn open(dir: &Path, clock: &Arc<ManualClock>) -> ResponseCache {
    ResponseCache::open(CacheConfig::new(dir).clock(clock.clone())).expect("open")
}

fn entry_path(dir: &Path, i: u64) -> std::path::PathBuf {
    dir.join(format!("{}.json", key(i)))
}

/// Everything a hit returns except the hit count (bookkeeping, not covered by the checksum).
fn content(e: &CachedResponse) -> CachedResponse {
    let mut e = e.clone();
    e.hit_count = 0;
    e
}

/// The bytes of entry 0 as the cache stores it, and the entry a reload of them serves.
fn stored() -> (Vec<u8>, CachedResponse) {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    {
        let cache = open(dir.path(), &clock);
        cache.put(full_entry(0), None).expect("put");
    }
    let bytes = fs::read(entry_path(dir.path(), 0)).expect("entry file");
    let cache = open(dir.path(), &clock);
    let served = cache
        .get(&key(0))
        .expect("get")
        .expect("undamaged entry served");
    assert_eq!(cache.stats().expect("stats").corrupt, 0);
    (bytes, served)
}

/// What a cache serves for entry 0 when its file holds `bytes`: written before the cache
/// opened and while it is open (both read by key on the first `get`); with the corrupt count
/// and whether the file was set aside intact.
fn serve(bytes: &[u8]) -> [(Option<CachedResponse>, u64, bool); 2] {
    let clock = clock();
    let mut out = Vec::new();
    for while_open in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = entry_path(dir.path(), 0);
        let cache = if while_open {
            let cache = open(dir.path(), &clock);
            fs::write(&path, bytes).expect("write");
            cache
        } else {
            fs::write(&path, bytes).expect("write");
            open(dir.path(), &clock)
        };
        let got = cache.get(&key(0)).expect("get");
        let corrupt = cache.stats().expect("stats").corrupt;
        let quarantined = dir.path().join("corrupt").join(format!("{}.json", key(0)));
        let set_aside = fs::read(&quarantined).is_ok_and(|b| b == bytes) && !path.exists();
        out.push((got, corrupt, set_aside));
    }
    [out.remove(0), out.remove(0)]
}

#[test]
fn a_changed_response_that_still_parses_is_a_miss_and_set_aside() {
    let (bytes, served) = stored();
    assert_eq!(content(&served), {
        let mut e = full_entry(0);
        e.created_at = served.created_at;
        e.expires_at = served.expires_at;
        e.latency_ms = served.latency_ms;
        content(&e)
    });
    // The damage of the issue: two letters of the response changed into other letters.
    let text = String::from_utf8(bytes).expect("utf-8");
    let damaged = text.replacen("morning sun", "mourning son", 1);
    assert!(
        serde_json::from_str::<CachedResponse>(&damaged).is_ok(),
        "still parses"
    );
    for (got, corrupt, set_aside) in serve(damaged.as_bytes()) {
        assert!(got.is_none(), "served a changed answer: {got:?}");
        assert_eq!(corrupt, 1);
        assert!(set_aside, "the damaged file is moved to corrupt/, intact");
    }
}

#[test]
fn floats_that_do_not_survive_json_exactly_still_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let floats = [
        (Some(0.1 + 0.2), Some(12_171.220_160_481_445)),
        (Some(f64::NAN), Some(f64::INFINITY)),
        (Some(-0.0), Some(-1.603_964_615_428_183e143)),
        (None, Some(f64::MIN_POSITIVE)),
    ];
    {
        let cache = open(dir.path(), &clock);
        for (i, (temperature, latency)) in floats.iter().enumerate() {
            let mut e = full_entry(i as u64);
            e.temperature = *temperature;
            e.latency_ms = *latency;
            cache.put(e, None).expect("put");
        }
    }
    let cache = open(dir.path(), &clock);
    for i in 0..floats.len() as u64 {
        assert!(cache.get(&key(i)).expect("get").is_some(), "entry {i}");
    }
    assert_eq!(cache.stats().expect("stats").corrupt, 0);
}

#[test]
fn entries_without_a_checksum_still_load_and_get_one_at_the_next_flush() {
    let clock = clock();
    let dir = tempfile::tempdir().expect("tempdir");
    // What the cache wrote before entries carried a checksum: serde_json's object, compact
    // (entry 1) or as another tool might write it (entry 2).
    let mut old = Vec::new();
    for i in [1u64, 2] {
        let mut e = full_entry(i);
        e.created_at = clock.now();
        e.hit_count = 4;
        let text = match i {
            1 => serde_json::to_string(&e),
            _ => serde_json::to_string_pretty(&e),
        }
        .expect("json");
        assert!(!text.contains("checksum"));
        fs::write(entry_path(dir.path(), i), &text).expect("write");
        old.push(serde_json::from_str::<CachedResponse>(&text).expect("old entry"));
    }
    {
        let cache = open(dir.path(), &clock);
        for (i, want) in [1u64, 2].into_iter().zip(&old) {
            let got = cache.get(&key(i)).expect("get").expect("old entry served");
            assert_eq!(content(&got), content(want));
            assert_eq!(got.hit_count, 5);
        }
        assert_eq!(cache.stats().expect("stats").corrupt, 0);
        cache.flush().expect("flush");
        for i in [1u64, 2] {
            let text = fs::read_to_string(entry_path(dir.path(), i)).expect("read");
            assert!(text.contains("\"checksum\":\"xxh3:"), "{text}");
        }
    }
    // Start-up reads nothing, so an old entry that is never asked for stays as it was; one met
    // by read-through (written while the cache is open, too) is rewritten at the next flush.
    let clean = tempfile::tempdir().expect("tempdir");
    let text = serde_json::to_string(&old[0]).expect("json");
    fs::write(entry_path(clean.path(), 1), &text).expect("write");
    drop(open(clean.path(), &clock));
    let untouched = fs::read_to_string(entry_path(clean.path(), 1)).expect("read");
    assert_eq!(untouched, text);
    let cache = open(clean.path(), &clock);
    fs::write(
        entry_path(clean.path(), 9),
        text.replace(&key(1).to_hex(), &key(9).to_hex()),
    )
    .expect("write");
    assert!(cache.get(&key(9)).expect("get").is_some());
    cache.flush().expect("flush");
    let rewritten = fs::read_to_string(entry_path(clean.path(), 9)).expect("read");
    assert!(rewritten.contains("\"checksum\":\"xxh3:"), "{rewritten}");

    // From then on they are verified: a changed answer is no longer served.
    drop(cache);
    let damaged = rewritten.replacen("morning", "mourning", 1);
    fs::write(entry_path(clean.path(), 9), damaged).expect("write");
    let cache = open(clean.path(), &clock);
    assert!(cache.get(&key(9)).expect("get").is_none());
    assert_eq!(cache.stats().expect("stats").corrupt, 1);
}

/// One kind of damage to a stored entry file.
#[derive(Debug, Clone)]
enum Damage {
    /// The byte at the index becomes the value (skipped when it is the same byte).
    Flip(prop::sample::Index, u8),
    /// The file is cut at the index (its full length excluded).
    Truncate(prop::sample::Index),
}

impl Damage {
    fn apply(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        match self {
            Damage::Flip(at, value) => {
                let i = at.index(bytes.len());
                (bytes[i] != *value).then(|| {
                    let mut out = bytes.to_vec();
                    out[i] = *value;
                    out
                })
            }
            Damage::Truncate(at) => Some(bytes[..at.index(bytes.len())].to_vec()),
        }
    }
}

fn damage() -> impl Strategy<Value = Damage> {
    // Letters into letters and digits into digits keep the JSON valid more often.
    let value = prop_oneof![any::<u8>(), b'a'..=b'z', b'0'..=b'9', Just(b' ')];
    prop_oneof![
        3 => (any::<prop::sample::Index>(), value).prop_map(|(at, v)| Damage::Flip(at, v)),
        1 => any::<prop::sample::Index>().prop_map(Damage::Truncate),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    /// Any one byte changed, or the file cut anywhere: the entry is served unchanged (all but
    /// its hit count) or not served at all, in which case it is counted as corrupt and set
    /// aside intact. Through start-up loading and through read-through reads alike.
    #[test]
    fn a_damaged_entry_file_is_served_unchanged_or_not_at_all(damage in damage()) {
        static STORED: std::sync::OnceLock<(Vec<u8>, CachedResponse)> = std::sync::OnceLock::new();
        let (bytes, served) = STORED.get_or_init(stored);
        let Some(damaged) = damage.apply(bytes) else {
            return Ok(());
        };
        for (got, corrupt, set_aside) in serve(&damaged) {
            match got {
                Some(got) => {
                    prop_assert_eq!(content(&got), content(served));
                    prop_assert_eq!(corrupt, 0);
                }
                None => {
                    prop_assert_eq!(corrupt, 1);
                    prop_assert!(set_aside, "the damaged file is set aside intact");
                }
            }
        }
    }
}
