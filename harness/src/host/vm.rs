//! One instantiated VM: the store, the guest's callback exports, and the wrappers that enter the
//! guest. Every entry sets the effective context, turns a trap into [`HostError::Trap`] (with the
//! logs) and marks the VM dead, as Envoy does; after each entry, queued `proxy_on_queue_ready`
//! notifications are delivered.

use std::time::Duration;

use wasmtime::{Instance, Store, TypedFunc, WasmParams, WasmResults};

use super::error::HostError;
use super::module::{Abi, Compiled};
use super::state::{HostState, ROOT_CONTEXT_ID};
use super::types::LogEntry;

type F<P, R> = Option<TypedFunc<P, R>>;

/// The callbacks the host may call (absent ones behave as the SDK's defaults would).
pub(crate) struct Exports {
    pub on_context_create: F<(u32, u32), ()>,
    pub on_vm_start: F<(u32, u32), u32>,
    pub on_configure: F<(u32, u32), u32>,
    pub on_tick: F<u32, ()>,
    pub on_queue_ready: F<(u32, u32), ()>,
    pub on_request_headers: F<(u32, u32, u32), u32>,
    pub on_request_body: F<(u32, u32, u32), u32>,
    pub on_request_trailers: F<(u32, u32), u32>,
    pub on_response_headers: F<(u32, u32, u32), u32>,
    pub on_response_body: F<(u32, u32, u32), u32>,
    pub on_response_trailers: F<(u32, u32), u32>,
    pub on_http_call_response: F<(u32, u32, u32, u32, u32), ()>,
    pub on_done: F<u32, u32>,
    pub on_log: F<u32, ()>,
    pub on_delete: F<u32, ()>,
}

/// A live VM.
pub(crate) struct Vm {
    pub store: Store<HostState>,
    pub exports: Exports,
    pub abi: Abi,
    pub compile_time: Duration,
    pub dead: Option<(String, String)>,
}

fn typed<P: WasmParams, R: WasmResults>(
    instance: &Instance,
    store: &mut Store<HostState>,
    name: &str,
) -> Result<F<P, R>, String> {
    match instance.get_func(&mut *store, name) {
        None => Ok(None),
        Some(func) => func
            .typed::<P, R>(&*store)
            .map(Some)
            .map_err(|e| format!("export `{name}` has an unexpected signature: {e:#}")),
    }
}

impl Vm {
    /// Instantiates `compiled` and runs `_initialize` (or `_start`).
    pub fn instantiate(compiled: &Compiled, state: HostState) -> Result<Self, HostError> {
        let mut store = Store::new(super::module::engine(), state);
        let instance = match compiled.pre.instantiate(&mut store) {
            Ok(instance) => instance,
            Err(error) => {
                return Err(HostError::Trap {
                    callback: String::from("instantiation"),
                    message: format!("{error:?}"),
                    logs: store.data().logs.clone(),
                })
            }
        };
        let bad = |message: String| HostError::Trap {
            callback: String::from("instantiation"),
            message,
            logs: Vec::new(),
        };
        let memory = instance.get_memory(&mut store, "memory");
        store.data_mut().memory = memory;
        let alloc = match typed::<u32, u32>(&instance, &mut store, "proxy_on_memory_allocate")
            .map_err(bad)?
        {
            Some(f) => Some(f),
            None => typed::<u32, u32>(&instance, &mut store, "malloc").map_err(bad)?,
        };
        store.data_mut().alloc = alloc;
        let exports = (|| -> Result<Exports, String> {
            let s = &mut store;
            Ok(Exports {
                on_context_create: typed(&instance, s, "proxy_on_context_create")?,
                on_vm_start: typed(&instance, s, "proxy_on_vm_start")?,
                on_configure: typed(&instance, s, "proxy_on_configure")?,
                on_tick: typed(&instance, s, "proxy_on_tick")?,
                on_queue_ready: typed(&instance, s, "proxy_on_queue_ready")?,
                on_request_headers: typed(&instance, s, "proxy_on_request_headers")?,
                on_request_body: typed(&instance, s, "proxy_on_request_body")?,
                on_request_trailers: typed(&instance, s, "proxy_on_request_trailers")?,
                on_response_headers: typed(&instance, s, "proxy_on_response_headers")?,
                on_response_body: typed(&instance, s, "proxy_on_response_body")?,
                on_response_trailers: typed(&instance, s, "proxy_on_response_trailers")?,
                on_http_call_response: typed(&instance, s, "proxy_on_http_call_response")?,
                on_done: typed(&instance, s, "proxy_on_done")?,
                on_log: typed(&instance, s, "proxy_on_log")?,
                on_delete: typed(&instance, s, "proxy_on_delete")?,
            })
        })()
        .map_err(bad)?;
        let init: F<(), ()> = match typed(&instance, &mut store, "_initialize").map_err(bad)? {
            Some(f) => Some(f),
            None => typed(&instance, &mut store, "_start").map_err(bad)?,
        };
        let mut vm = Self {
            store,
            exports,
            abi: compiled.abi,
            compile_time: compiled.compile_time,
            dead: None,
        };
        vm.invoke("_initialize", ROOT_CONTEXT_ID, init, ())?;
        Ok(vm)
    }

    /// All logs so far (partial stdout/stderr lines flushed).
    pub fn logs(&mut self) -> Vec<LogEntry> {
        self.store.data_mut().flush_stdio();
        self.store.data().logs.clone()
    }

    /// Errors when the VM trapped earlier.
    pub fn check_alive(&self) -> Result<(), HostError> {
        match &self.dead {
            Some((callback, message)) => Err(HostError::Dead {
                callback: callback.clone(),
                message: message.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Enters the guest through `func` with `context` effective. `Ok(None)` when not exported.
    pub fn invoke<P: WasmParams, R: WasmResults>(
        &mut self,
        callback: &'static str,
        context: u32,
        func: F<P, R>,
        params: P,
    ) -> Result<Option<R>, HostError> {
        self.check_alive()?;
        let Some(func) = func else {
            return Ok(None);
        };
        self.store.data_mut().current_context = context;
        let outer = std::mem::replace(&mut self.store.data_mut().callback, callback);
        let result = func.call(&mut self.store, params);
        self.store.data_mut().callback = outer;
        self.store.data_mut().current_context = ROOT_CONTEXT_ID;
        match result {
            Ok(value) => {
                self.deliver_queue_notifications()?;
                Ok(Some(value))
            }
            Err(error) => {
                let message = format!("{error:?}");
                self.dead = Some((callback.to_owned(), message.clone()));
                Err(HostError::Trap {
                    callback: callback.to_owned(),
                    message,
                    logs: self.logs(),
                })
            }
        }
    }

    fn deliver_queue_notifications(&mut self) -> Result<(), HostError> {
        // Bounded: a guest that re-enqueues from on_queue_ready forever is cut off.
        for _ in 0..1000 {
            let pending = std::mem::take(&mut self.store.data_mut().queue_notifications);
            if pending.is_empty() {
                return Ok(());
            }
            for (context, queue) in pending {
                let func = self.exports.on_queue_ready.clone();
                let Some(func) = func else { continue };
                self.store.data_mut().current_context = context;
                self.store.data_mut().callback = "proxy_on_queue_ready";
                let result = func.call(&mut self.store, (context, queue));
                self.store.data_mut().callback = "";
                self.store.data_mut().current_context = ROOT_CONTEXT_ID;
                if let Err(error) = result {
                    let message = format!("{error:?}");
                    self.dead = Some((String::from("proxy_on_queue_ready"), message.clone()));
                    return Err(HostError::Trap {
                        callback: String::from("proxy_on_queue_ready"),
                        message,
                        logs: self.logs(),
                    });
                }
            }
        }
        Ok(())
    }
}
