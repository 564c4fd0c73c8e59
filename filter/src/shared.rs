//! The filter state shared by the root context and every HTTP context of one VM, and the
//! delivery of callout responses to it (a response may arrive at either kind of context).

use std::cell::RefCell;
use std::rc::Rc;

use kubelet_authz::decision::CalloutResponse;

use crate::convert::{self, MAX_CALLOUT_BODY};
use crate::driver::Filter;
use crate::host::{self, Level, Proxy};

/// The filter state shared by the root and every HTTP context of one VM (single-threaded).
pub type Shared = Rc<RefCell<Option<Filter>>>;

/// Read the callout response being delivered (the effective context is the one that sent it).
fn read_call_response(num_headers: usize, body_size: usize) -> CalloutResponse {
    if num_headers == 0 {
        return convert::no_response();
    }
    let headers = match host::call_response_headers() {
        Ok(h) => h,
        Err(e) => return CalloutResponse::Failed(e.to_string()),
    };
    if body_size > MAX_CALLOUT_BODY {
        return CalloutResponse::Failed(format!("response body of {body_size} bytes is too large"));
    }
    let body = if body_size == 0 {
        Vec::new()
    } else {
        match host::call_response_body(body_size) {
            Ok(b) => b,
            Err(e) => return CalloutResponse::Failed(e.to_string()),
        }
    };
    convert::callout_response(&headers, body)
}

/// Run `f` on the configured filter with the proxy's clock (the last time seen when the clock
/// fails). `None`, logged, when the filter is borrowed already (`what` names the callback), and
/// when there is no configuration. The one place the shared state is borrowed mutably.
pub fn with<R>(
    shared: &Shared,
    what: &str,
    f: impl FnOnce(&mut Filter, &mut Proxy, u64) -> R,
) -> Option<R> {
    let Ok(mut slot) = shared.try_borrow_mut() else {
        host::log(Level::Error, &format!("kubelet-authz: {what} while busy"));
        return None;
    };
    let filter = slot.as_mut()?;
    let now = host::now_ms().unwrap_or(filter.last_now());
    Some(f(filter, &mut Proxy, now))
}

/// A callout response arrived at context `current` (an HTTP context or the root): read it and
/// hand it to the filter, which knows whose it is by its token.
pub fn deliver(shared: &Shared, current: u32, token: u32, num_headers: usize, body_size: usize) {
    let response = read_call_response(num_headers, body_size);
    with(shared, "callout response", |filter, proxy, now| {
        filter.on_call_response(proxy, current, token, response, now);
    });
}
