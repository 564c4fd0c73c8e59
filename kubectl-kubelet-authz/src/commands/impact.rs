//! `impact`: for every subject in the RBAC bindings and every kubelet endpoint (every method it
//! serves; a `GET` to exec, attach or portForward is a WebSocket upgrade), compare the answer on a
//! kubelet of `--from-version` (kubelet-exact upgrade verb) with the answer on `--to-version`
//! (with the filter's strict upgrade verb when `--strict-upgrade`). Only changed answers are
//! listed; each kubelet version uses its default feature gates.
//!
//! A `Group` subject is evaluated as a member with only that group (plus `system:authenticated`);
//! a `ServiceAccount` as its user with the ServiceAccount groups; a `User` as that user.

use std::collections::BTreeSet;

use kubelet_authz::identity::{self, UserInfo};
use kubelet_authz::kubelet::{self, KubeletModel};
use kubelet_authz::rbac::{RbacStore, Subject};
use serde::Serialize;

use crate::authority::rbac_answer;
use crate::cli::{ImpactArgs, Output, UserArgs};
use crate::commands::who_can::online_store;
use crate::engine::{self, KubeletRequest};
use crate::error::{CmdResult, EXIT_DENIED, EXIT_OK};
use crate::online::Online;
use crate::output::{document, emit, table, yes_no, API_VERSION};
use crate::request::{self, DEFAULT_NODE};
use crate::source;

/// The user a subject stands for.
fn user_for(subject: &Subject) -> UserInfo {
    match subject.kind.as_str() {
        "Group" => identity::add_authenticated_group(UserInfo {
            name: format!("member-of:{}", subject.name),
            groups: vec![subject.name.clone()],
            ..UserInfo::default()
        }),
        "ServiceAccount" => request::user_from_args(&UserArgs {
            as_user: Some(format!(
                "system:serviceaccount:{}:{}",
                subject.namespace, subject.name
            )),
            ..UserArgs::default()
        })
        .unwrap_or_default(),
        _ => request::user_from_args(&UserArgs {
            as_user: Some(subject.name.clone()),
            ..UserArgs::default()
        })
        .unwrap_or_default(),
    }
}

/// Every subject that can match someone, from every binding, once.
fn subjects(store: &RbacStore) -> Vec<Subject> {
    let mut seen = BTreeSet::new();
    store
        .bindings()
        .flat_map(|b| {
            b.subjects()
                .iter()
                .filter_map(move |s| s.resolved(b.namespace()))
        })
        .filter(|s| seen.insert(s.clone()))
        .collect()
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Side {
    served: bool,
    allowed: bool,
    verb: String,
    subresource: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Change {
    subject: Subject,
    endpoint: &'static str,
    path: &'static str,
    method: &'static str,
    upgrade: bool,
    change: &'static str,
    before: Side,
    after: Side,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ImpactDoc<'a> {
    api_version: &'static str,
    kind: &'static str,
    mode: &'static str,
    from: serde_json::Value,
    to: serde_json::Value,
    subjects: usize,
    changes: &'a [Change],
}

fn side(
    store: &RbacStore,
    user: &UserInfo,
    (model, strict): (KubeletModel, bool),
    node: &str,
    ep: &kubelet::Endpoint,
    method: &str,
    upgrade: bool,
) -> Side {
    let served = model.version().minor() >= ep.since_minor;
    let req = KubeletRequest {
        method: method.to_string(),
        target: ep.path.to_string(),
        upgrade,
        node: node.to_string(),
        model,
        strict_upgrade: strict,
    };
    let outcome = engine::decide::<std::convert::Infallible>(user, &req, &mut |spec| {
        Ok(rbac_answer(store, spec))
    });
    match outcome {
        Ok(o) => Side {
            served,
            // The authorization answer, whether or not the endpoint is served by default: a
            // kubelet with the component gate on serves it, and authorizes it exactly so.
            allowed: o.allowed,
            verb: o.plan.verb.clone(),
            subresource: o.decisive.map(|s| s.to_string()),
        },
        Err(never) => match never {},
    }
}

/// `impact`.
pub fn run(args: &ImpactArgs) -> CmdResult {
    let from = request::parse_version(&args.from_version)?;
    let to = request::parse_version(&args.to_version)?;
    let (store, mode) = if args.rbac.rbac_files.is_empty() {
        (online_store(&Online::connect(&args.cluster)?)?, "online")
    } else {
        (source::load_files(&args.rbac.rbac_files)?, "offline")
    };
    let node = args
        .node
        .clone()
        .unwrap_or_else(|| DEFAULT_NODE.to_string());
    let before_model = KubeletModel::for_version(from);
    let after_model = KubeletModel::for_version(to);
    let newest = from.max(to);
    let subjects = subjects(&store);
    let mut changes = Vec::new();
    for subject in &subjects {
        let user = user_for(subject);
        for ep in kubelet::endpoints_for(newest) {
            for method in ep.methods {
                let upgrade = ep.streaming() && *method == "GET";
                let b = side(
                    &store,
                    &user,
                    (before_model, false),
                    &node,
                    ep,
                    method,
                    upgrade,
                );
                let a = side(
                    &store,
                    &user,
                    (after_model, args.strict_upgrade),
                    &node,
                    ep,
                    method,
                    upgrade,
                );
                if b.allowed == a.allowed {
                    continue;
                }
                changes.push(Change {
                    subject: subject.clone(),
                    endpoint: ep.name,
                    path: ep.path,
                    method,
                    upgrade,
                    change: if a.allowed { "gains" } else { "loses" },
                    before: b,
                    after: a,
                });
            }
        }
    }
    let model_doc = |m: KubeletModel, strict: bool| {
        serde_json::json!({
            "version": m.version().to_string(),
            "fineGrainedAuthz": m.fine_grained(),
            "strictUpgradeVerb": strict,
        })
    };
    match args.output {
        Output::Json | Output::Yaml => document(
            args.output,
            &ImpactDoc {
                api_version: API_VERSION,
                kind: "Impact",
                mode,
                from: model_doc(before_model, false),
                to: model_doc(after_model, args.strict_upgrade),
                subjects: subjects.len(),
                changes: &changes,
            },
        )?,
        Output::Table | Output::Wide => {
            let mut text = format!(
                "kubelet {from} -> {to}{}: {} subjects, {} changed answers\n",
                if args.strict_upgrade {
                    " with strict upgrade verb"
                } else {
                    ""
                },
                subjects.len(),
                changes.len()
            );
            if !changes.is_empty() {
                let mut rows = vec![vec![
                    "CHANGE".to_string(),
                    "SUBJECT".into(),
                    "ENDPOINT".into(),
                    "METHOD".into(),
                    "BEFORE".into(),
                    "AFTER".into(),
                ]];
                let show = |s: &Side| {
                    if !s.served {
                        format!("{} (not served by default)", yes_no(s.allowed))
                    } else {
                        match &s.subresource {
                            Some(sub) => format!("yes (nodes/{sub})"),
                            None => format!(
                                "{} ({})",
                                yes_no(s.allowed),
                                if s.verb.is_empty() { "\"\"" } else { &s.verb }
                            ),
                        }
                    }
                };
                for c in &changes {
                    let who = if c.subject.namespace.is_empty() {
                        format!("{} {}", c.subject.kind, c.subject.name)
                    } else {
                        format!(
                            "{} {}/{}",
                            c.subject.kind, c.subject.namespace, c.subject.name
                        )
                    };
                    rows.push(vec![
                        c.change.to_string(),
                        who,
                        c.endpoint.to_string(),
                        format!("{}{}", c.method, if c.upgrade { "+upgrade" } else { "" }),
                        show(&c.before),
                        show(&c.after),
                    ]);
                }
                text.push_str(&table(&rows));
            }
            emit(&text)?;
        }
    }
    Ok(if changes.is_empty() {
        EXIT_OK
    } else {
        EXIT_DENIED
    })
}
