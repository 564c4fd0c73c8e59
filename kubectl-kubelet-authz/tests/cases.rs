//! The case corpus (`authz/tests/cases/*.yaml`, loaded by `kubelet-authz-test-support`) through
//! the real plugin binary: for every case, `kubectl kubelet-authz can-i --method METHOD TARGET -o json`
//! offline (`--rbac-file` of the case's RBAC files), as the case's identity (`--as`, each group
//! as `--as-group`, `--as-uid`), for the case's kubelet version and node. The plugin must give
//! the engine's answer: allowed exactly when the filter forwards (exit 0, else 1), the status,
//! the exact body (the kubelet's 403 or the filter's 400 with its reason), and the ordered
//! SubjectAccessReviews `(verb, subresource)`.
//!
//! What a command line cannot express is skipped by a rule of [`skip`], each with its reason,
//! and the number run and skipped per rule is asserted, so that coverage stays visible.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;

use assert_cmd::Command;
use kubelet_authz_test_support::corpus::{self, Case};
use serde_json::Value;

/// Why `can-i` cannot run a case, if it cannot.
fn skip(case: &Case) -> Option<&'static str> {
    if case.target.contains('\0') {
        return Some("a command-line argument cannot hold a NUL byte");
    }
    None
}

/// The skip rules and how many cases each must skip (update when the corpus grows).
const SKIPPED: &[(&str, usize)] = &[("a command-line argument cannot hold a NUL byte", 1)];

/// The `can-i` command line for a case.
fn command(case: &Case) -> Command {
    let mut c = Command::cargo_bin("kubectl-kubelet_authz").unwrap();
    // `--method`: the method exactly as sent (a lower-case VERB would be the API verb).
    c.args([
        "can-i",
        "--method",
        &case.method,
        &case.target,
        "-o",
        "json",
    ]);
    c.args(["--as", case.identity.user_name()]);
    for g in case.identity.group_names() {
        c.args(["--as-group", g]);
    }
    let uid = case.identity.uid_for(case.minor());
    if !uid.is_empty() {
        c.args(["--as-uid", uid]);
    }
    c.args([
        "--kubelet-version",
        &case.kubelet,
        "--node",
        &case.node_name,
    ]);
    for f in &case.rbac_files {
        c.arg("--rbac-file").arg(f);
    }
    for (k, v) in &case.headers {
        match k.to_ascii_lowercase().as_str() {
            // The kubelet ignores it; the engine cases prove the filter does too.
            "x-http-method-override" => {}
            "upgrade" if !v.is_empty() => {
                c.arg("--upgrade");
            }
            other => panic!("{}: no `can-i` flag for header `{other}`", case.name),
        }
    }
    c
}

#[test]
fn corpus_through_can_i() {
    let cases = corpus::load().unwrap();
    let mut ran = 0;
    let mut skipped: BTreeMap<&str, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    for case in &cases {
        let ctx = format!("{}: {}", case.file, case.name);
        if let Some(why) = skip(case) {
            *skipped.entry(why).or_default() += 1;
            continue;
        }
        let out = command(case).output().unwrap();
        let code = out.status.code();
        let doc: Value = match serde_json::from_slice(&out.stdout) {
            Ok(d) => d,
            Err(e) => {
                failures.push(format!(
                    "{ctx}: exit {code:?}, no JSON ({e}): {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
                continue;
            }
        };
        let checks: Vec<(String, String)> = doc["checks"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|c| {
                        (
                            c["verb"].as_str().unwrap_or("?").to_string(),
                            c["subresource"].as_str().unwrap_or("?").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let allowed = case.status == 200;
        let mut wrong = Vec::new();
        if code != Some(if allowed { 0 } else { 1 }) {
            wrong.push(format!("exit {code:?}"));
        }
        if doc["allowed"] != allowed {
            wrong.push(format!("allowed {}", doc["allowed"]));
        }
        if doc["status"] != case.status {
            wrong.push(format!("status {}", doc["status"]));
        }
        if let Some(body) = &case.body {
            if doc["response"] != body.as_str() {
                wrong.push(format!("response {}", doc["response"]));
            }
        }
        let refused = case.status == 400 && case.checks.is_empty();
        if doc.get("refused").is_some() != refused {
            wrong.push(format!("refused {:?}", doc.get("refused")));
        }
        if checks != case.checks {
            wrong.push(format!("checks {checks:?}, want {:?}", case.checks));
        }
        if !wrong.is_empty() {
            failures.push(format!("{ctx}: {}", wrong.join("; ")));
        }
        ran += 1;
    }
    eprintln!(
        "corpus: {ran} cases through can-i, {} skipped: {skipped:?}",
        cases.len() - ran
    );
    assert!(
        failures.is_empty(),
        "{} cases answered differently by can-i:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let want: BTreeMap<&str, usize> = SKIPPED.iter().copied().collect();
    assert_eq!(skipped, want, "skipped per rule");
    assert_eq!(ran + want.values().sum::<usize>(), cases.len());
    assert!(ran > 0);
}
