//! The incoming request as a driver reads it once: method, target, headers and the connection
//! facts the engine needs.

/// The incoming request, as the driver read it once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// `:method`.
    pub method: String,
    /// `:path`, the request target including the query string.
    pub target: String,
    /// All request headers, names in lower case, in order.
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
    /// `x-request-id` (the audit event's id).
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
        let mut request = Request::default();
        for (name, value) in pairs {
            let mut name = String::from_utf8_lossy(name).into_owned();
            name.make_ascii_lowercase();
            let value = String::from_utf8_lossy(value).into_owned();
            match name.as_str() {
                ":method" if request.method.is_empty() => request.method.clone_from(&value),
                ":path" if request.target.is_empty() => request.target.clone_from(&value),
                "x-request-id" if request.request_id.is_none() => {
                    request.request_id = Some(value.clone());
                }
                _ => {}
            }
            request.headers.push((name, value));
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
