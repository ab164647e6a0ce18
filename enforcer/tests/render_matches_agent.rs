//! `render` prints exactly what the agent programs: the same manifests go to
//! `render` as files and to the agent as watch events (`daemon::drive`, a
//! recording executor on an empty node), and the agent's restore scripts,
//! spelled as `render` spells them, equal its output byte for byte.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::watcher::Event;
use tierguard::input::read_manifests;
use tierguard::manifest::Manifest;
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
    for file in read_manifests(&[fixture()]).unwrap() {
        for manifest in file.manifests {
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

fn render_cli(path: &Path) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tierguard-enforcer"))
        .args(["render", "--node", NODE, "--ipv6", "on", "--pod-cidr", POD_CIDR])
        .args(["--nflog-group", &NFLOG_GROUP.to_string()])
        .arg(path)
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
    let (rendered, warnings) = render_cli(&fixture());
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

/// A folder mounted from a ConfigMap holds each key as a link into `..data`,
/// itself a link to a timestamped folder, and during an update the previous
/// folder too, with the keys the ConfigMap no longer has. `render` reads the
/// keys once (hidden entries are skipped, as the webhook skips them): before,
/// it also read `..data/` and both timestamped folders, printing every
/// warning three times and enforcing a policy removed from the ConfigMap.
#[cfg(unix)]
#[test]
fn render_reads_a_configmap_volume_as_its_keys() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let cluster = std::fs::read_to_string(fixture().join("cluster.yaml")).unwrap();
    let removed = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
        metadata: {name: removed-allow-all, namespace: shop}\n\
        spec: {podSelector: {}, ingress: [{}]}\n";
    let (old, new) = ("..2024_01_01_00_00_00.1", "..2024_01_02_00_00_00.2");
    std::fs::create_dir(root.join(old)).unwrap();
    std::fs::create_dir(root.join(new)).unwrap();
    std::fs::write(root.join(old).join("cluster.yaml"), &cluster).unwrap();
    std::fs::write(root.join(old).join("removed.yaml"), removed).unwrap();
    std::fs::write(root.join(new).join("cluster.yaml"), &cluster).unwrap();
    symlink(new, root.join("..data")).unwrap();
    symlink("..data/cluster.yaml", root.join("cluster.yaml")).unwrap();

    let (want, want_warnings) = render_cli(&fixture());
    let (got, got_warnings) = render_cli(root);
    assert!(
        !got.contains("removed-allow-all"),
        "a key no longer in the ConfigMap is enforced"
    );
    assert_eq!(got, want, "render of the volume and of its keys differ");
    let fixture_file = fixture().join("cluster.yaml").display().to_string();
    let volume_file = root.join("cluster.yaml").display().to_string();
    assert_eq!(got_warnings, want_warnings.replace(&fixture_file, &volume_file));
}
