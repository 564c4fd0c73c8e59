//! What both stand-ins share: the rustls server configuration (optionally verifying client
//! certificates against a CA), the accept loop serving HTTP/1.1 with upgrades over TLS, and the
//! handle that stops it.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::StandinError;

/// The response body type of both stand-ins: a whole body, or a stream (the kubelet's
/// `containerLogs?follow=true`).
pub type Body = UnsyncBoxBody<Bytes, std::convert::Infallible>;

/// A handler's answer: a response, or `Err(CloseConnection)` to drop the connection unanswered.
pub type HandlerResult = Result<Response<Body>, CloseConnection>;

/// The future a handler returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = HandlerResult> + Send>>;

/// Returned by a handler to close the connection without answering.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("connection closed by the stand-in")]
pub struct CloseConnection;

/// What the handler knows about the connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The verified client certificate (DER), if the client sent one.
    pub peer_cert: Option<Vec<u8>>,
    /// The client's address.
    pub remote: SocketAddr,
    /// Fires when the server shuts down (for upgraded connections that outlive the handler).
    pub shutdown: watch::Receiver<bool>,
}

/// A request handler shared by every connection.
pub trait Handler: Send + Sync + 'static {
    /// Answer one request.
    fn handle(self: Arc<Self>, req: Request<Incoming>, conn: ConnInfo) -> HandlerFuture;
}

fn read_pem_file(path: &Path) -> Result<Vec<u8>, StandinError> {
    std::fs::read(path).map_err(|source| StandinError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// A rustls server configuration for `cert`/`key`, verifying client certificates against
/// `client_ca` when given (required when `require_client_cert`, optional otherwise).
pub fn tls_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
    require_client_cert: bool,
) -> Result<Arc<ServerConfig>, StandinError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = rustls_pemfile::certs(&mut read_pem_file(cert)?.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| StandinError::Io {
            path: cert.to_path_buf(),
            source,
        })?;
    let key_der = rustls_pemfile::private_key(&mut read_pem_file(key)?.as_slice())
        .map_err(|source| StandinError::Io {
            path: key.to_path_buf(),
            source,
        })?
        .ok_or_else(|| StandinError::Config(format!("{}: no private key", key.display())))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls_pemfile::certs(&mut read_pem_file(ca)?.as_slice()) {
                let c = c.map_err(|source| StandinError::Io {
                    path: ca.to_path_buf(),
                    source,
                })?;
                roots.add(c)?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if require_client_cert {
                verifier.build()
            } else {
                verifier.allow_unauthenticated().build()
            }
            .map_err(|e| StandinError::Config(format!("client CA: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key_der)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A running server: its address, and the switch that stops it.
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl ServerHandle {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop accepting, drop every open connection (hanging ones included) and wait for the accept
    /// loop to end.
    pub async fn shutdown(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Bind `listen` and serve `handler` over TLS until the handle shuts it down.
pub async fn spawn<H: Handler>(
    listen: SocketAddr,
    tls: Arc<ServerConfig>,
    handler: Arc<H>,
) -> Result<ServerHandle, StandinError> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| StandinError::Bind {
            addr: listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StandinError::Bind {
        addr: listen,
        source,
    })?;
    let (tx, rx) = watch::channel(false);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let task = tokio::spawn(accept_loop(listener, acceptor, handler, rx));
    Ok(ServerHandle {
        addr,
        shutdown: tx,
        task: Some(task),
    })
}

async fn accept_loop<H: Handler>(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    handler: Arc<H>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => {
                let Ok((tcp, remote)) = accepted else { continue };
                let acceptor = acceptor.clone();
                let handler = handler.clone();
                let rx = shutdown.clone();
                conns.spawn(serve_conn(tcp, remote, acceptor, handler, rx));
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.shutdown().await;
}

async fn serve_conn<H: Handler>(
    tcp: tokio::net::TcpStream,
    remote: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    handler: Arc<H>,
    mut shutdown: watch::Receiver<bool>,
) {
    let conn_shutdown = shutdown.clone();
    let work = async move {
        let Ok(tls) = acceptor.accept(tcp).await else {
            return;
        };
        let peer_cert = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec());
        let info = ConnInfo {
            peer_cert,
            remote,
            shutdown: conn_shutdown,
        };
        let service = hyper::service::service_fn(move |req| {
            let handler = handler.clone();
            let info = info.clone();
            async move { handler.handle(req, info).await }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(tls), service)
            .with_upgrades()
            .await;
    };
    tokio::select! {
        _ = shutdown.changed() => {}
        _ = work => {}
    }
}

/// A response with a status, a content type and a body.
pub fn respond(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()).boxed_unsync());
    *resp.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp
}

/// A JSON response.
pub fn json(status: u16, value: &serde_json::Value) -> Response<Body> {
    respond(status, "application/json", value.to_string())
}

/// Wait for SIGTERM or SIGINT (Ctrl-C).
pub async fn wait_for_signal() -> Result<(), StandinError> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).map_err(StandinError::Signal)?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.map_err(StandinError::Signal),
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.map_err(StandinError::Signal)
    }
}
