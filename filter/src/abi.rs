//! The filter's own bindings of the proxy-wasm ABI 0.2.1 hostcalls it uses, each returning the
//! host's status as a number instead of panicking.
//!
//! The SDK's `proxy_wasm::hostcalls` wrappers cannot be used on input: `get_map` unwraps UTF-8 in
//! every header name and value (one `\xff` byte in any request header killed the VM), `get_map_bytes`
//! unwraps it in names, the map parser indexes without bounds checks, and every wrapper panics on
//! a status it does not expect. A panic is `unreachable` in wasm: the VM dies with every request it
//! holds. Here every call answers `Result<_, u32>`; header maps come back as the host's raw bytes,
//! parsed by the checked [`crate::convert::parse_pairs`].
//!
//! This is the only module of the workspace with `unsafe` code: the foreign calls themselves, and
//! taking ownership of the memory the host returns (allocated through the SDK's exported
//! `proxy_on_memory_allocate`, a forgotten `Vec<u8>` of exactly that size, as the SDK's own
//! wrappers assume). `dispatch_http_call` stays the SDK's: it registers the callout with the SDK's
//! dispatcher, which routes the response; it panics only on a status outside the ABI's list for
//! that call (docs/SECURITY.md, "Trap audit").
#![allow(
    unsafe_code,
    reason = "the one audited module of foreign hostcalls; the rest of the filter denies unsafe"
)]

use std::ptr::{null, null_mut};

/// `proxy_wasm` status: the call succeeded.
pub const OK: u32 = 0;
/// `proxy_wasm` status: no such value.
pub const NOT_FOUND: u32 = 1;

/// `MapType::HttpRequestHeaders`.
pub const MAP_REQUEST_HEADERS: u32 = 0;
/// `MapType::HttpCallResponseHeaders`.
pub const MAP_CALL_RESPONSE_HEADERS: u32 = 6;
/// `BufferType::HttpCallResponseBody`.
pub const BUFFER_CALL_RESPONSE_BODY: u32 = 4;
/// `BufferType::PluginConfiguration`.
pub const BUFFER_PLUGIN_CONFIGURATION: u32 = 7;
/// `MetricType::Counter`.
pub const METRIC_COUNTER: u32 = 0;
/// `MetricType::Histogram`.
pub const METRIC_HISTOGRAM: u32 = 2;
/// `StreamType::HttpRequest`.
const STREAM_HTTP_REQUEST: u32 = 0;

#[cfg(target_arch = "wasm32")]
#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
}

/// Native builds (the filter's unit tests, clippy) have no proxy: every hostcall answers
/// `InternalFailure`. The driver's tests use a fake [`crate::host::Host`] instead.
#[cfg(not(target_arch = "wasm32"))]
#[allow(clippy::too_many_arguments, missing_docs)]
mod native {
    const UNAVAILABLE: u32 = 10;
    pub unsafe fn proxy_log(_: u32, _: *const u8, _: usize) -> u32 {
        UNAVAILABLE
    }
    pub unsafe fn proxy_get_current_time_nanoseconds(_: *mut u64) -> u32 {
        UNAVAILABLE
    }
    pub unsafe fn proxy_set_tick_period_milliseconds(_: u32) -> u32 {
        UNAVAILABLE
    }
    pub unsafe fn proxy_get_buffer_bytes(
        _: u32,
        _: usize,
        _: usize,
        _: *mut *mut u8,
        _: *mut usize,
    ) -> u32 {
        UNAVAILABLE
    }
    pub unsafe fn proxy_get_header_map_pairs(_: u32, _: *mut *mut u8, _: *mut usize) -> u32 {
        UNAVAILABLE
    }
    pub unsafe fn proxy_replace_header_map_value(
        _: u32,
        _: *const u8,
        _: usize,
        _: *const u8,
        _: usize,
    ) -> u32 {
        UNAVAILABLE
    }
    pub unsafe fn proxy_remove_header_map_value(_: u32, _: *const u8, _: usize) -> u32 {
        UNAVAILABLE
    }
    pub unsafe fn proxy_get_property(
        _: *const u8,
        _: usize,
        _: *mut *mut u8,
        _: *mut usize,
    ) -> u32 {
        UNAVAILABLE
    }
    pub unsafe fn proxy_continue_stream(_: u32) -> u32 {
        UNAVAILABLE
    }
    pub unsafe fn proxy_send_local_response(
        _: u32,
        _: *const u8,
        _: usize,
        _: *const u8,
        _: usize,
        _: *const u8,
        _: usize,
        _: i32,
    ) -> u32 {
        UNAVAILABLE
    }
    pub unsafe fn proxy_set_effective_context(_: u32) -> u32 {
        UNAVAILABLE
    }
    pub unsafe fn proxy_define_metric(_: u32, _: *const u8, _: usize, _: *mut u32) -> u32 {
        UNAVAILABLE
    }
    pub unsafe fn proxy_increment_metric(_: u32, _: i64) -> u32 {
        UNAVAILABLE
    }
    pub unsafe fn proxy_record_metric(_: u32, _: u64) -> u32 {
        UNAVAILABLE
    }
}
#[cfg(not(target_arch = "wasm32"))]
use native::*;

fn status(code: u32) -> Result<(), u32> {
    if code == OK {
        Ok(())
    } else {
        Err(code)
    }
}

/// Takes ownership of `size` bytes the host wrote at `data`.
fn take(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() || size == 0 {
        return Vec::new();
    }
    // SAFETY: the host returned memory it allocated with the module's exported
    // `proxy_on_memory_allocate(size)` (the SDK's: a forgotten `Vec<u8>` with capacity `size`) and
    // wrote `size` bytes into it; nothing else refers to it, so it is ours to own and free.
    unsafe { Vec::from_raw_parts(data, size, size) }
}

/// A value the host returns in memory it allocates: `Ok(None)` for `NotFound`.
fn returned(call: impl FnOnce(*mut *mut u8, *mut usize) -> u32) -> Result<Option<Vec<u8>>, u32> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    match call(&mut data, &mut size) {
        OK => Ok(Some(take(data, size))),
        NOT_FOUND => Ok(None),
        other => Err(other),
    }
}

/// Writes a log line at `level` (0 trace .. 5 critical).
pub fn log(level: u32, message: &str) -> Result<(), u32> {
    // SAFETY: pointer and length of a live `str`.
    status(unsafe { proxy_log(level, message.as_ptr(), message.len()) })
}

/// Nanoseconds since the Unix epoch, by the proxy's clock.
pub fn current_time_ns() -> Result<u64, u32> {
    let mut t: u64 = 0;
    // SAFETY: `t` is a live, writable u64.
    status(unsafe { proxy_get_current_time_nanoseconds(&mut t) })?;
    Ok(t)
}

/// Calls the root context's `on_tick` every `ms` milliseconds (0 stops it).
pub fn set_tick_period_ms(ms: u32) -> Result<(), u32> {
    // SAFETY: no pointers.
    status(unsafe { proxy_set_tick_period_milliseconds(ms) })
}

/// Up to `max` bytes of buffer `kind` from `start`; `None` when the host has no such buffer.
pub fn buffer(kind: u32, start: usize, max: usize) -> Result<Option<Vec<u8>>, u32> {
    // SAFETY: the out-pointers are live locals of `returned`.
    returned(|d, s| unsafe { proxy_get_buffer_bytes(kind, start, max, d, s) })
}

/// The serialized header map `map` exactly as the host hands it over (parse it with
/// [`crate::convert::parse_pair_refs`] or [`crate::convert::parse_pairs`]); empty when there is
/// none.
pub fn header_map_pairs(map: u32) -> Result<Vec<u8>, u32> {
    // SAFETY: the out-pointers are live locals of `returned`.
    Ok(returned(|d, s| unsafe { proxy_get_header_map_pairs(map, d, s) })?.unwrap_or_default())
}

/// Sets header `name` of `map` to `value`, replacing every value.
pub fn replace_header(map: u32, name: &[u8], value: &[u8]) -> Result<(), u32> {
    // SAFETY: pointers and lengths of live slices.
    status(unsafe {
        proxy_replace_header_map_value(map, name.as_ptr(), name.len(), value.as_ptr(), value.len())
    })
}

/// Removes every value of header `name` of `map`.
pub fn remove_header(map: u32, name: &[u8]) -> Result<(), u32> {
    // SAFETY: pointer and length of a live slice.
    status(unsafe { proxy_remove_header_map_value(map, name.as_ptr(), name.len()) })
}

/// The property path `connection.mtls`, serialized (segments joined by NUL).
pub const PROPERTY_MTLS: &[u8] = b"connection\0mtls";
/// The property path `connection.sha256_peer_certificate_digest`, serialized.
pub const PROPERTY_PEER_DIGEST: &[u8] = b"connection\0sha256_peer_certificate_digest";
/// The property path `source.address`, serialized.
pub const PROPERTY_SOURCE_ADDRESS: &[u8] = b"source\0address";

/// A property by its serialized path (segments joined by NUL, the `PROPERTY_*` constants);
/// `None` when the host does not have it.
pub fn property(path: &[u8]) -> Result<Option<Vec<u8>>, u32> {
    // SAFETY: `path` is live for the call; the out-pointers are live locals of `returned`.
    returned(|d, s| unsafe { proxy_get_property(path.as_ptr(), path.len(), d, s) })
}

/// Continues the paused request.
pub fn continue_request() -> Result<(), u32> {
    // SAFETY: no pointers.
    status(unsafe { proxy_continue_stream(STREAM_HTTP_REQUEST) })
}

/// Answers the client locally with `status_code`, the serialized `headers` and `body`.
pub fn send_local_response(status_code: u32, headers: &[u8], body: &[u8]) -> Result<(), u32> {
    // SAFETY: pointers and lengths of live slices (no details: null with length 0).
    status(unsafe {
        proxy_send_local_response(
            status_code,
            null(),
            0,
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            -1,
        )
    })
}

/// Makes `context_id` the context that later calls act on.
pub fn set_effective_context(context_id: u32) -> Result<(), u32> {
    // SAFETY: no pointers.
    status(unsafe { proxy_set_effective_context(context_id) })
}

/// Defines a metric of `kind`; answers its id.
pub fn define_metric(kind: u32, name: &str) -> Result<u32, u32> {
    let mut id: u32 = 0;
    // SAFETY: pointer and length of a live `str`; `id` is a live, writable u32.
    status(unsafe { proxy_define_metric(kind, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

/// Adds `by` to metric `id`.
pub fn increment_metric(id: u32, by: i64) -> Result<(), u32> {
    // SAFETY: no pointers.
    status(unsafe { proxy_increment_metric(id, by) })
}

/// Records `value` in histogram `id`.
pub fn record_metric(id: u32, value: u64) -> Result<(), u32> {
    // SAFETY: no pointers.
    status(unsafe { proxy_record_metric(id, value) })
}
