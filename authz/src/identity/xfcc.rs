//! Envoy's `x-forwarded-client-cert` header, and the rule that decides whether the filter may use
//! the certificate in it: only when Envoy set the header (`SANITIZE_SET`, one element), the
//! connection is mTLS, and the SHA-256 of the `Cert=` certificate equals the connection property
//! `connection.sha256_peer_certificate_digest`. Anything else is a spoof: ignored and counted.

/// One element of the header (`key=value;key="quoted, value"`), values unquoted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct XfccElement {
    /// `By=`.
    pub by: Option<String>,
    /// `Hash=`.
    pub hash: Option<String>,
    /// `Cert=`, URL-decoded PEM.
    pub cert: Option<String>,
    /// `Chain=`, URL-decoded PEM.
    pub chain: Option<String>,
    /// `Subject=`.
    pub subject: Option<String>,
    /// `URI=` (all of them).
    pub uri: Vec<String>,
    /// `DNS=` (all of them).
    pub dns: Vec<String>,
}

/// Why an XFCC header could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XfccError {
    /// Syntax error, with what was wrong.
    #[error("malformed x-forwarded-client-cert header: {0}")]
    Malformed(String),
}

/// Parse the header: elements separated by `,`, pairs by `;`, `key=value`, values optionally in
/// double quotes (inside which `,` `;` `=` are literal and `\"` escapes a quote); keys
/// case-insensitive; `Cert`/`Chain` URL-decoded.
pub fn parse(header: &str) -> Result<Vec<XfccElement>, XfccError> {
    let _ = header;
    Err(XfccError::Malformed("not implemented".into()))
}

/// What the filter makes of the XFCC header(s) and the connection facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCert {
    /// No header and no client certificate on the connection.
    None,
    /// A verified client certificate: DER of the leaf.
    Verified(Vec<u8>),
    /// A header that cannot be trusted (client-sent, wrong hash, several elements, not mTLS,
    /// unparseable): ignored, and counted. The text says why, for logs.
    Spoofed(String),
}

/// Decide which certificate (if any) to use. `values` are all XFCC header values (normally
/// zero or one); `mtls` is `connection.mtls`; `peer_digest_hex` is
/// `connection.sha256_peer_certificate_digest` (compared case-insensitively).
pub fn client_cert(values: &[&str], mtls: bool, peer_digest_hex: Option<&str>) -> ClientCert {
    let _ = (values, mtls, peer_digest_hex);
    ClientCert::None
}
