//! The [`Session`] state machine: one request's decision from its headers to a verdict,
//! authenticating (x509, bearer token, WebSocket token, anonymous) and then authorizing one
//! subresource at a time, with callouts shared between identical requests.
//!
//! The states are types ([`State`]): what exists in a state is a field of that state. What the
//! request asks for ([`Target`]) exists from authentication on; the user and how it was
//! identified exist only while authorizing; a callout taken part in ([`Pending`]) belongs to the
//! state that asked for it. What every state adds to the verdict (authentication errors, checks,
//! cache use) is the session's [`Trail`].
//!
//! A state's step returns the next state or the [`Step`] that stops the run, by value: boxing
//! it would cost an allocation on every decision, the cached one included.
#![allow(clippy::result_large_err)]

use super::{AuthorizationMode, Enforcement};
use crate::cache::Millis;
use crate::identity::{self, xfcc, BearerHeader, UserInfo};
use crate::kubelet::{Subresource, Subresources};
use crate::path;

use super::engine::{ms, should_cache, CalloutKey, SarKey};
use super::lookup::{lookup_sar, lookup_token, Lookup};
use super::retry::{sar_status, token_outcome};
use super::{
    request_attributes_in, AuthnMethod, Callout, CalloutResponse, Check, Decision, Engine,
    Progress, Request, SarAnswer, Shared, SharedUser, Step, TokenOutcome, Wake,
};
use crate::webhook::{self, Next};

/// What the request asks for: known once its attributes are.
#[derive(Debug, Clone)]
pub(super) struct Target {
    pub(super) path: String,
    pub(super) verb: &'static str,
    pub(super) strict_applied: bool,
    pub(super) subs: Subresources,
}

/// A callout this session takes part in: it leads it (`led`) or waits for another session's.
#[derive(Debug, Clone)]
pub(super) struct Pending {
    pub(super) key: CalloutKey,
    /// The callout this session leads (`None` while it waits for another session's).
    pub(super) led: Option<Callout>,
    /// The REST client's resends (after a `Retry-After`) made in the current attempt.
    pub(super) resends: u32,
    /// Whether the retry scheduled is such a resend (same attempt) rather than a new attempt.
    pub(super) resend_next: bool,
}

/// Which token authentication looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Credential {
    /// The `Authorization: Bearer` token.
    Bearer,
    /// The WebSocket subprotocol token.
    WebSocket,
}

/// Authenticating by token (a client certificate was not enough).
#[derive(Debug, Clone)]
pub(super) struct Authenticating {
    pub(super) target: Target,
    at: Credential,
    /// Where the bearer token is in the first `Authorization` value, when it carries one: the
    /// header is parsed once, and the token read in place where it is used, never copied.
    bearer: Option<std::ops::Range<usize>>,
    ws: Option<Result<identity::WebSocketToken, identity::WebSocketTokenError>>,
    pending: Option<Pending>,
}

/// Authorizing a known user, one subresource at a time.
#[derive(Debug, Clone)]
pub(super) struct Authorizing {
    pub(super) target: Target,
    pub(super) user: SharedUser,
    pub(super) authn: AuthnMethod,
    /// The position in `target.subs` of the subresource checked now.
    next: usize,
    pending: Option<Pending>,
}

impl Authorizing {
    fn sub(&self) -> Option<Subresource> {
        self.target.subs.get(self.next)
    }
}

/// Where a session is.
#[derive(Debug, Clone)]
pub(super) enum State {
    /// Not started; with the user when it is given (the plugin's `can-i --as`).
    New { preset: Option<SharedUser> },
    /// Authenticating by token.
    Authenticating(Authenticating),
    /// Authorizing.
    Authorizing(Authorizing),
    /// Decided.
    Finished,
}

/// What a session gathers on the way, for its verdict.
#[derive(Debug, Clone, Default)]
pub(super) struct Trail {
    pub(super) errors: Vec<String>,
    pub(super) checks: Vec<Check>,
    pub(super) spoofed: Option<String>,
    pub(super) stale: bool,
    pub(super) hits: u32,
    pub(super) misses: u32,
    /// Of `hits` and `misses`, the SubjectAccessReview cache's (the rest are the token cache's).
    pub(super) sar_hits: u32,
    pub(super) sar_misses: u32,
    pub(super) shadow: bool,
}

/// One request's decision in progress.
#[derive(Debug, Clone)]
pub struct Session {
    pub(super) id: u32,
    pub(super) request: Request,
    pub(super) state: State,
    pub(super) trail: Trail,
}

impl Session {
    /// A session for request `id` (a driver-chosen id, unique among live sessions).
    pub fn new(id: u32, request: Request) -> Self {
        Session {
            id,
            request,
            state: State::New { preset: None },
            trail: Trail::default(),
        }
    }

    /// A session whose user is already known (the kubectl plugin's `can-i --as`): only the
    /// authorization part runs. The group adder is not applied: the user is taken as given.
    pub fn authenticated(id: u32, request: Request, user: UserInfo) -> Self {
        let mut s = Session::new(id, request);
        s.state = State::New {
            preset: Some(SharedUser::new(user)),
        };
        s
    }

    /// The driver id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The request, given back (for its audit event: the driver keeps no copy). Once decided,
    /// its target is the verdict's.
    pub fn into_request(self) -> Request {
        self.request
    }

    /// Begin deciding.
    pub fn start(&mut self, engine: &mut Engine, now: Millis) -> Progress {
        Progress::step(self.run(engine, now))
    }

    fn pending_mut(&mut self) -> Option<&mut Pending> {
        match &mut self.state {
            State::Authenticating(a) => a.pending.as_mut(),
            State::Authorizing(z) => z.pending.as_mut(),
            State::New { .. } | State::Finished => None,
        }
    }

    fn take_pending(&mut self) -> Option<Pending> {
        match &mut self.state {
            State::Authenticating(a) => a.pending.take(),
            State::Authorizing(z) => z.pending.take(),
            State::New { .. } | State::Finished => None,
        }
    }

    /// The leader's callout came back. `rand` is any random number (retry jitter).
    pub fn on_callout(
        &mut self,
        engine: &mut Engine,
        now: Millis,
        response: CalloutResponse,
        rand: u32,
    ) -> Progress {
        let Some(pending) = self.pending_mut() else {
            return Progress::step(self.fail_internal("callout response with no callout pending"));
        };
        let Some(attempt) = pending.led.as_ref().map(|c| c.attempt) else {
            return Progress::step(self.fail_internal("callout response for a waiting request"));
        };
        match webhook::next(&response.result(), pending.resends, attempt) {
            Next::Resend { after_ms } => {
                pending.resend_next = true;
                return Progress::step(Step::RetryAfter(after_ms));
            }
            Next::Retry => {
                pending.resend_next = false;
                return Progress::step(Step::RetryAfter(webhook::backoff_ms(attempt, rand)));
            }
            Next::Use | Next::Fail => {}
        }
        let key = pending.key.clone();
        let shared = match &key {
            CalloutKey::Token(k) => {
                let outcome = token_outcome(&response);
                let stored = match &outcome {
                    TokenOutcome::Error(_) => engine.stale(&engine.token_cache, k, now),
                    _ => {
                        let ttl = ms(engine.settings.token_cache_ttl);
                        engine.token_cache.insert(*k, outcome.clone(), now, ttl);
                        None
                    }
                };
                match stored {
                    Some(stale) => Shared::Token(stale, true),
                    None => Shared::Token(outcome, false),
                }
            }
            CalloutKey::Sar(sar) => match sar_status(&response) {
                Ok(st) => {
                    let st = SarAnswer::from(st);
                    if should_cache(sar, &engine.settings.node_name, self.path()) {
                        let ttl = if st.allowed {
                            engine.settings.authorized_ttl
                        } else {
                            engine.settings.unauthorized_ttl
                        };
                        engine
                            .sar_cache
                            .insert(sar.clone(), st.clone(), now, ms(ttl));
                    }
                    Shared::Sar(Ok(st), false)
                }
                Err(e) => match engine.stale(&engine.sar_cache, sar, now) {
                    Some(st) => Shared::Sar(Ok(st), true),
                    None => Shared::Sar(Err(e), false),
                },
            },
        };
        let waiters = engine.inflight.finish(&key);
        let step = self.resume_with(engine, now, shared.clone());
        let wake = (!waiters.is_empty()).then_some(Wake {
            waiters,
            result: shared,
        });
        Progress { step, wake }
    }

    /// The retry timer fired: send the callout again.
    pub fn on_retry(&mut self, _engine: &mut Engine, _now: Millis) -> Progress {
        let Some(p) = self.pending_mut() else {
            return Progress::step(self.fail_internal("retry with no callout pending"));
        };
        let resend = std::mem::take(&mut p.resend_next);
        let Some(callout) = p.led.as_mut() else {
            return Progress::step(self.fail_internal("retry with no callout pending"));
        };
        if resend {
            p.resends += 1;
        } else {
            callout.attempt += 1;
            p.resends = 0;
        }
        Progress::step(Step::Call(callout.clone()))
    }

    /// The callout this session waited for finished (or its leader went away).
    pub fn on_shared(&mut self, engine: &mut Engine, now: Millis, result: Shared) -> Progress {
        if result == Shared::Abandoned {
            self.take_pending();
            return Progress::step(self.run(engine, now));
        }
        Progress::step(self.resume_with(engine, now, result))
    }

    /// The driver cannot go on with this request (a host call failed): finish it closed, in the
    /// kubelet's shapes (401 while authenticating, 500 while authorizing), with `why` as the
    /// reason. Waiters of a callout it led are woken to lead again.
    pub fn fail(&mut self, engine: &mut Engine, why: &str) -> Progress {
        let wake = self.abandon(engine);
        Progress {
            step: self.fail_internal(why),
            wake,
        }
    }

    /// The request went away (client reset, stream destroyed). If it led a callout, its waiters
    /// must be woken so that one of them leads again; if it waited, it leaves the queue.
    pub fn abandon(&mut self, engine: &mut Engine) -> Option<Wake> {
        let p = self.take_pending()?;
        if p.led.is_some() {
            let waiters = engine.inflight.finish(&p.key);
            (!waiters.is_empty()).then_some(Wake {
                waiters,
                result: Shared::Abandoned,
            })
        } else {
            engine.inflight.leave(&p.key, self.id);
            None
        }
    }

    /// The decoded path, once known.
    fn path(&self) -> &str {
        match &self.state {
            State::Authenticating(a) => &a.target.path,
            State::Authorizing(z) => &z.target.path,
            State::New { .. } | State::Finished => "",
        }
    }

    fn resume_with(&mut self, engine: &mut Engine, now: Millis, shared: Shared) -> Step {
        if self.take_pending().is_none() {
            return self.fail_internal("result with no callout pending");
        }
        match (std::mem::replace(&mut self.state, State::Finished), shared) {
            (State::Authenticating(a), Shared::Token(outcome, stale)) => {
                self.trail.stale |= stale;
                match self.apply_token(engine, a, outcome) {
                    Ok(state) => {
                        self.state = state;
                        self.run(engine, now)
                    }
                    Err(step) => step,
                }
            }
            (State::Authorizing(z), Shared::Sar(result, stale)) => {
                self.trail.stale |= stale;
                match self.apply_sar(engine, z, result, false, stale) {
                    Ok(step) => step,
                    Err(z) => {
                        self.state = State::Authorizing(z);
                        self.run(engine, now)
                    }
                }
            }
            (state, _) => {
                self.state = state;
                self.fail_internal("result of the wrong kind")
            }
        }
    }

    /// Fail closed, in the kubelet's own shapes: an authentication problem is 401, an
    /// authorization problem 500. A callout taken part in is dropped.
    pub(super) fn fail_internal(&mut self, why: &str) -> Step {
        match std::mem::replace(&mut self.state, State::Finished) {
            State::Authorizing(z) => {
                let sub = z.sub().unwrap_or(Subresource::Proxy);
                let check = Check::new(sub, z.target.verb, Decision::Error, why.to_string());
                self.trail.checks.push(check);
                self.finish_error(z, sub)
            }
            State::Authenticating(a) => {
                self.trail.errors.push(why.to_string());
                self.unauthenticated(Some(a.target))
            }
            State::New { .. } | State::Finished => {
                self.trail.errors.push(why.to_string());
                self.unauthenticated(None)
            }
        }
    }

    /// Advance until a callout, a wait, or the end.
    fn run(&mut self, engine: &mut Engine, now: Millis) -> Step {
        loop {
            match std::mem::replace(&mut self.state, State::Finished) {
                State::New { preset } => match self.prepare(engine, preset) {
                    Ok(next) => self.state = next,
                    Err(step) => return step,
                },
                State::Authenticating(a) => match self.authenticate(engine, now, a) {
                    Ok(next) => self.state = next,
                    Err(step) => return step,
                },
                State::Authorizing(z) => match self.authorize(engine, now, z) {
                    Ok(next) => self.state = next,
                    Err(step) => return step,
                },
                State::Finished => return self.fail_internal("session already finished"),
            }
        }
    }

    /// The request's attributes, then the credentials on it (reference 2.8): the client
    /// certificate, the bearer token and the WebSocket token; a user from the certificate (or
    /// given) ends authentication here.
    fn prepare(&mut self, engine: &mut Engine, preset: Option<SharedUser>) -> Result<State, Step> {
        if self.trail.checks.capacity() == 0 {
            self.trail.checks = engine.spare_checks.take();
        }
        let buffer = engine.spare_paths.take();
        let config = &engine.settings;
        self.trail.shadow = config.enforcement == Enforcement::Shadow;
        let target = match request_attributes_in(
            &self.request.method,
            &self.request.target,
            &self.request.headers,
            config.model,
            config.strict_upgrade_verb,
            buffer,
        ) {
            Ok(attributes) => Target {
                path: attributes.path,
                verb: attributes.verb,
                strict_applied: attributes.strict_upgrade_applied,
                subs: attributes.subresources,
            },
            Err(e) => return Err(self.bad_request(path::refusal_body(e))),
        };
        // The client certificate, only from an XFCC header matching the verified peer cert.
        let xfcc_values = self.request.header_values(super::XFCC_HEADER);
        let cert = xfcc::client_cert(
            &xfcc_values,
            self.request.mtls,
            self.request.peer_cert_sha256.as_deref(),
        );
        let cert_der = match cert {
            xfcc::ClientCert::None => None,
            xfcc::ClientCert::Verified(der) => Some(der),
            xfcc::ClientCert::Spoofed(why) => {
                self.trail.spoofed = Some(why);
                None
            }
        };
        if let Some(user) = preset {
            return Ok(authorizing(target, user, AuthnMethod::None));
        }
        if config.x509_enabled {
            if let Some(der) = cert_der {
                match identity::x509::user_from_der(&der, config.model) {
                    Ok(Some(user)) => {
                        let user = SharedUser::new(identity::add_authenticated_group(user));
                        return Ok(authorizing(target, user, AuthnMethod::X509));
                    }
                    Ok(None) => {}
                    Err(e) => self.trail.errors.push(e.to_string()),
                }
            }
        }
        let mut a = Authenticating {
            target,
            at: Credential::Bearer,
            bearer: None,
            ws: None,
            pending: None,
        };
        if config.webhook_authn_enabled {
            let value = self.request.first_header("authorization");
            if let (Some(value), BearerHeader::Token(token)) =
                (value, identity::parse_bearer(value))
            {
                // The token is a slice of the value: its offset is the distance between them.
                let start = (token.as_ptr() as usize).saturating_sub(value.as_ptr() as usize);
                a.bearer = Some(start..start.saturating_add(token.len()));
            }
            let connection = self.request.header_values("connection");
            let upgrade = self.request.header_values("upgrade");
            if identity::is_websocket_request(&connection, &upgrade) {
                let protocols = self.request.header_values("sec-websocket-protocol");
                a.ws = identity::websocket_token(&protocols).transpose();
            }
        }
        Ok(State::Authenticating(a))
    }

    /// Look at the token `a.at`: the next state, or the step to wait on.
    fn authenticate(
        &mut self,
        engine: &mut Engine,
        now: Millis,
        mut a: Authenticating,
    ) -> Result<State, Step> {
        let found = match a.at {
            Credential::Bearer => {
                // The token is read in place from the request: a 1 KB token is never copied.
                let value = self.request.first_header("authorization");
                match a.bearer.clone().and_then(|r| value?.get(r)) {
                    Some(token) => Some(lookup_token(
                        engine,
                        self.id,
                        &mut self.trail,
                        &mut a.pending,
                        now,
                        token,
                    )),
                    None => None,
                }
            }
            Credential::WebSocket => match &a.ws {
                None => return self.authn_over(engine, a.target),
                Some(Err(e)) => {
                    self.trail.errors.push(e.to_string());
                    return self.authn_over(engine, a.target);
                }
                Some(Ok(t)) => Some(lookup_token(
                    engine,
                    self.id,
                    &mut self.trail,
                    &mut a.pending,
                    now,
                    &t.token,
                )),
            },
        };
        match found {
            None => {
                a.at = Credential::WebSocket;
                Ok(State::Authenticating(a))
            }
            Some(Lookup::Blocked(step)) => {
                self.state = State::Authenticating(a);
                Err(step)
            }
            Some(Lookup::Ready(outcome)) => self.apply_token(engine, a, outcome),
            Some(Lookup::Full) => {
                let outcome = TokenOutcome::Error("too many token reviews in flight".into());
                self.apply_token(engine, a, outcome)
            }
        }
    }

    fn apply_token(
        &mut self,
        engine: &Engine,
        mut a: Authenticating,
        outcome: TokenOutcome,
    ) -> Result<State, Step> {
        let via_ws = a.at == Credential::WebSocket;
        let error = match outcome {
            TokenOutcome::Authenticated(user) => {
                let method = if via_ws {
                    AuthnMethod::WebSocket
                } else {
                    AuthnMethod::Bearer
                };
                return Ok(authorizing(a.target, user, method));
            }
            TokenOutcome::Rejected => "invalid bearer token".to_string(),
            TokenOutcome::Error(e) => e,
        };
        self.trail.errors.push(error);
        if via_ws {
            self.authn_over(engine, a.target)
        } else {
            a.at = Credential::WebSocket;
            Ok(State::Authenticating(a))
        }
    }

    /// Authentication is over without a user from a token: anonymous when nothing errored and
    /// it is enabled, else 401. (Users from certificates and tokens passed the group adder when
    /// they were made; a preset user is taken as given; anonymous never gets it.)
    fn authn_over(&mut self, engine: &Engine, target: Target) -> Result<State, Step> {
        if self.trail.errors.is_empty() && engine.settings.anonymous_enabled {
            let user = SharedUser::new(identity::anonymous());
            return Ok(authorizing(target, user, AuthnMethod::Anonymous));
        }
        Err(self.unauthenticated(Some(target)))
    }

    /// Check the subresource `z.next`: the next state, or the step to wait on (or the end).
    fn authorize(
        &mut self,
        engine: &mut Engine,
        now: Millis,
        mut z: Authorizing,
    ) -> Result<State, Step> {
        let Some(sub) = z.sub() else {
            return Err(self.finish_forbidden(engine, z));
        };
        if engine.settings.mode == AuthorizationMode::AlwaysAllow {
            let check = Check::new(sub, z.target.verb, Decision::Allow, "AlwaysAllow");
            self.trail.checks.push(check);
            return Err(self.finish_allowed(z));
        }
        let key = SarKey {
            user: z.user.clone(),
            verb: z.target.verb,
            sub,
        };
        match lookup_sar(engine, self.id, &mut self.trail, &mut z.pending, now, key) {
            Lookup::Blocked(step) => {
                self.state = State::Authorizing(z);
                Err(step)
            }
            Lookup::Ready(status) => match self.apply_sar(engine, z, Ok(status), true, false) {
                Ok(step) => Err(step),
                Err(z) => Ok(State::Authorizing(z)),
            },
            Lookup::Full => {
                // Fail closed as an authorizer error (500), never an allow.
                let why = "too many subject access reviews in flight".to_string();
                let check = Check::new(sub, z.target.verb, Decision::Error, why);
                self.trail.checks.push(check);
                Err(self.finish_error(z, sub))
            }
        }
    }

    /// Record one SubjectAccessReview answer: the final step (`Ok`), or the state to check the
    /// next subresource in (`Err`).
    fn apply_sar(
        &mut self,
        engine: &Engine,
        mut z: Authorizing,
        result: Result<SarAnswer, String>,
        cached: bool,
        stale: bool,
    ) -> Result<Step, Authorizing> {
        let sub = z.sub().unwrap_or(Subresource::Proxy);
        let (decision, reason): (Decision, std::sync::Arc<str>) = match result {
            Err(e) => (Decision::Error, e.into()),
            Ok(st) if st.allowed && st.denied => (
                Decision::Error,
                "webhook subject access review returned both allow and deny response".into(),
            ),
            Ok(st) if st.denied => (Decision::Deny, st.reason),
            Ok(st) if st.allowed => (Decision::Allow, st.reason),
            Ok(st) => (Decision::NoOpinion, st.reason),
        };
        self.trail.checks.push(Check {
            cached,
            stale,
            ..Check::new(sub, z.target.verb, decision, reason)
        });
        match decision {
            Decision::Allow => Ok(self.finish_allowed(z)),
            Decision::Error => Ok(self.finish_error(z, sub)),
            Decision::Deny | Decision::NoOpinion => {
                z.next += 1;
                if z.sub().is_some() {
                    Err(z)
                } else {
                    Ok(self.finish_forbidden(engine, z))
                }
            }
        }
    }
}

fn authorizing(target: Target, user: SharedUser, authn: AuthnMethod) -> State {
    State::Authorizing(Authorizing {
        target,
        user,
        authn,
        next: 0,
        pending: None,
    })
}
