//! One background audit at 1,000 governed namespaces and 10,000
//! NetworkPolicies (10 per namespace: a default-deny with DNS and allows
//! along the template, two of them across namespaces by namespaceSelector;
//! every 10th namespace opens data to frontend (R3), every 25th lacks its
//! default-deny (R1)). Prints the median of: building the snapshot (every
//! policy parsed, as after a watch event), the audit itself (every
//! violation of every namespace, `audit_state`), and building the reports
//! and the plan of writes from its findings.
//!
//! `cargo bench -p tierguard-webhook --bench audit` (`BENCH_RUNS` sets the
//! number of runs, default 7).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::{Value, json};
use tierguard::TierTemplate;
use tierguard_webhook::audit::findings;
use tierguard_webhook::audit::report::{self, ReportKind};
use tierguard_webhook::state::Snapshot;

const NAMESPACES: usize = 1_000;
const TEAMS: usize = 10;

fn np(namespace: &str, name: &str, spec: Value) -> NetworkPolicy {
    serde_json::from_value(json!({"metadata": {"name": name, "namespace": namespace}, "spec": spec})).unwrap()
}

fn tier(t: &str) -> Value {
    json!({"matchLabels": {"tier": t}})
}

fn policies(namespace: &str, i: usize) -> Vec<NetworkPolicy> {
    let team = format!("t{}", i % TEAMS);
    let dns = json!({
        "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
    });
    let port = json!([{"protocol": "TCP", "port": 8080}]);
    let mut out = vec![
        np(
            namespace,
            "default-deny-all",
            json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "egress": [dns]}),
        ),
        np(
            namespace,
            "gateway-in",
            json!({"podSelector": tier("gateway"), "policyTypes": ["Ingress"], "ingress": [{"ports": port}]}),
        ),
        np(
            namespace,
            "gateway-out",
            json!({"podSelector": tier("gateway"), "policyTypes": ["Egress"],
                   "egress": [{"to": [{"podSelector": tier("backend")}], "ports": port}]}),
        ),
        np(
            namespace,
            "frontend-in",
            json!({"podSelector": tier("frontend"), "policyTypes": ["Ingress"], "ingress": [{"ports": port}]}),
        ),
        np(
            namespace,
            "frontend-out",
            json!({"podSelector": tier("frontend"), "policyTypes": ["Egress"],
                   "egress": [{"to": [{"podSelector": tier("backend")}], "ports": port}]}),
        ),
        np(
            namespace,
            "backend-in",
            json!({"podSelector": tier("backend"), "policyTypes": ["Ingress"],
                   "ingress": [{"from": [{"podSelector": {"matchExpressions": [
                       {"key": "tier", "operator": "In", "values": ["gateway", "frontend"]}]}}], "ports": port}]}),
        ),
        np(
            namespace,
            "backend-out",
            json!({"podSelector": tier("backend"), "policyTypes": ["Egress"],
                   "egress": [{"to": [{"podSelector": tier("data")}], "ports": [{"protocol": "TCP", "port": 5432}]}]}),
        ),
        np(
            namespace,
            "data-in",
            json!({"podSelector": tier("data"), "policyTypes": ["Ingress"],
                   "ingress": [{"from": [{"podSelector": tier(if i.is_multiple_of(10) { "frontend" } else { "backend" })}],
                                "ports": [{"protocol": "TCP", "port": 5432}]}]}),
        ),
        np(
            namespace,
            "backend-from-team",
            json!({"podSelector": tier("backend"), "policyTypes": ["Ingress"],
                   "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": team}},
                                          "podSelector": tier("backend")}], "ports": port}]}),
        ),
        np(
            namespace,
            "backend-to-team",
            json!({"podSelector": tier("backend"), "policyTypes": ["Egress"],
                   "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"team": team}},
                                       "podSelector": tier("backend")}], "ports": port}]}),
        ),
    ];
    if i.is_multiple_of(25) {
        out.remove(0);
        out.push(np(
            namespace,
            "spare",
            json!({"podSelector": tier("data"), "policyTypes": ["Ingress"]}),
        ));
    }
    out
}

fn cluster() -> (Vec<Namespace>, Vec<NetworkPolicy>) {
    let mut namespaces = Vec::new();
    let mut nps = Vec::new();
    for i in 0..NAMESPACES {
        let name = format!("app-{i:04}");
        namespaces.push(
            serde_json::from_value(json!({"metadata": {"name": name, "labels": {
                "kubernetes.io/metadata.name": name, "team": format!("t{}", i % TEAMS)}}}))
            .unwrap(),
        );
        nps.extend(policies(&name, i));
    }
    namespaces.push(
        serde_json::from_value(json!({"metadata": {"name": "kube-system", "labels": {
            "kubernetes.io/metadata.name": "kube-system"}}}))
        .unwrap(),
    );
    (namespaces, nps)
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .filter(|&r| r > 0)
        .unwrap_or(7);
    let template = TierTemplate::built_in();
    let (namespaces, nps) = cluster();
    let (mut build, mut audit, mut reports) = (Vec::new(), Vec::new(), Vec::new());
    let mut last = None;
    for _ in 0..runs {
        let t = Instant::now();
        let snapshot = Snapshot::build(&namespaces, &nps);
        build.push(t.elapsed());
        let t = Instant::now();
        let found = findings::audit(&template, &snapshot);
        audit.push(t.elapsed());
        let t = Instant::now();
        let plan = report::plan(
            ReportKind::OpenReports,
            &found,
            &BTreeSet::new(),
            &BTreeMap::new(),
            1_700_000_000,
        );
        reports.push(t.elapsed());
        last = Some((found, plan));
    }
    let Some((found, plan)) = last else { return };
    println!(
        "audit of {} governed namespaces, {} NetworkPolicies: {} violations in {} namespaces ({} reports), {runs} runs",
        found.namespaces.len(),
        nps.len(),
        found.total(),
        found.violating().count(),
        plan.apply.len(),
    );
    println!(
        "  snapshot build (parse every policy): median {}",
        ms(median(build.clone()))
    );
    println!(
        "  audit (audit_state, every violation): median {}",
        ms(median(audit.clone()))
    );
    println!("  reports + plan from the findings:     median {}", ms(median(reports)));
    let total: Vec<Duration> = build.iter().zip(&audit).map(|(b, a)| *b + *a).collect();
    println!("  after a change (build + audit):       median {}", ms(median(total)));
}
