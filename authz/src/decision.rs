//! The per-request decision state machine.
