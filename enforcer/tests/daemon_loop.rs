//! The watch-to-sync path without a cluster: updates through a channel,
//! virtual time (tokio's paused clock), a fake executor.

#![allow(clippy::unwrap_used, clippy::expect_used)]

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
    every_script: std::sync::Mutex<String>,
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
            if let (Ok(mut every), Some(text)) = (self.every_script.lock(), stdin) {
                every.push_str(text);
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

fn fake_syncer() -> (Arc<Fake>, Syncer<Arc<Fake>>) {
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
    (fake, syncer)
}

const CONFIG: LoopConfig = LoopConfig {
    min_sync_interval: Duration::from_millis(100),
    resync: Duration::from_secs(60),
    backoff: Duration::from_secs(1),
    max_backoff: Duration::from_secs(8),
};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[tokio::test(start_paused = true)]
async fn syncs_at_once_coalesces_waits_for_lists_retries_and_resyncs() {
    let (fake, syncer) = fake_syncer();
    let restores = || fake.restores.load(Ordering::SeqCst);
    let last_script = || fake.last_script.lock().map(|s| s.clone()).unwrap_or_default();
    let metrics = Arc::new(Metrics::new());
    let shutdown = CancellationToken::new();
    let (tx, rx) = mpsc::unbounded();
    let task = tokio::spawn(drive(rx, syncer, CONFIG, metrics.clone(), shutdown.clone()));
    let send = |u: Update| {
        assert!(tx.unbounded_send(u).is_ok());
    };

    // Not everything listed yet: no sync, however long we wait.
    send(Update::Pods(vec![pod("a", "10.0.0.1")]));
    send(Update::Namespaces(vec![NamespaceInfo::new("shop", Default::default())]));
    sleep(Duration::from_secs(5)).await;
    assert_eq!(restores(), 0);

    // The last list completes the view: synced at once, no quiet period.
    send(Update::Policies(vec![deny("d")]));
    sleep(ms(1)).await;
    assert_eq!(restores(), 1, "not synced at once");
    assert_eq!(metrics.syncs.get(), 1);

    // After a quiet period a change is synced at once; the changes that follow
    // within the interval wait for its end and go into one sync.
    sleep(Duration::from_secs(1)).await;
    for i in 0..5 {
        send(Update::Pod(pod(&format!("p{i}"), &format!("10.0.0.{}", 10 + i))));
        sleep(ms(10)).await;
        assert_eq!(restores(), 2, "after p{i}");
    }
    assert!(last_script().contains("-d 10.0.0.10/32"), "{}", last_script());
    sleep(ms(49)).await;
    assert_eq!(restores(), 2, "synced before the interval ended");
    sleep(ms(2)).await;
    assert_eq!(restores(), 3);
    assert!(last_script().contains("-d 10.0.0.14/32"), "{}", last_script());
    // namespaces and policies lists (the pods list was pending) and p2..p4 (p1 was pending)
    assert_eq!(metrics.coalesced_events.get(), 5);

    // A failed sync is retried with backoff until it works; a change does not
    // bring the retry forward.
    sleep(Duration::from_secs(1)).await;
    fake.fail.store(true, Ordering::SeqCst);
    send(Update::PodGone {
        namespace: "shop".into(),
        name: "p0".into(),
    });
    sleep(ms(1)).await;
    assert_eq!(metrics.errors.get(), 1);
    sleep(ms(500)).await;
    send(Update::Pod(pod("late", "10.0.0.99")));
    sleep(ms(498)).await;
    assert_eq!(metrics.errors.get(), 1, "the change defeated the backoff");
    sleep(ms(2)).await;
    assert_eq!(metrics.errors.get(), 2);
    fake.fail.store(false, Ordering::SeqCst);
    sleep(ms(1998)).await;
    assert_eq!(restores(), 3);
    sleep(ms(2)).await;
    assert_eq!(restores(), 4);
    let script = last_script();
    assert!(
        !script.contains("10.0.0.10/32") && script.contains("10.0.0.99/32"),
        "{script}"
    );

    // The periodic resync rewrites every chain even though nothing changed.
    sleep(Duration::from_secs(60)).await;
    assert_eq!(restores(), 5);
    let script = last_script();
    assert!(
        script.contains(":TG-FORWARD - [0:0]") && script.contains(":TG-INGRESS - [0:0]"),
        "{script}"
    );

    shutdown.cancel();
    assert!(task.await.is_ok());
    let text = metrics.encode();
    for line in [
        "tierguard_enforcer_syncs_total 5",
        "tierguard_enforcer_sync_errors_total 2",
        "tierguard_enforcer_coalesced_events_total 6",
        // the pods list, p0..p4, p0 gone, late
        "tierguard_enforcer_event_to_applied_seconds_count{kind=\"pod\"} 8",
        "tierguard_enforcer_event_to_applied_seconds_count{kind=\"namespace\"} 1",
        // the policies list completed the view and was applied at once
        "tierguard_enforcer_event_to_applied_seconds_sum{kind=\"policy\"} 0.0",
    ] {
        assert!(text.contains(line), "no {line} in\n{text}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_steady_stream_syncs_about_every_interval_and_never_starves() {
    let (fake, syncer) = fake_syncer();
    let metrics = Arc::new(Metrics::new());
    let shutdown = CancellationToken::new();
    let (tx, rx) = mpsc::unbounded();
    let task = tokio::spawn(drive(rx, syncer, CONFIG, metrics.clone(), shutdown.clone()));
    let send = |u: Update| {
        assert!(tx.unbounded_send(u).is_ok());
    };
    send(Update::Pods(vec![]));
    send(Update::Namespaces(vec![NamespaceInfo::new("shop", Default::default())]));
    send(Update::Policies(vec![deny("d")]));
    sleep(Duration::from_secs(1)).await;
    assert_eq!(metrics.syncs.get(), 1);

    // One change every 10 ms for 2 s: every change sent more than one interval
    // ago is in force (the fake applies instantly: a sync takes no virtual time).
    let mut sent = Vec::new();
    for i in 0..200u32 {
        let ip = format!("10.1.0.{}", i + 1);
        send(Update::Pod(pod(&format!("s{i}"), &ip)));
        sent.push(ip);
        sleep(ms(10)).await;
        // Sent 100 ms ago or more; earlier ones were checked before (rules stay).
        if let Some(ip) = sent.len().checked_sub(11).map(|k| &sent[k]) {
            let written = fake.every_script.lock().unwrap();
            assert!(
                written.contains(&format!("-d {ip}/32")),
                "after change {i}: {ip} not in force"
            );
        }
    }
    sleep(ms(100)).await;
    let syncs = metrics.syncs.get() - 1;
    assert!((20..=21).contains(&syncs), "{syncs} syncs for 2 s of changes");
    let written = fake.every_script.lock().unwrap().clone();
    assert!(sent.iter().all(|ip| written.contains(&format!("-d {ip}/32"))));
    let text = metrics.encode();
    let within_interval = "tierguard_enforcer_event_to_applied_seconds_bucket{le=\"0.1\",kind=\"pod\"} 201";
    assert!(text.contains(within_interval), "no {within_interval} in\n{text}");
    shutdown.cancel();
    assert!(task.await.is_ok());
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
