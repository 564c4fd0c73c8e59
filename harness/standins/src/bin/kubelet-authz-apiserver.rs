//! `kubelet-authz-apiserver`: the stand-in API server as a process, for the demo and the Envoy
//! end-to-end tests. Prints one JSON line when ready (`url`, `port`, `ca`, `pkiDir`,
//! `serverCert`, `serverKey`, `clientCerts`) and stops on SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use kubelet_authz_standins::apiserver::{ApiServer, ApiServerConfig};
use kubelet_authz_standins::pki::{ClientSubject, Pki};
use kubelet_authz_standins::serve::wait_for_signal;

/// Stand-in Kubernetes API server: TokenReview, SubjectAccessReview and RBAC reads decided by the
/// kubelet-authz RBAC evaluator.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on (port 0 picks a free port, reported on stdout).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// PKI directory: created when missing, reused when present.
    #[arg(long)]
    pki_dir: PathBuf,
    /// Token file in kube-apiserver's `--token-auth-file` CSV format (repeatable).
    #[arg(long)]
    tokens: Vec<PathBuf>,
    /// RBAC YAML or JSON files (repeatable; several files may follow one flag).
    #[arg(long, num_args = 1..)]
    rbac: Vec<PathBuf>,
    /// Node YAML or JSON files (repeatable).
    #[arg(long)]
    nodes: Vec<PathBuf>,
    /// Also issue a client certificate into the PKI directory: `NAME=CN[:O1,O2[:UID]]`
    /// (reused when `NAME.crt` exists; repeatable).
    #[arg(long, value_name = "NAME=CN[:ORGS[:UID]]")]
    client_cert: Vec<String>,
}

fn parse_client_cert(spec: &str) -> anyhow::Result<(String, ClientSubject)> {
    let (name, rest) = spec
        .split_once('=')
        .with_context(|| format!("--client-cert `{spec}`: expected NAME=CN[:O1,O2[:UID]]"))?;
    let mut parts = rest.splitn(3, ':');
    let cn = parts.next().unwrap_or_default();
    let orgs: Vec<&str> = parts
        .next()
        .map(|o| o.split(',').filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    let mut subject = ClientSubject::new(cn, &orgs);
    if let Some(uid) = parts.next() {
        subject = subject.with_uid(uid);
    }
    Ok((name.to_string(), subject))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut config = ApiServerConfig::new(&args.pki_dir);
    config.listen = args.listen;
    for path in &args.tokens {
        config = config
            .tokens_file(path)
            .with_context(|| format!("reading tokens `{}`", path.display()))?;
    }
    for path in &args.rbac {
        config = config
            .rbac_file(path)
            .with_context(|| format!("reading RBAC `{}`", path.display()))?;
    }
    for path in &args.nodes {
        config = config
            .nodes_file(path)
            .with_context(|| format!("reading nodes `{}`", path.display()))?;
    }
    let mut client_certs = serde_json::Map::new();
    if !args.client_cert.is_empty() {
        let pki = Pki::open(&args.pki_dir)
            .with_context(|| format!("opening PKI `{}`", args.pki_dir.display()))?;
        for spec in &args.client_cert {
            let (name, subject) = parse_client_cert(spec)?;
            let paths = pki
                .client_cert(&name, &subject)
                .with_context(|| format!("issuing client certificate `{name}`"))?;
            client_certs.insert(
                name,
                serde_json::json!({"cert": paths.cert, "key": paths.key}),
            );
        }
    }
    let server = ApiServer::start(config)
        .await
        .context("starting the stand-in API server")?;
    let mut ready = server.ready_info();
    if let Some(obj) = ready.as_object_mut() {
        obj.insert(
            "clientCerts".into(),
            serde_json::Value::Object(client_certs),
        );
    }
    println!("{ready}");
    wait_for_signal().await.context("waiting for a signal")?;
    server.shutdown().await;
    Ok(())
}
