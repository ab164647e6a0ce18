//! A `PreparedState` (policies parsed once) answers exactly like the free
//! functions (policies parsed on every call), messages included.

use serde_json::json;

use super::*;

/// The fixtures of the other guardrail tests, plus policies with structure
/// problems, partial egress isolation and namespaceSelector peers.
fn fixture_policies() -> Vec<NetworkPolicy> {
    let mut out = three_tier("shop");
    out.extend(three_tier("shop-data"));
    out.push(deny_all("zoo"));
    out.push(dns_allow(
        "shop",
        "dns-backend",
        json!({"matchLabels": {"tier": "backend"}}),
    ));
    out.push(policy(
        "shop",
        "partial-egress",
        json!({"podSelector": {"matchLabels": {"tier": "backend", "app": "x"}}, "policyTypes": ["Egress"]}),
    ));
    out.push(policy(
        "shop",
        "data-open",
        json!({"podSelector": {"matchLabels": {"tier": "data"}}, "ingress": [{"from": [
            {"podSelector": {}},
            {"namespaceSelector": {"matchLabels": {"team": "x"}}},
            {"namespaceSelector": {"matchLabels": {"tier": "backend"}}, "podSelector": {}},
            {"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.1.0.0/24"]}}
        ]}]}),
    ));
    out.push(policy(
        "shop",
        "broken",
        json!({"podSelector": {"matchExpressions": [{"key": "tier", "operator": "Near"}]},
               "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/33"}}], "ports": [{"port": 70000}]},
                          {"ports": [{"protocol": "UDP", "port": "dns"}]}]}),
    ));
    out.push(policy(
        "kube-system",
        "allow-all",
        json!({"podSelector": {}, "ingress": [{}]}),
    ));
    out
}

fn fixture_state(policies: &[NetworkPolicy]) -> PolicyState {
    state(
        &[
            ("shop", &[]),
            ("shop-data", &[("tier", "data")]),
            ("shop-backend", &[("tier", "backend")]),
            ("weird", &[("tier", "weird")]),
            ("team-a", &[("team", "x")]),
            ("kube-system", &[]),
        ],
        policies,
    )
}

/// Changes to review: every policy of the state updated to every other
/// policy's spec in its place, deleted, and every policy created elsewhere.
fn changes(policies: &[NetworkPolicy]) -> Vec<(Operation, Option<NetworkPolicy>, Option<NetworkPolicy>)> {
    let mut out = Vec::new();
    for old in policies {
        out.push((Operation::Delete, Some(old.clone()), None));
        for new in policies {
            let mut moved = new.clone();
            moved.metadata.namespace = old.metadata.namespace.clone();
            moved.metadata.name = old.metadata.name.clone();
            out.push((Operation::Update, Some(old.clone()), Some(moved)));
        }
        for namespace in ["shop", "shop-backend", "weird", "absent", "kube-system"] {
            let mut created = old.clone();
            created.metadata.namespace = Some(namespace.to_string());
            out.push((Operation::Create, None, Some(created)));
        }
    }
    out
}

#[test]
fn prepared_state_reviews_exactly_like_the_free_functions() {
    let t = template();
    let all = fixture_policies();
    // The full state, and states missing one policy each (so deletes and
    // creates of every fixture are seen from both sides).
    let mut states = vec![fixture_state(&all)];
    for skip in 0..all.len() {
        let rest: Vec<NetworkPolicy> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != skip)
            .map(|(_, p)| p.clone())
            .collect();
        states.push(fixture_state(&rest));
    }
    let changes = changes(&all);
    let mut rejected = 0;
    for s in &states {
        let prepared = PreparedState::new(s.clone());
        assert_eq!(prepared.state_violations(&t), state_violations(&t, s));
        for namespace in [
            "shop",
            "shop-data",
            "shop-backend",
            "weird",
            "zoo",
            "kube-system",
            "absent",
        ] {
            assert_eq!(
                prepared.namespace_violations(&t, namespace),
                namespace_violations(&t, s, namespace),
                "{namespace}"
            );
        }
        for (operation, old, new) in &changes {
            let straight = review_network_policy(&t, s, *operation, old.as_ref(), new.as_ref());
            let fast = prepared.review_network_policy(&t, *operation, old.as_ref(), new.as_ref());
            assert_eq!(fast, straight, "{operation:?} {old:?} -> {new:?}");
            rejected += usize::from(!straight.new_violations.is_empty());
        }
    }
    // The fixtures exercise rejections, not only admissions.
    assert!(rejected > 100, "{rejected}");
}

#[test]
fn prepared_state_derefs_to_its_state() {
    let s = fixture_state(&fixture_policies());
    let prepared = PreparedState::from(s.clone());
    assert_eq!(prepared.policies, s.policies);
    assert_eq!(prepared.state().namespaces, s.namespaces);
    assert_eq!(prepared.into_state().policies, s.policies);
}
