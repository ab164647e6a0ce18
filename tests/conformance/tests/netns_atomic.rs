//! The sync is atomic: while probes run continuously between pods, 100
//! re-syncs alternate between two policy sets; no probe ever shows what
//! neither set allows (a pair both deny never connects, a pair both allow
//! never fails), with real packets through the node's iptables.

// Test helpers outside #[test] functions panic on failure like the tests do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod netns_support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use netns_support::*;
use tierguard::policy::Protocol;
use tierguard::{Cluster, PolicyId};
use tierguard_conformance::conformance::dataplane::{DataPlane, Outcome, Probe};
use tierguard_conformance::netns::{NetnsDataPlane, NetnsOptions, ProbeOptions};

const Y_DENY_ALL: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: y-deny-all, namespace: y}
spec:
  podSelector: {}
  policyTypes: [Ingress]
"#;

const X_A_FROM_X: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-from-x, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {}}]
"#;

const SYNCS: usize = 100;

#[test]
fn probes_during_100_resyncs_only_see_what_the_old_or_the_new_rules_allow() {
    if !netns_available("netns_atomic") {
        return;
    }
    let base = small_cluster(&[
        ("x", "a", "10.244.1.10"),
        ("x", "b", "10.244.1.11"),
        ("y", "a", "10.244.2.10"),
        ("y", "b", "10.244.2.11"),
    ]);
    let mut state_a = base.clone();
    state_a.apply_network_policy(&policy(Y_DENY_ALL)).unwrap();
    state_a.apply_network_policy(&policy(X_A_FROM_X)).unwrap();
    let mut state_b = base.clone();
    state_b.apply_network_policy(&policy(Y_FROM_X_80)).unwrap();
    state_b.apply_network_policy(&policy(X_A_FROM_X)).unwrap();
    assert!(
        state_b
            .policy(&PolicyId {
                namespace: "y".into(),
                name: "y-deny-all".into()
            })
            .is_none()
    );

    let probes = all_pairs(&base, &[(Protocol::Tcp, 80), (Protocol::Udp, 80)]);
    let verdicts: Vec<(bool, bool)> = probes
        .iter()
        .map(|p| (model_allows(&state_a, p), model_allows(&state_b, p)))
        .collect();
    // The sets must disagree somewhere and agree both ways somewhere, or the test proves nothing.
    assert!(verdicts.iter().any(|&(a, b)| a && b));
    assert!(verdicts.iter().any(|&(a, b)| !a && !b));
    assert!(verdicts.iter().any(|&(a, b)| a != b));

    let options = NetnsOptions {
        probe: ProbeOptions {
            // Below TCP's 1 s initial retransmission: a dropped SYN is a failure, not a late success.
            connect_timeout: Duration::from_millis(900),
            // One datagram, never resent: a drop is a failure; the long wait only absorbs scheduling.
            udp_timeout: Duration::from_secs(2),
            udp_attempts: 1,
            ..ProbeOptions::default()
        },
        ..NetnsOptions::default()
    };
    let mut plane = NetnsDataPlane::new(options).unwrap();
    plane.start(&base).unwrap();
    plane.ensure_servers(&probes).unwrap();
    plane.apply(&state_a).unwrap();
    // At rest in A, every probe shows A (so the sets really differ on the wire).
    at_rest(&mut plane, &state_a, &probes);

    let prober = plane.prober().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Vec<(usize, Outcome)>>> = Arc::default();
    let mut loops = Vec::new();
    for (i, probe) in probes.iter().enumerate() {
        let (prober, stop, seen, probe) = (prober.clone(), stop.clone(), seen.clone(), probe.clone());
        loops.push(std::thread::spawn(move || {
            let mut seed = i as u64 + 1;
            // At least once, then until the syncs are done.
            loop {
                let outcome = prober.run(std::slice::from_ref(&probe)).unwrap()[0];
                seen.lock().unwrap().push((i, outcome));
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                // Jitter, so probe starts do not lock in phase with the syncs.
                std::thread::sleep(Duration::from_millis(jitter(&mut seed, 25)));
            }
        }));
    }

    let states: [&Cluster; 2] = [&state_a, &state_b];
    let mut seed = 0x5eed;
    for n in 1..=SYNCS {
        plane.sync(states[n % 2]).unwrap();
        std::thread::sleep(Duration::from_millis(5 + jitter(&mut seed, 30)));
    }
    stop.store(true, Ordering::Relaxed);
    for handle in loops {
        handle.join().unwrap();
    }

    let seen = seen.lock().unwrap();
    let mut violations = Vec::new();
    let (mut differing_reachable, mut differing_blocked) = (0, 0);
    for &(i, outcome) in seen.iter() {
        let (a, b) = verdicts[i];
        let reachable = outcome == Outcome::Reachable;
        if a == b && reachable != a {
            violations.push(format!("{:?}: {outcome:?}, both sets say allowed={a}", probes[i]));
        }
        if a != b {
            if reachable {
                differing_reachable += 1;
            } else {
                differing_blocked += 1;
            }
        }
    }
    eprintln!(
        "{} probes during {SYNCS} syncs; on pairs the sets disagree on: {differing_reachable} reachable, {differing_blocked} blocked",
        seen.len()
    );
    assert!(
        violations.is_empty(),
        "{} violations:\n{}",
        violations.len(),
        violations.join("\n")
    );
    for (i, probe) in probes.iter().enumerate() {
        assert!(seen.iter().any(|&(j, _)| j == i), "{probe:?} never ran");
    }

    // At rest, after the last sync (B, since SYNCS is even), every probe shows B.
    plane.apply(&state_b).unwrap();
    at_rest(&mut plane, &state_b, &probes);
    plane.finish().unwrap();
}

/// Every probe shows exactly what `state` allows.
fn at_rest(plane: &mut NetnsDataPlane, state: &Cluster, probes: &[Probe]) {
    let outcomes = plane.probe(state, probes).unwrap();
    for (probe, outcome) in probes.iter().zip(&outcomes) {
        let expected = if model_allows(state, probe) {
            Outcome::Reachable
        } else {
            Outcome::Blocked
        };
        assert_eq!(*outcome, expected, "at rest: {probe:?}");
    }
}

/// A pseudo-random number in 0..max (xorshift).
fn jitter(seed: &mut u64, max: u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed % max
}
