//! Reading a node's view of a cluster from manifest files (for `render`, and
//! for `run --state` in tests).

use std::net::IpAddr;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::Node;
use tierguard::manifest::{Manifest, parse_manifests};
use tierguard::{Cluster, NamespaceInfo, PodInfo, Policy};

use crate::daemon::Update;

/// Input that cannot be used; the message names the file, the object and the field.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

/// The `InternalIP` addresses of a Node.
pub fn node_addresses(node: &Node) -> Vec<IpAddr> {
    node.status
        .iter()
        .flat_map(|s| s.addresses.iter().flatten())
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.parse().ok())
        .collect()
}

/// The complete listings of `cluster` (namespaces, pods, policies), as the
/// agent's watches deliver them once listed.
pub fn as_updates(cluster: &Cluster) -> Vec<Update> {
    vec![
        Update::Namespaces(cluster.namespaces().cloned().collect()),
        Update::Pods(cluster.pods().cloned().collect()),
        Update::Policies(cluster.policies().cloned().collect()),
    ]
}

/// Reads every manifest under `paths` into a cluster, and the addresses of node `node`.
pub fn load(paths: &[PathBuf], node: &str) -> Result<(Cluster, Vec<IpAddr>), BadInput> {
    let files = crate::files::files_under(paths, &["yaml", "yml", "json"]).map_err(BadInput)?;
    let mut cluster = Cluster::new();
    let mut addresses = Vec::new();
    for file in files {
        let name = file.display().to_string();
        let text = std::fs::read_to_string(&file).map_err(|e| BadInput(format!("{name}: {e}")))?;
        for manifest in parse_manifests(&text, &name).map_err(|e| BadInput(e.to_string()))? {
            match manifest {
                Manifest::Namespace(ns) => cluster.upsert_namespace(NamespaceInfo::from_k8s(&ns)),
                Manifest::Pod(pod) => {
                    let info = PodInfo::from_k8s(&pod).map_err(|errors| {
                        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
                        let pod_name = pod.metadata.name.as_deref().unwrap_or("?");
                        let what: Vec<String> = errors.iter().map(ToString::to_string).collect();
                        BadInput(format!("{name}: Pod {ns}/{pod_name}: {}", what.join("; ")))
                    })?;
                    cluster.upsert_pod(info);
                }
                Manifest::NetworkPolicy(np) => {
                    let policy = Policy::from_k8s(&np).map_err(|e| BadInput(format!("{name}: {e}")))?;
                    cluster.upsert_policy(policy);
                }
                Manifest::Node(n) => {
                    if n.metadata.name.as_deref() == Some(node) {
                        addresses.extend(node_addresses(&n));
                    }
                }
                Manifest::Other { .. } => {}
            }
        }
    }
    Ok((cluster, addresses))
}
