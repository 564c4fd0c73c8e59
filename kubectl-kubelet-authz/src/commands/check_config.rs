//! `check-config`: grade a KubeletConfiguration file, or a kubelet command line (`--flags`), with
//! `kubelet_authz::kubeletconfig` (CIS 4.2.1-4.2.4, webhook authentication, the fine-grained gate).

use kubelet_authz::kubeletconfig::{self, CheckResult, CheckStatus, KubeletSettings};
use serde::Serialize;

use crate::cli::{CheckConfigArgs, Output};
use crate::error::{usage, CmdResult, EXIT_DENIED, EXIT_OK};
use crate::output::{document, emit, table, API_VERSION};
use crate::request::parse_version;
use crate::source::read_input;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CheckConfigDoc<'a> {
    api_version: &'static str,
    kind: &'static str,
    file: &'a str,
    kubelet_version: String,
    settings: &'a KubeletSettings,
    passed: bool,
    checks: &'a [CheckResult],
    notes: Vec<String>,
}

/// `check-config`.
pub fn run(args: &CheckConfigArgs) -> CmdResult {
    let version = parse_version(&args.kubelet_version)?;
    let text = read_input(&args.file)?;
    let mut notes = Vec::new();
    let settings = if args.flags {
        let config = kubeletconfig::command_line_config_path(&text)
            .map_err(|e| usage(format!("{}: {e}", args.file)))?;
        let base = match config {
            None => KubeletSettings::legacy_flag_defaults(),
            Some(path) => match std::fs::read_to_string(&path) {
                Ok(cfg) => kubeletconfig::parse_config(&cfg)
                    .map_err(|e| usage(format!("{path} (from --config): {e}")))?,
                Err(e) => {
                    notes.push(format!(
                        "the command line names `--config {path}`, which could not be read ({e}): config-file defaults were assumed for what the flags do not set; run check-config on that file too"
                    ));
                    KubeletSettings::config_file_defaults()
                }
            },
        };
        kubeletconfig::apply_command_line(base, &text)
            .map_err(|e| usage(format!("{}: {e}", args.file)))?
    } else {
        kubeletconfig::parse_config(&text).map_err(|e| {
            usage(format!(
                "{}: {e}{}",
                args.file,
                if text.trim_start().starts_with("--") || text.contains(" --") {
                    ": is it a kubelet command line? pass `--flags`"
                } else {
                    ""
                }
            ))
        })?
    };
    let checks = kubeletconfig::check(&settings, version);
    let passed = checks.iter().all(|c| c.status != CheckStatus::Fail);
    match args.output {
        Output::Json | Output::Yaml => document(
            args.output,
            &CheckConfigDoc {
                api_version: API_VERSION,
                kind: "CheckConfig",
                file: &args.file,
                kubelet_version: version.to_string(),
                settings: &settings,
                passed,
                checks: &checks,
                notes,
            },
        )?,
        Output::Table | Output::Wide => {
            let mut rows = vec![vec![
                "ID".to_string(),
                "STATUS".into(),
                "CHECK".into(),
                "VALUE".into(),
                "FIX".into(),
            ]];
            for c in &checks {
                rows.push(vec![
                    c.id.to_string(),
                    match c.status {
                        CheckStatus::Pass => "PASS",
                        CheckStatus::Fail => "FAIL",
                        CheckStatus::Skip => "SKIP",
                    }
                    .to_string(),
                    c.title.to_string(),
                    c.actual.clone(),
                    c.fix.clone(),
                ]);
            }
            let mut text = table(&rows);
            let failed = checks
                .iter()
                .filter(|c| c.status == CheckStatus::Fail)
                .count();
            text.push_str(&format!(
                "{} of {} checks failed (kubelet {version})\n",
                failed,
                checks.len()
            ));
            for n in &notes {
                text.push_str(&format!("note: {n}\n"));
            }
            emit(&text)?;
        }
    }
    Ok(if passed { EXIT_OK } else { EXIT_DENIED })
}
