//! Properties of the RBAC evaluator: the loader never panics and always answers in one line; the
//! evaluator never panics and its reasons and grants are consistent; adding a binding never turns
//! Allow into NoOpinion; who-can agrees with authorize; stores survive a JSON round trip.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use kubelet_authz::identity::UserInfo;
use kubelet_authz::rbac::{
    list_value, rule_allows, Attributes, ClusterRole, ClusterRoleBinding, PolicyRule, RbacStore,
    Role, RoleBinding, RoleRef, Subject,
};
use proptest::prelude::*;
use proptest::sample::{select, subsequence};

const SEED: &str = include_str!("fixtures/rbac/seed-roles.yaml");
const TRICKY: &str = include_str!("fixtures/rbac/tricky-roles.yaml");

fn pick(items: &'static [&'static str]) -> impl Strategy<Value = String> {
    select(items).prop_map(String::from)
}

fn policy_rule() -> impl Strategy<Value = PolicyRule> {
    (
        prop::collection::vec(pick(&["get", "create", "*", "", "GET", "list"]), 0..3),
        prop::collection::vec(pick(&["", "*", "apps"]), 0..3),
        prop::collection::vec(
            pick(&[
                "nodes",
                "nodes/proxy",
                "nodes/metrics",
                "*/proxy",
                "*",
                "nodes/*",
                "*/*",
                "pods",
                "pods/proxy",
                "",
            ]),
            0..3,
        ),
        prop::collection::vec(pick(&["worker-1", "worker-2", ""]), 0..2),
        prop::collection::vec(
            pick(&["*", "/healthz", "/logs/*", "/", "/logs", "**", ""]),
            0..2,
        ),
    )
        .prop_map(
            |(verbs, api_groups, resources, resource_names, non_resource_urls)| PolicyRule {
                verbs,
                api_groups,
                resources,
                resource_names,
                non_resource_urls,
            },
        )
}

fn subject() -> impl Strategy<Value = Subject> {
    prop_oneof![
        pick(&["alice", "bob", "*", "system:anonymous"]).prop_map(Subject::user),
        pick(&[
            "g1",
            "g2",
            "system:authenticated",
            "system:serviceaccounts:ns1"
        ])
        .prop_map(Subject::group),
        (pick(&["", "ns1", "ns2"]), pick(&["sa", "default"]))
            .prop_map(|(ns, name)| Subject::service_account(ns, name)),
        Just(Subject {
            kind: "Robot".into(),
            name: "alice".into(),
            ..Subject::default()
        }),
    ]
}

fn role_ref() -> impl Strategy<Value = RoleRef> {
    prop_oneof![
        pick(&["r0", "r1", "r2", "missing"]).prop_map(RoleRef::cluster_role),
        pick(&["r0", "r1", "missing"]).prop_map(RoleRef::role),
        Just(RoleRef {
            kind: "Team".into(),
            name: "x".into(),
            ..RoleRef::default()
        }),
    ]
}

/// A binding: `None` namespace for a ClusterRoleBinding.
type BindingSpec = (Option<String>, RoleRef, Vec<Subject>);

fn binding() -> impl Strategy<Value = BindingSpec> {
    (
        prop::option::of(pick(&["ns1", "ns2"])),
        role_ref(),
        prop::collection::vec(subject(), 0..3),
    )
}

fn add_binding(store: &mut RbacStore, name: &str, (ns, role_ref, subjects): BindingSpec) {
    match ns {
        None => {
            store.insert_cluster_role_binding(ClusterRoleBinding::new(name, role_ref, subjects))
        }
        Some(ns) => store.insert_role_binding(RoleBinding::new(ns, name, role_ref, subjects)),
    }
}

fn store() -> impl Strategy<Value = RbacStore> {
    (
        prop::collection::vec(prop::collection::vec(policy_rule(), 0..3), 0..3),
        prop::collection::vec(
            (
                pick(&["ns1", "ns2"]),
                prop::collection::vec(policy_rule(), 0..3),
            ),
            0..3,
        ),
        prop::collection::vec(binding(), 0..5),
    )
        .prop_map(|(cluster_roles, roles, bindings)| {
            let mut store = RbacStore::new();
            for (i, rules) in cluster_roles.into_iter().enumerate() {
                store.insert_cluster_role(ClusterRole::new(format!("r{i}"), rules));
            }
            for (i, (ns, rules)) in roles.into_iter().enumerate() {
                store.insert_role(Role::new(ns, format!("r{i}"), rules));
            }
            for (i, b) in bindings.into_iter().enumerate() {
                add_binding(&mut store, &format!("b{i}"), b);
            }
            store
        })
}

fn user() -> impl Strategy<Value = UserInfo> {
    (
        pick(&[
            "alice",
            "bob",
            "*",
            "system:anonymous",
            "system:serviceaccount:ns1:sa",
            "system:serviceaccount:ns2:default",
        ]),
        subsequence(
            vec![
                "g1",
                "g2",
                "system:authenticated",
                "system:serviceaccounts:ns1",
            ],
            0..4,
        ),
    )
        .prop_map(|(name, groups)| UserInfo::new(name, &groups))
}

fn attrs() -> impl Strategy<Value = Attributes> {
    prop_oneof![
        (
            pick(&["get", "create", "", "GET"]),
            pick(&["", "apps"]),
            pick(&["nodes", "pods", "Foobar"]),
            pick(&["", "proxy", "metrics", "*"]),
            pick(&["", "worker-1", "worker-2"]),
            pick(&["", "ns1", "ns2"]),
        )
            .prop_map(|(verb, group, resource, sub, name, ns)| {
                Attributes::resource(&verb, &group, &resource, &sub, &name, &ns)
            }),
        (
            pick(&["get", "create", ""]),
            pick(&["/", "/healthz", "/logs/x", "/logs", ""]),
        )
            .prop_map(|(verb, path)| Attributes::non_resource(&verb, &path)),
    ]
}

/// A user that a resolved who-can subject stands for.
fn user_for(subject: &Subject) -> UserInfo {
    match subject.kind.as_str() {
        "User" => UserInfo::new(subject.name.clone(), &[]),
        "Group" => UserInfo::new("someone-else", &[subject.name.as_str()]),
        _ => UserInfo::new(
            format!(
                "system:serviceaccount:{}:{}",
                subject.namespace, subject.name
            ),
            &[],
        ),
    }
}

fn check_load(text: &str) {
    if let Err(e) = RbacStore::parse(text, "prop.yaml") {
        let msg = e.to_string();
        assert!(!msg.contains('\n'), "multi-line error: {msg:?}");
        assert!(msg.starts_with("prop.yaml: document "), "{msg}");
    }
}

proptest! {
    #[test]
    fn loader_never_panics_on_arbitrary_text(text in any::<String>()) {
        check_load(&text);
    }

    #[test]
    fn loader_never_panics_on_yaml_like_text(
        text in "(kind: |ClusterRole|RoleBinding|List|ClusterRoleList|items:|- |metadata:|name: |namespace: |roleRef:|rules:|subjects:|verbs:|\\{|\\}|\\[|\\]|---\n|\n|  |&a |\\*a|!t |\"|'|: |, |null|~|<<: |[a-z0-9])*"
    ) {
        check_load(&text);
    }

    #[test]
    fn loader_never_panics_on_mutated_fixtures(
        pick_tricky in any::<bool>(),
        cut in any::<prop::sample::Index>(),
        insert in "(\\PC|\n|\t){0,8}",
        drop in 0usize..16,
    ) {
        let base = if pick_tricky { TRICKY } else { SEED };
        let mut at = cut.index(base.len());
        while !base.is_char_boundary(at) {
            at -= 1;
        }
        let mut end = (at + drop).min(base.len());
        while !base.is_char_boundary(end) {
            end -= 1;
        }
        let text = format!("{}{}{}", &base[..at], insert, &base[end..]);
        check_load(&text);
    }

    #[test]
    fn evaluator_is_consistent(store in store(), who in user(), attrs in attrs()) {
        let d = store.authorize(&who, &attrs);
        if d.allowed {
            prop_assert!(d.reason.starts_with("RBAC: allowed by "), "{}", d.reason);
            let grant = d.grant.clone().unwrap();
            let rules = store.role_rules(&grant.role_key()).unwrap();
            prop_assert!(rule_allows(&rules[grant.rule_index], &attrs));
        } else {
            prop_assert!(d.grant.is_none());
            prop_assert!(d.reason.is_empty() || d.reason.starts_with("RBAC: "), "{}", d.reason);
            prop_assert!(!d.reason.contains('\n'));
        }
    }

    #[test]
    fn adding_a_binding_never_removes_an_allow(
        store in store(),
        extra in binding(),
        who in user(),
        attrs in attrs(),
    ) {
        let before = store.authorize(&who, &attrs);
        let extra_is_cluster = extra.0.is_none();
        let mut more = store.clone();
        add_binding(&mut more, "extra-binding", extra);
        let after = more.authorize(&who, &attrs);
        if before.allowed {
            prop_assert!(after.allowed);
            // The binding that allowed before is still visited before the new one (unless a new
            // ClusterRoleBinding overtakes a RoleBinding), so the reason is unchanged.
            let before_cluster = before
                .grant
                .as_ref()
                .is_some_and(|g| g.binding_kind == "ClusterRoleBinding");
            if before_cluster || !extra_is_cluster {
                prop_assert_eq!(before.reason, after.reason);
            }
        }
    }

    #[test]
    fn who_can_agrees_with_authorize(store in store(), who in user(), attrs in attrs()) {
        let grants = store.subjects_allowed(&attrs);
        for g in &grants {
            prop_assert!(store.authorize(&user_for(&g.subject), &attrs).allowed, "{:?}", g);
        }
        if store.authorize(&who, &attrs).allowed {
            prop_assert!(grants
                .iter()
                .any(|g| g.subject.applies_to(&who, &g.grant.binding_namespace)));
        }
    }

    #[test]
    fn json_round_trip(store in store()) {
        let mut again = RbacStore::new();
        for list in [
            list_value("ClusterRoleList", store.cluster_roles()),
            list_value("RoleList", store.roles()),
            list_value("ClusterRoleBindingList", store.cluster_role_bindings()),
            list_value("RoleBindingList", store.role_bindings()),
        ] {
            again.load_str(&serde_json::to_string(&list).unwrap(), "served.json").unwrap();
        }
        prop_assert_eq!(again.cluster_roles(), store.cluster_roles());
        prop_assert_eq!(again.roles(), store.roles());
        prop_assert_eq!(again.cluster_role_bindings(), store.cluster_role_bindings());
        prop_assert_eq!(again.role_bindings(), store.role_bindings());
    }
}
