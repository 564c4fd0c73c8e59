//! The per-VM [`Engine`] state shared by every request: the decision settings, the token and
//! SubjectAccessReview caches, the callouts in flight, and the keys they are stored under.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::cache::{InFlight, Millis, TtlCache};
use crate::identity::UserInfo;
use crate::kubelet::Subresource;
use crate::review::{ResourceAttributes, SubjectAccessReviewSpec};

use super::spare::{Pool, SpareRequest};
use super::{Check, Request, SarAnswer, Settings, TokenOutcome, Verdict};

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
pub(super) struct SarKey {
    pub(super) user: SharedUser,
    pub(super) verb: &'static str,
    pub(super) sub: Subresource,
}

/// The token cache's key for a bearer token: a keyed 128-bit PRF of the token
/// ([`Engine::token_key`]); the token itself is never kept.
pub type TokenKey = [u8; 16];

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum CalloutKey {
    Token(TokenKey),
    Sar(SarKey),
}

/// Per-VM state shared by all requests: the configuration, caches and in-flight callouts.
#[derive(Debug)]
pub struct Engine {
    pub(super) settings: Settings,
    /// The SipHash key of [`Engine::token_key`], derived from the per-VM salt.
    token_key: (u64, u64),
    pub(super) token_cache: TtlCache<TokenKey, TokenOutcome>,
    pub(super) sar_cache: TtlCache<SarKey, SarAnswer>,
    pub(super) inflight: InFlight<CalloutKey>,
    /// Decoded paths of finished decisions, for the next ([`Engine::reclaim`]).
    pub(super) spare_paths: Pool<String>,
    /// Check lists of finished decisions.
    pub(super) spare_checks: Pool<Vec<Check>>,
    /// Finished requests, for their buffers.
    spare_requests: Pool<SpareRequest>,
}

impl Engine {
    /// A new engine. `salt` (random per VM, secret) keys the token hashes (the kubelet uses a
    /// random per-process HMAC key), so that tokens are never held in memory as cache keys.
    /// A [`crate::config::Config`] is taken as its settings.
    pub fn new(settings: impl Into<Settings>, salt: [u8; 32]) -> Self {
        let settings = settings.into();
        let limits = settings.limits;
        Engine {
            token_cache: TtlCache::new(limits.token_cache_size),
            sar_cache: TtlCache::new(limits.sar_cache_size),
            inflight: InFlight::new(limits.max_inflight, limits.max_waiters),
            settings,
            token_key: sip_key(&salt),
            spare_paths: Pool::new(),
            spare_checks: Pool::new(),
            spare_requests: Pool::new(),
        }
    }

    /// The buffers of a finished request to read the next one into
    /// ([`Request::from_header_bytes_in`]), or empty ones.
    pub fn spare_request(&mut self) -> SpareRequest {
        self.spare_requests.take()
    }

    /// Keep the buffers of a finished decision (its request, given back by the session, and its
    /// verdict) for the next ones, so that a decision in the steady state allocates nothing.
    /// Bounded: what the pools have no room for is dropped.
    pub fn reclaim(&mut self, mut request: Request, verdict: Verdict) {
        let Verdict {
            path,
            target,
            checks,
            ..
        } = verdict;
        self.spare_paths.give(path);
        self.spare_checks.give(checks);
        // The target moved from the request to the verdict: it goes back with its buffer.
        request.target = target;
        self.spare_requests.give(SpareRequest(request));
    }

    /// The decision settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
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

    /// An expired cache entry that may stand in for a failed callout (stale-if-error), when
    /// that is enabled and the entry expired at most that long ago.
    pub(super) fn stale<K: Eq + Hash + Clone, V: Clone>(
        &self,
        cache: &TtlCache<K, V>,
        key: &K,
        now: Millis,
    ) -> Option<V> {
        let window = ms(self.settings.stale_if_error);
        if window == 0 {
            return None;
        }
        cache.get_stale(key, now, window)
    }

    /// The token cache's key for `token`: SipHash-2-4 with 128-bit output, keyed with 128 bits
    /// derived from the per-VM random salt. The token itself is never stored.
    ///
    /// Why this is safe: the key stands for the token, so two tokens with one key would be one
    /// identity (an impersonation). The key is a keyed PRF output of 128 bits under a secret key
    /// that never leaves the VM and whose outputs are never shown: without the key nobody can
    /// compute a key offline, so a collision can only be hit by chance, about
    /// `cached tokens / 2^128` per presented token. The kubelet keys its token cache with
    /// HMAC-SHA256 under a random per-process key for the same reason (reference 2.7).
    ///
    /// Why SipHash-2-4: measured in wasm on a 1.2 KB ServiceAccount token (docs/PERFORMANCE.md,
    /// `harness/benches/wasm_primitives.rs`), SHA-256 of salt || token (the previous key) cost
    /// about 11 us and HMAC-SHA256 12 us (software SHA-256: no SHA extensions in wasm), keyed
    /// BLAKE3 2.2 us, SipHash-2-4-128 0.7 us and SipHash-1-3-128 0.35 us. SipHash-2-4 is the
    /// variant its authors analyse as a PRF (SipHash-1-3 trades rounds for speed, for hash
    /// tables), at a sixteenth of the cost of SHA-256 here.
    pub(super) fn token_key(&self, token: &str) -> TokenKey {
        use siphasher::sip128::Hasher128 as _;
        use std::hash::Hasher as _;
        let (k0, k1) = self.token_key;
        let mut h = siphasher::sip128::SipHasher24::new_with_keys(k0, k1);
        h.write(token.as_bytes());
        h.finish128().as_bytes()
    }
}

/// The 128-bit SipHash key from the 256-bit salt (both halves folded in, so every salt byte
/// counts).
fn sip_key(salt: &[u8; 32]) -> (u64, u64) {
    let word = |i: usize| {
        let mut w = [0u8; 8];
        if let Some(b) = salt.get(i..i.saturating_add(8)) {
            w.copy_from_slice(b);
        }
        u64::from_le_bytes(w)
    };
    (word(0) ^ word(16), word(8) ^ word(24))
}

pub(super) fn ms(d: std::time::Duration) -> Millis {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub(super) fn should_cache(key: &SarKey, node_name: &str, path: &str) -> bool {
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
pub(super) fn sar_spec(key: &SarKey, node_name: &str) -> SubjectAccessReviewSpec {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;
    use rstest::rstest;

    fn engine(salt: [u8; 32]) -> Engine {
        Engine::new(Settings::with_defaults("node-1"), salt)
    }

    /// A 1.2 KB token of a bound ServiceAccount token's shape (`envoy/bench/token-1k.txt`).
    const LONG: &str = include_str!("../../../envoy/bench/token-1k.txt");

    fn flipped(token: &str, at: usize) -> String {
        let mut b = token.as_bytes().to_vec();
        b[at] = if b[at] == b'A' { b'B' } else { b'A' };
        String::from_utf8(b).unwrap()
    }

    #[rstest]
    #[case::short("tok-alice")]
    #[case::long(LONG.trim_end())]
    fn equal_tokens_have_equal_keys(#[case] token: &str) {
        let e = engine([1; 32]);
        let copy = String::from(token);
        assert_eq!(e.token_key(token), e.token_key(copy.as_str()));
    }

    #[rstest]
    #[case::short_other("tok-alice", "tok-bob".to_string())]
    #[case::short_one_byte("tok-alice", "tok-alicf".to_string())]
    #[case::prefix("tok-alice", "tok-alic".to_string())]
    #[case::empty_vs_one("", "a".to_string())]
    #[case::long_first_byte(LONG.trim_end(), flipped(LONG.trim_end(), 0))]
    #[case::long_middle_byte(LONG.trim_end(), flipped(LONG.trim_end(), 600))]
    #[case::long_last_byte(LONG.trim_end(), flipped(LONG.trim_end(), LONG.trim_end().len() - 1))]
    #[case::long_extended(LONG.trim_end(), format!("{}A", LONG.trim_end()))]
    fn different_tokens_have_different_keys(#[case] a: &str, #[case] b: String) {
        let e = engine([1; 32]);
        assert_ne!(e.token_key(a), e.token_key(&b));
    }

    /// Tokens that are not UTF-8, as a driver reads them (`go_json_lossy`): byte strings that the
    /// kubelet reviews as different tokens have different cache entries.
    #[rstest]
    #[case::cut_short_vs_one_byte(b"tok\xe2\x82X", b"tok\xe2X")]
    #[case::two_vs_one_invalid(b"tok\xff\xffX", b"tok\xffX")]
    #[case::cut_short_vs_replacement(b"tok\xe2\x82X", "tok\u{fffd}X".as_bytes())]
    #[case::lead_vs_lead_lead(b"\xf0\x9f\x98", b"\xf0\x9f")]
    fn tokens_read_per_invalid_byte_have_different_keys(#[case] a: &[u8], #[case] b: &[u8]) {
        let e = engine([1; 32]);
        let (a, b) = (
            super::super::go_json_lossy(a),
            super::super::go_json_lossy(b),
        );
        assert_ne!(a, b);
        assert_ne!(e.token_key(&a), e.token_key(&b));
    }

    #[rstest]
    #[case::first_byte(0)]
    #[case::first_half(9)]
    #[case::second_half(20)]
    #[case::last_byte(31)]
    fn every_salt_byte_changes_the_key(#[case] at: usize) {
        let mut other = [1; 32];
        other[at] = 2;
        let token = LONG.trim_end();
        assert_ne!(
            engine([1; 32]).token_key(token),
            engine(other).token_key(token)
        );
    }

    #[test]
    fn the_key_is_not_the_token() {
        let e = engine([0; 32]);
        let key = e.token_key("0123456789abcdef");
        assert_ne!(&key[..], b"0123456789abcdef");
        assert_eq!(key.len(), 16, "a 128-bit key");
    }
}
