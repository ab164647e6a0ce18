//! Reading a node's view of a cluster from manifest files (for `render`, and
//! for `run --state` in tests), through the agent's own conversion
//! ([`crate::objects`]): what `render` prints is what the agent would program
//! from the same objects.

use std::net::IpAddr;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::Node;
use tierguard::input::{InputError, read_manifests};
use tierguard::manifest::Manifest;
use tierguard::{Cluster, NamespaceInfo};

use crate::objects::{self, PodView};

use crate::daemon::Update;

/// Input that cannot be read or parsed; the message names the file (and the
/// document, object and field of a parse error).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct BadInput(#[from] pub InputError);

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

/// What the manifests give a node.
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    /// the cluster as the agent would see it
    pub cluster: Cluster,
    /// the node's own addresses (its Node's InternalIPs)
    pub node_addresses: Vec<IpAddr>,
    /// what the agent would ignore or drop, each naming the file, the object and the field
    pub warnings: Vec<String>,
}

/// Reads every manifest under `paths` (files as given, folders as
/// `tierguard::input::manifest_files` walks them, as the webhook does) as the
/// agent would see the objects, and the addresses of node `node`. Objects the
/// agent ignores (unreadable pods) or trims (broken policy rules) are reported
/// in `warnings`; only files that cannot be read or parsed are errors.
pub fn load_manifests(paths: &[PathBuf], node: &str) -> Result<Loaded, BadInput> {
    let mut loaded = Loaded::default();
    for file in read_manifests(paths)? {
        let name = file.path.display().to_string();
        for manifest in file.manifests {
            match manifest {
                Manifest::Namespace(ns) => loaded.cluster.upsert_namespace(NamespaceInfo::from_k8s(&ns)),
                Manifest::Pod(pod) => match objects::pod(&pod) {
                    PodView::Tracked(info) => loaded.cluster.upsert_pod(info),
                    PodView::Finished => {}
                    PodView::Invalid(errors) => loaded.warnings.push(format!(
                        "{name}: Pod {}: {}: pod ignored",
                        objects::object_key(&pod.metadata),
                        objects::describe(&errors)
                    )),
                },
                Manifest::NetworkPolicy(np) => {
                    let lenient = objects::policy(&np);
                    if !lenient.errors.is_empty() {
                        loaded.warnings.push(format!(
                            "{name}: NetworkPolicy {}: {}: the rules with these fields are dropped (they allow nothing)",
                            lenient.policy.id,
                            objects::describe(&lenient.errors)
                        ));
                    }
                    loaded.cluster.upsert_policy(lenient.policy);
                }
                Manifest::Node(n) => {
                    if n.metadata.name.as_deref() == Some(node) {
                        loaded.node_addresses.extend(node_addresses(&n));
                    }
                }
                Manifest::Other { .. } => {}
            }
        }
    }
    Ok(loaded)
}

/// [`load_manifests`], with the warnings logged.
pub fn load(paths: &[PathBuf], node: &str) -> Result<(Cluster, Vec<IpAddr>), BadInput> {
    let loaded = load_manifests(paths, node)?;
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    Ok((loaded.cluster, loaded.node_addresses))
}
