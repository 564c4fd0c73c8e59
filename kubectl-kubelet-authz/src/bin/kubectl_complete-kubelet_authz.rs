//! `kubectl_complete-kubelet_authz`: kubectl's plugin-completion executable. kubectl (1.26+) runs
//! `kubectl_complete-<plugin>` from PATH with the words after `kubectl kubelet-authz` to complete
//! `kubectl kubelet-authz <TAB>`; install it beside `kubectl-kubelet_authz`.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    kubectl_kubelet_authz::complete_main()
}
