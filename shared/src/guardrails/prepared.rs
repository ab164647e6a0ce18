//! A state prepared once for many reviews (the webhook builds one per
//! cluster-state generation): every policy parsed and every namespace's
//! effective labels worked out, so a review parses only the changed object.
//! Only what depends on neither the template nor the change is kept here.
//! The methods that review against a prepared state are part of the API
//! (`guardrails/mod.rs`), so that this data sits below the rules.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Deref;

use crate::labels::Labels;

use super::parsed::ParsedPolicy;
use super::state::{PolicyState, effective_labels, policy_namespaces};

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
