//! The per-request decision state machine (sans-I/O) and the per-VM [`Engine`] state it shares
//! with other requests (token and SubjectAccessReview caches, in-flight callouts).
//!
//! A driver builds a [`Session`] for each request and feeds it; each call answers a [`Progress`]:
//! the [`Step`] for this request, plus (when a callout it led has finished) the waiters to wake
//! with the same result.
//!
//! ```text
//! start ──> Call(callout) ──on_callout──> RetryAfter(ms) ──on_retry──> Call(...)
//!   │            │                               └──> ... ──> Forward / Reply
//!   ├──> Wait (an identical callout is in flight; woken with on_shared)
//!   └──> Forward(verdict) | Reply(verdict)
//! ```
//!
//! The procedure is the kubelet's (reference sections 2.8, 3.5, 4): x509, then the `Authorization`
//! bearer token, then the WebSocket protocol token; anonymous only when none errored; the group
//! adder; then one SubjectAccessReview per subresource in order, the first Allow wins, Deny and
//! NoOpinion fall through, an authorizer error answers 500 at once. Plus the deliberate
//! differences of DESIGN.md: canonical paths only, `strictUpgradeVerb`, XFCC only when it matches
//! the verified peer certificate, shadow enforcement and stale-if-error.
//!
//! Files, one concern each: `request` (the request as read), `attributes` (the pure
//! [`request_attributes`], the kubelet's `GetRequestAttributes`), `verdict` (the decision
//! vocabulary), `callout` (steps, callouts and what they share), `engine` (caches, keys, limits),
//! `settings` (what the engine reads of the configuration), `session` (the state machine, its states as types), `lookup` (cache or callout), `finish` (how a session ends in a verdict), `retry` (reading
//! answers and the retry policy), `run` (the synchronous driver), `spare` (buffers of finished decisions kept
//! for the next).

mod attributes;
mod callout;
mod engine;
mod finish;
mod lookup;
mod request;
mod retry;
mod run;
mod session;
mod settings;
mod spare;
mod verdict;

pub use attributes::{request_attributes, request_attributes_in, Attributes};
pub use callout::{
    Callout, CalloutKind, CalloutResponse, Progress, SarAnswer, Shared, Step, TokenOutcome, Wake,
};
pub use engine::{Engine, SharedUser, TokenKey, SAR_CACHE_KEY_LIMIT};
pub use request::{
    go_json_lossy, needs_connection_facts, push_go_json_lossy, Request, READ_HEADERS, XFCC_HEADER,
};
pub use retry::{BASE_RETRY_DELAY_MS, MAX_ATTEMPTS};
pub use run::run_to_end;
pub use session::Session;
pub use settings::{AuthorizationMode, Enforcement, Limits, Settings};
pub use spare::{Pool, Reusable, SpareRequest, MAX_SPARE, MAX_SPARE_BYTES};
pub use verdict::{AuthnMethod, Check, Decision, Outcome, Verdict, INTERNAL_ERROR_BODY};
