//! `kubelet-authz-standins`: the stand-in API server and kubelet for tests and the demo, usable
//! in process (this library) and as the binaries `kubelet-authz-apiserver` and
//! `kubelet-authz-kubelet`. It does not depend on the wasmtime host (`kubelet-authz-harness`), so
//! the end-to-end crate and the plugin's tests build without wasmtime.
//!
//! - [`pki`]: a CA, loopback server certificates and client certificates as PEM files.
//! - [`apiserver`]: TokenReview, SubjectAccessReview and SelfSubjectAccessReview decided by the
//!   RBAC evaluator, RBAC and Node reads, discovery for kubectl; records and fault switches.
//! - [`client`]: a small HTTPS and WebSocket client for tests.
//! - [`kubelet`]: an HTTPS upstream that echoes what it received, with WebSocket echo on
//!   `/exec` and `/attach` and a SPDY upgrade handshake.
//! - [`systemctl`]: a stand-in `systemctl` that runs the stand-in kubelet from unit files under a
//!   test's host root (binary `kubelet-authz-systemctl`).
//!
//! Both servers listen on loopback, speak HTTP/1.1 over TLS, and stop when their handle's
//! `shutdown` is awaited (or the handle is dropped).
#![forbid(unsafe_code)]

pub mod apiserver;
pub mod client;
pub mod kubelet;
pub mod pki;
pub mod serve;
pub mod systemctl;

use std::net::SocketAddr;
use std::path::PathBuf;

/// Why a stand-in could not start.
#[derive(Debug, thiserror::Error)]
pub enum StandinError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// TLS configuration was refused.
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),
    /// The PKI could not be created or read.
    #[error("pki: {0}")]
    Pki(#[from] pki::PkiError),
    /// A data file (tokens, RBAC, nodes) is invalid.
    #[error("{0}")]
    Config(String),
    /// Installing a signal handler failed.
    #[error("signal handler: {0}")]
    Signal(#[source] std::io::Error),
}
