//! The ledger in Redis (`--ledger redis://host:port[/db]`), for several sidecars sharing one
//! ledger. A minimal RESP2 client over a std `TcpStream` (the ledger needs five commands, not a
//! client crate). A sync is applied by one Lua script, atomically: it checks and marks
//! `(replica, sync_id)` and adds every row, so a replay or a concurrent duplicate counts once.
//!
//! Layout: `semgate:ledger:t:["key","<id>","<period>"]` is a hash {spent, requests, saved,
//! r:<replica>}; `semgate:ledger:index` the set of those keys; `semgate:ledger:sync:<replica>
//! :<sync_id>` marks a sync as applied for `SEEN_TTL_S`. The script touches keys it does not
//! declare, so it needs a single Redis, not Redis Cluster.

use super::{group, rollup, validate, LedgerError, LedgerStore, Level, Total};
use semgate::core::budget::ledger::{current_periods, SyncRequest, SyncResponse, Totals};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::Mutex;
use std::time::Duration;

/// How long an applied sync id is remembered (replicas resend within seconds).
pub const SEEN_TTL_S: u64 = 30 * 86_400;
const INDEX: &str = "semgate:ledger:index";

const APPLY: &str = r#"
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[2]) == false then return 0 end
local i = 4
for _ = 1, tonumber(ARGV[3]) do
  local k = ARGV[i]
  redis.call('HINCRBY', k, 'spent', ARGV[i + 1])
  redis.call('HINCRBY', k, 'requests', ARGV[i + 2])
  redis.call('HINCRBY', k, 'saved', ARGV[i + 3])
  redis.call('HINCRBY', k, 'r:' .. ARGV[1], ARGV[i + 1])
  redis.call('SADD', 'semgate:ledger:index', k)
  i = i + 4
end
return 1
"#;

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

pub struct RespConn {
    reader: BufReader<TcpStream>,
}

/// Connection faults are `Io` (the connection is dropped and retried once); anything Redis
/// answered is `Backend`.
fn io(e: std::io::Error) -> LedgerError {
    LedgerError::Io(e)
}

fn protocol(what: &str) -> LedgerError {
    LedgerError::Backend(format!("redis: unexpected reply: {what}"))
}

impl RespConn {
    pub fn connect(addr: &str) -> Result<Self, LedgerError> {
        let stream = TcpStream::connect(addr).map_err(io)?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).map_err(io)?;
        stream.set_write_timeout(Some(Duration::from_secs(5))).map_err(io)?;
        stream.set_nodelay(true).map_err(io)?;
        Ok(RespConn { reader: BufReader::new(stream) })
    }

    pub fn command(&mut self, args: &[&[u8]]) -> Result<Reply, LedgerError> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        self.reader.get_mut().write_all(&out).map_err(io)?;
        match read_reply(&mut self.reader)? {
            Reply::Error(e) => Err(LedgerError::Backend(format!("redis: {e}"))),
            r => Ok(r),
        }
    }
}

fn read_line(r: &mut impl BufRead) -> Result<String, LedgerError> {
    let mut line = String::new();
    if r.read_line(&mut line).map_err(io)? == 0 {
        return Err(io(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "redis closed the connection")));
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// One reply, recursively for arrays.
pub fn read_reply(r: &mut impl BufRead) -> Result<Reply, LedgerError> {
    let line = read_line(r)?;
    let (kind, rest) = line.split_at(line.len().min(1));
    let int = || rest.parse::<i64>().map_err(|_| protocol(&line));
    Ok(match kind {
        "+" => Reply::Simple(rest.to_string()),
        "-" => Reply::Error(rest.to_string()),
        ":" => Reply::Int(int()?),
        "$" => match int()? {
            n if n < 0 => Reply::Bulk(None),
            n if n > 512 << 20 => return Err(protocol("bulk too large")),
            n => {
                let mut buf = vec![0u8; n as usize + 2];
                r.read_exact(&mut buf).map_err(io)?;
                buf.truncate(n as usize);
                Reply::Bulk(Some(buf))
            }
        },
        "*" => match int()? {
            n if n < 0 => Reply::Array(None),
            n => Reply::Array(Some((0..n).map(|_| read_reply(r)).collect::<Result<_, _>>()?)),
        },
        _ => return Err(protocol(&line)),
    })
}

fn bulk_strings(reply: Reply) -> Result<Vec<String>, LedgerError> {
    match reply {
        Reply::Array(Some(items)) => items
            .into_iter()
            .map(|i| match i {
                Reply::Bulk(Some(b)) => Ok(String::from_utf8_lossy(&b).into_owned()),
                other => Err(protocol(&format!("{other:?}"))),
            })
            .collect(),
        other => Err(protocol(&format!("{other:?}"))),
    }
}

pub struct RedisLedger {
    addr: String,
    db: Option<String>,
    conn: Mutex<Option<RespConn>>,
}

fn total_key(level: Level, id: &str, period: &str) -> String {
    let name = serde_json::to_string(&(level, id, period)).unwrap_or_default();
    format!("semgate:ledger:t:{name}")
}

fn parse_total_key(key: &str) -> Option<(Level, String, String)> {
    serde_json::from_str(key.strip_prefix("semgate:ledger:t:")?).ok()
}

impl RedisLedger {
    /// `redis://host:port` or `redis://host:port/db` (no auth, no TLS: keep Redis private).
    pub fn open(url: &str) -> Result<Self, LedgerError> {
        let rest = url
            .strip_prefix("redis://")
            .ok_or_else(|| LedgerError::Invalid("ledger URL must be redis://host:port[/db]".into()))?;
        let (addr, db) = match rest.split_once('/') {
            Some((a, d)) if !d.is_empty() => (a, Some(d.to_string())),
            Some((a, _)) => (a, None),
            None => (rest, None),
        };
        let ledger = RedisLedger { addr: addr.to_string(), db, conn: Mutex::new(None) };
        ledger.with_conn(|c| c.command(&[b"PING"]).map(|_| ()))?;
        Ok(ledger)
    }

    /// Run `f` on the connection, reconnecting once if it broke.
    fn with_conn<T>(&self, mut f: impl FnMut(&mut RespConn) -> Result<T, LedgerError>) -> Result<T, LedgerError> {
        let mut guard = self.conn.lock().map_err(|_| LedgerError::Backend("redis lock poisoned".into()))?;
        for attempt in 0..2 {
            if guard.is_none() {
                let mut c = RespConn::connect(&self.addr)?;
                if let Some(db) = &self.db {
                    c.command(&[b"SELECT", db.as_bytes()])?;
                }
                *guard = Some(c);
            }
            let Some(conn) = guard.as_mut() else { continue };
            match f(conn) {
                Ok(v) => return Ok(v),
                // A broken connection is dropped and retried once; a Redis error is not.
                Err(LedgerError::Io(_)) if attempt == 0 => *guard = None,
                Err(e) => return Err(e),
            }
        }
        Err(LedgerError::Backend("redis: unreachable".into()))
    }

    fn read_totals(&self, periods: Option<&[String]>, replica: Option<&str>) -> Result<Totals, LedgerError> {
        self.with_conn(|c| {
            let keys = bulk_strings(c.command(&[b"SMEMBERS", INDEX.as_bytes()])?)?;
            let mut rows = Vec::new();
            for key in keys {
                let Some((level, id, period)) = parse_total_key(&key) else { continue };
                if periods.is_some_and(|ps| !ps.contains(&period)) {
                    continue;
                }
                let fields = bulk_strings(c.command(&[b"HGETALL", key.as_bytes()])?)?;
                let mut t = Total::default();
                for pair in fields.chunks_exact(2) {
                    let n = pair[1].parse::<u64>().unwrap_or(0);
                    match pair[0].as_str() {
                        "spent" => t.spent_micros = n,
                        "requests" => t.requests = n,
                        "saved" => t.saved_micros = n,
                        f => {
                            if let Some(r) = f.strip_prefix("r:") {
                                t.by_replica.insert(r.to_string(), n);
                            }
                        }
                    }
                }
                rows.push((level, super::row(&id, &period, &t, replica)));
            }
            rows.sort_by(|a, b| (a.0, &a.1.id, &a.1.period).cmp(&(b.0, &b.1.id, &b.1.period)));
            Ok(group(rows.into_iter()))
        })
    }
}

impl LedgerStore for RedisLedger {
    fn sync(&self, req: &SyncRequest, now_ms: u64) -> Result<SyncResponse, LedgerError> {
        validate(req)?;
        let rows = rollup(req);
        let seen = format!("semgate:ledger:sync:{}:{}", req.replica, req.sync_id);
        let mut args: Vec<Vec<u8>> = vec![
            b"EVAL".to_vec(),
            APPLY.as_bytes().to_vec(),
            b"1".to_vec(),
            seen.into_bytes(),
            req.replica.as_bytes().to_vec(),
            SEEN_TTL_S.to_string().into_bytes(),
            rows.len().to_string().into_bytes(),
        ];
        for ((level, id, period), (spent, requests, saved)) in &rows {
            args.push(total_key(*level, id, period).into_bytes());
            for n in [spent, requests, saved] {
                // HINCRBY takes a signed 64-bit integer; micro-dollars fit far below it.
                args.push(n.min(&(i64::MAX as u64)).to_string().into_bytes());
            }
        }
        let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        let applied = match self.with_conn(|c| c.command(&refs))? {
            Reply::Int(n) => n == 1,
            other => return Err(protocol(&format!("{other:?}"))),
        };
        let totals = self.read_totals(Some(&current_periods(now_ms)), Some(&req.replica))?;
        Ok(SyncResponse { replayed: !applied, totals })
    }

    fn totals(&self) -> Result<Totals, LedgerError> {
        self.read_totals(None, None)
    }
}

#[cfg(test)]
#[path = "../tests/ledger_redis_tests.rs"]
mod tests;
