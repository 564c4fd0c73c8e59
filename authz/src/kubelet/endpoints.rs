//! The table of endpoints a kubelet serves on its authenticated port (reference section 5.1),
//! per version: what the attribute tests and the kubectl plugin enumerate.

use super::{is_streaming_path, KubeletVersion};

/// One endpoint a kubelet serves on its authenticated port (reference section 5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// Short name used in tables (`exec`, `metrics/cadvisor`, ...).
    pub name: &'static str,
    /// A representative request path.
    pub path: &'static str,
    /// The HTTP methods its handlers serve.
    pub methods: &'static [&'static str],
    /// First minor version that serves it (by default settings).
    pub since_minor: u32,
    /// What it is for.
    pub description: &'static str,
}

impl Endpoint {
    /// Whether it executes commands or opens a stream into a container ([`is_streaming_path`]).
    pub fn streaming(&self) -> bool {
        is_streaming_path(self.path)
    }
}

/// The kubelet's authenticated endpoints, newest version first-class; `since_minor` says when a
/// path became available by default. Every entry has a row in the attribute tests (a coverage
/// test fails if one does not).
pub const ENDPOINTS: &[Endpoint] = &[
    Endpoint {
        name: "healthz",
        path: "/healthz",
        methods: &["GET"],
        since_minor: 21,
        description: "kubelet health",
    },
    Endpoint {
        name: "healthz/ping",
        path: "/healthz/ping",
        methods: &["GET"],
        since_minor: 21,
        description: "kubelet ping",
    },
    Endpoint {
        name: "healthz/log",
        path: "/healthz/log",
        methods: &["GET"],
        since_minor: 21,
        description: "log health",
    },
    Endpoint {
        name: "healthz/syncloop",
        path: "/healthz/syncloop",
        methods: &["GET"],
        since_minor: 21,
        description: "sync loop health",
    },
    Endpoint {
        name: "pods",
        path: "/pods",
        methods: &["GET"],
        since_minor: 21,
        description: "pods the kubelet runs (desired state)",
    },
    Endpoint {
        name: "runningpods",
        path: "/runningpods/",
        methods: &["GET"],
        since_minor: 21,
        description: "pods the container runtime reports",
    },
    Endpoint {
        name: "configz",
        path: "/configz",
        methods: &["GET"],
        since_minor: 21,
        description: "kubelet configuration",
    },
    Endpoint {
        name: "flagz",
        path: "/flagz",
        methods: &["GET"],
        since_minor: 36,
        description: "kubelet flags",
    },
    Endpoint {
        name: "statusz",
        path: "/statusz",
        methods: &["GET"],
        since_minor: 36,
        description: "kubelet status page",
    },
    Endpoint {
        name: "stats/summary",
        path: "/stats/summary",
        methods: &["GET", "POST"],
        since_minor: 21,
        description: "resource usage summary",
    },
    Endpoint {
        name: "metrics",
        path: "/metrics",
        methods: &["GET"],
        since_minor: 21,
        description: "kubelet metrics",
    },
    Endpoint {
        name: "metrics/cadvisor",
        path: "/metrics/cadvisor",
        methods: &["GET"],
        since_minor: 21,
        description: "cAdvisor container metrics",
    },
    Endpoint {
        name: "metrics/resource",
        path: "/metrics/resource",
        methods: &["GET"],
        since_minor: 21,
        description: "resource metrics",
    },
    Endpoint {
        name: "metrics/probes",
        path: "/metrics/probes",
        methods: &["GET"],
        since_minor: 21,
        description: "probe metrics",
    },
    Endpoint {
        name: "metrics/slis",
        path: "/metrics/slis",
        methods: &["GET"],
        since_minor: 26,
        description: "SLI metrics",
    },
    Endpoint {
        name: "logs",
        path: "/logs/",
        methods: &["GET"],
        since_minor: 21,
        description: "node log files",
    },
    Endpoint {
        name: "containerLogs",
        path: "/containerLogs/ns/pod/ctr",
        methods: &["GET"],
        since_minor: 21,
        description: "container logs",
    },
    Endpoint {
        name: "checkpoint",
        path: "/checkpoint/ns/pod/ctr",
        methods: &["POST"],
        since_minor: 25,
        description: "container checkpoint",
    },
    Endpoint {
        name: "exec",
        path: "/exec/ns/pod/ctr",
        methods: &["GET", "POST"],
        since_minor: 21,
        description: "run a command in a container",
    },
    Endpoint {
        name: "attach",
        path: "/attach/ns/pod/ctr",
        methods: &["GET", "POST"],
        since_minor: 21,
        description: "attach to a container",
    },
    Endpoint {
        name: "run",
        path: "/run/ns/pod/ctr",
        methods: &["POST"],
        since_minor: 21,
        description: "run a command, return its output",
    },
    Endpoint {
        name: "portForward",
        path: "/portForward/ns/pod",
        methods: &["GET", "POST"],
        since_minor: 21,
        description: "forward a port into a pod",
    },
    Endpoint {
        name: "debug/pprof",
        path: "/debug/pprof/profile",
        methods: &["GET"],
        since_minor: 21,
        description: "profiling",
    },
    Endpoint {
        name: "debug/flags/v",
        path: "/debug/flags/v",
        methods: &["PUT"],
        since_minor: 21,
        description: "set log verbosity",
    },
];

/// Endpoints present by default on a kubelet of this version.
pub fn endpoints_for(version: KubeletVersion) -> impl Iterator<Item = &'static Endpoint> {
    ENDPOINTS
        .iter()
        .filter(move |e| version.minor >= e.since_minor)
}
