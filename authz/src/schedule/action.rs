//! What the scheduler asks of its driver ([`Action`]) and what the driver reports back for the
//! actions whose result matters ([`Done`], [`Failure`]).

use crate::decision::{Callout, CalloutKind};

/// Log severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Debug.
    Debug,
    /// Info (audit lines).
    Info,
    /// Warn.
    Warn,
    /// Error.
    Error,
}

/// One thing for the driver to do. Every action names the context it acts on; the driver makes
/// that context the effective one first (and reports a [`Failure::Gone`] when it cannot, for
/// the actions that are reported).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send `callout` to the API server with context `from` effective (the proxy ties a callout to
    /// the effective context and delivers its answer there). Reported: [`Done::Sent`] with the
    /// callout's token, or the failure.
    Dispatch {
        /// The context to send it from: the running callback's own.
        from: u32,
        /// The review.
        callout: Callout,
    },
    /// Edit request `stream`'s headers (remove every value of each name in `remove`, then set each
    /// of `set`), then resume it when `resume` (otherwise its own headers callback is running and
    /// continues it). Reported.
    Forward {
        /// The request.
        stream: u32,
        /// Headers to remove.
        remove: &'static [&'static str],
        /// Headers to set (replacing every value).
        set: Vec<(String, String)>,
        /// Whether to resume the paused request.
        resume: bool,
    },
    /// Answer request `stream` locally (`text/plain`). Reported.
    Reply {
        /// The request.
        stream: u32,
        /// HTTP status.
        status: u16,
        /// Body.
        body: String,
    },
    /// Read request `stream`'s client address (the proxy's `source.address`). Reported:
    /// [`Done::Source`].
    ReadSource {
        /// The request.
        stream: u32,
    },
    /// Write a log line (audit events are `Info` lines). Not reported.
    Log {
        /// Severity.
        level: Level,
        /// The line.
        message: String,
    },
    /// Add `by` to the counter series `series` ([`crate::metrics::Series::of`]). Not reported.
    Count {
        /// Slot of the series.
        series: usize,
        /// Delta.
        by: u64,
    },
    /// Record a callout latency sample (ms) in the histogram of `kind`
    /// ([`crate::metrics::latency_name`]). Not reported.
    Record {
        /// Which review.
        kind: CalloutKind,
        /// Milliseconds from send to answer.
        ms: u64,
    },
    /// Run the root context's tick every `ms` milliseconds (with the root context effective).
    /// Reported.
    SetTick {
        /// Period.
        ms: u64,
    },
}

impl Action {
    /// Whether the driver must [`crate::schedule::Scheduler::report`] this action's result before
    /// it polls again.
    pub fn is_reported(&self) -> bool {
        !matches!(
            self,
            Action::Log { .. } | Action::Count { .. } | Action::Record { .. }
        )
    }
}

/// A reported action that succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Done {
    /// Carried out.
    Ok,
    /// The callout was sent; its answer will carry this token.
    Sent(u32),
    /// The client address, raw (`None` when the proxy does not have it).
    Source(Option<Vec<u8>>),
}

/// A reported action that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The context the action acts on could not be made effective: the request is gone.
    #[error("{0}")]
    Gone(String),
    /// The hostcall failed.
    #[error("{0}")]
    Failed(String),
    /// The driver polled again without reporting (treated as a failure: fail closed).
    #[error("the driver did not report the action's result")]
    Unreported,
}
