//! `can-i`: may a user send this request to a kubelet? The answer is the kubelet's own procedure
//! (`engine::decide`) with the reviews answered offline by RBAC files or online by the cluster.
//! `--list` does the same for every endpoint of the kubelet version.

use kubelet_authz::identity::UserInfo;
use kubelet_authz::kubelet::{self, KubeletModel};
use serde::Serialize;

use crate::authority::Authority;
use crate::cli::{CanIArgs, Output};
use crate::engine::{self, Check, KubeletRequest, Outcome};
use crate::error::{usage, CliError, CmdResult, EXIT_DENIED, EXIT_OK};
use crate::online::Online;
use crate::output::{document, emit, table, yes_no, API_VERSION};
use crate::request::{self, Verb, DEFAULT_NODE};
use crate::source;

/// Everything resolved from the flags that every check shares.
pub struct Setup {
    /// The reviewer.
    pub authority: Authority,
    /// The user in the reviews (empty name for a self review).
    pub user: UserInfo,
    /// The kubelet model.
    pub model: KubeletModel,
    /// The node name.
    pub node: String,
    /// strictUpgradeVerb.
    pub strict_upgrade: bool,
}

/// Resolve the mode, user, node and kubelet model.
pub fn setup(args: &CanIArgs) -> Result<Setup, CliError> {
    let node = args
        .kubelet
        .node
        .clone()
        .unwrap_or_else(|| DEFAULT_NODE.to_string());
    let user = request::user_from_args(&args.user);
    if !args.rbac.rbac_files.is_empty() {
        let Some(user) = user else {
            return Err(usage(
                "offline mode (--rbac-file) needs a user: pass `--as USER` (and `--as-group GROUP` for its groups)",
            ));
        };
        let store = source::load_files(&args.rbac.rbac_files)?;
        let model = request::model_from_args(&args.kubelet, None)?;
        return Ok(Setup {
            authority: Authority::Offline(store),
            user,
            model,
            node,
            strict_upgrade: args.kubelet.strict_upgrade,
        });
    }
    if user.is_none() && (!args.user.as_groups.is_empty() || args.user.as_uid.is_some()) {
        return Err(usage("`--as-group` and `--as-uid` need `--as USER`"));
    }
    // Check the flags before going to the network.
    request::model_from_args(&args.kubelet, None)?;
    let online = Online::connect(&args.cluster)?;
    let fallback = match (&args.kubelet.kubelet_version, &args.kubelet.node) {
        (None, Some(n)) => Some(online.node_version(n)?),
        _ => None,
    };
    let model = request::model_from_args(&args.kubelet, fallback)?;
    Ok(Setup {
        authority: Authority::Online {
            cluster: Box::new(online),
            self_review: user.is_none(),
        },
        user: user.unwrap_or_default(),
        model,
        node,
        strict_upgrade: args.kubelet.strict_upgrade,
    })
}

impl Setup {
    fn request(&self, verb: &Verb, target: &str, upgrade: bool) -> KubeletRequest {
        KubeletRequest {
            method: verb.http_method(),
            target: target.to_string(),
            upgrade,
            node: self.node.clone(),
            model: self.model,
            strict_upgrade: self.strict_upgrade,
        }
    }

    fn decide(&self, req: &KubeletRequest) -> Result<Outcome, CliError> {
        engine::decide(&self.user, req, &mut |spec| self.authority.review(spec))
    }

    fn user_doc(&self) -> Option<&UserInfo> {
        match self.authority {
            Authority::Online {
                self_review: true, ..
            } => None,
            _ => Some(&self.user),
        }
    }
}

/// The kubelet settings shown in every document.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct KubeletDoc {
    version: String,
    fine_grained_authz: bool,
    strict_upgrade_verb: bool,
}

fn kubelet_doc(s: &Setup) -> KubeletDoc {
    KubeletDoc {
        version: s.model.version().to_string(),
        fine_grained_authz: s.model.fine_grained(),
        strict_upgrade_verb: s.strict_upgrade,
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RequestDoc {
    method: Option<String>,
    verb: String,
    path: String,
    upgrade: bool,
    node: String,
}

/// The `-o json` document of `can-i`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CanIDoc<'a> {
    api_version: &'static str,
    kind: &'static str,
    mode: &'static str,
    user: Option<&'a UserInfo>,
    request: RequestDoc,
    kubelet: KubeletDoc,
    allowed: bool,
    status: u16,
    response: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    refused: Option<String>,
    verb: String,
    subresource: Option<String>,
    checks: &'a [Check],
    notes: Vec<String>,
}

/// Why the answer may surprise: the notes shown under the answer. `target` is the request
/// target as given, `path` the decoded path (none for a refused target).
pub fn notes(
    model: KubeletModel,
    target: &str,
    path: Option<&str>,
    outcome: &Outcome,
    verb: &Verb,
) -> Vec<String> {
    let mut notes = Vec::new();
    let Some(path) = path else {
        notes.extend(request::not_a_path_hint(target));
        return notes;
    };
    if let Some(why) = request::unknown_path_hint(path) {
        notes.push(format!(
            "{why} (the filter authorizes it as nodes/proxy, as every path without a subresource of its own)"
        ));
    }
    if outcome.plan.strict_upgrade_applied {
        notes.push(format!(
            "a GET to {path} is checked with verb create (the filter's strictUpgradeVerb: a WebSocket GET opens the same stream as a SPDY POST); the kubelet itself would check `{}`",
            verb.verb
        ));
    }
    if outcome.plan.verb.is_empty() {
        notes.push(format!(
            "{} gives the empty verb (the kubelet maps only GET, POST, PUT, PATCH and DELETE): only RBAC rules with verbs [\"*\"] grant it",
            verb.method.as_deref().unwrap_or("this method")
        ));
    }
    if let Some(why) = kubelet::uncertain_mapping(model.version(), path) {
        notes.push(format!("uncertain mapping: {why}"));
    }
    if !model.fine_grained() {
        let fine = KubeletModel::for_version(kubelet::KubeletVersion::LATEST).subresources(path);
        if fine.len() > 1 {
            notes.push(fine_grained_note(model));
        }
    }
    notes
}

fn fine_grained_note(model: KubeletModel) -> String {
    let why = match model.version().fine_grained_default() {
        None => format!(
            "kubelet {} predates KubeletFineGrainedAuthz (added in 1.32)",
            model.version()
        ),
        Some(_) => format!(
            "KubeletFineGrainedAuthz is off on this kubelet {}",
            model.version()
        ),
    };
    format!(
        "{why}: /pods, /runningpods/, /healthz and /configz are authorized only as nodes/proxy, which also allows exec; enable the gate (1.32-1.35) or upgrade to 1.36"
    )
}

fn show_verb(v: &str) -> String {
    if v.is_empty() {
        "\"\"".to_string()
    } else {
        v.to_string()
    }
}

/// `can-i`.
pub fn run(args: &CanIArgs) -> CmdResult {
    if args.list {
        if !args.args.is_empty() {
            return Err(usage(
                "`--list` takes no VERB or PATH: drop them, or drop `--list`",
            ));
        }
        return list(args);
    }
    if args.args.is_empty() {
        return Err(usage(
            "expected [VERB] PATH, for example `can-i get /pods`, or `--list`",
        ));
    }
    let (verb, path) = match (&args.method, args.args.as_slice()) {
        (None, _) => request::parse_verb_and_path(&args.args)?,
        (Some(m), [path]) => (request::parse_method(m)?, path.clone()),
        (Some(_), _) => {
            return Err(usage(
                "with `--method`, give PATH only: for example `can-i --method get /pods`",
            ))
        }
    };
    let setup = setup(args)?;
    let req = setup.request(&verb, &path, args.upgrade);
    let attributes = engine::attributes(&req).ok();
    let outcome = setup.decide(&req)?;
    let code = if outcome.allowed {
        EXIT_OK
    } else {
        EXIT_DENIED
    };
    if args.quiet {
        return Ok(code);
    }
    let notes = notes(
        setup.model,
        &path,
        attributes.as_ref().map(|a| a.path.as_str()),
        &outcome,
        &verb,
    );
    match args.output {
        Output::Json | Output::Yaml => {
            let doc = CanIDoc {
                api_version: API_VERSION,
                kind: "CanI",
                mode: setup.authority.mode(),
                user: setup.user_doc(),
                request: RequestDoc {
                    method: verb.method.clone(),
                    verb: verb.verb.clone(),
                    path: path.clone(),
                    upgrade: args.upgrade,
                    node: setup.node.clone(),
                },
                kubelet: kubelet_doc(&setup),
                allowed: outcome.allowed,
                status: outcome.status,
                response: outcome.body.clone(),
                refused: outcome.refused.map(|e| e.to_string()),
                verb: outcome.plan.verb.clone(),
                subresource: outcome.decisive.map(|s| s.to_string()),
                checks: &outcome.checks,
                notes,
            };
            document(args.output, &doc)?;
        }
        Output::Table | Output::Wide => {
            let mut text = answer_line(&outcome);
            if args.output == Output::Wide {
                let mut rows = vec![vec![
                    "SUBRESOURCE".to_string(),
                    "VERB".into(),
                    "ALLOWED".into(),
                    "REASON".into(),
                ]];
                for c in &outcome.checks {
                    rows.push(vec![
                        format!("nodes/{}", c.subresource),
                        show_verb(&c.verb),
                        format!(
                            "{}{}",
                            yes_no(c.allowed),
                            if c.denied { " (denied)" } else { "" }
                        ),
                        c.reason.clone(),
                    ]);
                }
                if outcome.refused.is_none() {
                    text.push_str(&table(&rows));
                }
                if !outcome.body.is_empty() {
                    text.push_str(&format!(
                        "{} answers {}: {}\n",
                        if outcome.refused.is_some() {
                            "the filter"
                        } else {
                            "kubelet"
                        },
                        outcome.status,
                        outcome.body.trim_end()
                    ));
                }
            }
            for n in &notes {
                text.push_str(&format!("note: {n}\n"));
            }
            emit(&text)?;
        }
    }
    Ok(code)
}

fn answer_line(o: &Outcome) -> String {
    let verb = show_verb(&o.plan.verb);
    if let Some(e) = o.refused {
        return format!(
            "no (the filter refuses the request target with 400 before authentication: {e})\n"
        );
    }
    match (o.allowed, o.decisive, o.status) {
        (true, Some(s), _) => format!("yes ({verb} nodes/{s})\n"),
        (_, _, 500) => {
            "no (the kubelet answers 500: a review came back both allowed and denied)\n".to_string()
        }
        _ => {
            let tried: Vec<String> = o
                .checks
                .iter()
                .map(|c| format!("nodes/{}", c.subresource))
                .collect();
            format!("no ({verb} {})\n", tried.join(", "))
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ListRow {
    endpoint: &'static str,
    path: &'static str,
    method: &'static str,
    verb: String,
    upgrade: bool,
    subresources: Vec<String>,
    allowed: bool,
    subresource: Option<String>,
    streaming: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ListDoc<'a> {
    api_version: &'static str,
    kind: &'static str,
    mode: &'static str,
    user: Option<&'a UserInfo>,
    node: &'a str,
    kubelet: KubeletDoc,
    endpoints: Vec<ListRow>,
    notes: Vec<String>,
}

/// Every endpoint of the version, every method it serves. A `GET` to a streaming endpoint
/// (exec, attach, portForward) is a WebSocket upgrade.
fn list(args: &CanIArgs) -> CmdResult {
    let setup = setup(args)?;
    let mut rows = Vec::new();
    for ep in kubelet::endpoints_for(setup.model.version()) {
        for method in ep.methods {
            let verb = request::parse_verb(method)?;
            let upgrade = ep.streaming() && *method == "GET";
            let req = setup.request(&verb, ep.path, upgrade);
            let o = setup.decide(&req)?;
            rows.push(ListRow {
                endpoint: ep.name,
                path: ep.path,
                method,
                verb: o.plan.verb.clone(),
                upgrade,
                subresources: o.plan.subresources.iter().map(|s| s.to_string()).collect(),
                allowed: o.allowed,
                subresource: o.decisive.map(|s| s.to_string()),
                streaming: ep.streaming(),
            });
        }
    }
    let mut notes = Vec::new();
    if !setup.model.fine_grained() {
        notes.push(fine_grained_note(setup.model));
    }
    if args.quiet {
        return Ok(EXIT_OK);
    }
    match args.output {
        Output::Json | Output::Yaml => document(
            args.output,
            &ListDoc {
                api_version: API_VERSION,
                kind: "CanIList",
                mode: setup.authority.mode(),
                user: setup.user_doc(),
                node: &setup.node,
                kubelet: kubelet_doc(&setup),
                endpoints: rows,
                notes,
            },
        )?,
        Output::Table | Output::Wide => {
            let mut t = vec![vec![
                "ENDPOINT".to_string(),
                "METHOD".into(),
                "VERB".into(),
                "SUBRESOURCES".into(),
                "ALLOWED".into(),
                "VIA".into(),
            ]];
            for r in &rows {
                t.push(vec![
                    r.endpoint.to_string(),
                    format!("{}{}", r.method, if r.upgrade { "+upgrade" } else { "" }),
                    show_verb(&r.verb),
                    r.subresources.join(","),
                    yes_no(r.allowed).to_string(),
                    r.subresource
                        .as_ref()
                        .map(|s| format!("nodes/{s}"))
                        .unwrap_or_default(),
                ]);
            }
            let mut text = format!(
                "kubelet {} (KubeletFineGrainedAuthz {}), node {}\n",
                setup.model.version(),
                if setup.model.fine_grained() {
                    "on"
                } else {
                    "off"
                },
                setup.node
            );
            text.push_str(&table(&t));
            for n in &notes {
                text.push_str(&format!("note: {n}\n"));
            }
            emit(&text)?;
        }
    }
    Ok(EXIT_OK)
}
