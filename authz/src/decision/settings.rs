//! What the engine reads of the configuration to decide ([`Settings`]): the node, the kubelet
//! model, the authenticators, the authorization mode and cache lifetimes, the enforcement and the
//! bounds. The filter's transport (`apiServer`) and audit settings are not here: the engine does
//! not send or write anything. [`crate::config::Config`] checks the configuration and hands its
//! settings to the engine; a driver that needs no configuration file (the kubectl plugin) builds
//! them from [`Settings::with_defaults`].

use std::time::Duration;

use crate::kubelet::{KubeletModel, KubeletVersion};

/// `authorization.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorizationMode {
    /// SubjectAccessReview against the API server (the config-file default).
    Webhook,
    /// Allow every authenticated request (attributes are still built and audited).
    AlwaysAllow,
}

/// `enforcement`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforcement {
    /// Deny what the kubelet would deny.
    Enforce,
    /// Decide and audit, but forward everything.
    Shadow,
}

/// Bounds on every cache and queue (not kubelet settings: the kubelet's token cache is unbounded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Token cache entries.
    pub token_cache_size: usize,
    /// SubjectAccessReview cache entries (the kubelet's is 8192).
    pub sar_cache_size: usize,
    /// Distinct callouts in flight at once per VM.
    pub max_inflight: usize,
    /// Requests waiting on one in-flight callout.
    pub max_waiters: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            token_cache_size: 4096,
            sar_cache_size: 8192,
            max_inflight: 1024,
            max_waiters: 1024,
        }
    }
}

/// The decision settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The node name: the resource name in every SubjectAccessReview.
    pub node_name: String,
    /// Kubelet version and effective fine-grained gate.
    pub model: KubeletModel,
    /// `authentication.x509.enabled`.
    pub x509_enabled: bool,
    /// `authentication.webhook.enabled`.
    pub webhook_authn_enabled: bool,
    /// `authentication.webhook.cacheTTL`.
    pub token_cache_ttl: Duration,
    /// `authentication.anonymous.enabled`.
    pub anonymous_enabled: bool,
    /// `authorization.mode`.
    pub mode: AuthorizationMode,
    /// `authorization.webhook.cacheAuthorizedTTL`.
    pub authorized_ttl: Duration,
    /// `authorization.webhook.cacheUnauthorizedTTL`.
    pub unauthorized_ttl: Duration,
    /// `authorization.strictUpgradeVerb`.
    pub strict_upgrade_verb: bool,
    /// `apiServer.staleIfError`: how long past expiry a cached answer may stand in for a failed
    /// callout (0 = off).
    pub stale_if_error: Duration,
    /// `enforcement`.
    pub enforcement: Enforcement,
    /// `limits`.
    pub limits: Limits,
}

impl Settings {
    /// Every setting at the kubelet's config-file default, for a node name.
    pub fn with_defaults(node_name: &str) -> Settings {
        Settings {
            node_name: node_name.to_string(),
            model: KubeletModel::for_version(KubeletVersion::LATEST),
            x509_enabled: true,
            webhook_authn_enabled: true,
            token_cache_ttl: Duration::from_secs(120),
            anonymous_enabled: false,
            mode: AuthorizationMode::Webhook,
            authorized_ttl: Duration::from_secs(300),
            unauthorized_ttl: Duration::from_secs(30),
            strict_upgrade_verb: true,
            stale_if_error: Duration::ZERO,
            enforcement: Enforcement::Enforce,
            limits: Limits::default(),
        }
    }
}
