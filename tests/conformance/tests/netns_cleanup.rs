//! Stale chains and sets are removed when a policy goes, and `cleanup`
//! leaves the node's filter table and sets exactly as they were before the
//! enforcer ran (real iptables and ipset in a node namespace).

// Test helpers outside #[test] functions panic on failure like the tests do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod netns_support;

use std::collections::BTreeSet;

use netns_support::*;
use tierguard::PolicyId;
use tierguard_conformance::conformance::dataplane::DataPlane;
use tierguard_conformance::netns::{NetnsDataPlane, NetnsExecutor, NetnsOptions};
use tierguard_enforcer::exec::Executor;

/// `iptables-save -t filter` without comment lines and counters.
fn filter_table(exec: &NetnsExecutor) -> Vec<String> {
    let out = exec
        .run("iptables-save", &["-t".into(), "filter".into()], None)
        .unwrap();
    out.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| match (l.starts_with(':'), l.rfind(" [")) {
            (true, Some(i)) => l[..i].to_string(),
            _ => l.to_string(),
        })
        .collect()
}

fn chains(table: &[String]) -> BTreeSet<String> {
    table
        .iter()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

fn sets(exec: &NetnsExecutor) -> BTreeSet<String> {
    let out = exec.run("ipset", &["list".into(), "-n".into()], None).unwrap();
    out.lines().map(str::to_string).filter(|l| !l.is_empty()).collect()
}

fn sorted(mut lines: Vec<String>) -> Vec<String> {
    lines.sort();
    lines
}

const X_A_EGRESS_CIDR: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-egress-cidr, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: 10.244.0.0/16, except: [10.244.2.11/32]}}]
"#;

#[test]
fn stale_chains_and_sets_go_and_cleanup_restores_the_tables() {
    if !netns_available("netns_cleanup") {
        return;
    }
    let mut cluster = small_cluster(&[
        ("x", "a", "10.244.1.10"),
        ("x", "b", "10.244.1.11"),
        ("y", "a", "10.244.2.10"),
        ("y", "b", "10.244.2.11"),
    ]);
    let mut plane = NetnsDataPlane::new(NetnsOptions::default()).unwrap();
    plane.start(&cluster).unwrap();
    let exec = NetnsExecutor::new(plane.topology().unwrap().nodes()[0].netns.clone());

    // The node has rules and a set of its own, which the enforcer must not touch.
    exec.run(
        "iptables",
        &["-w", "-A", "FORWARD", "-s", "192.0.2.1/32", "-j", "ACCEPT"].map(String::from),
        None,
    )
    .unwrap();
    exec.run("iptables", &["-w", "-N", "OTHER-CHAIN"].map(String::from), None)
        .unwrap();
    exec.run("ipset", &["create", "other-set", "hash:ip"].map(String::from), None)
        .unwrap();
    let before_table = filter_table(&exec);
    let before_sets = sets(&exec);

    // State A: two policies.
    cluster.apply_network_policy(&policy(Y_FROM_X_80)).unwrap();
    cluster.apply_network_policy(&policy(X_A_EGRESS_CIDR)).unwrap();
    plane.sync(&cluster).unwrap();
    let table_a = filter_table(&exec);
    let (chains_a, sets_a) = (chains(&table_a), sets(&exec));
    assert!(chains_a.iter().any(|c| c.starts_with("TG-")), "{table_a:#?}");
    assert!(sets_a.iter().any(|s| s.starts_with("tg-")), "{sets_a:?}");

    // State B: y-from-x-80 is gone.
    cluster.remove_policy(&PolicyId {
        namespace: "y".into(),
        name: "y-from-x-80".into(),
    });
    plane.sync(&cluster).unwrap();
    let table_ab = filter_table(&exec);
    let (chains_ab, sets_ab) = (chains(&table_ab), sets(&exec));

    // What B alone gives, from a clean node.
    plane.syncer_mut("node-1").unwrap().cleanup().unwrap();
    assert_eq!(filter_table(&exec), before_table, "cleanup after A then B");
    assert_eq!(sets(&exec), before_sets);
    plane.sync(&cluster).unwrap();
    let table_b = filter_table(&exec);
    let (chains_b, sets_b) = (chains(&table_b), sets(&exec));

    let a_only_chains: BTreeSet<_> = chains_a.difference(&chains_b).collect();
    let a_only_sets: BTreeSet<_> = sets_a.difference(&sets_b).collect();
    assert!(
        !a_only_chains.is_empty(),
        "dropping y-from-x-80 drops a chain: {chains_a:?} vs {chains_b:?}"
    );
    assert!(
        !a_only_sets.is_empty(),
        "dropping y-from-x-80 drops a set: {sets_a:?} vs {sets_b:?}"
    );
    assert!(
        a_only_chains.iter().all(|c| !chains_ab.contains(*c)),
        "stale chains left after A then B: {a_only_chains:?} in {chains_ab:?}"
    );
    assert!(
        a_only_sets.iter().all(|s| !sets_ab.contains(*s)),
        "stale sets left after A then B: {a_only_sets:?} in {sets_ab:?}"
    );
    assert_eq!(chains_ab, chains_b);
    assert_eq!(sets_ab, sets_b);
    assert_eq!(
        sorted(table_ab),
        sorted(table_b),
        "A then B gives the same rules as B alone"
    );

    // cleanup: exactly the tables from before, foreign rules and sets intact.
    plane.syncer_mut("node-1").unwrap().cleanup().unwrap();
    assert_eq!(filter_table(&exec), before_table);
    assert_eq!(sets(&exec), before_sets);
    assert!(before_table.iter().any(|l| l.contains("192.0.2.1/32")));
    assert!(before_sets.contains("other-set"));
    plane.finish().unwrap();
}
