//! `kubelet-authz-harness`: a proxy-wasm host on wasmtime that loads the filter's `.wasm` and
//! drives it as Envoy does, and the local stand-ins (API server, kubelet) the tests need.
#![forbid(unsafe_code)]
