//! The repairing resync against a real kernel, inside a scratch network
//! namespace (root, iptables and ipset; fails when CI=true and it cannot run,
//! skips with a printed reason otherwise): drift is found by reading the
//! kernel, exactly what drifted is rewritten and counted, and a resync with
//! nothing drifted writes nothing.

mod support;

use support::Scratch;
use tierguard_enforcer::daemon::metrics::Metrics;
use tierguard_enforcer::sync::{Backend, SyncOptions, Syncer};

/// `ipset save` of the enforcer's sets, sorted (comparable across time).
fn set_members(scratch: &Scratch) -> Vec<String> {
    let mut lines: Vec<String> = scratch
        .run("ipset", &["save"])
        .lines()
        .filter(|l| l.starts_with("add tg-"))
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

/// `iptables-save -t filter` of `backend` without counters and comments.
fn filter_table(scratch: &Scratch, backend: Backend) -> String {
    scratch
        .run(&backend.program("-save"), &["-t", "filter"])
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

#[test]
fn a_resync_repairs_exactly_what_drifted_and_then_nothing_nft() {
    repairs_exactly_what_drifted(Backend::Nft);
}

/// The legacy backend prints rules its own way too: no false drift there either.
#[test]
fn a_resync_repairs_exactly_what_drifted_and_then_nothing_legacy() {
    repairs_exactly_what_drifted(Backend::Legacy);
}

fn repairs_exactly_what_drifted(backend: Backend) {
    let Some(scratch) = Scratch::new() else { return };
    let (cluster, node) = support::load_fixture("basic");
    let options = SyncOptions {
        backend: Some(backend),
        ..SyncOptions::default()
    };
    let mut syncer = Syncer::new(node, scratch.exec.clone(), options);
    if let Err(e) = syncer.sync(&cluster) {
        panic!("first sync: {e}");
    }
    let iptables = backend.program("");
    let table = filter_table(&scratch, backend);
    let members = set_members(&scratch);

    // Nothing drifted yet: the resync reads the node and writes nothing.
    let clean = syncer.resync(&cluster).unwrap_or_else(|e| panic!("resync: {e}"));
    assert!(clean.v4.repairs.is_empty() && clean.v6.repairs.is_empty(), "{clean:?}");
    assert_eq!((clean.v4.script_bytes, clean.v6.script_bytes), (0, 0), "{clean:?}");

    // Drift: one chain flushed, one set member deleted, one stray rule in another chain.
    scratch.run(&iptables, &["-F", "TG-FORWARD"]);
    let member = members
        .iter()
        .find(|l| l.starts_with("add tg-local "))
        .unwrap_or_else(|| panic!("no tg-local member: {members:?}"));
    let words: Vec<&str> = member.split_whitespace().collect();
    scratch.run("ipset", &["del", words[1], words[2]]);
    scratch.run(
        &iptables,
        &["-I", "TG-INGRESS", "1", "-s", "10.99.0.1/32", "-j", "ACCEPT"],
    );
    assert_ne!(filter_table(&scratch, backend), table);

    let repaired = syncer.resync(&cluster).unwrap_or_else(|e| panic!("resync: {e}"));
    let metrics = Metrics::new();
    metrics.observe_repairs(&repaired.v4.repairs);
    metrics.observe_repairs(&repaired.v6.repairs);
    assert_eq!(repaired.v4.repairs.chains, ["TG-FORWARD", "TG-INGRESS"], "{repaired:?}");
    assert_eq!(repaired.v4.repairs.set_members.len(), 1, "{repaired:?}");
    assert!(
        repaired.v4.repairs.set_members[0].starts_with(&format!("{} +", words[1])),
        "{repaired:?}"
    );
    assert!(
        repaired.v4.repairs.sets.is_empty() && !repaired.v4.repairs.jump,
        "{repaired:?}"
    );
    assert!(repaired.v6.repairs.is_empty(), "{repaired:?}");
    let text = metrics.encode();
    assert!(
        text.contains("tierguard_enforcer_resync_repairs_total{kind=\"chain\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("tierguard_enforcer_resync_repairs_total{kind=\"set_member\"} 1"),
        "{text}"
    );
    assert!(
        !text.contains("kind=\"set\"}") && !text.contains("kind=\"jump\"}"),
        "{text}"
    );
    // Only the two chains and the one member were written; nothing was rebuilt.
    assert_eq!(
        (repaired.v4.chains_written, repaired.v4.sets_written),
        (2, 0),
        "{repaired:?}"
    );
    assert_eq!(filter_table(&scratch, backend), table);
    assert_eq!(set_members(&scratch), members);

    // Repaired: the next resync finds nothing.
    let again = syncer.resync(&cluster).unwrap_or_else(|e| panic!("resync: {e}"));
    assert!(again.v4.repairs.is_empty() && again.v6.repairs.is_empty(), "{again:?}");
    assert_eq!((again.v4.script_bytes, again.v6.script_bytes), (0, 0), "{again:?}");

    // The FORWARD jump deleted: repaired as such.
    scratch.run(
        &iptables,
        &[
            "-D",
            "FORWARD",
            "-m",
            "comment",
            "--comment",
            "tierguard",
            "-j",
            "TG-FORWARD",
        ],
    );
    let jump = syncer.resync(&cluster).unwrap_or_else(|e| panic!("resync: {e}"));
    assert!(jump.v4.repairs.jump, "{jump:?}");
    assert!(
        jump.v4.repairs.chains.is_empty() && jump.v4.repairs.set_members.is_empty(),
        "{jump:?}"
    );
    assert_eq!(filter_table(&scratch, backend), table);

    if let Err(e) = syncer.cleanup() {
        panic!("cleanup: {e}");
    }
}
