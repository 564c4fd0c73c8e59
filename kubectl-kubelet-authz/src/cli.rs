//! The command line: clap definitions only. Raw flags are resolved into plans by the command
//! modules; nothing here decides anything.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Who may reach which kubelet endpoint, and why.
#[derive(Debug, Parser)]
#[command(
    name = "kubectl-kubelet_authz",
    bin_name = "kubectl kubelet-authz",
    version,
    about = "Who may reach which kubelet endpoint: can-i, who-can, RBAC audit for nodes/proxy, least-privilege roles, kubelet config checks",
    after_help = "Exit codes: 0 allowed / passed, 1 denied / findings, 2 usage or input error, 3 cluster or API error.\n\nOffline (any --rbac-file): RBAC YAML/JSON is evaluated locally, no cluster needed.\nOnline (no --rbac-file): the current kubeconfig context is used, as kubectl does."
)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Whether a user may send a request to a kubelet path, and through which nodes/<subresource>
    #[command(
        after_help = CAN_I_EXAMPLES,
        override_usage = "kubectl kubelet-authz can-i [OPTIONS] [VERB] PATH\n       kubectl kubelet-authz can-i --list [OPTIONS]"
    )]
    CanI(CanIArgs),
    /// Subjects whose RBAC bindings let them send a request to a kubelet path
    #[command(
        after_help = WHO_CAN_EXAMPLES,
        override_usage = "kubectl kubelet-authz who-can [OPTIONS] [VERB] PATH"
    )]
    WhoCan(WhoCanArgs),
    /// Roles and bindings that grant nodes/proxy (which means exec in every pod), with severity
    #[command(after_help = AUDIT_EXAMPLES)]
    Audit(AuditArgs),
    /// A least-privilege ClusterRole (YAML) for kubelet endpoints, without nodes/proxy
    #[command(after_help = SUGGEST_EXAMPLES)]
    SuggestRole(SuggestRoleArgs),
    /// Check a KubeletConfiguration (or kubelet command line) against the CIS kubelet items, or
    /// (--behind-proxy) against the profile of a kubelet only the proxy can reach
    #[command(after_help = CHECK_CONFIG_EXAMPLES)]
    CheckConfig(CheckConfigArgs),
    /// Who gains or loses access to which kubelet endpoint between two kubelet versions
    #[command(after_help = IMPACT_EXAMPLES)]
    Impact(ImpactArgs),
    /// Summarise the filter's audit log lines (enforced and shadow runs)
    #[command(after_help = AUDIT_LOG_EXAMPLES)]
    AuditLog(AuditLogArgs),
    /// Print a shell completion script
    #[command(after_help = COMPLETION_EXAMPLES)]
    Completion(CompletionArgs),
}

const CAN_I_EXAMPLES: &str = "Examples:
  # Offline: may the Prometheus ServiceAccount read /pods on a 1.36 kubelet?
  kubectl kubelet-authz can-i get /pods --as system:serviceaccount:monitoring:prometheus --rbac-file rbac.yaml

  # HTTP methods work too; HEAD gives the empty verb, which only `*` grants
  kubectl kubelet-authz can-i HEAD /healthz --as alice --rbac-file rbac.yaml

  # A WebSocket exec (GET + upgrade): verb create with the filter's strict upgrade (default)
  kubectl kubelet-authz can-i GET /exec/default/web/app --upgrade --as alice --rbac-file rbac.yaml

  # Every check, with reasons, on a 1.33 kubelet with the gate off
  kubectl kubelet-authz can-i /pods --as alice --rbac-file rbac.yaml --kubelet-version 1.33 \\
      --feature-gates KubeletFineGrainedAuthz=false -o wide

  # Every kubelet endpoint at once
  kubectl kubelet-authz can-i --list --as alice --rbac-file rbac.yaml

  # Online: as yourself (SelfSubjectAccessReview), kubelet version read from the Node
  kubectl kubelet-authz can-i /metrics --node worker-1";

const WHO_CAN_EXAMPLES: &str = "Examples:
  # Who can exec (WebSocket) into pods through the kubelet?
  kubectl kubelet-authz who-can GET /exec/ns/pod/ctr --upgrade --rbac-file rbac.yaml

  # Who can read /pods on node worker-1 (resourceNames rules count only for that name)?
  kubectl kubelet-authz who-can /pods --node worker-1 --rbac-file rbac.yaml -o json";

const AUDIT_EXAMPLES: &str = "Examples:
  # Audit RBAC files; fail the CI job on any high or critical finding
  kubectl kubelet-authz audit --rbac-file cluster-rbac.yaml --fail-on high

  # Audit the live cluster (needs list on roles, clusterroles and their bindings)
  kubectl kubelet-authz audit -o json";

const SUGGEST_EXAMPLES: &str = "Examples:
  # A role for a metrics agent
  kubectl kubelet-authz suggest-role /metrics /metrics/cadvisor /stats/summary /pods --name metrics-agent

  # Only the GET side of endpoints that also accept POST
  kubectl kubelet-authz suggest-role /stats/summary --verb get";

const CHECK_CONFIG_EXAMPLES: &str = "Examples:
  kubectl kubelet-authz check-config /var/lib/kubelet/config.yaml
  kubectl kubelet-authz check-config config.json --kubelet-version 1.33 -o json

  # A kubelet command line (legacy flag defaults apply to flags not given)
  ps -o args= -C kubelet | kubectl kubelet-authz check-config --flags -

  # Is this kubelet reachable only through the kubelet-authz proxy? (its drop-ins merged)
  kubectl kubelet-authz check-config --behind-proxy /var/lib/kubelet/config.yaml \\
      --config-dir /etc/kubernetes/kubelet.conf.d

  # EKS AL2023, and the shipped drop-in alone
  kubectl kubelet-authz check-config --behind-proxy /etc/kubernetes/kubelet/config.json \\
      --config-dir /etc/kubernetes/kubelet/config.json.d
  kubectl kubelet-authz check-config --behind-proxy envoy/kubernetes/node/90-kubelet-authz.conf";

const IMPACT_EXAMPLES: &str = "Examples:
  # What changes for every bound subject when kubelets move from 1.31 to 1.36?
  kubectl kubelet-authz impact --from-version 1.31 --to-version 1.36 --rbac-file rbac.yaml

  # What the filter's strict upgrade verb changes on a 1.36 kubelet
  kubectl kubelet-authz impact --from-version 1.36 --to-version 1.36 --strict-upgrade --rbac-file rbac.yaml";

const AUDIT_LOG_EXAMPLES: &str = "Examples:
  kubectl kubelet-authz audit-log envoy.log
  kubectl -n kubelet-authz logs ds/kubelet-proxy | kubectl kubelet-authz audit-log - -o json";

const COMPLETION_EXAMPLES: &str = "Examples:
  source <(kubectl-kubelet_authz completion bash)
  kubectl-kubelet_authz completion zsh > \"${fpath[1]}/_kubectl-kubelet_authz\"
  kubectl-kubelet_authz completion fish > ~/.config/fish/completions/kubectl-kubelet_authz.fish";

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Human-readable table (default).
    Table,
    /// Table with every check and reason.
    Wide,
    /// Stable JSON (documented in the README).
    Json,
    /// The JSON document as YAML.
    Yaml,
}

/// How to reach the cluster (online mode).
#[derive(Debug, Clone, Args, Default)]
pub struct ClusterArgs {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: the current context)
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
}

/// RBAC input (offline mode).
#[derive(Debug, Clone, Args, Default)]
pub struct RbacArgs {
    /// RBAC objects (YAML documents or JSON List) to evaluate offline; repeatable; `-` for stdin.
    /// Without it, the cluster is asked
    #[arg(long = "rbac-file", short = 'f', value_name = "FILE")]
    pub rbac_files: Vec<String>,
}

/// The kubelet being modelled.
#[derive(Debug, Clone, Args)]
pub struct KubeletArgs {
    /// Kubelet version to model (default 1.36; online with --node: the Node's kubeletVersion)
    #[arg(long, value_name = "VERSION")]
    pub kubelet_version: Option<String>,
    /// Kubelet feature gates, e.g. `KubeletFineGrainedAuthz=true`: only it and
    /// `AllowParsingUserUIDFromCertAuth` (1.33+) are known; others are refused
    #[arg(long, value_name = "GATES")]
    pub feature_gates: Option<String>,
    /// The filter's strictUpgradeVerb: a GET (WebSocket upgrade) to exec/attach/run/portForward is
    /// checked with verb create (false: kubelet-exact, a WebSocket exec needs only get)
    #[arg(long, value_name = "BOOL", default_value = "true", action = clap::ArgAction::Set)]
    pub strict_upgrade: bool,
    /// Node name sent in the reviews (RBAC resourceNames match it); default `node`
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
}

/// Who is asking.
#[derive(Debug, Clone, Args, Default)]
pub struct UserArgs {
    /// User to check as (required offline); `system:serviceaccount:NS:NAME` gets the ServiceAccount groups
    #[arg(long = "as", value_name = "USER")]
    pub as_user: Option<String>,
    /// Group to check as; repeatable
    #[arg(long = "as-group", value_name = "GROUP")]
    pub as_groups: Vec<String>,
    /// UID to check as
    #[arg(long = "as-uid", value_name = "UID")]
    pub as_uid: Option<String>,
}

/// `can-i`.
#[derive(Debug, Args)]
pub struct CanIArgs {
    /// [VERB] PATH: VERB is an API verb (get, create, update, patch, delete) or an HTTP method
    /// (GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS); default get
    #[arg(value_names = ["VERB", "PATH"], num_args = 0..=2)]
    pub args: Vec<String>,
    /// Check every kubelet endpoint of the version instead of one path
    #[arg(long)]
    pub list: bool,
    /// The HTTP method exactly as sent, in any case (then give PATH only): the kubelet maps
    /// GET, POST, PUT, PATCH and DELETE, and anything else (`get`, `Get`) to the empty verb
    #[arg(long, value_name = "METHOD", conflicts_with = "list")]
    pub method: Option<String>,
    /// The request asks for a connection upgrade (WebSocket GET or SPDY POST)
    #[arg(long)]
    pub upgrade: bool,
    /// Print nothing; answer with the exit code only
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Output format
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: Output,
    #[command(flatten)]
    pub user: UserArgs,
    #[command(flatten)]
    pub kubelet: KubeletArgs,
    #[command(flatten)]
    pub rbac: RbacArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// `who-can`.
#[derive(Debug, Args)]
pub struct WhoCanArgs {
    /// [VERB] PATH, as for can-i
    #[arg(value_names = ["VERB", "PATH"], num_args = 0..=2)]
    pub args: Vec<String>,
    /// The request asks for a connection upgrade (WebSocket GET or SPDY POST)
    #[arg(long)]
    pub upgrade: bool,
    /// Output format
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: Output,
    #[command(flatten)]
    pub kubelet: KubeletArgs,
    #[command(flatten)]
    pub rbac: RbacArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Severity threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum FailOn {
    /// Fail on low and above.
    Low,
    /// Fail on medium and above.
    Medium,
    /// Fail on high and above.
    High,
    /// Fail on critical only.
    Critical,
}

/// `audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Exit 1 when a finding is at or above this severity (default: never)
    #[arg(long, value_enum, value_name = "SEVERITY")]
    pub fail_on: Option<FailOn>,
    /// Output format
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: Output,
    #[command(flatten)]
    pub rbac: RbacArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// `suggest-role`.
#[derive(Debug, Args)]
pub struct SuggestRoleArgs {
    /// Kubelet paths the role is for (`/metrics`, `/pods`, `/stats/summary`, ...)
    #[arg(value_name = "PATH", required = true)]
    pub paths: Vec<String>,
    /// ClusterRole name
    #[arg(long, default_value = "kubelet-least-privilege")]
    pub name: String,
    /// Only these API verbs (default: the verbs of every HTTP method the endpoints serve)
    #[arg(long = "verb", value_name = "VERB")]
    pub verbs: Vec<String>,
}

/// `check-config`.
#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// KubeletConfiguration file (YAML or JSON), or a kubelet command line with --flags; `-` for stdin
    #[arg(value_name = "FILE")]
    pub file: String,
    /// FILE is a kubelet command line: flags not given take the legacy flag defaults
    #[arg(long)]
    pub flags: bool,
    /// Check the profile of a kubelet behind the kubelet-authz proxy instead of the CIS items:
    /// loopback only, no token (webhook) or anonymous authentication, only the per-node CA, mode
    /// Webhook, read-only port off; exit 1 for each way around the proxy
    #[arg(long, conflicts_with = "flags")]
    pub behind_proxy: bool,
    /// The kubelet's --config-dir: its *.conf drop-ins are merged over FILE as the kubelet merges
    /// them (lexical order, later wins); FILE and drop-ins are read strictly (unknown fields refused)
    #[arg(long, value_name = "DIR", conflicts_with = "flags")]
    pub config_dir: Option<String>,
    /// Kubelet version (decides the KubeletFineGrainedAuthz check); default 1.36
    #[arg(long, value_name = "VERSION", default_value = "1.36")]
    pub kubelet_version: String,
    /// Output format
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: Output,
}

/// `impact`.
#[derive(Debug, Args)]
pub struct ImpactArgs {
    /// Kubelet version before
    #[arg(long, value_name = "VERSION")]
    pub from_version: String,
    /// Kubelet version after
    #[arg(long, value_name = "VERSION")]
    pub to_version: String,
    /// Compare the kubelet-exact upgrade verb (before) with the filter's strict upgrade verb (after)
    #[arg(long)]
    pub strict_upgrade: bool,
    /// Node name sent in the reviews (RBAC resourceNames match it); default `node`
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// Output format
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: Output,
    #[command(flatten)]
    pub rbac: RbacArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// `audit-log`.
#[derive(Debug, Args)]
pub struct AuditLogArgs {
    /// Log file with the filter's audit lines (Envoy log prefixes are fine); `-` for stdin
    #[arg(value_name = "FILE")]
    pub file: String,
    /// Output format
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: Output,
}

/// Shells.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Shell {
    /// bash
    Bash,
    /// zsh
    Zsh,
    /// fish
    Fish,
}

/// `completion`.
#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// Shell
    #[arg(value_enum)]
    pub shell: Shell,
}
