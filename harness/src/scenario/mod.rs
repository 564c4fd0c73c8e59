//! Table-driven scenarios over the real filter module.
//!
//! - [`AutoResponder`]: answers the filter's captured callouts the way an API server would:
//!   TokenReviews from a token table (`token -> UserInfo`), SubjectAccessReviews through the
//!   `authz` RBAC evaluator ([`RbacStore::authorize_review`]), or fails them all while the API
//!   server is "down". [`AutoResponder::drive`] answers callouts and moves the virtual clock by tick
//!   periods (retries) until a request is decided.
//! - [`format`]: the YAML scenario-file format (configuration, token table, RBAC, steps with
//!   expectations), documented in `docs/HARNESS.md`.
//! - [`runner`]: runs a scenario file step by step and reports pass/fail per step.

pub mod format;
pub mod runner;

use std::collections::HashMap;
use std::time::Duration;

use kubelet_authz::identity;
use kubelet_authz::rbac::RbacStore;
use kubelet_authz::review::{
    SubjectAccessReview, TokenReview, SUBJECT_ACCESS_REVIEW_PATH, TOKEN_REVIEW_PATH,
};
use kubelet_authz::UserInfo;
use serde_json::json;

use crate::host::{CallResponse, Host, HostError, HttpCall, Outcome, Stream};

/// Which review a captured callout carries (by its `:path`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// `POST /apis/authentication.k8s.io/v1/tokenreviews`.
    TokenReview,
    /// `POST /apis/authorization.k8s.io/v1/subjectaccessreviews`.
    SubjectAccessReview,
    /// Anything else.
    Other,
}

impl CallKind {
    /// The kind of a captured call.
    pub fn of(call: &HttpCall) -> Self {
        match call.path() {
            Some(TOKEN_REVIEW_PATH) => CallKind::TokenReview,
            Some(SUBJECT_ACCESS_REVIEW_PATH) => CallKind::SubjectAccessReview,
            _ => CallKind::Other,
        }
    }

    /// `TokenReview`, `SubjectAccessReview` or `Other`.
    pub fn as_str(self) -> &'static str {
        match self {
            CallKind::TokenReview => "TokenReview",
            CallKind::SubjectAccessReview => "SubjectAccessReview",
            CallKind::Other => "Other",
        }
    }
}

/// A short description of a callout: `TokenReview` or `SAR <verb> <subresource>` (as the native
/// decision tests write them), for comparing sequences of callouts.
pub fn describe_call(call: &HttpCall) -> String {
    match CallKind::of(call) {
        CallKind::TokenReview => "TokenReview".to_string(),
        CallKind::SubjectAccessReview => match call.body_json::<SubjectAccessReview>() {
            Ok(sar) => {
                let a = sar.spec.resource_attributes.unwrap_or_default();
                format!("SAR {} {}", a.verb, a.subresource)
            }
            Err(_) => "SAR <malformed>".to_string(),
        },
        CallKind::Other => format!(
            "{} {}",
            call.method().unwrap_or(""),
            call.path().unwrap_or("")
        ),
    }
}

/// Answers TokenReviews from a token table and SubjectAccessReviews with RBAC.
#[derive(Debug, Default)]
pub struct AutoResponder {
    tokens: HashMap<String, UserInfo>,
    rbac: RbacStore,
    down: bool,
    /// TokenReviews get `status.error` with this text instead of an answer.
    token_error: Option<String>,
}

/// How many callouts and clock moves [`AutoResponder::drive`] makes before giving up.
pub const MAX_DRIVE_ROUNDS: usize = 10_000;

/// The filter's tick period when nothing waits: it only flushes the counters
/// (`filter/src/metrics.rs`, `FLUSH_MS`). A retry or a deferred callout makes the tick faster
/// (100 ms at most), so only a faster tick is worth moving the clock for.
pub const FLUSH_TICK: Duration = Duration::from_secs(1);

/// Whether the filter's tick period says a retry or a deferred callout is waiting.
pub fn timer_pending(host: &Host) -> Option<Duration> {
    host.tick_period()
        .filter(|p| !p.is_zero() && *p < FLUSH_TICK)
}

impl AutoResponder {
    /// An API server with no tokens and no RBAC (every SubjectAccessReview is NoOpinion).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a token.
    pub fn token(mut self, token: &str, user: UserInfo) -> Self {
        self.tokens.insert(token.to_string(), user);
        self
    }

    /// Adds a token (in place).
    pub fn add_token(&mut self, token: &str, user: UserInfo) {
        self.tokens.insert(token.to_string(), user);
    }

    /// Loads RBAC objects (YAML or JSON, several documents).
    ///
    /// # Errors
    /// When the text is not valid RBAC.
    pub fn load_rbac(&mut self, text: &str, source: &str) -> Result<usize, String> {
        self.rbac.load_str(text, source).map_err(|e| e.to_string())
    }

    /// [`AutoResponder::load_rbac`], builder style.
    ///
    /// # Errors
    /// When the text is not valid RBAC.
    pub fn rbac(mut self, text: &str, source: &str) -> Result<Self, String> {
        self.load_rbac(text, source)?;
        Ok(self)
    }

    /// The API server goes down (every callout fails as a reset) or comes back.
    pub fn set_down(&mut self, down: bool) {
        self.down = down;
    }

    /// Whether the API server is down.
    pub fn is_down(&self) -> bool {
        self.down
    }

    /// TokenReviews answer `status.error` (authenticated false) with this text (`None`: normal).
    pub fn set_token_error(&mut self, error: Option<String>) {
        self.token_error = error;
    }

    /// The answer to one callout; `None` means "no response" (down, or not a review).
    pub fn respond(&self, call: &HttpCall) -> Option<CallResponse> {
        if self.down {
            return None;
        }
        match CallKind::of(call) {
            CallKind::TokenReview => {
                let review: TokenReview = call.body_json().ok()?;
                let status = if let Some(e) = &self.token_error {
                    json!({ "authenticated": false, "error": e })
                } else {
                    json!(identity::token_review_status(
                        self.tokens.get(&review.spec.token)
                    ))
                };
                Some(CallResponse::json(
                    201,
                    &json!({
                        "apiVersion": "authentication.k8s.io/v1",
                        "kind": "TokenReview",
                        "spec": review.spec,
                        "status": status,
                    }),
                ))
            }
            CallKind::SubjectAccessReview => {
                let review: SubjectAccessReview = call.body_json().ok()?;
                let status = self.rbac.authorize_review(&review.spec);
                Some(CallResponse::json(
                    201,
                    &json!({
                        "apiVersion": "authorization.k8s.io/v1",
                        "kind": "SubjectAccessReview",
                        "spec": review.spec,
                        "status": status,
                    }),
                ))
            }
            CallKind::Other => None,
        }
    }

    /// Answers (or fails) every pending callout once; returns how many.
    ///
    /// # Errors
    /// A trap in the filter.
    pub fn answer_pending(&self, host: &Host) -> Result<usize, HostError> {
        let calls = host.pending_calls();
        for call in &calls {
            match self.respond(call) {
                Some(r) => host.reply_call_with(call.token, r)?,
                None => host.fail_call(call.token)?,
            }
        }
        Ok(calls.len())
    }

    /// Answers callouts and, when none is pending but the filter has a timer, moves the clock by
    /// its tick period (retries), until none of `streams` is paused or nothing is left to do.
    ///
    /// # Errors
    /// A trap in the filter.
    pub fn drive(&self, host: &Host, streams: &[&Stream]) -> Result<(), HostError> {
        for _ in 0..MAX_DRIVE_ROUNDS {
            if streams.iter().all(|s| s.outcome() != Outcome::Paused) {
                return Ok(());
            }
            if self.answer_pending(host)? > 0 {
                continue;
            }
            match timer_pending(host) {
                Some(p) => host.advance_clock(p)?,
                None => return Ok(()),
            }
        }
        Ok(())
    }

    /// Sends `request`'s headers and drives it to its decision.
    ///
    /// # Errors
    /// A trap in the filter.
    pub fn run(&self, request: crate::host::RequestBuilder) -> Result<Stream, HostError> {
        let stream = request.send_headers(true)?;
        let host = stream.host().clone();
        self.drive(&host, &[&stream])?;
        Ok(stream)
    }
}

/// The audit events the filter logged (the JSON after `kubelet-authz audit: `), in order.
pub fn audit_events(host: &Host) -> Vec<serde_json::Value> {
    host.logs()
        .iter()
        .filter_map(|e| {
            let (_, json) = e
                .message
                .split_once(kubelet_authz::audit::AUDIT_LOG_PREFIX)?;
            serde_json::from_str(json).ok()
        })
        .collect()
}

/// A JSON value by dotted path (`user.username`, `annotations.kubelet-authz.io/stale`: keys that
/// contain dots are matched greedily; array elements by index).
pub fn json_path<'a>(value: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    if path.is_empty() {
        return Some(value);
    }
    match value {
        serde_json::Value::Object(map) => {
            // Longest key first, so that `annotations.kubelet-authz.io/stale` works.
            let mut best: Option<(&str, &serde_json::Value)> = None;
            for (k, v) in map {
                let fits = path == k.as_str()
                    || (path.starts_with(k.as_str())
                        && path.as_bytes().get(k.len()) == Some(&b'.'));
                if fits && best.is_none_or(|(b, _)| k.len() > b.len()) {
                    best = Some((k.as_str(), v));
                }
            }
            let (k, v) = best?;
            json_path(v, path.get(k.len()..)?.trim_start_matches('.'))
        }
        serde_json::Value::Array(items) => {
            let (head, rest) = path.split_once('.').unwrap_or((path, ""));
            json_path(items.get(head.parse::<usize>().ok()?)?, rest)
        }
        _ => None,
    }
}

/// A Go duration (`1m30s`), for scenario files.
///
/// # Errors
/// When it is not one.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    kubelet_authz::config::parse_go_duration(text)
}
