//! `kubelet-authz-harness`: a proxy-wasm host on wasmtime that loads the filter's `.wasm` and
//! drives it as Envoy does ([`host`]), and the scenario runner on top of it ([`scenario`]). The
//! stand-in API server and kubelet are their own crate, `kubelet-authz-standins`
//! (`harness/standins/`).
#![forbid(unsafe_code)]

pub mod host;
pub mod scenario;
pub mod testdata;
