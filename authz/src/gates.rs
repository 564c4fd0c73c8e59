//! The `--feature-gates` flag (`Name=bool,...`, as the kubelet's component-base parses it): the
//! one parser that the KubeletConfiguration reader and the kubectl plugin call. Two gates change
//! what the kubelet authenticates and authorizes: `KubeletFineGrainedAuthz` (the subresources)
//! and `AllowParsingUserUIDFromCertAuth` (the x509 user's UID, 1.33+); what happens to other
//! names is the caller's choice ([`UnknownGates`]). Whether a gate exists in a kubelet version
//! is [`crate::kubelet::KubeletModel::new`]'s to say.

use crate::kubelet::FeatureGates;

/// The gate that gives `/pods`, `/healthz` and `/configz` their own subresources.
pub const KUBELET_FINE_GRAINED_AUTHZ: &str = "KubeletFineGrainedAuthz";

/// The gate that lets the x509 authenticator read the certificate's UID (1.33+).
pub const ALLOW_PARSING_USER_UID_FROM_CERT_AUTH: &str = "AllowParsingUserUIDFromCertAuth";

/// What to do with a gate name other than [`KUBELET_FINE_GRAINED_AUTHZ`] and
/// [`ALLOW_PARSING_USER_UID_FROM_CERT_AUTH`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownGates {
    /// Skip it, value unchecked (a kubelet command line names many gates).
    Ignore,
    /// Refuse it, so that a typo does not go unnoticed (the plugin's `--feature-gates`).
    Refuse,
}

/// Why a `--feature-gates` value is refused. The messages name the pair, without the flag: the
/// caller prefixes its own field or flag name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GateParseError {
    /// A pair without `=`.
    #[error("`{0}` is not NAME=true|false")]
    NotAPair(String),
    /// A value that Go's `strconv.ParseBool` refuses.
    #[error("`{0}`: expected true or false")]
    NotABool(String),
    /// Another gate, with [`UnknownGates::Refuse`].
    #[error("unknown gate `{0}`: only `KubeletFineGrainedAuthz` and `AllowParsingUserUIDFromCertAuth` change kubelet authentication or authorization")]
    Unknown(String),
}

/// Parse a `--feature-gates` value: comma-separated `Name=bool` pairs, blanks around them and
/// empty pairs ignored, the last setting of a gate winning.
pub fn parse_feature_gates(
    value: &str,
    unknown: UnknownGates,
) -> Result<FeatureGates, GateParseError> {
    let mut gates = FeatureGates::default();
    for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, v) = pair
            .split_once('=')
            .ok_or_else(|| GateParseError::NotAPair(pair.to_string()))?;
        let name = name.trim();
        let slot = match name {
            KUBELET_FINE_GRAINED_AUTHZ => &mut gates.kubelet_fine_grained_authz,
            ALLOW_PARSING_USER_UID_FROM_CERT_AUTH => {
                &mut gates.allow_parsing_user_uid_from_cert_auth
            }
            _ => match unknown {
                UnknownGates::Ignore => continue,
                UnknownGates::Refuse => return Err(GateParseError::Unknown(name.to_string())),
            },
        };
        let v =
            parse_go_bool(v.trim()).ok_or_else(|| GateParseError::NotABool(pair.to_string()))?;
        *slot = Some(v);
    }
    Ok(gates)
}

/// Go's `strconv.ParseBool`, which both pflag and feature gates use.
pub fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::fine_grained("KubeletFineGrainedAuthz=false", Some(false), None)]
    #[case::cert_uid_off("AllowParsingUserUIDFromCertAuth=false", None, Some(false))]
    #[case::cert_uid_on("AllowParsingUserUIDFromCertAuth=1", None, Some(true))]
    #[case::both(
        "AllowParsingUserUIDFromCertAuth=F, KubeletFineGrainedAuthz=true",
        Some(true),
        Some(false)
    )]
    #[case::last_wins(
        "AllowParsingUserUIDFromCertAuth=false,AllowParsingUserUIDFromCertAuth=true",
        None,
        Some(true)
    )]
    fn both_gates_are_read(
        #[case] value: &str,
        #[case] fine_grained: Option<bool>,
        #[case] cert_uid: Option<bool>,
    ) {
        let want = FeatureGates {
            kubelet_fine_grained_authz: fine_grained,
            allow_parsing_user_uid_from_cert_auth: cert_uid,
        };
        assert_eq!(parse_feature_gates(value, UnknownGates::Refuse), Ok(want));
        assert_eq!(parse_feature_gates(value, UnknownGates::Ignore), Ok(want));
    }

    #[test]
    fn gates_parse_as_the_kubelet_and_the_plugin_need() {
        let on = FeatureGates {
            kubelet_fine_grained_authz: Some(true),
            ..FeatureGates::default()
        };
        assert_eq!(
            parse_feature_gates(" Foo=1 , KubeletFineGrainedAuthz=T ,", UnknownGates::Ignore),
            Ok(on)
        );
        assert_eq!(
            parse_feature_gates("", UnknownGates::Refuse),
            Ok(FeatureGates::default())
        );
        assert_eq!(
            parse_feature_gates("Foo=maybe", UnknownGates::Refuse),
            Err(GateParseError::Unknown("Foo".into()))
        );
        assert_eq!(
            parse_feature_gates("Foo=maybe", UnknownGates::Ignore),
            Ok(FeatureGates::default())
        );
        assert_eq!(
            parse_feature_gates("KubeletFineGrainedAuthz", UnknownGates::Ignore),
            Err(GateParseError::NotAPair("KubeletFineGrainedAuthz".into()))
        );
        assert_eq!(
            parse_feature_gates("KubeletFineGrainedAuthz=yes", UnknownGates::Refuse)
                .map_err(|e| e.to_string()),
            Err("`KubeletFineGrainedAuthz=yes`: expected true or false".into())
        );
    }
}
