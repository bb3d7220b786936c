//! The ledger driven through its router in-process, and its journal across restarts.

use super::*;
use axum::body::Body;
use axum::http::Request;
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use tower::ServiceExt;

/// 2026-12-02T12:00Z: day 2026-12-02, week 2026-W49, month 2026-12.
const NOW: u64 = 1_796_212_800_000;

fn app_with(store: Arc<dyn LedgerStore>) -> Router {
    routes(LedgerState { store, clock: Arc::new(|| NOW) })
}

fn app() -> Router {
    app_with(Arc::new(FileLedger::in_memory()))
}

async fn call(app: &Router, method: &str, uri: &str, body: Value) -> (StatusCode, Value) {
    let req = Request::builder().method(method).uri(uri).header("content-type", "application/json");
    let req = if method == "GET" { req.body(Body::empty()) } else { req.body(Body::from(body.to_string())) }.unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned())))
}

fn sync_body(replica: &str, sync_id: &str, spent: u64) -> Value {
    json!({"replica": replica, "sync_id": sync_id, "deltas": [
        {"key_id": "search-prod", "team": "search", "customer": "acme", "period": "2026-12-02",
         "spent_micros": spent, "requests": 2, "saved_micros": 5},
        {"key_id": "search-prod", "team": "search", "period": "2026-12-01", "spent_micros": 1, "requests": 1}]})
}

fn row<'a>(v: &'a Value, group: &str, id: &str, period: &str) -> &'a Value {
    v[group].as_array().unwrap().iter().find(|r| r["id"] == id && r["period"] == period).unwrap_or(&Value::Null)
}

#[tokio::test]
async fn a_sync_answers_the_current_periods_rolled_up_from_days() {
    let app = app();
    let (s, v) = call(&app, "POST", "/v1/ledger/sync", sync_body("r1", "1", 100)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["replayed"], false);
    let t = &v["totals"];
    // Today holds one delta; the week and the month hold both days.
    assert_eq!(row(t, "keys", "search-prod", "2026-12-02")["spent_micros"], 100);
    assert_eq!(row(t, "keys", "search-prod", "2026-W49")["spent_micros"], 101);
    assert_eq!(row(t, "keys", "search-prod", "2026-12")["requests"], 3);
    assert_eq!(row(t, "teams", "search", "2026-12")["spent_micros"], 101);
    let c = row(t, "customers", "search-prod/acme", "2026-12-02");
    assert_eq!((c["spent_micros"].as_u64(), c["saved_micros"].as_u64()), (Some(100), Some(5)));
    assert_eq!(row(t, "keys", "search-prod", "2026-12-01"), &Value::Null, "yesterday is not current");
    assert_eq!(row(t, "keys", "search-prod", "2026-12")["own_spent_micros"], 101);
}

#[tokio::test]
async fn a_replayed_sync_answers_the_same_totals_and_counts_nothing_twice() {
    let app = app();
    let (_, first) = call(&app, "POST", "/v1/ledger/sync", sync_body("r1", "7", 100)).await;
    let (s, again) = call(&app, "POST", "/v1/ledger/sync", sync_body("r1", "7", 100)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(again["replayed"], true);
    assert_eq!(again["totals"], first["totals"]);
    // The same id from another replica is another sync.
    let (_, other) = call(&app, "POST", "/v1/ledger/sync", sync_body("r2", "7", 50)).await;
    assert_eq!(other["replayed"], false);
    let k = row(&other["totals"], "keys", "search-prod", "2026-12-02");
    assert_eq!((k["spent_micros"].as_u64(), k["own_spent_micros"].as_u64()), (Some(150), Some(50)));
    let (_, r1) = call(&app, "POST", "/v1/ledger/sync", json!({"replica": "r1", "sync_id": "8"})).await;
    let k = row(&r1["totals"], "keys", "search-prod", "2026-12-02");
    assert_eq!((k["spent_micros"].as_u64(), k["own_spent_micros"].as_u64()), (Some(150), Some(100)));
}

#[tokio::test]
async fn the_totals_view_shows_every_period_per_key_team_and_customer() {
    let app = app();
    call(&app, "POST", "/v1/ledger/sync", sync_body("r1", "1", 100)).await;
    let (s, v) = call(&app, "GET", "/v1/ledger", Value::Null).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(row(&v, "keys", "search-prod", "2026-12-01")["spent_micros"], 1);
    assert_eq!(row(&v, "teams", "search", "2026-12-02")["requests"], 2);
    assert_eq!(row(&v, "customers", "search-prod/acme", "2026-W49")["saved_micros"], 5);
    assert!(v["keys"][0].get("own_spent_micros").is_none(), "no replica asked");
}

#[tokio::test]
async fn an_invalid_sync_is_refused_whole() {
    let app = app();
    let mut body = sync_body("r1", "1", 100);
    body["deltas"][1]["period"] = json!("2026-12");
    let (s, v) = call(&app, "POST", "/v1/ledger/sync", body).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["error"]["message"].as_str().unwrap().contains("deltas[1].period"), "{v}");
    let (_, v) = call(&app, "GET", "/v1/ledger", Value::Null).await;
    assert_eq!(v["keys"], json!([]), "the valid delta was not applied either");
    let (s, _) = call(&app, "POST", "/v1/ledger/sync", json!({"replica": "r", "sync_id": "1", "extra": 1})).await;
    assert!(s.is_client_error());
    let (s, _) = call(&app, "POST", "/v1/ledger/sync", json!({"replica": "", "sync_id": "1"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let mut body = sync_body("r1", "2", 1);
    body["deltas"][0]["key_id"] = json!("a/b");
    assert_eq!(call(&app, "POST", "/v1/ledger/sync", body).await.0, StatusCode::BAD_REQUEST);
}

static DIRS: AtomicU64 = AtomicU64::new(0);

fn temp_dir() -> PathBuf {
    let n = DIRS.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("semgate-ledger-test-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn req(replica: &str, sync_id: &str, spent: u64) -> SyncRequest {
    serde_json::from_value(sync_body(replica, sync_id, spent)).unwrap()
}

#[test]
fn the_journal_survives_a_restart_and_replays_stay_idempotent() {
    let dir = temp_dir();
    let path = dir.join("ledger").join("journal.jsonl");
    let ledger = FileLedger::open(&path, 1000).unwrap();
    ledger.sync(&req("r1", "1", 100), NOW).unwrap();
    ledger.sync(&req("r2", "1", 40), NOW).unwrap();
    let before = ledger.totals().unwrap();
    drop(ledger);
    let ledger = FileLedger::open(&path, 1000).unwrap();
    assert_eq!(ledger.totals().unwrap(), before);
    let again = ledger.sync(&req("r1", "1", 100), NOW).unwrap();
    assert!(again.replayed, "the seen ids were journaled too");
    assert_eq!(ledger.totals().unwrap(), before);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_torn_last_line_is_skipped_and_compaction_keeps_the_totals() {
    let dir = temp_dir();
    let path = dir.join("journal.jsonl");
    let ledger = FileLedger::open(&path, 5).unwrap();
    for i in 0..12 {
        ledger.sync(&req("r1", &i.to_string(), 10), NOW).unwrap();
    }
    let before = ledger.totals().unwrap();
    assert_eq!(before.keys.iter().find(|r| r.period == "2026-12-02").unwrap().spent_micros, 120);
    // Compaction kept the journal to a snapshot and a few syncs.
    let lines = std::fs::read_to_string(&path).unwrap().lines().count();
    assert!(lines <= 6, "{lines} lines");
    drop(ledger);
    // A crash mid-append leaves half a line.
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(br#"{"sync":{"replica":"r1","sync_id":"99","del"#).unwrap();
    drop(f);
    let ledger = FileLedger::open(&path, 5).unwrap();
    assert_eq!(ledger.totals().unwrap(), before);
    assert!(ledger.sync(&req("r1", "11", 10), NOW).unwrap().replayed);
    assert!(!ledger.sync(&req("r1", "99", 10), NOW).unwrap().replayed, "the torn sync was never counted");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn the_router_serves_a_journaled_ledger() {
    let dir = temp_dir();
    let path = dir.join("journal.jsonl");
    let app = app_with(Arc::new(FileLedger::open(&path, 100).unwrap()));
    let (s, _) = call(&app, "POST", "/v1/ledger/sync", sync_body("r1", "1", 100)).await;
    assert_eq!(s, StatusCode::OK);
    drop(app);
    let app = app_with(Arc::new(FileLedger::open(&path, 100).unwrap()));
    let (_, v) = call(&app, "GET", "/v1/ledger", Value::Null).await;
    assert_eq!(row(&v, "keys", "search-prod", "2026-12")["spent_micros"], 101);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn seen_ids_are_bounded_per_replica() {
    let mut book = LedgerBook::default();
    for i in 0..(SEEN_PER_REPLICA + 10) {
        assert!(book.apply(&req("r", &i.to_string(), 1)));
    }
    assert!(!book.seen("r", "0"), "the oldest ids are forgotten");
    assert!(book.seen("r", &(SEEN_PER_REPLICA + 9).to_string()));
    assert!(!book.apply(&req("r", "4100", 1)));
}

/// Shared data of one replica, as the filter's tests fake it.
#[derive(Default)]
struct Kv(Mutex<std::collections::HashMap<String, (Vec<u8>, u32)>>);

impl semgate::core::store::SharedData for Kv {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.0.lock().unwrap().get(key).cloned()
    }
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), semgate::core::store::SetError> {
        let mut map = self.0.lock().unwrap();
        let version = map.get(key).map(|v| v.1);
        if cas.is_some() && cas != version {
            return Err(semgate::core::store::SetError::CasMismatch);
        }
        map.insert(key.to_string(), (value.to_vec(), version.unwrap_or(0) + 1));
        Ok(())
    }
}

#[tokio::test]
async fn two_replicas_share_one_budget_through_the_ledger() {
    use semgate::core::budget::ledger::{update_book, LedgerDelta};
    use semgate::core::budget::period::Period;
    use semgate::core::budget::reservation::{BudgetError, BudgetLedger, BudgetScope, ScopeLevel};
    let app = app();
    let scope = BudgetScope { level: ScopeLevel::Key, id: "k".into(), limit_micros: 1_000, period: Period::Monthly };
    let replicas = [Kv::default(), Kv::default()];
    // Each replica spends 400 on its own, under the budget in its own view.
    for (i, kv) in replicas.iter().enumerate() {
        let budget = BudgetLedger { kv };
        let r = budget.reserve(std::slice::from_ref(&scope), 400, NOW).unwrap();
        budget.settle(&r, 400).unwrap();
        let day = Period::Daily.window(NOW).id;
        let delta = LedgerDelta {
            key_id: "k".into(),
            team: None,
            customer: Some(format!("c{i}")),
            period: day,
            spent_micros: 400,
            requests: 1,
            saved_micros: 0,
        };
        update_book(kv, |b| b.record(delta.clone())).unwrap();
    }
    // Both sync; the second learns the first's spend, then the first learns the second's.
    for round in 0..2 {
        for (i, kv) in replicas.iter().enumerate() {
            let replica = format!("r{i}");
            let sync = update_book(kv, |b| b.begin_sync(&replica, "e")).unwrap();
            let (s, v) = call(&app, "POST", "/v1/ledger/sync", serde_json::to_value(&sync).unwrap()).await;
            assert_eq!(s, StatusCode::OK, "round {round}: {v}");
            let answer: SyncResponse = serde_json::from_value(v).unwrap();
            assert!(update_book(kv, |b| b.ack(&sync.sync_id)).unwrap());
            let budget = BudgetLedger { kv };
            for (key, row) in answer.totals.record_keys() {
                budget.apply_ledger(&key, row.spent_micros, row.own_spent_micros.unwrap_or(0)).unwrap();
            }
        }
    }
    for kv in &replicas {
        let budget = BudgetLedger { kv };
        assert_eq!(budget.read(&scope.record_key(NOW)).known_spent(), 800);
        assert!(matches!(budget.reserve(std::slice::from_ref(&scope), 201, NOW), Err(BudgetError::Refused(_))));
        assert!(budget.reserve(std::slice::from_ref(&scope), 200, NOW).is_ok());
    }
    let (_, v) = call(&app, "GET", "/v1/ledger", Value::Null).await;
    assert_eq!(row(&v, "customers", "k/c1", "2026-12")["spent_micros"], 400);
    assert_eq!(row(&v, "keys", "k", "2026-12")["requests"], 2);
}
