//! The few proxy-wasm host calls the filter makes, wrapped so that every refusal is an
//! `Err(status)`. The SDK's own wrappers `panic!` on unexpected statuses (e.g. a header write
//! after the headers left), and a panic traps the VM for every later request on that worker.

use crate::core::tally::LogLevel;
use crate::core::wire::headermap::{self, HeaderMap};
use crate::host::{Buffer, HostError, Map};
use std::ptr::null_mut;

const OK: u32 = 0;
const NOT_FOUND: u32 = 1;
const CAS_MISMATCH: u32 = 4;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_pairs(map: u32, out: *mut *mut u8, out_len: *mut usize) -> u32;
    fn proxy_replace_header_map_value(map: u32, key: *const u8, key_len: usize, val: *const u8, val_len: usize) -> u32;
    fn proxy_remove_header_map_value(map: u32, key: *const u8, key_len: usize) -> u32;
    fn proxy_get_buffer_bytes(buffer: u32, start: usize, max: usize, out: *mut *mut u8, out_len: *mut usize) -> u32;
    #[allow(clippy::too_many_arguments)]
    fn proxy_send_local_response(
        status: u32,
        details: *const u8,
        details_len: usize,
        body: *const u8,
        body_len: usize,
        headers: *const u8,
        headers_len: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_get_property(path: *const u8, path_len: usize, out: *mut *mut u8, out_len: *mut usize) -> u32;
    fn proxy_get_shared_data(
        key: *const u8,
        key_len: usize,
        out: *mut *mut u8,
        out_len: *mut usize,
        cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(key: *const u8, key_len: usize, val: *const u8, val_len: usize, cas: u32) -> u32;
    fn proxy_log(level: u32, msg: *const u8, msg_len: usize) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
    fn proxy_set_buffer_bytes(buffer: u32, start: usize, len: usize, data: *const u8, data_len: usize) -> u32;
}

/// Let a request held in the body phase go on (after a callout answered).
pub fn resume_request() -> Result<(), HostError> {
    // SAFETY: no pointers.
    match unsafe { proxy_continue_stream(0) } {
        OK => Ok(()),
        s => Err(HostError(s)),
    }
}

/// An HTTP callout to an Envoy cluster. Goes through the SDK so that its dispatcher routes
/// the answer back to the context that sent it (`on_http_call_response`).
pub fn http_call(cluster: &str, headers: &[(&str, &str)], body: &[u8], timeout_ms: u64) -> Result<u32, HostError> {
    proxy_wasm::hostcalls::dispatch_http_call(
        cluster,
        headers.to_vec(),
        Some(body),
        vec![],
        std::time::Duration::from_millis(timeout_ms),
    )
    .map_err(|s| HostError(s as u32))
}

/// Log to Envoy's log (component `wasm`); a refused log line is dropped, never a trap.
pub fn log(level: LogLevel, msg: &str) {
    let level = match level {
        LogLevel::Info => 2,
        LogLevel::Warn => 3,
        LogLevel::Error => 4,
        LogLevel::Critical => 5,
    };
    // SAFETY: pointers are valid for the duration of the call.
    let _ = unsafe { proxy_log(level, msg.as_ptr(), msg.len()) };
}

/// Milliseconds since the epoch by the host's clock (0 if refused).
pub fn now_ms() -> u64 {
    proxy_wasm::hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

/// Take ownership of bytes the host allocated through the SDK's `proxy_on_memory_allocate`.
unsafe fn owned(ptr: *mut u8, len: usize) -> Vec<u8> {
    if ptr.is_null() {
        Vec::new()
    } else {
        Vec::from_raw_parts(ptr, len, len)
    }
}

/// All headers of a map in one host call (one copy, one allocation, read in place).
pub fn get_headers(map: Map) -> HeaderMap {
    let mut out = null_mut();
    let mut len = 0;
    // SAFETY: pointers are valid for the call; the host fills out/len with an allocation we own.
    if unsafe { proxy_get_header_map_pairs(map as u32, &mut out, &mut len) } != OK {
        return HeaderMap::default();
    }
    // SAFETY: on Ok the host handed us `len` bytes at `out`.
    HeaderMap(unsafe { owned(out, len) })
}

pub fn set_header(map: Map, key: &str, value: &str) -> Result<(), HostError> {
    // SAFETY: pointers are valid for the duration of the call.
    match unsafe { proxy_replace_header_map_value(map as u32, key.as_ptr(), key.len(), value.as_ptr(), value.len()) } {
        OK => Ok(()),
        s => Err(HostError(s)),
    }
}

pub fn remove_header(map: Map, key: &str) -> Result<(), HostError> {
    // SAFETY: pointers are valid for the duration of the call.
    match unsafe { proxy_remove_header_map_value(map as u32, key.as_ptr(), key.len()) } {
        OK | NOT_FOUND => Ok(()),
        s => Err(HostError(s)),
    }
}

/// Replace `len` bytes at `start` of a body buffer with `data` (the whole chunk: 0, its size).
pub fn set_buffer(buffer: Buffer, start: usize, len: usize, data: &[u8]) -> Result<(), HostError> {
    // SAFETY: pointers are valid for the duration of the call.
    match unsafe { proxy_set_buffer_bytes(buffer as u32, start, len, data.as_ptr(), data.len()) } {
        0 => Ok(()),
        s => Err(HostError(s)),
    }
}

pub fn get_buffer(buffer: Buffer, start: usize, max: usize) -> Result<Vec<u8>, HostError> {
    let mut out = null_mut();
    let mut len = 0;
    // SAFETY: as in get_headers.
    match unsafe { proxy_get_buffer_bytes(buffer as u32, start, max, &mut out, &mut len) } {
        OK => Ok(unsafe { owned(out, len) }),
        NOT_FOUND => Ok(Vec::new()),
        s => Err(HostError(s)),
    }
}

/// The response code details of every local reply semgate sends (`%RESPONSE_CODE_DETAILS%`):
/// the shipped `local_reply_config` rewrites Envoy's own replies and leaves these alone.
pub const LOCAL_REPLY_DETAILS: &str = "semgate";

/// Answer the request locally. Headers use proxy-wasm's map encoding: count, sizes, then
/// NUL-terminated names and values.
pub fn send_local_response(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Result<(), HostError> {
    let map = headermap::encode(headers);
    let details = LOCAL_REPLY_DETAILS;
    // SAFETY: pointers are valid for the duration of the call.
    match unsafe {
        proxy_send_local_response(
            status as u32,
            details.as_ptr(),
            details.len(),
            body.as_ptr(),
            body.len(),
            map.as_ptr(),
            map.len(),
            -1,
        )
    } {
        OK => Ok(()),
        s => Err(HostError(s)),
    }
}

/// A property such as `["xds", "route_name"]`; `None` when absent or refused.
pub fn get_property(path: &[&str]) -> Option<Vec<u8>> {
    let joined = path.join("\0");
    let mut out = null_mut();
    let mut len = 0;
    // SAFETY: as in get_headers.
    match unsafe { proxy_get_property(joined.as_ptr(), joined.len(), &mut out, &mut len) } {
        OK => Some(unsafe { owned(out, len) }),
        _ => None,
    }
}

/// Shared data value and its CAS version; `None` when the key does not exist.
pub fn get_shared(key: &str) -> Option<(Vec<u8>, u32)> {
    let mut out = null_mut();
    let mut len = 0;
    let mut cas = 0;
    // SAFETY: as in get_headers.
    match unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut out, &mut len, &mut cas) } {
        OK => Some((unsafe { owned(out, len) }, cas)),
        _ => None,
    }
}

pub enum SharedSetError {
    CasMismatch,
    Other,
}

pub fn set_shared(key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SharedSetError> {
    // SAFETY: pointers are valid for the duration of the call.
    match unsafe { proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas.unwrap_or(0)) } {
        OK => Ok(()),
        CAS_MISMATCH => Err(SharedSetError::CasMismatch),
        _ => Err(SharedSetError::Other),
    }
}
