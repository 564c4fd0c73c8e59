//! `kubelet-authz-filter`: the proxy-wasm glue around the `kubelet-authz` engine. It parses the
//! plugin configuration once, and each HTTP context drives the engine's state machine, turning its
//! steps into callouts, resumes, local replies, logs and metrics.
//!
//! Modules:
//! - [`root`]: the root context (configuration, shared state, the tick: retries, metrics flush).
//! - [`stream`]: the HTTP context of each request (reads it once, passes events on).
//! - [`shared`]: the state the root and the HTTP contexts share, and callout delivery to it.
//! - [`driver`]: the per-VM state and the loop that turns engine steps into proxy actions.
//! - [`host`]: the only module that calls the proxy (through [`abi`], and the SDK's dispatch).
//! - [`abi`]: checked bindings of the hostcalls, which never panic on what the proxy hands over.
//! - [`metrics`]: labelled counters counted in the VM and flushed on the tick; latency histogram.
//! - [`convert`]: pure conversions of requests and callout responses.
#![deny(unsafe_code)]

pub mod abi;
pub mod convert;
pub mod driver;
pub mod host;
pub mod metrics;
pub mod root;
pub mod shared;
pub mod stream;

/// The module's entry point (`_initialize`), in a private module: it is exported by name.
mod entry {
    use proxy_wasm::types::LogLevel;

    use crate::{host, root};

    proxy_wasm::main! {{
        // The SDK's logger installs a panic hook that itself unwraps; replace it with one that
        // cannot fail, first thing.
        proxy_wasm::set_log_level(LogLevel::Info);
        std::panic::set_hook(Box::new(|info| {
            host::log_critical(&format!("kubelet-authz: panic: {info}"));
        }));
        proxy_wasm::set_root_context(|context_id| Box::new(root::Root::new(context_id)));
    }}
}
