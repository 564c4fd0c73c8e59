//! The filter's per-VM state and the loop that drives the engine's sessions: it turns each
//! [`Step`] into proxy actions (callouts, timers, header edits, resume, local reply), feeds the
//! results back, wakes waiters, counts every decision and audits those the audit policy writes.
//! It talks to the proxy only through [`Host`], so it runs natively in tests.
//!
//! Routing callouts: Envoy ties a callout to the effective context, and the SDK delivers its
//! answer to the context whose callback dispatched it. So a callout for session `S` is sent only
//! from `S`'s own callback or from the root's (`on_tick`), with the effective context reset to
//! that callback's context; a call that a woken waiter needs while another request's callback
//! runs is deferred to the root's next tick (that request may end before the answer comes). The
//! token of every callout maps to its session here, so either context can deliver it.

use std::collections::{HashMap, HashSet, VecDeque};

use kubelet_authz::audit;
use kubelet_authz::cache::Millis;
use kubelet_authz::config::Config;
use kubelet_authz::decision::{
    Callout, CalloutKind, CalloutResponse, Engine, Progress, Request, Session, Step, Verdict, Wake,
};

use crate::host::{Host, HostError, Level};
use crate::metrics::{self, Metrics};
use kubelet_authz::labels::CalloutResult;

/// At most this many scheduled retries and deferred callouts.
pub const MAX_TIMERS: usize = 4096;
/// At most this many undecided requests per VM.
pub const MAX_STREAMS: usize = 16_384;
/// At most this many work items in one callback (a wake of many waiters is one item each).
pub const MAX_WORK: usize = 65_536;
/// Why a request is failed closed when [`MAX_TIMERS`] are pending (its audited reason).
pub const TOO_MANY_TIMERS: &str = "too many pending retries";
/// The longest tick period while timers are pending (with none, the tick runs every
/// [`metrics::FLUSH_MS`] to flush the counters).
pub const MAX_TICK_MS: u64 = 100;

/// What the proxy should do with the request after `on_http_request_headers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Forward it now.
    Continue,
    /// Hold it (deciding, or already answered locally).
    Pause,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimerKind {
    /// `Session::on_retry`.
    Retry,
    /// Send the session's deferred callout.
    Dispatch,
}

#[derive(Debug, Clone, Copy)]
struct Timer {
    due: Millis,
    stream: u32,
    kind: TimerKind,
}

/// A callout in flight: whose, which kind, sent when (its latency is recorded on the answer).
#[derive(Debug, Clone, Copy)]
struct InFlight {
    stream: u32,
    kind: CalloutKind,
    sent_ms: Millis,
}

#[derive(Debug)]
struct Stream {
    session: Session,
    /// What the audit event reads of the request; its client address only after
    /// [`Stream::load_source_address`].
    audit: Request,
    /// Whether `audit.source_address` was read from the proxy.
    source_read: bool,
    received_ms: Millis,
    deferred: Option<Callout>,
}

impl Stream {
    /// Read the client address (`source.address`) into the audit copy of the request, once, on
    /// first use: the property lookup is one of the dearer hostcalls and only a written audit
    /// event needs it, so it is not read with the request. The effective context must be this
    /// stream's (as it is once `finish` entered it). A failed read leaves the address out of
    /// the event.
    fn load_source_address(&mut self, host: &mut dyn Host) {
        if self.source_read {
            return;
        }
        self.source_read = true;
        let raw = host.source_address().ok().flatten();
        self.audit.source_address = crate::convert::source_address(raw.as_deref());
    }
}

/// Which callback is running: the context it runs for, and whose request headers (if any).
#[derive(Debug, Clone, Copy)]
struct Ctx {
    current: u32,
    headers_of: Option<u32>,
}

enum Work {
    Step(u32, Box<Step>),
    Wake(Wake),
}

/// Per-VM state: the engine, the undecided requests, callout tokens, timers, counters.
#[derive(Debug)]
pub struct Filter {
    /// The checked configuration: the engine's settings, the API server, the audit log.
    config: Config,
    engine: Engine,
    root_id: u32,
    streams: HashMap<u32, Stream>,
    /// Requests answered locally, until their end: their body must never pass.
    replied: HashSet<u32>,
    tokens: HashMap<u32, InFlight>,
    timers: Vec<Timer>,
    tick_ms: u64,
    metrics: Metrics,
    rng: u64,
    last_now: Millis,
    /// The context the proxy acts on now (as far as this driver knows).
    effective: u32,
    /// The audit log: its settings, writer and line buffer.
    auditor: audit::Auditor,
}

impl Filter {
    /// A filter for the root context `root_id`. `salt` keys token hashes; `seed` the retry jitter.
    pub fn new(config: Config, root_id: u32, salt: [u8; 32], seed: u64) -> Self {
        Filter {
            auditor: config.auditor(),
            engine: Engine::new(config.settings().clone(), salt),
            config,
            root_id,
            streams: HashMap::new(),
            replied: HashSet::new(),
            tokens: HashMap::new(),
            timers: Vec::new(),
            tick_ms: 0,
            metrics: Metrics::default(),
            rng: seed | 1,
            last_now: 0,
            effective: root_id,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The engine (caches and callouts in flight), for tests.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Undecided requests.
    pub fn pending(&self) -> usize {
        self.streams.len()
    }

    /// Scheduled timers.
    pub fn timers(&self) -> usize {
        self.timers.len()
    }

    /// The tick period last asked for (0 = none).
    pub fn tick_ms(&self) -> u64 {
        self.tick_ms
    }

    /// Whether request `id` is undecided.
    pub fn has_stream(&self, id: u32) -> bool {
        self.streams.contains_key(&id)
    }

    /// Whether request `id` must still be held: undecided, or answered locally. Its body and
    /// trailers must not pass (in Envoy, `Continue` from the body callback of a request whose
    /// headers were paused would send the headers on).
    pub fn holds(&self, id: u32) -> bool {
        self.streams.contains_key(&id) || self.replied.contains(&id)
    }

    /// The proxy's clock when it fails: the last time seen.
    pub fn last_now(&self) -> Millis {
        self.last_now
    }

    /// Count a failure that happened outside the driver (reading the request). Counted in the
    /// VM: the host is not called (counters reach it on the tick).
    pub fn count_internal_error(&mut self, _host: &mut dyn Host) {
        self.metrics.internal_error();
    }

    /// The counters not flushed yet (tests).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Start the tick (after configuration): it flushes the counters every
    /// [`metrics::FLUSH_MS`], and runs faster while retries are pending.
    pub fn start(&mut self, host: &mut dyn Host) {
        self.update_tick(host, self.last_now);
    }

    /// Hand the counters to the proxy now (the tick does it; also before the filter is replaced
    /// or the VM stops).
    pub fn flush_metrics(&mut self, host: &mut dyn Host) {
        self.metrics.flush(host);
    }

    /// A request's headers arrived (context `id`).
    pub fn on_request_headers(
        &mut self,
        host: &mut dyn Host,
        id: u32,
        request: Request,
        now: Millis,
    ) -> Next {
        self.last_now = now;
        if self.streams.len() >= MAX_STREAMS || self.streams.contains_key(&id) {
            self.metrics.internal_error();
            host.log(
                Level::Error,
                "kubelet-authz: too many undecided requests; answering 500",
            );
            self.effective = id;
            if let Err(e) = host.send_response(500, b"Internal Server Error") {
                host.log(Level::Error, &format!("kubelet-authz: {e}"));
            }
            return Next::Pause;
        }
        let audit = self.auditor.keep(&request);
        let mut session = Session::new(id, request);
        let progress = session.start(&mut self.engine, now);
        self.streams.insert(
            id,
            Stream {
                session,
                audit,
                source_read: false,
                received_ms: now,
                deferred: None,
            },
        );
        let ctx = Ctx {
            current: id,
            headers_of: Some(id),
        };
        if self.run(host, ctx, split(id, progress), now) {
            Next::Continue
        } else {
            Next::Pause
        }
    }

    /// A callout's response (or failure) was delivered to context `current`.
    pub fn on_call_response(
        &mut self,
        host: &mut dyn Host,
        current: u32,
        token: u32,
        response: CalloutResponse,
        now: Millis,
    ) {
        self.last_now = now;
        let Some(call) = self.tokens.remove(&token) else {
            host.log(
                Level::Debug,
                &format!("kubelet-authz: response for callout {token} that nobody waits for"),
            );
            return;
        };
        self.metrics
            .callout(call.kind, CalloutResult::of(&response));
        self.metrics
            .latency(host, call.kind, now.saturating_sub(call.sent_ms));
        match &response {
            CalloutResponse::Failed(why)
            | CalloutResponse::ConnectFailed(why)
            | CalloutResponse::TimedOut(why) => {
                host.log(
                    Level::Warn,
                    &format!("kubelet-authz: callout {token} failed: {why}"),
                );
            }
            CalloutResponse::Http { status, .. } => {
                if !(200..300).contains(status) {
                    host.log(
                        Level::Warn,
                        &format!("kubelet-authz: callout {token} answered HTTP {status}"),
                    );
                }
            }
        }
        let sid = call.stream;
        let rand = self.rand();
        let Some(s) = self.streams.get_mut(&sid) else {
            return;
        };
        let p = s.session.on_callout(&mut self.engine, now, response, rand);
        if matches!(p.step, Step::RetryAfter(_)) {
            self.metrics.retry(call.kind);
        }
        let ctx = Ctx {
            current,
            headers_of: None,
        };
        self.run(host, ctx, split(sid, p), now);
    }

    /// The root's timer fired: run the retries and deferred callouts that are due.
    pub fn on_tick(&mut self, host: &mut dyn Host, now: Millis) {
        self.last_now = now;
        let mut due = Vec::new();
        self.timers.retain(|t| {
            if t.due <= now {
                due.push(*t);
                false
            } else {
                true
            }
        });
        let ctx = Ctx {
            current: self.root_id,
            headers_of: None,
        };
        let mut work = Vec::with_capacity(due.len());
        for t in due {
            let Some(s) = self.streams.get_mut(&t.stream) else {
                continue;
            };
            match t.kind {
                TimerKind::Retry => {
                    let p = s.session.on_retry(&mut self.engine, now);
                    work.extend(split(t.stream, p));
                }
                TimerKind::Dispatch => {
                    if let Some(c) = s.deferred.take() {
                        work.push(Work::Step(t.stream, Box::new(Step::Call(c))));
                    }
                }
            }
        }
        self.run(host, ctx, work, now);
        self.metrics.flush(host);
    }

    /// Request `id` went away (or finished): forget it; if it led a callout, wake its waiters.
    pub fn on_done(&mut self, host: &mut dyn Host, id: u32, now: Millis) {
        self.last_now = now;
        self.replied.remove(&id);
        self.timers.retain(|t| t.stream != id);
        self.cancel_callouts(id);
        let Some(mut stream) = self.streams.remove(&id) else {
            return;
        };
        let work: Vec<Work> = stream
            .session
            .abandon(&mut self.engine)
            .map(Work::Wake)
            .into_iter()
            .collect();
        let ctx = Ctx {
            current: id,
            headers_of: None,
        };
        self.run(host, ctx, work, now);
    }

    /// Process work until none is left; answers whether the request whose headers callback
    /// runs may continue now.
    fn run(&mut self, host: &mut dyn Host, ctx: Ctx, work: Vec<Work>, now: Millis) -> bool {
        // The proxy enters every callback with its context effective.
        self.effective = ctx.current;
        let mut queue: VecDeque<Work> = work.into();
        let mut continued = false;
        let mut done = 0usize;
        while let Some(item) = queue.pop_front() {
            done += 1;
            if done > MAX_WORK {
                // Never reached with the engine's bounds; fail closed all the same.
                self.fail_all(host, item, queue);
                break;
            }
            match item {
                Work::Wake(w) => {
                    for waiter in w.waiters {
                        if let Some(s) = self.streams.get_mut(&waiter) {
                            let p = s.session.on_shared(&mut self.engine, now, w.result.clone());
                            queue.extend(split(waiter, p));
                        }
                    }
                }
                Work::Step(sid, step) => match self.act(host, ctx, sid, *step, now) {
                    Acted::Done => {}
                    Acted::Continued => continued |= ctx.headers_of == Some(sid),
                    Acted::Next(p) => queue.extend(split(sid, *p)),
                },
            }
        }
        self.update_tick(host, now);
        if let Err(e) = self.enter(host, ctx.current) {
            host.log(Level::Debug, &format!("kubelet-authz: {e}"));
        }
        continued
    }

    fn act(&mut self, host: &mut dyn Host, ctx: Ctx, sid: u32, step: Step, now: Millis) -> Acted {
        match step {
            Step::Wait => Acted::Done,
            Step::RetryAfter(ms) => {
                self.schedule(host, sid, now.saturating_add(ms), TimerKind::Retry)
            }
            Step::Call(c) => {
                if ctx.current == sid || ctx.current == self.root_id {
                    self.dispatch(host, ctx, sid, c, now)
                } else {
                    match self.streams.get_mut(&sid) {
                        Some(s) => s.deferred = Some(c),
                        None => return Acted::Done,
                    }
                    self.schedule(host, sid, now, TimerKind::Dispatch)
                }
            }
            Step::Forward(v) => self.finish(host, ctx, sid, v, true, now),
            Step::Reply(v) => self.finish(host, ctx, sid, v, false, now),
        }
    }

    fn dispatch(
        &mut self,
        host: &mut dyn Host,
        ctx: Ctx,
        sid: u32,
        c: Callout,
        now: Millis,
    ) -> Acted {
        let entered = self.enter(host, ctx.current);
        let api = self.config.api_server();
        let headers = api.headers(&c);
        let sent = entered
            .and_then(|()| host.dispatch(&api.cluster, &headers, c.body.as_bytes(), api.timeout));
        match sent {
            Ok(token) => {
                let call = InFlight {
                    stream: sid,
                    kind: c.kind,
                    sent_ms: now,
                };
                self.tokens.insert(token, call);
                Acted::Done
            }
            Err(e) => {
                self.metrics.callout(c.kind, CalloutResult::SendFailed);
                host.log(
                    Level::Warn,
                    &format!(
                        "kubelet-authz: could not send {} to cluster {:?}: {e}",
                        kind_name(c.kind),
                        api.cluster
                    ),
                );
                let rand = self.rand();
                let Some(s) = self.streams.get_mut(&sid) else {
                    return Acted::Done;
                };
                let response = CalloutResponse::Failed(format!("could not send: {e}"));
                let p = s.session.on_callout(&mut self.engine, now, response, rand);
                if matches!(p.step, Step::RetryAfter(_)) {
                    self.metrics.retry(c.kind);
                }
                Acted::Next(Box::new(p))
            }
        }
    }

    fn schedule(&mut self, host: &mut dyn Host, sid: u32, due: Millis, kind: TimerKind) -> Acted {
        if self.timers.len() < MAX_TIMERS {
            self.timers.push(Timer {
                due,
                stream: sid,
                kind,
            });
            return Acted::Done;
        }
        self.metrics.internal_error();
        host.log(
            Level::Error,
            "kubelet-authz: too many pending retries; failing the request closed",
        );
        match self.fail_session(sid, TOO_MANY_TIMERS) {
            Some(p) => Acted::Next(Box::new(p)),
            None => Acted::Done,
        }
    }

    /// Finish a session closed with `why` as the audited reason, in the engine's shapes (401
    /// while authenticating, 500 while authorizing); the waiters of a callout it led are woken
    /// to lead again.
    fn fail_session(&mut self, sid: u32, why: &str) -> Option<Progress> {
        let s = self.streams.get_mut(&sid)?;
        s.deferred = None;
        Some(s.session.fail(&mut self.engine, why))
    }

    fn finish(
        &mut self,
        host: &mut dyn Host,
        ctx: Ctx,
        sid: u32,
        v: Verdict,
        forward: bool,
        now: Millis,
    ) -> Acted {
        self.timers.retain(|t| t.stream != sid);
        self.cancel_callouts(sid);
        let Some(mut stream) = self.streams.remove(&sid) else {
            return Acted::Done;
        };
        self.metrics.decision(&v);
        if let Err(e) = self.enter(host, sid) {
            // The request is gone: there is nobody to answer (and acting now would act on
            // another request).
            self.metrics.internal_error();
            host.log(
                Level::Warn,
                &format!("kubelet-authz: request {sid} went away before its answer: {e}"),
            );
            return Acted::Done;
        }
        if !forward {
            if self.replied.len() < MAX_STREAMS {
                self.replied.insert(sid);
            }
            self.audit(host, &mut stream, &v, Some(v.status), now);
            if let Err(e) = host.send_response(v.status, v.body.as_bytes()) {
                self.metrics.internal_error();
                host.log(Level::Error, &format!("kubelet-authz: {e}"));
            }
            return Acted::Done;
        }
        let edited = v
            .remove_headers
            .iter()
            .try_for_each(|h| host.remove_request_header(h))
            .and_then(|()| {
                v.set_headers
                    .iter()
                    .try_for_each(|(k, val)| host.set_request_header(k, val))
            });
        if let Err(e) = edited {
            // Never forward a request whose credentials could not be stripped.
            self.fail_closed_raw(host, &mut stream, &v, &e.to_string(), now);
            return Acted::Done;
        }
        self.audit(host, &mut stream, &v, None, now);
        if ctx.headers_of == Some(sid) {
            return Acted::Continued;
        }
        if let Err(e) = host.resume_request() {
            self.fail_closed_raw(host, &mut stream, &v, &e.to_string(), now);
        }
        Acted::Done
    }

    /// Answer 500 outside the engine's shapes (a hostcall failed after the decision).
    fn fail_closed_raw(
        &mut self,
        host: &mut dyn Host,
        stream: &mut Stream,
        v: &Verdict,
        why: &str,
        now: Millis,
    ) {
        self.metrics.internal_error();
        host.log(
            Level::Error,
            &format!("kubelet-authz: failing request closed: {why}"),
        );
        self.audit(host, stream, v, Some(500), now);
        if let Err(e) = host.send_response(500, b"Internal Server Error") {
            host.log(Level::Error, &format!("kubelet-authz: {e}"));
        }
    }

    /// Fail closed the item in hand and everything queued (the work bound was hit).
    fn fail_all(&mut self, host: &mut dyn Host, item: Work, queue: VecDeque<Work>) {
        let mut ids = Vec::new();
        for w in std::iter::once(item).chain(queue) {
            match w {
                Work::Step(sid, _) => ids.push(sid),
                Work::Wake(w) => ids.extend(w.waiters),
            }
        }
        self.metrics.internal_error();
        host.log(
            Level::Error,
            "kubelet-authz: too much work in one callback; failing requests closed",
        );
        // Every stream that may be blocked: the ones in hand and every other undecided one.
        ids.extend(self.streams.keys().copied());
        for sid in ids {
            let Some(mut s) = self.streams.remove(&sid) else {
                continue;
            };
            let _ = s.session.abandon(&mut self.engine);
            if self.enter(host, sid).is_ok() {
                let _ = host.send_response(500, b"Internal Server Error");
            }
        }
        self.timers.clear();
        for call in self.tokens.values() {
            self.metrics.callout(call.kind, CalloutResult::Cancelled);
        }
        self.tokens.clear();
    }

    /// Forget the callouts that request `sid` has in flight (the proxy cancels them with it).
    fn cancel_callouts(&mut self, sid: u32) {
        let metrics = &mut self.metrics;
        self.tokens.retain(|_, call| {
            let keep = call.stream != sid;
            if !keep {
                metrics.callout(call.kind, CalloutResult::Cancelled);
            }
            keep
        });
    }

    /// Write the audit event of a decision, if the audit policy says so: one log call into the
    /// VM's reused buffer.
    fn audit(
        &mut self,
        host: &mut dyn Host,
        stream: &mut Stream,
        v: &Verdict,
        code: Option<u16>,
        now: Millis,
    ) {
        if !self.auditor.writes(v, code) {
            return;
        }
        // Only a written event reads the client address, with this stream's context effective
        // (every caller has entered it).
        stream.load_source_address(host);
        let line = self.auditor.line(
            v,
            &stream.audit,
            stream.received_ms,
            stream.session.id(),
            now,
            code,
        );
        host.log(Level::Info, line);
    }

    fn update_tick(&mut self, host: &mut dyn Host, now: Millis) {
        let want = self
            .timers
            .iter()
            .map(|t| t.due)
            .min()
            .map_or(metrics::FLUSH_MS, |due| {
                due.saturating_sub(now).clamp(1, MAX_TICK_MS)
            });
        if want == self.tick_ms {
            return;
        }
        let set = self
            .enter(host, self.root_id)
            .and_then(|()| host.set_tick_period_ms(want));
        match set {
            Ok(()) => self.tick_ms = want,
            Err(e) => host.log(Level::Error, &format!("kubelet-authz: {e}")),
        }
    }

    /// Make `id` the effective context, unless it already is.
    fn enter(&mut self, host: &mut dyn Host, id: u32) -> Result<(), HostError> {
        if self.effective != id {
            host.set_effective_context(id)?;
            self.effective = id;
        }
        Ok(())
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

enum Acted {
    Done,
    Continued,
    Next(Box<Progress>),
}

fn split(sid: u32, p: Progress) -> Vec<Work> {
    let mut v = Vec::with_capacity(2);
    if let Some(w) = p.wake {
        v.push(Work::Wake(w));
    }
    v.push(Work::Step(sid, Box::new(p.step)));
    v
}

fn kind_name(kind: CalloutKind) -> &'static str {
    match kind {
        CalloutKind::TokenReview => "TokenReview",
        CalloutKind::SubjectAccessReview => "SubjectAccessReview",
    }
}

#[cfg(test)]
mod tests;
