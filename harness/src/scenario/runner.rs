//! Runs a [`Scenario`] against a filter module and reports pass/fail per step.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use kubelet_authz::review::{SubjectAccessReview, TokenReview};
use kubelet_authz::UserInfo;

use super::format::{CallExpect, CallFields, Callouts, Expect, Reply, RequestSpec, Scenario, Step};
use super::{audit_events, describe_call, json_path, parse_duration, AutoResponder, CallKind};
use crate::host::{find_header, CallResponse, Host, HostError, HttpCall, Outcome, Stream};

/// The result of one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepReport {
    /// The step's name.
    pub name: String,
    /// What did not hold (empty: passed).
    pub failures: Vec<String>,
}

impl StepReport {
    /// Whether every expectation held.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// The result of a scenario.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The scenario's name (or file).
    pub name: String,
    /// One entry per step run.
    pub steps: Vec<StepReport>,
    /// An error that stopped the scenario (bad file, refused configuration, trap).
    pub error: Option<String>,
}

impl Report {
    /// Whether the scenario ran to its end and every step passed.
    pub fn passed(&self) -> bool {
        self.error.is_none() && self.steps.iter().all(StepReport::passed)
    }

    /// Number of failed steps (an error counts as one).
    pub fn failed(&self) -> usize {
        self.steps.iter().filter(|s| !s.passed()).count() + usize::from(self.error.is_some())
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "scenario: {}", self.name)?;
        for (i, s) in self.steps.iter().enumerate() {
            let mark = if s.passed() { "PASS" } else { "FAIL" };
            writeln!(f, "  {mark} step {}: {}", i + 1, s.name)?;
            for why in &s.failures {
                writeln!(f, "       - {why}")?;
            }
        }
        if let Some(e) = &self.error {
            writeln!(f, "  ERROR {e}")?;
        }
        let verdict = if self.passed() { "PASS" } else { "FAIL" };
        write!(
            f,
            "{verdict}: {} of {} steps passed",
            self.steps.iter().filter(|s| s.passed()).count(),
            self.steps.len()
        )
    }
}

/// Reads and runs a scenario file with the module at `wasm`.
pub fn run_file(path: &Path, wasm: &Path) -> Report {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return errored(path, format!("cannot read {}: {e}", path.display())),
    };
    let scenario: Scenario = match serde_yaml_ng::from_str(&text) {
        Ok(s) => s,
        Err(e) => return errored(path, format!("{}: {e}", path.display())),
    };
    let base = path.parent().map_or_else(PathBuf::new, Path::to_path_buf);
    let mut report = run(&scenario, &base, wasm);
    if report.name.is_empty() {
        report.name = path.display().to_string();
    }
    report
}

fn errored(path: &Path, error: String) -> Report {
    Report {
        name: path.display().to_string(),
        steps: Vec::new(),
        error: Some(error),
    }
}

/// Runs a parsed scenario; relative file names are taken from `base`.
pub fn run(scenario: &Scenario, base: &Path, wasm: &Path) -> Report {
    let mut report = Report {
        name: scenario.name.clone(),
        ..Report::default()
    };
    let mut runner = match Runner::new(scenario, base, wasm) {
        Ok(Some(r)) => r,
        Ok(None) => return report, // expected configuration error, checked
        Err(e) => {
            report.error = Some(e);
            return report;
        }
    };
    for (i, step) in scenario.steps.iter().enumerate() {
        match runner.step(step) {
            Ok(failures) => report.steps.push(StepReport {
                name: step.name.clone().unwrap_or_else(|| summary(step, i)),
                failures,
            }),
            Err(e) => {
                report.steps.push(StepReport {
                    name: step.name.clone().unwrap_or_else(|| summary(step, i)),
                    failures: vec![e.clone()],
                });
                report.error = Some(format!("stopped at step {}: {e}", i + 1));
                break;
            }
        }
    }
    report
}

fn summary(step: &Step, i: usize) -> String {
    if let Some(r) = &step.request {
        return format!("{} {}", r.method, r.path);
    }
    if let Some(a) = &step.advance {
        return format!("advance {a}");
    }
    if let Some(a) = &step.api_server {
        return format!("API server {a}");
    }
    if step.reply.is_some() {
        return "reply".to_string();
    }
    format!("step {}", i + 1)
}

struct Runner {
    host: Host,
    responder: AutoResponder,
    base: PathBuf,
    streams: HashMap<String, Stream>,
}

fn herr(e: HostError) -> String {
    e.to_string()
}

impl Runner {
    fn new(scenario: &Scenario, base: &Path, wasm: &Path) -> Result<Option<Self>, String> {
        let mut responder = AutoResponder::new();
        for (token, u) in &scenario.tokens {
            responder.add_token(
                token,
                UserInfo {
                    name: u.user.clone(),
                    uid: u.uid.clone(),
                    groups: u.groups.clone(),
                    extra: u.extra.clone(),
                },
            );
        }
        if let Some(text) = &scenario.rbac {
            responder.load_rbac(text, "rbac")?;
        }
        for file in scenario.rbac_file.iter().flat_map(|f| f.values()) {
            let path = base.join(&file);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("rbacFile {}: {e}", path.display()))?;
            responder.load_rbac(&text, &file)?;
        }
        let host = Host::load(wasm).map_err(herr)?;
        let config = match &scenario.config {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        match (host.configure(&config), &scenario.config_error) {
            (Ok(()), None) => {}
            (Ok(()), Some(want)) => {
                return Err(format!(
                    "configuration accepted, expected an error naming {want:?}"
                ))
            }
            (Err(e), Some(want)) => {
                return if e.logs_contain(want) {
                    Ok(None)
                } else {
                    Err(format!(
                        "configuration refused without naming {want:?}: {e}"
                    ))
                };
            }
            (Err(e), None) => return Err(e.to_string()),
        }
        Ok(Some(Runner {
            host,
            responder,
            base: base.to_path_buf(),
            streams: HashMap::new(),
        }))
    }

    fn step(&mut self, step: &Step) -> Result<Vec<String>, String> {
        let calls_before = self.host.calls().len();
        let audits_before = audit_events(&self.host).len();
        let mut current: Option<Stream> = None;
        if let Some(state) = &step.api_server {
            let state = state.trim();
            if state == "down" {
                self.responder.set_down(true);
            } else if state == "up" {
                self.responder.set_down(false);
                self.responder.set_token_error(None);
            } else if let Some(text) = state.strip_prefix("tokenError:") {
                self.responder
                    .set_token_error(Some(text.trim().to_string()));
            } else {
                return Err(format!(
                    "apiServer: expected down, up or tokenError: TEXT, got {state:?}"
                ));
            }
        }
        if let Some(by) = &step.advance {
            let by = parse_duration(by).map_err(|e| format!("advance: {e}"))?;
            self.host.advance_clock(by).map_err(herr)?;
        }
        if let Some(replies) = &step.reply {
            self.apply_replies(replies)?;
        }
        if let Some(r) = &step.request {
            let stream = self.send(r)?;
            if let Some(id) = &r.id {
                self.streams.insert(id.clone(), stream.clone());
            }
            current = Some(stream);
        }
        match &step.callouts {
            Some(Callouts::Mode(m)) if m == "hold" => {}
            Some(Callouts::Mode(m)) if m != "auto" => {
                return Err(format!(
                    "callouts: expected auto, hold or a list, got {m:?}"
                ))
            }
            Some(Callouts::Replies(replies)) => {
                self.apply_replies(replies)?;
                self.drive_all(current.as_ref())?;
            }
            _ => {
                if step.request.is_some() || step.reply.is_some() {
                    self.drive_all(current.as_ref())?;
                }
            }
        }
        let target = match &step.check {
            Some(id) => Some(
                self.streams
                    .get(id)
                    .cloned()
                    .ok_or_else(|| format!("check: no request with id {id:?}"))?,
            ),
            None => current,
        };
        let Some(expect) = &step.expect else {
            return Ok(Vec::new());
        };
        let calls: Vec<HttpCall> = self.host.calls().into_iter().skip(calls_before).collect();
        let audits: Vec<serde_json::Value> = audit_events(&self.host)
            .into_iter()
            .skip(audits_before)
            .collect();
        Ok(self.check(expect, target.as_ref(), &calls, &audits))
    }

    fn drive_all(&self, current: Option<&Stream>) -> Result<(), String> {
        let mut all: Vec<&Stream> = self.streams.values().collect();
        if let Some(c) = current {
            all.push(c);
        }
        self.responder.drive(&self.host, &all).map_err(herr)
    }

    /// Answers callouts in order with `replies`, waiting (ticks) for each to be sent.
    fn apply_replies(&self, replies: &[Reply]) -> Result<(), String> {
        for (i, reply) in replies.iter().enumerate() {
            let call = self.next_call().ok_or_else(|| {
                format!(
                    "reply {}: no callout pending (and no timer to wait for)",
                    i + 1
                )
            })?;
            if reply.fail {
                self.host.fail_call(call.token).map_err(herr)?;
            } else if reply.timeout {
                self.host.advance_clock(call.timeout).map_err(herr)?;
            } else if reply.auto {
                match self.responder.respond(&call) {
                    Some(r) => self.host.reply_call_with(call.token, r),
                    None => self.host.fail_call(call.token),
                }
                .map_err(herr)?;
            } else {
                let status = reply.status.ok_or_else(|| {
                    format!("reply {}: needs status, fail, timeout or auto", i + 1)
                })?;
                let body = match &reply.body {
                    None => String::new(),
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(v) => v.to_string(),
                };
                let headers: Vec<(&String, &String)> = reply.headers.iter().collect();
                let headers: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                self.host
                    .reply_call_with(call.token, CallResponse::new(status, &headers, body))
                    .map_err(herr)?;
            }
        }
        Ok(())
    }

    fn next_call(&self) -> Option<HttpCall> {
        for _ in 0..super::MAX_DRIVE_ROUNDS {
            if let Some(c) = self.host.pending_calls().into_iter().next() {
                return Some(c);
            }
            match super::timer_pending(&self.host) {
                Some(p) => self.host.advance_clock(p).ok()?,
                None => return None,
            }
        }
        None
    }

    fn send(&self, r: &RequestSpec) -> Result<Stream, String> {
        let mut b = self
            .host
            .request()
            .method(&r.method)
            .path(&r.path)
            .authority(r.authority.as_deref().unwrap_or("worker-1:10250"));
        for (k, v) in r.headers.iter().flat_map(|h| h.pairs()) {
            b = b.header(&k, &v);
        }
        let mut mtls = r.mtls;
        let mut digest = r.peer_digest.clone();
        if let Some(file) = &r.client_cert {
            let path = self.base.join(file);
            let pem = std::fs::read_to_string(&path)
                .map_err(|e| format!("clientCert {}: {e}", path.display()))?;
            let der = kubelet_authz::identity::x509::pem_to_der(&pem)
                .map_err(|e| format!("clientCert {}: {e}", path.display()))?;
            let hash = kubelet_authz::identity::x509::sha256_hex(&der);
            b = b.header("x-forwarded-client-cert", &xfcc(&hash, &pem));
            mtls = true;
            digest.get_or_insert(hash);
        }
        b = b.property_bool("connection.mtls", mtls);
        if let Some(d) = digest {
            b = b.property("connection.sha256_peer_certificate_digest", d);
        }
        b = b.property(
            "source.address",
            r.source.clone().unwrap_or_else(|| "10.0.0.1:40000".into()),
        );
        for (k, v) in &r.properties {
            b = b.property(k, v.as_bytes().to_vec());
        }
        b.send_headers(true).map_err(herr)
    }

    fn check(
        &self,
        e: &Expect,
        stream: Option<&Stream>,
        calls: &[HttpCall],
        audits: &[serde_json::Value],
    ) -> Vec<String> {
        let mut f = Vec::new();
        let needs_stream = e.status.is_some()
            || e.body.is_some()
            || e.forwarded.is_some()
            || e.paused.is_some()
            || !e.reply_headers.is_empty()
            || !e.headers.is_empty()
            || !e.headers_absent.is_empty();
        match stream {
            Some(s) => check_stream(e, s, &mut f),
            None if needs_stream => {
                f.push("expectations on a request, but the step has none (use check: ID)".into())
            }
            None => {}
        }
        if let Some(want) = &e.callouts {
            let got: Vec<String> = calls.iter().map(describe_call).collect();
            if want.len() != calls.len() {
                f.push(format!(
                    "callouts: expected {} {want:?}, got {} {got:?}",
                    want.len(),
                    calls.len()
                ));
            } else {
                for (i, (w, c)) in want.iter().zip(calls).enumerate() {
                    if let Err(why) = call_matches(w, c) {
                        f.push(format!("callout {}: {why}", i + 1));
                    }
                }
            }
        }
        if !e.audit.is_empty() {
            match audits.last() {
                None => f.push("audit: no audit event in this step".into()),
                Some(ev) => {
                    for (path, want) in &e.audit {
                        match json_path(ev, path) {
                            Some(got) if got == want => {}
                            got => f.push(format!("audit {path}: expected {want}, got {got:?}")),
                        }
                    }
                }
            }
        }
        if !e.metrics.is_empty() {
            // The filter counts in the VM and flushes on its tick: tick once, without moving the
            // clock, so the counters are up to date.
            if let Err(err) = self.host.tick() {
                f.push(format!("metrics: the tick failed: {err}"));
            }
        }
        for (name, want) in &e.metrics {
            let got = self.host.series(name).unwrap_or(0);
            if got != *want {
                f.push(format!("metric {name}: expected {want}, got {got}"));
            }
        }
        for needle in &e.logs {
            if !self.host.logs_contain(needle) {
                f.push(format!("logs: no line contains {needle:?}"));
            }
        }
        f
    }
}

fn check_stream(e: &Expect, s: &Stream, f: &mut Vec<String>) {
    let outcome = s.outcome();
    if let Some(want) = e.status {
        let got = match &outcome {
            Outcome::Replied(r) => Some(r.status),
            Outcome::Forwarded => Some(200),
            _ => None,
        };
        if got != Some(want) {
            f.push(format!("status: expected {want}, got {outcome:?}"));
        }
    }
    if let Some(want) = &e.body {
        match s.local_reply() {
            Some(r) if r.body_str() == *want => {}
            Some(r) => f.push(format!("body: expected {want:?}, got {:?}", r.body_str())),
            None => f.push(format!(
                "body: expected {want:?}, but there is no local reply ({outcome:?})"
            )),
        }
    }
    for (k, want) in &e.reply_headers {
        match s.local_reply() {
            Some(r) if r.header(k) == Some(want.as_str()) => {}
            Some(r) => f.push(format!(
                "reply header {k}: expected {want:?}, got {:?}",
                r.header(k)
            )),
            None => f.push(format!("reply header {k}: no local reply")),
        }
    }
    if let Some(want) = e.forwarded {
        if (outcome == Outcome::Forwarded) != want {
            f.push(format!("forwarded: expected {want}, got {outcome:?}"));
        }
    }
    if let Some(want) = e.paused {
        if (outcome == Outcome::Paused) != want {
            f.push(format!("paused: expected {want}, got {outcome:?}"));
        }
    }
    let headers = s.forwarded_headers();
    for (k, want) in &e.headers {
        let got = find_header(&headers, k);
        if got != Some(want.as_str()) {
            f.push(format!(
                "forwarded header {k}: expected {want:?}, got {got:?}"
            ));
        }
    }
    for k in &e.headers_absent {
        if let Some(v) = find_header(&headers, k) {
            f.push(format!("forwarded header {k} must be absent, is {v:?}"));
        }
    }
}

fn call_matches(want: &CallExpect, call: &HttpCall) -> Result<(), String> {
    match want {
        CallExpect::Short(s) => {
            let got = describe_call(call);
            if got == *s {
                Ok(())
            } else {
                Err(format!("expected {s:?}, got {got:?}"))
            }
        }
        CallExpect::Full(fields) => full_matches(fields, call),
    }
}

fn full_matches(w: &CallFields, call: &HttpCall) -> Result<(), String> {
    let kind = CallKind::of(call);
    let mut bad = Vec::new();
    if let Some(k) = &w.kind {
        if k != kind.as_str() {
            bad.push(format!("kind {k} != {}", kind.as_str()));
        }
    }
    if let Some(b) = &w.body {
        if *b != call.body_str() {
            bad.push(format!("body {b:?} != {:?}", call.body_str()));
        }
    }
    if let Some(c) = &w.cluster {
        if *c != call.upstream {
            bad.push(format!("cluster {c:?} != {:?}", call.upstream));
        }
    }
    for (k, v) in &w.headers {
        if call.header(k) != Some(v.as_str()) {
            bad.push(format!("header {k}: {v:?} != {:?}", call.header(k)));
        }
    }
    if let Some(t) = &w.token {
        let got = call
            .body_json::<TokenReview>()
            .map(|r| r.spec.token)
            .unwrap_or_default();
        if *t != got {
            bad.push(format!("token {t:?} != {got:?}"));
        }
    }
    if w.verb.is_some() || w.subresource.is_some() || w.user.is_some() || w.groups.is_some() {
        let sar = call.body_json::<SubjectAccessReview>().unwrap_or_default();
        let a = sar.spec.resource_attributes.clone().unwrap_or_default();
        if let Some(v) = &w.verb {
            if *v != a.verb {
                bad.push(format!("verb {v:?} != {:?}", a.verb));
            }
        }
        if let Some(s) = &w.subresource {
            if *s != a.subresource {
                bad.push(format!("subresource {s:?} != {:?}", a.subresource));
            }
        }
        if let Some(u) = &w.user {
            if *u != sar.spec.user {
                bad.push(format!("user {u:?} != {:?}", sar.spec.user));
            }
        }
        if let Some(g) = &w.groups {
            if *g != sar.spec.groups {
                bad.push(format!("groups {g:?} != {:?}", sar.spec.groups));
            }
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(bad.join("; "))
    }
}

/// An Envoy-style `x-forwarded-client-cert` value for a verified certificate (the test-support
/// encoder, re-exported for the scenario tests).
pub use kubelet_authz_test_support::encode::xfcc;
