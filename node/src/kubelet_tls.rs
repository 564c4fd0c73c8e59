//! ADAPTER (until branch `kcfg` lands `node/src/kubeletconfig.rs`, whose
//! `load(config, config_dir) -> EffectiveConfig` with `.envoy_tls()`, `.address` and `.port` is
//! the one home of the rule): the few KubeletConfiguration fields the render path needs, read
//! from the `--config` file and its `--config-dir` drop-ins (`*.conf`, lexical order, later wins).
//! The callers go through [`load`] only, so swapping this module for `kcfg`'s is one change.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::bootstrap::EnvoyTls;

/// What the proxy derives from the kubelet's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeletTls {
    /// The TLS policy as Envoy spells it.
    pub tls: EnvoyTls,
    /// `address` (default `0.0.0.0`).
    pub address: IpAddr,
    /// `port` (default 10250).
    pub port: u16,
}

/// A configuration the proxy cannot carry over, naming the file and field.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct KubeletTlsError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong.
    pub message: String,
}

fn go_to_boringssl(name: &str) -> Option<Option<&'static str>> {
    Some(Some(match name {
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => "ECDHE-ECDSA-AES128-GCM-SHA256",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => "ECDHE-RSA-AES128-GCM-SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => "ECDHE-ECDSA-AES256-GCM-SHA384",
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => "ECDHE-RSA-AES256-GCM-SHA384",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305"
        | "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256" => "ECDHE-ECDSA-CHACHA20-POLY1305",
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305" | "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" => {
            "ECDHE-RSA-CHACHA20-POLY1305"
        }
        "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA" => "ECDHE-ECDSA-AES128-SHA",
        "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA" => "ECDHE-RSA-AES128-SHA",
        "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA" => "ECDHE-ECDSA-AES256-SHA",
        "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA" => "ECDHE-RSA-AES256-SHA",
        "TLS_RSA_WITH_AES_128_GCM_SHA256" => "AES128-GCM-SHA256",
        "TLS_RSA_WITH_AES_256_GCM_SHA384" => "AES256-GCM-SHA384",
        "TLS_RSA_WITH_AES_128_CBC_SHA" => "AES128-SHA",
        "TLS_RSA_WITH_AES_256_CBC_SHA" => "AES256-SHA",
        // TLS 1.3 suites are not configurable (in Go as in BoringSSL): all stay on.
        "TLS_AES_128_GCM_SHA256" | "TLS_AES_256_GCM_SHA384" | "TLS_CHACHA20_POLY1305_SHA256" => {
            return Some(None)
        }
        _ => return None,
    }))
}

fn read(path: &Path) -> Result<Value, KubeletTlsError> {
    let err = |message: String| KubeletTlsError {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let v: Value =
        serde_yaml_ng::from_str(&text).map_err(|e| err(format!("not YAML or JSON: {e}")))?;
    Ok(if v.is_null() {
        Value::Object(Default::default())
    } else {
        v
    })
}

/// The effective `tlsMinVersion`, `tlsCipherSuites`, `address` and `port` of `config` plus the
/// drop-ins of `config_dir`.
pub fn load(config: &Path, config_dir: Option<&Path>) -> Result<KubeletTls, KubeletTlsError> {
    let mut files = vec![config.to_path_buf()];
    if let Some(dir) = config_dir {
        if let Ok(rd) = std::fs::read_dir(dir) {
            let mut drop_ins: Vec<PathBuf> = rd
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "conf"))
                .collect();
            drop_ins.sort();
            files.extend(drop_ins);
        }
    }
    let mut min: Option<(PathBuf, String)> = None;
    let mut suites: Option<(PathBuf, Vec<Value>)> = None;
    let mut address: Option<(PathBuf, String)> = None;
    let mut port: Option<(PathBuf, u64)> = None;
    for f in &files {
        let v = read(f)?;
        let err = |message: String| KubeletTlsError {
            path: f.clone(),
            message,
        };
        if let Some(m) = v.get("tlsMinVersion") {
            let s = m
                .as_str()
                .ok_or_else(|| err("tlsMinVersion: expected a string".into()))?;
            min = Some((f.clone(), s.to_string()));
        }
        if let Some(s) = v.get("tlsCipherSuites") {
            let list = s
                .as_array()
                .ok_or_else(|| err("tlsCipherSuites: expected a list".into()))?;
            suites = Some((f.clone(), list.clone()));
        }
        if let Some(a) = v.get("address") {
            let s = a
                .as_str()
                .ok_or_else(|| err("address: expected a string".into()))?;
            address = Some((f.clone(), s.to_string()));
        }
        if let Some(p) = v.get("port") {
            let n = p
                .as_u64()
                .ok_or_else(|| err("port: expected a number".into()))?;
            port = Some((f.clone(), n));
        }
    }
    let min_version = match &min {
        None => "TLSv1_2",
        Some((f, m)) => match m.as_str() {
            "" | "VersionTLS10" | "VersionTLS11" | "VersionTLS12" => "TLSv1_2",
            "VersionTLS13" => "TLSv1_3",
            other => {
                return Err(KubeletTlsError {
                    path: f.clone(),
                    message: format!(
                        "tlsMinVersion: `{other}` is not one of VersionTLS10..VersionTLS13"
                    ),
                })
            }
        },
    };
    let mut cipher_suites = Vec::new();
    if let Some((f, list)) = &suites {
        for s in list {
            let name = s.as_str().unwrap_or_default();
            match go_to_boringssl(name) {
                Some(Some(b)) => cipher_suites.push(b.to_string()),
                Some(None) => {}
                None => {
                    return Err(KubeletTlsError {
                        path: f.clone(),
                        message: format!("tlsCipherSuites: `{s}` has no Envoy equivalent"),
                    })
                }
            }
        }
    }
    let address = match address {
        None => IpAddr::from([0, 0, 0, 0]),
        Some((f, a)) => a.parse().map_err(|_| KubeletTlsError {
            path: f,
            message: format!("address: `{a}` is not an IP address"),
        })?,
    };
    let port = match port {
        None => 10250,
        Some((f, p)) => u16::try_from(p).map_err(|_| KubeletTlsError {
            path: f,
            message: format!("port: {p} is not a port number"),
        })?,
    };
    Ok(KubeletTls {
        tls: EnvoyTls {
            min_version: min_version.to_string(),
            cipher_suites,
        },
        address,
        port,
    })
}
