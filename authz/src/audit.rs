//! One audit event per decision, as a JSON line in the audit.k8s.io/v1 `Event` shape (level
//! `Metadata`): who, what, from where, the decision and its reason. Never the token: only the
//! verdict's user and checks go in.

use serde_json::{json, Map, Value};

use crate::decision::{Decision, Outcome, Request, Verdict};

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

/// The audit event for a verdict, as a JSON value.
pub fn event(verdict: &Verdict, request: &Request, ctx: &Context<'_>) -> Value {
    let allowed = verdict.outcome == Outcome::Allowed;
    let mut annotations = Map::new();
    annotations.insert(
        ANNOTATION_DECISION.into(),
        Value::from(if allowed { "allow" } else { "forbid" }),
    );
    annotations.insert(ANNOTATION_REASON.into(), Value::from(reason(verdict)));
    annotations.insert(
        "kubelet-authz.io/outcome".into(),
        Value::from(verdict.outcome.as_str()),
    );
    annotations.insert(
        "kubelet-authz.io/authn".into(),
        Value::from(verdict.authn.as_str()),
    );
    let tried: Vec<&str> = verdict
        .checks
        .iter()
        .map(|c| c.subresource.as_str())
        .collect();
    annotations.insert(
        "kubelet-authz.io/subresources".into(),
        Value::from(tried.join(",")),
    );
    if ctx.shadow {
        annotations.insert(ANNOTATION_ENFORCEMENT.into(), Value::from("shadow"));
    }
    if verdict.stale {
        annotations.insert(ANNOTATION_STALE.into(), Value::from("true"));
    }
    if verdict.strict_upgrade_applied {
        annotations.insert(
            "kubelet-authz.io/strict-upgrade-verb".into(),
            Value::from("true"),
        );
    }
    if let Some(why) = &verdict.spoofed_xfcc {
        annotations.insert(
            "kubelet-authz.io/xfcc-ignored".into(),
            Value::from(why.as_str()),
        );
    }
    let user = match &verdict.user {
        Some(u) => {
            let mut m = Map::new();
            m.insert("username".into(), Value::from(u.name.as_str()));
            if !u.uid.is_empty() {
                m.insert("uid".into(), Value::from(u.uid.as_str()));
            }
            if !u.groups.is_empty() {
                m.insert("groups".into(), json!(u.groups));
            }
            if !u.extra.is_empty() {
                m.insert("extra".into(), json!(u.extra));
            }
            Value::Object(m)
        }
        None => json!({}),
    };
    let mut object_ref = Map::new();
    object_ref.insert("resource".into(), Value::from("nodes"));
    object_ref.insert("name".into(), Value::from(ctx.node_name));
    object_ref.insert("apiVersion".into(), Value::from("v1"));
    if let Some(s) = verdict.deciding_subresource() {
        object_ref.insert("subresource".into(), Value::from(s.as_str()));
    }
    let mut ev = Map::new();
    ev.insert("kind".into(), Value::from("Event"));
    ev.insert("apiVersion".into(), Value::from("audit.k8s.io/v1"));
    ev.insert("level".into(), Value::from("Metadata"));
    ev.insert("auditID".into(), Value::from(ctx.audit_id));
    ev.insert(
        "stage".into(),
        Value::from(if ctx.response_code.is_some() {
            "ResponseComplete"
        } else {
            "ResponseStarted"
        }),
    );
    ev.insert("requestURI".into(), Value::from(request.target.as_str()));
    ev.insert("verb".into(), Value::from(verdict.verb.as_str()));
    ev.insert("user".into(), user);
    if let Some(ip) = request.source_address.as_deref().map(source_ip) {
        ev.insert("sourceIPs".into(), json!([ip]));
    }
    if let Some(ua) = request.header_values("user-agent").first() {
        ev.insert("userAgent".into(), Value::from(*ua));
    }
    ev.insert("objectRef".into(), Value::Object(object_ref));
    if let Some(code) = ctx.response_code {
        ev.insert("responseStatus".into(), json!({ "code": code }));
    }
    ev.insert(
        "requestReceivedTimestamp".into(),
        Value::from(rfc3339_micros(ctx.received_ms)),
    );
    ev.insert(
        "stageTimestamp".into(),
        Value::from(rfc3339_micros(ctx.now_ms)),
    );
    ev.insert("annotations".into(), Value::Object(annotations));
    Value::Object(ev)
}

/// The audit event as one log line with [`AUDIT_LOG_PREFIX`].
pub fn log_line(verdict: &Verdict, request: &Request, ctx: &Context<'_>) -> String {
    format!("{AUDIT_LOG_PREFIX}{}", event(verdict, request, ctx))
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
        _ => {
            let deciding = verdict
                .checks
                .iter()
                .find(|c| matches!(c.decision, Decision::Allow | Decision::Error))
                .or(verdict.checks.last());
            match deciding {
                Some(c) if !c.reason.is_empty() => c.reason.clone(),
                Some(c) => format!(
                    "{} nodes/{}: {}",
                    c.verb,
                    c.subresource,
                    c.decision.as_str()
                ),
                None => String::new(),
            }
        }
    }
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

/// RFC 3339 UTC with microseconds, from milliseconds since the Unix epoch.
pub fn rfc3339_micros(ms: u64) -> String {
    let secs = ms / 1000;
    let micros = (ms % 1000) * 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
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
    }

    #[test]
    fn source_ips() {
        assert_eq!(source_ip("10.0.0.1:1234"), "10.0.0.1");
        assert_eq!(source_ip("[::1]:80"), "::1");
        assert_eq!(source_ip("10.0.0.1"), "10.0.0.1");
        assert_eq!(source_ip("::1"), "::1");
    }
}
