//! The stand-in `systemctl` for the node-in-a-box tests: it runs the stand-in kubelet as a host's
//! systemd runs the kubelet, from a unit file and its drop-ins under a test's host root, so that
//! `kubelet-authz-node configure` restarts it "by the same command the agent runs on a host".
//!
//! Files under the host root `ROOT` (environment variable [`HOST_ROOT_ENV`]):
//! - `ROOT/etc/systemd/system/kubelet.service` and `ROOT/etc/systemd/system/kubelet.service.d/*.conf`
//!   (lexical order): `Environment=` assignments and `EnvironmentFile=` files (later ones win) and
//!   `ExecStart=` (an empty one resets it); `$VAR` as a whole word expands to the value split at white space, `${VAR}` to the
//!   value in place, as systemd does.
//! - `ROOT/run/systemd/kubelet.loaded`: the command line `daemon-reload` resolved (JSON); `start`
//!   and `restart` run it, so a changed unit takes effect only after `daemon-reload`.
//! - `ROOT/run/kubelet.pid`, `ROOT/var/log/kubelet.log`: the running kubelet and its output.
//! - `ROOT/run/standin-systemctl/fail-restart`: a number N; the next N `restart`s stop the
//!   kubelet and fail without starting it. `.../dead-start`: the next N starts (by `start` or
//!   `restart`) report success but start nothing (a kubelet that exits at once).
//!
//! Commands: `daemon-reload`, `start kubelet`, `stop kubelet`, `restart kubelet`,
//! `is-active kubelet` (prints `active`/`inactive`, exit 0/3).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The environment variable naming the test's host root.
pub const HOST_ROOT_ENV: &str = "STANDIN_HOST_ROOT";

/// Why a command failed (the binary prints it and exits 1).
#[derive(Debug, thiserror::Error)]
pub enum SystemctlError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The unit is not usable.
    #[error("kubelet.service: {0}")]
    Unit(String),
    /// An injected failure.
    #[error("Job for kubelet.service failed because the control process exited with error code.")]
    Injected,
    /// Unknown command or unit.
    #[error("{0}")]
    Usage(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SystemctlError + '_ {
    move |source| SystemctlError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The stand-in systemd of one host root.
#[derive(Debug, Clone)]
pub struct Systemd {
    root: PathBuf,
}

impl Systemd {
    /// The stand-in for the host root `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Systemd { root: root.into() }
    }

    /// The unit file.
    pub fn unit_path(&self) -> PathBuf {
        self.root.join("etc/systemd/system/kubelet.service")
    }

    /// The unit's drop-in directory.
    pub fn dropin_dir(&self) -> PathBuf {
        self.root.join("etc/systemd/system/kubelet.service.d")
    }

    /// The pid file of the running kubelet.
    pub fn pid_path(&self) -> PathBuf {
        self.root.join("run/kubelet.pid")
    }

    /// The kubelet's log.
    pub fn log_path(&self) -> PathBuf {
        self.root.join("var/log/kubelet.log")
    }

    fn loaded_path(&self) -> PathBuf {
        self.root.join("run/systemd/kubelet.loaded")
    }

    /// The fault switch files (`fail-restart`, `dead-start`).
    pub fn fault_path(&self, name: &str) -> PathBuf {
        self.root.join("run/standin-systemctl").join(name)
    }

    /// Run one command line (without the program name); the exit code.
    pub fn run(&self, args: &[String]) -> Result<i32, SystemctlError> {
        let args: Vec<&str> = args
            .iter()
            .map(String::as_str)
            .filter(|a| !a.starts_with("--"))
            .collect();
        match args.as_slice() {
            ["daemon-reload"] => {
                self.daemon_reload()?;
                Ok(0)
            }
            [cmd, unit] if is_kubelet(unit) => match *cmd {
                "start" => {
                    self.start()?;
                    Ok(0)
                }
                "stop" => {
                    self.stop()?;
                    Ok(0)
                }
                "restart" => {
                    self.stop()?;
                    if self.take_fault("fail-restart")? {
                        return Err(SystemctlError::Injected);
                    }
                    self.start()?;
                    Ok(0)
                }
                "is-active" => {
                    let active = self.pid()?.is_some();
                    println!("{}", if active { "active" } else { "inactive" });
                    Ok(if active { 0 } else { 3 })
                }
                other => Err(SystemctlError::Usage(format!("unknown command {other:?}"))),
            },
            _ => Err(SystemctlError::Usage(format!(
                "usage: systemctl daemon-reload | (start|stop|restart|is-active) kubelet; got {args:?}"
            ))),
        }
    }

    /// Resolve the unit and its drop-ins into the command line `start` runs.
    pub fn daemon_reload(&self) -> Result<Vec<String>, SystemctlError> {
        let argv = self.resolve()?;
        let path = self.loaded_path();
        write(&path, &serde_json::to_vec(&argv).unwrap_or_default())?;
        Ok(argv)
    }

    /// The unit's command line as systemd would run it now.
    pub fn resolve(&self) -> Result<Vec<String>, SystemctlError> {
        let mut files = vec![self.unit_path()];
        let dir = self.dropin_dir();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            let mut dropins: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "conf"))
                .collect();
            dropins.sort();
            files.extend(dropins);
        }
        let mut env: Vec<(String, String)> = Vec::new();
        let mut exec: Option<String> = None;
        for file in &files {
            let text = std::fs::read_to_string(file).map_err(io_err(file))?;
            for line in text.lines() {
                let line = line.trim();
                if let Some(v) = line.strip_prefix("Environment=") {
                    for assignment in shlex::split(v).unwrap_or_default() {
                        if let Some((k, v)) = assignment.split_once('=') {
                            env.retain(|(name, _)| name != k);
                            env.push((k.to_string(), v.to_string()));
                        }
                    }
                } else if let Some(v) = line.strip_prefix("EnvironmentFile=") {
                    // `-`: a missing file is not an error.
                    let (optional, path) = match v.strip_prefix('-') {
                        Some(p) => (true, p),
                        None => (false, v),
                    };
                    let path = Path::new(path.trim());
                    match std::fs::read_to_string(path) {
                        Ok(text) => {
                            for l in text.lines().map(str::trim) {
                                if l.is_empty() || l.starts_with('#') {
                                    continue;
                                }
                                if let Some((k, v)) = l.split_once('=') {
                                    let v = shlex::split(v)
                                        .map(|w| w.join(" "))
                                        .unwrap_or_else(|| v.to_string());
                                    env.retain(|(name, _)| name != k);
                                    env.push((k.to_string(), v));
                                }
                            }
                        }
                        Err(_) if optional => {}
                        Err(e) => return Err(io_err(path)(e)),
                    }
                } else if let Some(v) = line.strip_prefix("ExecStart=") {
                    exec = (!v.trim().is_empty()).then(|| v.to_string());
                }
            }
        }
        let exec = exec.ok_or_else(|| SystemctlError::Unit("no ExecStart".into()))?;
        let words = shlex::split(&exec)
            .ok_or_else(|| SystemctlError::Unit(format!("ExecStart: bad quoting: {exec}")))?;
        let lookup = |name: &str| {
            env.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let mut argv = Vec::new();
        for w in words {
            if let Some(name) = w.strip_prefix('$').filter(|n| !n.starts_with('{')) {
                argv.extend(lookup(name).split_whitespace().map(str::to_string));
            } else {
                let mut out = w.clone();
                for (k, v) in &env {
                    out = out.replace(&format!("${{{k}}}"), v);
                }
                argv.push(out);
            }
        }
        Ok(argv)
    }

    /// The running kubelet's pid.
    pub fn pid(&self) -> Result<Option<u32>, SystemctlError> {
        let path = self.pid_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path)(e)),
        };
        Ok(text.trim().parse().ok().filter(|p| alive(*p)))
    }

    /// Start the kubelet unless it runs.
    pub fn start(&self) -> Result<(), SystemctlError> {
        if self.pid()?.is_some() {
            return Ok(());
        }
        if self.take_fault("dead-start")? {
            let _ = std::fs::remove_file(self.pid_path());
            return Ok(());
        }
        let loaded = self.loaded_path();
        let argv: Vec<String> = match std::fs::read(&loaded) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| SystemctlError::Unit(format!("{}: {e}", loaded.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.daemon_reload()?,
            Err(e) => return Err(io_err(&loaded)(e)),
        };
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| SystemctlError::Unit("empty ExecStart".into()))?;
        let log = self.log_path();
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(io_err(&log))?;
        let err = out.try_clone().map_err(io_err(&log))?;
        use std::os::unix::process::CommandExt as _;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|e| SystemctlError::Unit(format!("ExecStart {program}: {e}")))?;
        write(&self.pid_path(), child.id().to_string().as_bytes())
    }

    /// Stop the kubelet (SIGTERM, then SIGKILL after 10 s) and wait until it is gone.
    pub fn stop(&self) -> Result<(), SystemctlError> {
        if let Some(pid) = self.pid()? {
            signal(pid, "TERM");
            let start = Instant::now();
            while alive(pid) {
                if start.elapsed() > Duration::from_secs(10) {
                    signal(pid, "KILL");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        match std::fs::remove_file(self.pid_path()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&self.pid_path())(e)),
        }
    }

    /// Consume one count of a fault switch; whether it fired.
    fn take_fault(&self, name: &str) -> Result<bool, SystemctlError> {
        let path = self.fault_path(name);
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(false);
        };
        let n: u32 = text.trim().parse().unwrap_or(0);
        if n == 0 {
            return Ok(false);
        }
        write(&path, (n - 1).to_string().as_bytes())?;
        Ok(true)
    }
}

fn is_kubelet(unit: &str) -> bool {
    unit == "kubelet" || unit == "kubelet.service"
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), SystemctlError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    std::fs::write(path, bytes).map_err(io_err(path))
}

/// Whether `pid` runs (a zombie does not).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn kubeadm_unit_with_dropins_expands_like_systemd() {
        let tmp = tempfile::tempdir().unwrap();
        let sd = Systemd::new(tmp.path());
        std::fs::create_dir_all(sd.dropin_dir()).unwrap();
        std::fs::write(
            sd.unit_path(),
            "[Service]\nExecStart=/usr/bin/kubelet\nRestart=always\n",
        )
        .unwrap();
        std::fs::write(
            sd.dropin_dir().join("10-kubeadm.conf"),
            "[Service]\n\
             Environment=\"KUBELET_KUBECONFIG_ARGS=--kubeconfig=/etc/kubernetes/kubelet.conf\"\n\
             Environment=\"KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml\"\n\
             ExecStart=\n\
             ExecStart=/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_EXTRA_ARGS\n",
        )
        .unwrap();
        assert_eq!(
            sd.resolve().unwrap(),
            vec![
                "/usr/bin/kubelet",
                "--kubeconfig=/etc/kubernetes/kubelet.conf",
                "--config=/var/lib/kubelet/config.yaml"
            ]
        );
        std::fs::write(
            sd.dropin_dir().join("90-kubelet-authz.conf"),
            "[Service]\nEnvironment=\"KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml --config-dir=/etc/kubernetes/kubelet.conf.d\"\n",
        )
        .unwrap();
        assert_eq!(
            sd.resolve().unwrap(),
            vec![
                "/usr/bin/kubelet",
                "--kubeconfig=/etc/kubernetes/kubelet.conf",
                "--config=/var/lib/kubelet/config.yaml",
                "--config-dir=/etc/kubernetes/kubelet.conf.d"
            ]
        );
    }

    #[test]
    fn start_stop_restart_and_faults() {
        let tmp = tempfile::tempdir().unwrap();
        let sd = Systemd::new(tmp.path());
        std::fs::create_dir_all(sd.unit_path().parent().unwrap()).unwrap();
        std::fs::write(sd.unit_path(), "[Service]\nExecStart=sleep 30\n").unwrap();
        let args = |s: &str| s.split(' ').map(str::to_string).collect::<Vec<_>>();
        assert_eq!(sd.run(&args("is-active kubelet")).unwrap(), 3);
        assert_eq!(sd.run(&args("daemon-reload")).unwrap(), 0);
        assert_eq!(sd.run(&args("start kubelet")).unwrap(), 0);
        let first = sd.pid().unwrap().unwrap();
        assert_eq!(sd.run(&args("is-active kubelet")).unwrap(), 0);
        assert_eq!(sd.run(&args("restart kubelet")).unwrap(), 0);
        let second = sd.pid().unwrap().unwrap();
        assert_ne!(first, second);
        assert!(!alive(first));

        std::fs::create_dir_all(sd.fault_path("x").parent().unwrap()).unwrap();
        std::fs::write(sd.fault_path("fail-restart"), "1").unwrap();
        assert!(matches!(
            sd.run(&args("restart kubelet")),
            Err(SystemctlError::Injected)
        ));
        assert_eq!(sd.run(&args("is-active kubelet")).unwrap(), 3);
        assert!(!alive(second));
        assert_eq!(sd.run(&args("restart kubelet")).unwrap(), 0);
        assert_eq!(sd.run(&args("is-active kubelet")).unwrap(), 0);

        std::fs::write(sd.fault_path("dead-start"), "1").unwrap();
        assert_eq!(sd.run(&args("restart kubelet")).unwrap(), 0);
        assert_eq!(sd.run(&args("is-active kubelet")).unwrap(), 3);
        assert_eq!(sd.run(&args("stop kubelet")).unwrap(), 0);
    }
}
