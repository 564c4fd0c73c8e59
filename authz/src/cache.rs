//! Bounded TTL caches with a caller-supplied clock (milliseconds), as the kubelet's token cache
//! (reference 2.7) and SubjectAccessReview cache (3.6, an `LRUExpireCache(8192)`) behave, but with
//! every cache capped: when full, the least recently used entry goes.
//!
//! Entries also remember when they expired, so that an opt-in stale-if-error policy can use an
//! answer that expired a short while ago when a callout fails.

use std::collections::HashMap;
use std::hash::Hash;

/// Milliseconds on the caller's clock.
pub type Millis = u64;

const NIL: usize = usize::MAX;

#[derive(Debug, Clone)]
struct Node<K, V> {
    key: K,
    value: V,
    expires_at: Millis,
    prev: usize,
    next: usize,
}

/// A capacity-bounded LRU map whose entries expire at a time given on insert.
///
/// A hash map from key to slot, and the slots in a vector linked most- to least-recently used:
/// lookups, inserts and evictions are O(1), and a hit clones nothing but the value. Expired entries
/// are not returned by [`TtlCache::get`] but stay (until evicted by capacity) so that
/// [`TtlCache::get_stale`] can find them.
#[derive(Debug, Clone)]
pub struct TtlCache<K, V> {
    capacity: usize,
    index: HashMap<K, usize>,
    nodes: Vec<Node<K, V>>,
    free: Vec<usize>,
    head: usize,
    tail: usize,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    /// A cache holding at most `capacity` entries (at least one).
    pub fn new(capacity: usize) -> Self {
        TtlCache {
            capacity: capacity.max(1),
            index: HashMap::new(),
            nodes: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
        }
    }

    /// Number of entries held (fresh or expired).
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn unlink(&mut self, i: usize) {
        let (prev, next) = match self.nodes.get(i) {
            Some(n) => (n.prev, n.next),
            None => return,
        };
        match self.nodes.get_mut(prev) {
            Some(p) => p.next = next,
            None => self.head = next,
        }
        match self.nodes.get_mut(next) {
            Some(n) => n.prev = prev,
            None => self.tail = prev,
        }
    }

    fn push_front(&mut self, i: usize) {
        let old_head = self.head;
        if let Some(n) = self.nodes.get_mut(i) {
            n.prev = NIL;
            n.next = old_head;
        }
        match self.nodes.get_mut(old_head) {
            Some(h) => h.prev = i,
            None => self.tail = i,
        }
        self.head = i;
    }

    /// A fresh value (`now < expires_at`), marking it recently used.
    pub fn get(&mut self, key: &K, now: Millis) -> Option<V> {
        let i = *self.index.get(key)?;
        let fresh = self.nodes.get(i).is_some_and(|n| now < n.expires_at);
        if !fresh {
            return None;
        }
        if self.head != i {
            self.unlink(i);
            self.push_front(i);
        }
        self.nodes.get(i).map(|n| n.value.clone())
    }

    /// A value that expired no more than `window` ago (or is still fresh).
    pub fn get_stale(&self, key: &K, now: Millis, window: Millis) -> Option<V> {
        let i = *self.index.get(key)?;
        self.nodes
            .get(i)
            .filter(|n| now < n.expires_at.saturating_add(window))
            .map(|n| n.value.clone())
    }

    /// Insert a value living `ttl` milliseconds. A TTL of 0 stores nothing (the kubelet's caches
    /// treat a zero TTL as "disabled").
    pub fn insert(&mut self, key: K, value: V, now: Millis, ttl: Millis) {
        if ttl == 0 {
            self.remove(&key);
            return;
        }
        let expires_at = now.saturating_add(ttl);
        if let Some(&i) = self.index.get(&key) {
            if let Some(n) = self.nodes.get_mut(i) {
                n.value = value;
                n.expires_at = expires_at;
            }
            if self.head != i {
                self.unlink(i);
                self.push_front(i);
            }
            return;
        }
        if self.index.len() >= self.capacity {
            self.evict_lru();
        }
        let node = Node {
            key: key.clone(),
            value,
            expires_at,
            prev: NIL,
            next: NIL,
        };
        let i = match self.free.pop() {
            Some(i) => {
                if let Some(slot) = self.nodes.get_mut(i) {
                    *slot = node;
                }
                i
            }
            None => {
                self.nodes.push(node);
                self.nodes.len() - 1
            }
        };
        self.index.insert(key, i);
        self.push_front(i);
    }

    /// Remove an entry.
    pub fn remove(&mut self, key: &K) {
        if let Some(i) = self.index.remove(key) {
            self.unlink(i);
            self.free.push(i);
        }
    }

    fn evict_lru(&mut self) {
        let i = self.tail;
        let Some(key) = self.nodes.get(i).map(|n| n.key.clone()) else {
            return;
        };
        self.index.remove(&key);
        self.unlink(i);
        self.free.push(i);
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
