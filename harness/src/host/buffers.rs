//! Buffer hostcalls (`proxy_get_buffer_bytes`, `proxy_set_buffer_bytes`). Buffers: 0 request body,
//! 1 response body (of the effective stream, everything sent so far), 4 the callout response body
//! (during `proxy_on_http_call_response`), 6 VM configuration (during `proxy_on_vm_start`),
//! 7 plugin configuration (during `proxy_on_configure`). Edits follow Envoy: prepend, replace
//! all, or append.

use wasmtime::{Caller, Linker};

use super::error::{to_abi, Fail, Status};
use super::memory;
use super::state::{ConfigWindow, HostState};

fn buffer(state: &mut HostState, buffer_type: u32) -> Result<Vec<u8>, Status> {
    match buffer_type {
        0 => Ok(state
            .current_stream()
            .ok_or(Status::NotFound)?
            .request_body
            .clone()),
        1 => Ok(state
            .current_stream()
            .ok_or(Status::NotFound)?
            .response_body
            .clone()),
        4 => state
            .call_response
            .as_ref()
            .map(|r| r.body.clone())
            .ok_or(Status::NotFound),
        6 if state.config_window == ConfigWindow::Vm => Ok(state.vm_configuration.clone()),
        7 if state.config_window == ConfigWindow::Plugin => Ok(state.plugin_configuration.clone()),
        2..=8 => Err(Status::NotFound),
        _ => Err(Status::BadArgument),
    }
}

fn get(
    caller: &mut Caller<'_, HostState>,
    buffer_type: u32,
    start: u32,
    max_size: u32,
    ret_ptr: u32,
    ret_size: u32,
) -> Result<(), Fail> {
    let data = buffer(caller.data_mut(), buffer_type)?;
    let start = usize::try_from(start).map_err(|_| Status::BadArgument)?;
    let max = usize::try_from(max_size).map_err(|_| Status::BadArgument)?;
    let end = start
        .checked_add(max)
        .ok_or(Status::BadArgument)?
        .min(data.len());
    let slice = data.get(start.min(end)..end).unwrap_or(&[]);
    memory::return_bytes(caller, slice, ret_ptr, ret_size)
}

fn set(
    caller: &mut Caller<'_, HostState>,
    buffer_type: u32,
    start: u32,
    size: u32,
    data_ptr: u32,
    data_size: u32,
) -> Result<(), Fail> {
    let data = memory::read_opt(caller, data_ptr, data_size)?;
    let stream = caller.data_mut().current_stream().ok_or(Status::NotFound)?;
    let body = match buffer_type {
        0 => &mut stream.request_body,
        1 => &mut stream.response_body,
        _ => return Err(Status::BadArgument.into()),
    };
    let start = usize::try_from(start).map_err(|_| Status::BadArgument)?;
    let size = usize::try_from(size).map_err(|_| Status::BadArgument)?;
    if start == 0 && size == 0 {
        let mut joined = data;
        joined.extend_from_slice(body);
        *body = joined;
    } else if start == 0 && size >= body.len() {
        *body = data;
    } else if start >= body.len() {
        body.extend_from_slice(&data);
    } else {
        return Err(Status::BadArgument.into());
    }
    Ok(())
}

/// Registers the buffer imports.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut caller: Caller<'_, HostState>,
         ty: u32,
         start: u32,
         max: u32,
         ret_ptr: u32,
         ret_size: u32| { to_abi(get(&mut caller, ty, start, max, ret_ptr, ret_size)) },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_buffer_bytes",
        |mut caller: Caller<'_, HostState>, ty: u32, start: u32, size: u32, ptr: u32, len: u32| {
            to_abi(set(&mut caller, ty, start, size, ptr, len))
        },
    )?;
    Ok(())
}
