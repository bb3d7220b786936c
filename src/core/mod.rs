//! The gateway's pure logic: no host calls, every decision a function of its inputs, so all
//! of it is unit-tested natively (and compiled to Wasm under Node's WASI in CI).

pub mod auth;
pub mod budget;
pub mod config;
pub mod entry;
pub mod errors;
pub mod fastpath;
pub mod gateway;
pub mod headermap;
pub mod key;
pub mod providers;
pub mod request;
pub mod semantic;
pub mod sse;
pub mod store;
pub mod upstream;
