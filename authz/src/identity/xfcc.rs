//! Envoy's `x-forwarded-client-cert` header, and the rule that decides whether the filter may use
//! the certificate in it: only when Envoy set the header (`SANITIZE_SET`, one element), the
//! connection is mTLS, and the SHA-256 of the `Cert=` certificate equals the connection property
//! `connection.sha256_peer_certificate_digest`. Anything else is a spoof: ignored and counted.

use crate::identity::x509;

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

fn malformed(why: impl Into<String>) -> XfccError {
    XfccError::Malformed(why.into())
}

/// One `key=value` pair before interpretation: key as written, value unquoted.
struct RawPair {
    key: String,
    value: String,
}

/// Split the header into elements of raw pairs, honouring double quotes.
fn lex(header: &str) -> Result<Vec<Vec<RawPair>>, XfccError> {
    let mut elements: Vec<Vec<RawPair>> = Vec::new();
    let mut pairs: Vec<RawPair> = Vec::new();
    let mut chars = header.chars().peekable();
    loop {
        // Key, up to `=`.
        let mut key = String::new();
        loop {
            match chars.next() {
                Some('=') => break,
                Some(c @ (',' | ';' | '"')) => {
                    return Err(malformed(format!("unexpected `{c}` in a key")));
                }
                Some(c) => key.push(c),
                None if key.trim().is_empty() && pairs.is_empty() => {
                    return Err(malformed("empty element"));
                }
                None if key.trim().is_empty() => return Err(malformed("trailing `;`")),
                None => return Err(malformed(format!("key `{}` has no value", key.trim()))),
            }
        }
        let key = key.trim().to_string();
        if key.is_empty() {
            return Err(malformed("empty key"));
        }
        // Value: quoted, or up to the next `;` or `,`.
        let mut value = String::new();
        while chars.next_if(|c| *c == ' ' || *c == '\t').is_some() {}
        if chars.next_if_eq(&'"').is_some() {
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(c @ ('"' | '\\')) => value.push(c),
                        Some(c) => {
                            value.push('\\');
                            value.push(c);
                        }
                        None => return Err(malformed("unterminated quoted value")),
                    },
                    Some(c) => value.push(c),
                    None => return Err(malformed("unterminated quoted value")),
                }
            }
            while chars.next_if(|c| *c == ' ' || *c == '\t').is_some() {}
            if let Some(c) = chars.peek() {
                if *c != ';' && *c != ',' {
                    return Err(malformed(format!("unexpected `{c}` after a quoted value")));
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| *c != ';' && *c != ',') {
                if c == '"' {
                    return Err(malformed("`\"` inside an unquoted value"));
                }
                value.push(c);
            }
            value = value.trim_end().to_string();
        }
        pairs.push(RawPair { key, value });
        match chars.next() {
            Some(';') => {}
            Some(',') => elements.push(std::mem::take(&mut pairs)),
            None => {
                elements.push(pairs);
                return Ok(elements);
            }
            Some(c) => return Err(malformed(format!("unexpected `{c}`"))),
        }
    }
}

/// Percent-decoding (not form decoding: `+` stays `+`), as Envoy URL-encodes PEM. The decoding is
/// the `percent-encoding` crate's; it passes a malformed escape through, so escapes are checked
/// first: every `%` must start `%XX` with two hex digits.
fn url_decode(s: &str) -> Result<String, XfccError> {
    let well_formed = s.split('%').skip(1).all(|after| {
        after
            .as_bytes()
            .get(..2)
            .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    });
    if !well_formed {
        return Err(malformed("bad percent escape"));
    }
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(std::borrow::Cow::into_owned)
        .map_err(|_| malformed("URL-decoded value is not UTF-8"))
}

fn set_once(slot: &mut Option<String>, key: &str, value: String) -> Result<(), XfccError> {
    if slot.is_some() {
        return Err(malformed(format!("`{key}` appears twice in one element")));
    }
    *slot = Some(value);
    Ok(())
}

/// Parse the header: elements separated by `,`, pairs by `;`, `key=value`, values optionally in
/// double quotes (inside which `,` `;` `=` are literal and `\"` escapes a quote); keys
/// case-insensitive; `Cert`/`Chain` URL-decoded. Unknown keys are ignored; a single-valued key
/// (`By`, `Hash`, `Cert`, `Chain`, `Subject`) given twice in one element is an error.
pub fn parse(header: &str) -> Result<Vec<XfccElement>, XfccError> {
    let mut out = Vec::new();
    for raw in lex(header)? {
        let mut el = XfccElement::default();
        for RawPair { key, value } in raw {
            match key.to_ascii_lowercase().as_str() {
                "by" => set_once(&mut el.by, "By", value)?,
                "hash" => set_once(&mut el.hash, "Hash", value)?,
                "cert" => set_once(&mut el.cert, "Cert", url_decode(&value)?)?,
                "chain" => set_once(&mut el.chain, "Chain", url_decode(&value)?)?,
                "subject" => set_once(&mut el.subject, "Subject", value)?,
                "uri" => el.uri.push(value),
                "dns" => el.dns.push(value),
                _ => {}
            }
        }
        out.push(el);
    }
    Ok(out)
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
///
/// `Verified` only when there is exactly one header value holding exactly one element, the
/// connection is mTLS, `Cert=` is present and decodes, and the SHA-256 of its DER equals the peer
/// digest (and the `Hash=` field, when present). The `Hash=` field alone is never trusted. With
/// no header the answer is `None`, also on an mTLS connection: Envoy was not configured to
/// forward the certificate, so it cannot be used.
pub fn client_cert(values: &[&str], mtls: bool, peer_digest_hex: Option<&str>) -> ClientCert {
    let spoofed = |why: &str| ClientCert::Spoofed(why.to_string());
    let header = match values {
        [] => return ClientCert::None,
        [one] => *one,
        _ => return spoofed("several x-forwarded-client-cert headers"),
    };
    let elements = match parse(header) {
        Ok(elements) => elements,
        Err(e) => return ClientCert::Spoofed(e.to_string()),
    };
    let element = match elements.as_slice() {
        [one] => one,
        _ => return spoofed("x-forwarded-client-cert has more than one element"),
    };
    if !mtls {
        return spoofed("x-forwarded-client-cert on a connection without mTLS");
    }
    let Some(pem) = element.cert.as_deref() else {
        return spoofed("x-forwarded-client-cert has no Cert field");
    };
    let der = match x509::pem_to_der(pem) {
        Ok(der) => der,
        Err(e) => return ClientCert::Spoofed(format!("x-forwarded-client-cert Cert field: {e}")),
    };
    let Some(peer) = peer_digest_hex.map(str::trim).filter(|d| !d.is_empty()) else {
        return spoofed("no peer certificate digest on the connection");
    };
    let digest = x509::sha256_hex(&der);
    if !digest.eq_ignore_ascii_case(peer) {
        return spoofed("x-forwarded-client-cert Cert does not match the peer certificate");
    }
    if let Some(hash) = element.hash.as_deref() {
        if !digest.eq_ignore_ascii_case(hash.trim()) {
            return spoofed("x-forwarded-client-cert Hash does not match its Cert");
        }
    }
    ClientCert::Verified(der)
}
