//! Link flags of the `.wasm` artefact (docs/PERFORMANCE.md "Module size").
//!
//! `wasm-ld` pads every relocated index in the code section (calls, globals, data addresses) to
//! five LEB128 bytes; `--compress-relocations` writes each in the bytes it needs, which takes 37 KB
//! (7%) off the module and changes nothing else. It needs an output without DWARF: the release
//! profile strips everything (`strip = true`), and `--strip-debug` keeps that true for a build
//! with `CARGO_PROFILE_RELEASE_STRIP=false`, which keeps the name section for `twiggy`.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let wasm = std::env::var("CARGO_CFG_TARGET_ARCH").is_ok_and(|arch| arch == "wasm32");
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    if wasm && release {
        println!("cargo:rustc-link-arg-cdylib=--strip-debug");
        println!("cargo:rustc-link-arg-cdylib=--compress-relocations");
    }
}
