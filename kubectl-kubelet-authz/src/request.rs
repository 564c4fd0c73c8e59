//! Resolving raw arguments into a kubelet request: VERB (API verb or HTTP method), PATH (the
//! request target, judged by the engine as the filter judges it), the user, and the kubelet model
//! (version and feature gate).
//!
//! Verb rules (documented in the README):
//! - an upper-case word is an HTTP method and maps exactly as the kubelet does
//!   (`kubelet::verb_for_method`): `GET` get, `POST` create, `PUT` update, `PATCH` patch,
//!   `DELETE` delete, `HEAD`/`OPTIONS`/`CONNECT`/`TRACE` the empty verb;
//! - a lower-case word is an API verb and must be one the kubelet sends
//!   (`get`, `create`, `update`, `patch`, `delete`);
//! - anything else (`Get`, `list`) is refused, as the kubelet would never send it.

use kubelet_authz::identity::{self, UserInfo};
use kubelet_authz::kubelet::{self, FeatureGates, KubeletModel, KubeletVersion, ENDPOINTS};
use kubelet_authz::path::{self, PathError};

use crate::cli::{KubeletArgs, UserArgs};
use crate::error::{usage, CliError};

/// HTTP methods accepted as VERB.
const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "CONNECT", "TRACE",
];

/// The node name used when `--node` is not given.
pub const DEFAULT_NODE: &str = "node";

/// A resolved verb.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verb {
    /// The HTTP method when VERB was one.
    pub method: Option<String>,
    /// The API verb the kubelet builds (may be empty).
    pub verb: String,
}

impl Verb {
    /// The HTTP method of the request: the one given, or the method the kubelet maps to this API
    /// verb (`get` is `GET`, `create` is `POST`, ...).
    pub fn http_method(&self) -> String {
        if let Some(m) = &self.method {
            return m.clone();
        }
        METHODS
            .iter()
            .find(|m| kubelet::verb_for_method(m) == self.verb)
            .map_or_else(|| "HEAD".to_string(), |m| (*m).to_string())
    }
}

/// Parse VERB.
pub fn parse_verb(word: &str) -> Result<Verb, CliError> {
    if METHODS.contains(&word) {
        return Ok(Verb {
            method: Some(word.to_string()),
            verb: kubelet::verb_for_method(word).to_string(),
        });
    }
    if !word.is_empty() && kubelet::verbs().any(|v| v == word) {
        return Ok(Verb {
            method: None,
            verb: word.to_string(),
        });
    }
    if METHODS.contains(&word.to_ascii_uppercase().as_str()) {
        return Err(usage(format!(
            "ambiguous verb `{word}`: write the API verb in lower case (`{}`) or the HTTP method in upper case (`{}`)",
            word.to_ascii_lowercase(),
            word.to_ascii_uppercase()
        )));
    }
    Err(usage(format!(
        "the kubelet never sends verb `{word}`: use get, create, update, patch, delete, or an HTTP method (GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS)"
    )))
}

/// The verb for `--method`: the HTTP method exactly as sent (any case), mapped as the kubelet
/// maps it. It must be an HTTP token (RFC 9110: letters, digits and ``!#$%&'*+-.^_`|~``).
pub fn parse_method(method: &str) -> Result<Verb, CliError> {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if method.is_empty() || !method.chars().all(token) {
        return Err(usage(format!(
            "--method: `{method}` is not an HTTP method (a token such as GET or post)"
        )));
    }
    Ok(Verb {
        method: Some(method.to_string()),
        verb: kubelet::verb_for_method(method).to_string(),
    })
}

/// The first path segment of every endpoint the kubelet serves (`/exec`, `/metrics`, ...).
fn known_roots() -> Vec<&'static str> {
    let mut roots: Vec<&'static str> = ENDPOINTS
        .iter()
        .filter_map(|e| e.path.get(1..).and_then(|p| p.split('/').next()))
        .collect();
    roots.sort_unstable();
    roots.dedup();
    roots
}

/// Why the first segment of a decoded path is under no kubelet endpoint, with a hint for a
/// likely typo; `None` when it is under one. The filter authorizes such a path as `nodes/proxy`.
pub fn unknown_path_hint(path: &str) -> Option<String> {
    let root = path
        .get(1..)
        .and_then(|p| p.split('/').next())
        .unwrap_or_default();
    let roots = known_roots();
    if roots.contains(&root) {
        return None;
    }
    let hint = roots
        .iter()
        .find(|r| r.eq_ignore_ascii_case(root))
        .map(|r| {
            let rest = path.get(1 + root.len()..).unwrap_or_default();
            format!(": paths are case-sensitive, did you mean `/{r}{rest}`?")
        })
        .unwrap_or_else(|| {
            ": see `kubectl kubelet-authz can-i --list` for the kubelet's endpoints".to_string()
        });
    Some(format!("unknown kubelet path `{path}`{hint}"))
}

/// Why a request target cannot be a kubelet path at all (it does not start with `/`), with a
/// hint; `None` otherwise. The filter refuses such a target with 400 (`can-i` answers so), and
/// `suggest-role` refuses it as a usage error.
pub fn not_a_path_hint(raw: &str) -> Option<String> {
    if !matches!(path::canonical_path(raw), Err(PathError::NotOriginForm)) {
        return None;
    }
    let hint = if raw.starts_with("http://") || raw.starts_with("https://") || raw == "*" {
        String::new()
    } else {
        format!(", did you mean `/{raw}`?")
    };
    Some(format!(
        "`{raw}` is not a kubelet path: paths start with `/` (for example `/pods` or `/exec/NS/POD/CONTAINER`){hint}"
    ))
}

/// Check a PATH that must name a kubelet endpoint (`suggest-role`): canonical as the filter
/// requires (`kubelet_authz::path`), decoded, the query string dropped, and under a kubelet
/// endpoint. Paths are case-sensitive, as in the kubelet.
pub fn parse_path(raw: &str) -> Result<String, CliError> {
    let path = match path::canonical_path(raw) {
        Ok(p) => p,
        Err(PathError::NotOriginForm) => {
            return Err(usage(not_a_path_hint(raw).unwrap_or_default()))
        }
        Err(e) => {
            return Err(usage(format!(
                "`{raw}` is not a canonical path: {e} (the filter refuses such paths with 400)"
            )))
        }
    };
    match unknown_path_hint(&path) {
        None => Ok(path),
        Some(why) => Err(usage(why)),
    }
}

/// Split `[VERB] PATH` into a verb (default `get`) and a request target (as given, byte for
/// byte: the engine judges it as the filter does, and refuses what the filter refuses).
pub fn parse_verb_and_path(args: &[String]) -> Result<(Verb, String), CliError> {
    match args {
        [path] => Ok((
            Verb {
                method: None,
                verb: "get".into(),
            },
            path.clone(),
        )),
        [verb, path] => Ok((parse_verb(verb)?, path.clone())),
        _ => Err(usage(
            "expected [VERB] PATH, for example `get /pods` or `/metrics`",
        )),
    }
}

/// Parse a kubelet version.
pub fn parse_version(s: &str) -> Result<KubeletVersion, CliError> {
    s.parse::<KubeletVersion>()
        .map_err(|e| usage(format!("--kubelet-version: {e}")))
}

/// Parse `--feature-gates` (`Name=bool,...`) with the engine's parser; unknown names are refused
/// so that a typo does not go unnoticed.
pub fn parse_gates(s: Option<&str>) -> Result<FeatureGates, CliError> {
    kubelet_authz::gates::parse_feature_gates(
        s.unwrap_or(""),
        kubelet_authz::gates::UnknownGates::Refuse,
    )
    .map_err(|e| usage(format!("--feature-gates: {e}")))
}

/// Build the kubelet model from a version and the gate flag.
pub fn model(version: KubeletVersion, gates: FeatureGates) -> Result<KubeletModel, CliError> {
    KubeletModel::new(version, gates).map_err(|e| usage(format!("--feature-gates: {e}")))
}

/// The model from `--kubelet-version` (or `fallback`) and `--feature-gates`.
pub fn model_from_args(
    args: &KubeletArgs,
    fallback: Option<KubeletVersion>,
) -> Result<KubeletModel, CliError> {
    let version = match (&args.kubelet_version, fallback) {
        (Some(v), _) => parse_version(v)?,
        (None, Some(v)) => v,
        (None, None) => KubeletVersion::LATEST,
    };
    model(version, parse_gates(args.feature_gates.as_deref())?)
}

/// The user the kubelet would send in its SubjectAccessReviews for `--as`: the groups given (a
/// ServiceAccount user without `--as-group` gets `system:serviceaccounts` and
/// `system:serviceaccounts:NS`, as its token would carry; `system:anonymous` without groups is
/// the anonymous user), then the kubelet's group adder (`system:authenticated`).
pub fn user_from_args(args: &UserArgs) -> Option<UserInfo> {
    let name = args.as_user.clone()?;
    if name == identity::ANONYMOUS_USER && args.as_groups.is_empty() {
        return Some(identity::anonymous());
    }
    let mut groups = args.as_groups.clone();
    if groups.is_empty() {
        if let Some((ns, _)) = identity::split_service_account_username(&name) {
            groups = identity::service_account_groups(ns);
        }
    }
    let user = UserInfo {
        name,
        uid: args.as_uid.clone().unwrap_or_default(),
        groups,
        extra: Default::default(),
    };
    Some(identity::add_authenticated_group(user))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    #[test]
    fn verbs() {
        let v = |w: &str| parse_verb(w).map(|v| (v.method, v.verb)).ok();
        assert_eq!(v("GET"), Some((Some("GET".into()), "get".into())));
        assert_eq!(v("HEAD"), Some((Some("HEAD".into()), String::new())));
        assert_eq!(v("OPTIONS"), Some((Some("OPTIONS".into()), String::new())));
        assert_eq!(v("POST"), Some((Some("POST".into()), "create".into())));
        assert_eq!(v("get"), Some((None, "get".into())));
        assert_eq!(v("delete"), Some((None, "delete".into())));
        assert_eq!(v("Get"), None);
        assert_eq!(v("list"), None);
        assert_eq!(v("head"), None);
    }

    #[test]
    fn methods_as_sent() {
        let v = |m: &str| parse_method(m).map(|v| (v.method, v.verb)).ok();
        assert_eq!(v("GET"), Some((Some("GET".into()), "get".into())));
        assert_eq!(v("get"), Some((Some("get".into()), String::new())));
        assert_eq!(v("Get"), Some((Some("Get".into()), String::new())));
        assert_eq!(v("post"), Some((Some("post".into()), String::new())));
        assert_eq!(v(""), None);
        assert_eq!(v("G T"), None);
    }

    #[test]
    fn api_verbs_map_back_to_methods() {
        for (verb, method) in [
            ("get", "GET"),
            ("create", "POST"),
            ("update", "PUT"),
            ("patch", "PATCH"),
            ("delete", "DELETE"),
        ] {
            assert_eq!(parse_verb(verb).unwrap().http_method(), method);
        }
        assert_eq!(parse_verb("HEAD").unwrap().http_method(), "HEAD");
    }

    #[test]
    fn paths() {
        assert_eq!(parse_path("/pods?x=1").unwrap(), "/pods");
        assert_eq!(
            parse_path("/metrics/cadvisor").unwrap(),
            "/metrics/cadvisor"
        );
        assert_eq!(parse_path("/runningpods/").unwrap(), "/runningpods/");
        assert!(parse_path("/runningPods/").is_err());
        assert!(parse_path("/").is_err());
        assert!(parse_path("/podsfoo").is_err());
        assert!(parse_path("//pods").is_err());
        assert!(parse_path("/exec/../pods").is_err());
        assert!(parse_path("pods").is_err());
    }

    #[test]
    fn targets_that_are_not_paths_get_a_hint() {
        assert!(not_a_path_hint("pods").is_some_and(|h| h.ends_with("did you mean `/pods`?")));
        assert!(not_a_path_hint("http://x/pods").is_some_and(|h| !h.contains("did you mean")));
        assert_eq!(not_a_path_hint("/pods"), None);
        assert_eq!(not_a_path_hint("//pods"), None);
    }

    #[test]
    fn users() {
        let sa = user_from_args(&UserArgs {
            as_user: Some("system:serviceaccount:ns1:sa".into()),
            ..UserArgs::default()
        })
        .unwrap();
        assert_eq!(
            sa.groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:ns1",
                "system:authenticated"
            ]
        );
        let given = user_from_args(&UserArgs {
            as_user: Some("system:serviceaccount:ns1:sa".into()),
            as_groups: vec!["g".into()],
            as_uid: Some("u1".into()),
        })
        .unwrap();
        assert_eq!(given.groups, ["g", "system:authenticated"]);
        assert_eq!(given.uid, "u1");
        let unauth = user_from_args(&UserArgs {
            as_user: Some("x".into()),
            as_groups: vec!["system:unauthenticated".into()],
            as_uid: None,
        })
        .unwrap();
        assert_eq!(unauth.groups, ["system:unauthenticated"]);
        assert!(user_from_args(&UserArgs::default()).is_none());
    }
}
