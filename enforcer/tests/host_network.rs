//! Host-network pods in the compiled rule set: never local (never isolated),
//! never in a selector peer's set, never a named port's destination.

use std::net::IpAddr;
use std::path::PathBuf;

use tierguard_enforcer::compile::{NodeView, RuleSet, SetEntry, compile};
use tierguard_enforcer::load::load;

fn compiled(node: &str) -> RuleSet {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hostnetwork");
    let (cluster, addresses) = load(&[dir], node).unwrap_or_else(|e| panic!("{e}"));
    let view = NodeView {
        name: node.into(),
        addresses,
        pod_cidrs: Vec::new(),
    };
    compile(&cluster, &view)
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
}

#[test]
fn a_host_network_pod_is_in_no_peer_set() {
    let rules = compiled("node-b");
    let exporter = SetEntry::Ip(ip("192.168.0.10"));
    let prometheus = SetEntry::Ip(ip("10.0.1.5"));
    assert!(!rules.sets.is_empty());
    for (name, set) in &rules.sets {
        assert!(
            !set.entries.contains(&exporter),
            "{name} ({}) holds node-a's address",
            set.about
        );
    }
    // The selector peer still holds the ordinary pod of mon, and the named port
    // resolves on it only (9090), not on the exporter (9100).
    let mut peers: Vec<&str> = rules
        .sets
        .values()
        .filter(|s| s.entries.contains(&prometheus))
        .map(|s| s.about.as_str())
        .collect();
    peers.sort_unstable();
    assert_eq!(
        peers,
        [
            "app/from-mon Egress[0] ports[0] TCP/metrics=9090 pods",
            "app/from-mon Ingress[0] pods"
        ],
        "{:?}",
        rules.sets
    );
}

#[test]
fn a_host_network_pod_is_never_local() {
    let rules = compiled("node-b");
    let local: Vec<String> = rules
        .local_pods
        .iter()
        .map(|p| format!("{}/{}", p.namespace, p.name))
        .collect();
    assert_eq!(local, ["app/web"]);
    assert!(compiled("node-a").local_pods.iter().all(|p| p.name != "exporter"));
}
