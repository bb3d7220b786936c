//! The Redis ledger against a real `redis-server`, started here on a free port; skipped (with
//! a note) when `redis-server` is not installed.

use super::*;
use crate::ledger::FileLedger;
use std::process::{Child, Command, Stdio};

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Option<Server> {
    let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(child) = child else {
        eprintln!("redis-server not installed: skipping the Redis ledger test");
        return None;
    };
    let server = Server { child, port };
    for _ in 0..100 {
        if RespConn::connect(&format!("127.0.0.1:{port}")).and_then(|mut c| c.command(&[b"PING"])).is_ok() {
            return Some(server);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("redis-server did not start on port {}", server.port);
}

const NOW: u64 = 1_796_212_800_000; // 2026-12-02T12:00Z

fn req(replica: &str, sync_id: &str, spent: u64) -> SyncRequest {
    serde_json::from_value(serde_json::json!({"replica": replica, "sync_id": sync_id, "deltas": [
        {"key_id": "search-prod", "team": "search", "customer": "ac:me \"x\"", "period": "2026-12-02",
         "spent_micros": spent, "requests": 1, "saved_micros": 3}]}))
    .unwrap()
}

#[test]
fn resp_replies_parse() {
    let mut r = std::io::Cursor::new(b"*3\r\n$3\r\nfoo\r\n:-7\r\n$-1\r\n+OK\r\n-ERR bad\r\n".to_vec());
    assert_eq!(
        read_reply(&mut r).unwrap(),
        Reply::Array(Some(vec![Reply::Bulk(Some(b"foo".to_vec())), Reply::Int(-7), Reply::Bulk(None)]))
    );
    assert_eq!(read_reply(&mut r).unwrap(), Reply::Simple("OK".into()));
    assert_eq!(read_reply(&mut r).unwrap(), Reply::Error("ERR bad".into()));
    assert!(read_reply(&mut r).is_err(), "end of input");
}

#[test]
fn the_redis_ledger_counts_each_sync_once_and_shares_totals() {
    let Some(server) = start() else { return };
    let url = format!("redis://127.0.0.1:{}/3", server.port);
    let a = RedisLedger::open(&url).unwrap();
    let b = RedisLedger::open(&url).unwrap();
    let first = a.sync(&req("r1", "1", 100), NOW).unwrap();
    assert!(!first.replayed);
    // A replay through another sidecar is still a replay.
    let again = b.sync(&req("r1", "1", 100), NOW).unwrap();
    assert!(again.replayed);
    assert_eq!(again.totals, first.totals);
    let other = b.sync(&req("r2", "1", 50), NOW).unwrap();
    let month = other.totals.keys.iter().find(|r| r.period == "2026-12").unwrap();
    assert_eq!((month.spent_micros, month.own_spent_micros), (150, Some(50)));
    let customer = &other.totals.customers[0];
    assert_eq!(customer.id, "search-prod/ac:me \"x\"", "names with separators and quotes survive");
    assert_eq!((customer.requests, customer.saved_micros), (2, 6));
    // The same answer shape as the embedded ledger.
    let embedded = FileLedger::in_memory();
    embedded.sync(&req("r1", "1", 100), NOW).unwrap();
    let e = embedded.sync(&req("r2", "1", 50), NOW).unwrap();
    assert_eq!(e.totals, other.totals);
    assert_eq!(a.totals().unwrap(), embedded.totals().unwrap());
    // An invalid sync is refused before Redis sees it.
    let mut bad = req("r3", "1", 1);
    bad.deltas[0].period = "2026-12".into();
    assert!(matches!(a.sync(&bad, NOW), Err(LedgerError::Invalid(_))));
}

#[test]
fn the_redis_ledger_reconnects_after_a_dropped_connection() {
    let Some(server) = start() else { return };
    let url = format!("redis://127.0.0.1:{}", server.port);
    let l = RedisLedger::open(&url).unwrap();
    l.sync(&req("r1", "1", 10), NOW).unwrap();
    // Kill every client connection from the server side.
    let mut admin = RespConn::connect(&format!("127.0.0.1:{}", server.port)).unwrap();
    admin.command(&[b"CLIENT", b"KILL", b"TYPE", b"normal", b"SKIPME", b"yes"]).unwrap();
    assert!(l.sync(&req("r1", "2", 10), NOW).is_ok(), "reconnected once");
    assert_eq!(l.totals().unwrap().keys.iter().find(|r| r.period == "2026-12").unwrap().spent_micros, 20);
    assert!(RedisLedger::open("http://x").is_err());
}
