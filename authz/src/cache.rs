//! Bounded TTL caches with a caller-supplied clock (milliseconds), as the kubelet's token cache
//! (reference 2.7) and SubjectAccessReview cache (3.6, an `LRUExpireCache(8192)`) behave, but with
//! every cache capped: when full, the least recently used entry goes.
//!
//! Entries also remember when they expired, so that an opt-in stale-if-error policy can use an
//! answer that expired a short while ago when a callout fails.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

/// Milliseconds on the caller's clock.
pub type Millis = u64;

#[derive(Debug, Clone)]
struct Entry<V> {
    value: V,
    expires_at: Millis,
    tick: u64,
}

/// A capacity-bounded LRU map whose entries expire at a time given on insert.
///
/// Lookups and inserts are O(log n). Expired entries are not returned by [`TtlCache::get`] but stay
/// (until evicted by capacity) so that [`TtlCache::get_stale`] can find them.
#[derive(Debug, Clone)]
pub struct TtlCache<K, V> {
    capacity: usize,
    entries: HashMap<K, Entry<V>>,
    order: BTreeMap<u64, K>,
    next_tick: u64,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    /// A cache holding at most `capacity` entries (at least one).
    pub fn new(capacity: usize) -> Self {
        TtlCache {
            capacity: capacity.max(1),
            entries: HashMap::new(),
            order: BTreeMap::new(),
            next_tick: 0,
        }
    }

    /// Number of entries held (fresh or expired).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn touch(&mut self, key: &K) {
        let tick = self.next_tick;
        if let Some(e) = self.entries.get_mut(key) {
            self.order.remove(&e.tick);
            e.tick = tick;
            self.order.insert(tick, key.clone());
            self.next_tick += 1;
        }
    }

    /// A fresh value (`now < expires_at`), marking it recently used.
    pub fn get(&mut self, key: &K, now: Millis) -> Option<V> {
        let fresh = self.entries.get(key).is_some_and(|e| now < e.expires_at);
        if !fresh {
            return None;
        }
        self.touch(key);
        self.entries.get(key).map(|e| e.value.clone())
    }

    /// A value that expired no more than `window` ago (or is still fresh).
    pub fn get_stale(&self, key: &K, now: Millis, window: Millis) -> Option<V> {
        self.entries
            .get(key)
            .filter(|e| now < e.expires_at.saturating_add(window))
            .map(|e| e.value.clone())
    }

    /// Insert a value living `ttl` milliseconds. A TTL of 0 stores nothing (the kubelet's caches
    /// treat a zero TTL as "disabled").
    pub fn insert(&mut self, key: K, value: V, now: Millis, ttl: Millis) {
        if ttl == 0 {
            self.remove(&key);
            return;
        }
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            self.evict_one(now);
        }
        let tick = self.next_tick;
        self.next_tick += 1;
        if let Some(old) = self.entries.insert(
            key.clone(),
            Entry {
                value,
                expires_at: now.saturating_add(ttl),
                tick,
            },
        ) {
            self.order.remove(&old.tick);
        }
        self.order.insert(tick, key);
    }

    /// Remove an entry.
    pub fn remove(&mut self, key: &K) {
        if let Some(e) = self.entries.remove(key) {
            self.order.remove(&e.tick);
        }
    }

    fn evict_one(&mut self, _now: Millis) {
        if let Some((_, key)) = self.order.pop_first() {
            self.entries.remove(&key);
        }
    }
}

/// Bookkeeping for callouts in flight: per key, the waiters (driver-chosen ids) that asked for
/// the same answer while it was being fetched. Bounded in keys and in waiters per key.
#[derive(Debug, Clone)]
pub struct InFlight<K> {
    max_keys: usize,
    max_waiters: usize,
    map: HashMap<K, Vec<u32>>,
}

/// What happened when a request asked for a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Join {
    /// Nobody was fetching it: the caller is now the leader and must send the callout.
    Leader,
    /// Someone is fetching it: the caller was added to the waiters.
    Waiting,
    /// The bounds are reached: the caller must fail closed.
    Full,
}

impl<K: Eq + Hash + Clone> InFlight<K> {
    /// Bounds: distinct keys, and waiters per key.
    pub fn new(max_keys: usize, max_waiters: usize) -> Self {
        InFlight {
            max_keys: max_keys.max(1),
            max_waiters,
            map: HashMap::new(),
        }
    }

    /// Join the callout for `key` as leader or waiter `id`.
    pub fn join(&mut self, key: &K, id: u32) -> Join {
        if let Some(waiters) = self.map.get_mut(key) {
            if waiters.len() >= self.max_waiters {
                return Join::Full;
            }
            waiters.push(id);
            return Join::Waiting;
        }
        if self.map.len() >= self.max_keys {
            return Join::Full;
        }
        self.map.insert(key.clone(), Vec::new());
        Join::Leader
    }

    /// The callout for `key` finished (or its leader went away): take its waiters.
    pub fn finish(&mut self, key: &K) -> Vec<u32> {
        self.map.remove(key).unwrap_or_default()
    }

    /// Remove a waiter that went away before the answer came.
    pub fn leave(&mut self, key: &K, id: u32) {
        if let Some(w) = self.map.get_mut(key) {
            w.retain(|x| *x != id);
        }
    }

    /// Keys in flight.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_exclusive_at_the_deadline() {
        let mut c = TtlCache::new(4);
        c.insert("a", 1, 1_000, 500);
        assert_eq!(c.get(&"a", 1_499), Some(1));
        assert_eq!(c.get(&"a", 1_500), None);
        assert_eq!(c.get_stale(&"a", 1_500, 100), Some(1));
        assert_eq!(c.get_stale(&"a", 1_600, 100), None);
    }

    #[test]
    fn zero_ttl_stores_nothing() {
        let mut c = TtlCache::new(4);
        c.insert("a", 1, 0, 0);
        assert!(c.is_empty());
        c.insert("a", 1, 0, 10);
        c.insert("a", 2, 0, 0);
        assert_eq!(c.get(&"a", 1), None);
    }

    #[test]
    fn capacity_evicts_least_recently_used() {
        let mut c = TtlCache::new(2);
        c.insert("a", 1, 0, 100);
        c.insert("b", 2, 0, 100);
        assert_eq!(c.get(&"a", 1), Some(1)); // b is now least recently used
        c.insert("c", 3, 2, 100);
        assert_eq!(c.len(), 2);
        assert_eq!(c.get(&"b", 3), None);
        assert_eq!(c.get(&"a", 3), Some(1));
        assert_eq!(c.get(&"c", 3), Some(3));
    }

    #[test]
    fn reinsert_does_not_grow() {
        let mut c = TtlCache::new(2);
        for i in 0..100 {
            c.insert("a", i, i, 10);
        }
        assert_eq!(c.len(), 1);
        assert_eq!(c.get(&"a", 99), Some(99));
    }

    #[test]
    fn flood_stays_bounded() {
        let mut c = TtlCache::new(64);
        for i in 0..10_000u64 {
            c.insert(i, i, i, 1_000_000);
        }
        assert_eq!(c.len(), 64);
        assert_eq!(c.get(&9_999, 10_000), Some(9_999));
        assert_eq!(c.get(&0, 10_000), None);
    }

    #[test]
    fn inflight_leader_waiters_and_bounds() {
        let mut f = InFlight::new(1, 2);
        assert_eq!(f.join(&"k", 1), Join::Leader);
        assert_eq!(f.join(&"k", 2), Join::Waiting);
        assert_eq!(f.join(&"k", 3), Join::Waiting);
        assert_eq!(f.join(&"k", 4), Join::Full);
        assert_eq!(f.join(&"other", 5), Join::Full);
        f.leave(&"k", 2);
        assert_eq!(f.finish(&"k"), vec![3]);
        assert!(f.is_empty());
        assert_eq!(f.join(&"other", 5), Join::Leader);
    }
}
