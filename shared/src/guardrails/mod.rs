//! The guardrail rules R1-R4 (docs/guardrails.md), namespace validation and
//! namespace mutation (docs/namespaces.md). Pure functions over a `PolicyState`; for
//! many reviews against one state, [`PreparedState`] parses its policies once
//! and gives the same answers.
//!
//! API CONTRACT (the webhook crate codes against exactly these items; the
//! bodies are being filled in by the guardrails work).

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;

use crate::labels::Labels;
use crate::policy::{Direction, Protocol};
use crate::template::TierTemplate;

mod context;
mod default_deny;
mod dns;
mod dns_rule;
mod evaluate;
mod flows;
mod groups;
mod mutate;
mod namespace;
mod prepared;
mod review;
mod structure;
#[cfg(test)]
mod tests;

pub use mutate::TIER_ANNOTATION;
pub use prepared::PreparedState;

/// Which guardrail rule a violation breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum RuleId {
    /// default-deny
    R1,
    /// DNS
    R2,
    /// template flows
    R3,
    /// structure
    R4,
    /// namespace labels (tier label, `kubernetes.io/metadata.name`)
    Namespace,
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RuleId::R1 => "R1",
            RuleId::R2 => "R2",
            RuleId::R3 => "R3",
            RuleId::R4 => "R4",
            RuleId::Namespace => "NS",
        })
    }
}

/// A tier group of a governed namespace (docs/guardrails.md, "Groups").
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Group {
    /// The namespace is labelled with this tier: all its pods form one group.
    Namespace(String),
    /// Pods labelled with this template tier, in an unlabelled namespace.
    Tier(String),
    /// Pods with no template tier, in an unlabelled namespace.
    Untiered,
}

/// The tier a peer may be of, for R3.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum PeerTier {
    /// pods of a template tier
    Tier(String),
    /// pods with no template tier (or in ungoverned namespaces)
    Untiered,
    /// ipBlock peers
    External,
}

/// What makes a violation "the same" before and after a change
/// (docs/guardrails.md, "What makes a change fail").
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum ViolationKey {
    /// R1 (namespace, group, direction)
    DefaultDeny {
        /// namespace
        namespace: String,
        /// group
        group: Group,
        /// direction
        direction: Direction,
    },
    /// R2 (namespace, group, port)
    Dns {
        /// namespace
        namespace: String,
        /// group
        group: Group,
        /// protocol
        protocol: Protocol,
        /// port
        port: u16,
    },
    /// R3 (namespace, policy, direction, group, peer tier)
    Template {
        /// namespace
        namespace: String,
        /// policy name
        policy: String,
        /// direction
        direction: Direction,
        /// the tier the policy may select
        tier: String,
        /// the peer's tier
        peer: PeerTier,
    },
    /// R4 (namespace, policy, field path)
    Structure {
        /// namespace
        namespace: String,
        /// policy name
        policy: String,
        /// field path, e.g. `spec.ingress[0].from[1].ipBlock.except[0]`
        field: String,
    },
    /// Namespace label problems (namespace, label key)
    NamespaceLabel {
        /// namespace
        namespace: String,
        /// label key
        label: String,
    },
}

/// One violation with its human message.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Violation {
    /// identity for before/after comparison
    pub key: ViolationKey,
    /// names the policy, namespace, tier, rule and field, and says how to fix it
    pub message: String,
}

impl Violation {
    /// The rule broken.
    pub fn rule(&self) -> RuleId {
        match self.key {
            ViolationKey::DefaultDeny { .. } => RuleId::R1,
            ViolationKey::Dns { .. } => RuleId::R2,
            ViolationKey::Template { .. } => RuleId::R3,
            ViolationKey::Structure { .. } => RuleId::R4,
            ViolationKey::NamespaceLabel { .. } => RuleId::Namespace,
        }
    }
}

/// The cluster state the rules read: namespace labels and NetworkPolicies as
/// the API holds them (raw, so R4 can report structure problems).
#[derive(Clone, Debug, Default)]
pub struct PolicyState {
    /// namespace name -> labels (with `kubernetes.io/metadata.name`)
    pub namespaces: BTreeMap<String, Labels>,
    /// (namespace, name) -> policy
    pub policies: BTreeMap<(String, String), NetworkPolicy>,
}

/// Admission operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// CREATE
    Create,
    /// UPDATE
    Update,
    /// DELETE
    Delete,
}

/// The outcome of reviewing one change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Review {
    /// violations the change introduces (the change is rejected in enforce mode when non-empty)
    pub new_violations: Vec<Violation>,
    /// messages to return as warnings even when admitted (e.g. R4 in an ungoverned namespace,
    /// an unknown `tierguard.io/tier` annotation)
    pub warnings: Vec<String>,
}

/// The result of mutating a Namespace.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Mutation {
    /// RFC 6902 patch; empty when nothing changes
    pub patch: json_patch::Patch,
    /// warnings for the AdmissionResponse
    pub warnings: Vec<String>,
}

// ---- API functions ----

/// Every violation in one namespace of the state, sorted by key. Ungoverned
/// namespaces get none (R4 problems there are only warnings, see
/// `review_network_policy`).
pub fn namespace_violations(template: &TierTemplate, state: &PolicyState, namespace: &str) -> Vec<Violation> {
    review::namespace_violations(template, prepared::StateView::raw(state), namespace)
}

/// Every violation of every governed namespace in the state (for `check`):
/// namespaces of `state.namespaces` and of `state.policies`, in name order.
/// Namespaces without violations are left out, so an empty map means the
/// state passes.
pub fn state_violations(template: &TierTemplate, state: &PolicyState) -> BTreeMap<String, Vec<Violation>> {
    review::state_violations(template, prepared::StateView::raw(state))
}

/// Everything wrong with a state, as `check` and an audit of a live cluster
/// report it: the violations of governed namespaces, and the structure (R4)
/// problems of policies in namespaces that are not governed, which are only
/// warnings there (the webhook admits such policies and warns).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateAudit {
    /// violations by governed namespace, each list sorted by key; namespaces
    /// without any are left out
    pub violations: BTreeMap<String, Vec<Violation>>,
    /// R4 problems by ungoverned namespace, each list sorted by key;
    /// namespaces without any are left out
    pub warnings: BTreeMap<String, Vec<Violation>>,
}

impl StateAudit {
    /// Whether the state passes: no violations (warnings do not count).
    pub fn passes(&self) -> bool {
        self.violations.is_empty()
    }
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
    review::audit_state(template, prepared::StateView::raw(state))
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
    review::review_network_policy(template, prepared::StateView::raw(state), operation, old, new)
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
