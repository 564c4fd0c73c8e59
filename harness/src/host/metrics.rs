//! Metric hostcalls (`proxy_define_metric`, `proxy_increment_metric`, `proxy_record_metric`,
//! `proxy_get_metric`). Defining a name twice gives the same id; a counter cannot go down; a
//! histogram keeps its samples and cannot be read back by the guest (as in Envoy). Every call is
//! counted against the callback that made it ([`crate::host::Host::metric_calls`]), so a test
//! can prove that a path makes none.

use wasmtime::{Caller, Linker};

use super::error::{to_abi, Fail, Status};
use super::memory;
use super::state::HostState;
use super::types::MetricKind;

fn define(
    caller: &mut Caller<'_, HostState>,
    kind: u32,
    name_ptr: u32,
    name_size: u32,
    ret_id: u32,
) -> Result<(), Fail> {
    caller.data_mut().count_metric_call("proxy_define_metric");
    let kind = match kind {
        0 => MetricKind::Counter,
        1 => MetricKind::Gauge,
        2 => MetricKind::Histogram,
        _ => return Err(Status::BadArgument.into()),
    };
    let name = memory::read_opt(caller, name_ptr, name_size)?;
    memory::check(caller, ret_id, 4)?;
    let name = String::from_utf8_lossy(&name).into_owned();
    let id = caller
        .data_mut()
        .define_metric(kind, name)
        .ok_or(Status::BadArgument)?;
    memory::write_u32(caller, ret_id, id)?;
    Ok(())
}

fn increment(caller: &mut Caller<'_, HostState>, id: u32, offset: i64) -> Result<(), Fail> {
    caller
        .data_mut()
        .count_metric_call("proxy_increment_metric");
    let metric = caller.data_mut().metric_mut(id).ok_or(Status::NotFound)?;
    match metric.kind {
        MetricKind::Counter if offset < 0 => return Err(Status::BadArgument.into()),
        MetricKind::Counter | MetricKind::Gauge => {
            metric.value = metric.value.saturating_add(offset);
        }
        MetricKind::Histogram => return Err(Status::BadArgument.into()),
    }
    Ok(())
}

fn record(caller: &mut Caller<'_, HostState>, id: u32, value: u64) -> Result<(), Fail> {
    caller.data_mut().count_metric_call("proxy_record_metric");
    let metric = caller.data_mut().metric_mut(id).ok_or(Status::NotFound)?;
    let signed = i64::try_from(value).unwrap_or(i64::MAX);
    match metric.kind {
        MetricKind::Counter if signed < metric.value => return Err(Status::BadArgument.into()),
        MetricKind::Counter | MetricKind::Gauge => metric.value = signed,
        MetricKind::Histogram => {
            metric.samples.push(value);
            metric.value = metric.value.saturating_add(1);
        }
    }
    Ok(())
}

fn get(caller: &mut Caller<'_, HostState>, id: u32, ret_value: u32) -> Result<(), Fail> {
    caller.data_mut().count_metric_call("proxy_get_metric");
    let metric = caller.data_mut().metric_mut(id).ok_or(Status::NotFound)?;
    if metric.kind == MetricKind::Histogram {
        return Err(Status::BadArgument.into());
    }
    #[allow(
        clippy::cast_sign_loss,
        reason = "the ABI returns the two's complement of a gauge"
    )]
    let value = metric.value as u64;
    memory::write_u64(caller, ret_value, value)?;
    Ok(())
}

/// Registers the metric imports.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_define_metric",
        |mut caller: Caller<'_, HostState>,
         kind: u32,
         name_ptr: u32,
         name_size: u32,
         ret_id: u32| { to_abi(define(&mut caller, kind, name_ptr, name_size, ret_id)) },
    )?;
    linker.func_wrap(
        "env",
        "proxy_increment_metric",
        |mut caller: Caller<'_, HostState>, id: u32, offset: i64| {
            to_abi(increment(&mut caller, id, offset))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_record_metric",
        |mut caller: Caller<'_, HostState>, id: u32, value: u64| {
            to_abi(record(&mut caller, id, value))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_metric",
        |mut caller: Caller<'_, HostState>, id: u32, ret_value: u32| {
            to_abi(get(&mut caller, id, ret_value))
        },
    )?;
    Ok(())
}
