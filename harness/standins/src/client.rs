//! A minimal HTTPS client for tests that talk to the stand-ins (or to Envoy in front of them):
//! one request per connection, HTTP/1.1, the server verified against a CA file, optionally a
//! client certificate; plus a WebSocket connect for the `/exec` echo.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::pki::CertPaths;
use super::StandinError;

/// A response: status, headers (lower-case names, in order) and body.
#[derive(Debug, Clone)]
pub struct ClientResponse {
    /// HTTP status.
    pub status: u16,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Bytes,
}

impl ClientResponse {
    /// The body parsed as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Why a client request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting, TLS or I/O failed.
    #[error("connect: {0}")]
    Io(#[from] std::io::Error),
    /// The HTTP exchange failed (e.g. the server closed the connection).
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    /// The request could not be built.
    #[error("request: {0}")]
    Request(String),
    /// No answer within the timeout.
    #[error("timed out")]
    Timeout,
    /// The WebSocket handshake failed.
    #[error("websocket: {0}")]
    WebSocket(String),
}

/// A test client trusting one CA.
#[derive(Clone)]
pub struct Client {
    config: Arc<ClientConfig>,
    timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("timeout", &self.timeout)
            .finish()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StandinError + '_ {
    move |source| StandinError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Client {
    /// Trust `ca`; present `client` when given. Requests time out after 10 s.
    pub fn new(ca: &Path, client: Option<&CertPaths>) -> Result<Client, StandinError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        let ca_pem = std::fs::read(ca).map_err(io(ca))?;
        for c in rustls_pemfile::certs(&mut ca_pem.as_slice()) {
            roots.add(c.map_err(io(ca))?)?;
        }
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let mut config = match client {
            Some(paths) => {
                let cert_pem = std::fs::read(&paths.cert).map_err(io(&paths.cert))?;
                let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(io(&paths.cert))?;
                let key_pem = std::fs::read(&paths.key).map_err(io(&paths.key))?;
                let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
                    .map_err(io(&paths.key))?
                    .ok_or_else(|| StandinError::Config("client key: no private key".into()))?;
                builder.with_client_auth_cert(certs, key)?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Client {
            config: Arc::new(config),
            timeout: Duration::from_secs(10),
        })
    }

    /// The same client with another timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    async fn connect(&self, url: &str) -> Result<(TlsStream<TcpStream>, String), ClientError> {
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| ClientError::Request(format!("{url}: {e}")))?;
        let host = uri
            .host()
            .ok_or_else(|| ClientError::Request(format!("{url}: no host")))?
            .trim_matches(|c| c == '[' || c == ']')
            .to_string();
        let port = uri.port_u16().unwrap_or(443);
        let tcp = TcpStream::connect((host.as_str(), port)).await?;
        let name = ServerName::try_from(host.clone())
            .map_err(|e| ClientError::Request(format!("{host}: {e}")))?;
        let tls = tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(name, tcp)
            .await?;
        let authority = uri.authority().map(ToString::to_string).unwrap_or_default();
        Ok((tls, authority))
    }

    /// Send one request (`url` is absolute: `https://127.0.0.1:PORT/path?query`).
    pub async fn request(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<ClientResponse, ClientError> {
        let body = body.into();
        let work = async {
            let (tls, authority) = self.connect(url).await?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
            let mut conn_task = tokio::spawn(conn);
            let uri: hyper::Uri = url
                .parse()
                .map_err(|e| ClientError::Request(format!("{url}: {e}")))?;
            let path = uri
                .path_and_query()
                .map_or("/", |pq| pq.as_str())
                .to_string();
            let mut builder = Request::builder()
                .method(method)
                .uri(path)
                .header("host", authority);
            for (n, v) in headers {
                builder = builder.header(*n, *v);
            }
            let req = builder
                .body(Full::new(body))
                .map_err(|e| ClientError::Request(e.to_string()))?;
            // hyper's `send_request` can miss the end of a connection that fails while the
            // request is handed over (a server that refuses the TLS client certificate with an
            // alert just after the handshake): it then never resolves. So the connection's own
            // end answers too. An answer that came is delivered before the connection ends, and
            // `biased` polls it first.
            let send = sender.send_request(req);
            tokio::pin!(send);
            let resp = tokio::select! {
                biased;
                resp = &mut send => resp?,
                ended = &mut conn_task => {
                    return Err(match ended {
                        Ok(Err(e)) => ClientError::Http(e),
                        _ => ClientError::Io(std::io::Error::new(
                            std::io::ErrorKind::ConnectionAborted,
                            "the connection closed before an answer",
                        )),
                    });
                }
            };
            let status = resp.status().as_u16();
            let headers = resp
                .headers()
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let body = resp.into_body().collect().await?.to_bytes();
            conn_task.abort();
            Ok(ClientResponse {
                status,
                headers,
                body,
            })
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| ClientError::Timeout)?
    }

    /// `GET url`.
    pub async fn get(
        &self,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<ClientResponse, ClientError> {
        self.request("GET", url, headers, Bytes::new()).await
    }

    /// `POST url` with a JSON body.
    pub async fn post_json(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: &serde_json::Value,
    ) -> Result<ClientResponse, ClientError> {
        let mut h = vec![("content-type", "application/json")];
        h.extend_from_slice(headers);
        self.request("POST", url, &h, body.to_string()).await
    }

    /// Open a WebSocket (`url` is `https://...`; the handshake runs over TLS). `headers` are
    /// added to the handshake request (e.g. `Sec-WebSocket-Protocol`).
    pub async fn websocket(
        &self,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<
        (
            tokio_tungstenite::WebSocketStream<TlsStream<TcpStream>>,
            ClientResponse,
        ),
        ClientError,
    > {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
        let (tls, _authority) = self.connect(url).await?;
        let ws_url = url.replacen("https://", "wss://", 1);
        let mut req = ws_url
            .into_client_request()
            .map_err(|e| ClientError::WebSocket(e.to_string()))?;
        for (n, v) in headers {
            let name = hyper::header::HeaderName::from_bytes(n.as_bytes())
                .map_err(|e| ClientError::WebSocket(e.to_string()))?;
            let value = hyper::header::HeaderValue::from_str(v)
                .map_err(|e| ClientError::WebSocket(e.to_string()))?;
            req.headers_mut().append(name, value);
        }
        let (ws, resp) =
            tokio::time::timeout(self.timeout, tokio_tungstenite::client_async(req, tls))
                .await
                .map_err(|_| ClientError::Timeout)?
                .map_err(|e| ClientError::WebSocket(e.to_string()))?;
        let headers = resp
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        Ok((
            ws,
            ClientResponse {
                status: resp.status().as_u16(),
                headers,
                body: Bytes::new(),
            },
        ))
    }
}
