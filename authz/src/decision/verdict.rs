//! The vocabulary of a finished decision: who authenticated and how ([`AuthnMethod`]), each
//! subresource [`Check`] and its [`Decision`], the [`Outcome`], and the [`Verdict`] a driver
//! acts on, audits and counts.

use std::sync::Arc;

use crate::identity::UserInfo;
use crate::kubelet::Subresource;

/// Which authenticator identified the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthnMethod {
    /// A client certificate (through XFCC matching the verified peer certificate).
    X509,
    /// `Authorization: Bearer`.
    Bearer,
    /// The WebSocket subprotocol token.
    WebSocket,
    /// Anonymous.
    Anonymous,
    /// Nobody (401).
    None,
}

impl AuthnMethod {
    /// Lower-case name, for metrics and audit.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthnMethod::X509 => "x509",
            AuthnMethod::Bearer => "bearer",
            AuthnMethod::WebSocket => "websocket",
            AuthnMethod::Anonymous => "anonymous",
            AuthnMethod::None => "none",
        }
    }
}

/// An authorizer's decision for one subresource check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Allowed.
    Allow,
    /// Explicitly denied (treated as NoOpinion for the fallback).
    Deny,
    /// No opinion.
    NoOpinion,
    /// The authorizer failed (500, no fallback).
    Error,
}

impl Decision {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
            Decision::NoOpinion => "no-opinion",
            Decision::Error => "error",
        }
    }
}

/// One subresource check and its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The subresource checked.
    pub subresource: Subresource,
    /// The verb checked.
    pub verb: &'static str,
    /// The answer.
    pub decision: Decision,
    /// The authorizer's reason (or the error); shared with the cache entry that answered.
    pub reason: Arc<str>,
    /// Answered from the cache.
    pub cached: bool,
    /// Answered by an expired cache entry because the callout failed (stale-if-error).
    pub stale: bool,
}

impl Check {
    /// A fresh answer (neither cached nor stale) for `verb` on `subresource`.
    pub fn new(
        subresource: Subresource,
        verb: &'static str,
        decision: Decision,
        reason: impl Into<Arc<str>>,
    ) -> Self {
        Check {
            subresource,
            verb,
            decision,
            reason: reason.into(),
            cached: false,
            stale: false,
        }
    }
}

/// The final outcome of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Authenticated and authorized.
    Allowed,
    /// 400: a non-canonical path.
    BadRequest,
    /// 401.
    Unauthenticated,
    /// 403.
    Forbidden,
    /// 500: the authorizer failed.
    AuthorizerError,
    /// 500: the filter failed closed outside the kubelet's procedure (overloaded, a hostcall
    /// failed, a work bound was hit): [`Verdict::failed_closed`].
    InternalError,
}

impl Outcome {
    /// Lower-case name, for metrics and audit.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::BadRequest => "bad_request",
            Outcome::Unauthenticated => "unauthenticated",
            Outcome::Forbidden => "forbidden",
            Outcome::AuthorizerError => "authorizer_error",
            Outcome::InternalError => "internal_error",
        }
    }
}

/// Everything known about a finished decision: what to answer, and what to audit and count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The kubelet's outcome.
    pub outcome: Outcome,
    /// Status the kubelet would answer (200 for allowed).
    pub status: u16,
    /// Body the kubelet would answer (empty for allowed).
    pub body: String,
    /// Headers to remove before forwarding: the caller's `Authorization`, and
    /// `Sec-WebSocket-Protocol` when it held only a token.
    pub remove_headers: &'static [&'static str],
    /// Headers to set before forwarding: `Sec-WebSocket-Protocol` without its token entries.
    pub set_headers: Vec<(String, String)>,
    /// The authenticated user.
    pub user: Option<Arc<UserInfo>>,
    /// How the user was identified.
    pub authn: AuthnMethod,
    /// The authenticator errors, for logs (never the token).
    pub authn_errors: Vec<String>,
    /// The verb authorized.
    pub verb: &'static str,
    /// The decoded path authorized.
    pub path: String,
    /// The request target as received.
    pub target: String,
    /// The subresource checks made, in order.
    pub checks: Vec<Check>,
    /// Whether shadow enforcement forwarded a request that Enforce would refuse.
    pub shadowed: bool,
    /// Whether an expired cache entry answered (stale-if-error).
    pub stale: bool,
    /// Why a client-sent `x-forwarded-client-cert` was ignored.
    pub spoofed_xfcc: Option<String>,
    /// Cache hits and misses while deciding.
    pub cache_hits: u32,
    /// Cache misses while deciding.
    pub cache_misses: u32,
    /// Of `cache_hits`, the SubjectAccessReview cache's (the rest are the token cache's).
    pub sar_cache_hits: u32,
    /// Of `cache_misses`, the SubjectAccessReview cache's.
    pub sar_cache_misses: u32,
    /// Whether `strictUpgradeVerb` changed the verb to `create`.
    pub strict_upgrade_applied: bool,
    /// Why the filter failed closed ([`Outcome::InternalError`] only).
    pub failure: Option<String>,
}

/// The body of the filter's own 500 ([`Outcome::InternalError`]).
pub const INTERNAL_ERROR_BODY: &str = "Internal Server Error";

impl Verdict {
    /// The subresource that decided: the allowing one, or the last tried.
    pub fn deciding_subresource(&self) -> Option<Subresource> {
        self.checks
            .iter()
            .find(|c| c.decision == Decision::Allow)
            .or(self.checks.last())
            .map(|c| c.subresource)
    }

    /// This decision, failed closed because carrying it out failed (`why`): a 500 that is never
    /// forwarded, whatever the enforcement; what was decided (user, checks) stays for the audit.
    pub fn failed_closed(self, why: &str) -> Verdict {
        Verdict {
            outcome: Outcome::InternalError,
            status: 500,
            body: INTERNAL_ERROR_BODY.to_string(),
            remove_headers: &[],
            set_headers: Vec::new(),
            shadowed: false,
            failure: Some(why.to_string()),
            ..self
        }
    }

    /// A request the filter failed closed before deciding it (`why`: overloaded, or the request
    /// could not be read): a 500 with nobody authenticated and no check made.
    pub fn undecided(method: &str, target: &str, why: &str) -> Verdict {
        Verdict {
            outcome: Outcome::InternalError,
            status: 500,
            body: INTERNAL_ERROR_BODY.to_string(),
            remove_headers: &[],
            set_headers: Vec::new(),
            user: None,
            authn: AuthnMethod::None,
            authn_errors: Vec::new(),
            verb: crate::kubelet::verb_for_method(method),
            path: target.to_string(),
            target: target.to_string(),
            checks: Vec::new(),
            shadowed: false,
            stale: false,
            spoofed_xfcc: None,
            cache_hits: 0,
            cache_misses: 0,
            sar_cache_hits: 0,
            sar_cache_misses: 0,
            strict_upgrade_applied: false,
            failure: Some(why.to_string()),
        }
    }
}
