//! Legacy (unaggregated) discovery documents, enough for `kubectl` and the `kube` crate: the
//! version, the core and named API groups, and the resources of each group version served.

use kubelet_authz::rbac::RBAC_GROUP;
use kubelet_authz::review::{AUTHENTICATION_GROUP, AUTHORIZATION_GROUP};
use serde_json::{json, Value};

/// The Kubernetes version the stand-in claims.
pub const GIT_VERSION: &str = "v1.32.0";

/// `GET /version`.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": GIT_VERSION,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.23.0",
        "compiler": "gc",
        "platform": "linux/amd64"
    })
}

/// `GET /api`.
pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]
    })
}

/// The named groups served (all at `v1`).
pub const GROUPS: &[&str] = &[AUTHENTICATION_GROUP, AUTHORIZATION_GROUP, RBAC_GROUP];

/// `GET /apis`.
pub fn group_list() -> Value {
    let groups: Vec<Value> = GROUPS
        .iter()
        .map(|g| {
            let gv = json!({"groupVersion": format!("{g}/v1"), "version": "v1"});
            json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /apis/{group}`.
pub fn group(name: &str) -> Option<Value> {
    GROUPS.contains(&name).then(|| {
        let gv = json!({"groupVersion": format!("{name}/v1"), "version": "v1"});
        json!({"kind": "APIGroup", "apiVersion": "v1", "name": name, "versions": [gv.clone()], "preferredVersion": gv})
    })
}

fn resource(name: &str, singular: &str, namespaced: bool, kind: &str, verbs: &[&str]) -> Value {
    json!({
        "name": name,
        "singularName": singular,
        "namespaced": namespaced,
        "kind": kind,
        "verbs": verbs,
    })
}

/// `GET /api/v1` or `GET /apis/{group}/v1`: the APIResourceList of a group version
/// (`""` = core).
pub fn resources(group: &str) -> Option<Value> {
    let create = &["create"][..];
    let read = &["get", "list"][..];
    let (group_version, list) = match group {
        "" => (
            "v1".to_string(),
            vec![
                {
                    let mut n = resource("nodes", "node", false, "Node", read);
                    if let Some(obj) = n.as_object_mut() {
                        obj.insert("shortNames".into(), json!(["no"]));
                    }
                    n
                },
                resource(
                    "nodes/proxy",
                    "",
                    false,
                    "NodeProxyOptions",
                    &["create", "delete", "get", "patch", "update"],
                ),
                resource("nodes/status", "", false, "Node", &["get"]),
            ],
        ),
        AUTHENTICATION_GROUP => (
            format!("{group}/v1"),
            vec![
                resource(
                    "selfsubjectreviews",
                    "selfsubjectreview",
                    false,
                    "SelfSubjectReview",
                    create,
                ),
                resource("tokenreviews", "tokenreview", false, "TokenReview", create),
            ],
        ),
        AUTHORIZATION_GROUP => (
            format!("{group}/v1"),
            vec![
                resource(
                    "selfsubjectaccessreviews",
                    "selfsubjectaccessreview",
                    false,
                    "SelfSubjectAccessReview",
                    create,
                ),
                resource(
                    "subjectaccessreviews",
                    "subjectaccessreview",
                    false,
                    "SubjectAccessReview",
                    create,
                ),
            ],
        ),
        RBAC_GROUP => (
            format!("{group}/v1"),
            vec![
                resource(
                    "clusterrolebindings",
                    "clusterrolebinding",
                    false,
                    "ClusterRoleBinding",
                    read,
                ),
                resource("clusterroles", "clusterrole", false, "ClusterRole", read),
                resource("rolebindings", "rolebinding", true, "RoleBinding", read),
                resource("roles", "role", true, "Role", read),
            ],
        ),
        _ => return None,
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": list,
    }))
}
