//! End-to-end test support, shared by the tests in `tests/tests/` and the demo binary:
//! - [`render`]: the template step for `envoy/kubelet-front-proxy.yaml` (no hand-copied variants);
//! - [`envoy`]: a real Envoy process per test (ready check, ports, captured log, audit lines,
//!   Prometheus counters; killed on drop);
//! - [`stack`]: the test PKI, the stand-in API server and kubelet, and Envoys in front of them;
//! - [`raw`]: raw HTTP/1.1 over TLS, for request targets no HTTP client would send;
//! - [`hostfs`]: a node in a box's files: byte-for-byte snapshots, ConfigMap volumes.
#![forbid(unsafe_code)]

pub mod envoy;
pub mod hostfs;
pub mod raw;
pub mod render;
pub mod stack;
