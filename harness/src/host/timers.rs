//! Clock and timer hostcalls (`proxy_get_current_time_nanoseconds`,
//! `proxy_set_tick_period_milliseconds`). Time is virtual: it only moves when the test calls
//! `Host::advance_clock`, which also fires `proxy_on_tick` once per elapsed period.

use std::time::Duration;

use wasmtime::{Caller, Linker};

use super::error::{to_abi, Fail};
use super::memory;
use super::state::HostState;

/// Registers the clock and timer imports.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut caller: Caller<'_, HostState>, ret_time: u32| {
            caller.data_mut().count_clock_read();
            let now = caller.data().now_unix_nanos();
            to_abi(memory::write_u64(&mut caller, ret_time, now).map_err(Fail::from))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |mut caller: Caller<'_, HostState>, period_ms: u32| {
            let state = caller.data_mut();
            if period_ms == 0 {
                state.tick_period = None;
                state.next_tick = None;
            } else {
                let period = Duration::from_millis(u64::from(period_ms));
                state.tick_period = Some(period);
                state.next_tick = Some(state.elapsed.saturating_add(period));
            }
            to_abi(Ok(()))
        },
    )?;
    Ok(())
}
