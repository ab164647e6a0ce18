//! The netns data plane without policies, then with the real syncer: the
//! topology routes every pair, probes tell reachable from blocked, and
//! nothing is left behind.

// Test helpers outside #[test] functions panic on failure like the tests do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod netns_support;

use netns_support::*;
use tierguard::policy::Protocol;
use tierguard_conformance::conformance::dataplane::{DataPlane, Outcome, Probe};
use tierguard_conformance::netns::{NetnsDataPlane, NetnsOptions, topology};

const PODS: &[(&str, &str, &str)] = &[
    ("x", "a", "10.244.1.10"),
    ("x", "b", "10.244.1.11"),
    ("y", "a", "10.244.2.10"),
];

/// `PODS` and y/b, for the policy tests.
const FOUR_PODS: &[(&str, &str, &str)] = &[
    ("x", "a", "10.244.1.10"),
    ("x", "b", "10.244.1.11"),
    ("y", "a", "10.244.2.10"),
    ("y", "b", "10.244.2.11"),
];

#[test]
fn every_pair_reaches_every_other_without_policies_and_unserved_ports_are_blocked() {
    if !netns_available("netns_topology") {
        return;
    }
    let cluster = small_cluster(PODS);
    let mut plane = NetnsDataPlane::new(NetnsOptions::default()).unwrap();
    plane.start(&cluster).unwrap();
    let created: Vec<String> = {
        let topo = plane.topology().unwrap();
        topo.nodes()
            .iter()
            .map(|n| n.netns.clone())
            .chain(topo.pods().map(|p| p.netns.clone()))
            .collect()
    };
    assert_eq!(created.len(), 4, "one node and three pods: {created:?}");
    for ns in &created {
        assert!(topology::netns_path(ns).exists(), "{ns} exists while running");
    }

    let probes = all_pairs(
        &cluster,
        &[(Protocol::Tcp, 80), (Protocol::Udp, 81), (Protocol::Sctp, 80)],
    );
    let outcomes = plane.probe(&cluster, &probes).unwrap();
    for (probe, outcome) in probes.iter().zip(&outcomes) {
        let expected = if probe.protocol == Protocol::Sctp && !plane.sctp_supported() {
            Outcome::Skipped
        } else {
            Outcome::Reachable
        };
        assert_eq!(*outcome, expected, "{probe:?}");
    }

    // Nothing listens on 9 (the prober alone does not start servers): refused / no echo.
    let prober = plane.prober().unwrap();
    let unserved: Vec<Probe> = all_pairs(&cluster, &[(Protocol::Tcp, 9), (Protocol::Udp, 9)]);
    let outcomes = prober.run(&unserved).unwrap();
    assert!(outcomes.iter().all(|o| *o == Outcome::Blocked), "{outcomes:?}");

    // A probe on a port the pods do not list starts a server there first.
    let extra = vec![Probe {
        from: "x/a".into(),
        to: "y/a".into(),
        protocol: Protocol::Tcp,
        port: 8080,
    }];
    assert_eq!(plane.probe(&cluster, &extra).unwrap(), vec![Outcome::Reachable]);

    // finish() fails here while the syncer has nothing to clean up only if cleanup errors;
    // the namespaces must be gone either way.
    let _ = plane.finish();
    for ns in &created {
        assert!(!topology::netns_path(ns).exists(), "{ns} removed by finish");
    }
}

#[test]
fn dropping_the_data_plane_removes_its_namespaces() {
    if !netns_available("netns_topology") {
        return;
    }
    let cluster = small_cluster(PODS);
    let mut plane = NetnsDataPlane::new(NetnsOptions::default()).unwrap();
    plane.start(&cluster).unwrap();
    let created: Vec<String> = plane.topology().unwrap().pods().map(|p| p.netns.clone()).collect();
    assert!(!created.is_empty());
    drop(plane);
    for ns in &created {
        assert!(!topology::netns_path(ns).exists(), "{ns} removed on drop");
    }
}

#[test]
fn namespaces_of_dead_processes_are_swept() {
    if !netns_available("netns_topology") {
        return;
    }
    // A pid that just exited.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    let stale = format!("tg-{pid}-zz");
    std::process::Command::new("ip")
        .args(["netns", "add", &stale])
        .status()
        .unwrap();
    assert!(topology::netns_path(&stale).exists());
    let removed = topology::sweep_stale();
    assert!(removed.contains(&stale), "{removed:?}");
    assert!(!topology::netns_path(&stale).exists());
    // Our own namespaces are never swept.
    let mine = format!("tg-{}-zz", std::process::id());
    std::process::Command::new("ip")
        .args(["netns", "add", &mine])
        .status()
        .unwrap();
    topology::sweep_stale();
    assert!(topology::netns_path(&mine).exists());
    std::process::Command::new("ip")
        .args(["netns", "delete", &mine])
        .status()
        .unwrap();
}

/// Applies `policies` through the data plane and checks every pair against the engine.
fn check_against_model(plane: &mut NetnsDataPlane, cluster: &tierguard::Cluster) -> usize {
    plane.apply(cluster).unwrap();
    let probes = all_pairs(
        cluster,
        &[(Protocol::Tcp, 80), (Protocol::Udp, 80), (Protocol::Tcp, 81)],
    );
    let outcomes = plane.probe(cluster, &probes).unwrap();
    let mut denied = 0;
    let mismatch = probes
        .iter()
        .zip(&outcomes)
        .any(|(p, o)| (*o == Outcome::Reachable) != model_allows(cluster, p));
    if mismatch {
        for node in plane.topology().unwrap().nodes() {
            eprintln!("{}", node_tables(&node.netns));
        }
    }
    for (probe, outcome) in probes.iter().zip(&outcomes) {
        let allowed = model_allows(cluster, probe);
        denied += usize::from(!allowed);
        let expected = if allowed { Outcome::Reachable } else { Outcome::Blocked };
        assert_eq!(*outcome, expected, "{probe:?}");
    }
    denied
}

const X_B_NO_EGRESS: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-no-egress, namespace: x}
spec:
  podSelector: {matchLabels: {pod: b}}
  policyTypes: [Egress]
"#;

#[test]
fn the_syncers_rules_match_the_model_step_by_step_on_one_node() {
    if !netns_available("netns_topology") {
        return;
    }
    let mut cluster = small_cluster(FOUR_PODS);
    let mut plane = NetnsDataPlane::new(NetnsOptions::default()).unwrap();
    plane.start(&cluster).unwrap();
    assert_eq!(check_against_model(&mut plane, &cluster), 0);
    cluster.apply_network_policy(&policy(Y_FROM_X_80)).unwrap();
    assert!(check_against_model(&mut plane, &cluster) > 0);
    cluster.apply_network_policy(&policy(X_B_NO_EGRESS)).unwrap();
    assert!(check_against_model(&mut plane, &cluster) > 0);
    cluster.remove_policy(&tierguard::PolicyId {
        namespace: "y".into(),
        name: "y-from-x-80".into(),
    });
    assert!(check_against_model(&mut plane, &cluster) > 0);
    plane.finish().unwrap();
}

#[test]
fn pods_on_two_nodes_are_enforced_by_each_nodes_rules() {
    if !netns_available("netns_topology") {
        return;
    }
    let mut cluster = small_cluster(FOUR_PODS);
    for (ns, name) in [("x", "b"), ("y", "b")] {
        cluster.pod_mut(ns, name).unwrap().node = Some("node-2".into());
    }
    let nodes = vec![
        topology::NodeSpec {
            name: "node-1".into(),
            ip: "10.244.0.1".parse().unwrap(),
            ipv6: None,
        },
        topology::NodeSpec {
            name: "node-2".into(),
            ip: "10.244.0.2".parse().unwrap(),
            ipv6: None,
        },
    ];
    let mut plane = NetnsDataPlane::new(NetnsOptions {
        nodes,
        ..NetnsOptions::default()
    })
    .unwrap();
    plane.start(&cluster).unwrap();
    assert_eq!(plane.topology().unwrap().nodes().len(), 2);
    assert_eq!(check_against_model(&mut plane, &cluster), 0);
    cluster.apply_network_policy(&policy(Y_FROM_X_80)).unwrap();
    cluster.apply_network_policy(&policy(X_B_NO_EGRESS)).unwrap();
    assert!(check_against_model(&mut plane, &cluster) > 0);
    plane.finish().unwrap();
}
