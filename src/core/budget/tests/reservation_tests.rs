//! Unit tests of `core::budget::reservation`, with the burst simulation of `docs/budgets.md`.

use super::*;
use crate::core::store::tests::MemKv;

const NOW: u64 = 1_795_996_800_000; // 2026-11-30T00:00Z, a Monday

fn scope(level: ScopeLevel, id: &str, usd_micros: u64) -> BudgetScope {
    BudgetScope { level, id: id.to_string(), limit_micros: usd_micros, period: Period::Monthly }
}

/// xorshift64*: a seeded generator, so every run of the simulation is the same run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn reserve_settle_release_move_money_between_the_fields() {
    let kv = MemKv::default();
    let ledger = BudgetLedger { kv: &kv };
    let s = [scope(ScopeLevel::Key, "k1", 1_000)];
    let key = s[0].record_key(NOW);
    assert_eq!(key, "semgate:bud:key:k1:2026-11");
    let a = ledger.reserve(&s, 400, NOW).unwrap();
    let b = ledger.reserve(&s, 400, NOW).unwrap();
    assert_eq!(ledger.read(&key), BudgetRecord { reserved: 800, in_flight: 2, ..Default::default() });
    let BudgetError::Refused(r) = ledger.reserve(&s, 201, NOW).unwrap_err() else { panic!() };
    assert_eq!((r.spent_micros, r.reserved_micros, r.estimate_micros), (0, 800, 201));
    assert_eq!(r.retry_after_ms, IN_FLIGHT_RETRY_MS, "only in-flight room is missing: retry soon");
    assert!(ledger.reserve(&s, 200, NOW).is_ok(), "exactly at the budget is allowed");
    ledger.settle(&a, 350).unwrap();
    ledger.release(&b).unwrap();
    let rec = ledger.read(&key);
    assert_eq!((rec.spent, rec.reserved, rec.in_flight), (350, 200, 1));
}

#[test]
fn a_spent_budget_refuses_until_the_period_resets() {
    let kv = MemKv::default();
    let ledger = BudgetLedger { kv: &kv };
    let s = [BudgetScope { period: Period::Daily, ..scope(ScopeLevel::Key, "k", 100) }];
    let r = ledger.reserve(&s, 10, NOW + 3_600_000).unwrap();
    ledger.settle(&r, 95).unwrap();
    let BudgetError::Refused(refusal) = ledger.reserve(&s, 10, NOW + 3_600_000).unwrap_err() else { panic!() };
    assert_eq!(refusal.reset_ms, NOW + 86_400_000);
    assert_eq!(refusal.retry_after_ms, 23 * 3_600_000);
    // The next day is a new record.
    assert!(ledger.reserve(&s, 10, NOW + 86_400_000).is_ok());
}

#[test]
fn a_reservation_must_fit_key_and_team_and_a_refusal_leaves_no_hold() {
    let kv = MemKv::default();
    let ledger = BudgetLedger { kv: &kv };
    let team = scope(ScopeLevel::Team, "search", 500);
    let k1 = [scope(ScopeLevel::Key, "k1", 1_000), team.clone()];
    let k2 = [scope(ScopeLevel::Key, "k2", 1_000), team.clone()];
    let a = ledger.reserve(&k1, 300, NOW).unwrap();
    let BudgetError::Refused(r) = ledger.reserve(&k2, 300, NOW).unwrap_err() else { panic!() };
    assert_eq!((r.level, r.id.as_str()), (ScopeLevel::Team, "search"));
    assert_eq!(ledger.read(&k2[0].record_key(NOW)), BudgetRecord::default(), "the key's hold was undone");
    ledger.settle(&a, 300).unwrap();
    assert_eq!(ledger.read(&team.record_key(NOW)).spent, 300);
    assert_eq!(ledger.read(&k1[0].record_key(NOW)).spent, 300);
    assert!(ledger.reserve(&k2, 200, NOW).is_ok());
}

#[test]
fn contention_is_retried_and_counted_once() {
    let kv = MemKv::default();
    let ledger = BudgetLedger { kv: &kv };
    let s = [scope(ScopeLevel::Key, "k", 1_000)];
    let r = ledger.reserve(&s, 100, NOW).unwrap();
    *kv.interfere.borrow_mut() = 5;
    ledger.settle(&r, 120).unwrap();
    assert_eq!(ledger.read(&s[0].record_key(NOW)).spent, 120);
    *kv.interfere.borrow_mut() = 10_000;
    assert_eq!(ledger.reserve(&s, 1, NOW), Err(BudgetError::Contended));
}

#[test]
fn the_ledger_view_adds_the_other_replicas_spend() {
    let kv = MemKv::default();
    let ledger = BudgetLedger { kv: &kv };
    let s = [scope(ScopeLevel::Key, "k", 1_000)];
    let key = s[0].record_key(NOW);
    let r = ledger.reserve(&s, 100, NOW).unwrap();
    ledger.settle(&r, 150).unwrap();
    // The ledger has 100 of our 150 (the rest is not synced yet) and 700 from elsewhere.
    let rec = ledger.apply_ledger(&key, 800, 100).unwrap();
    assert_eq!((rec.others, rec.spent), (700, 150));
    assert!(rec.fits(150, 1_000));
    assert!(!rec.fits(151, 1_000));
    // Applying the same view again changes nothing.
    assert_eq!(ledger.apply_ledger(&key, 800, 100).unwrap(), rec);
}

#[test]
fn after_a_restart_the_ledger_restores_this_replicas_spend() {
    let kv = MemKv::default();
    let ledger = BudgetLedger { kv: &kv };
    let s = [scope(ScopeLevel::Key, "k", 1_000)];
    let rec = ledger.apply_ledger(&s[0].record_key(NOW), 900, 600).unwrap();
    assert_eq!((rec.spent, rec.others), (600, 300));
    assert!(matches!(ledger.reserve(&s, 101, NOW), Err(BudgetError::Refused(_))));
}

#[test]
fn unreserved_charges_count_in_every_scope() {
    let kv = MemKv::default();
    let ledger = BudgetLedger { kv: &kv };
    let s = [scope(ScopeLevel::Key, "k", 1_000), scope(ScopeLevel::Customer, "k/acme", 100)];
    ledger.charge(&s, 7, NOW).unwrap();
    assert_eq!(ledger.read(&s[1].record_key(NOW)).spent, 7);
    assert_eq!(ledger.read(&s[0].record_key(NOW)).spent, 7);
}

/// One burst: `requests` concurrent requests on one key whose budget has room for about
/// `room` estimates, interleaved at random; actual costs between 0 and twice the estimate.
/// Returns (final spent, budget, the exact bound of the derivation, the formula's bound).
fn burst(seed: u64, requests: usize, room: u64) -> (u64, u64, u64, u64) {
    let kv = MemKv::default();
    let ledger = BudgetLedger { kv: &kv };
    let estimate = 10_000u64;
    let budget = room * estimate + estimate / 3;
    let s = [scope(ScopeLevel::Key, "burst", budget)];
    let key = s[0].record_key(NOW);
    let mut rng = Rng(seed | 1);
    let mut started = 0;
    // In flight: (reservation, actual cost it will have).
    let mut in_flight: Vec<(Reservation, u64)> = Vec::new();
    let mut max_in_flight = 0u64;
    let mut max_error = 0u64;
    // Positive errors of the requests in flight right after the latest admission.
    let mut errors_after_last: Vec<u64> = Vec::new();
    while started < requests || !in_flight.is_empty() {
        let start = started < requests && (in_flight.is_empty() || rng.below(10) < 7);
        if start {
            started += 1;
            let before = ledger.read(&key);
            match ledger.reserve(&s, estimate, NOW) {
                Ok(r) => {
                    let actual = rng.below(2 * estimate + 1);
                    max_error = max_error.max(actual.saturating_sub(estimate));
                    in_flight.push((r, actual));
                    max_in_flight = max_in_flight.max(in_flight.len() as u64);
                    // A new admission: what can still overshoot is everything now in flight.
                    errors_after_last = in_flight.iter().map(|(_, a)| a.saturating_sub(estimate)).collect();
                }
                Err(BudgetError::Refused(_)) => {
                    // (b): a refusal only when the request did not fit.
                    assert!(
                        before.spent + before.reserved + estimate > budget,
                        "seed {seed}: refused with room: {before:?}"
                    );
                }
                Err(e) => panic!("{e}"),
            }
        } else {
            let i = rng.below(in_flight.len() as u64) as usize;
            let (r, actual) = in_flight.swap_remove(i);
            // One in ten fails or is abandoned: its reservation comes back.
            if rng.below(10) == 0 {
                ledger.release(&r).unwrap();
            } else {
                ledger.settle(&r, actual).unwrap();
            }
        }
        let rec = ledger.read(&key);
        assert_eq!(rec.in_flight, in_flight.len() as u64);
    }
    let rec = ledger.read(&key);
    assert_eq!((rec.reserved, rec.in_flight), (0, 0), "every reservation was returned");
    let exact: u64 = errors_after_last.iter().sum();
    (rec.spent, budget, exact, single_replica_bound(max_in_flight, max_error))
}

#[test]
fn a_burst_of_200_on_room_for_50_overshoots_at_most_the_bound() {
    let mut worst = 0;
    for seed in 1..=200 {
        let (spent, budget, exact, formula) = burst(seed, 200, 50);
        assert!(exact <= formula);
        assert!(spent <= budget + exact, "seed {seed}: spent {spent} > {budget} + {exact}");
        worst = worst.max(spent.saturating_sub(budget));
    }
    // Costs up to twice the estimate do overshoot: the bound is not vacuous.
    assert!(worst > 0);
}

#[test]
fn exact_costs_never_overshoot() {
    let kv = MemKv::default();
    let ledger = BudgetLedger { kv: &kv };
    let s = [scope(ScopeLevel::Key, "k", 505)];
    let holds: Vec<_> = (0..200).filter_map(|_| ledger.reserve(&s, 10, NOW).ok()).collect();
    assert_eq!(holds.len(), 50);
    for r in &holds {
        ledger.settle(r, 10).unwrap();
    }
    assert_eq!(ledger.read(&s[0].record_key(NOW)).spent, 500);
}

#[test]
fn the_multi_replica_bound_adds_what_others_spend_unseen() {
    assert_eq!(single_replica_bound(50, 10_000), 500_000);
    // 3 replicas, 50 in flight each, 20 admissions per window, $0.02 a request at most.
    assert_eq!(multi_replica_bound(3, 50, 10_000, 20, 20_000), 500_000 + 2 * 70 * 20_000);
    assert_eq!(multi_replica_bound(1, 50, 10_000, 20, 20_000), 500_000, "one replica: no staleness");
    // The worked example of docs/budgets.md: $2.36.
    assert_eq!(multi_replica_bound(3, 20, 10_000, 34, 20_000), 2_360_000);
}

/// Several replicas, each with its own shared data, learning the others' spend from a ledger
/// they sync with in turn. Returns (global spent, budget, the multi-replica bound).
fn replicated_burst(seed: u64, replicas: usize, requests: usize, sync_every: usize) -> (u64, u64, u64) {
    let kvs: Vec<MemKv> = (0..replicas).map(|_| MemKv::default()).collect();
    let estimate = 10_000u64;
    let budget = 50 * estimate;
    let s = [scope(ScopeLevel::Key, "k", budget)];
    let key = s[0].record_key(NOW);
    let mut rng = Rng(seed | 1);
    // What the ledger has of each replica (its spend at its last sync).
    let mut synced = vec![0u64; replicas];
    let mut in_flight: Vec<Vec<(Reservation, u64)>> = vec![Vec::new(); replicas];
    let mut admitted_at: Vec<Vec<usize>> = vec![Vec::new(); replicas];
    let (mut started, mut step) = (0, 0);
    let (mut max_in_flight, mut max_error, mut max_cost) = (0u64, 0u64, 0u64);
    while started < requests || in_flight.iter().any(|f| !f.is_empty()) {
        step += 1;
        if step % sync_every == 0 {
            let r = (step / sync_every) % replicas;
            let ledger = BudgetLedger { kv: &kvs[r] };
            synced[r] = ledger.read(&key).spent;
            ledger.apply_ledger(&key, synced.iter().sum(), synced[r]).unwrap();
        }
        let r = rng.below(replicas as u64) as usize;
        let ledger = BudgetLedger { kv: &kvs[r] };
        if started < requests && (in_flight[r].is_empty() || rng.below(10) < 6) {
            started += 1;
            let view = ledger.read(&key);
            match ledger.reserve(&s, estimate, NOW) {
                Ok(res) => {
                    let actual = rng.below(2 * estimate + 1);
                    max_error = max_error.max(actual.saturating_sub(estimate));
                    max_cost = max_cost.max(actual);
                    in_flight[r].push((res, actual));
                    admitted_at[r].push(step);
                    max_in_flight = max_in_flight.max(in_flight[r].len() as u64);
                }
                Err(BudgetError::Refused(_)) => assert!(!view.fits(estimate, budget), "refused with room in view"),
                Err(e) => panic!("{e}"),
            }
        } else if !in_flight[r].is_empty() {
            let i = rng.below(in_flight[r].len() as u64) as usize;
            let (res, actual) = in_flight[r].swap_remove(i);
            ledger.settle(&res, actual).unwrap();
        }
    }
    // Spend settled at one replica is visible to another within two rounds of syncs.
    let staleness = 2 * replicas * sync_every;
    let most_in_window = admitted_at
        .iter()
        .map(|steps| {
            steps.iter().enumerate().map(|(i, s)| steps[i..].partition_point(|t| *t < s + staleness)).max().unwrap_or(0)
        })
        .max()
        .unwrap_or(0) as u64;
    let spent: u64 = kvs.iter().map(|kv| BudgetLedger { kv }.read(&key).spent).sum();
    (spent, budget, multi_replica_bound(replicas as u64, max_in_flight, max_error, most_in_window, max_cost))
}

#[test]
fn replicas_syncing_through_the_ledger_overshoot_at_most_the_multi_replica_bound() {
    for seed in 1..=50 {
        for (replicas, sync_every) in [(2, 3), (3, 5), (4, 20)] {
            let (spent, budget, bound) = replicated_burst(seed, replicas, 300, sync_every);
            assert!(spent <= budget + bound, "seed {seed}, {replicas} replicas: {spent} > {budget} + {bound}");
        }
    }
    // Without syncs each replica would spend its whole budget: the ledger is what holds it.
    let (spent, budget, _) = replicated_burst(7, 3, 300, 1_000_000);
    assert!(spent > 2 * budget);
}
