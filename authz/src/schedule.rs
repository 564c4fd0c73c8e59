//! The per-VM scheduler, host-free: events in, actions out. A driver (the proxy-wasm filter, or
//! a test) tells it what happened ([`Scheduler::on_request`], [`Scheduler::on_response`],
//! [`Scheduler::on_tick`], [`Scheduler::on_done`]) and then carries out what it asks
//! ([`Scheduler::poll`]) until it asks nothing more, reporting the result of each action that is
//! reported ([`Action::is_reported`], [`Scheduler::report`]). The driver does nothing of its own:
//! every request's [`Session`], the waiting lists of shared callouts, retries and deferred
//! callouts on timers, the bounds, audit events and counters are here.
//!
//! Every answer is a [`Verdict`], counted and audited alike: the kubelet's (from the session),
//! and the filter's own fail-closed 500s ([`Outcome::InternalError`](crate::decision::Outcome)):
//! too many undecided requests, a request that could not be read, a header edit or resume that
//! failed, too much work in one callback.
//!
//! Routing callouts: the proxy ties a callout to the effective context, and delivers its answer to
//! the context whose callback sent it. So a callout for request `S` is sent only from `S`'s own
//! callback or from the root's (the tick); a callout that a woken waiter needs while another
//! request's callback runs is deferred to the next tick (that request may end before the answer
//! comes). The token of every callout maps to its request here, so either context may deliver it.
//!
//! A callback's work is bounded: at most [`MAX_STREAMS`] undecided requests, [`MAX_TIMERS`]
//! timers, [`MAX_WORK`] work items per callback; past each, requests are failed closed.

use std::collections::{HashMap, HashSet, VecDeque};

use crate::audit::Auditor;
use crate::cache::Millis;
use crate::config::Config;
use crate::decision::{
    CalloutResponse, Engine, Pool, Progress, Request, Session, SpareRequest, Step, Verdict, Wake,
};
use crate::labels::CalloutResult;
use crate::metrics::{Counters, FLUSH_MS};

mod action;
mod answer;
mod state;
pub use action::{Action, Done, Failure, Level};
pub use answer::source_address;
use state::{InFlight, Record, Stream, Timer, TimerKind};

/// At most this many scheduled retries and deferred callouts.
pub const MAX_TIMERS: usize = 4096;
/// At most this many undecided requests per VM.
pub const MAX_STREAMS: usize = 16_384;
/// At most this many work items in one callback (a wake of many waiters is one item each).
pub const MAX_WORK: usize = 65_536;
/// The longest tick period while timers are pending (with none, the tick runs every
/// [`FLUSH_MS`] to flush the counters).
pub const MAX_TICK_MS: u64 = 100;
/// Why a request is failed closed when [`MAX_TIMERS`] are pending (its audited reason).
pub const TOO_MANY_TIMERS: &str = "too many pending retries";
/// Why a request is failed closed when [`MAX_STREAMS`] are undecided.
pub const TOO_MANY_STREAMS: &str = "too many undecided requests";
/// Why requests are failed closed when a callback passes [`MAX_WORK`].
pub const TOO_MUCH_WORK: &str = "too much work in one callback";

/// The running callback: the context it runs for, whose request headers (if any), and whether
/// it flushes the counters at its end (the tick).
#[derive(Debug, Clone, Copy)]
struct Ctx {
    current: u32,
    headers_of: Option<u32>,
    flush: bool,
}

/// A work item, by value: the queue is reused across callbacks, so a step in it costs no
/// allocation (boxing the large variant would cost one per step).
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
enum Work {
    Step(u32, Step),
    Wake(Wake),
    /// Fail this request closed (the work bound was hit).
    Fail(u32),
}

/// How a verdict is carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum How {
    Forward,
    Reply,
}

/// What the action handed out last waits for.
#[derive(Debug)]
enum Awaiting {
    Sent {
        stream: u32,
        kind: crate::decision::CalloutKind,
        now: Millis,
    },
    Answered {
        record: Record,
        verdict: Verdict,
        how: How,
    },
    Source {
        record: Record,
        verdict: Verdict,
        code: Option<u16>,
    },
    Tick(u64),
}

/// Where the running callback's work is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Processing work items.
    Working,
    /// The work is done; the tick period and the counters are handed over.
    Closing,
    /// Nothing more until the next event.
    Idle,
}

/// The per-VM state: the engine, the undecided requests, callout tokens, timers, counters, the
/// audit log, and the work of the running callback.
#[derive(Debug)]
pub struct Scheduler {
    config: Config,
    engine: Engine,
    root: u32,
    streams: HashMap<u32, Stream>,
    /// Requests answered locally, until their end: their body must never pass.
    replied: HashSet<u32>,
    calls: HashMap<u32, InFlight>,
    timers: Vec<Timer>,
    tick_ms: u64,
    counters: Counters,
    rng: u64,
    last_now: Millis,
    auditor: Auditor,
    ctx: Ctx,
    queue: VecDeque<Work>,
    outbox: VecDeque<(Action, Option<Awaiting>)>,
    awaiting: Option<Awaiting>,
    stage: Stage,
    worked: usize,
    /// [`MAX_WORK`] (lower in tests).
    max_work: usize,
    continued: bool,
    /// Audit lines handed out and given back ([`Scheduler::reclaim_line`]).
    lines: Pool<String>,
}

impl Scheduler {
    /// A scheduler for the root context `root`. `salt` keys token hashes; `seed` the retry
    /// jitter.
    pub fn new(config: Config, root: u32, salt: [u8; 32], seed: u64) -> Self {
        Scheduler {
            auditor: config.auditor(),
            engine: Engine::new(config.settings().clone(), salt),
            config,
            root,
            streams: HashMap::new(),
            replied: HashSet::new(),
            calls: HashMap::new(),
            timers: Vec::new(),
            tick_ms: 0,
            counters: Counters::default(),
            rng: seed | 1,
            last_now: 0,
            ctx: Ctx {
                current: root,
                headers_of: None,
                flush: false,
            },
            queue: VecDeque::new(),
            outbox: VecDeque::new(),
            awaiting: None,
            stage: Stage::Idle,
            worked: 0,
            max_work: MAX_WORK,
            continued: false,
            lines: Pool::new(),
        }
    }

    /// The buffers of a finished request to read the next one into
    /// ([`Request::from_header_bytes_in`]): a request of the same shape as one before allocates
    /// nothing.
    pub fn spare_request(&mut self) -> SpareRequest {
        self.engine.spare_request()
    }

    /// Give back the message of an [`Action::Log`] once written: the next audit line reuses it.
    pub fn reclaim_line(&mut self, line: String) {
        self.lines.give(line);
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The root context's id.
    pub fn root(&self) -> u32 {
        self.root
    }

    /// The engine (caches and callouts in flight).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The counters not handed over yet.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Undecided requests.
    pub fn pending(&self) -> usize {
        self.streams.len()
    }

    /// Scheduled timers.
    pub fn timers(&self) -> usize {
        self.timers.len()
    }

    /// The tick period last set (0 = none).
    pub fn tick_ms(&self) -> u64 {
        self.tick_ms
    }

    /// Whether request `id` must still be held: undecided, or answered locally. Its body and
    /// trailers must not pass (in Envoy, `Continue` from the body callback of a request whose
    /// headers were paused would send the headers on).
    pub fn holds(&self, id: u32) -> bool {
        self.streams.contains_key(&id) || self.replied.contains(&id)
    }

    /// The last time an event carried (the clock to use when the proxy's fails).
    pub fn last_now(&self) -> Millis {
        self.last_now
    }

    /// Whether the request whose headers callback ran last was forwarded synchronously: that
    /// callback continues it (no resume).
    pub fn continued(&self) -> bool {
        self.continued
    }

    fn begin(&mut self, ctx: Ctx, now: Millis) {
        self.ctx = ctx;
        self.last_now = now;
        self.stage = Stage::Working;
        self.worked = 0;
        self.continued = false;
    }

    /// Begin the headers callback of request `id`.
    fn begin_headers(&mut self, id: u32, now: Millis) {
        let ctx = Ctx {
            current: id,
            headers_of: Some(id),
            flush: false,
        };
        self.begin(ctx, now);
    }

    /// After configuration: start the tick (it flushes the counters every [`FLUSH_MS`], and runs
    /// faster while timers are pending).
    pub fn start(&mut self) {
        let (root, now) = (self.root, self.last_now);
        self.begin(
            Ctx {
                current: root,
                headers_of: None,
                flush: false,
            },
            now,
        );
    }

    /// Hand the counters over now (the tick does it; also before the scheduler is replaced or
    /// the VM stops).
    pub fn flush(&mut self) {
        for (series, by) in self.counters.take() {
            self.outbox.push_back((Action::Count { series, by }, None));
        }
    }

    /// Request `id`'s headers arrived, read as `request`. With too many undecided requests (or
    /// an id still undecided), it is answered 500 at once.
    pub fn on_request(&mut self, id: u32, request: Request, now: Millis) {
        self.begin_headers(id, now);
        if self.streams.len() >= MAX_STREAMS || self.streams.contains_key(&id) {
            let v = Verdict::undecided(&request.method, &request.target, TOO_MANY_STREAMS);
            self.fail_closed(Record::new(id, request, now), v);
            return;
        }
        let mut session = Session::new(id, request);
        let progress = session.start(&mut self.engine, now);
        self.streams.insert(
            id,
            Stream {
                session,
                received_ms: now,
                deferred: None,
            },
        );
        queue_progress(&mut self.queue, id, progress);
    }

    /// Request `id`'s headers could not be read (`why`): it is answered 500.
    pub fn on_unreadable(&mut self, id: u32, why: &str, now: Millis) {
        self.begin_headers(id, now);
        let v = Verdict::undecided("", "", &format!("cannot read the request: {why}"));
        self.fail_closed(Record::new(id, Request::default(), now), v);
    }

    /// A callout's response (or failure), delivered to context `current`.
    pub fn on_response(
        &mut self,
        current: u32,
        token: u32,
        response: CalloutResponse,
        now: Millis,
    ) {
        self.begin(
            Ctx {
                current,
                headers_of: None,
                flush: false,
            },
            now,
        );
        let Some(call) = self.calls.remove(&token) else {
            self.log(
                Level::Debug,
                format!("kubelet-authz: response for callout {token} that nobody waits for"),
            );
            return;
        };
        self.counters
            .callout(call.kind, CalloutResult::of(&response));
        let ms = now.saturating_sub(call.sent_ms);
        self.outbox.push_back((
            Action::Record {
                kind: call.kind,
                ms,
            },
            None,
        ));
        match &response {
            CalloutResponse::Failed(why)
            | CalloutResponse::ConnectFailed(why)
            | CalloutResponse::TimedOut(why) => {
                self.log(
                    Level::Warn,
                    format!("kubelet-authz: callout {token} failed: {why}"),
                );
            }
            CalloutResponse::Http { status, .. } if !(200..300).contains(status) => {
                self.log(
                    Level::Warn,
                    format!("kubelet-authz: callout {token} answered HTTP {status}"),
                );
            }
            CalloutResponse::Http { .. } => {}
        }
        self.callout_result(call.stream, call.kind, response, now);
    }

    /// The root's timer fired: run the retries and deferred callouts that are due, then hand
    /// the counters over.
    pub fn on_tick(&mut self, now: Millis) {
        let root = self.root;
        self.begin(
            Ctx {
                current: root,
                headers_of: None,
                flush: true,
            },
            now,
        );
        let mut due = Vec::new();
        self.timers.retain(|t| {
            let is_due = t.due <= now;
            if is_due {
                due.push(*t);
            }
            !is_due
        });
        for t in due {
            let Some(s) = self.streams.get_mut(&t.stream) else {
                continue;
            };
            match t.kind {
                TimerKind::Retry => {
                    let p = s.session.on_retry(&mut self.engine, now);
                    queue_progress(&mut self.queue, t.stream, p);
                }
                TimerKind::Dispatch => {
                    if let Some(c) = s.deferred.take() {
                        self.queue.push_back(Work::Step(t.stream, Step::Call(c)));
                    }
                }
            }
        }
    }

    /// Request `id` went away (or finished): forget it; if it led a callout, wake its waiters.
    pub fn on_done(&mut self, id: u32, now: Millis) {
        self.begin(
            Ctx {
                current: id,
                headers_of: None,
                flush: false,
            },
            now,
        );
        self.replied.remove(&id);
        self.forget(id);
        if let Some(mut stream) = self.streams.remove(&id) {
            if let Some(w) = stream.session.abandon(&mut self.engine) {
                self.queue.push_back(Work::Wake(w));
            }
        }
    }

    /// The next action to carry out, `None` when the callback's work is done. A reported action
    /// ([`Action::is_reported`]) must be reported before the next poll; an unreported one is
    /// taken as failed.
    pub fn poll(&mut self) -> Option<Action> {
        if self.awaiting.is_some() {
            self.report(Err(Failure::Unreported));
        }
        loop {
            if let Some((action, awaiting)) = self.outbox.pop_front() {
                self.awaiting = awaiting;
                return Some(action);
            }
            match self.stage {
                Stage::Idle => return None,
                Stage::Closing => {
                    self.stage = Stage::Idle;
                }
                Stage::Working => match self.queue.pop_front() {
                    Some(item) => {
                        self.worked += 1;
                        if self.worked > self.max_work {
                            self.fail_all(item);
                        } else {
                            self.process(item);
                        }
                    }
                    None => self.close(),
                },
            }
        }
    }

    /// The result of the reported action [`Scheduler::poll`] handed out last.
    pub fn report(&mut self, result: Result<Done, Failure>) {
        match self.awaiting.take() {
            None => {}
            Some(Awaiting::Tick(want)) => match result {
                Ok(_) => self.tick_ms = want,
                Err(e) => self.log(Level::Error, format!("kubelet-authz: {e}")),
            },
            Some(Awaiting::Sent { stream, kind, now }) => match result {
                Ok(Done::Sent(token)) => {
                    let call = InFlight {
                        stream,
                        kind,
                        sent_ms: now,
                    };
                    self.calls.insert(token, call);
                }
                Ok(_) => self.send_failed(stream, kind, "no token".into(), now),
                Err(e) => self.send_failed(stream, kind, e.to_string(), now),
            },
            Some(Awaiting::Answered {
                record,
                verdict,
                how,
            }) => self.answered(record, verdict, how, result),
            Some(Awaiting::Source {
                mut record,
                verdict,
                code,
            }) => {
                let raw = match result {
                    Ok(Done::Source(raw)) => raw,
                    _ => None,
                };
                record.audit.source_address = self.source_address(raw.as_deref());
                self.write_audit(&record, &verdict, code);
                self.recycle(record, verdict);
            }
        }
    }

    fn process(&mut self, item: Work) {
        match item {
            Work::Wake(w) => {
                let now = self.last_now;
                for waiter in w.waiters {
                    if let Some(s) = self.streams.get_mut(&waiter) {
                        let p = s.session.on_shared(&mut self.engine, now, w.result.clone());
                        queue_progress(&mut self.queue, waiter, p);
                    }
                }
            }
            Work::Step(sid, step) => self.act(sid, step),
            Work::Fail(sid) => {
                let Some(mut s) = self.streams.remove(&sid) else {
                    return;
                };
                let progress = s.session.fail(&mut self.engine, TOO_MUCH_WORK);
                let v = match progress.step {
                    Step::Forward(v) | Step::Reply(v) => v,
                    _ => Verdict::undecided("", "", TOO_MUCH_WORK),
                };
                self.fail_closed(s.into_record(), v.failed_closed(TOO_MUCH_WORK));
            }
        }
    }

    fn act(&mut self, sid: u32, step: Step) {
        let now = self.last_now;
        match step {
            Step::Wait => {}
            Step::RetryAfter(ms) => self.schedule(sid, now.saturating_add(ms), TimerKind::Retry),
            Step::Call(callout) => {
                let from = self.ctx.current;
                if from == sid || from == self.root {
                    let kind = callout.kind;
                    let awaiting = Awaiting::Sent {
                        stream: sid,
                        kind,
                        now,
                    };
                    self.outbox
                        .push_back((Action::Dispatch { from, callout }, Some(awaiting)));
                } else if let Some(s) = self.streams.get_mut(&sid) {
                    s.deferred = Some(callout);
                    self.schedule(sid, now, TimerKind::Dispatch);
                }
            }
            Step::Forward(v) => self.finish(sid, v, How::Forward),
            Step::Reply(v) => self.finish(sid, v, How::Reply),
        }
    }

    /// The callout of request `stream` could not be sent: fed back as a failed callout.
    fn send_failed(
        &mut self,
        stream: u32,
        kind: crate::decision::CalloutKind,
        why: String,
        now: Millis,
    ) {
        self.counters.callout(kind, CalloutResult::SendFailed);
        let cluster = &self.config.api_server().cluster;
        let message = format!(
            "kubelet-authz: could not send {} to cluster {cluster:?}: {why}",
            kind.name()
        );
        self.log(Level::Warn, message);
        self.callout_result(
            stream,
            kind,
            CalloutResponse::Failed(format!("could not send: {why}")),
            now,
        );
    }

    /// Feed request `stream` the result of the callout it led.
    fn callout_result(
        &mut self,
        stream: u32,
        kind: crate::decision::CalloutKind,
        response: CalloutResponse,
        now: Millis,
    ) {
        let rand = self.rand();
        let Some(s) = self.streams.get_mut(&stream) else {
            return;
        };
        let p = s.session.on_callout(&mut self.engine, now, response, rand);
        if matches!(p.step, Step::RetryAfter(_)) {
            self.counters.retry(kind);
        }
        queue_progress(&mut self.queue, stream, p);
    }

    fn schedule(&mut self, sid: u32, due: Millis, kind: TimerKind) {
        if self.timers.len() < MAX_TIMERS {
            self.timers.push(Timer {
                due,
                stream: sid,
                kind,
            });
            return;
        }
        self.counters.internal_error();
        self.log(
            Level::Error,
            "kubelet-authz: too many pending retries; failing the request closed".into(),
        );
        // In the engine's shapes (401 while authenticating, 500 while authorizing); the waiters
        // of a callout it led are woken to lead again.
        if let Some(s) = self.streams.get_mut(&sid) {
            s.deferred = None;
            let p = s.session.fail(&mut self.engine, TOO_MANY_TIMERS);
            queue_progress(&mut self.queue, sid, p);
        }
    }

    /// The callback's work is done: the tick period, and on the tick the counters.
    fn close(&mut self) {
        self.stage = Stage::Closing;
        let want = self
            .timers
            .iter()
            .map(|t| t.due)
            .min()
            .map_or(FLUSH_MS, |due| {
                due.saturating_sub(self.last_now).clamp(1, MAX_TICK_MS)
            });
        if want != self.tick_ms {
            self.outbox
                .push_back((Action::SetTick { ms: want }, Some(Awaiting::Tick(want))));
        }
        if self.ctx.flush {
            self.flush();
        }
    }

    /// Fail closed every undecided request (the work bound was hit with `item` in hand).
    fn fail_all(&mut self, item: Work) {
        self.counters.internal_error();
        self.log(
            Level::Error,
            "kubelet-authz: too much work in one callback; failing requests closed".into(),
        );
        self.queue.clear();
        self.timers.clear();
        for call in self.calls.values() {
            self.counters.callout(call.kind, CalloutResult::Cancelled);
        }
        self.calls.clear();
        drop(item);
        let mut ids: Vec<u32> = self.streams.keys().copied().collect();
        ids.sort_unstable();
        self.queue.extend(ids.into_iter().map(Work::Fail));
        // At most MAX_STREAMS items follow, each answering one request and making no more.
        self.worked = 0;
    }

    /// Forget the timers and callouts of request `sid` (the proxy cancels its callouts with it).
    fn forget(&mut self, sid: u32) {
        self.timers.retain(|t| t.stream != sid);
        let counters = &mut self.counters;
        self.calls.retain(|_, call| {
            let keep = call.stream != sid;
            if !keep {
                counters.callout(call.kind, CalloutResult::Cancelled);
            }
            keep
        });
    }

    fn log(&mut self, level: Level, message: String) {
        self.outbox
            .push_back((Action::Log { level, message }, None));
    }

    fn rand(&mut self) -> u32 {
        // xorshift64*
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
    }
}

/// Queue what a session call answered: the waiters to wake first, then the session's step.
fn queue_progress(queue: &mut VecDeque<Work>, sid: u32, p: Progress) {
    if let Some(w) = p.wake {
        queue.push_back(Work::Wake(w));
    }
    queue.push_back(Work::Step(sid, p.step));
}

#[cfg(test)]
mod tests;
