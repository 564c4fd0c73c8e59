//! The profile of a kubelet behind the proxy (docs/DEPLOY.md, "Deployment trust model"): only the
//! proxy can reach it. The settings ship as one KubeletConfiguration drop-in, [`PROXY_DROPIN`]
//! (`envoy/kubernetes/node/90-kubelet-authz.conf`), holding nothing but what the proxy needs; the
//! node agent writes it and [`behind_proxy`] grades an effective configuration against it, one
//! finding for each way around the proxy.

use std::net::IpAddr;

use super::check::{CheckResult, CheckStatus};
use super::EffectiveConfig;

/// The per-node CA: the only authority the kubelet trusts for client certificates once it is
/// behind the proxy (made on the node by the agent; only the local proxy holds a certificate of
/// it).
pub const PER_NODE_CA_FILE: &str = "/var/lib/kubelet-authz/pki/ca.crt";

/// The file name of the proxy's drop-in in the kubelet's `--config-dir` (late in lexical order,
/// so that it wins over the distribution's own drop-ins).
pub const PROXY_DROPIN_NAME: &str = "90-kubelet-authz.conf";

/// The proxy's kubelet drop-in, byte for byte the shipped
/// `envoy/kubernetes/node/90-kubelet-authz.conf` (a test checks they are equal). No feature gates
/// (a 1.31 kubelet exits on an unknown one) and no CIS extras (`check-config` reports those).
pub const PROXY_DROPIN: &str = "\
# kubelet-authz: the kubelet behind the proxy (docs/DEPLOY.md). Only what the proxy needs:
# loopback only, and only the per-node CA's client certificates (the local proxy) authenticate.
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
authentication:
  x509:
    clientCAFile: /var/lib/kubelet-authz/pki/ca.crt
  webhook:
    enabled: false
  anonymous:
    enabled: false
authorization:
  mode: Webhook
";

/// Whether the kubelet's `address` is loopback only: `localhost`, an IPv4 address in
/// `127.0.0.0/8` or `::1` (in any spelling; not the IPv4-mapped `::ffff:127.0.0.1`).
pub fn is_loopback(address: &str) -> bool {
    address == "localhost" || address.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn result(
    id: &'static str,
    title: &'static str,
    ok: bool,
    actual: String,
    fix: &str,
) -> CheckResult {
    CheckResult {
        id,
        cis: None,
        title,
        status: if ok {
            CheckStatus::Pass
        } else {
            CheckStatus::Fail
        },
        actual,
        fix: if ok {
            String::new()
        } else {
            format!("{fix} (the drop-in {PROXY_DROPIN_NAME} sets it)")
        },
    }
}

fn shown<T: std::fmt::Display>(s: &super::Setting<T>) -> String {
    if s.explicit {
        s.value.to_string()
    } else {
        format!("{} (default)", s.value)
    }
}

/// Grade an effective configuration against the profile of a kubelet behind the proxy: one
/// result per way around it (a failure is a way in that skips the proxy's authorization, audit and
/// metrics).
pub fn behind_proxy(cfg: &EffectiveConfig) -> Vec<CheckResult> {
    let s = &cfg.settings;
    let address_set = cfg
        .document
        .get("address")
        .and_then(|a| a.as_str())
        .is_some_and(|a| !a.is_empty());
    vec![
        result(
            "loopback",
            "the kubelet listens on loopback only (Envoy owns NODE_IP:port)",
            is_loopback(&cfg.address),
            if address_set {
                cfg.address.clone()
            } else {
                format!("{} (default)", cfg.address)
            },
            "set `address: 127.0.0.1`",
        ),
        result(
            "webhook-authentication-off",
            "webhook (bearer token) authentication is off: a token cannot reach the kubelet around the proxy",
            !s.webhook_authentication.value,
            shown(&s.webhook_authentication),
            "set `authentication.webhook.enabled: false`",
        ),
        result(
            "anonymous-off",
            "anonymous authentication is off",
            !s.anonymous_auth.value,
            shown(&s.anonymous_auth),
            "set `authentication.anonymous.enabled: false`",
        ),
        result(
            "per-node-ca",
            "only the per-node CA authenticates client certificates (the local proxy's)",
            s.client_ca_file.value == PER_NODE_CA_FILE,
            if s.client_ca_file.value.is_empty() {
                "\"\" (default)".to_string()
            } else {
                shown(&s.client_ca_file)
            },
            &format!("set `authentication.x509.clientCAFile: {PER_NODE_CA_FILE}`"),
        ),
        result(
            "authorization-webhook",
            "authorization mode is Webhook (the proxy's identity is authorized by SubjectAccessReview)",
            s.authorization_mode.value == "Webhook",
            shown(&s.authorization_mode),
            "set `authorization.mode: Webhook`",
        ),
        CheckResult {
            id: "read-only-port-off",
            cis: None,
            title: "the unauthenticated read-only port is off",
            status: if s.read_only_port.value == 0 {
                CheckStatus::Pass
            } else {
                CheckStatus::Fail
            },
            actual: shown(&s.read_only_port),
            fix: if s.read_only_port.value == 0 {
                String::new()
            } else {
                "set `readOnlyPort: 0` (or remove it: 0 is the default of a configuration file)"
                    .to_string()
            },
        },
    ]
}
