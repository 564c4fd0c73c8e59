//! The scenario-file format (YAML), documented in `docs/HARNESS.md`.
//!
//! ```yaml
//! name: seed roles on a 1.36 kubelet
//! config: { nodeName: worker-1, kubeletVersion: "1.36" }
//! tokens:
//!   tok-prom: { user: "system:serviceaccount:monitoring:prometheus", groups: [...] }
//! rbacFile: ../../authz/tests/fixtures/rbac/seed-roles.yaml   # or `rbac: |` inline YAML
//! steps:
//!   - name: prometheus lists pods
//!     request: { method: GET, path: /pods, headers: { authorization: Bearer tok-prom } }
//!     expect: { forwarded: true, callouts: ["TokenReview", "SAR get pods"] }
//!   - advance: 5m
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;

/// A whole scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Scenario {
    /// What the scenario shows.
    #[serde(default)]
    pub name: String,
    /// The filter's plugin configuration (a mapping, sent as JSON; or a JSON string).
    pub config: serde_json::Value,
    /// Expect the configuration to be refused, with a log line containing this text.
    #[serde(default)]
    pub config_error: Option<String>,
    /// The API server's tokens.
    #[serde(default)]
    pub tokens: BTreeMap<String, TokenUser>,
    /// RBAC objects, inline (YAML, several documents).
    #[serde(default)]
    pub rbac: Option<String>,
    /// RBAC files, relative to the scenario file.
    #[serde(default)]
    pub rbac_file: Option<OneOrMany>,
    /// The steps, in order.
    #[serde(default)]
    pub steps: Vec<Step>,
}

/// One string or a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl OneOrMany {
    /// Every value.
    pub fn values(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// Who a token belongs to (the TokenReview `status.user`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenUser {
    /// User name.
    pub user: String,
    /// UID.
    #[serde(default)]
    pub uid: String,
    /// Groups, in order.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Extra attributes.
    #[serde(default)]
    pub extra: BTreeMap<String, Vec<String>>,
}

/// One step: exactly one of `request`, `advance`, `apiServer`, `reply`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Step {
    /// Shown in the report (default: a summary of the step).
    #[serde(default)]
    pub name: Option<String>,
    /// Send a request.
    #[serde(default)]
    pub request: Option<RequestSpec>,
    /// Move the virtual clock (Go duration: `30s`, `5m1s`); timers fire, callouts time out.
    #[serde(default)]
    pub advance: Option<String>,
    /// `down` (every callout fails) or `up`; `tokenError: TEXT` makes TokenReviews answer
    /// `status.error`.
    #[serde(default)]
    pub api_server: Option<String>,
    /// Answer callouts still pending from earlier `hold` requests.
    #[serde(default)]
    pub reply: Option<Vec<Reply>>,
    /// How this step's callouts are answered: `auto` (default), `hold` (leave them pending), or
    /// a list of replies used in order for the callouts as they come, then `auto`.
    #[serde(default)]
    pub callouts: Option<Callouts>,
    /// What must be true after the step.
    #[serde(default)]
    pub expect: Option<Expect>,
    /// The request (by `id`) that `expect` looks at, when not this step's.
    #[serde(default)]
    pub check: Option<String>,
}

/// How callouts are answered.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Callouts {
    /// `auto` or `hold`.
    Mode(String),
    /// Manual replies, in order.
    Replies(Vec<Reply>),
}

/// A manual answer to one callout.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Reply {
    /// HTTP status (with `body`, `headers`).
    #[serde(default)]
    pub status: Option<u16>,
    /// Response body: a string as is, anything else as JSON.
    #[serde(default)]
    pub body: Option<serde_json::Value>,
    /// Response headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// No response (reset).
    #[serde(default)]
    pub fail: bool,
    /// Let the call time out (the clock moves by its timeout).
    #[serde(default)]
    pub timeout: bool,
    /// Answer as the auto-responder would.
    #[serde(default)]
    pub auto: bool,
}

/// A request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RequestSpec {
    /// A name for later `check:` steps.
    #[serde(default)]
    pub id: Option<String>,
    /// `:method` (default GET).
    #[serde(default = "get")]
    pub method: String,
    /// `:path`.
    pub path: String,
    /// `:authority` (default `worker-1:10250`).
    #[serde(default)]
    pub authority: Option<String>,
    /// Headers: a mapping, or a list of `[name, value]` (repeats allowed).
    #[serde(default)]
    pub headers: Option<HeaderList>,
    /// `connection.mtls`.
    #[serde(default)]
    pub mtls: bool,
    /// `connection.sha256_peer_certificate_digest`.
    #[serde(default)]
    pub peer_digest: Option<String>,
    /// A PEM client certificate file (relative to the scenario): sets `mtls`, the digest and an
    /// Envoy-style `x-forwarded-client-cert`.
    #[serde(default)]
    pub client_cert: Option<String>,
    /// `source.address`.
    #[serde(default)]
    pub source: Option<String>,
    /// Other properties, dotted path -> string value.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

fn get() -> String {
    "GET".to_string()
}

/// Request headers.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum HeaderList {
    /// `name: value`.
    Map(BTreeMap<String, String>),
    /// `[name, value]` pairs.
    Pairs(Vec<(String, String)>),
}

impl HeaderList {
    /// The pairs, in order.
    pub fn pairs(&self) -> Vec<(String, String)> {
        match self {
            HeaderList::Map(m) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            HeaderList::Pairs(p) => p.clone(),
        }
    }
}

/// Expectations after a step.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Expect {
    /// The local reply's status (200 for a forwarded request).
    #[serde(default)]
    pub status: Option<u32>,
    /// The local reply's exact body.
    #[serde(default)]
    pub body: Option<String>,
    /// Local reply headers that must be present with these values.
    #[serde(default)]
    pub reply_headers: BTreeMap<String, String>,
    /// Whether the request went upstream.
    #[serde(default)]
    pub forwarded: Option<bool>,
    /// Whether it is still paused (waiting for callouts).
    #[serde(default)]
    pub paused: Option<bool>,
    /// Forwarded request headers that must have these values.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Forwarded request headers that must be absent (stripped).
    #[serde(default)]
    pub headers_absent: Vec<String>,
    /// The callouts sent during this step, in order: `TokenReview`, `SAR <verb> <subresource>`,
    /// or a mapping with `kind`, `verb`, `subresource`, `user`, `groups`, `body`, `headers`.
    #[serde(default)]
    pub callouts: Option<Vec<CallExpect>>,
    /// Fields of this step's (last) audit event, dotted path -> value.
    #[serde(default)]
    pub audit: BTreeMap<String, serde_json::Value>,
    /// Counter values (absolute) after the step, by Prometheus series
    /// (`kubelet_authz_decisions_total{outcome="allowed",subresource="pods"}`), read after a tick
    /// (the filter flushes on it); `0` also matches an undefined series.
    #[serde(default)]
    pub metrics: BTreeMap<String, i64>,
    /// Some log line contains each of these.
    #[serde(default)]
    pub logs: Vec<String>,
}

/// One expected callout.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum CallExpect {
    /// `TokenReview` or `SAR get pods`.
    Short(String),
    /// Field by field.
    Full(CallFields),
}

/// Fields of an expected callout (each optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CallFields {
    /// `TokenReview` or `SubjectAccessReview`.
    #[serde(default)]
    pub kind: Option<String>,
    /// SAR verb.
    #[serde(default)]
    pub verb: Option<String>,
    /// SAR subresource.
    #[serde(default)]
    pub subresource: Option<String>,
    /// SAR user.
    #[serde(default)]
    pub user: Option<String>,
    /// SAR groups.
    #[serde(default)]
    pub groups: Option<Vec<String>>,
    /// TokenReview token.
    #[serde(default)]
    pub token: Option<String>,
    /// The exact body.
    #[serde(default)]
    pub body: Option<String>,
    /// Headers that must be present with these values (`:path`, `:authority`, ...).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Upstream cluster.
    #[serde(default)]
    pub cluster: Option<String>,
}
