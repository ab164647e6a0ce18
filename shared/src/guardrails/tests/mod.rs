//! Shared fixtures for the guardrail tests: the built-in template, a
//! namespace `shop`, and the policies every namespace starts from.

use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::{Value, json};

use super::*;
use crate::labels::Labels;
use crate::policy::{Direction, Protocol};

mod audit;
mod default_deny;
mod dns;
mod flows;
mod mutate;
mod namespace;
mod prepared;
mod review;
mod structure;

pub(super) fn template() -> TierTemplate {
    TierTemplate::built_in()
}

pub(super) fn policy(namespace: &str, name: &str, spec: Value) -> NetworkPolicy {
    serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }))
    .expect("test policy parses")
}

/// The egress rule that reaches kube-dns on UDP/53 and TCP/53.
pub(super) fn dns_rule() -> Value {
    json!({
        "to": [{
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}
        }],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
    })
}

/// `{}` isolated both ways, no rules.
pub(super) fn deny_all(namespace: &str) -> NetworkPolicy {
    policy(
        namespace,
        "default-deny-all",
        json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
    )
}

/// `{}` isolated both ways, egress to DNS only: the one-object default-deny.
pub(super) fn deny_all_with_dns(namespace: &str) -> NetworkPolicy {
    policy(
        namespace,
        "default-deny-all",
        json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "egress": [dns_rule()]}),
    )
}

/// Egress to DNS for `pod_selector`, nothing else.
pub(super) fn dns_allow(namespace: &str, name: &str, pod_selector: Value) -> NetworkPolicy {
    policy(
        namespace,
        name,
        json!({"podSelector": pod_selector, "policyTypes": ["Egress"], "egress": [dns_rule()]}),
    )
}

pub(super) fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// A state with these namespaces (name label added) and policies.
pub(super) fn state(namespaces: &[(&str, &[(&str, &str)])], policies: &[NetworkPolicy]) -> PolicyState {
    let mut s = PolicyState::default();
    for (name, pairs) in namespaces {
        let mut l = labels(pairs);
        l.insert(crate::labels::NAMESPACE_NAME_LABEL.to_string(), name.to_string());
        s.namespaces.insert(name.to_string(), l);
    }
    for p in policies {
        insert(&mut s, p);
    }
    s
}

pub(super) fn insert(s: &mut PolicyState, p: &NetworkPolicy) {
    let ns = p.metadata.namespace.clone().unwrap_or_default();
    let name = p.metadata.name.clone().unwrap_or_default();
    s.policies.insert((ns, name), p.clone());
}

pub(super) fn create(template: &TierTemplate, s: &PolicyState, p: &NetworkPolicy) -> Review {
    review_network_policy(template, s, Operation::Create, None, Some(p))
}

pub(super) fn keys(violations: &[Violation]) -> Vec<ViolationKey> {
    violations.iter().map(|v| v.key.clone()).collect()
}

pub(super) fn of_rule(violations: &[Violation], rule: RuleId) -> Vec<ViolationKey> {
    violations
        .iter()
        .filter(|v| v.rule() == rule)
        .map(|v| v.key.clone())
        .collect()
}

pub(super) fn tier(t: &str) -> Group {
    Group::Tier(t.to_string())
}

pub(super) fn r1(namespace: &str, group: Group, direction: Direction) -> ViolationKey {
    ViolationKey::DefaultDeny {
        namespace: namespace.to_string(),
        group,
        direction,
    }
}

pub(super) fn r2(namespace: &str, group: Group, protocol: Protocol) -> ViolationKey {
    ViolationKey::Dns {
        namespace: namespace.to_string(),
        group,
        protocol,
        port: 53,
    }
}

pub(super) fn r3(policy: &str, direction: Direction, tier: &str, peer: PeerTier) -> ViolationKey {
    ViolationKey::Template {
        namespace: "shop".to_string(),
        policy: policy.to_string(),
        direction,
        tier: tier.to_string(),
        peer,
    }
}

pub(super) fn peer(t: &str) -> PeerTier {
    PeerTier::Tier(t.to_string())
}

/// The unlabelled namespace's groups.
pub(super) fn unlabelled_groups() -> Vec<Group> {
    vec![
        tier("gateway"),
        tier("frontend"),
        tier("backend"),
        tier("data"),
        Group::Untiered,
    ]
}

/// Every (group, protocol) R2 key of the unlabelled namespace `shop`.
pub(super) fn all_dns_keys() -> Vec<ViolationKey> {
    let mut out: Vec<ViolationKey> = unlabelled_groups()
        .into_iter()
        .flat_map(|g| [r2("shop", g.clone(), Protocol::Tcp), r2("shop", g, Protocol::Udp)])
        .collect();
    out.sort();
    out
}

/// A namespace that follows the template: default-deny with DNS and the
/// three-tier flows.
pub(super) fn three_tier(namespace: &str) -> Vec<NetworkPolicy> {
    vec![
        deny_all_with_dns(namespace),
        policy(
            namespace,
            "gateway",
            json!({"podSelector": {"matchLabels": {"tier": "gateway"}},
                   "ingress": [{"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": 443}]}],
                   "egress": [{"to": [{"podSelector": {"matchLabels": {"tier": "backend"}}}]}]}),
        ),
        policy(
            namespace,
            "backend",
            json!({"podSelector": {"matchLabels": {"tier": "backend"}},
                   "ingress": [{"from": [{"podSelector": {"matchExpressions": [
                       {"key": "tier", "operator": "In", "values": ["gateway", "frontend", "backend"]}]}}]}],
                   "egress": [{"to": [{"podSelector": {"matchLabels": {"tier": "data"}}}], "ports": [{"port": 5432}]}]}),
        ),
        policy(
            namespace,
            "data",
            json!({"podSelector": {"matchLabels": {"tier": "data"}},
                   "ingress": [{"from": [{"podSelector": {"matchLabels": {"tier": "backend"}}}]}]}),
        ),
    ]
}

#[test]
fn the_three_tier_example_has_no_violations() {
    let t = template();
    let s = state(&[("shop", &[]), ("kube-system", &[])], &three_tier("shop"));
    assert_eq!(namespace_violations(&t, &s, "shop"), Vec::new());
    assert!(state_violations(&t, &s).is_empty());
}

#[test]
fn state_violations_lists_governed_namespaces_in_order() {
    let t = template();
    let mut policies = three_tier("good");
    policies.push(deny_all("kube-system"));
    policies.push(deny_all("zoo"));
    let s = state(&[("good", &[]), ("kube-system", &[]), ("alpha", &[])], &policies);
    let got = state_violations(&t, &s);
    // alpha has no policies (R1), zoo exists only through its policy (R2);
    // kube-system is not governed.
    assert_eq!(
        got.keys().cloned().collect::<Vec<_>>(),
        vec!["alpha".to_string(), "zoo".to_string()]
    );
    assert!(got["alpha"].iter().all(|v| v.rule() == RuleId::R1));
    assert_eq!(keys(&got["zoo"]).len(), 10);
    assert!(got["zoo"].iter().all(|v| v.rule() == RuleId::R2));
    let sorted = {
        let mut k = keys(&got["alpha"]);
        k.sort();
        k
    };
    assert_eq!(keys(&got["alpha"]), sorted);
}
