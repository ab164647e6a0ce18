//! A state prepared once for many reviews (the webhook builds one per
//! cluster-state generation): every policy parsed and every namespace's
//! effective labels worked out, so a review parses only the changed object.
//! Only what depends on neither the template nor the change is kept here.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Deref;

use k8s_openapi::api::networking::v1::NetworkPolicy;

use crate::labels::Labels;
use crate::policy::{FieldError, LenientPolicy, Policy};
use crate::template::TierTemplate;

use super::context::{effective_labels, policy_namespaces};
use super::structure::kept_rule_indices;
use super::{Operation, PolicyState, Review, StateAudit, Violation, review};

/// One policy as the rules read it: its lenient parse, and where its kept
/// rules sit in the spec (for R3 field paths).
#[derive(Clone, Debug)]
pub(crate) struct ParsedPolicy {
    /// the usable part
    pub policy: Policy,
    /// its structure problems (R4)
    pub errors: Vec<FieldError>,
    /// spec indices of the kept ingress rules
    pub ingress_indices: Vec<usize>,
    /// spec indices of the kept egress rules
    pub egress_indices: Vec<usize>,
}

impl ParsedPolicy {
    /// Parses one policy.
    pub fn new(raw: &NetworkPolicy) -> Self {
        let LenientPolicy { policy, errors } = Policy::from_k8s_lenient(raw);
        let spec = raw.spec.as_ref();
        let ingress_count = spec.and_then(|s| s.ingress.as_ref()).map_or(0, Vec::len);
        let egress_count = spec.and_then(|s| s.egress.as_ref()).map_or(0, Vec::len);
        ParsedPolicy {
            ingress_indices: kept_rule_indices("ingress", ingress_count, &errors),
            egress_indices: kept_rule_indices("egress", egress_count, &errors),
            policy,
            errors,
        }
    }
}

/// A [`PolicyState`] with every policy parsed once, for reviewing many
/// changes against the same state. It is read-only (it derefs to the state it
/// was built from, and offers no way to change it), so what it derived can
/// never go stale; a new state needs a new `PreparedState`.
///
/// Its methods give exactly the results of the free functions of
/// [`crate::guardrails`] on the same state, without parsing the state's
/// policies again on every call.
///
/// ```
/// use tierguard::guardrails::{Operation, PolicyState, PreparedState, review_network_policy};
/// use tierguard::TierTemplate;
/// let deny: k8s_openapi::api::networking::v1::NetworkPolicy = serde_json::from_value(serde_json::json!({
///     "metadata": {"name": "default-deny-all", "namespace": "shop"},
///     "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
/// })).unwrap();
/// let template = TierTemplate::built_in();
/// let state = PolicyState::default();
/// let prepared = PreparedState::new(state.clone());
/// assert_eq!(
///     prepared.review_network_policy(&template, Operation::Create, None, Some(&deny)),
///     review_network_policy(&template, &state, Operation::Create, None, Some(&deny)),
/// );
/// ```
#[derive(Clone, Debug, Default)]
pub struct PreparedState {
    state: PolicyState,
    /// namespace -> its policies in name order: (name in the state, parse)
    parsed: BTreeMap<String, Vec<(String, ParsedPolicy)>>,
    /// every namespace of the state (namespace objects and namespaces
    /// holding policies) with its effective labels, in name order
    namespaces: Vec<(String, Labels)>,
}

impl PreparedState {
    /// Parses every policy of `state`.
    pub fn new(state: PolicyState) -> Self {
        let mut parsed: BTreeMap<String, Vec<(String, ParsedPolicy)>> = BTreeMap::new();
        for ((namespace, name), raw) in &state.policies {
            // Keys arrive in order, so each namespace's list is in name order.
            parsed
                .entry(namespace.clone())
                .or_default()
                .push((name.clone(), ParsedPolicy::new(raw)));
        }
        let mut names: BTreeSet<&str> = state.namespaces.keys().map(String::as_str).collect();
        names.extend(policy_namespaces(&state));
        let namespaces = names
            .into_iter()
            .map(|n| (n.to_string(), effective_labels(&state, n)))
            .collect();
        PreparedState {
            state,
            parsed,
            namespaces,
        }
    }

    /// The state it was built from.
    pub fn state(&self) -> &PolicyState {
        &self.state
    }

    /// Gives the state back.
    pub fn into_state(self) -> PolicyState {
        self.state
    }

    /// [`super::review_network_policy`] against this state.
    pub fn review_network_policy(
        &self,
        template: &TierTemplate,
        operation: Operation,
        old: Option<&NetworkPolicy>,
        new: Option<&NetworkPolicy>,
    ) -> Review {
        review::review_network_policy(template, StateView::prepared(self), operation, old, new)
    }

    /// [`super::namespace_violations`] of this state.
    pub fn namespace_violations(&self, template: &TierTemplate, namespace: &str) -> Vec<Violation> {
        review::namespace_violations(template, StateView::prepared(self), namespace)
    }

    /// [`super::state_violations`] of this state.
    pub fn state_violations(&self, template: &TierTemplate) -> BTreeMap<String, Vec<Violation>> {
        review::state_violations(template, StateView::prepared(self))
    }

    /// [`super::audit_state`] of this state.
    pub fn audit_state(&self, template: &TierTemplate) -> StateAudit {
        review::audit_state(template, StateView::prepared(self))
    }
}

impl From<PolicyState> for PreparedState {
    fn from(state: PolicyState) -> Self {
        PreparedState::new(state)
    }
}

impl Deref for PreparedState {
    type Target = PolicyState;

    fn deref(&self) -> &PolicyState {
        &self.state
    }
}

/// The state an evaluation reads: raw (policies parsed as they are needed)
/// or prepared (parsed once). Both give the same answers.
#[derive(Clone, Copy)]
pub(crate) struct StateView<'a> {
    /// the state
    pub state: &'a PolicyState,
    prepared: Option<&'a PreparedState>,
}

impl<'a> StateView<'a> {
    /// A state whose policies are parsed on use.
    pub fn raw(state: &'a PolicyState) -> Self {
        StateView { state, prepared: None }
    }

    /// A prepared state.
    pub fn prepared(prepared: &'a PreparedState) -> Self {
        StateView {
            state: &prepared.state,
            prepared: Some(prepared),
        }
    }

    /// The policies of `namespace`, in name order, with the names the state
    /// files them under.
    pub fn namespace_policies(&self, namespace: &str) -> Vec<(&'a str, Cow<'a, ParsedPolicy>)> {
        match self.prepared {
            Some(prepared) => prepared
                .parsed
                .get(namespace)
                .into_iter()
                .flatten()
                .map(|(name, parsed)| (name.as_str(), Cow::Borrowed(parsed)))
                .collect(),
            None => self
                .state
                .policies
                .range((namespace.to_string(), String::new())..)
                .take_while(|((ns, _), _)| ns == namespace)
                .map(|((_, name), raw)| (name.as_str(), Cow::Owned(ParsedPolicy::new(raw))))
                .collect(),
        }
    }

    /// Every namespace of the state (namespace objects and namespaces holding
    /// policies) with its effective labels, in name order.
    pub fn namespace_labels(&self) -> Vec<(&'a str, Cow<'a, Labels>)> {
        match self.prepared {
            Some(prepared) => prepared
                .namespaces
                .iter()
                .map(|(name, labels)| (name.as_str(), Cow::Borrowed(labels)))
                .collect(),
            None => {
                let state = self.state;
                let mut names: BTreeSet<&'a str> = state.namespaces.keys().map(String::as_str).collect();
                names.extend(policy_namespaces(state));
                names
                    .into_iter()
                    .map(|n| (n, Cow::Owned(effective_labels(state, n))))
                    .collect()
            }
        }
    }
}
