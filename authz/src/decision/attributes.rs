//! The request attributes the kubelet authorizes (its `GetRequestAttributes`), as one pure
//! function: from the method, the request target and the headers, for a kubelet version and gate,
//! either the canonical-path refusal (400, DESIGN.md deliberate difference 2) or the decoded path,
//! the verb and the ordered subresources to check. The session, the kubectl plugin and the
//! stand-ins all take their attributes from here, so none can disagree with the filter.

use crate::kubelet::{self, KubeletModel, Subresources};
use crate::path::{self, PathError};

/// What the kubelet authorizes for one request: the same verb against each subresource in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    /// The decoded path (Go's `URL.Path`: no query string).
    pub path: String,
    /// The verb checked (`""` for a method the kubelet does not map).
    pub verb: &'static str,
    /// Whether `strictUpgradeVerb` changed the verb from `get` to `create`.
    pub strict_upgrade_applied: bool,
    /// Whether the request asks for a connection upgrade (`Connection: upgrade` and an `Upgrade`
    /// header: a WebSocket `GET` or a SPDY `POST`). Informational: neither the kubelet's verb nor
    /// the strict upgrade verb depends on it (a `GET` without upgrade to a streaming path does
    /// nothing else, so it is authorized the same way).
    pub upgrade: bool,
    /// The subresources checked, in order (the first Allow wins).
    pub subresources: Subresources,
}

/// The kubelet's `GetRequestAttributes`, with the filter's deliberate differences: a
/// non-canonical `target` is refused (answer 400 with [`path::refusal_body`]); with
/// `strict_upgrade_verb`, a `GET` to `/exec`, `/attach`, `/run` or `/portForward` is authorized as
/// `create`, as the SPDY `POST` that opens the same stream already is.
///
/// `headers` are the request headers (any case), read only for [`Attributes::upgrade`].
pub fn request_attributes(
    method: &str,
    target: &str,
    headers: &[(String, String)],
    model: KubeletModel,
    strict_upgrade_verb: bool,
) -> Result<Attributes, PathError> {
    request_attributes_in(
        method,
        target,
        headers,
        model,
        strict_upgrade_verb,
        String::new(),
    )
}

/// [`request_attributes`], decoding the path into `buffer` (its capacity reused: the session
/// passes the path of a finished decision, so a decision allocates none). On a refusal the buffer
/// is dropped.
pub fn request_attributes_in(
    method: &str,
    target: &str,
    headers: &[(String, String)],
    model: KubeletModel,
    strict_upgrade_verb: bool,
    buffer: String,
) -> Result<Attributes, PathError> {
    let mut path = buffer;
    path::canonical_path_into(target, &mut path)?;
    let mut verb = kubelet::verb_for_method(method);
    let mut strict_upgrade_applied = false;
    if strict_upgrade_verb && verb == "get" && kubelet::is_streaming_path(&path) {
        // A WebSocket GET opens the same stream as a SPDY POST: authorize it as `create`.
        // A GET without upgrade headers to these paths does nothing else, so it gets the same.
        verb = "create";
        strict_upgrade_applied = true;
    }
    Ok(Attributes {
        subresources: model.subresources(&path),
        path,
        verb,
        strict_upgrade_applied,
        upgrade: is_upgrade(headers),
    })
}

/// `Connection` lists the `upgrade` token and an `Upgrade` header is present.
fn is_upgrade(headers: &[(String, String)]) -> bool {
    let named = |name: &'static str| {
        headers
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let has_upgrade_token = named("connection").any(|v| {
        v.split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
    });
    has_upgrade_token && named("upgrade").next().is_some()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::kubelet::{KubeletVersion, Subresource};
    use rstest::rstest;

    fn latest() -> KubeletModel {
        KubeletModel::for_version(KubeletVersion::LATEST)
    }

    #[rstest]
    #[case("GET", "/pods?x=1", true, "/pods", "get", false, &[Subresource::Pods, Subresource::Proxy])]
    #[case("GET", "/exec/ns/p/c?command=ls", true, "/exec/ns/p/c", "create", true, &[Subresource::Proxy])]
    #[case("GET", "/exec/ns/p/c", false, "/exec/ns/p/c", "get", false, &[Subresource::Proxy])]
    #[case("POST", "/portForward/ns/p", true, "/portForward/ns/p", "create", false, &[Subresource::Proxy])]
    #[case("HEAD", "/metrics", true, "/metrics", "", false, &[Subresource::Metrics])]
    #[case("GET", "/runningPods/", true, "/runningPods/", "get", false, &[Subresource::Proxy])]
    fn attributes(
        #[case] method: &str,
        #[case] target: &str,
        #[case] strict: bool,
        #[case] path: &str,
        #[case] verb: &str,
        #[case] applied: bool,
        #[case] subs: &[Subresource],
    ) {
        let a = request_attributes(method, target, &[], latest(), strict).unwrap();
        assert_eq!(a.path, path);
        assert_eq!(a.verb, verb);
        assert_eq!(a.strict_upgrade_applied, applied);
        assert_eq!(a.subresources.to_vec(), subs);
        assert!(!a.upgrade);
    }

    #[rstest]
    #[case("/pods/%2e%2e/exec/a/b/c", PathError::EncodedSeparator)]
    #[case("/pods%2Fx", PathError::EncodedSeparator)]
    #[case("/pods#frag", PathError::Fragment)]
    #[case("//pods", PathError::EmptySegment)]
    fn refused(#[case] target: &str, #[case] why: PathError) {
        assert_eq!(
            request_attributes("GET", target, &[], latest(), true),
            Err(why)
        );
    }

    #[test]
    fn upgrade_needs_both_headers() {
        let h = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let up = |headers: &[(String, String)]| {
            request_attributes("GET", "/exec/a/b/c", headers, latest(), true)
                .unwrap()
                .upgrade
        };
        assert!(up(&h(&[
            ("Connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket")
        ])));
        assert!(!up(&h(&[("connection", "Upgrade")])));
        assert!(!up(&h(&[("upgrade", "websocket")])));
    }
}
