//! The one table of HTTP callouts in flight: a token -> continuation map per context, so
//! several callouts can be out at once (a lookup and a store per request; a ledger sync at the
//! root). An answer whose token is not in the table (late, or never ours) is counted and
//! ignored.

use crate::core::downstream::Callout;
use crate::core::tally::Counter;
use crate::host::{Host, HostError};
use std::collections::BTreeMap;

/// The `:authority` of every sidecar callout (the cluster decides where it goes).
const SIDECAR_AUTHORITY: &str = "semgate-sidecar";

#[derive(Debug)]
pub struct Callouts<C> {
    in_flight: BTreeMap<u32, C>,
}

impl<C> Default for Callouts<C> {
    fn default() -> Self {
        Callouts { in_flight: BTreeMap::new() }
    }
}

impl<C> Callouts<C> {
    /// Send `call`; its answer continues with `then`.
    pub fn send<H: Host>(&mut self, host: &H, call: &Callout, then: C) -> Result<u32, HostError> {
        let mut headers = Vec::with_capacity(5);
        headers.extend([
            (":method", "POST"),
            (":path", call.path),
            (":authority", SIDECAR_AUTHORITY),
            ("content-type", "application/json"),
        ]);
        if let Some(a) = call.authorization {
            headers.push(("authorization", a));
        }
        let token = host.dispatch(call.cluster, &headers, &call.body, call.timeout_ms)?;
        self.in_flight.insert(token, then);
        Ok(token)
    }

    /// The continuation of an answer; `None` (counted) when the token is not ours.
    pub fn answer<H: Host>(&mut self, host: &H, token: u32) -> Option<C> {
        let then = self.in_flight.remove(&token);
        if then.is_none() {
            host.count(Counter::UnknownCallouts, 1);
        }
        then
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
}
