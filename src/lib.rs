//! semgate: an LLM gateway as a proxy-wasm HTTP filter for Envoy.
//!
//! `core` is pure logic (config, requests, keys, SSE, cache store, decisions); `host` is the
//! thin layer that carries the core's decisions out through a small `Host` trait. The trait's
//! implementation over proxy-wasm's ABI exists only in the Wasm module; natively the host
//! layer is tested against an in-memory fake.

pub mod core;
pub mod host;
