//! The command line: `inspect`, `init`, `run`, `configure`, `unconfigure`, `drain`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The node agent of the kubelet-authz DaemonSet.
#[derive(Debug, Parser)]
#[command(name = "kubelet-authz-node", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the kubelet's effective configuration and what the proxy derives from it.
    Inspect(InspectArgs),
    /// Opt-in privileged mode: put the kubelet behind the proxy (per-node CA, drop-in, restart,
    /// verify; rolls back by itself when the kubelet does not come back).
    Configure(crate::configure::ConfigureArgs),
    /// Undo `configure`: the node's files back byte for byte, the kubelet on its own address.
    Unconfigure(crate::configure::ConfigureArgs),
}

/// `inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The kubelet's `--config` file (YAML or JSON).
    #[arg(long)]
    pub kubelet_config: std::path::PathBuf,
    /// The kubelet's `--config-dir` (drop-ins: `*.conf`, lexical order, later wins).
    #[arg(long)]
    pub config_dir: Option<std::path::PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, default_value = "json")]
    pub output: String,
}

/// Run one command line; the exit code on success (a finding may be exit 1).
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Inspect(args) => crate::kubeletconfig::inspect(&args),
        Command::Configure(args) => crate::configure::run_configure(&args),
        Command::Unconfigure(args) => crate::configure::run_unconfigure(&args),
    }
}
