//! The guardrail rules R1-R4 (docs/guardrails.md), namespace validation and
//! namespace mutation (docs/namespaces.md). Pure functions over a `PolicyState`; for
//! many reviews against one state, [`PreparedState`] parses its policies once
//! and gives the same answers.
//!
//! API CONTRACT (the webhook crate codes against exactly these items; the
//! bodies are being filled in by the guardrails work).
//!
//! The modules form a one-way chain, each using only those listed before it,
//! so that one rule can be read without the others:
//! `types`, `state`, `parsed` and `prepared` (data); `dns` (what reaches
//! DNS); `context`; `groups`; `facts` (what R1 and R2 read per policy); the
//! rules `default_deny` (R1), `dns_rule` (R2), `flows` (R3) and `structure`
//! (R4); `evaluate`; `review`; `namespace` and `mutate`; and this module,
//! the API, on top.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;

use crate::template::TierTemplate;

mod context;
mod default_deny;
mod dns;
mod dns_rule;
mod evaluate;
mod facts;
mod flows;
mod groups;
mod mutate;
mod namespace;
mod parsed;
mod prepared;
mod review;
mod state;
mod structure;
#[cfg(test)]
mod tests;
mod types;

pub use mutate::TIER_ANNOTATION;
pub use prepared::PreparedState;
pub use state::PolicyState;
pub use types::{Group, Mutation, Operation, PeerTier, Review, RuleId, StateAudit, Violation, ViolationKey};

use prepared::StateView;

// ---- API functions ----

/// Every violation in one namespace of the state, sorted by key. Ungoverned
/// namespaces get none (R4 problems there are only warnings, see
/// `review_network_policy`).
pub fn namespace_violations(template: &TierTemplate, state: &PolicyState, namespace: &str) -> Vec<Violation> {
    review::namespace_violations(template, StateView::raw(state), namespace)
}

/// Every violation of every governed namespace in the state (for `check`):
/// namespaces of `state.namespaces` and of `state.policies`, in name order.
/// Namespaces without violations are left out, so an empty map means the
/// state passes.
pub fn state_violations(template: &TierTemplate, state: &PolicyState) -> BTreeMap<String, Vec<Violation>> {
    review::state_violations(template, StateView::raw(state))
}

/// Every violation and every warning of the state (see [`StateAudit`]);
/// its `violations` are exactly [`state_violations`].
///
/// ```
/// use tierguard::guardrails::{audit_state, PolicyState, RuleId};
/// use tierguard::TierTemplate;
/// let broken: k8s_openapi::api::networking::v1::NetworkPolicy = serde_json::from_value(serde_json::json!({
///     "metadata": {"name": "broken", "namespace": "kube-public"},
///     "spec": {"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]}
/// })).unwrap();
/// let mut state = PolicyState::default();
/// state.policies.insert(("kube-public".into(), "broken".into()), broken);
/// let audit = audit_state(&TierTemplate::built_in(), &state);
/// // kube-public is not governed: its broken CIDR is a warning, not a violation.
/// assert!(audit.passes());
/// assert_eq!(audit.warnings["kube-public"][0].rule(), RuleId::R4);
/// ```
pub fn audit_state(template: &TierTemplate, state: &PolicyState) -> StateAudit {
    review::audit_state(template, StateView::raw(state))
}

/// Reviews a NetworkPolicy CREATE (new), UPDATE (old, new) or DELETE (old)
/// against `state`, the state before the change: `new_violations` are the
/// violations of the after-state whose keys the before-state lacks. In an
/// ungoverned namespace nothing is a violation and the structure problems of
/// `new` come back as `warnings`.
///
/// ```
/// use tierguard::guardrails::{review_network_policy, Operation, PolicyState, RuleId};
/// use tierguard::TierTemplate;
/// let deny: k8s_openapi::api::networking::v1::NetworkPolicy = serde_json::from_value(serde_json::json!({
///     "metadata": {"name": "default-deny-all", "namespace": "shop"},
///     "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
/// })).unwrap();
/// let review = review_network_policy(
///     &TierTemplate::built_in(), &PolicyState::default(), Operation::Create, None, Some(&deny));
/// // A default-deny without a DNS allow cuts every group off from DNS.
/// assert!(review.new_violations.iter().all(|v| v.rule() == RuleId::R2));
/// assert!(review.new_violations[0].message.contains("would drop DNS"));
/// ```
pub fn review_network_policy(
    template: &TierTemplate,
    state: &PolicyState,
    operation: Operation,
    old: Option<&NetworkPolicy>,
    new: Option<&NetworkPolicy>,
) -> Review {
    review::review_network_policy(template, StateView::raw(state), operation, old, new)
}

/// Reviews a Namespace CREATE (new) or UPDATE (old, new): a
/// `kubernetes.io/metadata.name` label other than the name, or (governed
/// namespaces only) a new or changed tier label naming no template tier.
pub fn review_namespace(
    template: &TierTemplate,
    operation: Operation,
    old: Option<&Namespace>,
    new: &Namespace,
) -> Review {
    namespace::review_namespace(template, operation, old, new)
}

/// The patch that sets `kubernetes.io/metadata.name` and the tier label (docs/namespaces.md).
///
/// ```
/// use tierguard::guardrails::mutate_namespace;
/// use tierguard::TierTemplate;
/// let mut doc = serde_json::json!({"metadata": {"name": "shop-data"}});
/// let ns = serde_json::from_value(doc.clone()).unwrap();
/// let mutation = mutate_namespace(&TierTemplate::built_in(), &ns);
/// json_patch::patch(&mut doc, &mutation.patch).unwrap();
/// assert_eq!(doc["metadata"]["labels"]["tier"], "data");
/// assert_eq!(doc["metadata"]["labels"]["kubernetes.io/metadata.name"], "shop-data");
/// ```
pub fn mutate_namespace(template: &TierTemplate, namespace: &Namespace) -> Mutation {
    mutate::mutate_namespace(template, namespace)
}

/// Reviews against a prepared state. They belong to the API rather than to
/// `prepared`, which is data the rules read and so sits below them.
impl PreparedState {
    /// [`review_network_policy`] against this state.
    pub fn review_network_policy(
        &self,
        template: &TierTemplate,
        operation: Operation,
        old: Option<&NetworkPolicy>,
        new: Option<&NetworkPolicy>,
    ) -> Review {
        review::review_network_policy(template, StateView::prepared(self), operation, old, new)
    }

    /// [`namespace_violations`] of this state.
    pub fn namespace_violations(&self, template: &TierTemplate, namespace: &str) -> Vec<Violation> {
        review::namespace_violations(template, StateView::prepared(self), namespace)
    }

    /// [`state_violations`] of this state.
    pub fn state_violations(&self, template: &TierTemplate) -> BTreeMap<String, Vec<Violation>> {
        review::state_violations(template, StateView::prepared(self))
    }

    /// [`audit_state`] of this state.
    pub fn audit_state(&self, template: &TierTemplate) -> StateAudit {
        review::audit_state(template, StateView::prepared(self))
    }
}
