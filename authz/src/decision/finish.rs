//! How a session ends: the kubelet's answers (200, 401, the 403 and 500 bodies per version),
//! the header edits that keep the caller's credentials from the kubelet, and the [`Verdict`]
//! that records it all.

use crate::identity;
use crate::kubelet::Subresource;

use super::session::{Phase, Session};
use super::{Engine, Outcome, SharedUser, Step, Verdict};

impl Session {
    fn user_name(&self) -> &str {
        self.user.as_ref().map_or("", |u| u.user().name.as_str())
    }

    pub(super) fn finish_allowed(&mut self) -> Step {
        self.finish(Outcome::Allowed, 200, String::new())
    }

    pub(super) fn finish_forbidden(&mut self, engine: &Engine) -> Step {
        let tried: Vec<&str> = self.checks.iter().map(|c| c.subresource.as_str()).collect();
        let body = if tried.is_empty() {
            "Authorization error: could not determine attributes for request".to_string()
        } else if engine.settings.model.version().has_multi_attribute_authz() {
            format!(
                "Forbidden (user={}, verb={}, resource=nodes, subresource(s)=[{}])\n",
                self.user_name(),
                self.verb,
                tried.join(" ")
            )
        } else {
            format!(
                "Forbidden (user={}, verb={}, resource=nodes, subresource={})",
                self.user_name(),
                self.verb,
                tried.first().copied().unwrap_or("proxy")
            )
        };
        self.finish(Outcome::Forbidden, 403, body)
    }

    pub(super) fn finish_error(&mut self, sub: Subresource) -> Step {
        let body = format!(
            "Authorization error (user={}, verb={}, resource=nodes, subresource={})",
            self.user_name(),
            self.verb,
            sub.as_str()
        );
        self.finish(Outcome::AuthorizerError, 500, body)
    }

    pub(super) fn finish(&mut self, outcome: Outcome, status: u16, body: String) -> Step {
        let verdict = self.verdict(outcome, status, body);
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
    fn credentials_removed(&self) -> (Vec<String>, Vec<(String, String)>) {
        let mut remove = Vec::new();
        let mut set = Vec::new();
        if self.request.first_header("authorization").is_some() {
            remove.push("authorization".to_string());
        }
        let protocols = self.request.header_values("sec-websocket-protocol");
        match identity::without_websocket_tokens(&protocols) {
            Some(rest) if rest.is_empty() => remove.push("sec-websocket-protocol".to_string()),
            Some(rest) => set.push(("sec-websocket-protocol".to_string(), rest)),
            None => {}
        }
        (remove, set)
    }

    pub(super) fn verdict(&mut self, outcome: Outcome, status: u16, body: String) -> Verdict {
        self.phase = Phase::Finished;
        self.pending = None;
        let shadowed = self.shadow && outcome != Outcome::Allowed;
        let (remove_headers, set_headers) = if outcome == Outcome::Allowed || shadowed {
            self.credentials_removed()
        } else {
            (Vec::new(), Vec::new())
        };
        Verdict {
            outcome,
            status,
            body,
            remove_headers,
            set_headers,
            user: self.user.as_ref().map(SharedUser::arc),
            authn: self.authn,
            authn_errors: self.errors.clone(),
            verb: self.verb.to_string(),
            path: self.path.clone(),
            target: self.request.target.clone(),
            checks: self.checks.clone(),
            shadowed,
            stale: self.stale,
            spoofed_xfcc: self.spoofed.clone(),
            cache_hits: self.hits,
            cache_misses: self.misses,
            sar_cache_hits: self.sar_hits,
            sar_cache_misses: self.sar_misses,
            strict_upgrade_applied: self.strict_applied,
            failure: None,
        }
    }
}
