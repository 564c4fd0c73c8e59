//! Grading [`KubeletSettings`]: CIS Kubernetes Benchmark 4.2.1 to 4.2.4, webhook authentication,
//! and the `KubeletFineGrainedAuthz` gate on the kubelet versions where it can be off.

use serde::Serialize;

use super::{KubeletSettings, Setting, SettingsSource};
use crate::kubelet::{FeatureGates, KubeletModel, KubeletVersion};

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    /// The setting is safe.
    Pass,
    /// The setting is unsafe (or makes the kubelet refuse to start).
    Fail,
    /// The check does not apply to this kubelet version.
    Skip,
}

/// One graded check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    /// Stable identifier (`4.2.1`, ..., `webhook-authentication`, `fine-grained-authz`).
    pub id: &'static str,
    /// The CIS Kubernetes Benchmark item, when the check is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cis: Option<&'static str>,
    /// What is checked.
    pub title: &'static str,
    /// Pass, fail or skip.
    pub status: CheckStatus,
    /// The effective value, with `(default)` when nothing set it.
    pub actual: String,
    /// How to fix a failure (and why a skip was skipped); empty on a pass.
    pub fix: String,
}

fn shown<T: std::fmt::Display>(s: &Setting<T>) -> String {
    if s.explicit {
        s.value.to_string()
    } else {
        format!("{} (default)", s.value)
    }
}

fn fix_for(source: SettingsSource, file: &str, flag: &str) -> String {
    match source {
        SettingsSource::CommandLine => format!("start the kubelet with `{flag}`"),
        _ => format!("set `{file}` in the KubeletConfiguration"),
    }
}

/// Grade the settings for a kubelet version.
pub fn check(settings: &KubeletSettings, version: KubeletVersion) -> Vec<CheckResult> {
    let src = settings.source;
    let mut out = Vec::new();
    let grade = |ok: bool, fix: String| {
        if ok {
            (CheckStatus::Pass, String::new())
        } else {
            (CheckStatus::Fail, fix)
        }
    };

    let (status, fix) = grade(
        !settings.anonymous_auth.value,
        fix_for(
            src,
            "authentication.anonymous.enabled: false",
            "--anonymous-auth=false",
        ),
    );
    out.push(CheckResult {
        id: "4.2.1",
        cis: Some("4.2.1"),
        title: "anonymous authentication is disabled",
        status,
        actual: shown(&settings.anonymous_auth),
        fix,
    });

    let mode = &settings.authorization_mode.value;
    let (status, fix) = match mode.as_str() {
        "Webhook" => (CheckStatus::Pass, String::new()),
        "AlwaysAllow" => (
            CheckStatus::Fail,
            fix_for(
                src,
                "authorization.mode: Webhook",
                "--authorization-mode=Webhook",
            ),
        ),
        "" => (
            CheckStatus::Fail,
            format!(
                "the kubelet refuses to start without an authorization mode: {}",
                fix_for(
                    src,
                    "authorization.mode: Webhook",
                    "--authorization-mode=Webhook"
                )
            ),
        ),
        other => (
            CheckStatus::Fail,
            format!(
                "the kubelet refuses to start with unknown mode `{other}`: {}",
                fix_for(
                    src,
                    "authorization.mode: Webhook",
                    "--authorization-mode=Webhook"
                )
            ),
        ),
    };
    out.push(CheckResult {
        id: "4.2.2",
        cis: Some("4.2.2"),
        title: "authorization mode is not AlwaysAllow",
        status,
        actual: shown(&settings.authorization_mode),
        fix,
    });

    let (status, fix) = grade(
        !settings.client_ca_file.value.is_empty(),
        fix_for(
            src,
            "authentication.x509.clientCAFile: /etc/kubernetes/pki/ca.crt",
            "--client-ca-file=/etc/kubernetes/pki/ca.crt",
        ),
    );
    let ca = &settings.client_ca_file;
    out.push(CheckResult {
        id: "4.2.3",
        cis: Some("4.2.3"),
        title: "client certificate authority file is set",
        status,
        actual: if ca.value.is_empty() {
            format!("\"\"{}", if ca.explicit { "" } else { " (default)" })
        } else {
            shown(ca)
        },
        fix,
    });

    let (status, fix) = grade(
        settings.read_only_port.value == 0,
        fix_for(src, "readOnlyPort: 0", "--read-only-port=0"),
    );
    out.push(CheckResult {
        id: "4.2.4",
        cis: Some("4.2.4"),
        title: "read-only port is disabled",
        status,
        actual: shown(&settings.read_only_port),
        fix,
    });

    let (status, fix) = grade(
        settings.webhook_authentication.value,
        fix_for(
            src,
            "authentication.webhook.enabled: true",
            "--authentication-token-webhook=true",
        ),
    );
    out.push(CheckResult {
        id: "webhook-authentication",
        cis: None,
        title: "webhook (TokenReview) authentication is enabled",
        status,
        actual: shown(&settings.webhook_authentication),
        fix: if status == CheckStatus::Fail {
            format!("{fix}: bearer tokens (ServiceAccounts) are otherwise refused with 401")
        } else {
            fix
        },
    });

    out.push(fine_grained_check(settings, version));
    out.extend(cert_uid_check(settings, version));
    out
}

/// `AllowParsingUserUIDFromCertAuth`, only when set: the kubelet refuses to start with it before
/// 1.33 (an unknown gate); from 1.33, `false` makes client certificates' users carry no UID.
fn cert_uid_check(settings: &KubeletSettings, version: KubeletVersion) -> Option<CheckResult> {
    let gate = settings.cert_uid_gate?;
    let gates = FeatureGates {
        allow_parsing_user_uid_from_cert_auth: Some(gate),
        ..FeatureGates::default()
    };
    let (status, fix) = match KubeletModel::new(version, gates) {
        Err(e) => (
            CheckStatus::Fail,
            format!("the kubelet refuses to start: {e}; remove the setting"),
        ),
        Ok(_) => (CheckStatus::Pass, String::new()),
    };
    Some(CheckResult {
        id: "cert-uid-gate",
        cis: None,
        title: "AllowParsingUserUIDFromCertAuth exists in this kubelet (1.33+)",
        status,
        actual: format!("{gate} (kubelet {version})"),
        fix,
    })
}

fn fine_grained_check(settings: &KubeletSettings, version: KubeletVersion) -> CheckResult {
    let gate_fix = fix_for(
        settings.source,
        "featureGates: {KubeletFineGrainedAuthz: true}",
        "--feature-gates=KubeletFineGrainedAuthz=true",
    );
    let actual = match settings.fine_grained_authz_gate {
        Some(v) => format!("{v} (kubelet {version})"),
        None => match version.fine_grained_default() {
            Some(d) => format!("{d} (default in kubelet {version})"),
            None => format!("absent (kubelet {version})"),
        },
    };
    // Only this gate: the certificate UID gate has its own check.
    let gates = FeatureGates {
        kubelet_fine_grained_authz: settings.fine_grained_authz_gate,
        ..FeatureGates::default()
    };
    let (status, fix) = match KubeletModel::new(version, gates) {
        Err(e) => (
            CheckStatus::Fail,
            format!("the kubelet refuses to start: {e}; remove the setting"),
        ),
        Ok(_) if version.fine_grained_default().is_none() => (
            CheckStatus::Skip,
            format!(
                "kubelet {version} has no KubeletFineGrainedAuthz gate: /pods, /healthz and /configz need nodes/proxy; upgrade to 1.33 or later"
            ),
        ),
        Ok(m) if m.fine_grained() => (CheckStatus::Pass, String::new()),
        Ok(_) => (
            CheckStatus::Fail,
            format!("{gate_fix}: without it /pods, /healthz and /configz need nodes/proxy"),
        ),
    };
    CheckResult {
        id: "fine-grained-authz",
        cis: None,
        title: "KubeletFineGrainedAuthz is enabled (1.32-1.35)",
        status,
        actual,
        fix,
    }
}
