//! R1: every group isolated in both directions by some policy covering it.

use crate::policy::Direction;

use super::facts::{PolicyFacts, Wanted};
use super::groups::GroupScope;
use super::types::{Group, Violation, ViolationKey};

/// The `wanted` R1 violations of a namespace holding `policies`, onto `out`.
pub(crate) fn default_deny_violations(
    tier_label: &str,
    namespace: &str,
    groups: &[GroupScope],
    policies: &[&PolicyFacts<'_>],
    wanted: &Wanted<'_>,
    out: &mut Vec<Violation>,
) {
    for (i, scope) in groups.iter().enumerate() {
        for direction in Direction::BOTH {
            let isolated = policies.iter().any(|p| p.covers[i] && p.policy().isolates(direction));
            if !isolated {
                let key = ViolationKey::DefaultDeny {
                    namespace: namespace.to_string(),
                    group: scope.group.clone(),
                    direction,
                };
                wanted.push(out, key, || message(tier_label, namespace, &scope.group, direction));
            }
        }
    }
}

fn message(tier_label: &str, namespace: &str, group: &Group, direction: Direction) -> String {
    let head = format!(
        "{} in namespace {namespace} has no default-deny for {direction}",
        group.describe()
    );
    match group {
        Group::Tier(t) => format!(
            "{head}: add a policy with podSelector {{}} (or {tier_label}: {t}) and policyTypes [Ingress, Egress]"
        ),
        Group::Namespace(t) => format!(
            "{head}: add a policy with podSelector {{}} and policyTypes [Ingress, Egress] (the namespace is \
             labelled {tier_label}={t}, so only an empty podSelector covers its pods)"
        ),
        Group::Untiered => format!(
            "{head}: add a policy with podSelector {{}} and policyTypes [Ingress, Egress] (pods without a \
             template tier label are covered only by a selector that also selects them; per-tier \
             default-denies leave them out)"
        ),
    }
}
