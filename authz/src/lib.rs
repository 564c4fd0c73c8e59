//! `kubelet-authz`: the pure model of how a kubelet authenticates and authorizes a request on its
//! HTTPS port, for every kubelet version from 1.21 on, plus a Kubernetes RBAC evaluator.
//!
//! The crate does no I/O. Drivers (the proxy-wasm filter, the test harness, the kubectl plugin)
//! feed it requests, callout results and the current time; it answers with actions
//! ([`decision::Step`]): send a TokenReview, send a SubjectAccessReview, wait, retry later, forward
//! the request, or reply with an exact kubelet response. The vocabulary follows Kubernetes'
//! own authenticator and authorizer packages (`UserInfo`, `Attributes`, `Decision`, `is_subpath`)
//! so the Go and the Rust can be read side by side.
//!
//! Modules, one concern each:
//! - [`kubelet`]: versions, feature gate, HTTP method to verb, path to subresources, endpoints.
//! - [`gates`]: the `--feature-gates` flag parser.
//! - [`path`]: the canonical-path check that refuses ambiguous paths before authentication.
//! - [`identity`]: `UserInfo`, x509 client certificates, XFCC, bearer and WebSocket tokens, anonymous.
//! - [`review`]: TokenReview and SubjectAccessReview wire types.
//! - [`config`]: the filter configuration, parsed in two stages with errors naming the field; it
//!   hands the engine its decision settings ([`decision::Settings`]).
//! - [`cache`]: bounded TTL caches with a caller-supplied clock, and in-flight bookkeeping.
//! - [`decision`]: the request attributes (`GetRequestAttributes`), the per-request state machine
//!   and the per-VM engine state.
//! - [`webhook`]: the kubelet's webhook clients' retry rules (what a callout's result leads to).
//! - [`labels`]: the label values drivers count decisions and callouts under (from the enums).
//! - [`metrics`]: the counter series (families, labels, slots, names) and the per-VM counters.
//! - [`audit`]: the audit policy, and audit.k8s.io/v1 `Event` lines for each decision it writes.
//! - [`schedule`]: the per-VM scheduler, host-free (events in, actions out): sessions, waiting
//!   lists, timers, bounds, every answer counted and audited. The filter only carries it out.
//! - [`rbac`]: the RBAC evaluator over ClusterRoles, Roles and their bindings (feature `yaml`).
//! - `raw` (private): stage one of every loader, serde derive with errors naming the field path.
//! - [`kubeletconfig`]: KubeletConfiguration parsing and the CIS kubelet checks (feature `yaml`).
#![forbid(unsafe_code)]

pub mod audit;
pub mod cache;
pub mod config;
pub mod decision;
pub mod gates;
pub mod identity;
pub mod kubelet;
#[cfg(feature = "yaml")]
pub mod kubeletconfig;
pub mod labels;
pub mod metrics;
pub mod path;
mod raw;
#[cfg(feature = "yaml")]
pub mod rbac;
pub mod review;
pub mod schedule;
pub mod webhook;

pub use identity::UserInfo;
pub use kubelet::{FeatureGates, KubeletVersion};
