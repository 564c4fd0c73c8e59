//! One audit event per written decision, as a JSON line in the audit.k8s.io/v1 `Event` shape
//! (level `Metadata`): who, what, from where, the decision and its reason. Never the token: only
//! the verdict's user and checks go in. Which decisions are written is the audit [`policy`]; the
//! line is written by hand ([`writer`]), and the serde structs here are its reference shape
//! ([`event`]).

mod auditor;
pub mod policy;
pub mod writer;

use serde::Serialize;
use serde_json::Value;

use crate::decision::{Check, Decision, Outcome, Request, Verdict};

pub use auditor::{Auditor, BUFFER_KEEP};
pub use policy::{AuditOutcome, Facts, Level, Policy, Rule};
pub use writer::Writer;

/// The prefix of every audit line in the proxy's log, so that `audit-log` can find them.
pub const AUDIT_LOG_PREFIX: &str = "kubelet-authz audit: ";
/// Annotation: the kubelet-style decision (`allow` or `forbid`).
pub const ANNOTATION_DECISION: &str = "authorization.k8s.io/decision";
/// Annotation: the reason.
pub const ANNOTATION_REASON: &str = "authorization.k8s.io/reason";
/// Annotation: `shadow` when the filter only watched.
pub const ANNOTATION_ENFORCEMENT: &str = "kubelet-authz.io/enforcement";
/// Annotation: `true` when an expired cache entry answered (stale-if-error).
pub const ANNOTATION_STALE: &str = "kubelet-authz.io/stale";

/// Facts about the request that the verdict does not carry.
#[derive(Debug, Clone, Default)]
pub struct Context<'a> {
    /// Audit id (Envoy's `x-request-id`, or any unique id).
    pub audit_id: &'a str,
    /// The node name.
    pub node_name: &'a str,
    /// When the request was received, in ms since the Unix epoch.
    pub received_ms: u64,
    /// When the event is written, in ms since the Unix epoch.
    pub now_ms: u64,
    /// The response code, when known (the filter's own reply, or the upstream's).
    pub response_code: Option<u16>,
    /// Whether the filter runs in shadow mode.
    pub shadow: bool,
}

/// The part of a request that an audit event reads, to keep beside a session until its
/// decision is written: method, target, the first `User-Agent`, mTLS, source address and
/// request id. Never a credential: no other header and no peer certificate digest.
pub fn request_for_audit(r: &Request) -> Request {
    Request {
        method: r.method.clone(),
        target: r.target.clone(),
        headers: r
            .first_header("user-agent")
            .map(|ua| vec![("user-agent".to_string(), ua.to_string())])
            .unwrap_or_default(),
        mtls: r.mtls,
        source_address: r.source_address.clone(),
        request_id: r.request_id.clone(),
        ..Request::default()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Event<'a> {
    kind: &'static str,
    api_version: &'static str,
    level: &'static str,
    #[serde(rename = "auditID")]
    audit_id: &'a str,
    stage: &'static str,
    #[serde(rename = "requestURI")]
    request_uri: &'a str,
    verb: &'a str,
    user: User<'a>,
    #[serde(rename = "sourceIPs", skip_serializing_if = "Option::is_none")]
    source_ips: Option<[&'a str; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_agent: Option<&'a str>,
    object_ref: ObjectRef<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_status: Option<ResponseStatus>,
    request_received_timestamp: String,
    stage_timestamp: String,
    annotations: Annotations<'a>,
}

#[derive(Serialize, Default)]
struct User<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<&'a str>,
    #[serde(skip_serializing_if = "str::is_empty")]
    uid: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    groups: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    extra: Option<&'a std::collections::BTreeMap<String, Vec<String>>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ObjectRef<'a> {
    resource: &'static str,
    name: &'a str,
    api_version: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    subresource: Option<&'static str>,
}

#[derive(Serialize)]
struct ResponseStatus {
    code: u16,
}

#[derive(Serialize)]
struct Annotations<'a> {
    #[serde(rename = "authorization.k8s.io/decision")]
    decision: &'static str,
    #[serde(rename = "authorization.k8s.io/reason")]
    reason: String,
    #[serde(rename = "kubelet-authz.io/outcome")]
    outcome: &'static str,
    #[serde(rename = "kubelet-authz.io/authn")]
    authn: &'static str,
    #[serde(rename = "kubelet-authz.io/subresources")]
    subresources: String,
    #[serde(
        rename = "kubelet-authz.io/enforcement",
        skip_serializing_if = "Option::is_none"
    )]
    enforcement: Option<&'static str>,
    #[serde(
        rename = "kubelet-authz.io/stale",
        skip_serializing_if = "Option::is_none"
    )]
    stale: Option<&'static str>,
    #[serde(
        rename = "kubelet-authz.io/strict-upgrade-verb",
        skip_serializing_if = "Option::is_none"
    )]
    strict_upgrade_verb: Option<&'static str>,
    #[serde(
        rename = "kubelet-authz.io/xfcc-ignored",
        skip_serializing_if = "Option::is_none"
    )]
    xfcc_ignored: Option<&'a str>,
}

fn build<'a>(verdict: &'a Verdict, request: &'a Request, ctx: &'a Context<'a>) -> Event<'a> {
    let allowed = verdict.outcome == Outcome::Allowed;
    let mut subresources = String::new();
    for (i, c) in verdict.checks.iter().enumerate() {
        if i > 0 {
            subresources.push(',');
        }
        subresources.push_str(c.subresource.as_str());
    }
    let user = match &verdict.user {
        Some(u) => User {
            username: Some(u.name.as_str()),
            uid: u.uid.as_str(),
            groups: &u.groups,
            extra: (!u.extra.is_empty()).then_some(&u.extra),
        },
        None => User::default(),
    };
    Event {
        kind: "Event",
        api_version: "audit.k8s.io/v1",
        level: "Metadata",
        audit_id: ctx.audit_id,
        stage: if ctx.response_code.is_some() {
            "ResponseComplete"
        } else {
            "ResponseStarted"
        },
        request_uri: verdict.target.as_str(),
        verb: verdict.verb,
        user,
        source_ips: request.source_address.as_deref().map(|a| [source_ip(a)]),
        user_agent: request.first_header("user-agent"),
        object_ref: ObjectRef {
            resource: "nodes",
            name: ctx.node_name,
            api_version: "v1",
            subresource: verdict.deciding_subresource().map(|s| s.as_str()),
        },
        response_status: ctx.response_code.map(|code| ResponseStatus { code }),
        request_received_timestamp: rfc3339_micros(ctx.received_ms),
        stage_timestamp: rfc3339_micros(ctx.now_ms),
        annotations: Annotations {
            decision: if allowed { "allow" } else { "forbid" },
            reason: reason(verdict),
            outcome: verdict.outcome.as_str(),
            authn: verdict.authn.as_str(),
            subresources,
            enforcement: ctx.shadow.then_some("shadow"),
            stale: verdict.stale.then_some("true"),
            strict_upgrade_verb: verdict.strict_upgrade_applied.then_some("true"),
            xfcc_ignored: verdict.spoofed_xfcc.as_deref(),
        },
    }
}

/// The audit event for a verdict, as a JSON value.
pub fn event(verdict: &Verdict, request: &Request, ctx: &Context<'_>) -> Value {
    serde_json::to_value(build(verdict, request, ctx)).unwrap_or(Value::Null)
}

/// The audit event as one log line with [`AUDIT_LOG_PREFIX`], through a [`Writer`] made for this
/// one line (the filter keeps one writer and one buffer per VM instead).
pub fn log_line(verdict: &Verdict, request: &Request, ctx: &Context<'_>) -> String {
    let mut out = String::with_capacity(768);
    Writer::new(ctx.node_name, ctx.shadow).write(&mut out, verdict, request, ctx);
    out
}

/// The same line through serde_json: the reference the hand-written [`Writer`] is tested against.
/// serde_json leaves U+2028 and U+2029 raw; they can only stand inside a JSON string, where Go's
/// `encoding/json` (the API server's audit log) escapes them, and so does this line.
pub fn serde_log_line(verdict: &Verdict, request: &Request, ctx: &Context<'_>) -> String {
    let json = serde_json::to_string(&build(verdict, request, ctx)).unwrap_or_default();
    let json = json
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029");
    format!("{AUDIT_LOG_PREFIX}{json}")
}

/// The reason annotation: the deciding check's reason, or why authentication failed.
pub fn reason(verdict: &Verdict) -> String {
    match verdict.outcome {
        Outcome::BadRequest => verdict.body.trim_end().to_string(),
        Outcome::Unauthenticated => {
            if verdict.authn_errors.is_empty() {
                "no credentials and anonymous authentication is disabled".into()
            } else {
                format!("authentication failed: {}", verdict.authn_errors.join("; "))
            }
        }
        _ => match reason_check(verdict) {
            Some(c) if !c.reason.is_empty() => c.reason.to_string(),
            Some(c) => format!(
                "{} nodes/{}: {}",
                c.verb,
                c.subresource,
                c.decision.as_str()
            ),
            None => String::new(),
        },
    }
}

/// The check whose reason an event's `authorization.k8s.io/reason` gives: the first that allowed
/// or failed, else the last one made (the one both event writers read).
pub(crate) fn reason_check(verdict: &Verdict) -> Option<&Check> {
    verdict
        .checks
        .iter()
        .find(|c| matches!(c.decision, Decision::Allow | Decision::Error))
        .or(verdict.checks.last())
}

/// `10.0.0.1:1234` → `10.0.0.1`; `[::1]:80` → `::1`; anything else unchanged.
pub fn source_ip(address: &str) -> &str {
    if let Some(rest) = address.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(ip, _)| ip);
    }
    match address.rsplit_once(':') {
        Some((ip, port)) if !ip.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => ip,
        _ => address,
    }
}

/// The last millisecond RFC 3339 can write (9999-12-31T23:59:59.999Z).
const LAST_RFC3339_MS: u64 = 253_402_300_799_999;

/// RFC 3339 UTC with microseconds, from milliseconds since the Unix epoch (`humantime`'s
/// formatter; a time past the year 9999, which it cannot write, is written as the last
/// millisecond of 9999).
pub fn rfc3339_micros(ms: u64) -> String {
    let at = std::time::UNIX_EPOCH
        .checked_add(std::time::Duration::from_millis(ms.min(LAST_RFC3339_MS)))
        .unwrap_or(std::time::UNIX_EPOCH);
    humantime::format_rfc3339_micros(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339_micros(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339_micros(951_782_400_123),
            "2000-02-29T00:00:00.123000Z"
        );
        assert_eq!(
            rfc3339_micros(1_795_437_296_789),
            "2026-11-23T12:34:56.789000Z"
        );
        assert_eq!(rfc3339_micros(u64::MAX), "9999-12-31T23:59:59.999000Z");
    }

    #[test]
    fn event_shape() {
        use crate::config::Config;
        use crate::decision::{run_to_end, CalloutResponse, Engine, Session};
        let cfg = Config::from_json(br#"{"nodeName":"n1","enforcement":"Shadow"}"#).unwrap();
        let mut e = Engine::new(cfg, [0; 32]);
        let req = Request {
            source_address: Some("10.1.2.3:5555".into()),
            ..Request::new("GET", "/pods?x=1")
        }
        .header("authorization", "Bearer secret-token")
        .header("user-agent", "curl/8");
        let mut s = Session::new(1, req.clone());
        let v = run_to_end(&mut e, &mut s, 0, &mut |c| {
            let body = if c.path.contains("tokenreviews") {
                r#"{"status":{"authenticated":true,"user":{"username":"alice","uid":"u1","groups":["dev"]}}}"#
            } else {
                r#"{"status":{"allowed":false,"reason":"nope"}}"#
            };
            CalloutResponse::Http {
                status: 201,
                retry_after: None,
                body: body.into(),
            }
        });
        let ctx = Context {
            audit_id: "id-1",
            node_name: "n1",
            received_ms: 0,
            now_ms: 1,
            response_code: None,
            shadow: true,
        };
        let line = log_line(&v, &req, &ctx);
        assert!(!line.contains("secret-token"));
        let json: Value =
            serde_json::from_str(line.strip_prefix(AUDIT_LOG_PREFIX).unwrap()).unwrap();
        assert_eq!(json, event(&v, &req, &ctx));
        assert_eq!(json["kind"], "Event");
        assert_eq!(json["apiVersion"], "audit.k8s.io/v1");
        assert_eq!(json["level"], "Metadata");
        assert_eq!(json["auditID"], "id-1");
        assert_eq!(json["requestURI"], "/pods?x=1");
        assert_eq!(json["verb"], "get");
        assert_eq!(json["user"]["username"], "alice");
        assert_eq!(json["user"]["uid"], "u1");
        assert_eq!(
            json["user"]["groups"],
            serde_json::json!(["dev", "system:authenticated"])
        );
        assert_eq!(json["sourceIPs"], serde_json::json!(["10.1.2.3"]));
        assert_eq!(json["userAgent"], "curl/8");
        assert_eq!(
            json["objectRef"],
            serde_json::json!({"resource":"nodes","name":"n1","apiVersion":"v1","subresource":"proxy"})
        );
        let a = &json["annotations"];
        assert_eq!(a[ANNOTATION_DECISION], "forbid");
        assert_eq!(a[ANNOTATION_REASON], "nope");
        assert_eq!(a[ANNOTATION_ENFORCEMENT], "shadow");
        assert_eq!(a["kubelet-authz.io/subresources"], "pods,proxy");
        assert_eq!(a["kubelet-authz.io/authn"], "bearer");
        assert!(json.get("responseStatus").is_none());
    }

    #[test]
    fn source_ips() {
        assert_eq!(source_ip("10.0.0.1:1234"), "10.0.0.1");
        assert_eq!(source_ip("[::1]:80"), "::1");
        assert_eq!(source_ip("10.0.0.1"), "10.0.0.1");
        assert_eq!(source_ip("::1"), "::1");
    }
}
