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

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::cache::{InFlight, Join, Millis, TtlCache};
use crate::config::{AuthorizationMode, Config, Enforcement};
use crate::identity::{self, xfcc, BearerHeader, UserInfo};
use crate::kubelet::{self, Subresource, Subresources};
use crate::path;
use crate::review::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec, SubjectAccessReviewStatus,
    TokenReview, SUBJECT_ACCESS_REVIEW_PATH, TOKEN_REVIEW_PATH,
};

/// At most this many attempts per callout (`DefaultAuthWebhookRetryBackoff`: Steps 5).
pub const MAX_ATTEMPTS: u32 = 5;
/// First retry delay (500ms), growing by 1.5 per attempt, with up to 20% jitter.
pub const BASE_RETRY_DELAY_MS: u64 = 500;
/// `shouldCache`: attributes whose lengths add up to this or more are not cached.
pub const SAR_CACHE_KEY_LIMIT: usize = 10_000;

/// An authenticated user shared between the caches and the requests that use it, with its hash
/// computed once (the SubjectAccessReview cache is keyed by it on every request).
#[derive(Debug, Clone)]
pub struct SharedUser {
    user: Arc<UserInfo>,
    hash: u64,
}

impl SharedUser {
    /// Share a user.
    pub fn new(user: UserInfo) -> Self {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        user.hash(&mut h);
        SharedUser {
            user: Arc::new(user),
            hash: h.finish(),
        }
    }

    /// The user.
    pub fn user(&self) -> &UserInfo {
        &self.user
    }

    /// The shared pointer.
    pub fn arc(&self) -> Arc<UserInfo> {
        Arc::clone(&self.user)
    }
}

impl PartialEq for SharedUser {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.user, &other.user) || (self.hash == other.hash && self.user == other.user)
    }
}

impl Eq for SharedUser {}

impl Hash for SharedUser {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// The SubjectAccessReview cache key: the parts of the kubelet's key (the JSON of the whole spec)
/// that vary within one engine. Namespace, group, version, resource and name are fixed per node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SarKey {
    user: SharedUser,
    verb: &'static str,
    sub: Subresource,
}

/// The incoming request, as the driver read it once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// `:method`.
    pub method: String,
    /// `:path`, the request target including the query string.
    pub target: String,
    /// All request headers, names in lower case, in order.
    pub headers: Vec<(String, String)>,
    /// `connection.mtls`.
    pub mtls: bool,
    /// `connection.sha256_peer_certificate_digest` (hex), when the connection has a verified
    /// client certificate.
    pub peer_cert_sha256: Option<String>,
    /// The client address (`source.address`), for audit.
    pub source_address: Option<String>,
    /// An id for the audit event (Envoy's `x-request-id`).
    pub request_id: Option<String>,
}

impl Request {
    /// A request with a method and target and no headers.
    pub fn new(method: &str, target: &str) -> Self {
        Request {
            method: method.to_string(),
            target: target.to_string(),
            ..Request::default()
        }
    }

    /// The request as a proxy hands it over: header names and values as bytes, in order, with
    /// the pseudo-headers `:method` and `:path` (the first of each counts) and Envoy's
    /// `x-request-id` (the audit event's id).
    ///
    /// HTTP lets a header value carry any byte but controls (obs-text), and Envoy passes them on;
    /// the kubelet, in Go, reads them as bytes. Names are lower-cased, and a byte sequence that is
    /// not UTF-8 is read as U+FFFD, which is what Go's JSON encoding sends to the API server when
    /// the kubelet reviews such a token. So a token with such a byte is reviewed and rejected
    /// (401) as by the kubelet; a path with one is refused as non-canonical (400); a
    /// `Connection`/`Upgrade` token with one is not `upgrade`/`websocket`; an
    /// `x-forwarded-client-cert` (Envoy's own, ASCII) is checked against the peer certificate as
    /// always; any other header is not read. Nothing about such bytes can fail or stop the
    /// decision.
    pub fn from_header_bytes<'a>(pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Self {
        let mut request = Request::default();
        for (name, value) in pairs {
            let mut name = String::from_utf8_lossy(name).into_owned();
            name.make_ascii_lowercase();
            let value = String::from_utf8_lossy(value).into_owned();
            match name.as_str() {
                ":method" if request.method.is_empty() => request.method.clone_from(&value),
                ":path" if request.target.is_empty() => request.target.clone_from(&value),
                "x-request-id" if request.request_id.is_none() => {
                    request.request_id = Some(value.clone());
                }
                _ => {}
            }
            request.headers.push((name, value));
        }
        request
    }

    /// Add a header (name lower-cased).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_string()));
        self
    }

    /// Every value of a header, in order.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The first value of a header.
    pub fn first_header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the request asks for a connection upgrade (WebSocket `GET`, SPDY `POST`).
    pub fn is_upgrade(&self) -> bool {
        let connection = self.header_values("connection");
        let has_upgrade_token = connection.iter().any(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        });
        has_upgrade_token && !self.header_values("upgrade").is_empty()
    }
}

/// Which authenticator identified the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthnMethod {
    /// A client certificate (through XFCC matching the verified peer certificate).
    X509,
    /// `Authorization: Bearer`.
    Bearer,
    /// The WebSocket subprotocol token.
    WebSocket,
    /// Anonymous.
    Anonymous,
    /// Nobody (401).
    None,
}

impl AuthnMethod {
    /// Lower-case name, for metrics and audit.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthnMethod::X509 => "x509",
            AuthnMethod::Bearer => "bearer",
            AuthnMethod::WebSocket => "websocket",
            AuthnMethod::Anonymous => "anonymous",
            AuthnMethod::None => "none",
        }
    }
}

/// An authorizer's decision for one subresource check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Allowed.
    Allow,
    /// Explicitly denied (treated as NoOpinion for the fallback).
    Deny,
    /// No opinion.
    NoOpinion,
    /// The authorizer failed (500, no fallback).
    Error,
}

impl Decision {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
            Decision::NoOpinion => "no-opinion",
            Decision::Error => "error",
        }
    }
}

/// One subresource check and its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The subresource checked.
    pub subresource: Subresource,
    /// The verb checked.
    pub verb: String,
    /// The answer.
    pub decision: Decision,
    /// The authorizer's reason (or the error).
    pub reason: String,
    /// Answered from the cache.
    pub cached: bool,
    /// Answered by an expired cache entry because the callout failed (stale-if-error).
    pub stale: bool,
}

/// The final outcome of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Authenticated and authorized.
    Allowed,
    /// 400: a non-canonical path.
    BadRequest,
    /// 401.
    Unauthenticated,
    /// 403.
    Forbidden,
    /// 500: the authorizer failed.
    AuthorizerError,
}

impl Outcome {
    /// Lower-case name, for metrics and audit.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::BadRequest => "bad_request",
            Outcome::Unauthenticated => "unauthenticated",
            Outcome::Forbidden => "forbidden",
            Outcome::AuthorizerError => "authorizer_error",
        }
    }
}

/// Everything known about a finished decision: what to answer, and what to audit and count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The kubelet's outcome.
    pub outcome: Outcome,
    /// Status the kubelet would answer (200 for allowed).
    pub status: u16,
    /// Body the kubelet would answer (empty for allowed).
    pub body: String,
    /// Headers to remove before forwarding: the caller's `Authorization`, and
    /// `Sec-WebSocket-Protocol` when it held only a token.
    pub remove_headers: Vec<String>,
    /// Headers to set before forwarding: `Sec-WebSocket-Protocol` without its token entries.
    pub set_headers: Vec<(String, String)>,
    /// The authenticated user.
    pub user: Option<Arc<UserInfo>>,
    /// How the user was identified.
    pub authn: AuthnMethod,
    /// The authenticator errors, for logs (never the token).
    pub authn_errors: Vec<String>,
    /// The verb authorized.
    pub verb: String,
    /// The decoded path authorized.
    pub path: String,
    /// The request target as received.
    pub target: String,
    /// The subresource checks made, in order.
    pub checks: Vec<Check>,
    /// Whether shadow enforcement forwarded a request that Enforce would refuse.
    pub shadowed: bool,
    /// Whether an expired cache entry answered (stale-if-error).
    pub stale: bool,
    /// Why a client-sent `x-forwarded-client-cert` was ignored.
    pub spoofed_xfcc: Option<String>,
    /// Cache hits and misses while deciding.
    pub cache_hits: u32,
    /// Cache misses while deciding.
    pub cache_misses: u32,
    /// Whether `strictUpgradeVerb` changed the verb to `create`.
    pub strict_upgrade_applied: bool,
}

impl Verdict {
    /// The subresource that decided: the allowing one, or the last tried.
    pub fn deciding_subresource(&self) -> Option<Subresource> {
        self.checks
            .iter()
            .find(|c| c.decision == Decision::Allow)
            .or(self.checks.last())
            .map(|c| c.subresource)
    }
}

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

impl Callout {
    /// The HTTP/2 pseudo-headers and headers to send it with.
    pub fn headers(&self, config: &Config) -> Vec<(String, String)> {
        let mut h = vec![
            (":method".to_string(), "POST".to_string()),
            (":path".to_string(), self.path.to_string()),
            (
                ":authority".to_string(),
                config.api_server.authority.clone(),
            ),
            ("content-type".to_string(), "application/json".to_string()),
            ("accept".to_string(), "application/json".to_string()),
            ("user-agent".to_string(), "kubelet-authz".to_string()),
        ];
        if !config.api_server.bearer_token.is_empty() {
            h.push((
                "authorization".to_string(),
                format!("Bearer {}", config.api_server.bearer_token),
            ));
        }
        h
    }
}

/// What came back for a callout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CalloutResponse {
    /// An HTTP response.
    Http {
        /// Status code.
        status: u16,
        /// Whether it had a `Retry-After` header.
        retry_after: bool,
        /// Body.
        body: Vec<u8>,
    },
    /// No response: timeout, reset, refused, or the proxy could not send it.
    Failed(String),
}

/// A finished lookup, shared with waiters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shared {
    /// A token's outcome.
    /// A token's outcome; `true` when an expired cache entry stood in for a failed review.
    Token(TokenOutcome, bool),
    /// A SubjectAccessReview's outcome (the status, or an error).
    Sar(Result<SubjectAccessReviewStatus, String>, bool),
    /// The leader went away without an answer: look again.
    Abandoned,
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
    fn step(step: Step) -> Self {
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

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum CalloutKey {
    Token([u8; 32]),
    Sar(SarKey),
}

/// Per-VM state shared by all requests: the configuration, caches and in-flight callouts.
#[derive(Debug)]
pub struct Engine {
    config: Config,
    salt: [u8; 32],
    token_cache: TtlCache<[u8; 32], TokenOutcome>,
    sar_cache: TtlCache<SarKey, SubjectAccessReviewStatus>,
    inflight: InFlight<CalloutKey>,
}

impl Engine {
    /// A new engine. `salt` keys the token hashes (the kubelet uses a random per-process HMAC key),
    /// so that tokens are never held in memory as cache keys.
    pub fn new(config: Config, salt: [u8; 32]) -> Self {
        Engine {
            token_cache: TtlCache::new(config.limits.token_cache_size),
            sar_cache: TtlCache::new(config.limits.sar_cache_size),
            inflight: InFlight::new(config.limits.max_inflight, config.limits.max_waiters),
            config,
            salt,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Entries in the token cache.
    pub fn token_cache_len(&self) -> usize {
        self.token_cache.len()
    }

    /// Entries in the SubjectAccessReview cache.
    pub fn sar_cache_len(&self) -> usize {
        self.sar_cache.len()
    }

    /// Callouts in flight.
    pub fn inflight_len(&self) -> usize {
        self.inflight.len()
    }

    fn token_key(&self, token: &str) -> [u8; 32] {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(self.salt);
        h.update(token.as_bytes());
        h.finalize().into()
    }
}

fn ms(d: std::time::Duration) -> Millis {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Start,
    Bearer,
    WebSocket,
    AuthnDone,
    Authz(usize),
    Finished,
}

#[derive(Debug, Clone)]
struct Pending {
    key: CalloutKey,
    callout: Callout,
    leader: bool,
}

/// One request's decision in progress.
#[derive(Debug, Clone)]
pub struct Session {
    id: u32,
    request: Request,
    phase: Phase,
    path: String,
    verb: &'static str,
    strict_applied: bool,
    subs: Option<Subresources>,
    bearer: Option<String>,
    ws: Option<Result<identity::WebSocketToken, identity::WebSocketTokenError>>,
    user: Option<SharedUser>,
    authn: AuthnMethod,
    errors: Vec<String>,
    checks: Vec<Check>,
    pending: Option<Pending>,
    spoofed: Option<String>,
    stale: bool,
    hits: u32,
    misses: u32,
    preset_user: bool,
    shadow: bool,
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
            bearer: None,
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

    /// Whether this session waits for, or leads, a callout.
    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
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
        if !pending.leader {
            return Progress::step(self.fail_internal("callout response for a waiting request"));
        }
        // The kubelet retries transport failures, 500, 429, 504 and Retry-After (reference 2.10).
        // Envoy answers a callout whose cluster cannot be reached (refused, reset) with its own
        // 503, so 503 counts as the transport failure it stands for.
        let retryable = match &response {
            CalloutResponse::Failed(_) => true,
            CalloutResponse::Http {
                status,
                retry_after,
                ..
            } => matches!(status, 429 | 500 | 503 | 504) || *retry_after,
        };
        if retryable && pending.callout.attempt < MAX_ATTEMPTS {
            return Progress::step(Step::RetryAfter(retry_delay(pending.callout.attempt, rand)));
        }
        let shared = match pending.key {
            CalloutKey::Token(k) => {
                let outcome = token_outcome(&response);
                let stored = match &outcome {
                    TokenOutcome::Error(_) => self.stale_token(engine, &k, now),
                    _ => {
                        engine.token_cache.insert(
                            k,
                            outcome.clone(),
                            now,
                            ms(engine.config.token_cache_ttl),
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
                        if should_cache(key, &engine.config.node_name, &self.path) {
                            let ttl = if st.allowed {
                                engine.config.authorized_ttl
                            } else {
                                engine.config.unauthorized_ttl
                            };
                            engine
                                .sar_cache
                                .insert(key.clone(), st.clone(), now, ms(ttl));
                        }
                        Shared::Sar(Ok(st), false)
                    }
                    Err(e) => match self.stale_sar(engine, key, now) {
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
        match self.pending.as_mut() {
            Some(p) if p.leader => {
                p.callout.attempt += 1;
                Progress::step(Step::Call(p.callout.clone()))
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
        if p.leader {
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

    fn stale_token(&self, engine: &Engine, k: &[u8; 32], now: Millis) -> Option<TokenOutcome> {
        let window = ms(engine.config.api_server.stale_if_error);
        if window == 0 {
            return None;
        }
        engine.token_cache.get_stale(k, now, window)
    }

    fn stale_sar(
        &self,
        engine: &Engine,
        key: &SarKey,
        now: Millis,
    ) -> Option<SubjectAccessReviewStatus> {
        let window = ms(engine.config.api_server.stale_if_error);
        if window == 0 {
            return None;
        }
        engine.sar_cache.get_stale(key, now, window)
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

    fn fail_internal(&mut self, why: &str) -> Step {
        // Fail closed, in the kubelet's own shapes: an authentication problem is 401, an
        // authorization problem 500.
        self.pending = None;
        if matches!(self.phase, Phase::Authz(_)) {
            let sub = self.current_sub().unwrap_or(Subresource::Proxy);
            self.checks.push(Check {
                subresource: sub,
                verb: self.verb.to_string(),
                decision: Decision::Error,
                reason: why.to_string(),
                cached: false,
                stale: false,
            });
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
                Phase::Bearer => match self.bearer.clone() {
                    None => self.phase = Phase::WebSocket,
                    Some(token) => match self.lookup_token(engine, now, &token) {
                        Lookup::Blocked(step) => return *step,
                        Lookup::Ready(outcome) => self.apply_token(outcome),
                    },
                },
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
                    if engine.config.mode == AuthorizationMode::AlwaysAllow {
                        self.checks.push(Check {
                            subresource: sub,
                            verb: self.verb.to_string(),
                            decision: Decision::Allow,
                            reason: "AlwaysAllow".into(),
                            cached: false,
                            stale: false,
                        });
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

    /// Path, verb, subresources, and the credentials on the request.
    fn prepare(&mut self, engine: &mut Engine) -> Option<Step> {
        let config = &engine.config;
        self.shadow = config.enforcement == Enforcement::Shadow;
        let path = match path::canonical_path(&self.request.target) {
            Ok(p) => p,
            Err(e) => {
                self.path = self.request.target.clone();
                self.verb = kubelet::verb_for_method(&self.request.method);
                return Some(self.finish(Outcome::BadRequest, 400, path::refusal_body(e)));
            }
        };
        let mut verb = kubelet::verb_for_method(&self.request.method);
        if config.strict_upgrade_verb && kubelet::is_streaming_path(&path) && verb == "get" {
            // A WebSocket GET opens the same stream as a SPDY POST: authorize it as `create`.
            // A GET without upgrade headers to these paths does nothing else, so it gets the same.
            verb = "create";
            self.strict_applied = true;
        }
        self.subs = Some(config.model.subresources(&path));
        self.path = path;
        self.verb = verb;

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
            return None;
        }
        if config.x509_enabled {
            if let Some(der) = cert_der {
                match identity::x509::user_from_der(&der, config.model.version()) {
                    Ok(Some(user)) => {
                        self.user = Some(SharedUser::new(identity::add_authenticated_group(user)));
                        self.authn = AuthnMethod::X509;
                        self.phase = Phase::AuthnDone;
                        return None;
                    }
                    Ok(None) => {}
                    Err(e) => self.errors.push(e.to_string()),
                }
            }
        }
        if config.webhook_authn_enabled {
            match identity::parse_bearer(self.request.first_header("authorization")) {
                BearerHeader::Token(t) => self.bearer = Some(t.to_string()),
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
        None
    }

    fn lookup_token(
        &mut self,
        engine: &mut Engine,
        now: Millis,
        token: &str,
    ) -> Lookup<TokenOutcome> {
        let key = engine.token_key(token);
        if let Some(v) = engine.token_cache.get(&key, now) {
            self.hits += 1;
            return Lookup::Ready(v);
        }
        self.misses += 1;
        let ckey = CalloutKey::Token(key);
        match engine.inflight.join(&ckey, self.id) {
            Join::Full => Lookup::Ready(TokenOutcome::Error(
                "too many token reviews in flight".into(),
            )),
            Join::Waiting => {
                self.pending = Some(Pending {
                    key: ckey,
                    callout: Callout {
                        kind: CalloutKind::TokenReview,
                        path: TOKEN_REVIEW_PATH,
                        body: String::new(),
                        attempt: 0,
                    },
                    leader: false,
                });
                Lookup::Blocked(Box::new(Step::Wait))
            }
            Join::Leader => {
                let body = serde_json::to_string(&TokenReview::request(token)).unwrap_or_default();
                let callout = Callout {
                    kind: CalloutKind::TokenReview,
                    path: TOKEN_REVIEW_PATH,
                    body,
                    attempt: 1,
                };
                self.pending = Some(Pending {
                    key: ckey,
                    callout: callout.clone(),
                    leader: true,
                });
                Lookup::Blocked(Box::new(Step::Call(callout)))
            }
        }
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
        if self.errors.is_empty() && engine.config.anonymous_enabled {
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
        if let Some(st) = engine.sar_cache.get(&key, now) {
            self.hits += 1;
            return Lookup::Ready(st);
        }
        self.misses += 1;
        let spec = sar_spec(&key, &engine.config.node_name);
        let body = serde_json::to_string(&SubjectAccessReview::request(spec)).unwrap_or_default();
        let ckey = CalloutKey::Sar(key);
        match engine.inflight.join(&ckey, self.id) {
            Join::Full => {
                // Fail closed as an authorizer error (500), never an allow.
                let sub = self.current_sub().unwrap_or(Subresource::Proxy);
                self.checks.push(Check {
                    subresource: sub,
                    verb: self.verb.to_string(),
                    decision: Decision::Error,
                    reason: "too many subject access reviews in flight".into(),
                    cached: false,
                    stale: false,
                });
                Lookup::Blocked(Box::new(self.finish_error(sub)))
            }
            Join::Waiting => {
                self.pending = Some(Pending {
                    key: ckey,
                    callout: Callout {
                        kind: CalloutKind::SubjectAccessReview,
                        path: SUBJECT_ACCESS_REVIEW_PATH,
                        body: String::new(),
                        attempt: 0,
                    },
                    leader: false,
                });
                Lookup::Blocked(Box::new(Step::Wait))
            }
            Join::Leader => {
                let callout = Callout {
                    kind: CalloutKind::SubjectAccessReview,
                    path: SUBJECT_ACCESS_REVIEW_PATH,
                    body,
                    attempt: 1,
                };
                self.pending = Some(Pending {
                    key: ckey,
                    callout: callout.clone(),
                    leader: true,
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
            subresource: sub,
            verb: self.verb.to_string(),
            decision,
            reason,
            cached,
            stale,
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

    fn user_name(&self) -> &str {
        self.user.as_ref().map_or("", |u| u.user().name.as_str())
    }

    fn finish_allowed(&mut self) -> Step {
        self.finish(Outcome::Allowed, 200, String::new())
    }

    fn finish_forbidden(&mut self, engine: &Engine) -> Step {
        let tried: Vec<&str> = self.checks.iter().map(|c| c.subresource.as_str()).collect();
        let body = if tried.is_empty() {
            "Authorization error: could not determine attributes for request".to_string()
        } else if engine.config.model.version().has_multi_attribute_authz() {
            format!(
                "Forbidden (user={}, verb={}, resource=nodes, subresource(s)=[{}])\n",
                self.user_name(),
                self.verb,
                tried.join(" ")
            )
        } else {
            format!(
                "Forbidden (user={}, verb={}, resource=nodes, subresource={})",
                self.user_name(),
                self.verb,
                tried.first().copied().unwrap_or("proxy")
            )
        };
        self.finish(Outcome::Forbidden, 403, body)
    }

    fn finish_error(&mut self, sub: Subresource) -> Step {
        let body = format!(
            "Authorization error (user={}, verb={}, resource=nodes, subresource={})",
            self.user_name(),
            self.verb,
            sub.as_str()
        );
        self.finish(Outcome::AuthorizerError, 500, body)
    }

    fn finish(&mut self, outcome: Outcome, status: u16, body: String) -> Step {
        let verdict = self.verdict(outcome, status, body);
        if outcome == Outcome::Allowed || verdict.shadowed {
            Step::Forward(verdict)
        } else {
            Step::Reply(verdict)
        }
    }

    /// The header changes that keep the caller's credentials from the kubelet on a forwarded
    /// request. The kubelet behind the proxy trusts the proxy's own client certificate, so a
    /// caller's credential there is never needed, only leaked: `Authorization` goes whether or not
    /// it authenticated (the kubelet deletes it only when it did), and every bearer-token entry
    /// leaves `Sec-WebSocket-Protocol` whichever credential authenticated (the kubelet strips it
    /// only when it was the one).
    fn credentials_removed(&self) -> (Vec<String>, Vec<(String, String)>) {
        let mut remove = Vec::new();
        let mut set = Vec::new();
        if self.request.first_header("authorization").is_some() {
            remove.push("authorization".to_string());
        }
        let protocols = self.request.header_values("sec-websocket-protocol");
        match identity::without_websocket_tokens(&protocols) {
            Some(rest) if rest.is_empty() => remove.push("sec-websocket-protocol".to_string()),
            Some(rest) => set.push(("sec-websocket-protocol".to_string(), rest)),
            None => {}
        }
        (remove, set)
    }

    fn verdict(&mut self, outcome: Outcome, status: u16, body: String) -> Verdict {
        self.phase = Phase::Finished;
        self.pending = None;
        let shadowed = self.shadow && outcome != Outcome::Allowed;
        let (remove_headers, set_headers) = if outcome == Outcome::Allowed || shadowed {
            self.credentials_removed()
        } else {
            (Vec::new(), Vec::new())
        };
        Verdict {
            outcome,
            status,
            body,
            remove_headers,
            set_headers,
            user: self.user.as_ref().map(SharedUser::arc),
            authn: self.authn,
            authn_errors: self.errors.clone(),
            verb: self.verb.to_string(),
            path: self.path.clone(),
            target: self.request.target.clone(),
            checks: self.checks.clone(),
            shadowed,
            stale: self.stale,
            spoofed_xfcc: self.spoofed.clone(),
            cache_hits: self.hits,
            cache_misses: self.misses,
            strict_upgrade_applied: self.strict_applied,
        }
    }
}

fn retry_delay(attempt: u32, rand: u32) -> Millis {
    // 500ms * 1.5^(attempt-1), plus up to 20% jitter.
    let mut d = BASE_RETRY_DELAY_MS as f64;
    for _ in 1..attempt {
        d *= 1.5;
    }
    let jitter = 0.2 * f64::from(rand) / f64::from(u32::MAX);
    (d * (1.0 + jitter)) as Millis
}

fn token_outcome(response: &CalloutResponse) -> TokenOutcome {
    match response {
        CalloutResponse::Failed(why) => TokenOutcome::Error(format!("token review failed: {why}")),
        CalloutResponse::Http { status, body, .. } => {
            if !(200..300).contains(status) {
                return TokenOutcome::Error(format!("token review failed: status {status}"));
            }
            match serde_json::from_slice::<TokenReview>(body) {
                Err(e) => TokenOutcome::Error(format!("token review: malformed response: {e}")),
                Ok(tr) => {
                    let st = tr.status.unwrap_or_default();
                    if st.authenticated {
                        let user = st
                            .user
                            .as_ref()
                            .map(UserInfo::from_review)
                            .unwrap_or_default();
                        TokenOutcome::Authenticated(SharedUser::new(
                            identity::add_authenticated_group(user),
                        ))
                    } else if !st.error.is_empty() {
                        TokenOutcome::Error(st.error)
                    } else {
                        TokenOutcome::Rejected
                    }
                }
            }
        }
    }
}

fn sar_status(response: &CalloutResponse) -> Result<SubjectAccessReviewStatus, String> {
    match response {
        CalloutResponse::Failed(why) => Err(format!("subject access review failed: {why}")),
        CalloutResponse::Http { status, body, .. } => {
            if !(200..300).contains(status) {
                return Err(format!("subject access review failed: status {status}"));
            }
            serde_json::from_slice::<SubjectAccessReview>(body)
                .map_err(|e| format!("subject access review: malformed response: {e}"))
                .map(|r| r.status.unwrap_or_default())
        }
    }
}

fn should_cache(key: &SarKey, node_name: &str, path: &str) -> bool {
    // `shouldCache`: namespace, verb, group, version, resource, subresource, name and path.
    let total = key.verb.len()
        + "v1".len()
        + "nodes".len()
        + key.sub.as_str().len()
        + node_name.len()
        + path.len();
    total < SAR_CACHE_KEY_LIMIT
}

/// The SubjectAccessReview spec the kubelet sends for a key (reference 3.6).
fn sar_spec(key: &SarKey, node_name: &str) -> SubjectAccessReviewSpec {
    let user = key.user.user();
    SubjectAccessReviewSpec {
        resource_attributes: Some(ResourceAttributes::kubelet(
            key.verb,
            key.sub.as_str(),
            node_name,
        )),
        non_resource_attributes: None,
        user: user.name.clone(),
        groups: user.groups.clone(),
        extra: user.extra.clone(),
        uid: user.uid.clone(),
    }
}

/// Drive a session to its end synchronously, answering each callout with `answer` (for tests,
/// the harness's auto-responder and the kubectl plugin's offline and online `can-i`). Waits
/// cannot happen with a single session; retries are taken at once.
pub fn run_to_end(
    engine: &mut Engine,
    session: &mut Session,
    now: Millis,
    answer: &mut dyn FnMut(&Callout) -> CalloutResponse,
) -> Verdict {
    let mut progress = session.start(engine, now);
    // Each iteration either finishes or sends a callout; bound the loop all the same.
    for _ in 0..64 {
        match progress.step {
            Step::Forward(v) | Step::Reply(v) => return v,
            Step::Call(c) => {
                let response = answer(&c);
                progress = session.on_callout(engine, now, response, 0);
            }
            Step::RetryAfter(_) => progress = session.on_retry(engine, now),
            Step::Wait => break,
        }
    }
    match session.fail_internal("synchronous driver could not finish") {
        Step::Forward(v) | Step::Reply(v) => v,
        // `fail_internal` always finishes; answer a plain 500 if that ever changes.
        _ => session.verdict(Outcome::AuthorizerError, 500, String::new()),
    }
}
