//! What the scheduler keeps of each request and callout: the undecided request ([`Stream`]),
//! what answering and auditing it needs ([`Record`]), timers and callouts in flight.

use crate::cache::Millis;
use crate::decision::{Callout, CalloutKind, Request, Session};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TimerKind {
    /// `Session::on_retry`.
    Retry,
    /// Send the request's deferred callout.
    Dispatch,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Timer {
    pub(super) due: Millis,
    pub(super) stream: u32,
    pub(super) kind: TimerKind,
}

/// A callout in flight: whose, which kind, sent when (its latency is recorded on the answer).
#[derive(Debug, Clone, Copy)]
pub(super) struct InFlight {
    pub(super) stream: u32,
    pub(super) kind: CalloutKind,
    pub(super) sent_ms: Millis,
}

/// What answering and auditing a request needs: its id, its audit copy, when it came.
#[derive(Debug)]
pub(super) struct Record {
    pub(super) id: u32,
    /// What the audit event reads of the request; its client address once `source_read`.
    pub(super) audit: Request,
    pub(super) source_read: bool,
    pub(super) received_ms: Millis,
}

/// An undecided request.
#[derive(Debug)]
pub(super) struct Stream {
    pub(super) session: Session,
    pub(super) record: Record,
    /// A callout deferred to the next tick.
    pub(super) deferred: Option<Callout>,
}
