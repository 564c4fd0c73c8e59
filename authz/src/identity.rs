//! Who is asking: `UserInfo` and the kubelet's authenticators, each answering "not my kind of
//! credential" (`Ok(None)`) apart from "failed" (`Err`), as Kubernetes' `authenticator.Request` does.
//!
//! - [`x509`]: the user in a client certificate (CN, every O, credential-id extra, UID from 1.33).
//! - [`xfcc`]: Envoy's `x-forwarded-client-cert` header, the only place the filter gets a
//!   certificate from (and only when its hash matches the connection's verified peer certificate).
//! - [`parse_bearer`]: the `Authorization: Bearer` header, exactly as `bearertoken.go`.
//! - [`websocket_token`]: the `base64url.bearer.authorization.k8s.io.` WebSocket subprotocol token.
//! - [`anonymous`] and [`add_authenticated_group`]: the anonymous user and the group adder.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::review::{ReviewUser, TokenReviewStatus};

pub mod x509;
pub mod xfcc;

/// The authenticated user: name, UID, groups (in order) and extra.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct UserInfo {
    /// User name (`system:anonymous` for anonymous).
    pub name: String,
    /// UID (empty when unknown).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// Groups, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Extra attributes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, Vec<String>>,
}

/// The anonymous user name.
pub const ANONYMOUS_USER: &str = "system:anonymous";
/// The group of the anonymous user.
pub const UNAUTHENTICATED_GROUP: &str = "system:unauthenticated";
/// The group the group adder appends.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";
/// The extra key that carries the x509 credential id (1.32+).
pub const CREDENTIAL_ID_EXTRA: &str = "authentication.kubernetes.io/credential-id";
/// The user-name prefix of a ServiceAccount: `system:serviceaccount:<namespace>:<name>`.
pub const SERVICE_ACCOUNT_USER_PREFIX: &str = "system:serviceaccount:";
/// The group every ServiceAccount token carries.
pub const SERVICE_ACCOUNTS_GROUP: &str = "system:serviceaccounts";

/// `serviceaccount.SplitUsername`: the namespace and name of a ServiceAccount user name
/// (`system:serviceaccount:<namespace>:<name>`), or `None` for any other user.
pub fn split_service_account_username(user_name: &str) -> Option<(&str, &str)> {
    user_name
        .strip_prefix(SERVICE_ACCOUNT_USER_PREFIX)
        .and_then(|rest| rest.split_once(':'))
}

/// `serviceaccount.MakeGroupNames`: the groups a ServiceAccount token of `namespace` carries,
/// `system:serviceaccounts` then `system:serviceaccounts:<namespace>`.
pub fn service_account_groups(namespace: &str) -> Vec<String> {
    vec![
        SERVICE_ACCOUNTS_GROUP.to_string(),
        format!("{SERVICE_ACCOUNTS_GROUP}:{namespace}"),
    ]
}

impl UserInfo {
    /// A user with a name and groups.
    pub fn new(name: impl Into<String>, groups: &[&str]) -> Self {
        UserInfo {
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..UserInfo::default()
        }
    }

    /// Build from a TokenReview status user.
    pub fn from_review(u: &ReviewUser) -> Self {
        UserInfo {
            name: u.username.clone(),
            uid: u.uid.clone(),
            groups: u.groups.clone(),
            extra: u.extra.clone(),
        }
    }

    /// Whether this is the anonymous user.
    pub fn is_anonymous(&self) -> bool {
        self.name == ANONYMOUS_USER
    }
}

/// The anonymous user: `system:anonymous`, group `system:unauthenticated`, no UID, no extra.
pub fn anonymous() -> UserInfo {
    UserInfo::new(ANONYMOUS_USER, &[UNAUTHENTICATED_GROUP])
}

/// `AuthenticatedGroupAdder` (reference 2.9): append `system:authenticated` unless the user is
/// anonymous or already has `system:authenticated` or `system:unauthenticated`.
pub fn add_authenticated_group(mut user: UserInfo) -> UserInfo {
    let skip = user.is_anonymous()
        || user
            .groups
            .iter()
            .any(|g| g == AUTHENTICATED_GROUP || g == UNAUTHENTICATED_GROUP);
    if !skip {
        user.groups.push(AUTHENTICATED_GROUP.to_string());
    }
    user
}

/// The API server's TokenReview status for a token of `user` (`None`: a token it does not know):
/// the user with `system:authenticated` added, as kube-apiserver's authenticator chain adds it
/// ([`add_authenticated_group`]); an unknown token is `authenticated: false` with an empty user.
/// Every stand-in API server (the harness' auto-responder, the stand-in kube-apiserver) answers
/// with this one function.
pub fn token_review_status(user: Option<&UserInfo>) -> TokenReviewStatus {
    match user {
        Some(u) => {
            let u = add_authenticated_group(u.clone());
            TokenReviewStatus {
                authenticated: true,
                user: Some(ReviewUser {
                    username: u.name,
                    uid: u.uid,
                    groups: u.groups,
                    extra: u.extra,
                }),
                ..TokenReviewStatus::default()
            }
        }
        None => TokenReviewStatus {
            user: Some(ReviewUser::default()),
            ..TokenReviewStatus::default()
        },
    }
}

/// What the `Authorization` header says (reference 2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerHeader<'a> {
    /// Missing, blank, another scheme, or no token: this authenticator has no opinion.
    NoOpinion,
    /// `Bearer  x` (two spaces): empty token, no opinion, and the kubelet logs a warning.
    EmptyTokenWarning,
    /// A bearer token to review.
    Token(&'a str),
}

/// Parse the first `Authorization` header value exactly as `bearertoken.go`: trim ASCII and
/// Unicode white space, split on single spaces into at most three parts, scheme compared
/// case-insensitively, the token is the second part.
pub fn parse_bearer(header: Option<&str>) -> BearerHeader<'_> {
    let Some(raw) = header else {
        return BearerHeader::NoOpinion;
    };
    let auth = raw.trim();
    if auth.is_empty() {
        return BearerHeader::NoOpinion;
    }
    let mut parts = auth.splitn(3, ' ');
    let scheme = parts.next().unwrap_or("");
    let Some(token) = parts.next() else {
        return BearerHeader::NoOpinion;
    };
    let has_third = parts.next().is_some();
    if !scheme.eq_ignore_ascii_case("bearer") || scheme.len() != "bearer".len() {
        return BearerHeader::NoOpinion;
    }
    if token.is_empty() {
        return if has_third {
            BearerHeader::EmptyTokenWarning
        } else {
            BearerHeader::NoOpinion
        };
    }
    BearerHeader::Token(token)
}

/// The WebSocket subprotocol prefix that carries a bearer token.
pub const WEBSOCKET_TOKEN_PREFIX: &str = "base64url.bearer.authorization.k8s.io.";

/// Errors of the WebSocket protocol authenticator (reference 2.5), with the kubelet's texts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebSocketTokenError {
    /// Two token entries.
    #[error("multiple base64.bearer.authorization tokens specified")]
    Multiple,
    /// Not base64url without padding.
    #[error("invalid base64.bearer.authorization token encoding")]
    Encoding,
    /// Decoded bytes are not UTF-8.
    #[error("invalid base64.bearer.authorization token")]
    NotUtf8,
    /// The token was the only subprotocol.
    #[error("missing additional subprotocol")]
    MissingSubprotocol,
}

/// A token found in `Sec-WebSocket-Protocol` (the header to forward without it is
/// [`without_websocket_tokens`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSocketToken {
    /// The decoded bearer token.
    pub token: String,
}

/// Go's `base64.RawURLEncoding`: no padding, and (unlike Rust's default) tolerant of non-zero
/// trailing bits.
const GO_RAW_URL_ENCODING: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    base64::engine::GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(true),
);

/// `Sec-WebSocket-Protocol` without its bearer-token entries, the others joined with `,` as
/// the kubelet rewrites it: `None` when no entry carries a token (forward the header as it is),
/// `Some("")` when nothing else is left (drop the header). Every token entry goes, even when
/// there are several or they do not decode: what leaves the proxy never carries one.
pub fn without_websocket_tokens(values: &[&str]) -> Option<String> {
    let mut found = false;
    let mut others = Vec::new();
    for value in values {
        for entry in value.split(',') {
            let entry = entry.trim();
            if entry.starts_with(WEBSOCKET_TOKEN_PREFIX) {
                found = true;
            } else {
                others.push(entry);
            }
        }
    }
    found.then(|| others.join(","))
}

/// Whether the request is a WebSocket upgrade, exactly as `wsstream.IsWebSocketRequest`: only
/// the first value of each header counts (`Header.Get`); `Upgrade` must equal `websocket` under
/// Go's `strings.EqualFold` (so the Kelvin sign and the long s fold to `k` and `s`), and the
/// lower-cased `Connection` must match `(^|.*,\s*)upgrade($|\s*,)`.
pub fn is_websocket_request(connection: &[&str], upgrade: &[&str]) -> bool {
    let upgrade = upgrade.first().copied().unwrap_or("");
    if !go_equal_fold_websocket(upgrade) {
        return false;
    }
    let connection = connection
        .first()
        .copied()
        .unwrap_or("")
        .to_ascii_lowercase();
    connection_has_upgrade(&connection)
}

/// Go's `strings.EqualFold(s, "websocket")`: simple case folding, in which only ASCII case, U+212A
/// (Kelvin sign, folds to `k`) and U+017F (long s, folds to `s`) reach these letters.
fn go_equal_fold_websocket(s: &str) -> bool {
    let mut got = s.chars();
    for want in "websocket".chars() {
        let Some(c) = got.next() else {
            return false;
        };
        let same = c.eq_ignore_ascii_case(&want)
            || (want == 'k' && c == '\u{212A}')
            || (want == 's' && c == '\u{17F}');
        if !same {
            return false;
        }
    }
    got.next().is_none()
}

/// The regular expression `(^|.*,\s*)upgrade($|\s*,)` (RE2 `\s` is `[\t\n\f\r ]`) on a
/// lower-cased `Connection` value.
fn connection_has_upgrade(connection: &str) -> bool {
    const RE2_SPACE: [char; 5] = ['\t', '\n', '\x0c', '\r', ' '];
    connection.match_indices("upgrade").any(|(i, m)| {
        let before = connection.get(..i).unwrap_or("");
        let after = connection.get(i + m.len()..).unwrap_or("");
        let before_ok = i == 0 || before.trim_end_matches(RE2_SPACE).ends_with(',');
        let after_ok = after.is_empty() || after.trim_start_matches(RE2_SPACE).starts_with(',');
        before_ok && after_ok
    })
}

/// The WebSocket protocol authenticator's parse step: each `Sec-WebSocket-Protocol` value split on
/// `,` and trimmed; one entry with [`WEBSOCKET_TOKEN_PREFIX`] carries the token (base64url, no
/// padding). `Ok(None)` when no entry carries a token.
pub fn websocket_token(values: &[&str]) -> Result<Option<WebSocketToken>, WebSocketTokenError> {
    use base64::Engine as _;
    let mut token: Option<String> = None;
    let mut others: Vec<&str> = Vec::new();
    for value in values {
        for entry in value.split(',') {
            let entry = entry.trim();
            if let Some(encoded) = entry.strip_prefix(WEBSOCKET_TOKEN_PREFIX) {
                if token.is_some() {
                    return Err(WebSocketTokenError::Multiple);
                }
                // Go's decoder skips `\r` and `\n` anywhere in its input.
                let encoded: String = encoded
                    .chars()
                    .filter(|c| !matches!(c, '\r' | '\n'))
                    .collect();
                let bytes = GO_RAW_URL_ENCODING
                    .decode(encoded.as_bytes())
                    .map_err(|_| WebSocketTokenError::Encoding)?;
                let s = String::from_utf8(bytes).map_err(|_| WebSocketTokenError::NotUtf8)?;
                token = Some(s);
            } else {
                others.push(entry);
            }
        }
    }
    // Go compares `len(token) > 0`: an empty decoded token is no token at all.
    match token.filter(|t| !t.is_empty()) {
        None => Ok(None),
        Some(_) if others.is_empty() => Err(WebSocketTokenError::MissingSubprotocol),
        Some(token) => Ok(Some(WebSocketToken { token })),
    }
}
