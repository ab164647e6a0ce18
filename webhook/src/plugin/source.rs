//! Where the plugin's state comes from: manifest files and folders (read
//! with `check`'s loader, plus the Pods it skips), or the live cluster
//! through a kubeconfig (listed once; a plugin run is one look).

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::ListParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use tierguard::cluster::{Cluster, NamespaceInfo, PodInfo};
use tierguard::manifest::{Manifest, parse_manifests};
use tierguard::policy::Policy;

use crate::state::Snapshot;
use crate::state::files::{self, LoadError};

/// The state could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// manifests that cannot be read or parsed
    #[error(transparent)]
    Load(#[from] LoadError),
    /// a Pod manifest with a field the engine cannot use
    #[error("{file}: Pod {object}: {field}: {message}")]
    Pod {
        /// the file
        file: String,
        /// `namespace/name`
        object: String,
        /// the field
        field: String,
        /// what is wrong
        message: String,
    },
    /// the kubeconfig cannot be read or used
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    /// the API server refused or could not be reached
    #[error("listing {what} from the cluster: {source}")]
    Api {
        /// the resource
        what: &'static str,
        /// why
        source: kube::Error,
    },
}

impl SourceError {
    /// Whether the error is the input's fault (exit 2) rather than the cluster's.
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, SourceError::Api { .. })
    }
}

/// The objects one run looks at.
#[derive(Clone, Debug, Default)]
pub struct State {
    /// the manifest files read (empty for a cluster)
    pub files: Vec<PathBuf>,
    /// Namespaces
    pub namespaces: Vec<Namespace>,
    /// NetworkPolicies
    pub policies: Vec<NetworkPolicy>,
    /// Pods that run (finished ones left out)
    pub pods: Vec<PodInfo>,
    /// what was skipped or trimmed, each naming the object and field
    pub warnings: Vec<String>,
}

/// Where to read a cluster from.
#[derive(Clone, Debug, Default)]
pub struct ClusterAccess {
    /// `--kubeconfig` (default: `$KUBECONFIG`, else `~/.kube/config`)
    pub kubeconfig: Option<PathBuf>,
    /// `--context` (default: the current context)
    pub context: Option<String>,
}

fn finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

fn object_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

impl State {
    /// Reads the manifests under `paths`: Namespaces and NetworkPolicies
    /// through `check`'s loader, then the Pods of the same files.
    pub fn from_files(paths: &[PathBuf]) -> Result<State, SourceError> {
        let loaded = files::load(paths)?;
        let mut pods = Vec::new();
        for file in &loaded.files {
            let name = file.display().to_string();
            let text = std::fs::read_to_string(file).map_err(|source| LoadError::Io {
                path: file.clone(),
                source,
            })?;
            for manifest in parse_manifests(&text, &name).map_err(LoadError::from)? {
                let Manifest::Pod(pod) = manifest else { continue };
                if finished(&pod) {
                    continue;
                }
                match PodInfo::from_k8s(&pod) {
                    Ok(info) => pods.push(info),
                    Err(errors) => {
                        let first = errors.into_iter().next().unwrap_or_else(|| tierguard::FieldError {
                            field: "metadata".into(),
                            message: "is invalid".into(),
                        });
                        return Err(SourceError::Pod {
                            file: name,
                            object: object_key(&pod),
                            field: first.field,
                            message: first.message,
                        });
                    }
                }
            }
        }
        Ok(State {
            files: loaded.files,
            namespaces: loaded.namespaces,
            policies: loaded.policies,
            pods,
            warnings: Vec::new(),
        })
    }

    /// Lists Namespaces, Pods and NetworkPolicies from the cluster `access` names.
    pub async fn from_cluster(access: &ClusterAccess) -> Result<State, SourceError> {
        let client = client(access).await?;
        let namespaces = list_all::<Namespace>(&client, "namespaces").await?;
        let policies = list_all::<NetworkPolicy>(&client, "networkpolicies").await?;
        let raw_pods = list_all::<Pod>(&client, "pods").await?;
        let mut pods = Vec::new();
        let mut warnings = Vec::new();
        for pod in raw_pods.iter().filter(|p| !finished(p)) {
            match PodInfo::from_k8s(pod) {
                Ok(info) => pods.push(info),
                Err(errors) => {
                    let fields: Vec<String> = errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect();
                    warnings.push(format!("Pod {}: {}: pod left out", object_key(pod), fields.join("; ")));
                }
            }
        }
        Ok(State {
            files: Vec::new(),
            namespaces,
            policies,
            pods,
            warnings,
        })
    }

    /// The snapshot the guardrails read.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot::build(&self.namespaces, &self.policies)
    }

    /// The cluster the engine reads. Policies are read as the enforcer reads
    /// them: a rule with a field it cannot use is dropped (it allows
    /// nothing), and a warning says so.
    pub fn cluster(&self) -> (Cluster, Vec<String>) {
        let mut cluster = Cluster::new();
        let mut warnings = self.warnings.clone();
        for ns in &self.namespaces {
            cluster.upsert_namespace(NamespaceInfo::from_k8s(ns));
        }
        for pod in &self.pods {
            cluster.upsert_pod(pod.clone());
        }
        for np in &self.policies {
            let lenient = Policy::from_k8s_lenient(np);
            if !lenient.errors.is_empty() {
                let fields: Vec<String> = lenient
                    .errors
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.message))
                    .collect();
                warnings.push(format!(
                    "NetworkPolicy {}: {}: the rules with these fields allow nothing",
                    lenient.policy.id,
                    fields.join("; ")
                ));
            }
            cluster.upsert_policy(lenient.policy);
        }
        (cluster, warnings)
    }
}

/// Every object of kind `K` in the cluster (all namespaces); an error names `what` it listed.
async fn list_all<K>(client: &Client, what: &'static str) -> Result<Vec<K>, SourceError>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    Api::<K>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map(|list| list.items)
        .map_err(|source| SourceError::Api { what, source })
}

fn kubeconfig_error(e: impl std::fmt::Display) -> SourceError {
    SourceError::Kubeconfig(e.to_string())
}

async fn client(access: &ClusterAccess) -> Result<Client, SourceError> {
    let kubeconfig = match &access.kubeconfig {
        Some(path) => read_kubeconfig(path)?,
        None => Kubeconfig::read().map_err(kubeconfig_error)?,
    };
    let options = KubeConfigOptions {
        context: access.context.clone(),
        cluster: None,
        user: None,
    };
    let config = Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(kubeconfig_error)?;
    Client::try_from(config).map_err(kubeconfig_error)
}

fn read_kubeconfig(path: &Path) -> Result<Kubeconfig, SourceError> {
    Kubeconfig::read_from(path).map_err(|e| SourceError::Kubeconfig(format!("{}: {e}", path.display())))
}
