//! Shared setup for the host tests: builds the probe module (`harness/testdata/probe-filter`)
//! for `wasm32-wasip1` once per test process and loads it, and finds the real filter module.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use kubelet_authz_harness::host::{find_header, Headers, Host, HostOptions, Stream};

/// The real filter module (`Host::default_module_path`: `$KUBELET_AUTHZ_FILTER_WASM` or the
/// release artefact); a missing one fails the test with how to build it, never skips it.
pub fn filter_module() -> PathBuf {
    let path = Host::default_module_path();
    assert!(
        path.exists(),
        "filter module {} is missing: run `cargo build -p kubelet-authz-filter --target wasm32-wasip1 --release` \
         (with the same CARGO_TARGET_DIR) or set KUBELET_AUTHZ_FILTER_WASM",
        path.display()
    );
    path
}

/// Path of the probe module, building it on first use.
pub fn probe_path() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("testdata")
                .join("probe-filter")
                .join("Cargo.toml");
            let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("probe-filter");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let output = Command::new(cargo)
                .args(["build", "--release", "--quiet", "--target", "wasm32-wasip1"])
                .arg("--manifest-path")
                .arg(&manifest)
                .env("CARGO_TARGET_DIR", &target)
                .env_remove("RUSTFLAGS")
                .env_remove("CARGO_ENCODED_RUSTFLAGS")
                .output()
                .expect("run cargo to build the probe module");
            assert!(
                output.status.success(),
                "building the probe module failed:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
            target
                .join("wasm32-wasip1")
                .join("release")
                .join("probe_filter.wasm")
        })
        .clone()
}

/// A fresh probe VM, not configured.
pub fn probe() -> Host {
    Host::load(probe_path()).unwrap()
}

/// A fresh probe VM with options.
pub fn probe_with(options: HostOptions) -> Host {
    Host::load_with(probe_path(), options).unwrap()
}

/// A fresh probe VM, configured with an empty configuration.
pub fn configured() -> Host {
    let vm = probe();
    vm.configure("").unwrap();
    vm
}

/// Sends a GET in probe mode `mode` with extra headers.
pub fn send(vm: &Host, mode: &str, extra: &[(&str, &str)]) -> Stream {
    vm.request()
        .method("GET")
        .path("/probe?x=1")
        .authority("node")
        .header("x-probe", mode)
        .headers(extra)
        .send_headers(true)
        .unwrap()
}

/// A header from a list, panicking with the list when absent.
pub fn header(headers: &Headers, name: &str) -> String {
    find_header(headers, name)
        .unwrap_or_else(|| panic!("no header {name} in {headers:?}"))
        .to_owned()
}
