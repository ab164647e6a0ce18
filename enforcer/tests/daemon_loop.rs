//! The watch-to-sync path without a cluster: updates through a channel,
//! virtual time (tokio's paused clock), a fake executor.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures::channel::mpsc;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::Event;
use tierguard::policy::PolicyId;
use tierguard::{NamespaceInfo, PodInfo, Policy, Selector};
use tierguard_enforcer::daemon::metrics::Metrics;
use tierguard_enforcer::daemon::watch::pod_update;
use tierguard_enforcer::daemon::{LoopConfig, Update, drive};
use tierguard_enforcer::exec::{ExecError, Executor};
use tierguard_enforcer::sync::{Backend, NodeIdentity, SyncOptions, Syncer};
use tokio::time::sleep;
use tokio_util::sync::CancellationToken;

#[derive(Default)]
struct Fake {
    restores: AtomicUsize,
    fail: AtomicBool,
    last_script: std::sync::Mutex<String>,
}

impl Executor for Fake {
    fn run(&self, program: &str, args: &[String], stdin: Option<&str>) -> Result<String, ExecError> {
        if program == "iptables-nft-restore" {
            if self.fail.load(Ordering::SeqCst) {
                return Err(ExecError {
                    program: program.into(),
                    args: args.to_vec(),
                    code: Some(2),
                    stderr: "iptables-restore: line 2 failed".into(),
                });
            }
            self.restores.fetch_add(1, Ordering::SeqCst);
            if let (Ok(mut last), Some(text)) = (self.last_script.lock(), stdin) {
                *last = text.to_string();
            }
        }
        Ok(String::new())
    }
}

fn pod(name: &str, ip: &str) -> PodInfo {
    PodInfo {
        namespace: "shop".into(),
        name: name.into(),
        labels: [("app".to_string(), name.to_string())].into_iter().collect(),
        ips: ip.parse().into_iter().collect(),
        node: Some("n1".into()),
        ports: vec![],
        host_network: false,
    }
}

fn deny(name: &str) -> Policy {
    Policy {
        id: PolicyId {
            namespace: "shop".into(),
            name: name.into(),
        },
        pod_selector: Selector::everything(),
        isolates_ingress: true,
        isolates_egress: false,
        ingress: vec![],
        egress: vec![],
    }
}

#[tokio::test(start_paused = true)]
async fn debounces_waits_for_lists_retries_and_resyncs() {
    let fake = Arc::new(Fake::default());
    let node = NodeIdentity {
        name: "n1".into(),
        addresses: vec![],
    };
    let options = SyncOptions {
        backend: Some(Backend::Nft),
        ..SyncOptions::default()
    };
    let syncer = Syncer::new(node, fake.clone(), options);
    let metrics = Arc::new(Metrics::new());
    let shutdown = CancellationToken::new();
    let (tx, rx) = mpsc::unbounded();
    let config = LoopConfig {
        debounce: Duration::from_millis(200),
        resync: Duration::from_secs(60),
        backoff: Duration::from_secs(1),
        max_backoff: Duration::from_secs(8),
    };
    let task = tokio::spawn(drive(rx, syncer, config, metrics.clone(), shutdown.clone()));
    let send = |u: Update| {
        assert!(tx.unbounded_send(u).is_ok());
    };

    // Not everything listed yet: no sync, however long we wait.
    send(Update::Pods(vec![pod("a", "10.0.0.1")]));
    send(Update::Namespaces(vec![NamespaceInfo::new("shop", Default::default())]));
    sleep(Duration::from_secs(5)).await;
    assert_eq!(fake.restores.load(Ordering::SeqCst), 0);

    send(Update::Policies(vec![deny("d")]));
    sleep(Duration::from_millis(100)).await;
    assert_eq!(
        fake.restores.load(Ordering::SeqCst),
        0,
        "synced before the quiet period"
    );
    sleep(Duration::from_millis(200)).await;
    assert_eq!(fake.restores.load(Ordering::SeqCst), 1);
    assert_eq!(metrics.syncs.get(), 1);

    // A burst of changes: one sync.
    for i in 0..5 {
        send(Update::Pod(pod(&format!("p{i}"), &format!("10.0.0.{}", 10 + i))));
        sleep(Duration::from_millis(50)).await;
    }
    sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.restores.load(Ordering::SeqCst), 2);
    let script = fake.last_script.lock().map(|s| s.clone()).unwrap_or_default();
    assert!(script.contains("-d 10.0.0.14/32"), "{script}");

    // A failed sync is retried with backoff until it works.
    fake.fail.store(true, Ordering::SeqCst);
    send(Update::PodGone {
        namespace: "shop".into(),
        name: "p0".into(),
    });
    sleep(Duration::from_millis(300)).await;
    assert_eq!(metrics.errors.get(), 1);
    sleep(Duration::from_millis(1100)).await;
    assert_eq!(metrics.errors.get(), 2);
    fake.fail.store(false, Ordering::SeqCst);
    sleep(Duration::from_millis(2100)).await;
    assert_eq!(fake.restores.load(Ordering::SeqCst), 3);
    let script = fake.last_script.lock().map(|s| s.clone()).unwrap_or_default();
    assert!(!script.contains("10.0.0.10/32"), "{script}");

    // The periodic resync rewrites every chain even though nothing changed.
    sleep(Duration::from_secs(60)).await;
    assert_eq!(fake.restores.load(Ordering::SeqCst), 4);
    let script = fake.last_script.lock().map(|s| s.clone()).unwrap_or_default();
    assert!(
        script.contains(":TG-FORWARD - [0:0]") && script.contains(":TG-INGRESS - [0:0]"),
        "{script}"
    );

    shutdown.cancel();
    assert!(task.await.is_ok());
    assert!(
        metrics.encode().contains("tierguard_enforcer_syncs_total 4"),
        "{}",
        metrics.encode()
    );
}

#[test]
fn relists_replace_and_finished_pods_are_gone() {
    let mut buffer = Vec::new();
    let running: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "a", "namespace": "x"},
        "spec": {"nodeName": "n1", "containers": []},
        "status": {"phase": "Running", "podIP": "10.0.0.1"}
    }))
    .unwrap_or_default();
    let mut done = running.clone();
    if let Some(s) = done.status.as_mut() {
        s.phase = Some("Succeeded".into());
    }
    assert_eq!(pod_update(Event::Init, &mut buffer), None);
    assert_eq!(pod_update(Event::InitApply(running.clone()), &mut buffer), None);
    assert_eq!(pod_update(Event::InitApply(done.clone()), &mut buffer), None);
    match pod_update(Event::InitDone, &mut buffer) {
        Some(Update::Pods(list)) => assert_eq!(list.len(), 1),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        pod_update(Event::Apply(running), &mut buffer),
        Some(Update::Pod(_))
    ));
    assert_eq!(
        pod_update(Event::Apply(done), &mut buffer),
        Some(Update::PodGone {
            namespace: "x".into(),
            name: "a".into()
        })
    );
}
