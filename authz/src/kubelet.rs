//! The kubelet's request attributes, per kubelet version: HTTP method to verb, request path to the
//! ordered list of `nodes/<subresource>` checks, and the table of endpoints a kubelet serves.
//!
//! Everything here mirrors `pkg/kubelet/server/auth.go` (`GetRequestAttributes`) as described in
//! `reference/kubelet-authz.md` sections 3.2 to 3.4. Paths are the decoded `URL.Path`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

mod endpoints;
pub use endpoints::{endpoints_for, Endpoint, ENDPOINTS};

/// The oldest kubelet minor version this model covers (`/spec` was removed in 1.21).
pub const OLDEST_MINOR: u32 = 21;
/// The minor version in which `KubeletFineGrainedAuthz` went GA and was locked on.
pub const GA_MINOR: u32 = 36;

/// A kubelet version, `1.<minor>`. Patch levels do not change authorization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KubeletVersion {
    minor: u32,
}

/// Why a kubelet version string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// Not of the form `1.N`, `v1.N` or `v1.N.P[-suffix]`.
    #[error("`{0}` is not a kubelet version: expected `1.N` or `v1.N.P` (for example `1.36`)")]
    Malformed(String),
    /// Older than the oldest version modelled.
    #[error("kubelet version `{0}` is older than 1.{OLDEST_MINOR}, the oldest version modelled")]
    TooOld(String),
}

impl KubeletVersion {
    /// The newest behaviour modelled (1.36 and later).
    pub const LATEST: KubeletVersion = KubeletVersion { minor: GA_MINOR };

    /// `1.<minor>`; errors if older than 1.21.
    pub fn new(minor: u32) -> Result<Self, VersionError> {
        if minor < OLDEST_MINOR {
            return Err(VersionError::TooOld(format!("1.{minor}")));
        }
        Ok(KubeletVersion { minor })
    }

    /// The minor version number.
    pub fn minor(self) -> u32 {
        self.minor
    }

    /// 1.32 and later: the fine-grained attribute builder and the `subresource(s)=[...]` 403 text.
    pub fn has_multi_attribute_authz(self) -> bool {
        self.minor >= 32
    }

    /// The `KubeletFineGrainedAuthz` gate's default in this version (`None` before the gate existed).
    pub fn fine_grained_default(self) -> Option<bool> {
        match self.minor {
            0..=31 => None,
            32 => Some(false),
            _ => Some(true),
        }
    }

    /// The `AllowParsingUserUIDFromCertAuth` gate's default in this version (`None` before the
    /// gate existed, 1.33): whether the x509 authenticator reads the subject's UID attribute.
    pub fn cert_uid_default(self) -> Option<bool> {
        (self.minor >= CERT_UID_SINCE_MINOR).then_some(true)
    }

    /// From 1.36 the gate is locked on and cannot be disabled.
    pub fn fine_grained_locked(self) -> bool {
        self.minor >= GA_MINOR
    }

    /// Whether this version resolves `/checkpoint/` to the `checkpoint` subresource (1.25+).
    pub fn has_checkpoint(self) -> bool {
        self.minor >= 25
    }
}

impl FromStr for KubeletVersion {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || VersionError::Malformed(s.to_string());
        let t = s.trim();
        let t = t.strip_prefix('v').unwrap_or(t);
        let mut parts = t.splitn(3, '.');
        let major = parts.next().ok_or_else(bad)?;
        let minor = parts.next().ok_or_else(bad)?;
        if major != "1" || minor.is_empty() || !minor.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        if let Some(rest) = parts.next() {
            // Patch level, optionally followed by a pre-release or vendor suffix.
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            let after = rest.get(digits.len()..).unwrap_or("");
            if digits.is_empty() || !(after.is_empty() || after.starts_with(['-', '+'])) {
                return Err(bad());
            }
        }
        let minor: u32 = minor.parse().map_err(|_| bad())?;
        KubeletVersion::new(minor).map_err(|_| VersionError::TooOld(s.to_string()))
    }
}

impl fmt::Display for KubeletVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "1.{}", self.minor)
    }
}

impl Serialize for KubeletVersion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KubeletVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The first version with the `AllowParsingUserUIDFromCertAuth` gate (beta, on by default).
pub const CERT_UID_SINCE_MINOR: u32 = 33;

/// Kubelet feature gates that change authentication or authorization.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureGates {
    /// `KubeletFineGrainedAuthz`; `None` means the version's default.
    #[serde(
        rename = "KubeletFineGrainedAuthz",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub kubelet_fine_grained_authz: Option<bool>,
    /// `AllowParsingUserUIDFromCertAuth` (1.33+): the x509 authenticator reads the subject's UID
    /// attribute; `None` means the version's default.
    #[serde(
        rename = "AllowParsingUserUIDFromCertAuth",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_parsing_user_uid_from_cert_auth: Option<bool>,
}

/// Why a feature-gate setting is impossible for a version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GateError {
    /// The gate did not exist before 1.32.
    #[error("featureGates.KubeletFineGrainedAuthz: the gate does not exist in kubelet {0} (it was added in 1.32)")]
    NotInVersion(KubeletVersion),
    /// The gate is locked on from 1.36.
    #[error("featureGates.KubeletFineGrainedAuthz: the gate is locked to true in kubelet {0} and cannot be disabled")]
    Locked(KubeletVersion),
    /// `AllowParsingUserUIDFromCertAuth` did not exist before 1.33: the kubelet refuses any
    /// setting of a gate it does not know.
    #[error("featureGates.AllowParsingUserUIDFromCertAuth: the gate does not exist in kubelet {0} (it was added in 1.33)")]
    CertUidNotInVersion(KubeletVersion),
}

impl GateError {
    /// The configuration field the error is about (`featureGates.<Gate>`).
    pub fn field(&self) -> &'static str {
        match self {
            GateError::NotInVersion(_) | GateError::Locked(_) => {
                "featureGates.KubeletFineGrainedAuthz"
            }
            GateError::CertUidNotInVersion(_) => "featureGates.AllowParsingUserUIDFromCertAuth",
        }
    }
}

/// The kubelet version together with its effective gates: everything the attribute builder (the
/// fine-grained gate) and the x509 authenticator (the certificate UID gate) depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KubeletModel {
    version: KubeletVersion,
    fine_grained: bool,
    cert_uid: bool,
}

impl KubeletModel {
    /// Resolve the gate for the version. `true` on a pre-1.32 kubelet and `false` on 1.36+ are
    /// refused, as the kubelet refuses to start with them.
    pub fn new(version: KubeletVersion, gates: FeatureGates) -> Result<Self, GateError> {
        let fine_grained = match (
            version.fine_grained_default(),
            gates.kubelet_fine_grained_authz,
        ) {
            (None, Some(true)) => return Err(GateError::NotInVersion(version)),
            (None, _) => false,
            (Some(_), Some(false)) if version.fine_grained_locked() => {
                return Err(GateError::Locked(version))
            }
            (Some(_), Some(v)) => v,
            (Some(default), None) => default,
        };
        let cert_uid = match (
            version.cert_uid_default(),
            gates.allow_parsing_user_uid_from_cert_auth,
        ) {
            (None, Some(_)) => return Err(GateError::CertUidNotInVersion(version)),
            (None, None) => false,
            (Some(_), Some(v)) => v,
            (Some(default), None) => default,
        };
        Ok(KubeletModel {
            version,
            fine_grained,
            cert_uid,
        })
    }

    /// The version's defaults.
    pub fn for_version(version: KubeletVersion) -> Self {
        KubeletModel {
            version,
            fine_grained: version.fine_grained_default().unwrap_or(false),
            cert_uid: version.cert_uid_default().unwrap_or(false),
        }
    }

    /// The kubelet version.
    pub fn version(self) -> KubeletVersion {
        self.version
    }

    /// Whether `KubeletFineGrainedAuthz` is in effect.
    pub fn fine_grained(self) -> bool {
        self.fine_grained
    }

    /// Whether the x509 authenticator reads the certificate's UID (`AllowParsingUserUIDFromCertAuth`
    /// in effect: 1.33+, unless turned off).
    pub fn reads_cert_uid(self) -> bool {
        self.cert_uid
    }

    /// The ordered subresources the kubelet checks for a decoded request path (section 3.4).
    pub fn subresources(self, path: &str) -> Subresources {
        subresources(self, path)
    }
}

impl From<KubeletVersion> for KubeletModel {
    /// The version with its gates at their defaults.
    fn from(version: KubeletVersion) -> Self {
        KubeletModel::for_version(version)
    }
}

/// A `nodes/<subresource>` the kubelet authorizes against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Subresource {
    /// `nodes/proxy`: everything without a dedicated subresource, including exec.
    Proxy,
    /// `nodes/stats`.
    Stats,
    /// `nodes/metrics`.
    Metrics,
    /// `nodes/log`.
    Log,
    /// `nodes/checkpoint` (1.25+).
    Checkpoint,
    /// `nodes/pods` (fine-grained).
    Pods,
    /// `nodes/healthz` (fine-grained).
    Healthz,
    /// `nodes/configz` (fine-grained; also `/flagz` in 1.36).
    Configz,
    /// `nodes/statusz`.
    Statusz,
}

impl Subresource {
    /// Every subresource, in a stable order.
    pub const ALL: [Subresource; 9] = [
        Subresource::Proxy,
        Subresource::Stats,
        Subresource::Metrics,
        Subresource::Log,
        Subresource::Checkpoint,
        Subresource::Pods,
        Subresource::Healthz,
        Subresource::Configz,
        Subresource::Statusz,
    ];

    /// The subresource name as it appears in SubjectAccessReviews and RBAC (`nodes/<name>`).
    pub fn as_str(self) -> &'static str {
        match self {
            Subresource::Proxy => "proxy",
            Subresource::Stats => "stats",
            Subresource::Metrics => "metrics",
            Subresource::Log => "log",
            Subresource::Checkpoint => "checkpoint",
            Subresource::Pods => "pods",
            Subresource::Healthz => "healthz",
            Subresource::Configz => "configz",
            Subresource::Statusz => "statusz",
        }
    }

    /// Parse a subresource name.
    pub fn parse(s: &str) -> Option<Subresource> {
        Subresource::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

impl fmt::Display for Subresource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The ordered subresource checks for one request: one or two entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Subresources {
    first: Subresource,
    fallback: Option<Subresource>,
}

impl Subresources {
    fn one(s: Subresource) -> Self {
        Subresources {
            first: s,
            fallback: None,
        }
    }

    fn two(fine: Subresource, fallback: Subresource) -> Self {
        Subresources {
            first: fine,
            fallback: Some(fallback),
        }
    }

    /// The checks in evaluation order.
    pub fn iter(&self) -> impl Iterator<Item = Subresource> + '_ {
        std::iter::once(self.first).chain(self.fallback)
    }

    /// The checks as a vector.
    pub fn to_vec(&self) -> Vec<Subresource> {
        self.iter().collect()
    }

    /// The check at position `i`.
    pub fn get(&self, i: usize) -> Option<Subresource> {
        match i {
            0 => Some(self.first),
            1 => self.fallback,
            _ => None,
        }
    }

    /// Number of checks (1 or 2).
    pub fn len(&self) -> usize {
        1 + usize::from(self.fallback.is_some())
    }

    /// Never empty; present for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// The HTTP methods the kubelet maps to a verb (`GET`, `POST`, `PUT`, `PATCH`, `DELETE`); every
/// other method gives the empty verb.
pub const MAPPED_METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// Every verb a kubelet can send: the mapped methods' verbs, then the empty verb.
pub fn verbs() -> impl Iterator<Item = &'static str> {
    MAPPED_METHODS
        .iter()
        .map(|m| verb_for_method(m))
        .chain(std::iter::once(""))
}

/// The kubelet's verb for an HTTP method: exact, case-sensitive. HEAD, OPTIONS and anything else
/// give the empty verb, which RBAC matches only with `*` (section 3.2).
pub fn verb_for_method(method: &str) -> &'static str {
    match method {
        "POST" => "create",
        "GET" => "get",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" => "delete",
        _ => "",
    }
}

/// `isSubpath` exactly as the kubelet: `path` loses one trailing slash, then `subpath` must equal it
/// or continue it with `/`.
pub fn is_subpath(subpath: &str, path: &str) -> bool {
    let path = path.strip_suffix('/').unwrap_or(path);
    subpath == path
        || (subpath.starts_with(path) && subpath.as_bytes().get(path.len()) == Some(&b'/'))
}

/// The kubelet path constants used by the attribute builder.
pub mod paths {
    /// `statsPath`.
    pub const STATS: &str = "/stats/";
    /// `metricsPath`.
    pub const METRICS: &str = "/metrics";
    /// `logsPath`.
    pub const LOGS: &str = "/logs/";
    /// `checkpointPath`.
    pub const CHECKPOINT: &str = "/checkpoint/";
    /// `podsPath`.
    pub const PODS: &str = "/pods";
    /// `runningPodsPath` (lower case).
    pub const RUNNING_PODS: &str = "/runningpods/";
    /// `healthz.DefaultHealthzPath`.
    pub const HEALTHZ: &str = "/healthz";
    /// `configz.DefaultConfigzPath`.
    pub const CONFIGZ: &str = "/configz";
    /// `statusz.DefaultStatuszPath`.
    pub const STATUSZ: &str = "/statusz";
    /// `flagz.DefaultFlagzPath`.
    pub const FLAGZ: &str = "/flagz";
}

/// The ordered subresource checks for a decoded path, for a kubelet model (section 3.4).
///
/// Version columns: 1.21-1.31 one attribute (checkpoint from 1.25); 1.32 fine-grained switch when
/// the gate is on; 1.33-1.35 add `statusz` to the gated switch (the reference pins this shape to
/// 1.33/1.34 and does not pin the release that moved to the 1.36 shape; we keep 1.35 with 1.33/1.34);
/// 1.36+ map `/statusz` to `statusz` and `/flagz` to `configz`, ungated and without fallback.
pub fn subresources(model: KubeletModel, path: &str) -> Subresources {
    use paths::*;
    let minor = model.version.minor;
    let fine = if model.fine_grained {
        if is_subpath(path, PODS) {
            Some(Subresource::Pods)
        } else if is_subpath(path, HEALTHZ) {
            Some(Subresource::Healthz)
        } else if is_subpath(path, CONFIGZ) {
            Some(Subresource::Configz)
        } else if (33..GA_MINOR).contains(&minor) && is_subpath(path, STATUSZ) {
            Some(Subresource::Statusz)
        } else if is_subpath(path, RUNNING_PODS) {
            Some(Subresource::Pods)
        } else {
            None
        }
    } else {
        None
    };
    let coarse = if is_subpath(path, STATS) {
        Subresource::Stats
    } else if is_subpath(path, METRICS) {
        Subresource::Metrics
    } else if is_subpath(path, LOGS) {
        Subresource::Log
    } else if model.version.has_checkpoint() && is_subpath(path, CHECKPOINT) {
        Subresource::Checkpoint
    } else if minor >= GA_MINOR && is_subpath(path, STATUSZ) {
        Subresource::Statusz
    } else if minor >= GA_MINOR && is_subpath(path, FLAGZ) {
        Subresource::Configz
    } else {
        Subresource::Proxy
    };
    match fine {
        Some(f) => Subresources::two(f, coarse),
        None => Subresources::one(coarse),
    }
}

/// The endpoints that execute commands or open streams into containers: `/exec`, `/attach`,
/// `/run` and `/portForward` (DESIGN, `authorization.strictUpgradeVerb`). A WebSocket `GET` to one
/// of them is authorized as `create` when the upgrade verb is strict. `/containerLogs` is not
/// one: it serves `GET` only and the kubelet authorizes it as `get` (reference 5.1).
pub const STREAMING_PATHS: &[&str] = &["/exec", "/attach", "/run", "/portForward"];

/// Whether `path` is under one of [`STREAMING_PATHS`] (the one definition of "streaming").
pub fn is_streaming_path(path: &str) -> bool {
    STREAMING_PATHS.iter().any(|p| is_subpath(path, p))
}

/// Why the modelled subresources of `path` on `version` are not settled by a primary source at the
/// release tag, or `None` when they are: `/statusz` and `/flagz` on 1.33-1.35 (README, "`/statusz`
/// and `/flagz` on 1.33-1.35"). The model keeps the early 1.33 mapping there; the kubectl plugin says
/// so beside its answer.
pub fn uncertain_mapping(version: KubeletVersion, path: &str) -> Option<&'static str> {
    use paths::{FLAGZ, STATUSZ};
    if !(33..GA_MINOR).contains(&version.minor) {
        return None;
    }
    if is_subpath(path, STATUSZ) || is_subpath(path, FLAGZ) {
        Some(
            "the 1.33-1.35 mapping of /statusz and /flagz is not settled by a source at the release \
             tag (alpha ComponentStatusz/ComponentFlagz endpoints): modelled as the early 1.33 code, \
             /statusz -> [statusz proxy] under the gate, /flagz -> [proxy]",
        )
    } else {
        None
    }
}
