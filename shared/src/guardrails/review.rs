//! Reviewing a NetworkPolicy change: the namespace's violations before and
//! after, and which of the after ones are new.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::networking::v1::NetworkPolicy;

use crate::template::TierTemplate;

use super::context::{Context, policy_namespaces};
use super::evaluate::{NamespaceEval, PolicyFacts};
use super::{Operation, PolicyState, Review, Violation, ViolationKey};

/// The facts of every policy the state holds in the namespace, in name
/// order; own (R3, R4) violations for every policy, or only for `own_for`.
fn state_facts(eval: &NamespaceEval<'_>, state: &PolicyState, own_for: Option<&str>) -> Vec<PolicyFacts> {
    let namespace = eval.namespace.as_str();
    state
        .policies
        .range((namespace.to_string(), String::new())..)
        .take_while(|((ns, _), _)| ns == namespace)
        .map(|((_, name), np)| eval.facts(name, np, own_for.is_none_or(|o| o == name)))
        .collect()
}

/// Every violation of `namespace` with the state's policies.
fn violations_in(ctx: &Context<'_>, namespace: &str) -> Vec<Violation> {
    let eval = NamespaceEval::new(ctx, namespace);
    if !eval.governed {
        return Vec::new();
    }
    let facts = state_facts(&eval, ctx.state, None);
    eval.violations(&facts.iter().collect::<Vec<_>>())
}

/// See [`super::namespace_violations`].
pub(crate) fn namespace_violations(template: &TierTemplate, state: &PolicyState, namespace: &str) -> Vec<Violation> {
    violations_in(&Context::new(template, state, namespace), namespace)
}

/// See [`super::state_violations`].
pub(crate) fn state_violations(template: &TierTemplate, state: &PolicyState) -> BTreeMap<String, Vec<Violation>> {
    let mut names: BTreeSet<&str> = state.namespaces.keys().map(String::as_str).collect();
    names.extend(policy_namespaces(state));
    let Some(first) = names.first() else {
        return BTreeMap::new();
    };
    // Every namespace evaluated is in the state, so one context (and its
    // namespace index) serves them all.
    let ctx = Context::new(template, state, first);
    names
        .into_iter()
        .map(|ns| (ns.to_string(), violations_in(&ctx, ns)))
        .filter(|(_, violations)| !violations.is_empty())
        .collect()
}

fn name_of(np: &NetworkPolicy) -> &str {
    np.metadata.name.as_deref().unwrap_or_default()
}

/// See [`super::review_network_policy`].
pub(crate) fn review_network_policy(
    template: &TierTemplate,
    state: &PolicyState,
    operation: Operation,
    old: Option<&NetworkPolicy>,
    new: Option<&NetworkPolicy>,
) -> Review {
    // The object that ends up in the state, and the one whose name leaves it.
    let (added, replaced) = match operation {
        Operation::Create | Operation::Update => match new {
            Some(np) => (Some(np), np),
            None => return Review::default(),
        },
        Operation::Delete => match old {
            Some(np) => (None, np),
            None => return Review::default(),
        },
    };
    let namespace = replaced
        .metadata
        .namespace
        .as_deref()
        .or_else(|| old.and_then(|o| o.metadata.namespace.as_deref()))
        .unwrap_or("default");
    let ctx = Context::new(template, state, namespace);
    let eval = NamespaceEval::new(&ctx, namespace);
    let added_facts = added.map(|np| eval.facts(name_of(np), np, true));

    if !eval.governed {
        // Policies of ungoverned namespaces are admitted; structure problems still warn.
        let warnings = added_facts
            .iter()
            .flat_map(|f| f.own.iter())
            .filter(|v| matches!(v.key, ViolationKey::Structure { .. }))
            .map(|v| v.message.clone())
            .collect();
        return Review {
            new_violations: Vec::new(),
            warnings,
        };
    }

    // R3 and R4 keys name their policy, so only the changing policy's can be
    // new: the others' are the same before and after and are not computed.
    let replaced_name = name_of(replaced);
    let existing = state_facts(&eval, state, Some(replaced_name));
    let before: Vec<&PolicyFacts> = existing.iter().collect();
    let mut after: Vec<&PolicyFacts> = existing.iter().filter(|f| f.name != replaced_name).collect();
    after.extend(added_facts.as_ref());

    let before_keys: BTreeSet<ViolationKey> = eval.violations(&before).into_iter().map(|v| v.key).collect();
    let new_violations = eval
        .violations(&after)
        .into_iter()
        .filter(|v| !before_keys.contains(&v.key))
        .collect();
    Review {
        new_violations,
        warnings: Vec::new(),
    }
}
