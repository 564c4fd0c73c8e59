//! Which SubjectAccessReviews a kubelet sends for a request, in which order, and how their answers
//! combine. This module only calls the shared engine, `kubelet_authz::decision` (the same code the
//! Envoy filter runs): `decision::request_attributes` for the verb and subresources (or the 400
//! refusal of a non-canonical target), and the state machine, synchronously with
//! `decision::run_to_end`, for the answers: the plugin never decides itself. Caches are off
//! (TTL 0) so that every check is one review.

use std::cell::RefCell;
use std::time::Duration;

use kubelet_authz::decision::{
    self, Attributes, Callout, CalloutResponse, Decision, Engine, Request, Session, Settings,
};
use kubelet_authz::identity::UserInfo;
use kubelet_authz::kubelet::{KubeletModel, Subresource};
use kubelet_authz::path::PathError;
use kubelet_authz::review::{
    SubjectAccessReview, SubjectAccessReviewSpec, SubjectAccessReviewStatus,
};
use serde::Serialize;

/// A kubelet request as the plugin models it.
#[derive(Debug, Clone)]
pub struct KubeletRequest {
    /// The HTTP method (the kubelet derives the verb from it).
    pub method: String,
    /// The request target as given (path, query string and all), as the filter receives it.
    pub target: String,
    /// Whether the request asks for a connection upgrade (WebSocket `GET`, SPDY `POST`).
    pub upgrade: bool,
    /// The node name (the reviews' resource name).
    pub node: String,
    /// The kubelet version and gate.
    pub model: KubeletModel,
    /// The filter's `strictUpgradeVerb`.
    pub strict_upgrade: bool,
}

/// The verb and subresources the reviews carry, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The verb in every review.
    pub verb: String,
    /// Whether strictUpgradeVerb changed the verb to `create`.
    pub strict_upgrade_applied: bool,
    /// Subresources in evaluation order (all of them, when none allows).
    pub subresources: Vec<Subresource>,
}

/// Where an RBAC allow came from (offline mode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GrantInfo {
    /// `ClusterRoleBinding` (or `RoleBinding`).
    pub binding_kind: String,
    /// Binding name.
    pub binding_name: String,
    /// `ClusterRole` or `Role`.
    pub role_kind: String,
    /// Role name.
    pub role_name: String,
}

/// One review's answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Answer {
    /// `status.allowed`.
    pub allowed: bool,
    /// `status.denied`.
    pub denied: bool,
    /// `status.reason`.
    pub reason: String,
    /// The RBAC grant (offline only).
    pub grant: Option<GrantInfo>,
}

/// One review sent and its answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    /// `nodes/<subresource>`.
    pub subresource: Subresource,
    /// The verb sent.
    pub verb: String,
    /// Allowed.
    pub allowed: bool,
    /// Explicitly denied (treated as no opinion by the kubelet).
    pub denied: bool,
    /// The authorizer's reason.
    pub reason: String,
    /// The RBAC grant that allowed it (offline).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant: Option<GrantInfo>,
}

/// The combined answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Why the filter refuses the request target with 400 before authentication (no review is
    /// sent then).
    pub refused: Option<PathError>,
    /// The verb and the subresources tried.
    pub plan: Plan,
    /// Whether the kubelet lets the request through.
    pub allowed: bool,
    /// The subresource whose review allowed it.
    pub decisive: Option<Subresource>,
    /// The HTTP status the kubelet answers with (200 passes on, 403, or 500 for an authorizer
    /// error such as a review both allowed and denied), or the filter's 400 for a refused target.
    pub status: u16,
    /// The kubelet's response body for a refusal (empty when allowed).
    pub body: String,
    /// Every review sent, in order (a later one is not sent once one allows).
    pub checks: Vec<Check>,
}

fn engine_for(req: &KubeletRequest) -> Engine {
    // Every review is made (no cache), and nothing is audited: the engine gets no audit settings.
    let settings = Settings {
        model: req.model,
        strict_upgrade_verb: req.strict_upgrade,
        authorized_ttl: Duration::ZERO,
        unauthorized_ttl: Duration::ZERO,
        token_cache_ttl: Duration::ZERO,
        ..Settings::with_defaults(&req.node)
    };
    Engine::new(settings, [0; 32])
}

fn http_request(req: &KubeletRequest) -> Request {
    let r = Request::new(&req.method, &req.target);
    if req.upgrade {
        r.upgrade()
    } else {
        r
    }
}

fn reply(status: SubjectAccessReviewStatus) -> CalloutResponse {
    let sar = SubjectAccessReview {
        status: Some(status),
        ..SubjectAccessReview::default()
    };
    CalloutResponse::Http {
        status: 200,
        retry_after: None,
        body: serde_json::to_vec(&sar).unwrap_or_default(),
    }
}

/// Send the kubelet's reviews through `review` and combine the answers with the shared engine.
/// The user is taken as given (callers apply the group adder). An error from `review` (the API
/// could not be asked) is returned as is.
pub fn decide<E>(
    user: &UserInfo,
    req: &KubeletRequest,
    review: &mut dyn FnMut(&SubjectAccessReviewSpec) -> Result<Answer, E>,
) -> Result<Outcome, E> {
    let mut engine = engine_for(req);
    let mut session = Session::authenticated(0, http_request(req), user.clone());
    let failure: RefCell<Option<E>> = RefCell::new(None);
    let mut answers: Vec<(String, Answer)> = Vec::new();
    let verdict = decision::run_to_end(&mut engine, &mut session, 0, &mut |callout: &Callout| {
        if failure.borrow().is_some() {
            return CalloutResponse::Failed("the review could not be sent".into());
        }
        let spec = match serde_json::from_str::<SubjectAccessReview>(&callout.body) {
            Ok(sar) => sar.spec,
            Err(e) => return CalloutResponse::Failed(format!("malformed review: {e}")),
        };
        match review(&spec) {
            Ok(answer) => {
                let sub = spec
                    .resource_attributes
                    .as_ref()
                    .map(|a| a.subresource.clone())
                    .unwrap_or_default();
                let status = SubjectAccessReviewStatus {
                    allowed: answer.allowed,
                    denied: answer.denied,
                    reason: answer.reason.clone(),
                    evaluation_error: String::new(),
                };
                answers.push((sub, answer));
                reply(status)
            }
            Err(e) => {
                *failure.borrow_mut() = Some(e);
                CalloutResponse::Failed("the review could not be sent".into())
            }
        }
    });
    if let Some(e) = failure.into_inner() {
        return Err(e);
    }
    let checks: Vec<Check> = verdict
        .checks
        .iter()
        .map(|c| {
            let answer = answers
                .iter()
                .find(|(s, _)| s == c.subresource.as_str())
                .map(|(_, a)| a.clone())
                .unwrap_or_default();
            Check {
                subresource: c.subresource,
                verb: c.verb.to_string(),
                allowed: c.decision == Decision::Allow,
                denied: c.decision == Decision::Deny,
                reason: if c.reason.is_empty() {
                    answer.reason
                } else {
                    c.reason.to_string()
                },
                grant: answer.grant,
            }
        })
        .collect();
    let allowed = verdict.outcome == decision::Outcome::Allowed;
    let decisive = checks.iter().find(|c| c.allowed).map(|c| c.subresource);
    Ok(Outcome {
        // The engine answered its 400 before any review: say why.
        refused: match verdict.outcome {
            decision::Outcome::BadRequest => attributes(req).err(),
            _ => None,
        },
        plan: Plan {
            verb: verdict.verb.to_string(),
            strict_upgrade_applied: verdict.strict_upgrade_applied,
            subresources: checks.iter().map(|c| c.subresource).collect(),
        },
        allowed,
        decisive,
        status: verdict.status,
        body: verdict.body,
        checks,
    })
}

/// The request's attributes, from the engine's `GetRequestAttributes` (the same call the
/// filter's session makes), or why the filter refuses the target.
pub fn attributes(req: &KubeletRequest) -> Result<Attributes, PathError> {
    let request = http_request(req);
    decision::request_attributes(
        &request.method,
        &request.target,
        &request.headers,
        req.model,
        req.strict_upgrade,
    )
}

/// The verb and every subresource the kubelet would check (what a refusal would list), or why
/// the filter refuses the target.
pub fn plan(req: &KubeletRequest) -> Result<Plan, PathError> {
    attributes(req).map(|a| Plan {
        verb: a.verb.to_string(),
        strict_upgrade_applied: a.strict_upgrade_applied,
        subresources: a.subresources.to_vec(),
    })
}
