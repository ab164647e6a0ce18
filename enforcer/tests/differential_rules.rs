//! Differential test of the enforcer against the model: random small clusters
//! and NetworkPolicies; for every pod pair, protocol and port, the engine's
//! verdict (`Cluster::allowed`), an independent oracle of Kubernetes' semantics
//! (`differential_support::genspec::oracle`) and a netfilter interpreter walking
//! the rendered ipset + iptables-restore text of the nodes involved must agree.
//!
//! `PROPTEST_CASES=N` changes the number of generated clusters (default 300).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod differential_support;

use std::net::Ipv4Addr;

use differential_support::genspec::{self, ClusterSpec, PROBE_PORTS, PolicySpec};
use differential_support::interp::{Node, Packet};
use differential_support::{DataPlane, proto_number};
use proptest::prelude::*;
use proptest::test_runner::Config;
use tierguard::engine::Endpoint;
use tierguard::policy::Protocol;
use tierguard_enforcer::render::RenderOptions;

/// Checks every packet of a scenario; `Err` describes the first disagreement.
fn check(spec: &ClusterSpec, policies: &[PolicySpec], options: &RenderOptions) -> Result<usize, String> {
    let cluster = genspec::build_cluster(spec, policies);
    let plane = DataPlane::build(spec, &cluster, options);
    let mut checked = 0;
    for from in &spec.pods {
        for to in &spec.pods {
            let a = cluster.pod(&from.namespace, &from.name).unwrap();
            let b = cluster.pod(&to.namespace, &to.name).unwrap();
            let mut ports: Vec<u16> = PROBE_PORTS.to_vec();
            ports.extend(to.ports.iter().map(|p| p.port));
            ports.sort_unstable();
            ports.dedup();
            for protocol in Protocol::ALL {
                for &port in &ports {
                    let verdict = cluster.allowed(Endpoint::Pod(a), Endpoint::Pod(b), protocol, port);
                    let model = verdict.allowed();
                    let oracle = genspec::oracle(spec, policies, from, to, protocol, port);
                    checked += 1;
                    if from.key() == to.key() {
                        // Never leaves the pod's namespace: only the model is asked.
                        if !model || !oracle {
                            return Err(format!("{} to itself must be allowed: {verdict}", from.key()));
                        }
                        continue;
                    }
                    let packet = Packet {
                        src: from.ip,
                        dst: to.ip,
                        proto: proto_number(protocol),
                        dport: port,
                    };
                    let (data, trace) = plane.allows(from.node, to.node, &packet);
                    if model != oracle || model != data {
                        let scripts: String = plane
                            .nodes
                            .iter()
                            .map(|(n, _, text)| format!("==== {n}\n{text}"))
                            .collect();
                        return Err(format!(
                            "{} -> {} {protocol}/{port}: model {model}, oracle {oracle}, data plane {data}\n\
                             model: {verdict}\ndata plane walk:\n{trace}\n{}\n{scripts}",
                            from.key(),
                            to.key(),
                            genspec::describe(spec, policies),
                        ));
                    }
                }
            }
        }
    }
    Ok(checked)
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

fn options() -> impl Strategy<Value = RenderOptions> {
    (
        proptest::option::of(0..100u16),
        proptest::sample::select(vec![0x1_0000u32, 0x4000, 0x1, 0x8000_0000]),
    )
        .prop_map(|(nflog_group, allow_mark)| RenderOptions {
            nflog_group,
            allow_mark,
        })
}

proptest! {
    #![proptest_config(Config {
        cases: cases(),
        failure_persistence: None,
        max_shrink_iters: 4096,
        ..Config::default()
    })]

    #[test]
    fn model_oracle_and_rendered_rules_agree((spec, policies) in genspec::scenario(4), options in options()) {
        if let Err(e) = check(&spec, &policies, &options) {
            prop_assert!(false, "{}", e);
        }
    }
}

// ---------------------------------------------------------------- the interpreter itself

const JUMP: &str = "-m comment --comment tierguard -j TG-FORWARD";

fn pkt(src: [u8; 4], dst: [u8; 4], dport: u16) -> Packet {
    Packet {
        src: Ipv4Addr::from(src),
        dst: Ipv4Addr::from(dst),
        proto: 6,
        dport,
    }
}

#[test]
fn interpreter_hash_net_nomatch_most_specific_entry_wins() {
    let sets = "create s hash:net family inet hashsize 1024 maxelem 1048576 -exist\nflush s\n\
                add s 10.0.0.0/8\nadd s 10.1.0.0/16 nomatch\nadd s 10.1.2.0/24\n";
    let node = Node::parse(sets, "*filter\n:TG-FORWARD - [0:0]\nCOMMIT\n", JUMP);
    assert!(node.set_contains("s", Ipv4Addr::new(10, 2, 0, 1)));
    assert!(!node.set_contains("s", Ipv4Addr::new(10, 1, 0, 1)));
    assert!(node.set_contains("s", Ipv4Addr::new(10, 1, 2, 3)));
    assert!(!node.set_contains("s", Ipv4Addr::new(11, 0, 0, 1)));
}

#[test]
fn interpreter_goto_returns_to_the_caller_of_the_caller() {
    let rules = "*filter\n:TG-FORWARD - [0:0]\n:TG-A - [0:0]\n:TG-B - [0:0]\n\
                 -A TG-FORWARD -j TG-A\n-A TG-FORWARD -p tcp -m tcp --dport 80 -j DROP\n-A TG-FORWARD -j ACCEPT\n\
                 -A TG-A -g TG-B\n-A TG-A -j DROP\n\
                 -A TG-B -j MARK --set-xmark 0x4/0x4\n-A TG-B -m mark --mark 0x4/0x4 -j RETURN\n-A TG-B -j DROP\n\
                 COMMIT\n";
    let node = Node::parse("", rules, JUMP);
    // TG-B returns to TG-FORWARD (not to TG-A's DROP), which accepts port 81 and drops 80.
    assert!(node.forward(&pkt([1, 1, 1, 1], [2, 2, 2, 2], 81)).0);
    assert!(!node.forward(&pkt([1, 1, 1, 1], [2, 2, 2, 2], 80)).0);
}

#[test]
fn interpreter_conntrack_treats_packets_as_new_and_return_from_top_uses_the_policy() {
    let rules = "*filter\n:TG-FORWARD - [0:0]\n\
                 -A TG-FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j DROP\n\
                 -A TG-FORWARD -m conntrack ! --ctstate NEW -j DROP\n\
                 -A TG-FORWARD -s 10.0.0.0/8 -j RETURN\n-A TG-FORWARD -j DROP\nCOMMIT\n";
    let node = Node::parse("", rules, JUMP);
    assert!(node.forward(&pkt([10, 1, 1, 1], [2, 2, 2, 2], 81)).0);
    assert!(!node.forward(&pkt([11, 1, 1, 1], [2, 2, 2, 2], 81)).0);
}

#[test]
#[should_panic(expected = "unknown or invalid construct")]
fn interpreter_refuses_what_it_does_not_know() {
    let rules = "*filter\n:TG-FORWARD - [0:0]\n-A TG-FORWARD -i eth0 -j ACCEPT\nCOMMIT\n";
    Node::parse("", rules, JUMP);
}

#[test]
#[should_panic(expected = "hash:net refuses /0")]
fn interpreter_refuses_a_zero_prefix_in_hash_net() {
    Node::parse(
        "create s hash:net family inet -exist\nadd s 0.0.0.0/0\n",
        "*filter\n:TG-FORWARD - [0:0]\nCOMMIT\n",
        JUMP,
    );
}

// ---------------------------------------------------------------- regressions (bugs the property found)

fn small_cluster(pods: &[(&str, &str, [u8; 4], usize)], nodes: usize) -> ClusterSpec {
    use differential_support::genspec::{NsSpec, PodSpec, PortDecl};
    let mut namespaces: Vec<NsSpec> = Vec::new();
    for (ns, ..) in pods {
        if !namespaces.iter().any(|n| n.name == *ns) {
            namespaces.push(NsSpec {
                name: ns.to_string(),
                labels: [("ns".to_string(), ns.to_string())].into(),
            });
        }
    }
    ClusterSpec {
        nodes: (0..nodes)
            .map(|i| (format!("node-{}", i + 1), Ipv4Addr::new(10, 244, 0, i as u8 + 1)))
            .collect(),
        namespaces,
        pods: pods
            .iter()
            .map(|(ns, name, ip, node)| PodSpec {
                namespace: ns.to_string(),
                name: name.to_string(),
                labels: [("pod".to_string(), name.to_string())].into(),
                ip: Ipv4Addr::from(*ip),
                node: *node,
                ports: vec![PortDecl {
                    name: "web".into(),
                    port: 80,
                    protocol: Protocol::Tcp,
                }],
            })
            .collect(),
        pod_cidrs: false,
    }
}

fn policy_from_yaml(yaml: &str) -> PolicySpec {
    // The regression policies are written as Kubernetes objects and read back through the generator's types.
    let value: serde_json::Value = serde_yaml::from_str(yaml).unwrap();
    genspec::policy_spec_from_json(&value)
}

/// ipBlock 0.0.0.0/0 except 0.0.0.0/1: hash:net refuses /0, so the block is split
/// into two /1 halves; the hole equal to a half used to be added as the same
/// element a second time (`0.0.0.0/1` and `0.0.0.0/1 nomatch`), which
/// `ipset restore` refuses (and under `-exist` overwrites in script order).
#[test]
fn regression_ipblock_except_equal_to_half_of_zero_prefix_is_one_set_element() {
    let spec = small_cluster(&[("x", "a", [10, 244, 1, 10], 0), ("x", "b", [10, 244, 1, 11], 0)], 1);
    for except in ["0.0.0.0/1", "128.0.0.0/1"] {
        let policy = policy_from_yaml(&format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p, namespace: x}}\n\
             spec:\n  podSelector: {{matchLabels: {{pod: a}}}}\n  ingress:\n  - from:\n    - ipBlock: {{cidr: 0.0.0.0/0, except: [{except}]}}\n"
        ));
        check(&spec, &[policy], &RenderOptions::default()).unwrap();
    }
}

/// Kubernetes accepts ipBlock CIDRs with host bits set. Two excepts that spell
/// the same network differently (10.244.1.13/28 and 10.244.1.5/28) used to be
/// added to the hash:net set as two elements that ipset stores as one, which
/// `ipset restore` refuses; entries are now masked as ipset masks them.
#[test]
fn regression_ipblock_networks_with_host_bits_are_masked_into_one_set_element() {
    let spec = small_cluster(
        &[
            ("x", "a", [10, 244, 1, 10], 0),
            ("x", "b", [10, 244, 1, 3], 0),
            ("x", "c", [10, 244, 1, 20], 0),
        ],
        1,
    );
    let policy = policy_from_yaml(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\n\
         spec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    \
         - ipBlock: {cidr: 10.244.1.13/24, except: [10.244.1.13/28, 10.244.1.5/28]}\n",
    );
    check(&spec, &[policy], &RenderOptions::default()).unwrap();
}
