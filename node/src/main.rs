//! `kubelet-authz-node`: the node agent of the kubelet-authz DaemonSet (docs/DEPLOY.md).
//!
//! One static binary owns everything node-side, so the pod is Envoy plus this agent and nothing
//! else: it reads the kubelet's configuration as the kubelet does (`inspect`), keeps the per-node
//! CA and the proxy's certificate, renders Envoy's bootstrap, SDS and ECDS files from typed data
//! (`init`, `run`), and, in the opt-in privileged mode, installs and removes the kubelet drop-in
//! (`configure`, `unconfigure`). Each subcommand lives in its own module of the library.

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = kubelet_authz_node::cli::Cli::parse();
    match kubelet_authz_node::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kubelet-authz-node: {e:#}");
            ExitCode::from(2)
        }
    }
}
