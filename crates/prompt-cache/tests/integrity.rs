//! Entry integrity on disk: a damaged stored entry is a miss (counted as corrupt), never an
//! answer — a record in a segment (its key then leaves the index, its bytes stay where they are)
//! as well as a `<key>.json` file of the older layout (set aside into `corrupt/`); entries
//! written before checksums existed still load.

use std::fs;
use std::ops::Range;
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use prompt_cache::{
    CacheConfig, CacheKey, CacheStore, CachedResponse, Clock, ManualClock, ResponseCache, StoredAt,
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

/// `<key>.json`: where the older layout kept entry `i`.
fn entry_path(dir: &Path, i: u64) -> std::path::PathBuf {
    dir.join(format!("{}.json", key(i)))
}

/// The bytes `stored_at` points to.
fn read_stored(at: &StoredAt) -> Vec<u8> {
    let bytes = fs::read(&at.path).expect("read stored");
    bytes[at.range.start as usize..at.range.end as usize].to_vec()
}

/// Everything a hit returns except the hit count (bookkeeping, not covered by the checksum).
fn content(e: &CachedResponse) -> CachedResponse {
    let mut e = e.clone();
    e.hit_count = 0;
    e
}

/// Entry 0 as the cache stores it, alone in a cache directory.
#[derive(Debug)]
struct Stored {
    /// The files of `segments/` (the index and one segment), by name.
    files: Vec<(String, Vec<u8>)>,
    /// An empty index (copied rather than created for each case, which `fsync`s it).
    empty_index: Vec<u8>,
    /// The segment that holds the entry, and where in it (the segment's last bytes).
    segment: String,
    range: Range<usize>,
    /// The stored entry's bytes.
    bytes: Vec<u8>,
    /// The entry a reload of them serves.
    served: CachedResponse,
}

fn stored() -> Stored {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = clock();
    let at = {
        let cache = open(dir.path(), &clock);
        cache.put(full_entry(0), None).expect("put");
        cache.flush().expect("flush");
        cache
            .stored_at(&key(0))
            .expect("stored_at")
            .expect("on disk")
    };
    let segments = dir.path().join("segments");
    assert_eq!(at.path.parent(), Some(segments.as_path()), "{at:?}");
    let segment = at
        .path
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let bytes = read_stored(&at);
    assert_eq!(fs::metadata(&at.path).expect("segment").len(), at.range.end);
    let files = fs::read_dir(&segments)
        .expect("read segments")
        .flatten()
        .map(|item| {
            let name = item.file_name().to_string_lossy().into_owned();
            (name, fs::read(item.path()).expect("read"))
        })
        .collect();
    let cache = open(dir.path(), &clock);
    let served = cache
        .get(&key(0))
        .expect("get")
        .expect("undamaged entry served");
    assert_eq!(cache.stats().expect("stats").corrupt, 0);
    let empty = tempfile::tempdir().expect("tempdir");
    drop(open(empty.path(), &clock));
    let empty_index = fs::read(empty.path().join("segments").join("index")).expect("index");
    Stored {
        files,
        empty_index,
        segment,
        range: at.range.start as usize..at.range.end as usize,
        bytes,
        served,
    }
}

/// Where a test puts the stored entry's (damaged) bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// In place of the entry in its segment (same length: bytes changed; shorter: the segment,
    /// whose last record it is, cut there).
    Segment,
    /// As a `<key>.json` file of the older layout.
    Legacy,
}

/// What a cache did with entry 0 stored as damaged bytes.
#[derive(Debug)]
struct Served {
    layout: Layout,
    got: Option<CachedResponse>,
    corrupt: u64,
    /// Legacy: the file was moved to `corrupt/`, intact. Segment: after a flush, the key is
    /// gone from the index, its damaged bytes are still in the segment, nothing was moved to
    /// `corrupt/`, and a second lookup is a miss not counted again.
    set_aside: bool,
}

/// What a cache serves for entry 0 stored as `damaged`, in a segment and as a file of the
/// older layout, damaged before the cache opened and while it is open (both read by key on the
/// first `get`).
fn serve(stored: &Stored, damaged: &[u8]) -> Vec<Served> {
    let clock = clock();
    let mut out = Vec::new();
    for layout in [Layout::Segment, Layout::Legacy] {
        for while_open in [false, true] {
            let dir = tempfile::tempdir().expect("tempdir");
            let segments = dir.path().join("segments");
            let segment = segments.join(&stored.segment);
            let path = entry_path(dir.path(), 0);
            fs::create_dir_all(&segments).expect("segments dir");
            match layout {
                Layout::Segment => {
                    for (name, bytes) in &stored.files {
                        fs::write(segments.join(name), bytes).expect("copy");
                    }
                }
                Layout::Legacy => {
                    fs::write(segments.join("index"), &stored.empty_index).expect("copy")
                }
            }
            let damage = || match layout {
                Layout::Segment => {
                    let file = fs::File::options()
                        .write(true)
                        .open(&segment)
                        .expect("open segment");
                    file.write_all_at(damaged, stored.range.start as u64)
                        .expect("damage");
                    file.set_len((stored.range.start + damaged.len()) as u64)
                        .expect("cut");
                }
                Layout::Legacy => fs::write(&path, damaged).expect("write"),
            };
            let cache = if while_open {
                let cache = open(dir.path(), &clock);
                damage();
                cache
            } else {
                damage();
                open(dir.path(), &clock)
            };
            let got = cache.get(&key(0)).expect("get");
            let corrupt = cache.stats().expect("stats").corrupt;
            let set_aside = match layout {
                Layout::Legacy => {
                    let quarantined = dir.path().join("corrupt").join(format!("{}.json", key(0)));
                    fs::read(&quarantined).is_ok_and(|b| b == damaged) && !path.exists()
                }
                Layout::Segment => {
                    cache.flush().expect("flush");
                    let dropped = cache.stored_at(&key(0)).expect("stored_at").is_none();
                    let kept =
                        fs::read(&segment).expect("segment")[stored.range.start..] == *damaged;
                    let again = cache.get(&key(0)).expect("get again").is_none()
                        && cache.stats().expect("stats").corrupt == corrupt;
                    dropped && kept && again && !dir.path().join("corrupt").exists()
                }
            };
            out.push(Served {
                layout,
                got,
                corrupt,
                set_aside,
            });
        }
    }
    out
}

#[test]
fn a_changed_response_that_still_parses_is_a_miss_and_set_aside() {
    let stored = stored();
    assert_eq!(content(&stored.served), {
        let mut e = full_entry(0);
        e.created_at = stored.served.created_at;
        e.expires_at = stored.served.expires_at;
        e.latency_ms = stored.served.latency_ms;
        content(&e)
    });
    // The damage of the issue: letters of the response changed into other letters (as many,
    // so that it can be done in place in a segment too).
    let text = String::from_utf8(stored.bytes.clone()).expect("utf-8");
    let damaged = text.replacen("morning sun", "evening sun", 1);
    assert_ne!(damaged, text);
    assert!(
        serde_json::from_str::<CachedResponse>(&damaged).is_ok(),
        "still parses"
    );
    let outcomes = serve(&stored, damaged.as_bytes());
    assert_eq!(outcomes.len(), 4);
    for s in outcomes {
        assert!(s.got.is_none(), "served a changed answer: {s:?}");
        assert_eq!(s.corrupt, 1, "{s:?}");
        assert!(s.set_aside, "the damaged entry is set aside: {s:?}");
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
        // Rewritten into a segment, with a checksum; the files of the older layout removed.
        for i in [1u64, 2] {
            let at = cache
                .stored_at(&key(i))
                .expect("stored_at")
                .expect("on disk");
            assert!(at.path.starts_with(dir.path().join("segments")), "{at:?}");
            let text = String::from_utf8(read_stored(&at)).expect("utf-8");
            assert!(text.contains("\"checksum\":\"xxh3:"), "{text}");
            assert!(!entry_path(dir.path(), i).exists(), "{i}");
        }
        assert_eq!(cache.stats().expect("stats").disk_entries, 2);
    }
    // Served from the segment after a restart, the hit counts carried over.
    {
        let cache = open(dir.path(), &clock);
        for (i, want) in [1u64, 2].into_iter().zip(&old) {
            let got = cache
                .get(&key(i))
                .expect("get")
                .expect("rewritten entry served");
            assert_eq!(content(&got), content(want));
            assert_eq!(got.hit_count, 6);
        }
        assert_eq!(cache.stats().expect("stats").corrupt, 0);
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
    let at_9 = cache
        .stored_at(&key(9))
        .expect("stored_at")
        .expect("on disk");
    assert!(
        at_9.path.starts_with(clean.path().join("segments")),
        "{at_9:?}"
    );
    let rewritten = String::from_utf8(read_stored(&at_9)).expect("utf-8");
    assert!(rewritten.contains("\"checksum\":\"xxh3:"), "{rewritten}");
    assert!(!entry_path(clean.path(), 9).exists());
    // Entry 1 was never asked for: still the file of the older layout, not in a segment.
    let at_1 = cache
        .stored_at(&key(1))
        .expect("stored_at")
        .expect("on disk");
    assert_eq!(at_1.path, entry_path(clean.path(), 1));

    // From then on they are verified: a changed answer is no longer served.
    drop(cache);
    let damaged = rewritten.replacen("morning", "evening", 1);
    assert_ne!(damaged, rewritten);
    fs::File::options()
        .write(true)
        .open(&at_9.path)
        .and_then(|f| f.write_all_at(damaged.as_bytes(), at_9.range.start))
        .expect("damage");
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

    /// Any one byte of a stored entry changed, or the entry cut anywhere: the entry is served
    /// unchanged (all but its hit count) or not served at all. A changed entry that is not
    /// served is counted as corrupt and set aside (a segment record: dropped from the index, its
    /// bytes left in place; a file of the older layout: moved to `corrupt/` intact). A record
    /// cut short is never served. Damaged before start-up and while the cache is open alike.
    #[test]
    fn a_damaged_stored_entry_is_served_unchanged_or_not_at_all(damage in damage()) {
        static STORED: std::sync::OnceLock<Stored> = std::sync::OnceLock::new();
        let stored = STORED.get_or_init(stored);
        let Some(damaged) = damage.apply(&stored.bytes) else {
            return Ok(());
        };
        let cut = damaged.len() < stored.bytes.len();
        for s in serve(stored, &damaged) {
            match &s.got {
                Some(got) => {
                    prop_assert!(!(cut && s.layout == Layout::Segment), "served a cut record: {:?}", s);
                    prop_assert_eq!(content(got), content(&stored.served));
                    prop_assert_eq!(s.corrupt, 0);
                }
                // A record cut short is what a writer killed mid-append leaves: a miss, which
                // need not be counted.
                None if cut && s.layout == Layout::Segment => prop_assert!(s.corrupt <= 1),
                None => {
                    prop_assert_eq!(s.corrupt, 1, "{:?}", s);
                    prop_assert!(s.set_aside, "the damaged entry is set aside intact: {:?}", s);
                }
            }
        }
    }
}
