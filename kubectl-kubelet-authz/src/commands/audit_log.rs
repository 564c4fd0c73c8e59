//! `audit-log`: summarise the filter's audit lines. Each written decision is one JSON object in the
//! audit.k8s.io/v1 `Event` shape (level `Metadata`), possibly after Envoy's log prefix on the same
//! line; the JSON object is found in each line and everything else is skipped. Events are grouped
//! by decision, enforcement (`kubelet-authz.io/enforcement: shadow` for shadow runs), user, verb,
//! subresource and node; a shadow run's `forbid` decisions are what enforcing would have refused.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::cli::{AuditLogArgs, Output};
use crate::error::{CmdResult, EXIT_OK};
use crate::output::{document, emit, table, API_VERSION};
use crate::source::read_input;

use kubelet_authz::audit::{
    ANNOTATION_DECISION as DECISION, ANNOTATION_ENFORCEMENT as ENFORCEMENT,
    ANNOTATION_REASON as REASON,
};

/// The first JSON object in a line that looks like an audit event.
pub fn find_event(line: &str) -> Option<Value> {
    let mut from = 0;
    while let Some(off) = line.get(from..).and_then(|s| s.find('{')) {
        let start = from + off;
        let rest = line.get(start..)?;
        let mut it = serde_json::Deserializer::from_str(rest).into_iter::<Value>();
        if let Some(Ok(v)) = it.next() {
            let is_event = v.get("kind").and_then(Value::as_str) == Some("Event")
                || v.get("auditID").is_some();
            if v.is_object() && is_event {
                return Some(v);
            }
        }
        from = start + 1;
    }
    None
}

fn s(v: &Value, path: &[&str]) -> String {
    let mut cur = v;
    for k in path {
        match cur.get(k) {
            Some(n) => cur = n,
            None => return String::new(),
        }
    }
    cur.as_str().map(str::to_string).unwrap_or_default()
}

/// Group key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
struct Key {
    decision: String,
    enforcement: String,
    user: String,
    verb: String,
    subresource: String,
    node: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Group {
    #[serde(flatten)]
    key: Key,
    count: u64,
    status_codes: BTreeMap<String, u64>,
    example_request_uri: String,
    example_reason: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Summary {
    api_version: &'static str,
    kind: &'static str,
    file: String,
    lines: u64,
    events: u64,
    skipped_lines: u64,
    by_decision: BTreeMap<String, u64>,
    shadow_events: u64,
    shadow_would_forbid: u64,
    groups: Vec<Group>,
}

/// `audit-log`.
pub fn run(args: &AuditLogArgs) -> CmdResult {
    let text = read_input(&args.file)?;
    let mut lines = 0;
    let mut skipped = 0;
    let mut by_decision: BTreeMap<String, u64> = BTreeMap::new();
    let mut groups: BTreeMap<Key, Group> = BTreeMap::new();
    let mut shadow_events = 0;
    let mut shadow_forbid = 0;
    for line in text.lines() {
        lines += 1;
        let Some(ev) = find_event(line) else {
            if !line.trim().is_empty() {
                skipped += 1;
            }
            continue;
        };
        let decision = match s(&ev, &["annotations", DECISION]) {
            d if d.is_empty() => "unknown".to_string(),
            d => d,
        };
        let shadow = s(&ev, &["annotations", ENFORCEMENT]).eq_ignore_ascii_case("shadow");
        let enforcement = if shadow { "shadow" } else { "enforce" }.to_string();
        if shadow {
            shadow_events += 1;
            if decision != "allow" {
                shadow_forbid += 1;
            }
        }
        *by_decision.entry(decision.clone()).or_default() += 1;
        let key = Key {
            decision,
            enforcement,
            user: s(&ev, &["user", "username"]),
            verb: s(&ev, &["verb"]),
            subresource: s(&ev, &["objectRef", "subresource"]),
            node: s(&ev, &["objectRef", "name"]),
        };
        let code = ev
            .get("responseStatus")
            .and_then(|r| r.get("code"))
            .and_then(Value::as_i64)
            .map(|c| c.to_string())
            .unwrap_or_else(|| "-".into());
        let g = groups.entry(key.clone()).or_insert_with(|| Group {
            key,
            count: 0,
            status_codes: BTreeMap::new(),
            example_request_uri: s(&ev, &["requestURI"]),
            example_reason: s(&ev, &["annotations", REASON]),
        });
        g.count += 1;
        *g.status_codes.entry(code).or_default() += 1;
    }
    let events: u64 = by_decision.values().sum();
    let mut groups: Vec<Group> = groups.into_values().collect();
    groups.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
    let summary = Summary {
        api_version: API_VERSION,
        kind: "AuditLogSummary",
        file: args.file.clone(),
        lines,
        events,
        skipped_lines: skipped,
        by_decision,
        shadow_events,
        shadow_would_forbid: shadow_forbid,
        groups,
    };
    match args.output {
        Output::Json | Output::Yaml => document(args.output, &summary)?,
        Output::Table | Output::Wide => {
            let decisions: Vec<String> = summary
                .by_decision
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            let mut text = format!(
                "{} events in {} lines ({} other lines skipped): {}\n",
                summary.events,
                summary.lines,
                summary.skipped_lines,
                if decisions.is_empty() {
                    "none".to_string()
                } else {
                    decisions.join(", ")
                }
            );
            if summary.shadow_events > 0 {
                text.push_str(&format!(
                    "shadow run: {} events, {} would have been refused if enforced\n",
                    summary.shadow_events, summary.shadow_would_forbid
                ));
            }
            let mut rows = vec![vec![
                "COUNT".to_string(),
                "DECISION".into(),
                "ENFORCEMENT".into(),
                "USER".into(),
                "VERB".into(),
                "SUBRESOURCE".into(),
                "NODE".into(),
                "CODES".into(),
                "EXAMPLE".into(),
            ]];
            for g in &summary.groups {
                let codes: Vec<String> = g
                    .status_codes
                    .iter()
                    .map(|(c, n)| format!("{c}x{n}"))
                    .collect();
                let mut row = vec![
                    g.count.to_string(),
                    g.key.decision.clone(),
                    g.key.enforcement.clone(),
                    g.key.user.clone(),
                    if g.key.verb.is_empty() {
                        "\"\"".into()
                    } else {
                        g.key.verb.clone()
                    },
                    g.key.subresource.clone(),
                    g.key.node.clone(),
                    codes.join(","),
                    g.example_request_uri.clone(),
                ];
                if args.output == Output::Wide {
                    row.push(g.example_reason.clone());
                }
                rows.push(row);
            }
            if let (Output::Wide, Some(h)) = (args.output, rows.first_mut()) {
                h.push("REASON".into());
            }
            if !summary.groups.is_empty() {
                text.push_str(&table(&rows));
            }
            emit(&text)?;
        }
    }
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::find_event;

    #[test]
    fn finds_the_event_after_a_prefix() {
        let line = r#"[2026][info][wasm] {not json} log: {"kind":"Event","auditID":"a"} trailing"#;
        assert_eq!(find_event(line).unwrap()["auditID"], "a");
        assert!(find_event(r#"{"kind":"Other"}"#).is_none());
        assert!(find_event("no braces").is_none());
        assert!(find_event(r#"{"auditID": "truncated"#).is_none());
        assert_eq!(find_event(r#"{"auditID":"b"}"#).unwrap()["auditID"], "b");
    }
}
