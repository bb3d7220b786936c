//! The gateway's pure logic: no host calls, every decision a function of its inputs, so all
//! of it is unit-tested natively (and compiled to Wasm under Node's WASI in CI).
//!
//! - `config`, `auth`, `gateway`: the configuration, validated and compiled once at load.
//! - `request`, `semantic`, `protocol`: the client's request, the semantic layer's query and
//!   the sidecar protocol (defined once, also compiled by the sidecar).
//! - `cache`: keys, entries, the bounded shared-data store, the fast path, the response tee.
//! - `wire`: header maps and SSE, read in place.
//! - `downstream`: the request path as decisions (headers, body, callout answer, response);
//!   `upstream`: the per-attempt provider adapter's decisions.
//! - `budget`, `providers`: governance and provider translation.
//! - `errors`: every client-facing error and its one renderer.

pub mod auth;
pub mod budget;
pub mod cache;
pub mod config;
pub mod downstream;
pub mod errors;
pub mod gateway;
pub mod protocol;
pub mod providers;
pub mod request;
pub mod semantic;
pub mod tally;
pub mod upstream;
pub mod wire;

// The flat paths of before `cache/` and `wire/`, for code written against them.
pub use cache::{entry, fastpath, key, store};
pub use wire::{headermap, sse};
