//! `render` prints exactly what the agent programs: the same manifests go to
//! `render` as files and to the agent as watch events (`daemon::drive`, a
//! recording executor on an empty node), and the agent's restore scripts,
//! spelled as `render` spells them, equal its output byte for byte.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::watcher::Event;
use tierguard::manifest::{Manifest, parse_manifests};
use tierguard_enforcer::daemon::metrics::Metrics;
use tierguard_enforcer::daemon::watch::{namespace_update, pod_update, policy_update};
use tierguard_enforcer::daemon::{LoopConfig, Update, drive};
use tierguard_enforcer::exec::{ExecError, Executor};
use tierguard_enforcer::load::node_addresses;
use tierguard_enforcer::render::forward_jump;
use tierguard_enforcer::sync::{Backend, NodeIdentity, SyncOptions, Syncer};
use tokio_util::sync::CancellationToken;

const NODE: &str = "node-a";
const POD_CIDR: &str = "10.0.1.0/24";
const NFLOG_GROUP: u16 = 3;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/agent-view")
}

/// A program run: program, arguments, stdin.
type Call = (String, Vec<String>, Option<String>);

/// Every program run with its stdin; an empty node (saves and lists print nothing).
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

/// What the agent applied on its first sync, family by family, as `render` prints it.
fn agent_text(calls: &[Call]) -> String {
    let comment = format!(
        "*filter\n# inserted once, outside the restore: -I FORWARD {}\n",
        forward_jump().join(" ")
    );
    let mut out = String::new();
    for (program, args, stdin) in calls {
        let Some(stdin) = stdin else { continue };
        if program == "ipset" && args == &["restore".to_string()] {
            // a first sync builds every set under its own name, spelled as
            // render spells it (a set changes under its other name only once
            // rules use it)
            out.push_str(stdin);
        } else if program.ends_with("tables-nft-restore") {
            out.push_str(&stdin.replacen("*filter\n", &comment, 1));
        }
    }
    out
}

/// The fixture's objects as the watchers deliver them on start: a complete list per kind.
fn watch_updates() -> Vec<Update> {
    let mut pods = Vec::new();
    let mut namespaces = Vec::new();
    let mut policies = Vec::new();
    let mut addresses = Vec::new();
    for entry in std::fs::read_dir(fixture()).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for manifest in parse_manifests(&text, &path.display().to_string()).unwrap() {
            match manifest {
                Manifest::Pod(p) => pods.push(*p),
                Manifest::Namespace(n) => namespaces.push(n),
                Manifest::NetworkPolicy(np) => policies.push(np),
                Manifest::Node(n) if n.metadata.name.as_deref() == Some(NODE) => addresses = node_addresses(&n),
                _ => {}
            }
        }
    }
    let mut updates = vec![Update::NodeAddresses(addresses)];
    let (mut pb, mut nb, mut qb) = (Vec::new(), Vec::new(), Vec::new());
    let mut pod_events = vec![Event::Init];
    pod_events.extend(pods.into_iter().map(Event::InitApply));
    pod_events.push(Event::InitDone);
    updates.extend(pod_events.into_iter().filter_map(|e| pod_update(e, &mut pb)));
    let mut ns_events = vec![Event::Init];
    ns_events.extend(namespaces.into_iter().map(Event::InitApply));
    ns_events.push(Event::InitDone);
    updates.extend(ns_events.into_iter().filter_map(|e| namespace_update(e, &mut nb)));
    let mut np_events = vec![Event::Init];
    np_events.extend(policies.into_iter().map(Event::InitApply));
    np_events.push(Event::InitDone);
    updates.extend(np_events.into_iter().filter_map(|e| policy_update(e, &mut qb)));
    updates
}

async fn agent_first_sync() -> String {
    let recorder = Arc::new(Recorder::default());
    let options = SyncOptions {
        backend: Some(Backend::Nft),
        nflog_group: Some(NFLOG_GROUP),
        pod_cidrs: vec![POD_CIDR.parse().unwrap()],
        ipv6: true,
        ..SyncOptions::default()
    };
    let node = NodeIdentity {
        name: NODE.into(),
        addresses: Vec::new(),
    };
    let syncer = Syncer::new(node, recorder.clone(), options);
    let shutdown = CancellationToken::new();
    let updates = futures::stream::iter(watch_updates()).chain(futures::stream::pending());
    let task = tokio::spawn(drive(
        Box::pin(updates),
        syncer,
        LoopConfig::default(),
        Arc::new(Metrics::new()),
        shutdown.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(5)).await;
    shutdown.cancel();
    task.await.unwrap();
    let calls = recorder.calls.lock().unwrap().clone();
    let restores = calls
        .iter()
        .filter(|(p, _, _)| p.ends_with("tables-nft-restore"))
        .count();
    assert_eq!(restores, 2, "one sync, IPv4 and IPv6: {calls:?}");
    agent_text(&calls)
}

fn render_cli() -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tierguard-enforcer"))
        .args(["render", "--node", NODE, "--ipv6", "on", "--pod-cidr", POD_CIDR])
        .args(["--nflog-group", &NFLOG_GROUP.to_string()])
        .arg(fixture())
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "render failed: {stderr}");
    (stdout, stderr)
}

#[tokio::test(start_paused = true)]
async fn render_prints_what_the_agent_applies() {
    let agent = agent_first_sync().await;
    let (rendered, warnings) = render_cli();
    assert_eq!(rendered, agent, "render and the agent differ");
    // What the agent leaves out, render leaves out too, and says so on stderr.
    assert!(!rendered.contains("10.0.1.9"), "the finished pod is gone");
    assert!(!rendered.contains("192.168.0.11"), "the host-network pod is in no set");
    assert!(rendered.contains("fd00:1::3"), "IPv6 rules are printed");
    let file = fixture().join("cluster.yaml").display().to_string();
    let ignored = format!("warning: {file}: Pod shop/broken: status.podIPs[0] \"10.0.1.300\" is not an IP address");
    assert!(warnings.contains(&ignored), "{warnings}");
    let dropped = format!("warning: {file}: NetworkPolicy shop/api: spec.ingress[1].from[0].ipBlock.cidr");
    assert!(warnings.contains(&dropped), "{warnings}");
}

#[test]
fn render_ipv6_off_prints_ipv4_only() {
    let out = Command::new(env!("CARGO_BIN_EXE_tierguard-enforcer"))
        .args(["render", "--node", NODE, "--ipv6", "off"])
        .arg(fixture())
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success());
    assert_eq!(stdout.matches("*filter\n").count(), 1, "{stdout}");
    assert!(!stdout.contains("fd00:"), "{stdout}");
}
