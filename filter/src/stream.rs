//! One HTTP context per request: it reads the request once, hands it to the shared
//! [`Filter`](crate::driver::Filter), and passes on callout responses and the end of the request.

use kubelet_authz::decision::{Request, SpareRequest};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use crate::driver::Next;
use crate::host::{self, HostError};
use crate::shared::{self, deliver, Shared};
use crate::{abi, convert};

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
        let id = self.id;
        // A request decided already (almost all by now) needs nothing: no borrow for the
        // scheduler and no clock read (a hostcall) for it. Busy is checked in `with` (logged).
        let held = match self.shared.try_borrow() {
            Ok(slot) => slot.as_ref().is_some_and(|filter| filter.holds(id)),
            Err(_) => true,
        };
        if held {
            shared::with(&self.shared, "request end", |filter, proxy, now| {
                if filter.holds(id) {
                    filter.on_done(proxy, id, now);
                }
            });
        }
    }
}

/// Read the request of the effective context once: one `get_header_map_pairs` (cheaper than one
/// `get_header_map_value` per header the engine reads, measured in docs/PERFORMANCE.md, and the
/// only read that sees every value of a repeated header: the engine needs them for
/// `x-forwarded-client-cert`, `Connection`, `Upgrade` and `Sec-WebSocket-Protocol`), parsed in
/// place, with only the headers the engine reads copied. The connection's certificate facts are
/// read only with an `x-forwarded-client-cert` header (the only place a certificate is taken
/// from), and the client address not here: when an audit event is written.
fn read_request(spare: SpareRequest) -> Result<Request, HostError> {
    let raw = host::request_header_map()?;
    let headers = host::request_header_refs(&raw)?;
    let (mtls, digest) = if convert::has_xfcc(headers.clone()) {
        let mtls = host::property(abi::PROPERTY_MTLS)?;
        let is_mtls = mtls
            .as_deref()
            .and_then(<[u8]>::first)
            .is_some_and(|b| *b != 0);
        let digest = if is_mtls {
            host::property(abi::PROPERTY_PEER_DIGEST)?
        } else {
            None
        };
        (mtls, digest)
    } else {
        (None, None)
    };
    Ok(convert::build_request(
        headers,
        mtls.as_deref(),
        digest.as_deref(),
        spare,
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
        let id = self.id;
        let next = shared::with(&self.shared, "request", |filter, proxy, now| {
            let request = read_request(filter.spare_request());
            filter.on_headers(proxy, id, request, now)
        });
        match next {
            Some(Next::Continue) => Action::Continue,
            Some(Next::Pause) => Action::Pause,
            None => {
                // Busy, or no configuration: no scheduler to decide, audit or count it.
                host::reply_internal_error("no configured filter to decide the request");
                Action::Pause
            }
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
