//! The kubelet command line: words split as a POSIX shell splits them (the `shlex` crate), then
//! the pflag subset of the flags that decide API access. Unknown flags are skipped: the kubelet has
//! hundreds that do not affect it. pflag's rule that a boolean flag takes its value only after `=`
//! (`--anonymous-auth false` is `--anonymous-auth=true` and a stray `false`) is an error here,
//! as that line almost never means what it says.

use super::{parse_go_bool, KubeletConfigError, KubeletSettings, SettingsSource};

/// Split a command line into words as a POSIX shell does: white space separates, single and
/// double quotes group, a backslash escapes, `\` + newline continues a line, `#` starts a comment.
fn split_words(text: &str) -> Result<Vec<String>, KubeletConfigError> {
    shlex::split(text).ok_or_else(|| {
        KubeletConfigError::Syntax(
            "unterminated quote or trailing backslash in the command line".into(),
        )
    })
}

/// The flags this module reads, and whether each is boolean.
const BOOL_FLAGS: &[&str] = &["anonymous-auth", "authentication-token-webhook"];
const VALUE_FLAGS: &[&str] = &[
    "client-ca-file",
    "authorization-mode",
    "read-only-port",
    "feature-gates",
    "config",
];

/// One parsed flag occurrence.
struct FlagUse {
    name: String,
    value: String,
}

/// Parse a command line into the flags this module reads (the last occurrence wins).
/// Unknown flags are skipped: the kubelet has hundreds that do not affect API access.
fn parse_flags(text: &str) -> Result<Vec<FlagUse>, KubeletConfigError> {
    let words = split_words(text)?;
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(word) = words.get(i) {
        i += 1;
        let Some(body) = word.strip_prefix("--").or_else(|| word.strip_prefix('-')) else {
            continue; // the binary name, or a value of a flag we do not read
        };
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        if BOOL_FLAGS.contains(&name) {
            let value = match inline {
                Some(v) => v.to_string(),
                None => {
                    if let Some(next) = words.get(i) {
                        if parse_go_bool(next).is_some() {
                            return Err(KubeletConfigError::Flag {
                                flag: format!("--{name} {next}"),
                                message: format!(
                                    "a boolean flag takes its value after `=`: write `--{name}={next}` (the kubelet reads `--{name} {next}` as `--{name}=true`)"
                                ),
                            });
                        }
                    }
                    "true".to_string()
                }
            };
            out.push(FlagUse {
                name: name.to_string(),
                value,
            });
        } else if VALUE_FLAGS.contains(&name) {
            let value = match inline {
                Some(v) => v.to_string(),
                None => {
                    let v = words
                        .get(i)
                        .cloned()
                        .ok_or_else(|| KubeletConfigError::Flag {
                            flag: format!("--{name}"),
                            message: "flag needs a value".into(),
                        })?;
                    i += 1;
                    v
                }
            };
            out.push(FlagUse {
                name: name.to_string(),
                value,
            });
        }
    }
    Ok(out)
}

/// The `--config` file a kubelet command line names, if any.
pub fn command_line_config_path(text: &str) -> Result<Option<String>, KubeletConfigError> {
    Ok(parse_flags(text)?
        .into_iter()
        .rfind(|f| f.name == "config" && !f.value.is_empty())
        .map(|f| f.value))
}

/// Parse a kubelet command line with the legacy flag defaults (no config file).
pub fn parse_command_line(text: &str) -> Result<KubeletSettings, KubeletConfigError> {
    apply_command_line(KubeletSettings::legacy_flag_defaults(), text)
}

/// Lay a command line's flags over `base` (the legacy defaults, or the settings of the
/// `--config` file); flags win over the file, as in the kubelet.
pub fn apply_command_line(
    mut base: KubeletSettings,
    text: &str,
) -> Result<KubeletSettings, KubeletConfigError> {
    for flag in parse_flags(text)? {
        let bad = |message: String| KubeletConfigError::Flag {
            flag: format!("--{}={}", flag.name, flag.value),
            message,
        };
        match flag.name.as_str() {
            "anonymous-auth" => base.anonymous_auth.set(
                parse_go_bool(&flag.value).ok_or_else(|| bad("expected true or false".into()))?,
            ),
            "authentication-token-webhook" => base.webhook_authentication.set(
                parse_go_bool(&flag.value).ok_or_else(|| bad("expected true or false".into()))?,
            ),
            "client-ca-file" => base.client_ca_file.set(flag.value.clone()),
            "authorization-mode" => base.authorization_mode.set(flag.value.clone()),
            "read-only-port" => base.read_only_port.set(
                flag.value
                    .parse()
                    .map_err(|_| bad("expected a port number (0 disables the port)".into()))?,
            ),
            "feature-gates" => {
                let gates = crate::gates::parse_feature_gates(
                    &flag.value,
                    crate::gates::UnknownGates::Ignore,
                )
                .map_err(|e| bad(e.to_string()))?;
                if let Some(v) = gates.kubelet_fine_grained_authz {
                    base.fine_grained_authz_gate = Some(v);
                }
                if let Some(v) = gates.allow_parsing_user_uid_from_cert_auth {
                    base.cert_uid_gate = Some(v);
                }
            }
            "config" => {
                base.config_file = Some(flag.value.clone());
                if base.source == SettingsSource::ConfigFile {
                    base.source = SettingsSource::ConfigFileAndCommandLine;
                }
            }
            _ => {}
        }
    }
    Ok(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_split_as_a_shell_splits_them() {
        let s = parse_command_line(
            "kubelet \\\n  --client-ca-file='/etc/a b/ca.crt' \\\n  --authorization-mode=\"Web\"hook # --read-only-port=0\n",
        )
        .unwrap();
        assert_eq!(s.client_ca_file.value, "/etc/a b/ca.crt");
        assert_eq!(s.authorization_mode.value, "Webhook");
        assert!(!s.read_only_port.explicit, "a comment is not a flag");
    }

    #[test]
    fn a_trailing_backslash_is_an_error() {
        assert!(matches!(
            parse_command_line("kubelet --anonymous-auth=false \\"),
            Err(KubeletConfigError::Syntax(_))
        ));
    }
}
