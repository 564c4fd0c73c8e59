//! `configure` and `unconfigure`: put the kubelet behind the proxy on this node, and take it back
//! out, without a shell (issue 20, point 3).
//!
//! What changes on the node is data per distribution ([`DISTRIBUTIONS`]): the kubelet's
//! configuration file (never modified), its `--config-dir` where the proxy's drop-in
//! ([`kubelet_authz::kubeletconfig::PROXY_DROPIN`]) is written, and a systemd drop-in for
//! `kubelet.service` that passes `--config-dir` ([`UnitDropin`]: kubeadm's `10-kubeadm.conf` passes
//! none, nodeadm only for a `NodeConfig` with `spec.kubelet.config`). A node whose drop-ins are in
//! place and whose kubelet answers behind the proxy without a backup record (built configured,
//! `envoy/node/`) is adopted: recorded so that `unconfigure` removes the drop-ins.
//!
//! `configure` makes the per-node CA and the proxy's certificate first (the kubelet exits when its
//! `clientCAFile` does not exist), records the previous state of every file it changes under
//! `STATE_DIR/backup/` (a copy, or the record that the file did not exist), writes the files,
//! restarts the kubelet through the host's systemd and verifies that it answers on
//! `127.0.0.1:PORT` with the proxy's certificate and listens on loopback only. If the kubelet does
//! not come back within the timeout, it restores the files it changed, restarts the kubelet again
//! and fails: a node is never left without a working kubelet. Already configured and healthy: no
//! restart.
//!
//! `unconfigure` waits until no Envoy holds the kubelet port on another address (the proxy pod is
//! gone), restores the recorded files byte for byte, removes what `configure` added (drop-ins,
//! directories it created, the per-node CA when it made it, the backup), restarts the kubelet and
//! verifies that it answers on its own address again; if it does not, the configured files are put
//! back and the kubelet restarted.
//!
//! Both log one line per step on stderr. Paths are host paths: the command line `chroot`s into the
//! host root before calling [`configure`] or [`unconfigure`].

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use kubelet_authz::kubeletconfig::{PER_NODE_CA_FILE, PROXY_DROPIN, PROXY_DROPIN_NAME};
use serde::{Deserialize, Serialize};

use crate::listeners::{self, Listener};
use crate::pki;
use crate::probe::{self, ClientCert, Probe};

/// The default state directory on the host (backups live in `backup/`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/kubelet-authz";
/// The file name of the systemd drop-in that adds `--config-dir` on kubeadm nodes.
pub const SYSTEMD_DROPIN_NAME: &str = "90-kubelet-authz.conf";
/// The default bound for the kubelet to come back.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// How often the kubelet is probed while waiting for it.
const POLL: Duration = Duration::from_millis(500);
/// The timeout of one probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// PATH for the restart commands when the container has none.
const HOST_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The version of the backup manifest's format.
const MANIFEST_VERSION: u32 = 1;

/// Where one distribution keeps the kubelet's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Distribution {
    /// The name on the command line (`--distribution`).
    pub name: &'static str,
    /// The kubelet's `--config` file.
    pub kubelet_config: &'static str,
    /// The kubelet's `--config-dir`.
    pub config_dir: &'static str,
    /// The directory of `kubelet.service` drop-ins, where `--config-dir` is added.
    pub systemd_dropin_dir: &'static str,
    /// How `--config-dir` is added to the kubelet's command line.
    pub unit_dropin: UnitDropin,
    /// The kubelet binary (for a unit drop-in that rewrites `ExecStart`).
    pub kubelet_binary: &'static str,
}

/// How a distribution's `kubelet.service` is made to pass `--config-dir`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitDropin {
    /// kubeadm's `10-kubeadm.conf`: `ExecStart=/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS
    /// $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS` with
    /// `KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml`: a later `Environment=` of
    /// `KUBELET_CONFIG_ARGS` with `--config-dir` added.
    KubeadmConfigArgs,
    /// AL2023's `kubelet.service`: `ExecStart=/usr/bin/kubelet $NODEADM_KUBELET_ARGS`, where nodeadm
    /// puts `--config-dir` only when the NodeConfig has `spec.kubelet.config`: `ExecStart`
    /// rewritten with `--config-dir` after the variable (the same value twice is harmless).
    NodeadmExecStart,
}

/// The distributions `configure` knows, in the order `auto` tries them.
pub const DISTRIBUTIONS: &[Distribution] = &[
    Distribution {
        name: "eks-al2023",
        kubelet_config: "/etc/kubernetes/kubelet/config.json",
        config_dir: "/etc/kubernetes/kubelet/config.json.d",
        systemd_dropin_dir: "/etc/systemd/system/kubelet.service.d",
        unit_dropin: UnitDropin::NodeadmExecStart,
        kubelet_binary: "/usr/bin/kubelet",
    },
    Distribution {
        name: "kubeadm",
        kubelet_config: "/var/lib/kubelet/config.yaml",
        config_dir: "/etc/kubernetes/kubelet.conf.d",
        systemd_dropin_dir: "/etc/systemd/system/kubelet.service.d",
        unit_dropin: UnitDropin::KubeadmConfigArgs,
        kubelet_binary: "/usr/bin/kubelet",
    },
];

/// Find a distribution by name.
pub fn distribution(name: &str) -> Option<&'static Distribution> {
    DISTRIBUTIONS.iter().find(|d| d.name == name)
}

/// The first distribution whose kubelet configuration file exists.
pub fn detect() -> Option<&'static Distribution> {
    DISTRIBUTIONS
        .iter()
        .find(|d| Path::new(d.kubelet_config).is_file())
}

/// The text of the `kubelet.service` drop-in that adds `--config-dir`.
pub fn systemd_dropin_text(
    kind: UnitDropin,
    kubelet_binary: &Path,
    kubelet_config: &Path,
    config_dir: &Path,
) -> String {
    match kind {
        UnitDropin::KubeadmConfigArgs => format!(
            "# kubelet-authz (kubelet-authz-node configure): kubeadm's 10-kubeadm.conf passes no\n\
             # --config-dir; this adds it, so that the kubelet reads the proxy's drop-in.\n\
             # Removed by `kubelet-authz-node unconfigure`.\n\
             [Service]\n\
             Environment=\"KUBELET_CONFIG_ARGS=--config={} --config-dir={}\"\n",
            kubelet_config.display(),
            config_dir.display()
        ),
        UnitDropin::NodeadmExecStart => format!(
            "# kubelet-authz (kubelet-authz-node configure): nodeadm passes --config-dir only for a\n\
             # NodeConfig with spec.kubelet.config; this adds it, so that the kubelet reads the\n\
             # proxy's drop-in. Removed by `kubelet-authz-node unconfigure`.\n\
             [Service]\n\
             ExecStart=\n\
             ExecStart={} $NODEADM_KUBELET_ARGS --config-dir={}\n",
            kubelet_binary.display(),
            config_dir.display()
        ),
    }
}

/// The proxy's drop-in with the per-node CA at `ca_cert` (the shipped text when it is the default
/// path).
pub fn dropin_text(ca_cert: &Path) -> String {
    PROXY_DROPIN.replace(PER_NODE_CA_FILE, &ca_cert.to_string_lossy())
}

/// What `configure` and `unconfigure` work on (host paths).
#[derive(Debug, Clone)]
pub struct Options {
    /// The kubelet's `--config` file.
    pub kubelet_config: PathBuf,
    /// The kubelet's `--config-dir`.
    pub config_dir: PathBuf,
    /// The directory of `kubelet.service` drop-ins, where `--config-dir` is added.
    pub systemd_dropin_dir: PathBuf,
    /// How `--config-dir` is added.
    pub unit_dropin: UnitDropin,
    /// The kubelet binary (for [`UnitDropin::NodeadmExecStart`]).
    pub kubelet_binary: PathBuf,
    /// The per-node CA's directory.
    pub pki_dir: PathBuf,
    /// The state directory (backups in `backup/`).
    pub state_dir: PathBuf,
    /// How long the kubelet may take to come back (and Envoy to go, for `unconfigure`).
    pub timeout: Duration,
    /// The commands that make the kubelet read its files again, in order.
    pub restart: Vec<Vec<String>>,
    /// Where `/proc` is (the listening sockets and their processes).
    pub proc_root: PathBuf,
}

impl Options {
    /// The options for a distribution with the default state, PKI, timeout and restart commands
    /// (`systemctl daemon-reload`, `systemctl restart kubelet`).
    pub fn for_distribution(d: &Distribution) -> Options {
        Options {
            kubelet_config: d.kubelet_config.into(),
            config_dir: d.config_dir.into(),
            systemd_dropin_dir: d.systemd_dropin_dir.into(),
            unit_dropin: d.unit_dropin,
            kubelet_binary: d.kubelet_binary.into(),
            pki_dir: pki::DEFAULT_DIR.into(),
            state_dir: DEFAULT_STATE_DIR.into(),
            timeout: DEFAULT_TIMEOUT,
            restart: default_restart(),
            proc_root: "/proc".into(),
        }
    }

    fn backup_dir(&self) -> PathBuf {
        self.state_dir.join("backup")
    }
}

/// `systemctl daemon-reload`, then `systemctl restart kubelet`.
pub fn default_restart() -> Vec<Vec<String>> {
    vec![
        vec!["systemctl".into(), "daemon-reload".into()],
        vec!["systemctl".into(), "restart".into(), "kubelet".into()],
    ]
}

/// Why `configure` or `unconfigure` failed. Every variant leaves the kubelet answering, except
/// [`ConfigureError::RollbackFailed`], which says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigureError {
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The kubelet's configuration could not be read.
    #[error("the kubelet's configuration: {0}")]
    KubeletConfig(String),
    /// The per-node CA or the proxy's certificate.
    #[error("per-node CA: {0}")]
    Pki(#[from] pki::PkiError),
    /// The proxy's certificate could not be read back.
    #[error("proxy certificate: {0}")]
    ClientCert(#[from] probe::ClientCertError),
    /// The drop-in is written but another file overrides it.
    #[error(
        "with the drop-in, the kubelet would still run with {0}; a later drop-in in {1} or a \
         flag overrides it: remove that setting (nothing was changed)"
    )]
    Overridden(String, PathBuf),
    /// The socket tables could not be read.
    #[error(transparent)]
    Listeners(#[from] listeners::ListenersError),
    /// The backup manifest is unreadable.
    #[error("{path}: {reason}; restore the node's files by hand from {dir}", dir = .path.parent().map(|p| p.display().to_string()).unwrap_or_default())]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Envoy still holds the kubelet port: the proxy pod is still on the node.
    #[error(
        "Envoy still listens on {0} after {1:?}: the proxy pod is still on this node; label the \
         node `kubelet-authz.io/proxy=remove` (the DaemonSet then deletes it) and retry"
    )]
    EnvoyStillThere(String, Duration),
    /// The kubelet did not come back; the previous state was restored and the kubelet answers.
    #[error("{what}; the previous files were restored and the kubelet answers again ({probe})")]
    RolledBack {
        /// What went wrong.
        what: String,
        /// The kubelet's answer after the rollback.
        probe: Probe,
    },
    /// The kubelet did not come back, and not after the rollback either.
    #[error(
        "{what}; the previous files were restored but the kubelet does not answer ({probe}): \
         look at `journalctl -u kubelet` on the node"
    )]
    RollbackFailed {
        /// What went wrong.
        what: String,
        /// The last probe.
        probe: Probe,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ConfigureError + '_ {
    move |source| ConfigureError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What `configure` or `unconfigure` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Files were changed and the kubelet restarted; it answers.
    Changed,
    /// Nothing to do: already in the wanted state, no restart.
    Unchanged,
}

/// One file's state before `configure` first touched it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
struct Entry {
    /// The file.
    path: PathBuf,
    /// The copy of its contents under `backup/files/`, with its mode; `None`: it did not exist.
    original: Option<Original>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
struct Original {
    backup: String,
    mode: u32,
}

/// `backup/manifest.json`: everything `configure` changed on the node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    version: u32,
    kubelet_config: PathBuf,
    config_dir: PathBuf,
    pki_dir: PathBuf,
    /// `configure` made the per-node CA (`unconfigure` removes the PKI directory).
    created_pki: bool,
    /// Directories `configure` created for the drop-ins, parents first.
    created_dirs: Vec<PathBuf>,
    /// Directories `configure` created for its state and the PKI, parents first.
    created_state_dirs: Vec<PathBuf>,
    files: Vec<Entry>,
}

impl Manifest {
    fn path(o: &Options) -> PathBuf {
        o.backup_dir().join("manifest.json")
    }

    fn load(o: &Options) -> Result<Option<Manifest>, ConfigureError> {
        let path = Manifest::path(o);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let m: Manifest = serde_json::from_slice(&text).map_err(|e| ConfigureError::Manifest {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if m.version != MANIFEST_VERSION {
            return Err(ConfigureError::Manifest {
                path,
                reason: format!(
                    "version {} (this agent reads {MANIFEST_VERSION})",
                    m.version
                ),
            });
        }
        Ok(Some(m))
    }

    fn save(&self, o: &Options) -> Result<(), ConfigureError> {
        let path = Manifest::path(o);
        let text = serde_json::to_vec_pretty(self).map_err(|e| ConfigureError::Manifest {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write_file(&path, &text, 0o600)
    }
}

/// A file's contents and mode, or its absence.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileState(Option<(Vec<u8>, u32)>);

impl FileState {
    fn read(path: &Path) -> Result<FileState, ConfigureError> {
        match std::fs::read(path) {
            Ok(bytes) => {
                let mode = std::fs::metadata(path)
                    .map_err(io_err(path))?
                    .permissions()
                    .mode()
                    & 0o7777;
                Ok(FileState(Some((bytes, mode))))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileState(None)),
            Err(e) => Err(io_err(path)(e)),
        }
    }

    fn write(&self, path: &Path) -> Result<(), ConfigureError> {
        match &self.0 {
            Some((bytes, mode)) => write_file(path, bytes, *mode),
            None => remove_file(path),
        }
    }
}

fn log(cmd: &str, msg: impl std::fmt::Display) {
    eprintln!("kubelet-authz-node {cmd}: {msg}");
}

/// Write a file atomically (a temporary file in the same directory, synced, renamed), with `mode`.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), ConfigureError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // A name the kubelet does not read (not `*.conf`) while it is incomplete.
    let tmp = dir.join(format!(".{name}.kubelet-authz-tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(contents).map_err(io_err(&tmp))?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

fn remove_file(path: &Path) -> Result<(), ConfigureError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// The ancestors of `path` that do not exist, parents first.
fn missing_dirs(path: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = path
        .ancestors()
        .skip(1)
        .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
        .map(Path::to_path_buf)
        .collect();
    out.reverse();
    out
}

/// The files `configure` writes, with their contents.
fn wanted_files(o: &Options) -> Vec<(PathBuf, Vec<u8>)> {
    let ca = pki::ca_cert_path(&o.pki_dir);
    let mut files = vec![(
        o.config_dir.join(PROXY_DROPIN_NAME),
        dropin_text(&ca).into_bytes(),
    )];
    files.push((
        o.systemd_dropin_dir.join(SYSTEMD_DROPIN_NAME),
        systemd_dropin_text(
            o.unit_dropin,
            &o.kubelet_binary,
            &o.kubelet_config,
            &o.config_dir,
        )
        .into_bytes(),
    ));
    files
}

/// The kubelet's effective configuration as its files say (the drop-in directory when it exists).
fn effective(o: &Options) -> Result<kubelet_authz::kubeletconfig::EffectiveConfig, ConfigureError> {
    // A drop-in directory that does not exist (yet) is not read: the kubelet is not given it.
    let dir = Some(o.config_dir.as_path()).filter(|d| d.is_dir());
    crate::kubeletconfig::load(&o.kubelet_config, dir)
        .map_err(|e| ConfigureError::KubeletConfig(format!("{e:#}")))
}

/// What is wrong with an effective configuration for a kubelet behind the proxy (empty: nothing).
fn behind_proxy_gaps(
    cfg: &kubelet_authz::kubeletconfig::EffectiveConfig,
    ca: &Path,
) -> Vec<String> {
    let s = &cfg.settings;
    let mut gaps = Vec::new();
    if !kubelet_authz::kubeletconfig::is_loopback(&cfg.address) {
        gaps.push(format!("address {}", cfg.address));
    }
    if Path::new(&s.client_ca_file.value) != ca {
        gaps.push(format!(
            "authentication.x509.clientCAFile {:?}",
            s.client_ca_file.value
        ));
    }
    if s.webhook_authentication.value {
        gaps.push("authentication.webhook.enabled true".into());
    }
    if s.anonymous_auth.value {
        gaps.push("authentication.anonymous.enabled true".into());
    }
    gaps
}

fn restart(cmd: &str, o: &Options) -> Result<(), String> {
    for argv in &o.restart {
        let Some((program, args)) = argv.split_first() else {
            continue;
        };
        log(cmd, format!("running {}", argv.join(" ")));
        let mut command = Command::new(program);
        command.args(args);
        // A FROM-scratch image may run without PATH; the host's tools are in the usual places.
        if std::env::var_os("PATH").is_none() {
            command.env("PATH", HOST_PATH);
        }
        let out = command
            .output()
            .map_err(|e| format!("`{}`: {e}", argv.join(" ")))?;
        if !out.status.success() {
            return Err(format!(
                "`{}` failed ({}): {}",
                argv.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    Ok(())
}

/// Non-Envoy listeners of `port` on a non-loopback address (the kubelet reachable around the
/// proxy).
fn exposed(o: &Options, port: u16) -> Result<Vec<Listener>, ConfigureError> {
    Ok(listeners::listeners(&o.proc_root, port)?
        .into_iter()
        .filter(|l| !l.is_loopback() && !l.is_envoy())
        .collect())
}

fn describe(ls: &[Listener]) -> String {
    ls.iter()
        .map(|l| format!("{} ({})", l.addr, l.owners.join(",")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Is the kubelet behind the proxy and healthy: it authenticates the proxy's certificate on
/// loopback, and nothing but Envoy listens on its port elsewhere.
fn healthy_behind_proxy(
    o: &Options,
    port: u16,
    cert: &ClientCert,
) -> Result<Result<Probe, String>, ConfigureError> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let p = probe::healthz(addr, Some(cert), PROBE_TIMEOUT);
    if !p.authenticated() {
        return Ok(Err(format!(
            "the kubelet on {addr} with the proxy's certificate: {p}"
        )));
    }
    let open = exposed(o, port)?;
    if !open.is_empty() {
        return Ok(Err(format!(
            "port {port} is still open on {}",
            describe(&open)
        )));
    }
    Ok(Ok(p))
}

/// Poll until `check` says yes or `timeout` passes; the last reason otherwise.
fn wait_for<T>(
    timeout: Duration,
    mut check: impl FnMut() -> Result<Result<T, String>, ConfigureError>,
) -> Result<Result<T, String>, ConfigureError> {
    let start = Instant::now();
    loop {
        let r = check()?;
        if r.is_ok() || start.elapsed() >= timeout {
            return Ok(r);
        }
        std::thread::sleep(POLL);
    }
}

/// Probe a kubelet on its own address (no client certificate): does it answer at all?
fn answers(address: &str, port: u16) -> Result<Probe, String> {
    let addr = probe::probe_addr(address, port)
        .ok_or_else(|| format!("kubelet address {address:?} is not an IP address"))?;
    let p = probe::healthz(addr, None, PROBE_TIMEOUT);
    if p.answered() {
        Ok(p)
    } else {
        Err(format!("the kubelet on {addr}: {p}"))
    }
}

/// Put the files back as `before` says, restart the kubelet, and wait until it answers on
/// `address:port`.
fn roll_back(
    cmd: &str,
    o: &Options,
    before: &[(PathBuf, FileState)],
    created_dirs: &[PathBuf],
    address: &str,
    port: u16,
    what: String,
) -> ConfigureError {
    log(cmd, format!("{what}; rolling back"));
    for (path, state) in before {
        if let Err(e) = state.write(path) {
            log(cmd, format!("rollback: {e}"));
        } else {
            log(cmd, format!("restored {}", path.display()));
        }
    }
    for dir in created_dirs.iter().rev() {
        let _ = std::fs::remove_dir(dir);
    }
    if let Err(e) = restart(cmd, o) {
        log(cmd, format!("rollback restart: {e}"));
    }
    let last = wait_for(o.timeout, || Ok(answers(address, port)));
    match last {
        Ok(Ok(probe)) => {
            log(cmd, format!("rolled back; the kubelet {probe}"));
            ConfigureError::RolledBack { what, probe }
        }
        Ok(Err(why)) => ConfigureError::RollbackFailed {
            what,
            probe: Probe::Down(why),
        },
        Err(e) => ConfigureError::RollbackFailed {
            what,
            probe: Probe::Down(e.to_string()),
        },
    }
}

/// Put the kubelet behind the proxy (see the module documentation).
pub fn configure(o: &Options) -> Result<Outcome, ConfigureError> {
    const CMD: &str = "configure";
    log(
        CMD,
        format!(
            "kubelet configuration {}, drop-in directory {}, kubelet.service drop-ins in {}",
            o.kubelet_config.display(),
            o.config_dir.display(),
            o.systemd_dropin_dir.display()
        ),
    );
    let before_cfg = effective(o)?;
    log(
        CMD,
        format!(
            "the kubelet runs on {}:{} (clientCAFile {:?})",
            before_cfg.address, before_cfg.port, before_cfg.settings.client_ca_file.value
        ),
    );

    // The CA first: the kubelet exits when its clientCAFile does not exist.
    let pki_existed = o.pki_dir.join(pki::CA_CERT).exists();
    let mut state_dirs = missing_dirs(&o.state_dir.join("backup"));
    for d in missing_dirs(&o.pki_dir.join(pki::CA_CERT)) {
        if !state_dirs.contains(&d) {
            state_dirs.push(d);
        }
    }
    let ca_status = pki::ensure_ca(&o.pki_dir)?;
    log(
        CMD,
        format!(
            "per-node CA {}: {}",
            pki::ca_cert_path(&o.pki_dir).display(),
            match ca_status {
                pki::CaStatus::Created => "made",
                pki::CaStatus::Kept => "kept",
            }
        ),
    );
    let cert_status = pki::ensure_proxy_cert(
        &o.pki_dir,
        SystemTime::now(),
        pki::DEFAULT_VALIDITY,
        pki::DEFAULT_RENEW_BEFORE,
    )?;
    log(
        CMD,
        match &cert_status {
            pki::ProxyCertStatus::Renewed { file, not_after } => format!(
                "proxy certificate {} issued, valid until {}",
                file.display(),
                humantime::format_rfc3339_seconds(*not_after)
            ),
            pki::ProxyCertStatus::Kept { file, not_after } => format!(
                "proxy certificate {} kept, valid until {}",
                file.display(),
                humantime::format_rfc3339_seconds(*not_after)
            ),
        },
    );
    let cert = ClientCert::from_pem_file(&pki::proxy_current_path(&o.pki_dir))?;

    let wanted = wanted_files(o);
    let mut current = Vec::new();
    for (path, _) in &wanted {
        current.push((path.clone(), FileState::read(path)?));
    }
    let in_place = wanted
        .iter()
        .zip(&current)
        .all(|((_, want), (_, have))| have.0.as_ref().is_some_and(|(b, _)| b == want));
    if in_place {
        let port = before_cfg.port;
        // A kubelet that is (re)starting gets a few seconds before it counts as unhealthy.
        let settle = o.timeout.min(Duration::from_secs(5));
        if let Ok(p) = wait_for(settle, || healthy_behind_proxy(o, port, &cert))? {
            log(
                CMD,
                format!(
                    "already configured: the kubelet {p} on 127.0.0.1:{port} with the proxy's \
                     certificate; nothing to do"
                ),
            );
            if Manifest::load(o)?.is_none() {
                // Configured at the node's first boot (envoy/node/): adopt it, so that
                // `unconfigure` takes the node off the proxy like any other.
                let adopted = Manifest {
                    version: MANIFEST_VERSION,
                    kubelet_config: o.kubelet_config.clone(),
                    config_dir: o.config_dir.clone(),
                    pki_dir: o.pki_dir.clone(),
                    created_pki: true,
                    created_state_dirs: Vec::new(),
                    created_dirs: Vec::new(),
                    files: wanted
                        .iter()
                        .map(|(path, _)| Entry {
                            path: path.clone(),
                            original: None,
                        })
                        .collect(),
                };
                adopted.save(o)?;
                log(
                    CMD,
                    format!(
                        "adopted the drop-ins written at the node's first boot (recorded in {}; \
                         unconfigure removes them)",
                        Manifest::path(o).display()
                    ),
                );
            }
            return Ok(Outcome::Unchanged);
        }
    }

    // The record of the node's files, before anything of theirs changes.
    let mut manifest = match Manifest::load(o)? {
        Some(m) => m,
        None => Manifest {
            version: MANIFEST_VERSION,
            kubelet_config: o.kubelet_config.clone(),
            config_dir: o.config_dir.clone(),
            pki_dir: o.pki_dir.clone(),
            created_pki: !pki_existed,
            created_state_dirs: state_dirs,
            created_dirs: Vec::new(),
            files: Vec::new(),
        },
    };
    let manifest_existed = Manifest::path(o).exists();
    let mut created_now = Vec::new();
    for ((path, want), (_, state)) in wanted.iter().zip(&current) {
        if manifest.files.iter().any(|e| &e.path == path) {
            continue;
        }
        let original = match &state.0 {
            // Already this agent's file (put there by hand, or at the node's first boot): taking
            // the node off the proxy removes it.
            Some((bytes, _)) if bytes == want => None,
            Some((bytes, mode)) => {
                let name = format!("files/{}", manifest.files.len());
                write_file(&o.backup_dir().join(&name), bytes, 0o600)?;
                Some(Original {
                    backup: name,
                    mode: *mode,
                })
            }
            None => None,
        };
        manifest.files.push(Entry {
            path: path.clone(),
            original,
        });
        for dir in missing_dirs(path) {
            if !manifest.created_dirs.contains(&dir) {
                manifest.created_dirs.push(dir.clone());
                created_now.push(dir);
            }
        }
    }
    manifest.save(o)?;
    log(
        CMD,
        format!(
            "recorded the previous state of {} file(s) in {}",
            manifest.files.len(),
            Manifest::path(o).display()
        ),
    );

    for (path, contents) in &wanted {
        write_file(path, contents, 0o644)?;
        log(CMD, format!("wrote {}", path.display()));
    }
    let forget_manifest = |o: &Options| {
        if !manifest_existed {
            let _ = std::fs::remove_dir_all(o.backup_dir());
        }
    };

    // The files must say what the proxy needs before the kubelet reads them.
    let ca = pki::ca_cert_path(&o.pki_dir);
    let after_cfg = match effective(o) {
        Ok(c) => c,
        Err(e) => {
            restore_files(&current, &created_now);
            forget_manifest(o);
            return Err(e);
        }
    };
    let gaps = behind_proxy_gaps(&after_cfg, &ca);
    if !gaps.is_empty() {
        restore_files(&current, &created_now);
        forget_manifest(o);
        return Err(ConfigureError::Overridden(
            gaps.join(", "),
            o.config_dir.clone(),
        ));
    }

    let port = after_cfg.port;
    let result = match restart(CMD, o) {
        Err(e) => Err(e),
        Ok(()) => {
            log(
                CMD,
                format!(
                    "waiting up to {:?} for the kubelet on 127.0.0.1:{port}",
                    o.timeout
                ),
            );
            wait_for(o.timeout, || healthy_behind_proxy(o, port, &cert))?
        }
    };
    match result {
        Ok(p) => {
            log(
                CMD,
                format!(
                    "the kubelet {p} on 127.0.0.1:{port} with the proxy's certificate and \
                     listens on loopback only"
                ),
            );
            Ok(Outcome::Changed)
        }
        Err(what) => {
            let err = roll_back(
                CMD,
                o,
                &current,
                &created_now,
                &before_cfg.address,
                before_cfg.port,
                what,
            );
            forget_manifest(o);
            Err(err)
        }
    }
}

fn restore_files(before: &[(PathBuf, FileState)], created_dirs: &[PathBuf]) {
    for (path, state) in before {
        let _ = state.write(path);
    }
    for dir in created_dirs.iter().rev() {
        let _ = std::fs::remove_dir(dir);
    }
}

/// Take the kubelet back out from behind the proxy (see the module documentation).
pub fn unconfigure(o: &Options) -> Result<Outcome, ConfigureError> {
    const CMD: &str = "unconfigure";
    let manifest = match Manifest::load(o)? {
        Some(m) => m,
        None => {
            // No record, but the agent's own files (put there by hand, or at the node's first
            // boot): they are what taking the node off the proxy removes.
            let files: Vec<Entry> = wanted_files(o)
                .into_iter()
                .filter(|(path, want)| std::fs::read(path).is_ok_and(|have| &have == want))
                .map(|(path, _)| Entry {
                    path,
                    original: None,
                })
                .collect();
            if files.is_empty() {
                log(
                    CMD,
                    format!(
                        "no record of a configure in {} and none of the agent's drop-ins: \
                         nothing to undo",
                        Manifest::path(o).display()
                    ),
                );
                return Ok(Outcome::Unchanged);
            }
            log(
                CMD,
                format!(
                    "no record of a configure, but the agent's drop-ins are in place: removing {}",
                    files
                        .iter()
                        .map(|e| e.path.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            Manifest {
                version: MANIFEST_VERSION,
                kubelet_config: o.kubelet_config.clone(),
                config_dir: o.config_dir.clone(),
                pki_dir: o.pki_dir.clone(),
                created_pki: true,
                created_state_dirs: Vec::new(),
                created_dirs: Vec::new(),
                files,
            }
        }
    };
    let o = &Options {
        kubelet_config: manifest.kubelet_config.clone(),
        config_dir: manifest.config_dir.clone(),
        pki_dir: manifest.pki_dir.clone(),
        ..o.clone()
    };
    let configured = effective(o)?;
    let port = configured.port;

    log(
        CMD,
        format!(
            "waiting up to {:?} until no Envoy listens on port {port} (the proxy pod is gone)",
            o.timeout
        ),
    );
    let gone = wait_for(o.timeout, || {
        let envoys: Vec<Listener> = listeners::listeners(&o.proc_root, port)?
            .into_iter()
            .filter(|l| l.is_envoy() && !l.is_loopback())
            .collect();
        Ok(if envoys.is_empty() {
            Ok(())
        } else {
            Err(describe(&envoys))
        })
    })?;
    if let Err(held) = gone {
        return Err(ConfigureError::EnvoyStillThere(held, o.timeout));
    }

    // The configured state, to put back if the kubelet does not come back without it.
    let mut current = Vec::new();
    for e in &manifest.files {
        current.push((e.path.clone(), FileState::read(&e.path)?));
    }
    for e in &manifest.files {
        match &e.original {
            Some(orig) => {
                let backup = o.backup_dir().join(&orig.backup);
                let bytes = std::fs::read(&backup).map_err(io_err(&backup))?;
                write_file(&e.path, &bytes, orig.mode)?;
                log(CMD, format!("restored {}", e.path.display()));
            }
            None => {
                remove_file(&e.path)?;
                log(CMD, format!("removed {}", e.path.display()));
            }
        }
    }
    for dir in manifest.created_dirs.iter().rev() {
        if std::fs::remove_dir(dir).is_ok() {
            log(CMD, format!("removed the directory {}", dir.display()));
        }
    }

    let restored = effective(o);
    let result = match restored {
        Err(e) => Err(e.to_string()),
        Ok(cfg) => match restart(CMD, o) {
            Err(e) => Err(e),
            Ok(()) => {
                log(
                    CMD,
                    format!(
                        "waiting up to {:?} for the kubelet on {}:{}",
                        o.timeout, cfg.address, cfg.port
                    ),
                );
                wait_for(o.timeout, || Ok(answers(&cfg.address, cfg.port)))?
            }
        },
    };
    match result {
        Ok(p) => {
            log(CMD, format!("the kubelet {p} on its own address again"));
        }
        Err(what) => {
            // Back to the configured state, which worked.
            let cert = ClientCert::from_pem_file(&pki::proxy_current_path(&o.pki_dir))?;
            log(CMD, format!("{what}; putting the configured files back"));
            for (path, state) in &current {
                let _ = state.write(path);
            }
            if let Err(e) = restart(CMD, o) {
                log(CMD, format!("restart: {e}"));
            }
            return Err(
                match wait_for(o.timeout, || healthy_behind_proxy(o, port, &cert))? {
                    Ok(probe) => ConfigureError::RolledBack { what, probe },
                    Err(why) => ConfigureError::RollbackFailed {
                        what,
                        probe: Probe::Down(why),
                    },
                },
            );
        }
    }

    if manifest.created_pki {
        remove_tree(CMD, &o.pki_dir)?;
    }
    remove_tree(CMD, &o.backup_dir())?;
    // The last known kubelet version the pod's `init` kept: the agent's state, gone with the rest.
    let version_file = o.state_dir.join(crate::version::STATE_FILE);
    match std::fs::remove_file(&version_file) {
        Ok(()) => log(CMD, format!("removed {}", version_file.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&version_file)(e)),
    }
    for dir in manifest.created_state_dirs.iter().rev() {
        if std::fs::remove_dir(dir).is_ok() {
            log(CMD, format!("removed the directory {}", dir.display()));
        }
    }
    Ok(Outcome::Changed)
}

fn remove_tree(cmd: &str, dir: &Path) -> Result<(), ConfigureError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {
            log(cmd, format!("removed {}", dir.display()));
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(dir)(e)),
    }
}

/// `configure` and `unconfigure`'s command line.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigureArgs {
    /// The host's root file system in this container; `chroot` into it before anything else, so
    /// that paths are host paths and `systemctl` is the host's. `/`: no chroot.
    #[arg(long, default_value = "/host")]
    pub host_root: PathBuf,
    /// Where the kubelet's files are: `auto` picks the first distribution whose kubelet
    /// configuration exists.
    #[arg(long, default_value = "auto", value_parser = ["auto", "kubeadm", "eks-al2023"])]
    pub distribution: String,
    /// The kubelet's `--config` file (instead of the distribution's).
    #[arg(long)]
    pub kubelet_config: Option<PathBuf>,
    /// The kubelet's `--config-dir` (instead of the distribution's).
    #[arg(long)]
    pub config_dir: Option<PathBuf>,
    /// The `kubelet.service` drop-in directory where `--config-dir` is added (instead of the
    /// distribution's).
    #[arg(long)]
    pub systemd_dropin_dir: Option<PathBuf>,
    /// The kubelet binary, for a unit drop-in that rewrites `ExecStart` (eks-al2023; instead of
    /// the distribution's `/usr/bin/kubelet`).
    #[arg(long)]
    pub kubelet_binary: Option<PathBuf>,
    /// The per-node CA's directory (host path).
    #[arg(long, default_value = pki::DEFAULT_DIR)]
    pub pki_dir: PathBuf,
    /// The agent's state directory on the host (backups in `backup/`).
    #[arg(long, default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// How long the kubelet may take to come back (and, for `unconfigure`, Envoy to go).
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// `unconfigure`: once done (or when there is nothing to undo), stay running until killed, as
    /// a DaemonSet's container must.
    #[arg(long)]
    pub stay: bool,
}

impl ConfigureArgs {
    /// `chroot` into the host root (unless it is `/`) and resolve the options.
    fn enter(&self) -> anyhow::Result<Options> {
        use anyhow::Context as _;
        if self.host_root != Path::new("/") {
            std::os::unix::fs::chroot(&self.host_root).with_context(|| {
                format!(
                    "chroot {}: mount the host's / there (hostPath) and run privileged",
                    self.host_root.display()
                )
            })?;
            std::env::set_current_dir("/").context("chdir / in the host root")?;
        }
        let d = if self.distribution == "auto" {
            detect().with_context(|| {
                format!(
                    "--distribution auto: none of {} exists; pass --distribution and \
                     --kubelet-config/--config-dir",
                    DISTRIBUTIONS
                        .iter()
                        .map(|d| d.kubelet_config)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?
        } else {
            distribution(&self.distribution)
                .with_context(|| format!("--distribution {}: unknown", self.distribution))?
        };
        let mut o = Options::for_distribution(d);
        if let Some(p) = &self.kubelet_config {
            o.kubelet_config = p.clone();
        }
        if let Some(p) = &self.config_dir {
            o.config_dir = p.clone();
        }
        if let Some(p) = &self.systemd_dropin_dir {
            o.systemd_dropin_dir = p.clone();
        }
        if let Some(p) = &self.kubelet_binary {
            o.kubelet_binary = p.clone();
        }
        o.pki_dir = self.pki_dir.clone();
        o.state_dir = self.state_dir.clone();
        o.timeout = self.timeout;
        log(
            "start",
            format!(
                "distribution {} (host root {})",
                d.name,
                self.host_root.display()
            ),
        );
        Ok(o)
    }
}

fn finish(cmd: &str, r: Result<Outcome, ConfigureError>) -> std::process::ExitCode {
    match r {
        Ok(Outcome::Changed) => {
            log(cmd, "done");
            std::process::ExitCode::SUCCESS
        }
        Ok(Outcome::Unchanged) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            log(cmd, format!("failed: {e}"));
            std::process::ExitCode::from(1)
        }
    }
}

/// `kubelet-authz-node configure`.
pub fn run_configure(args: &ConfigureArgs) -> anyhow::Result<std::process::ExitCode> {
    let o = args.enter()?;
    Ok(finish("configure", configure(&o)))
}

/// `kubelet-authz-node unconfigure`.
pub fn run_unconfigure(args: &ConfigureArgs) -> anyhow::Result<std::process::ExitCode> {
    let o = args.enter()?;
    let code = finish("unconfigure", unconfigure(&o));
    if args.stay && code == std::process::ExitCode::SUCCESS {
        log(
            "unconfigure",
            "the kubelet is off the proxy on this node; staying until the pod is deleted \
             (remove the node's kubelet-authz.io/proxy label)",
        );
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    Ok(code)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::eks(
        "eks-al2023",
        "/etc/kubernetes/kubelet/config.json",
        "/etc/kubernetes/kubelet/config.json.d",
        UnitDropin::NodeadmExecStart
    )]
    #[case::kubeadm(
        "kubeadm",
        "/var/lib/kubelet/config.yaml",
        "/etc/kubernetes/kubelet.conf.d",
        UnitDropin::KubeadmConfigArgs
    )]
    fn distribution_table(
        #[case] name: &str,
        #[case] config: &str,
        #[case] dir: &str,
        #[case] unit: UnitDropin,
    ) {
        let d = distribution(name).unwrap();
        assert_eq!(d.kubelet_config, config);
        assert_eq!(d.config_dir, dir);
        assert_eq!(
            d.systemd_dropin_dir,
            "/etc/systemd/system/kubelet.service.d"
        );
        assert_eq!(d.unit_dropin, unit);
    }

    #[test]
    fn the_default_dropin_is_the_shipped_text() {
        assert_eq!(
            dropin_text(&pki::ca_cert_path(Path::new(pki::DEFAULT_DIR))),
            PROXY_DROPIN
        );
        let moved = dropin_text(Path::new("/tmp/x/ca.crt"));
        assert!(moved.contains("clientCAFile: /tmp/x/ca.crt\n"), "{moved}");
    }

    #[test]
    fn systemd_dropin_adds_config_dir_to_kubeadm_args() {
        let text = systemd_dropin_text(
            UnitDropin::KubeadmConfigArgs,
            Path::new("/usr/bin/kubelet"),
            Path::new("/var/lib/kubelet/config.yaml"),
            Path::new("/etc/kubernetes/kubelet.conf.d"),
        );
        assert!(text.contains(
            "\n[Service]\nEnvironment=\"KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml --config-dir=/etc/kubernetes/kubelet.conf.d\"\n"
        ), "{text}");
    }

    #[test]
    fn systemd_dropin_adds_config_dir_to_nodeadm_exec_start() {
        let text = systemd_dropin_text(
            UnitDropin::NodeadmExecStart,
            Path::new("/usr/bin/kubelet"),
            Path::new("/etc/kubernetes/kubelet/config.json"),
            Path::new("/etc/kubernetes/kubelet/config.json.d"),
        );
        assert!(
            text.contains(
                "\n[Service]\nExecStart=\nExecStart=/usr/bin/kubelet $NODEADM_KUBELET_ARGS --config-dir=/etc/kubernetes/kubelet/config.json.d\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn missing_dirs_parents_first() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("a/b/c.conf");
        assert_eq!(
            missing_dirs(&f),
            vec![tmp.path().join("a"), tmp.path().join("a/b")]
        );
    }
}
