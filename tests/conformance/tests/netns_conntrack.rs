//! `--enforce-existing` on real packets: a long-lived TCP connection and a UDP
//! flow opened before a policy tightens are cut with `delete` (their conntrack
//! entries go, their next packet meets the new rules) and keep flowing with
//! `keep`; connections the new rules still allow are never cut. Root,
//! iproute2, iptables, ipset and conntrack (fails when CI=true and it cannot
//! run, skips with a printed reason otherwise).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod netns_support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use netns_support::*;
use tierguard::policy::Policy;
use tierguard_conformance::conformance::dataplane::DataPlane;
use tierguard_conformance::netns::topology::in_netns;
use tierguard_conformance::netns::{NetnsDataPlane, NetnsError, NetnsOptions};
use tierguard_enforcer::conntrack::EnforceExisting;
use tierguard_enforcer::sync::SyncOptions;

const PODS: &[(&str, &str, &str)] = &[
    ("x", "a", "10.244.1.10"),
    ("x", "b", "10.244.1.11"),
    ("y", "a", "10.244.2.10"),
];

/// y admits x/b only: x/a's connections to y/a become denied, x/b's stay allowed.
const Y_FROM_X_B: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: y-from-x-b, namespace: y}
spec:
  podSelector: {}
  policyTypes: [Ingress]
  ingress:
  - from: [{namespaceSelector: {matchLabels: {ns: x}}, podSelector: {matchLabels: {pod: b}}}]
"#;

const WAIT: Duration = Duration::from_millis(1500);

/// A TCP connection and a connected UDP socket from one pod to y/a port 80.
struct Flows {
    tcp: TcpStream,
    udp: UdpSocket,
}

impl Flows {
    fn open(plane: &NetnsDataPlane, from: &str) -> Flows {
        let netns = plane.topology().unwrap().pod(from).unwrap().netns.clone();
        let server: SocketAddr = "10.244.2.10:80".parse().unwrap();
        in_netns(&netns, move || {
            let tcp = TcpStream::connect_timeout(&server, WAIT).map_err(NetnsError::Io)?;
            let udp = UdpSocket::bind("0.0.0.0:0").map_err(NetnsError::Io)?;
            udp.connect(server).map_err(NetnsError::Io)?;
            for socket_timeout in [tcp.set_read_timeout(Some(WAIT)), udp.set_read_timeout(Some(WAIT))] {
                socket_timeout.map_err(NetnsError::Io)?;
            }
            Ok(Flows { tcp, udp })
        })
        .unwrap()
    }

    /// Whether each flow still gets its echo: (tcp, udp).
    fn echo(&mut self, round: u8) -> (bool, bool) {
        let message = [b'p', round];
        let mut buf = [0u8; 2];
        let tcp = self.tcp.write_all(&message).is_ok() && self.tcp.read_exact(&mut buf).is_ok() && buf == message;
        let mut buf = [0u8; 16];
        let udp = self.udp.send(&message).is_ok() && self.udp.recv(&mut buf).is_ok_and(|n| buf[..n] == message);
        (tcp, udp)
    }
}

/// Opens the flows, tightens the policy with one sync (no conntrack flush), and
/// returns whether x/a's and x/b's flows still echo, and the entries deleted.
fn tighten(mode: EnforceExisting) -> ((bool, bool), (bool, bool), usize) {
    let mut cluster = small_cluster(PODS);
    let options = NetnsOptions {
        sync: SyncOptions {
            enforce_existing: mode,
            ..SyncOptions::default()
        },
        ..NetnsOptions::default()
    };
    let mut plane = NetnsDataPlane::new(options).unwrap();
    plane.start(&cluster).unwrap();
    plane.apply(&cluster).unwrap();
    let mut denied = Flows::open(&plane, "x/a");
    let mut allowed = Flows::open(&plane, "x/b");
    assert_eq!(denied.echo(1), (true, true), "x/a's flows before the policy");
    assert_eq!(allowed.echo(1), (true, true), "x/b's flows before the policy");

    cluster.upsert_policy(Policy::from_k8s(&policy(Y_FROM_X_B)).unwrap());
    let reports = plane.sync(&cluster).unwrap();
    let deleted = reports.iter().map(|r| r.conntrack_deleted).sum();
    let after = (denied.echo(2), allowed.echo(2));
    // A new connection from x/a is refused either way: the rules are in force.
    let netns = plane.topology().unwrap().pod("x/a").unwrap().netns.clone();
    let fresh = in_netns(&netns, || {
        Ok(TcpStream::connect_timeout(&"10.244.2.10:80".parse().unwrap(), WAIT).is_ok())
    })
    .unwrap();
    assert!(!fresh, "{mode:?}: a new connection from x/a got through");
    plane.finish().unwrap();
    (after.0, after.1, deleted)
}

#[test]
fn delete_cuts_denied_connections_and_keep_leaves_them() {
    if !netns_available("netns_conntrack") {
        return;
    }
    let (denied, allowed, deleted) = tighten(EnforceExisting::Delete);
    assert_eq!(denied, (false, false), "delete: x/a's TCP and UDP flows are cut");
    assert_eq!(
        allowed,
        (true, true),
        "delete: x/b's flows are still allowed and never cut"
    );
    assert_eq!(deleted, 2, "delete: exactly x/a's two entries");

    let (denied, allowed, deleted) = tighten(EnforceExisting::Keep);
    assert_eq!(denied, (true, true), "keep: x/a's established flows keep flowing");
    assert_eq!(allowed, (true, true), "keep: x/b's flows keep flowing");
    assert_eq!(deleted, 0);
}
