//! Rendering: aligned tables for people, JSON and YAML documents for programs. Every JSON document
//! carries `apiVersion: kubelet-authz.io/v1alpha1` and a `kind` naming the command's result.

use std::io::Write as _;

use anyhow::Context as _;
use serde::Serialize;

use crate::cli::Output;
use crate::error::CliError;

/// The `apiVersion` of every JSON/YAML document the plugin prints.
pub const API_VERSION: &str = "kubelet-authz.io/v1alpha1";

/// Print `rows` (first row = header) with columns padded to the widest cell.
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let last = i + 1 == row.len();
            if last {
                line.push_str(cell);
            } else {
                let w = widths.get(i).copied().unwrap_or(0);
                line.push_str(&format!("{cell:<w$}   "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Print a serialisable document as JSON or YAML.
pub fn document<T: Serialize>(format: Output, doc: &T) -> Result<(), CliError> {
    let text = match format {
        Output::Yaml => serde_yaml_ng::to_string(doc).context("encoding YAML")?,
        _ => {
            let mut s = serde_json::to_string_pretty(doc).context("encoding JSON")?;
            s.push('\n');
            s
        }
    };
    emit(&text)
}

/// Write text to stdout; a closed pipe is not an error.
pub fn emit(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(anyhow::Error::new(e).context("writing to stdout").into()),
    }
}

/// `yes`/`no`.
pub fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}
