//! Review cost of one NetworkPolicy change in a governed namespace of 50
//! policies, and of the offline check of the same state: through the free
//! functions (which parse the state's policies on every call) and through a
//! `PreparedState` (parsed once, as the webhook does per state generation).
//!
//! `cargo bench -p tierguard --bench guardrails`

use criterion::{Criterion, criterion_group, criterion_main};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::{Value, json};
use tierguard::TierTemplate;
use tierguard::guardrails::{Operation, PolicyState, PreparedState, review_network_policy, state_violations};

fn policy(namespace: &str, name: &str, spec: Value) -> NetworkPolicy {
    serde_json::from_value(json!({"metadata": {"name": name, "namespace": namespace}, "spec": spec}))
        .unwrap_or_default()
}

fn dns_rule() -> Value {
    json!({
        "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
    })
}

/// A template-following namespace `shop` with 50 policies, and 50 other namespaces.
fn fifty() -> PolicyState {
    let mut state = PolicyState::default();
    let mut add = |p: NetworkPolicy| {
        let key = (
            p.metadata.namespace.clone().unwrap_or_default(),
            p.metadata.name.clone().unwrap_or_default(),
        );
        state.policies.insert(key, p);
    };
    add(policy(
        "shop",
        "default-deny-all",
        json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "egress": [dns_rule()]}),
    ));
    add(policy(
        "shop",
        "frontend",
        json!({"podSelector": {"matchLabels": {"tier": "frontend"}}, "policyTypes": ["Ingress", "Egress"],
        "ingress": [{}], "egress": [{"to": [{"podSelector": {"matchLabels": {"tier": "backend"}}}]}]}),
    ));
    add(policy(
        "shop",
        "backend",
        json!({"podSelector": {"matchLabels": {"tier": "backend"}}, "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"tier": "frontend"}}}]}],
        "egress": [{"to": [{"podSelector": {"matchLabels": {"tier": "data"}}}]}]}),
    ));
    add(policy(
        "shop",
        "data",
        json!({"podSelector": {"matchLabels": {"tier": "data"}}, "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"tier": "backend"}}}]}]}),
    ));
    for i in 0..46 {
        let t = ["gateway", "frontend", "backend", "data"][i % 4];
        add(policy(
            "shop",
            &format!("app-{i:02}"),
            json!({
                "podSelector": {"matchLabels": {"tier": t, "app": format!("app-{i}")}},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{"from": [
                    {"podSelector": {"matchLabels": {"tier": "backend"}}},
                    {"namespaceSelector": {"matchLabels": {"team": "x"}}, "podSelector": {"matchLabels": {"tier": "backend"}}}
                ], "ports": [{"port": 8080}]}],
                "egress": [dns_rule(), {"to": [{"podSelector": {"matchLabels": {"tier": "data"}}}], "ports": [{"port": 5432}]}]
            }),
        ));
    }
    for name in ["shop", "kube-system"] {
        state.namespaces.insert(
            name.into(),
            [("kubernetes.io/metadata.name".to_string(), name.to_string())].into(),
        );
    }
    for i in 0..50 {
        let name = format!("team-{i}");
        state.namespaces.insert(
            name.clone(),
            [
                ("kubernetes.io/metadata.name".to_string(), name),
                ("team".to_string(), "x".to_string()),
            ]
            .into(),
        );
    }
    state
}

fn bench(c: &mut Criterion) {
    let template = TierTemplate::built_in();
    let state = fifty();
    let change = policy(
        "shop",
        "app-07",
        json!({"podSelector": {"matchLabels": {"tier": "backend", "app": "x"}},
        "ingress": [{"from": [{"podSelector": {}}]}]}),
    );
    c.bench_function("review UPDATE, namespace of 50 policies", |b| {
        b.iter(|| review_network_policy(&template, &state, Operation::Update, Some(&change), Some(&change)))
    });
    c.bench_function("check state, namespace of 50 policies", |b| {
        b.iter(|| state_violations(&template, &state))
    });
    let prepared = PreparedState::new(state.clone());
    c.bench_function("prepared: review UPDATE, namespace of 50 policies", |b| {
        b.iter(|| prepared.review_network_policy(&template, Operation::Update, Some(&change), Some(&change)))
    });
    c.bench_function("prepared: check state, namespace of 50 policies", |b| {
        b.iter(|| prepared.state_violations(&template))
    });
    c.bench_function("prepare state of 50 policies", |b| {
        b.iter_batched(|| state.clone(), PreparedState::new, criterion::BatchSize::SmallInput)
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = bench
}
criterion_main!(benches);
