//! `kubelet-authz-test-support`: what the test crates of the workspace share, instead of
//! `#[path]` includes and copies. Never a dependency of a shipped crate: a dev-dependency of `authz` and
//! `harness`, and a dependency of the unpublished end-to-end crate `tests/` (its `src/` is test code).
//! - [`oracle`]: the kubelet's subresource checks written out by hand, independently of the engine;
//! - [`cert`]: self-signed client certificates made with the `openssl` command;
//! - [`encode`]: Envoy's XFCC percent-encoding, the WebSocket subprotocol token, chunked bodies;
//! - [`corpus`]: the YAML case corpus (`authz/tests/cases/`) that every driver runs;
//! - [`workload`]: the benchmark workload (a Prometheus scrape with a 1.2 KB token) and its answers.
#![forbid(unsafe_code)]

pub mod cert;
pub mod corpus;
pub mod encode;
pub mod oracle;
pub mod workload;
