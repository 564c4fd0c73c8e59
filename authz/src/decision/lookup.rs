//! The cache-or-callout lookups of a session: a token's review and a subresource's
//! SubjectAccessReview, answered from a cache, or by leading or joining the one callout in flight
//! for the same key.

use crate::cache::{Join, Millis};
use crate::review::{SubjectAccessReview, TokenReview};

use super::engine::{sar_spec, CalloutKey, SarKey};
use super::session::{Pending, Trail};
use super::{Callout, CalloutKind, Engine, SarAnswer, Step, TokenOutcome};

/// What a lookup produced (by value: see the session's module doc).
#[allow(clippy::large_enum_variant)]
pub(super) enum Lookup<T> {
    /// The cached answer.
    Ready(T),
    /// Wait for (or send) a callout.
    Blocked(Step),
    /// The in-flight table is full.
    Full,
}

pub(super) fn lookup_token(
    engine: &mut Engine,
    id: u32,
    trail: &mut Trail,
    pending: &mut Option<Pending>,
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
    lookup(
        engine,
        id,
        trail,
        pending,
        cached,
        CalloutKey::Token(key),
        review,
    )
}

pub(super) fn lookup_sar(
    engine: &mut Engine,
    id: u32,
    trail: &mut Trail,
    pending: &mut Option<Pending>,
    now: Millis,
    key: SarKey,
) -> Lookup<SarAnswer> {
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
    lookup(
        engine,
        id,
        trail,
        pending,
        cached,
        CalloutKey::Sar(key),
        review,
    )
}

/// A cached answer, or join the callout for `key`: lead it (`callout` is sent), wait for the
/// session that leads it, or, with the in-flight table full, [`Lookup::Full`].
fn lookup<T>(
    engine: &mut Engine,
    id: u32,
    trail: &mut Trail,
    pending: &mut Option<Pending>,
    cached: Option<T>,
    key: CalloutKey,
    callout: impl FnOnce() -> Callout,
) -> Lookup<T> {
    let sar = u32::from(matches!(key, CalloutKey::Sar(_)));
    if let Some(v) = cached {
        trail.hits += 1;
        trail.sar_hits += sar;
        return Lookup::Ready(v);
    }
    trail.misses += 1;
    trail.sar_misses += sar;
    match engine.inflight.join(&key, id) {
        Join::Full => Lookup::Full,
        Join::Waiting => {
            *pending = Some(Pending {
                key,
                led: None,
                resends: 0,
                resend_next: false,
            });
            Lookup::Blocked(Step::Wait)
        }
        Join::Leader => {
            let callout = callout();
            *pending = Some(Pending {
                key,
                led: Some(callout.clone()),
                resends: 0,
                resend_next: false,
            });
            Lookup::Blocked(Step::Call(callout))
        }
    }
}
