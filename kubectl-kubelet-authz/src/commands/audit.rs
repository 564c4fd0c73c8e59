//! `audit`: every Role/ClusterRole rule that grants `nodes/proxy` (by name, `*/proxy` or `*`; any
//! verb a kubelet checks, `*` included: on a kubelet `get` is as dangerous as `create`, since a
//! WebSocket exec needs only `get`),
//! the bindings that reach subjects through it, a severity, the CIS item, and a fine-grained
//! replacement. `nodes/*` is not a wildcard and grants nothing here. Matching is the RBAC
//! evaluator's (`rbac::rule_grants`).
//!
//! Severity (documented in the README):
//! - `critical`: bound by a ClusterRoleBinding to a subject that can match someone, for every node;
//! - `high`: the same, limited to some nodes by `resourceNames`;
//! - `medium`: bound only where it cannot apply to nodes (RoleBindings, which RBAC never consults
//!   for cluster-scoped `nodes`; or subjects that match nobody): one edit away from critical;
//! - `low`: not bound at all;
//! - `info`: bound only to the API server's own kubelet client (`kube-apiserver-kubelet-client`),
//!   which needs it for `kubectl exec`, `logs` and `port-forward`.

use std::collections::BTreeSet;

use kubelet_authz::kubelet::{self, KubeletModel, KubeletVersion, Subresource};
use kubelet_authz::rbac::{
    rule_grants, PolicyRule, RbacStore, RoleRule, CLUSTER_ROLE_BINDING_KIND,
};
use serde::Serialize;

use crate::cli::{AuditArgs, FailOn, Output};
use crate::commands::who_can::online_store;
use crate::error::{CmdResult, EXIT_DENIED, EXIT_OK};
use crate::online::Online;
use crate::output::{document, emit, table, API_VERSION};
use crate::source;

/// The CIS Kubernetes Benchmark item about `nodes/proxy` ("minimize access to the proxy
/// sub-resource of nodes").
pub const CIS_NODES_PROXY: &str = "5.1.10";
/// The CIS Kubernetes Benchmark item about wildcards ("minimize wildcard use in Roles and
/// ClusterRoles"), added when the grant comes through `*` in resources or verbs.
pub const CIS_WILDCARDS: &str = "5.1.3";

/// Finding severity, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Expected (the API server's own kubelet client).
    Info,
    /// Unbound.
    Low,
    /// Bound where it cannot apply to nodes.
    Medium,
    /// Bound, some nodes.
    High,
    /// Bound, every node.
    Critical,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    fn at_least(self, threshold: FailOn) -> bool {
        let t = match threshold {
            FailOn::Low => Severity::Low,
            FailOn::Medium => Severity::Medium,
            FailOn::High => Severity::High,
            FailOn::Critical => Severity::Critical,
        };
        self >= t
    }
}

/// Names the API server's kubelet client certificate usually carries.
const APISERVER_KUBELET_CLIENTS: &[&str] =
    &["kube-apiserver-kubelet-client", "system:kube-apiserver"];

/// A subject reached through a binding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SubjectDoc {
    /// Kind.
    pub kind: String,
    /// Name.
    pub name: String,
    /// Resolved ServiceAccount namespace.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

/// A binding of the role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BindingDoc {
    /// `ClusterRoleBinding` or `RoleBinding`.
    pub kind: String,
    /// Name.
    pub name: String,
    /// Namespace (RoleBindings).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Whether it can grant access to nodes (a ClusterRoleBinding with a subject that matches).
    pub applies_to_nodes: bool,
    /// Subjects that can match someone.
    pub subjects: Vec<SubjectDoc>,
}

/// One rule granting `nodes/proxy`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// Severity.
    pub severity: Severity,
    /// CIS Kubernetes Benchmark items.
    pub cis: Vec<&'static str>,
    /// `ClusterRole` or `Role`.
    pub role_kind: String,
    /// Role name.
    pub role_name: String,
    /// Role namespace (Roles).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub role_namespace: String,
    /// Index of the rule in the role.
    pub rule_index: usize,
    /// The resources entry that grants it (`nodes/proxy`, `*/proxy` or `*`).
    pub matched_resource: String,
    /// The verbs of the rule that apply to `nodes/proxy`.
    pub verbs: Vec<String>,
    /// `resourceNames` limiting the rule.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
    /// The bindings of the role.
    pub bindings: Vec<BindingDoc>,
    /// What it means.
    pub message: String,
    /// What to grant instead.
    pub suggestion: String,
}

/// The fine-grained subresources a v1.36 kubelet checks for its endpoints (all but proxy), each
/// with the verbs of the methods those endpoints serve.
pub fn fine_grained_subresources() -> Vec<(Subresource, BTreeSet<&'static str>)> {
    let latest = KubeletModel::for_version(KubeletVersion::LATEST);
    let mut map: std::collections::BTreeMap<Subresource, BTreeSet<&'static str>> =
        std::collections::BTreeMap::new();
    for e in kubelet::endpoints_for(KubeletVersion::LATEST) {
        for sub in latest.subresources(e.path).iter() {
            if sub != Subresource::Proxy {
                map.entry(sub)
                    .or_default()
                    .extend(e.methods.iter().map(|m| kubelet::verb_for_method(m)));
            }
        }
    }
    map.into_iter().collect()
}

/// The entry of `rule.resources` that grants `verb` on `nodes/proxy`, if any.
fn matching_entry(rule: &PolicyRule, verb: &str, name: &str) -> Option<String> {
    rule.resources.iter().find_map(|r| {
        let single = PolicyRule {
            resources: vec![r.clone()],
            ..rule.clone()
        };
        rule_grants(&single, verb, "", "nodes", "proxy", name).then(|| r.clone())
    })
}

/// The verbs a kubelet can send (`kubelet::verb_for_method` over every HTTP method: `get`,
/// `create`, `update`, `patch`, `delete` and the empty verb).
fn kubelet_verbs() -> Vec<&'static str> {
    kubelet::verbs().collect()
}

fn finding(store: &RbacStore, rr: &RoleRule<'_>) -> Option<Finding> {
    let rule = rr.rule;
    let name = rule
        .resource_names
        .first()
        .map(String::as_str)
        .unwrap_or("");
    // The kubelet verbs the rule grants on nodes/proxy; `GET` (upper case), `list` or `watch`
    // grant nothing on a kubelet.
    let granted: Vec<&str> = kubelet_verbs()
        .into_iter()
        .filter(|v| rule_grants(rule, v, "", "nodes", "proxy", name))
        .collect();
    let first = granted.first()?;
    let verbs: Vec<String> = rule
        .verbs
        .iter()
        .filter(|v| v.as_str() == "*" || granted.contains(&v.as_str()))
        .cloned()
        .collect();
    let matched = matching_entry(rule, first, name)?;
    let key = rr.role_key();
    let bindings: Vec<BindingDoc> = store
        .bindings_referencing(&key)
        .iter()
        .map(|b| {
            let subjects: Vec<SubjectDoc> = b
                .subjects()
                .iter()
                .filter_map(|s| s.resolved(b.namespace()))
                .map(|s| SubjectDoc {
                    kind: s.kind,
                    name: s.name,
                    namespace: s.namespace,
                })
                .collect();
            BindingDoc {
                kind: b.kind().to_string(),
                name: b.name().to_string(),
                namespace: b.namespace().to_string(),
                applies_to_nodes: b.kind() == CLUSTER_ROLE_BINDING_KIND && !subjects.is_empty(),
                subjects,
            }
        })
        .collect();
    let effective: Vec<&BindingDoc> = bindings.iter().filter(|b| b.applies_to_nodes).collect();
    let only_apiserver = !effective.is_empty()
        && effective.iter().all(|b| {
            b.subjects
                .iter()
                .all(|s| s.kind == "User" && APISERVER_KUBELET_CLIENTS.contains(&s.name.as_str()))
        });
    let limited = !rule.resource_names.is_empty();
    let severity = if only_apiserver {
        Severity::Info
    } else if !effective.is_empty() {
        if limited {
            Severity::High
        } else {
            Severity::Critical
        }
    } else if !bindings.is_empty() {
        Severity::Medium
    } else {
        Severity::Low
    };
    let scope = if limited {
        format!("nodes {}", rule.resource_names.join(", "))
    } else {
        "every node".to_string()
    };
    let message = match severity {
        Severity::Critical | Severity::High => format!(
            "{} subject(s) can run commands in every pod on {scope} through the kubelet (verbs {}; with get alone a WebSocket exec is allowed)",
            effective.iter().map(|b| b.subjects.len()).sum::<usize>(),
            verbs.join(", ")
        ),
        Severity::Medium => "bound only by RoleBindings or to subjects that match nobody: no kubelet access today (RBAC never consults RoleBindings for nodes), one ClusterRoleBinding away".to_string(),
        Severity::Low => "not bound: no access today, but any binding of this role grants exec in every pod".to_string(),
        Severity::Info => "the API server's own kubelet client: needed for kubectl exec, logs and port-forward".to_string(),
    };
    let subs: Vec<String> = fine_grained_subresources()
        .iter()
        .map(|(s, verbs)| {
            let v: Vec<&str> = verbs.iter().copied().collect();
            format!("nodes/{s} ({})", v.join(", "))
        })
        .collect();
    let suggestion = if severity == Severity::Info {
        String::new()
    } else {
        format!(
            "grant only what is needed of {} instead; keep nodes/proxy only for exec, attach, portForward, run, containerLogs and debug; `kubectl kubelet-authz suggest-role PATH...` writes the role",
            subs.join(", ")
        )
    };
    Some(Finding {
        severity,
        cis: if matched.contains('*') || verbs.iter().any(|v| v == "*") {
            vec![CIS_NODES_PROXY, CIS_WILDCARDS]
        } else {
            vec![CIS_NODES_PROXY]
        },
        role_kind: rr.role_kind.to_string(),
        role_name: rr.role_name.to_string(),
        role_namespace: rr.role_namespace.to_string(),
        rule_index: rr.rule_index,
        matched_resource: matched,
        verbs,
        resource_names: rule.resource_names.clone(),
        bindings,
        message,
        suggestion,
    })
}

/// Every finding, most severe first.
pub fn findings(store: &RbacStore) -> Vec<Finding> {
    let mut out: Vec<Finding> = store.rules().filter_map(|rr| finding(store, &rr)).collect();
    out.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| a.role_name.cmp(&b.role_name))
            .then_with(|| a.rule_index.cmp(&b.rule_index))
    });
    out
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AuditDoc<'a> {
    api_version: &'static str,
    kind: &'static str,
    mode: &'static str,
    summary: serde_json::Value,
    findings: &'a [Finding],
    dangling_bindings: Vec<serde_json::Value>,
}

/// `audit`.
pub fn run(args: &AuditArgs) -> CmdResult {
    let (store, mode) = if args.rbac.rbac_files.is_empty() {
        (online_store(&Online::connect(&args.cluster)?)?, "online")
    } else {
        (source::load_files(&args.rbac.rbac_files)?, "offline")
    };
    let found = findings(&store);
    let count = |s: Severity| found.iter().filter(|f| f.severity == s).count();
    let dangling: Vec<serde_json::Value> = store
        .dangling_role_refs()
        .into_iter()
        .map(|d| {
            serde_json::json!({
                "kind": d.binding_kind, "name": d.binding_name,
                "namespace": d.binding_namespace, "error": d.error,
            })
        })
        .collect();
    let failed = args
        .fail_on
        .is_some_and(|t| found.iter().any(|f| f.severity.at_least(t)));
    match args.output {
        Output::Json | Output::Yaml => document(
            args.output,
            &AuditDoc {
                api_version: API_VERSION,
                kind: "Audit",
                mode,
                summary: serde_json::json!({
                    "critical": count(Severity::Critical),
                    "high": count(Severity::High),
                    "medium": count(Severity::Medium),
                    "low": count(Severity::Low),
                    "info": count(Severity::Info),
                }),
                findings: &found,
                dangling_bindings: dangling,
            },
        )?,
        Output::Table | Output::Wide => {
            let mut text = String::new();
            if found.is_empty() {
                text.push_str("no role grants nodes/proxy\n");
            } else {
                let mut rows = vec![vec![
                    "SEVERITY".to_string(),
                    "CIS".into(),
                    "ROLE".into(),
                    "RULE".into(),
                    "VERBS".into(),
                    "BOUND TO".into(),
                ]];
                for f in &found {
                    let role = if f.role_namespace.is_empty() {
                        format!("{}/{}", f.role_kind, f.role_name)
                    } else {
                        format!("{}/{}/{}", f.role_kind, f.role_namespace, f.role_name)
                    };
                    let bound: Vec<String> = f
                        .bindings
                        .iter()
                        .map(|b| {
                            let subs: Vec<String> = b
                                .subjects
                                .iter()
                                .map(|s| {
                                    if s.namespace.is_empty() {
                                        format!("{} {}", s.kind, s.name)
                                    } else {
                                        format!("{} {}/{}", s.kind, s.namespace, s.name)
                                    }
                                })
                                .collect();
                            format!(
                                "{}/{}{} [{}]",
                                b.kind,
                                b.name,
                                if b.applies_to_nodes {
                                    ""
                                } else {
                                    " (no effect on nodes)"
                                },
                                subs.join(", ")
                            )
                        })
                        .collect();
                    rows.push(vec![
                        f.severity.as_str().to_string(),
                        f.cis.join(","),
                        role,
                        format!("#{} {}", f.rule_index, f.matched_resource),
                        f.verbs.join(","),
                        if bound.is_empty() {
                            "-".to_string()
                        } else {
                            bound.join("; ")
                        },
                    ]);
                }
                text.push_str(&table(&rows));
                if args.output == Output::Wide {
                    for f in &found {
                        text.push_str(&format!(
                            "\n{} {}/{} rule #{}: {}\n",
                            f.severity.as_str(),
                            f.role_kind,
                            f.role_name,
                            f.rule_index,
                            f.message
                        ));
                        if !f.suggestion.is_empty() {
                            text.push_str(&format!("  fix: {}\n", f.suggestion));
                        }
                    }
                }
                text.push_str(&format!(
                    "{} critical, {} high, {} medium, {} low, {} info\n",
                    count(Severity::Critical),
                    count(Severity::High),
                    count(Severity::Medium),
                    count(Severity::Low),
                    count(Severity::Info)
                ));
            }
            for d in &dangling {
                text.push_str(&format!(
                    "note: {} {} refers to a missing role: {}\n",
                    d.get("kind").and_then(|v| v.as_str()).unwrap_or_default(),
                    d.get("name").and_then(|v| v.as_str()).unwrap_or_default(),
                    d.get("error").and_then(|v| v.as_str()).unwrap_or_default()
                ));
            }
            emit(&text)?;
        }
    }
    Ok(if failed { EXIT_DENIED } else { EXIT_OK })
}
