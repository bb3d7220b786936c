//! Budgets as reservations in shared data. Each scope a request is charged to (its key, the
//! key's team, the end customer below the key) has, per period, one record
//! `semgate:bud:<level>:<id>:<period id>` = {spent, reserved, in_flight, others}, micro-dollars
//! and a count, written with compare-and-swap.
//!
//! A request reserves its estimate in every scope before it is sent; it is admitted only if
//! `spent + others + reserved + estimate <= budget` holds in each. When it ends, `settle`
//! moves the reservation to `spent` at the actual cost; a failure, abort or disconnect
//! `release`s it. `others` is what the other replicas spent, learned from the ledger
//! (`apply_ledger`); spend to report is kept apart, in `ledger::UsageBook`. Why this bounds the overspend, and by how much, is `docs/budgets.md`.

use super::period::Period;
use super::{read_u64s, write_u64s};
use crate::core::store::{SetError, SharedData};

const CAS_RETRIES: u32 = 32;
/// A refusal caused only by in-flight reservations is worth retrying soon: they settle or
/// release within a request's lifetime.
pub const IN_FLIGHT_RETRY_MS: u64 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScopeLevel {
    Key,
    Team,
    Customer,
}

impl ScopeLevel {
    pub fn name(self) -> &'static str {
        match self {
            ScopeLevel::Key => "key",
            ScopeLevel::Team => "team",
            ScopeLevel::Customer => "customer",
        }
    }
}

/// One budget a request must fit: `id` is unique per level (a key id, a team name,
/// `<key id>/<customer>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetScope {
    pub level: ScopeLevel,
    pub id: String,
    pub limit_micros: u64,
    pub period: Period,
}

impl BudgetScope {
    pub fn record_key(&self, now_ms: u64) -> String {
        format!("semgate:bud:{}:{}:{}", self.level.name(), self.id, self.period.window(now_ms).id)
    }
}

/// A scope's record for one period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BudgetRecord {
    /// Settled cost at this replica this period.
    pub spent: u64,
    /// Estimates of the requests in flight.
    pub reserved: u64,
    pub in_flight: u64,
    /// Spent at the other replicas, as of the last ledger sync.
    pub others: u64,
}

impl BudgetRecord {
    fn decode(b: &[u8]) -> Option<Self> {
        let [spent, reserved, in_flight, others] = read_u64s::<4>(b)?;
        Some(BudgetRecord { spent, reserved, in_flight, others })
    }

    fn encode(&self) -> Vec<u8> {
        write_u64s(&[self.spent, self.reserved, self.in_flight, self.others])
    }

    /// Spend known globally (here and elsewhere), without the reservations.
    pub fn known_spent(&self) -> u64 {
        self.spent.saturating_add(self.others)
    }

    /// Whether a reservation of `estimate` fits under `limit`.
    pub fn fits(&self, estimate: u64, limit: u64) -> bool {
        self.known_spent().saturating_add(self.reserved).saturating_add(estimate) <= limit
    }
}

/// A granted reservation: the records it holds and the amount held in each. The host keeps
/// it for the request's lifetime and hands it back to `settle` or `release` exactly once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub micros: u64,
    pub holds: Vec<(ScopeLevel, String)>,
}

/// Why a request does not fit, for a 429 with `retry-after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetRefusal {
    pub level: ScopeLevel,
    pub id: String,
    pub limit_micros: u64,
    pub spent_micros: u64,
    pub reserved_micros: u64,
    pub estimate_micros: u64,
    /// When the period resets (unix ms).
    pub reset_ms: u64,
    pub retry_after_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    #[error("{} budget of `{}` exhausted", .0.level.name(), .0.id)]
    Refused(BudgetRefusal),
    #[error("the budget record kept changing under concurrent writers")]
    Contended,
    #[error("the host refused a shared-data call")]
    Host,
}

pub struct BudgetLedger<'a, S: SharedData> {
    pub kv: &'a S,
}

impl<'a, S: SharedData> BudgetLedger<'a, S> {
    pub fn read(&self, record_key: &str) -> BudgetRecord {
        self.kv.get(record_key).and_then(|(b, _)| BudgetRecord::decode(&b)).unwrap_or_default()
    }

    /// Read-modify-write one record with compare-and-swap. `f` returns `Err` to abandon.
    fn update<E>(
        &self,
        record_key: &str,
        mut f: impl FnMut(&mut BudgetRecord) -> Result<(), E>,
    ) -> Result<Result<BudgetRecord, E>, BudgetError> {
        for _ in 0..CAS_RETRIES {
            let (mut rec, cas) = match self.kv.get(record_key) {
                Some((b, cas)) => (BudgetRecord::decode(&b).unwrap_or_default(), Some(cas)),
                None => (BudgetRecord::default(), None),
            };
            if let Err(e) = f(&mut rec) {
                return Ok(Err(e));
            }
            match self.kv.set(record_key, &rec.encode(), cas) {
                Ok(()) => return Ok(Ok(rec)),
                // A first write (no cas) can race with another first write: retry with cas.
                Err(SetError::CasMismatch) => continue,
                Err(SetError::Host) => return Err(BudgetError::Host),
            }
        }
        Err(BudgetError::Contended)
    }

    /// Reserve `estimate` micro-dollars in every scope, or in none. Scopes are taken in
    /// order; when one refuses, the holds already taken are released.
    pub fn reserve(&self, scopes: &[BudgetScope], estimate: u64, now_ms: u64) -> Result<Reservation, BudgetError> {
        let mut holds: Vec<(ScopeLevel, String)> = Vec::with_capacity(scopes.len());
        for scope in scopes {
            let key = scope.record_key(now_ms);
            let outcome = self.update(&key, |rec| {
                if !rec.fits(estimate, scope.limit_micros) {
                    return Err(*rec);
                }
                rec.reserved = rec.reserved.saturating_add(estimate);
                rec.in_flight += 1;
                Ok(())
            });
            let failure = match outcome {
                Ok(Ok(_)) => {
                    holds.push((scope.level, key));
                    continue;
                }
                Ok(Err(rec)) => BudgetError::Refused(refusal(scope, &rec, estimate, now_ms)),
                Err(e) => e,
            };
            // Undo the holds of the scopes before this one (best effort: a failed undo only
            // holds room until the period ends, it never lets spend through).
            let _ = self.release(&Reservation { micros: estimate, holds });
            return Err(failure);
        }
        Ok(Reservation { micros: estimate, holds })
    }

    /// The request finished: its reservation becomes `actual` spend in every scope it holds.
    pub fn settle(&self, r: &Reservation, actual: u64) -> Result<(), BudgetError> {
        for (_, key) in &r.holds {
            self.update::<()>(key, |rec| {
                rec.reserved = rec.reserved.saturating_sub(r.micros);
                rec.in_flight = rec.in_flight.saturating_sub(1);
                rec.spent = rec.spent.saturating_add(actual);
                Ok(())
            })?
            .ok();
        }
        Ok(())
    }

    /// The request failed, was aborted or the client left before any cost: give it back.
    pub fn release(&self, r: &Reservation) -> Result<(), BudgetError> {
        for (_, key) in &r.holds {
            self.update::<()>(key, |rec| {
                rec.reserved = rec.reserved.saturating_sub(r.micros);
                rec.in_flight = rec.in_flight.saturating_sub(1);
                Ok(())
            })?
            .ok();
        }
        Ok(())
    }

    /// Cost without a reservation: a request admitted while shared data failed (fail open).
    pub fn charge(&self, scopes: &[BudgetScope], actual: u64, now_ms: u64) -> Result<(), BudgetError> {
        for scope in scopes {
            self.update::<()>(&scope.record_key(now_ms), |rec| {
                rec.spent = rec.spent.saturating_add(actual);
                Ok(())
            })?
            .ok();
        }
        Ok(())
    }

    /// The ledger's view of a scope for this record's period: `global_spent` by all replicas,
    /// `own_spent` of it by this one. Others' spend is the difference; this replica's own
    /// spend is at least what the ledger has of it (after a restart shared data starts at 0).
    pub fn apply_ledger(
        &self,
        record_key: &str,
        global_spent: u64,
        own_spent: u64,
    ) -> Result<BudgetRecord, BudgetError> {
        let rec = self.update::<()>(record_key, |rec| {
            rec.spent = rec.spent.max(own_spent);
            rec.others = global_spent.saturating_sub(own_spent);
            Ok(())
        })?;
        Ok(rec.unwrap_or_default())
    }
}

fn refusal(scope: &BudgetScope, rec: &BudgetRecord, estimate: u64, now_ms: u64) -> BudgetRefusal {
    let window = scope.period.window(now_ms);
    let until_reset = window.reset_ms.saturating_sub(now_ms);
    // Room that in-flight requests hold comes back soon; spent room only at the reset.
    let spent_alone_fits = rec.known_spent().saturating_add(estimate) <= scope.limit_micros;
    BudgetRefusal {
        level: scope.level,
        id: scope.id.clone(),
        limit_micros: scope.limit_micros,
        spent_micros: rec.known_spent(),
        reserved_micros: rec.reserved,
        estimate_micros: estimate,
        reset_ms: window.reset_ms,
        retry_after_ms: if spent_alone_fits { IN_FLIGHT_RETRY_MS.min(until_reset) } else { until_reset },
    }
}

/// The overshoot bound of `docs/budgets.md` for one replica: at most `in_flight` requests
/// can each exceed their estimate by at most `max_error` micro-dollars.
pub fn single_replica_bound(max_in_flight: u64, max_error: u64) -> u64 {
    max_in_flight.saturating_mul(max_error)
}

/// The bound with `replicas` syncing to the ledger: the single-replica term, plus for every
/// other replica what it can spend unseen: its requests in flight when the view went stale
/// and those it admits during one staleness window (`admissions_per_window`, its RPM over
/// the window), at most `max_request_cost` each.
pub fn multi_replica_bound(
    replicas: u64,
    max_in_flight_per_replica: u64,
    max_error: u64,
    admissions_per_window: u64,
    max_request_cost: u64,
) -> u64 {
    let unseen = replicas
        .saturating_sub(1)
        .saturating_mul(max_in_flight_per_replica.saturating_add(admissions_per_window))
        .saturating_mul(max_request_cost);
    single_replica_bound(max_in_flight_per_replica, max_error).saturating_add(unseen)
}

#[cfg(test)]
#[path = "tests/reservation_tests.rs"]
mod tests;
