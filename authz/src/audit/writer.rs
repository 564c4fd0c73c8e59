//! The audit event written by hand, for the filter's hot path: the constant parts (prefix, kind,
//! apiVersion, level, the objectRef with the node's name, the stage, the shadow annotation) are
//! built once per VM in [`Writer::new`], and each event is appended to a caller's buffer, so a
//! written decision costs no map, no intermediate `String` and one log call. The bytes are the
//! same as serde_json's for the same event ([`super::event`] is the reference; the tests compare
//! both on hostile strings): the same field order, the same escaping (`"`, `\`, control
//! characters; everything else, non-ASCII included, as is).

use std::fmt::Write as _;

use crate::decision::{Outcome, Request, Verdict};

use super::{reason_check, source_ip, Context, AUDIT_LOG_PREFIX, LAST_RFC3339_MS};

/// The constant parts of every event of one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Writer {
    /// `<prefix>{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"`
    head: String,
    /// `,"objectRef":{"resource":"nodes","name":"<node>","apiVersion":"v1"`
    object_ref: String,
    shadow: bool,
}

const STAGE_COMPLETE: &str = r#"","stage":"ResponseComplete","requestURI":""#;
const STAGE_STARTED: &str = r#"","stage":"ResponseStarted","requestURI":""#;
const SHADOW: &str = r#","kubelet-authz.io/enforcement":"shadow""#;

impl Writer {
    /// The constant parts for `node_name`, and whether the filter runs in shadow mode.
    pub fn new(node_name: &str, shadow: bool) -> Writer {
        let mut head = String::with_capacity(128);
        head.push_str(AUDIT_LOG_PREFIX);
        head.push_str(
            r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":""#,
        );
        let mut object_ref = String::with_capacity(64 + node_name.len());
        object_ref.push_str(r#","objectRef":{"resource":"nodes","name":""#);
        escape(&mut object_ref, node_name);
        object_ref.push_str(r#"","apiVersion":"v1""#);
        Writer {
            head,
            object_ref,
            shadow,
        }
    }

    /// Append the log line of the event for `verdict` (with [`AUDIT_LOG_PREFIX`]) to `out`.
    /// `ctx.node_name` and `ctx.shadow` are the writer's own, given at [`Writer::new`].
    pub fn write(&self, out: &mut String, verdict: &Verdict, request: &Request, ctx: &Context<'_>) {
        out.push_str(&self.head);
        escape(out, ctx.audit_id);
        out.push_str(if ctx.response_code.is_some() {
            STAGE_COMPLETE
        } else {
            STAGE_STARTED
        });
        escape(out, &verdict.target);
        out.push_str(r#"","verb":""#);
        escape(out, verdict.verb);
        out.push_str(r#"","user":{"#);
        if let Some(u) = &verdict.user {
            out.push_str(r#""username":""#);
            escape(out, &u.name);
            out.push('"');
            if !u.uid.is_empty() {
                out.push_str(r#","uid":""#);
                escape(out, &u.uid);
                out.push('"');
            }
            if !u.groups.is_empty() {
                out.push_str(r#","groups":"#);
                string_list(out, &u.groups);
            }
            if !u.extra.is_empty() {
                out.push_str(r#","extra":{"#);
                for (i, (k, v)) in u.extra.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push('"');
                    escape(out, k);
                    out.push_str("\":");
                    string_list(out, v);
                }
                out.push('}');
            }
        }
        out.push('}');
        if let Some(a) = request.source_address.as_deref() {
            out.push_str(r#","sourceIPs":[""#);
            escape(out, source_ip(a));
            out.push_str("\"]");
        }
        if let Some(ua) = request.first_header("user-agent") {
            out.push_str(r#","userAgent":""#);
            escape(out, ua);
            out.push('"');
        }
        out.push_str(&self.object_ref);
        if let Some(s) = verdict.deciding_subresource() {
            out.push_str(r#","subresource":""#);
            out.push_str(s.as_str());
            out.push('"');
        }
        out.push('}');
        if let Some(code) = ctx.response_code {
            out.push_str(r#","responseStatus":{"code":"#);
            let _ = write!(out, "{code}");
            out.push('}');
        }
        out.push_str(r#","requestReceivedTimestamp":""#);
        rfc3339_micros_into(out, ctx.received_ms);
        out.push_str(r#"","stageTimestamp":""#);
        rfc3339_micros_into(out, ctx.now_ms);
        out.push_str(r#"","annotations":{"authorization.k8s.io/decision":""#);
        out.push_str(if verdict.outcome == Outcome::Allowed {
            "allow"
        } else {
            "forbid"
        });
        out.push_str(r#"","authorization.k8s.io/reason":""#);
        reason_into(out, verdict);
        out.push_str(r#"","kubelet-authz.io/outcome":""#);
        out.push_str(verdict.outcome.as_str());
        out.push_str(r#"","kubelet-authz.io/authn":""#);
        out.push_str(verdict.authn.as_str());
        out.push_str(r#"","kubelet-authz.io/subresources":""#);
        for (i, c) in verdict.checks.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(c.subresource.as_str());
        }
        out.push('"');
        if self.shadow {
            out.push_str(SHADOW);
        }
        if verdict.stale {
            out.push_str(r#","kubelet-authz.io/stale":"true""#);
        }
        if verdict.strict_upgrade_applied {
            out.push_str(r#","kubelet-authz.io/strict-upgrade-verb":"true""#);
        }
        if let Some(x) = verdict.spoofed_xfcc.as_deref() {
            out.push_str(r#","kubelet-authz.io/xfcc-ignored":""#);
            escape(out, x);
            out.push('"');
        }
        out.push_str("}}");
    }
}

/// `["a","b"]`.
fn string_list(out: &mut String, items: &[String]) {
    out.push('[');
    for (i, s) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        escape(out, s);
        out.push('"');
    }
    out.push(']');
}

/// The reason annotation ([`super::reason`]), escaped straight into `out`.
fn reason_into(out: &mut String, verdict: &Verdict) {
    match verdict.outcome {
        Outcome::BadRequest => escape(out, verdict.body.trim_end()),
        Outcome::Unauthenticated => {
            if verdict.authn_errors.is_empty() {
                out.push_str("no credentials and anonymous authentication is disabled");
            } else {
                out.push_str("authentication failed: ");
                for (i, e) in verdict.authn_errors.iter().enumerate() {
                    if i > 0 {
                        out.push_str("; ");
                    }
                    escape(out, e);
                }
            }
        }
        Outcome::InternalError => escape(out, verdict.failure.as_deref().unwrap_or_default()),
        _ => match reason_check(verdict) {
            Some(c) if !c.reason.is_empty() => escape(out, &c.reason),
            Some(c) => {
                escape(out, c.verb);
                out.push_str(" nodes/");
                out.push_str(c.subresource.as_str());
                out.push_str(": ");
                out.push_str(c.decision.as_str());
            }
            None => {}
        },
    }
}

/// Append `s` as the inside of a JSON string, escaped as serde_json does: `"` and `\` with a
/// backslash, `\b \f \n \r \t` by name, other control characters below U+0020 as `\u00XX`
/// (lower-case hex); and, as Go's `encoding/json` (the API server's audit log) does, the line
/// and paragraph separators U+2028 and U+2029 as `\u2028` and `\u2029`, so that a tool that
/// splits lines on them still reads one event per line. Everything else (DEL, other non-ASCII,
/// U+FFFD) unchanged.
pub fn escape(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, b) in bytes.iter().copied().enumerate() {
        if b == 0xe2 {
            // U+2028 and U+2029 are E2 80 A8 and E2 80 A9: a whole character from `i`.
            let named = match bytes.get(i + 1..i + 3) {
                Some([0x80, 0xa8]) => "\\u2028",
                Some([0x80, 0xa9]) => "\\u2029",
                _ => continue,
            };
            out.push_str(s.get(start..i).unwrap_or_default());
            out.push_str(named);
            start = i + 3;
            continue;
        }
        let named = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        // `i` is an ASCII byte, so both slice ends are character boundaries.
        out.push_str(s.get(start..i).unwrap_or_default());
        start = i + 1;
        if named.is_empty() {
            out.push_str("\\u00");
            out.push(char::from(
                HEX.get(usize::from(b >> 4)).copied().unwrap_or(b'0'),
            ));
            out.push(char::from(
                HEX.get(usize::from(b & 15)).copied().unwrap_or(b'0'),
            ));
        } else {
            out.push_str(named);
        }
    }
    out.push_str(s.get(start..).unwrap_or_default());
}

/// RFC 3339 UTC with microseconds (`2026-11-23T12:34:56.789000Z`) from milliseconds since the
/// Unix epoch, appended to `out`; the same text as [`super::rfc3339_micros`] (a time past the
/// year 9999 is written as its last millisecond).
pub fn rfc3339_micros_into(out: &mut String, ms: u64) {
    let ms = ms.min(LAST_RFC3339_MS);
    let secs = ms / 1000;
    let days = secs / 86_400;
    let sod = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    let mut buf = *b"0000-00-00T00:00:00.000000Z";
    let put = |buf: &mut [u8; 27], at: usize, width: usize, mut v: u64| {
        for i in (at..at + width).rev() {
            if let Some(slot) = buf.get_mut(i) {
                *slot = b'0' + (v % 10) as u8;
            }
            v /= 10;
        }
    };
    put(&mut buf, 0, 4, y);
    put(&mut buf, 5, 2, m);
    put(&mut buf, 8, 2, d);
    put(&mut buf, 11, 2, sod / 3600);
    put(&mut buf, 14, 2, sod / 60 % 60);
    put(&mut buf, 17, 2, sod % 60);
    put(&mut buf, 20, 3, ms % 1000);
    // Every byte written is ASCII.
    out.push_str(std::str::from_utf8(&buf).unwrap_or("1970-01-01T00:00:00.000000Z"));
}

/// Year, month, day of the day `days` after 1970-01-01 (H. Hinnant's `civil_from_days`, for
/// days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use std::collections::BTreeMap;
    use std::sync::Arc;

    use rstest::rstest;
    use serde_json::Value;

    use super::super::{event, rfc3339_micros, serde_log_line};
    use super::*;
    use crate::decision::{AuthnMethod, Check, Decision};
    use crate::identity::UserInfo;
    use crate::kubelet::Subresource;

    const HOSTILE: &str =
        "q\"b\\s/\u{0}\u{1}\u{8}\t\n\u{b}\u{c}\r\u{1f} \u{7f}é日本\u{fffd}\u{2028}😀</script>";

    fn verdict(outcome: Outcome, s: &str) -> Verdict {
        let mut extra = BTreeMap::new();
        extra.insert(format!("k{s}"), vec![s.to_string(), String::new()]);
        Verdict {
            outcome,
            status: 200,
            body: format!("{s}\n"),
            remove_headers: &[],
            set_headers: Vec::new(),
            user: Some(Arc::new(UserInfo {
                name: format!("u{s}"),
                uid: s.to_string(),
                groups: vec![s.to_string(), "system:authenticated".into()],
                extra,
            })),
            authn: AuthnMethod::Bearer,
            authn_errors: vec![s.to_string(), "second".into()],
            verb: "get",
            path: "/pods".into(),
            target: "/pods".into(),
            checks: vec![
                Check::new(Subresource::Pods, "get", Decision::NoOpinion, String::new()),
                Check::new(Subresource::Proxy, "get", Decision::Deny, s.to_string()),
            ],
            shadowed: false,
            stale: true,
            spoofed_xfcc: Some(s.to_string()),
            cache_hits: 0,
            cache_misses: 0,
            sar_cache_hits: 0,
            sar_cache_misses: 0,
            strict_upgrade_applied: true,
            failure: None,
        }
    }

    fn request(s: &str, with_address: bool) -> Request {
        let mut r = Request {
            source_address: with_address.then(|| format!("10.0.0.1{s}:80")),
            ..Request::new("GET", &format!("/pods?q={s}"))
        };
        if !s.is_empty() {
            r = r.header("user-agent", s);
        }
        r
    }

    /// The hand-written line is byte for byte serde_json's, and parses to the reference event.
    #[rstest]
    #[case::plain("plain", Outcome::Allowed, Some(200), true, false)]
    #[case::empty("", Outcome::Forbidden, Some(403), false, true)]
    #[case::quotes_and_backslashes("a\"b\\c\\\"", Outcome::Forbidden, None, true, true)]
    #[case::control_chars(
        "\u{0}\u{1}\u{2}\u{7}\u{8}\t\n\u{b}\u{c}\r\u{e}\u{1b}\u{1f}",
        Outcome::Unauthenticated,
        Some(401),
        true,
        false
    )]
    #[case::del_and_non_ascii("\u{7f}é日本", Outcome::BadRequest, Some(400), true, false)]
    #[case::replacement_char("\u{fffd}\u{fffd}x", Outcome::AuthorizerError, Some(500), true, true)]
    #[case::separators_and_emoji(
        "\u{2028}\u{2029}😀</script>",
        Outcome::Allowed,
        None,
        true,
        false
    )]
    #[case::everything(HOSTILE, Outcome::Forbidden, Some(403), true, true)]
    fn writer_equals_serde(
        #[case] s: &str,
        #[case] outcome: Outcome,
        #[case] code: Option<u16>,
        #[case] with_address: bool,
        #[case] shadow: bool,
    ) {
        let mut v = verdict(outcome, s);
        let req = request(s, with_address);
        let id = format!("id{s}");
        let node = format!("node{s}");
        let ctx = Context {
            audit_id: &id,
            node_name: &node,
            received_ms: 1_795_437_296_789,
            now_ms: 1_795_437_296_790,
            response_code: code,
            shadow,
        };
        let check = |v: &Verdict| {
            let mut out = String::from("left over");
            out.clear();
            Writer::new(&node, shadow).write(&mut out, v, &req, &ctx);
            assert_eq!(out, serde_log_line(v, &req, &ctx));
            let parsed: Value =
                serde_json::from_str(out.strip_prefix(AUDIT_LOG_PREFIX).unwrap()).unwrap();
            assert_eq!(parsed, event(v, &req, &ctx));
            assert_eq!(parsed["user"]["username"], format!("u{s}"));
            assert_eq!(parsed["objectRef"]["name"], node);
        };
        check(&v);
        // The optional parts absent.
        v.user = None;
        v.authn_errors.clear();
        v.checks.clear();
        v.stale = false;
        v.strict_upgrade_applied = false;
        v.spoofed_xfcc = None;
        let check_bare = |v: &Verdict| {
            let mut out = String::new();
            Writer::new(&node, shadow).write(&mut out, v, &req, &ctx);
            assert_eq!(out, serde_log_line(v, &req, &ctx));
        };
        check_bare(&v);
        // A check with no reason: the reason is made from the check.
        // Verbs are the engine's constants; a hostile one is leaked here to stand in.
        let verb: &'static str = Box::leak(s.to_string().into_boxed_str());
        v.checks = vec![Check::new(
            Subresource::Log,
            verb,
            Decision::Deny,
            String::new(),
        )];
        v.user = Some(Arc::new(UserInfo::default()));
        check_bare(&v);
    }

    /// Each string as Go's `encoding/json` writes it inside quotes (less its HTML escapes, which
    /// the API server's audit log does not use either): U+2028 and U+2029 escaped, other
    /// non-ASCII (and bytes of them that look alike) as is.
    #[rstest]
    #[case::line_separator("a\u{2028}b", "a\\u2028b")]
    #[case::paragraph_separator("\u{2029}", "\\u2029")]
    #[case::both_and_text("x\u{2029}\u{2028}y\u{2028}", "x\\u2029\\u2028y\\u2028")]
    #[case::neighbours_unchanged(
        "\u{2027}\u{202a}\u{20ac}\u{2000}",
        "\u{2027}\u{202a}\u{20ac}\u{2000}"
    )]
    #[case::with_controls("\"\u{2028}\n", "\\\"\\u2028\\n")]
    #[case::replacement_char("\u{fffd}", "\u{fffd}")]
    fn separators_are_escaped_as_go_does(#[case] s: &str, #[case] want: &str) {
        let mut out = String::new();
        escape(&mut out, s);
        assert_eq!(out, want);
        let line = format!("\"{out}\"");
        assert!(!line.contains(['\u{2028}', '\u{2029}', '\n']), "{line}");
        assert_eq!(serde_json::from_str::<String>(&line).unwrap(), s);
    }

    #[test]
    fn the_buffer_is_reused() {
        let v = verdict(Outcome::Allowed, "x");
        let req = request("x", true);
        let ctx = Context {
            audit_id: "a",
            node_name: "n",
            ..Context::default()
        };
        let w = Writer::new("n", false);
        let mut out = String::new();
        w.write(&mut out, &v, &req, &ctx);
        let first = out.clone();
        let cap = out.capacity();
        out.clear();
        w.write(&mut out, &v, &req, &ctx);
        assert_eq!(out, first);
        assert_eq!(out.capacity(), cap);
    }

    #[test]
    fn timestamps_match_humantime() {
        let mut ms: u64 = 0;
        let mut samples = vec![
            0,
            951_782_400_123,
            951_868_799_999,
            4_107_542_399_999,
            LAST_RFC3339_MS,
            u64::MAX,
        ];
        // A spread over the whole range (xorshift).
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            samples.push(x % (LAST_RFC3339_MS + 1));
            ms += 86_399_999;
            samples.push(ms);
        }
        for ms in samples {
            let mut out = String::new();
            rfc3339_micros_into(&mut out, ms);
            assert_eq!(out, rfc3339_micros(ms), "{ms}");
        }
    }
}
