//! The filter's per-VM state: the engine's [`Scheduler`], and the loop that carries out what it
//! asks, one [`Action`] at a time, as hostcalls ([`Host`]), reporting each result back. Nothing
//! is decided here: which request waits, retries, is answered or forwarded, what is counted and
//! audited, is the scheduler's. What is here is the proxy's side: which context is effective,
//! the metric ids the proxy gave, the API server's callout headers.
//! It talks to the proxy only through [`Host`], so it runs natively in tests.

use kubelet_authz::cache::Millis;
use kubelet_authz::config::Config;
use kubelet_authz::decision::{CalloutResponse, Request};
use kubelet_authz::metrics::Counters;
use kubelet_authz::schedule::{Action, Done, Failure, Scheduler};

use crate::host::{Host, HostError, Level};
use crate::metrics::Ids;

pub use kubelet_authz::schedule::{
    MAX_STREAMS, MAX_TICK_MS, MAX_TIMERS, MAX_WORK, TOO_MANY_TIMERS,
};

/// What the proxy should do with the request after `on_http_request_headers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Forward it now.
    Continue,
    /// Hold it (deciding, or already answered locally).
    Pause,
}

/// Per-VM state: the scheduler, the proxy's metric ids, the effective context.
#[derive(Debug)]
pub struct Filter {
    scheduler: Scheduler,
    ids: Ids,
    /// The context the proxy acts on now (as far as this driver knows).
    effective: u32,
}

impl Filter {
    /// A filter for the root context `root_id`. `salt` keys token hashes; `seed` the retry jitter.
    pub fn new(config: Config, root_id: u32, salt: [u8; 32], seed: u64) -> Self {
        Filter {
            scheduler: Scheduler::new(config, root_id, salt, seed),
            ids: Ids::default(),
            effective: root_id,
        }
    }

    /// The scheduler (its configuration, engine, counters, timers).
    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        self.scheduler.config()
    }

    /// The counters not flushed yet.
    pub fn metrics(&self) -> &Counters {
        self.scheduler.counters()
    }

    /// Undecided requests.
    pub fn pending(&self) -> usize {
        self.scheduler.pending()
    }

    /// Whether request `id` must still be held (see [`Scheduler::holds`]).
    pub fn holds(&self, id: u32) -> bool {
        self.scheduler.holds(id)
    }

    /// The proxy's clock when it fails: the last time seen.
    pub fn last_now(&self) -> Millis {
        self.scheduler.last_now()
    }

    /// The engine (caches and callouts in flight).
    pub fn engine(&self) -> &kubelet_authz::decision::Engine {
        self.scheduler.engine()
    }

    /// Scheduled timers.
    pub fn timers(&self) -> usize {
        self.scheduler.timers()
    }

    /// The tick period last set (0 = none).
    pub fn tick_ms(&self) -> u64 {
        self.scheduler.tick_ms()
    }

    /// The buffers of a finished request to read the next one into ([`Scheduler::spare_request`]).
    pub fn spare_request(&mut self) -> kubelet_authz::decision::SpareRequest {
        self.scheduler.spare_request()
    }

    /// Start the tick (after configuration, in a root callback).
    pub fn start(&mut self, host: &mut dyn Host) {
        self.scheduler.start();
        self.drive(host, self.scheduler.root());
    }

    /// Hand the counters to the proxy now (before the filter is replaced or the VM stops, in a
    /// root callback).
    pub fn flush_metrics(&mut self, host: &mut dyn Host) {
        self.scheduler.flush();
        self.drive(host, self.scheduler.root());
    }

    /// A request's headers arrived (context `id`), read as `request` (`Err` when they could not
    /// be read: answered 500).
    pub fn on_request_headers(
        &mut self,
        host: &mut dyn Host,
        id: u32,
        request: Request,
        now: Millis,
    ) -> Next {
        self.on_headers(host, id, Ok(request), now)
    }

    /// A request's headers arrived (context `id`), read as `request` (`Err` when they could not
    /// be read: answered 500).
    pub fn on_headers(
        &mut self,
        host: &mut dyn Host,
        id: u32,
        request: Result<Request, HostError>,
        now: Millis,
    ) -> Next {
        self.effective = id;
        match request {
            Ok(request) => self.scheduler.on_request(id, request, now),
            Err(e) => self.scheduler.on_unreadable(id, &e.to_string(), now),
        }
        self.drive(host, id);
        if self.scheduler.continued() {
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
        self.effective = current;
        self.scheduler.on_response(current, token, response, now);
        self.drive(host, current);
    }

    /// The root's timer fired.
    pub fn on_tick(&mut self, host: &mut dyn Host, now: Millis) {
        let root = self.scheduler.root();
        self.effective = root;
        self.scheduler.on_tick(now);
        self.drive(host, root);
    }

    /// Request `id` went away (or finished).
    pub fn on_done(&mut self, host: &mut dyn Host, id: u32, now: Millis) {
        self.effective = id;
        self.scheduler.on_done(id, now);
        self.drive(host, id);
    }

    /// Carry out every action of the callback running for context `current`, then leave
    /// `current` effective, as the proxy entered it.
    fn drive(&mut self, host: &mut dyn Host, current: u32) {
        while let Some(action) = self.scheduler.poll() {
            if let Some(result) = self.carry_out(host, action) {
                self.scheduler.report(result);
            }
        }
        if let Err(e) = self.enter(host, current) {
            host.log(Level::Debug, &format!("kubelet-authz: {e}"));
        }
    }

    /// One action as hostcalls; its result when it is reported.
    fn carry_out(&mut self, host: &mut dyn Host, action: Action) -> Option<Result<Done, Failure>> {
        let failed = |e: HostError| Failure::Failed(e.to_string());
        let gone = |e: HostError| Failure::Gone(e.to_string());
        let result = match action {
            Action::Log { level, message } => {
                host.log(level, &message);
                self.scheduler.reclaim_line(message);
                return None;
            }
            Action::Count { series, by } => {
                self.ids.count(host, series, by);
                return None;
            }
            Action::Record { kind, ms } => {
                self.ids.record(host, kind, ms);
                return None;
            }
            Action::Dispatch { from, callout } => {
                self.enter(host, from).map_err(failed).and_then(|()| {
                    let api = self.scheduler.config().api_server();
                    let headers = api.headers(&callout);
                    host.dispatch(&api.cluster, &headers, callout.body.as_bytes(), api.timeout)
                        .map(Done::Sent)
                        .map_err(failed)
                })
            }
            Action::Forward {
                stream,
                remove,
                set,
                resume,
            } => self.enter(host, stream).map_err(gone).and_then(|()| {
                remove
                    .iter()
                    .try_for_each(|h| host.remove_request_header(h))
                    .and_then(|()| {
                        set.iter()
                            .try_for_each(|(k, v)| host.set_request_header(k, v))
                    })
                    .and_then(|()| {
                        if resume {
                            host.resume_request()
                        } else {
                            Ok(())
                        }
                    })
                    .map(|()| Done::Ok)
                    .map_err(failed)
            }),
            Action::Reply {
                stream,
                status,
                body,
            } => self.enter(host, stream).map_err(gone).and_then(|()| {
                host.send_response(status, body.as_bytes())
                    .map(|()| Done::Ok)
                    .map_err(failed)
            }),
            Action::ReadSource { stream } => self
                .enter(host, stream)
                .map_err(gone)
                .and_then(|()| host.source_address().map(Done::Source).map_err(failed)),
            Action::SetTick { ms } => {
                let root = self.scheduler.root();
                self.enter(host, root)
                    .and_then(|()| host.set_tick_period_ms(ms))
                    .map(|()| Done::Ok)
                    .map_err(failed)
            }
        };
        Some(result)
    }

    /// Make `id` the effective context, unless it already is.
    fn enter(&mut self, host: &mut dyn Host, id: u32) -> Result<(), HostError> {
        if self.effective != id {
            host.set_effective_context(id)?;
            self.effective = id;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
