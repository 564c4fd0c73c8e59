//! Raw HTTP/1.1 over TLS: a request head written byte for byte (request targets, methods and
//! header bytes no HTTP client would send) on a new connection to an Envoy, and the whole
//! response read back. Used by the case corpus (`tests/tests/cases.rs`) and the path-confusion
//! corpus (`tests/tests/hardening_paths.rs`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::stack::Standins;

/// A raw response: the status and the body (de-chunked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawResponse {
    /// The status code.
    pub status: u16,
    /// The body, lossily decoded.
    pub body: String,
}

/// A TLS client configuration trusting the stand-ins' CA, presenting the stand-ins' client
/// certificate `cert` when given, offering HTTP/1.1 only.
pub fn tls_config(s: &Standins, cert: Option<&str>) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(&s.ca).context("the CA")?;
    for c in rustls_pemfile::certs(&mut ca.as_slice()) {
        roots.add(c?)?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match cert {
        Some(name) => {
            let paths = s.cert(name);
            let pem = std::fs::read(&paths.cert).context("the client certificate")?;
            let certs =
                rustls_pemfile::certs(&mut pem.as_slice()).collect::<Result<Vec<_>, _>>()?;
            let key = std::fs::read(&paths.key).context("the client key")?;
            let key = rustls_pemfile::private_key(&mut key.as_slice())?
                .context("no private key in the key file")?;
            builder.with_client_auth_cert(certs, key)?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Send `head` (request line and headers, without the final blank line; `Connection: close` is
/// added) over a new TLS connection to `addr` and read the whole response (within 20 s): up to the
/// end of its body (`Content-Length`, the last chunk, no body for `HEAD`), or to the end of the
/// connection when neither says (Envoy waits for the client to close first).
pub async fn send(
    config: &Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    head: &[u8],
) -> anyhow::Result<RawResponse> {
    let work = async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?;
        let mut tls = tokio_rustls::TlsConnector::from(config.clone())
            .connect(name, tcp)
            .await?;
        let mut req = head.to_vec();
        req.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
        tls.write_all(&req).await?;
        let head_only = head.starts_with(b"HEAD ");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            // Envoy may reset after a protocol error; keep what arrived.
            let n = tls.read(&mut chunk).await.unwrap_or(0);
            let Some(got) = chunk.get(..n).filter(|g| !g.is_empty()) else {
                break;
            };
            buf.extend_from_slice(got);
            if complete(&buf, head_only) {
                break;
            }
        }
        anyhow::Ok(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(20), work)
        .await
        .context("raw request timed out")??;
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .with_context(|| format!("no response head in {:?}", String::from_utf8_lossy(&buf)))?;
    let (head, rest) = buf.split_at(split);
    let head = String::from_utf8_lossy(head).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status in {head:?}"))?;
    let chunked = is_chunked(&head);
    let body = rest.get(4..).unwrap_or_default();
    let body = if chunked {
        kubelet_authz_test_support::encode::dechunk(body)
    } else {
        body.to_vec()
    };
    Ok(RawResponse {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn is_chunked(head: &str) -> bool {
    head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    })
}

/// Whether `buf` holds a whole response.
fn complete(buf: &[u8], head_only: bool) -> bool {
    let Some(split) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let (head, rest) = buf.split_at(split);
    let head = String::from_utf8_lossy(head);
    let body = rest.get(4..).unwrap_or_default();
    let status = head.split_whitespace().nth(1).unwrap_or_default();
    if head_only || status.starts_with('1') || status == "204" || status == "304" {
        return true;
    }
    if is_chunked(&head) {
        return body.ends_with(b"0\r\n\r\n");
    }
    let length = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())
            .flatten()
    });
    length.is_some_and(|n| body.len() >= n)
}
