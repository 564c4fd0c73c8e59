//! The incoming request as a driver reads it once: method, target, headers and the connection
//! facts the engine needs.

use super::spare::SpareRequest;

/// The request headers the engine reads besides `:method`, `:path` and `x-request-id`, lower
/// case: the bearer token, the upgrade headers (`Connection` tokens and `Upgrade`, every value), the
/// WebSocket subprotocols (the WebSocket token, and what is stripped before forwarding), the
/// client certificate from `x-forwarded-client-cert` (every value: several are a spoof), and the
/// `User-Agent` of the audit event. A driver needs to hand over no other header.
pub const READ_HEADERS: [&str; 6] = [
    "authorization",
    "connection",
    "upgrade",
    "sec-websocket-protocol",
    XFCC_HEADER,
    "user-agent",
];

/// The header the client certificate is taken from (Envoy's, checked against the verified peer
/// certificate): only a request carrying it needs the connection's certificate facts.
pub const XFCC_HEADER: &str = "x-forwarded-client-cert";

/// Whether a request with these header names needs the connection's certificate facts
/// (`connection.mtls`, the peer certificate's digest): only with an [`XFCC_HEADER`], the only
/// place a certificate is taken from, so a driver reads them only then.
pub fn needs_connection_facts<'a>(mut names: impl Iterator<Item = &'a [u8]>) -> bool {
    names.any(|n| n.eq_ignore_ascii_case(XFCC_HEADER.as_bytes()))
}

/// The incoming request, as the driver read it once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// `:method`.
    pub method: String,
    /// `:path`, the request target including the query string.
    pub target: String,
    /// The request headers, names in lower case, in order (from a proxy: the ones the engine
    /// reads, [`READ_HEADERS`]).
    pub headers: Vec<(String, String)>,
    /// `connection.mtls`.
    pub mtls: bool,
    /// `connection.sha256_peer_certificate_digest` (hex), when the connection has a verified
    /// client certificate.
    pub peer_cert_sha256: Option<String>,
    /// The client address (`source.address`), for audit.
    pub source_address: Option<String>,
    /// An id for the audit event (Envoy's `x-request-id`).
    pub request_id: Option<String>,
}

/// `bytes` as text the way Go's `encoding/json` writes a string that is not UTF-8: each byte
/// that does not start a valid UTF-8 sequence becomes one U+FFFD, and decoding resumes at the
/// next byte (Go's `utf8.DecodeRuneInString` answers `RuneError` with width 1). This is how the
/// kubelet's TokenReview carries such a token: `tok\xe2\x82X` is reviewed as
/// `"tok\ufffd\ufffdX"`, where Rust's [`String::from_utf8_lossy`] would write one U+FFFD for the
/// truncated sequence. Valid UTF-8 comes back unchanged.
pub fn go_json_lossy(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    push_go_json_lossy(&mut out, bytes);
    out
}

/// [`go_json_lossy`], appended to `out` (whose capacity is reused).
pub fn push_go_json_lossy(out: &mut String, bytes: &[u8]) {
    let mut rest = bytes;
    loop {
        match std::str::from_utf8(rest) {
            Ok(valid) => {
                out.push_str(valid);
                return;
            }
            Err(e) => {
                let (valid, after) = rest.split_at(e.valid_up_to());
                // `valid_up_to` bytes are UTF-8 by the error's own account.
                out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                out.push(char::REPLACEMENT_CHARACTER);
                // One invalid byte, whatever the length of the sequence it begins.
                rest = after.get(1..).unwrap_or_default();
            }
        }
    }
}

impl Request {
    /// A request with a method and target and no headers.
    pub fn new(method: &str, target: &str) -> Self {
        Request {
            method: method.to_string(),
            target: target.to_string(),
            ..Request::default()
        }
    }

    /// The request as a proxy hands it over: header names and values as bytes, in order, with
    /// the pseudo-headers `:method` and `:path` (the first of each counts) and Envoy's
    /// `x-request-id` (the audit event's id). Of the other headers only those the engine reads
    /// ([`READ_HEADERS`]) are kept, every value of each, in order; the rest are not copied.
    ///
    /// HTTP lets a header value carry any byte but controls (obs-text), and Envoy passes them on;
    /// the kubelet, in Go, reads them as bytes. Names are lower-cased, and every byte that does
    /// not start a UTF-8 sequence is read as one U+FFFD ([`go_json_lossy`]), which is what Go's
    /// JSON encoding sends to the API server when the kubelet reviews such a token. So a token with such a byte is reviewed and rejected
    /// (401) as by the kubelet; a path with one is refused as non-canonical (400); a
    /// `Connection`/`Upgrade` token with one is not `upgrade`/`websocket`; an
    /// `x-forwarded-client-cert` (Envoy's own, ASCII) is checked against the peer certificate as
    /// always; any other header is not read. Nothing about such bytes can fail or stop the
    /// decision.
    pub fn from_header_bytes<'a>(pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Self {
        Request::from_header_bytes_in(pairs, SpareRequest::default())
    }

    /// [`Request::from_header_bytes`], written into the buffers of a finished request (`spare`,
    /// from [`crate::schedule::Scheduler::spare_request`]): every field is overwritten, so nothing
    /// of the last request remains, and a request of the same shape allocates nothing.
    pub fn from_header_bytes_in<'a>(
        pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
        spare: SpareRequest,
    ) -> Self {
        let Request {
            mut method,
            mut target,
            mut headers,
            request_id: mut id_buffer,
            ..
        } = spare.0;
        method.clear();
        target.clear();
        let mut request_id: Option<String> = None;
        let mut kept = 0;
        for (name, value) in pairs {
            // A name that is not UTF-8 cannot equal any of these ASCII names, read as U+FFFD or not.
            if name.eq_ignore_ascii_case(b":method") {
                if method.is_empty() {
                    push_go_json_lossy(&mut method, value);
                }
            } else if name.eq_ignore_ascii_case(b":path") {
                if target.is_empty() {
                    push_go_json_lossy(&mut target, value);
                }
            } else if name.eq_ignore_ascii_case(b"x-request-id") {
                if request_id.is_none() {
                    let mut id = id_buffer.take().unwrap_or_default();
                    id.clear();
                    push_go_json_lossy(&mut id, value);
                    request_id = Some(id);
                }
            } else if let Some(known) = READ_HEADERS
                .iter()
                .find(|k| k.as_bytes().eq_ignore_ascii_case(name))
            {
                match headers.get_mut(kept) {
                    Some((k, v)) => {
                        k.clear();
                        k.push_str(known);
                        v.clear();
                        push_go_json_lossy(v, value);
                    }
                    None => headers.push(((*known).to_string(), go_json_lossy(value))),
                }
                kept += 1;
            }
        }
        // The last request's headers past this one's: dropped.
        headers.truncate(kept);
        Request {
            method,
            target,
            headers,
            mtls: false,
            peer_cert_sha256: None,
            source_address: None,
            request_id,
        }
    }

    /// The request asking for a connection upgrade as kubectl opens a stream: `Connection:
    /// Upgrade`, and `Upgrade: SPDY/3.1` for a `POST` (exec, attach, port-forward over SPDY),
    /// `websocket` for any other method.
    pub fn upgrade(self) -> Self {
        let protocol = if self.method == "POST" {
            "SPDY/3.1"
        } else {
            "websocket"
        };
        self.header("connection", "Upgrade")
            .header("upgrade", protocol)
    }

    /// Add a header (name lower-cased).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_string()));
        self
    }

    /// Every value of a header, in order.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The first value of a header.
    pub fn first_header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use rstest::rstest;

    use super::*;

    /// Go's `encoding/json` on a string that is not UTF-8 (each row checked against
    /// `json.Marshal(string(bytes))`): one U+FFFD per byte that does not start a valid sequence.
    #[rstest]
    #[case::ascii(b"tok", "tok")]
    #[case::valid_multibyte("caf\u{e9}\u{2028}😀".as_bytes(), "caf\u{e9}\u{2028}😀")]
    #[case::lone_continuation(b"\x80", "\u{fffd}")]
    #[case::lone_ff(b"a\xffb", "a\u{fffd}b")]
    #[case::truncated_three_byte(b"tok\xe2\x82X", "tok\u{fffd}\u{fffd}X")]
    #[case::truncated_four_byte(b"\xf0\x9f\x98", "\u{fffd}\u{fffd}\u{fffd}")]
    #[case::truncated_at_end(b"tok\xe2", "tok\u{fffd}")]
    #[case::overlong_slash(b"\xc0\xaf", "\u{fffd}\u{fffd}")]
    #[case::surrogate(b"\xed\xa0\x80", "\u{fffd}\u{fffd}\u{fffd}")]
    #[case::above_max(b"\xf4\x90\x80\x80", "\u{fffd}\u{fffd}\u{fffd}\u{fffd}")]
    #[case::bad_then_valid(b"\xe2\xe2\x82\xac", "\u{fffd}\u{20ac}")]
    #[case::empty(b"", "")]
    fn invalid_bytes_as_go_json_writes_them(#[case] bytes: &[u8], #[case] want: &str) {
        assert_eq!(go_json_lossy(bytes), want);
    }

    #[rstest]
    #[case::spdy("POST", "SPDY/3.1")]
    #[case::websocket("GET", "websocket")]
    fn an_upgrade_is_what_kubectl_sends(#[case] method: &str, #[case] protocol: &str) {
        let r = Request::new(method, "/exec/ns/pod/c").upgrade();
        assert_eq!(r.header_values("connection"), ["Upgrade"]);
        assert_eq!(r.header_values("upgrade"), [protocol]);
        let a = super::super::request_attributes(
            &r.method,
            &r.target,
            &r.headers,
            crate::kubelet::KubeletModel::new(
                crate::kubelet::KubeletVersion::LATEST,
                crate::kubelet::FeatureGates::default(),
            )
            .unwrap(),
            true,
        )
        .unwrap();
        assert!(a.upgrade);
    }

    /// Reading into a finished request's buffers gives exactly the request read afresh: no
    /// header, id, target or connection fact of the last request survives.
    #[rstest]
    #[case::fewer_headers(&[(&b":method"[..], &b"GET"[..]), (b":path", b"/pods")])]
    #[case::same_shape(&[(&b":method"[..], &b"GET"[..]), (b":path", b"/pods"), (b"authorization", b"Bearer b"), (b"user-agent", b"u")])]
    #[case::more_headers(&[(&b":path"[..], &b"/x"[..]), (b"connection", b"Upgrade"), (b"upgrade", b"websocket"), (b"sec-websocket-protocol", b"p"), (b"authorization", b"Bearer c"), (b"x-forwarded-client-cert", b"Hash=1")])]
    #[case::nothing(&[])]
    fn a_spare_request_keeps_nothing_of_the_last(#[case] pairs: &[(&[u8], &[u8])]) {
        let mut last = Request::new("POST", "/exec/ns/pod/c?command=id")
            .header("authorization", "Bearer old-secret")
            .header("user-agent", "old");
        last.mtls = true;
        last.peer_cert_sha256 = Some("ab".into());
        last.source_address = Some("10.0.0.1:1".into());
        last.request_id = Some("old-id".into());
        let fresh = Request::from_header_bytes(pairs.iter().copied());
        let reused = Request::from_header_bytes_in(pairs.iter().copied(), SpareRequest(last));
        assert_eq!(reused, fresh);
    }

    /// Header pairs drawn from the names the engine reads (any case), pseudo-headers, others,
    /// with any bytes as values.
    fn pairs() -> impl proptest::strategy::Strategy<Value = Vec<(Vec<u8>, Vec<u8>)>> {
        use proptest::prelude::*;
        let name = prop::sample::select(vec![
            ":method",
            ":path",
            "x-request-id",
            "Authorization",
            "authorization",
            "connection",
            "Upgrade",
            "sec-websocket-protocol",
            "x-forwarded-client-cert",
            "user-agent",
            "accept",
        ])
        .prop_map(|n| n.as_bytes().to_vec());
        let value = prop::collection::vec(any::<u8>(), 0..40);
        prop::collection::vec((name, value), 0..12)
    }

    fn view(p: &[(Vec<u8>, Vec<u8>)]) -> Vec<(&[u8], &[u8])> {
        p.iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
            .collect()
    }

    proptest::proptest! {
        /// Any request read into any earlier request's buffers is the request read afresh.
        #[test]
        fn reading_into_spare_buffers_is_reading_afresh(last in pairs(), next in pairs()) {
            let mut spare = Request::from_header_bytes(view(&last));
            spare.mtls = true;
            spare.source_address = Some("10.0.0.1:1".into());
            let reused = Request::from_header_bytes_in(view(&next), SpareRequest(spare));
            proptest::prop_assert_eq!(reused, Request::from_header_bytes(view(&next)));
        }
    }

    #[test]
    fn the_bearer_token_is_read_per_byte() {
        let r = Request::from_header_bytes([
            (&b":path"[..], &b"/pods"[..]),
            (b"authorization", b"Bearer tok\xe2\x82X"),
        ]);
        assert_eq!(
            r.first_header("authorization"),
            Some("Bearer tok\u{fffd}\u{fffd}X")
        );
    }
}
