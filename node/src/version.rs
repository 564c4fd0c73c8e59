//! The kubelet's version: `status.nodeInfo.kubeletVersion` of this node's Node object, read with
//! `kube` and the node's own credential (its client certificate, or the pod's projected
//! ServiceAccount token), retried with backoff. The last version read is kept on the node
//! (`/var/lib/kubelet-authz/kubelet-version`) so that an API server outage at boot does not keep
//! the kubelet port closed: the proxy starts with the last known one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;

use crate::bootstrap::ApiServerAuth;

/// The file in the agent's state directory holding the last known kubelet version (`unconfigure`
/// removes it with the rest of the agent's state).
pub const STATE_FILE: &str = "kubelet-version";

/// Why no version could be found.
#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    /// The client could not be built (credential files, URL).
    #[error("API server client ({what}): {message}")]
    Client {
        /// What was being set up.
        what: String,
        /// The cause.
        message: String,
    },
    /// The API server did not answer or refused, and no version is kept on the node.
    #[error("node {node}: {message}; no last known version in {state}: set --kubelet-version, or check --apiserver-url, --cluster-ca and the node's access")]
    Unavailable {
        /// The node.
        node: String,
        /// The last error.
        message: String,
        /// The state file.
        state: PathBuf,
    },
    /// The API server refused (403, 404): fixing the node's access is needed, not a retry.
    #[error("node {node}: {message}: set --kubelet-version or fix the node's access")]
    Refused {
        /// The node.
        node: String,
        /// The refusal.
        message: String,
    },
    /// The Node has no usable `status.nodeInfo.kubeletVersion`.
    #[error("node {node}: status.nodeInfo.kubeletVersion `{found}` is not a version such as v1.34.2: set --kubelet-version")]
    BadVersion {
        /// The node.
        node: String,
        /// What it holds.
        found: String,
    },
}

/// Where and how to read the Node.
#[derive(Debug, Clone)]
pub struct Lookup {
    /// The Node's name.
    pub node_name: String,
    /// `https://host:port` of the API server.
    pub apiserver_url: String,
    /// The name in its certificate.
    pub apiserver_name: String,
    /// The cluster CA bundle.
    pub cluster_ca: PathBuf,
    /// The credential.
    pub auth: ApiServerAuth,
    /// The last known version (read first when the API server does not answer; written after
    /// every successful read).
    pub state_file: PathBuf,
    /// Attempts before falling back to the last known version (or failing).
    pub attempts: u32,
    /// The first retry's delay (doubling, at most 30 s).
    pub first_delay: Duration,
}

/// `v1.34.2`, `1.34`, `v1.34.2-eks-abc` → `1.34`: the engine's reading of a kubelet version
/// (`KubeletVersion`, one home for the rule), so a version the filter would refuse (malformed, or
/// older than the engine models) is refused here too.
pub fn minor_version(found: &str) -> Option<String> {
    found
        .parse::<kubelet_authz::kubelet::KubeletVersion>()
        .ok()
        .map(|v| v.to_string())
}

async fn read_once(l: &Lookup) -> Result<String, (bool, String)> {
    let uri: http::Uri = l
        .apiserver_url
        .parse()
        .map_err(|e| (false, format!("--apiserver-url {}: {e}", l.apiserver_url)))?;
    let mut config = kube::Config::new(uri);
    config.root_cert_file = Some(l.cluster_ca.clone());
    config.tls_server_name = Some(l.apiserver_name.clone());
    config.connect_timeout = Some(Duration::from_secs(5));
    config.read_timeout = Some(Duration::from_secs(10));
    match &l.auth {
        ApiServerAuth::NodeCert(pem) => {
            config.auth_info.client_certificate = Some(pem.display().to_string());
            config.auth_info.client_key = Some(pem.display().to_string());
        }
        ApiServerAuth::ServiceAccountToken(token) => {
            config.auth_info.token_file = Some(token.display().to_string());
        }
    }
    let client = kube::Client::try_from(config).map_err(|e| (false, format!("{e}")))?;
    let nodes: kube::Api<Node> = kube::Api::all(client);
    let node = nodes.get(&l.node_name).await.map_err(|e| {
        // A refusal (404, 403) will not change with retries; a network error may.
        let final_ = matches!(&e, kube::Error::Api(s) if s.code == 404 || s.code == 403);
        (final_, format!("GET /api/v1/nodes/{}: {e}", l.node_name))
    })?;
    let found = node
        .status
        .and_then(|s| s.node_info)
        .map(|i| i.kubelet_version)
        .unwrap_or_default();
    Ok(found)
}

fn read_state(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    minor_version(text.trim())
}

/// The kubelet's minor version: from the Node (kept in the state file), else the state file.
/// Logs one line per failed attempt to stderr.
pub async fn kubelet_version(l: &Lookup) -> Result<String, VersionError> {
    let mut delay = l.first_delay;
    let mut last = String::new();
    for attempt in 1..=l.attempts.max(1) {
        match read_once(l).await {
            Ok(found) => {
                let v = minor_version(&found).ok_or_else(|| VersionError::BadVersion {
                    node: l.node_name.clone(),
                    found: found.clone(),
                })?;
                if let Some(dir) = l.state_file.parent() {
                    let _ = std::fs::create_dir_all(dir);
                }
                if let Err(e) = std::fs::write(&l.state_file, format!("{found}\n")) {
                    eprintln!(
                        "kubelet-authz-node: cannot keep the kubelet version in {}: {e}",
                        l.state_file.display()
                    );
                }
                return Ok(v);
            }
            Err((final_, message)) => {
                eprintln!(
                    "kubelet-authz-node: reading the kubelet version of node {} (attempt {attempt}): {message}",
                    l.node_name
                );
                if final_ {
                    // A refusal (no such Node, no access) is a configuration error, not an
                    // outage: the last known version does not stand in for it.
                    return Err(VersionError::Refused {
                        node: l.node_name.clone(),
                        message,
                    });
                }
                last = message;
            }
        }
        if attempt < l.attempts {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    }
    match read_state(&l.state_file) {
        Some(v) => {
            eprintln!(
                "kubelet-authz-node: API server unavailable: using the last known kubelet version {v} from {}",
                l.state_file.display()
            );
            Ok(v)
        }
        None => Err(VersionError::Unavailable {
            node: l.node_name.clone(),
            message: last,
            state: l.state_file.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::full("v1.34.2", Some("1.34"))]
    #[case::eks("v1.33.5-eks-113cf36", Some("1.33"))]
    #[case::minor("1.31", Some("1.31"))]
    #[case::build("v1.36.0+k3s1", Some("1.36"))]
    #[case::empty("", None)]
    #[case::major2("v2.0.0", None)]
    #[case::words("latest", None)]
    #[case::too_old("v1.5.2", None)]
    #[case::bad_patch("v1.34.x", None)]
    fn minor_versions(#[case] found: &str, #[case] want: Option<&str>) {
        assert_eq!(minor_version(found).as_deref(), want);
    }

    #[tokio::test]
    async fn an_unreachable_api_server_falls_back_to_the_last_known_version() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("kubelet-version");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut l = Lookup {
            node_name: "worker-1".into(),
            apiserver_url: format!("https://127.0.0.1:{port}"),
            apiserver_name: "kubernetes.default.svc".into(),
            cluster_ca: dir.path().join("ca.crt"),
            auth: ApiServerAuth::ServiceAccountToken(dir.path().join("token")),
            state_file: state.clone(),
            attempts: 2,
            first_delay: Duration::from_millis(10),
        };
        let e = kubelet_version(&l).await.unwrap_err().to_string();
        assert!(e.contains("no last known version"), "{e}");
        std::fs::write(&state, "v1.33.1\n").unwrap();
        l.attempts = 1;
        assert_eq!(kubelet_version(&l).await.unwrap(), "1.33");
    }
}
