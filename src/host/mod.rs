//! The host layer: what the filter asks of Envoy, and the contexts that carry out the core's
//! decisions.
//!
//! - `Host` (this file) is the small set of host calls a context makes. The contexts are
//!   generic over it, so they compile and are tested natively against an in-memory fake
//!   (`tests/`); in the Wasm module it is implemented over the raw ABI (`envoy`).
//! - `callouts`: the one table of HTTP callouts in flight (token -> continuation).
//! - `downstream`: the downstream role's HTTP context (the gateway filter in the listener).
//! - `upstream`: the upstream role's HTTP context (the per-attempt provider adapter on a
//!   chain's aggregate cluster); each role has its own root context, chosen by `root_id`.
//! - Wasm only: `abi` (raw host calls), `shared` (shared data as the core's `SharedData`),
//!   `metrics` (Envoy stats), `envoy` (proxy-wasm contexts per role, and the `Host` impl).

pub mod callouts;
pub mod downstream;
pub mod upstream;

#[cfg(all(target_arch = "wasm32", not(test)))]
mod abi;
#[cfg(all(target_arch = "wasm32", not(test)))]
mod envoy;
#[cfg(all(target_arch = "wasm32", not(test)))]
mod metrics;
#[cfg(all(target_arch = "wasm32", not(test)))]
mod shared;

use crate::core::cache::store::SharedData;
use crate::core::tally::{Counter, Gauge, LogLevel, ModelCounter, Tally};
use crate::core::wire::headermap::HeaderMap;

/// A proxy-wasm status other than Ok: the host refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostError(pub u32);

/// Header maps a context reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Map {
    Request = 0,
    Response = 2,
    CallResponse = 6,
}

/// Buffers a context reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Buffer {
    RequestBody = 0,
    ResponseBody = 1,
    CallResponseBody = 4,
    PluginConfiguration = 7,
}

/// What a callback tells Envoy: go on, or hold the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Pause,
}

/// The host calls the contexts make. Every refusal is an `Err`, never a trap.
pub trait Host {
    type Shared: SharedData;

    fn shared_data(&self) -> &Self::Shared;
    /// All headers of a map in one call (empty when the host refuses).
    fn headers(&self, map: Map) -> HeaderMap;
    fn set_header(&self, map: Map, name: &str, value: &str) -> Result<(), HostError>;
    fn remove_header(&self, map: Map, name: &str) -> Result<(), HostError>;
    fn buffer(&self, buffer: Buffer, start: usize, max: usize) -> Result<Vec<u8>, HostError>;
    /// Replace `len` bytes at `start` of a body buffer (the upstream role rewrites bodies).
    fn replace_buffer(&self, buffer: Buffer, start: usize, len: usize, data: &[u8]) -> Result<(), HostError>;
    fn send_local_reply(&self, status: u16, headers: &[(&str, &str)], body: &[u8]) -> Result<(), HostError>;
    /// An HTTP callout; the answer comes back to the context with the returned token.
    fn dispatch(&self, cluster: &str, headers: &[(&str, &str)], body: &[u8], timeout_ms: u64)
        -> Result<u32, HostError>;
    /// Let a request held in the body phase go on (after a callout answered).
    fn resume_request(&self) -> Result<(), HostError>;
    /// A property such as `["xds", "route_name"]`; `None` when absent or refused.
    fn property(&self, path: &[&str]) -> Option<Vec<u8>>;
    /// Set this request's filter state `wasm.<name>` (printed by access logs with
    /// `%FILTER_STATE(wasm.<name>:PLAIN)%`).
    fn set_property(&self, name: &str, value: &str) -> Result<(), HostError>;
    fn now_ms(&self) -> u64;
    fn log(&self, level: LogLevel, msg: &str);
    fn count(&self, c: Counter, n: u64);
    /// A counter named at run time (labelled chargeback counters), defined on first use.
    fn count_named(&self, name: &str, n: u64);
    /// A counter per provider (when given) and `models` entry.
    fn count_model(&self, c: ModelCounter, provider: Option<&str>, model: &str, n: u64);
    fn gauge(&self, g: Gauge, v: u64);
}

/// The core reports into the host's metrics and log.
pub struct HostTally<'a, H: Host>(pub &'a H);

impl<H: Host> Tally for HostTally<'_, H> {
    fn count_named(&mut self, name: String, n: u64) {
        self.0.count_named(&name, n);
    }
    fn count(&mut self, c: Counter, n: u64) {
        if n > 0 {
            self.0.count(c, n);
        }
    }
    fn gauge(&mut self, g: Gauge, v: u64) {
        self.0.gauge(g, v);
    }
    fn log(&mut self, level: LogLevel, msg: String) {
        self.0.log(level, &msg);
    }
}

/// The filter's roles in one module, chosen by the plugin's `root_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The gateway filter in the listener's HTTP chain (`root_id: semgate`).
    Downstream,
    /// The per-attempt provider adapter on a chain's aggregate cluster (`root_id:
    /// semgate_upstream`).
    Upstream,
}

impl Role {
    /// The shipped configs say `semgate`; an empty root id is the downstream role too.
    pub fn for_root_id(root_id: &str) -> Option<Role> {
        match root_id {
            "" | "semgate" | "semgate_downstream" => Some(Role::Downstream),
            crate::core::upstream::ROOT_ID => Some(Role::Upstream),
            _ => None,
        }
    }
}

#[cfg(test)]
#[path = "tests/downstream_tests.rs"]
mod tests;
