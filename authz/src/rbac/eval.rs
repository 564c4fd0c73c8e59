//! The rule matchers of `pkg/apis/rbac/v1/evaluation_helpers.go` and `RuleAllows`, as pure
//! functions over one [`PolicyRule`] (reference `rbac.md` section 1).

use super::model::{PolicyRule, WILDCARD};
use super::Attributes;

/// `VerbMatches`: a rule verb is `*` or equals `verb` exactly (case-sensitive). An empty `verb`
/// matches only `*`; an empty `verbs` list matches nothing.
pub fn verb_matches(rule: &PolicyRule, verb: &str) -> bool {
    rule.verbs.iter().any(|v| v == WILDCARD || v == verb)
}

/// `APIGroupMatches`: a rule group is `*` or equals `group` exactly (`""` is the core group).
pub fn api_group_matches(rule: &PolicyRule, group: &str) -> bool {
    rule.api_groups.iter().any(|g| g == WILDCARD || g == group)
}

/// `ResourceMatches`: a rule resource is `*`, or equals `combined` (`resource` or
/// `resource/subresource`) exactly, or, for a subresource request, is `*/<subresource>`. There is
/// no `resource/*` wildcard.
pub fn resource_matches(rule: &PolicyRule, combined: &str, subresource: &str) -> bool {
    rule.resources.iter().any(|r| {
        r == WILDCARD
            || r == combined
            || (!subresource.is_empty()
                && r.strip_prefix("*/").is_some_and(|sub| sub == subresource))
    })
}

/// `ResourceNameMatches`: no `resourceNames`, or `name` is one of them exactly.
pub fn resource_name_matches(rule: &PolicyRule, name: &str) -> bool {
    rule.resource_names.is_empty() || rule.resource_names.iter().any(|n| n == name)
}

/// `NonResourceURLMatches`: a rule URL is `*`, equals `path`, or ends with `*` and `path` starts
/// with the URL minus its trailing `*`s.
pub fn non_resource_url_matches(rule: &PolicyRule, path: &str) -> bool {
    rule.non_resource_urls.iter().any(|u| {
        u == WILDCARD
            || u == path
            || (u.ends_with('*') && path.starts_with(u.trim_end_matches('*')))
    })
}

/// `RuleAllows`: whether `rule` allows the request described by `attrs`.
pub fn rule_allows(rule: &PolicyRule, attrs: &Attributes) -> bool {
    match attrs {
        Attributes::Resource(r) => rule_grants(
            rule,
            &r.verb,
            &r.group,
            &r.resource,
            &r.subresource,
            &r.name,
        ),
        Attributes::NonResource(n) => {
            verb_matches(rule, &n.verb) && non_resource_url_matches(rule, &n.path)
        }
    }
}

/// Whether `rule` grants a resource request: `verb` on `group`'s `resource` (with `subresource`,
/// or `""`) named `name` (`""` when unnamed). For example, does this rule grant
/// `rule_grants(rule, "get", "", "nodes", "proxy", "worker-1")`?
pub fn rule_grants(
    rule: &PolicyRule,
    verb: &str,
    group: &str,
    resource: &str,
    subresource: &str,
    name: &str,
) -> bool {
    if !verb_matches(rule, verb) || !api_group_matches(rule, group) {
        return false;
    }
    let matched = if subresource.is_empty() {
        resource_matches(rule, resource, subresource)
    } else {
        resource_matches(rule, &format!("{resource}/{subresource}"), subresource)
    };
    matched && resource_name_matches(rule, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_subresource_needs_exact_length() {
        let rule = PolicyRule::resource(&["get"], &[""], &["*/proxy"]);
        assert!(rule_grants(&rule, "get", "", "nodes", "proxy", ""));
        assert!(!rule_grants(&rule, "get", "", "nodes", "xproxy", ""));
        assert!(!rule_grants(&rule, "get", "", "nodes", "roxy", ""));
        assert!(!rule_grants(&rule, "get", "", "nodes", "", ""));
    }

    #[test]
    fn trailing_stars_are_all_trimmed() {
        let rule = PolicyRule::non_resource(&["get"], &["/logs**"]);
        assert!(non_resource_url_matches(&rule, "/logs/x"));
        assert!(non_resource_url_matches(&rule, "/logs"));
        assert!(!non_resource_url_matches(&rule, "/log"));
    }
}
