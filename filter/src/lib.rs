//! `kubelet-authz-filter`: the proxy-wasm glue around the `kubelet-authz` engine. It parses the
//! plugin configuration once, and each HTTP context drives the engine's state machine, turning its
//! steps into callouts, resumes, local replies, logs and metrics.
#![forbid(unsafe_code)]
