//! A proxy-wasm HTTP filter that does nothing: every callback keeps the SDK's default (continue).
//! Envoy still enters the VM for each callback the module exports, exactly as for the
//! kubelet-authz filter built with the same SDK, so this is the floor any wasm filter pays.
//! Configuration (g) of `envoy/bench/run.sh`.
#![forbid(unsafe_code)]

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

/// The root context: makes one [`NoopHttp`] per request.
struct NoopRoot;

impl Context for NoopRoot {}

impl RootContext for NoopRoot {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(NoopHttp))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One request: every callback continues.
struct NoopHttp;

impl Context for NoopHttp {}

impl HttpContext for NoopHttp {}

/// The module's entry point (`_initialize`), in a private module: it is exported by name.
mod entry {
    use proxy_wasm::types::LogLevel;

    use crate::NoopRoot;

    proxy_wasm::main! {{
        proxy_wasm::set_log_level(LogLevel::Warn);
        proxy_wasm::set_root_context(|_context_id| Box::new(NoopRoot));
    }}
}
