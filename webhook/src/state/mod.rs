//! The webhook's view of the cluster: namespaces and NetworkPolicies as a
//! `PolicyState` snapshot (prepared: every policy parsed once per snapshot,
//! not once per request), plus the namespaces that are being deleted. A
//! request only ever reads a snapshot; it never waits on the API server.

pub mod files;
pub mod kube;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use tierguard::NamespaceInfo;
use tierguard::guardrails::{PolicyState, PreparedState};
use tierguard::meta::namespace_of;

/// What a request reads.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// namespaces' labels and the NetworkPolicies, as the rules read them,
    /// with every policy parsed (derefs to the `PolicyState`)
    pub policy: PreparedState,
    /// namespaces with a `deletionTimestamp` or in phase `Terminating`
    pub terminating: BTreeSet<String>,
    /// every Namespace object by name, with its resourceVersion (the
    /// overlay of admitted changes reads it to tell when the watch has
    /// shown a namespace change)
    pub namespace_versions: BTreeMap<String, Option<String>>,
}

impl Snapshot {
    /// Builds a snapshot from raw objects. Namespaces are read as the
    /// enforcer reads them ([`NamespaceInfo::from_k8s`]: the name label is
    /// always the name, as the API server keeps it). A policy whose namespace
    /// is not among `namespaces` gets an implicit namespace labelled only
    /// with `kubernetes.io/metadata.name` (what the API server would give it).
    pub fn build<'a>(
        namespaces: impl IntoIterator<Item = &'a Namespace>,
        policies: impl IntoIterator<Item = &'a NetworkPolicy>,
    ) -> Snapshot {
        let mut state = PolicyState::default();
        let mut terminating = BTreeSet::new();
        let mut namespace_versions = BTreeMap::new();
        for ns in namespaces {
            if ns.metadata.name.is_none() {
                continue;
            }
            let info = NamespaceInfo::from_k8s(ns);
            if info.terminating {
                terminating.insert(info.name.clone());
            }
            namespace_versions.insert(info.name.clone(), ns.metadata.resource_version.clone());
            state.namespaces.insert(info.name, info.labels);
        }
        for np in policies {
            let namespace = policy_namespace(np);
            let name = np.metadata.name.clone().unwrap_or_default();
            state
                .namespaces
                .entry(namespace.clone())
                .or_insert_with(|| NamespaceInfo::new(&namespace, Default::default()).labels);
            state.policies.insert((namespace, name), np.clone());
        }
        Snapshot {
            policy: PreparedState::new(state),
            terminating,
            namespace_versions,
        }
    }
}

/// The namespace of a policy (`default` when the manifest leaves it out, as kubectl does).
pub fn policy_namespace(np: &NetworkPolicy) -> String {
    namespace_of(&np.metadata).to_string()
}

/// A source of cluster state.
pub trait StateSource: Send + Sync + 'static {
    /// The current state. Cheap: callers take one per request.
    fn snapshot(&self) -> Arc<Snapshot>;
    /// Whether the state has been read completely at least once (a latch).
    fn is_synced(&self) -> bool;
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use tierguard::labels::{Labels, NAMESPACE_NAME_LABEL};

    fn namespace(name: &str, labels: &[(&str, &str)]) -> Namespace {
        Namespace {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// docs/guardrails.md: labels are taken as the API server shows them, the
    /// name label always the namespace's name. The webhook kept a name label
    /// that disagreed with the name (a manifest could make `shop` look like
    /// `kube-system`, which the template does not govern); the enforcer did not.
    /// Label `key` of `namespace` as the snapshot's policy view has it.
    fn label<'a>(s: &'a Snapshot, namespace: &str, key: &str) -> Option<&'a str> {
        s.policy.namespaces.get(namespace)?.get(key).map(String::as_str)
    }

    #[test]
    fn namespaces_are_read_as_the_enforcer_reads_them() {
        let spoofed = namespace("shop", &[(NAMESPACE_NAME_LABEL, "kube-system"), ("team", "a")]);
        let missing = namespace("shop-data", &[("team", "b")]);
        let s = Snapshot::build([&spoofed, &missing], []);
        for ns in [&spoofed, &missing] {
            let info = NamespaceInfo::from_k8s(ns);
            assert_eq!(s.policy.namespaces.get(&info.name), Some(&info.labels), "{}", info.name);
        }
        assert_eq!(label(&s, "shop", NAMESPACE_NAME_LABEL), Some("shop"));
        assert_eq!(label(&s, "shop-data", NAMESPACE_NAME_LABEL), Some("shop-data"));
    }

    #[test]
    fn snapshot_adds_name_label_implicit_namespaces_and_terminating() {
        let shop = Namespace {
            metadata: ObjectMeta {
                name: Some("shop".into()),
                labels: Some(Labels::from([("team".to_string(), "a".to_string())])),
                ..Default::default()
            },
            ..Default::default()
        };
        let leaving = Namespace {
            metadata: ObjectMeta {
                name: Some("leaving".into()),
                ..Default::default()
            },
            status: Some(k8s_openapi::api::core::v1::NamespaceStatus {
                phase: Some("Terminating".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let np = NetworkPolicy {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("other".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let s = Snapshot::build([&shop, &leaving], [&np]);
        assert_eq!(label(&s, "shop", NAMESPACE_NAME_LABEL), Some("shop"));
        assert_eq!(label(&s, "shop", "team"), Some("a"));
        assert!(s.policy.namespaces.contains_key("other"));
        assert!(s.policy.policies.contains_key(&("other".to_string(), "p".to_string())));
        assert_eq!(s.terminating.iter().collect::<Vec<_>>(), vec!["leaving"]);
        assert_eq!(
            s.namespace_versions.keys().collect::<Vec<_>>(),
            vec!["leaving", "shop"],
            "only Namespace objects have versions"
        );
    }
}
