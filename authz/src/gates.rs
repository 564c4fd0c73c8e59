//! The `--feature-gates` flag (`Name=bool,...`, as the kubelet's component-base parses it): the
//! one parser that the KubeletConfiguration reader and the kubectl plugin call. Only
//! `KubeletFineGrainedAuthz` changes kubelet authorization; what happens to other names is the
//! caller's choice ([`UnknownGates`]).

use crate::kubelet::FeatureGates;

/// The only gate that changes kubelet authorization.
pub const KUBELET_FINE_GRAINED_AUTHZ: &str = "KubeletFineGrainedAuthz";

/// What to do with a gate name other than [`KUBELET_FINE_GRAINED_AUTHZ`].
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
    /// A gate other than `KubeletFineGrainedAuthz`, with [`UnknownGates::Refuse`].
    #[error("unknown gate `{0}`: only `KubeletFineGrainedAuthz` changes kubelet authorization")]
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
        if name != KUBELET_FINE_GRAINED_AUTHZ {
            match unknown {
                UnknownGates::Ignore => continue,
                UnknownGates::Refuse => return Err(GateParseError::Unknown(name.to_string())),
            }
        }
        let v =
            parse_go_bool(v.trim()).ok_or_else(|| GateParseError::NotABool(pair.to_string()))?;
        gates.kubelet_fine_grained_authz = Some(v);
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

    #[test]
    fn gates_parse_as_the_kubelet_and_the_plugin_need() {
        let on = FeatureGates {
            kubelet_fine_grained_authz: Some(true),
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
