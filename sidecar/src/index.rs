//! The embedded vector store: cosine search per namespace (tenant/model/provider scope), TTL,
//! a cap on entries with oldest-first eviction, and a binary journal on disk so a restarted
//! sidecar serves what it stored. The journal holds every tenant's prompts and answers: it
//! is created 0600 in a 0700 directory, and it is bounded: live records are capped in bytes
//! as well as in entries, and the journal is rewritten with only the live records once it
//! grows to twice their size.
//!
//! Search is exhaustive, not approximate: every live entry of the scope is scored. It scores
//! int8 codes in one contiguous block (`quant`), then ranks a shortlist by the exact f32 dot
//! product. That scan takes a few ms at 100k entries in one scope on one core, within the
//! lookup target at the default cap of 200k entries. It needs no graph to build or rebuild,
//! so a restart replays the journal in seconds, and an insert is O(1). Past that scale, or
//! for several sidecars sharing one index, use the external store (`chroma`, a Chroma server)
//! behind the same trait.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};

use crate::quant::CodeMatrix;

pub mod chroma;

/// One stored answer and the text it answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub id: u64,
    pub namespace: String,
    pub text: String,
    /// The cached response, opaque here (JSON of the protocol's response object).
    pub response: Vec<u8>,
    pub vector: Vec<f32>,
    pub created_ms: u64,
    pub expires_ms: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub score: f32,
    pub record: Record,
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("vector has {got} dimensions, the index holds {want}")]
    Dimension { got: usize, want: usize },
    #[error("journal: {0}")]
    Io(#[from] std::io::Error),
    /// An external store (Chroma) failed or answered something unexpected.
    #[error("vector backend: {0}")]
    Backend(String),
}

pub trait VectorStore: Send + Sync {
    /// The `k` nearest live records of a namespace, best first.
    fn search(&self, namespace: &str, vector: &[f32], k: usize, now_ms: u64) -> Result<Vec<Candidate>, IndexError>;
    fn insert(&self, record: Record) -> Result<(), IndexError>;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Make everything inserted so far durable.
    fn flush(&self) -> Result<(), IndexError>;
    /// Calls `f(namespace, text, expires_ms)` for every record held, and says whether it could
    /// (a remote store does not list its records: the first stage is then off).
    fn each_text(&self, _f: &mut dyn FnMut(&str, &str, u64)) -> bool {
        false
    }
}

/// One namespace: records, their int8 codes and expiries, all in the same order.
struct Space {
    records: Vec<Record>,
    codes: CodeMatrix,
    expires: Vec<u64>,
}

impl Space {
    fn new(dim: usize) -> Self {
        Space { records: Vec::new(), codes: CodeMatrix::new(dim), expires: Vec::new() }
    }

    fn push(&mut self, record: Record) {
        self.codes.push(&record.vector);
        self.expires.push(record.expires_ms);
        self.records.push(record);
    }

    fn swap_remove(&mut self, i: usize) {
        self.codes.swap_remove(i);
        self.expires.swap_remove(i);
        self.records.swap_remove(i);
    }

    /// Live entries are scored on their codes; the best `shortlist` are rescored exactly.
    fn search(&self, vector: &[f32], k: usize, now_ms: u64) -> Vec<(f32, &Record)> {
        let mut approx = Vec::with_capacity(self.records.len());
        self.codes.scores(vector, &mut approx);
        let mut live: Vec<(f32, usize)> =
            approx.into_iter().enumerate().filter(|(i, _)| self.expires[*i] > now_ms).map(|(i, s)| (s, i)).collect();
        let shortlist = (k * 8).max(64);
        if live.len() > shortlist {
            live.select_nth_unstable_by(shortlist - 1, |a, b| b.0.total_cmp(&a.0));
            live.truncate(shortlist);
        }
        let mut exact: Vec<(f32, &Record)> =
            live.into_iter().map(|(_, i)| (dot(vector, &self.records[i].vector), &self.records[i])).collect();
        exact.sort_by(|a, b| b.0.total_cmp(&a.0));
        exact.truncate(k);
        exact
    }
}

pub struct FlatIndex {
    dim: usize,
    max_entries: usize,
    /// Bound on the bytes of live records (their journal form).
    max_bytes: usize,
    live_bytes: AtomicUsize,
    spaces: RwLock<HashMap<String, Space>>,
    journal: Option<Mutex<Journal>>,
    path: Option<PathBuf>,
}

/// The append handle and how many bytes the journal file holds.
struct Journal {
    w: BufWriter<File>,
    bytes: usize,
}

/// Below this a journal is never compacted (rewriting a small file buys nothing).
const MIN_COMPACT_BYTES: usize = 1 << 20;

/// The bytes a record takes in the journal (and counts against `max_bytes`).
pub fn record_bytes(r: &Record) -> usize {
    4 + 24 + 12 + r.namespace.len() + r.text.len() + r.response.len() + 4 + r.vector.len() * 4
}

/// A private file: only the sidecar's user reads the tenants' prompts and answers.
fn create_private(path: &Path) -> std::io::Result<File> {
    let f = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(f)
}

impl FlatIndex {
    pub fn in_memory(dim: usize, max_entries: usize) -> Self {
        FlatIndex {
            dim,
            max_entries,
            max_bytes: usize::MAX,
            live_bytes: AtomicUsize::new(0),
            spaces: RwLock::new(HashMap::new()),
            journal: None,
            path: None,
        }
    }

    /// Also bound the live records' bytes (oldest evicted first).
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Open (or create) a journal-backed index: replays live records, rewrites the journal
    /// without the expired or evicted ones, then appends to it.
    pub fn open(path: &Path, dim: usize, max_entries: usize, now_ms: u64) -> Result<Self, IndexError> {
        Self::open_bounded(path, dim, max_entries, usize::MAX, now_ms)
    }

    pub fn open_bounded(
        path: &Path,
        dim: usize,
        max_entries: usize,
        max_bytes: usize,
        now_ms: u64,
    ) -> Result<Self, IndexError> {
        let mut index = FlatIndex::in_memory(dim, max_entries).with_max_bytes(max_bytes);
        if path.exists() {
            let mut reader = BufReader::new(File::open(path)?);
            while let Some(record) = read_record(&mut reader)? {
                if record.expires_ms > now_ms && record.vector.len() == dim {
                    index.insert_in_memory(record);
                }
            }
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        index.path = Some(path.to_path_buf());
        let journal = index.rewrite_journal()?;
        index.journal = Some(Mutex::new(journal));
        Ok(index)
    }

    /// Write the live records to a fresh journal and swap it in place of the old one.
    fn rewrite_journal(&self) -> Result<Journal, IndexError> {
        let path = self.path.as_deref().ok_or_else(|| IndexError::Backend("no journal path".into()))?;
        let tmp = path.with_extension("compact");
        let mut bytes = 0;
        {
            let mut w = BufWriter::new(create_private(&tmp)?);
            let spaces = self.spaces.read().map_err(poisoned)?;
            let mut records: Vec<&Record> = spaces.values().flat_map(|s| s.records.iter()).collect();
            // Oldest first, so a replay under a smaller cap evicts in the same order.
            records.sort_by_key(|r| r.created_ms);
            for r in records {
                write_record(&mut w, r)?;
                bytes += record_bytes(r);
            }
            w.flush()?;
            w.get_ref().sync_data()?;
        }
        std::fs::rename(&tmp, path)?;
        let file = OpenOptions::new().append(true).mode(0o600).open(path)?;
        Ok(Journal { w: BufWriter::new(file), bytes })
    }

    /// Bytes the journal file holds (for tests and metrics); 0 without a journal.
    pub fn journal_bytes(&self) -> usize {
        self.journal.as_ref().and_then(|j| j.lock().ok().map(|j| j.bytes)).unwrap_or(0)
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn insert_in_memory(&self, record: Record) {
        let Ok(mut spaces) = self.spaces.write() else { return };
        let size = record_bytes(&record);
        loop {
            let total: usize = spaces.values().map(|s| s.records.len()).sum();
            let over_bytes = self.live_bytes.load(Ordering::Relaxed).saturating_add(size) > self.max_bytes;
            if total == 0 || (total < self.max_entries && !over_bytes) {
                break;
            }
            // Evict the oldest record of the whole index.
            let oldest = spaces
                .iter()
                .filter_map(|(ns, space)| {
                    space
                        .records
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, r)| r.created_ms)
                        .map(|(i, r)| (ns.clone(), i, r.created_ms))
                })
                .min_by_key(|(_, _, created)| *created);
            let Some((ns, i, _)) = oldest else { break };
            if let Some(space) = spaces.get_mut(&ns) {
                let gone = record_bytes(&space.records[i]);
                self.live_bytes.fetch_sub(gone.min(self.live_bytes.load(Ordering::Relaxed)), Ordering::Relaxed);
                space.swap_remove(i);
            }
        }
        self.live_bytes.fetch_add(size, Ordering::Relaxed);
        spaces.entry(record.namespace.clone()).or_insert_with(|| Space::new(self.dim)).push(record);
    }
}

fn poisoned<T>(_: T) -> IndexError {
    IndexError::Io(std::io::Error::other("index lock poisoned"))
}

/// Dot product with eight independent sums: a single running float sum cannot be reordered,
/// so it does not vectorize; eight lanes do (4x faster at 384 dimensions).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

impl VectorStore for FlatIndex {
    fn search(&self, namespace: &str, vector: &[f32], k: usize, now_ms: u64) -> Result<Vec<Candidate>, IndexError> {
        if vector.len() != self.dim {
            return Err(IndexError::Dimension { got: vector.len(), want: self.dim });
        }
        let spaces = self.spaces.read().map_err(poisoned)?;
        let Some(space) = spaces.get(namespace) else { return Ok(Vec::new()) };
        Ok(space
            .search(vector, k, now_ms)
            .into_iter()
            .map(|(score, r)| Candidate { score, record: r.clone() })
            .collect())
    }

    fn insert(&self, record: Record) -> Result<(), IndexError> {
        if record.vector.len() != self.dim {
            return Err(IndexError::Dimension { got: record.vector.len(), want: self.dim });
        }
        if record_bytes(&record) > self.max_bytes {
            return Err(IndexError::Backend(format!(
                "record of {} bytes exceeds the index's byte bound",
                record_bytes(&record)
            )));
        }
        let Some(journal) = &self.journal else {
            self.insert_in_memory(record);
            return Ok(());
        };
        let mut j = journal.lock().map_err(poisoned)?;
        write_record(&mut j.w, &record)?;
        j.bytes += record_bytes(&record);
        self.insert_in_memory(record);
        // Evicted and expired records stay in the file until it is rewritten: bound it.
        let live = self.live_bytes.load(Ordering::Relaxed);
        if j.bytes > MIN_COMPACT_BYTES.max(live.saturating_mul(2)) {
            j.w.flush()?;
            *j = self.rewrite_journal()?;
        }
        Ok(())
    }

    fn len(&self) -> usize {
        self.spaces.read().map(|s| s.values().map(|s| s.records.len()).sum()).unwrap_or(0)
    }

    fn each_text(&self, f: &mut dyn FnMut(&str, &str, u64)) -> bool {
        let Ok(spaces) = self.spaces.read() else { return false };
        for (ns, space) in spaces.iter() {
            for r in &space.records {
                f(ns, &r.text, r.expires_ms);
            }
        }
        true
    }

    fn flush(&self) -> Result<(), IndexError> {
        if let Some(journal) = &self.journal {
            let mut j = journal.lock().map_err(poisoned)?;
            j.w.flush()?;
            j.w.get_ref().sync_data()?;
        }
        Ok(())
    }
}

// Journal record: magic u32 | id u64 | created u64 | expires u64 | ns, text, response as
// (u32 len, bytes) | dim u32 | dim x f32. Little endian. A torn tail ends the replay.
const RECORD_MAGIC: u32 = 0x5347_5631; // "SGV1"

fn write_record(w: &mut impl Write, r: &Record) -> std::io::Result<()> {
    w.write_all(&RECORD_MAGIC.to_le_bytes())?;
    for n in [r.id, r.created_ms, r.expires_ms] {
        w.write_all(&n.to_le_bytes())?;
    }
    for bytes in [r.namespace.as_bytes(), r.text.as_bytes(), r.response.as_slice()] {
        w.write_all(&(bytes.len() as u32).to_le_bytes())?;
        w.write_all(bytes)?;
    }
    w.write_all(&(r.vector.len() as u32).to_le_bytes())?;
    for x in &r.vector {
        w.write_all(&x.to_le_bytes())?;
    }
    Ok(())
}

fn read_record(r: &mut impl Read) -> std::io::Result<Option<Record>> {
    let mut u32b = [0u8; 4];
    let mut u64b = [0u8; 8];
    match r.read_exact(&mut u32b) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    if u32::from_le_bytes(u32b) != RECORD_MAGIC {
        return Ok(None);
    }
    let mut next_u64 = |r: &mut dyn Read| -> std::io::Result<u64> {
        r.read_exact(&mut u64b)?;
        Ok(u64::from_le_bytes(u64b))
    };
    let body = (|| -> std::io::Result<Record> {
        let (id, created_ms, expires_ms) = (next_u64(r)?, next_u64(r)?, next_u64(r)?);
        let blob = |r: &mut dyn Read| -> std::io::Result<Vec<u8>> {
            let mut len = [0u8; 4];
            r.read_exact(&mut len)?;
            let len = u32::from_le_bytes(len) as usize;
            if len > 64 << 20 {
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "record field too large"));
            }
            let mut v = vec![0u8; len];
            r.read_exact(&mut v)?;
            Ok(v)
        };
        let namespace = String::from_utf8_lossy(&blob(r)?).into_owned();
        let text = String::from_utf8_lossy(&blob(r)?).into_owned();
        let response = blob(r)?;
        let raw = blob_vec(r)?;
        Ok(Record { id, namespace, text, response, vector: raw, created_ms, expires_ms })
    })();
    match body {
        Ok(rec) => Ok(Some(rec)),
        // A torn last record (crash mid-write) ends the replay; earlier records stand.
        Err(e) if matches!(e.kind(), std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData) => Ok(None),
        Err(e) => Err(e),
    }
}

fn blob_vec(r: &mut dyn Read) -> std::io::Result<Vec<f32>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let dim = u32::from_le_bytes(len) as usize;
    if dim > 16_384 {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "vector too long"));
    }
    let mut bytes = vec![0u8; dim * 4];
    r.read_exact(&mut bytes)?;
    Ok(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

#[cfg(test)]
#[path = "tests/index_tests.rs"]
mod tests;
