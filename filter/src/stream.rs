//! One HTTP context per request: it reads the request once, hands it to the shared
//! [`Filter`](crate::driver::Filter), and passes on callout responses and the end of the request.

use kubelet_authz::decision::Request;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use crate::convert;
use crate::driver::Next;
use crate::host::{self, HostError, Level, Proxy};
use crate::shared::{deliver, Shared};

/// The HTTP context of one request.
#[derive(Debug)]
pub struct HttpStream {
    id: u32,
    shared: Shared,
}

impl HttpStream {
    /// The context `id`, sharing the root's state.
    pub fn new(id: u32, shared: Shared) -> Self {
        HttpStream { id, shared }
    }

    /// `Pause` while the request is held (undecided or answered locally), else `Continue`.
    fn hold(&self) -> Action {
        match self.shared.try_borrow() {
            Ok(slot) => match slot.as_ref() {
                Some(filter) if !filter.holds(self.id) => Action::Continue,
                _ => Action::Pause,
            },
            Err(_) => Action::Pause,
        }
    }

    fn done(&self) {
        let Ok(mut slot) = self.shared.try_borrow_mut() else {
            host::log(Level::Error, "kubelet-authz: request end while busy");
            return;
        };
        if let Some(filter) = slot.as_mut() {
            if filter.holds(self.id) {
                let now = host::now_ms().unwrap_or(filter.last_now());
                filter.on_done(&mut Proxy, self.id, now);
            }
        }
    }
}

/// Read the request of the effective context once: headers and connection properties.
fn read_request(with_source: bool) -> Result<Request, HostError> {
    let headers = host::request_headers()?;
    // The engine uses the connection's certificate facts only together with an
    // `x-forwarded-client-cert` header (its digest must match the peer certificate): without
    // one, skip the two property lookups (they are among the dearer hostcalls).
    let has_xfcc = headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case(b"x-forwarded-client-cert"));
    let mtls = if has_xfcc {
        host::property(&["connection", "mtls"])?
    } else {
        None
    };
    let is_mtls = mtls
        .as_deref()
        .and_then(<[u8]>::first)
        .is_some_and(|b| *b != 0);
    let digest = if is_mtls {
        host::property(&["connection", "sha256_peer_certificate_digest"])?
    } else {
        None
    };
    let source = if with_source {
        host::property(&["source", "address"])?
    } else {
        None
    };
    Ok(convert::build_request(
        &headers,
        mtls.as_deref(),
        digest.as_deref(),
        source.as_deref(),
    ))
}

impl Context for HttpStream {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        deliver(&self.shared, self.id, token_id, num_headers, body_size);
    }

    fn on_done(&mut self) -> bool {
        self.done();
        true
    }
}

impl HttpContext for HttpStream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        #[cfg(feature = "panic-probe")]
        panic_probe();
        let Ok(mut slot) = self.shared.try_borrow_mut() else {
            host::reply_internal_error("request while busy");
            return Action::Pause;
        };
        let Some(filter) = slot.as_mut() else {
            host::reply_internal_error("no configuration");
            return Action::Pause;
        };
        let now = match host::now_ms() {
            Ok(t) => t,
            Err(_) => filter.last_now(),
        };
        let request = match read_request(filter.config().audit_enabled) {
            Ok(r) => r,
            Err(e) => {
                filter.count_internal_error(&mut Proxy);
                host::reply_internal_error(&format!("cannot read the request: {e}"));
                return Action::Pause;
            }
        };
        match filter.on_request_headers(&mut Proxy, self.id, request, now) {
            Next::Continue => Action::Continue,
            Next::Pause => Action::Pause,
        }
    }

    fn on_http_request_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        // Buffered by the proxy while paused; released by the resume after the decision.
        self.hold()
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        self.hold()
    }
}

/// Test builds only (cargo feature `panic-probe`, never in the release artefact): panic on a
/// request carrying `x-kubelet-authz-panic-probe`, so that a test can prove Envoy's
/// `failure_policy: FAIL_RELOAD` brings a crashed VM back, enforcing.
#[cfg(feature = "panic-probe")]
#[allow(clippy::panic)]
fn panic_probe() {
    // Kept in the module as bytes (tests/tests/hardening_panic.rs looks for the name), not
    // folded into integer compares.
    let probe: &[u8] = std::hint::black_box(b"x-kubelet-authz-panic-probe");
    let headers = host::request_headers().unwrap_or_default();
    if headers.iter().any(|(k, _)| k.as_slice() == probe) {
        panic!("kubelet-authz: panic probe");
    }
}

impl Drop for HttpStream {
    fn drop(&mut self) {
        // A host that deletes a context without `on_done` must not leave its callout's waiters
        // hanging. After `on_done` this finds nothing to do.
        self.done();
    }
}
