//! How a session ends: the kubelet's answers (200, 400, 401, the 403 and 500 bodies per
//! version), the header edits that keep the caller's credentials from the kubelet, and the
//! [`Verdict`] that records it all, from what the state it ends in knows ([`Ending`]).

use crate::identity;
use crate::kubelet::{self, Subresource};

use super::session::{Authorizing, Session, State, Target};
use super::{AuthnMethod, Engine, Outcome, SharedUser, Step, Verdict};

/// What a verdict records of the state a session ends in: what the request asked for (once
/// known), and who asked (once authenticated).
#[derive(Debug, Clone)]
pub(super) struct Ending {
    path: String,
    verb: &'static str,
    strict_applied: bool,
    user: Option<SharedUser>,
    authn: AuthnMethod,
}

impl Ending {
    /// Nothing known.
    pub(super) fn none() -> Self {
        Ending {
            path: String::new(),
            verb: "",
            strict_applied: false,
            user: None,
            authn: AuthnMethod::None,
        }
    }

    fn of(target: Target) -> Self {
        Ending {
            path: target.path,
            verb: target.verb,
            strict_applied: target.strict_applied,
            ..Ending::none()
        }
    }

    fn authorized(z: Authorizing) -> Self {
        Ending {
            user: Some(z.user),
            authn: z.authn,
            ..Ending::of(z.target)
        }
    }

    fn user_name(&self) -> &str {
        self.user.as_ref().map_or("", |u| u.user().name.as_str())
    }
}

impl Session {
    pub(super) fn finish_allowed(&mut self, z: Authorizing) -> Step {
        self.finish(Ending::authorized(z), Outcome::Allowed, 200, String::new())
    }

    pub(super) fn finish_forbidden(&mut self, engine: &Engine, z: Authorizing) -> Step {
        let ending = Ending::authorized(z);
        let tried: Vec<&str> = self
            .trail
            .checks
            .iter()
            .map(|c| c.subresource.as_str())
            .collect();
        let body = if tried.is_empty() {
            "Authorization error: could not determine attributes for request".to_string()
        } else if engine.settings.model.version().has_multi_attribute_authz() {
            format!(
                "Forbidden (user={}, verb={}, resource=nodes, subresource(s)=[{}])\n",
                ending.user_name(),
                ending.verb,
                tried.join(" ")
            )
        } else {
            format!(
                "Forbidden (user={}, verb={}, resource=nodes, subresource={})",
                ending.user_name(),
                ending.verb,
                tried.first().copied().unwrap_or("proxy")
            )
        };
        self.finish(ending, Outcome::Forbidden, 403, body)
    }

    pub(super) fn finish_error(&mut self, z: Authorizing, sub: Subresource) -> Step {
        let ending = Ending::authorized(z);
        let body = format!(
            "Authorization error (user={}, verb={}, resource=nodes, subresource={})",
            ending.user_name(),
            ending.verb,
            sub.as_str()
        );
        self.finish(ending, Outcome::AuthorizerError, 500, body)
    }

    /// 401, with what was known of the request.
    pub(super) fn unauthenticated(&mut self, target: Option<Target>) -> Step {
        let ending = target.map_or_else(Ending::none, Ending::of);
        self.finish(ending, Outcome::Unauthenticated, 401, "Unauthorized".into())
    }

    /// 400: the path was refused before anything else (`body`, the kubelet's).
    pub(super) fn bad_request(&mut self, body: String) -> Step {
        let ending = Ending {
            path: self.request.target.clone(),
            verb: kubelet::verb_for_method(&self.request.method),
            ..Ending::none()
        };
        self.finish(ending, Outcome::BadRequest, 400, body)
    }

    fn finish(&mut self, ending: Ending, outcome: Outcome, status: u16, body: String) -> Step {
        let verdict = self.verdict(ending, outcome, status, body);
        if outcome == Outcome::Allowed || verdict.shadowed {
            Step::Forward(verdict)
        } else {
            Step::Reply(verdict)
        }
    }

    /// The header changes that keep the caller's credentials from the kubelet on a forwarded
    /// request. The kubelet behind the proxy trusts the proxy's own client certificate, so a
    /// caller's credential there is never needed, only leaked: `Authorization` goes whether or not
    /// it authenticated (the kubelet deletes it only when it did), and every bearer-token entry
    /// leaves `Sec-WebSocket-Protocol` whichever credential authenticated (the kubelet strips it
    /// only when it was the one).
    fn credentials_removed(&self) -> (&'static [&'static str], Vec<(String, String)>) {
        const AUTHORIZATION: &str = "authorization";
        const PROTOCOL: &str = "sec-websocket-protocol";
        let authorization = self.request.first_header(AUTHORIZATION).is_some();
        let protocols = self.request.header_values(PROTOCOL);
        let (protocol, set) = match identity::without_websocket_tokens(&protocols) {
            Some(rest) if rest.is_empty() => (true, Vec::new()),
            Some(rest) => (false, vec![(PROTOCOL.to_string(), rest)]),
            None => (false, Vec::new()),
        };
        let remove: &'static [&'static str] = match (authorization, protocol) {
            (true, true) => &[AUTHORIZATION, PROTOCOL],
            (true, false) => &[AUTHORIZATION],
            (false, true) => &[PROTOCOL],
            (false, false) => &[],
        };
        (remove, set)
    }

    /// The verdict of the session ending with `ending`: the session is finished after it.
    pub(super) fn verdict(
        &mut self,
        ending: Ending,
        outcome: Outcome,
        status: u16,
        body: String,
    ) -> Verdict {
        self.state = State::Finished;
        let shadowed = self.trail.shadow && outcome != Outcome::Allowed;
        let (remove_headers, set_headers) = if outcome == Outcome::Allowed || shadowed {
            self.credentials_removed()
        } else {
            (&[][..], Vec::new())
        };
        let trail = &mut self.trail;
        Verdict {
            outcome,
            status,
            body,
            remove_headers,
            set_headers,
            user: ending.user.as_ref().map(SharedUser::arc),
            authn: ending.authn,
            authn_errors: std::mem::take(&mut trail.errors),
            verb: ending.verb,
            path: ending.path,
            // The request is decided: its target moves to the verdict.
            target: std::mem::take(&mut self.request.target),
            checks: std::mem::take(&mut trail.checks),
            shadowed,
            stale: trail.stale,
            spoofed_xfcc: trail.spoofed.take(),
            cache_hits: trail.hits,
            cache_misses: trail.misses,
            sar_cache_hits: trail.sar_hits,
            sar_cache_misses: trail.sar_misses,
            strict_upgrade_applied: ending.strict_applied,
            failure: None,
        }
    }
}
