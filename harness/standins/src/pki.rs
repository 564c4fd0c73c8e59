//! A test PKI in a directory of PEM files: one CA, server certificates for loopback, and client
//! certificates with a chosen subject (CN = user, every O = a group, optionally the UID attribute
//! 1.3.6.1.4.1.57683.2, `asn1util.X509UID()`), as Kubernetes reads them.
//!
//! Files (all PEM): `ca.crt`, `ca.key`, `server.crt`, `server.key` (SANs `127.0.0.1`, `::1`,
//! `localhost` and the in-cluster API server names) and `<name>.crt`/`<name>.key` for each client
//! certificate. [`Pki::open`] reuses the files already in the directory and creates the missing
//! ones, under a lock file so that two processes sharing a directory agree on one CA.
//!
//! The CA and server certificates are made with `rcgen`; client certificates are assembled with
//! `x509-cert` (rcgen keeps one value per attribute type, and a Kubernetes client certificate may
//! carry several O attributes) and signed with the CA's `rcgen` key.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use der::asn1::{BitString, ObjectIdentifier, OctetString, SetOfVec, Utf8StringRef};
use der::{Decode as _, Encode as _};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData as _, SigningKey as _,
};
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::ext::pkix::ExtendedKeyUsage;
use x509_cert::ext::Extension;
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::time::{Time, Validity};
use x509_cert::{Certificate, TbsCertificate, Version};

/// The subject common name of the test CA.
pub const CA_COMMON_NAME: &str = "kubelet-authz test CA";

/// Host names and addresses in the default server certificate.
pub const SERVER_SANS: &[&str] = &[
    "127.0.0.1",
    "::1",
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

// The subject attribute types are the engine's, so a certificate made here is read by the same
// constants that turn it into a user (`kubelet_authz::identity::x509::user_from_der`).
const OID_CN: ObjectIdentifier = kubelet_authz::identity::x509::CN_OID;
const OID_O: ObjectIdentifier = kubelet_authz::identity::x509::O_OID;
/// Kubernetes' `asn1util.X509UID()`; the same constant the engine reads.
pub const OID_UID: ObjectIdentifier = kubelet_authz::identity::x509::UID_OID;
const OID_ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const OID_CLIENT_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.2");
const OID_EXT_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");

/// Why the PKI could not be created or read.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// rcgen refused parameters or a key.
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// DER encoding or decoding failed.
    #[error("certificate encoding: {0}")]
    Der(String),
    /// The name of a client certificate is not a plain file name.
    #[error("client certificate name `{0}`: use letters, digits, `-`, `_` and `.` only")]
    BadName(String),
    /// Another process holds the lock for too long.
    #[error("{0}: lock held for more than 30s; remove it if no stand-in is starting")]
    Locked(PathBuf),
}

impl From<der::Error> for PkiError {
    fn from(e: der::Error) -> Self {
        PkiError::Der(e.to_string())
    }
}

/// Paths of a certificate and its private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPaths {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// The private key (PKCS#8 PEM).
    pub key: PathBuf,
}

/// A client certificate's subject: CN = user name, each O = a group, optional UID attribute.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientSubject {
    /// Common name (the user name).
    pub common_name: String,
    /// Organizations (the groups), in order.
    pub organizations: Vec<String>,
    /// The UID attribute (1.3.6.1.4.1.57683.2), when set.
    pub uid: Option<String>,
}

impl ClientSubject {
    /// A subject with a CN and O values.
    pub fn new(common_name: &str, organizations: &[&str]) -> Self {
        ClientSubject {
            common_name: common_name.to_string(),
            organizations: organizations.iter().map(|o| o.to_string()).collect(),
            uid: None,
        }
    }

    /// The same subject with a UID attribute.
    pub fn with_uid(mut self, uid: &str) -> Self {
        self.uid = Some(uid.to_string());
        self
    }
}

/// A test PKI rooted in a directory.
#[derive(Debug)]
pub struct Pki {
    dir: PathBuf,
    ca_key: KeyPair,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Write a file through a temporary name and a rename, so readers never see half a file.
fn write_atomic(path: &Path, contents: &str) -> Result<(), PkiError> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, contents).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// A lock file held while the PKI directory is being filled.
struct DirLock(PathBuf);

impl DirLock {
    fn acquire(dir: &Path) -> Result<Self, PkiError> {
        let path = dir.join(".pki.lock");
        let start = std::time::Instant::now();
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(_) => return Ok(DirLock(path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if start.elapsed() > Duration::from_secs(30) {
                        return Err(PkiError::Locked(path));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(io_err(&path)(e)),
            }
        }
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl Pki {
    /// Open the PKI in `dir`, creating the directory, the CA and the default server certificate
    /// when they are missing, and reusing them when present.
    pub fn open(dir: &Path) -> Result<Pki, PkiError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let _lock = DirLock::acquire(dir)?;
        let ca_cert = dir.join("ca.crt");
        let ca_key_path = dir.join("ca.key");
        let ca_key = if ca_cert.exists() && ca_key_path.exists() {
            let pem = std::fs::read_to_string(&ca_key_path).map_err(io_err(&ca_key_path))?;
            KeyPair::from_pem(&pem)?
        } else {
            let key = KeyPair::generate()?;
            let cert = ca_params().self_signed(&key)?;
            write_atomic(&ca_key_path, &key.serialize_pem())?;
            write_atomic(&ca_cert, &cert.pem())?;
            key
        };
        let pki = Pki {
            dir: dir.to_path_buf(),
            ca_key,
        };
        if !pki.dir.join("server.crt").exists() || !pki.dir.join("server.key").exists() {
            pki.write_server_cert("server", SERVER_SANS)?;
        }
        Ok(pki)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA certificate file.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// The CA's private key file.
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }

    /// The default server certificate (`server.crt`/`server.key`).
    pub fn server(&self) -> CertPaths {
        self.paths("server")
    }

    /// The paths `<name>.crt` and `<name>.key` (whether or not they exist).
    pub fn paths(&self, name: &str) -> CertPaths {
        CertPaths {
            cert: self.dir.join(format!("{name}.crt")),
            key: self.dir.join(format!("{name}.key")),
        }
    }

    fn issuer(&self) -> Issuer<'static, &KeyPair> {
        Issuer::new(ca_params(), &self.ca_key)
    }

    /// Issue (or replace) a server certificate `<name>.crt` for the given DNS names and IP
    /// addresses.
    pub fn write_server_cert(&self, name: &str, sans: &[&str]) -> Result<CertPaths, PkiError> {
        if !valid_name(name) {
            return Err(PkiError::BadName(name.to_string()));
        }
        let key = KeyPair::generate()?;
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(sans)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer())?;
        let paths = self.paths(name);
        write_atomic(&paths.key, &key.serialize_pem())?;
        write_atomic(&paths.cert, &cert.pem())?;
        Ok(paths)
    }

    /// Issue (or replace) a client certificate `<name>.crt` with the given subject.
    pub fn write_client_cert(
        &self,
        name: &str,
        subject: &ClientSubject,
    ) -> Result<CertPaths, PkiError> {
        if !valid_name(name) {
            return Err(PkiError::BadName(name.to_string()));
        }
        let key = KeyPair::generate()?;
        let der = self.client_cert_der(&key, subject)?;
        let pem = pem_encode("CERTIFICATE", &der);
        let paths = self.paths(name);
        write_atomic(&paths.key, &key.serialize_pem())?;
        write_atomic(&paths.cert, &pem)?;
        Ok(paths)
    }

    /// Reuse `<name>.crt` when it exists, otherwise issue it.
    pub fn client_cert(&self, name: &str, subject: &ClientSubject) -> Result<CertPaths, PkiError> {
        let paths = self.paths(name);
        if paths.cert.exists() && paths.key.exists() {
            return Ok(paths);
        }
        self.write_client_cert(name, subject)
    }

    fn client_cert_der(&self, key: &KeyPair, subject: &ClientSubject) -> Result<Vec<u8>, PkiError> {
        let ca_pem = std::fs::read_to_string(self.ca_cert()).map_err(io_err(&self.ca_cert()))?;
        let ca_der = pem_decode_first(&ca_pem).ok_or_else(|| PkiError::Io {
            path: self.ca_cert(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "no PEM certificate"),
        })?;
        let ca = Certificate::from_der(&ca_der)?;

        let mut rdns = vec![rdn(OID_CN, &subject.common_name)?];
        for org in &subject.organizations {
            rdns.push(rdn(OID_O, org)?);
        }
        if let Some(uid) = &subject.uid {
            rdns.push(rdn(OID_UID, uid)?);
        }
        let now = SystemTime::now();
        let since_epoch = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let not_before = Time::UtcTime(der::asn1::UtcTime::from_unix_duration(
            since_epoch.saturating_sub(Duration::from_secs(3600)),
        )?);
        let not_after = Time::UtcTime(der::asn1::UtcTime::from_unix_duration(
            since_epoch + Duration::from_secs(10 * 365 * 24 * 3600),
        )?);
        let mut serial = [0u8; 16];
        let nanos = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
            .to_be_bytes();
        serial.copy_from_slice(&nanos);
        serial[0] = 0x01; // positive, non-zero leading byte
        let eku = ExtendedKeyUsage(vec![OID_CLIENT_AUTH]).to_der()?;
        let sig_alg = AlgorithmIdentifierOwned {
            oid: OID_ECDSA_SHA256,
            parameters: None,
        };
        let tbs = TbsCertificate {
            version: Version::V3,
            serial_number: SerialNumber::new(&serial)?,
            signature: sig_alg.clone(),
            issuer: ca.tbs_certificate.subject.clone(),
            validity: Validity {
                not_before,
                not_after,
            },
            subject: Name::from(RdnSequence(rdns)),
            subject_public_key_info: SubjectPublicKeyInfoOwned::from_der(
                &key.subject_public_key_info(),
            )?,
            issuer_unique_id: None,
            subject_unique_id: None,
            extensions: Some(vec![Extension {
                extn_id: OID_EXT_KEY_USAGE,
                critical: false,
                extn_value: OctetString::new(eku)?,
            }]),
        };
        let tbs_der = tbs.to_der()?;
        let signature = self.ca_key.sign(&tbs_der)?;
        let cert = Certificate {
            tbs_certificate: tbs,
            signature_algorithm: sig_alg,
            signature: BitString::from_bytes(&signature)?,
        };
        Ok(cert.to_der()?)
    }
}

fn rdn(oid: ObjectIdentifier, value: &str) -> Result<RelativeDistinguishedName, PkiError> {
    let value = der::Any::encode_from(&Utf8StringRef::new(value)?)?;
    let atv = AttributeTypeAndValue { oid, value };
    Ok(RelativeDistinguishedName(SetOfVec::try_from(vec![atv])?))
}

/// PEM-encode DER bytes with the given label (64-column base64 lines).
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    let mut rest = b64.as_str();
    while !rest.is_empty() {
        let (line, tail) = rest.split_at(rest.len().min(64));
        out.push_str(line);
        out.push('\n');
        rest = tail;
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The DER of the first `CERTIFICATE` block in PEM text.
pub fn pem_decode_first(pem: &str) -> Option<Vec<u8>> {
    let mut reader = std::io::BufReader::new(pem.as_bytes());
    let first = rustls_pemfile::certs(&mut reader)
        .next()
        .and_then(Result::ok)
        .map(|c| c.as_ref().to_vec());
    first
}
