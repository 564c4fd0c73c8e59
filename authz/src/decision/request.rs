//! The incoming request as a driver reads it once: method, target, headers and the connection
//! facts the engine needs.

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
    "x-forwarded-client-cert",
    "user-agent",
];

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
    /// the kubelet, in Go, reads them as bytes. Names are lower-cased, and a byte sequence that is
    /// not UTF-8 is read as U+FFFD, which is what Go's JSON encoding sends to the API server when
    /// the kubelet reviews such a token. So a token with such a byte is reviewed and rejected
    /// (401) as by the kubelet; a path with one is refused as non-canonical (400); a
    /// `Connection`/`Upgrade` token with one is not `upgrade`/`websocket`; an
    /// `x-forwarded-client-cert` (Envoy's own, ASCII) is checked against the peer certificate as
    /// always; any other header is not read. Nothing about such bytes can fail or stop the
    /// decision.
    pub fn from_header_bytes<'a>(pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Self {
        fn text(bytes: &[u8]) -> String {
            String::from_utf8_lossy(bytes).into_owned()
        }
        let mut request = Request::default();
        for (name, value) in pairs {
            // A name that is not UTF-8 cannot equal any of these ASCII names, read as U+FFFD or not.
            if name.eq_ignore_ascii_case(b":method") {
                if request.method.is_empty() {
                    request.method = text(value);
                }
            } else if name.eq_ignore_ascii_case(b":path") {
                if request.target.is_empty() {
                    request.target = text(value);
                }
            } else if name.eq_ignore_ascii_case(b"x-request-id") {
                if request.request_id.is_none() {
                    request.request_id = Some(text(value));
                }
            } else if let Some(known) = READ_HEADERS
                .iter()
                .find(|k| k.as_bytes().eq_ignore_ascii_case(name))
            {
                request.headers.push(((*known).to_string(), text(value)));
            }
        }
        request
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
