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
