//! The disk tier's layout: entries appended to segment files, found through a shared index.
//!
//! Layout of `<cache_dir>/segments/`:
//! - `<8 hex id>.seg`: a segment, entries one after the other, each as a record
//!   `[magic "PKR1"][u32 length of what follows the key][32-byte key][stored entry]`, the stored
//!   entry being the `entry` module's form (JSON with its checksum). A process appends only to
//!   its own active segment — the newest one if no process holds it and it has room, else one
//!   created with `O_EXCL` under a fresh id — held with an exclusive `flock` while it is
//!   written to, and starts another past [`segment_target`] bytes; segments are never
//!   rewritten, only removed whole, oldest first, to keep the disk bounds.
//! - `index`: a hash table from key to record, read and written with `pread`/`pwrite`. A
//!   [`HEADER_BYTES`] header (magic, slot count, counters, the next segment id, whether a newer
//!   index replaced it) and then `slots` slots of [`SLOT_BYTES`]:
//!   `[u64 tag][u32 segment][u32 offset][u32 record length][12 bytes 0]`, little-endian. The tag is
//!   the key's first 8 bytes (never 0: an empty slot), which also give the slot a key starts its
//!   search at (linear probing). Segment 0 marks a slot whose entry was removed: it is reused
//!   by the next insert that passes it, and keeps the probe chains whole.
//! - `.index.<pid>.<n>.tmp`: an index being built (a larger one, or an empty one for `clear`),
//!   renamed over `index` when complete.
//!
//! Readers take no lock: they read the header (to see whether the index was replaced), the
//! slots from the key's home slot on, and the record, which carries its key and the entry's
//! checksum, so a slot that points at anything else — a record being overwritten, a removed
//! segment, damage — is a miss, never a wrong answer. Writers (each process's writer thread)
//! append records without any lock and then take an exclusive `flock` on the index for the
//! moment it takes to publish a batch (a few `pwrite`s), enforce the bounds and grow the table.
//! A process killed at any point leaves at worst a record that no slot points to, or a
//! temporary index file.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Write as _};
use std::ops::ControlFlow;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use rustix::fs::FlockOperation;

use crate::CacheKey;
use crate::entry::Decoded;
use crate::{CachedResponse, disk};

/// Magic bytes at the start of the index.
const INDEX_MAGIC: &[u8; 8] = b"PKCIDX01";
/// Magic bytes at the start of every record.
const RECORD_MAGIC: &[u8; 4] = b"PKR1";
/// Bytes before a record's stored entry: magic, length, key.
pub(crate) const RECORD_HEADER: usize = 40;
/// Bytes of the index header (the slots start after it).
const HEADER_BYTES: u64 = 4096;
/// Bytes of one index slot: a power of two, so that no slot straddles a page and a slot is
/// read or written whole by one copy in the page cache (24 bytes of it are used).
const SLOT_BYTES: u64 = 32;
/// Slots of a new index (and the fewest an index is rebuilt with).
const MIN_SLOTS: u64 = 4096;
/// Slots read with one `pread` while following a probe chain.
const PROBE_CHUNK: usize = 8;
/// Largest segment: records start below 4 GiB, so an offset fits in a slot's `u32`.
const MAX_SEGMENT_BYTES: u64 = 64 << 20;
/// Name of the index file.
const INDEX: &str = "index";
/// Name of the directory of segments and index inside the cache directory.
pub(crate) const SEGMENTS_DIR: &str = "segments";

/// Where a record is: segment, offset, length (header included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc {
    pub(crate) segment: u32,
    pub(crate) offset: u32,
    pub(crate) len: u32,
}

/// One index slot as stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Slot {
    tag: u64,
    segment: u32,
    offset: u32,
    len: u32,
}

impl Slot {
    fn decode(b: &[u8]) -> Self {
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default());
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or_default());
        Self {
            tag: u64_at(0),
            segment: u32_at(8),
            offset: u32_at(12),
            len: u32_at(16),
        }
    }

    fn encode(&self) -> [u8; SLOT_BYTES as usize] {
        let mut b = [0u8; SLOT_BYTES as usize];
        b[0..8].copy_from_slice(&self.tag.to_le_bytes());
        b[8..12].copy_from_slice(&self.segment.to_le_bytes());
        b[12..16].copy_from_slice(&self.offset.to_le_bytes());
        b[16..20].copy_from_slice(&self.len.to_le_bytes());
        b
    }

    fn live(&self) -> bool {
        self.segment != 0
    }

    fn loc(&self) -> Loc {
        Loc {
            segment: self.segment,
            offset: self.offset,
            len: self.len,
        }
    }
}

/// A key's tag: its first 8 bytes, never 0.
fn tag_of(key: &CacheKey) -> u64 {
    let b = key.as_bytes();
    u64::from_le_bytes(b[..8].try_into().unwrap_or_default()).max(1)
}

/// The index header's fields, in their order after the magic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Header {
    /// Slots in the table (a power of two; fixed for the life of the file).
    slots: u64,
    /// Non-zero once a newer index replaced this one.
    superseded: u64,
    /// Slots that hold an entry.
    pub(crate) live_entries: u64,
    /// Bytes of the records those slots point at.
    pub(crate) live_bytes: u64,
    /// The id the next segment gets.
    next_segment: u64,
    /// Bytes of segment files (exact after each listing; writers add what they append).
    pub(crate) segment_bytes: u64,
    /// Changes whenever segments are removed, so that readers drop open files of removed ones.
    epoch: u64,
    /// Slots that are not empty (live or removed): what the load factor counts.
    claimed: u64,
}

impl Header {
    fn decode(b: &[u8; 72]) -> Option<Self> {
        if &b[..8] != INDEX_MAGIC {
            return None;
        }
        let f =
            |i: usize| u64::from_le_bytes(b[8 + 8 * i..16 + 8 * i].try_into().unwrap_or_default());
        let h = Self {
            slots: f(0),
            superseded: f(1),
            live_entries: f(2),
            live_bytes: f(3),
            next_segment: f(4),
            segment_bytes: f(5),
            epoch: f(6),
            claimed: f(7),
        };
        (h.slots.is_power_of_two() && h.slots >= MIN_SLOTS && h.slots <= 1 << 40).then_some(h)
    }

    fn encode(&self) -> [u8; 72] {
        let mut b = [0u8; 72];
        b[..8].copy_from_slice(INDEX_MAGIC);
        let fields = [
            self.slots,
            self.superseded,
            self.live_entries,
            self.live_bytes,
            self.next_segment,
            self.segment_bytes,
            self.epoch,
            self.claimed,
        ];
        for (i, v) in fields.iter().enumerate() {
            b[8 + 8 * i..16 + 8 * i].copy_from_slice(&v.to_le_bytes());
        }
        b
    }
}

/// One open index file.
#[derive(Debug)]
struct Index {
    file: File,
    slots: u64,
    /// The file's device and inode, to tell whether it is still the one at `index`.
    id: (u64, u64),
}

impl Index {
    fn new(file: File, slots: u64) -> io::Result<Self> {
        let meta = file.metadata()?;
        Ok(Self {
            file,
            slots,
            id: (meta.dev(), meta.ino()),
        })
    }

    /// Whether this file is the one at `root/index` (a replacement that marked it superseded
    /// and then never renamed the new one into place — a writer killed in between — leaves it
    /// there, and still the index).
    fn is_current(&self, root: &Path) -> bool {
        fs::metadata(root.join(INDEX)).is_ok_and(|m| (m.dev(), m.ino()) == self.id)
    }

    fn header(&self) -> io::Result<Header> {
        let mut b = [0u8; 72];
        self.file.read_exact_at(&mut b, 0)?;
        Header::decode(&b)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad index header"))
    }

    fn write_header(&self, h: &Header) -> io::Result<()> {
        self.file.write_all_at(&h.encode(), 0)
    }

    fn mask(&self) -> u64 {
        self.slots - 1
    }

    fn slot_offset(i: u64) -> u64 {
        HEADER_BYTES + i * SLOT_BYTES
    }

    /// Reads up to [`PROBE_CHUNK`] slots from `i` on (not past the end of the table).
    fn read_slots(&self, i: u64, out: &mut Vec<Slot>) -> io::Result<()> {
        let n = (self.slots - i).min(PROBE_CHUNK as u64) as usize;
        let mut buf = [0u8; PROBE_CHUNK * SLOT_BYTES as usize];
        let buf = &mut buf[..n * SLOT_BYTES as usize];
        self.file.read_exact_at(buf, Self::slot_offset(i))?;
        out.clear();
        out.extend(buf.chunks_exact(SLOT_BYTES as usize).map(Slot::decode));
        Ok(())
    }

    /// Walks the probe chain of `tag`: the slots from its home slot on, read
    /// [`PROBE_CHUNK`] at a time, each handed to `visit` with its position, until `visit`
    /// breaks (its value is returned), an empty slot has been visited (the end of the chain),
    /// or the whole table has been seen.
    fn probe<T>(
        &self,
        tag: u64,
        mut visit: impl FnMut(u64, &Slot) -> ControlFlow<T>,
    ) -> io::Result<Option<T>> {
        let mask = self.mask();
        let mut i = tag & mask;
        let mut seen = 0u64;
        let mut chunk = Vec::with_capacity(PROBE_CHUNK);
        while seen < self.slots {
            self.read_slots(i, &mut chunk)?;
            for (n, slot) in chunk.iter().enumerate() {
                if let ControlFlow::Break(out) = visit((i + n as u64) & mask, slot) {
                    return Ok(Some(out));
                }
                if slot.tag == 0 {
                    return Ok(None);
                }
            }
            seen += chunk.len() as u64;
            i = (i + chunk.len() as u64) & mask;
        }
        Ok(None)
    }

    fn write_slot(&self, i: u64, slot: &Slot) -> io::Result<()> {
        self.file.write_all_at(&slot.encode(), Self::slot_offset(i))
    }

    /// Every slot, in order, read in large chunks.
    fn all_slots(&self) -> io::Result<Vec<Slot>> {
        let mut out = Vec::with_capacity(self.slots as usize);
        let per_read = 4096u64;
        let mut buf = vec![0u8; (per_read * SLOT_BYTES) as usize];
        let mut i = 0;
        while i < self.slots {
            let n = (self.slots - i).min(per_read);
            let b = &mut buf[..(n * SLOT_BYTES) as usize];
            self.file.read_exact_at(b, Self::slot_offset(i))?;
            out.extend(b.chunks_exact(SLOT_BYTES as usize).map(Slot::decode));
            i += n;
        }
        Ok(out)
    }
}

/// What looking a key up in the segments gave.
#[derive(Debug)]
pub(crate) enum Found {
    /// A complete record of this key whose entry verifies.
    Entry(Box<CachedResponse>),
    /// No record of this key.
    Missing,
    /// A record of this key that does not verify: damaged.
    Corrupt,
}

/// What reading one record at a slot's location gave.
enum RecordRead {
    Entry(Box<CachedResponse>),
    /// The record is another key's, or not there (removed segment, short file).
    Other,
    Corrupt,
}

/// The segment store of one cache directory: readers' side (lock-free) and the writers'
/// publishing (under the index lock).
#[derive(Debug)]
pub(crate) struct Segments {
    root: PathBuf,
    index: Mutex<Arc<Index>>,
    /// Segment files open for reading, by id, and the index epoch they were opened under.
    files: Mutex<(u64, HashMap<u32, Arc<File>>)>,
    /// Whether an entry was found in a `<key>.json` file of the older layout (then writes and
    /// removals of a key also remove its file).
    pub(crate) legacy_seen: AtomicBool,
}

fn seg_name(id: u32) -> String {
    format!("{id:08x}.seg")
}

fn seg_id_of(name: &str) -> Option<u32> {
    let hex = name.strip_suffix(".seg")?;
    (hex.len() == 8).then(|| u32::from_str_radix(hex, 16).ok())?
}

fn next_seq() -> u64 {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    SEQ.fetch_add(1, Ordering::Relaxed)
}

/// Segments of `root` with their sizes, by id; stale temporary index files removed on the way.
fn list_segments(root: &Path) -> io::Result<Vec<(u32, u64)>> {
    let mut out = Vec::new();
    for item in fs::read_dir(root)?.flatten() {
        let name = item.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(id) = seg_id_of(name) {
            if let Ok(meta) = item.metadata() {
                out.push((id, meta.len()));
            }
        } else if name.starts_with(".index.") && name.ends_with(".tmp") && disk::is_stale(&item) {
            let _ = fs::remove_file(item.path());
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Writes a new index file holding `live` slots (re-placed by their tags) and the counters of
/// `base`, under a temporary name; returns its path.
fn build_index(root: &Path, slots: u64, base: &Header, live: &[Slot]) -> io::Result<PathBuf> {
    let mask = slots - 1;
    let mut table = vec![Slot::default(); slots as usize];
    for s in live {
        let mut i = s.tag & mask;
        while table[i as usize].tag != 0 {
            i = (i + 1) & mask;
        }
        table[i as usize] = *s;
    }
    let header = Header {
        slots,
        superseded: 0,
        live_entries: live.len() as u64,
        live_bytes: live.iter().map(|s| u64::from(s.len)).sum(),
        claimed: live.len() as u64,
        ..*base
    };
    let tmp = root.join(format!(".index.{}.{}.tmp", std::process::id(), next_seq()));
    let result = (|| {
        let mut bytes = Vec::with_capacity((HEADER_BYTES + slots * SLOT_BYTES) as usize);
        bytes.extend_from_slice(&header.encode());
        bytes.resize(HEADER_BYTES as usize, 0);
        for s in &table {
            bytes.extend_from_slice(&s.encode());
        }
        let mut file = File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()
    })();
    match result {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Opens `root/index`, creating it (or replacing a damaged one, which is moved to
/// `<cache_dir>/corrupt/`) when needed.
fn open_index(root: &Path) -> io::Result<Index> {
    let path = root.join(INDEX);
    for _ in 0..100 {
        match File::options().read(true).write(true).open(&path) {
            Ok(file) => match whole_header(&file) {
                Some(h) => return Index::new(file, h.slots),
                None => set_aside_index(root, &path, &file)?,
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Ids go on from the newest segment already there (an index lost or set aside),
                // one id left out so that no writer goes on writing that segment (it continues
                // only the id before `next_segment`): a lost index's segments stay as they
                // were. They count against the byte bound until they are removed.
                let existing = list_segments(root)?;
                let next = existing.last().map_or(1, |&(id, _)| u64::from(id) + 2);
                let base = Header {
                    next_segment: next,
                    segment_bytes: existing.iter().map(|s| s.1).sum(),
                    ..Header::default()
                };
                let tmp = build_index(root, MIN_SLOTS, &base, &[])?;
                // A link, not a rename: another process may have created one meanwhile.
                let linked = fs::hard_link(&tmp, &path);
                let _ = fs::remove_file(&tmp);
                match linked {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("the cache index keeps changing"))
}

/// The header of the index `file`, if it is valid and the file holds every slot it counts.
fn whole_header(file: &File) -> Option<Header> {
    let mut b = [0u8; 72];
    file.read_exact_at(&mut b, 0).ok()?;
    let h = Header::decode(&b)?;
    file.metadata()
        .is_ok_and(|m| m.len() >= HEADER_BYTES + h.slots * SLOT_BYTES)
        .then_some(h)
}

/// Moves a damaged index aside, if `file` is still the one at `path` (another process may have
/// replaced it meanwhile).
fn set_aside_index(root: &Path, path: &Path, file: &File) -> io::Result<()> {
    rustix::fs::flock(file, FlockOperation::LockExclusive)?;
    let same = match (fs::metadata(path), file.metadata()) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    };
    // Checked again under the lock: another process may have set it aside first.
    if same && whole_header(file).is_none() {
        let cache_dir = root.parent().unwrap_or(root);
        disk::quarantine(cache_dir, path)?;
    }
    let _ = rustix::fs::flock(file, FlockOperation::Unlock);
    Ok(())
}

/// The index, locked for writing, with its header as read under the lock.
pub(crate) struct Locked {
    index: Arc<Index>,
    pub(crate) header: Header,
}

impl Locked {
    /// Reserves the id of a new segment.
    fn reserve_segment(&mut self) -> io::Result<u32> {
        let id = u32::try_from(self.header.next_segment.max(1))
            .map_err(|_| io::Error::other("segment ids exhausted; clear the cache"))?;
        self.header.next_segment = u64::from(id) + 1;
        self.index.write_header(&self.header)?;
        Ok(id)
    }

    /// Writes the header's counters (after a batch).
    pub(crate) fn store_header(&self) -> io::Result<()> {
        self.index.write_header(&self.header)
    }
}

impl Drop for Locked {
    fn drop(&mut self) {
        let _ = rustix::fs::flock(&self.index.file, FlockOperation::Unlock);
    }
}

/// The disk bounds, as the writer enforces them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    /// Most bytes of segment files.
    pub(crate) max_bytes: u64,
    /// Most entries (`u64::MAX`: no bound).
    pub(crate) max_entries: u64,
}

/// How large a segment grows before its writer starts the next: a sixteenth of the byte bound,
/// so that removing the oldest segment frees a small part of it, and at most 64 MiB.
pub(crate) fn segment_target(max_bytes: u64) -> u64 {
    (max_bytes / 16).clamp(1, MAX_SEGMENT_BYTES)
}

impl Segments {
    /// Opens (creating if needed) the segment store in `cache_dir`: one `open` and one header
    /// read, whatever the number of entries.
    pub(crate) fn open(cache_dir: &Path) -> io::Result<Self> {
        let root = cache_dir.join(SEGMENTS_DIR);
        fs::create_dir_all(&root)?;
        let index = open_index(&root)?;
        Ok(Self {
            root,
            index: Mutex::new(Arc::new(index)),
            files: Mutex::new((0, HashMap::new())),
            legacy_seen: AtomicBool::new(false),
        })
    }

    /// The directory of segments and index.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// The current index and its header, reopened when another process replaced it, or when
    /// it was damaged since it was opened (reopening sets it aside and starts a new one, as at
    /// start-up).
    fn current(&self) -> io::Result<(Arc<Index>, Header)> {
        for _ in 0..100 {
            let index = Arc::clone(&self.index.lock());
            match index.header() {
                Ok(header) if header.superseded == 0 => return Ok((index, header)),
                // Marked, but its replacement is not in place (yet, or ever): still complete,
                // and still what every reader reads.
                Ok(header) if index.is_current(&self.root) => return Ok((index, header)),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
                    ) => {}
                Err(e) => return Err(e),
            }
            let fresh = Arc::new(open_index(&self.root)?);
            *self.index.lock() = fresh;
        }
        Err(io::Error::other("the cache index keeps changing"))
    }

    /// The open segment `id` for reading (`None`: no such segment any more).
    fn segment(&self, id: u32, epoch: u64) -> io::Result<Option<Arc<File>>> {
        let mut files = self.files.lock();
        if files.0 != epoch {
            // Segments were removed: drop every open one, so their space is freed.
            files.1.clear();
            files.0 = epoch;
        }
        if let Some(f) = files.1.get(&id) {
            return Ok(Some(Arc::clone(f)));
        }
        match File::open(self.root.join(seg_name(id))) {
            Ok(f) => {
                let f = Arc::new(f);
                files.1.insert(id, Arc::clone(&f));
                Ok(Some(f))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads the record at `loc` and checks it is `key`'s.
    fn read_record(&self, key: &CacheKey, loc: Loc, epoch: u64, buf: &mut Vec<u8>) -> RecordRead {
        let Ok(Some(file)) = self.segment(loc.segment, epoch) else {
            return RecordRead::Other;
        };
        // A slot is not trusted with a large allocation: past 16 MiB the file must hold it.
        if loc.len > 16 << 20
            && file.metadata().map_or(true, |m| {
                m.len() < u64::from(loc.offset) + u64::from(loc.len)
            })
        {
            return RecordRead::Other;
        }
        buf.resize(loc.len as usize, 0);
        let Ok(n) = read_full_at(&file, buf, u64::from(loc.offset)) else {
            return RecordRead::Other;
        };
        if n < RECORD_HEADER
            || buf.len() < RECORD_HEADER
            || &buf[..4] != RECORD_MAGIC
            || &buf[8..RECORD_HEADER] != key.as_bytes()
        {
            return RecordRead::Other;
        }
        if n < buf.len() {
            // This key's record, cut short (a damaged or truncated segment).
            return RecordRead::Corrupt;
        }
        let declared = u32::from_le_bytes(buf[4..8].try_into().unwrap_or_default()) as usize;
        if declared != buf.len() - RECORD_HEADER {
            return RecordRead::Corrupt;
        }
        let hex = disk::EntryName::new(key);
        match crate::entry::decode(&buf[RECORD_HEADER..], key, hex.key_hex()) {
            Decoded::Verified(entry) | Decoded::Unchecked(entry) => {
                RecordRead::Entry(Box::new(entry))
            }
            Decoded::Corrupt => RecordRead::Corrupt,
        }
    }

    /// Looks `key` up: its home slot on, until an empty slot. A record found damaged is looked
    /// up once more before it is called corrupt: a slot read while a writer rewrote it can
    /// point at a record half old, half new.
    pub(crate) fn get(&self, key: &CacheKey) -> io::Result<Found> {
        match self.get_once(key)? {
            Found::Corrupt => self.get_once(key),
            found => Ok(found),
        }
    }

    fn get_once(&self, key: &CacheKey) -> io::Result<Found> {
        let (index, header) = self.current()?;
        let tag = tag_of(key);
        let mut buf = Vec::new();
        let mut corrupt = false;
        let found = index.probe(tag, |_, slot| {
            if slot.tag == tag && slot.live() {
                match self.read_record(key, slot.loc(), header.epoch, &mut buf) {
                    RecordRead::Entry(entry) => return ControlFlow::Break(entry),
                    RecordRead::Corrupt => corrupt = true,
                    RecordRead::Other => {}
                }
            }
            ControlFlow::Continue(())
        })?;
        Ok(match found {
            Some(entry) => Found::Entry(entry),
            None if corrupt => Found::Corrupt,
            None => Found::Missing,
        })
    }

    /// Where `key`'s entry is: its segment file, the record's offset and length (the stored
    /// entry starts [`RECORD_HEADER`] bytes in). `None` when the index has no record of it.
    pub(crate) fn locate(&self, key: &CacheKey) -> io::Result<Option<(PathBuf, Loc)>> {
        let (index, header) = self.current()?;
        let tag = tag_of(key);
        index.probe(tag, |_, slot| {
            if slot.tag == tag
                && slot.live()
                && self.record_key_is(slot, key, header.epoch) == Some(true)
            {
                ControlFlow::Break((self.root.join(seg_name(slot.segment)), slot.loc()))
            } else {
                ControlFlow::Continue(())
            }
        })
    }

    /// Locks the current index for writing (waiting for another writer's batch to be
    /// published), reopening it when another process replaced it.
    pub(crate) fn lock(&self) -> io::Result<Locked> {
        for _ in 0..100 {
            let (index, _) = self.current()?;
            rustix::fs::flock(&index.file, FlockOperation::LockExclusive)?;
            let mut locked = Locked {
                header: index.header()?,
                index,
            };
            if locked.header.superseded == 0 {
                return Ok(locked);
            }
            if locked.index.is_current(&self.root) {
                // A replacer holds the lock from marking the old index to renaming the new one
                // into place: holding it now, with the old one still there, means it was killed
                // in between. The old index stays the index.
                locked.header.superseded = 0;
                locked.store_header()?;
                return Ok(locked);
            }
            drop(locked);
        }
        Err(io::Error::other("the cache index keeps changing"))
    }

    /// Whether the record at `slot` is `key`'s: `Some(true)` it is, `Some(false)` it is another
    /// key's, `None` it cannot be read (its segment is gone: no entry either way).
    fn record_key_is(&self, slot: &Slot, key: &CacheKey, epoch: u64) -> Option<bool> {
        self.record_key(slot, epoch).map(|k| k == *key)
    }

    /// Points `key` at `loc` (`None`: removes it), under the lock. Returns the record it
    /// replaced, if any.
    pub(crate) fn set(
        &self,
        locked: &mut Locked,
        key: &CacheKey,
        loc: Option<Loc>,
    ) -> io::Result<Option<Loc>> {
        let index = Arc::clone(&locked.index);
        let tag = tag_of(key);
        let epoch = locked.header.epoch;
        // The first removed slot on the way (reused by an insert), and the key's live slot.
        let mut free: Option<u64> = None;
        let mut empty: Option<u64> = None;
        let found = index.probe(tag, |at, slot| {
            if slot.tag == 0 {
                empty = Some(at);
            } else if !slot.live() {
                free.get_or_insert(at);
            } else if slot.tag == tag {
                match self.record_key_is(slot, key, epoch) {
                    Some(true) => return ControlFlow::Break((at, *slot)),
                    Some(false) => {}
                    // A record that cannot be read holds no entry: the slot is free.
                    None => {
                        free.get_or_insert(at);
                    }
                }
            }
            ControlFlow::Continue(())
        })?;
        let h = &mut locked.header;
        let old = found.map(|(_, s)| s.loc());
        if let Some((_, s)) = found {
            h.live_entries = h.live_entries.saturating_sub(1);
            h.live_bytes = h.live_bytes.saturating_sub(u64::from(s.len));
        }
        match loc {
            Some(loc) => {
                let reuse = found.map(|(at, _)| at).or(free);
                let at = match (reuse, empty) {
                    (Some(at), _) => at,
                    (None, Some(at)) => {
                        h.claimed += 1;
                        at
                    }
                    (None, None) => return Err(io::Error::other("the cache index is full")),
                };
                let slot = Slot {
                    tag,
                    segment: loc.segment,
                    offset: loc.offset,
                    len: loc.len,
                };
                index.write_slot(at, &slot)?;
                h.live_entries += 1;
                h.live_bytes += u64::from(loc.len);
            }
            None => {
                if let Some((at, s)) = found {
                    index.write_slot(at, &Slot { segment: 0, ..s })?;
                }
            }
        }
        Ok(old)
    }

    /// Makes sure `more` new keys fit under the index's load factor (three quarters), building
    /// a larger index (or a compacted one) and switching every process to it if not.
    pub(crate) fn reserve_slots(&self, locked: &mut Locked, more: u64) -> io::Result<()> {
        let slots = locked.index.slots;
        if (locked.header.claimed + more) * 4 <= slots * 3 {
            return Ok(());
        }
        let live: Vec<Slot> = locked
            .index
            .all_slots()?
            .into_iter()
            .filter(Slot::live)
            .collect();
        let want = ((live.len() as u64 + more) * 2)
            .max(MIN_SLOTS)
            .next_power_of_two();
        self.replace_index(locked, want, &live)
    }

    /// Builds an index of `slots` slots holding `live`, renames it over the current one and
    /// marks the old one superseded; `locked` then holds the new one, locked.
    fn replace_index(&self, locked: &mut Locked, slots: u64, live: &[Slot]) -> io::Result<()> {
        let tmp = build_index(&self.root, slots, &locked.header, live)?;
        let file = match File::options().read(true).write(true).open(&tmp) {
            Ok(f) => f,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        // Locked before it is visible, so no other writer slips in between.
        rustix::fs::flock(&file, FlockOperation::LockExclusive)?;
        let index = Index::new(file, slots)?;
        // Marked before the rename: a process that sees the new file has seen the old one
        // marked (and writes nothing more to it); if this process dies between the two, the
        // next writer to take the lock finds the old one still in place and unmarks it.
        let mut superseded = locked.header;
        superseded.superseded = 1;
        locked.index.write_header(&superseded)?;
        if let Err(e) = fs::rename(&tmp, self.root.join(INDEX)) {
            let _ = fs::remove_file(&tmp);
            let _ = locked.index.write_header(&locked.header);
            return Err(e);
        }
        let old = std::mem::replace(
            locked,
            Locked {
                header: Header::default(),
                index: Arc::new(index),
            },
        );
        locked.header = locked.index.header()?;
        drop(old);
        *self.index.lock() = Arc::clone(&locked.index);
        Ok(())
    }

    /// Enforces the bounds (under the lock, after a batch was published): removes the oldest
    /// segments that no process is writing to while the segment bytes are over `max_bytes`,
    /// and forgets the oldest entries while there are more than `max_entries`, down to 90 % of
    /// each. `own` is this process's appender: the segment it writes is never removed, the
    /// ones it left during the batch just published may be (another process's eviction skips
    /// them until then). Returns the entries it evicted.
    pub(crate) fn make_room(
        &self,
        locked: &mut Locked,
        bounds: Bounds,
        own: &Appender,
    ) -> io::Result<u64> {
        let active = own.active_id();
        if locked.header.segment_bytes <= bounds.max_bytes
            && locked.header.live_entries <= bounds.max_entries
        {
            return Ok(0);
        }
        let low_bytes = bounds.max_bytes - bounds.max_bytes / 10;
        let low_entries = bounds.max_entries - bounds.max_entries / 10;
        // Exact figures from the directory and the table (they also correct any drift left by
        // a killed writer).
        let segments = list_segments(&self.root)?;
        let mut total: u64 = segments.iter().map(|s| s.1).sum();
        let mut doomed: HashSet<u32> = HashSet::new();
        if total > bounds.max_bytes {
            for &(id, size) in &segments {
                if total <= low_bytes {
                    break;
                }
                let retired = own.retired.iter().any(|a| a.id == id);
                if Some(id) == active || (!retired && self.in_use(id)) {
                    continue;
                }
                doomed.insert(id);
                total -= size;
            }
        }
        let slots = locked.index.all_slots()?;
        let mut live: Vec<(u64, Slot)> = slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.live() && !doomed.contains(&s.segment))
            .map(|(i, s)| (i as u64, *s))
            .collect();
        let mut forget: Vec<(u64, Slot)> = slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.live() && doomed.contains(&s.segment))
            .map(|(i, s)| (i as u64, *s))
            .collect();
        if live.len() as u64 > bounds.max_entries {
            live.sort_unstable_by_key(|(_, s)| (s.segment, s.offset));
            let excess = live.len() - low_entries.max(1) as usize;
            forget.extend(live.drain(..excess));
        }
        for (at, s) in &forget {
            locked.index.write_slot(*at, &Slot { segment: 0, ..*s })?;
        }
        for id in &doomed {
            let _ = fs::remove_file(self.root.join(seg_name(*id)));
        }
        let h = &mut locked.header;
        h.live_entries = live.len() as u64;
        h.live_bytes = live.iter().map(|(_, s)| u64::from(s.len)).sum();
        h.segment_bytes = total;
        if !doomed.is_empty() {
            h.epoch = h.epoch.wrapping_add(1);
        }
        Ok(forget.len() as u64)
    }

    /// Whether a process is writing segment `id` (it holds a lock on it).
    fn in_use(&self, id: u32) -> bool {
        let Ok(file) = File::open(self.root.join(seg_name(id))) else {
            return false;
        };
        match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {
                let _ = rustix::fs::flock(&file, FlockOperation::Unlock);
                false
            }
            Err(_) => true,
        }
    }

    /// Removes every entry (under the lock): an empty index replaces the current one, and
    /// every segment no process is writing to is removed (the caller has left its own). Returns
    /// the keys that had an entry.
    pub(crate) fn wipe(&self, locked: &mut Locked) -> io::Result<Vec<CacheKey>> {
        let keys = self.live_keys(locked)?;
        let mut left = 0;
        for (id, size) in list_segments(&self.root)? {
            if self.in_use(id) {
                left += size;
            } else {
                let _ = fs::remove_file(self.root.join(seg_name(id)));
            }
        }
        // The new index takes its counters from this header: a new epoch (readers drop the
        // removed segments' files) and the bytes of the segments left.
        locked.header.epoch = locked.header.epoch.wrapping_add(1);
        locked.header.segment_bytes = left;
        self.replace_index(locked, MIN_SLOTS, &[])?;
        Ok(keys)
    }

    /// The keys of every live slot (their records' keys; unreadable records are skipped).
    fn live_keys(&self, locked: &Locked) -> io::Result<Vec<CacheKey>> {
        let mut keys = Vec::new();
        for slot in locked.index.all_slots()?.iter().filter(|s| s.live()) {
            if let Some(key) = self.record_key(slot, locked.header.epoch) {
                keys.push(key);
            }
        }
        Ok(keys)
    }

    fn record_key(&self, slot: &Slot, epoch: u64) -> Option<CacheKey> {
        let file = self.segment(slot.segment, epoch).ok()??;
        let mut head = [0u8; RECORD_HEADER];
        match read_full_at(&file, &mut head, u64::from(slot.offset)) {
            Ok(RECORD_HEADER) if &head[..4] == RECORD_MAGIC => {
                let bytes: [u8; 32] = head[8..RECORD_HEADER].try_into().ok()?;
                Some(CacheKey::from_bytes(bytes))
            }
            _ => None,
        }
    }

    /// Hands every entry the index points at, with its key, to `visit`, one at a time (for
    /// `prune_expired`: the disk tier may be far larger than memory); entries that do not
    /// verify are skipped.
    pub(crate) fn for_each_entry(
        &self,
        mut visit: impl FnMut(CacheKey, Box<CachedResponse>),
    ) -> io::Result<()> {
        let (index, header) = self.current()?;
        let mut buf = Vec::new();
        for slot in index.all_slots()?.iter().filter(|s| s.live()) {
            let Some(key) = self.record_key(slot, header.epoch) else {
                continue;
            };
            if let RecordRead::Entry(entry) =
                self.read_record(&key, slot.loc(), header.epoch, &mut buf)
            {
                visit(key, entry);
            }
        }
        Ok(())
    }

    /// Entries and bytes on disk now: live slots, and the size of every segment file.
    pub(crate) fn usage(&self) -> io::Result<(u64, u64)> {
        let (index, _) = self.current()?;
        let entries = index.all_slots()?.iter().filter(|s| s.live()).count() as u64;
        let bytes = list_segments(&self.root)?.iter().map(|s| s.1).sum();
        Ok((entries, bytes))
    }
}

/// Reads into `buf` at `offset` until it is full or the file ends; the bytes read.
fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// This process's segment being written: the writer thread's alone.
#[derive(Debug)]
pub(crate) struct Active {
    pub(crate) id: u32,
    file: File,
    len: u64,
}

/// The writer thread's side: appends records to its own segment.
#[derive(Debug, Default)]
pub(crate) struct Appender {
    pub(crate) active: Option<Active>,
    /// Segments left for a new one during the batch being written: kept open and locked until
    /// the batch is published, so that no eviction removes them before their records are
    /// pointed at.
    retired: Vec<Active>,
    record: Vec<u8>,
    /// Whether records are made durable before they are published (`CacheConfig::fsync`).
    fsync: bool,
}

impl Appender {
    /// An appender with no segment yet; `fsync` as in `CacheConfig::fsync`.
    pub(crate) fn new(fsync: bool) -> Self {
        Self {
            fsync,
            ..Self::default()
        }
    }

    /// The id of the segment being written, if any.
    pub(crate) fn active_id(&self) -> Option<u32> {
        self.active.as_ref().map(|a| a.id)
    }

    /// Appends `key`'s stored entry `payload` as a record; where it went. Starts a new segment
    /// (reserving its id under a short lock) when there is none or this one is full.
    pub(crate) fn append(
        &mut self,
        segments: &Segments,
        key: &CacheKey,
        payload: &[u8],
        target: u64,
    ) -> io::Result<Loc> {
        let len = RECORD_HEADER + payload.len();
        let len32 =
            u32::try_from(len).map_err(|_| io::Error::other("entry too large for a segment"))?;
        let full = self.active.as_ref().is_none_or(|a| {
            a.len > 0 && (a.len + len as u64 > target || a.len + len as u64 > u64::from(u32::MAX))
        });
        if full {
            self.start(segments, target)?;
        }
        let Some(active) = self.active.as_mut() else {
            return Err(io::Error::other("no segment to write to"));
        };
        self.record.clear();
        self.record.extend_from_slice(RECORD_MAGIC);
        self.record
            .extend_from_slice(&(payload.len() as u32).to_le_bytes());
        self.record.extend_from_slice(key.as_bytes());
        self.record.extend_from_slice(payload);
        let offset =
            u32::try_from(active.len).map_err(|_| io::Error::other("segment too large"))?;
        if let Err(e) = active.file.write_all_at(&self.record, active.len) {
            // What may have been written is never pointed at; the next record goes after it.
            active.len = active.file.metadata().map_or(active.len, |m| m.len());
            return Err(e);
        }
        active.len += len as u64;
        Ok(Loc {
            segment: active.id,
            offset,
            len: len32,
        })
    }

    /// Makes the active segment's records durable, when `fsync` is on.
    pub(crate) fn sync(&self) -> io::Result<()> {
        match &self.active {
            Some(a) if self.fsync => a.file.sync_data(),
            _ => Ok(()),
        }
    }

    /// The newest segment, to go on writing, when no process holds it and it has room: so that
    /// short-lived processes (a CLI command each) share a segment instead of leaving one
    /// each. Records go after whatever the file holds (a killed writer's unpublished tail is
    /// never pointed at).
    fn continue_newest(segments: &Segments, locked: &Locked, target: u64) -> Option<Active> {
        let id = u32::try_from(locked.header.next_segment.checked_sub(1)?).ok()?;
        if id == 0 {
            return None;
        }
        let file = File::options()
            .write(true)
            .open(segments.root().join(seg_name(id)))
            .ok()?;
        // Fails while another process writes it, or this one left it in the batch being
        // written; dropping `file` releases the lock when it is not taken.
        rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive).ok()?;
        let len = file.metadata().ok()?.len();
        (len < target).then_some(Active { id, file, len })
    }

    /// Releases the segments left during the batch just published (or given up).
    pub(crate) fn published(&mut self) {
        self.retired.clear();
    }

    /// Leaves the active segment (the next record starts a new one).
    pub(crate) fn finish(&mut self) {
        self.active = None;
        self.retired.clear();
    }

    fn start(&mut self, segments: &Segments, target: u64) -> io::Result<()> {
        // The full segment's records may not be published yet: make them as durable as the
        // new one's will be before it is left.
        if let Some(old) = self.active.take() {
            if self.fsync {
                old.file.sync_data()?;
            }
            self.retired.push(old);
        }
        // Taken and locked under the index lock, which every eviction holds: no other process
        // can see the segment unmarked as being written.
        let mut locked = segments.lock()?;
        if let Some(active) = Self::continue_newest(segments, &locked, target) {
            self.active = Some(active);
            return Ok(());
        }
        for _ in 0..100 {
            let id = locked.reserve_segment()?;
            let path = segments.root().join(seg_name(id));
            let file = match File::options().write(true).create_new(true).open(&path) {
                Ok(f) => f,
                // An id taken before an index was lost: take the next.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            };
            // Held while this process writes it (and until its records are published):
            // eviction skips segments it cannot lock.
            rustix::fs::flock(&file, FlockOperation::LockExclusive)?;
            self.active = Some(Active { id, file, len: 0 });
            return Ok(());
        }
        Err(io::Error::other("could not create a segment"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: usize) -> CacheKey {
        CacheKey::builder("segment-unit")
            .model("m")
            .message("user", &format!("prompt {i}"))
            .finish()
    }

    fn exists(dir: &Path, id: u32) -> bool {
        dir.join(SEGMENTS_DIR).join(seg_name(id)).exists()
    }

    /// Evicts with a byte bound of 1 under `segments`' lock, as the writer of `own` would,
    /// with the header's byte count set to what is on disk.
    fn evict(segments: &Segments, own: &Appender) -> u64 {
        let mut locked = segments.lock().expect("lock");
        let on_disk: u64 = list_segments(segments.root())
            .expect("list")
            .iter()
            .map(|s| s.1)
            .sum();
        locked.header.segment_bytes = on_disk;
        let bounds = Bounds {
            max_bytes: 1,
            max_entries: u64::MAX,
        };
        let evicted = segments
            .make_room(&mut locked, bounds, own)
            .expect("make room");
        locked.store_header().expect("store");
        evicted
    }

    #[test]
    fn segments_left_during_a_batch_are_kept_from_other_evictions_until_it_is_published() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ours = Segments::open(dir.path()).expect("open ours");
        // Another process's view of the same directory (its own open files and locks).
        let theirs = Segments::open(dir.path()).expect("open theirs");
        let mut appender = Appender::new(false);
        let payload = vec![b'x'; 100];
        // A target of one byte: each record starts a segment of its own.
        let locs: Vec<Loc> = (0..3)
            .map(|i| {
                appender
                    .append(&ours, &key(i), &payload, 1)
                    .expect("append")
            })
            .collect();
        let ids: Vec<u32> = locs.iter().map(|l| l.segment).collect();
        assert!(ids[0] < ids[1] && ids[1] < ids[2], "{ids:?}");

        // Before the batch is published, another process's eviction removes none of them.
        assert_eq!(evict(&theirs, &Appender::new(false)), 0);
        assert!(ids.iter().all(|&id| exists(dir.path(), id)), "{ids:?}");

        // Published: this process's own eviction may remove the segments it left (its oldest),
        // never the one it writes.
        {
            let mut locked = ours.lock().expect("lock");
            for (i, loc) in locs.iter().enumerate() {
                ours.set(&mut locked, &key(i), Some(*loc)).expect("set");
            }
            locked.store_header().expect("store");
        }
        assert_eq!(
            evict(&ours, &appender),
            2,
            "the records in the two left segments"
        );
        appender.published();
        assert!(!exists(dir.path(), ids[0]) && !exists(dir.path(), ids[1]));
        assert!(exists(dir.path(), ids[2]));

        // The active one stays, whoever evicts, and the index still points at its record.
        assert_eq!(evict(&theirs, &Appender::new(false)), 0);
        assert!(exists(dir.path(), ids[2]));
        assert!(theirs.locate(&key(2)).expect("locate").is_some());
        assert!(theirs.locate(&key(0)).expect("locate").is_none());
    }
}
