//! The RBAC evaluator against `reference/rbac.md`: every row of tables 2.1 and 2.2, the edge notes
//! of 2.4, reason strings as kube-apiserver writes them, the loader, who-can and audit helpers,
//! over the fixtures in `tests/fixtures/rbac/`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeSet;

use kubelet_authz::identity::UserInfo;
use kubelet_authz::rbac::{
    rule_allows, rule_grants, Attributes, ClusterRole, ClusterRoleBinding, PolicyRule, RbacError,
    RbacStore, RoleBinding, RoleKey, RoleRef, Subject, REVIEW_ATTRIBUTES_ERROR,
};
use kubelet_authz::review::{ResourceAttributes, SubjectAccessReviewSpec};
use rstest::rstest;

const SEED: &str = include_str!("fixtures/rbac/seed-roles.yaml");
const TRICKY: &str = include_str!("fixtures/rbac/tricky-roles.yaml");

fn fixtures() -> RbacStore {
    let mut store = RbacStore::new();
    store.load_str(SEED, "seed-roles.yaml").unwrap();
    store.load_str(TRICKY, "tricky-roles.yaml").unwrap();
    store
}

fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> PolicyRule {
    PolicyRule::resource(verbs, groups, resources)
}

fn urls(verbs: &[&str], urls: &[&str]) -> PolicyRule {
    PolicyRule::non_resource(verbs, urls)
}

/// A resource request (no name).
fn res(verb: &str, group: &str, resource: &str, subresource: &str, ns: &str) -> Attributes {
    Attributes::resource(verb, group, resource, subresource, "", ns)
}

fn nonres(verb: &str, path: &str) -> Attributes {
    Attributes::non_resource(verb, path)
}

fn kubelet(verb: &str, subresource: &str) -> Attributes {
    Attributes::kubelet(verb, subresource, "worker-1")
}

fn user(name: &str, groups: &[&str]) -> UserInfo {
    UserInfo::new(name, groups)
}

/// A store where ClusterRole `r` holds `rule`, bound by ClusterRoleBinding `b` to User `u`.
fn single_rule_store(rule: PolicyRule) -> RbacStore {
    let mut store = RbacStore::new();
    store.insert_cluster_role(ClusterRole::new("r", vec![rule]));
    store.insert_cluster_role_binding(ClusterRoleBinding::new(
        "b",
        RoleRef::cluster_role("r"),
        vec![Subject::user("u")],
    ));
    store
}

fn star_verb() -> PolicyRule {
    rule(&["*"], &["group1"], &["resource1"])
}
fn star_group() -> PolicyRule {
    rule(&["verb1"], &["*"], &["resource1"])
}
fn star_resource() -> PolicyRule {
    rule(&["verb1"], &["group1"], &["*"])
}
fn tuple() -> PolicyRule {
    rule(
        &["verb1", "verb2"],
        &["group1", "group2"],
        &["resource1", "resource2"],
    )
}
fn subresource() -> PolicyRule {
    rule(&["*"], &["*"], &["resource1/subresource1"])
}
fn pods() -> PolicyRule {
    rule(&["*"], &["*"], &["pods"])
}
fn pods_status() -> PolicyRule {
    rule(&["*"], &["*"], &["pods/status"])
}
fn star_nonresource() -> PolicyRule {
    urls(&["verb1"], &["*"])
}
fn star_subpath() -> PolicyRule {
    urls(&["verb1"], &["/foo/*"])
}
fn exact_nonresource() -> PolicyRule {
    urls(&["*"], &["/foo", "/foo/bar/one"])
}

/// Table 2.1, rows 1-23: one rule, one request.
#[rstest]
#[case::r01_star_verb(star_verb(), res("verb1", "group1", "resource1", "", ""), true)]
#[case::r02_star_verb_other_verb(star_verb(), res("verb2", "group1", "resource1", "", ""), true)]
#[case::r03_star_verb_wrong_group(star_verb(), res("verb1", "group2", "resource1", "", ""), false)]
#[case::r04_star_verb_wrong_resource(
    star_verb(),
    res("verb1", "group1", "resource2", "", ""),
    false
)]
#[case::r05_star_group(star_group(), res("verb1", "group2", "resource1", "", ""), true)]
#[case::r06_star_group_wrong_verb(star_group(), res("verb2", "group1", "resource1", "", ""), false)]
#[case::r07_star_resource(star_resource(), res("verb1", "group1", "resource2", "", ""), true)]
#[case::r08_star_resource_wrong_group(
    star_resource(),
    res("verb1", "group2", "resource1", "", ""),
    false
)]
#[case::r09a_tuple_v1_g1_r1(tuple(), res("verb1", "group1", "resource1", "", ""), true)]
#[case::r09b_tuple_v1_g1_r2(tuple(), res("verb1", "group1", "resource2", "", ""), true)]
#[case::r09c_tuple_v1_g2_r1(tuple(), res("verb1", "group2", "resource1", "", ""), true)]
#[case::r09d_tuple_v1_g2_r2(tuple(), res("verb1", "group2", "resource2", "", ""), true)]
#[case::r09e_tuple_v2_g1_r1(tuple(), res("verb2", "group1", "resource1", "", ""), true)]
#[case::r09f_tuple_v2_g1_r2(tuple(), res("verb2", "group1", "resource2", "", ""), true)]
#[case::r09g_tuple_v2_g2_r1(tuple(), res("verb2", "group2", "resource1", "", ""), true)]
#[case::r09h_tuple_v2_g2_r2(tuple(), res("verb2", "group2", "resource2", "", ""), true)]
#[case::r10_subresource(
    subresource(),
    res("verb1", "group1", "resource1", "subresource1", ""),
    true
)]
#[case::r11_subresource_other_sub(
    subresource(),
    res("verb1", "group1", "resource1", "subresource2", ""),
    false
)]
#[case::r12_subresource_other_resource(
    subresource(),
    res("verb1", "group1", "resource2", "subresource1", ""),
    false
)]
#[case::r13_pods_rule_status_request(pods(), res("get", "", "pods", "status", "ns1"), false)]
#[case::r14_pods_rule_pods_request(pods(), res("get", "", "pods", "", "ns1"), true)]
#[case::r15_status_rule_pods_request(pods_status(), res("get", "", "pods", "", "ns1"), false)]
#[case::r16_status_rule_status_request(
    pods_status(),
    res("get", "", "pods", "status", "ns1"),
    true
)]
#[case::r17_star_nonresource(star_nonresource(), nonres("verb1", "/foo/bar/one"), true)]
#[case::r18_star_nonresource_wrong_verb(star_nonresource(), nonres("verb2", "/foo"), false)]
#[case::r19_subpath_not_prefix_itself(star_subpath(), nonres("verb1", "/foo"), false)]
#[case::r20_subpath(star_subpath(), nonres("verb1", "/foo/bar"), true)]
#[case::r21_subpath_other_root(star_subpath(), nonres("verb1", "/notfoo/bar"), false)]
#[case::r22_exact_only(exact_nonresource(), nonres("verb1", "/foo/bar"), false)]
#[case::r23_exact(exact_nonresource(), nonres("verb2", "/foo/bar/one"), true)]
fn table_2_1_rule_matching(
    #[case] rule: PolicyRule,
    #[case] attrs: Attributes,
    #[case] expected: bool,
) {
    assert_eq!(rule_allows(&rule, &attrs), expected, "rule_allows");
    let decision = single_rule_store(rule).authorize(&user("u", &[]), &attrs);
    assert_eq!(decision.allowed, expected, "authorize: {decision:?}");
    if expected {
        assert_eq!(
            decision.reason,
            r#"RBAC: allowed by ClusterRoleBinding "b" of ClusterRole "r" to User "u""#
        );
    } else {
        assert_eq!(decision.reason, "");
        assert_eq!(decision.grant, None);
    }
}

/// Rows 24-26: ClusterRole `admin` (`*` everything) bound by a RoleBinding in ns1.
fn rolebinding_admin_store() -> RbacStore {
    let mut store = RbacStore::new();
    let mut all = rule(&["*"], &["*"], &["*"]);
    all.non_resource_urls = vec!["*".into()];
    store.insert_cluster_role(ClusterRole::new("admin", vec![all]));
    store.insert_role_binding(RoleBinding::new(
        "ns1",
        "admin",
        RoleRef::cluster_role("admin"),
        vec![Subject::user("admin"), Subject::group("admins")],
    ));
    store
}

#[rstest]
#[case::r24_group_in_namespace(
    user("joe", &["admins"]),
    res("watch", "", "Foobar", "", "ns1"),
    true
)]
#[case::r25_uppercase_verb_other_namespace(
    user("admin", &[]),
    res("GET", "", "Pods", "", "ns2"),
    false
)]
#[case::r26_cluster_scoped_request(user("admin", &[]), res("GET", "", "Nodes", "", ""), false)]
fn table_2_1_rolebinding(#[case] who: UserInfo, #[case] attrs: Attributes, #[case] expected: bool) {
    let decision = rolebinding_admin_store().authorize(&who, &attrs);
    assert_eq!(decision.allowed, expected, "{decision:?}");
    if expected {
        assert_eq!(
            decision.reason,
            r#"RBAC: allowed by RoleBinding "admin/ns1" of ClusterRole "admin" to Group "admins""#
        );
    }
}

/// Where a table 2.2 binding lives.
#[derive(Debug, Clone, Copy)]
enum Scope {
    Cluster,
    Namespace(&'static str),
}

fn sa_token_user(ns: &str, name: &str) -> UserInfo {
    let groups = [
        "system:serviceaccounts".to_string(),
        format!("system:serviceaccounts:{ns}"),
        "system:authenticated".to_string(),
    ];
    UserInfo {
        name: format!("system:serviceaccount:{ns}:{name}"),
        groups: groups.to_vec(),
        ..UserInfo::default()
    }
}

/// Table 2.2, rows 27-39: whether a binding's subjects apply to a user, checked with
/// `Subject::applies_to` and end to end through a `*` ClusterRole.
#[rstest]
#[case::r27_user(Scope::Cluster, vec![Subject::user("foobar")], user("foobar", &[]), true)]
#[case::r28_no_user_matches(
    Scope::Cluster,
    vec![Subject::user("barfoo"), Subject::user("foobar")],
    user("zimzam", &[]),
    false
)]
#[case::r29_group(
    Scope::Namespace("default"),
    vec![Subject::user("barfoo"), Subject::group("foobar")],
    user("zimzam", &["foobar"]),
    true
)]
#[case::r30_user_star_is_not_a_wildcard(Scope::Cluster, vec![Subject::user("*")], user("foobar", &[]), false)]
#[case::r31_sa_other_namespace_in_rolebinding(
    Scope::Namespace("default"),
    vec![Subject::service_account("kube-system", "default")],
    user("system:serviceaccount:kube-system:default", &[]),
    true
)]
#[case::r32_unauthenticated_group(
    Scope::Cluster,
    vec![Subject::group("system:authenticated"), Subject::group("system:unauthenticated")],
    user("system:anonymous", &["system:unauthenticated"]),
    true
)]
#[case::r33_anonymous_not_authenticated(
    Scope::Cluster,
    vec![Subject::group("system:authenticated")],
    user("system:anonymous", &["system:unauthenticated"]),
    false
)]
#[case::r34_sa_without_namespace_in_crb(
    Scope::Cluster,
    vec![Subject::service_account("", "sa")],
    user("system:serviceaccount:ns:sa", &[]),
    false
)]
#[case::r35_sa_namespace_group(
    Scope::Cluster,
    vec![Subject::group("system:serviceaccounts:ns1")],
    sa_token_user("ns1", "sa"),
    true
)]
#[case::r36_sa_namespace_group_other_ns(
    Scope::Cluster,
    vec![Subject::group("system:serviceaccounts:ns1")],
    sa_token_user("ns2", "sa"),
    false
)]
#[case::r37_sa_x509_username_only(
    Scope::Cluster,
    vec![Subject::service_account("ns", "sa")],
    user("system:serviceaccount:ns:sa", &["system:authenticated"]),
    true
)]
#[case::r38_sa_group_needs_authenticator_groups(
    Scope::Cluster,
    vec![Subject::group("system:serviceaccounts")],
    user("system:serviceaccount:ns:sa", &["system:authenticated"]),
    false
)]
#[case::r39_anonymous_user(
    Scope::Cluster,
    vec![Subject::user("system:anonymous")],
    user("system:anonymous", &["system:unauthenticated"]),
    true
)]
fn table_2_2_subjects(
    #[case] scope: Scope,
    #[case] subjects: Vec<Subject>,
    #[case] who: UserInfo,
    #[case] expected: bool,
) {
    let binding_ns = match scope {
        Scope::Cluster => "",
        Scope::Namespace(ns) => ns,
    };
    let applies = subjects.iter().any(|s| s.applies_to(&who, binding_ns));
    assert_eq!(applies, expected, "applies_to");

    let mut store = RbacStore::new();
    store.insert_cluster_role(ClusterRole::new("all", vec![rule(&["*"], &["*"], &["*"])]));
    let attrs = match scope {
        Scope::Cluster => {
            store.insert_cluster_role_binding(ClusterRoleBinding::new(
                "b",
                RoleRef::cluster_role("all"),
                subjects,
            ));
            kubelet("get", "proxy")
        }
        Scope::Namespace(ns) => {
            store.insert_role_binding(RoleBinding::new(
                ns,
                "b",
                RoleRef::cluster_role("all"),
                subjects,
            ));
            res("get", "", "pods", "", ns)
        }
    };
    let decision = store.authorize(&who, &attrs);
    assert_eq!(decision.allowed, expected, "{decision:?}");
}

#[test]
fn r31_reason_names_service_account_name_then_namespace() {
    let mut store = RbacStore::new();
    store.insert_cluster_role(ClusterRole::new("all", vec![rule(&["*"], &["*"], &["*"])]));
    store.insert_role_binding(RoleBinding::new(
        "default",
        "b",
        RoleRef::cluster_role("all"),
        vec![Subject::service_account("kube-system", "default")],
    ));
    let d = store.authorize(
        &user("system:serviceaccount:kube-system:default", &[]),
        &res("get", "", "pods", "", "default"),
    );
    assert_eq!(
        d.reason,
        r#"RBAC: allowed by RoleBinding "b/default" of ClusterRole "all" to ServiceAccount "default/kube-system""#
    );
}

// ---- 2.4 edge notes -------------------------------------------------------------------------

#[rstest]
#[case::empty_verbs(PolicyRule { verbs: vec![], ..rule(&["get"], &[""], &["nodes/proxy"]) }, false)]
#[case::empty_groups(PolicyRule { api_groups: vec![], ..rule(&["get"], &[""], &["nodes/proxy"]) }, false)]
#[case::empty_resources(PolicyRule { resources: vec![], ..rule(&["get"], &[""], &["nodes/proxy"]) }, false)]
#[case::empty_resource_names_match_all(rule(&["get"], &[""], &["nodes/proxy"]), true)]
#[case::resource_names_match(rule(&["get"], &[""], &["nodes/proxy"]).with_resource_names(&["worker-1"]), true)]
#[case::resource_names_other(rule(&["get"], &[""], &["nodes/proxy"]).with_resource_names(&["worker-2"]), false)]
#[case::star_proxy(rule(&["get"], &[""], &["*/proxy"]), true)]
#[case::star_star_only_matches_literal_star(rule(&["get"], &[""], &["*/*"]), false)]
#[case::nodes_star_is_not_a_wildcard(rule(&["get"], &[""], &["nodes/*"]), false)]
#[case::bare_nodes_not_subresource(rule(&["get"], &[""], &["nodes"]), false)]
#[case::resources_star(rule(&["get"], &[""], &["*"]), true)]
#[case::uppercase_verb(rule(&["GET"], &[""], &["nodes/proxy"]), false)]
#[case::wrong_group(rule(&["get"], &["apps"], &["nodes/proxy"]), false)]
#[case::group_star(rule(&["get"], &["*"], &["nodes/proxy"]), true)]
#[case::nonresource_rule_never_grants_kubelet(urls(&["*"], &["*"]), false)]
fn edge_get_nodes_proxy_worker_1(#[case] rule: PolicyRule, #[case] expected: bool) {
    assert_eq!(
        rule_grants(&rule, "get", "", "nodes", "proxy", "worker-1"),
        expected
    );
    assert_eq!(rule_allows(&rule, &kubelet("get", "proxy")), expected);
}

#[test]
fn edge_nodes_star_matches_only_a_literal_star_subresource() {
    let r = rule(&["get"], &[""], &["nodes/*"]);
    assert!(rule_grants(&r, "get", "", "nodes", "*", "worker-1"));
    assert!(!rule_grants(&r, "get", "", "nodes", "metrics", "worker-1"));
    assert!(!rule_grants(&r, "get", "", "nodes", "", "worker-1"));
}

#[test]
fn edge_subresource_rule_never_matches_bare_resource() {
    let r = rule(&["get"], &[""], &["nodes/proxy"]);
    assert!(!rule_grants(&r, "get", "", "nodes", "", "worker-1"));
}

#[test]
fn edge_star_proxy_reaches_pods_and_services() {
    let r = rule(&["get"], &[""], &["*/proxy"]);
    assert!(rule_grants(&r, "get", "", "pods", "proxy", "p"));
    assert!(rule_grants(&r, "get", "", "services", "proxy", "s"));
    assert!(!rule_grants(&r, "get", "", "nodes", "metrics", "worker-1"));
    assert!(!rule_grants(&r, "get", "apps", "deployments", "proxy", "d"));
}

#[test]
fn edge_empty_request_verb_matches_only_star() {
    let store = fixtures();
    // The kubelet sends verb "" for HEAD; only a `*` verb grants it.
    let admin = user("kube-apiserver-kubelet-client", &["system:authenticated"]);
    assert!(store.authorize(&admin, &kubelet("", "proxy")).allowed);
    let debugger = user("debugger", &["system:authenticated"]);
    assert!(!store.authorize(&debugger, &kubelet("", "proxy")).allowed);
    assert!(store.authorize(&debugger, &kubelet("get", "proxy")).allowed);
}

#[test]
fn edge_rolebinding_never_applies_to_cluster_scoped_requests() {
    let store = fixtures();
    let admin = user("team-a-admin", &[]);
    let d = store.authorize(&admin, &kubelet("get", "proxy"));
    assert!(!d.allowed);
    assert_eq!(d.reason, "");
    let d = store.authorize(&admin, &res("get", "", "pods", "proxy", "team-a"));
    assert!(d.allowed);
    assert_eq!(
        d.reason,
        r#"RBAC: allowed by RoleBinding "star-proxy-in-team-a/team-a" of ClusterRole "star-proxy" to User "team-a-admin""#
    );
    assert!(
        !store
            .authorize(&admin, &res("get", "", "pods", "proxy", "team-b"))
            .allowed
    );
}

#[test]
fn edge_rolebinding_sa_without_namespace_uses_binding_namespace() {
    let store = fixtures();
    let deployer = user("system:serviceaccount:team-a:deployer", &[]);
    let d = store.authorize(&deployer, &res("get", "", "pods", "proxy", "team-a"));
    assert!(d.allowed);
    assert_eq!(
        d.reason,
        r#"RBAC: allowed by RoleBinding "pod-proxy-binding/team-a" of Role "pod-proxy" to ServiceAccount "deployer/team-a""#
    );
    let g = d.grant.unwrap();
    assert_eq!(g.role_key(), RoleKey::role("team-a", "pod-proxy"));
}

#[test]
fn edge_missing_role_gives_reason_with_error() {
    let mut store = RbacStore::new();
    store.insert_cluster_role_binding(ClusterRoleBinding::new(
        "dangling",
        RoleRef::cluster_role("gone"),
        vec![Subject::user("alice")],
    ));
    let d = store.authorize(&user("alice", &[]), &kubelet("get", "proxy"));
    assert!(!d.allowed);
    assert_eq!(
        d.reason,
        r#"RBAC: clusterrole.rbac.authorization.k8s.io "gone" not found"#
    );
    // Errors only come from bindings that apply to the user.
    let d = store.authorize(&user("bob", &[]), &kubelet("get", "proxy"));
    assert_eq!(d.reason, "");
}

#[test]
fn edge_missing_role_errors_are_aggregated() {
    let store = fixtures();
    let d = store.authorize(&user("carol", &["tricky:broken"]), &kubelet("get", "proxy"));
    assert!(!d.allowed);
    assert_eq!(
        d.reason,
        r#"RBAC: [clusterrole.rbac.authorization.k8s.io "does-not-exist" not found, unsupported role reference kind: "Team"]"#
    );
}

#[test]
fn edge_missing_role_does_not_hide_a_later_allow() {
    let mut store = RbacStore::new();
    store.insert_cluster_role_binding(ClusterRoleBinding::new(
        "dangling",
        RoleRef::cluster_role("gone"),
        vec![Subject::user("alice")],
    ));
    store.insert_cluster_role(ClusterRole::new(
        "proxy",
        vec![rule(&["get"], &[""], &["nodes/proxy"])],
    ));
    store.insert_cluster_role_binding(ClusterRoleBinding::new(
        "ok",
        RoleRef::cluster_role("proxy"),
        vec![Subject::user("alice")],
    ));
    let d = store.authorize(&user("alice", &[]), &kubelet("get", "proxy"));
    assert!(d.allowed);
    assert_eq!(
        d.reason,
        r#"RBAC: allowed by ClusterRoleBinding "ok" of ClusterRole "proxy" to User "alice""#
    );
}

#[test]
fn edge_role_ref_in_cluster_role_binding_is_not_found() {
    let mut store = RbacStore::new();
    store.load_str(TRICKY, "tricky-roles.yaml").unwrap();
    store.insert_cluster_role_binding(ClusterRoleBinding::new(
        "crb-to-role",
        RoleRef::role("pod-proxy"),
        vec![Subject::user("alice")],
    ));
    let d = store.authorize(
        &user("alice", &[]),
        &res("get", "", "pods", "proxy", "team-a"),
    );
    assert!(!d.allowed);
    assert_eq!(
        d.reason,
        r#"RBAC: role.rbac.authorization.k8s.io "pod-proxy" not found"#
    );
}

#[test]
fn reason_quotes_like_go() {
    let mut store = single_rule_store(rule(&["*"], &["*"], &["*"]));
    store.insert_cluster_role_binding(ClusterRoleBinding::new(
        "odd \"name\"",
        RoleRef::cluster_role("r"),
        vec![Subject::user("tab\tuser")],
    ));
    let d = store.authorize(&user("tab\tuser", &[]), &kubelet("get", "proxy"));
    assert_eq!(
        d.reason,
        r#"RBAC: allowed by ClusterRoleBinding "odd \"name\"" of ClusterRole "r" to User "tab\tuser""#
    );
}

// ---- fixtures: the seed guide's checks and the tricky roles ---------------------------------

#[rstest]
#[case::prometheus_metrics(sa_token_user("monitoring", "prometheus"), "metrics", true)]
#[case::prometheus_stats(sa_token_user("monitoring", "prometheus"), "stats", true)]
#[case::prometheus_log(sa_token_user("monitoring", "prometheus"), "log", true)]
#[case::prometheus_pods(sa_token_user("monitoring", "prometheus"), "pods", true)]
#[case::prometheus_no_proxy(sa_token_user("monitoring", "prometheus"), "proxy", false)]
#[case::prometheus_no_healthz(sa_token_user("monitoring", "prometheus"), "healthz", false)]
#[case::observability_healthz(user("olga", &["observability"]), "healthz", true)]
#[case::observability_configz(user("olga", &["observability"]), "configz", true)]
#[case::observability_no_proxy(user("olga", &["observability"]), "proxy", false)]
#[case::admin_proxy(user("kube-apiserver-kubelet-client", &[]), "proxy", true)]
#[case::admin_checkpoint(user("kube-apiserver-kubelet-client", &[]), "checkpoint", true)]
#[case::debugger_proxy(user("debugger", &[]), "proxy", true)]
#[case::debugger_no_metrics(user("debugger", &[]), "metrics", false)]
#[case::masters(user("root", &["system:masters"]), "proxy", true)]
#[case::star_proxy_user(user("star-proxy-user", &[]), "proxy", true)]
#[case::star_proxy_user_no_metrics(user("star-proxy-user", &[]), "metrics", false)]
#[case::core_readers_proxy(user("reader", &["core-readers"]), "proxy", true)]
#[case::nodes_star_user(user("nodes-star-user", &[]), "proxy", false)]
#[case::worker_1_debugger(user("worker-1-debugger", &[]), "proxy", true)]
#[case::wrong_group_user(user("wrong-group-user", &[]), "proxy", false)]
#[case::uppercase_user(user("uppercase-user", &[]), "proxy", false)]
#[case::empty_verbs_user(user("empty-verbs-user", &[]), "proxy", false)]
#[case::aggregated_metrics(sa_token_user("monitoring", "aggregated-scraper"), "metrics", true)]
#[case::aggregated_no_stats(sa_token_user("monitoring", "aggregated-scraper"), "stats", false)]
#[case::node_lister(user("node-lister", &[]), "proxy", false)]
#[case::orphan_sa(sa_token_user("default", "orphan"), "proxy", false)]
#[case::orphan_sa_empty_namespace(user("system:serviceaccount::orphan", &[]), "proxy", false)]
#[case::star_user_is_literal(user("*", &[]), "proxy", true)]
#[case::star_user_not_everyone(user("alice", &["system:authenticated"]), "proxy", false)]
fn fixtures_get_kubelet_subresource(
    #[case] who: UserInfo,
    #[case] subresource: &str,
    #[case] expected: bool,
) {
    let d = fixtures().authorize(&who, &kubelet("get", subresource));
    assert_eq!(d.allowed, expected, "{d:?}");
}

#[test]
fn resource_names_limit_to_one_node() {
    let store = fixtures();
    let who = user("worker-1-debugger", &[]);
    assert!(
        store
            .authorize(&who, &Attributes::kubelet("create", "proxy", "worker-1"))
            .allowed
    );
    assert!(
        !store
            .authorize(&who, &Attributes::kubelet("get", "proxy", "worker-2"))
            .allowed
    );
}

#[test]
fn seed_reason_and_grant() {
    let store = fixtures();
    let d = store.authorize(
        &sa_token_user("monitoring", "prometheus"),
        &kubelet("get", "metrics"),
    );
    assert_eq!(
        d.reason,
        r#"RBAC: allowed by ClusterRoleBinding "prometheus-kubelet-metrics" of ClusterRole "kubelet-metrics-reader" to ServiceAccount "prometheus/monitoring""#
    );
    let d = store.authorize(
        &user("kube-apiserver-kubelet-client", &[]),
        &kubelet("create", "proxy"),
    );
    let g = d.grant.unwrap();
    assert_eq!(g.binding_kind, "ClusterRoleBinding");
    assert_eq!(g.binding_name, "kube-apiserver-kubelet-admin");
    assert_eq!(g.binding_namespace, "");
    assert_eq!(g.role_kind, "ClusterRole");
    assert_eq!(g.role_name, "kubelet-api-admin");
    assert_eq!(g.rule_index, 1);
}

#[test]
fn first_allowing_binding_wins() {
    // The observability group member who is also the debugger: the first binding in load order
    // that allows is named.
    let store = fixtures();
    let d = store.authorize(
        &user("debugger", &["observability"]),
        &kubelet("get", "proxy"),
    );
    assert!(d
        .reason
        .contains(r#"ClusterRoleBinding "debugger-proxy-get""#));
    let d = store.authorize(
        &user("debugger", &["observability"]),
        &kubelet("get", "pods"),
    );
    assert!(d
        .reason
        .contains(r#"ClusterRoleBinding "observability-kubelet""#));
}

#[test]
fn non_resource_requests_only_use_cluster_role_bindings() {
    let store = fixtures();
    let d = store.authorize(
        &user("root", &["system:masters"]),
        &nonres("get", "/healthz"),
    );
    assert!(d.allowed);
    assert!(
        !store
            .authorize(&user("team-a-admin", &[]), &nonres("get", "/healthz"))
            .allowed
    );
}

// ---- SubjectAccessReview --------------------------------------------------------------------

#[test]
fn authorize_review_uses_spec_user_and_groups() {
    let store = fixtures();
    let spec = SubjectAccessReviewSpec {
        resource_attributes: Some(ResourceAttributes::kubelet("get", "healthz", "worker-1")),
        user: "olga".into(),
        groups: vec!["observability".into()],
        ..SubjectAccessReviewSpec::default()
    };
    let status = store.authorize_review(&spec);
    assert!(status.allowed);
    assert!(!status.denied);
    assert_eq!(
        status.reason,
        r#"RBAC: allowed by ClusterRoleBinding "observability-kubelet" of ClusterRole "kubelet-observability" to Group "observability""#
    );
    let mut spec = spec;
    spec.groups.clear();
    let status = store.authorize_review(&spec);
    assert!(!status.allowed && !status.denied);
    assert_eq!(status.reason, "");
    assert_eq!(status.evaluation_error, "");
}

#[test]
fn authorize_review_without_attributes_is_an_evaluation_error() {
    let status = fixtures().authorize_review(&SubjectAccessReviewSpec {
        user: "root".into(),
        groups: vec!["system:masters".into()],
        ..SubjectAccessReviewSpec::default()
    });
    assert!(!status.allowed);
    assert_eq!(status.evaluation_error, REVIEW_ATTRIBUTES_ERROR);
}

// ---- who-can and audit ----------------------------------------------------------------------

fn who_can(store: &RbacStore, attrs: &Attributes) -> BTreeSet<String> {
    store
        .subjects_allowed(attrs)
        .into_iter()
        .map(|g| {
            format!(
                "{} {}/{} via {}/{} rule {}",
                g.subject.kind,
                g.subject.namespace,
                g.subject.name,
                g.grant.binding_namespace,
                g.grant.binding_name,
                g.grant.rule_index
            )
        })
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn who_can_get_nodes_proxy() {
    let store = fixtures();
    let expected = set(&[
        "User /kube-apiserver-kubelet-client via /kube-apiserver-kubelet-admin rule 1",
        "User /debugger via /debugger-proxy-get rule 0",
        "Group /system:masters via /cluster-admin rule 0",
        "User /star-proxy-user via /star-proxy-binding rule 0",
        "Group /core-readers via /everything-core-binding rule 0",
        "User /worker-1-debugger via /worker-1-proxy-binding rule 0",
        "User /* via /star-user rule 0",
    ]);
    assert_eq!(who_can(&store, &kubelet("get", "proxy")), expected);
    let mut on_worker_2 = expected;
    on_worker_2.remove("User /worker-1-debugger via /worker-1-proxy-binding rule 0");
    assert_eq!(
        who_can(&store, &Attributes::kubelet("get", "proxy", "worker-2")),
        on_worker_2
    );
}

#[test]
fn who_can_get_pods_proxy_in_team_a_includes_rolebindings() {
    let store = fixtures();
    let expected = set(&[
        "Group /system:masters via /cluster-admin rule 0",
        "User /star-proxy-user via /star-proxy-binding rule 0",
        "Group /core-readers via /everything-core-binding rule 0",
        "User /* via /star-user rule 0",
        "User /team-a-admin via team-a/star-proxy-in-team-a rule 0",
        "ServiceAccount team-a/deployer via team-a/pod-proxy-binding rule 0",
    ]);
    assert_eq!(
        who_can(&store, &res("get", "", "pods", "proxy", "team-a")),
        expected
    );
}

#[test]
fn who_can_agrees_with_authorize() {
    let store = fixtures();
    for attrs in [
        kubelet("get", "proxy"),
        kubelet("get", "metrics"),
        kubelet("create", "proxy"),
        res("get", "", "pods", "proxy", "team-a"),
    ] {
        for g in store.subjects_allowed(&attrs) {
            let who = match g.subject.kind.as_str() {
                "User" => user(&g.subject.name, &[]),
                "Group" => user("someone", &[g.subject.name.as_str()]),
                _ => user(
                    &format!(
                        "system:serviceaccount:{}:{}",
                        g.subject.namespace, g.subject.name
                    ),
                    &[],
                ),
            };
            assert!(store.authorize(&who, &attrs).allowed, "{g:?}");
        }
    }
}

#[test]
fn audit_rules_granting_nodes_proxy() {
    let store = fixtures();
    let granting: BTreeSet<String> = store
        .rules()
        .filter(|r| rule_grants(r.rule, "get", "", "nodes", "proxy", "worker-1"))
        .map(|r| format!("{}/{}#{}", r.role_kind, r.role_name, r.rule_index))
        .collect();
    assert_eq!(
        granting,
        set(&[
            "ClusterRole/kubelet-api-admin#1",
            "ClusterRole/kubelet-proxy-get#0",
            "ClusterRole/cluster-admin#0",
            "ClusterRole/star-proxy#0",
            "ClusterRole/everything-core#0",
            "ClusterRole/worker-1-proxy#0",
        ])
    );
    let total: usize = store
        .cluster_roles()
        .iter()
        .map(|r| r.rules.len())
        .chain(store.roles().iter().map(|r| r.rules.len()))
        .sum();
    assert_eq!(store.rules().count(), total);
}

#[test]
fn audit_bindings_referencing() {
    let store = fixtures();
    let names: Vec<String> = store
        .bindings_referencing(&RoleKey::cluster_role("star-proxy"))
        .iter()
        .map(|b| format!("{} {}/{}", b.kind(), b.namespace(), b.name()))
        .collect();
    assert_eq!(
        names,
        [
            "ClusterRoleBinding /star-proxy-binding",
            "ClusterRoleBinding /sa-without-namespace",
            "RoleBinding team-a/star-proxy-in-team-a",
        ]
    );
    let names: Vec<&str> = store
        .bindings_referencing(&RoleKey::role("team-a", "pod-proxy"))
        .iter()
        .map(|b| b.name())
        .collect();
    assert_eq!(names, ["pod-proxy-binding"]);
    assert!(store
        .bindings_referencing(&RoleKey::role("team-b", "pod-proxy"))
        .is_empty());
    let dangling: Vec<String> = store
        .dangling_role_refs()
        .into_iter()
        .map(|d| format!("{}: {}", d.binding_name, d.error))
        .collect();
    assert_eq!(
        dangling,
        [
            r#"missing-role-binding: clusterrole.rbac.authorization.k8s.io "does-not-exist" not found"#,
            r#"unsupported-ref-binding: unsupported role reference kind: "Team""#,
        ]
    );
}

// ---- loader -----------------------------------------------------------------------------------

#[test]
fn fixtures_load_completely() {
    let mut store = RbacStore::new();
    assert_eq!(store.load_str(SEED, "seed-roles.yaml").unwrap(), 12);
    assert_eq!(store.load_str(TRICKY, "tricky-roles.yaml").unwrap(), 25);
    assert_eq!(store.len(), 37);
    assert_eq!(store.cluster_roles().len(), 6 + 9);
    assert_eq!(store.roles().len(), 1);
    assert_eq!(store.cluster_role_bindings().len(), 6 + 13);
    assert_eq!(store.role_bindings().len(), 2);
    let agg = store.cluster_role("aggregated-monitoring").unwrap();
    assert!(agg.aggregation_rule.is_some());
    assert_eq!(agg.rules.len(), 1);
}

#[test]
fn yaml_multi_document_skips_empty_and_null_documents() {
    let text = "\
---
# only a comment
---
~
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: a}
rules:
- {apiGroups: [''], resources: [nodes/proxy], verbs: [get]}
---
null
---
kind: RoleBinding
apiVersion: rbac.authorization.k8s.io/v1
metadata: {name: rb}
roleRef: {kind: ClusterRole, name: a}
subjects: [{kind: User, name: u}]
...
";
    let store = RbacStore::parse(text, "multi.yaml").unwrap();
    assert_eq!(store.len(), 2);
    // A RoleBinding without a namespace lands in `default`.
    assert_eq!(store.role_bindings()[0].metadata.namespace, "default");
    assert!(
        store
            .authorize(
                &user("u", &[]),
                &res("get", "", "nodes", "proxy", "default")
            )
            .allowed
    );
}

#[test]
fn json_list_and_typed_list() {
    let text = r#"{
      "apiVersion": "v1", "kind": "List",
      "items": [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "a"},
         "rules": [{"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBindingList",
         "items": [{"metadata": {"name": "b"},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "a"},
                    "subjects": [{"kind": "Group", "name": "g"}]}]}
      ]
    }"#;
    let store = RbacStore::parse(text, "list.json").unwrap();
    assert_eq!(store.cluster_roles().len(), 1);
    assert_eq!(store.cluster_role_bindings().len(), 1);
    assert!(
        store
            .authorize(&user("x", &["g"]), &kubelet("get", "metrics"))
            .allowed
    );
}

#[test]
fn json_stream_of_objects() {
    let text = r#"{"kind":"ClusterRole","apiVersion":"rbac.authorization.k8s.io/v1","metadata":{"name":"a"}}
{"kind":"ClusterRole","apiVersion":"rbac.authorization.k8s.io/v1","metadata":{"name":"b"},"rules":null}"#;
    let store = RbacStore::parse(text, "-").unwrap();
    assert_eq!(store.cluster_roles().len(), 2);
}

#[test]
fn unknown_kind_error_text() {
    let text = "kind: ClusterRole\nmetadata: {name: a}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n";
    let err = RbacStore::parse(text, "x.yaml").unwrap_err();
    assert!(matches!(err, RbacError::UnknownKind { doc: 2, .. }));
    assert_eq!(
        err.to_string(),
        "x.yaml: document 2: unsupported kind `ConfigMap`: expected ClusterRole, Role, ClusterRoleBinding, RoleBinding or List"
    );
}

#[rstest]
#[case::missing_name(
    "kind: ClusterRole\nmetadata: {}\n",
    "x.yaml: document 1: metadata.name: missing"
)]
#[case::missing_metadata("kind: Role\nrules: []\n", "x.yaml: document 1: metadata: missing")]
#[case::missing_role_ref(
    "kind: ClusterRoleBinding\nmetadata: {name: b}\nsubjects: []\n",
    "x.yaml: document 1: roleRef: missing"
)]
#[case::missing_role_ref_name(
    "kind: RoleBinding\nmetadata: {name: b, namespace: n}\nroleRef: {kind: Role}\n",
    "x.yaml: document 1: roleRef.name: missing"
)]
#[case::missing_kind("metadata: {name: b}\n", "x.yaml: document 1: kind: missing")]
#[case::list_item_missing_role_ref(
    "kind: List\nitems:\n- kind: ClusterRole\n  metadata: {name: a}\n- kind: ClusterRoleBinding\n  metadata: {name: b}\n",
    "x.yaml: document 1: items[1].roleRef: missing"
)]
#[case::verbs_not_a_list(
    "kind: ClusterRole\nmetadata: {name: a}\nrules: [{verbs: get}]\n",
    "x.yaml: document 1: rules[0].verbs: expected a list of strings, got a string"
)]
#[case::subject_name_number(
    "kind: ClusterRoleBinding\nmetadata: {name: b}\nroleRef: {kind: ClusterRole, name: a}\nsubjects: [{kind: User, name: 7}]\n",
    "x.yaml: document 1: subjects[0].name: expected a string, got a number"
)]
#[case::not_an_object(
    "just a string\n",
    "x.yaml: document 1: (document): expected a Kubernetes object (with `kind`), got a string"
)]
#[case::wrong_api_version(
    "apiVersion: v1\nkind: ClusterRole\nmetadata: {name: a}\n",
    "x.yaml: document 1: apiVersion: expected `rbac.authorization.k8s.io/v1`, got `v1`"
)]
fn field_errors(#[case] text: &str, #[case] expected: &str) {
    let err = RbacStore::parse(text, "x.yaml").unwrap_err();
    assert!(matches!(err, RbacError::Field { .. }), "{err:?}");
    assert_eq!(err.to_string(), expected);
}

#[rstest]
#[case::bad_yaml("kind: ClusterRole\nmetadata: {name: a\n")]
#[case::bad_json("{\"kind\": \"ClusterRole\", ")]
#[case::tab_indent("kind: ClusterRole\nmetadata:\n\tname: a\n")]
fn syntax_errors_are_one_line(#[case] text: &str) {
    let err = RbacStore::parse(text, "bad.yaml").unwrap_err();
    assert!(matches!(err, RbacError::Syntax { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.starts_with("bad.yaml: document 1: "), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");
}

#[test]
fn failed_load_adds_nothing() {
    let mut store = RbacStore::new();
    let text = "kind: ClusterRole\nmetadata: {name: a}\n---\nkind: Secret\n";
    assert!(store.load_str(text, "x").is_err());
    assert!(store.is_empty());
}

#[test]
fn same_object_replaces_in_place() {
    let mut store = RbacStore::new();
    store
        .load_str(
            "kind: ClusterRole\nmetadata: {name: a}\nrules: [{verbs: [get], apiGroups: [''], resources: [nodes/proxy]}]\n---\nkind: ClusterRole\nmetadata: {name: b}\n",
            "one",
        )
        .unwrap();
    store
        .load_str("kind: ClusterRole\nmetadata: {name: a}\nrules: []\n", "two")
        .unwrap();
    assert_eq!(store.cluster_roles().len(), 2);
    assert_eq!(store.cluster_roles()[0].metadata.name, "a");
    assert!(store.cluster_roles()[0].rules.is_empty());
}

#[test]
fn serializes_in_api_shape_and_round_trips() {
    let store = fixtures();
    let role = serde_json::to_value(store.cluster_role("kubelet-metrics-reader").unwrap()).unwrap();
    assert_eq!(
        role,
        serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "kubelet-metrics-reader"},
            "rules": [{"verbs": ["get"], "apiGroups": [""],
                       "resources": ["nodes/metrics", "nodes/stats", "nodes/log"]}]
        })
    );
    let rb = serde_json::to_value(&store.role_bindings()[1]).unwrap();
    assert_eq!(
        rb,
        serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "pod-proxy-binding", "namespace": "team-a"},
            "subjects": [{"kind": "ServiceAccount", "name": "deployer"}],
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-proxy"}
        })
    );

    // Serve everything back as typed lists and load it again: the same objects.
    let lists = [
        kubelet_authz::rbac::list_value("ClusterRoleList", store.cluster_roles()),
        kubelet_authz::rbac::list_value("RoleList", store.roles()),
        kubelet_authz::rbac::list_value("ClusterRoleBindingList", store.cluster_role_bindings()),
        kubelet_authz::rbac::list_value("RoleBindingList", store.role_bindings()),
    ];
    let mut again = RbacStore::new();
    for list in &lists {
        again
            .load_str(&serde_json::to_string(list).unwrap(), "served.json")
            .unwrap();
    }
    assert_eq!(again.cluster_roles(), store.cluster_roles());
    assert_eq!(again.roles(), store.roles());
    assert_eq!(again.cluster_role_bindings(), store.cluster_role_bindings());
    assert_eq!(again.role_bindings(), store.role_bindings());
}

#[rstest]
#[case::deep_json("[".repeat(100_000))]
#[case::deep_flow_yaml(format!("kind: {}", "{a: ".repeat(100_000)))]
#[case::deep_block_yaml("- ".repeat(50_000))]
#[case::deep_json_object(format!("{}", "{\"a\":".repeat(100_000)))]
#[case::billion_laughs(
    "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\ng: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]\nh: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]\ni: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]\nkind: [*i, *i, *i, *i, *i, *i, *i, *i, *i]\n".to_string()
)]
fn hostile_input_is_a_clean_error(#[case] text: String) {
    let err = RbacStore::parse(&text, "hostile").unwrap_err();
    assert!(!err.to_string().contains('\n'));
}

#[test]
fn large_shallow_and_moderately_deep_input_is_fast() {
    let started = std::time::Instant::now();
    let flat = format!(
        "kind: ClusterRole\nmetadata: {{name: a}}\nrules: [{{verbs: [{}]}}]\n",
        "get, ".repeat(20_000)
    );
    assert_eq!(RbacStore::parse(&flat, "flat").unwrap().len(), 1);
    // 120 levels deep (allowed), with 30,000 tokens at the bottom.
    let nested = format!(
        "kind: ClusterRole\nmetadata: {{name: a, labels: {}[{}]{}}}\n",
        "{a: ".repeat(120),
        "x, ".repeat(30_000),
        "}".repeat(120)
    );
    assert!(RbacStore::parse(&nested, "nested").is_err());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}
