//! The cluster state the rules read, and the two facts about it that do not
//! depend on the template: a namespace's labels and which namespaces hold
//! policies.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::NetworkPolicy;

use crate::labels::{Labels, NAMESPACE_NAME_LABEL};

/// The cluster state the rules read: namespace labels and NetworkPolicies as
/// the API holds them (raw, so R4 can report structure problems).
#[derive(Clone, Debug, Default)]
pub struct PolicyState {
    /// namespace name -> labels (with `kubernetes.io/metadata.name`)
    pub namespaces: BTreeMap<String, Labels>,
    /// (namespace, name) -> policy
    pub policies: BTreeMap<(String, String), NetworkPolicy>,
}

/// The labels a namespace has as the API server would show them: from the
/// state, with `kubernetes.io/metadata.name` filled in when the state lacks it
/// (the API server always sets it, so a manifest that omits it means the same).
pub(crate) fn effective_labels(state: &PolicyState, namespace: &str) -> Labels {
    let mut labels = state.namespaces.get(namespace).cloned().unwrap_or_default();
    labels
        .entry(NAMESPACE_NAME_LABEL.to_string())
        .or_insert_with(|| namespace.to_string());
    labels
}

/// The distinct namespaces of the state's policies, skipping over each
/// namespace's policies instead of visiting every one.
pub(crate) fn policy_namespaces(state: &PolicyState) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    let mut next = state.policies.keys().next();
    while let Some((ns, _)) = next {
        out.push(ns);
        // The smallest key after every (ns, _) is (ns + "\0", "").
        let bound = (format!("{ns}\0"), String::new());
        next = state.policies.range(bound..).next().map(|(k, _)| k);
    }
    out
}
