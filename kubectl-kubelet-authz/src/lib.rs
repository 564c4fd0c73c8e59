//! `kubectl kubelet-authz`: answers who may reach which kubelet endpoint.
//!
//! Two executables share this library: `kubectl-kubelet_authz` (the plugin, [`main`]) and
//! `kubectl_complete-kubelet_authz` (what kubectl 1.26+ runs to complete `kubectl kubelet-authz
//! <TAB>`, [`complete_main`]).
//!
//! The plugin is a thin driver over the `kubelet_authz` crate: the kubelet's attribute builder,
//! the RBAC evaluator and the KubeletConfiguration checks all live there. Flags are parsed in
//! [`cli`], each command resolves them into a plan in its module under [`commands`], and exit codes
//! are mapped in one place, here: 0 allowed / passed, 1 denied / findings, 2 usage or input error,
//! 3 cluster or API error.
#![forbid(unsafe_code)]

mod authority;
mod cli;
mod commands;
mod complete;
mod engine;
mod error;
mod online;
mod output;
mod request;
mod source;

use std::process::ExitCode;

use clap::Parser as _;

use crate::cli::{Cli, Command};
use crate::error::{CmdResult, EXIT_OK, EXIT_USAGE};

fn run(cli: Cli) -> CmdResult {
    match cli.command {
        Command::CanI(a) => commands::can_i::run(&a),
        Command::WhoCan(a) => commands::who_can::run(&a),
        Command::Audit(a) => commands::audit::run(&a),
        Command::SuggestRole(a) => commands::suggest_role::run(&a),
        Command::CheckConfig(a) => commands::check_config::run(&a),
        Command::Impact(a) => commands::impact::run(&a),
        Command::AuditLog(a) => commands::audit_log::run(&a),
        Command::Completion(a) => commands::completion::run(&a),
    }
}

/// The plugin's entry point (`kubectl-kubelet_authz`).
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version print to stdout and succeed.
            let _ = e.print();
            return ExitCode::from(EXIT_OK);
        }
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            // No command at all: the help, on stderr, and a usage exit.
            let _ = e.print();
            return ExitCode::from(EXIT_USAGE);
        }
        Err(e) => {
            // A usage error: clap's first line, made one line, and where to look next.
            let rendered = e.render().to_string();
            let paragraph: Vec<&str> = rendered
                .lines()
                .map(str::trim)
                .skip_while(|l| l.is_empty())
                .take_while(|l| !l.is_empty())
                .collect();
            let text = paragraph.join(" ");
            let text = text.strip_prefix("error: ").unwrap_or(&text);
            let text = text.trim_end_matches(':');
            eprintln!("error: {text}: see `kubectl kubelet-authz --help`");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// The completion executable's entry point (`kubectl_complete-kubelet_authz`): kubectl runs it
/// with the words typed after `kubectl kubelet-authz`, the last one being completed, and reads
/// the candidates in Cobra's `__complete` format.
pub fn complete_main() -> ExitCode {
    let words: Vec<String> = std::env::args().skip(1).collect();
    let out = complete::complete(&words);
    print!("{out}");
    ExitCode::from(EXIT_OK)
}
