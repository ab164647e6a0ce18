//! kube watchers for pods, namespaces and network policies (the resources in
//! `contract::WATCHED`), turned into [`Update`]s. A watch (re)start is
//! buffered until its list is complete and then replaces that kind as a
//! whole, as a reflector store would.

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use tierguard::meta::namespace_of;
use tierguard::policy::PolicyId;
use tierguard::{NamespaceInfo, PodInfo, Policy};

use super::Update;
use crate::objects::{self, PodView};

/// The pod as the agent tracks it, or `None` when it should be treated as gone
/// (finished: Succeeded or Failed pods release their address) or ignored
/// (unreadable); the conversion is [`objects::pod`], shared with `render`.
pub fn pod_info(pod: &Pod) -> Option<PodInfo> {
    match objects::pod(pod) {
        PodView::Tracked(info) => Some(info),
        PodView::Finished => None,
        PodView::Invalid(errors) => {
            tracing::warn!(pod = %objects::object_key(&pod.metadata), errors = %objects::describe(&errors), "pod ignored");
            None
        }
    }
}

/// The policy in normal form; broken rules are dropped (they allow nothing: fail
/// closed). The conversion is [`objects::policy`], shared with `render`.
pub fn policy(np: &NetworkPolicy) -> Policy {
    let lenient = objects::policy(np);
    if !lenient.errors.is_empty() {
        tracing::warn!(policy = %lenient.policy.id, errors = %objects::describe(&lenient.errors), "policy rules dropped");
    }
    lenient.policy
}

fn pod_key(pod: &Pod) -> (String, String) {
    (
        namespace_of(&pod.metadata).to_string(),
        pod.metadata.name.clone().unwrap_or_default(),
    )
}

/// Turns pod watch events into updates; `buffer` holds a relist in progress.
pub fn pod_update(event: Event<Pod>, buffer: &mut Vec<PodInfo>) -> Option<Update> {
    match event {
        Event::Init => {
            buffer.clear();
            None
        }
        Event::InitApply(pod) => {
            buffer.extend(pod_info(&pod));
            None
        }
        Event::InitDone => Some(Update::Pods(std::mem::take(buffer))),
        Event::Apply(pod) => Some(match pod_info(&pod) {
            Some(info) => Update::Pod(info),
            None => {
                let (namespace, name) = pod_key(&pod);
                Update::PodGone { namespace, name }
            }
        }),
        Event::Delete(pod) => {
            let (namespace, name) = pod_key(&pod);
            Some(Update::PodGone { namespace, name })
        }
    }
}

/// Turns namespace watch events into updates.
pub fn namespace_update(event: Event<Namespace>, buffer: &mut Vec<NamespaceInfo>) -> Option<Update> {
    match event {
        Event::Init => {
            buffer.clear();
            None
        }
        Event::InitApply(ns) => {
            buffer.push(NamespaceInfo::from_k8s(&ns));
            None
        }
        Event::InitDone => Some(Update::Namespaces(std::mem::take(buffer))),
        Event::Apply(ns) => Some(Update::Namespace(NamespaceInfo::from_k8s(&ns))),
        Event::Delete(ns) => Some(Update::NamespaceGone(ns.metadata.name.unwrap_or_default())),
    }
}

/// Turns network policy watch events into updates.
pub fn policy_update(event: Event<NetworkPolicy>, buffer: &mut Vec<Policy>) -> Option<Update> {
    match event {
        Event::Init => {
            buffer.clear();
            None
        }
        Event::InitApply(np) => {
            buffer.push(policy(&np));
            None
        }
        Event::InitDone => Some(Update::Policies(std::mem::take(buffer))),
        Event::Apply(np) => Some(Update::Policy(policy(&np))),
        Event::Delete(np) => Some(Update::PolicyGone(PolicyId {
            namespace: namespace_of(&np.metadata).to_string(),
            name: np.metadata.name.unwrap_or_default(),
        })),
    }
}

fn translated<K, T, F>(
    events: impl Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static,
    what: &'static str,
    mut translate: F,
) -> impl Stream<Item = Update> + Send + 'static
where
    K: Send + 'static,
    T: Send + 'static,
    F: FnMut(Event<K>, &mut Vec<T>) -> Option<Update> + Send + 'static,
{
    let mut buffer: Vec<T> = Vec::new();
    events.filter_map(move |event| {
        let out = match event {
            Ok(event) => translate(event, &mut buffer),
            Err(e) => {
                tracing::warn!(error = %e, what, "watch error (retrying)");
                None
            }
        };
        futures::future::ready(out)
    })
}

/// Every update from the cluster: pods, namespaces and network policies, all namespaces.
pub fn updates(client: Client) -> impl Stream<Item = Update> + Send + Unpin + 'static {
    let config = watcher::Config::default();
    let pods = watcher::watcher(Api::<Pod>::all(client.clone()), config.clone()).default_backoff();
    let namespaces = watcher::watcher(Api::<Namespace>::all(client.clone()), config.clone()).default_backoff();
    let policies = watcher::watcher(Api::<NetworkPolicy>::all(client), config).default_backoff();
    futures::stream::select_all([
        translated(pods, "pods", pod_update).boxed(),
        translated(namespaces, "namespaces", namespace_update).boxed(),
        translated(policies, "networkpolicies", policy_update).boxed(),
    ])
}
