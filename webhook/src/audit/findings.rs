//! One audit of a state: every violation of every governed namespace (the
//! rules and keys of `check`, through `audit_state`), each with the object
//! it is about, plus the namespaces that are compliant. Pure: no I/O.

use std::collections::BTreeMap;

use tierguard::guardrails::{RuleId, StateAudit, ViolationKey};
use tierguard::template::TierTemplate;

use crate::state::Snapshot;

/// The object a finding is about, as a report's `resources` entry
/// (a `core/v1` ObjectReference).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    /// `v1` or `networking.k8s.io/v1`
    pub api_version: &'static str,
    /// `Namespace` or `NetworkPolicy`
    pub kind: &'static str,
    /// the object's name
    pub name: String,
    /// the object's namespace (none for a Namespace)
    pub namespace: Option<String>,
    /// the object's uid, when the state knows it
    pub uid: Option<String>,
}

/// One violation as the audit publishes it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Finding {
    /// the rule broken
    pub rule: RuleId,
    /// the rule's message (names policy, namespace, tier and fix)
    pub message: String,
    /// the offending NetworkPolicy (R3, R4) or Namespace (R1, R2, labels)
    pub resource: Option<ObjectRef>,
}

/// What one audit found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Findings {
    /// every governed namespace, with its findings in key order (empty:
    /// the namespace is compliant)
    pub namespaces: BTreeMap<String, Vec<Finding>>,
    /// R4 problems of policies in ungoverned namespaces (warnings, as the
    /// webhook answers them); counted, not reported per namespace
    pub warnings: usize,
}

impl Findings {
    /// Governed namespaces with at least one violation.
    pub fn violating(&self) -> impl Iterator<Item = (&str, &[Finding])> {
        self.namespaces
            .iter()
            .filter(|(_, f)| !f.is_empty())
            .map(|(n, f)| (n.as_str(), f.as_slice()))
    }

    /// Per governed namespace, its violation count per rule (for the metrics).
    pub fn counts(&self) -> impl Iterator<Item = (&str, Vec<(String, i64)>)> {
        self.namespaces.iter().map(|(namespace, findings)| {
            let mut by_rule: BTreeMap<RuleId, i64> = BTreeMap::new();
            for f in findings {
                *by_rule.entry(f.rule).or_default() += 1;
            }
            (
                namespace.as_str(),
                by_rule.into_iter().map(|(r, n)| (r.to_string(), n)).collect(),
            )
        })
    }

    /// Number of violations in all namespaces.
    pub fn total(&self) -> usize {
        self.namespaces.values().map(Vec::len).sum()
    }
}

fn namespace_ref(name: &str) -> ObjectRef {
    ObjectRef {
        api_version: "v1",
        kind: "Namespace",
        name: name.to_string(),
        namespace: None,
        // the snapshot keeps a namespace's labels, not its uid
        uid: None,
    }
}

fn policy_ref(snapshot: &Snapshot, namespace: &str, policy: &str) -> ObjectRef {
    let uid = snapshot
        .policy
        .policies
        .get(&(namespace.to_string(), policy.to_string()))
        .and_then(|np| np.metadata.uid.clone());
    ObjectRef {
        api_version: "networking.k8s.io/v1",
        kind: "NetworkPolicy",
        name: policy.to_string(),
        namespace: Some(namespace.to_string()),
        uid,
    }
}

fn resource_of(snapshot: &Snapshot, key: &ViolationKey) -> Option<ObjectRef> {
    Some(match key {
        ViolationKey::DefaultDeny { namespace, .. }
        | ViolationKey::Dns { namespace, .. }
        | ViolationKey::NamespaceLabel { namespace, .. } => namespace_ref(namespace),
        ViolationKey::Template { namespace, policy, .. } | ViolationKey::Structure { namespace, policy, .. } => {
            policy_ref(snapshot, namespace, policy)
        }
    })
}

/// Audits `snapshot`: every governed namespace of the state (declared, or
/// implied by a policy) with its violations; namespaces being deleted are
/// left out.
pub fn audit(template: &TierTemplate, snapshot: &Snapshot) -> Findings {
    let StateAudit { violations, warnings } = snapshot.policy.audit_state(template);
    let mut namespaces: BTreeMap<String, Vec<Finding>> = snapshot
        .policy
        .namespaces
        .iter()
        // A namespace being deleted counts as gone: its report could not be
        // written (the API server refuses new objects there) and goes with it.
        .filter(|(name, labels)| template.governs(labels) && !snapshot.terminating.contains(*name))
        .map(|(name, _)| (name.clone(), Vec::new()))
        .collect();
    for (namespace, found) in violations {
        if snapshot.terminating.contains(&namespace) {
            continue;
        }
        let findings = found
            .into_iter()
            .map(|v| Finding {
                rule: v.rule(),
                resource: resource_of(snapshot, &v.key),
                message: v.message,
            })
            .collect();
        // audit_state only reports governed namespaces, so this replaces an empty list
        namespaces.insert(namespace, findings);
    }
    Findings {
        namespaces,
        warnings: warnings.values().map(Vec::len).sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Namespace;
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    use serde_json::json;

    fn ns(name: &str, labels: serde_json::Value) -> Namespace {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap_or_default()
    }

    fn np(value: serde_json::Value) -> NetworkPolicy {
        serde_json::from_value(value).unwrap_or_default()
    }

    #[test]
    fn governed_namespaces_get_findings_with_their_objects_and_compliant_ones_an_empty_list() {
        let template = TierTemplate::built_in();
        let open = np(json!({
            "metadata": {"name": "open", "namespace": "shop", "uid": "u-1"},
            "spec": {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]}
        }));
        let broken_ungoverned = np(json!({
            "metadata": {"name": "b", "namespace": "kube-public"},
            "spec": {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]}
        }));
        let snapshot = Snapshot::build(
            [&ns("shop", json!({})), &ns("kube-system", json!({}))],
            [&open, &broken_ungoverned],
        );
        let findings = audit(&template, &snapshot);
        // kube-system and kube-public are not governed; shop is
        assert_eq!(findings.namespaces.keys().collect::<Vec<_>>(), vec!["shop"]);
        assert_eq!(findings.warnings, 1);
        let shop = &findings.namespaces["shop"];
        let expected = snapshot.policy.audit_state(&template).violations["shop"].len();
        assert_eq!(shop.len(), expected, "one finding per violation of check");
        let r4 = shop.iter().find(|f| f.rule == RuleId::R4);
        assert_eq!(
            r4.and_then(|f| f.resource.clone()),
            Some(ObjectRef {
                api_version: "networking.k8s.io/v1",
                kind: "NetworkPolicy",
                name: "open".into(),
                namespace: Some("shop".into()),
                uid: Some("u-1".into()),
            })
        );
        let r1 = shop.iter().find(|f| f.rule == RuleId::R1);
        assert_eq!(r1.and_then(|f| f.resource.as_ref()).map(|r| r.kind), Some("Namespace"));
        let counts: Vec<_> = findings.counts().collect();
        assert!(counts[0].1.iter().any(|(r, n)| r == "R4" && *n == 1), "{counts:?}");
    }

    #[test]
    fn a_terminating_namespace_is_left_out() {
        let mut leaving = ns("leaving", json!({}));
        leaving.status = Some(k8s_openapi::api::core::v1::NamespaceStatus {
            phase: Some("Terminating".into()),
            ..Default::default()
        });
        let snapshot = Snapshot::build([&leaving, &ns("team", json!({}))], []);
        let findings = audit(&TierTemplate::built_in(), &snapshot);
        assert_eq!(findings.namespaces.keys().collect::<Vec<_>>(), vec!["team"]);
        assert!(!findings.namespaces["team"].is_empty());
    }

    #[test]
    fn a_compliant_governed_namespace_is_listed_without_findings() -> Result<(), Box<dyn std::error::Error>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/three-tier");
        let loaded = crate::state::files::load(&[dir])?;
        let findings = audit(&TierTemplate::built_in(), &loaded.snapshot());
        assert!(!findings.namespaces.is_empty());
        assert_eq!(findings.total(), 0, "{findings:?}");
        assert_eq!(findings.violating().count(), 0);
        Ok(())
    }
}
