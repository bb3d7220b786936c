//! The global spend ledger: replicas of the filter `POST /v1/ledger/sync` their spend deltas
//! and get back the totals of the current periods, so every replica enforces budgets on what
//! all of them spent; `GET /v1/ledger` shows spend, requests and cache savings per key, team
//! and end customer. The protocol types and the day -> week/month rollup are the filter's own
//! (`semgate::core::budget::ledger`).
//!
//! A sync is counted once per (replica, sync_id): a replay is answered with the current totals
//! and `replayed: true`. The last `SEEN_PER_REPLICA` sync ids of each replica are remembered;
//! replicas resend only their one unanswered sync, so that window is ample.
//!
//! The embedded store keeps everything in memory and appends each applied sync to a journal,
//! fsync'd before the answer, so an answered sync survives a crash. The file is 0600 in a 0700
//! directory (spend per customer is business data). At start the journal is replayed and
//! rewritten as one snapshot (compaction), and again every `compact_every` syncs.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use semgate::core::budget::ledger::{current_periods, rollup_periods, SyncRequest, SyncResponse, TotalRow, Totals};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

pub mod redis;

/// Sync ids remembered per replica for idempotency.
pub const SEEN_PER_REPLICA: usize = 4096;
/// Deltas accepted in one sync (a replica's book holds at most 4097 rows).
pub const MAX_DELTAS: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("{0}")]
    Invalid(String),
    #[error("ledger I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("ledger backend: {0}")]
    Backend(String),
}

pub trait LedgerStore: Send + Sync {
    /// Apply a sync once; answer the totals of the periods current at `now_ms`.
    fn sync(&self, req: &SyncRequest, now_ms: u64) -> Result<SyncResponse, LedgerError>;
    /// Every total the ledger holds, all periods.
    fn totals(&self) -> Result<Totals, LedgerError>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Key,
    Team,
    Customer,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Total {
    pub spent_micros: u64,
    pub requests: u64,
    pub saved_micros: u64,
    /// Spend per replica, so each replica can tell its own share from the others'.
    pub by_replica: BTreeMap<String, u64>,
}

/// Check a sync before any of it is applied: all of it counts, or none.
pub fn validate(req: &SyncRequest) -> Result<(), LedgerError> {
    let bad = |m: String| Err(LedgerError::Invalid(m));
    if req.replica.is_empty() || req.replica.len() > 256 {
        return bad("`replica` must be 1-256 bytes".into());
    }
    if req.sync_id.is_empty() || req.sync_id.len() > 128 {
        return bad("`sync_id` must be 1-128 bytes".into());
    }
    if req.deltas.len() > MAX_DELTAS {
        return bad(format!("at most {MAX_DELTAS} deltas per sync"));
    }
    for (i, d) in req.deltas.iter().enumerate() {
        if d.key_id.is_empty() || d.key_id.contains('/') {
            return bad(format!("`deltas[{i}].key_id` must be a non-empty key id without `/`"));
        }
        if rollup_periods(&d.period).is_none() {
            return bad(format!("`deltas[{i}].period` must be a UTC day, `YYYY-MM-DD`"));
        }
        if d.team.as_deref() == Some("") || d.customer.as_deref() == Some("") {
            return bad(format!("`deltas[{i}]`: `team` and `customer` must not be empty when set"));
        }
        let names = [Some(&d.key_id), d.team.as_ref(), d.customer.as_ref()];
        if names.iter().flatten().any(|n| n.len() > 256 || n.chars().any(char::is_control)) {
            return bad(format!("`deltas[{i}]`: names must be at most 256 bytes, without control characters"));
        }
    }
    Ok(())
}

/// What a sync adds, per (level, id, period): (spent, requests, saved). Each delta counts for
/// its key, team and customer, on its day, ISO week and month.
pub fn rollup(req: &SyncRequest) -> BTreeMap<(Level, String, String), (u64, u64, u64)> {
    let mut out: BTreeMap<(Level, String, String), (u64, u64, u64)> = BTreeMap::new();
    for d in &req.deltas {
        let Some(periods) = rollup_periods(&d.period) else { continue };
        let mut scopes = vec![(Level::Key, d.key_id.clone())];
        if let Some(t) = &d.team {
            scopes.push((Level::Team, t.clone()));
        }
        if let Some(c) = &d.customer {
            scopes.push((Level::Customer, format!("{}/{c}", d.key_id)));
        }
        for (level, id) in scopes {
            for period in &periods {
                let t = out.entry((level, id.clone(), period.clone())).or_default();
                t.0 = t.0.saturating_add(d.spent_micros);
                t.1 = t.1.saturating_add(d.requests);
                t.2 = t.2.saturating_add(d.saved_micros);
            }
        }
    }
    out
}

/// The ledger's state: totals per (level, id, period) and the sync ids seen per replica.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LedgerBook {
    pub totals: BTreeMap<(Level, String, String), Total>,
    seen: BTreeMap<String, (VecDeque<String>, HashSet<String>)>,
}

impl LedgerBook {
    pub fn seen(&self, replica: &str, sync_id: &str) -> bool {
        self.seen.get(replica).is_some_and(|(_, set)| set.contains(sync_id))
    }

    fn remember(&mut self, replica: &str, sync_id: &str) {
        let (order, set) = self.seen.entry(replica.to_string()).or_default();
        if set.insert(sync_id.to_string()) {
            order.push_back(sync_id.to_string());
            while order.len() > SEEN_PER_REPLICA {
                if let Some(old) = order.pop_front() {
                    set.remove(&old);
                }
            }
        }
    }

    /// Count a validated sync. Returns false (and changes nothing) for a replay.
    pub fn apply(&mut self, req: &SyncRequest) -> bool {
        if self.seen(&req.replica, &req.sync_id) {
            return false;
        }
        for (scope, (spent, requests, saved)) in rollup(req) {
            let t = self.totals.entry(scope).or_default();
            t.spent_micros = t.spent_micros.saturating_add(spent);
            t.requests = t.requests.saturating_add(requests);
            t.saved_micros = t.saved_micros.saturating_add(saved);
            let own = t.by_replica.entry(req.replica.clone()).or_default();
            *own = own.saturating_add(spent);
        }
        self.remember(&req.replica, &req.sync_id);
        true
    }

    /// Totals of the given periods (all when `None`), with `replica`'s share when given.
    pub fn view(&self, periods: Option<&[String]>, replica: Option<&str>) -> Totals {
        let rows = self.totals.iter().filter(|((_, _, p), _)| periods.is_none_or(|ps| ps.contains(p)));
        group(rows.map(|((level, id, period), t)| (*level, row(id, period, t, replica))))
    }

    pub fn answer(&self, req: &SyncRequest, replayed: bool, now_ms: u64) -> SyncResponse {
        SyncResponse { replayed, totals: self.view(Some(&current_periods(now_ms)), Some(&req.replica)) }
    }
}

fn row(id: &str, period: &str, t: &Total, replica: Option<&str>) -> TotalRow {
    TotalRow {
        id: id.to_string(),
        period: period.to_string(),
        spent_micros: t.spent_micros,
        requests: t.requests,
        saved_micros: t.saved_micros,
        own_spent_micros: replica.map(|r| t.by_replica.get(r).copied().unwrap_or(0)),
    }
}

/// Rows into the answer's three groups.
pub fn group(rows: impl Iterator<Item = (Level, TotalRow)>) -> Totals {
    let mut out = Totals::default();
    for (level, r) in rows {
        match level {
            Level::Key => out.keys.push(r),
            Level::Team => out.teams.push(r),
            Level::Customer => out.customers.push(r),
        }
    }
    out
}

/// One journal line: an applied sync, or the snapshot a compaction wrote.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum JournalEntry {
    Sync(SyncRequest),
    Snapshot(Snapshot),
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    totals: Vec<(Level, String, String, Total)>,
    seen: BTreeMap<String, Vec<String>>,
}

impl Snapshot {
    fn of(book: &LedgerBook) -> Snapshot {
        Snapshot {
            totals: book.totals.iter().map(|((l, i, p), t)| (*l, i.clone(), p.clone(), t.clone())).collect(),
            seen: book.seen.iter().map(|(r, (order, _))| (r.clone(), order.iter().cloned().collect())).collect(),
        }
    }

    fn restore(self, book: &mut LedgerBook) {
        for (l, i, p, t) in self.totals {
            book.totals.insert((l, i, p), t);
        }
        for (replica, ids) in self.seen {
            for id in ids {
                book.remember(&replica, &id);
            }
        }
    }
}

struct Journal {
    path: PathBuf,
    file: File,
    entries: usize,
}

/// The embedded ledger: in memory, journaled to a file when opened with a path.
pub struct FileLedger {
    inner: Mutex<(LedgerBook, Option<Journal>)>,
    compact_every: usize,
}

impl FileLedger {
    pub fn in_memory() -> Self {
        FileLedger { inner: Mutex::new((LedgerBook::default(), None)), compact_every: usize::MAX }
    }

    /// Open (or create) the journal at `path`: replay it, compact it to one snapshot, append.
    pub fn open(path: &Path, compact_every: usize) -> Result<Self, LedgerError> {
        let mut book = LedgerBook::default();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                create_private_dir(dir)?;
            }
        }
        if path.exists() {
            let reader = BufReader::new(File::open(path)?);
            for line in reader.split(b'\n') {
                let line = line?;
                // A line that does not parse (a torn last line, from a crash mid-append) was never
                // answered: skip it; the compaction below drops it.
                match serde_json::from_slice::<JournalEntry>(&line) {
                    Ok(JournalEntry::Sync(s)) => {
                        book.apply(&s);
                    }
                    Ok(JournalEntry::Snapshot(s)) => s.restore(&mut book),
                    Err(_) => continue,
                }
            }
        }
        let journal = compact(path, &book)?;
        Ok(FileLedger { inner: Mutex::new((book, Some(journal))), compact_every: compact_every.max(1) })
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)
}

fn open_private(path: &Path, truncate: bool) -> std::io::Result<File> {
    let mut o = OpenOptions::new();
    o.create(true);
    if truncate {
        o.write(true).truncate(true);
    } else {
        o.append(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        o.mode(0o600);
        let f = o.open(path)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        Ok(f)
    }
    #[cfg(not(unix))]
    o.open(path)
}

/// Rewrite the journal as one snapshot: write a temporary file, fsync it, rename it over the
/// journal, fsync the directory, so a crash leaves the old journal or the new one, whole.
fn compact(path: &Path, book: &LedgerBook) -> Result<Journal, LedgerError> {
    let tmp = path.with_extension("compact");
    {
        let mut f = open_private(&tmp, true)?;
        let line = serde_json::to_vec(&JournalEntry::Snapshot(Snapshot::of(book))).map_err(std::io::Error::other)?;
        f.write_all(&line)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)?.sync_all()?;
    }
    Ok(Journal { path: path.to_path_buf(), file: open_private(path, false)?, entries: 1 })
}

impl LedgerStore for FileLedger {
    fn sync(&self, req: &SyncRequest, now_ms: u64) -> Result<SyncResponse, LedgerError> {
        validate(req)?;
        let mut guard = self.inner.lock().map_err(|_| LedgerError::Backend("ledger lock poisoned".into()))?;
        let (book, journal) = &mut *guard;
        if book.seen(&req.replica, &req.sync_id) {
            return Ok(book.answer(req, true, now_ms));
        }
        if let Some(j) = journal.as_mut() {
            // Durable before counted: an answered sync is never lost, an unanswered one is
            // resent by its replica.
            let mut line = serde_json::to_vec(&JournalEntry::Sync(req.clone())).map_err(std::io::Error::other)?;
            line.push(b'\n');
            j.file.write_all(&line)?;
            j.file.sync_data()?;
            j.entries += 1;
        }
        book.apply(req);
        if let Some(j) = journal.as_mut() {
            if j.entries > self.compact_every {
                *j = compact(&j.path.clone(), book)?;
            }
        }
        Ok(book.answer(req, false, now_ms))
    }

    fn totals(&self) -> Result<Totals, LedgerError> {
        let guard = self.inner.lock().map_err(|_| LedgerError::Backend("ledger lock poisoned".into()))?;
        Ok(guard.0.view(None, None))
    }
}

pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

#[derive(Clone)]
pub struct LedgerState {
    pub store: Arc<dyn LedgerStore>,
    pub clock: Clock,
}

impl LedgerState {
    pub fn new(store: Arc<dyn LedgerStore>) -> Self {
        let clock: Clock =
            Arc::new(|| SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0));
        LedgerState { store, clock }
    }
}

/// The ledger's routes, for the server to `.merge()`.
pub fn routes(state: LedgerState) -> Router {
    Router::new().route("/v1/ledger/sync", post(sync)).route("/v1/ledger", get(totals)).with_state(state)
}

fn error(e: LedgerError) -> Response {
    let status = match e {
        LedgerError::Invalid(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, Json(json!({"error": {"message": e.to_string()}}))).into_response()
}

async fn sync(State(state): State<LedgerState>, Json(req): Json<SyncRequest>) -> Response {
    let now = (state.clock)();
    // The journal's fsync blocks: keep it off the async workers.
    let store = state.store.clone();
    match tokio::task::spawn_blocking(move || store.sync(&req, now)).await {
        Ok(Ok(answer)) => Json(answer).into_response(),
        Ok(Err(e)) => error(e),
        Err(e) => error(LedgerError::Backend(e.to_string())),
    }
}

async fn totals(State(state): State<LedgerState>) -> Response {
    let store = state.store.clone();
    match tokio::task::spawn_blocking(move || store.totals()).await {
        Ok(Ok(t)) => Json(t).into_response(),
        Ok(Err(e)) => error(e),
        Err(e) => error(LedgerError::Backend(e.to_string())),
    }
}

#[cfg(test)]
#[path = "tests/ledger_tests.rs"]
mod tests;
