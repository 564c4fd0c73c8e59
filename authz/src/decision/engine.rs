//! The per-VM [`Engine`] state shared by every request: the configuration, the token and
//! SubjectAccessReview caches, the callouts in flight, and the keys they are stored under.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::cache::{InFlight, Millis, TtlCache};
use crate::config::Config;
use crate::identity::UserInfo;
use crate::kubelet::Subresource;
use crate::review::{ResourceAttributes, SubjectAccessReviewSpec, SubjectAccessReviewStatus};

use super::TokenOutcome;

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

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum CalloutKey {
    Token([u8; 32]),
    Sar(SarKey),
}

/// Per-VM state shared by all requests: the configuration, caches and in-flight callouts.
#[derive(Debug)]
pub struct Engine {
    pub(super) config: Config,
    salt: [u8; 32],
    pub(super) token_cache: TtlCache<[u8; 32], TokenOutcome>,
    pub(super) sar_cache: TtlCache<SarKey, SubjectAccessReviewStatus>,
    pub(super) inflight: InFlight<CalloutKey>,
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

    /// An expired cache entry that may stand in for a failed callout (stale-if-error), when
    /// that is enabled and the entry expired at most that long ago.
    pub(super) fn stale<K: Eq + Hash + Clone, V: Clone>(
        &self,
        cache: &TtlCache<K, V>,
        key: &K,
        now: Millis,
    ) -> Option<V> {
        let window = ms(self.config.api_server.stale_if_error);
        if window == 0 {
            return None;
        }
        cache.get_stale(key, now, window)
    }

    pub(super) fn token_key(&self, token: &str) -> [u8; 32] {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(self.salt);
        h.update(token.as_bytes());
        h.finalize().into()
    }
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
