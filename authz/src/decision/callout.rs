//! What a session asks of its driver ([`Step`]): the callouts to the API server and their
//! answers, the results shared with waiting requests, and the [`Progress`] every session call
//! returns.

use crate::cache::Millis;
use crate::review::{SubjectAccessReviewStatus, SUBJECT_ACCESS_REVIEW_PATH, TOKEN_REVIEW_PATH};

use super::{SharedUser, Verdict};

/// What the driver must do next for this request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send this callout to the API server and feed the result to [`Session::on_callout`].
    Call(Callout),
    /// An identical callout is in flight: keep the request paused until [`Session::on_shared`].
    Wait,
    /// The callout failed in a retryable way: call [`Session::on_retry`] after this many ms.
    RetryAfter(Millis),
    /// Forward the request upstream, after the header edits in the verdict.
    Forward(Verdict),
    /// Answer the client with the verdict's status and body.
    Reply(Verdict),
}

/// Which review a callout carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalloutKind {
    /// TokenReview.
    TokenReview,
    /// SubjectAccessReview.
    SubjectAccessReview,
}

/// A request to the API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callout {
    /// TokenReview or SubjectAccessReview.
    pub kind: CalloutKind,
    /// The API path.
    pub path: &'static str,
    /// The JSON body.
    pub body: String,
    /// 1 for the first attempt.
    pub attempt: u32,
}

impl CalloutKind {
    /// The review's kind, as the API names it (`TokenReview`, `SubjectAccessReview`).
    pub fn name(self) -> &'static str {
        match self {
            CalloutKind::TokenReview => "TokenReview",
            CalloutKind::SubjectAccessReview => "SubjectAccessReview",
        }
    }

    /// The API path the review is created at.
    pub fn path(self) -> &'static str {
        match self {
            CalloutKind::TokenReview => TOKEN_REVIEW_PATH,
            CalloutKind::SubjectAccessReview => SUBJECT_ACCESS_REVIEW_PATH,
        }
    }
}

impl Callout {
    /// The first attempt of a review with this JSON body.
    pub fn first(kind: CalloutKind, body: String) -> Self {
        Callout {
            kind,
            path: kind.path(),
            body,
            attempt: 1,
        }
    }
}

/// What came back for a callout, as the driver saw it. The driver owns the wire: it tells the
/// proxy's own answers (a connection it could not make, its own timeout) apart from the API
/// server's, because the kubelet's clients treat them differently ([`crate::webhook`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CalloutResponse {
    /// The API server's HTTP response.
    Http {
        /// Status code.
        status: u16,
        /// The `Retry-After` header as sent, when there was one.
        retry_after: Option<String>,
        /// Body.
        body: Vec<u8>,
    },
    /// No connection: refused, unresolvable, TLS failure, no healthy upstream (not retried).
    ConnectFailed(String),
    /// No answer within the callout timeout: the client's own timeout (not retried).
    TimedOut(String),
    /// The connection was reset or closed before a full answer, or the answer could not be read
    /// (retried, as a connection reset).
    Failed(String),
}

impl CalloutResponse {
    /// The result as the kubelet's webhook retry rules see it.
    pub fn result(&self) -> crate::webhook::CalloutResult {
        use crate::webhook::CalloutResult;
        match self {
            CalloutResponse::Http {
                status,
                retry_after,
                ..
            } => CalloutResult::Answered {
                status: *status,
                retry_after: retry_after.clone(),
            },
            CalloutResponse::ConnectFailed(_) => CalloutResult::ConnectFailed,
            CalloutResponse::TimedOut(_) => CalloutResult::TimedOut,
            CalloutResponse::Failed(_) => CalloutResult::Reset,
        }
    }
}

/// A finished lookup, shared with waiters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shared {
    /// A token's outcome; `true` when an expired cache entry stood in for a failed review.
    Token(TokenOutcome, bool),
    /// A SubjectAccessReview's outcome (the status, or an error); `true` when an expired cache
    /// entry stood in for a failed review.
    Sar(Result<SarAnswer, String>, bool),
    /// The leader went away without an answer: look again.
    Abandoned,
}

/// A SubjectAccessReview's answer as the engine keeps it (cached and shared): the reason is
/// shared, not copied, by every check it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SarAnswer {
    /// `status.allowed`.
    pub allowed: bool,
    /// `status.denied`.
    pub denied: bool,
    /// `status.reason`.
    pub reason: std::sync::Arc<str>,
}

impl From<SubjectAccessReviewStatus> for SarAnswer {
    fn from(st: SubjectAccessReviewStatus) -> Self {
        SarAnswer {
            allowed: st.allowed,
            denied: st.denied,
            reason: st.reason.into(),
        }
    }
}

/// Waiters to wake with a shared result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wake {
    /// Driver ids of the waiting sessions.
    pub waiters: Vec<u32>,
    /// The result to give each via [`Session::on_shared`].
    pub result: Shared,
}

/// The answer to every session call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// What to do for this request.
    pub step: Step,
    /// Other requests to wake.
    pub wake: Option<Wake>,
}

impl Progress {
    pub(super) fn step(step: Step) -> Self {
        Progress { step, wake: None }
    }
}

/// A token's review outcome (cached on success and clean rejection; errors are never cached).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenOutcome {
    /// Authenticated as this user.
    Authenticated(SharedUser),
    /// Not authenticated, no error (`invalid bearer token`).
    Rejected,
    /// An error (the status error text, transport or decode failure).
    Error(String),
}
