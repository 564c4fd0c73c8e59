//! Every message of the filter configuration's parser, pinned: each field of a full configuration
//! replaced in turn by values of every JSON kind (and numbers, strings and lists that each checker
//! refuses), and an unknown key added to every object, before and after the known ones in key
//! order. `fixtures/config/messages.txt` was written by the serde-derive parser (through
//! `serde_path_to_error`) that the hand-written stage one replaced (docs/PERFORMANCE.md "Module
//! size"); the two agree on all of it. `KUBELET_AUTHZ_BLESS=1` rewrites the file after a
//! deliberate change of wording.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use kubelet_authz::config::Config;
use serde_json::{json, Value};

/// Every path of `v`: object keys by name, list items as `#i`.
fn paths(v: &Value, at: &[String], out: &mut Vec<Vec<String>>) {
    out.push(at.to_vec());
    let child = |seg: String| {
        let mut p = at.to_vec();
        p.push(seg);
        p
    };
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                paths(x, &child(k.clone()), out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                paths(x, &child(format!("#{i}")), out);
            }
        }
        _ => {}
    }
}

fn at<'a>(v: &'a mut Value, p: &[String]) -> &'a mut Value {
    p.iter().fold(v, |cur, seg| match seg.strip_prefix('#') {
        Some(i) => &mut cur.as_array_mut().unwrap()[i.parse::<usize>().unwrap()],
        None => cur.as_object_mut().unwrap().get_mut(seg).unwrap(),
    })
}

fn outcome(text: &[u8]) -> String {
    match Config::from_json(text) {
        Ok(_) => "ok".to_string(),
        Err(e) => e.to_string(),
    }
}

fn corpus() -> String {
    let full = json!({
      "nodeName": "worker-1", "kubeletVersion": "1.33",
      "featureGates": { "KubeletFineGrainedAuthz": false, "AllowParsingUserUIDFromCertAuth": true },
      "authentication": { "x509": { "enabled": true }, "webhook": { "enabled": true, "cacheTTL": "1m" }, "anonymous": { "enabled": true } },
      "authorization": { "mode": "AlwaysAllow", "webhook": { "cacheAuthorizedTTL": "10s", "cacheUnauthorizedTTL": "0s" }, "strictUpgradeVerb": false },
      "apiServer": { "cluster": "api", "authority": "k8s", "bearerToken": "t0k", "timeout": "3s", "staleIfError": "1m" },
      "enforcement": "Shadow",
      "audit": { "enabled": false, "policy": {"rules": [
        {"level":"None","users":["a"],"userGroups":["g"],"verbs":["get"],"subresources":["metrics"],"outcomes":["allowed"]},
        {"level":"Metadata"}]} },
      "limits": { "tokenCacheSize": 10, "sarCacheSize": 20, "maxInflight": 5, "maxWaiters": 7 }
    });
    let values = [
        json!(null),
        json!(true),
        json!(false),
        json!(0),
        json!(1),
        json!(-1),
        json!(1.5),
        json!(1e300),
        json!(-0.0),
        json!(2_000_000),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(""),
        json!("x"),
        json!("5m"),
        json!("1.36"),
        json!("Webhook"),
        json!([]),
        json!(["a", 1]),
        json!([null]),
        json!([{}]),
        json!({}),
        json!({"zz": 1}),
        json!({"": 1}),
        json!({"a.b": null}),
    ];
    let mut all = Vec::new();
    paths(&full, &[], &mut all);
    let mut out = String::new();
    for p in &all {
        for value in &values {
            let mut v = full.clone();
            *at(&mut v, p) = value.clone();
            let text = serde_json::to_vec(&v).unwrap();
            out.push_str(&format!(
                "{} <- {value} => {}\n",
                p.join("/"),
                outcome(&text)
            ));
        }
        if at(&mut full.clone(), p).is_object() {
            for key in ["AAA", "zzz", "mid", "x y", ""] {
                let mut v = full.clone();
                at(&mut v, p)
                    .as_object_mut()
                    .unwrap()
                    .insert(key.into(), json!(1));
                let text = serde_json::to_vec(&v).unwrap();
                out.push_str(&format!(
                    "{} + {key:?} => {}\n",
                    p.join("/"),
                    outcome(&text)
                ));
            }
        }
    }
    for raw in [
        &b""[..],
        b"null",
        b"1",
        b"\"s\"",
        b"[]",
        b"{",
        b"{\"nodeName\":\"n\"} x",
        b"{\"nodeName\":\"n\",\"nodeName\":\"m\"}",
    ] {
        out.push_str(&format!(
            "RAW {:?} => {}\n",
            String::from_utf8_lossy(raw),
            outcome(raw)
        ));
    }
    out
}

#[test]
fn every_message_is_as_pinned() {
    let file =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config/messages.txt");
    let got = corpus();
    if std::env::var_os("KUBELET_AUTHZ_BLESS").is_some() {
        std::fs::write(&file, &got).unwrap();
    }
    let want = std::fs::read_to_string(&file).unwrap();
    let diff: Vec<_> = want
        .lines()
        .zip(got.lines())
        .filter(|(w, g)| w != g)
        .take(10)
        .collect();
    assert!(
        diff.is_empty() && want.lines().count() == got.lines().count(),
        "{} lines pinned, {} produced; first differences (pinned, produced):\n{diff:#?}",
        want.lines().count(),
        got.lines().count()
    );
}
