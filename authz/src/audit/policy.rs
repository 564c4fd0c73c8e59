//! The audit policy (DESIGN.md "Audit and metrics"): which decisions get an audit event, as a
//! subset of the audit.k8s.io/v1 `Policy` of Kubernetes. Ordered rules, the first rule that
//! matches a decision gives its level (`None` or `Metadata`); a rule matches when every field it
//! names matches (an absent field matches everything).
//!
//! What a rule sees of a decision ([`Facts`]):
//! - `users`, `userGroups`: the user and groups of the verdict, as the authorizer saw them (with
//!   `system:authenticated` or `system:unauthenticated` added). A decision without a user (a
//!   refused path, a failed authentication) matches no rule that names `users` or `userGroups`.
//! - `verbs`: the kubelet's verb (`get`, `create`, `update`, `patch`, `delete`; `""` for a method
//!   the kubelet does not map, e.g. `HEAD`).
//! - `subresources`: the deciding subresource (`metrics` for `nodes/metrics`: the allowing one, or
//!   the last one tried). A decision refused before its attributes were built (a non-canonical
//!   path, `refused`) or before authorization (`unauthenticated`) has none, and matches no rule
//!   that names `subresources`: select those by `outcomes`, as a Kubernetes rule naming
//!   `resources` never matches a non-resource request.
//! - `outcomes`: `allowed`, `forbidden` (403), `unauthenticated` (401), `error` (500: the
//!   authorizer failed, or the filter failed the request closed after an allow) or `refused` (400:
//!   a non-canonical path). In shadow enforcement a denial is forwarded but matched as what
//!   enforcing would have answered (a shadow would-denial is `forbidden`, not `allowed`).
//!
//! No matching rule means `Metadata`: a decision is dropped only where a rule says `None` (unlike
//! Kubernetes, whose policies drop what no rule names), so a denial is never lost to a rule that
//! was meant to keep something else. The built-in policy ([`Policy::builtin`]) drops allowed `get`
//! of `metrics`, `stats` and `healthz` (the high-volume scrapes) and writes everything else.

use crate::decision::{Outcome, Verdict};
use crate::identity::UserInfo;
use crate::kubelet::Subresource;

/// How much of a decision is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Nothing.
    None,
    /// One audit event (the request's metadata, never a body).
    Metadata,
}

impl Level {
    /// The policy's name for the level.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::None => "None",
            Level::Metadata => "Metadata",
        }
    }

    /// The level named `name` (`None` or `Metadata`), or a message saying what is expected.
    pub fn parse(name: &str) -> Result<Level, String> {
        match name {
            "None" => Ok(Level::None),
            "Metadata" => Ok(Level::Metadata),
            "Request" | "RequestResponse" => Err(format!(
                "unknown level {name:?}: expected None or Metadata (the filter never reads request or response bodies)"
            )),
            other => Err(format!(
                "unknown level {other:?}: expected None or Metadata"
            )),
        }
    }
}

/// A decision's outcome as the policy names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditOutcome {
    /// Authenticated and authorized.
    Allowed,
    /// 403.
    Forbidden,
    /// 401.
    Unauthenticated,
    /// 500: the authorizer failed, or the filter failed the request closed.
    Error,
    /// 400: refused before attributes (a non-canonical path).
    Refused,
}

impl AuditOutcome {
    /// Every outcome, in the order of the documentation.
    pub const ALL: [AuditOutcome; 5] = [
        AuditOutcome::Allowed,
        AuditOutcome::Forbidden,
        AuditOutcome::Unauthenticated,
        AuditOutcome::Error,
        AuditOutcome::Refused,
    ];

    /// The policy's name.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Allowed => "allowed",
            AuditOutcome::Forbidden => "forbidden",
            AuditOutcome::Unauthenticated => "unauthenticated",
            AuditOutcome::Error => "error",
            AuditOutcome::Refused => "refused",
        }
    }

    /// The outcome named `name`, or a message saying what is expected.
    pub fn parse(name: &str) -> Result<AuditOutcome, String> {
        AuditOutcome::ALL
            .into_iter()
            .find(|o| o.as_str() == name)
            .ok_or_else(|| {
                format!(
                    "unknown outcome {name:?}: expected allowed, forbidden, unauthenticated, error or refused"
                )
            })
    }

    /// The outcome of `verdict`, answered with `response_code` (the filter's own reply, if any).
    /// A shadow verdict keeps the outcome enforcing would have had; an allowed verdict that the
    /// filter still failed closed (500) is an `error`.
    pub fn of(verdict: &Verdict, response_code: Option<u16>) -> AuditOutcome {
        match verdict.outcome {
            Outcome::Allowed if response_code.is_some_and(|c| c >= 500) => AuditOutcome::Error,
            Outcome::Allowed => AuditOutcome::Allowed,
            Outcome::Forbidden => AuditOutcome::Forbidden,
            Outcome::Unauthenticated => AuditOutcome::Unauthenticated,
            Outcome::AuthorizerError | Outcome::InternalError => AuditOutcome::Error,
            Outcome::BadRequest => AuditOutcome::Refused,
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// The verbs a rule may name: the kubelet's verbs, and `""` for an unmapped method.
pub const VERBS: [&str; 6] = ["get", "create", "update", "patch", "delete", ""];

fn verb_bit(verb: &str) -> Option<u8> {
    VERBS
        .iter()
        .position(|v| *v == verb)
        .map(|i| 1u8 << (i & 7))
}

/// The subresource a rule names: `metrics` or `nodes/metrics`.
pub fn parse_subresource(name: &str) -> Result<Subresource, String> {
    let bare = name.strip_prefix("nodes/").unwrap_or(name);
    Subresource::ALL
        .into_iter()
        .find(|s| s.as_str() == bare)
        .ok_or_else(|| {
            let known: Vec<&str> = Subresource::ALL.iter().map(|s| s.as_str()).collect();
            format!(
                "unknown subresource {name:?}: expected one of {} (the name after nodes/)",
                known.join(", ")
            )
        })
}

fn sub_bit(s: Subresource) -> u16 {
    let i = Subresource::ALL
        .iter()
        .position(|x| *x == s)
        .unwrap_or_default();
    1 << (i & 15)
}

/// What the policy reads of one decision.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The user as the authorizer saw it (groups include `system:authenticated`).
    pub user: Option<&'a UserInfo>,
    /// The kubelet's verb.
    pub verb: &'a str,
    /// The deciding subresource, if attributes were built and authorization began.
    pub subresource: Option<Subresource>,
    /// The outcome as enforcing would have answered.
    pub outcome: AuditOutcome,
}

impl<'a> Facts<'a> {
    /// The facts of `verdict`, answered with `response_code` (see [`AuditOutcome::of`]).
    pub fn of(verdict: &'a Verdict, response_code: Option<u16>) -> Facts<'a> {
        Facts {
            user: verdict.user.as_deref(),
            verb: verdict.verb,
            subresource: verdict.deciding_subresource(),
            outcome: AuditOutcome::of(verdict, response_code),
        }
    }
}

/// One rule; every named field must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    level: Level,
    users: Option<Vec<String>>,
    user_groups: Option<Vec<String>>,
    verbs: Option<u8>,
    subresources: Option<u16>,
    outcomes: Option<u8>,
}

impl Rule {
    /// A rule that matches everything, at `level`.
    pub fn new(level: Level) -> Rule {
        Rule {
            level,
            users: None,
            user_groups: None,
            verbs: None,
            subresources: None,
            outcomes: None,
        }
    }

    /// The rule's level.
    pub fn level(&self) -> Level {
        self.level
    }

    /// Match only these user names.
    pub fn users(mut self, users: Vec<String>) -> Rule {
        self.users = Some(users);
        self
    }

    /// Match only users in one of these groups.
    pub fn user_groups(mut self, groups: Vec<String>) -> Rule {
        self.user_groups = Some(groups);
        self
    }

    /// Match only these verbs (see [`VERBS`]); the error names the first unknown one.
    pub fn verbs<'v>(mut self, verbs: impl IntoIterator<Item = &'v str>) -> Result<Rule, String> {
        let mut mask = 0;
        for v in verbs {
            mask |= verb_bit(v).ok_or_else(|| {
                format!(
                    "unknown verb {v:?}: expected get, create, update, patch, delete or \"\" (the kubelet's verbs)"
                )
            })?;
        }
        self.verbs = Some(mask);
        Ok(self)
    }

    /// Match only these deciding subresources.
    pub fn subresources(mut self, subs: impl IntoIterator<Item = Subresource>) -> Rule {
        self.subresources = Some(subs.into_iter().fold(0, |m, s| m | sub_bit(s)));
        self
    }

    /// Match only these outcomes.
    pub fn outcomes(mut self, outcomes: impl IntoIterator<Item = AuditOutcome>) -> Rule {
        self.outcomes = Some(outcomes.into_iter().fold(0, |m, o| m | o.bit()));
        self
    }

    /// Whether the rule matches the decision.
    pub fn matches(&self, f: &Facts<'_>) -> bool {
        if self.outcomes.is_some_and(|m| m & f.outcome.bit() == 0) {
            return false;
        }
        if let Some(m) = self.subresources {
            match f.subresource {
                Some(s) if m & sub_bit(s) != 0 => {}
                _ => return false,
            }
        }
        if let Some(m) = self.verbs {
            if verb_bit(f.verb).is_none_or(|b| m & b == 0) {
                return false;
            }
        }
        if let Some(users) = &self.users {
            match f.user {
                Some(u) if users.contains(&u.name) => {}
                _ => return false,
            }
        }
        if let Some(groups) = &self.user_groups {
            match f.user {
                Some(u) if u.groups.iter().any(|g| groups.contains(g)) => {}
                _ => return false,
            }
        }
        true
    }
}

/// An ordered list of rules; the first match gives the level, no match gives `Metadata`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    rules: Vec<Rule>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy::builtin()
    }
}

impl Policy {
    /// The built-in policy: allowed `get` of `metrics`, `stats` and `healthz` at `None`,
    /// everything else at `Metadata`. Denials, errors, refusals, shadow would-denials and every
    /// decision on `proxy` (exec, attach, portForward, run, and the rest) are written.
    pub fn builtin() -> Policy {
        let scrapes = Rule {
            verbs: verb_bit("get"),
            ..Rule::new(Level::None)
        }
        .subresources([
            Subresource::Metrics,
            Subresource::Stats,
            Subresource::Healthz,
        ])
        .outcomes([AuditOutcome::Allowed]);
        Policy::new(vec![scrapes, Rule::new(Level::Metadata)])
    }

    /// A policy of `rules`, in order.
    pub fn new(rules: Vec<Rule>) -> Policy {
        Policy { rules }
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The level of a decision: the first matching rule's, or `Metadata`.
    pub fn level(&self, facts: &Facts<'_>) -> Level {
        self.rules
            .iter()
            .find(|r| r.matches(facts))
            .map_or(Level::Metadata, Rule::level)
    }

    /// The level of `verdict` answered with `response_code`.
    pub fn level_of(&self, verdict: &Verdict, response_code: Option<u16>) -> Level {
        self.level(&Facts::of(verdict, response_code))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;
    use rstest::rstest;

    use AuditOutcome::{Allowed, Error, Forbidden, Refused, Unauthenticated};
    use Level::{Metadata, None as Drop};
    use Subresource::*;

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..UserInfo::default()
        }
    }

    fn facts<'a>(
        u: Option<&'a UserInfo>,
        verb: &'a str,
        sub: Option<Subresource>,
        outcome: AuditOutcome,
    ) -> Facts<'a> {
        Facts {
            user: u,
            verb,
            subresource: sub,
            outcome,
        }
    }

    /// The built-in policy, outcome by subresource family.
    #[rstest]
    #[case::metrics_allowed("get", Some(Metrics), Allowed, Drop)]
    #[case::stats_allowed("get", Some(Stats), Allowed, Drop)]
    #[case::healthz_allowed("get", Some(Healthz), Allowed, Drop)]
    #[case::metrics_head_allowed("", Some(Metrics), Allowed, Metadata)]
    #[case::metrics_forbidden("get", Some(Metrics), Forbidden, Metadata)]
    #[case::stats_forbidden("get", Some(Stats), Forbidden, Metadata)]
    #[case::metrics_error("get", Some(Metrics), Error, Metadata)]
    #[case::healthz_error("get", Some(Healthz), Error, Metadata)]
    #[case::stats_create_allowed("create", Some(Stats), Allowed, Metadata)]
    #[case::pods_allowed("get", Some(Pods), Allowed, Metadata)]
    #[case::log_allowed("get", Some(Log), Allowed, Metadata)]
    #[case::configz_allowed("get", Some(Configz), Allowed, Metadata)]
    #[case::statusz_allowed("get", Some(Statusz), Allowed, Metadata)]
    #[case::checkpoint_allowed("create", Some(Checkpoint), Allowed, Metadata)]
    #[case::proxy_get_allowed("get", Some(Proxy), Allowed, Metadata)]
    #[case::exec_allowed("create", Some(Proxy), Allowed, Metadata)]
    #[case::exec_forbidden("create", Some(Proxy), Forbidden, Metadata)]
    #[case::exec_error("create", Some(Proxy), Error, Metadata)]
    #[case::refused("get", None, Refused, Metadata)]
    #[case::unauthenticated("get", None, Unauthenticated, Metadata)]
    #[case::metrics_unauthenticated("get", Some(Metrics), Unauthenticated, Metadata)]
    fn builtin_policy(
        #[case] verb: &str,
        #[case] sub: Option<Subresource>,
        #[case] outcome: AuditOutcome,
        #[case] want: Level,
    ) {
        let u = user("prometheus", &["system:authenticated"]);
        let who = (outcome != Unauthenticated).then_some(&u);
        assert_eq!(
            Policy::builtin().level(&facts(who, verb, sub, outcome)),
            want
        );
    }

    /// Every outcome but `allowed`, on every subresource and none, and every `proxy` decision,
    /// is written by the built-in policy.
    #[test]
    fn builtin_always_writes_denials_errors_and_proxy() {
        let u = user("u", &["system:authenticated"]);
        let subs = Subresource::ALL.into_iter().map(Some).chain([None]);
        for sub in subs {
            for verb in VERBS {
                for outcome in AuditOutcome::ALL {
                    let f = facts(Some(&u), verb, sub, outcome);
                    let level = Policy::builtin().level(&f);
                    if outcome != Allowed || sub == Some(Proxy) {
                        assert_eq!(level, Metadata, "{f:?}");
                    }
                }
            }
        }
    }

    fn alice() -> UserInfo {
        user("alice", &["dev", "system:authenticated"])
    }

    fn custom() -> Policy {
        Policy::new(vec![
            Rule::new(Metadata).users(vec!["alice".into()]),
            Rule::new(Drop).user_groups(vec!["system:authenticated".into()]),
            Rule::new(Drop).outcomes([Refused]),
            Rule::new(Drop)
                .verbs(["create"])
                .unwrap()
                .subresources([Proxy])
                .outcomes([Forbidden]),
        ])
    }

    #[rstest]
    #[case::first_match_wins_for_alice(Some(alice()), "get", Some(Metrics), Allowed, Metadata)]
    #[case::authenticated_group_drops(
        Some(user("bob", &["system:authenticated"])),
        "get",
        Some(Pods),
        Forbidden,
        Drop
    )]
    #[case::group_as_the_verdict_sees_it(
        Some(user("system:anonymous", &["system:unauthenticated"])),
        "create",
        Some(Proxy),
        Forbidden,
        Drop
    )]
    #[case::anonymous_not_in_authenticated(
        Some(user("system:anonymous", &["system:unauthenticated"])),
        "get",
        Some(Pods),
        Forbidden,
        Metadata
    )]
    #[case::no_user_matches_no_user_rule(None, "get", None, Unauthenticated, Metadata)]
    #[case::refused_by_outcome(None, "get", None, Refused, Drop)]
    #[case::verb_must_match(
        Some(user("system:anonymous", &[])),
        "get",
        Some(Proxy),
        Forbidden,
        Metadata
    )]
    #[case::sub_must_match(
        Some(user("system:anonymous", &[])),
        "create",
        Some(Log),
        Forbidden,
        Metadata
    )]
    #[case::outcome_must_match(
        Some(user("system:anonymous", &[])),
        "create",
        Some(Proxy),
        Error,
        Metadata
    )]
    fn user_policy(
        #[case] who: Option<UserInfo>,
        #[case] verb: &str,
        #[case] sub: Option<Subresource>,
        #[case] outcome: AuditOutcome,
        #[case] want: Level,
    ) {
        assert_eq!(
            custom().level(&facts(who.as_ref(), verb, sub, outcome)),
            want
        );
    }

    #[test]
    fn first_match_wins() {
        let u = alice();
        let f = facts(Some(&u), "get", Some(Pods), Allowed);
        let keep_then_drop = Policy::new(vec![Rule::new(Metadata), Rule::new(Drop)]);
        let drop_then_keep = Policy::new(vec![Rule::new(Drop), Rule::new(Metadata)]);
        assert_eq!(keep_then_drop.level(&f), Metadata);
        assert_eq!(drop_then_keep.level(&f), Drop);
        // No rule matches: written.
        let only_bob = Policy::new(vec![Rule::new(Drop).users(vec!["bob".into()])]);
        assert_eq!(only_bob.level(&f), Metadata);
    }

    #[test]
    fn subresource_rule_never_matches_a_decision_without_one() {
        let every_sub = Policy::new(vec![Rule::new(Drop).subresources(Subresource::ALL)]);
        let u = alice();
        assert_eq!(
            every_sub.level(&facts(Some(&u), "get", None, Refused)),
            Metadata
        );
        assert_eq!(
            every_sub.level(&facts(Some(&u), "get", Some(Log), Refused)),
            Drop
        );
    }

    #[rstest]
    #[case("metrics", Ok(Metrics))]
    #[case("nodes/proxy", Ok(Proxy))]
    #[case("exec", Err(()))]
    #[case("nodes/", Err(()))]
    fn subresource_names(#[case] name: &str, #[case] want: Result<Subresource, ()>) {
        assert_eq!(parse_subresource(name).map_err(|_| ()), want);
    }

    #[test]
    fn names() {
        assert_eq!(Level::parse("None"), Ok(Drop));
        assert!(Level::parse("Request")
            .unwrap_err()
            .contains("unknown level \"Request\""));
        assert!(Level::parse("metadata").is_err());
        for o in AuditOutcome::ALL {
            assert_eq!(AuditOutcome::parse(o.as_str()), Ok(o));
        }
        assert!(AuditOutcome::parse("denied").is_err());
        assert!(Rule::new(Drop).verbs(["GET"]).is_err());
        assert!(Rule::new(Drop).verbs(["", "get"]).is_ok());
    }
}
