//! Guest memory helpers: every read and write is bounds-checked against the exported memory and
//! fails with `InvalidMemoryAccess` instead of trapping; buffers returned to the guest are
//! allocated with the guest's own allocator, as the SDK frees them with `Vec::from_raw_parts`.

use wasmtime::Caller;

use super::error::{Fail, Status};
use super::state::HostState;

/// Guest pointer/length as they arrive (wasm32: `usize` is `i32`).
pub(crate) type Ptr = u32;

fn range(caller: &Caller<'_, HostState>, ptr: Ptr, len: u32) -> Result<usize, Status> {
    let memory = caller.data().memory.ok_or(Status::InternalFailure)?;
    let start = usize::try_from(ptr).map_err(|_| Status::InvalidMemoryAccess)?;
    let len = usize::try_from(len).map_err(|_| Status::InvalidMemoryAccess)?;
    let end = start.checked_add(len).ok_or(Status::InvalidMemoryAccess)?;
    if end > memory.data_size(caller) {
        return Err(Status::InvalidMemoryAccess);
    }
    Ok(start)
}

/// Reads `len` bytes at `ptr`.
pub(crate) fn read(caller: &Caller<'_, HostState>, ptr: Ptr, len: u32) -> Result<Vec<u8>, Status> {
    let start = range(caller, ptr, len)?;
    let memory = caller.data().memory.ok_or(Status::InternalFailure)?;
    let mut buf = vec![0u8; usize::try_from(len).map_err(|_| Status::InvalidMemoryAccess)?];
    memory
        .read(caller, start, &mut buf)
        .map_err(|_| Status::InvalidMemoryAccess)?;
    Ok(buf)
}

/// Reads `len` bytes at `ptr`, treating a null pointer or zero length as empty.
pub(crate) fn read_opt(
    caller: &Caller<'_, HostState>,
    ptr: Ptr,
    len: u32,
) -> Result<Vec<u8>, Status> {
    if len == 0 {
        return Ok(Vec::new());
    }
    read(caller, ptr, len)
}

/// Writes `data` at `ptr`.
pub(crate) fn write(
    caller: &mut Caller<'_, HostState>,
    ptr: Ptr,
    data: &[u8],
) -> Result<(), Status> {
    let len = u32::try_from(data.len()).map_err(|_| Status::InvalidMemoryAccess)?;
    let start = range(caller, ptr, len)?;
    let memory = caller.data().memory.ok_or(Status::InternalFailure)?;
    memory
        .write(caller, start, data)
        .map_err(|_| Status::InvalidMemoryAccess)
}

/// Writes a little-endian `u32` at `ptr`.
pub(crate) fn write_u32(
    caller: &mut Caller<'_, HostState>,
    ptr: Ptr,
    value: u32,
) -> Result<(), Status> {
    write(caller, ptr, &value.to_le_bytes())
}

/// Writes a little-endian `u64` at `ptr`.
pub(crate) fn write_u64(
    caller: &mut Caller<'_, HostState>,
    ptr: Ptr,
    value: u64,
) -> Result<(), Status> {
    write(caller, ptr, &value.to_le_bytes())
}

/// Checks that `len` bytes at `ptr` are writable, without writing.
pub(crate) fn check(caller: &Caller<'_, HostState>, ptr: Ptr, len: u32) -> Result<(), Status> {
    range(caller, ptr, len).map(|_| ())
}

/// Copies `data` into a fresh guest allocation and stores its address and size at `ptr_ptr` and
/// `size_ptr`. Empty data is returned as a null pointer and size 0 (no allocation).
pub(crate) fn return_bytes(
    caller: &mut Caller<'_, HostState>,
    data: &[u8],
    ptr_ptr: Ptr,
    size_ptr: Ptr,
) -> Result<(), Fail> {
    check(caller, ptr_ptr, 4)?;
    check(caller, size_ptr, 4)?;
    let size = u32::try_from(data.len()).map_err(|_| Status::InternalFailure)?;
    if size == 0 {
        write_u32(caller, ptr_ptr, 0)?;
        write_u32(caller, size_ptr, 0)?;
        return Ok(());
    }
    let alloc = caller.data().alloc.clone().ok_or(Status::InternalFailure)?;
    let addr = alloc.call(&mut *caller, size)?;
    if addr == 0 {
        return Err(Status::InternalFailure.into());
    }
    write(caller, addr, data)?;
    write_u32(caller, ptr_ptr, addr)?;
    write_u32(caller, size_ptr, size)?;
    Ok(())
}
