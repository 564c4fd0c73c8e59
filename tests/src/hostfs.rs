//! Files on a node in a box, for the node-in-a-box tests: a snapshot of a host root (contents,
//! modes, symlink targets) to compare byte for byte, and a ConfigMap volume written as the kubelet
//! writes it (its atomic writer).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Every file, directory and symlink under `root` but the relative paths in `skip` (and what is
/// below them): `dir MODE`, `file MODE CONTENT`, `link -> TARGET`, by relative path.
pub fn snapshot(root: &Path, skip: &[&str]) -> std::io::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    walk(root, root, skip, &mut out)?;
    Ok(out)
}

fn walk(
    root: &Path,
    dir: &Path,
    skip: &[&str],
    out: &mut BTreeMap<String, String>,
) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let rel = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .to_string_lossy()
            .into_owned();
        if skip.contains(&rel.as_str()) {
            continue;
        }
        let meta = std::fs::symlink_metadata(&path)?;
        let mode = meta.permissions().mode() & 0o7777;
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path)?;
            out.insert(rel, format!("link -> {}", target.display()));
        } else if meta.is_dir() {
            out.insert(rel, format!("dir {mode:o}"));
            walk(root, &path, skip, out)?;
        } else {
            let bytes = std::fs::read(&path)?;
            out.insert(
                rel,
                format!("file {mode:o} {}", String::from_utf8_lossy(&bytes)),
            );
        }
    }
    Ok(())
}

/// Write `file` of a ConfigMap volume at `dir` as the kubelet does: the payload in a new
/// `..<stamp>` directory, a `..data` symlink renamed over the old one, the visible file a symlink
/// to `..data/<file>`, the old payload removed.
pub fn write_volume(dir: &Path, file: &str, text: &str) -> std::io::Result<()> {
    static N: AtomicUsize = AtomicUsize::new(0);
    std::fs::create_dir_all(dir)?;
    let payload = format!(
        "..2026_01_01_00_00_00.{:09}",
        N.fetch_add(1, Ordering::SeqCst)
    );
    std::fs::create_dir(dir.join(&payload))?;
    std::fs::write(dir.join(&payload).join(file), text)?;
    let old = std::fs::read_link(dir.join("..data")).ok();
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(&payload, &tmp)?;
    std::fs::rename(&tmp, dir.join("..data"))?;
    if std::fs::symlink_metadata(dir.join(file)).is_err() {
        std::os::unix::fs::symlink(format!("..data/{file}"), dir.join(file))?;
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(dir.join(old))?;
    }
    Ok(())
}
