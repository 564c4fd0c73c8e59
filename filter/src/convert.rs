//! Pure conversions between what the proxy hands over and the engine's types: the request read
//! once in `on_http_request_headers`, and a callout's response.

use kubelet_authz::decision::{CalloutResponse, Request, SpareRequest};

/// The largest callout response body the filter reads (a review is a few KB).
pub const MAX_CALLOUT_BODY: usize = 1 << 20;

/// Header names and values as the proxy holds them: bytes, in order.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

fn read_u32(bytes: &[u8], at: usize) -> Option<usize> {
    let raw: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(raw)).ok()
}

/// Header names and values borrowed from the proxy's serialized map, in order: an iterator over
/// the buffer, checked whole by [`parse_pair_refs`] before the first pair (nothing copied,
/// nothing allocated).
#[derive(Debug, Clone)]
pub struct PairRefs<'a> {
    bytes: &'a [u8],
    count: usize,
    index: usize,
    /// Where the next name starts.
    at: usize,
}

/// One header's name and value, borrowed.
pub type PairRef<'a> = (&'a [u8], &'a [u8]);

/// The map is malformed.
#[derive(Debug)]
struct Malformed;

impl<'a> PairRefs<'a> {
    /// The next pair; `Err` when the map is malformed.
    fn step(&mut self) -> Result<Option<PairRef<'a>>, Malformed> {
        if self.index >= self.count {
            return Ok(None);
        }
        let entry = self
            .index
            .checked_mul(8)
            .and_then(|e| e.checked_add(4))
            .ok_or(Malformed)?;
        let bytes = self.bytes;
        let mut at = self.at;
        let mut take = |len: Option<usize>| -> Result<&'a [u8], Malformed> {
            let end = at.checked_add(len.ok_or(Malformed)?).ok_or(Malformed)?;
            let data = bytes.get(at..end).ok_or(Malformed)?;
            at = end.checked_add(1).ok_or(Malformed)?;
            Ok(data)
        };
        let name = take(read_u32(bytes, entry))?;
        let value = take(entry.checked_add(4).and_then(|e| read_u32(bytes, e)))?;
        self.at = at;
        self.index += 1;
        Ok(Some((name, value)))
    }
}

impl<'a> Iterator for PairRefs<'a> {
    type Item = PairRef<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        // Checked whole before the first pair: a malformed map never gets here.
        self.step().ok().flatten()
    }
}

/// Parses the ABI's serialized header map (a `u32` count, a `u32` name size and value size per
/// pair, then each name and value followed by a NUL; little-endian) into byte pairs borrowed from
/// `bytes`: the whole map is checked first, then read in place. `None` when malformed; empty
/// input is an empty map. Never panics, whatever the bytes.
pub fn parse_pair_refs(bytes: &[u8]) -> Option<PairRefs<'_>> {
    let empty = PairRefs {
        bytes,
        count: 0,
        index: 0,
        at: 0,
    };
    if bytes.is_empty() {
        return Some(empty);
    }
    let count = read_u32(bytes, 0)?;
    let at = count.checked_mul(8)?.checked_add(4)?;
    if at > bytes.len() {
        return None;
    }
    let pairs = PairRefs { count, at, ..empty };
    let mut check = pairs.clone();
    while check.step().ok()?.is_some() {}
    Some(pairs)
}

/// [`parse_pair_refs`], owned.
pub fn parse_pairs(bytes: &[u8]) -> Option<Pairs> {
    Some(
        parse_pair_refs(bytes)?
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect(),
    )
}

/// Serializes pairs in the ABI's header map format (see [`parse_pairs`]).
pub fn serialize_pairs(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
    let size = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
    let mut out = Vec::new();
    out.extend_from_slice(&size(pairs.len()));
    for (name, value) in pairs {
        out.extend_from_slice(&size(name.len()));
        out.extend_from_slice(&size(value.len()));
    }
    for (name, value) in pairs {
        out.extend_from_slice(name);
        out.push(0);
        out.extend_from_slice(value);
        out.push(0);
    }
    out
}

/// Whether the request needs the connection's certificate facts: the engine's rule
/// ([`kubelet_authz::decision::needs_connection_facts`]: only with an `x-forwarded-client-cert`).
pub fn has_xfcc<'a>(headers: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> bool {
    kubelet_authz::decision::needs_connection_facts(headers.into_iter().map(|(k, _)| k))
}

/// Build the engine's request from the request headers as bytes and the connection properties
/// (`connection.mtls`, `connection.sha256_peer_certificate_digest`, raw). Which headers the
/// engine reads, and how it reads bytes that are not UTF-8, is the engine's rule
/// ([`Request::from_header_bytes`]): only those are copied. The client address (for the audit
/// event) is not read here: the driver reads it when an event is written
/// ([`source_address`]). The request is written into the buffers of a finished one (`spare`,
/// [`Request::from_header_bytes_in`]), so a request like the last allocates nothing.
pub fn build_request<'a>(
    headers: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    mtls: Option<&[u8]>,
    peer_digest: Option<&[u8]>,
    spare: SpareRequest,
) -> Request {
    let mut request = Request::from_header_bytes_in(headers, spare);
    let mtls = mtls.and_then(|b| b.first()).is_some_and(|b| *b != 0);
    request.mtls = mtls;
    request.peer_cert_sha256 = if mtls { text(peer_digest) } else { None };
    request
}

pub use kubelet_authz::schedule::source_address;

fn text(bytes: Option<&[u8]>) -> Option<String> {
    let s = std::str::from_utf8(bytes?).ok()?;
    (!s.is_empty()).then(|| s.to_string())
}

/// Envoy's own answer when it could not connect to the cluster (its router's local reply).
const ENVOY_CONNECT_ERROR: &[u8] = b"upstream connect error or disconnect/reset before headers.";
/// Envoy's own answer when the callout's timeout fired.
const ENVOY_TIMEOUT: &[u8] = b"upstream request timeout";
/// Envoy's own answer when the cluster has no endpoint to use.
const ENVOY_NO_HEALTHY_UPSTREAM: &[u8] = b"no healthy upstream";

/// The response to a callout, with Envoy's own answers told apart from the API server's (the
/// kubelet's clients treat them differently, [`kubelet_authz::webhook`]):
/// - no headers at all: the stream was reset (Envoy's async client failure): a reset;
/// - 503 `upstream connect error or disconnect/reset before headers. reset reason: R`: R
///   `remote connection failure` (Envoy 1.40's words for a refused connection), `connection
///   failure`, `local connection failure`, `connection timeout` or `overflow` is a connection that
///   could not be made (the kubelet's dial error: not retried); any other reason (`connection
///   termination`, `remote reset`, `protocol error`, ...) a reset (retried);
/// - 503 `no healthy upstream`: no connection;
/// - 504 `upstream request timeout`: the callout's own timeout (not retried).
///
/// The API server answers JSON, never these texts.
pub fn callout_response(headers: &[(Vec<u8>, Vec<u8>)], body: Vec<u8>) -> CalloutResponse {
    if headers.is_empty() {
        return no_response();
    }
    let status = headers
        .iter()
        .find(|(k, _)| k == b":status")
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse::<u16>().ok());
    let Some(status) = status else {
        return CalloutResponse::Failed("response without a valid :status".into());
    };
    let text = body.trim_ascii();
    match status {
        503 if text.starts_with(ENVOY_CONNECT_ERROR) => {
            let why = String::from_utf8_lossy(text).into_owned();
            let reason = why.split("reset reason: ").nth(1).unwrap_or_default();
            if [
                "connection failure",
                "remote connection failure",
                "local connection failure",
                "connection timeout",
                "overflow",
            ]
            .iter()
            .any(|r| reason.starts_with(r))
            {
                CalloutResponse::ConnectFailed(why)
            } else {
                CalloutResponse::Failed(why)
            }
        }
        503 if text == ENVOY_NO_HEALTHY_UPSTREAM => {
            CalloutResponse::ConnectFailed("no healthy upstream".into())
        }
        504 if text == ENVOY_TIMEOUT => CalloutResponse::TimedOut("callout timeout".into()),
        _ => CalloutResponse::Http {
            status,
            retry_after: headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(b"retry-after"))
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned()),
            body,
        },
    }
}

/// The failure for a callout that got no response (the stream was reset).
pub fn no_response() -> CalloutResponse {
    CalloutResponse::Failed("no response (the stream was reset)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Pairs {
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    /// The borrowed view of owned pairs.
    fn refs(pairs: &Pairs) -> Vec<(&[u8], &[u8])> {
        pairs
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
            .collect()
    }

    fn build(pairs: &Pairs, mtls: Option<&[u8]>, digest: Option<&[u8]>) -> Request {
        build_request(refs(pairs), mtls, digest, SpareRequest::default())
    }

    fn request(pairs: &[(&str, &str)], mtls: Option<&[u8]>, digest: Option<&[u8]>) -> Request {
        build(&h(pairs), mtls, digest)
    }

    fn strings(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    #[test]
    fn request_from_headers_and_properties() {
        let r = request(
            &[
                (":method", "GET"),
                (":path", "/pods"),
                ("Authorization", "Bearer x"),
                ("x-request-id", "abc"),
                ("Accept", "text/plain"),
                ("X-Forwarded-Client-Cert", "Hash=ab12"),
                ("connection", "keep-alive"),
                ("X-Prometheus-Scrape-Timeout-Seconds", "10"),
                ("Connection", "Upgrade"),
            ],
            Some(&[1]),
            Some(b"ab12"),
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
        assert_eq!(r.source_address, None, "read at audit time");
        assert_eq!(r.request_id.as_deref(), Some("abc"));
        // Only what the engine reads is kept, every value, in order.
        assert_eq!(
            r.headers,
            strings(&[
                ("authorization", "Bearer x"),
                ("x-forwarded-client-cert", "Hash=ab12"),
                ("connection", "keep-alive"),
                ("connection", "Upgrade"),
            ])
        );
        assert_eq!(r.header_values("connection"), vec!["keep-alive", "Upgrade"]);
    }

    #[test]
    fn xfcc_presence_decides_the_property_reads() {
        let with = h(&[(":path", "/"), ("X-Forwarded-Client-Cert", "By=x")]);
        let without = h(&[(":path", "/"), ("x-forwarded-client", "By=x")]);
        assert!(has_xfcc(refs(&with)));
        assert!(!has_xfcc(refs(&without)));
    }

    #[test]
    fn source_address_is_text_or_none() {
        assert_eq!(
            source_address(Some(b"10.0.0.1:5555")).as_deref(),
            Some("10.0.0.1:5555")
        );
        assert_eq!(source_address(Some(b"")), None);
        assert_eq!(source_address(Some(&[0xff])), None);
        assert_eq!(source_address(None), None);
    }

    #[test]
    fn borrowed_and_owned_parses_agree() {
        let pairs = h(&[(":path", "/pods"), ("a", ""), ("", "b")]);
        let bytes = serialize_pairs(&refs(&pairs));
        assert_eq!(
            parse_pair_refs(&bytes).map(Iterator::collect::<Vec<_>>),
            Some(refs(&pairs))
        );
        assert_eq!(parse_pairs(&bytes), Some(pairs));
        assert!(parse_pair_refs(&[9, 0, 0, 0]).is_none());
        // A map whose last pair runs past the end is refused whole, before any pair is read.
        let mut cut = serialize_pairs(&refs(&h(&[(":path", "/pods"), ("authorization", "x")])));
        cut.truncate(cut.len() - 2);
        assert!(parse_pair_refs(&cut).is_none());
    }

    #[test]
    fn digest_only_with_mtls() {
        let r = request(&[(":path", "/")], Some(&[0]), Some(b"ab12"));
        assert!(!r.mtls);
        assert_eq!(r.peer_cert_sha256, None);
        let r = request(&[(":path", "/")], None, Some(b"ab12"));
        assert!(!r.mtls);
        assert_eq!(r.peer_cert_sha256, None);
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
                retry_after: Some("1".into()),
                body: b"{}".to_vec()
            }
        );
        assert_eq!(
            callout_response(
                &h(&[(":status", "503"), ("content-type", "text/plain")]),
                b"upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: delayed connect error: Connection refused".to_vec()
            ),
            CalloutResponse::ConnectFailed("upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: delayed connect error: Connection refused".into())
        );
        assert!(matches!(
            callout_response(
                &h(&[(":status", "503")]),
                b"upstream connect error or disconnect/reset before headers. reset reason: connection termination".to_vec()
            ),
            CalloutResponse::Failed(_)
        ));
        assert!(matches!(
            callout_response(
                &h(&[(":status", "503")]),
                b"upstream connect error or disconnect/reset before headers. reset reason: remote connection failure".to_vec()
            ),
            CalloutResponse::ConnectFailed(_)
        ));
        assert!(matches!(
            callout_response(
                &h(&[(":status", "503")]),
                b"upstream connect error or disconnect/reset before headers. reset reason: remote reset".to_vec()
            ),
            CalloutResponse::Failed(_)
        ));
        assert_eq!(
            callout_response(
                &h(&[(":status", "504")]),
                b"upstream request timeout".to_vec()
            ),
            CalloutResponse::TimedOut("callout timeout".into())
        );
        assert_eq!(
            callout_response(&h(&[(":status", "503")]), b"no healthy upstream".to_vec()),
            CalloutResponse::ConnectFailed("no healthy upstream".into())
        );
        // The API server's own 503 and 504 are its answers.
        assert!(matches!(
            callout_response(&h(&[(":status", "503")]), br#"{"kind":"Status"}"#.to_vec()),
            CalloutResponse::Http {
                status: 503,
                retry_after: None,
                ..
            }
        ));
        assert!(matches!(
            callout_response(&h(&[("content-type", "x")]), Vec::new()),
            CalloutResponse::Failed(_)
        ));
    }

    #[test]
    fn pairs_round_trip_with_any_bytes() {
        let pairs: Pairs = vec![
            (b":path".to_vec(), b"/pods".to_vec()),
            (b"user-agent".to_vec(), vec![0xff, 0x00, 0x80]),
            (vec![0xc3, 0x28], Vec::new()),
        ];
        let refs: Vec<(&[u8], &[u8])> = pairs
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
            .collect();
        assert_eq!(parse_pairs(&serialize_pairs(&refs)), Some(pairs));
        assert_eq!(parse_pairs(&[]), Some(Vec::new()));
        assert_eq!(parse_pairs(&[0, 0, 0, 0]), Some(Vec::new()));
    }

    #[test]
    fn malformed_maps_are_refused_not_panicked_on() {
        // A count larger than the table, a size past the end, a truncated count.
        assert_eq!(parse_pairs(&[9, 0, 0, 0]), None);
        assert_eq!(
            parse_pairs(&[1, 0, 0, 0, 200, 0, 0, 0, 1, 0, 0, 0, b'a', 0]),
            None
        );
        assert_eq!(parse_pairs(&[1, 0]), None);
        assert_eq!(parse_pairs(&[0xff, 0xff, 0xff, 0xff]), None);
    }

    proptest::proptest! {
        #[test]
        fn parse_pairs_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = parse_pairs(&bytes);
        }

        #[test]
        fn non_utf8_header_bytes_never_fail_the_request(
            name in proptest::collection::vec(proptest::num::u8::ANY, 0..12),
            value in proptest::collection::vec(proptest::num::u8::ANY, 0..24),
        ) {
            let headers: Pairs = vec![
                (b":method".to_vec(), b"GET".to_vec()),
                (b":path".to_vec(), b"/pods".to_vec()),
                (name, value),
            ];
            let r = build(&headers, None, None);
            proptest::prop_assert_eq!(r.target, "/pods");
        }
    }

    #[test]
    fn non_utf8_values_are_read_as_replacement_characters() {
        let headers: Pairs = vec![
            (b":method".to_vec(), b"GET".to_vec()),
            (b":path".to_vec(), b"/pods\xff".to_vec()),
            (b"Authorization".to_vec(), b"Bearer \xffabc".to_vec()),
            (b"user-agent".to_vec(), b"caf\xe9".to_vec()),
        ];
        let r = build(&headers, None, None);
        assert_eq!(r.target, "/pods\u{fffd}");
        assert_eq!(r.header_values("authorization"), vec!["Bearer \u{fffd}abc"]);
        assert_eq!(r.header_values("user-agent"), vec!["caf\u{fffd}"]);
        let status = callout_response(&[(b":status".to_vec(), vec![b'2', 0xff])], Vec::new());
        assert!(matches!(status, CalloutResponse::Failed(_)));
    }

    #[test]
    fn audit_copy_keeps_only_what_audit_reads() {
        let r = request(
            &[
                (":path", "/pods"),
                ("authorization", "Bearer secret"),
                ("user-agent", "curl"),
            ],
            None,
            None,
        );
        let a = kubelet_authz::audit::request_for_audit(&r);
        assert_eq!(a.headers, strings(&[("user-agent", "curl")]));
        assert_eq!(a.target, "/pods");
    }
}
