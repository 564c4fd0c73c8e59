//! The benchmark workload of the engine's measurements (criterion's `decision` bench, the
//! callgrind example, the allocation count): a Prometheus scrape carrying the 1.2 KB bound
//! ServiceAccount token of `envoy/bench/token-1k.txt`, the minimal request of the earlier runs,
//! and the API server's answers that make both allowed.

use kubelet_authz::decision::{CalloutKind, CalloutResponse, Request};

/// The 1.2 KB bound ServiceAccount token of the realistic workload.
pub const TOKEN: &str = include_str!("../../../envoy/bench/token-1k.txt");

/// The API server's answer to a review of `kind`: the token is Prometheus' ServiceAccount, and
/// it may read the node's metrics.
pub fn answer(kind: CalloutKind) -> CalloutResponse {
    let body = match kind {
        CalloutKind::TokenReview => {
            r#"{"status":{"authenticated":true,"user":{"username":"system:serviceaccount:monitoring:prometheus","groups":["system:serviceaccounts","system:authenticated"]}}}"#
        }
        CalloutKind::SubjectAccessReview => {
            r#"{"status":{"allowed":true,"reason":"RBAC: allowed"}}"#
        }
    };
    CalloutResponse::Http {
        status: 201,
        retry_after: None,
        body: body.as_bytes().to_vec(),
    }
}

/// The header bytes of a Prometheus scrape of `/metrics/cadvisor` with the 1.2 KB token, as a
/// proxy holds them: [`ScrapeHeaders::pairs`].
#[derive(Debug, Clone)]
pub struct ScrapeHeaders {
    authorization: String,
    path: &'static str,
}

impl ScrapeHeaders {
    /// The scrape's headers.
    pub fn new() -> Self {
        ScrapeHeaders::for_path("/metrics/cadvisor")
    }

    /// The same headers asking for `path` (`/pods`: audited by the built-in policy).
    pub fn for_path(path: &'static str) -> Self {
        ScrapeHeaders {
            authorization: format!("Bearer {}", TOKEN.trim_end()),
            path,
        }
    }

    /// The pairs, in the order a proxy hands them over.
    pub fn pairs(&self) -> [(&[u8], &[u8]); 10] {
        [
            (b":method", b"GET"),
            (b":path", self.path.as_bytes()),
            (b":authority", b"node-1:10250"),
            (b"user-agent", b"Prometheus/2.53.0"),
            (
                b"accept",
                b"application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
            ),
            (b"accept-encoding", b"gzip"),
            (b"authorization", self.authorization.as_bytes()),
            (b"x-prometheus-scrape-timeout-seconds", b"10"),
            (b"x-forwarded-proto", b"http"),
            (b"x-request-id", b"0d3c5f9e-7e1a-4a8e-9a51-2f7b2b1c9e00"),
        ]
    }
}

impl Default for ScrapeHeaders {
    fn default() -> Self {
        ScrapeHeaders::new()
    }
}

/// A Prometheus scrape of `/metrics/cadvisor` as a driver hands it over (the filter copies only
/// the headers the engine reads, `Request::from_header_bytes`).
pub fn scrape() -> Request {
    Request::from_header_bytes(ScrapeHeaders::new().pairs())
}

/// The minimal request of the earlier runs (a short token).
pub fn minimal() -> Request {
    Request::new("GET", "/metrics/cadvisor")
        .header(
            "authorization",
            "Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6IiJ9.payload.signature",
        )
        .header("user-agent", "Prometheus/2.53")
}
