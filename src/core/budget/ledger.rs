//! The ledger protocol between the filter and the sidecar (`POST /v1/ledger/sync`), defined
//! once here and compiled by both, and the filter's side of it: the `UsageBook` where settled
//! spend waits to be reported.
//!
//! A replica (one Envoy process) reports deltas per key, team, end customer and UTC day. The
//! ledger adds each delta to the day, its ISO week and its month, for the key, the team and
//! the customer, so every budget period can be answered from days. A sync is identified by
//! (replica, sync_id): a replay is answered but counted once. The replica resends a sync
//! unchanged until it is answered, then starts the next one.

use super::period::{civil_from_days, days_from_civil, iso_week, Period};
use crate::core::store::{SetError, SharedData};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncRequest {
    /// Unique per Envoy process lifetime or stable across its restarts; the ledger keeps each
    /// replica's share so a restarted replica learns what it had spent.
    pub replica: String,
    pub sync_id: String,
    #[serde(default)]
    pub deltas: Vec<LedgerDelta>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerDelta {
    pub key_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<String>,
    /// The UTC day the spend settled on (`2026-12-02`).
    pub period: String,
    #[serde(default)]
    pub spent_micros: u64,
    #[serde(default)]
    pub requests: u64,
    /// What cache hits saved (the provider's price of the answers served from the cache).
    #[serde(default)]
    pub saved_micros: u64,
}

/// Totals per scope and period. A customer's id is `<key id>/<customer>` (key ids hold no `/`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub keys: Vec<TotalRow>,
    pub teams: Vec<TotalRow>,
    pub customers: Vec<TotalRow>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TotalRow {
    pub id: String,
    pub period: String,
    pub spent_micros: u64,
    pub requests: u64,
    pub saved_micros: u64,
    /// In a sync answer: the part of `spent_micros` the asking replica reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub own_spent_micros: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncResponse {
    /// The sync was seen before: nothing was counted this time.
    pub replayed: bool,
    /// Totals of the periods current at the ledger (this day, ISO week and month).
    pub totals: Totals,
}

impl Totals {
    /// Each row with the budget record it updates (`BudgetLedger::apply_ledger`).
    pub fn record_keys(&self) -> Vec<(String, &TotalRow)> {
        let levels = [("key", &self.keys), ("team", &self.teams), ("customer", &self.customers)];
        levels
            .into_iter()
            .flat_map(|(level, rows)| {
                rows.iter().map(move |r| (format!("semgate:bud:{level}:{}:{}", r.id, r.period), r))
            })
            .collect()
    }
}

/// The day, ISO week and month a day id belongs to; `None` if it is not a day id.
pub fn rollup_periods(day_id: &str) -> Option<[String; 3]> {
    if Period::of_id(day_id) != Some(Period::Daily) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| day_id[r].parse::<u32>().ok();
    let (y, m, d) = (n(0..4)? as i64, n(5..7)?, n(8..10)?);
    let days = days_from_civil(y, m, d);
    // Reject 2026-02-31 and friends: they would not round-trip.
    if civil_from_days(days) != (y, m, d) {
        return None;
    }
    let (wy, w) = iso_week(days);
    Some([day_id.to_string(), format!("{wy:04}-W{w:02}"), format!("{y:04}-{m:02}")])
}

/// The period ids current at an instant: today, this ISO week, this month.
pub fn current_periods(now_ms: u64) -> [String; 3] {
    [Period::Daily, Period::Weekly, Period::Monthly].map(|p| p.window(now_ms).id)
}

/// Settled spend waiting to be reported, and the sync in flight. It lives in shared data under
/// one key (`BOOK_KEY`) so whichever worker syncs reports every worker's spend.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageBook {
    pub next_seq: u64,
    pub unsynced: Vec<LedgerDelta>,
    pub pending: Option<SyncRequest>,
}

pub const BOOK_KEY: &str = "semgate:ledger:book";
/// Rows a book holds before new customers are folded into `other` (the book stays small
/// between two syncs whatever the customers send).
pub const MAX_BOOK_ROWS: usize = 4096;

impl UsageBook {
    pub fn decode(bytes: &[u8]) -> UsageBook {
        serde_json::from_slice(bytes).unwrap_or_default()
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Add one settled request (or cache hit) to the book.
    pub fn record(&mut self, mut delta: LedgerDelta) {
        let same = |r: &LedgerDelta, d: &LedgerDelta| {
            r.key_id == d.key_id && r.team == d.team && r.customer == d.customer && r.period == d.period
        };
        if !self.unsynced.iter().any(|r| same(r, &delta)) && self.unsynced.len() >= MAX_BOOK_ROWS {
            delta.customer = delta.customer.map(|_| super::virtual_keys::OTHER_CUSTOMER.to_string());
        }
        match self.unsynced.iter_mut().find(|r| same(r, &delta)) {
            Some(row) => {
                row.spent_micros = row.spent_micros.saturating_add(delta.spent_micros);
                row.requests = row.requests.saturating_add(delta.requests);
                row.saved_micros = row.saved_micros.saturating_add(delta.saved_micros);
            }
            None => self.unsynced.push(delta),
        }
    }

    /// The sync to send: the one in flight if any (resent unchanged), else a new one holding
    /// everything unsynced. A sync with no deltas still fetches the totals. `epoch` names this
    /// process's life (its ids are `<epoch>-<seq>`): a replica restarted under the same name
    /// starts its sequence again, and its new syncs must not read as replays of old ones.
    pub fn begin_sync(&mut self, replica: &str, epoch: &str) -> SyncRequest {
        if let Some(p) = &self.pending {
            return p.clone();
        }
        let sync = SyncRequest {
            replica: replica.to_string(),
            sync_id: format!("{epoch}-{}", self.next_seq),
            deltas: std::mem::take(&mut self.unsynced),
        };
        self.next_seq += 1;
        self.pending = Some(sync.clone());
        sync
    }

    /// The ledger answered `sync_id`: it is done. Returns whether it was the one in flight.
    pub fn ack(&mut self, sync_id: &str) -> bool {
        if self.pending.as_ref().is_some_and(|p| p.sync_id == sync_id) {
            self.pending = None;
            return true;
        }
        false
    }
}

thread_local! {
    /// This VM's settled spend since the root last moved it to the shared book: recording a
    /// request costs no shared-data call (a Wasm VM runs one worker's contexts on one thread).
    static LOCAL_BOOK: std::cell::RefCell<UsageBook> = std::cell::RefCell::new(UsageBook::default());
}

/// Add one settled request (or cache hit) to this VM's book.
pub fn record_local(delta: LedgerDelta) {
    LOCAL_BOOK.with(|b| b.borrow_mut().record(delta));
}

/// Move this VM's book into the shared one (the root context, before a sync). If shared data
/// refuses, the rows stay here for the next time.
pub fn flush_local<S: SharedData>(kv: &S) -> Result<(), SetError> {
    let rows = LOCAL_BOOK.with(|b| std::mem::take(&mut b.borrow_mut().unsynced));
    if rows.is_empty() {
        return Ok(());
    }
    let moved = update_book(kv, |book| {
        for d in &rows {
            book.record(d.clone());
        }
    });
    if moved.is_err() {
        LOCAL_BOOK.with(|b| {
            let mut b = b.borrow_mut();
            for d in rows {
                b.record(d);
            }
        });
    }
    moved
}

/// Read-modify-write the book in shared data with compare-and-swap.
pub fn update_book<S: SharedData, T>(kv: &S, mut f: impl FnMut(&mut UsageBook) -> T) -> Result<T, SetError> {
    for _ in 0..32 {
        let (mut book, cas) = match kv.get(BOOK_KEY) {
            Some((b, cas)) => (UsageBook::decode(&b), Some(cas)),
            None => (UsageBook::default(), None),
        };
        let out = f(&mut book);
        match kv.set(BOOK_KEY, &book.encode(), cas) {
            Ok(()) => return Ok(out),
            Err(SetError::CasMismatch) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(SetError::CasMismatch)
}

#[cfg(test)]
#[path = "tests/ledger_tests.rs"]
mod tests;
