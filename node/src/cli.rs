//! The command line: `inspect`, `init`, `run`, `configure`, `unconfigure`, `drain`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The node agent of the kubelet-authz DaemonSet.
#[derive(Debug, Parser)]
#[command(name = "kubelet-authz-node", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the kubelet's effective configuration and what the proxy derives from it.
    Inspect(InspectArgs),
    /// Opt-in privileged mode: put the kubelet behind the proxy (per-node CA, drop-in, restart,
    /// verify; rolls back by itself when the kubelet does not come back).
    Configure(crate::configure::ConfigureArgs),
    /// Undo `configure`: the node's files back byte for byte, the kubelet on its own address.
    Unconfigure(crate::configure::ConfigureArgs),
    /// The init container: copy the filter module, make the per-node CA and the proxy's
    /// certificate, read the kubelet's version and configuration, render Envoy's bootstrap, SDS
    /// and ECDS files, and wait until nothing conflicts with the proxy on the kubelet port.
    Init(Box<InitArgs>),
    /// The agent container: renew the proxy's certificate and rewrite the ECDS filter file when
    /// the filter ConfigMap changes (until SIGTERM).
    Run(RunArgs),
    /// Only the per-node CA and the proxy's certificate (the Istio gateway form): make them when
    /// missing, renew the certificate when due; with `--renew-every`, keep doing so.
    Pki(PkiArgs),
    /// The preStop hook: drain Envoy's kubelet listener (new connections go to the new pod),
    /// then wait until its connections end or the deadline passes.
    Drain(DrainArgs),
    /// The Istio form: print the per-node objects (Gateway, WasmPlugin or TrafficExtension, VirtualServices,
    /// DestinationRule, gateway Deployment) of every node labelled
    /// `kubelet-authz.io/proxy=enabled` in a `kubectl get nodes -o json` List.
    IstioObjects(IstioObjectsArgs),
}

/// `istio-objects`.
#[derive(Debug, clap::Args)]
pub struct IstioObjectsArgs {
    /// The output of `kubectl get nodes -o json` (`-`: standard input).
    #[arg(long)]
    pub nodes: PathBuf,
    /// The kubelets' `--config` file (YAML or JSON, as on the nodes): the Gateways get its
    /// `tlsMinVersion` and `tlsCipherSuites`; without it, the template's (TLS 1.2, Envoy's
    /// ciphers). One file for all the labelled nodes: generate per node pool when they differ.
    #[arg(long)]
    pub kubelet_config: Option<PathBuf>,
    /// The kubelets' `--config-dir` (drop-ins), with `--kubelet-config`.
    #[arg(long, requires = "kubelet_config")]
    pub config_dir: Option<PathBuf>,
    /// The Istio API that attaches the filter: `WasmPlugin` (default), or `TrafficExtension`
    /// (Istio 1.30 and newer; the same module and plugin configuration).
    #[arg(long, value_enum, default_value = "WasmPlugin")]
    pub extension_api: ExtensionApiArg,
}

/// `--extension-api`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExtensionApiArg {
    /// `extensions.istio.io/v1alpha1` `WasmPlugin`.
    #[value(name = "WasmPlugin")]
    WasmPlugin,
    /// `extensions.istio.io/v1alpha1` `TrafficExtension` (Istio 1.30+).
    #[value(name = "TrafficExtension")]
    TrafficExtension,
}

impl From<ExtensionApiArg> for crate::istio::ExtensionApi {
    fn from(a: ExtensionApiArg) -> Self {
        match a {
            ExtensionApiArg::WasmPlugin => Self::WasmPlugin,
            ExtensionApiArg::TrafficExtension => Self::TrafficExtension,
        }
    }
}

/// `inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The kubelet's `--config` file (YAML or JSON).
    #[arg(long)]
    pub kubelet_config: std::path::PathBuf,
    /// The kubelet's `--config-dir` (drop-ins: `*.conf`, lexical order, later wins).
    #[arg(long)]
    pub config_dir: Option<std::path::PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, default_value = "json")]
    pub output: String,
}

/// The per-node CA and the proxy's certificate: where, how long, when renewed (`init`, `run`,
/// `pki`).
#[derive(Debug, Clone, clap::Args)]
pub struct PkiSettings {
    /// Their directory (`ca.crt`, `ca.key`, `proxy-current.pem`).
    #[arg(long, env = "PKI_DIR", default_value = crate::pki::DEFAULT_DIR)]
    pub pki_dir: PathBuf,
    /// Validity of a proxy certificate, days.
    #[arg(long, env = "CERT_DAYS", default_value_t = 30)]
    pub cert_days: u64,
    /// A proxy certificate with fewer days left is renewed.
    #[arg(long, env = "RENEW_DAYS", default_value_t = 20)]
    pub renew_days: u64,
}

/// Where the pod's files are, shared by `init` and `run`.
#[derive(Debug, Clone, clap::Args)]
pub struct PathArgs {
    /// Where Envoy's files are written: `envoy.yaml`, `sds/`, `ecds/`, `node.json`.
    #[arg(long, env = "OUTPUT_DIR", default_value = "/rendered")]
    pub output_dir: PathBuf,
    /// The cluster-wide filter settings (the `kubelet-authz-filter` ConfigMap's `filter.yaml`).
    #[arg(
        long,
        env = "FILTER_CONFIG",
        default_value = "/etc/kubelet-authz/filter/filter.yaml"
    )]
    pub filter_config: PathBuf,
    /// The per-node CA and the proxy's certificate.
    #[command(flatten)]
    pub pki: PkiSettings,
    /// The agent's metrics socket (in the directory shared with Envoy, which serves it as
    /// `/metrics/agent` on the metrics port).
    #[arg(
        long,
        env = "METRICS_SOCKET",
        default_value = "/run/kubelet-authz/agent.sock"
    )]
    pub metrics_socket: PathBuf,
}

/// `init`.
#[derive(Debug, Clone, clap::Args)]
pub struct InitArgs {
    /// The Node object's name (downward API `spec.nodeName`).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    /// The node IP Envoy listens on (downward API `status.hostIP`; IPv4 or IPv6).
    #[arg(long, env = "LISTEN_ADDRESS")]
    pub listen_address: IpAddr,
    /// The kubelet port on the node IP.
    #[arg(long, env = "LISTEN_PORT", default_value_t = 10250)]
    pub listen_port: u16,
    /// The metrics and health listener's port (`/stats/prometheus`, `/ready`, `/live`).
    #[arg(long, env = "METRICS_PORT", default_value_t = 9977)]
    pub metrics_port: u16,
    /// Envoy's admin unix socket.
    #[arg(
        long,
        env = "ADMIN_SOCKET",
        default_value = "/run/kubelet-authz/admin.sock"
    )]
    pub admin_socket: PathBuf,
    /// The filter module in the image.
    #[arg(long, env = "WASM_SOURCE", default_value = "/plugin.wasm")]
    pub wasm_source: PathBuf,
    /// Where Envoy reads the filter module (copied from `--wasm-source` unless the same file).
    #[arg(long, env = "FILTER_WASM", default_value = "/wasm/plugin.wasm")]
    pub filter_wasm: PathBuf,
    /// The files of the pod.
    #[command(flatten)]
    pub paths: PathArgs,
    /// The kubelet's configuration file; default: the first of
    /// `/var/lib/kubelet/config.yaml` (kubeadm) and `/etc/kubernetes/kubelet/config.json`
    /// (EKS AL2023) that exists.
    #[arg(long, env = "KUBELET_CONFIG")]
    pub kubelet_config: Option<PathBuf>,
    /// The kubelet's `--config-dir`; default: the drop-in directory `configure` uses for the
    /// distribution of `--kubelet-config` (`/etc/kubernetes/kubelet.conf.d` for kubeadm,
    /// `/etc/kubernetes/kubelet/config.json.d` for EKS AL2023) when it exists, else
    /// `/etc/kubernetes/kubelet/config.json.d` when it exists.
    #[arg(long, env = "KUBELET_CONFIG_DIR")]
    pub kubelet_config_dir: Option<PathBuf>,
    /// The kubelet's kubeconfig (its `server:` is the API server); default: the first of
    /// `/etc/kubernetes/kubelet.conf` (kubeadm) and `/var/lib/kubelet/kubeconfig` (EKS) that
    /// exists.
    #[arg(long, env = "KUBELET_KUBECONFIG")]
    pub kubelet_kubeconfig: Option<PathBuf>,
    /// The API server (`https://host:port`); default: the kubelet kubeconfig's `server:`.
    #[arg(long, env = "APISERVER_URL")]
    pub apiserver_url: Option<String>,
    /// The name checked in the API server's certificate (and the reviews' `:authority`).
    #[arg(long, env = "APISERVER_NAME", default_value = "kubernetes.default.svc")]
    pub apiserver_name: String,
    /// The credential towards the API server: `node-cert`, `serviceaccount-token`, or `auto`
    /// (node-cert when `--node-client-cert` exists).
    #[arg(long, env = "APISERVER_AUTH", default_value = "auto")]
    pub apiserver_auth: AuthMode,
    /// The node's kubelet client certificate (certificate and key in one PEM).
    #[arg(
        long,
        env = "NODE_CLIENT_CERT",
        default_value = "/var/lib/kubelet/pki/kubelet-client-current.pem"
    )]
    pub node_client_cert: PathBuf,
    /// The pod's projected ServiceAccount token (serviceaccount-token mode).
    #[arg(
        long,
        env = "APISERVER_TOKEN",
        default_value = "/var/run/secrets/kubelet-authz/token"
    )]
    pub apiserver_token: PathBuf,
    /// The kubelet's serving certificate (certificate and key in one PEM), served as is.
    #[arg(
        long,
        env = "SERVING_CERT",
        default_value = "/var/lib/kubelet/pki/kubelet-server-current.pem"
    )]
    pub serving_cert: PathBuf,
    /// The cluster CA.
    #[arg(long, env = "CLUSTER_CA", default_value = "/etc/kubernetes/pki/ca.crt")]
    pub cluster_ca: PathBuf,
    /// Where the last known kubelet version is kept.
    #[arg(long, env = "STATE_DIR", default_value = "/var/lib/kubelet-authz")]
    pub state_dir: PathBuf,
    /// The kubelet's minor version (e.g. `1.34`); default: read from the Node object.
    #[arg(long, env = "KUBELET_VERSION")]
    pub kubelet_version: Option<String>,
    /// Attempts at reading the Node before the last known version is used.
    #[arg(long, env = "VERSION_ATTEMPTS", default_value_t = 5)]
    pub version_attempts: u32,
    /// Downstream connection cap (the kubelet listener; the upstream breakers follow it).
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: u64,
    /// Heap size at which Envoy stops accepting requests (98%; keep it below the memory limit).
    #[arg(long, env = "MAX_HEAP_BYTES", default_value_t = 335_544_320)]
    pub max_heap_bytes: u64,
    /// The real kubelet's address.
    #[arg(long, env = "KUBELET_ADDRESS", default_value = "127.0.0.1")]
    pub kubelet_address: IpAddr,
    /// The real kubelet's port; default: the `port` of its configuration (10250).
    #[arg(long, env = "KUBELET_PORT")]
    pub kubelet_port: Option<u16>,
    /// The name in the kubelet's serving certificate; default: the node name.
    #[arg(long, env = "KUBELET_SERVER_NAME")]
    pub kubelet_server_name: Option<String>,
    /// Age after which an upstream connection takes no new requests (e.g. `3600s`, `1h`).
    #[arg(long, env = "UPSTREAM_MAX_CONNECTION_AGE", default_value = "3600s")]
    pub upstream_max_connection_age: humantime::Duration,
    /// Time a downstream connection has to finish its TLS handshake.
    #[arg(long, env = "HANDSHAKE_TIMEOUT", default_value = "10s")]
    pub handshake_timeout: humantime::Duration,
    /// Time a downstream request has to send its headers.
    #[arg(long, env = "REQUEST_HEADERS_TIMEOUT", default_value = "10s")]
    pub request_headers_timeout: humantime::Duration,
    /// Wait until nothing conflicts with the proxy on the kubelet port (`false`: render only).
    #[arg(long, env = "WAIT_FOR_PORT", default_value_t = true, action = clap::ArgAction::Set)]
    pub wait_for_port: bool,
    /// Where `tcp` and `tcp6` are read from.
    #[arg(long, env = "PROC_NET", default_value = "/proc/net")]
    pub proc_net: PathBuf,
}

/// `run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// The files of the pod.
    #[command(flatten)]
    pub paths: PathArgs,
    /// How often the filter ConfigMap file is read, seconds.
    #[arg(long, env = "POLL_SECONDS", default_value_t = 2)]
    pub poll_seconds: u64,
    /// How often the proxy certificate is checked for renewal, seconds.
    #[arg(long, env = "RENEW_CHECK_SECONDS", default_value_t = 3600)]
    pub renew_check_seconds: u64,
}

/// `pki`.
#[derive(Debug, Clone, clap::Args)]
pub struct PkiArgs {
    /// The per-node CA and the proxy's certificate.
    #[command(flatten)]
    pub pki: PkiSettings,
    /// Keep running and check this often (`1h`); without it, check once and exit.
    #[arg(long)]
    pub renew_every: Option<humantime::Duration>,
    /// The Istio gateway's start order: after the CA exists, wait until no wildcard listener
    /// holds this port (the kubelet moved to loopback) before exiting, so that the gateway proxy
    /// starts only when it can bind `NODE_IP:PORT`. Not with `--renew-every`.
    #[arg(long, conflicts_with = "renew_every")]
    pub wait_for_port: Option<u16>,
    /// Where the node's listening sockets are read (`tcp`, `tcp6`; the pod is on the host network).
    #[arg(long, env = "PROC_NET", default_value = "/proc/net")]
    pub proc_net: PathBuf,
}

/// `drain`.
#[derive(Debug, Clone, clap::Args)]
pub struct DrainArgs {
    /// Envoy's admin unix socket.
    #[arg(
        long,
        env = "ADMIN_SOCKET",
        default_value = "/run/kubelet-authz/admin.sock"
    )]
    pub admin_socket: PathBuf,
    /// The longest wait for the kubelet listener's connections to end (`570s`, `10m`);
    /// keep it below the pod's grace period.
    #[arg(long, env = "DRAIN_DEADLINE", default_value = "870s")]
    pub deadline: humantime::Duration,
}

/// `--apiserver-auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// node-cert when the node's client certificate exists, serviceaccount-token otherwise.
    Auto,
    /// The node's own kubelet client certificate.
    NodeCert,
    /// The pod's projected ServiceAccount token.
    ServiceaccountToken,
}

/// Run one command line; the exit code on success (a finding may be exit 1).
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Inspect(args) => crate::kubeletconfig::inspect(&args),
        Command::Configure(args) => crate::configure::run_configure(&args),
        Command::Unconfigure(args) => crate::configure::run_unconfigure(&args),
        Command::Init(args) => crate::agent::init(&args).map(|()| ExitCode::SUCCESS),
        Command::Run(args) => crate::agent::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Pki(args) => crate::agent::pki(&args).map(|()| ExitCode::SUCCESS),
        Command::Drain(args) => crate::drain::drain(&args).map(|()| ExitCode::SUCCESS),
        Command::IstioObjects(args) => istio_objects(&args).map(|()| ExitCode::SUCCESS),
    }
}

fn istio_objects(args: &IstioObjectsArgs) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use std::io::{Read as _, Write as _};
    let file = args.nodes.display().to_string();
    let text = if file == "-" {
        let mut t = String::new();
        std::io::stdin()
            .read_to_string(&mut t)
            .context("--nodes -: reading standard input")?;
        t
    } else {
        std::fs::read_to_string(&args.nodes).with_context(|| format!("--nodes {file}"))?
    };
    let nodes = crate::istio::parse_node_list(&file, &text)?;
    let tls = match &args.kubelet_config {
        Some(config) => {
            let e = crate::kubeletconfig::load(config, args.config_dir.as_deref())?;
            let t = e.envoy_tls();
            Some(crate::istio::GatewayTls {
                min_version: t.tls_minimum_protocol_version,
                cipher_suites: t.cipher_suites,
            })
        }
        None => None,
    };
    let objects = crate::istio::objects_for(&nodes, tls.as_ref(), args.extension_api.into())?;
    if objects.is_empty() {
        eprintln!(
            "kubelet-authz-node: no node in {file} is labelled {}={}: nothing printed",
            crate::istio::NODE_LABEL,
            crate::istio::NODE_LABEL_VALUE
        );
    }
    let yaml = crate::istio::to_yaml(&objects).context("writing the objects as YAML")?;
    std::io::stdout()
        .write_all(yaml.as_bytes())
        .context("standard output")?;
    Ok(())
}
