//! The kubelet's kubeconfig, read with serde (not awk): the API server the kubelet itself uses
//! (`clusters[].cluster.server` of the current context's cluster, or the only cluster).

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A kubeconfig problem, naming the file and the field.
#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    /// Unreadable.
    #[error("{path}: {source} (or set --apiserver-url)")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Not a kubeconfig.
    #[error("{path}: {message} (or set --apiserver-url)")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the field.
        message: String,
    },
}

#[derive(Deserialize)]
struct Kubeconfig {
    #[serde(default)]
    clusters: Vec<NamedCluster>,
    #[serde(default)]
    contexts: Vec<NamedContext>,
    #[serde(default, rename = "current-context")]
    current_context: Option<String>,
}

#[derive(Deserialize)]
struct NamedCluster {
    #[serde(default)]
    name: String,
    cluster: Cluster,
}

#[derive(Deserialize)]
struct Cluster {
    #[serde(default)]
    server: Option<String>,
}

#[derive(Deserialize)]
struct NamedContext {
    name: String,
    context: Context,
}

#[derive(Deserialize)]
struct Context {
    cluster: String,
}

/// An API server URL split for Envoy: `https://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl {
    /// The URL as written.
    pub url: String,
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// Port (443 when absent).
    pub port: u16,
}

/// Split `https://host[:port][/path]`; `field` names where it came from in errors.
pub fn parse_server(url: &str, field: &str) -> Result<ServerUrl, String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| format!("{field}: expected https://host:port, got `{url}`"))?;
    let hostport = rest.split('/').next().unwrap_or_default();
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{field}: unclosed `[` in `{url}`"))?;
        match after.strip_prefix(':') {
            Some(p) => (h, Some(p)),
            None if after.is_empty() => (h, None),
            None => return Err(format!("{field}: unexpected `{after}` in `{url}`")),
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{field}: no host in `{url}`"));
    }
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| format!("{field}: port `{p}` in `{url}` is not a port number"))?,
        None => 443,
    };
    Ok(ServerUrl {
        url: url.to_string(),
        host: host.to_string(),
        port,
    })
}

/// The `server:` of the kubeconfig's current cluster (or its only cluster).
pub fn server_of(text: &str, path: &Path) -> Result<ServerUrl, KubeconfigError> {
    let invalid = |message: String| KubeconfigError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let kc: Kubeconfig =
        serde_yaml_ng::from_str(text).map_err(|e| invalid(format!("not a kubeconfig: {e}")))?;
    let wanted = kc.current_context.as_ref().and_then(|cur| {
        kc.contexts
            .iter()
            .find(|c| &c.name == cur)
            .map(|c| c.context.cluster.clone())
    });
    let cluster =
        match wanted {
            Some(name) => kc.clusters.iter().find(|c| c.name == name).ok_or_else(|| {
                invalid(format!("clusters: no cluster `{name}` (current-context)"))
            })?,
            None => match kc.clusters.as_slice() {
                [only] => only,
                [] => return Err(invalid("clusters: none".into())),
                _ => {
                    return Err(invalid(
                        "current-context: several clusters and no current context".into(),
                    ))
                }
            },
        };
    let server = cluster.cluster.server.as_deref().ok_or_else(|| {
        invalid(format!(
            "clusters[{}].cluster.server: missing",
            cluster.name
        ))
    })?;
    parse_server(
        server,
        &format!("clusters[{}].cluster.server", cluster.name),
    )
    .map_err(invalid)
}

/// Read `path` and answer its API server.
pub fn load(path: &Path) -> Result<ServerUrl, KubeconfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| KubeconfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    server_of(&text, path)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rstest::rstest;

    const KUBEADM: &str = "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: AAAA\n    server: https://10.0.0.10:6443\n  name: default-cluster\ncontexts:\n- context:\n    cluster: default-cluster\n    namespace: default\n    user: default-auth\n  name: default-context\ncurrent-context: default-context\nkind: Config\npreferences: {}\nusers:\n- name: default-auth\n  user:\n    client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem\n";

    #[rstest]
    #[case::kubeadm(KUBEADM, "10.0.0.10", 6443)]
    #[case::only_cluster(
        "clusters:\n- name: a\n  cluster: {server: \"https://api.example.com\"}\n",
        "api.example.com",
        443
    )]
    #[case::eks("clusters:\n- name: kubernetes\n  cluster:\n    server: https://ABC.gr7.eu-west-1.eks.amazonaws.com\ncontexts:\n- name: kubelet\n  context: {cluster: kubernetes, user: kubelet}\ncurrent-context: kubelet\nusers:\n- name: kubelet\n  user: {exec: {command: aws}}\n", "ABC.gr7.eu-west-1.eks.amazonaws.com", 443)]
    #[case::ipv6(
        "clusters:\n- name: a\n  cluster: {server: 'https://[fd00::1]:6443'}\n",
        "fd00::1",
        6443
    )]
    #[case::two_clusters_current("clusters:\n- {name: a, cluster: {server: 'https://a:1'}}\n- {name: b, cluster: {server: 'https://b:2'}}\ncontexts:\n- {name: c, context: {cluster: b}}\ncurrent-context: c\n", "b", 2)]
    fn server_is_read(#[case] text: &str, #[case] host: &str, #[case] port: u16) {
        let s = server_of(text, Path::new("kubelet.conf")).unwrap();
        assert_eq!((s.host.as_str(), s.port), (host, port));
    }

    #[rstest]
    #[case::http(
        "clusters:\n- {name: a, cluster: {server: 'http://a:1'}}\n",
        "expected https://"
    )]
    #[case::no_server(
        "clusters:\n- {name: a, cluster: {}}\n",
        "clusters[a].cluster.server: missing"
    )]
    #[case::none("clusters: []\n", "clusters: none")]
    #[case::ambiguous("clusters:\n- {name: a, cluster: {server: 'https://a'}}\n- {name: b, cluster: {server: 'https://b'}}\n", "current-context")]
    #[case::bad_port(
        "clusters:\n- {name: a, cluster: {server: 'https://a:99999'}}\n",
        "not a port number"
    )]
    #[case::not_yaml("clusters: [", "not a kubeconfig")]
    fn bad_kubeconfigs_name_the_field(#[case] text: &str, #[case] want: &str) {
        let e = server_of(text, Path::new("/etc/kubernetes/kubelet.conf"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{e}");
        assert!(e.starts_with("/etc/kubernetes/kubelet.conf: "), "{e}");
    }
}
