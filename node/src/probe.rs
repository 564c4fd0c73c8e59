//! Does the kubelet answer? A TLS handshake and `GET /healthz` on one address, optionally with
//! the proxy's client certificate, read with blocking `std` sockets (one request, no pool).
//!
//! The kubelet's serving certificate is not verified: this is a liveness probe on the node's own
//! addresses, and the kubelet's certificate is usually self-signed. What counts is whether the
//! kubelet completes the handshake and answers, and (with the proxy's certificate) whether it
//! authenticates it: `401 Unauthorized` means it does not trust the per-node CA.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// What a probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// The kubelet answered with this HTTP status.
    Answered(u16),
    /// No answer: connection refused, handshake refused, timeout... (the reason).
    Down(String),
}

impl Probe {
    /// Whether the kubelet answered and, when a client certificate was sent, accepted it (any
    /// status but 401: a 403 is the kubelet's authorizer speaking after authentication).
    pub fn authenticated(&self) -> bool {
        matches!(self, Probe::Answered(s) if *s != 401)
    }

    /// Whether the kubelet answered at all.
    pub fn answered(&self) -> bool {
        matches!(self, Probe::Answered(_))
    }
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Probe::Answered(s) => write!(f, "answered {s}"),
            Probe::Down(why) => write!(f, "no answer ({why})"),
        }
    }
}

/// Why the client certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct ClientCertError {
    /// The PEM file.
    pub path: std::path::PathBuf,
    /// What is wrong.
    pub reason: String,
}

/// A client certificate chain and key for the probe.
#[derive(Debug)]
pub struct ClientCert {
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl ClientCert {
    /// Read a PEM file holding the certificate chain and its key (e.g. `proxy-current.pem`).
    pub fn from_pem_file(path: &Path) -> Result<ClientCert, ClientCertError> {
        let err = |reason: String| ClientCertError {
            path: path.to_path_buf(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .map_err(|e| err(format!("certificate: {e}")))?;
        if certs.is_empty() {
            return Err(err("no certificate".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| err(format!("key: {e}")))?;
        Ok(ClientCert { certs, key })
    }

    /// A certificate file and a key file (PEM).
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<ClientCert, ClientCertError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|e| ClientCertError {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
        };
        let pem = read(cert)?;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .map_err(|e| ClientCertError {
                path: cert.to_path_buf(),
                reason: format!("certificate: {e}"),
            })?;
        let pem = read(key)?;
        let key_der = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| ClientCertError {
            path: key.to_path_buf(),
            reason: format!("key: {e}"),
        })?;
        Ok(ClientCert {
            certs,
            key: key_der,
        })
    }
}

/// `GET /healthz` on `addr` over TLS, with `cert` as the client certificate when given, each
/// step bounded by `timeout`.
pub fn healthz(addr: SocketAddr, cert: Option<&ClientCert>, timeout: Duration) -> Probe {
    match try_healthz(addr, cert, timeout) {
        Ok(p) => p,
        Err(why) => Probe::Down(why),
    }
}

fn try_healthz(
    addr: SocketAddr,
    cert: Option<&ClientCert>,
    timeout: Duration,
) -> Result<Probe, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)));
    let config = match cert {
        Some(c) => builder
            .with_client_auth_cert(c.certs.clone(), c.key.clone_key())
            .map_err(|e| format!("client certificate: {e}"))?,
        None => builder.with_no_client_auth(),
    };
    let name = ServerName::IpAddress(addr.ip().into());
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let sock = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    sock.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, sock);
    let host = match addr {
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) => format!("[{}]", a.ip()),
    };
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes())
        .map_err(|e| format!("TLS: {e}"))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.windows(2).any(|w| w == b"\r\n") {
        let n = tls.read(&mut buf).map_err(|e| format!("TLS: {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(buf.get(..n).unwrap_or_default());
        if head.len() > 4096 {
            break;
        }
    }
    let line = String::from_utf8_lossy(&head);
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("not an HTTP answer: {:?}", line.lines().next()))?;
    Ok(Probe::Answered(status))
}

/// Accepts any server certificate (see the module documentation); signatures are still checked.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The address to probe a kubelet bound to `address:port` on: a wildcard becomes loopback.
pub fn probe_addr(address: &str, port: u16) -> Option<SocketAddr> {
    let ip: std::net::IpAddr = match address {
        "" | "0.0.0.0" => std::net::Ipv4Addr::LOCALHOST.into(),
        "::" => std::net::Ipv6Addr::LOCALHOST.into(),
        "localhost" => std::net::Ipv4Addr::LOCALHOST.into(),
        a => a.parse().ok()?,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::wildcard("0.0.0.0", Some("127.0.0.1:10250"))]
    #[case::empty("", Some("127.0.0.1:10250"))]
    #[case::v6_wildcard("::", Some("[::1]:10250"))]
    #[case::localhost("localhost", Some("127.0.0.1:10250"))]
    #[case::node_ip("192.0.2.2", Some("192.0.2.2:10250"))]
    #[case::garbage("node-1", None)]
    fn probe_addresses(#[case] address: &str, #[case] want: Option<&str>) {
        let want = want.map(|w| w.parse::<SocketAddr>().unwrap());
        assert_eq!(probe_addr(address, 10250), want);
    }

    #[test]
    fn nothing_listening_is_down() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let p = healthz(addr, None, Duration::from_secs(2));
        assert!(matches!(p, Probe::Down(_)), "{p:?}");
        assert!(!p.answered());
    }
}
