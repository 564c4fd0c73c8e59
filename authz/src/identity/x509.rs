//! The user in an X.509 client certificate, as `CommonNameUserConversion` builds it (reference 2.3).
//! Chain verification is not done here: Envoy's downstream TLS verifies the chain, and the filter
//! only accepts a certificate whose digest matches the connection's verified peer certificate.

use crate::identity::UserInfo;
use crate::kubelet::KubeletVersion;

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

/// Hex (lower-case) SHA-256 of DER bytes, as Envoy's `Hash=` and the credential id use it.
pub fn sha256_hex(der: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(der))
}

/// Decode one PEM `CERTIFICATE` block into DER.
pub fn pem_to_der(pem: &str) -> Result<Vec<u8>, X509Error> {
    let _ = pem;
    Err(X509Error::Pem("not implemented".into()))
}

/// The user for a verified leaf certificate (DER): `Ok(None)` when the CN is empty.
/// - name = subject CN; groups = every O, in order;
/// - extra `authentication.kubernetes.io/credential-id` = [`X509SHA256=<hex>`] from 1.32;
/// - uid from the subject UID attribute (OID 0.9.2342.19200300.100.1.1) from 1.33, else "".
pub fn user_from_der(der: &[u8], version: KubeletVersion) -> Result<Option<UserInfo>, X509Error> {
    let _ = (der, version);
    Err(X509Error::Der("not implemented".into()))
}
