//! Stream and callout hostcalls: `proxy_http_call` (captured, answered later by the test),
//! `proxy_send_local_response`, `proxy_continue_stream`, `proxy_close_stream`,
//! `proxy_set_effective_context`, `proxy_done`, `proxy_call_foreign_function` (always `NotFound`)
//! and `proxy_get_status`.

use std::time::Duration;

use wasmtime::{Caller, Linker};

use super::error::{to_abi, Fail, Status};
use super::headers;
use super::memory;
use super::state::{HostState, ROOT_CONTEXT_ID};
use super::types::{pairs_to_headers, HttpCall, LocalReply};

#[allow(clippy::too_many_arguments, reason = "mirrors the ABI signature")]
fn http_call(
    caller: &mut Caller<'_, HostState>,
    upstream: (u32, u32),
    headers_raw: (u32, u32),
    body: (u32, u32),
    trailers: (u32, u32),
    timeout_ms: u32,
    ret_token: u32,
) -> Result<(), Fail> {
    let upstream = memory::read_opt(caller, upstream.0, upstream.1)?;
    let header_bytes = memory::read_opt(caller, headers_raw.0, headers_raw.1)?;
    let body = memory::read_opt(caller, body.0, body.1)?;
    let trailer_bytes = memory::read_opt(caller, trailers.0, trailers.1)?;
    memory::check(caller, ret_token, 4)?;
    let Some(header_pairs) = headers::deserialize(&header_bytes) else {
        caller.data_mut().host_note(String::from(
            "proxy_http_call: malformed header map -> BadArgument",
        ));
        return Err(Status::BadArgument.into());
    };
    let trailer_pairs = headers::deserialize(&trailer_bytes).ok_or(Status::BadArgument)?;
    let headers = pairs_to_headers(&header_pairs);
    for required in [":method", ":path", ":authority"] {
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(required))
        {
            caller.data_mut().host_note(format!(
                "proxy_http_call: no `{required}` header -> BadArgument (Envoy requires :method, :path, :authority)"
            ));
            return Err(Status::BadArgument.into());
        }
    }
    let state = caller.data_mut();
    let token = state.next_token;
    state.next_token = token.wrapping_add(1).max(1);
    let call = HttpCall {
        token,
        context_id: state.current_context,
        upstream: String::from_utf8_lossy(&upstream).into_owned(),
        headers,
        body,
        trailers: pairs_to_headers(&trailer_pairs),
        timeout: Duration::from_millis(u64::from(timeout_ms)),
        dispatched_at: state.elapsed,
    };
    state.call_history.push(call.clone());
    state.pending_calls.insert(token, call);
    memory::write_u32(caller, ret_token, token)?;
    Ok(())
}

#[allow(clippy::too_many_arguments, reason = "mirrors the ABI signature")]
fn send_local_response(
    caller: &mut Caller<'_, HostState>,
    status: u32,
    details: (u32, u32),
    body: (u32, u32),
    headers_raw: (u32, u32),
    grpc_status: i32,
) -> Result<(), Fail> {
    let details = memory::read_opt(caller, details.0, details.1)?;
    let body = memory::read_opt(caller, body.0, body.1)?;
    let header_bytes = memory::read_opt(caller, headers_raw.0, headers_raw.1)?;
    let pairs = headers::deserialize(&header_bytes).ok_or(Status::BadArgument)?;
    let state = caller.data_mut();
    let Some(stream) = state.current_stream() else {
        state.host_note(String::from(
            "proxy_send_local_response outside a stream context -> BadArgument",
        ));
        return Err(Status::BadArgument.into());
    };
    stream.local_reply = Some(LocalReply {
        status,
        headers: pairs_to_headers(&pairs),
        body,
        details: String::from_utf8_lossy(&details).into_owned(),
        grpc_status,
    });
    Ok(())
}

fn continue_stream(caller: &mut Caller<'_, HostState>, stream_type: u32) -> Result<(), Fail> {
    let state = caller.data_mut();
    let Some(stream) = state.current_stream() else {
        state.host_note(String::from(
            "proxy_continue_stream outside a stream context -> BadArgument",
        ));
        return Err(Status::BadArgument.into());
    };
    match stream_type {
        0 => stream.request_action = Some(true),
        1 => stream.response_action = Some(true),
        _ => return Err(Status::Unimplemented.into()),
    }
    Ok(())
}

fn close_stream(caller: &mut Caller<'_, HostState>, stream_type: u32) -> Result<(), Fail> {
    let state = caller.data_mut();
    let stream = state.current_stream().ok_or(Status::BadArgument)?;
    match stream_type {
        0 | 1 => stream.reset = true,
        _ => return Err(Status::Unimplemented.into()),
    }
    Ok(())
}

fn set_effective_context(caller: &mut Caller<'_, HostState>, context_id: u32) -> Result<(), Fail> {
    let state = caller.data_mut();
    let live = context_id == ROOT_CONTEXT_ID
        || state
            .streams
            .get(&context_id)
            .is_some_and(|stream| !stream.finished);
    if !live {
        state.host_note(format!(
            "proxy_set_effective_context({context_id}): no such context -> BadArgument"
        ));
        return Err(Status::BadArgument.into());
    }
    state.current_context = context_id;
    Ok(())
}

fn get_status(
    caller: &mut Caller<'_, HostState>,
    code_ptr: u32,
    msg_ptr: u32,
    msg_size: u32,
) -> Result<(), Fail> {
    memory::write_u32(caller, code_ptr, 0)?;
    memory::return_bytes(caller, &[], msg_ptr, msg_size)
}

/// Registers the stream and callout imports.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_http_call",
        |mut caller: Caller<'_, HostState>,
         upstream_ptr: u32,
         upstream_size: u32,
         headers_ptr: u32,
         headers_size: u32,
         body_ptr: u32,
         body_size: u32,
         trailers_ptr: u32,
         trailers_size: u32,
         timeout_ms: u32,
         ret_token: u32| {
            to_abi(http_call(
                &mut caller,
                (upstream_ptr, upstream_size),
                (headers_ptr, headers_size),
                (body_ptr, body_size),
                (trailers_ptr, trailers_size),
                timeout_ms,
                ret_token,
            ))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut caller: Caller<'_, HostState>,
         status: u32,
         details_ptr: u32,
         details_size: u32,
         body_ptr: u32,
         body_size: u32,
         headers_ptr: u32,
         headers_size: u32,
         grpc_status: i32| {
            to_abi(send_local_response(
                &mut caller,
                status,
                (details_ptr, details_size),
                (body_ptr, body_size),
                (headers_ptr, headers_size),
                grpc_status,
            ))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_continue_stream",
        |mut caller: Caller<'_, HostState>, stream_type: u32| {
            to_abi(continue_stream(&mut caller, stream_type))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_close_stream",
        |mut caller: Caller<'_, HostState>, stream_type: u32| {
            to_abi(close_stream(&mut caller, stream_type))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_effective_context",
        |mut caller: Caller<'_, HostState>, context_id: u32| {
            to_abi(set_effective_context(&mut caller, context_id))
        },
    )?;
    linker.func_wrap("env", "proxy_done", |mut caller: Caller<'_, HostState>| {
        let state = caller.data_mut();
        state.done_calls = state.done_calls.saturating_add(1);
        to_abi(Ok(()))
    })?;
    linker.func_wrap(
        "env",
        "proxy_call_foreign_function",
        |_: Caller<'_, HostState>, _: u32, _: u32, _: u32, _: u32, _: u32, _: u32| {
            to_abi(Err(Status::NotFound.into()))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_status",
        |mut caller: Caller<'_, HostState>, code_ptr: u32, msg_ptr: u32, msg_size: u32| {
            to_abi(get_status(&mut caller, code_ptr, msg_ptr, msg_size))
        },
    )?;
    Ok(())
}
