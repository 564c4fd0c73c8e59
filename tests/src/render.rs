//! The template step for the files in `envoy/`: every `${NAME}` (upper-case letters, digits and
//! `_`, starting with a letter) is replaced by its value. Anything else that looks like a
//! placeholder (`${...}`, `${lower}`, a lone `$`) is left alone. A placeholder without a value, or
//! a value for a name the template does not use, is an error, so that a template and its users
//! cannot drift apart silently.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

/// Where a placeholder starts in `text` at byte `i`: the name and the index just past `}`.
fn placeholder_at(text: &str, i: usize) -> Option<(&str, usize)> {
    let rest = text.get(i..)?.strip_prefix("${")?;
    let end = rest.find('}')?;
    let name = rest.get(..end)?;
    let mut chars = name.chars();
    let first = chars.next()?;
    if !first.is_ascii_uppercase()
        || !chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    {
        return None;
    }
    Some((name, i + 2 + end + 1))
}

/// The placeholder names a template uses.
pub fn placeholders(template: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut i = 0;
    while let Some(off) = template.get(i..).and_then(|r| r.find("${")) {
        let at = i + off;
        match placeholder_at(template, at) {
            Some((name, next)) => {
                out.insert(name.to_string());
                i = next;
            }
            None => i = at + 2,
        }
    }
    out
}

/// Replace every placeholder. Errors name the missing and the unused values.
pub fn render(template: &str, vars: &BTreeMap<String, String>) -> anyhow::Result<String> {
    let used = placeholders(template);
    let missing: Vec<&String> = used.iter().filter(|n| !vars.contains_key(*n)).collect();
    let unused: Vec<&String> = vars.keys().filter(|n| !used.contains(*n)).collect();
    if !missing.is_empty() || !unused.is_empty() {
        bail!("template placeholders: missing values for {missing:?}, values for unknown names {unused:?}");
    }
    let mut out = String::with_capacity(template.len() + 1024);
    let mut i = 0;
    while let Some(off) = template.get(i..).and_then(|r| r.find("${")) {
        let at = i + off;
        out.push_str(template.get(i..at).unwrap_or_default());
        match placeholder_at(template, at) {
            Some((name, next)) => {
                out.push_str(vars.get(name).map_or("", String::as_str));
                i = next;
            }
            None => {
                out.push_str("${");
                i = at + 2;
            }
        }
    }
    out.push_str(template.get(i..).unwrap_or_default());
    Ok(out)
}

/// The workspace root (the directory holding `envoy/`).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")),
        Path::to_path_buf,
    )
}

/// `envoy/kubelet-front-proxy.yaml`.
pub fn front_proxy_template_path() -> PathBuf {
    workspace().join("envoy/kubelet-front-proxy.yaml")
}

/// The values of `envoy/kubelet-front-proxy.yaml`'s placeholders (see its header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontProxyParams {
    /// `ADMIN_PORT` (0 = any; read it back with `--admin-address-path`).
    pub admin_port: u16,
    /// `LISTEN_ADDRESS`.
    pub listen_address: String,
    /// `LISTEN_PORT` (0 = any; read it back from the admin `/listeners`).
    pub listen_port: u16,
    /// `SERVER_CERT`.
    pub server_cert: PathBuf,
    /// `SERVER_KEY`.
    pub server_key: PathBuf,
    /// `CLIENT_CA`.
    pub client_ca: PathBuf,
    /// `FILTER_WASM`.
    pub filter_wasm: PathBuf,
    /// `NODE_NAME`.
    pub node_name: String,
    /// `KUBELET_VERSION`.
    pub kubelet_version: String,
    /// `ANONYMOUS_ENABLED`.
    pub anonymous_enabled: bool,
    /// `STRICT_UPGRADE_VERB`.
    pub strict_upgrade_verb: bool,
    /// `ENFORCEMENT` (`Enforce` or `Shadow`).
    pub enforcement: String,
    /// `APISERVER_ADDRESS`.
    pub apiserver_address: String,
    /// `APISERVER_PORT`.
    pub apiserver_port: u16,
    /// `APISERVER_NAME`.
    pub apiserver_name: String,
    /// `APISERVER_CA`.
    pub apiserver_ca: PathBuf,
    /// `APISERVER_TIMEOUT` (a Go duration: `10s`).
    pub apiserver_timeout: String,
    /// `LIMITS` (a JSON object; `{}` for the defaults).
    pub limits: String,
    /// `AUDIT` (a JSON object on one line; `{ "enabled": true }` for the built-in audit policy).
    pub audit: String,
    /// `PROXY_CLIENT_CERT`.
    pub proxy_client_cert: PathBuf,
    /// `PROXY_CLIENT_KEY`.
    pub proxy_client_key: PathBuf,
    /// `KUBELET_ADDRESS`.
    pub kubelet_address: String,
    /// `KUBELET_PORT`.
    pub kubelet_port: u16,
    /// `KUBELET_SERVER_NAME`.
    pub kubelet_server_name: String,
    /// `KUBELET_CA`.
    pub kubelet_ca: PathBuf,
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

impl FrontProxyParams {
    /// The placeholder values.
    pub fn vars(&self) -> BTreeMap<String, String> {
        let pairs = [
            ("ADMIN_PORT", self.admin_port.to_string()),
            ("LISTEN_ADDRESS", self.listen_address.clone()),
            ("LISTEN_PORT", self.listen_port.to_string()),
            ("SERVER_CERT", p(&self.server_cert)),
            ("SERVER_KEY", p(&self.server_key)),
            ("CLIENT_CA", p(&self.client_ca)),
            ("FILTER_WASM", p(&self.filter_wasm)),
            ("NODE_NAME", self.node_name.clone()),
            ("KUBELET_VERSION", self.kubelet_version.clone()),
            ("ANONYMOUS_ENABLED", self.anonymous_enabled.to_string()),
            ("STRICT_UPGRADE_VERB", self.strict_upgrade_verb.to_string()),
            ("ENFORCEMENT", self.enforcement.clone()),
            ("APISERVER_ADDRESS", self.apiserver_address.clone()),
            ("APISERVER_PORT", self.apiserver_port.to_string()),
            ("APISERVER_NAME", self.apiserver_name.clone()),
            ("APISERVER_CA", p(&self.apiserver_ca)),
            ("APISERVER_TIMEOUT", self.apiserver_timeout.clone()),
            ("LIMITS", self.limits.clone()),
            ("AUDIT", self.audit.clone()),
            ("PROXY_CLIENT_CERT", p(&self.proxy_client_cert)),
            ("PROXY_CLIENT_KEY", p(&self.proxy_client_key)),
            ("KUBELET_ADDRESS", self.kubelet_address.clone()),
            ("KUBELET_PORT", self.kubelet_port.to_string()),
            ("KUBELET_SERVER_NAME", self.kubelet_server_name.clone()),
            ("KUBELET_CA", p(&self.kubelet_ca)),
        ];
        pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }

    /// `envoy/kubelet-front-proxy.yaml` rendered with these values.
    pub fn render(&self) -> anyhow::Result<String> {
        let path = front_proxy_template_path();
        let template = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        render(&template, &self.vars()).with_context(|| format!("rendering {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn replaces_names_and_leaves_the_rest() {
        let t = "a ${A_1} b ${lower} ${...} $ ${A_1}${B}";
        assert_eq!(
            placeholders(t).into_iter().collect::<Vec<_>>(),
            vec!["A_1".to_string(), "B".to_string()]
        );
        let out = render(t, &vars(&[("A_1", "x"), ("B", "y")])).unwrap();
        assert_eq!(out, "a x b ${lower} ${...} $ xy");
    }

    #[test]
    fn missing_and_unused_values_are_errors() {
        let e = render("${A} ${B}", &vars(&[("A", "1")])).unwrap_err();
        assert!(e.to_string().contains("\"B\""), "{e}");
        let e = render("${A}", &vars(&[("A", "1"), ("C", "2")])).unwrap_err();
        assert!(e.to_string().contains("\"C\""), "{e}");
    }

    #[test]
    fn unterminated_placeholder_is_text() {
        assert_eq!(render("x ${A", &BTreeMap::new()).unwrap(), "x ${A");
    }
}
