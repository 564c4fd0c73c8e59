//! `completion`: shell completion scripts from the clap definitions (clap_complete).

use clap::CommandFactory as _;
use clap_complete::{generate, Shell as CShell};

use crate::cli::{Cli, CompletionArgs, Shell};
use crate::error::{CmdResult, EXIT_OK};

/// `completion bash|zsh|fish`.
pub fn run(args: &CompletionArgs) -> CmdResult {
    let shell = match args.shell {
        Shell::Bash => CShell::Bash,
        Shell::Zsh => CShell::Zsh,
        Shell::Fish => CShell::Fish,
    };
    let mut cmd = Cli::command();
    let mut buf = Vec::new();
    generate(shell, &mut cmd, "kubectl-kubelet_authz", &mut buf);
    crate::output::emit(&String::from_utf8_lossy(&buf))?;
    Ok(EXIT_OK)
}
