//! Reviewing a NetworkPolicy change: the namespace's violations before and
//! after, and which of the after ones are new.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::networking::v1::NetworkPolicy;

use crate::template::TierTemplate;

use super::context::{Context, policy_namespaces};
use super::evaluate::{NamespaceEval, PolicyFacts, Wanted};
use super::prepared::{ParsedPolicy, StateView};
use super::{Operation, Review, Violation, ViolationKey};

/// The facts of every policy the state holds in the namespace, in name
/// order; own (R3, R4) violations for every policy, or only for `own_for`.
fn state_facts<'a>(eval: &NamespaceEval<'_, '_>, view: StateView<'a>, own_for: Option<&str>) -> Vec<PolicyFacts<'a>> {
    view.namespace_policies(&eval.namespace)
        .into_iter()
        .map(|(name, parsed)| eval.facts(name, parsed, own_for.is_none_or(|o| o == name)))
        .collect()
}

/// Every violation of `namespace` with the state's policies.
fn violations_in(ctx: &Context<'_>, namespace: &str) -> Vec<Violation> {
    let eval = NamespaceEval::new(ctx, namespace);
    if !eval.governed {
        return Vec::new();
    }
    let facts = state_facts(&eval, ctx.view, None);
    eval.violations(&facts.iter().collect::<Vec<_>>(), &Wanted::All)
}

/// See [`super::namespace_violations`].
pub(crate) fn namespace_violations(template: &TierTemplate, view: StateView<'_>, namespace: &str) -> Vec<Violation> {
    violations_in(&Context::new(template, view, namespace), namespace)
}

/// See [`super::state_violations`].
pub(crate) fn state_violations(template: &TierTemplate, view: StateView<'_>) -> BTreeMap<String, Vec<Violation>> {
    let state = view.state;
    let mut names: BTreeSet<&str> = state.namespaces.keys().map(String::as_str).collect();
    names.extend(policy_namespaces(state));
    let Some(first) = names.first() else {
        return BTreeMap::new();
    };
    // Every namespace evaluated is in the state, so one context (and its
    // namespace index) serves them all.
    let ctx = Context::new(template, view, first);
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
    view: StateView<'_>,
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
    let ctx = Context::new(template, view, namespace);
    let eval = NamespaceEval::new(&ctx, namespace);
    // The changed object is the only one parsed here.
    let added_facts = added.map(|np| eval.facts(name_of(np), Cow::Owned(ParsedPolicy::new(np)), true));

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
    let existing = state_facts(&eval, view, Some(replaced_name));
    let before: Vec<&PolicyFacts<'_>> = existing.iter().collect();
    let mut after: Vec<&PolicyFacts<'_>> = existing.iter().filter(|f| f.name != replaced_name).collect();
    after.extend(added_facts.as_ref());

    // Only the keys of the before-state matter, and only new violations need messages.
    let before_keys: BTreeSet<ViolationKey> = eval
        .violations(&before, &Wanted::KeysOnly)
        .into_iter()
        .map(|v| v.key)
        .collect();
    let new_violations = eval.violations(&after, &Wanted::NewSince(&before_keys));
    Review {
        new_violations,
        warnings: Vec::new(),
    }
}
