//! The kube-rs watch paths against a loopback fake API server
//! (`fake_api`): the webhook's reflector state source (and the full HTTPS
//! server's readiness and validation on top of it), and the enforcer's
//! watch-to-sync loop with a recording executor. No cluster, no root.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fake_api;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fake_api::{FakeApi, NAMESPACES, NETWORK_POLICIES, PODS, Recorded, eventually};
use serde_json::{Value, json};
use tierguard::policy::{Direction, PolicyId};
use tierguard::rbac::Watched;
use tierguard_enforcer::daemon::metrics::Metrics;
use tierguard_enforcer::daemon::{LoopConfig, drive, watch};
use tierguard_enforcer::exec::{ExecError, Executor};
use tierguard_enforcer::naming::{pod_chain_name, policy_chain_name};
use tierguard_enforcer::sync::{Backend, NodeIdentity, SyncOptions, Syncer};
use tierguard_webhook::limits::ConnectionLimits;
use tierguard_webhook::selfsigned::{self, Validity};
use tierguard_webhook::serve::{self, Options};
use tierguard_webhook::state::StateSource;
use tierguard_webhook::state::kube::KubeState;
use tokio_util::sync::CancellationToken;

fn as_set(watched: &[Watched]) -> BTreeSet<(String, String)> {
    watched
        .iter()
        .map(|w| (w.group.to_string(), w.resource.to_string()))
        .collect()
}

/// Every list/watch the watchers made: a most-recent list in pages of 500,
/// then a watch from the list's resourceVersion with bookmarks.
fn assert_list_then_watch(requests: &[Recorded]) {
    for r in requests.iter().filter(|r| r.resource().is_some()) {
        if r.is_watch() {
            assert_eq!(
                r.query.get("allowWatchBookmarks").map(String::as_str),
                Some("true"),
                "{r:?}"
            );
            assert!(
                r.query
                    .get("resourceVersion")
                    .is_some_and(|v| v.parse::<u64>().is_ok_and(|n| n > 0)),
                "a watch must resume from the list's resourceVersion: {r:?}"
            );
        } else {
            // ListSemantic::MostRecent (the default): a consistent read, no resourceVersion.
            assert!(!r.query.contains_key("resourceVersion"), "{r:?}");
            assert_eq!(r.query.get("limit").map(String::as_str), Some("500"), "{r:?}");
        }
    }
}

// ---------------------------------------------------------------- webhook

fn example(file: &str) -> Value {
    let path = tierguard_integration::repo_root()
        .join("deploy/examples/three-tier")
        .join(file);
    serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn namespace(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

fn delete_review(uid: &str, policy: &Value) -> Value {
    let meta = &policy["metadata"];
    let gvk = json!({"group": "networking.k8s.io", "version": "v1", "kind": "NetworkPolicy"});
    let gvr = json!({"group": "networking.k8s.io", "version": "v1", "resource": "networkpolicies"});
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": gvk, "requestKind": gvk,
            "resource": gvr, "requestResource": gvr,
            "name": meta["name"], "namespace": meta["namespace"],
            "operation": "DELETE",
            "userInfo": {"username": "kubernetes-admin", "groups": ["system:authenticated"]},
            "object": null,
            "oldObject": policy,
            "dryRun": false,
        }
    })
}

struct Https {
    client: reqwest::Client,
    base: String,
}

impl Https {
    async fn get(&self, path: &str) -> (u16, String) {
        let resp = self.client.get(format!("{}{path}", self.base)).send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    async fn validate(&self, review: &Value) -> Value {
        let resp = self
            .client
            .post(format!("{}/validate", self.base))
            .json(review)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    }
}

fn allowed(review: &Value) -> bool {
    review["response"]["allowed"].as_bool().unwrap()
}

#[tokio::test]
async fn webhook_state_syncs_from_lists_and_follows_watch_events() {
    let api = FakeApi::start().await;
    let shop = example("00-namespace.yaml");
    let default_deny = example("10-default-deny.yaml");
    let data = example("40-data.yaml");
    api.apply(NAMESPACES, shop.clone());
    api.apply(NAMESPACES, namespace("other", json!({"team": "a"})));
    api.apply(NETWORK_POLICIES, data.clone());
    // The policy list waits until the test lets it through.
    api.hold(NETWORK_POLICIES);

    let state = KubeState::start(api.client()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = selfsigned::generate_ca("fake-api test CA").unwrap();
    let issued = ca
        .issue(&["localhost".to_string(), "127.0.0.1".to_string()], Validity::Current)
        .unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, &issued.cert_pem).unwrap();
    std::fs::write(&key, &issued.key_pem).unwrap();
    let running = serve::start(Options {
        listen: "127.0.0.1:0".parse().unwrap(),
        template: tierguard::TierTemplate::built_in(),
        state: state.clone() as Arc<dyn StateSource>,
        cert,
        key,
        service_names: vec!["localhost".to_string()],
        drain: Duration::from_millis(10),
        cert_recheck: Duration::from_secs(60),
        limits: ConnectionLimits::default(),
    })
    .await
    .unwrap();
    let https = Https {
        client: reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(ca.cert_pem.as_bytes()).unwrap())
            .resolve("localhost", running.local_addr)
            .timeout(Duration::from_secs(8))
            .build()
            .unwrap(),
        base: format!("https://localhost:{}", running.local_addr.port()),
    };

    // Namespaces are listed and watched; policies are not listed yet: not synced, not ready.
    api.wait_for_watch(NAMESPACES).await;
    api.wait_for_requests("the held policy list", |reqs| {
        reqs.iter()
            .any(|r| r.resource() == Some(NETWORK_POLICIES) && !r.is_watch())
    })
    .await;
    assert!(!state.is_synced());
    let (code, body) = https.get("/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("cluster state not synced"), "{body}");

    api.release(NETWORK_POLICIES);
    eventually("the state to sync", || state.is_synced().then_some(())).await;
    let (code, body) = https.get("/readyz").await;
    assert_eq!((code, body.as_str()), (200, "ok\n"));

    // The snapshot holds the initial objects.
    let snapshot = state.snapshot();
    assert_eq!(
        snapshot.policy.namespaces.keys().cloned().collect::<Vec<_>>(),
        vec!["other".to_string(), "shop".to_string()]
    );
    assert_eq!(
        snapshot.policy.namespaces["other"].get("kubernetes.io/metadata.name"),
        Some(&"other".to_string())
    );
    let keys: Vec<(String, String)> = snapshot.policy.policies.keys().cloned().collect();
    assert_eq!(keys, vec![("shop".to_string(), "data".to_string())]);
    assert!(snapshot.terminating.is_empty());

    // Without a default-deny in the state, deleting one adds no violation.
    let review = https.validate(&delete_review("before", &default_deny)).await;
    assert!(allowed(&review), "{review}");

    // A new NetworkPolicy through the watch: now the delete removes the only default-deny.
    api.apply(NETWORK_POLICIES, default_deny.clone());
    eventually("the default-deny in the snapshot", || {
        state
            .snapshot()
            .policy
            .policies
            .contains_key(&("shop".to_string(), "default-deny-all".to_string()))
            .then_some(())
    })
    .await;
    let review = https.validate(&delete_review("after", &default_deny)).await;
    assert!(!allowed(&review), "{review}");
    assert_eq!(review["response"]["status"]["code"], 403, "{review}");

    // A bookmark moves the watch's resourceVersion and changes nothing.
    api.bookmark(NAMESPACES);
    // A namespace label change.
    api.apply(NAMESPACES, namespace("other", json!({"team": "b"})));
    eventually("the new label", || {
        (state.snapshot().policy.namespaces["other"].get("team") == Some(&"b".to_string())).then_some(())
    })
    .await;

    // The namespace starts terminating: deletes in it are admitted.
    let mut leaving = shop.clone();
    leaving["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    api.apply(NAMESPACES, leaving);
    eventually("shop terminating", || {
        state.snapshot().terminating.contains("shop").then_some(())
    })
    .await;
    let review = https.validate(&delete_review("terminating", &default_deny)).await;
    assert!(allowed(&review), "{review}");

    // A deletion lost to compaction: the policy watch gets 410 Gone, the
    // reflector lists again and its store is replaced; synced stays latched.
    let policy_lists = |reqs: &[Recorded]| {
        reqs.iter()
            .filter(|r| r.resource() == Some(NETWORK_POLICIES) && !r.is_watch())
            .count()
    };
    assert_eq!(policy_lists(&api.requests()), 1);
    api.remove_silently(NETWORK_POLICIES, "shop", "default-deny-all");
    api.expire(NETWORK_POLICIES);
    eventually("the relisted policies", || {
        let s = state.snapshot();
        (!s.policy
            .policies
            .contains_key(&("shop".to_string(), "default-deny-all".to_string()))
            && s.policy
                .policies
                .contains_key(&("shop".to_string(), "data".to_string())))
        .then_some(())
    })
    .await;
    assert_eq!(policy_lists(&api.requests()), 2);
    assert!(state.is_synced());

    // Deletions through the (new) watches.
    api.delete(NETWORK_POLICIES, "shop", "data");
    api.delete(NAMESPACES, "", "other");
    eventually("the deletions", || {
        let s = state.snapshot();
        (!s.policy
            .policies
            .contains_key(&("shop".to_string(), "data".to_string()))
            && !s.policy.namespaces.contains_key("other"))
        .then_some(())
    })
    .await;
    assert!(state.is_synced(), "synced is a latch");

    // What was watched is exactly the contract, the kube-runtime default way.
    let requests = api.requests();
    assert_eq!(api.watched(), as_set(tierguard_webhook::contract::WATCHED));
    assert_list_then_watch(&requests);
    assert!(
        requests.iter().all(|r| r.method == "GET"),
        "the webhook only reads: {requests:#?}"
    );

    running.shutdown().await;
    api.shutdown().await;
}

// ---------------------------------------------------------------- enforcer

type Call = (String, Vec<String>, Option<String>);

/// Records every program run; succeeds with empty output.
#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<Call>>,
}

impl Executor for Recorder {
    fn run(&self, program: &str, args: &[String], stdin: Option<&str>) -> Result<String, ExecError> {
        self.calls
            .lock()
            .unwrap()
            .push((program.to_string(), args.to_vec(), stdin.map(str::to_string)));
        Ok(String::new())
    }
}

impl Recorder {
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// The iptables-restore inputs from call `from` on.
    fn restores_since(&self, from: usize) -> Vec<String> {
        self.calls()
            .into_iter()
            .skip(from)
            .filter(|c| c.0 == "iptables-nft-restore")
            .filter_map(|c| c.2)
            .collect()
    }

    fn ipset_since(&self, from: usize) -> String {
        self.calls()
            .into_iter()
            .skip(from)
            .filter(|c| c.0 == "ipset")
            .filter_map(|c| c.2)
            .collect::<Vec<_>>()
            .join("")
    }
}

const NODE: &str = "node-a";

fn pod(name: &str, node: &str, ip: &str, app: &str) -> Value {
    json!({
        "metadata": {"name": name, "namespace": "shop", "labels": {"app": app}},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 8080, "name": "http"}]}],
        },
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    })
}

/// Isolates `app=target` for ingress, allowing `app=from` (if any) on TCP 8080.
fn policy(name: &str, target: &str, from: Option<&str>) -> Value {
    let ingress = match from {
        Some(from) => json!([{"from": [{"podSelector": {"matchLabels": {"app": from}}}], "ports": [{"port": 8080}]}]),
        None => json!([]),
    };
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"podSelector": {"matchLabels": {"app": target}}, "policyTypes": ["Ingress"], "ingress": ingress},
    })
}

fn policy_chain_of(name: &str) -> String {
    policy_chain_name(
        &PolicyId {
            namespace: "shop".into(),
            name: name.into(),
        },
        Direction::Ingress,
    )
}

fn pod_chain_of(name: &str) -> String {
    pod_chain_name("shop", name, Direction::Ingress)
}

struct Daemon {
    recorder: Arc<Recorder>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// `tierguard-enforcer run` minus the host: the kube watchers of `watch::updates`
/// feeding `drive`, with NODE_NAME = `node-a` and a recording executor.
fn start_daemon(api: &FakeApi) -> Daemon {
    let recorder = Arc::new(Recorder::default());
    let node = NodeIdentity {
        name: NODE.into(),
        addresses: vec![],
    };
    let options = SyncOptions {
        backend: Some(Backend::Nft),
        ..SyncOptions::default()
    };
    let syncer = Syncer::new(node, recorder.clone(), options);
    let metrics = Arc::new(Metrics::new());
    let shutdown = CancellationToken::new();
    let config = LoopConfig {
        min_sync_interval: Duration::from_millis(20),
        resync: Duration::from_secs(3600),
        backoff: Duration::from_millis(50),
        max_backoff: Duration::from_secs(1),
    };
    let updates = watch::updates(api.client());
    let (m, s) = (metrics.clone(), shutdown.clone());
    let task = tokio::spawn(async move {
        drive(updates, syncer, config, m, s).await;
    });
    Daemon {
        recorder,
        metrics,
        shutdown,
        task,
    }
}

impl Daemon {
    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap();
    }

    /// Waits for a sync after `after` syncs; returns the restore scripts since call `from`.
    async fn next_sync(&self, after: u64, from: usize) -> Vec<String> {
        eventually("a sync", || (self.metrics.syncs.get() > after).then_some(())).await;
        self.recorder.restores_since(from)
    }

    /// Waits until a restore since call `from` contains `needle`; returns it.
    async fn restore_containing(&self, from: usize, needle: &str) -> String {
        eventually(&format!("a restore containing {needle}"), || {
            self.recorder
                .restores_since(from)
                .into_iter()
                .find(|s| s.contains(needle))
        })
        .await
    }
}

#[tokio::test]
async fn enforcer_watches_lists_then_syncs_local_pods_on_watch_events() {
    let api = FakeApi::start().await;
    api.apply(NAMESPACES, namespace("shop", json!({})));
    api.apply(PODS, pod("web-1", NODE, "10.0.0.1", "web"));
    api.apply(PODS, pod("db-1", NODE, "10.0.0.2", "db"));
    api.apply(PODS, pod("api-1", "node-b", "10.0.1.1", "api"));
    api.apply(NETWORK_POLICIES, policy("web-from-db", "web", Some("db")));
    api.hold(PODS);

    let daemon = start_daemon(&api);

    // Namespaces and policies are listed (their watches are open), pods are not: no sync.
    api.wait_for_watch(NAMESPACES).await;
    api.wait_for_watch(NETWORK_POLICIES).await;
    api.wait_for_requests("the held pod list", |reqs| {
        reqs.iter().any(|r| r.resource() == Some(PODS) && !r.is_watch())
    })
    .await;
    // Ten sync intervals: the loop would have synced by now if it did not wait for pods.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(daemon.metrics.syncs.get(), 0);
    assert!(daemon.recorder.calls().is_empty(), "{:?}", daemon.recorder.calls());

    // The first sync programs the local pods only.
    api.release(PODS);
    let first = daemon.next_sync(0, 0).await;
    assert_eq!(first.len(), 1, "{first:?}");
    let first = &first[0];
    assert!(
        first.contains(&format!(":{} - [0:0]", pod_chain_of("web-1"))),
        "{first}"
    );
    assert!(
        first.contains(&format!(":{} - [0:0]", policy_chain_of("web-from-db"))),
        "{first}"
    );
    assert!(!first.contains(&pod_chain_of("db-1")), "db-1 is not isolated: {first}");
    assert!(!first.contains(&pod_chain_of("api-1")), "api-1 is on node-b: {first}");
    let sets = daemon.recorder.ipset_since(0);
    assert!(sets.contains("10.0.0.1") && sets.contains("10.0.0.2"), "{sets}");
    assert!(!sets.contains("10.0.1.1"), "{sets}");
    assert!(!first.contains("10.0.1.1"), "{first}");

    // A policy selecting a local pod, added through the watch.
    let mark = daemon.recorder.calls().len();
    api.apply(NETWORK_POLICIES, policy("allow-db", "db", Some("web")));
    let script = daemon.restore_containing(mark, &policy_chain_of("allow-db")).await;
    assert!(
        script.contains(&format!(":{} - [0:0]", pod_chain_of("db-1"))),
        "{script}"
    );
    assert!(
        script.contains(&format!("-j {}", policy_chain_of("allow-db"))),
        "{script}"
    );
    let sets = daemon.recorder.ipset_since(mark);
    assert!(sets.contains("10.0.0.1"), "web-1 is allow-db's peer: {sets}");

    // Deleting it removes its chain (and db-1's, which is no longer isolated).
    let mark = daemon.recorder.calls().len();
    api.delete(NETWORK_POLICIES, "shop", "allow-db");
    let script = daemon
        .restore_containing(mark, &format!("-X {}", policy_chain_of("allow-db")))
        .await;
    assert!(script.contains(&format!("-X {}", pod_chain_of("db-1"))), "{script}");

    // A policy selecting only the pod on another node: a sync, but no local chains.
    let mark = daemon.recorder.calls().len();
    let syncs = daemon.metrics.syncs.get();
    api.apply(NETWORK_POLICIES, policy("deny-api", "api", None));
    let scripts = daemon.next_sync(syncs, mark).await;
    for script in &scripts {
        assert!(!script.contains(&policy_chain_of("deny-api")), "{script}");
        assert!(!script.contains(&pod_chain_of("api-1")), "{script}");
    }

    // A new local pod through the pod watch (after a bookmark moved its resourceVersion).
    api.bookmark(PODS);
    let mark = daemon.recorder.calls().len();
    api.apply(PODS, pod("web-2", NODE, "10.0.0.3", "web"));
    daemon
        .restore_containing(mark, &format!(":{} - [0:0]", pod_chain_of("web-2")))
        .await;

    // Its deletion is lost to compaction: the pod watch gets 410 Gone, the
    // watcher lists again and the relist replaces every pod.
    let mark = daemon.recorder.calls().len();
    let pod_lists = |reqs: &[Recorded]| {
        reqs.iter()
            .filter(|r| r.resource() == Some(PODS) && !r.is_watch())
            .count()
    };
    assert_eq!(pod_lists(&api.requests()), 1);
    api.remove_silently(PODS, "shop", "web-2");
    api.expire(PODS);
    daemon
        .restore_containing(mark, &format!("-X {}", pod_chain_of("web-2")))
        .await;
    assert_eq!(pod_lists(&api.requests()), 2);
    // web-1 survived the relist.
    assert!(
        !daemon
            .recorder
            .restores_since(mark)
            .iter()
            .any(|s| s.contains(&format!("-X {}", pod_chain_of("web-1")))),
    );

    // The watched resources are the contract; list-then-watch with bookmarks.
    let requests = api.requests();
    assert_eq!(api.watched(), as_set(tierguard_enforcer::contract::WATCHED));
    assert_list_then_watch(&requests);
    assert_eq!(daemon.metrics.errors.get(), 0);

    daemon.stop().await;
    api.shutdown().await;
}

#[tokio::test]
async fn enforcer_buffers_a_paged_initial_list() {
    // More pods than the watcher's page (500): the list comes in two pages and
    // the first sync must still see every pod.
    let api = FakeApi::start().await;
    api.apply(NAMESPACES, namespace("shop", json!({})));
    let count = 620;
    for i in 0..count {
        let ip = format!("10.1.{}.{}", i / 200, i % 200 + 1);
        api.apply(PODS, pod(&format!("web-{i}"), NODE, &ip, "web"));
    }
    api.apply(NETWORK_POLICIES, policy("deny-web", "web", None));
    let daemon = start_daemon(&api);
    let first = daemon.next_sync(0, 0).await;
    assert_eq!(first.len(), 1);
    for i in [0, 499, 500, count - 1] {
        let chain = pod_chain_of(&format!("web-{i}"));
        assert!(first[0].contains(&format!(":{chain} - [0:0]")), "web-{i} missing");
    }
    let declared = first[0].lines().filter(|l| l.starts_with(":TG-I-")).count();
    assert_eq!(declared, count);
    let pages: Vec<Recorded> = api
        .requests()
        .into_iter()
        .filter(|r| r.resource() == Some(PODS) && !r.is_watch())
        .collect();
    assert_eq!(pages.len(), 2, "{pages:#?}");
    assert_eq!(pages[1].query.get("continue").map(String::as_str), Some("500"));
    daemon.stop().await;
    api.shutdown().await;
}

#[test]
fn fake_api_paths_cover_both_contracts() {
    // Guards the fake itself: it serves every resource either component watches.
    let served: BTreeSet<(String, String)> = [PODS, NAMESPACES, NETWORK_POLICIES]
        .iter()
        .map(|r| (r.group.to_string(), r.plural.to_string()))
        .collect();
    let mut wanted = as_set(tierguard_enforcer::contract::WATCHED);
    wanted.extend(as_set(tierguard_webhook::contract::WATCHED));
    assert!(wanted.is_subset(&served), "{wanted:?}");
}
