//! Logging hostcalls (`proxy_log`, `proxy_get_log_level`) and the capture of WASI stdout/stderr
//! into the same log, one entry per line. Lines below the host's log level are dropped, as Envoy
//! does.

use wasmtime::{Caller, Linker};

use super::error::{to_abi, Fail, Status};
use super::memory;
use super::state::HostState;
use super::types::{LogLevel, LogSource};

/// Appends bytes written to fd 1 or 2, cutting them into lines.
pub(crate) fn capture_stdio(state: &mut HostState, source: LogSource, bytes: &[u8]) {
    let (level, mut buffer) = match source {
        LogSource::Stdout => (LogLevel::Info, std::mem::take(&mut state.stdout_partial)),
        _ => (LogLevel::Error, std::mem::take(&mut state.stderr_partial)),
    };
    buffer.extend_from_slice(bytes);
    while let Some(at) = buffer.iter().position(|b| *b == b'\n') {
        let line: Vec<u8> = buffer.drain(..=at).collect();
        let text = String::from_utf8_lossy(line.strip_suffix(b"\n").unwrap_or(&line)).into_owned();
        state.log(level, source, text);
    }
    match source {
        LogSource::Stdout => state.stdout_partial = buffer,
        _ => state.stderr_partial = buffer,
    }
}

fn log(caller: &mut Caller<'_, HostState>, level: u32, ptr: u32, size: u32) -> Result<(), Fail> {
    let level = LogLevel::from_abi(level).ok_or(Status::BadArgument)?;
    let message = memory::read_opt(caller, ptr, size)?;
    let state = caller.data_mut();
    if level >= state.log_level {
        state.log(
            level,
            LogSource::Proxy,
            String::from_utf8_lossy(&message).into_owned(),
        );
    }
    Ok(())
}

/// Registers the logging imports.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_log",
        |mut caller: Caller<'_, HostState>, level: u32, ptr: u32, size: u32| {
            to_abi(log(&mut caller, level, ptr, size))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_log_level",
        |mut caller: Caller<'_, HostState>, ret_level: u32| {
            let level = caller.data().log_level.to_abi();
            to_abi(memory::write_u32(&mut caller, ret_level, level).map_err(Fail::from))
        },
    )?;
    Ok(())
}
