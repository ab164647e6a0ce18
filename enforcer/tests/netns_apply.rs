//! Applying to a real kernel, inside a scratch network namespace (root,
//! iptables and ipset; fails when CI=true and it cannot run, skips with a
//! printed reason otherwise).

mod support;

use support::Scratch;
use tierguard::policy::PolicyId;
use tierguard_enforcer::naming;
use tierguard_enforcer::sync::{SyncOptions, Syncer};

fn tg_lines(table: &str) -> usize {
    table.lines().filter(|l| l.starts_with("-A TG-")).count()
}

/// `table` with every set under the name it is rendered as (`tg-X-b` -> `tg-X`).
fn as_rendered(table: &str) -> String {
    table
        .lines()
        .map(|line| {
            line.split(' ')
                .map(|word| {
                    if word.starts_with("tg-") {
                        naming::rendered_set_name(word)
                    } else {
                        word
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn applies_incrementally_removes_stale_state_and_cleans_up() {
    let Some(scratch) = Scratch::new() else { return };
    let before = scratch.filter_table();
    let (mut cluster, node) = support::load_fixture("basic");
    let mut syncer = Syncer::new(node.clone(), scratch.exec.clone(), SyncOptions::default());
    let first = match syncer.sync(&cluster) {
        Ok(r) => r,
        Err(e) => panic!("first sync: {e}"),
    };
    let table = scratch.filter_table();
    assert_eq!(tg_lines(&table), first.v4.rules, "{table}");
    assert!(
        table.contains("-A FORWARD -m comment --comment tierguard -j TG-FORWARD"),
        "{table}"
    );
    assert_eq!(scratch.sets().len(), first.v4.sets);
    assert_eq!(first.v4.chains_written, 12);

    // Nothing changed: nothing rewritten.
    let again = syncer.sync(&cluster).unwrap_or_default();
    assert_eq!(
        (again.v4.chains_written, again.v4.sets_written, again.v4.chains_removed),
        (0, 0, 0)
    );
    assert_eq!(scratch.filter_table(), table);

    // One policy goes: its chains and sets go, the pod chains that used it are rewritten.
    let removed = cluster.remove_policy(&PolicyId {
        namespace: "shop".into(),
        name: "backend".into(),
    });
    assert!(removed.is_some());
    let after = match syncer.sync(&cluster) {
        Ok(r) => r,
        Err(e) => panic!("sync after delete: {e}"),
    };
    assert_eq!(after.v4.chains_removed, 2, "{after:?}");
    assert_eq!(after.v4.chains_written, 2, "{after:?}");
    assert_eq!(after.v4.sets_removed, 4, "{after:?}");
    let table = scratch.filter_table();
    assert!(!table.contains("shop/backend"), "{table}");
    assert_eq!(tg_lines(&table), after.v4.rules);
    assert_eq!(scratch.sets().len(), after.v4.sets);

    // A restarted enforcer adopts what is there and converges without removing the jump.
    let mut restarted = Syncer::new(node, scratch.exec.clone(), SyncOptions::default());
    let adopted = restarted.sync(&cluster).unwrap_or_default();
    assert_eq!(adopted.v4.chains_removed, 0);
    // Sets of unknown content are rebuilt under their other name (`tg-X` <-> `tg-X-b`).
    let restarted_table = scratch.filter_table();
    assert!(restarted_table.contains("--match-set tg-local-b "), "{restarted_table}");
    assert_eq!(as_rendered(&restarted_table), table);

    // Drift: someone flushes a chain and deletes the jump; a full resync repairs it.
    scratch.run("iptables", &["-F", "TG-FORWARD"]);
    scratch.run(
        "iptables",
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
    if let Err(e) = restarted.resync(&cluster) {
        panic!("resync: {e}");
    }
    assert_eq!(as_rendered(&scratch.filter_table()), table);

    if let Err(e) = restarted.cleanup() {
        panic!("cleanup: {e}");
    }
    assert_eq!(scratch.filter_table(), before);
    assert!(scratch.sets().is_empty(), "{:?}", scratch.sets());
}
