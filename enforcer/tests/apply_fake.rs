//! The apply path against a fake executor: the order of operations, what is
//! rewritten, and failed restores (no root needed).

mod support;

use std::collections::BTreeSet;
use std::sync::Mutex;

use tierguard::policy::PolicyId;
use tierguard_enforcer::apply::ApplyError;
use tierguard_enforcer::exec::{ExecError, Executor};
use tierguard_enforcer::sync::{Backend, NodeIdentity, SyncError, SyncOptions, Syncer};

/// One recorded call: program, arguments, stdin.
type Call = (String, Vec<String>, Option<String>);

/// Records every call; fails `iptables-*-restore` while `fail_restore_line` is set.
#[derive(Default)]
struct Fake {
    calls: Mutex<Vec<Call>>,
    fail_restore_line: Mutex<Option<usize>>,
    save: Mutex<String>,
}

impl Executor for Fake {
    fn run(&self, program: &str, args: &[String], stdin: Option<&str>) -> Result<String, ExecError> {
        if let Ok(mut calls) = self.calls.lock() {
            calls.push((program.to_string(), args.to_vec(), stdin.map(str::to_string)));
        }
        let fail_line = self.fail_restore_line.lock().ok().and_then(|g| *g);
        match (program, fail_line) {
            (p, Some(n)) if p.ends_with("-restore") && p.starts_with("iptables") => Err(ExecError {
                program: program.into(),
                args: args.to_vec(),
                code: Some(1),
                stderr: format!("iptables-restore v1.8.9 (nf_tables): line {n} failed\n"),
            }),
            (p, _) if p.ends_with("-save") => Ok(self.save.lock().map(|s| s.clone()).unwrap_or_default()),
            _ => Ok(String::new()),
        }
    }
}

impl Fake {
    fn take(&self) -> Vec<Call> {
        self.calls
            .lock()
            .map(|mut c| std::mem::take(&mut *c))
            .unwrap_or_default()
    }
}

fn options() -> SyncOptions {
    SyncOptions {
        backend: Some(Backend::Nft),
        ..SyncOptions::default()
    }
}

#[test]
fn sets_before_rules_then_jump_and_only_changes_afterwards() {
    let (mut cluster, node) = support::load_fixture("basic");
    let fake = Fake::default();
    let mut syncer = Syncer::new(node, &fake, options());
    let report = syncer.sync(&cluster).unwrap_or_else(|e| panic!("{e}"));
    let calls = fake.take();
    let programs: Vec<&str> = calls.iter().map(|c| c.0.as_str()).collect();
    // IPv4: adopt (save, list), sets, rules, jump check; then IPv6 (the fixture has no IPv6
    // address, so no set): adopt (save, list), rules, jump check.
    assert_eq!(
        programs,
        [
            "iptables-nft-save",
            "ipset",
            "ipset",
            "iptables-nft-restore",
            "iptables-nft",
            "ip6tables-nft-save",
            "ipset",
            "ip6tables-nft-restore",
            "ip6tables-nft"
        ],
        "{calls:?}"
    );
    // Nothing is in force yet: every set is built under its own name.
    let sets = calls[2].2.clone().unwrap_or_default();
    assert!(sets.contains("create tg-local hash:net"), "{sets}");
    assert!(!sets.contains("tg-local-b"), "{sets}");
    assert_eq!(calls[3].1, ["--noflush", "-w", "5", "-W", "100000"]);
    assert_eq!(report.v4.chains_written, 12);
    assert_eq!(report.v4.sets_written, report.v4.sets);
    let v6 = calls[7].2.clone().unwrap_or_default();
    assert_eq!((report.v6.chains_written, report.v6.sets), (3, 0), "{v6}");
    assert!(
        v6.contains("-A TG-FORWARD ") && v6.contains(":TG-INGRESS - [0:0]"),
        "{v6}"
    );

    // No change: no restore at all.
    let report = syncer.sync(&cluster).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((report.v4.chains_written, report.v4.sets_written), (0, 0));
    let programs: Vec<String> = fake.take().into_iter().map(|c| c.0).collect();
    assert_eq!(programs, ["iptables-nft", "ip6tables-nft"]);

    // A policy goes: its chains are deleted in the same restore that rewrites their users,
    // and its sets are destroyed after that restore.
    cluster.remove_policy(&PolicyId {
        namespace: "shop".into(),
        name: "frontend".into(),
    });
    let report = syncer.sync(&cluster).unwrap_or_else(|e| panic!("{e}"));
    let calls = fake.take();
    let restore = calls
        .iter()
        .position(|c| c.0 == "iptables-nft-restore")
        .unwrap_or_else(|| panic!("no restore: {calls:?}"));
    let script = calls[restore].2.clone().unwrap_or_default();
    assert_eq!(report.v4.chains_removed, 2, "{script}");
    assert_eq!(script.matches("\n-X TG-P-").count(), 2, "{script}");
    // Only the web pod's chains changed (they no longer jump to the frontend policy).
    assert_eq!(report.v4.chains_written, 2, "{script}");
    let destroys: Vec<usize> = calls
        .iter()
        .enumerate()
        .filter(|(_, c)| c.1.first().is_some_and(|a| a == "destroy"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(destroys.len(), 1, "{calls:?}");
    assert!(destroys.iter().all(|&i| i > restore));
}

/// The sets the rules of an `iptables-restore` script match.
fn sets_matched(script: &str) -> BTreeSet<String> {
    let words: Vec<&str> = script.split_whitespace().collect();
    words
        .windows(2)
        .filter(|w| w[0] == "--match-set")
        .map(|w| w[1].to_string())
        .collect()
}

#[test]
fn a_changed_set_gains_members_before_the_rules_and_after_a_failed_rule_restore_is_rebuilt_aside() {
    let (mut cluster, node) = support::load_fixture("basic");
    let fake = Fake::default();
    let mut syncer = Syncer::new(node, &fake, options());
    syncer.sync(&cluster).unwrap_or_else(|e| panic!("{e}"));
    let first = fake.take();
    let in_force = first
        .iter()
        .find(|c| c.0 == "iptables-nft-restore")
        .and_then(|c| c.2.as_deref())
        .map(sets_matched)
        .unwrap_or_default();
    assert!(in_force.contains("tg-local"), "{in_force:?}");

    // A new local pod: tg-local changes, and so do the dispatch chains.
    let mut pod = cluster
        .pods()
        .find(|p| p.name == "web")
        .cloned()
        .unwrap_or_else(|| panic!("no web pod"));
    pod.name = "web-2".into();
    pod.ips = vec!["10.0.1.9".parse().unwrap_or_else(|e| panic!("{e}"))];
    cluster.upsert_pod(pod);
    if let Ok(mut f) = fake.fail_restore_line.lock() {
        *f = Some(2);
    }
    assert!(syncer.sync(&cluster).is_err());
    let calls = fake.take();
    let set_script = calls
        .iter()
        .find(|c| c.0 == "ipset" && c.1 == ["restore"])
        .and_then(|c| c.2.clone())
        .unwrap_or_default();
    // The sets in force only gained the new address (which no old rule names), before
    // the rules: nothing was flushed, created or deleted under the old rules.
    assert!(set_script.contains("add tg-local 10.0.1.9/32 -exist"), "{set_script}");
    assert!(
        set_script.lines().all(|l| l.starts_with("add ")),
        "only additions under the old rules:\n{set_script}"
    );
    assert!(
        !calls
            .iter()
            .any(|c| c.2.as_deref().is_some_and(|s| s.starts_with("del "))),
        "no deletion after a failed rule restore: {calls:?}"
    );
    assert!(
        !calls.iter().any(|c| c.1.first().is_some_and(|a| a == "destroy")),
        "{calls:?}"
    );

    // The set's content is unknown now (the additions went in, the rules did not): the
    // retry builds it again aside and switches the rules to it in the one restore,
    // then destroys the set the old rules used.
    if let Ok(mut f) = fake.fail_restore_line.lock() {
        *f = None;
    }
    syncer.sync(&cluster).unwrap_or_else(|e| panic!("{e}"));
    let calls = fake.take();
    let restore = calls
        .iter()
        .position(|c| c.0 == "iptables-nft-restore")
        .unwrap_or_else(|| panic!("no restore: {calls:?}"));
    let rules = calls[restore].2.clone().unwrap_or_default();
    assert!(sets_matched(&rules).contains("tg-local-b"), "{rules}");
    assert!(!sets_matched(&rules).contains("tg-local"), "{rules}");
    assert!(rules.contains(":TG-FORWARD - [0:0]"), "{rules}");
    let destroyed: Vec<(usize, &str)> = calls
        .iter()
        .enumerate()
        .filter(|(_, c)| c.1.first().is_some_and(|a| a == "destroy"))
        .map(|(i, c)| (i, c.1[1].as_str()))
        .collect();
    assert!(
        destroyed.iter().any(|&(i, s)| s == "tg-local" && i > restore),
        "{calls:?}"
    );

    // The next change is made in place, where the set now is: the address leaves it
    // only once the rules that no longer have the pod are committed.
    cluster.remove_pod("shop", "web-2");
    syncer.sync(&cluster).unwrap_or_else(|e| panic!("{e}"));
    let calls = fake.take();
    let restore = calls
        .iter()
        .position(|c| c.0 == "iptables-nft-restore")
        .unwrap_or_else(|| panic!("no restore: {calls:?}"));
    let deletion = calls
        .iter()
        .position(|c| c.0 == "ipset" && c.1 == ["restore"] && c.2.as_deref().is_some_and(|s| s.starts_with("del ")))
        .unwrap_or_else(|| panic!("no deletion: {calls:?}"));
    assert!(deletion > restore, "{calls:?}");
    let deleted = calls[deletion].2.clone().unwrap_or_default();
    assert!(deleted.contains("del tg-local-b 10.0.1.9/32 -exist\n"), "{deleted}");
    assert!(
        deleted
            .lines()
            .all(|l| l.starts_with("del ") && l.contains(" 10.0.1.9")),
        "{deleted}"
    );
    assert!(
        !calls.iter().any(|c| c.1.first().is_some_and(|a| a == "destroy")),
        "nothing rebuilt: {calls:?}"
    );
}

#[test]
fn failed_restore_names_the_line_and_keeps_the_previous_state() {
    let (mut cluster, node) = support::load_fixture("basic");
    let fake = Fake::default();
    let mut syncer = Syncer::new(node, &fake, options());
    syncer.sync(&cluster).unwrap_or_else(|e| panic!("{e}"));
    fake.take();

    cluster.remove_policy(&PolicyId {
        namespace: "shop".into(),
        name: "frontend".into(),
    });
    if let Ok(mut f) = fake.fail_restore_line.lock() {
        *f = Some(3);
    }
    let err = syncer.sync(&cluster).err();
    let calls = fake.take();
    let script = calls
        .iter()
        .find(|c| c.0 == "iptables-nft-restore")
        .and_then(|c| c.2.clone())
        .unwrap_or_default();
    let third = script.lines().nth(2).unwrap_or_default().to_string();
    match &err {
        Some(SyncError::Apply(ApplyError::Restore { line, text, .. })) => {
            assert_eq!(*line, Some(3));
            assert_eq!(text.as_deref(), Some(third.as_str()));
        }
        other => panic!("{other:?}"),
    }
    let message = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("line 3") && message.contains(&third), "{message}");
    // Nothing after the failed restore ran (no jump insert, no set destroyed).
    assert_eq!(calls.last().map(|c| c.0.as_str()), Some("iptables-nft-restore"));

    // The state is the previous one: the retry rewrites the same chains.
    if let Ok(mut f) = fake.fail_restore_line.lock() {
        *f = None;
    }
    let report = syncer.sync(&cluster).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((report.v4.chains_written, report.v4.chains_removed), (2, 2));
}

#[test]
fn restart_adopts_existing_chains_and_removes_only_stale_ones() {
    let (cluster, node) = support::load_fixture("basic");
    let fake = Fake::default();
    if let Ok(mut s) = fake.save.lock() {
        *s = "*nat\n:TG-NOT-FILTER - [0:0]\nCOMMIT\n*filter\n:FORWARD ACCEPT [0:0]\n:TG-FORWARD - [0:0]\n:TG-P-000000000000-I - [0:0]\n-A FORWARD -m comment --comment tierguard -j TG-FORWARD\n-A TG-FORWARD -j ACCEPT\nCOMMIT\n".into();
    }
    let mut syncer = Syncer::new(node, &fake, options());
    let report = syncer.sync(&cluster).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.v4.chains_removed, 1);
    let calls = fake.take();
    let script = calls
        .iter()
        .find(|c| c.0 == "iptables-nft-restore")
        .and_then(|c| c.2.clone())
        .unwrap_or_default();
    assert!(script.contains(":TG-FORWARD - [0:0]") && script.contains("-X TG-P-000000000000-I"));
    assert!(!script.contains("TG-NOT-FILTER") && !script.contains("-X TG-FORWARD"));
}

#[test]
fn cleanup_removes_jumps_then_chains_then_sets() {
    let fake = Fake::default();
    if let Ok(mut s) = fake.save.lock() {
        *s = "*filter\n:FORWARD ACCEPT [0:0]\n:TG-FORWARD - [0:0]\n:TG-EGRESS - [0:0]\n-A FORWARD -m comment --comment tierguard -j TG-FORWARD\n-A TG-FORWARD -j TG-EGRESS\nCOMMIT\n".into();
    }
    let node = NodeIdentity {
        name: "n".into(),
        addresses: vec![],
    };
    let mut syncer = Syncer::new(node, &fake, options());
    syncer.cleanup().unwrap_or_else(|e| panic!("{e}"));
    let calls = fake.take();
    let script = calls
        .iter()
        .find(|c| c.0 == "iptables-nft-restore")
        .and_then(|c| c.2.clone());
    assert_eq!(
        script.as_deref(),
        Some(
            "*filter\n-D FORWARD -m comment --comment tierguard -j TG-FORWARD\n:TG-EGRESS - [0:0]\n:TG-FORWARD - [0:0]\n-X TG-EGRESS\n-X TG-FORWARD\nCOMMIT\n"
        )
    );
}
