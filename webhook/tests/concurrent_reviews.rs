//! Changes that are each fine alone but not together, sent at the same time
//! through the real `Admission::handle` (no HTTP, no cluster): one is
//! admitted, the other judged with it counted. Plus what enters the overlay
//! of admitted changes: not dry runs, not denials; warn and audit admissions,
//! namespace label changes and cluster deletes do.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::{Value, json};
use tierguard::TierTemplate;
use tierguard_webhook::admission::{Admission, Endpoint};
use tierguard_webhook::metrics::OverlayMetrics;
use tierguard_webhook::overlay::{DEFAULT_EXPIRY, ManualClock, ObjectKey, Overlay};
use tierguard_webhook::state::Snapshot;
use tierguard_webhook::state::files::FileState;

const NAMESPACE_CONTROLLER: &str = "system:serviceaccount:kube-system:namespace-controller";

fn team() -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team", "resourceVersion": "1"}})
}

fn deny_all() -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "deny-all", "namespace": "team", "resourceVersion": "9"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    })
}

/// Egress to the cluster DNS from every pod of `team`.
fn dns(name: &str, version: &str) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "team", "resourceVersion": version},
        "spec": {
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": [{
                "to": [{
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}
                }],
                "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
            }]
        }
    })
}

/// The same policy with its DNS rule removed.
fn without_dns_rule(mut policy: Value) -> Value {
    policy["spec"]["egress"] = json!([]);
    policy
}

/// `team` with deny-all (no rules) and two policies that each allow DNS.
fn state() -> Arc<FileState> {
    let namespace: Namespace = serde_json::from_value(team()).unwrap();
    let policies: Vec<NetworkPolicy> = [deny_all(), dns("dns-a", "10"), dns("dns-b", "11")]
        .into_iter()
        .map(|p| serde_json::from_value(p).unwrap())
        .collect();
    Arc::new(FileState::from_snapshot(Snapshot::build([&namespace], &policies)))
}

fn admission_in(mode: &str, overlay: Arc<Overlay>) -> Admission {
    let template = TierTemplate::parse(&format!("mode: {mode}\n"), "test template").unwrap();
    Admission::with_overlay(Arc::new(template), state(), overlay)
}

fn admission() -> (Admission, Arc<Overlay>) {
    let overlay = Arc::new(Overlay::default());
    (admission_in("enforce", Arc::clone(&overlay)), overlay)
}

struct Request {
    kind: &'static str,
    operation: &'static str,
    object: Option<Value>,
    old: Option<Value>,
    username: &'static str,
    dry_run: bool,
}

impl Request {
    fn policy(operation: &'static str, old: Option<Value>, object: Option<Value>) -> Request {
        Request {
            kind: "NetworkPolicy",
            operation,
            object,
            old,
            username: "alice",
            dry_run: false,
        }
    }

    fn delete(policy: Value) -> Request {
        Request::policy("DELETE", Some(policy), None)
    }

    fn update(old: Value, new: Value) -> Request {
        Request::policy("UPDATE", Some(old), Some(new))
    }

    fn dry_run(mut self) -> Request {
        self.dry_run = true;
        self
    }

    fn body(&self) -> Vec<u8> {
        let meta = &self.object.as_ref().or(self.old.as_ref()).unwrap()["metadata"];
        let (group, resource) = match self.kind {
            "NetworkPolicy" => ("networking.k8s.io", "networkpolicies"),
            _ => ("", "namespaces"),
        };
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "7c6a1f3e-0000-4000-8000-000000000001",
                "kind": {"group": group, "version": "v1", "kind": self.kind},
                "resource": {"group": group, "version": "v1", "resource": resource},
                "name": meta["name"],
                "namespace": meta["namespace"],
                "operation": self.operation,
                "userInfo": {"username": self.username},
                "object": self.object,
                "oldObject": self.old,
                "dryRun": self.dry_run
            }
        }))
        .unwrap()
    }
}

/// The AdmissionReview response.
async fn send(admission: &Admission, request: &Request) -> Value {
    admission
        .handle(Endpoint::Validate, &request.body())
        .await
        .unwrap()
        .response
}

fn allowed(response: &Value) -> bool {
    response["response"]["allowed"] == true
}

fn key(name: &str) -> ObjectKey {
    ObjectKey::NetworkPolicy {
        namespace: "team".into(),
        name: name.into(),
    }
}

/// Sends both requests at once, from two tasks on two worker threads, and
/// returns whether each was admitted.
async fn race(admission: Arc<Admission>, first: Request, second: Request) -> [bool; 2] {
    let start = Arc::new(tokio::sync::Barrier::new(2));
    let spawn = |request: Request| {
        let (admission, start) = (Arc::clone(&admission), Arc::clone(&start));
        tokio::spawn(async move {
            let body = request.body();
            start.wait().await;
            let response = admission.handle(Endpoint::Validate, &body).await.unwrap().response;
            allowed(&response)
        })
    };
    let (a, b) = (spawn(first), spawn(second));
    [a.await.unwrap(), b.await.unwrap()]
}

#[tokio::test]
async fn each_change_alone_is_admitted() {
    let alone = [
        Request::delete(dns("dns-a", "10")),
        Request::delete(dns("dns-b", "11")),
        Request::update(dns("dns-a", "10"), without_dns_rule(dns("dns-a", "10"))),
        Request::update(dns("dns-b", "11"), without_dns_rule(dns("dns-b", "11"))),
    ];
    for request in alone {
        let (admission, overlay) = admission();
        let response = send(&admission, &request).await;
        assert!(allowed(&response), "{response}");
        assert_eq!(overlay.len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_deletes_of_the_dns_allows_admit_exactly_one() {
    for round in 0..100 {
        let (admission, overlay) = admission();
        let verdicts = race(
            Arc::new(admission),
            Request::delete(dns("dns-a", "10")),
            Request::delete(dns("dns-b", "11")),
        )
        .await;
        assert_eq!(
            verdicts.iter().filter(|admitted| **admitted).count(),
            1,
            "round {round}: {verdicts:?}"
        );
        assert_eq!(overlay.len(), 1, "round {round}: only the admitted delete counts");
        assert_eq!(overlay.busy_namespaces(), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_updates_that_each_remove_a_dns_rule_admit_exactly_one() {
    for round in 0..100 {
        let (admission, overlay) = admission();
        let verdicts = race(
            Arc::new(admission),
            Request::update(dns("dns-a", "10"), without_dns_rule(dns("dns-a", "10"))),
            Request::update(dns("dns-b", "11"), without_dns_rule(dns("dns-b", "11"))),
        )
        .await;
        assert_eq!(
            verdicts.iter().filter(|admitted| **admitted).count(),
            1,
            "round {round}: {verdicts:?}"
        );
        assert_eq!(overlay.len(), 1, "round {round}");
    }
}

#[tokio::test]
async fn the_second_delete_is_denied_with_r2_and_leaves_no_trace() {
    let clock = Arc::new(ManualClock::default());
    let overlay = Arc::new(Overlay::new(DEFAULT_EXPIRY, clock.clone(), OverlayMetrics::default()));
    let admission = admission_in("enforce", Arc::clone(&overlay));
    assert!(allowed(&send(&admission, &Request::delete(dns("dns-a", "10"))).await));
    let denied = send(&admission, &Request::delete(dns("dns-b", "11"))).await;
    assert!(!allowed(&denied), "{denied}");
    assert_eq!(denied["response"]["status"]["code"], 403, "{denied}");
    assert!(
        denied["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .starts_with("R2:"),
        "{denied}"
    );
    assert_eq!(overlay.keys(), vec![key("dns-a")], "the denied delete is not recorded");

    // The state never shows dns-a's delete (the API server did not persist
    // it): once it expires, dns-b's delete is judged against the state alone.
    clock.advance(DEFAULT_EXPIRY);
    let response = send(&admission, &Request::delete(dns("dns-b", "11"))).await;
    assert!(allowed(&response), "{response}");
    assert_eq!(overlay.keys(), vec![key("dns-b")]);
}

#[tokio::test]
async fn a_dry_run_never_enters_the_overlay() {
    let (admission, overlay) = admission();
    let response = send(&admission, &Request::delete(dns("dns-a", "10")).dry_run()).await;
    assert!(allowed(&response), "{response}");
    assert!(overlay.is_empty());
    let response = send(&admission, &Request::delete(dns("dns-b", "11"))).await;
    assert!(allowed(&response), "the dry run changed nothing: {response}");
    assert_eq!(overlay.keys(), vec![key("dns-b")]);
    // A dry run is judged against what has been admitted, like any review.
    let response = send(&admission, &Request::delete(dns("dns-a", "10")).dry_run()).await;
    assert!(!allowed(&response), "{response}");
}

#[tokio::test]
async fn warn_and_audit_modes_record_what_they_admit() {
    for mode in ["warn", "audit"] {
        let overlay = Arc::new(Overlay::default());
        let admission = admission_in(mode, Arc::clone(&overlay));
        assert!(allowed(&send(&admission, &Request::delete(dns("dns-a", "10"))).await));
        let second = send(&admission, &Request::delete(dns("dns-b", "11"))).await;
        assert!(allowed(&second), "{mode}: {second}");
        if mode == "warn" {
            let warnings = second["response"]["warnings"].to_string();
            assert!(warnings.contains("R2"), "{mode}: the second delete drops DNS: {second}");
        }
        assert_eq!(overlay.keys(), vec![key("dns-a"), key("dns-b")], "{mode}");
    }
}

#[tokio::test]
async fn deletes_the_cluster_makes_are_admitted_and_recorded() {
    let (admission, overlay) = admission();
    let mut request = Request::delete(dns("dns-a", "10"));
    request.username = NAMESPACE_CONTROLLER;
    assert!(allowed(&send(&admission, &request).await));
    let mut request = Request::delete(dns("dns-b", "11"));
    request.username = NAMESPACE_CONTROLLER;
    assert!(allowed(&send(&admission, &request).await));
    assert_eq!(overlay.keys(), vec![key("dns-a"), key("dns-b")]);
    // What the cluster took away counts for everyone else.
    let response = send(&admission, &Request::delete(deny_all())).await;
    assert!(!allowed(&response), "{response}");
}

#[tokio::test]
async fn admitted_namespace_changes_enter_the_overlay_dry_runs_do_not() {
    let (admission, overlay) = admission();
    let mut relabelled = team();
    relabelled["metadata"]["labels"] = json!({"kubernetes.io/metadata.name": "team", "tier": "data"});
    let update = |dry_run| Request {
        kind: "Namespace",
        operation: "UPDATE",
        object: Some(relabelled.clone()),
        old: Some(team()),
        username: "alice",
        dry_run,
    };
    assert!(allowed(&send(&admission, &update(true)).await));
    assert!(overlay.is_empty());
    assert!(allowed(&send(&admission, &update(false)).await));
    assert_eq!(overlay.keys(), vec![ObjectKey::Namespace { name: "team".into() }]);
    // A denied namespace change is not recorded.
    let mut wrong = relabelled.clone();
    wrong["metadata"]["name"] = json!("other");
    let denied = Request {
        kind: "Namespace",
        operation: "CREATE",
        object: Some(wrong),
        old: None,
        username: "alice",
        dry_run: false,
    };
    assert!(!allowed(&send(&admission, &denied).await));
    assert_eq!(overlay.len(), 1);
}
