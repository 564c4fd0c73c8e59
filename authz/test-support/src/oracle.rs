//! The kubelet's subresource checks written out by hand from the reference's table (the README's
//! "path (decoded)" table), independently of the engine: the oracle that the engine, harness and
//! end-to-end corpus tests compare the filter with.

/// The subresources a kubelet of minor version `minor` (feature gates at their defaults: the
/// fine-grained gate is on from 1.33) checks for the decoded `path`, in order.
pub fn checks(minor: u32, path: &str) -> Vec<&'static str> {
    let under = |p: &str| path == p || path.starts_with(&format!("{p}/"));
    let coarse = if under("/stats") {
        "stats"
    } else if under("/metrics") {
        "metrics"
    } else if under("/logs") {
        "log"
    } else if minor >= 25 && under("/checkpoint") {
        "checkpoint"
    } else if minor >= 36 && under("/statusz") {
        "statusz"
    } else if minor >= 36 && under("/flagz") {
        "configz"
    } else {
        "proxy"
    };
    let fine = if minor < 33 {
        None
    } else if under("/pods") || under("/runningpods") {
        Some("pods")
    } else if under("/healthz") {
        Some("healthz")
    } else if under("/configz") {
        Some("configz")
    } else if minor < 36 && under("/statusz") {
        Some("statusz")
    } else {
        None
    };
    match fine {
        Some(f) => vec![f, coarse],
        None => vec![coarse],
    }
}

/// [`checks`] for a 1.36 kubelet.
pub fn checks_136(path: &str) -> Vec<&'static str> {
    checks(36, path)
}

/// Go's path resolution as the kubelet's mux applies it (before it redirects): what a
/// non-canonical target would really reach.
pub fn resolved(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}
