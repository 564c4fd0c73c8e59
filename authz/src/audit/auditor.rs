//! The audit log of one VM: the configuration's audit settings (on or off, the policy), the
//! writer with the node's constant parts, and one buffer reused for every line. A driver asks
//! whether a decision is written ([`Auditor::writes`]) and logs the line it gets
//! ([`Auditor::line`]) from the request as its session gives it back (no copy is kept: the
//! writer reads only the method, user agent, client address and request id of it, never a
//! credential); it assembles nothing.

use crate::decision::{Request, Verdict};

use super::{Context, Level, Policy, Writer};

/// A buffer grown past this by one large event is given back rather than kept for the next.
pub const BUFFER_KEEP: usize = 16 * 1024;

/// The audit settings, the writer and the line buffer of one VM.
#[derive(Debug)]
pub struct Auditor {
    enabled: bool,
    policy: Policy,
    node_name: String,
    shadow: bool,
    writer: Writer,
    buf: String,
}

impl Auditor {
    /// An auditor for `node_name`: `enabled` (`audit.enabled`) with `policy` (`audit.policy`),
    /// `shadow` when the enforcement is Shadow.
    pub fn new(enabled: bool, policy: Policy, node_name: &str, shadow: bool) -> Self {
        Auditor {
            enabled,
            policy,
            node_name: node_name.to_string(),
            shadow,
            writer: Writer::new(node_name, shadow),
            buf: String::with_capacity(1024),
        }
    }

    /// Whether the decision `v`, answered with `code`, gets an event.
    pub fn writes(&self, v: &Verdict, code: Option<u16>) -> bool {
        self.enabled && self.policy.level_of(v, code) != Level::None
    }

    /// The event line of decision `v` for `request` (its `requestURI` is the verdict's target), received at `received_ms`
    /// by the driver's request `id`, written at `now_ms` with the response `code`. The audit id
    /// is the request's `x-request-id`, else `kubelet-authz-<received_ms>-<id>`.
    pub fn line(
        &mut self,
        v: &Verdict,
        request: &Request,
        received_ms: u64,
        id: u32,
        now_ms: u64,
        code: Option<u16>,
    ) -> &str {
        let fallback;
        let audit_id = match request.request_id.as_deref() {
            Some(rid) => rid,
            None => {
                fallback = format!("kubelet-authz-{received_ms}-{id}");
                fallback.as_str()
            }
        };
        let ctx = Context {
            audit_id,
            node_name: &self.node_name,
            received_ms,
            now_ms,
            response_code: code,
            shadow: self.shadow,
        };
        if self.buf.capacity() > BUFFER_KEEP {
            self.buf = String::with_capacity(1024);
        }
        self.buf.clear();
        self.writer.write(&mut self.buf, v, request, &ctx);
        &self.buf
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use rstest::rstest;
    use serde_json::Value;

    use super::super::{log_line, AUDIT_LOG_PREFIX};
    use super::*;
    use crate::decision::{AuthnMethod, Outcome};

    fn verdict(outcome: Outcome, status: u16) -> Verdict {
        Verdict {
            outcome,
            status,
            body: String::new(),
            remove_headers: &[],
            set_headers: Vec::new(),
            user: None,
            authn: AuthnMethod::None,
            authn_errors: Vec::new(),
            verb: "get",
            path: "/metrics".into(),
            target: "/metrics".into(),
            checks: Vec::new(),
            shadowed: false,
            stale: false,
            spoofed_xfcc: None,
            cache_hits: 0,
            cache_misses: 0,
            sar_cache_hits: 0,
            sar_cache_misses: 0,
            strict_upgrade_applied: false,
            failure: None,
        }
    }

    fn parse(line: &str) -> Value {
        serde_json::from_str(line.strip_prefix(AUDIT_LOG_PREFIX).unwrap()).unwrap()
    }

    #[rstest]
    #[case::on_written(true, Policy::builtin(), Outcome::Unauthenticated, Some(401), true)]
    #[case::off_never(false, Policy::builtin(), Outcome::Unauthenticated, Some(401), false)]
    #[case::dropped_by_policy(true, Policy::new(vec![crate::audit::Rule::new(Level::None)]), Outcome::Forbidden, Some(403), false)]
    fn what_is_written(
        #[case] enabled: bool,
        #[case] policy: Policy,
        #[case] outcome: Outcome,
        #[case] code: Option<u16>,
        #[case] written: bool,
    ) {
        let a = Auditor::new(enabled, policy, "node-1", false);
        assert_eq!(
            a.writes(&verdict(outcome, code.unwrap_or(200)), code),
            written
        );
    }

    /// The whole request reaches the writer (no copy is kept): its credentials never reach the
    /// line, and the line is the one written from the audit copy.
    #[test]
    fn credentials_on_the_request_never_reach_the_line() {
        let r = Request::new("GET", "/pods")
            .header("authorization", "Bearer secret-token")
            .header(
                "sec-websocket-protocol",
                "base64url.bearer.authorization.k8s.io.c2VjcmV0",
            )
            .header("x-forwarded-client-cert", "Hash=secret-hash")
            .header("user-agent", "curl");
        let mut a = Auditor::new(true, Policy::builtin(), "n", false);
        let v = verdict(Outcome::Forbidden, 403);
        let line = a.line(&v, &r, 0, 1, 0, Some(403)).to_string();
        for secret in ["secret-token", "c2VjcmV0", "secret-hash"] {
            assert!(!line.contains(secret), "{secret} in {line}");
        }
        assert!(line.contains(r#""userAgent":"curl""#), "{line}");
        let copy = crate::audit::request_for_audit(&r);
        assert_eq!(a.line(&v, &copy, 0, 1, 0, Some(403)), line);
    }

    #[rstest]
    #[case::request_id(Some("rid-1"), "rid-1")]
    #[case::fallback(None, "kubelet-authz-1795437296789-7")]
    fn the_line_is_the_event_with_its_audit_id(
        #[case] request_id: Option<&str>,
        #[case] want_id: &str,
    ) {
        let mut a = Auditor::new(true, Policy::builtin(), "node-1", true);
        let request = Request {
            request_id: request_id.map(String::from),
            ..Request::new("GET", "/metrics")
        };
        let v = verdict(Outcome::Forbidden, 403);
        let line = a
            .line(
                &v,
                &request,
                1_795_437_296_789,
                7,
                1_795_437_296_790,
                Some(403),
            )
            .to_string();
        let ctx = Context {
            audit_id: want_id,
            node_name: "node-1",
            received_ms: 1_795_437_296_789,
            now_ms: 1_795_437_296_790,
            response_code: Some(403),
            shadow: true,
        };
        assert_eq!(line, log_line(&v, &request, &ctx));
        assert_eq!(parse(&line)["auditID"], want_id);
    }

    #[test]
    fn a_grown_buffer_is_given_back() {
        let mut a = Auditor::new(true, Policy::builtin(), "node-1", false);
        // The requestURI is the verdict's target.
        let request = Request::new("GET", "/metrics");
        let mut v = verdict(Outcome::Forbidden, 403);
        v.target = format!("/metrics?{}", "x".repeat(4 * BUFFER_KEEP));
        let long = a.line(&v, &request, 0, 1, 0, Some(403)).len();
        assert!(long > BUFFER_KEEP);
        v.target = "/metrics".into();
        let _ = a.line(&v, &request, 0, 2, 0, Some(403));
        assert!(a.buf.capacity() <= BUFFER_KEEP, "{}", a.buf.capacity());
    }
}
