//! The per-node CA and the proxy's client certificate (DESIGN.md "Deployment trust model").
//!
//! On first start a CA is made on the node (`ca.crt`, `ca.key` 0600, in a 0700 directory, by
//! default `/var/lib/kubelet-authz/pki`); the key never leaves the node and the files are never
//! overwritten: the kubelet trusts `ca.crt` as its `clientCAFile`, so a new CA would lock the proxy
//! out until the kubelet restarts. A CA file that cannot be read is an error naming it, never a
//! reason to make a new one.
//!
//! The proxy's client certificate (CN [`PROXY_CN`]) is issued by that CA and written the way the
//! kubelet rotates its own: a stamped file `proxy-<stamp>.pem` (certificate and key in one PEM,
//! 0600) and the symlink `proxy-current.pem` swapped atomically (a new symlink, then a rename), so
//! Envoy's SDS (`watched_directory`) picks up the new one without a restart. Only the current and
//! the previous stamped files are kept.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use x509_cert::der::Decode as _;

/// The default directory of the per-node CA and the proxy certificate on the host.
pub const DEFAULT_DIR: &str = "/var/lib/kubelet-authz/pki";
/// The CA certificate (the kubelet's `authentication.x509.clientCAFile`).
pub const CA_CERT: &str = "ca.crt";
/// The CA's private key (0600; never leaves the node).
pub const CA_KEY: &str = "ca.key";
/// The symlink to the proxy's current certificate and key.
pub const PROXY_CURRENT: &str = "proxy-current.pem";
/// The subject CN of the proxy's client certificate: a reserved `system:` name that only node CAs
/// mint and only the local kubelet trusts.
pub const PROXY_CN: &str = "system:kubelet-authz:proxy";
/// The subject CN of the per-node CA.
pub const CA_CN: &str = "kubelet-authz node CA";
/// The default validity of a proxy certificate (30 days).
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(30 * 24 * 3600);
/// The default renewal margin: a certificate with fewer days left is replaced (10 days).
pub const DEFAULT_RENEW_BEFORE: Duration = Duration::from_secs(10 * 24 * 3600);
/// The validity of the per-node CA (10 years).
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How far back a new certificate's `notBefore` is set, for clocks a little behind this one.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// Why the CA or the proxy certificate could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A CA file exists but is not a usable certificate or key.
    #[error(
        "{path}: {reason}; the kubelet trusts this CA, so it is not replaced: restore it from a \
         backup, or remove both ca.crt and ca.key to make a new CA (then restart the kubelet)"
    )]
    CorruptCa {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// One of the two CA files exists without the other.
    #[error(
        "{present} exists but {missing} does not; restore {missing}, or remove {present} to make \
         a new CA (then restart the kubelet)"
    )]
    HalfCa {
        /// The file that exists.
        present: PathBuf,
        /// The file that is missing.
        missing: PathBuf,
    },
    /// The CA has not been made yet.
    #[error("{0}: no per-node CA here; make it first (ensure_ca)")]
    NoCa(PathBuf),
    /// rcgen refused parameters or a key.
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// A time is out of the range a certificate can carry.
    #[error("time {0:?} cannot be written in a certificate")]
    Time(SystemTime),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What [`ensure_ca`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaStatus {
    /// The CA did not exist and was made now.
    Created,
    /// The CA existed, was read and is kept.
    Kept,
}

/// What [`ensure_proxy_cert`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyCertStatus {
    /// A new certificate was issued and `proxy-current.pem` now points to it.
    Renewed {
        /// The new stamped file.
        file: PathBuf,
        /// Its `notAfter`.
        not_after: SystemTime,
    },
    /// The current certificate is valid, issued by this CA and not due for renewal.
    Kept {
        /// The stamped file `proxy-current.pem` points to.
        file: PathBuf,
        /// Its `notAfter`.
        not_after: SystemTime,
    },
}

/// The per-node CA, read from its directory.
struct Ca {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key: KeyPair,
}

/// Make the per-node CA in `dir` unless it exists; check it when it does.
///
/// The directory is created with mode 0700 (and set to 0700 when it exists). An existing CA is
/// read and its key checked against its certificate; a CA file that cannot be read is an error
/// naming it ([`PkiError::CorruptCa`], [`PkiError::HalfCa`]), never replaced.
pub fn ensure_ca(dir: &Path) -> Result<CaStatus, PkiError> {
    make_private_dir(dir)?;
    let cert_path = dir.join(CA_CERT);
    let key_path = dir.join(CA_KEY);
    match (exists(&cert_path)?, exists(&key_path)?) {
        (true, true) => {
            load_ca(dir)?;
            Ok(CaStatus::Kept)
        }
        (true, false) => Err(PkiError::HalfCa {
            present: cert_path,
            missing: key_path,
        }),
        (false, true) => Err(PkiError::HalfCa {
            present: key_path,
            missing: cert_path,
        }),
        (false, false) => {
            let key = KeyPair::generate()?;
            let now = SystemTime::now();
            let mut params = ca_params();
            params.not_before = to_offset(now.checked_sub(BACKDATE).unwrap_or(now))?;
            params.not_after = to_offset(now + CA_VALIDITY)?;
            let cert = params.self_signed(&key)?;
            // The key first: a crash in between leaves a key nobody trusts yet (an error on the
            // next start, naming it), never a trusted certificate without its key.
            write_new(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
            write_new(&cert_path, cert.pem().as_bytes(), 0o644)?;
            Ok(CaStatus::Created)
        }
    }
}

/// Issue the proxy's client certificate when `proxy-current.pem` is missing, unreadable, not
/// issued by the CA in `dir`, or valid for less than `renew_before` after `now`; keep it otherwise.
///
/// A new certificate is valid from `now` (less a few minutes) for `validity`, written to
/// `proxy-<stamp>.pem` (0600), and `proxy-current.pem` is swapped to it atomically. Stamped files
/// other than the new one and the one it replaces are removed. The CA must exist
/// ([`ensure_ca`]).
pub fn ensure_proxy_cert(
    dir: &Path,
    now: SystemTime,
    validity: Duration,
    renew_before: Duration,
) -> Result<ProxyCertStatus, PkiError> {
    let ca = load_ca(dir)?;
    let current = dir.join(PROXY_CURRENT);
    let previous = std::fs::read_link(&current).ok().map(|t| dir.join(t));
    if let Some(not_after) = usable_proxy_cert(&ca, &current, now)? {
        let left = not_after.duration_since(now).unwrap_or_default();
        if left >= renew_before {
            let file = previous.unwrap_or(current);
            return Ok(ProxyCertStatus::Kept { file, not_after });
        }
    }

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, PROXY_CN);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = to_offset(now.checked_sub(BACKDATE).unwrap_or(now))?;
    let not_after = now + validity;
    params.not_after = to_offset(not_after)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, &ca.key)?;
    let cert = params.signed_by(&key, &issuer)?;
    let pem = format!("{}{}", cert.pem(), key.serialize_pem());

    let file = free_stamped_name(dir, now)?;
    write_new(&file, pem.as_bytes(), 0o600)?;
    swap_symlink(dir, &file)?;
    prune(dir, &file, previous.as_deref())?;
    // The certificate carries whole seconds.
    let not_after = SystemTime::UNIX_EPOCH
        + Duration::from_secs(
            not_after
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
        );
    Ok(ProxyCertStatus::Renewed { file, not_after })
}

/// The CA certificate's path in `dir`.
pub fn ca_cert_path(dir: &Path) -> PathBuf {
    dir.join(CA_CERT)
}

/// The path of the proxy's current certificate (the symlink) in `dir`.
pub fn proxy_current_path(dir: &Path) -> PathBuf {
    dir.join(PROXY_CURRENT)
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_CN);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn load_ca(dir: &Path) -> Result<Ca, PkiError> {
    let cert_path = dir.join(CA_CERT);
    let key_path = dir.join(CA_KEY);
    if !exists(&cert_path)? && !exists(&key_path)? {
        return Err(PkiError::NoCa(dir.to_path_buf()));
    }
    let corrupt = |path: &Path, reason: String| PkiError::CorruptCa {
        path: path.to_path_buf(),
        reason,
    };
    let cert_pem = std::fs::read_to_string(&cert_path).map_err(io_err(&cert_path))?;
    let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|e| corrupt(&cert_path, format!("no PEM certificate ({e})")))?;
    let cert = x509_cert::Certificate::from_der(&cert_der)
        .map_err(|e| corrupt(&cert_path, format!("not an X.509 certificate ({e})")))?;
    let key_pem = std::fs::read_to_string(&key_path).map_err(io_err(&key_path))?;
    let key = KeyPair::from_pem(&key_pem)
        .map_err(|e| corrupt(&key_path, format!("not a private key ({e})")))?;
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes();
    if spki != key.public_key_raw() {
        return Err(corrupt(
            &key_path,
            format!("not the key of {}", cert_path.display()),
        ));
    }
    Ok(Ca {
        cert_pem,
        cert_der,
        key,
    })
}

/// The `notAfter` of the certificate in `path` when it is readable, holds its key, and is valid
/// at `now` for the CA; `None` when it must be replaced.
fn usable_proxy_cert(
    ca: &Ca,
    path: &Path,
    now: SystemTime,
) -> Result<Option<SystemTime>, PkiError> {
    let pem = match std::fs::read(path) {
        Ok(pem) => pem,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path)(e)),
    };
    let Ok(der) = CertificateDer::from_pem_slice(&pem) else {
        return Ok(None);
    };
    let Ok(key_der) = PrivateKeyDer::from_pem_slice(&pem) else {
        return Ok(None);
    };
    let Ok(key) = KeyPair::try_from(&key_der) else {
        return Ok(None);
    };
    let Ok(cert) = x509_cert::Certificate::from_der(&der) else {
        return Ok(None);
    };
    if cert
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes()
        != key.public_key_raw()
    {
        return Ok(None);
    }
    if !chains_to(&ca.cert_der, &der, now) {
        return Ok(None);
    }
    Ok(Some(
        SystemTime::UNIX_EPOCH + cert.tbs_certificate.validity.not_after.to_unix_duration(),
    ))
}

/// Whether `cert` is a client certificate issued by `ca` and valid at `now` (webpki's checks, as
/// a TLS server trusting `ca` makes them).
pub fn chains_to(ca: &CertificateDer<'_>, cert: &CertificateDer<'_>, now: SystemTime) -> bool {
    let mut roots = rustls::RootCertStore::empty();
    if roots.add(ca.clone().into_owned()).is_err() {
        return false;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let Ok(verifier) =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
    else {
        return false;
    };
    let since = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    verifier
        .verify_client_cert(cert, &[], UnixTime::since_unix_epoch(since))
        .is_ok()
}

fn to_offset(t: SystemTime) -> Result<time::OffsetDateTime, PkiError> {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|_| PkiError::Time(t))?
        .as_secs();
    let secs = i64::try_from(secs).map_err(|_| PkiError::Time(t))?;
    time::OffsetDateTime::from_unix_timestamp(secs).map_err(|_| PkiError::Time(t))
}

fn exists(path: &Path) -> Result<bool, PkiError> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err(path)(e)),
    }
}

fn make_private_dir(dir: &Path) -> Result<(), PkiError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io_err(dir))
}

/// Write a file that must not exist yet: a temporary file with `mode`, synced, then linked to
/// its name (which fails when the name exists, so nothing is ever overwritten).
fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    let tmp = tmp_name(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    let written = f
        .write_all(contents)
        .and_then(|()| f.sync_all())
        .map_err(io_err(&tmp));
    let linked = written.and_then(|()| std::fs::hard_link(&tmp, path).map_err(io_err(path)));
    let removed = std::fs::remove_file(&tmp).map_err(io_err(&tmp));
    linked.and(removed)
}

fn tmp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp{}", std::process::id()))
}

/// `proxy-YYYY-MM-DD-HH-MM-SS.pem` for `now`, with a `.N` suffix before `.pem` when taken.
fn free_stamped_name(dir: &Path, now: SystemTime) -> Result<PathBuf, PkiError> {
    let t = to_offset(now)?;
    let stamp = format!(
        "{:04}-{:02}-{:02}-{:02}-{:02}-{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    let mut path = dir.join(format!("proxy-{stamp}.pem"));
    let mut n = 1u32;
    while exists(&path)? {
        path = dir.join(format!("proxy-{stamp}.{n}.pem"));
        n = n.saturating_add(1);
    }
    Ok(path)
}

/// Point `proxy-current.pem` at `target` atomically: a new symlink, then a rename over the old.
fn swap_symlink(dir: &Path, target: &Path) -> Result<(), PkiError> {
    let link = dir.join(PROXY_CURRENT);
    let tmp = tmp_name(&link);
    let _ = std::fs::remove_file(&tmp);
    // A relative target: the directory is mounted at different paths on the host and in pods.
    let relative = target.file_name().map(PathBuf::from).unwrap_or_default();
    std::os::unix::fs::symlink(&relative, &tmp).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, &link).map_err(io_err(&link))
}

/// Remove stamped `proxy-*.pem` files other than `keep` and `previous`.
fn prune(dir: &Path, keep: &Path, previous: Option<&Path>) -> Result<(), PkiError> {
    let entries = std::fs::read_dir(dir).map_err(io_err(dir))?;
    for entry in entries {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !name.starts_with("proxy-") || !name.ends_with(".pem") || name == PROXY_CURRENT {
            continue;
        }
        let path = entry.path();
        if path == keep || Some(path.as_path()) == previous {
            continue;
        }
        std::fs::remove_file(&path).map_err(io_err(&path))?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn cert_der(path: &Path) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    fn stamped(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("proxy-") && n != PROXY_CURRENT)
            .collect();
        names.sort();
        names
    }

    #[test]
    fn first_start_makes_both_and_second_start_keeps_both() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pki");
        let now = SystemTime::now();
        assert_eq!(ensure_ca(&dir).unwrap(), CaStatus::Created);
        let first = ensure_proxy_cert(&dir, now, DEFAULT_VALIDITY, DEFAULT_RENEW_BEFORE).unwrap();
        let ProxyCertStatus::Renewed { file, not_after } = first else {
            panic!("first start issues: {first:?}");
        };
        assert!(file.exists());
        assert!(not_after > now + DEFAULT_VALIDITY - Duration::from_secs(2));

        let ca_before = std::fs::read(dir.join(CA_CERT)).unwrap();
        let key_before = std::fs::read(dir.join(CA_KEY)).unwrap();
        assert_eq!(ensure_ca(&dir).unwrap(), CaStatus::Kept);
        let again =
            ensure_proxy_cert(&dir, now + DAY, DEFAULT_VALIDITY, DEFAULT_RENEW_BEFORE).unwrap();
        assert_eq!(again, ProxyCertStatus::Kept { file, not_after });
        assert_eq!(std::fs::read(dir.join(CA_CERT)).unwrap(), ca_before);
        assert_eq!(std::fs::read(dir.join(CA_KEY)).unwrap(), key_before);
        assert_eq!(stamped(&dir).len(), 1);
    }

    #[test]
    fn permissions_are_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pki");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        ensure_ca(&dir).unwrap();
        ensure_proxy_cert(
            &dir,
            SystemTime::now(),
            DEFAULT_VALIDITY,
            DEFAULT_RENEW_BEFORE,
        )
        .unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(CA_KEY)), 0o600);
        assert_eq!(mode(&dir.join(PROXY_CURRENT)), 0o600);
        let link = std::fs::symlink_metadata(dir.join(PROXY_CURRENT)).unwrap();
        assert!(link.file_type().is_symlink());
        // No temporary file is left behind.
        for e in std::fs::read_dir(&dir).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(!name.starts_with('.'), "left over: {name}");
        }
    }

    #[test]
    fn renewal_swaps_the_symlink_to_a_certificate_of_the_same_ca() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        ensure_ca(dir).unwrap();
        let t0 = SystemTime::now();
        let ProxyCertStatus::Renewed { file: first, .. } =
            ensure_proxy_cert(dir, t0, DEFAULT_VALIDITY, DEFAULT_RENEW_BEFORE).unwrap()
        else {
            panic!("first issue");
        };
        // 21 days later fewer than 10 days are left: renewed.
        let t1 = t0 + 21 * DAY;
        let renewed = ensure_proxy_cert(dir, t1, DEFAULT_VALIDITY, DEFAULT_RENEW_BEFORE).unwrap();
        let ProxyCertStatus::Renewed { file: second, .. } = renewed else {
            panic!("due for renewal: {renewed:?}");
        };
        assert_ne!(first, second);
        assert_eq!(
            std::fs::read_link(dir.join(PROXY_CURRENT)).unwrap(),
            PathBuf::from(second.file_name().unwrap())
        );
        let ca = cert_der(&dir.join(CA_CERT));
        let current = cert_der(&dir.join(PROXY_CURRENT));
        assert_eq!(current, cert_der(&second));
        assert!(chains_to(&ca, &current, t1));
        // The old one still chains (it stays until the next renewal) but is not current.
        assert!(chains_to(&ca, &cert_der(&first), t1));
        assert_ne!(cert_der(&first), current);
        // The subject is the proxy's.
        let parsed = x509_cert::Certificate::from_der(&current).unwrap();
        assert_eq!(
            parsed.tbs_certificate.subject.to_string(),
            format!("CN={PROXY_CN}")
        );

        // A third renewal prunes the first file and keeps the previous one.
        let t2 = t1 + 21 * DAY;
        let ProxyCertStatus::Renewed { file: third, .. } =
            ensure_proxy_cert(dir, t2, DEFAULT_VALIDITY, DEFAULT_RENEW_BEFORE).unwrap()
        else {
            panic!("third issue");
        };
        let names = stamped(dir);
        let mut want = vec![
            second.file_name().unwrap().to_string_lossy().into_owned(),
            third.file_name().unwrap().to_string_lossy().into_owned(),
        ];
        want.sort();
        assert_eq!(names, want);
    }

    #[test]
    fn an_expired_or_foreign_certificate_is_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        ensure_ca(dir).unwrap();
        let t0 = SystemTime::now();
        ensure_proxy_cert(dir, t0, DEFAULT_VALIDITY, DEFAULT_RENEW_BEFORE).unwrap();
        // Expired (renew margin 0, 31 days later).
        let later = t0 + 31 * DAY;
        assert!(matches!(
            ensure_proxy_cert(dir, later, DEFAULT_VALIDITY, Duration::ZERO).unwrap(),
            ProxyCertStatus::Renewed { .. }
        ));
        // Issued by another CA.
        let other = tempfile::tempdir().unwrap();
        ensure_ca(other.path()).unwrap();
        ensure_proxy_cert(other.path(), later, DEFAULT_VALIDITY, DEFAULT_RENEW_BEFORE).unwrap();
        let foreign = std::fs::read(other.path().join(PROXY_CURRENT)).unwrap();
        std::fs::remove_file(dir.join(PROXY_CURRENT)).unwrap();
        std::fs::write(dir.join(PROXY_CURRENT), foreign).unwrap();
        let status = ensure_proxy_cert(dir, later, DEFAULT_VALIDITY, DEFAULT_RENEW_BEFORE).unwrap();
        assert!(
            matches!(status, ProxyCertStatus::Renewed { .. }),
            "{status:?}"
        );
        let ca = cert_der(&dir.join(CA_CERT));
        assert!(chains_to(&ca, &cert_der(&dir.join(PROXY_CURRENT)), later));
        assert!(!chains_to(
            &cert_der(&other.path().join(CA_CERT)),
            &cert_der(&dir.join(PROXY_CURRENT)),
            later
        ));
    }

    #[test]
    fn a_corrupt_ca_file_is_an_error_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        ensure_ca(dir).unwrap();
        let key = std::fs::read(dir.join(CA_KEY)).unwrap();
        std::fs::write(dir.join(CA_CERT), "garbage").unwrap();
        let err = ensure_ca(dir).unwrap_err();
        assert!(matches!(err, PkiError::CorruptCa { ref path, .. } if path == &dir.join(CA_CERT)));
        assert!(err.to_string().contains("ca.crt"), "{err}");
        // Not replaced.
        assert_eq!(std::fs::read(dir.join(CA_CERT)).unwrap(), b"garbage");
        assert_eq!(std::fs::read(dir.join(CA_KEY)).unwrap(), key);
        let err = ensure_proxy_cert(
            dir,
            SystemTime::now(),
            DEFAULT_VALIDITY,
            DEFAULT_RENEW_BEFORE,
        )
        .unwrap_err();
        assert!(err.to_string().contains("ca.crt"), "{err}");
    }

    #[test]
    fn a_key_of_another_ca_is_an_error_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        ensure_ca(tmp.path()).unwrap();
        ensure_ca(other.path()).unwrap();
        std::fs::copy(other.path().join(CA_KEY), tmp.path().join(CA_KEY)).unwrap();
        let err = ensure_ca(tmp.path()).unwrap_err();
        assert!(
            matches!(err, PkiError::CorruptCa { ref path, .. } if path == &tmp.path().join(CA_KEY)),
            "{err}"
        );
    }

    #[test]
    fn half_a_ca_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        ensure_ca(tmp.path()).unwrap();
        std::fs::remove_file(tmp.path().join(CA_KEY)).unwrap();
        let err = ensure_ca(tmp.path()).unwrap_err();
        assert!(matches!(err, PkiError::HalfCa { .. }), "{err}");
        assert!(!tmp.path().join(CA_KEY).exists());
    }

    #[test]
    fn proxy_cert_needs_the_ca() {
        let tmp = tempfile::tempdir().unwrap();
        let err = ensure_proxy_cert(
            tmp.path(),
            SystemTime::now(),
            DEFAULT_VALIDITY,
            DEFAULT_RENEW_BEFORE,
        )
        .unwrap_err();
        assert!(matches!(err, PkiError::NoCa(_)), "{err}");
    }
}
