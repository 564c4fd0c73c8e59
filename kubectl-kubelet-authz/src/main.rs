//! `kubectl kubelet-authz`: answers who may reach which kubelet endpoint.
#![forbid(unsafe_code)]

fn main() {}
