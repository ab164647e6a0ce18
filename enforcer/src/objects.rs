//! The one conversion from Kubernetes objects to the agent's view of the
//! cluster, used by the watchers of `run` and by the manifest loader of
//! `render`, so that both see the same cluster from the same objects: the
//! same pods tracked (finished ones are gone: their address may be reused),
//! the same pods ignored (unreadable ones), the same policies (broken rules
//! dropped: they allow nothing, which fails closed).

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use tierguard::PodInfo;
use tierguard::policy::{FieldError, LenientPolicy, Policy};

/// What the agent makes of a Pod.
#[derive(Clone, Debug, PartialEq)]
pub enum PodView {
    /// tracked, as this
    Tracked(PodInfo),
    /// Succeeded or Failed: treated as gone (its address may be reused)
    Finished,
    /// unreadable: ignored (the problems name the fields)
    Invalid(Vec<FieldError>),
}

/// Reads a Pod as the agent tracks it.
pub fn pod(pod: &Pod) -> PodView {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return PodView::Finished;
    }
    match PodInfo::from_k8s(pod) {
        Ok(info) => PodView::Tracked(info),
        Err(errors) => PodView::Invalid(errors),
    }
}

/// Reads a NetworkPolicy as the agent enforces it: in normal form, with the
/// rules that cannot be read dropped (and named in `errors`).
pub fn policy(np: &NetworkPolicy) -> LenientPolicy {
    Policy::from_k8s_lenient(np)
}

/// `namespace/name` of an object, for messages.
pub fn object_key(metadata: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    format!(
        "{}/{}",
        tierguard::meta::namespace_of(metadata),
        metadata.name.as_deref().unwrap_or("?")
    )
}

/// The problems as one line: `field message; field message`.
pub fn describe(errors: &[FieldError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod_with(phase: &str, ip: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "a", "namespace": "x"},
            "spec": {"nodeName": "n1", "containers": []},
            "status": {"phase": phase, "podIP": ip}
        }))
        .unwrap_or_default()
    }

    #[test]
    fn finished_pods_are_gone_and_unreadable_ones_ignored() {
        assert!(matches!(pod(&pod_with("Running", "10.0.0.1")), PodView::Tracked(_)));
        assert!(matches!(pod(&pod_with("Pending", "10.0.0.1")), PodView::Tracked(_)));
        assert_eq!(pod(&pod_with("Succeeded", "10.0.0.1")), PodView::Finished);
        assert_eq!(pod(&pod_with("Failed", "10.0.0.1")), PodView::Finished);
        match pod(&pod_with("Running", "10.0.0.300")) {
            PodView::Invalid(errors) => {
                assert_eq!(
                    describe(&errors),
                    "status.podIPs[0] \"10.0.0.300\" is not an IP address"
                )
            }
            other => panic!("{other:?}"),
        }
    }
}
