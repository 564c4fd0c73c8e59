//! Buffers of finished decisions kept for the next ones, so that a decision in the steady state
//! allocates nothing: a finished request's header strings, its decoded path, its checks, an audit
//! line. Each [`Pool`] is bounded in count ([`MAX_SPARE`]) and in size ([`MAX_SPARE_BYTES`] per
//! item: a buffer grown by one large request is dropped, not kept).
//!
//! A kept request still holds the last request's bytes (its token among them), so it is a
//! [`SpareRequest`]: nothing can read it, and the only way to use it is
//! [`Request::from_header_bytes_in`], which overwrites every field.

use super::{Check, Request};

/// The most items each pool keeps.
pub const MAX_SPARE: usize = 16;

/// The largest item (in bytes of capacity) a pool keeps; a larger one is dropped.
pub const MAX_SPARE_BYTES: usize = 16 * 1024;

/// What a pool can keep: cleared of what a later user must not see, and measured.
pub trait Reusable: Default {
    /// Forget the contents (keeping the capacity), or do nothing when no user can read them.
    fn reset(&mut self);
    /// The bytes of capacity it holds.
    fn retained(&self) -> usize;
}

impl Reusable for String {
    fn reset(&mut self) {
        self.clear();
    }
    fn retained(&self) -> usize {
        self.capacity()
    }
}

impl Reusable for Vec<Check> {
    fn reset(&mut self) {
        self.clear();
    }
    fn retained(&self) -> usize {
        self.capacity().saturating_mul(std::mem::size_of::<Check>())
    }
}

/// A finished request kept for its buffers. Opaque: its bytes are the last request's, readable by
/// nobody; [`Request::from_header_bytes_in`] overwrites every field.
#[derive(Default)]
pub struct SpareRequest(pub(super) Request);

impl std::fmt::Debug for SpareRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the contents: they may hold a credential.
        f.write_str("SpareRequest")
    }
}

impl Reusable for SpareRequest {
    fn reset(&mut self) {}
    fn retained(&self) -> usize {
        let r = &self.0;
        let strings = r
            .headers
            .iter()
            .map(|(k, v)| k.capacity().saturating_add(v.capacity()))
            .fold(0usize, usize::saturating_add);
        [
            r.method.capacity(),
            r.target.capacity(),
            r.headers
                .capacity()
                .saturating_mul(std::mem::size_of::<(String, String)>()),
            strings,
            r.request_id.as_ref().map_or(0, String::capacity),
        ]
        .into_iter()
        .fold(0usize, usize::saturating_add)
    }
}

/// A bounded stack of reusable buffers.
#[derive(Debug)]
pub struct Pool<T> {
    items: Vec<T>,
}

impl<T: Reusable> Default for Pool<T> {
    fn default() -> Self {
        Pool::new()
    }
}

impl<T: Reusable> Pool<T> {
    /// An empty pool (its room for [`MAX_SPARE`] items allocated once, here).
    pub fn new() -> Self {
        Pool {
            items: Vec::with_capacity(MAX_SPARE),
        }
    }

    /// A kept item, or a new empty one.
    pub fn take(&mut self) -> T {
        self.items.pop().unwrap_or_default()
    }

    /// Keep `item` for later, reset, unless the pool is full or the item too large.
    pub fn give(&mut self, mut item: T) {
        if self.items.len() < MAX_SPARE && item.retained() <= MAX_SPARE_BYTES {
            item.reset();
            self.items.push(item);
        }
    }

    /// Items kept.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether no item is kept.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_pool_keeps_at_most_max_spare_items_and_none_too_large() {
        let mut p: Pool<String> = Pool::new();
        for _ in 0..MAX_SPARE + 5 {
            p.give(String::with_capacity(8));
        }
        assert_eq!(p.len(), MAX_SPARE);
        let mut q: Pool<String> = Pool::new();
        q.give(String::with_capacity(MAX_SPARE_BYTES + 1));
        assert!(q.is_empty());
        q.give(String::from("secret"));
        let s = q.take();
        assert!(s.is_empty() && s.capacity() >= 6, "reset, capacity kept");
        assert!(q.take().is_empty());
    }

    #[test]
    fn a_spare_request_never_shows_its_contents() {
        let spare =
            SpareRequest(Request::new("GET", "/pods").header("authorization", "Bearer s3cret"));
        assert_eq!(format!("{spare:?}"), "SpareRequest");
    }
}
