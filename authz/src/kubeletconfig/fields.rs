//! The field names of KubeletConfiguration `kubelet.config.k8s.io/v1beta1`, taken from the
//! kubelet's own types (`staging/src/k8s.io/kubelet/config/v1beta1/types.go`, the `json:` tags),
//! and the unknown-field check built on them.
//!
//! **Unknown fields are refused here, on purpose.** The kubelet decodes its configuration file
//! strictly first and, when that fails only because of unknown (or duplicate) fields, decodes it
//! again leniently and merely logs `Using lenient decoding as strict decoding failed`
//! (`pkg/kubelet/kubeletconfig/util/codec`); drop-in files are decoded into an unstructured object,
//! with no field check at all. So a misspelt `authentication.webhok.enabled: false` is silently
//! ignored by the kubelet, which keeps webhook authentication **on**. The node agent decides from
//! this configuration whether the kubelet can be reached around the proxy and which TLS policy
//! Envoy serves: it must not guess what it cannot read, so a field it does not know is an error
//! naming the field (`authentication.webhok: unknown field`), in the base file and in every
//! drop-in. Field names are case-sensitive, as in the kubelet's decoder (`Address` is unknown).
//!
//! The nested structs the engine reads (`authentication.{x509,webhook,anonymous}`,
//! `authorization.{mode,webhook}`) are checked field by field; every other nested value
//! (`logging`, `tracing`, `memorySwap`, maps such as `featureGates` or `evictionHard`, ...) is kept
//! as an opaque value: its contents are the kubelet's business.

use serde_json::Value;

use super::KubeletConfigError;

/// Every top-level field of KubeletConfiguration v1beta1 (plus `kind` and `apiVersion`), in the
/// order of the Go struct. Fields newer than a node's kubelet are accepted: that kubelet warns on
/// them, and none of them changes who may reach the kubelet's API.
pub const TOP_LEVEL_FIELDS: &[&str] = &[
    "kind",
    "apiVersion",
    "enableServer",
    "staticPodPath",
    "podLogsDir",
    "syncFrequency",
    "fileCheckFrequency",
    "httpCheckFrequency",
    "staticPodURL",
    "staticPodURLHeader",
    "address",
    "port",
    "readOnlyPort",
    "tlsCertFile",
    "tlsPrivateKeyFile",
    "tlsCipherSuites",
    "tlsCurvePreferences",
    "tlsMinVersion",
    "rotateCertificates",
    "serverTLSBootstrap",
    "authentication",
    "authorization",
    "registryPullQPS",
    "registryBurst",
    "imagePullCredentialsVerificationPolicy",
    "preloadedImagesVerificationAllowlist",
    "eventRecordQPS",
    "eventBurst",
    "enableDebuggingHandlers",
    "enableContentionProfiling",
    "healthzPort",
    "healthzBindAddress",
    "oomScoreAdj",
    "clusterDomain",
    "clusterDNS",
    "streamingConnectionIdleTimeout",
    "nodeStatusUpdateFrequency",
    "nodeStatusReportFrequency",
    "nodeLeaseDurationSeconds",
    "imageMinimumGCAge",
    "imageMaximumGCAge",
    "imageGCHighThresholdPercent",
    "imageGCLowThresholdPercent",
    "volumeStatsAggPeriod",
    "kubeletCgroups",
    "systemCgroups",
    "cgroupRoot",
    "cgroupsPerQOS",
    "cgroupDriver",
    "cpuManagerPolicy",
    "singleProcessOOMKill",
    "cpuManagerPolicyOptions",
    "cpuManagerReconcilePeriod",
    "draManagerReconcilePeriod",
    "memoryManagerPolicy",
    "topologyManagerPolicy",
    "topologyManagerScope",
    "topologyManagerPolicyOptions",
    "qosReserved",
    "runtimeRequestTimeout",
    "hairpinMode",
    "maxPods",
    "podCIDR",
    "podPidsLimit",
    "resolvConf",
    "runOnce",
    "cpuCFSQuota",
    "cpuCFSQuotaPeriod",
    "nodeStatusMaxImages",
    "maxOpenFiles",
    "contentType",
    "kubeAPIQPS",
    "kubeAPIBurst",
    "serializeImagePulls",
    "maxParallelImagePulls",
    "evictionHard",
    "evictionSoft",
    "evictionSoftGracePeriod",
    "evictionPressureTransitionPeriod",
    "evictionMaxPodGracePeriod",
    "evictionMinimumReclaim",
    "mergeDefaultEvictionSettings",
    "podsPerCore",
    "enableControllerAttachDetach",
    "protectKernelDefaults",
    "makeIPTablesUtilChains",
    "iptablesMasqueradeBit",
    "iptablesDropBit",
    "featureGates",
    "failSwapOn",
    "memorySwap",
    "containerLogMaxSize",
    "containerLogMaxFiles",
    "containerLogMaxWorkers",
    "containerLogMonitorInterval",
    "configMapAndSecretChangeDetectionStrategy",
    "systemReserved",
    "kubeReserved",
    "reservedSystemCPUs",
    "showHiddenMetricsForVersion",
    "systemReservedCgroup",
    "kubeReservedCgroup",
    "enforceNodeAllocatable",
    "allowedUnsafeSysctls",
    "volumePluginDir",
    "providerID",
    "kernelMemcgNotification",
    "logging",
    "enableSystemLogHandler",
    "enableSystemLogQuery",
    "shutdownGracePeriod",
    "shutdownGracePeriodCriticalPods",
    "shutdownGracePeriodByPodPriority",
    "crashLoopBackOff",
    "reservedMemory",
    "enableProfilingHandler",
    "enableDebugFlagsHandler",
    "seccompDefault",
    "memoryThrottlingFactor",
    "memoryReservationPolicy",
    "registerWithTaints",
    "registerNode",
    "tracing",
    "localStorageCapacityIsolation",
    "containerRuntimeEndpoint",
    "imageServiceEndpoint",
    "failCgroupV1",
    "userNamespaces",
];

/// `KubeletAuthentication`.
const AUTHENTICATION: &[&str] = &["x509", "webhook", "anonymous"];
/// `KubeletX509Authentication`.
const X509: &[&str] = &["clientCAFile"];
/// `KubeletWebhookAuthentication`.
const AUTHN_WEBHOOK: &[&str] = &["enabled", "cacheTTL"];
/// `KubeletAnonymousAuthentication`.
const ANONYMOUS: &[&str] = &["enabled"];
/// `KubeletAuthorization`.
const AUTHORIZATION: &[&str] = &["mode", "webhook"];
/// `KubeletWebhookAuthorization`.
const AUTHZ_WEBHOOK: &[&str] = &["cacheAuthorizedTTL", "cacheUnauthorizedTTL"];

/// Refuse any field of `doc` that KubeletConfiguration v1beta1 does not have, at the top level and
/// in the nested structs the engine reads. The first unknown field found (in document order) is
/// reported with its dotted path. Values of the wrong type are left to the typed stage.
pub(super) fn check_unknown_fields(doc: &Value) -> Result<(), KubeletConfigError> {
    let Some(top) = doc.as_object() else {
        return Ok(());
    };
    for key in top.keys() {
        if !TOP_LEVEL_FIELDS.contains(&key.as_str()) {
            return Err(unknown(
                &crate::raw::join("", key),
                key,
                TOP_LEVEL_FIELDS,
                false,
            ));
        }
    }
    if let Some(authn) = top.get("authentication") {
        check_struct(authn, "authentication", AUTHENTICATION)?;
        if let Some(v) = authn.get("x509") {
            check_struct(v, "authentication.x509", X509)?;
        }
        if let Some(v) = authn.get("webhook") {
            check_struct(v, "authentication.webhook", AUTHN_WEBHOOK)?;
        }
        if let Some(v) = authn.get("anonymous") {
            check_struct(v, "authentication.anonymous", ANONYMOUS)?;
        }
    }
    if let Some(authz) = top.get("authorization") {
        check_struct(authz, "authorization", AUTHORIZATION)?;
        if let Some(v) = authz.get("webhook") {
            check_struct(v, "authorization.webhook", AUTHZ_WEBHOOK)?;
        }
    }
    Ok(())
}

/// Check the keys of one nested struct (a value that is not an object is the typed stage's error).
fn check_struct(value: &Value, path: &str, known: &[&str]) -> Result<(), KubeletConfigError> {
    let Some(map) = value.as_object() else {
        return Ok(());
    };
    for key in map.keys() {
        if !known.contains(&key.as_str()) {
            return Err(unknown(&crate::raw::join(path, key), key, known, true));
        }
    }
    Ok(())
}

fn unknown(field: &str, key: &str, known: &[&str], list: bool) -> KubeletConfigError {
    let hint = match (closest(key, known), list) {
        (Some(near), _) => format!("did you mean `{near}`?"),
        (None, true) => format!("known fields here: {}", known.join(", ")),
        (None, false) => {
            "see the KubeletConfiguration (kubelet.config.k8s.io/v1beta1) reference".to_string()
        }
    };
    KubeletConfigError::Field {
        field: field.to_string(),
        message: format!(
            "unknown field ({hint}); the kubelet would only warn and ignore it, kubelet-authz refuses what it cannot read: correct or remove it"
        ),
    }
}

/// The known name `key` most likely misspells: the same letters in another case, or at most two
/// edits away.
fn closest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    if let Some(k) = known.iter().find(|k| k.eq_ignore_ascii_case(key)) {
        return Some(k);
    }
    known
        .iter()
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = Vec::with_capacity(b.len() + 1);
        cur.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev
                .get(j)
                .map_or(usize::MAX, |p| p + usize::from(ca != *cb));
            let delete = prev.get(j + 1).map_or(usize::MAX, |p| p + 1);
            let insert = cur.get(j).map_or(usize::MAX, |c| c + 1);
            cur.push(substitute.min(delete).min(insert));
        }
        prev = cur;
    }
    prev.last().copied().unwrap_or_default()
}
