//! The exact cache: keys, the entry format, the bounded store in shared data, the fast path
//! for byte-identical repeats, and the tee that copies a response on its way to the client.

pub mod entry;
pub mod fastpath;
pub mod key;
pub mod store;
pub mod tee;
