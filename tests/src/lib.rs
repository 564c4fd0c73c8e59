//! End-to-end test support: starting Envoy and the stand-ins, rendering configs.
#![forbid(unsafe_code)]
