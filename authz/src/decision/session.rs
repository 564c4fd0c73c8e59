//! The [`Session`] state machine: one request's decision from its headers to a verdict,
//! authenticating (x509, bearer token, WebSocket token, anonymous) and then authorizing one
//! subresource at a time, with callouts shared between identical requests.

use super::{AuthorizationMode, Enforcement};
use crate::cache::{Join, Millis};
use crate::identity::{self, xfcc, BearerHeader, UserInfo};
use crate::kubelet::{self, Subresource, Subresources};
use crate::path;
use crate::review::{SubjectAccessReview, SubjectAccessReviewStatus, TokenReview};

use super::engine::{ms, sar_spec, should_cache, CalloutKey, SarKey};
use super::retry::{sar_status, token_outcome};
use super::{
    request_attributes, AuthnMethod, Callout, CalloutKind, CalloutResponse, Check, Decision,
    Engine, Outcome, Progress, Request, Shared, SharedUser, Step, TokenOutcome, Wake,
};
use crate::webhook::{self, Next};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Start,
    Bearer,
    WebSocket,
    AuthnDone,
    Authz(usize),
    Finished,
}

#[derive(Debug, Clone)]
pub(super) struct Pending {
    key: CalloutKey,
    /// The callout this session leads (`None` while it waits for another session's).
    led: Option<Callout>,
    /// The REST client's resends (after a `Retry-After`) made in the current attempt.
    resends: u32,
    /// Whether the retry scheduled is such a resend (same attempt) rather than a new attempt.
    resend_next: bool,
}

/// One request's decision in progress.
#[derive(Debug, Clone)]
pub struct Session {
    pub(super) id: u32,
    pub(super) request: Request,
    pub(super) phase: Phase,
    pub(super) path: String,
    pub(super) verb: &'static str,
    pub(super) strict_applied: bool,
    pub(super) subs: Option<Subresources>,
    /// Whether the `Authorization` header carries a bearer token (read from the request where
    /// it is used, not copied).
    pub(super) bearer: bool,
    pub(super) ws: Option<Result<identity::WebSocketToken, identity::WebSocketTokenError>>,
    pub(super) user: Option<SharedUser>,
    pub(super) authn: AuthnMethod,
    pub(super) errors: Vec<String>,
    pub(super) checks: Vec<Check>,
    pub(super) pending: Option<Pending>,
    pub(super) spoofed: Option<String>,
    pub(super) stale: bool,
    pub(super) hits: u32,
    pub(super) misses: u32,
    /// Of `hits` and `misses`, the SubjectAccessReview cache's (the rest are the token cache's).
    pub(super) sar_hits: u32,
    pub(super) sar_misses: u32,
    pub(super) preset_user: bool,
    pub(super) shadow: bool,
}

/// Internal: what a lookup produced.
enum Lookup<T> {
    Ready(T),
    Blocked(Box<Step>),
}

impl Session {
    /// A session for request `id` (a driver-chosen id, unique among live sessions).
    pub fn new(id: u32, request: Request) -> Self {
        Session {
            id,
            request,
            phase: Phase::Start,
            path: String::new(),
            verb: "",
            strict_applied: false,
            subs: None,
            bearer: false,
            ws: None,
            user: None,
            authn: AuthnMethod::None,
            errors: Vec::new(),
            checks: Vec::new(),
            pending: None,
            spoofed: None,
            stale: false,
            hits: 0,
            misses: 0,
            sar_hits: 0,
            sar_misses: 0,
            preset_user: false,
            shadow: false,
        }
    }

    /// A session whose user is already known (the kubectl plugin's `can-i --as`): only the
    /// authorization part runs. The group adder is not applied: the user is taken as given.
    pub fn authenticated(id: u32, request: Request, user: UserInfo) -> Self {
        let mut s = Session::new(id, request);
        s.user = Some(SharedUser::new(user));
        s.preset_user = true;
        s
    }

    /// The driver id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Begin deciding.
    pub fn start(&mut self, engine: &mut Engine, now: Millis) -> Progress {
        Progress::step(self.run(engine, now))
    }

    /// The leader's callout came back. `rand` is any random number (retry jitter).
    pub fn on_callout(
        &mut self,
        engine: &mut Engine,
        now: Millis,
        response: CalloutResponse,
        rand: u32,
    ) -> Progress {
        let Some(pending) = self.pending.clone() else {
            return Progress::step(self.fail_internal("callout response with no callout pending"));
        };
        let Some(led) = &pending.led else {
            return Progress::step(self.fail_internal("callout response for a waiting request"));
        };
        match webhook::next(&response.result(), pending.resends, led.attempt) {
            Next::Resend { after_ms } => {
                if let Some(p) = self.pending.as_mut() {
                    p.resend_next = true;
                }
                return Progress::step(Step::RetryAfter(after_ms));
            }
            Next::Retry => {
                if let Some(p) = self.pending.as_mut() {
                    p.resend_next = false;
                }
                return Progress::step(Step::RetryAfter(webhook::backoff_ms(led.attempt, rand)));
            }
            Next::Use | Next::Fail => {}
        }
        let shared = match pending.key {
            CalloutKey::Token(k) => {
                let outcome = token_outcome(&response);
                let stored = match &outcome {
                    TokenOutcome::Error(_) => engine.stale(&engine.token_cache, &k, now),
                    _ => {
                        engine.token_cache.insert(
                            k,
                            outcome.clone(),
                            now,
                            ms(engine.settings.token_cache_ttl),
                        );
                        None
                    }
                };
                match stored {
                    Some(stale) => Shared::Token(stale, true),
                    None => Shared::Token(outcome, false),
                }
            }
            CalloutKey::Sar(ref key) => {
                let status = sar_status(&response);
                match status {
                    Ok(st) => {
                        if should_cache(key, &engine.settings.node_name, &self.path) {
                            let ttl = if st.allowed {
                                engine.settings.authorized_ttl
                            } else {
                                engine.settings.unauthorized_ttl
                            };
                            engine
                                .sar_cache
                                .insert(key.clone(), st.clone(), now, ms(ttl));
                        }
                        Shared::Sar(Ok(st), false)
                    }
                    Err(e) => match engine.stale(&engine.sar_cache, key, now) {
                        Some(st) => Shared::Sar(Ok(st), true),
                        None => Shared::Sar(Err(e), false),
                    },
                }
            }
        };
        let waiters = engine.inflight.finish(&pending.key);
        let step = self.resume_with(engine, now, shared.clone());
        let wake = (!waiters.is_empty()).then_some(Wake {
            waiters,
            result: shared,
        });
        Progress { step, wake }
    }

    /// The retry timer fired: send the callout again.
    pub fn on_retry(&mut self, _engine: &mut Engine, _now: Millis) -> Progress {
        let Some(p) = self.pending.as_mut() else {
            return Progress::step(self.fail_internal("retry with no callout pending"));
        };
        let resend = p.resend_next;
        match p.led.as_mut() {
            Some(callout) => {
                if resend {
                    p.resends += 1;
                } else {
                    callout.attempt += 1;
                    p.resends = 0;
                }
                p.resend_next = false;
                Progress::step(Step::Call(callout.clone()))
            }
            _ => Progress::step(self.fail_internal("retry with no callout pending")),
        }
    }

    /// The callout this session waited for finished (or its leader went away).
    pub fn on_shared(&mut self, engine: &mut Engine, now: Millis, result: Shared) -> Progress {
        if result == Shared::Abandoned {
            self.pending = None;
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
        let p = self.pending.take()?;
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

    fn resume_with(&mut self, engine: &mut Engine, now: Millis, shared: Shared) -> Step {
        let Some(pending) = self.pending.take() else {
            return self.fail_internal("result with no callout pending");
        };
        match (pending.key, shared) {
            (CalloutKey::Token(_), Shared::Token(outcome, stale)) => {
                self.stale |= stale;
                self.apply_token(outcome);
                self.run(engine, now)
            }
            (CalloutKey::Sar(_), Shared::Sar(result, stale)) => {
                self.stale |= stale;
                match self.apply_sar(engine, result, false, stale) {
                    Some(step) => step,
                    None => self.run(engine, now),
                }
            }
            _ => self.fail_internal("result of the wrong kind"),
        }
    }

    pub(super) fn fail_internal(&mut self, why: &str) -> Step {
        // Fail closed, in the kubelet's own shapes: an authentication problem is 401, an
        // authorization problem 500.
        self.pending = None;
        if matches!(self.phase, Phase::Authz(_)) {
            let sub = self.current_sub().unwrap_or(Subresource::Proxy);
            self.checks
                .push(Check::new(sub, self.verb, Decision::Error, why.to_string()));
            self.finish_error(sub)
        } else {
            self.errors.push(why.to_string());
            self.finish(Outcome::Unauthenticated, 401, "Unauthorized".into())
        }
    }

    fn current_sub(&self) -> Option<Subresource> {
        match self.phase {
            Phase::Authz(i) => self.subs.and_then(|s| s.get(i)),
            _ => None,
        }
    }

    /// Advance until a callout, a wait, or the end.
    fn run(&mut self, engine: &mut Engine, now: Millis) -> Step {
        loop {
            match self.phase {
                Phase::Start => {
                    if let Some(step) = self.prepare(engine) {
                        return step;
                    }
                }
                Phase::Bearer => {
                    // The token is read in place from the request, lent out for the lookup and
                    // put back: a 1 KB token is never copied.
                    let request = std::mem::take(&mut self.request);
                    let found = match identity::parse_bearer(request.first_header("authorization"))
                    {
                        BearerHeader::Token(token) if self.bearer => {
                            Some(self.lookup_token(engine, now, token))
                        }
                        _ => None,
                    };
                    self.request = request;
                    match found {
                        None => self.phase = Phase::WebSocket,
                        Some(Lookup::Blocked(step)) => return *step,
                        Some(Lookup::Ready(outcome)) => self.apply_token(outcome),
                    }
                }
                Phase::WebSocket => match self.ws.clone() {
                    None => self.phase = Phase::AuthnDone,
                    Some(Err(e)) => {
                        self.errors.push(e.to_string());
                        self.phase = Phase::AuthnDone;
                    }
                    Some(Ok(t)) => match self.lookup_token(engine, now, &t.token) {
                        Lookup::Blocked(step) => return *step,
                        Lookup::Ready(outcome) => self.apply_token(outcome),
                    },
                },
                Phase::AuthnDone => {
                    if let Some(step) = self.finish_authn(engine) {
                        return step;
                    }
                }
                Phase::Authz(i) => {
                    let Some(sub) = self.subs.and_then(|s| s.get(i)) else {
                        return self.finish_forbidden(engine);
                    };
                    if engine.settings.mode == AuthorizationMode::AlwaysAllow {
                        self.checks.push(Check::new(
                            sub,
                            self.verb,
                            Decision::Allow,
                            "AlwaysAllow".into(),
                        ));
                        return self.finish_allowed();
                    }
                    let Some(key) = self.sar_key(sub) else {
                        return self.fail_internal("authorizing without a user");
                    };
                    match self.lookup_sar(engine, now, key) {
                        Lookup::Blocked(step) => return *step,
                        Lookup::Ready(status) => {
                            if let Some(step) = self.apply_sar(engine, Ok(status), true, false) {
                                return step;
                            }
                        }
                    }
                }
                Phase::Finished => return self.fail_internal("session already finished"),
            }
        }
    }

    /// The request's attributes, then the credentials on it.
    fn prepare(&mut self, engine: &mut Engine) -> Option<Step> {
        let config = &engine.settings;
        self.shadow = config.enforcement == Enforcement::Shadow;
        match request_attributes(
            &self.request.method,
            &self.request.target,
            &self.request.headers,
            config.model,
            config.strict_upgrade_verb,
        ) {
            Ok(attributes) => {
                self.path = attributes.path;
                self.verb = attributes.verb;
                self.strict_applied = attributes.strict_upgrade_applied;
                self.subs = Some(attributes.subresources);
            }
            Err(e) => {
                self.path = self.request.target.clone();
                self.verb = kubelet::verb_for_method(&self.request.method);
                return Some(self.finish(Outcome::BadRequest, 400, path::refusal_body(e)));
            }
        }
        self.credentials(engine);
        None
    }

    /// The credentials on the request (reference 2.8): the client certificate, the bearer token
    /// and the WebSocket token; a user from the certificate ends authentication here.
    fn credentials(&mut self, engine: &Engine) {
        let config = &engine.settings;
        // The client certificate, only from an XFCC header matching the verified peer cert.
        let xfcc_values = self.request.header_values("x-forwarded-client-cert");
        let cert = xfcc::client_cert(
            &xfcc_values,
            self.request.mtls,
            self.request.peer_cert_sha256.as_deref(),
        );
        let cert_der = match cert {
            xfcc::ClientCert::None => None,
            xfcc::ClientCert::Verified(der) => Some(der),
            xfcc::ClientCert::Spoofed(why) => {
                self.spoofed = Some(why);
                None
            }
        };
        if self.preset_user {
            self.phase = Phase::AuthnDone;
            return;
        }
        if config.x509_enabled {
            if let Some(der) = cert_der {
                match identity::x509::user_from_der(&der, config.model) {
                    Ok(Some(user)) => {
                        self.user = Some(SharedUser::new(identity::add_authenticated_group(user)));
                        self.authn = AuthnMethod::X509;
                        self.phase = Phase::AuthnDone;
                        return;
                    }
                    Ok(None) => {}
                    Err(e) => self.errors.push(e.to_string()),
                }
            }
        }
        if config.webhook_authn_enabled {
            match identity::parse_bearer(self.request.first_header("authorization")) {
                BearerHeader::Token(_) => self.bearer = true,
                BearerHeader::NoOpinion | BearerHeader::EmptyTokenWarning => {}
            }
            let connection = self.request.header_values("connection");
            let upgrade = self.request.header_values("upgrade");
            if identity::is_websocket_request(&connection, &upgrade) {
                let protocols = self.request.header_values("sec-websocket-protocol");
                self.ws = identity::websocket_token(&protocols).transpose();
            }
        }
        self.phase = Phase::Bearer;
    }

    fn lookup_token(
        &mut self,
        engine: &mut Engine,
        now: Millis,
        token: &str,
    ) -> Lookup<TokenOutcome> {
        let key = engine.token_key(token);
        let cached = engine.token_cache.get(&key, now);
        let review = || {
            Callout::first(
                CalloutKind::TokenReview,
                serde_json::to_string(&TokenReview::request(token)).unwrap_or_default(),
            )
        };
        let full = |_: &mut Self| {
            Lookup::Ready(TokenOutcome::Error(
                "too many token reviews in flight".into(),
            ))
        };
        self.lookup(engine, cached, CalloutKey::Token(key), review, full)
    }

    fn apply_token(&mut self, outcome: TokenOutcome) {
        let via_ws = self.phase == Phase::WebSocket;
        match outcome {
            TokenOutcome::Authenticated(user) => {
                self.user = Some(user);
                self.authn = if via_ws {
                    AuthnMethod::WebSocket
                } else {
                    AuthnMethod::Bearer
                };
                self.phase = Phase::AuthnDone;
            }
            TokenOutcome::Rejected => {
                self.errors.push("invalid bearer token".into());
                self.phase = if via_ws {
                    Phase::AuthnDone
                } else {
                    Phase::WebSocket
                };
            }
            TokenOutcome::Error(e) => {
                self.errors.push(e);
                self.phase = if via_ws {
                    Phase::AuthnDone
                } else {
                    Phase::WebSocket
                };
            }
        }
    }

    fn finish_authn(&mut self, engine: &Engine) -> Option<Step> {
        // Users from certificates and tokens passed the group adder when they were made (a token's
        // user is cached after it); a preset user is taken as given; anonymous never gets it.
        if self.user.is_some() {
            self.phase = Phase::Authz(0);
            return None;
        }
        if self.errors.is_empty() && engine.settings.anonymous_enabled {
            self.user = Some(SharedUser::new(identity::anonymous()));
            self.authn = AuthnMethod::Anonymous;
            self.phase = Phase::Authz(0);
            return None;
        }
        Some(self.finish(Outcome::Unauthenticated, 401, "Unauthorized".into()))
    }

    fn sar_key(&self, sub: Subresource) -> Option<SarKey> {
        self.user.as_ref().map(|u| SarKey {
            user: u.clone(),
            verb: self.verb,
            sub,
        })
    }

    fn lookup_sar(
        &mut self,
        engine: &mut Engine,
        now: Millis,
        key: SarKey,
    ) -> Lookup<SubjectAccessReviewStatus> {
        let cached = engine.sar_cache.get(&key, now);
        // The review body is built only on a miss (`lookup` calls `review` only then): on the
        // cached path it would be the user's names and groups copied for nothing.
        let spec = cached
            .is_none()
            .then(|| sar_spec(&key, &engine.settings.node_name));
        let review = || {
            Callout::first(
                CalloutKind::SubjectAccessReview,
                spec.map(|spec| {
                    serde_json::to_string(&SubjectAccessReview::request(spec)).unwrap_or_default()
                })
                .unwrap_or_default(),
            )
        };
        // Fail closed as an authorizer error (500), never an allow.
        let full = |s: &mut Self| {
            let sub = s.current_sub().unwrap_or(Subresource::Proxy);
            s.checks.push(Check::new(
                sub,
                s.verb,
                Decision::Error,
                "too many subject access reviews in flight".into(),
            ));
            Lookup::Blocked(Box::new(s.finish_error(sub)))
        };
        self.lookup(engine, cached, CalloutKey::Sar(key), review, full)
    }

    /// A cached answer, or join the callout for `key`: lead it (`callout` is sent), wait for
    /// the session that leads it, or, with the in-flight table full, answer `full`.
    fn lookup<T>(
        &mut self,
        engine: &mut Engine,
        cached: Option<T>,
        key: CalloutKey,
        callout: impl FnOnce() -> Callout,
        full: impl FnOnce(&mut Self) -> Lookup<T>,
    ) -> Lookup<T> {
        let sar = u32::from(matches!(key, CalloutKey::Sar(_)));
        if let Some(v) = cached {
            self.hits += 1;
            self.sar_hits += sar;
            return Lookup::Ready(v);
        }
        self.misses += 1;
        self.sar_misses += sar;
        match engine.inflight.join(&key, self.id) {
            Join::Full => full(self),
            Join::Waiting => {
                self.pending = Some(Pending {
                    key,
                    led: None,
                    resends: 0,
                    resend_next: false,
                });
                Lookup::Blocked(Box::new(Step::Wait))
            }
            Join::Leader => {
                let callout = callout();
                self.pending = Some(Pending {
                    key,
                    led: Some(callout.clone()),
                    resends: 0,
                    resend_next: false,
                });
                Lookup::Blocked(Box::new(Step::Call(callout)))
            }
        }
    }

    /// Record one SubjectAccessReview answer; `Some` when the decision is final.
    fn apply_sar(
        &mut self,
        engine: &Engine,
        result: Result<SubjectAccessReviewStatus, String>,
        cached: bool,
        stale: bool,
    ) -> Option<Step> {
        let Phase::Authz(i) = self.phase else {
            return Some(self.fail_internal("authorization answer outside authorization"));
        };
        let sub = self.current_sub().unwrap_or(Subresource::Proxy);
        let (decision, reason) = match result {
            Err(e) => (Decision::Error, e),
            Ok(st) if st.allowed && st.denied => (
                Decision::Error,
                "webhook subject access review returned both allow and deny response".into(),
            ),
            Ok(st) if st.denied => (Decision::Deny, st.reason),
            Ok(st) if st.allowed => (Decision::Allow, st.reason),
            Ok(st) => (Decision::NoOpinion, st.reason),
        };
        self.checks.push(Check {
            cached,
            stale,
            ..Check::new(sub, self.verb, decision, reason)
        });
        match decision {
            Decision::Allow => Some(self.finish_allowed()),
            Decision::Error => Some(self.finish_error(sub)),
            Decision::Deny | Decision::NoOpinion => {
                self.phase = Phase::Authz(i + 1);
                let more = self.subs.and_then(|s| s.get(i + 1)).is_some();
                (!more).then(|| self.finish_forbidden(engine))
            }
        }
    }
}
