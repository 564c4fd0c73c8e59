//! `kubelet-authz-harness`: replays scenario files through the real filter module.
//!
//! ```sh
//! cargo run -p kubelet-authz-harness -- replay tests/scenarios/*.yaml
//! ```
//! Prints PASS/FAIL per step and exits 1 when any step fails (2 on usage errors).
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kubelet_authz_harness::host::{Host, FILTER_WASM_ENV};
use kubelet_authz_harness::scenario::runner;

#[derive(Parser)]
#[command(
    name = "kubelet-authz-harness",
    about = "Run the kubelet-authz filter offline"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replay scenario files (YAML, see docs/HARNESS.md) and report pass/fail per step.
    Replay {
        /// Scenario files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The filter module (default: $KUBELET_AUTHZ_FILTER_WASM, else the release artefact).
        #[arg(long, env = FILTER_WASM_ENV)]
        wasm: Option<PathBuf>,
        /// Print only failures and the summary.
        #[arg(short, long)]
        quiet: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Replay { files, wasm, quiet } => {
            let wasm = wasm.unwrap_or_else(Host::default_module_path);
            if !wasm.exists() {
                eprintln!(
                    "error: filter module {} not found: build it with `cargo build -p kubelet-authz-filter --target wasm32-wasip1 --release` or set {FILTER_WASM_ENV}",
                    wasm.display()
                );
                return ExitCode::from(2);
            }
            let mut failed = 0usize;
            let mut steps = 0usize;
            for file in &files {
                let report = runner::run_file(file, &wasm);
                steps += report.steps.len();
                failed += report.failed();
                if quiet && report.passed() {
                    continue;
                }
                println!("{}: {report}", file.display());
            }
            println!(
                "{} file(s), {steps} step(s), {failed} failure(s)",
                files.len()
            );
            if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
    }
}
