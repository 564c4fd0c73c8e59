//! The whole system on loopback, in-process where it can be: a test PKI, the stand-in API server
//! (tokens from `tests/fixtures/tokens.csv`, RBAC from the seed roles plus
//! `tests/fixtures/rbac-e2e.yaml`), the stand-in kubelet (which requires the proxy's client
//! certificate), and any number of real Envoys rendered from `envoy/kubelet-front-proxy.yaml`.
//! Everything stops when the [`Standins`] and [`Envoy`] values are dropped.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use kubelet_authz_standins::apiserver::{ApiServer, ApiServerConfig};
use kubelet_authz_standins::client::Client;
use kubelet_authz_standins::kubelet::{Kubelet, KubeletConfig};
use kubelet_authz_standins::pki::{CertPaths, ClientSubject, Pki};

use crate::envoy::{filter_wasm, Envoy};
use crate::render::{workspace, FrontProxyParams};

/// The node name every Envoy is configured with.
pub const NODE_NAME: &str = "worker-1";

/// Token of `system:serviceaccount:monitoring:prometheus` (metrics reader and pod reader).
pub const PROMETHEUS_TOKEN: &str = "prometheus-token";
/// Token of `system:serviceaccount:monitoring:metrics-scraper` (metrics reader only).
pub const SCRAPER_TOKEN: &str = "scraper-token";
/// Token of `system:serviceaccount:inventory:pod-lister` (pod reader only).
pub const PODLISTER_TOKEN: &str = "podlister-token";
/// Token of user `debugger` (`get nodes/proxy` only).
pub const DEBUGGER_TOKEN: &str = "debugger-token";
/// Token of `system:serviceaccount:default:nobody` (no kubelet role).
pub const NOBODY_TOKEN: &str = "nobody-token";
/// Token of user `ops-admin` in group `system:masters` (everything, `create nodes/proxy` included).
pub const OPS_TOKEN: &str = "ops-token";

/// User names behind the tokens and certificates.
pub mod users {
    /// [`super::PROMETHEUS_TOKEN`].
    pub const PROMETHEUS: &str = "system:serviceaccount:monitoring:prometheus";
    /// [`super::SCRAPER_TOKEN`].
    pub const SCRAPER: &str = "system:serviceaccount:monitoring:metrics-scraper";
    /// [`super::PODLISTER_TOKEN`].
    pub const PODLISTER: &str = "system:serviceaccount:inventory:pod-lister";
    /// [`super::DEBUGGER_TOKEN`].
    pub const DEBUGGER: &str = "debugger";
    /// [`super::NOBODY_TOKEN`].
    pub const NOBODY: &str = "system:serviceaccount:default:nobody";
    /// [`super::OPS_TOKEN`].
    pub const OPS: &str = "ops-admin";
    /// Client certificate [`super::CERT_ADMIN`].
    pub const ADMIN: &str = "kube-apiserver-kubelet-client";
    /// Client certificate [`super::CERT_ALICE`] (groups `observability`, `dev`).
    pub const ALICE: &str = "alice";
    /// Client certificate [`super::CERT_CAROL`] (group `observability`, UID [`CAROL_UID`]).
    pub const CAROL: &str = "carol";
    /// The UID attribute of [`super::CERT_CAROL`].
    pub const CAROL_UID: &str = "uid-carol";
    /// Client certificate [`super::CERT_PROXY`]: the proxy itself.
    pub const PROXY: &str = "system:kubelet-authz-proxy";
}

/// Client certificate name: CN `kube-apiserver-kubelet-client` (the admin role: `nodes/proxy` `*`).
pub const CERT_ADMIN: &str = "apiserver-kubelet-client";
/// Client certificate name: CN `alice`, O `observability`, O `dev` (the observability role).
pub const CERT_ALICE: &str = "alice";
/// Client certificate name: the proxy's own (to the API server and to the kubelet).
pub const CERT_PROXY: &str = "proxy";
/// Client certificate name: carol, with a UID attribute (read by 1.33+ kubelets).
pub const CERT_CAROL: &str = "carol";

/// How one Envoy is configured (the rest comes from the stand-ins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyOptions {
    /// `kubeletVersion`.
    pub kubelet_version: String,
    /// `authentication.anonymous.enabled`.
    pub anonymous: bool,
    /// `authorization.strictUpgradeVerb`.
    pub strict_upgrade_verb: bool,
    /// `Enforce` or `Shadow`.
    pub enforcement: String,
    /// `apiServer.timeout` (a Go duration).
    pub api_timeout: String,
    /// `limits` (a JSON object).
    pub limits: String,
    /// `audit` (a JSON object on one line).
    pub audit: String,
    /// The filter module, when not the release artefact ([`filter_wasm`]).
    pub filter_wasm: Option<PathBuf>,
}

impl ProxyOptions {
    /// Kubelet `version`, anonymous off, strict upgrade verb on, enforcing.
    pub fn version(version: &str) -> Self {
        ProxyOptions {
            kubelet_version: version.to_string(),
            anonymous: false,
            strict_upgrade_verb: true,
            enforcement: "Enforce".into(),
            api_timeout: "10s".into(),
            limits: "{}".into(),
            audit: r#"{ "enabled": true }"#.into(),
            filter_wasm: None,
        }
    }

    /// The same with `apiServer.timeout` set to `duration` (e.g. `500ms`).
    pub fn api_timeout(mut self, duration: &str) -> Self {
        self.api_timeout = duration.to_string();
        self
    }

    /// The same with `limits` set to the JSON object `json`.
    pub fn limits(mut self, json: &str) -> Self {
        self.limits = json.to_string();
        self
    }

    /// The same with `audit` set to the JSON object `json` (on one line), e.g.
    /// `{ "policy": { "rules": [ { "level": "Metadata" } ] } }` to write every decision.
    pub fn audit(mut self, json: &str) -> Self {
        self.audit = json.to_string();
        self
    }

    /// The same with another filter module (a test build of the filter).
    pub fn filter_wasm(mut self, path: &Path) -> Self {
        self.filter_wasm = Some(path.to_path_buf());
        self
    }

    /// The same with anonymous authentication on or off.
    pub fn anonymous(mut self, on: bool) -> Self {
        self.anonymous = on;
        self
    }

    /// The same with the strict upgrade verb on or off.
    pub fn strict(mut self, on: bool) -> Self {
        self.strict_upgrade_verb = on;
        self
    }
}

/// `tests/fixtures/...`.
pub fn fixture(name: &str) -> PathBuf {
    workspace().join("tests/fixtures").join(name)
}

/// `authz/tests/fixtures/rbac/seed-roles.yaml`.
pub fn seed_roles() -> PathBuf {
    workspace().join("authz/tests/fixtures/rbac/seed-roles.yaml")
}

/// The PKI, the stand-in API server and the stand-in kubelet.
#[derive(Debug)]
pub struct Standins {
    dir: tempfile::TempDir,
    /// CA file (verifies every server here, and the client certificates).
    pub ca: PathBuf,
    /// Loopback serving certificate (Envoy's listener uses it too).
    pub server: CertPaths,
    /// The API server.
    pub apiserver: ApiServer,
    /// The kubelet.
    pub kubelet: Kubelet,
    pki: Pki,
}

impl Standins {
    /// Make the PKI (the three client certificates above) and start both stand-ins.
    pub async fn start() -> anyhow::Result<Standins> {
        let dir = tempfile::Builder::new()
            .prefix("kubelet-authz-e2e-")
            .tempdir()
            .context("temporary directory")?;
        let pki_dir = dir.path().join("pki");
        let pki = Pki::open(&pki_dir).context("test PKI")?;
        pki.client_cert(CERT_ADMIN, &ClientSubject::new(users::ADMIN, &[]))?;
        pki.client_cert(
            CERT_ALICE,
            &ClientSubject::new(users::ALICE, &["observability", "dev"]),
        )?;
        pki.client_cert(
            CERT_CAROL,
            &ClientSubject::new(users::CAROL, &["observability"]).with_uid(users::CAROL_UID),
        )?;
        pki.client_cert(CERT_PROXY, &ClientSubject::new(users::PROXY, &[]))?;
        let config = ApiServerConfig::new(&pki_dir)
            .tokens_file(&fixture("tokens.csv"))?
            .rbac_file(&seed_roles())?
            .rbac_file(&fixture("rbac-e2e.yaml"))?;
        let apiserver = ApiServer::start(config)
            .await
            .context("stand-in API server")?;
        let kubelet = Kubelet::start(KubeletConfig::new(&pki_dir).client_ca(&pki.ca_cert(), true))
            .await
            .context("stand-in kubelet")?;
        Ok(Standins {
            ca: pki.ca_cert(),
            server: pki.server(),
            dir,
            apiserver,
            kubelet,
            pki,
        })
    }

    /// The working directory (configs, PKI).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Certificate and key of a client certificate issued at start.
    pub fn cert(&self, name: &str) -> CertPaths {
        self.pki.paths(name)
    }

    /// The front-proxy template's values for these stand-ins.
    pub fn params(&self, opts: &ProxyOptions) -> anyhow::Result<FrontProxyParams> {
        let proxy = self.cert(CERT_PROXY);
        Ok(FrontProxyParams {
            admin_port: 0,
            listen_address: "127.0.0.1".into(),
            listen_port: 0,
            server_cert: self.server.cert.clone(),
            server_key: self.server.key.clone(),
            client_ca: self.ca.clone(),
            filter_wasm: match &opts.filter_wasm {
                Some(p) => p.clone(),
                None => filter_wasm()?,
            },
            node_name: NODE_NAME.into(),
            kubelet_version: opts.kubelet_version.clone(),
            anonymous_enabled: opts.anonymous,
            strict_upgrade_verb: opts.strict_upgrade_verb,
            enforcement: opts.enforcement.clone(),
            apiserver_address: self.apiserver.addr().ip().to_string(),
            apiserver_port: self.apiserver.addr().port(),
            apiserver_name: "kubernetes.default.svc".into(),
            apiserver_ca: self.ca.clone(),
            apiserver_timeout: opts.api_timeout.clone(),
            limits: opts.limits.clone(),
            audit: opts.audit.clone(),
            proxy_client_cert: proxy.cert,
            proxy_client_key: proxy.key,
            kubelet_address: self.kubelet.addr().ip().to_string(),
            kubelet_port: self.kubelet.addr().port(),
            kubelet_server_name: "localhost".into(),
            kubelet_ca: self.ca.clone(),
        })
    }

    /// Render the front-proxy template for `opts` and start an Envoy on it.
    pub async fn front_proxy(&self, name: &str, opts: &ProxyOptions) -> anyhow::Result<Envoy> {
        let yaml = self.params(opts)?.render()?;
        Envoy::start(&yaml, self.dir(), name).await
    }

    /// A client trusting the test CA, presenting client certificate `cert` when given.
    pub fn client(&self, cert: Option<&str>) -> anyhow::Result<Client> {
        let paths = cert.map(|c| self.cert(c));
        Ok(Client::new(&self.ca, paths.as_ref())?.with_timeout(Duration::from_secs(30)))
    }

    /// Stop both stand-ins.
    pub async fn shutdown(self) {
        self.apiserver.shutdown().await;
        self.kubelet.shutdown().await;
    }
}
