//! Compiling and linking: one shared `Engine`, and a process-wide cache that compiles each module
//! file once (keyed by path, size and modification time) into an `InstancePre` with every import
//! resolved, so each test only instantiates. Imports the host does not provide are linked as traps
//! that name the import. The ABI version is detected from the module's exports.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use wasmtime::{Engine, ExternType, InstancePre, Linker, Module};

use super::error::HostError;
use super::state::HostState;
use super::{buffers, headers, http, logging, metrics, properties, shared, timers, wasi};

/// The proxy-wasm ABI a module declares with its `proxy_abi_version_*` export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abi {
    /// `proxy_abi_version_0_2_0`.
    V0_2_0,
    /// `proxy_abi_version_0_2_1` (what proxy-wasm Rust SDK 0.2.x exports).
    V0_2_1,
}

/// A compiled, linked module ready to instantiate.
pub(crate) struct Compiled {
    pub pre: InstancePre<HostState>,
    pub abi: Abi,
    pub compile_time: Duration,
}

type CacheKey = (PathBuf, u64, Option<SystemTime>);

fn cache() -> &'static Mutex<HashMap<CacheKey, Arc<Compiled>>> {
    static CACHE: OnceLock<Mutex<HashMap<CacheKey, Arc<Compiled>>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The engine every host shares.
pub(crate) fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(Engine::default)
}

fn load_error(path: &Path, message: impl Into<String>) -> HostError {
    HostError::Load {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// The compiled module for `path`, compiling it on first use in this process.
pub(crate) fn compiled(path: &Path) -> Result<Arc<Compiled>, HostError> {
    let canonical = path
        .canonicalize()
        .map_err(|e| load_error(path, format!("{e}")))?;
    let meta = std::fs::metadata(&canonical).map_err(|e| load_error(path, format!("{e}")))?;
    let key = (canonical.clone(), meta.len(), meta.modified().ok());
    // Holding the lock while compiling makes parallel tests wait for the one compilation.
    let mut cache = cache().lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(found) = cache.get(&key) {
        return Ok(Arc::clone(found));
    }
    let started = Instant::now();
    let bytes = std::fs::read(&canonical).map_err(|e| load_error(path, format!("{e}")))?;
    let module = Module::new(engine(), &bytes).map_err(|e| load_error(path, format!("{e:#}")))?;
    let abi = detect_abi(&module).map_err(|m| load_error(path, m))?;
    let linker = linker(&module).map_err(|e| load_error(path, format!("{e:#}")))?;
    let pre = linker
        .instantiate_pre(&module)
        .map_err(|e| load_error(path, format!("{e:#}")))?;
    let compiled = Arc::new(Compiled {
        pre,
        abi,
        compile_time: started.elapsed(),
    });
    cache.insert(key, Arc::clone(&compiled));
    Ok(compiled)
}

fn detect_abi(module: &Module) -> Result<Abi, String> {
    let mut abi = None;
    let mut has_memory = false;
    let mut has_alloc = false;
    for export in module.exports() {
        match export.name() {
            "proxy_abi_version_0_2_1" => abi = Some(Abi::V0_2_1),
            "proxy_abi_version_0_2_0" if abi.is_none() => abi = Some(Abi::V0_2_0),
            "memory" => has_memory = true,
            "proxy_on_memory_allocate" | "malloc" => has_alloc = true,
            _ => {}
        }
    }
    if !has_memory {
        return Err(String::from("the module exports no `memory`"));
    }
    if !has_alloc {
        return Err(String::from(
            "the module exports neither `proxy_on_memory_allocate` nor `malloc`",
        ));
    }
    abi.ok_or_else(|| {
        String::from(
            "not a proxy-wasm 0.2.x module: no `proxy_abi_version_0_2_1` or `proxy_abi_version_0_2_0` export",
        )
    })
}

fn linker(module: &Module) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine());
    linker.allow_shadowing(true);
    // Every function import first becomes a trap naming it; the real hostcalls then shadow those
    // the host implements.
    for import in module.imports() {
        if let ExternType::Func(ty) = import.ty() {
            let name = format!("{}.{}", import.module(), import.name());
            linker.func_new(import.module(), import.name(), ty, move |_, _, _| {
                Err(wasmtime::format_err!(
                    "the guest called import `{name}`, which this host does not implement"
                ))
            })?;
        }
    }
    wasi::add_to_linker(&mut linker)?;
    logging::add_to_linker(&mut linker)?;
    timers::add_to_linker(&mut linker)?;
    buffers::add_to_linker(&mut linker)?;
    headers::add_to_linker(&mut linker)?;
    properties::add_to_linker(&mut linker)?;
    http::add_to_linker(&mut linker)?;
    metrics::add_to_linker(&mut linker)?;
    shared::add_to_linker(&mut linker)?;
    Ok(linker)
}
