//! Reading inputs: files or `-` for stdin, and `--rbac-file` into the RBAC evaluator's store
//! (`kubelet_authz::rbac`).

use std::io::Read as _;

use anyhow::{anyhow, Context as _};
use kubelet_authz::rbac::RbacStore;

use crate::error::{usage, CliError};

/// Read a file, or stdin for `-`.
pub fn read_input(name: &str) -> Result<String, CliError> {
    if name == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading stdin")?;
        return Ok(s);
    }
    std::fs::read_to_string(name)
        .map_err(|e| anyhow!("cannot read `{name}`: {e}: check the path"))
        .map_err(Into::into)
}

/// Load every `--rbac-file` into one store.
pub fn load_files(files: &[String]) -> Result<RbacStore, CliError> {
    if files.iter().filter(|f| f.as_str() == "-").count() > 1 {
        return Err(usage("`--rbac-file -` (stdin) can be given only once"));
    }
    let mut store = RbacStore::new();
    for file in files {
        let text = read_input(file)?;
        store
            .load_str(&text, file)
            .map_err(|e| usage(format!("{e}")))?;
    }
    Ok(store)
}

/// The kubelet's `--config-dir` drop-ins, read in the order the kubelet applies them (the rule is
/// the engine's, [`kubelet_authz::kubeletconfig::dropin_names`]; this only lists the directory,
/// subdirectories included, as Go's `filepath.WalkDir` does).
pub fn read_dropins(dir: &str) -> Result<Vec<kubelet_authz::kubeletconfig::Source>, CliError> {
    fn walk(dir: &std::path::Path, prefix: &str, out: &mut Vec<String>) -> Result<(), CliError> {
        let entries = std::fs::read_dir(dir).map_err(|e| {
            anyhow!(
                "cannot read the drop-in directory `{}` (--config-dir): {e}: check the path",
                dir.display()
            )
        })?;
        for entry in entries {
            let entry = entry.map_err(|e| anyhow!("cannot list `{}`: {e}", dir.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let kind = entry
                .file_type()
                .map_err(|e| anyhow!("cannot stat `{}`: {e}", entry.path().display()))?;
            if kind.is_dir() {
                walk(&entry.path(), &rel, out)?;
            } else {
                out.push(rel);
            }
        }
        Ok(())
    }
    let root = std::path::absolute(dir).unwrap_or_else(|_| std::path::PathBuf::from(dir));
    let root = root.as_path();
    let mut names = Vec::new();
    match std::fs::symlink_metadata(root) {
        Ok(meta) if meta.is_dir() => walk(root, "", &mut names)?,
        // Go's filepath.WalkDir does not follow a symbolic link, not even the root: the kubelet
        // sees one entry that is not a directory (read only if its name ends in `.conf`).
        Ok(_) => {
            let name = root
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            return kubelet_authz::kubeletconfig::dropin_names([name])
                .into_iter()
                .map(|_| {
                    let path = root.display().to_string();
                    let text = read_input(&path)?;
                    Ok(kubelet_authz::kubeletconfig::Source::new(path, text))
                })
                .collect();
        }
        Err(e) => {
            return Err(anyhow!(
                "cannot read the drop-in directory `{dir}` (--config-dir): {e}: check the path"
            )
            .into())
        }
    }
    kubelet_authz::kubeletconfig::dropin_names(names)
        .into_iter()
        .map(|rel| {
            let path = root.join(&rel).display().to_string();
            let text = read_input(&path)?;
            Ok(kubelet_authz::kubeletconfig::Source::new(path, text))
        })
        .collect()
}
