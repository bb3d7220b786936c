//! Unit tests of `core::budget::ledger` (the filter's side; the sidecar tests the server).

use super::*;
use crate::core::budget::reservation::{BudgetLedger, BudgetScope, ScopeLevel};
use crate::core::store::tests::MemKv;

fn delta(key: &str, customer: Option<&str>, day: &str, spent: u64) -> LedgerDelta {
    LedgerDelta {
        key_id: key.into(),
        team: Some("t".into()),
        customer: customer.map(Into::into),
        period: day.into(),
        spent_micros: spent,
        requests: 1,
        saved_micros: 0,
    }
}

#[test]
fn days_roll_up_into_iso_weeks_and_months() {
    assert_eq!(rollup_periods("2026-12-02").unwrap(), ["2026-12-02", "2026-W49", "2026-12"]);
    assert_eq!(rollup_periods("2027-01-01").unwrap(), ["2027-01-01", "2026-W53", "2027-01"]);
    assert_eq!(rollup_periods("2026-02-31"), None);
    assert_eq!(rollup_periods("2026-12"), None);
    assert_eq!(current_periods(1_795_996_800_000), ["2026-11-30", "2026-W49", "2026-11"]);
}

#[test]
fn the_book_merges_rows_and_a_sync_is_resent_until_acknowledged() {
    let mut book = UsageBook::default();
    book.record(delta("k", Some("acme"), "2026-12-02", 10));
    book.record(delta("k", Some("acme"), "2026-12-02", 5));
    book.record(delta("k", None, "2026-12-02", 1));
    let first = book.begin_sync("r1", "e");
    assert_eq!(first.sync_id, "e-0");
    assert_eq!(first.deltas.len(), 2);
    assert_eq!((first.deltas[0].spent_micros, first.deltas[0].requests), (15, 2));
    // Spend during the sync waits for the next one; an unanswered sync is resent as is.
    book.record(delta("k", None, "2026-12-02", 7));
    assert_eq!(book.begin_sync("r1", "e"), first);
    assert!(!book.ack("9"));
    assert!(book.ack("e-0"));
    let second = book.begin_sync("r1", "e");
    assert_eq!((second.sync_id.as_str(), second.deltas.len(), second.deltas[0].spent_micros), ("e-1", 1, 7));
}

#[test]
fn a_full_book_folds_new_customers_into_other() {
    let mut book = UsageBook::default();
    for i in 0..MAX_BOOK_ROWS {
        book.record(delta("k", Some(&format!("c{i}")), "2026-12-02", 1));
    }
    book.record(delta("k", Some("late-1"), "2026-12-02", 3));
    book.record(delta("k", Some("late-2"), "2026-12-02", 4));
    book.record(delta("k", Some("c7"), "2026-12-02", 1));
    assert_eq!(book.unsynced.len(), MAX_BOOK_ROWS + 1);
    let other = book.unsynced.iter().find(|r| r.customer.as_deref() == Some("other")).unwrap();
    assert_eq!(other.spent_micros, 7);
}

#[test]
fn the_book_lives_in_shared_data_and_round_trips() {
    let kv = MemKv::default();
    update_book(&kv, |b| b.record(delta("k", None, "2026-12-02", 3))).unwrap();
    *kv.interfere.borrow_mut() = 2;
    update_book(&kv, |b| b.record(delta("k", None, "2026-12-02", 4))).unwrap();
    let sync = update_book(&kv, |b| b.begin_sync("r", "e")).unwrap();
    assert_eq!(sync.deltas[0].spent_micros, 7, "counted once through the retries");
    let json = serde_json::to_string(&sync).unwrap();
    assert_eq!(serde_json::from_str::<SyncRequest>(&json).unwrap(), sync);
    assert!(serde_json::from_str::<SyncRequest>(r#"{"replica":"r","sync_id":"1","extra":1}"#).is_err());
}

#[test]
fn sync_totals_update_the_budget_records_they_name() {
    let kv = MemKv::default();
    let now = 1_795_996_800_000;
    let scope =
        BudgetScope { level: ScopeLevel::Customer, id: "k/acme".into(), limit_micros: 100, period: Period::Monthly };
    let row = TotalRow {
        id: "k/acme".into(),
        period: "2026-11".into(),
        spent_micros: 90,
        requests: 3,
        saved_micros: 0,
        own_spent_micros: Some(20),
    };
    let totals = Totals { customers: vec![row], ..Default::default() };
    let ledger = BudgetLedger { kv: &kv };
    for (key, r) in totals.record_keys() {
        assert_eq!(key, scope.record_key(now));
        ledger.apply_ledger(&key, r.spent_micros, r.own_spent_micros.unwrap_or(0)).unwrap();
    }
    assert!(ledger.reserve(std::slice::from_ref(&scope), 10, now).is_ok());
    assert!(ledger.reserve(std::slice::from_ref(&scope), 1, now).is_err());
}
