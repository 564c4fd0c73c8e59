//! `kubectl-kubelet_authz`: the kubectl plugin (`kubectl kubelet-authz ...`); everything is in
//! the library.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    kubectl_kubelet_authz::main()
}
