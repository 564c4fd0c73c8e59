//! `suggest-role`: the least-privilege ClusterRole for a set of kubelet endpoints on a v1.36
//! kubelet, without `nodes/proxy`. Subresources come from `KubeletModel::subresources` (the first,
//! fine-grained one), verbs from the HTTP methods the endpoints serve (`kubelet::verb_for_method`).
//! Comments say which endpoints cannot be reached without `nodes/proxy`, and on which older
//! kubelets a granted endpoint still needs it.

use std::collections::{BTreeMap, BTreeSet};

use kubelet_authz::kubelet::{
    self, Endpoint, FeatureGates, KubeletModel, KubeletVersion, Subresource, ENDPOINTS,
};

use crate::cli::SuggestRoleArgs;
use crate::error::{usage, CliError, CmdResult, EXIT_OK};
use crate::output::emit;
use crate::request::{parse_path, parse_verb};

/// The endpoint a path belongs to: same first segment, longest common prefix.
pub fn endpoint_for(path: &str) -> Option<&'static Endpoint> {
    let root = |p: &str| {
        p.get(1..)
            .and_then(|r| r.split('/').next())
            .map(str::to_string)
    };
    let want = root(path)?;
    ENDPOINTS
        .iter()
        .filter(|e| root(e.path).as_deref() == Some(want.as_str()))
        .max_by_key(|e| {
            let common = e
                .path
                .bytes()
                .zip(path.bytes())
                .take_while(|(a, b)| a == b)
                .count();
            (e.path == path, common)
        })
}

/// Format minor versions as ranges: `1.21-1.32, 1.34`.
pub fn ranges(minors: &[u32]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut iter = minors.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        out.push(if start == end {
            format!("1.{start}")
        } else {
            format!("1.{start}-1.{end}")
        });
    }
    out.join(", ")
}

/// On which older kubelets (default gates, and 1.32-1.35 with the gate off) a grant of `sub` does
/// not reach `path`, because they check other subresources (`nodes/proxy`) for it.
pub fn older_gap(path: &str, sub: Subresource) -> Option<String> {
    let reaches = |m: KubeletModel| m.subresources(path).iter().any(|s| s == sub);
    let mut by_default = Vec::new();
    let mut gate_off = Vec::new();
    for minor in kubelet::OLDEST_MINOR..kubelet::GA_MINOR {
        let Ok(v) = KubeletVersion::new(minor) else {
            continue;
        };
        let default = KubeletModel::for_version(v);
        if !reaches(default) {
            by_default.push(minor);
        } else if let Ok(off) = KubeletModel::new(
            v,
            FeatureGates {
                kubelet_fine_grained_authz: Some(false),
                ..FeatureGates::default()
            },
        ) {
            if !reaches(off) {
                gate_off.push(minor);
            }
        }
    }
    match (by_default.is_empty(), gate_off.is_empty()) {
        (true, true) => None,
        (false, true) => Some(format!("kubelets {} check nodes/proxy for it instead", ranges(&by_default))),
        (true, false) => Some(format!(
            "kubelets {} with KubeletFineGrainedAuthz=false check nodes/proxy for it instead",
            ranges(&gate_off)
        )),
        (false, false) => Some(format!(
            "kubelets {} (and {} with KubeletFineGrainedAuthz=false) check nodes/proxy for it instead",
            ranges(&by_default),
            ranges(&gate_off)
        )),
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | ':'))
}

/// The role for `paths`, as YAML with comments; `verbs` restricts the verbs when non-empty.
pub fn role_yaml(name: &str, paths: &[String], verbs: &[String]) -> Result<String, CliError> {
    if !valid_name(name) {
        return Err(usage(format!(
            "--name `{name}` is not a valid ClusterRole name: use lower-case letters, digits, `-`, `.` and `:`"
        )));
    }
    let mut only = BTreeSet::new();
    for v in verbs {
        let parsed = parse_verb(v)?;
        only.insert(parsed.verb);
    }
    let latest = KubeletModel::for_version(KubeletVersion::LATEST);
    // verb set -> subresources
    let mut grants: BTreeMap<BTreeSet<String>, BTreeSet<Subresource>> = BTreeMap::new();
    let mut comments = Vec::new();
    for raw in paths {
        let path = parse_path(raw)?;
        let ep =
            endpoint_for(&path).ok_or_else(|| usage(format!("unknown kubelet path `{raw}`")))?;
        let mut vs: BTreeSet<String> = ep
            .methods
            .iter()
            .map(|m| kubelet::verb_for_method(m).to_string())
            .filter(|v| only.is_empty() || only.contains(v))
            .collect();
        let methods = ep.methods.join(", ");
        if vs.is_empty() {
            comments.push(format!(
                "{path}: not granted: it serves {methods}, none of the verbs asked for"
            ));
            continue;
        }
        let sub = latest
            .subresources(&path)
            .get(0)
            .unwrap_or(Subresource::Proxy);
        if sub == Subresource::Proxy {
            comments.push(format!(
                "{path}: NOT GRANTED: it has no subresource but nodes/proxy on every kubelet version, and nodes/proxy allows exec in every pod{}",
                if ep.streaming() {
                    " (it is itself a command or stream endpoint)"
                } else {
                    ""
                }
            ));
            continue;
        }
        let verb_list: Vec<String> = vs.iter().cloned().collect();
        let mut line = format!("{path}: nodes/{sub} ({})", verb_list.join(", "));
        if let Some(gap) = older_gap(&path, sub) {
            line.push_str(&format!("; {gap}"));
        }
        comments.push(line);
        grants
            .entry(std::mem::take(&mut vs))
            .or_default()
            .insert(sub);
    }
    let q = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""));
    let mut out = String::new();
    out.push_str(&format!(
        "# Least-privilege ClusterRole for kubelet endpoints on kubelet {} (no nodes/proxy).\n",
        KubeletVersion::LATEST
    ));
    for c in &comments {
        out.push_str(&format!("# {c}\n"));
    }
    out.push_str("apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n");
    out.push_str(&format!("  name: {}\n", q(name)));
    if grants.is_empty() {
        out.push_str("rules: []\n");
    } else {
        out.push_str("rules:\n");
        for (vs, subs) in &grants {
            let res: Vec<String> = subs.iter().map(|s| q(&format!("nodes/{s}"))).collect();
            let verbs: Vec<String> = vs.iter().map(|v| q(v)).collect();
            out.push_str("- apiGroups: [\"\"]\n");
            out.push_str(&format!("  resources: [{}]\n", res.join(", ")));
            out.push_str(&format!("  verbs: [{}]\n", verbs.join(", ")));
        }
    }
    Ok(out)
}

/// `suggest-role`.
pub fn run(args: &SuggestRoleArgs) -> CmdResult {
    let yaml = role_yaml(&args.name, &args.paths, &args.verbs)?;
    emit(&yaml)?;
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    #[test]
    fn version_ranges() {
        assert_eq!(
            ranges(&[21, 22, 23, 25, 31, 32]),
            "1.21-1.23, 1.25, 1.31-1.32"
        );
        assert_eq!(ranges(&[]), "");
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            endpoint_for("/debug/pprof/heap").unwrap().name,
            "debug/pprof"
        );
        assert_eq!(
            endpoint_for("/debug/flags/v").unwrap().name,
            "debug/flags/v"
        );
        assert_eq!(
            endpoint_for("/metrics/cadvisor").unwrap().name,
            "metrics/cadvisor"
        );
        assert_eq!(
            endpoint_for("/metrics/other")
                .unwrap()
                .name
                .split('/')
                .next(),
            Some("metrics")
        );
        assert_eq!(endpoint_for("/exec/a/b/c").unwrap().name, "exec");
    }

    #[test]
    fn gaps() {
        assert_eq!(older_gap("/metrics", Subresource::Metrics), None);
        assert!(older_gap("/pods", Subresource::Pods)
            .unwrap()
            .contains("1.21-1.32"));
        assert!(older_gap("/flagz", Subresource::Configz)
            .unwrap()
            .contains("1.21-1.35"));
    }
}
