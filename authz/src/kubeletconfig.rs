//! KubeletConfiguration (kubelet.config.k8s.io/v1beta1) parsing, defaults, and the CIS kubelet checks.
