//! `check-config`: grade a KubeletConfiguration file, or a kubelet command line (`--flags`), with
//! `kubelet_authz::kubeletconfig` (CIS 4.2.1-4.2.4, webhook authentication, the fine-grained gate),
//! or (`--behind-proxy`) against the profile of a kubelet only the proxy can reach
//! (`kubeletconfig::behind_proxy`). With `--config-dir` or `--behind-proxy` the file is read as the
//! node agent reads it: the kubelet's effective configuration, drop-ins merged, unknown fields
//! refused (`kubeletconfig::effective_config`).

use kubelet_authz::kubeletconfig::{self, CheckResult, CheckStatus, KubeletSettings};
use serde::Serialize;

use crate::cli::{CheckConfigArgs, Output};
use crate::error::{usage, CmdResult, EXIT_DENIED, EXIT_OK};
use crate::output::{document, emit, table, API_VERSION};
use crate::request::parse_version;
use crate::source::{read_dropins, read_input};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CheckConfigDoc<'a> {
    api_version: &'static str,
    kind: &'static str,
    file: &'a str,
    kubelet_version: String,
    /// `behind-proxy` for that profile; absent for the CIS report.
    #[serde(skip_serializing_if = "Option::is_none")]
    profile: Option<&'static str>,
    /// The files read, base first, when drop-ins were merged (`--config-dir`, `--behind-proxy`).
    #[serde(skip_serializing_if = "Option::is_none")]
    sources: Option<Vec<String>>,
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
    let mut effective = None;
    let settings = if args.behind_proxy || args.config_dir.is_some() {
        let name = if args.file == "-" {
            "<stdin>".to_string()
        } else {
            std::path::absolute(&args.file)
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| args.file.clone())
        };
        let dropins = match &args.config_dir {
            Some(dir) => read_dropins(dir)?,
            None => Vec::new(),
        };
        let cfg =
            kubeletconfig::effective_config(&kubeletconfig::Source::new(name, text), &dropins)
                .map_err(|e| usage(e.to_string()))?;
        let settings = cfg.settings.clone();
        effective = Some(cfg);
        settings
    } else if args.flags {
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
    let (checks, profile) = match (&effective, args.behind_proxy) {
        (Some(cfg), true) => (kubeletconfig::behind_proxy(cfg), Some("behind-proxy")),
        _ => (kubeletconfig::check(&settings, version), None),
    };
    let passed = checks.iter().all(|c| c.status != CheckStatus::Fail);
    match args.output {
        Output::Json | Output::Yaml => document(
            args.output,
            &CheckConfigDoc {
                api_version: API_VERSION,
                kind: "CheckConfig",
                file: &args.file,
                kubelet_version: version.to_string(),
                profile,
                sources: effective.as_ref().map(|c| c.sources.clone()),
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
            let what = if profile.is_some() {
                "behind the proxy".to_string()
            } else {
                format!("kubelet {version}")
            };
            text.push_str(&format!(
                "{} of {} checks failed ({what})\n",
                failed,
                checks.len()
            ));
            if let Some(cfg) = &effective {
                text.push_str(&format!("read: {}\n", cfg.sources.join(", ")));
            }
            for n in &notes {
                text.push_str(&format!("note: {n}\n"));
            }
            emit(&text)?;
        }
    }
    Ok(if passed { EXIT_OK } else { EXIT_DENIED })
}
