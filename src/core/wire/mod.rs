//! Byte formats the filter reads and writes in place: proxy-wasm header maps and SSE streams.

pub mod headermap;
pub mod sse;
