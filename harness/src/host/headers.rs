//! Header-map hostcalls (`proxy_*_header_map_*`) and the ABI's map serialization: a `u32` count,
//! then a `u32` key size and a `u32` value size per pair, then each key and value followed by a NUL.
//! All sizes little-endian. Maps: 0 request headers, 1 request trailers, 2 response headers,
//! 3 response trailers (of the effective stream); 6/7 the callout response's headers/trailers
//! (only while `proxy_on_http_call_response` runs). As in Envoy, names are lower-cased, a lookup
//! returns the first value, and reading an absent map gives an empty list.

use wasmtime::{Caller, Linker};

use super::error::{to_abi, Fail, Status};
use super::memory::{self, Ptr};
use super::state::HostState;
use super::types::Pairs;

/// Serializes pairs in the ABI's map format.
pub(crate) fn serialize(pairs: &Pairs) -> Vec<u8> {
    let mut out = Vec::new();
    let count = u32::try_from(pairs.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&count.to_le_bytes());
    for (key, value) in pairs {
        out.extend_from_slice(&u32::try_from(key.len()).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(&u32::try_from(value.len()).unwrap_or(u32::MAX).to_le_bytes());
    }
    for (key, value) in pairs {
        out.extend_from_slice(key);
        out.push(0);
        out.extend_from_slice(value);
        out.push(0);
    }
    out
}

fn read_u32(bytes: &[u8], at: usize) -> Option<usize> {
    let end = at.checked_add(4)?;
    let raw: [u8; 4] = bytes.get(at..end)?.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(raw)).ok()
}

/// Parses the ABI's map format; `None` when malformed. Empty input is an empty map.
pub(crate) fn deserialize(bytes: &[u8]) -> Option<Pairs> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let count = read_u32(bytes, 0)?;
    let table_end = count.checked_mul(8)?.checked_add(4)?;
    if table_end > bytes.len() {
        return None;
    }
    let mut pairs = Vec::with_capacity(count);
    let mut at = table_end;
    for index in 0..count {
        let entry = index.checked_mul(8)?.checked_add(4)?;
        let key_len = read_u32(bytes, entry)?;
        let value_len = read_u32(bytes, entry.checked_add(4)?)?;
        let mut take = |len: usize| -> Option<Vec<u8>> {
            let end = at.checked_add(len)?;
            let data = bytes.get(at..end)?.to_vec();
            if *bytes.get(end)? != 0 {
                return None;
            }
            at = end.checked_add(1)?;
            Some(data)
        };
        let key = take(key_len)?;
        let value = take(value_len)?;
        pairs.push((key, value));
    }
    Some(pairs)
}

fn check_type(map_type: u32) -> Result<(), Status> {
    match map_type {
        0..=3 | 6 | 7 => Ok(()),
        _ => Err(Status::BadArgument),
    }
}

/// The map `map_type` designates now, for reading.
fn map_ref(state: &mut HostState, map_type: u32) -> Option<&Pairs> {
    match map_type {
        6 => state.call_response.as_ref().map(|r| &r.headers),
        7 => state.call_response.as_ref().map(|r| &r.trailers),
        _ => map_mut(state, map_type).map(|m| &*m),
    }
}

/// The map `map_type` designates now, for writing (callout responses are read-only).
fn map_mut(state: &mut HostState, map_type: u32) -> Option<&mut Pairs> {
    let stream = state.current_stream()?;
    match map_type {
        0 => Some(&mut stream.request_headers),
        1 => stream.request_trailers.as_mut(),
        2 => stream.response_headers.as_mut(),
        3 => stream.response_trailers.as_mut(),
        _ => None,
    }
}

fn get_pairs(
    caller: &mut Caller<'_, HostState>,
    map_type: u32,
    ret_ptr: Ptr,
    ret_size: Ptr,
) -> Result<(), Fail> {
    check_type(map_type)?;
    let serialized = serialize(map_ref(caller.data_mut(), map_type).unwrap_or(&Vec::new()));
    memory::return_bytes(caller, &serialized, ret_ptr, ret_size)
}

fn set_pairs(
    caller: &mut Caller<'_, HostState>,
    map_type: u32,
    ptr: Ptr,
    size: u32,
) -> Result<(), Fail> {
    check_type(map_type)?;
    let bytes = memory::read_opt(caller, ptr, size)?;
    let pairs = deserialize(&bytes).ok_or(Status::BadArgument)?;
    let map = map_mut(caller.data_mut(), map_type).ok_or(Status::BadArgument)?;
    *map = pairs
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    Ok(())
}

fn get_value(
    caller: &mut Caller<'_, HostState>,
    map_type: u32,
    key_ptr: Ptr,
    key_size: u32,
    ret_ptr: Ptr,
    ret_size: Ptr,
) -> Result<(), Fail> {
    check_type(map_type)?;
    let key = memory::read_opt(caller, key_ptr, key_size)?.to_ascii_lowercase();
    let value = map_ref(caller.data_mut(), map_type)
        .and_then(|map| map.iter().find(|(k, _)| *k == key))
        .map(|(_, v)| v.clone())
        .ok_or(Status::NotFound)?;
    memory::return_bytes(caller, &value, ret_ptr, ret_size)
}

/// What a single-key edit does.
enum Edit {
    Replace(Vec<u8>),
    Add(Vec<u8>),
    Remove,
}

fn edit(
    caller: &mut Caller<'_, HostState>,
    map_type: u32,
    key_ptr: Ptr,
    key_size: u32,
    edit: Edit,
) -> Result<(), Fail> {
    check_type(map_type)?;
    let key = memory::read_opt(caller, key_ptr, key_size)?.to_ascii_lowercase();
    let map = map_mut(caller.data_mut(), map_type).ok_or(Status::BadArgument)?;
    match edit {
        Edit::Add(value) => map.push((key, value)),
        Edit::Remove => map.retain(|(k, _)| *k != key),
        Edit::Replace(value) => {
            if let Some(index) = map.iter().position(|(k, _)| *k == key) {
                let mut seen = 0usize;
                map.retain(|(k, _)| {
                    if *k != key {
                        return true;
                    }
                    seen = seen.saturating_add(1);
                    seen == 1
                });
                if let Some(entry) = map.get_mut(index) {
                    entry.1 = value;
                }
            } else {
                map.push((key, value));
            }
        }
    }
    Ok(())
}

/// Registers the header-map imports.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut caller: Caller<'_, HostState>, map_type: u32, ret_ptr: u32, ret_size: u32| {
            to_abi(get_pairs(&mut caller, map_type, ret_ptr, ret_size))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_header_map_pairs",
        |mut caller: Caller<'_, HostState>, map_type: u32, ptr: u32, size: u32| {
            to_abi(set_pairs(&mut caller, map_type, ptr, size))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut caller: Caller<'_, HostState>,
         map_type: u32,
         key_ptr: u32,
         key_size: u32,
         ret_ptr: u32,
         ret_size: u32| {
            to_abi(get_value(
                &mut caller,
                map_type,
                key_ptr,
                key_size,
                ret_ptr,
                ret_size,
            ))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_replace_header_map_value",
        |mut caller: Caller<'_, HostState>,
         map_type: u32,
         key_ptr: u32,
         key_size: u32,
         value_ptr: u32,
         value_size: u32| {
            let result = memory::read_opt(&caller, value_ptr, value_size)
                .map_err(Fail::from)
                .and_then(|value| {
                    edit(
                        &mut caller,
                        map_type,
                        key_ptr,
                        key_size,
                        Edit::Replace(value),
                    )
                });
            to_abi(result)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_add_header_map_value",
        |mut caller: Caller<'_, HostState>,
         map_type: u32,
         key_ptr: u32,
         key_size: u32,
         value_ptr: u32,
         value_size: u32| {
            let result = memory::read_opt(&caller, value_ptr, value_size)
                .map_err(Fail::from)
                .and_then(|value| edit(&mut caller, map_type, key_ptr, key_size, Edit::Add(value)));
            to_abi(result)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut caller: Caller<'_, HostState>, map_type: u32, key_ptr: u32, key_size: u32| {
            to_abi(edit(&mut caller, map_type, key_ptr, key_size, Edit::Remove))
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let pairs: Pairs = vec![
            (b":method".to_vec(), b"GET".to_vec()),
            (b"x-empty".to_vec(), Vec::new()),
        ];
        let bytes = serialize(&pairs);
        assert_eq!(&bytes[..4], &[2, 0, 0, 0]);
        assert_eq!(deserialize(&bytes), Some(pairs));
    }

    #[test]
    fn malformed_is_rejected() {
        assert_eq!(deserialize(&[]), Some(Vec::new()));
        assert_eq!(deserialize(&[1, 0, 0]), None);
        assert_eq!(
            deserialize(&[1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, b'a', 0]),
            None
        );
        assert_eq!(
            deserialize(&[1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, b'a', 1, 0]),
            None
        );
        assert_eq!(deserialize(&[255, 255, 255, 255]), None);
    }
}
