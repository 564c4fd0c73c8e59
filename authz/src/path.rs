//! The canonical-path check.
