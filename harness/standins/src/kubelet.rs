//! The stand-in kubelet: an HTTPS upstream on loopback that answers every path with a small JSON
//! echo of what it received, so tests see what the proxy forwarded and what it stripped:
//!
//! ```json
//! {"path": "/stats/summary?x=1", "method": "GET", "headers": {"authorization": "Bearer t"},
//!  "clientCert": {"commonName": "proxy", "organizations": [], "uid": null, "sha256": "ab.."},
//!  "bodyLength": 0}
//! ```
//!
//! `headers` holds every request header (lower-case names, repeated headers joined with `, `);
//! `clientCert` is `null` when the client sent none; otherwise it is the user the engine's x509
//! conversion reads from it (`kubelet_authz::identity::x509::user_from_der`, newest version), or
//! `{"error": .., "sha256": ..}` when that conversion refuses the certificate. Client certificates
//! are verified against `client_ca` when one is configured (optionally required).
//!
//! Upgrades: a WebSocket `GET` on `/exec/`, `/attach/` or `/portForward/` completes the handshake
//! (answering the first offered subprotocol that is not a bearer-token subprotocol) and echoes
//! every text and binary message; a request with `Connection: Upgrade` and `Upgrade: SPDY/3.1`
//! gets `101 Switching Protocols` (echoing the first `X-Stream-Protocol-Version`) and is then
//! closed. `GET`/`DELETE /_standin/records` reads or clears the echoes (every request, upgrades
//! included).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::{SinkExt as _, StreamExt as _};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use kubelet_authz::identity::x509;
use kubelet_authz::kubelet::KubeletVersion;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::{Message, Role};
use tokio_tungstenite::WebSocketStream;

use super::pki::{CertPaths, Pki};
use super::serve::{self, Body, CloseConnection, ConnInfo, Handler, HandlerFuture, HandlerResult};
use super::StandinError;

/// The WebSocket subprotocol prefix that carries a bearer token (never chosen by the stand-in).
const TOKEN_PROTOCOL_PREFIX: &str = kubelet_authz::identity::WEBSOCKET_TOKEN_PREFIX;

/// How to start the stand-in kubelet.
#[derive(Debug, Clone)]
pub struct KubeletConfig {
    /// Listen address; port 0 picks a free one.
    pub listen: SocketAddr,
    /// The PKI directory (created or reused); its `server.crt` is the serving certificate.
    pub pki_dir: PathBuf,
    /// Verify client certificates against this CA (e.g. the PKI's `ca.crt`).
    pub client_ca: Option<PathBuf>,
    /// Refuse TLS clients without a certificate (needs `client_ca`).
    pub require_client_cert: bool,
}

impl KubeletConfig {
    /// Listen on `127.0.0.1:0` with the PKI in `pki_dir`, no client-certificate verification.
    pub fn new(pki_dir: impl Into<PathBuf>) -> Self {
        KubeletConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            pki_dir: pki_dir.into(),
            client_ca: None,
            require_client_cert: false,
        }
    }

    /// The configuration a kubelet reads from its files: `config` (its `--config`) and the `*.conf`
    /// drop-ins of `config_dir` (its `--config-dir`), merged by the engine
    /// ([`kubelet_authz::kubeletconfig::effective_config`]). It listens on `address:port`, verifies
    /// client certificates against `authentication.x509.clientCAFile` (which must exist: the kubelet
    /// exits otherwise), and requires one when neither webhook token authentication nor anonymous
    /// requests are on (nothing else could authenticate a request).
    pub fn from_files(
        pki_dir: &Path,
        config: &Path,
        config_dir: Option<&Path>,
    ) -> Result<Self, StandinError> {
        use kubelet_authz::kubeletconfig::{dropin_names, effective_config, Source};
        let read = |path: &Path| {
            std::fs::read_to_string(path)
                .map(|text| Source::new(path.display().to_string(), text))
                .map_err(|source| StandinError::Io {
                    path: path.to_path_buf(),
                    source,
                })
        };
        let base = read(config)?;
        let mut dropins = Vec::new();
        if let Some(dir) = config_dir {
            let mut names = Vec::new();
            walk(dir, "", &mut names)?;
            for name in dropin_names(names) {
                dropins.push(read(&dir.join(name))?);
            }
        }
        let eff = effective_config(&base, &dropins)
            .map_err(|e| StandinError::Config(format!("{}: {e}", config.display())))?;
        let ip: std::net::IpAddr = match eff.address.as_str() {
            "localhost" => std::net::Ipv4Addr::LOCALHOST.into(),
            a => a
                .parse()
                .map_err(|_| StandinError::Config(format!("address {a:?}: not an IP address")))?,
        };
        let s = &eff.settings;
        let client_ca =
            (!s.client_ca_file.value.is_empty()).then(|| PathBuf::from(&s.client_ca_file.value));
        if let Some(ca) = &client_ca {
            if !ca.is_file() {
                return Err(StandinError::Config(format!(
                    "unable to load client CA file {}: open {}: no such file or directory",
                    ca.display(),
                    ca.display()
                )));
            }
        }
        let require =
            client_ca.is_some() && !s.webhook_authentication.value && !s.anonymous_auth.value;
        Ok(KubeletConfig {
            listen: SocketAddr::new(ip, eff.port),
            pki_dir: pki_dir.to_path_buf(),
            client_ca,
            require_client_cert: require,
        })
    }

    /// Verify client certificates against `ca`, requiring one when `require` is set.
    pub fn client_ca(mut self, ca: &Path, require: bool) -> Self {
        self.client_ca = Some(ca.to_path_buf());
        self.require_client_cert = require;
        self
    }
}

/// Every non-directory entry under `dir`, `/`-separated and relative to it (Go's `WalkDir`).
fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) -> Result<(), StandinError> {
    let io = |source| StandinError::Io {
        path: dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        if entry.file_type().map_err(io)?.is_dir() {
            walk(&entry.path(), &rel, out)?;
        } else {
            out.push(rel);
        }
    }
    Ok(())
}

#[derive(Debug, Default)]
struct State {
    records: Mutex<Vec<Value>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A running stand-in kubelet. Dropping it stops it; [`Kubelet::shutdown`] waits for that.
#[derive(Debug)]
pub struct Kubelet {
    handle: serve::ServerHandle,
    state: Arc<State>,
    ca_cert: PathBuf,
    server_cert: CertPaths,
}

impl Kubelet {
    /// Open the PKI and start serving.
    pub async fn start(config: KubeletConfig) -> Result<Kubelet, StandinError> {
        if config.require_client_cert && config.client_ca.is_none() {
            return Err(StandinError::Config(
                "requiring a client certificate needs a client CA".into(),
            ));
        }
        let dir = config.pki_dir.clone();
        let pki = tokio::task::spawn_blocking(move || Pki::open(&dir))
            .await
            .map_err(|e| StandinError::Config(format!("pki task: {e}")))??;
        let server_cert = pki.server();
        let tls = serve::tls_config(
            &server_cert.cert,
            &server_cert.key,
            config.client_ca.as_deref(),
            config.require_client_cert,
        )?;
        let state = Arc::new(State::default());
        let handle = serve::spawn(config.listen, tls, state.clone()).await?;
        Ok(Kubelet {
            handle,
            state,
            ca_cert: pki.ca_cert(),
            server_cert,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.handle.addr()
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr())
    }

    /// The CA certificate that verifies the kubelet's serving certificate.
    pub fn ca_cert(&self) -> &Path {
        &self.ca_cert
    }

    /// The echo of every request received, oldest first.
    pub fn records(&self) -> Vec<Value> {
        lock(&self.state.records).clone()
    }

    /// Forget the records.
    pub fn clear_records(&self) {
        lock(&self.state.records).clear();
    }

    /// The line the binary prints when ready.
    pub fn ready_info(&self) -> Value {
        json!({
            "url": self.url(),
            "port": self.addr().port(),
            "ca": self.ca_cert,
            "serverCert": self.server_cert.cert,
            "serverKey": self.server_cert.key,
        })
    }

    /// Stop serving and wait until every connection is closed.
    pub async fn shutdown(mut self) {
        self.handle.shutdown().await;
    }
}

impl Handler for State {
    fn handle(self: Arc<Self>, req: Request<Incoming>, conn: ConnInfo) -> HandlerFuture {
        Box::pin(async move { self.route(req, conn).await })
    }
}

fn header_map_json(headers: &HeaderMap) -> Value {
    let mut out = serde_json::Map::new();
    for name in headers.keys() {
        let joined: Vec<String> = headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        out.insert(name.as_str().to_string(), json!(joined.join(", ")));
    }
    Value::Object(out)
}

/// Whether a comma-separated header contains `token` (case-insensitive).
fn has_token(headers: &HeaderMap, name: &str, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

fn list_values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn upgrade_path(path: &str) -> bool {
    ["/exec/", "/attach/", "/portForward/"]
        .iter()
        .any(|p| path.starts_with(p))
}

/// The client certificate as the kubelet reads it: the engine's x509 conversion at the newest
/// version (`commonName` is the user, `organizations` the groups, `uid` null when absent), or the
/// conversion's error.
fn client_cert_json(der: &[u8]) -> Value {
    let sha256 = x509::sha256_hex(der);
    match x509::user_from_der(der, KubeletVersion::LATEST) {
        Ok(user) => {
            let user = user.unwrap_or_default();
            json!({
                "commonName": user.name,
                "organizations": user.groups,
                "uid": (!user.uid.is_empty()).then_some(user.uid),
                "sha256": sha256,
            })
        }
        Err(e) => json!({"error": e.to_string(), "sha256": sha256}),
    }
}

impl State {
    async fn route(self: Arc<Self>, mut req: Request<Incoming>, conn: ConnInfo) -> HandlerResult {
        let path = req.uri().path().to_string();
        if path == "/_standin/records" {
            return Ok(match *req.method() {
                Method::GET => serve::json(200, &json!(*lock(&self.records))),
                Method::DELETE => {
                    lock(&self.records).clear();
                    serve::json(200, &json!({}))
                }
                _ => serve::json(405, &json!({"error": "method not allowed"})),
            });
        }
        let full_path = req
            .uri()
            .path_and_query()
            .map_or_else(|| path.clone(), |pq| pq.as_str().to_string());
        let client_cert = conn.peer_cert.as_deref().map(client_cert_json);
        let headers = req.headers().clone();
        let connection_upgrade = has_token(&headers, "connection", "upgrade");
        let websocket = connection_upgrade
            && has_token(&headers, "upgrade", "websocket")
            && req.method() == Method::GET
            && upgrade_path(&path);
        let spdy = connection_upgrade && has_token(&headers, "upgrade", "SPDY/3.1");
        let on_upgrade = (websocket || spdy).then(|| hyper::upgrade::on(&mut req));
        let method = req.method().to_string();
        let body_len = match req.into_body().collect().await {
            Ok(c) => c.to_bytes().len(),
            Err(_) => return Err(CloseConnection),
        };
        let echo = json!({
            "path": full_path,
            "method": method,
            "headers": header_map_json(&headers),
            "clientCert": client_cert,
            "bodyLength": body_len,
        });
        lock(&self.records).push(echo.clone());

        match on_upgrade {
            Some(on_upgrade) if websocket => Ok(websocket_accept(&headers, on_upgrade, conn)),
            Some(on_upgrade) => Ok(spdy_accept(&headers, on_upgrade)),
            None if method == "GET" && follows_logs(&full_path) => Ok(follow_logs(conn)),
            None => Ok(serve::json(200, &echo)),
        }
    }
}

/// `GET /containerLogs/...?follow=true` (`kubectl logs -f`): a stream that never ends by itself.
fn follows_logs(path_and_query: &str) -> bool {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    path.starts_with("/containerLogs/") && query.split('&').any(|kv| kv == "follow=true")
}

/// How often a followed log writes a line.
pub const FOLLOW_LINE_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// A followed container log: `log line N` every [`FOLLOW_LINE_EVERY`] until the client goes away
/// or the stand-in shuts down, as `kubectl logs -f` sees a busy container.
fn follow_logs(conn: ConnInfo) -> Response<Body> {
    use http_body_util::{BodyExt as _, StreamBody};
    use hyper::body::Frame;
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(4);
    let mut shutdown = conn.shutdown;
    tokio::spawn(async move {
        let mut n = 0u64;
        loop {
            let line = bytes::Bytes::from(format!("log line {n}\n"));
            tokio::select! {
                _ = shutdown.changed() => return,
                sent = tx.send(line) => if sent.is_err() { return },
            }
            n += 1;
            tokio::time::sleep(FOLLOW_LINE_EVERY).await;
        }
    });
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(Frame::data(b)), rx))
    });
    let mut resp = Response::new(StreamBody::new(frames).boxed_unsync());
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain"),
    );
    resp
}

fn switching(headers: &[(&'static str, String)]) -> Response<Body> {
    let mut resp = serve::respond(101, "", bytes::Bytes::new());
    resp.headers_mut().remove(hyper::header::CONTENT_TYPE);
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(value) {
            resp.headers_mut().append(*name, v);
        }
    }
    resp
}

fn websocket_accept(
    headers: &HeaderMap,
    on_upgrade: hyper::upgrade::OnUpgrade,
    conn: ConnInfo,
) -> Response<Body> {
    let Some(key) = headers.get("sec-websocket-key") else {
        return serve::json(400, &json!({"error": "missing Sec-WebSocket-Key"}));
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let protocol = list_values(headers, "sec-websocket-protocol")
        .into_iter()
        .find(|p| !p.starts_with(TOKEN_PROTOCOL_PREFIX));
    let mut out = vec![
        ("upgrade", "websocket".to_string()),
        ("connection", "Upgrade".to_string()),
        ("sec-websocket-accept", accept),
    ];
    if let Some(p) = protocol {
        out.push(("sec-websocket-protocol", p));
    }
    let mut shutdown = conn.shutdown;
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                msg = ws.next() => match msg {
                    Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => {
                        if ws.send(m).await.is_err() {
                            break;
                        }
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                },
            }
        }
        let _ = ws.close(None).await;
    });
    switching(&out)
}

fn spdy_accept(headers: &HeaderMap, on_upgrade: hyper::upgrade::OnUpgrade) -> Response<Body> {
    let mut out = vec![
        ("connection", "Upgrade".to_string()),
        ("upgrade", "SPDY/3.1".to_string()),
    ];
    if let Some(v) = list_values(headers, "x-stream-protocol-version")
        .into_iter()
        .next()
    {
        out.push(("x-stream-protocol-version", v));
    }
    tokio::spawn(async move {
        // Handshake only: take the upgraded connection and close it.
        if let Ok(upgraded) = on_upgrade.await {
            let mut io = TokioIo::new(upgraded);
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut io).await;
        }
    });
    switching(&out)
}
