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

/// What answering and auditing a request needs: its id, the request (given back by its session:
/// never copied), when it came.
#[derive(Debug)]
pub(super) struct Record {
    pub(super) id: u32,
    /// The request; its client address once `source_read`.
    pub(super) audit: Request,
    pub(super) source_read: bool,
    pub(super) received_ms: Millis,
}

impl Record {
    /// Request `id`, received at `received_ms`.
    pub(super) fn new(id: u32, request: Request, received_ms: Millis) -> Self {
        Record {
            id,
            audit: request,
            source_read: false,
            received_ms,
        }
    }
}

/// An undecided request.
#[derive(Debug)]
pub(super) struct Stream {
    pub(super) session: Session,
    pub(super) received_ms: Millis,
    /// A callout deferred to the next tick.
    pub(super) deferred: Option<Callout>,
}

impl Stream {
    /// The request's record, its session done.
    pub(super) fn into_record(self) -> Record {
        let id = self.session.id();
        Record::new(id, self.session.into_request(), self.received_ms)
    }
}
