//! Property hostcalls (`proxy_get_property`, `proxy_set_property`). A property path arrives as
//! segments joined by NUL (`connection\0mtls`); values are raw bytes as Envoy serializes them
//! (strings as bytes, `bool` one byte, integers 8 bytes little-endian). Lookup order: the effective
//! stream's properties (set by the test or by the filter), then properties derived from its request
//! headers (`request.path`, `request.url_path`, `request.query`, `request.method`, `request.host`,
//! `request.scheme`, `request.id`, `request.useragent`), then VM-wide properties.

use wasmtime::{Caller, Linker};

use super::error::{to_abi, Fail, Status};
use super::memory;
use super::state::{HostState, StreamState};

/// The ABI key for a dotted path (`"connection.mtls"` -> `connection\0mtls`).
pub fn dotted_key(path: &str) -> Vec<u8> {
    segments_key(&path.split('.').collect::<Vec<_>>())
}

/// The ABI key for explicit segments (for segments that contain dots themselves).
pub fn segments_key(segments: &[&str]) -> Vec<u8> {
    segments.join("\0").into_bytes()
}

fn header<'a>(stream: &'a StreamState, name: &[u8]) -> Option<&'a [u8]> {
    stream
        .request_headers
        .iter()
        .find(|(k, _)| k.as_slice() == name)
        .map(|(_, v)| v.as_slice())
}

fn derived(stream: &StreamState, key: &[u8]) -> Option<Vec<u8>> {
    let path = || header(stream, b":path").unwrap_or_default();
    let split = |path: &[u8]| -> (Vec<u8>, Vec<u8>) {
        match path.iter().position(|b| *b == b'?') {
            Some(at) => (
                path.get(..at).unwrap_or_default().to_vec(),
                path.get(at.saturating_add(1)..)
                    .unwrap_or_default()
                    .to_vec(),
            ),
            None => (path.to_vec(), Vec::new()),
        }
    };
    let value = match key {
        b"request\0path" => header(stream, b":path")?.to_vec(),
        b"request\0url_path" => split(path()).0,
        b"request\0query" => split(path()).1,
        b"request\0method" => header(stream, b":method")?.to_vec(),
        b"request\0host" => header(stream, b":authority")?.to_vec(),
        b"request\0scheme" => header(stream, b":scheme")?.to_vec(),
        b"request\0id" => header(stream, b"x-request-id")?.to_vec(),
        b"request\0useragent" => header(stream, b"user-agent")?.to_vec(),
        _ => return None,
    };
    Some(value)
}

/// Looks a property up as the effective context sees it.
pub(crate) fn lookup(state: &mut HostState, key: &[u8]) -> Option<Vec<u8>> {
    if let Some(stream) = state.current_stream() {
        if let Some(value) = stream.properties.get(key) {
            return Some(value.clone());
        }
        if let Some(value) = derived(stream, key) {
            return Some(value);
        }
    }
    state.vm_properties.get(key).cloned()
}

fn get(
    caller: &mut Caller<'_, HostState>,
    path_ptr: u32,
    path_size: u32,
    ret_ptr: u32,
    ret_size: u32,
) -> Result<(), Fail> {
    let key = memory::read_opt(caller, path_ptr, path_size)?;
    let value = lookup(caller.data_mut(), &key).ok_or(Status::NotFound)?;
    memory::return_bytes(caller, &value, ret_ptr, ret_size)
}

fn set(
    caller: &mut Caller<'_, HostState>,
    path_ptr: u32,
    path_size: u32,
    value_ptr: u32,
    value_size: u32,
) -> Result<(), Fail> {
    let key = memory::read_opt(caller, path_ptr, path_size)?;
    let value = memory::read_opt(caller, value_ptr, value_size)?;
    let state = caller.data_mut();
    match state.current_stream() {
        Some(stream) => {
            stream.properties.insert(key, value);
        }
        None => {
            state.vm_properties.insert(key, value);
        }
    }
    Ok(())
}

/// Registers the property imports.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_property",
        |mut caller: Caller<'_, HostState>,
         path_ptr: u32,
         path_size: u32,
         ret_ptr: u32,
         ret_size: u32| {
            to_abi(get(&mut caller, path_ptr, path_size, ret_ptr, ret_size))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_property",
        |mut caller: Caller<'_, HostState>,
         path_ptr: u32,
         path_size: u32,
         value_ptr: u32,
         value_size: u32| {
            to_abi(set(&mut caller, path_ptr, path_size, value_ptr, value_size))
        },
    )?;
    Ok(())
}
