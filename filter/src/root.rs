//! The root context: parses the plugin configuration once, owns the shared [`Filter`], creates
//! one HTTP context per request, runs the tick (retries, and the counters' flush every second),
//! and takes the callouts sent from its own callbacks.

use std::cell::RefCell;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::rc::Rc;

use kubelet_authz::config::Config;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

use crate::driver::Filter;
use crate::host::{self, Level, Proxy};
use crate::shared::{self, Shared};
use crate::stream::HttpStream;

/// The root context.
#[derive(Debug)]
pub struct Root {
    id: u32,
    shared: Shared,
}

impl Root {
    /// A root context with no configuration yet.
    pub fn new(id: u32) -> Self {
        Root {
            id,
            shared: Rc::new(RefCell::new(None)),
        }
    }
}

/// 32 random bytes, from the standard library's per-process random hash keys (WASI
/// `random_get`).
pub fn random_bytes() -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        let mut h = RandomState::new().build_hasher();
        h.write_usize(i);
        for (b, v) in chunk.iter_mut().zip(h.finish().to_le_bytes()) {
            *b = v;
        }
    }
    out
}

/// A random number (retry jitter seed).
pub fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(0x6b75_6265_6c65_7421);
    h.finish()
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        shared::deliver(&self.shared, self.id, token_id, num_headers, body_size);
    }

    fn on_done(&mut self) -> bool {
        // The VM stops: hand over the counts since the last tick.
        shared::with(&self.shared, "stop", |filter, proxy, _| {
            filter.flush_metrics(proxy);
        });
        true
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let bytes = match host::plugin_configuration(plugin_configuration_size) {
            Ok(b) => b,
            Err(e) => {
                host::log(
                    Level::Error,
                    &format!("kubelet-authz: cannot read the plugin configuration: {e}"),
                );
                return false;
            }
        };
        let config = match Config::from_json(&bytes) {
            Ok(c) => c,
            Err(e) => {
                host::log(
                    Level::Error,
                    &format!("kubelet-authz: invalid configuration: {e}"),
                );
                return false;
            }
        };
        let audit = if !config.audit_enabled() {
            "off".to_string()
        } else if *config.audit_policy() == kubelet_authz::audit::Policy::builtin() {
            "built-in policy".to_string()
        } else {
            format!("policy of {} rules", config.audit_policy().rules().len())
        };
        let summary = format!(
            "kubelet-authz: configured for node {:?}, kubelet {}, authorization {:?}, enforcement {:?}, API server cluster {:?}, audit {audit}",
            config.node_name,
            config.model.version(),
            config.mode,
            config.enforcement,
            config.api_server().cluster
        );
        let mut filter = Filter::new(config, self.id, random_bytes(), random_u64());
        let Ok(mut slot) = self.shared.try_borrow_mut() else {
            host::log(Level::Error, "kubelet-authz: configuration while busy");
            return false;
        };
        if let Some(old) = slot.as_mut() {
            if old.pending() > 0 {
                host::log(
                    Level::Warn,
                    "kubelet-authz: reconfigured with requests still undecided; they are dropped",
                );
            }
            // Its counts since the last tick would be lost with it.
            old.flush_metrics(&mut Proxy);
        }
        filter.start(&mut Proxy);
        *slot = Some(filter);
        host::log(Level::Info, &summary);
        true
    }

    fn on_tick(&mut self) {
        shared::with(&self.shared, "tick", |filter, proxy, now| {
            filter.on_tick(proxy, now);
        });
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(HttpStream::new(
            context_id,
            Rc::clone(&self.shared),
        )))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
