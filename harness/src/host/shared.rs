//! Shared data and shared queue hostcalls. Shared data is per host (one VM per test), with
//! compare-and-swap: every write bumps the entry's CAS, and a write with a non-zero CAS that differs
//! is refused with `CasMismatch`. Queues are minimal: register/resolve by name, enqueue, dequeue;
//! an enqueue schedules `proxy_on_queue_ready` on the root context after the current
//! callback returns.

use std::collections::VecDeque;

use wasmtime::{Caller, Linker};

use super::error::{to_abi, Fail, Status};
use super::memory;
use super::state::{HostState, Queue, SharedEntry, ROOT_CONTEXT_ID};

fn get(
    caller: &mut Caller<'_, HostState>,
    key: (u32, u32),
    ret_ptr: u32,
    ret_size: u32,
    ret_cas: u32,
) -> Result<(), Fail> {
    let key = memory::read_opt(caller, key.0, key.1)?;
    memory::check(caller, ret_cas, 4)?;
    let (value, cas) = caller
        .data()
        .shared
        .get(&key)
        .map(|entry| (entry.value.clone(), entry.cas))
        .ok_or(Status::NotFound)?;
    memory::return_bytes(caller, &value, ret_ptr, ret_size)?;
    memory::write_u32(caller, ret_cas, cas)?;
    Ok(())
}

/// Writes shared data with the ABI's CAS rule (also used by `Host::set_shared_data`).
pub(crate) fn store(
    state: &mut HostState,
    key: Vec<u8>,
    value: Vec<u8>,
    cas: u32,
) -> Result<(), Status> {
    if cas != 0 {
        if let Some(entry) = state.shared.get(&key) {
            if entry.cas != cas {
                return Err(Status::CasMismatch);
            }
        }
    }
    let next = state.next_cas;
    state.next_cas = next.wrapping_add(1).max(1);
    state.shared.insert(key, SharedEntry { value, cas: next });
    Ok(())
}

fn set(
    caller: &mut Caller<'_, HostState>,
    key: (u32, u32),
    value: (u32, u32),
    cas: u32,
) -> Result<(), Fail> {
    let key = memory::read_opt(caller, key.0, key.1)?;
    let value = memory::read_opt(caller, value.0, value.1)?;
    store(caller.data_mut(), key, value, cas)?;
    Ok(())
}

fn queue_id(index: usize) -> Result<u32, Status> {
    u32::try_from(index)
        .ok()
        .and_then(|i| i.checked_add(1))
        .ok_or(Status::InternalFailure)
}

fn register(caller: &mut Caller<'_, HostState>, name: (u32, u32), ret_id: u32) -> Result<(), Fail> {
    let name = memory::read_opt(caller, name.0, name.1)?;
    memory::check(caller, ret_id, 4)?;
    let state = caller.data_mut();
    // As in Envoy, the queue belongs to the registering context's root context.
    let owner = ROOT_CONTEXT_ID;
    let index = match state
        .queues
        .iter()
        .position(|q| q.vm_id.is_empty() && q.name == name)
    {
        Some(index) => {
            if let Some(queue) = state.queues.get_mut(index) {
                queue.owner_context = owner;
            }
            index
        }
        None => {
            state.queues.push(Queue {
                vm_id: Vec::new(),
                name,
                owner_context: owner,
                items: VecDeque::new(),
            });
            state.queues.len().saturating_sub(1)
        }
    };
    memory::write_u32(caller, ret_id, queue_id(index)?)?;
    Ok(())
}

fn resolve(
    caller: &mut Caller<'_, HostState>,
    vm_id: (u32, u32),
    name: (u32, u32),
    ret_id: u32,
) -> Result<(), Fail> {
    let vm_id = memory::read_opt(caller, vm_id.0, vm_id.1)?;
    let name = memory::read_opt(caller, name.0, name.1)?;
    let index = caller
        .data()
        .queues
        .iter()
        .position(|q| q.vm_id == vm_id && q.name == name)
        .ok_or(Status::NotFound)?;
    memory::write_u32(caller, ret_id, queue_id(index)?)?;
    Ok(())
}

fn queue_mut(state: &mut HostState, id: u32) -> Result<&mut Queue, Status> {
    let index = usize::try_from(id)
        .ok()
        .and_then(|i| i.checked_sub(1))
        .ok_or(Status::NotFound)?;
    state.queues.get_mut(index).ok_or(Status::NotFound)
}

fn enqueue(caller: &mut Caller<'_, HostState>, id: u32, value: (u32, u32)) -> Result<(), Fail> {
    let value = memory::read_opt(caller, value.0, value.1)?;
    let state = caller.data_mut();
    let queue = queue_mut(state, id)?;
    queue.items.push_back(value);
    let owner = queue.owner_context;
    state.queue_notifications.push((owner, id));
    Ok(())
}

fn dequeue(
    caller: &mut Caller<'_, HostState>,
    id: u32,
    ret_ptr: u32,
    ret_size: u32,
) -> Result<(), Fail> {
    let item = queue_mut(caller.data_mut(), id)?
        .items
        .pop_front()
        .ok_or(Status::Empty)?;
    memory::return_bytes(caller, &item, ret_ptr, ret_size)
}

/// Registers the shared data and queue imports.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut caller: Caller<'_, HostState>,
         key_ptr: u32,
         key_size: u32,
         ret_ptr: u32,
         ret_size: u32,
         ret_cas: u32| {
            to_abi(get(
                &mut caller,
                (key_ptr, key_size),
                ret_ptr,
                ret_size,
                ret_cas,
            ))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_shared_data",
        |mut caller: Caller<'_, HostState>,
         key_ptr: u32,
         key_size: u32,
         value_ptr: u32,
         value_size: u32,
         cas: u32| {
            to_abi(set(
                &mut caller,
                (key_ptr, key_size),
                (value_ptr, value_size),
                cas,
            ))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_register_shared_queue",
        |mut caller: Caller<'_, HostState>, name_ptr: u32, name_size: u32, ret_id: u32| {
            to_abi(register(&mut caller, (name_ptr, name_size), ret_id))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_resolve_shared_queue",
        |mut caller: Caller<'_, HostState>,
         vm_ptr: u32,
         vm_size: u32,
         name_ptr: u32,
         name_size: u32,
         ret_id: u32| {
            to_abi(resolve(
                &mut caller,
                (vm_ptr, vm_size),
                (name_ptr, name_size),
                ret_id,
            ))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_enqueue_shared_queue",
        |mut caller: Caller<'_, HostState>, id: u32, value_ptr: u32, value_size: u32| {
            to_abi(enqueue(&mut caller, id, (value_ptr, value_size)))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_dequeue_shared_queue",
        |mut caller: Caller<'_, HostState>, id: u32, ret_ptr: u32, ret_size: u32| {
            to_abi(dequeue(&mut caller, id, ret_ptr, ret_size))
        },
    )?;
    Ok(())
}
