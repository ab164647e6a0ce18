//! State from the cluster: kube-rs reflectors over the resources listed in
//! `contract::WATCHED`. Requests read the reflector stores (through a cached
//! snapshot rebuilt only after a watch event), never the API server.

use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use anyhow::bail;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde::de::DeserializeOwned;
use tierguard::rbac::Watched;

use super::{Snapshot, StateSource};
use crate::contract;

/// Whether `watched` names the API resource of `K`.
pub fn names<K: k8s_openapi::Resource>(watched: &Watched) -> bool {
    watched.group == K::GROUP && watched.resource == K::URL_PATH_SEGMENT
}

/// Cluster state kept by reflectors.
pub struct KubeState {
    namespaces: Store<Namespace>,
    policies: Store<NetworkPolicy>,
    generation: Arc<AtomicU64>,
    synced: Arc<AtomicBool>,
    cache: RwLock<(u64, Arc<Snapshot>)>,
    /// held while a snapshot is built (see `snapshot`)
    build: Mutex<()>,
}

impl Debug for KubeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeState")
            .field("generation", &self.generation.load(Ordering::Relaxed))
            .field("synced", &self.synced.load(Ordering::Relaxed))
            .finish()
    }
}

fn reflect<K>(api: Api<K>, generation: Arc<AtomicU64>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let kind = K::kind(&()).to_string();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(|o: &mut K| o.managed_fields_mut().clear())
        .reflect(writer);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => {
                    generation.fetch_add(1, Ordering::AcqRel);
                }
                Err(e) => tracing::warn!(kind = %kind, error = %e, "watch error; retrying with backoff"),
            }
        }
        tracing::error!(kind = %kind, "watch stream ended");
    });
    reader
}

impl KubeState {
    /// Starts a reflector for every resource in `contract::WATCHED`.
    pub fn start(client: Client) -> anyhow::Result<Arc<KubeState>> {
        let generation = Arc::new(AtomicU64::new(1));
        let mut namespaces = None;
        let mut policies = None;
        for watched in contract::WATCHED {
            if names::<NetworkPolicy>(watched) {
                policies = Some(reflect(Api::<NetworkPolicy>::all(client.clone()), generation.clone()));
            } else if names::<Namespace>(watched) {
                namespaces = Some(reflect(Api::<Namespace>::all(client.clone()), generation.clone()));
            } else {
                bail!(
                    "contract::WATCHED lists {:?}/{} but the webhook has no reflector for it",
                    watched.group,
                    watched.resource
                );
            }
        }
        let (Some(namespaces), Some(policies)) = (namespaces, policies) else {
            bail!("contract::WATCHED must list namespaces and networkpolicies");
        };
        let synced = Arc::new(AtomicBool::new(false));
        {
            let (namespaces, policies, synced) = (namespaces.clone(), policies.clone(), synced.clone());
            tokio::spawn(async move {
                let ready = futures::future::try_join(namespaces.wait_until_ready(), policies.wait_until_ready()).await;
                match ready {
                    Ok(_) => {
                        tracing::info!(
                            namespaces = namespaces.len(),
                            networkpolicies = policies.len(),
                            "cluster state synced"
                        );
                        synced.store(true, Ordering::Release);
                    }
                    Err(e) => tracing::error!(error = %e, "reflector stopped before it synced"),
                }
            });
        }
        Ok(Arc::new(KubeState {
            namespaces,
            policies,
            generation,
            synced,
            cache: RwLock::new((0, Arc::new(Snapshot::default()))),
            build: Mutex::new(()),
        }))
    }
}

impl StateSource for KubeState {
    fn snapshot(&self) -> Arc<Snapshot> {
        let generation = self.generation.load(Ordering::Acquire);
        if let Ok(cache) = self.cache.read()
            && cache.0 == generation
        {
            return Arc::clone(&cache.1);
        }
        // One build at a time, each cached before the next starts: a
        // snapshot handed out is never older than one handed out before it.
        // Concurrent builds could break that (a store changes before its
        // generation moves, so two builds of one generation may differ), and
        // the overlay of admitted changes relies on it when it drops a change
        // that a snapshot shows.
        let _build = self.build.lock().unwrap_or_else(PoisonError::into_inner);
        let generation = self.generation.load(Ordering::Acquire);
        if let Ok(cache) = self.cache.read()
            && cache.0 >= generation
        {
            return Arc::clone(&cache.1);
        }
        let namespaces = self.namespaces.state();
        let policies = self.policies.state();
        let snapshot = Arc::new(Snapshot::build(
            namespaces.iter().map(|n| n.as_ref()),
            policies.iter().map(|p| p.as_ref()),
        ));
        if let Ok(mut cache) = self.cache.write() {
            *cache = (generation, Arc::clone(&snapshot));
        }
        snapshot
    }

    fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_watched_resource_has_a_reflector() {
        for w in contract::WATCHED {
            assert!(
                names::<NetworkPolicy>(w) || names::<Namespace>(w),
                "no reflector for {w:?}"
            );
        }
        assert!(contract::WATCHED.iter().any(names::<NetworkPolicy>));
        assert!(contract::WATCHED.iter().any(names::<Namespace>));
    }
}
