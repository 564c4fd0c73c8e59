//! Bounded TTL caches with a caller-supplied clock, and in-flight callout bookkeeping.
