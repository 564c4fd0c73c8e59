//! The user in an X.509 client certificate, as `CommonNameUserConversion` builds it (reference 2.3).
//! Chain verification is not done here: Envoy's downstream TLS verifies the chain, and the filter
//! only accepts a certificate whose digest matches the connection's verified peer certificate.
//!
//! Subject attribute values are read as Go's `crypto/x509` reads them (`parseASN1String`): UTF8String,
//! PrintableString (with `*` and `&` tolerated), IA5String, NumericString, T61String and BMPString.
//! Go refuses a certificate whose subject holds any other value type, or a string that is invalid for
//! its type, so such a certificate is an error here too. As in Go's `pkix.Name`, the last CN wins and
//! every O is kept, in order.

use der::asn1::ObjectIdentifier;
use der::{Decode as _, Tag, Tagged as _};
use x509_cert::Certificate;

use crate::identity::{UserInfo, CREDENTIAL_ID_EXTRA};
use crate::kubelet::KubeletModel;

/// Why a certificate could not be turned into a user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum X509Error {
    /// The bytes are not a DER certificate.
    #[error("client certificate is not valid DER: {0}")]
    Der(String),
    /// The PEM text could not be decoded.
    #[error("client certificate is not valid PEM: {0}")]
    Pem(String),
    /// More than one UID attribute, a non-string UID or an empty UID (1.33+).
    #[error("{0}")]
    Uid(String),
}

/// `commonName` (2.5.4.3).
pub const CN_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
/// `organizationName` (2.5.4.10).
pub const O_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.10");
/// The subject attribute Kubernetes reads the user's UID from: `asn1util.X509UID()` in
/// `k8s.io/apiserver`, `1.3.6.1.4.1.57683.2`. (The reference's 0.9.2342.19200300.100.1.1 is the
/// LDAP `uid` attribute, which the kubelet does not read; see the tests.)
pub const UID_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57683.2");

/// The first kubelet minor version that adds the `credential-id` extra.
pub const CREDENTIAL_ID_SINCE_MINOR: u32 = 32;
/// The first kubelet minor version that reads the UID attribute (`AllowParsingUserUIDFromCertAuth`,
/// beta and on by default from 1.33; it can be turned off: [`KubeletModel::reads_cert_uid`]).
pub const UID_SINCE_MINOR: u32 = crate::kubelet::CERT_UID_SINCE_MINOR;

/// The PEM label of a certificate block.
const PEM_BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const PEM_END: &str = "-----END CERTIFICATE-----";

/// Hex (lower-case) SHA-256 of DER bytes, as Envoy's `Hash=` and the credential id use it.
pub fn sha256_hex(der: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(der))
}

/// Decode one PEM `CERTIFICATE` block into DER. Only white space may surround the block; the
/// base64 body may be wrapped at any width (white space inside it is ignored) and must be padded.
///
/// The block is split here rather than by a PEM crate on purpose: x509-cert's decoder
/// (`pem-rfc7468`) takes only 64-column lines, and the `pem` crate skips text before the block and
/// reads RFC 1421 headers, both refused here. The base64 is the `base64` crate's.
pub fn pem_to_der(pem: &str) -> Result<Vec<u8>, X509Error> {
    use base64::Engine as _;
    let text = pem.trim();
    let Some(rest) = text.strip_prefix(PEM_BEGIN) else {
        return Err(X509Error::Pem(
            "expected `-----BEGIN CERTIFICATE-----` at the start".into(),
        ));
    };
    let Some(body) = rest.strip_suffix(PEM_END) else {
        return Err(X509Error::Pem(
            "expected `-----END CERTIFICATE-----` at the end".into(),
        ));
    };
    if body.contains("-----") {
        return Err(X509Error::Pem("more than one PEM block".into()));
    }
    if body.contains(':') {
        return Err(X509Error::Pem("PEM headers are not supported".into()));
    }
    let compact: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if compact.is_empty() {
        return Err(X509Error::Pem("empty PEM block".into()));
    }
    base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|e| X509Error::Pem(format!("bad base64: {e}")))
}

/// A subject attribute value as Go's `parseASN1String` reads it; `Err` with Go's reason otherwise.
fn asn1_string(tag: Tag, value: &[u8]) -> Result<String, String> {
    match tag {
        Tag::Utf8String => std::str::from_utf8(value)
            .map(str::to_owned)
            .map_err(|_| "invalid UTF-8 string".to_string()),
        Tag::PrintableString => {
            if value.iter().all(|&b| is_printable(b)) {
                Ok(value.iter().map(|&b| char::from(b)).collect())
            } else {
                Err("invalid PrintableString".into())
            }
        }
        Tag::Ia5String => {
            if value.is_ascii() {
                Ok(value.iter().map(|&b| char::from(b)).collect())
            } else {
                Err("invalid IA5String".into())
            }
        }
        Tag::NumericString => {
            if value.iter().all(|&b| b.is_ascii_digit() || b == b' ') {
                Ok(value.iter().map(|&b| char::from(b)).collect())
            } else {
                Err("invalid NumericString".into())
            }
        }
        // Current Go reads T61String as Latin-1, each byte one code point (as BoringSSL does).
        Tag::TeletexString => Ok(value.iter().map(|&b| char::from(b)).collect()),
        Tag::BmpString => {
            if value.len() % 2 != 0 {
                return Err("invalid BMPString".into());
            }
            let value = value.strip_suffix(&[0, 0]).unwrap_or(value);
            let units = value
                .chunks_exact(2)
                .map(|c| c.iter().fold(0u16, |acc, &b| (acc << 8) | u16::from(b)));
            Ok(char::decode_utf16(units)
                .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
                .collect())
        }
        other => Err(format!("unsupported string type: {other}")),
    }
}

/// Go's `isPrintable` for PrintableString, which tolerates `*` and `&`.
fn is_printable(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || (b'\''..=b')').contains(&b)
        || (b'+'..=b'/').contains(&b)
        || matches!(b, b' ' | b':' | b'=' | b'?' | b'*' | b'&')
}

/// The user for a verified leaf certificate (DER): `Ok(None)` when the CN is empty.
/// - name = subject CN; groups = every O, in order;
/// - extra `authentication.kubernetes.io/credential-id` = [`X509SHA256=<hex>`] from 1.32;
/// - uid from the subject UID attribute ([`UID_OID`]) from 1.33 while the gate
///   `AllowParsingUserUIDFromCertAuth` is on (its default), else "". More than one UID, a
///   non-string UID or an empty UID is then an error.
///
/// `model` is a kubelet version (its gates at their defaults) or a [`KubeletModel`].
pub fn user_from_der(
    der: &[u8],
    model: impl Into<KubeletModel>,
) -> Result<Option<UserInfo>, X509Error> {
    let model: KubeletModel = model.into();
    let version = model.version();
    let cert = Certificate::from_der(der).map_err(|e| X509Error::Der(e.to_string()))?;
    let reads_uid = model.reads_cert_uid();
    let mut common_name = String::new();
    let mut groups = Vec::new();
    let mut uids = Vec::new();
    for rdn in cert.tbs_certificate.subject.0.iter() {
        for atv in rdn.0.iter() {
            let text = match asn1_string(atv.value.tag(), atv.value.value()) {
                Ok(text) => text,
                Err(_) if reads_uid && atv.oid == UID_OID => {
                    return Err(X509Error::Uid("unable to parse UID into a string".into()));
                }
                Err(why) => {
                    return Err(X509Error::Der(format!(
                        "invalid RDNSequence: invalid attribute value: {why}"
                    )));
                }
            };
            if atv.oid == CN_OID {
                common_name = text;
            } else if atv.oid == O_OID {
                groups.push(text);
            } else if atv.oid == UID_OID {
                uids.push(text);
            }
        }
    }
    if common_name.is_empty() {
        return Ok(None);
    }
    let mut user = UserInfo {
        name: common_name,
        groups,
        ..UserInfo::default()
    };
    if version.minor() >= CREDENTIAL_ID_SINCE_MINOR {
        user.extra.insert(
            CREDENTIAL_ID_EXTRA.to_string(),
            vec![format!("X509SHA256={}", sha256_hex(der))],
        );
    }
    if reads_uid {
        match uids.as_slice() {
            [] => {}
            [uid] if uid.is_empty() => {
                return Err(X509Error::Uid("UID cannot be an empty string".into()));
            }
            [uid] => user.uid.clone_from(uid),
            many => {
                return Err(X509Error::Uid(format!(
                    "expected 1 UID, but found multiple: [{}]",
                    many.join(" ")
                )));
            }
        }
    }
    Ok(Some(user))
}
