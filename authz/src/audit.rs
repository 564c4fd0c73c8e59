//! audit.k8s.io/v1 Event lines.
