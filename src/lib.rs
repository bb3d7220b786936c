//! semgate: an LLM gateway as a proxy-wasm HTTP filter for Envoy.
//!
//! `core` is pure logic (config, requests, keys, SSE, cache store, decisions); `host` is the
//! thin proxy-wasm layer that moves bytes between Envoy and the core. The host layer only
//! exists in the Wasm module, so native builds and tests link the core alone.

pub mod core;

#[cfg(all(target_arch = "wasm32", not(test)))]
mod host;
