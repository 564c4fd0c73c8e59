//! The case corpus: YAML files under `authz/tests/cases/`, each a set of identities and cases,
//! that every driver runs (the engine natively, the harness through the real `.wasm`, Envoy end to
//! end, and `kubectl kubelet-authz can-i --rbac-file`). A case says who asks (a bearer token or a
//! client certificate), which kubelet version answers, the request (method, target, headers), and
//! what must happen: the status, the exact body when the filter answers, and the ordered
//! SubjectAccessReviews `(verb, subresource)` the kubelet makes.
//!
//! ```yaml
//! rbacFiles: [authz/tests/fixtures/rbac/seed-roles.yaml]   # from the workspace root
//! nodeName: worker-1
//! identities:
//!   prometheus:                     # a bearer token, as the TokenReview answers it
//!     token: prometheus-token
//!     user: system:serviceaccount:monitoring:prometheus
//!     uid: uid-prometheus
//!     groups: [system:serviceaccounts, system:serviceaccounts:monitoring]
//!   cut-short:                      # a token that is not UTF-8: `tokenBytes` is what the client
//!     token: "tok\uFFFD\uFFFDX"       # sends (percent-encoded), `token` what the review carries
//!     tokenBytes: "tok%E2%82X"
//!     user: system:serviceaccount:inventory:pod-lister
//!   alice:                          # a client certificate: CN is the user, every O a group
//!     x509: { cn: alice, o: [observability, dev] }    # (and `uid:`, the UID attribute, from 1.33)
//! cases:
//!   - { identity: prometheus, kubelet: "1.36", method: GET, target: /pods,
//!       status: 200, checks: [[get, pods]] }
//! ```
//!
//! A case may add `envoy:`, what the client sees through the shipped Envoy configuration when
//! that differs from what the filter answers on its own: Envoy normalises the path first
//! (`normalize_path`, `merge_slashes`), or refuses the request itself (escaped slashes, control
//! bytes, a fragment, a target that is not origin- or absolute-form, a lower-case method).
//!
//! ```yaml
//!   - { identity: podlister, kubelet: "1.36", method: GET, target: "//pods",
//!       status: 400, body: "Bad Request: non-canonical path: ...\n", checks: [],
//!       envoy: { status: 200, checks: [[get, pods]], forwardedAs: /pods } }
//! ```
//!
//! Everything `can-i` needs is in a case and its file: the RBAC files, the user, the groups (as
//! `--as-group`; the kubelet's group adder appends `system:authenticated`), the method, the path
//! and the kubelet version.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// One corpus file.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CorpusFile {
    /// The RBAC files (multi-document YAML) that decide, relative to the workspace root.
    pub rbac_files: Vec<String>,
    /// The node the kubelet runs as (the SubjectAccessReviews' `name`).
    pub node_name: String,
    /// The identities the cases use, by name.
    pub identities: BTreeMap<String, Identity>,
    /// The cases.
    pub cases: Vec<RawCase>,
}

/// Who sends a request.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Identity {
    /// A bearer token (`Authorization: Bearer <token>`), as the TokenReview carries it.
    #[serde(default)]
    pub token: Option<String>,
    /// With `token`: the token's bytes as the client sends them, percent-encoded (`tok%E2%82X`),
    /// when they are not `token` itself: a token that is not UTF-8, of which `token` is what the
    /// kubelet's TokenReview carries (Go's JSON encoding: one U+FFFD per invalid byte).
    #[serde(default)]
    pub token_bytes: Option<String>,
    /// With `token`: the user the TokenReview answers.
    #[serde(default)]
    pub user: Option<String>,
    /// With `token`: its UID.
    #[serde(default)]
    pub uid: Option<String>,
    /// With `token`: its groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// A client certificate (verified by Envoy, passed on in XFCC).
    #[serde(default)]
    pub x509: Option<X509>,
}

/// A client certificate's subject.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct X509 {
    /// The common name: the user.
    pub cn: String,
    /// The organizations: the groups.
    #[serde(default)]
    pub o: Vec<String>,
    /// The UID attribute (`1.3.6.1.4.1.57683.2`): the user's UID from 1.33 (the gate
    /// `AllowParsingUserUIDFromCertAuth` at its default), ignored before.
    #[serde(default)]
    pub uid: Option<String>,
}

impl Identity {
    /// The `Authorization` header's value as the client sends it (`Bearer ` and the token's
    /// bytes), for a token identity.
    pub fn bearer(&self) -> Option<Vec<u8>> {
        let token = match (&self.token_bytes, &self.token) {
            (Some(encoded), _) => percent_decode(encoded),
            (None, Some(t)) => t.as_bytes().to_vec(),
            (None, None) => return None,
        };
        let mut value = b"Bearer ".to_vec();
        value.extend_from_slice(&token);
        Some(value)
    }

    /// The user name the kubelet authorizes.
    pub fn user_name(&self) -> &str {
        match (&self.x509, &self.user) {
            (Some(c), _) => &c.cn,
            (None, Some(u)) => u,
            (None, None) => "",
        }
    }

    /// The UID a kubelet of minor version `minor` (gates at their defaults) gives this identity:
    /// the token's, or the certificate's UID attribute from 1.33.
    pub fn uid_for(&self, minor: u32) -> &str {
        match &self.x509 {
            Some(c) if minor >= 33 => c.uid.as_deref().unwrap_or(""),
            Some(_) => "",
            None => self.uid.as_deref().unwrap_or(""),
        }
    }

    /// The UID attributes of the identity's certificate (none or one).
    pub fn cert_uids(&self) -> Vec<&str> {
        self.x509
            .as_ref()
            .and_then(|c| c.uid.as_deref())
            .into_iter()
            .collect()
    }

    /// The groups the authenticator answers (before the kubelet's group adder).
    pub fn group_names(&self) -> &[String] {
        match &self.x509 {
            Some(c) => &c.o,
            None => &self.groups,
        }
    }
}

/// A case as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawCase {
    /// A name; by default `<kubelet> <identity> <method> <target>`.
    #[serde(default)]
    pub name: Option<String>,
    /// The identity's name in `identities`.
    pub identity: String,
    /// The kubelet version (`1.31`), its feature gates at their defaults.
    pub kubelet: String,
    /// The HTTP method.
    pub method: String,
    /// The request target (path and query).
    pub target: String,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The status the client sees (200: forwarded to the kubelet).
    pub status: u16,
    /// The exact body of the filter's own answer (not checked for forwarded requests).
    #[serde(default)]
    pub body: Option<String>,
    /// The SubjectAccessReviews `(verb, subresource)`, in order.
    pub checks: Vec<(String, String)>,
    /// What the client sees through the shipped Envoy configuration, when that differs.
    #[serde(default)]
    pub envoy: Option<EnvoyAnswer>,
}

/// What the client sees through Envoy when Envoy normalises or refuses the request itself.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvoyAnswer {
    /// The status.
    pub status: u16,
    /// The exact body of the filter's answer; absent when Envoy answers itself (its own 400: no
    /// review, nothing forwarded) or the request is forwarded.
    #[serde(default)]
    pub body: Option<String>,
    /// The SubjectAccessReviews `(verb, subresource)`, in order, for the path Envoy hands over.
    #[serde(default)]
    pub checks: Vec<(String, String)>,
    /// The target the kubelet receives when Envoy rewrote it (by default the case's target).
    #[serde(default)]
    pub forwarded_as: Option<String>,
}

/// A case with its identity resolved.
#[derive(Debug, Clone)]
pub struct Case {
    /// The file it comes from (its name).
    pub file: String,
    /// Its name.
    pub name: String,
    /// The identity's name.
    pub identity_name: String,
    /// Who sends it.
    pub identity: Identity,
    /// The kubelet version.
    pub kubelet: String,
    /// The HTTP method.
    pub method: String,
    /// The request target.
    pub target: String,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
    /// The expected status.
    pub status: u16,
    /// The expected body of the filter's own answer.
    pub body: Option<String>,
    /// The expected SubjectAccessReviews `(verb, subresource)`, in order.
    pub checks: Vec<(String, String)>,
    /// What the client sees through Envoy, when that differs.
    pub envoy: Option<EnvoyAnswer>,
    /// The RBAC files, absolute.
    pub rbac_files: Vec<PathBuf>,
    /// The node name.
    pub node_name: String,
}

impl Case {
    /// The kubelet version's minor number (`36` for `1.36`).
    pub fn minor(&self) -> u32 {
        self.kubelet
            .strip_prefix("1.")
            .and_then(|m| m.parse().ok())
            .unwrap_or(0)
    }
}

/// `%XX` escapes decoded to their byte; everything else (an incomplete escape too) kept as is.
fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = bytes
            .get(i + 1..i + 3)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b, hex) {
            (b'%', Some(decoded)) => {
                out.push(decoded);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// Why the corpus cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is not a corpus file.
    #[error("{path}: {source}")]
    Yaml {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_yaml_ng::Error,
    },
    /// A case or an identity is inconsistent.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The workspace root: the nearest ancestor holding `authz/tests/cases` of the package under
/// test (`CARGO_MANIFEST_DIR` when cargo runs the test), else of this crate as it was compiled
/// (`authz/test-support`). The run-time lookup comes first because worktrees sharing one
/// `CARGO_TARGET_DIR` may reuse this crate compiled in another worktree.
pub fn workspace_root() -> PathBuf {
    let compiled = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .and_then(|dir| {
            dir.ancestors()
                .find(|a| a.join("authz/tests/cases").is_dir())
                .map(Path::to_path_buf)
        })
        .unwrap_or(compiled)
}

/// `authz/tests/cases/`.
pub fn cases_dir() -> PathBuf {
    workspace_root().join("authz/tests/cases")
}

/// Every case of every `*.yaml` file in [`cases_dir`], files in name order.
pub fn load() -> Result<Vec<Case>, CorpusError> {
    load_dir(&cases_dir())
}

/// Every case of every `*.yaml` file in `dir`, files in name order.
pub fn load_dir(dir: &Path) -> Result<Vec<Case>, CorpusError> {
    let io = |source| CorpusError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let mut cases = Vec::new();
    for f in files {
        cases.extend(load_file(&f)?);
    }
    Ok(cases)
}

/// The cases of one file.
pub fn load_file(path: &Path) -> Result<Vec<Case>, CorpusError> {
    let text = std::fs::read_to_string(path).map_err(|source| CorpusError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let file: CorpusFile = serde_yaml_ng::from_str(&text).map_err(|source| CorpusError::Yaml {
        path: path.to_path_buf(),
        source,
    })?;
    let invalid = |message: String| CorpusError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    for (name, id) in &file.identities {
        match (&id.token, &id.x509) {
            (Some(_), None) if id.user.is_some() => {}
            (None, Some(_))
                if id.user.is_none()
                    && id.groups.is_empty()
                    && id.uid.is_none()
                    && id.token_bytes.is_none() => {}
            _ => {
                return Err(invalid(format!(
                    "identity `{name}`: give either `token` with `user` (and `uid`, `groups`), or `x509`"
                )))
            }
        }
    }
    let root = workspace_root();
    let rbac_files: Vec<PathBuf> = file.rbac_files.iter().map(|f| root.join(f)).collect();
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut names = std::collections::BTreeSet::new();
    let mut cases = Vec::new();
    for raw in file.cases {
        let identity = file
            .identities
            .get(&raw.identity)
            .ok_or_else(|| invalid(format!("unknown identity `{}`", raw.identity)))?
            .clone();
        let name = raw.name.clone().unwrap_or_else(|| {
            format!(
                "{} {} {} {}",
                raw.kubelet, raw.identity, raw.method, raw.target
            )
        });
        if !names.insert(name.clone()) {
            return Err(invalid(format!("two cases named `{name}`")));
        }
        if (raw.status == 200) != raw.body.is_none() {
            return Err(invalid(format!(
                "case `{name}`: a body is expected exactly when the filter answers (status other than 200)"
            )));
        }
        if let Some(e) = &raw.envoy {
            if e.status == 200 && e.body.is_some() {
                return Err(invalid(format!(
                    "case `{name}`: `envoy.body` is the filter's own answer, never a forwarded one"
                )));
            }
            if e.status != 200 && e.forwarded_as.is_some() {
                return Err(invalid(format!(
                    "case `{name}`: `envoy.forwardedAs` needs status 200"
                )));
            }
            if e.body.is_none() && e.status != 200 && !e.checks.is_empty() {
                return Err(invalid(format!(
                    "case `{name}`: Envoy's own answer (no `envoy.body`) comes before any review"
                )));
            }
        }
        cases.push(Case {
            file: file_name.clone(),
            name,
            identity_name: raw.identity,
            identity,
            kubelet: raw.kubelet,
            method: raw.method,
            target: raw.target,
            headers: raw.headers.into_iter().collect(),
            status: raw.status,
            body: raw.body,
            checks: raw.checks,
            envoy: raw.envoy,
            rbac_files: rbac_files.clone(),
            node_name: file.node_name.clone(),
        });
    }
    Ok(cases)
}

/// The 403 body a kubelet of minor version `minor` answers after trying `checks` (the last
/// one's verb): the 1.32+ list form, or the older single-subresource form without a newline.
pub fn forbidden_body(minor: u32, user: &str, checks: &[(String, String)]) -> String {
    let verb = checks.last().map(|(v, _)| v.as_str()).unwrap_or("");
    let subs: Vec<&str> = checks.iter().map(|(_, s)| s.as_str()).collect();
    if minor >= 32 {
        format!(
            "Forbidden (user={user}, verb={verb}, resource=nodes, subresource(s)=[{}])\n",
            subs.join(" ")
        )
    } else {
        format!(
            "Forbidden (user={user}, verb={verb}, resource=nodes, subresource={})",
            subs.last().copied().unwrap_or("")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_corpus_loads() {
        let cases = load().map_err(|e| e.to_string());
        assert!(cases.is_ok_and(|c| !c.is_empty()));
    }
}
