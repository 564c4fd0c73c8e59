//! Reading the kubelet's configuration from the node's files, as the kubelet does: its `--config`
//! file and the `--config-dir` drop-ins, merged by the engine
//! ([`kubelet_authz::kubeletconfig::effective_config`]); which drop-ins count and in which order is
//! the engine's rule too ([`kubelet_authz::kubeletconfig::dropin_names`]). This module reads the
//! files, and runs `inspect`, which prints what the agent sees.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use kubelet_authz::kubeletconfig::{dropin_names, effective_config, EffectiveConfig, Source};

use crate::cli::InspectArgs;

/// Read the kubelet's configuration file `config` and, when given, the drop-ins of `config_dir`
/// (a missing directory is an error naming it, as it is for the kubelet), and merge them.
///
/// As for the kubelet, a `config_dir` that is a symbolic link is not walked (Go's
/// `filepath.WalkDir` does not follow links, not even its root): its drop-ins do not count. Point
/// `--config-dir` at the real directory.
pub fn load(config: &Path, config_dir: Option<&Path>) -> anyhow::Result<EffectiveConfig> {
    let config = absolute(config)?;
    let base = read_source(&config)?;
    let mut dropins = Vec::new();
    if let Some(dir) = config_dir {
        let dir = absolute(dir)?;
        let meta = std::fs::symlink_metadata(&dir).with_context(|| {
            format!(
                "{}: cannot read the kubelet's drop-in directory (--config-dir)",
                dir.display()
            )
        })?;
        if meta.is_dir() {
            let mut entries = Vec::new();
            walk(&dir, "", &mut entries)?;
            for rel in dropin_names(entries) {
                dropins.push(read_source(&dir.join(&rel))?);
            }
        } else {
            // Go's filepath.WalkDir does not follow a symbolic link, not even the root: the kubelet
            // sees one entry that is not a directory, and reads it only if its name ends in `.conf`.
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !dropin_names([name]).is_empty() {
                dropins.push(read_source(&dir)?);
            }
        }
    }
    Ok(effective_config(&base, &dropins)?)
}

/// The path made absolute against the current directory (the kubelet does the same before
/// resolving the relative paths inside the file).
fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path)
        .with_context(|| format!("{}: cannot resolve the path", path.display()))
}

fn read_source(path: &Path) -> anyhow::Result<Source> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "{}: cannot read the kubelet configuration file",
            path.display()
        )
    })?;
    Ok(Source::new(path.display().to_string(), text))
}

/// Every entry under `dir` that is not a directory, as `/`-separated paths relative to the
/// drop-in directory, subdirectories included (Go's `filepath.WalkDir`, which does not follow
/// symbolic links to directories).
fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) -> anyhow::Result<()> {
    let entries = std::fs::read_dir(dir).with_context(|| {
        format!(
            "{}: cannot read the kubelet's drop-in directory (--config-dir)",
            dir.display()
        )
    })?;
    for entry in entries {
        let entry = entry.with_context(|| format!("{}: cannot list", dir.display()))?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            bail!(
                "{}: a file name that is not UTF-8 in the drop-in directory",
                entry.path().display()
            );
        };
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let kind = entry
            .file_type()
            .with_context(|| format!("{}: cannot stat", entry.path().display()))?;
        if kind.is_dir() {
            walk(&entry.path(), &rel, out)?;
        } else {
            out.push(rel);
        }
    }
    Ok(())
}

/// `inspect`: print the effective configuration, in KubeletConfiguration field names (with the
/// defaults of the fields the agent reads filled in), plus an `envoy` object with what the proxy
/// derives from it.
pub fn inspect(args: &InspectArgs) -> anyhow::Result<ExitCode> {
    let json = match args.output.as_str() {
        "json" => true,
        "yaml" => false,
        other => bail!("-o {other}: unknown output format; use json or yaml"),
    };
    let cfg = load(&args.kubelet_config, args.config_dir.as_deref())?;
    let mut doc = cfg.effective_document();
    let envoy = serde_json::to_value(cfg.envoy_tls()).context("serialising the TLS policy")?;
    if let Some(map) = doc.as_object_mut() {
        map.insert("envoy".to_string(), envoy);
    }
    let text = if json {
        serde_json::to_string_pretty(&doc).context("serialising the configuration")? + "\n"
    } else {
        serde_yaml_ng::to_string(&doc).context("serialising the configuration")?
    };
    std::io::stdout()
        .write_all(text.as_bytes())
        .context("writing to stdout")?;
    Ok(ExitCode::SUCCESS)
}
