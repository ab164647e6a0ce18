//! IPv6 enforcement in a real kernel, inside a scratch network namespace
//! `tg6-<pid>` (root, ip, iptables, ip6tables, ipset; fails when CI=true and it
//! cannot run, skips with a printed reason otherwise): a dual-stack rule set
//! applied by a `Syncer` whose executor runs in that namespace, an
//! incremental resync, adoption after a restart, cleanup; then real IPv6
//! packets between two veth'd pod namespaces (fd00:: ULA only).

mod support;

use std::process::Command;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use tierguard::policy::Policy;
use tierguard_enforcer::compile::Family;
use tierguard_enforcer::exec::{ExecError, Executor, HostExecutor};
use tierguard_enforcer::sync::{SyncOptions, Syncer};

/// Runs every program inside one network namespace.
#[derive(Clone, Debug)]
struct InNetns(String);

impl Executor for InNetns {
    fn run(&self, program: &str, args: &[String], stdin: Option<&str>) -> Result<String, ExecError> {
        let mut full = vec![
            "netns".to_string(),
            "exec".to_string(),
            self.0.clone(),
            program.to_string(),
        ];
        full.extend(args.iter().cloned());
        HostExecutor.run("ip", &full, stdin)
    }
}

/// Network namespaces created by this test, deleted on drop (even on a failed assertion).
struct Netns(Vec<String>);

impl Netns {
    fn add(&mut self, name: &str) -> InNetns {
        let ok = Command::new("ip")
            .args(["netns", "add", name])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(ok, "ip netns add {name} failed");
        self.0.push(name.to_string());
        InNetns(name.to_string())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for name in self.0.iter().rev() {
            let _ = Command::new("ip").args(["netns", "delete", name]).output();
        }
    }
}

fn missing() -> Option<String> {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        return Some("not root".into());
    }
    for (program, flag) in [
        ("ip", "-V"),
        ("iptables", "--version"),
        ("ip6tables", "--version"),
        ("ip6tables-restore", "--version"),
        ("ip6tables-save", "--version"),
        ("ipset", "--version"),
    ] {
        if !Command::new(program)
            .arg(flag)
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Some(format!("{program} is missing"));
        }
    }
    None
}

/// `None` (skip) or a panic under CI=true when the test cannot run.
fn can_run() -> bool {
    match missing() {
        None => true,
        Some(reason) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true but this root test cannot run: {reason}")
        }
        Some(reason) => {
            eprintln!("SKIPPED: {reason}");
            false
        }
    }
}

fn run(exec: &InNetns, program: &str, args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    exec.run(program, &args, None).unwrap_or_else(|e| panic!("{e}"))
}

/// `<tool>-save -t filter` without comments and counters.
fn table(exec: &InNetns, save: &str) -> String {
    run(exec, save, &["-t", "filter"])
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            if l.starts_with(':') {
                l.split(" [").next().unwrap_or(l)
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `table` with every set under the name it is rendered as (`tg-X-b` -> `tg-X`).
fn as_rendered(table: &str) -> String {
    table
        .lines()
        .map(|line| {
            line.split(' ')
                .map(|word| match word.strip_suffix("-b") {
                    Some(rendered) if word.starts_with("tg-") => rendered,
                    _ => word,
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn sets(exec: &InNetns) -> Vec<String> {
    let mut names: Vec<String> = run(exec, "ipset", &["list", "-n"])
        .lines()
        .map(str::to_string)
        .collect();
    names.sort();
    names
}

fn tg_rules(table: &str) -> usize {
    table.lines().filter(|l| l.starts_with("-A TG-")).count()
}

/// The `api` policy of the fixture with its ipBlock rule on port 9091 instead of 9090.
fn changed_api_policy() -> Policy {
    let yaml = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api, namespace: shop}
spec:
  podSelector: {matchLabels: {tier: backend}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {tier: frontend}}}]
    ports: [{port: http}]
  - from:
    - ipBlock: {cidr: 10.0.0.0/8, except: [10.0.5.0/24]}
    - ipBlock: {cidr: "fd00:0:0:9::/64", except: ["fd00:0:0:9:1::/80"]}
    ports: [{port: 9091}]
"#;
    let np: NetworkPolicy = serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("{e}"));
    Policy::from_k8s(&np).unwrap_or_else(|e| panic!("{e:?}"))
}

#[test]
fn dual_stack_apply_resync_adopt_and_cleanup() {
    if !can_run() {
        return;
    }
    let mut guard = Netns(Vec::new());
    let node_ns = guard.add(&format!("tg6-{}", std::process::id()));
    let before4 = table(&node_ns, "iptables-save");
    let before6 = table(&node_ns, "ip6tables-save");
    assert!(sets(&node_ns).is_empty());

    let (mut cluster, node) = support::load_fixture("dualstack");
    let mut syncer = Syncer::new(node.clone(), node_ns.clone(), SyncOptions::default());
    let first = syncer.sync(&cluster).unwrap_or_else(|e| panic!("first sync: {e}"));
    let v6 = table(&node_ns, "ip6tables-save");
    let v4 = table(&node_ns, "iptables-save");
    assert!(
        v6.contains("-A FORWARD -m comment --comment tierguard -j TG-FORWARD"),
        "{v6}"
    );
    assert!(
        v4.contains("-A FORWARD -m comment --comment tierguard -j TG-FORWARD"),
        "{v4}"
    );
    for chain in [":TG-FORWARD", ":TG-EGRESS", ":TG-INGRESS"] {
        assert!(v6.contains(chain), "{v6}");
    }
    assert!(v6.contains("-A TG-INGRESS -d fd00:0:0:1::3/128 -g TG-I-"), "{v6}");
    assert!(v6.contains("-A TG-EGRESS -s fd00:0:0:1::2/128 -g TG-E-"), "{v6}");
    assert!(v6.contains("-A TG-FORWARD -s fd00:0:0:ff::10/128"), "{v6}");
    assert!(v6.contains("--dport 9090"), "{v6}");
    assert!(!v6.contains("10.0.") && !v4.contains("fd00:"), "{v4}\n{v6}");
    assert_eq!(tg_rules(&v6), first.v6.rules, "{v6}");
    assert_eq!(tg_rules(&v4), first.v4.rules, "{v4}");
    let want_sets = {
        let mut all: Vec<String> = Family::BOTH
            .iter()
            .flat_map(|f| syncer.render_family(&cluster, *f).sets.into_keys())
            .collect();
        all.sort();
        all
    };
    assert_eq!(sets(&node_ns), want_sets);
    assert_eq!(first.v4.sets + first.v6.sets, want_sets.len());
    let local6 = run(&node_ns, "ipset", &["list", "tg-local6"]);
    assert!(local6.contains("family inet6"), "{local6}");
    assert!(
        local6.contains("fd00:0:0:1::2") && local6.contains("fd00:0:0:1::3"),
        "{local6}"
    );
    assert!(run(&node_ns, "ipset", &["list", "tg-local"]).contains("family inet "));

    // Nothing changed: nothing rewritten in either family.
    let again = syncer.sync(&cluster).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((again.v4.chains_written, again.v6.chains_written), (0, 0), "{again:?}");
    assert_eq!((again.v4.sets_written, again.v6.sets_written), (0, 0), "{again:?}");

    // A policy changes a port: only its policy chain is rewritten, in each family.
    cluster.upsert_policy(changed_api_policy());
    let changed = syncer.sync(&cluster).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (changed.v6.chains_written, changed.v6.chains_removed),
        (1, 0),
        "{changed:?}"
    );
    assert_eq!(
        (changed.v4.chains_written, changed.v4.chains_removed),
        (1, 0),
        "{changed:?}"
    );
    assert_eq!(changed.v6.sets_written, 0, "{changed:?}");
    let v6_after = table(&node_ns, "ip6tables-save");
    let block_rule = |t: &str| {
        t.lines()
            .find(|l| l.contains("shop/api ingress[1]"))
            .map(str::to_string)
            .unwrap_or_default()
    };
    assert!(block_rule(&v6).contains("--dport 9090"), "{v6}");
    assert!(block_rule(&v6_after).contains("--dport 9091"), "{v6_after}");
    let differing: Vec<&str> = v6_after.lines().filter(|l| !v6.lines().any(|o| o == *l)).collect();
    assert_eq!(differing.len(), 1, "{differing:?}");
    assert!(
        differing[0].starts_with("-A TG-P-") && differing[0].contains("ingress[1]"),
        "{differing:?}"
    );

    // A restarted enforcer adopts both families and converges without removing anything.
    let mut restarted = Syncer::new(node, node_ns.clone(), SyncOptions::default());
    let adopted = restarted.sync(&cluster).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (adopted.v4.chains_removed, adopted.v6.chains_removed),
        (0, 0),
        "{adopted:?}"
    );
    assert_eq!(
        (adopted.v4.sets_removed, adopted.v6.sets_removed),
        (0, 0),
        "{adopted:?}"
    );
    // Sets of unknown content are rebuilt under their other name (`tg-X` <-> `tg-X-b`).
    let v6_restarted = table(&node_ns, "ip6tables-save");
    assert!(v6_restarted.contains("--match-set tg-local6-b "), "{v6_restarted}");
    assert_eq!(as_rendered(&v6_restarted), v6_after);
    assert!(
        !sets(&node_ns).contains(&"tg-local6".to_string()),
        "{:?}",
        sets(&node_ns)
    );

    // Drift in IPv6 only: the resync repairs exactly that, the set in place.
    run(&node_ns, "ip6tables", &["-F", "TG-INGRESS"]);
    run(&node_ns, "ipset", &["flush", "tg-local6-b"]);
    let repaired = restarted.resync(&cluster).unwrap_or_else(|e| panic!("resync: {e}"));
    assert!(repaired.v4.repairs.is_empty(), "{repaired:?}");
    assert_eq!(repaired.v6.repairs.chains, ["TG-INGRESS"], "{repaired:?}");
    let local6_members = restarted
        .render_family(&cluster, Family::V6)
        .sets
        .get("tg-local6")
        .map_or(0, |s| s.entries.len());
    assert_eq!(repaired.v6.repairs.set_members.len(), local6_members, "{repaired:?}");
    assert_eq!(repaired.v6.sets_written, 0, "{repaired:?}");
    assert_eq!(as_rendered(&table(&node_ns, "ip6tables-save")), v6_after);
    assert!(run(&node_ns, "ipset", &["list", "tg-local6-b"]).contains("fd00:0:0:1::3"));

    restarted.cleanup().unwrap_or_else(|e| panic!("cleanup: {e}"));
    assert_eq!(table(&node_ns, "ip6tables-save"), before6);
    assert_eq!(table(&node_ns, "iptables-save"), before4);
    assert!(sets(&node_ns).is_empty(), "{:?}", sets(&node_ns));
}

/// Accepts (and closes) TCP connections on every port given, on `::`.
const SERVER: &str = r#"
import socket, sys, threading
def serve(port):
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", port))
    s.listen(16)
    while True:
        c, _ = s.accept()
        c.close()
ports = [int(p) for p in sys.argv[1:]]
for p in ports[1:]:
    threading.Thread(target=serve, args=(p,), daemon=True).start()
serve(ports[0])
"#;

/// Exit 0 iff a TCP connection to argv[1]:argv[2] is established.
const CLIENT: &str = r#"
import socket, sys
socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2).close()
"#;

fn host(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!("{args:?}: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => panic!("{args:?}: {e}"),
    }
}

fn connects(from: &str, to: &str, port: u16) -> bool {
    let port = port.to_string();
    Command::new("ip")
        .args(["netns", "exec", from, "python3", "-c", CLIENT, to, &port])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Servers started by this test, killed (by their own id) on drop.
struct Servers(Vec<std::process::Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn ipv6_packets_between_veth_pods_follow_the_policies() {
    if !can_run() {
        return;
    }
    let python = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !python {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true but this root test cannot run: python3 is missing");
        }
        eprintln!("SKIPPED: python3 is missing");
        return;
    }
    let pid = std::process::id();
    let (node, web, api) = (format!("tg6-{pid}-n"), format!("tg6-{pid}-w"), format!("tg6-{pid}-a"));
    let mut guard = Netns(Vec::new());
    let node_ns = guard.add(&node);
    guard.add(&web);
    guard.add(&api);
    host(&[
        "ip",
        "netns",
        "exec",
        &node,
        "sysctl",
        "-qw",
        "net.ipv6.conf.all.forwarding=1",
    ]);
    // Each pod: a veth to the node namespace, its ULA /128, a default route via the node's fe80::1.
    for (pod, dev, addr) in [(&web, "w0", "fd00:0:0:1::2"), (&api, "a0", "fd00:0:0:1::3")] {
        host(&[
            "ip", "-n", &node, "link", "add", dev, "type", "veth", "peer", "name", "eth0", "netns", pod,
        ]);
        host(&[
            "ip",
            "netns",
            "exec",
            pod,
            "sysctl",
            "-qw",
            "net.ipv6.conf.eth0.accept_dad=0",
        ]);
        host(&[
            "ip",
            "netns",
            "exec",
            &node,
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.{dev}.accept_dad=0"),
        ]);
        host(&["ip", "-n", pod, "link", "set", "lo", "up"]);
        host(&[
            "ip",
            "-n",
            pod,
            "addr",
            "add",
            &format!("{addr}/128"),
            "dev",
            "eth0",
            "nodad",
        ]);
        host(&["ip", "-n", pod, "link", "set", "eth0", "up"]);
        host(&["ip", "-n", &node, "addr", "add", "fe80::1/64", "dev", dev, "nodad"]);
        host(&["ip", "-n", &node, "link", "set", dev, "up"]);
        host(&[
            "ip", "-n", pod, "-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0",
        ]);
        host(&[
            "ip",
            "-n",
            &node,
            "-6",
            "route",
            "add",
            &format!("{addr}/128"),
            "dev",
            dev,
        ]);
    }
    let spawn = |ns: &str, ports: &[&str]| {
        let mut args = vec!["netns", "exec", ns, "python3", "-c", SERVER];
        args.extend(ports);
        Command::new("ip")
            .args(&args)
            .spawn()
            .unwrap_or_else(|e| panic!("server in {ns}: {e}"))
    };
    let _servers = Servers(vec![spawn(&api, &["9090", "9091"]), spawn(&web, &["8080"])]);
    // Before any rule: everything connects (waiting for the servers to listen).
    let ready = (0..50).any(|_| {
        let up = connects(&web, "fd00:0:0:1::3", 9091) && connects(&api, "fd00:0:0:1::2", 8080);
        if !up {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        up
    });
    assert!(ready, "the servers never answered before enforcement");

    let (cluster, identity) = support::load_fixture("dualstack");
    let mut syncer = Syncer::new(identity, node_ns.clone(), SyncOptions::default());
    syncer.sync(&cluster).unwrap_or_else(|e| panic!("sync: {e}"));
    let tables = || table(&node_ns, "ip6tables-save");
    // web -> api: web's egress allows the backend; api's ingress allows the frontend on http (9090)
    // only (its ipBlock rule is for fd00:0:0:9::/64 and 10.0.0.0/8).
    assert!(connects(&web, "fd00:0:0:1::3", 9090), "{}", tables());
    assert!(!connects(&web, "fd00:0:0:1::3", 9091), "{}", tables());
    // api -> web: api's egress and web's ingress are not isolated.
    assert!(connects(&api, "fd00:0:0:1::2", 8080), "{}", tables());

    syncer.cleanup().unwrap_or_else(|e| panic!("cleanup: {e}"));
    assert!(connects(&web, "fd00:0:0:1::3", 9091), "{}", tables());
}
