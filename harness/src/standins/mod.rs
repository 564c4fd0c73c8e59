//! Stand-in API server and kubelet for tests and the demo.
