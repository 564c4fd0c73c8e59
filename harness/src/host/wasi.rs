//! The WASI preview1 imports a Rust `wasm32-wasip1` module needs: an empty environment and
//! argument list, `fd_write` to stdout/stderr captured into the logs, `proc_exit` as a trap,
//! `clock_time_get` on the virtual clock, `random_get` from the seeded generator, and minimal
//! `fd_close`/`fd_seek`/`fd_fdstat_get`/`sched_yield`. Answers are WASI errno values.

use wasmtime::{Caller, Linker};

use super::logging::capture_stdio;
use super::memory;
use super::state::HostState;
use super::types::LogSource;

const MODULE: &str = "wasi_snapshot_preview1";
const SUCCESS: u32 = 0;
const EBADF: u32 = 8;
const EFAULT: u32 = 21;
const EINVAL: u32 = 28;
const ESPIPE: u32 = 70;

fn errno<T>(result: Result<T, super::error::Status>) -> u32 {
    match result {
        Ok(_) => SUCCESS,
        Err(_) => EFAULT,
    }
}

/// Writes two zero `u32`s (count and size) for empty `args`/`environ`.
fn empty_sizes(caller: &mut Caller<'_, HostState>, count_ptr: u32, size_ptr: u32) -> u32 {
    errno(
        memory::write_u32(caller, count_ptr, 0)
            .and_then(|()| memory::write_u32(caller, size_ptr, 0)),
    )
}

fn fd_write(
    caller: &mut Caller<'_, HostState>,
    fd: u32,
    iovs: u32,
    iovs_len: u32,
    nwritten: u32,
) -> u32 {
    let source = match fd {
        1 => LogSource::Stdout,
        2 => LogSource::Stderr,
        _ => return EBADF,
    };
    let mut total: u32 = 0;
    let mut bytes = Vec::new();
    for index in 0..iovs_len {
        let Some(at) = index.checked_mul(8).and_then(|off| iovs.checked_add(off)) else {
            return EFAULT;
        };
        let Ok(entry) = memory::read(caller, at, 8) else {
            return EFAULT;
        };
        let word = |from: usize| -> Option<u32> {
            let raw: [u8; 4] = entry.get(from..from.checked_add(4)?)?.try_into().ok()?;
            Some(u32::from_le_bytes(raw))
        };
        let (Some(ptr), Some(len)) = (word(0), word(4)) else {
            return EFAULT;
        };
        let Ok(chunk) = memory::read_opt(caller, ptr, len) else {
            return EFAULT;
        };
        bytes.extend_from_slice(&chunk);
        total = total.saturating_add(len);
    }
    capture_stdio(caller.data_mut(), source, &bytes);
    errno(memory::write_u32(caller, nwritten, total))
}

fn clock_time_get(caller: &mut Caller<'_, HostState>, id: u32, ret: u32) -> u32 {
    let state = caller.data();
    let now = match id {
        0 => state.now_unix_nanos(),
        1..=3 => u64::try_from(state.elapsed.as_nanos()).unwrap_or(u64::MAX),
        _ => return EINVAL,
    };
    errno(memory::write_u64(caller, ret, now))
}

fn random_get(caller: &mut Caller<'_, HostState>, ptr: u32, len: u32) -> u32 {
    if memory::check(caller, ptr, len).is_err() {
        return EFAULT;
    }
    let Ok(size) = usize::try_from(len) else {
        return EFAULT;
    };
    let mut bytes = vec![0u8; size];
    caller.data_mut().rng.fill(&mut bytes);
    errno(memory::write(caller, ptr, &bytes))
}

fn fd_fdstat_get(caller: &mut Caller<'_, HostState>, fd: u32, ptr: u32) -> u32 {
    if fd > 2 {
        return EBADF;
    }
    // fdstat: filetype u8 (2 = character device), flags u16, rights base/inheriting u64.
    let mut stat = [0u8; 24];
    if let Some(first) = stat.first_mut() {
        *first = 2;
    }
    if let Some(rights) = stat.get_mut(8..16) {
        rights.copy_from_slice(&u64::MAX.to_le_bytes());
    }
    errno(memory::write(caller, ptr, &stat))
}

/// Registers the WASI imports.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        MODULE,
        "environ_get",
        |_: Caller<'_, HostState>, _: u32, _: u32| SUCCESS,
    )?;
    linker.func_wrap(
        MODULE,
        "args_get",
        |_: Caller<'_, HostState>, _: u32, _: u32| SUCCESS,
    )?;
    linker.func_wrap(
        MODULE,
        "environ_sizes_get",
        |mut caller: Caller<'_, HostState>, count: u32, size: u32| {
            empty_sizes(&mut caller, count, size)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "args_sizes_get",
        |mut caller: Caller<'_, HostState>, count: u32, size: u32| {
            empty_sizes(&mut caller, count, size)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_write",
        |mut caller: Caller<'_, HostState>, fd: u32, iovs: u32, iovs_len: u32, nwritten: u32| {
            fd_write(&mut caller, fd, iovs, iovs_len, nwritten)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_close",
        |_: Caller<'_, HostState>, fd: u32| {
            if fd <= 2 {
                SUCCESS
            } else {
                EBADF
            }
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_seek",
        |_: Caller<'_, HostState>, fd: u32, _offset: i64, _whence: u32, _ret: u32| {
            if fd <= 2 {
                ESPIPE
            } else {
                EBADF
            }
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_fdstat_get",
        |mut caller: Caller<'_, HostState>, fd: u32, ptr: u32| fd_fdstat_get(&mut caller, fd, ptr),
    )?;
    linker.func_wrap(
        MODULE,
        "proc_exit",
        |mut caller: Caller<'_, HostState>, code: u32| -> wasmtime::Result<()> {
            caller.data_mut().flush_stdio();
            Err(wasmtime::format_err!(
                "the guest called WASI proc_exit({code}) (std::process::exit or an abort)"
            ))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "clock_time_get",
        |mut caller: Caller<'_, HostState>, id: u32, _precision: u64, ret: u32| {
            clock_time_get(&mut caller, id, ret)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "random_get",
        |mut caller: Caller<'_, HostState>, ptr: u32, len: u32| random_get(&mut caller, ptr, len),
    )?;
    linker.func_wrap(MODULE, "sched_yield", |_: Caller<'_, HostState>| SUCCESS)?;
    Ok(())
}
