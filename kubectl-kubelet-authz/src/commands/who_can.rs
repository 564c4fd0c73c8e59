//! `who-can`: the subjects whose RBAC bindings let them send a request to a kubelet path, through
//! which binding, role and `nodes/<subresource>`. The subresources and verb are the kubelet's
//! (`engine::plan`, from the engine's request attributes; a target the filter refuses reaches
//! nobody); the matching is the RBAC evaluator's (`RbacStore::subjects_allowed`).

use kubelet_authz::kubelet::{self, KubeletModel};
use kubelet_authz::path::PathError;
use kubelet_authz::rbac::{Attributes, RbacStore};
use serde::Serialize;

use crate::cli::{Output, WhoCanArgs};
use crate::engine::{self, KubeletRequest};
use crate::error::{cluster, CliError, CmdResult, EXIT_DENIED, EXIT_OK};
use crate::online::Online;
use crate::output::{document, emit, table, API_VERSION};
use crate::request::{self, DEFAULT_NODE};
use crate::source;

/// RBAC objects and the kubelet model, from files or from the cluster (whose Node gives the
/// version when `--node` is given without `--kubelet-version`).
pub fn store_and_model(
    rbac: &crate::cli::RbacArgs,
    cluster_args: &crate::cli::ClusterArgs,
    kubelet: &crate::cli::KubeletArgs,
) -> Result<(RbacStore, KubeletModel, &'static str), CliError> {
    if !rbac.rbac_files.is_empty() {
        let model = request::model_from_args(kubelet, None)?;
        return Ok((source::load_files(&rbac.rbac_files)?, model, "offline"));
    }
    request::model_from_args(kubelet, None)?;
    let online = Online::connect(cluster_args)?;
    let fallback = match (&kubelet.kubelet_version, &kubelet.node) {
        (None, Some(n)) => Some(online.node_version(n)?),
        _ => None,
    };
    let model = request::model_from_args(kubelet, fallback)?;
    Ok((online_store(&online)?, model, "online"))
}

/// Every RBAC object of the cluster, in a store.
pub fn online_store(online: &Online) -> Result<RbacStore, CliError> {
    let text = online.rbac_list()?;
    let mut store = RbacStore::new();
    store
        .load_str(&text, &online.server)
        .map_err(|e| cluster(anyhow::anyhow!("the cluster's RBAC objects: {e}")))?;
    Ok(store)
}

/// One way in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Way {
    /// `User`, `Group` or `ServiceAccount`.
    pub kind: String,
    /// Subject name.
    pub name: String,
    /// ServiceAccount namespace (resolved).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// The subresource whose review allows it.
    pub subresource: String,
    /// `ClusterRoleBinding` (RoleBindings never apply to nodes).
    pub binding_kind: String,
    /// Binding name.
    pub binding_name: String,
    /// `ClusterRole` or `Role`.
    pub role_kind: String,
    /// Role name.
    pub role_name: String,
    /// Index of the allowing rule.
    pub rule_index: usize,
}

/// Every (subject, binding) that reaches the request, in the kubelet's subresource order; or
/// why the filter refuses the request target (400, nobody reaches it).
pub fn ways(
    store: &RbacStore,
    req: &KubeletRequest,
) -> Result<(engine::Plan, Vec<Way>), PathError> {
    let plan = engine::plan(req)?;
    let mut out: Vec<Way> = Vec::new();
    for sub in &plan.subresources {
        let attrs = Attributes::kubelet(&plan.verb, sub.as_str(), &req.node);
        for g in store.subjects_allowed(&attrs) {
            let way = Way {
                kind: g.subject.kind.clone(),
                name: g.subject.name.clone(),
                namespace: g.subject.namespace.clone(),
                subresource: sub.to_string(),
                binding_kind: g.grant.binding_kind.clone(),
                binding_name: g.grant.binding_name.clone(),
                role_kind: g.grant.role_kind.clone(),
                role_name: g.grant.role_name.clone(),
                rule_index: g.grant.rule_index,
            };
            if !out.contains(&way) {
                out.push(way);
            }
        }
    }
    Ok((plan, out))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WhoCanDoc<'a> {
    api_version: &'static str,
    kind: &'static str,
    mode: &'static str,
    request: serde_json::Value,
    kubelet: serde_json::Value,
    verb: String,
    subresources: Vec<String>,
    subjects: &'a [Way],
    #[serde(skip_serializing_if = "Option::is_none")]
    refused: Option<String>,
    notes: Vec<String>,
}

/// `who-can`.
pub fn run(args: &WhoCanArgs) -> CmdResult {
    let (verb, path) = request::parse_verb_and_path(&args.args)?;
    let (store, model, mode) = store_and_model(&args.rbac, &args.cluster, &args.kubelet)?;
    let node = args
        .kubelet
        .node
        .clone()
        .unwrap_or_else(|| DEFAULT_NODE.to_string());
    let req = KubeletRequest {
        method: verb.http_method(),
        target: path.clone(),
        upgrade: args.upgrade,
        node: node.clone(),
        model,
        strict_upgrade: args.kubelet.strict_upgrade,
    };
    let (plan, ways, refused) = match ways(&store, &req) {
        Ok((plan, ways)) => (plan, ways, None),
        Err(e) => (
            engine::Plan {
                verb: kubelet::verb_for_method(&req.method).to_string(),
                strict_upgrade_applied: false,
                subresources: Vec::new(),
            },
            Vec::new(),
            Some(e),
        ),
    };
    let mut notes = Vec::new();
    notes.extend(request::not_a_path_hint(&path));
    if let Some(why) = engine::attributes(&req)
        .ok()
        .and_then(|a| request::unknown_path_hint(&a.path))
    {
        notes.push(format!(
            "{why} (the filter authorizes it as nodes/proxy, as every path without a subresource of its own)"
        ));
    }
    if ways
        .iter()
        .any(|w| w.kind == "Group" && w.name == "system:authenticated")
    {
        notes.push("Group system:authenticated is every authenticated user".to_string());
    }
    if ways
        .iter()
        .any(|w| w.kind == "Group" && w.name == "system:unauthenticated")
    {
        notes.push("Group system:unauthenticated is every anonymous request (when the kubelet allows anonymous authentication)".to_string());
    }
    if args.kubelet.node.is_none() {
        notes.push(format!(
            "rules limited by resourceNames count only for node `{DEFAULT_NODE}`: pass `--node NAME`"
        ));
    }
    let code = if ways.is_empty() {
        EXIT_DENIED
    } else {
        EXIT_OK
    };
    match args.output {
        Output::Json | Output::Yaml => document(
            args.output,
            &WhoCanDoc {
                api_version: API_VERSION,
                kind: "WhoCan",
                mode,
                request: serde_json::json!({
                    "method": verb.method, "verb": verb.verb, "path": path,
                    "upgrade": args.upgrade, "node": node,
                }),
                kubelet: serde_json::json!({
                    "version": model.version().to_string(),
                    "fineGrainedAuthz": model.fine_grained(),
                    "strictUpgradeVerb": args.kubelet.strict_upgrade,
                }),
                verb: plan.verb.clone(),
                subresources: plan.subresources.iter().map(|s| s.to_string()).collect(),
                subjects: &ways,
                refused: refused.map(|e| e.to_string()),
                notes,
            },
        )?,
        Output::Table | Output::Wide => {
            let subs: Vec<String> = plan
                .subresources
                .iter()
                .map(|s| format!("nodes/{s}"))
                .collect();
            let verb_shown = if plan.verb.is_empty() {
                "\"\"".to_string()
            } else {
                plan.verb.clone()
            };
            let mut text = match refused {
                Some(e) => format!(
                    "nobody: the filter refuses the request target `{path}` with 400 before authentication: {e}\n"
                ),
                None => format!(
                    "{verb_shown} {} on kubelet {} (node {node}):\n",
                    subs.join(" or "),
                    model.version()
                ),
            };
            if refused.is_some() {
                // Nobody: no review is ever sent.
            } else if ways.is_empty() {
                text.push_str("nobody\n");
            } else {
                let mut rows = vec![vec![
                    "KIND".to_string(),
                    "SUBJECT".into(),
                    "VIA".into(),
                    "BINDING".into(),
                    "ROLE".into(),
                ]];
                for w in &ways {
                    rows.push(vec![
                        w.kind.clone(),
                        if w.namespace.is_empty() {
                            w.name.clone()
                        } else {
                            format!("{}/{}", w.namespace, w.name)
                        },
                        format!("nodes/{}", w.subresource),
                        format!("{}/{}", w.binding_kind, w.binding_name),
                        format!("{}/{}", w.role_kind, w.role_name),
                    ]);
                }
                text.push_str(&table(&rows));
            }
            for n in &notes {
                text.push_str(&format!("note: {n}\n"));
            }
            emit(&text)?;
        }
    }
    Ok(code)
}
