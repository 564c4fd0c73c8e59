//! `kubelet-authz-harness`: a proxy-wasm host on wasmtime that loads the filter's `.wasm` and
//! drives it as Envoy does ([`host`]), and the local stand-ins the tests and the demo need
//! ([`standins`]: an API server whose decisions come from the RBAC evaluator, and a kubelet).
#![forbid(unsafe_code)]

pub mod host;
pub mod scenario;
pub mod standins;
