//! The small wasm modules under `harness/testdata/` (the probe filter, the benchmark module): each
//! is its own crate outside the workspace, built for `wasm32-wasip1` on demand by the tests and
//! benches that load it, into a target directory they choose.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Why a testdata module could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TestdataError {
    /// `cargo` could not be started.
    #[error("run cargo to build harness/testdata/{name}: {source}")]
    Spawn {
        /// The module's folder under `harness/testdata/`.
        name: String,
        /// The spawn error.
        source: std::io::Error,
    },
    /// `cargo build` failed.
    #[error("building harness/testdata/{name} failed (is the wasm32-wasip1 target installed? `rustup target add wasm32-wasip1`):\n{stderr}")]
    Build {
        /// The module's folder under `harness/testdata/`.
        name: String,
        /// What cargo printed.
        stderr: String,
    },
}

/// Build `harness/testdata/<name>` (release, `wasm32-wasip1`) with `target_root/<name>` as its
/// target directory, and answer the path of `<artefact>.wasm`. The caller's `RUSTFLAGS` are not
/// passed on (they are for the host build).
pub fn build(name: &str, artefact: &str, target_root: &Path) -> Result<PathBuf, TestdataError> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
        .join("Cargo.toml");
    let target = target_root.join(name);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args(["build", "--release", "--quiet", "--target", "wasm32-wasip1"])
        .arg("--manifest-path")
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .map_err(|source| TestdataError::Spawn {
            name: name.to_string(),
            source,
        })?;
    if !output.status.success() {
        return Err(TestdataError::Build {
            name: name.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    Ok(target
        .join("wasm32-wasip1")
        .join("release")
        .join(format!("{artefact}.wasm")))
}
