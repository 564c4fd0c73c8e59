//! `kubelet-authz-systemctl`: the stand-in `systemctl` of the node-in-a-box tests (put it on PATH
//! as `systemctl`). It runs the stand-in kubelet from the unit files under `$STANDIN_HOST_ROOT`;
//! see `kubelet_authz_standins::systemctl`.

use std::process::ExitCode;

use kubelet_authz_standins::systemctl::{Systemd, HOST_ROOT_ENV};

fn main() -> ExitCode {
    let Some(root) = std::env::var_os(HOST_ROOT_ENV) else {
        eprintln!("systemctl (stand-in): set {HOST_ROOT_ENV} to the test's host root");
        return ExitCode::from(2);
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    match Systemd::new(root).run(&args) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}
