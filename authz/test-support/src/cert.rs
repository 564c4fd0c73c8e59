//! Self-signed client certificates made with the `openssl` command, for the tests that present a
//! certificate as Envoy does (XFCC plus the verified peer digest). openssl rather than rcgen
//! because rcgen keeps one value per attribute type, and the kubelet reads every `O` and refuses
//! several UIDs, so tests need repeats. UIDs use OID 1.3.6.1.4.1.57683.2 (`asn1util.X509UID()`,
//! not the LDAP uid the reference names).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test support: a certificate that cannot be made fails the test at once"
)]

use std::sync::atomic::{AtomicU32, Ordering};

/// A certificate: PEM, DER and the hex SHA-256 of the DER (Envoy's XFCC `Hash` and peer digest).
pub struct Cert {
    /// The certificate, PEM.
    pub pem: String,
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// The hex SHA-256 of the DER.
    pub hash: String,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A self-signed certificate with subject `O=...` (each of `orgs`), `UID=...` (each of `uids`)
/// and `CN=cn` (left out when empty; an otherwise empty subject gets `L=nowhere`).
pub fn cert(cn: &str, orgs: &[&str], uids: &[&str]) -> Cert {
    let dir = std::env::temp_dir().join(format!(
        "kubelet-authz-test-cert-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let mut subj: String = orgs.iter().map(|o| format!("/O={o}")).collect();
    subj.extend(uids.iter().map(|u| format!("/k8sUID={u}")));
    if !cn.is_empty() {
        subj.push_str(&format!("/CN={cn}"));
    }
    if subj.is_empty() {
        subj.push_str("/L=nowhere");
    }
    let cnf = dir.join("openssl.cnf");
    std::fs::write(
        &cnf,
        "oid_section = oids\n[oids]\nk8sUID = 1.3.6.1.4.1.57683.2\n[req]\ndistinguished_name = dn\n[dn]\n",
    )
    .unwrap();
    let out = std::process::Command::new("openssl")
        .arg("req")
        .arg("-config")
        .arg(&cnf)
        .args([
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args([
            "-nodes",
            "-days",
            "1",
            "-multivalue-rdn",
            "-subj",
            subj.as_str(),
        ])
        .arg("-keyout")
        .arg(dir.join("k.pem"))
        .arg("-out")
        .arg(dir.join("c.pem"))
        .output()
        .expect("openssl must be installed (the test command installs it)");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pem = std::fs::read_to_string(dir.join("c.pem")).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    let der = kubelet_authz::identity::x509::pem_to_der(&pem).unwrap();
    let hash = kubelet_authz::identity::x509::sha256_hex(&der);
    Cert { pem, der, hash }
}
