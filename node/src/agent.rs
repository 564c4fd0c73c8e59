//! `init` and `run`: the render path of the DaemonSet's pod.
//!
//! `init` (init container) copies the filter module, makes the per-node CA and the proxy's
//! certificate ([`crate::pki`]), reads the kubelet's version ([`crate::version`]) and TLS policy,
//! writes Envoy's bootstrap, SDS and ECDS files ([`crate::bootstrap`],
//! [`crate::filterconfig`]) and the node's values for `run` (`node.json`), then waits until
//! nothing conflicts on the kubelet port ([`crate::portwait`]).
//!
//! `run` (the `agent` container) renews the proxy's certificate and rewrites the ECDS file when
//! the filter ConfigMap changes; a configuration the engine refuses is logged (one line naming
//! the field), counted ([`crate::metrics`], served on `--metrics-socket`) and not written, so
//! Envoy keeps the previous one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::bootstrap::{self, ApiServerAuth, NodeParams};
use crate::cli::{AuthMode, InitArgs, PathArgs, PkiArgs, RunArgs};
use crate::filterconfig::{self, NodeValues};
use crate::metrics::{self, AgentMetrics};
use crate::{kubeconfig, kubeletconfig, pki, portwait, version};

/// What `init` leaves for `run` (`OUTPUT_DIR/node.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeState {
    /// `nodeName`.
    pub node_name: String,
    /// `kubeletVersion`.
    pub kubelet_version: String,
    /// `apiServer.authority`.
    pub apiserver_authority: String,
    /// The module Envoy loads.
    pub filter_wasm: PathBuf,
}

impl NodeState {
    fn values(&self) -> NodeValues {
        NodeValues {
            node_name: self.node_name.clone(),
            kubelet_version: self.kubelet_version.clone(),
            apiserver_authority: self.apiserver_authority.clone(),
        }
    }
}

/// What the proxy takes from the kubelet's effective configuration ([`kubeletconfig::load`]).
struct KubeletView {
    tls: bootstrap::EnvoyTls,
    address: std::net::IpAddr,
    port: u16,
}

impl KubeletView {
    fn load(config: &Path, config_dir: Option<&Path>) -> anyhow::Result<KubeletView> {
        let e = kubeletconfig::load(config, config_dir)?;
        let tls = e.envoy_tls();
        let address = e.address.parse().with_context(|| {
            format!(
                "{}: address: `{}` is not an IP address",
                config.display(),
                e.address
            )
        })?;
        Ok(KubeletView {
            tls: bootstrap::EnvoyTls {
                min_version: tls.tls_minimum_protocol_version,
                cipher_suites: tls.cipher_suites,
            },
            address,
            port: e.port,
        })
    }
}

fn say(msg: impl std::fmt::Display) {
    eprintln!("kubelet-authz-node: {msg}");
}

/// The kubelet's `--config-dir` when none is given: the drop-in directory of the distribution
/// whose configuration `config` is (where `configure` puts the proxy's drop-in: kubeadm's
/// `/etc/kubernetes/kubelet.conf.d`, AL2023's `config.json.d`), else AL2023's; only one that
/// exists (`is_dir`).
fn default_config_dir(config: &Path, is_dir: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    crate::configure::DISTRIBUTIONS
        .iter()
        .filter(|d| Path::new(d.kubelet_config) == config)
        .map(|d| d.config_dir)
        .chain(["/etc/kubernetes/kubelet/config.json.d"])
        .map(PathBuf::from)
        .find(|dir| is_dir(dir))
}

fn first_existing(candidates: &[&str]) -> Option<PathBuf> {
    candidates.iter().map(PathBuf::from).find(|p| p.exists())
}

/// A PEM file holding a certificate and, when `key`, a private key.
fn check_pem(what: &str, path: &Path, key: bool) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{what}: {} is missing or unreadable", path.display()))?;
    if !text.contains("-----BEGIN CERTIFICATE-----") {
        anyhow::bail!("{what}: {} holds no PEM certificate", path.display());
    }
    if key && !text.contains("PRIVATE KEY-----") {
        anyhow::bail!("{what}: {} holds no PEM private key", path.display());
    }
    Ok(())
}

fn ensure_pki(paths: &PathArgs) -> anyhow::Result<()> {
    ensure_pki_in(
        &paths.pki.pki_dir,
        paths.pki.cert_days,
        paths.pki.renew_days,
    )
}

fn ensure_pki_in(dir: &Path, cert_days: u64, renew_days: u64) -> anyhow::Result<()> {
    match pki::ensure_ca(dir).with_context(|| format!("per-node CA in {}", dir.display()))? {
        pki::CaStatus::Created => say(format!("made the per-node CA in {}", dir.display())),
        pki::CaStatus::Kept => {}
    }
    let day = 24 * 3600;
    let status = pki::ensure_proxy_cert(
        dir,
        SystemTime::now(),
        Duration::from_secs(cert_days * day),
        Duration::from_secs(renew_days * day),
    )
    .with_context(|| format!("proxy certificate in {}", dir.display()))?;
    if let pki::ProxyCertStatus::Renewed { file, .. } = status {
        say(format!(
            "issued the proxy certificate {} ({}), valid {} days",
            file.display(),
            pki::PROXY_CN,
            cert_days
        ));
    }
    Ok(())
}

fn copy_wasm(args: &InitArgs) -> anyhow::Result<()> {
    if args.wasm_source == args.filter_wasm {
        return Ok(());
    }
    let tmp = args.filter_wasm.with_extension("wasm.tmp");
    if let Some(dir) = args.filter_wasm.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
    }
    std::fs::copy(&args.wasm_source, &tmp).with_context(|| {
        format!(
            "copying the filter module {} to {}",
            args.wasm_source.display(),
            tmp.display()
        )
    })?;
    std::fs::rename(&tmp, &args.filter_wasm)
        .with_context(|| format!("{}", args.filter_wasm.display()))
}

fn resolve_auth(args: &InitArgs) -> ApiServerAuth {
    let mode = match args.apiserver_auth {
        AuthMode::Auto => {
            let present = args.node_client_cert.exists();
            let mode = if present {
                AuthMode::NodeCert
            } else {
                AuthMode::ServiceaccountToken
            };
            say(format!(
                "APISERVER_AUTH=auto: {} (node client certificate {} {})",
                if present {
                    "node-cert"
                } else {
                    "serviceaccount-token"
                },
                args.node_client_cert.display(),
                if present { "present" } else { "absent" }
            ));
            mode
        }
        m => m,
    };
    match mode {
        AuthMode::NodeCert => ApiServerAuth::NodeCert(args.node_client_cert.clone()),
        _ => ApiServerAuth::ServiceAccountToken(args.apiserver_token.clone()),
    }
}

fn check_credentials(args: &InitArgs, auth: &ApiServerAuth) -> anyhow::Result<()> {
    check_pem("serving certificate", &args.serving_cert, true)?;
    match auth {
        ApiServerAuth::NodeCert(p) => check_pem("node client certificate", p, true)?,
        ApiServerAuth::ServiceAccountToken(p) => {
            let t = std::fs::read_to_string(p).with_context(|| {
                format!(
                    "ServiceAccount token: {} is missing or unreadable (serviceaccount-token mode: is the projected volume mounted?)",
                    p.display()
                )
            })?;
            if t.trim().is_empty() {
                anyhow::bail!("ServiceAccount token: {} is empty", p.display());
            }
        }
    }
    check_pem(
        "proxy certificate",
        &pki::proxy_current_path(&args.paths.pki.pki_dir),
        true,
    )?;
    check_pem("cluster CA", &args.cluster_ca, false)
}

fn block_on<F: std::future::Future>(f: F) -> anyhow::Result<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    Ok(rt.block_on(f))
}

/// `init`.
pub fn init(args: &InitArgs) -> anyhow::Result<()> {
    copy_wasm(args)?;
    ensure_pki(&args.paths)?;
    let auth = resolve_auth(args);
    check_credentials(args, &auth)?;

    // The API server: the kubelet's own control-plane endpoint.
    let server = match &args.apiserver_url {
        Some(url) => {
            kubeconfig::parse_server(url, "--apiserver-url").map_err(anyhow::Error::msg)?
        }
        None => {
            let path = args
                .kubelet_kubeconfig
                .clone()
                .or_else(|| {
                    first_existing(&["/etc/kubernetes/kubelet.conf", "/var/lib/kubelet/kubeconfig"])
                })
                .context("no kubelet kubeconfig (/etc/kubernetes/kubelet.conf, /var/lib/kubelet/kubeconfig): set --kubelet-kubeconfig or --apiserver-url")?;
            kubeconfig::load(&path)?
        }
    };

    // The kubelet's configuration (TLS policy, its own address and port).
    let config = args
        .kubelet_config
        .clone()
        .or_else(|| {
            first_existing(&[
                "/var/lib/kubelet/config.yaml",
                "/etc/kubernetes/kubelet/config.json",
            ])
        })
        .context("no kubelet configuration (/var/lib/kubelet/config.yaml, /etc/kubernetes/kubelet/config.json): set --kubelet-config")?;
    let config_dir = args
        .kubelet_config_dir
        .clone()
        .or_else(|| default_config_dir(&config, |p| p.is_dir()));
    let kubelet = KubeletView::load(&config, config_dir.as_deref())?;

    let kubelet_version = match &args.kubelet_version {
        Some(v) => version::minor_version(v).with_context(|| {
            format!("--kubelet-version: expected a minor version such as 1.34, got `{v}`")
        })?,
        None => {
            say(format!(
                "reading status.nodeInfo.kubeletVersion of node {} from {} ({})",
                args.node_name,
                server.url,
                auth.mode()
            ));
            let lookup = version::Lookup {
                node_name: args.node_name.clone(),
                apiserver_url: server.url.clone(),
                apiserver_name: args.apiserver_name.clone(),
                cluster_ca: args.cluster_ca.clone(),
                auth: auth.clone(),
                state_file: args.state_dir.join(version::STATE_FILE),
                attempts: args.version_attempts,
                first_delay: Duration::from_secs(1),
            };
            block_on(version::kubelet_version(&lookup))??
        }
    };
    say(format!("kubelet version {kubelet_version}"));

    let out = &args.paths.output_dir;
    let params = NodeParams {
        node_name: args.node_name.clone(),
        listen_address: args.listen_address,
        listen_port: args.listen_port,
        metrics_port: args.metrics_port,
        admin_socket: args.admin_socket.clone(),
        agent_socket: args.paths.metrics_socket.clone(),
        sds_dir: out.join("sds"),
        ecds_dir: out.join("ecds"),
        filter_wasm: args.filter_wasm.clone(),
        tls: kubelet.tls.clone(),
        max_connections: args.max_connections,
        max_heap_bytes: args.max_heap_bytes,
        apiserver_host: server.host.clone(),
        apiserver_port: server.port,
        apiserver_name: args.apiserver_name.clone(),
        auth: auth.clone(),
        serving_cert: args.serving_cert.clone(),
        proxy_cert: pki::proxy_current_path(&args.paths.pki.pki_dir),
        cluster_ca: args.cluster_ca.clone(),
        kubelet_address: args.kubelet_address,
        kubelet_port: args.kubelet_port.unwrap_or(kubelet.port),
        kubelet_server_name: args
            .kubelet_server_name
            .clone()
            .unwrap_or_else(|| args.node_name.clone()),
        upstream_max_connection_age_s: args.upstream_max_connection_age.as_secs(),
        handshake_timeout_s: args.handshake_timeout.as_secs().max(1),
        request_headers_timeout_s: args.request_headers_timeout.as_secs().max(1),
    };
    let state = NodeState {
        node_name: args.node_name.clone(),
        kubelet_version: kubelet_version.clone(),
        apiserver_authority: args.apiserver_name.clone(),
        filter_wasm: args.filter_wasm.clone(),
    };
    // The filter configuration first: a bad ConfigMap fails the init container (naming the
    // field) before a bootstrap exists.
    let json = filterconfig::write_ecds(
        &args.paths.filter_config,
        &state.values(),
        &args.filter_wasm,
        &params.ecds_dir,
    )?;
    let enforcement = serde_json::from_str::<serde_json::Value>(&json)
        .ok()
        .and_then(|v| {
            v.get("enforcement")
                .and_then(|e| e.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "Enforce".into());
    bootstrap::write_all(out, &params, &bootstrap::render(&params))?;
    let node_json = serde_json::to_value(&state).context("node.json")?;
    std::fs::write(
        out.join("node.json"),
        serde_json::to_string_pretty(&node_json).context("node.json")?,
    )
    .with_context(|| format!("{}", out.join("node.json").display()))?;
    say(format!(
        "wrote {} for node {} (kubelet {}, {}, API server {}:{} with {}, TLS {})",
        out.join("envoy.yaml").display(),
        args.node_name,
        kubelet_version,
        enforcement,
        server.host,
        server.port,
        auth.mode(),
        kubelet.tls.min_version
    ));

    if args.wait_for_port {
        wait_for_port(args, &config, config_dir.as_deref())?;
    }
    Ok(())
}

fn wait_for_port(args: &InitArgs, config: &Path, config_dir: Option<&Path>) -> anyhow::Result<()> {
    let mut n = 0u64;
    loop {
        // Read again each time: `configure` may move the kubelet meanwhile.
        let configured = KubeletView::load(config, config_dir)?.address;
        let listeners = portwait::read_listeners(&args.proc_net);
        let wildcard = portwait::conflicts(&listeners, args.listen_port);
        let not_moved = !configured.is_loopback();
        if wildcard.is_empty() && !not_moved {
            return Ok(());
        }
        if n % 30 == 0 {
            if not_moved {
                say(format!(
                    "waiting: the kubelet is configured on {configured} in {} (not loopback): move it to 127.0.0.1 (docs/DEPLOY.md)",
                    config.display()
                ));
            } else {
                say(format!(
                    "waiting: {} listens on port {} (the kubelet on a wildcard address?): only 127.0.0.1 and this node's IP may (docs/DEPLOY.md)",
                    wildcard
                        .iter()
                        .map(|l| l.address.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    args.listen_port
                ));
            }
        }
        n += 1;
        std::thread::sleep(Duration::from_secs(2));
    }
}

fn read_state(out: &Path) -> anyhow::Result<NodeState> {
    let p = out.join("node.json");
    let text = std::fs::read_to_string(&p).with_context(|| {
        format!(
            "{}: written by `init`; did the init container run?",
            p.display()
        )
    })?;
    serde_json::from_str(&text).with_context(|| format!("{}", p.display()))
}

/// One pass of `run`: rewrite the ECDS file when the ConfigMap's content changed. `last` is the
/// content last acted on (written or refused). Answers whether the content was accepted; counts
/// acceptances, writes and refusals in `counters`.
pub fn sync_filter(
    paths: &PathArgs,
    state: &NodeState,
    last: &mut Option<String>,
    counters: &AgentMetrics,
) -> bool {
    let text = match std::fs::read_to_string(&paths.filter_config) {
        Ok(t) => t,
        Err(e) => {
            if last.as_deref() != Some("") {
                say(format!(
                    "{}: {e}; the filter keeps its current configuration",
                    paths.filter_config.display()
                ));
                *last = Some(String::new());
            }
            return false;
        }
    };
    if last.as_deref() == Some(text.as_str()) {
        return false;
    }
    *last = Some(text);
    let target = paths.output_dir.join("ecds").join(bootstrap::ECDS_FILE);
    let before = std::fs::read(&target).ok();
    match filterconfig::write_ecds(
        &paths.filter_config,
        &state.values(),
        &state.filter_wasm,
        &paths.output_dir.join("ecds"),
    ) {
        Ok(json) => {
            let written = std::fs::read(&target).ok() != before;
            counters.accepted(written);
            let enforcement = serde_json::from_str::<serde_json::Value>(&json)
                .ok()
                .and_then(|v| {
                    v.get("enforcement")
                        .and_then(|e| e.as_str())
                        .map(str::to_string)
                })
                .unwrap_or_else(|| "Enforce".into());
            if written {
                say(format!(
                    "filter configuration written to {} ({enforcement})",
                    target.display()
                ));
            } else {
                say(format!(
                    "filter configuration unchanged in {} ({enforcement})",
                    target.display()
                ));
            }
            true
        }
        Err(e) => {
            counters.refused();
            say(format!(
                "filter configuration REFUSED (counted in {}), the previous one keeps serving: {e}",
                metrics::FILTER_CONFIG_REFUSALS_TOTAL
            ));
            false
        }
    }
}

/// `run`: until SIGTERM.
pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    let state = read_state(&args.paths.output_dir)?;
    let counters = Arc::new(AgentMetrics::default());
    let listener = metrics::bind(&args.paths.metrics_socket)?;
    metrics::spawn(listener, counters.clone());
    // Checked at start too (the ConfigMap may have changed since `init`); an unchanged
    // configuration is not rewritten.
    let mut last = None;
    let poll = Duration::from_secs(args.poll_seconds.max(1));
    let renew_every = Duration::from_secs(args.renew_check_seconds.max(1));
    let mut next_renew = std::time::Instant::now() + renew_every;
    say(format!(
        "watching {} every {}s; proxy certificate checked every {}s; metrics on {}",
        args.paths.filter_config.display(),
        poll.as_secs(),
        renew_every.as_secs(),
        args.paths.metrics_socket.display()
    ));
    loop {
        sync_filter(&args.paths, &state, &mut last, &counters);
        if std::time::Instant::now() >= next_renew {
            if let Err(e) = ensure_pki(&args.paths) {
                counters.renewal_failed();
                say(format!(
                    "proxy certificate renewal failed (retrying): {e:#}"
                ));
            }
            next_renew = std::time::Instant::now() + renew_every;
        }
        std::thread::sleep(poll);
    }
}

/// `pki`: the per-node CA and the proxy's certificate only; with `--renew-every`, until SIGTERM.
pub fn pki(args: &PkiArgs) -> anyhow::Result<()> {
    ensure_pki_in(&args.pki.pki_dir, args.pki.cert_days, args.pki.renew_days)?;
    if let Some(port) = args.wait_for_port {
        let mut said = false;
        loop {
            let wildcard = portwait::conflicts(&portwait::read_listeners(&args.proc_net), port);
            if wildcard.is_empty() {
                say(format!(
                    "port {port}: no wildcard listener, the gateway may bind it"
                ));
                return Ok(());
            }
            if !said {
                say(format!(
                    "waiting: the per-node CA is in {}; {} listens on port {port} (the kubelet not yet on 127.0.0.1): move the kubelet (docs/DEPLOY.md, \"Istio\")",
                    args.pki.pki_dir.display(),
                    wildcard
                        .iter()
                        .map(|l| l.address.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                said = true;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let Some(every) = args.renew_every else {
        return Ok(());
    };
    loop {
        std::thread::sleep(Duration::from(every).max(Duration::from_secs(1)));
        if let Err(e) = ensure_pki_in(&args.pki.pki_dir, args.pki.cert_days, args.pki.renew_days) {
            say(format!(
                "proxy certificate renewal failed (retrying): {e:#}"
            ));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::kubeadm_configured(
        "/var/lib/kubelet/config.yaml",
        &["/etc/kubernetes/kubelet.conf.d"],
        Some("/etc/kubernetes/kubelet.conf.d")
    )]
    #[case::kubeadm_not_configured("/var/lib/kubelet/config.yaml", &[], None)]
    #[case::eks("/etc/kubernetes/kubelet/config.json", &["/etc/kubernetes/kubelet/config.json.d"], Some("/etc/kubernetes/kubelet/config.json.d"))]
    #[case::eks_no_dropins("/etc/kubernetes/kubelet/config.json", &[], None)]
    #[case::kubeadm_dir_not_for_eks(
        "/etc/kubernetes/kubelet/config.json",
        &["/etc/kubernetes/kubelet.conf.d"],
        None
    )]
    #[case::other_config_al2023_dir(
        "/srv/kubelet.yaml",
        &["/etc/kubernetes/kubelet/config.json.d", "/etc/kubernetes/kubelet.conf.d"],
        Some("/etc/kubernetes/kubelet/config.json.d")
    )]
    #[case::other_config_kubeadm_dir_ignored("/srv/kubelet.yaml", &["/etc/kubernetes/kubelet.conf.d"], None)]
    fn default_config_dir_follows_the_distribution(
        #[case] config: &str,
        #[case] dirs: &[&str],
        #[case] want: Option<&str>,
    ) {
        let got = default_config_dir(Path::new(config), |p| {
            dirs.iter().any(|d| Path::new(d) == p)
        });
        assert_eq!(got, want.map(PathBuf::from));
    }
}
