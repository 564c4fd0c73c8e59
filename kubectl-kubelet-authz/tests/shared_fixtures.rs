//! The CLI over the RBAC fixtures shared with the RBAC evaluator's own tests
//! (`authz/tests/fixtures/rbac/`): the same edges, seen from the command line.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;

fn shared(name: &str) -> String {
    format!(
        "{}/../authz/tests/fixtures/rbac/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn cmd(args: &[&str]) -> Command {
    let mut c = Command::cargo_bin("kubectl-kubelet_authz").unwrap();
    c.args(args)
        .args(["--rbac-file", &shared("seed-roles.yaml")])
        .args(["--rbac-file", &shared("tricky-roles.yaml")]);
    c
}

fn code(args: &[&str]) -> i32 {
    cmd(args).output().unwrap().status.code().unwrap()
}

#[test]
fn seed_prometheus_and_observability() {
    let sa = "system:serviceaccount:monitoring:prometheus";
    assert_eq!(code(&["can-i", "/metrics", "--as", sa]), 0);
    assert_eq!(code(&["can-i", "/pods", "--as", sa]), 0);
    assert_eq!(
        code(&["can-i", "/pods", "--as", sa, "--kubelet-version", "1.31"]),
        1
    );
    assert_eq!(
        code(&[
            "can-i",
            "/configz",
            "--as",
            "o",
            "--as-group",
            "observability"
        ]),
        0
    );
    assert_eq!(
        code(&[
            "can-i",
            "/exec/a/b/c",
            "--as",
            "o",
            "--as-group",
            "observability"
        ]),
        1
    );
    assert_eq!(
        code(&[
            "can-i",
            "POST",
            "/exec/a/b/c",
            "--as",
            "x",
            "--as-group",
            "system:masters"
        ]),
        0
    );
}

#[test]
fn get_nodes_proxy_debugger_execs_unless_strict() {
    let exact = [
        "can-i",
        "GET",
        "/exec/a/b/c",
        "--upgrade",
        "--strict-upgrade",
        "false",
        "--as",
        "debugger",
    ];
    assert_eq!(code(&exact), 0);
    assert_eq!(
        code(&[
            "can-i",
            "GET",
            "/exec/a/b/c",
            "--upgrade",
            "--as",
            "debugger"
        ]),
        1
    );
}

#[test]
fn tricky_edges() {
    // `*/proxy` and `*` resources grant nodes/proxy
    let exact = ["--strict-upgrade", "false"];
    assert_eq!(
        code(&[
            "can-i",
            "/exec/a/b/c",
            "--as",
            "star-proxy-user",
            exact[0],
            exact[1]
        ]),
        0
    );
    assert_eq!(
        code(&["can-i", "/exec/a/b/c", "--as", "star-proxy-user"]),
        1
    );
    assert_eq!(
        code(&[
            "can-i",
            "/exec/a/b/c",
            "--as",
            "c",
            "--as-group",
            "core-readers",
            exact[0],
            exact[1]
        ]),
        0
    );
    assert_eq!(
        code(&["can-i", "/pods", "--as", "c", "--as-group", "core-readers"]),
        0
    );
    // nodes/*, wrong group, upper-case verb, empty verbs, bare nodes: nothing
    for user in [
        "nodes-star-user",
        "wrong-group-user",
        "uppercase-user",
        "empty-verbs-user",
        "node-lister",
    ] {
        for path in ["/pods", "/exec/a/b/c", "/metrics"] {
            assert_eq!(code(&["can-i", path, "--as", user]), 1, "{user} {path}");
        }
    }
    // resourceNames
    assert_eq!(
        code(&[
            "can-i",
            "/pods",
            "--as",
            "worker-1-debugger",
            "--node",
            "worker-1"
        ]),
        0
    );
    assert_eq!(
        code(&[
            "can-i",
            "/pods",
            "--as",
            "worker-1-debugger",
            "--node",
            "worker-2"
        ]),
        1
    );
    // aggregated role: the stored rules count
    assert_eq!(
        code(&[
            "can-i",
            "/metrics",
            "--as",
            "system:serviceaccount:monitoring:aggregated-scraper"
        ]),
        0
    );
    // RoleBindings never apply to nodes; SA without namespace in a ClusterRoleBinding matches nobody
    assert_eq!(code(&["can-i", "/exec/a/b/c", "--as", "team-a-admin"]), 1);
    assert_eq!(
        code(&[
            "can-i",
            "/exec/a/b/c",
            "--as",
            "system:serviceaccount:default:orphan"
        ]),
        1
    );
    // User "*" is a user named `*`
    assert_eq!(code(&["can-i", "/pods", "--as", "*"]), 0);
    assert_eq!(code(&["can-i", "/pods", "--as", "somebody"]), 1);
}

#[test]
fn broken_role_refs_show_in_the_reason() {
    cmd(&[
        "can-i",
        "/pods",
        "--as",
        "b",
        "--as-group",
        "tricky:broken",
        "-o",
        "wide",
    ])
    .assert()
    .code(1)
    .stdout(predicate::str::contains("not found"));
    cmd(&["audit"])
        .assert()
        .stdout(predicate::str::contains("missing-role-binding"));
}

#[test]
fn who_can_exec_kubelet_exact() {
    let out = cmd(&[
        "who-can",
        "GET",
        "/exec/a/b/c",
        "--upgrade",
        "--strict-upgrade",
        "false",
        "-o",
        "json",
    ])
    .output()
    .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = v["subjects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    for who in [
        "debugger",
        "star-proxy-user",
        "core-readers",
        "kube-apiserver-kubelet-client",
        "system:masters",
        "*",
    ] {
        assert!(names.contains(&who), "{who} missing: {names:?}");
    }
    for never in [
        "nodes-star-user",
        "wrong-group-user",
        "uppercase-user",
        "empty-verbs-user",
        "team-a-admin",
        "orphan",
    ] {
        assert!(!names.contains(&never), "{never} listed: {names:?}");
    }
}

#[test]
fn audit_severities() {
    let out = cmd(&["audit", "-o", "json"]).output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let findings = v["findings"].as_array().unwrap();
    let sev = |role: &str| {
        findings
            .iter()
            .find(|f| f["roleName"] == role)
            .map(|f| f["severity"].as_str().unwrap().to_string())
    };
    assert_eq!(sev("kubelet-proxy-get").as_deref(), Some("critical"));
    assert_eq!(sev("star-proxy").as_deref(), Some("critical"));
    assert_eq!(sev("everything-core").as_deref(), Some("critical"));
    assert_eq!(sev("cluster-admin").as_deref(), Some("critical"));
    assert_eq!(sev("worker-1-proxy").as_deref(), Some("high"));
    assert_eq!(sev("kubelet-api-admin").as_deref(), Some("info"));
    for none in [
        "nodes-star",
        "wrong-group-proxy",
        "uppercase-verb",
        "empty-verbs",
        "bare-nodes",
        "pod-proxy",
    ] {
        assert_eq!(sev(none), None, "{none} must not be a finding");
    }
    let star = findings
        .iter()
        .find(|f| f["roleName"] == "star-proxy")
        .unwrap();
    let kinds: Vec<&str> = star["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"RoleBinding"), "{kinds:?}");
    let rb = star["bindings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["kind"] == "RoleBinding")
        .unwrap();
    assert_eq!(rb["appliesToNodes"], false);
}

/// Issue 8's report for the seed roles: what an operator reads before upgrading 1.31 -> 1.36 and
/// before turning on the filter's strict upgrade verb.
#[test]
fn impact_for_the_seed_roles() {
    let run = |args: &[&str]| -> Value {
        let mut c = Command::cargo_bin("kubectl-kubelet_authz").unwrap();
        c.args(args)
            .args(["--rbac-file", &shared("seed-roles.yaml"), "-o", "json"]);
        let out = c.output().unwrap();
        assert_eq!(out.status.code(), Some(1), "changes exist: exit 1");
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let has = |v: &Value, who: &str, endpoint: &str, change: &str| {
        v["changes"].as_array().unwrap().iter().any(|c| {
            c["subject"]["name"].as_str().unwrap_or("").contains(who)
                && c["endpoint"] == endpoint
                && c["change"] == change
        })
    };
    let v = run(&["impact", "--from-version", "1.31", "--to-version", "1.36"]);
    assert!(has(&v, "prometheus", "pods", "gains"), "{v}");
    assert!(has(&v, "debugger", "statusz", "loses"), "{v}");
    assert!(
        !has(&v, "debugger", "pods", "loses"),
        "proxy still covers /pods: {v}"
    );
    let v = run(&[
        "impact",
        "--from-version",
        "1.36",
        "--to-version",
        "1.36",
        "--strict-upgrade",
    ]);
    assert!(has(&v, "debugger", "exec", "loses"), "{v}");
    assert!(
        !has(&v, "kube-apiserver-kubelet-client", "exec", "loses"),
        "create on proxy keeps exec: {v}"
    );
}
