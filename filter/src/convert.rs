//! Pure conversions between what the proxy hands over and the engine's types: the request read
//! once in `on_http_request_headers`, and a callout's response.

use kubelet_authz::decision::{CalloutResponse, Request};

/// The largest callout response body the filter reads (a review is a few KB).
pub const MAX_CALLOUT_BODY: usize = 1 << 20;

/// Build the engine's request from the request headers and the connection properties
/// (`connection.mtls`, `connection.sha256_peer_certificate_digest`, `source.address`, raw).
pub fn build_request(
    headers: Vec<(String, String)>,
    mtls: Option<&[u8]>,
    peer_digest: Option<&[u8]>,
    source_address: Option<&[u8]>,
) -> Request {
    let mut method = String::new();
    let mut target = String::new();
    let mut request_id = None;
    let mut out = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            name.to_ascii_lowercase()
        } else {
            name
        };
        match name.as_str() {
            ":method" if method.is_empty() => method.clone_from(&value),
            ":path" if target.is_empty() => target.clone_from(&value),
            "x-request-id" if request_id.is_none() => request_id = Some(value.clone()),
            _ => {}
        }
        out.push((name, value));
    }
    let mtls = mtls.and_then(|b| b.first()).is_some_and(|b| *b != 0);
    Request {
        method,
        target,
        headers: out,
        mtls,
        peer_cert_sha256: if mtls { text(peer_digest) } else { None },
        source_address: text(source_address),
        request_id,
    }
}

fn text(bytes: Option<&[u8]>) -> Option<String> {
    let s = std::str::from_utf8(bytes?).ok()?;
    (!s.is_empty()).then(|| s.to_string())
}

/// The response to a callout. No headers at all means the proxy got no response (timeout,
/// reset, connection failure).
pub fn callout_response(headers: &[(String, String)], body: Vec<u8>) -> CalloutResponse {
    if headers.is_empty() {
        return no_response();
    }
    let status = headers
        .iter()
        .find(|(k, _)| k == ":status")
        .and_then(|(_, v)| v.trim().parse::<u16>().ok());
    match status {
        None => CalloutResponse::Failed("response without a valid :status".into()),
        Some(status) => CalloutResponse::Http {
            status,
            retry_after: headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("retry-after")),
            body,
        },
    }
}

/// The failure for a callout that got no response.
pub fn no_response() -> CalloutResponse {
    CalloutResponse::Failed("no response (timeout, reset or connection failure)".into())
}

/// The copy of the request kept for the audit event: only what the event reads.
pub fn audit_copy(r: &Request) -> Request {
    Request {
        method: r.method.clone(),
        target: r.target.clone(),
        headers: r
            .header_values("user-agent")
            .first()
            .map(|ua| vec![("user-agent".to_string(), (*ua).to_string())])
            .unwrap_or_default(),
        mtls: r.mtls,
        peer_cert_sha256: None,
        source_address: r.source_address.clone(),
        request_id: r.request_id.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    #[test]
    fn request_from_headers_and_properties() {
        let r = build_request(
            h(&[
                (":method", "GET"),
                (":path", "/pods"),
                ("Authorization", "Bearer x"),
                ("x-request-id", "abc"),
            ]),
            Some(&[1]),
            Some(b"ab12"),
            Some(b"10.0.0.1:5555"),
        );
        assert_eq!(r.method, "GET");
        assert_eq!(r.target, "/pods");
        assert_eq!(r.header_values("authorization"), vec!["Bearer x"]);
        assert!(r
            .headers
            .iter()
            .all(|(k, _)| k.chars().all(|c| !c.is_ascii_uppercase())));
        assert!(r.mtls);
        assert_eq!(r.peer_cert_sha256.as_deref(), Some("ab12"));
        assert_eq!(r.source_address.as_deref(), Some("10.0.0.1:5555"));
        assert_eq!(r.request_id.as_deref(), Some("abc"));
    }

    #[test]
    fn digest_only_with_mtls() {
        let r = build_request(h(&[(":path", "/")]), Some(&[0]), Some(b"ab12"), None);
        assert!(!r.mtls);
        assert_eq!(r.peer_cert_sha256, None);
        let r = build_request(h(&[(":path", "/")]), None, Some(b"ab12"), Some(b""));
        assert!(!r.mtls);
        assert_eq!(r.source_address, None);
    }

    #[test]
    fn callout_responses() {
        assert_eq!(callout_response(&[], Vec::new()), no_response());
        assert_eq!(
            callout_response(
                &h(&[(":status", "201"), ("retry-after", "1")]),
                b"{}".to_vec()
            ),
            CalloutResponse::Http {
                status: 201,
                retry_after: true,
                body: b"{}".to_vec()
            }
        );
        assert!(matches!(
            callout_response(&h(&[("content-type", "x")]), Vec::new()),
            CalloutResponse::Failed(_)
        ));
    }

    #[test]
    fn audit_copy_keeps_only_what_audit_reads() {
        let r = build_request(
            h(&[
                (":path", "/pods"),
                ("authorization", "Bearer secret"),
                ("user-agent", "curl"),
            ]),
            None,
            None,
            None,
        );
        let a = audit_copy(&r);
        assert_eq!(a.headers, h(&[("user-agent", "curl")]));
        assert_eq!(a.target, "/pods");
    }
}
