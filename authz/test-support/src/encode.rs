//! Encoders the tests use to build requests as clients and Envoy send them.

use base64::Engine as _;
use kubelet_authz::identity::WEBSOCKET_TOKEN_PREFIX;

/// Percent-encode everything but unreserved characters, as Envoy encodes XFCC `Cert=`.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An Envoy-style `x-forwarded-client-cert` value for a verified certificate (`Hash` is the hex
/// SHA-256 of its DER, `Cert` the URL-encoded PEM).
pub fn xfcc(hash_hex: &str, pem: &str) -> String {
    format!("Hash={hash_hex};Cert=\"{}\";Subject=\"\"", url_encode(pem))
}

/// The WebSocket subprotocol that carries a bearer token
/// (`base64url.bearer.authorization.k8s.io.<base64url(token), unpadded>`).
pub fn websocket_token(token: impl AsRef<[u8]>) -> String {
    format!(
        "{WEBSOCKET_TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token)
    )
}

/// The body of an HTTP/1.1 `Transfer-Encoding: chunked` message, decoded (chunk extensions
/// ignored; stops at the last chunk or at the first malformed or truncated one).
pub fn dechunk(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = rest
            .get(..eol)
            .and_then(|s| std::str::from_utf8(s).ok())
            .unwrap_or("0");
        let size = size.split(';').next().unwrap_or("0").trim();
        let Ok(n) = usize::from_str_radix(size, 16) else {
            break;
        };
        let Some(chunk) = rest.get(eol + 2..eol + 2 + n) else {
            break;
        };
        if n == 0 {
            break;
        }
        out.extend_from_slice(chunk);
        rest = rest.get(eol + 2 + n + 2..).unwrap_or_default();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoders() {
        assert_eq!(url_encode("a+b/c=~"), "a%2Bb%2Fc%3D~");
        assert_eq!(
            websocket_token("tok"),
            "base64url.bearer.authorization.k8s.io.dG9r"
        );
        assert_eq!(dechunk(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n"), b"abcde");
        assert_eq!(dechunk(b"5\r\nab"), b"");
    }
}
