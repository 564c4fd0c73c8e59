//! The stand-in API server: HTTPS on loopback, callers authenticated by a bearer token from a
//! `--token-auth-file` CSV or by a client certificate issued by the test CA, and every decision
//! taken by the RBAC evaluator ([`kubelet_authz::rbac`]) over RBAC YAML (plus kube-apiserver's
//! `system:masters` bypass), never a canned answer.
//!
//! Served:
//! - `POST /apis/authentication.k8s.io/v1/tokenreviews` (any authenticated caller),
//!   `POST /apis/authentication.k8s.io/v1/selfsubjectreviews`;
//! - `POST /apis/authorization.k8s.io/v1/subjectaccessreviews` (any authenticated caller) and
//!   `selfsubjectaccessreviews` (for the caller, after impersonation);
//! - `GET` of ClusterRoles, ClusterRoleBindings, Roles, RoleBindings (lists, namespaced lists and
//!   single objects) and Nodes, each authorized by RBAC (`list` or `get`);
//! - discovery: `/version`, `/api`, `/api/v1`, `/apis`, `/apis/{group}`, `/apis/{group}/v1`;
//! - `Impersonate-User`, `Impersonate-Group`, `Impersonate-Uid` and `Impersonate-Extra-*` on
//!   every request, each authorized by RBAC verb `impersonate` as kube-apiserver does;
//! - for tests, unauthenticated: `GET`/`DELETE /_standin/records` (the reviews answered),
//!   `GET`/`POST`/`DELETE /_standin/fault` (a [`Fault`] as JSON), `GET /_standin/stats`
//!   (request counts, `/_standin` excluded).
//!
//! Start it in-process with [`ApiServer::start`]; the binary `kubelet-authz-apiserver` wraps it.

pub mod data;
pub mod discovery;
pub mod faults;
pub mod proto;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::{Method, Request, Response};
use kubelet_authz::identity::{
    add_authenticated_group, parse_bearer, token_review_status, x509, BearerHeader,
};
use kubelet_authz::kubelet::KubeletVersion;
use kubelet_authz::rbac::Attributes;
use kubelet_authz::review::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec, SubjectAccessReviewStatus,
    TokenReview,
};
use kubelet_authz::UserInfo;
use serde_json::{json, Value};

pub use data::Data;
pub use faults::{Fault, FaultKind, ReviewRecord};

use super::pki::{self, Pki};
use super::serve::{self, Body, CloseConnection, ConnInfo, Handler, HandlerFuture, HandlerResult};
use super::StandinError;

/// The group kube-apiserver lets do anything, before any authorizer runs.
pub const PRIVILEGED_GROUP: &str = "system:masters";

/// How to start the stand-in API server.
#[derive(Debug, Clone)]
pub struct ApiServerConfig {
    /// Listen address; port 0 picks a free one.
    pub listen: SocketAddr,
    /// The PKI directory (created or reused): CA, server certificate, client CA.
    pub pki_dir: PathBuf,
    /// Token CSV texts with their source names.
    pub tokens: Vec<(String, String)>,
    /// RBAC YAML/JSON texts with their source names.
    pub rbac: Vec<(String, String)>,
    /// Node YAML/JSON texts with their source names.
    pub nodes: Vec<(String, String)>,
}

fn read(path: &Path) -> Result<(String, String), StandinError> {
    let text = std::fs::read_to_string(path).map_err(|source| StandinError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok((text, path.display().to_string()))
}

impl ApiServerConfig {
    /// Listen on `127.0.0.1:0`, PKI in `pki_dir`, no tokens, no RBAC, no nodes.
    pub fn new(pki_dir: impl Into<PathBuf>) -> Self {
        ApiServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            pki_dir: pki_dir.into(),
            tokens: Vec::new(),
            rbac: Vec::new(),
            nodes: Vec::new(),
        }
    }

    /// Add token CSV text (`token,user,uid,"g1,g2"`).
    pub fn tokens_csv(mut self, text: &str) -> Self {
        self.tokens.push((text.to_string(), "tokens".into()));
        self
    }

    /// Add a token CSV file.
    pub fn tokens_file(mut self, path: &Path) -> Result<Self, StandinError> {
        self.tokens.push(read(path)?);
        Ok(self)
    }

    /// Add RBAC YAML or JSON text.
    pub fn rbac_yaml(mut self, text: &str, source_name: &str) -> Self {
        self.rbac.push((text.to_string(), source_name.to_string()));
        self
    }

    /// Add an RBAC YAML or JSON file.
    pub fn rbac_file(mut self, path: &Path) -> Result<Self, StandinError> {
        self.rbac.push(read(path)?);
        Ok(self)
    }

    /// Add Node YAML or JSON text.
    pub fn nodes_yaml(mut self, text: &str, source_name: &str) -> Self {
        self.nodes.push((text.to_string(), source_name.to_string()));
        self
    }

    /// Add a Node YAML or JSON file.
    pub fn nodes_file(mut self, path: &Path) -> Result<Self, StandinError> {
        self.nodes.push(read(path)?);
        Ok(self)
    }
}

/// Shared state of a running API server.
#[derive(Debug)]
struct State {
    data: Data,
    addr: std::sync::OnceLock<SocketAddr>,
    records: Mutex<Vec<ReviewRecord>>,
    fault: Mutex<Option<Fault>>,
    counts: Mutex<BTreeMap<String, u64>>,
    total: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A running stand-in API server. Dropping it stops it; [`ApiServer::shutdown`] waits for that.
#[derive(Debug)]
pub struct ApiServer {
    handle: serve::ServerHandle,
    state: Arc<State>,
    pki_dir: PathBuf,
    ca_cert: PathBuf,
    server_cert: pki::CertPaths,
}

impl ApiServer {
    /// Load the data, open the PKI and start serving.
    pub async fn start(config: ApiServerConfig) -> Result<ApiServer, StandinError> {
        let mut data = Data::default();
        for (text, name) in &config.tokens {
            data.load_tokens(text, name)?;
        }
        for (text, name) in &config.rbac {
            data.load_rbac(text, name)?;
        }
        for (text, name) in &config.nodes {
            data.load_nodes(text, name)?;
        }
        let pki_dir = config.pki_dir.clone();
        let pki = tokio::task::spawn_blocking(move || Pki::open(&pki_dir))
            .await
            .map_err(|e| StandinError::Config(format!("pki task: {e}")))??;
        let server_cert = pki.server();
        let tls = serve::tls_config(
            &server_cert.cert,
            &server_cert.key,
            Some(&pki.ca_cert()),
            false,
        )?;
        let state = Arc::new(State {
            data,
            addr: std::sync::OnceLock::new(),
            records: Mutex::new(Vec::new()),
            fault: Mutex::new(None),
            counts: Mutex::new(BTreeMap::new()),
            total: AtomicU64::new(0),
        });
        let handle = serve::spawn(config.listen, tls, state.clone()).await?;
        let _ = state.addr.set(handle.addr());
        Ok(ApiServer {
            handle,
            state,
            pki_dir: pki.dir().to_path_buf(),
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

    /// The CA certificate file that verifies the server (and the client certificates it accepts).
    pub fn ca_cert(&self) -> &Path {
        &self.ca_cert
    }

    /// The PKI directory.
    pub fn pki_dir(&self) -> &Path {
        &self.pki_dir
    }

    /// The reviews answered so far, oldest first.
    pub fn records(&self) -> Vec<ReviewRecord> {
        lock(&self.state.records).clone()
    }

    /// The reviews recorded from index `mark` on (see [`ApiServer::records`]), oldest first.
    pub fn records_since(&self, mark: usize) -> Vec<ReviewRecord> {
        lock(&self.state.records)
            .get(mark..)
            .map(<[ReviewRecord]>::to_vec)
            .unwrap_or_default()
    }

    /// The tokens of the TokenReviews recorded from index `mark` on, oldest first (faulted
    /// attempts included).
    pub fn token_reviews_since(&self, mark: usize) -> Vec<String> {
        lock(&self.state.records)
            .iter()
            .skip(mark)
            .filter(|r| r.kind == "TokenReview")
            .map(|r| {
                r.request
                    .pointer("/spec/token")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            })
            .collect()
    }

    /// Forget the records.
    pub fn clear_records(&self) {
        lock(&self.state.records).clear();
    }

    /// Set the fault switch (replacing any other).
    pub fn set_fault(&self, fault: Fault) {
        *lock(&self.state.fault) = Some(fault);
    }

    /// Clear the fault switch.
    pub fn clear_fault(&self) {
        *lock(&self.state.fault) = None;
    }

    /// The fault switch as it is now (a counted fault counts down and clears itself).
    pub fn fault(&self) -> Option<Fault> {
        lock(&self.state.fault).clone()
    }

    /// Requests received, `/_standin/*` excluded.
    pub fn request_count(&self) -> u64 {
        self.state.total.load(Ordering::SeqCst)
    }

    /// Requests received per path (no query), `/_standin/*` excluded.
    pub fn request_counts(&self) -> BTreeMap<String, u64> {
        lock(&self.state.counts).clone()
    }

    /// The line the binary prints when ready.
    pub fn ready_info(&self) -> Value {
        json!({
            "url": self.url(),
            "port": self.addr().port(),
            "ca": self.ca_cert,
            "pkiDir": self.pki_dir,
            "serverCert": self.server_cert.cert,
            "serverKey": self.server_cert.key,
        })
    }

    /// Write a kubeconfig for this server: `certificate-authority` = the CA file, and a user with
    /// `token` (or, when `token` is `None`, the client certificate `client`).
    pub fn write_kubeconfig(
        &self,
        path: &Path,
        token: Option<&str>,
        client: Option<&pki::CertPaths>,
    ) -> Result<(), StandinError> {
        let mut user = serde_json::Map::new();
        if let Some(t) = token {
            user.insert("token".into(), json!(t));
        }
        if let Some(c) = client {
            user.insert("client-certificate".into(), json!(c.cert));
            user.insert("client-key".into(), json!(c.key));
        }
        let config = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "standin", "cluster": {
                "server": self.url(),
                "certificate-authority": self.ca_cert,
            }}],
            "users": [{"name": "standin", "user": user}],
            "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "standin"}}],
            "current-context": "standin",
        });
        let text = serde_yaml_ng::to_string(&config)
            .map_err(|e| StandinError::Config(format!("kubeconfig: {e}")))?;
        std::fs::write(path, text).map_err(|source| StandinError::Io {
            path: path.to_path_buf(),
            source,
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

/// A Kubernetes `Status` failure.
fn status(code: u16, reason: &str, message: &str, details: Option<Value>) -> Response<Body> {
    let mut body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    if let (Some(d), Some(obj)) = (details, body.as_object_mut()) {
        obj.insert("details".into(), d);
    }
    serve::json(code, &body)
}

fn unauthorized() -> Response<Body> {
    status(401, "Unauthorized", "Unauthorized", None)
}

fn not_found_path() -> Response<Body> {
    status(
        404,
        "NotFound",
        "the server could not find the requested resource",
        Some(json!({})),
    )
}

fn method_not_allowed() -> Response<Body> {
    status(
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource",
        Some(json!({})),
    )
}

/// `resource.group`, or `resource` for the core group.
fn qualified(resource: &str, group: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

/// kube-apiserver's 403 for a resource request the user may not make.
fn forbidden(user: &str, attrs: &ResourceAttributes, reason: &str) -> Response<Body> {
    let resource = if attrs.subresource.is_empty() {
        attrs.resource.clone()
    } else {
        format!("{}/{}", attrs.resource, attrs.subresource)
    };
    let scope = if attrs.namespace.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace {:?}", attrs.namespace)
    };
    let mut why = format!(
        "User {user:?} cannot {} resource {resource:?} in API group {:?} {scope}",
        attrs.verb, attrs.group
    );
    if !reason.is_empty() {
        why = format!("{why}: {reason}");
    }
    let what = qualified(&attrs.resource, &attrs.group);
    let message = if attrs.name.is_empty() {
        format!("{what} is forbidden: {why}")
    } else {
        format!("{what} {:?} is forbidden: {why}", attrs.name)
    };
    let mut details = json!({"group": attrs.group, "kind": attrs.resource});
    if !attrs.name.is_empty() {
        if let Some(obj) = details.as_object_mut() {
            obj.insert("name".into(), json!(attrs.name));
        }
    }
    status(403, "Forbidden", &message, Some(details))
}

fn attrs(
    verb: &str,
    group: &str,
    resource: &str,
    namespace: &str,
    name: &str,
) -> ResourceAttributes {
    ResourceAttributes {
        namespace: namespace.to_string(),
        verb: verb.to_string(),
        group: group.to_string(),
        version: "v1".into(),
        resource: resource.to_string(),
        subresource: String::new(),
        name: name.to_string(),
    }
}

const PUBLIC_PATHS: &[&str] = &["/version", "/healthz", "/livez", "/readyz"];
use kubelet_authz::rbac::{RBAC_API_VERSION, RBAC_GROUP};
use kubelet_authz::review::{
    AUTHENTICATION_GROUP, AUTHORIZATION_GROUP, SELF_SUBJECT_ACCESS_REVIEW_PATH,
    SELF_SUBJECT_REVIEW_PATH, SUBJECT_ACCESS_REVIEW_PATH, TOKEN_REVIEW_PATH,
};

fn rbac_kind(resource: &str) -> Option<(&'static str, bool)> {
    match resource {
        "clusterroles" => Some(("ClusterRole", false)),
        "clusterrolebindings" => Some(("ClusterRoleBinding", false)),
        "roles" => Some(("Role", true)),
        "rolebindings" => Some(("RoleBinding", true)),
        _ => None,
    }
}

fn review_kind(path: &str) -> Option<&'static str> {
    match path {
        TOKEN_REVIEW_PATH => Some("TokenReview"),
        SELF_SUBJECT_REVIEW_PATH => Some("SelfSubjectReview"),
        SUBJECT_ACCESS_REVIEW_PATH => Some("SubjectAccessReview"),
        SELF_SUBJECT_ACCESS_REVIEW_PATH => Some("SelfSubjectAccessReview"),
        _ => None,
    }
}

fn review_user(u: &UserInfo) -> Value {
    let mut user = serde_json::Map::new();
    user.insert("username".into(), json!(u.name));
    if !u.uid.is_empty() {
        user.insert("uid".into(), json!(u.uid));
    }
    if !u.groups.is_empty() {
        user.insert("groups".into(), json!(u.groups));
    }
    if !u.extra.is_empty() {
        user.insert("extra".into(), json!(u.extra));
    }
    Value::Object(user)
}

/// Percent-decode a header-name suffix (`Impersonate-Extra-` keys are escaped that way).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            if let Some(v) = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn header_values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_string)
        .collect()
}

fn add_default_metadata(mut obj: Value, api_version: &str, kind: &str, keep_type: bool) -> Value {
    if let Some(map) = obj.as_object_mut() {
        if keep_type {
            map.insert("apiVersion".into(), json!(api_version));
            map.insert("kind".into(), json!(kind));
        } else {
            map.remove("apiVersion");
            map.remove("kind");
        }
        let meta = map.entry("metadata").or_insert_with(|| json!({}));
        if let Some(meta) = meta.as_object_mut() {
            meta.entry("creationTimestamp")
                .or_insert_with(|| json!("2026-01-01T00:00:00Z"));
            meta.entry("resourceVersion").or_insert_with(|| json!("1"));
        }
    }
    obj
}

impl State {
    /// kube-apiserver's authorizer chain: `system:masters` first, then RBAC.
    fn decide(&self, user: &UserInfo, attrs: &Attributes) -> (bool, String) {
        if user.groups.iter().any(|g| g == PRIVILEGED_GROUP) {
            return (true, String::new());
        }
        let d = self.data.rbac.authorize(user, attrs);
        (d.allowed, d.reason)
    }

    /// A SubjectAccessReview's answer through the same chain: `system:masters` first, then
    /// the RBAC store's own review ([`kubelet_authz::rbac::RbacStore::authorize_review`]).
    fn review_access(&self, spec: &SubjectAccessReviewSpec) -> SubjectAccessReviewStatus {
        if spec.groups.iter().any(|g| g == PRIVILEGED_GROUP) {
            return SubjectAccessReviewStatus {
                allowed: true,
                ..SubjectAccessReviewStatus::default()
            };
        }
        self.data.rbac.authorize_review(spec)
    }

    fn check(&self, user: &UserInfo, ra: &ResourceAttributes) -> Option<Response<Body>> {
        let (allowed, reason) = self.decide(user, &Attributes::Resource(ra.clone()));
        (!allowed).then(|| forbidden(&user.name, ra, &reason))
    }

    /// The caller, as kube-apiserver's union authenticator finds it: a verified client
    /// certificate first, turned into a user by the engine's x509 conversion (the same code the
    /// filter runs, at the newest version: CN, every O, the UID attribute, the credential id), then
    /// a bearer token from the CSV. `Err` for a token that is not in the file, or for a
    /// certificate the conversion refuses when no token authenticates the caller instead.
    /// With the user, the credential that authenticated it: `X509SHA256=<hex of the DER>` (as
    /// kube-apiserver's credential id) or `TokenSHA256=<hex of the token>`.
    fn authenticate(
        &self,
        headers: &HeaderMap,
        conn: &ConnInfo,
    ) -> Result<Option<(UserInfo, String)>, ()> {
        let mut cert_failed = false;
        if let Some(der) = &conn.peer_cert {
            match x509::user_from_der(der, KubeletVersion::LATEST) {
                Ok(Some(user)) => {
                    let credential = format!("X509SHA256={}", x509::sha256_hex(der));
                    return Ok(Some((add_authenticated_group(user), credential)));
                }
                Ok(None) => {}
                Err(_) => cert_failed = true,
            }
        }
        let auth = headers
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match parse_bearer(auth) {
            BearerHeader::Token(t) => match self.data.tokens.get(t) {
                Some(u) => Ok(Some((
                    add_authenticated_group(u.clone()),
                    format!("TokenSHA256={}", x509::sha256_hex(t.as_bytes())),
                ))),
                None => Err(()),
            },
            _ if cert_failed => Err(()),
            _ => Ok(None),
        }
    }

    /// Apply `Impersonate-*` headers as kube-apiserver's impersonation filter does: each asked-for
    /// attribute needs verb `impersonate` on users (or serviceaccounts), groups, uids or
    /// userextras; the impersonated user gets `system:authenticated` (or
    /// `system:unauthenticated` for `system:anonymous`).
    fn impersonate(
        &self,
        headers: &HeaderMap,
        requestor: UserInfo,
    ) -> Result<UserInfo, Box<Response<Body>>> {
        let users = header_values(headers, "impersonate-user");
        let groups = header_values(headers, "impersonate-group");
        let uids = header_values(headers, "impersonate-uid");
        let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, value) in headers {
            if let Some(key) = name.as_str().strip_prefix("impersonate-extra-") {
                if let Ok(v) = value.to_str() {
                    extra
                        .entry(percent_decode(key).to_lowercase())
                        .or_default()
                        .push(v.to_string());
                }
            }
        }
        if users.is_empty() && groups.is_empty() && uids.is_empty() && extra.is_empty() {
            return Ok(requestor);
        }
        let Some(username) = users.first().cloned() else {
            return Err(Box::new(status(
                500,
                "InternalError",
                "Internal error occurred: requested impersonation of groups, uid or extra without impersonating a user",
                Some(json!({"causes": [{"message": "requested impersonation without impersonating a user"}]})),
            )));
        };
        let mut checks = Vec::new();
        let sa = kubelet_authz::identity::split_service_account_username(&username);
        match sa {
            Some((ns, name)) => checks.push(ResourceAttributes {
                verb: "impersonate".into(),
                resource: "serviceaccounts".into(),
                namespace: ns.to_string(),
                name: name.to_string(),
                ..ResourceAttributes::default()
            }),
            None => checks.push(ResourceAttributes {
                verb: "impersonate".into(),
                resource: "users".into(),
                name: username.clone(),
                ..ResourceAttributes::default()
            }),
        }
        for g in &groups {
            checks.push(ResourceAttributes {
                verb: "impersonate".into(),
                resource: "groups".into(),
                name: g.clone(),
                ..ResourceAttributes::default()
            });
        }
        for u in &uids {
            checks.push(ResourceAttributes {
                verb: "impersonate".into(),
                group: AUTHENTICATION_GROUP.into(),
                resource: "uids".into(),
                name: u.clone(),
                ..ResourceAttributes::default()
            });
        }
        for (key, values) in &extra {
            for v in values {
                checks.push(ResourceAttributes {
                    verb: "impersonate".into(),
                    group: AUTHENTICATION_GROUP.into(),
                    resource: "userextras".into(),
                    subresource: key.clone(),
                    name: v.clone(),
                    ..ResourceAttributes::default()
                });
            }
        }
        for ra in &checks {
            if let Some(denied) = self.check(&requestor, ra) {
                return Err(Box::new(denied));
            }
        }
        let mut new_groups = groups.clone();
        if let Some((ns, _)) = sa {
            if groups.is_empty() {
                new_groups = kubelet_authz::identity::service_account_groups(ns);
            }
        }
        let marker = if username == kubelet_authz::identity::ANONYMOUS_USER {
            kubelet_authz::identity::UNAUTHENTICATED_GROUP
        } else {
            kubelet_authz::identity::AUTHENTICATED_GROUP
        };
        if !new_groups.iter().any(|g| {
            g == kubelet_authz::identity::AUTHENTICATED_GROUP
                || g == kubelet_authz::identity::UNAUTHENTICATED_GROUP
        }) {
            new_groups.push(marker.to_string());
        }
        Ok(UserInfo {
            name: username,
            uid: uids.first().cloned().unwrap_or_default(),
            groups: new_groups,
            extra,
        })
    }

    async fn route(self: Arc<Self>, req: Request<Incoming>, conn: ConnInfo) -> HandlerResult {
        let (parts, body) = req.into_parts();
        let body = match body.collect().await {
            Ok(c) => c.to_bytes(),
            Err(_) => return Err(CloseConnection),
        };
        let path = parts.uri.path().to_string();
        if let Some(rest) = path.strip_prefix("/_standin/") {
            return Ok(self.standin(&parts.method, rest, &body));
        }
        self.total.fetch_add(1, Ordering::SeqCst);
        *lock(&self.counts).entry(path.clone()).or_default() += 1;

        let (caller, credential) = match self.authenticate(&parts.headers, &conn) {
            Ok(Some(c)) => c,
            Ok(None) if PUBLIC_PATHS.contains(&path.as_str()) => {
                return Ok(self.public(&path));
            }
            Ok(None) | Err(()) => return Ok(unauthorized()),
        };
        let user = match self.impersonate(&parts.headers, caller) {
            Ok(u) => u,
            Err(resp) => return Ok(*resp),
        };
        if PUBLIC_PATHS.contains(&path.as_str()) {
            return Ok(self.public(&path));
        }
        if let Some(kind) = review_kind(&path) {
            if parts.method != Method::POST {
                return Ok(method_not_allowed());
            }
            let content_type = parts
                .headers
                .get(hyper::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok());
            let request = if proto::is_protobuf(content_type) {
                proto::decode_review(&body)
            } else {
                serde_json::from_slice(&body).ok()
            }
            .unwrap_or_else(|| Value::String(String::from_utf8_lossy(&body).into_owned()));
            return self.review(kind, request, &user, &credential).await;
        }
        if parts.method != Method::GET {
            return Ok(if self.known_read_path(&path) {
                method_not_allowed()
            } else {
                not_found_path()
            });
        }
        Ok(self.read(&path, &user))
    }

    fn public(&self, path: &str) -> Response<Body> {
        match path {
            "/version" => serve::json(200, &discovery::version()),
            _ => serve::respond(200, "text/plain; charset=utf-8", "ok"),
        }
    }

    fn known_read_path(&self, path: &str) -> bool {
        path.starts_with("/api/v1/nodes") || path.starts_with(&format!("/apis/{RBAC_API_VERSION}/"))
    }

    fn standin(&self, method: &Method, rest: &str, body: &[u8]) -> Response<Body> {
        match (method, rest) {
            (&Method::GET, "records") => serve::json(200, &json!(*lock(&self.records))),
            (&Method::DELETE, "records") => {
                lock(&self.records).clear();
                serve::json(200, &json!({}))
            }
            (&Method::GET, "fault") => serve::json(200, &json!(*lock(&self.fault))),
            (&Method::POST, "fault") => match serde_json::from_slice::<Fault>(body) {
                Ok(f) => {
                    let echo = json!(f);
                    *lock(&self.fault) = Some(f);
                    serve::json(200, &echo)
                }
                Err(e) => status(400, "BadRequest", &format!("fault: {e}"), None),
            },
            (&Method::DELETE, "fault") => {
                *lock(&self.fault) = None;
                serve::json(200, &json!({}))
            }
            (&Method::GET, "stats") => serve::json(
                200,
                &json!({
                    "requests": self.total.load(Ordering::SeqCst),
                    "paths": *lock(&self.counts),
                }),
            ),
            _ => not_found_path(),
        }
    }

    fn record(
        &self,
        kind: &str,
        request: &Value,
        response: Option<Value>,
        status: u16,
        fault: Option<FaultKind>,
        (caller, credential): (&UserInfo, &str),
    ) {
        let (timestamp, unix_millis) = faults::now_stamp();
        lock(&self.records).push(ReviewRecord {
            kind: kind.to_string(),
            request: request.clone(),
            response,
            status,
            fault: fault.map(|f| f.name().to_string()),
            caller: caller.name.clone(),
            caller_credential: credential.to_string(),
            timestamp,
            unix_millis,
        });
    }

    async fn review(
        &self,
        kind: &str,
        request: Value,
        user: &UserInfo,
        credential: &str,
    ) -> HandlerResult {
        let fault = faults::take(&mut lock(&self.fault), kind);
        let (code, mut response) = self.answer_review(kind, &request, user);
        let Some(fault) = fault else {
            self.record(
                kind,
                &request,
                Some(response.clone()),
                code,
                None,
                (user, credential),
            );
            return Ok(serve::json(code, &response));
        };
        let fk = fault.kind;
        match fk {
            FaultKind::Error500 => {
                self.record(kind, &request, None, 500, Some(fk), (user, credential));
                Ok(status(
                    500,
                    "InternalError",
                    "Internal error occurred: injected by the stand-in",
                    Some(json!({"causes": [{"message": "injected by the stand-in"}]})),
                ))
            }
            FaultKind::TooManyRequests => {
                self.record(kind, &request, None, 429, Some(fk), (user, credential));
                let mut resp = status(
                    429,
                    "TooManyRequests",
                    "Too many requests, please try again later.",
                    Some(json!({"retryAfterSeconds": 1})),
                );
                resp.headers_mut()
                    .insert("retry-after", hyper::header::HeaderValue::from_static("1"));
                Ok(resp)
            }
            FaultKind::Hang => {
                self.record(kind, &request, None, 0, Some(fk), (user, credential));
                std::future::pending::<()>().await;
                Err(CloseConnection)
            }
            FaultKind::Close => {
                self.record(kind, &request, None, 0, Some(fk), (user, credential));
                Err(CloseConnection)
            }
            FaultKind::MalformedJson => {
                self.record(kind, &request, None, 200, Some(fk), (user, credential));
                let text = response.to_string();
                let cut = text.len() / 2;
                let truncated = text.get(..cut).unwrap_or("{").to_string();
                Ok(serve::respond(200, "application/json", truncated))
            }
            FaultKind::AllowedAndDenied => {
                if let Some(obj) = response.as_object_mut() {
                    obj.insert(
                        "status".into(),
                        json!({"allowed": true, "denied": true, "reason": "injected by the stand-in"}),
                    );
                }
                self.record(
                    kind,
                    &request,
                    Some(response.clone()),
                    200,
                    Some(fk),
                    (user, credential),
                );
                Ok(serve::json(200, &response))
            }
            FaultKind::BadGateway => {
                self.record(kind, &request, None, 502, Some(fk), (user, credential));
                Ok(status(
                    502,
                    "InternalError",
                    "bad gateway: injected by the stand-in",
                    None,
                ))
            }
            FaultKind::Unavailable | FaultKind::UnavailableRetryAfter => {
                self.record(kind, &request, None, 503, Some(fk), (user, credential));
                let mut resp = status(
                    503,
                    "ServiceUnavailable",
                    "the server is currently unable to handle the request",
                    None,
                );
                if fk == FaultKind::UnavailableRetryAfter {
                    resp.headers_mut()
                        .insert("retry-after", hyper::header::HeaderValue::from_static("1"));
                }
                Ok(resp)
            }
            FaultKind::CreatedRetryAfter => {
                self.record(
                    kind,
                    &request,
                    Some(response.clone()),
                    code,
                    Some(fk),
                    (user, credential),
                );
                let mut resp = serve::json(code, &response);
                resp.headers_mut()
                    .insert("retry-after", hyper::header::HeaderValue::from_static("1"));
                Ok(resp)
            }
            FaultKind::HugeBody => {
                self.record(kind, &request, None, 200, Some(fk), (user, credential));
                let size = fault.huge_bytes.unwrap_or(16 * 1024 * 1024);
                if let Some(obj) = response.as_object_mut() {
                    obj.insert("padding".into(), json!("x".repeat(size)));
                }
                Ok(serve::json(200, &response))
            }
        }
    }

    /// The normal answer to a review: (HTTP status, body).
    fn answer_review(&self, kind: &str, request: &Value, user: &UserInfo) -> (u16, Value) {
        let bad = |msg: String| {
            (
                400,
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                       "message": msg, "reason": "BadRequest", "code": 400}),
            )
        };
        let spec = request.get("spec").cloned().unwrap_or_else(|| json!({}));
        match kind {
            "TokenReview" => {
                let tr: TokenReview = match serde_json::from_value(request.clone()) {
                    Ok(tr) => tr,
                    Err(e) => return bad(format!("TokenReview: {e}")),
                };
                if tr.spec.token.is_empty() {
                    return bad("token is required for TokenReview in authentication".into());
                }
                let mut status = token_review_status(self.data.tokens.get(&tr.spec.token));
                status.audiences.clone_from(&tr.spec.audiences);
                (
                    201,
                    json!({"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
                           "metadata": {"creationTimestamp": null}, "spec": spec, "status": status}),
                )
            }
            "SelfSubjectReview" => (
                201,
                json!({"kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1",
                       "metadata": {"creationTimestamp": null},
                       "status": {"userInfo": review_user(user)}}),
            ),
            _ => {
                let sar: SubjectAccessReview = match serde_json::from_value(request.clone()) {
                    Ok(s) => s,
                    Err(e) => return bad(format!("{kind}: {e}")),
                };
                if sar.spec.resource_attributes.is_some()
                    == sar.spec.non_resource_attributes.is_some()
                {
                    return invalid_value(
                        kind,
                        "spec.resourceAttributes",
                        "exactly one of nonResourceAttributes or resourceAttributes must be specified",
                    );
                }
                let mut subject = sar.spec;
                if kind == "SubjectAccessReview" {
                    if subject.user.is_empty() && subject.groups.is_empty() {
                        return invalid_value(
                            kind,
                            "spec.user",
                            "at least one of user or group must be specified",
                        );
                    }
                } else {
                    // A SelfSubjectAccessReview asks about the caller.
                    subject.user.clone_from(&user.name);
                    subject.uid.clone_from(&user.uid);
                    subject.groups.clone_from(&user.groups);
                    subject.extra.clone_from(&user.extra);
                }
                let status = self.review_access(&subject);
                (
                    201,
                    json!({"kind": kind, "apiVersion": "authorization.k8s.io/v1",
                           "metadata": {"creationTimestamp": null}, "spec": spec, "status": status}),
                )
            }
        }
    }

    /// GET of nodes, RBAC objects and discovery.
    fn read(&self, path: &str, user: &UserInfo) -> Response<Body> {
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        match segs.as_slice() {
            ["api"] => serve::json(
                200,
                &discovery::core_versions(
                    &self.addr.get().map(ToString::to_string).unwrap_or_default(),
                ),
            ),
            ["apis"] => serve::json(200, &discovery::group_list()),
            ["api", "v1"] => {
                discovery::resources("").map_or_else(not_found_path, |v| serve::json(200, &v))
            }
            ["apis", group] => {
                discovery::group(group).map_or_else(not_found_path, |v| serve::json(200, &v))
            }
            ["apis", group, "v1"] => {
                discovery::resources(group).map_or_else(not_found_path, |v| serve::json(200, &v))
            }
            ["api", "v1", "nodes"] => self.list(
                user,
                &attrs("list", "", "nodes", "", ""),
                "NodeList",
                "v1",
                |o| data::kind(o) == "Node",
                true,
            ),
            ["api", "v1", "nodes", name] => self.get(
                user,
                &attrs("get", "", "nodes", "", name),
                "Node",
                "v1",
                true,
            ),
            ["apis", RBAC_GROUP, "v1", resource] => match rbac_kind(resource) {
                Some((kind, _)) => self.list(
                    user,
                    &attrs("list", RBAC_GROUP, resource, "", ""),
                    &format!("{kind}List"),
                    RBAC_API_VERSION,
                    |o| data::kind(o) == kind,
                    false,
                ),
                None => not_found_path(),
            },
            ["apis", RBAC_GROUP, "v1", resource, name] => match rbac_kind(resource) {
                Some((kind, false)) => self.get(
                    user,
                    &attrs("get", RBAC_GROUP, resource, "", name),
                    kind,
                    RBAC_API_VERSION,
                    false,
                ),
                _ => not_found_path(),
            },
            ["apis", RBAC_GROUP, "v1", "namespaces", ns, resource] => match rbac_kind(resource) {
                Some((kind, true)) => self.list(
                    user,
                    &attrs("list", RBAC_GROUP, resource, ns, ""),
                    &format!("{kind}List"),
                    RBAC_API_VERSION,
                    |o| data::kind(o) == kind && data::meta(o, "namespace") == *ns,
                    false,
                ),
                _ => not_found_path(),
            },
            ["apis", RBAC_GROUP, "v1", "namespaces", ns, resource, name] => {
                match rbac_kind(resource) {
                    Some((kind, true)) => self.get(
                        user,
                        &attrs("get", RBAC_GROUP, resource, ns, name),
                        kind,
                        RBAC_API_VERSION,
                        false,
                    ),
                    _ => not_found_path(),
                }
            }
            _ => not_found_path(),
        }
    }

    fn objects(&self, nodes: bool) -> &[Value] {
        if nodes {
            &self.data.nodes
        } else {
            &self.data.rbac_objects
        }
    }

    fn list(
        &self,
        user: &UserInfo,
        ra: &ResourceAttributes,
        list_kind: &str,
        api_version: &str,
        keep: impl Fn(&Value) -> bool,
        nodes: bool,
    ) -> Response<Body> {
        if let Some(denied) = self.check(user, ra) {
            return denied;
        }
        let items: Vec<Value> = self
            .objects(nodes)
            .iter()
            .filter(|o| keep(o))
            .map(|o| add_default_metadata(o.clone(), api_version, "", false))
            .collect();
        serve::json(
            200,
            &json!({"kind": list_kind, "apiVersion": api_version,
                    "metadata": {"resourceVersion": "1"}, "items": items}),
        )
    }

    fn get(
        &self,
        user: &UserInfo,
        ra: &ResourceAttributes,
        kind: &str,
        api_version: &str,
        nodes: bool,
    ) -> Response<Body> {
        if let Some(denied) = self.check(user, ra) {
            return denied;
        }
        let found = self.objects(nodes).iter().find(|o| {
            data::kind(o) == kind
                && data::meta(o, "name") == ra.name
                && data::meta(o, "namespace") == ra.namespace
        });
        match found {
            Some(o) => serve::json(
                200,
                &add_default_metadata(o.clone(), api_version, kind, true),
            ),
            None => status(
                404,
                "NotFound",
                &format!(
                    "{} {:?} not found",
                    qualified(&ra.resource, &ra.group),
                    ra.name
                ),
                Some(json!({"name": ra.name, "group": ra.group, "kind": ra.resource})),
            ),
        }
    }
}

fn invalid_value(kind: &str, field: &str, message: &str) -> (u16, Value) {
    (
        422,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": format!("{kind}.authorization.k8s.io \"\" is invalid: {field}: Invalid value: {message}"),
               "reason": "Invalid",
               "details": {"group": AUTHORIZATION_GROUP, "kind": kind,
                           "causes": [{"reason": "FieldValueInvalid", "message": message, "field": field}]},
               "code": 422}),
    )
}
