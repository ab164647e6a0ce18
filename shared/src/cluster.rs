//! The cluster state the engine reasons over: namespaces, pods and policies,
//! each reduced to what NetworkPolicy semantics look at.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;

use crate::journal::{Changed, Journal, Revision};
use crate::labels::{Labels, NAMESPACE_NAME_LABEL};
use crate::meta::namespace_of;
use crate::policy::{FieldError, Policy, PolicyError, PolicyId, Protocol};

/// A container port of a pod.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ContainerPort {
    /// `name`, the target of named ports in policies.
    pub name: Option<String>,
    /// `containerPort`
    pub port: u16,
    /// `protocol` (TCP when unset)
    pub protocol: Protocol,
}

/// A pod as NetworkPolicy sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PodInfo {
    /// namespace
    pub namespace: String,
    /// name
    pub name: String,
    /// labels
    pub labels: Labels,
    /// `status.podIPs` (the first is the primary)
    pub ips: Vec<IpAddr>,
    /// `spec.nodeName`
    pub node: Option<String>,
    /// container ports of every container
    pub ports: Vec<ContainerPort>,
    /// `spec.hostNetwork`: the pod has its node's address, and its traffic is
    /// the node's. NetworkPolicy never isolates it, and selector peers never
    /// match it (ipBlocks still do, by the node's address).
    pub host_network: bool,
}

impl PodInfo {
    /// The port number a named port resolves to on this pod for `protocol`.
    pub fn named_port(&self, name: &str, protocol: Protocol) -> Option<u16> {
        self.ports
            .iter()
            .find(|p| p.protocol == protocol && p.name.as_deref() == Some(name))
            .map(|p| p.port)
    }

    /// `namespace/name`
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Reads a Pod; problems name the field.
    pub fn from_k8s(pod: &Pod) -> Result<PodInfo, Vec<FieldError>> {
        let mut errors = Vec::new();
        let namespace = namespace_of(&pod.metadata).to_string();
        let name = pod.metadata.name.clone().unwrap_or_default();
        if name.is_empty() {
            errors.push(FieldError {
                field: "metadata.name".into(),
                message: "is required".into(),
            });
        }
        let mut ports = Vec::new();
        let spec = pod.spec.as_ref();
        for (ci, c) in spec
            .map(|s| s.containers.as_slice())
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            for (pi, p) in c.ports.iter().flatten().enumerate() {
                let field = format!("spec.containers[{ci}].ports[{pi}]");
                let protocol = match p.protocol.as_deref() {
                    None => Protocol::Tcp,
                    Some(s) => match Protocol::parse(s) {
                        Some(proto) => proto,
                        None => {
                            errors.push(FieldError {
                                field: format!("{field}.protocol"),
                                message: format!("{s:?} is not a supported protocol (TCP, UDP, SCTP)"),
                            });
                            continue;
                        }
                    },
                };
                match u16::try_from(p.container_port) {
                    Ok(port) if port > 0 => ports.push(ContainerPort {
                        name: p.name.clone(),
                        port,
                        protocol,
                    }),
                    _ => errors.push(FieldError {
                        field: format!("{field}.containerPort"),
                        message: format!("{} is out of range (1-65535)", p.container_port),
                    }),
                }
            }
        }
        let mut ips = Vec::new();
        if let Some(status) = &pod.status {
            let listed: Vec<&str> = match (&status.pod_ips, &status.pod_ip) {
                (Some(list), _) if !list.is_empty() => list.iter().map(|p| p.ip.as_str()).collect(),
                (_, Some(ip)) => vec![ip.as_str()],
                _ => Vec::new(),
            };
            for (i, text) in listed.into_iter().enumerate() {
                match text.parse::<IpAddr>() {
                    Ok(ip) => ips.push(ip),
                    Err(_) => errors.push(FieldError {
                        field: format!("status.podIPs[{i}]"),
                        message: format!("{text:?} is not an IP address"),
                    }),
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(PodInfo {
            namespace,
            name,
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            ips,
            node: spec.and_then(|s| s.node_name.clone()),
            ports,
            host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
        })
    }
}

/// A namespace as NetworkPolicy sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NamespaceInfo {
    /// name
    pub name: String,
    /// labels, including `kubernetes.io/metadata.name`
    pub labels: Labels,
    /// Whether deletion has started (`metadata.deletionTimestamp` or phase Terminating).
    pub terminating: bool,
}

impl NamespaceInfo {
    /// A namespace with the labels given and the name label as the API
    /// server keeps it: always the namespace's name, whatever was written.
    pub fn new(name: &str, labels: Labels) -> NamespaceInfo {
        let mut labels = labels;
        labels.insert(NAMESPACE_NAME_LABEL.to_string(), name.to_string());
        NamespaceInfo {
            name: name.to_string(),
            labels,
            terminating: false,
        }
    }

    /// Reads a Namespace.
    pub fn from_k8s(ns: &Namespace) -> NamespaceInfo {
        let name = ns.metadata.name.clone().unwrap_or_default();
        let mut info = NamespaceInfo::new(&name, ns.metadata.labels.clone().unwrap_or_default());
        info.terminating = ns.metadata.deletion_timestamp.is_some()
            || ns
                .status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .is_some_and(|p| p == "Terminating");
        info
    }
}

/// Namespaces, pods and policies.
#[derive(Clone, Debug, Default)]
pub struct Cluster {
    namespaces: BTreeMap<String, NamespaceInfo>,
    pods: BTreeMap<String, BTreeMap<String, PodInfo>>,
    policies: BTreeMap<String, BTreeMap<String, Policy>>,
    /// what changed, for consumers that keep derived results (see [`Cluster::changes_since`])
    journal: Journal,
}

impl Cluster {
    /// An empty cluster.
    pub fn new() -> Cluster {
        Cluster::default()
    }

    /// Adds or replaces a namespace.
    pub fn upsert_namespace(&mut self, ns: NamespaceInfo) {
        if self.namespaces.get(&ns.name) == Some(&ns) {
            return;
        }
        self.journal.record(Changed::Namespace(ns.name.clone()));
        self.namespaces.insert(ns.name.clone(), ns);
    }

    /// Removes a namespace (its pods and policies stay until removed).
    pub fn remove_namespace(&mut self, name: &str) -> Option<NamespaceInfo> {
        let removed = self.namespaces.remove(name);
        if removed.is_some() {
            self.journal.record(Changed::Namespace(name.to_string()));
        }
        removed
    }

    /// Adds or replaces a pod.
    pub fn upsert_pod(&mut self, pod: PodInfo) {
        if self.pod(&pod.namespace, &pod.name) == Some(&pod) {
            return;
        }
        self.journal.record(pod_changed(&pod.namespace, &pod.name));
        self.pods
            .entry(pod.namespace.clone())
            .or_default()
            .insert(pod.name.clone(), pod);
    }

    /// Removes a pod.
    pub fn remove_pod(&mut self, namespace: &str, name: &str) -> Option<PodInfo> {
        let removed = self.pods.get_mut(namespace)?.remove(name);
        if removed.is_some() {
            self.journal.record(pod_changed(namespace, name));
        }
        removed
    }

    /// Adds or replaces a policy.
    pub fn upsert_policy(&mut self, policy: Policy) {
        if self.policy(&policy.id) == Some(&policy) {
            return;
        }
        self.journal.record(Changed::Policy(policy.id.clone()));
        self.policies
            .entry(policy.id.namespace.clone())
            .or_default()
            .insert(policy.id.name.clone(), policy);
    }

    /// Parses and adds a NetworkPolicy.
    pub fn apply_network_policy(&mut self, np: &NetworkPolicy) -> Result<(), PolicyError> {
        self.upsert_policy(Policy::from_k8s(np)?);
        Ok(())
    }

    /// Removes a policy.
    pub fn remove_policy(&mut self, id: &PolicyId) -> Option<Policy> {
        let removed = self.policies.get_mut(&id.namespace)?.remove(&id.name);
        if removed.is_some() {
            self.journal.record(Changed::Policy(id.clone()));
        }
        removed
    }

    /// A namespace, if known.
    pub fn namespace(&self, name: &str) -> Option<&NamespaceInfo> {
        self.namespaces.get(name)
    }

    /// Every namespace.
    pub fn namespaces(&self) -> impl Iterator<Item = &NamespaceInfo> {
        self.namespaces.values()
    }

    /// A namespace's labels; an unknown namespace has only its name label.
    pub fn namespace_labels(&self, name: &str) -> Cow<'_, Labels> {
        match self.namespaces.get(name) {
            Some(ns) => Cow::Borrowed(&ns.labels),
            None => Cow::Owned(NamespaceInfo::new(name, Labels::new()).labels),
        }
    }

    /// A pod, if known.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<&PodInfo> {
        self.pods.get(namespace)?.get(name)
    }

    /// Mutable access to a pod (to relabel it).
    pub fn pod_mut(&mut self, namespace: &str, name: &str) -> Option<&mut PodInfo> {
        self.journal.record(pod_changed(namespace, name));
        self.pods.get_mut(namespace)?.get_mut(name)
    }

    /// Every pod, by namespace then name.
    pub fn pods(&self) -> impl Iterator<Item = &PodInfo> {
        self.pods.values().flat_map(BTreeMap::values)
    }

    /// The pods of one namespace.
    pub fn pods_in(&self, namespace: &str) -> impl Iterator<Item = &PodInfo> {
        self.pods.get(namespace).into_iter().flat_map(BTreeMap::values)
    }

    /// Names of namespaces that hold pods, known or not.
    pub fn pod_namespaces(&self) -> impl Iterator<Item = &str> {
        self.pods.keys().map(String::as_str)
    }

    /// A policy, if known.
    pub fn policy(&self, id: &PolicyId) -> Option<&Policy> {
        self.policies.get(&id.namespace)?.get(&id.name)
    }

    /// Every policy, by namespace then name.
    pub fn policies(&self) -> impl Iterator<Item = &Policy> {
        self.policies.values().flat_map(BTreeMap::values)
    }

    /// The policies of one namespace.
    pub fn policies_in(&self, namespace: &str) -> impl Iterator<Item = &Policy> {
        self.policies.get(namespace).into_iter().flat_map(BTreeMap::values)
    }

    /// This cluster's current revision (for [`Cluster::changes_since`]).
    pub fn revision(&self) -> Revision {
        self.journal.revision()
    }

    /// The objects changed since `revision`, oldest first; `None` when they are
    /// not all known (another cluster value, a copy included, or more changes
    /// since than the journal keeps): the caller then starts over.
    pub fn changes_since(&self, revision: Revision) -> Option<impl Iterator<Item = &Changed>> {
        self.journal.since(revision)
    }
}

fn pod_changed(namespace: &str, name: &str) -> Changed {
    Changed::Pod {
        namespace: namespace.to_string(),
        name: name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_label_is_always_the_name() {
        let spoofed = Labels::from([(NAMESPACE_NAME_LABEL.to_string(), "kube-system".to_string())]);
        let ns = NamespaceInfo::new("shop", spoofed);
        assert_eq!(ns.labels.get(NAMESPACE_NAME_LABEL).map(String::as_str), Some("shop"));
        let ns = NamespaceInfo::new("shop", Labels::new());
        assert_eq!(ns.labels.get(NAMESPACE_NAME_LABEL).map(String::as_str), Some("shop"));
    }

    #[test]
    fn the_journal_records_real_changes_only() {
        let mut cluster = Cluster::new();
        let pod = PodInfo {
            namespace: "shop".into(),
            name: "a".into(),
            labels: Labels::new(),
            ips: vec![],
            node: None,
            ports: vec![],
            host_network: false,
        };
        cluster.upsert_namespace(NamespaceInfo::new("shop", Labels::new()));
        cluster.upsert_pod(pod.clone());
        let before = cluster.revision();
        // the same objects again (a relist), and removals of what is not there
        cluster.upsert_namespace(NamespaceInfo::new("shop", Labels::new()));
        cluster.upsert_pod(pod.clone());
        cluster.remove_pod("shop", "missing");
        cluster.remove_namespace("missing");
        assert_eq!(cluster.changes_since(before).map(Iterator::count), Some(0));
        let mut relabelled = pod;
        relabelled.labels.insert("app".into(), "web".into());
        cluster.upsert_pod(relabelled);
        cluster.remove_namespace("shop");
        let changes: Vec<Changed> = cluster.changes_since(before).into_iter().flatten().cloned().collect();
        assert_eq!(
            changes,
            vec![pod_changed("shop", "a"), Changed::Namespace("shop".into())]
        );
    }

    #[test]
    fn pods_read_host_network() {
        let pod = |host_network: Option<bool>| -> Pod {
            let mut spec = serde_json::json!({"containers": []});
            if let Some(h) = host_network {
                spec["hostNetwork"] = serde_json::json!(h);
            }
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "a", "namespace": "x"},
                "spec": spec,
                "status": {"podIP": "10.0.0.1"}
            }))
            .unwrap_or_default()
        };
        let read = |p: &Pod| PodInfo::from_k8s(p).map(|i| i.host_network).ok();
        assert_eq!(read(&pod(Some(true))), Some(true));
        assert_eq!(read(&pod(Some(false))), Some(false));
        assert_eq!(read(&pod(None)), Some(false));
    }
}
