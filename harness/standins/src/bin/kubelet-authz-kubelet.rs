//! `kubelet-authz-kubelet`: the stand-in kubelet as a process, for the demo and the Envoy
//! end-to-end tests. Prints one JSON line when ready (`url`, `port`, `ca`, `serverCert`,
//! `serverKey`) and stops on SIGTERM or SIGINT.
//!
//! With `--config FILE [--config-dir DIR]` it starts as a kubelet does from its files (read with
//! the engine's `effective_config`, see `kubelet_authz_standins::kubelet::KubeletConfig::from_files`):
//! it binds `address:port`, trusts `authentication.x509.clientCAFile`, and exits when that file does
//! not exist, as the kubelet does.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use kubelet_authz_standins::kubelet::{Kubelet, KubeletConfig};
use kubelet_authz_standins::serve::wait_for_signal;

/// Stand-in kubelet: echoes every request as JSON, WebSocket echo on /exec and /attach, SPDY
/// upgrade handshake.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on (port 0 picks a free port, reported on stdout).
    #[arg(long, default_value = "127.0.0.1:0", conflicts_with = "config")]
    listen: SocketAddr,
    /// PKI directory: created when missing, reused when present (the serving certificate).
    #[arg(long)]
    pki_dir: PathBuf,
    /// Verify client certificates against this CA file (e.g. `PKI_DIR/ca.crt`).
    #[arg(long, conflicts_with = "config")]
    client_ca: Option<PathBuf>,
    /// Refuse clients that present no certificate (needs --client-ca).
    #[arg(long, requires = "client_ca")]
    require_client_cert: bool,
    /// A KubeletConfiguration file, as the kubelet's `--config`: address, port, client CA and
    /// authentication come from it (and the drop-ins).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The kubelet's `--config-dir`: `*.conf` drop-ins merged over `--config`.
    #[arg(long, requires = "config")]
    config_dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = match &args.config {
        Some(file) => KubeletConfig::from_files(&args.pki_dir, file, args.config_dir.as_deref())
            .context("the kubelet configuration")?,
        None => {
            let mut config = KubeletConfig::new(&args.pki_dir);
            config.listen = args.listen;
            config.client_ca = args.client_ca;
            config.require_client_cert = args.require_client_cert;
            config
        }
    };
    let kubelet = Kubelet::start(config)
        .await
        .context("starting the stand-in kubelet")?;
    println!("{}", kubelet.ready_info());
    wait_for_signal().await.context("waiting for a signal")?;
    kubelet.shutdown().await;
    Ok(())
}
