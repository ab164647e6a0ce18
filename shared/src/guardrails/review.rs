//! Reviewing a NetworkPolicy change: the namespace's violations before and
//! after, and which of the after ones are new.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::networking::v1::NetworkPolicy;

use crate::meta::DEFAULT_NAMESPACE;
use crate::template::TierTemplate;

use super::context::Context;
use super::evaluate::NamespaceEval;
use super::facts::{PolicyFacts, Wanted};
use super::parsed::ParsedPolicy;
use super::prepared::StateView;
use super::state::policy_namespaces;
use super::types::{Operation, Review, StateAudit, Violation, ViolationKey};

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
    match findings_in(ctx, namespace, false) {
        Findings::Violations(violations) => violations,
        Findings::Warnings(_) => Vec::new(),
    }
}

/// What is wrong in one namespace: violations when it is governed, warnings
/// (the structure problems of its policies) when it is not.
enum Findings {
    Violations(Vec<Violation>),
    Warnings(Vec<Violation>),
}

/// The namespace's findings; an ungoverned namespace's policies are parsed
/// only `with_warnings`.
fn findings_in(ctx: &Context<'_>, namespace: &str, with_warnings: bool) -> Findings {
    let eval = NamespaceEval::new(ctx, namespace);
    if !eval.governed && !with_warnings {
        return Findings::Warnings(Vec::new());
    }
    let facts = state_facts(&eval, ctx.view, None);
    if eval.governed {
        Findings::Violations(eval.violations(&facts.iter().collect::<Vec<_>>(), &Wanted::All))
    } else {
        let mut warnings: Vec<Violation> = facts.into_iter().flat_map(|f| structure_only(f.own)).collect();
        warnings.sort_by(|a, b| a.key.cmp(&b.key));
        Findings::Warnings(warnings)
    }
}

/// The R4 part of a policy's own violations: all an ungoverned namespace
/// is checked for.
fn structure_only(own: Vec<Violation>) -> impl Iterator<Item = Violation> {
    own.into_iter()
        .filter(|v| matches!(v.key, ViolationKey::Structure { .. }))
}

/// See [`super::namespace_violations`].
pub(crate) fn namespace_violations(template: &TierTemplate, view: StateView<'_>, namespace: &str) -> Vec<Violation> {
    violations_in(&Context::new(template, view, namespace), namespace)
}

/// Every namespace of the state (namespace objects and namespaces holding
/// policies), in name order, with a context that serves them all.
fn state_namespaces<'a>(template: &'a TierTemplate, view: StateView<'a>) -> Option<(Context<'a>, BTreeSet<&'a str>)> {
    let state = view.state;
    let mut names: BTreeSet<&str> = state.namespaces.keys().map(String::as_str).collect();
    names.extend(policy_namespaces(state));
    // Every namespace evaluated is in the state, so one context (and its
    // namespace index) serves them all.
    let ctx = Context::new(template, view, names.first()?);
    Some((ctx, names))
}

/// See [`super::state_violations`].
pub(crate) fn state_violations(template: &TierTemplate, view: StateView<'_>) -> BTreeMap<String, Vec<Violation>> {
    let Some((ctx, names)) = state_namespaces(template, view) else {
        return BTreeMap::new();
    };
    names
        .into_iter()
        .map(|ns| (ns.to_string(), violations_in(&ctx, ns)))
        .filter(|(_, violations)| !violations.is_empty())
        .collect()
}

/// See [`super::audit_state`].
pub(crate) fn audit_state(template: &TierTemplate, view: StateView<'_>) -> StateAudit {
    let mut audit = StateAudit::default();
    let Some((ctx, names)) = state_namespaces(template, view) else {
        return audit;
    };
    for ns in names {
        let (found, into) = match findings_in(&ctx, ns, true) {
            Findings::Violations(v) => (v, &mut audit.violations),
            Findings::Warnings(w) => (w, &mut audit.warnings),
        };
        if !found.is_empty() {
            into.insert(ns.to_string(), found);
        }
    }
    audit
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
        .unwrap_or(DEFAULT_NAMESPACE);
    let ctx = Context::new(template, view, namespace);
    let eval = NamespaceEval::new(&ctx, namespace);
    // The changed object is the only one parsed here.
    let added_facts = added.map(|np| eval.facts(name_of(np), Cow::Owned(ParsedPolicy::new(np)), true));

    if !eval.governed {
        // Policies of ungoverned namespaces are admitted; structure problems still warn.
        let warnings = added_facts
            .into_iter()
            .flat_map(|f| structure_only(f.own))
            .map(|v| v.message)
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
