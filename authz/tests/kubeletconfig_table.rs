//! Table tests for `kubeletconfig`: one case per check outcome, for config files (config-file
//! defaults) and command lines (legacy flag defaults), plus parse errors.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use kubelet_authz::kubelet::KubeletVersion;
use kubelet_authz::kubeletconfig::{
    apply_command_line, check, command_line_config_path, parse_command_line, parse_config,
    CheckStatus, KubeletConfigError, KubeletSettings, SettingsSource,
};
use rstest::rstest;

const HEAD: &str = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n";

fn status_of(settings: &KubeletSettings, version: &str, id: &str) -> CheckStatus {
    let v: KubeletVersion = version.parse().unwrap();
    check(settings, v)
        .into_iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("no check {id}"))
        .status
}

fn config(body: &str) -> KubeletSettings {
    parse_config(&format!("{HEAD}{body}")).unwrap()
}

use CheckStatus::{Fail, Pass, Skip};

#[rstest]
// 4.2.1 anonymous authentication
#[case::anon_default_file("", "4.2.1", Pass)]
#[case::anon_on("authentication:\n  anonymous:\n    enabled: true\n", "4.2.1", Fail)]
#[case::anon_off("authentication:\n  anonymous:\n    enabled: false\n", "4.2.1", Pass)]
// 4.2.2 authorization mode
#[case::mode_default_file("", "4.2.2", Pass)]
#[case::mode_always_allow("authorization:\n  mode: AlwaysAllow\n", "4.2.2", Fail)]
#[case::mode_webhook("authorization:\n  mode: Webhook\n", "4.2.2", Pass)]
#[case::mode_empty_is_defaulted("authorization:\n  mode: \"\"\n", "4.2.2", Pass)]
#[case::mode_unknown("authorization:\n  mode: RBAC\n", "4.2.2", Fail)]
// 4.2.3 client CA
#[case::ca_default_file("", "4.2.3", Fail)]
#[case::ca_set(
    "authentication:\n  x509:\n    clientCAFile: /etc/kubernetes/pki/ca.crt\n",
    "4.2.3",
    Pass
)]
#[case::ca_empty("authentication:\n  x509:\n    clientCAFile: \"\"\n", "4.2.3", Fail)]
// 4.2.4 read-only port
#[case::ro_default_file("", "4.2.4", Pass)]
#[case::ro_open("readOnlyPort: 10255\n", "4.2.4", Fail)]
#[case::ro_zero("readOnlyPort: 0\n", "4.2.4", Pass)]
// webhook authentication
#[case::webhook_default_file("", "webhook-authentication", Pass)]
#[case::webhook_off(
    "authentication:\n  webhook:\n    enabled: false\n",
    "webhook-authentication",
    Fail
)]
fn config_file_checks(#[case] body: &str, #[case] id: &str, #[case] want: CheckStatus) {
    assert_eq!(status_of(&config(body), "1.36", id), want);
}

#[rstest]
#[case::v131_absent("", "1.31", Skip)]
#[case::v131_gate_on_refused("featureGates:\n  KubeletFineGrainedAuthz: true\n", "1.31", Fail)]
#[case::v132_default_off("", "1.32", Fail)]
#[case::v132_enabled("featureGates:\n  KubeletFineGrainedAuthz: true\n", "1.32", Pass)]
#[case::v133_default_on("", "1.33", Pass)]
#[case::v135_disabled("featureGates:\n  KubeletFineGrainedAuthz: false\n", "1.35", Fail)]
#[case::v136_locked("", "1.36", Pass)]
#[case::v136_disable_refused("featureGates:\n  KubeletFineGrainedAuthz: false\n", "1.36", Fail)]
fn fine_grained_gate(#[case] body: &str, #[case] version: &str, #[case] want: CheckStatus) {
    assert_eq!(
        status_of(&config(body), version, "fine-grained-authz"),
        want
    );
}

/// `AllowParsingUserUIDFromCertAuth`, from a file or `--feature-gates`: read into the settings and
/// the kubelet model (no UID from certificates when off), refused before 1.33, and checked only
/// when set (the fine-grained check ignores it).
#[rstest]
#[case::file_v133_off(
    "featureGates:\n  AllowParsingUserUIDFromCertAuth: false\n",
    "",
    "1.33",
    Some(false),
    Some(Pass)
)]
#[case::file_v136_on(
    "featureGates:\n  AllowParsingUserUIDFromCertAuth: true\n",
    "",
    "1.36",
    Some(true),
    Some(Pass)
)]
#[case::file_v132_refused(
    "featureGates:\n  AllowParsingUserUIDFromCertAuth: false\n",
    "",
    "1.32",
    Some(false),
    Some(Fail)
)]
#[case::file_unset("", "", "1.36", None, None)]
#[case::flag_v134_off(
    "",
    "kubelet --feature-gates=AllowParsingUserUIDFromCertAuth=false",
    "1.34",
    Some(false),
    Some(Pass)
)]
#[case::flag_v131_refused(
    "",
    "kubelet --feature-gates=KubeletFineGrainedAuthz=false,AllowParsingUserUIDFromCertAuth=true",
    "1.31",
    Some(true),
    Some(Fail)
)]
fn cert_uid_gate(
    #[case] body: &str,
    #[case] line: &str,
    #[case] version: &str,
    #[case] gate: Option<bool>,
    #[case] want: Option<CheckStatus>,
) {
    let s = if line.is_empty() {
        config(body)
    } else {
        parse_command_line(line).unwrap()
    };
    assert_eq!(s.cert_uid_gate, gate);
    assert_eq!(
        s.feature_gates().allow_parsing_user_uid_from_cert_auth,
        gate
    );
    let v: KubeletVersion = version.parse().unwrap();
    let results = check(&s, v);
    let got = results
        .iter()
        .find(|c| c.id == "cert-uid-gate")
        .map(|c| c.status);
    assert_eq!(got, want);
    if want == Some(Pass) {
        let model = kubelet_authz::kubelet::KubeletModel::new(v, s.feature_gates()).unwrap();
        assert_eq!(model.reads_cert_uid(), gate.unwrap_or(true));
    }
    // The fine-grained check does not depend on this gate.
    let fine = results
        .iter()
        .find(|c| c.id == "fine-grained-authz")
        .map(|c| c.status);
    let mut without = s.clone();
    without.cert_uid_gate = None;
    let fine_without = check(&without, v)
        .into_iter()
        .find(|c| c.id == "fine-grained-authz")
        .map(|c| c.status);
    assert_eq!(fine, fine_without);
}

#[rstest]
// An empty command line: legacy defaults fail everything but the gate.
#[case::legacy_anon("kubelet", "4.2.1", Fail)]
#[case::legacy_mode("kubelet", "4.2.2", Fail)]
#[case::legacy_ca("kubelet", "4.2.3", Fail)]
#[case::legacy_ro("kubelet", "4.2.4", Fail)]
#[case::legacy_webhook("kubelet", "webhook-authentication", Fail)]
#[case::flag_anon_off("kubelet --anonymous-auth=false", "4.2.1", Pass)]
#[case::flag_bool_bare_is_true("kubelet --anonymous-auth", "4.2.1", Fail)]
#[case::flag_mode("kubelet --authorization-mode Webhook", "4.2.2", Pass)]
#[case::flag_mode_empty("kubelet --authorization-mode=", "4.2.2", Fail)]
#[case::flag_ca("kubelet --client-ca-file=/etc/kubernetes/pki/ca.crt", "4.2.3", Pass)]
#[case::flag_ro("kubelet --read-only-port=0", "4.2.4", Pass)]
#[case::flag_webhook(
    "kubelet --authentication-token-webhook=true",
    "webhook-authentication",
    Pass
)]
#[case::flag_last_wins("kubelet --anonymous-auth=false --anonymous-auth=true", "4.2.1", Fail)]
#[case::flag_gate_off(
    "kubelet --feature-gates=Foo=true,KubeletFineGrainedAuthz=false",
    "fine-grained-authz",
    Fail
)]
#[case::flag_continuation("kubelet \\\n  --anonymous-auth=false \\\n  --v=2", "4.2.1", Pass)]
#[case::flag_unknown_skipped(
    "kubelet --hostname-override node-1 --anonymous-auth=0",
    "4.2.1",
    Pass
)]
fn command_line_checks(#[case] line: &str, #[case] id: &str, #[case] want: CheckStatus) {
    let s = parse_command_line(line).unwrap();
    assert_eq!(s.source, SettingsSource::CommandLine);
    assert_eq!(status_of(&s, "1.33", id), want);
}

#[test]
fn cis_profile_passes_everything() {
    let s = config(
        "authentication:\n  anonymous: {enabled: false}\n  webhook: {enabled: true}\n  x509: {clientCAFile: /ca.crt}\nauthorization:\n  mode: Webhook\nreadOnlyPort: 0\n",
    );
    assert!(check(&s, KubeletVersion::LATEST)
        .iter()
        .all(|c| c.status == Pass));
}

#[test]
fn json_config_is_read() {
    let s = parse_config(
        r#"{"apiVersion":"kubelet.config.k8s.io/v1beta1","kind":"KubeletConfiguration","readOnlyPort":10255}"#,
    )
    .unwrap();
    assert_eq!(s.read_only_port.value, 10255);
    assert!(s.read_only_port.explicit);
    assert!(!s.anonymous_auth.explicit);
}

#[test]
fn defaults_are_marked() {
    let c = check(&config(""), KubeletVersion::LATEST);
    let anon = c.iter().find(|c| c.id == "4.2.1").unwrap();
    assert_eq!(anon.actual, "false (default)");
    let ca = c.iter().find(|c| c.id == "4.2.3").unwrap();
    assert!(ca.fix.contains("clientCAFile"), "{}", ca.fix);
}

#[test]
fn fixes_name_flags_for_command_lines() {
    let s = parse_command_line("kubelet").unwrap();
    let c = check(&s, KubeletVersion::LATEST);
    let ro = c.iter().find(|c| c.id == "4.2.4").unwrap();
    assert!(ro.fix.contains("--read-only-port=0"), "{}", ro.fix);
}

#[test]
fn flags_over_config_file() {
    let line = "kubelet --config=/var/lib/kubelet/config.yaml --read-only-port=10255";
    assert_eq!(
        command_line_config_path(line).unwrap().as_deref(),
        Some("/var/lib/kubelet/config.yaml")
    );
    let s = apply_command_line(config(""), line).unwrap();
    assert_eq!(s.source, SettingsSource::ConfigFileAndCommandLine);
    assert_eq!(status_of(&s, "1.36", "4.2.4"), Fail);
    assert_eq!(status_of(&s, "1.36", "4.2.1"), Pass);
}

#[rstest]
#[case::not_yaml("kind: [", "not a YAML or JSON document")]
#[case::scalar("just text", "expected a KubeletConfiguration mapping")]
#[case::wrong_kind("apiVersion: v1\nkind: Pod\n", "unsupported kind `Pod`")]
#[case::no_kind("apiVersion: kubelet.config.k8s.io/v1beta1\n", "unsupported kind ``")]
#[case::wrong_version(
    "apiVersion: kubelet.config.k8s.io/v1alpha1\nkind: KubeletConfiguration\n",
    "unsupported apiVersion"
)]
#[case::bad_type(
    "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nreadOnlyPort: ten\n",
    "readOnlyPort: expected an integer"
)]
#[case::bad_bool(
    "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nauthentication:\n  anonymous:\n    enabled: nope\n",
    "authentication.anonymous.enabled: expected true or false"
)]
#[case::bad_nesting(
    "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nauthentication: 3\n",
    "authentication: expected a mapping"
)]
fn config_errors(#[case] text: &str, #[case] want: &str) {
    let e = parse_config(text).unwrap_err();
    assert!(e.to_string().contains(want), "{e}");
}

#[rstest]
#[case::bool_space(
    "kubelet --anonymous-auth false",
    "boolean flag takes its value after `=`"
)]
#[case::bad_bool("kubelet --anonymous-auth=nope", "expected true or false")]
#[case::bad_port("kubelet --read-only-port=http", "expected a port number")]
#[case::missing_value("kubelet --client-ca-file", "flag needs a value")]
#[case::bad_gate(
    "kubelet --feature-gates=KubeletFineGrainedAuthz",
    "is not NAME=true|false"
)]
#[case::quote("kubelet --client-ca-file='/a", "unterminated quote")]
fn command_line_errors(#[case] line: &str, #[case] want: &str) {
    let e: KubeletConfigError = parse_command_line(line).unwrap_err();
    assert!(e.to_string().contains(want), "{e}");
}
