//! The background audit against loopback fakes: the watched state comes
//! from `fake_api` through the webhook's reflectors, reports and the Lease
//! go to `report_api`. Reports appear, change and go as violations do;
//! the report API is chosen by what is served; the Lease hands over when
//! the leader stops (released) or dies (runs out).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fake_api;
mod report_api;

use std::sync::Arc;
use std::time::Duration;

use fake_api::{FakeApi, NAMESPACES, NETWORK_POLICIES, eventually};
use report_api::{OPENREPORTS, POLICYREPORTS, ReportApi};
use serde_json::{Value, json};
use tierguard::TierTemplate;
use tierguard_webhook::audit::lease::{Election, Elector, LeaseConfig};
use tierguard_webhook::audit::{Audit, AuditOptions, ReportOptions};
use tierguard_webhook::metrics::Metrics;
use tierguard_webhook::state::files::FileState;
use tierguard_webhook::state::kube::KubeState;
use tierguard_webhook::state::{Snapshot, StateSource};

const LEASE_NS: &str = "tierguard-system";

fn example(file: &str) -> Value {
    let path = tierguard_integration::repo_root()
        .join("deploy/examples/three-tier")
        .join(file);
    serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace",
           "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}}})
}

/// The example's default-deny (with DNS) moved to `ns`: the namespace is compliant with it alone.
fn default_deny(ns: &str) -> Value {
    let mut p = example("10-default-deny.yaml");
    p["metadata"]["namespace"] = json!(ns);
    p
}

/// A default-deny without the DNS allow: R2 for every group.
fn deny_without_dns(ns: &str) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
           "metadata": {"name": "default-deny-all", "namespace": ns},
           "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}})
}

fn lease(identity: &str) -> LeaseConfig {
    LeaseConfig {
        lease_duration: Duration::from_secs(1),
        renew_interval: Duration::from_millis(100),
        ..LeaseConfig::new(LEASE_NS, identity)
    }
}

fn options(reports: &ReportApi, identity: &str) -> AuditOptions {
    AuditOptions {
        interval: Duration::from_secs(60),
        min_interval: Duration::from_millis(50),
        reports: Some(ReportOptions {
            client: reports.client(),
            lease: lease(identity),
            rediscover: Duration::ZERO,
            retry: Duration::from_millis(100),
        }),
    }
}

fn rules(report: &Value) -> Vec<String> {
    let mut r: Vec<String> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule"].as_str().unwrap().to_string())
        .collect();
    r.dedup();
    r
}

fn writes(reports: &ReportApi) -> usize {
    reports
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH" || r.method == "DELETE")
        .count()
}

#[tokio::test]
async fn reports_are_created_updated_and_removed_as_violations_appear_and_disappear() {
    let api = FakeApi::start().await;
    api.apply(NAMESPACES, namespace("shop"));
    api.apply(NETWORK_POLICIES, default_deny("shop"));
    api.apply(NAMESPACES, namespace("team"));
    // not governed: no report whatever it holds
    api.apply(NAMESPACES, namespace("kube-system"));
    let reports = ReportApi::start(&[OPENREPORTS, POLICYREPORTS]).await;
    let state = KubeState::start(api.client()).unwrap();
    let metrics = Metrics::new();
    let audit = Audit::start(
        Arc::new(TierTemplate::built_in()),
        state.clone() as Arc<dyn StateSource>,
        metrics.audit(),
        options(&reports, "replica-a"),
    );

    // team has no policy: R1 for every group and direction. openreports is preferred.
    let team = eventually("a report in team", || reports.reports(OPENREPORTS).get("team").cloned()).await;
    assert_eq!(rules(&team), vec!["R1"]);
    assert_eq!(team["kind"], "Report");
    assert_eq!(team["metadata"]["name"], "tierguard");
    assert_eq!(team["metadata"]["labels"]["app.kubernetes.io/managed-by"], "tierguard");
    assert_eq!(team["summary"]["fail"], team["results"].as_array().unwrap().len());
    assert_eq!(
        team["results"][0]["resources"][0],
        json!({"apiVersion": "v1", "kind": "Namespace", "name": "team"})
    );
    assert!(
        team["results"][0]["message"]
            .as_str()
            .unwrap()
            .contains("no default-deny")
    );
    assert_eq!(reports.reports(OPENREPORTS).keys().collect::<Vec<_>>(), vec!["team"]);
    assert!(reports.reports(POLICYREPORTS).is_empty());
    let apply = reports.requests().into_iter().find(|r| r.method == "PATCH").unwrap();
    assert_eq!(
        apply.query.get("fieldManager").map(String::as_str),
        Some("tierguard-audit")
    );
    assert_eq!(apply.query.get("force").map(String::as_str), Some("true"));
    let text = metrics.encode().unwrap();
    assert!(
        text.contains(r#"tierguard_audit_violations{namespace="team",rule="R1"} 10"#),
        "{text}"
    );
    assert!(
        text.contains(r#"tierguard_audit_namespaces{state="compliant"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"tierguard_audit_namespaces{state="violating"} 1"#),
        "{text}"
    );
    assert!(text.contains("tierguard_audit_leader 1"), "{text}");

    // team gets a default-deny that drops DNS: its report is updated to R2.
    api.apply(NETWORK_POLICIES, deny_without_dns("team"));
    let team = eventually("team's report to show R2", || {
        reports
            .reports(OPENREPORTS)
            .get("team")
            .filter(|r| rules(r) == ["R2"])
            .cloned()
    })
    .await;
    assert_eq!(
        team["results"][0]["resources"][0]["kind"], "Namespace",
        "R2 is about the namespace's groups"
    );

    // shop loses its default-deny: a report appears there; team is fixed: its report goes.
    api.delete(NETWORK_POLICIES, "shop", "default-deny-all");
    api.apply(NETWORK_POLICIES, default_deny("team"));
    eventually("shop reported, team's report removed", || {
        let now = reports.reports(OPENREPORTS);
        (now.keys().collect::<Vec<_>>() == ["shop"]).then_some(())
    })
    .await;
    let text = metrics.encode().unwrap();
    assert!(
        !text.contains(r#"namespace="team""#),
        "a compliant namespace has no series: {text}"
    );

    // The namespace goes: its report goes with it.
    api.delete(NAMESPACES, "", "shop");
    eventually("no report left", || {
        reports.reports(OPENREPORTS).is_empty().then_some(())
    })
    .await;

    // An audit of an unchanged state writes nothing.
    let before = writes(&reports);
    let runs = metrics.audit().runs();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(metrics.audit().runs(), runs, "no change, no audit before the interval");
    assert_eq!(writes(&reports), before);

    audit.stop().await;
    let held = reports.lease(LEASE_NS, "tierguard-webhook-audit").unwrap();
    assert!(held["spec"]["holderIdentity"].is_null(), "released on stop: {held}");
    api.shutdown().await;
}

fn file_state(namespaces: &[&str], policies: &[Value]) -> Arc<dyn StateSource> {
    let nss: Vec<_> = namespaces
        .iter()
        .map(|n| serde_json::from_value(namespace(n)).unwrap())
        .collect();
    let nps: Vec<_> = policies
        .iter()
        .map(|p| serde_json::from_value(p.clone()).unwrap())
        .collect();
    Arc::new(FileState::from_snapshot(Snapshot::build(&nss, &nps)))
}

#[tokio::test]
async fn policyreports_when_only_wgpolicyk8s_is_served_and_leftovers_are_deleted() {
    let reports = ReportApi::start(&[POLICYREPORTS]).await;
    // a leftover of ours in a namespace that is compliant now, and another tool's report
    reports.put_report(
        POLICYREPORTS,
        "shop",
        json!({"metadata": {"name": "tierguard", "namespace": "shop",
                            "labels": {"app.kubernetes.io/managed-by": "tierguard"}}}),
    );
    reports.put_report(
        POLICYREPORTS,
        "shop",
        json!({"metadata": {"name": "kyverno", "namespace": "shop", "labels": {"app.kubernetes.io/managed-by": "kyverno"}}}),
    );
    let state = file_state(&["shop", "team"], &[default_deny("shop"), deny_without_dns("team")]);
    let audit = Audit::start(
        Arc::new(TierTemplate::built_in()),
        state,
        Metrics::new().audit(),
        options(&reports, "replica-a"),
    );
    eventually("team's PolicyReport, shop's leftover gone", || {
        let now = reports.reports(POLICYREPORTS);
        let team = now.get("team")?;
        let shop_names: Vec<_> = reports
            .requests()
            .iter()
            .filter(|r| r.method == "DELETE")
            .map(|r| r.path.clone())
            .collect();
        (team["kind"] == "PolicyReport"
            && shop_names == ["/apis/wgpolicyk8s.io/v1alpha2/namespaces/shop/policyreports/tierguard"])
        .then_some(())
    })
    .await;
    let left = reports.reports(POLICYREPORTS);
    assert_eq!(
        left["shop"]["metadata"]["name"], "kyverno",
        "another tool's report stays"
    );
    assert_eq!(rules(&left["team"]), vec!["R2"]);
    assert!(left["team"].get("source").is_none());
    audit.stop().await;
}

#[tokio::test]
async fn without_a_report_api_the_audit_is_metrics_only() {
    let reports = ReportApi::start(&[]).await;
    let state = file_state(&["team"], &[]);
    let metrics = Metrics::new();
    let audit = Audit::start(
        Arc::new(TierTemplate::built_in()),
        state,
        metrics.audit(),
        options(&reports, "replica-a"),
    );
    eventually("the audit, and a look for both APIs", || {
        let looked: Vec<_> = reports
            .requests()
            .iter()
            .filter(|r| r.path == "/apis/openreports.io/v1alpha1" || r.path == "/apis/wgpolicyk8s.io/v1alpha2")
            .map(|r| r.path.clone())
            .collect();
        (metrics.audit().runs() >= 1 && looked.len() >= 2).then_some(())
    })
    .await;
    let text = metrics.encode().unwrap();
    assert!(
        text.contains(r#"tierguard_audit_violations{namespace="team",rule="R1"} 10"#),
        "{text}"
    );
    assert_eq!(writes(&reports), 0);
    audit.stop().await;
}

#[tokio::test]
async fn the_lease_hands_over_when_the_leader_stops_or_dies() {
    let reports = ReportApi::start(&[OPENREPORTS]).await;
    let state = file_state(&["team"], &[]);
    let template = Arc::new(TierTemplate::built_in());
    let a = Audit::start(
        template.clone(),
        state.clone(),
        Metrics::new().audit(),
        options(&reports, "replica-a"),
    );
    let mut a_leading = a.leading.clone();
    tokio::time::timeout(Duration::from_secs(8), a_leading.wait_for(|l| *l))
        .await
        .unwrap()
        .unwrap();
    let b_metrics = Metrics::new();
    let b = Audit::start(
        template.clone(),
        state.clone(),
        b_metrics.audit(),
        options(&reports, "replica-b"),
    );
    eventually("a's report", || reports.reports(OPENREPORTS).get("team").cloned()).await;
    eventually("b's first audit", || (b_metrics.audit().runs() >= 1).then_some(())).await;
    // b audits (metrics) but does not lead while a renews.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!*b.leading.borrow(), "b must not lead while a renews");
    let holder = |r: &ReportApi| r.lease(LEASE_NS, "tierguard-webhook-audit").unwrap()["spec"].clone();
    assert_eq!(holder(&reports)["holderIdentity"], "replica-a");
    let b_text = b_metrics.encode().unwrap();
    assert!(b_text.contains("tierguard_audit_leader 0"), "{b_text}");
    assert!(
        b_text.contains(r#"tierguard_audit_violations{namespace="team",rule="R1"} 10"#),
        "{b_text}"
    );

    // a stops (releases): b takes over well within the Lease duration and
    // writes the reports again.
    let writes_before = writes(&reports);
    a.stop().await;
    let mut b_leading = b.leading.clone();
    tokio::time::timeout(Duration::from_secs(8), b_leading.wait_for(|l| *l))
        .await
        .unwrap()
        .unwrap();
    let spec = holder(&reports);
    assert_eq!(spec["holderIdentity"], "replica-b");
    assert_eq!(spec["leaseTransitions"], 1);
    eventually("b's write", || (writes(&reports) > writes_before).then_some(())).await;
    b.stop().await;

    // A leader that dies without releasing: the next one waits for the Lease to run out.
    let client = reports.client();
    let api = || kube::Api::namespaced(client.clone(), LEASE_NS);
    let mut dead = Elector::new(api(), lease("replica-c"));
    assert!(dead.try_acquire_or_renew().await.unwrap(), "a released Lease is free");
    drop(dead);
    let started = tokio::time::Instant::now();
    let mut next = Elector::new(api(), lease("replica-d"));
    assert!(!next.try_acquire_or_renew().await.unwrap(), "held and not run out");
    let election = Election::spawn(next);
    let mut leading = election.leading.clone();
    tokio::time::timeout(Duration::from_secs(8), leading.wait_for(|l| *l))
        .await
        .unwrap()
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "taken over before the Lease ran out: {:?}",
        started.elapsed()
    );
    assert_eq!(holder(&reports)["holderIdentity"], "replica-d");
    election.stop().await;
}
