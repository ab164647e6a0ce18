//! Each Kubernetes rule, pinned with the verdict's explanation, not only the boolean.

use super::*;
use crate::cluster::{ContainerPort, NamespaceInfo};
use crate::labels::Labels;
use k8s_openapi::api::networking::v1::NetworkPolicy;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Namespaces x and y (labelled ns=<name>), pods a and b in each, serving
/// TCP 80 named http and UDP 53 named dns.
fn cluster(policies: &[serde_json::Value]) -> Cluster {
    let mut c = Cluster::new();
    for (n, ns) in ["x", "y"].into_iter().enumerate() {
        c.upsert_namespace(NamespaceInfo::new(ns, labels(&[("ns", ns)])));
        for (m, pod) in ["a", "b"].into_iter().enumerate() {
            c.upsert_pod(PodInfo {
                namespace: ns.into(),
                name: pod.into(),
                labels: labels(&[("pod", pod)]),
                ips: vec![IpAddr::from([10, 0, n as u8 + 1, m as u8 + 1])],
                node: Some("n1".into()),
                ports: vec![
                    ContainerPort {
                        name: Some("http".into()),
                        port: 80,
                        protocol: Protocol::Tcp,
                    },
                    ContainerPort {
                        name: Some("dns".into()),
                        port: 53,
                        protocol: Protocol::Udp,
                    },
                ],
                host_network: false,
            });
        }
    }
    for p in policies {
        let np: NetworkPolicy = serde_json::from_value(p.clone()).expect("policy json");
        c.apply_network_policy(&np).expect("valid policy");
    }
    c
}

fn np(ns: &str, name: &str, spec: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"metadata": {"name": name, "namespace": ns}, "spec": spec})
}

fn verdict(c: &Cluster, from: &str, to: &str, protocol: Protocol, port: u16) -> Verdict {
    let pod = |k: &str| {
        let (ns, name) = k.split_once('/').expect("ns/name");
        c.pod(ns, name).expect("known pod")
    };
    c.allowed(Endpoint::Pod(pod(from)), Endpoint::Pod(pod(to)), protocol, port)
}

fn id(ns: &str, name: &str) -> PolicyId {
    PolicyId {
        namespace: ns.into(),
        name: name.into(),
    }
}

#[test]
fn no_policy_means_not_isolated() {
    let c = cluster(&[]);
    let v = verdict(&c, "x/a", "y/b", Protocol::Tcp, 80);
    assert!(v.allowed());
    assert_eq!(v.egress, SideVerdict::NotIsolated);
    assert_eq!(v.ingress, SideVerdict::NotIsolated);
}

#[test]
fn isolation_is_per_direction() {
    let c = cluster(&[np("y", "deny-in", serde_json::json!({"podSelector": {}}))]);
    let v = verdict(&c, "x/a", "y/b", Protocol::Tcp, 80);
    assert!(!v.allowed());
    assert_eq!(
        v.ingress,
        SideVerdict::Denied {
            isolated_by: vec![id("y", "deny-in")]
        }
    );
    // y's pods are not egress-isolated: their traffic out is untouched.
    let v = verdict(&c, "y/b", "x/a", Protocol::Tcp, 80);
    assert!(v.allowed());
    assert_eq!(v.egress, SideVerdict::NotIsolated);
}

#[test]
fn a_pod_always_reaches_itself() {
    let c = cluster(&[np(
        "x",
        "deny",
        serde_json::json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
    )]);
    let v = verdict(&c, "x/a", "x/a", Protocol::Udp, 9);
    assert!(v.allowed());
    assert_eq!(v.ingress, SideVerdict::SamePod);
    assert!(!verdict(&c, "x/a", "x/b", Protocol::Udp, 9).allowed());
}

#[test]
fn union_of_policies_names_the_one_that_allowed() {
    let c = cluster(&[
        np(
            "y",
            "from-a",
            serde_json::json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "a"}}}]}]}),
        ),
        np(
            "y",
            "from-x",
            serde_json::json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "x"}}}]}]}),
        ),
    ]);
    let v = verdict(&c, "x/b", "y/b", Protocol::Tcp, 80);
    assert_eq!(
        v.ingress,
        SideVerdict::Allowed {
            policy: id("y", "from-x"),
            rule: 0,
            peer: Some(0),
            port: PortHit::AllPorts
        }
    );
    let v = verdict(&c, "y/a", "y/b", Protocol::Tcp, 80);
    assert_eq!(
        v.ingress,
        SideVerdict::Allowed {
            policy: id("y", "from-a"),
            rule: 0,
            peer: Some(0),
            port: PortHit::AllPorts
        }
    );
    let v = verdict(&c, "y/b", "y/a", Protocol::Tcp, 80);
    assert_eq!(
        v.ingress,
        SideVerdict::Denied {
            isolated_by: vec![id("y", "from-a"), id("y", "from-x")]
        }
    );
    assert_eq!(
        v.to_string(),
        "denied: egress allowed: not isolated; ingress denied: isolated by y/from-a, y/from-x, no rule matched"
    );
}

#[test]
fn both_ends_must_allow() {
    let c = cluster(&[
        np(
            "x",
            "a-out-none",
            serde_json::json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"]}),
        ),
        np("y", "open-in", serde_json::json!({"podSelector": {}, "ingress": [{}]})),
    ]);
    let v = verdict(&c, "x/a", "y/a", Protocol::Tcp, 80);
    assert!(!v.allowed());
    assert_eq!(
        v.egress,
        SideVerdict::Denied {
            isolated_by: vec![id("x", "a-out-none")]
        }
    );
    assert!(v.ingress.is_allowed(), "ingress alone would allow it: {v}");
}

#[test]
fn namespace_and_pod_selectors_are_anded_within_a_peer() {
    let c = cluster(&[np(
        "y",
        "p",
        serde_json::json!({"podSelector": {}, "ingress": [{"from": [
            {"namespaceSelector": {"matchLabels": {"ns": "x"}}, "podSelector": {"matchLabels": {"pod": "b"}}}
        ]}]}),
    )]);
    assert!(verdict(&c, "x/b", "y/a", Protocol::Tcp, 80).allowed());
    assert!(!verdict(&c, "x/a", "y/a", Protocol::Tcp, 80).allowed());
    assert!(
        !verdict(&c, "y/b", "y/a", Protocol::Tcp, 80).allowed(),
        "pod b of the wrong namespace"
    );
}

#[test]
fn pod_selector_peer_stays_in_the_policy_namespace() {
    let c = cluster(&[np(
        "y",
        "p",
        serde_json::json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}),
    )]);
    assert!(verdict(&c, "y/b", "y/a", Protocol::Tcp, 80).allowed());
    assert!(!verdict(&c, "x/b", "y/a", Protocol::Tcp, 80).allowed());
}

#[test]
fn ip_blocks_with_except_v4_and_v6() {
    let c = cluster(&[np(
        "y",
        "p",
        serde_json::json!({"podSelector": {}, "ingress": [{"from": [
            {"ipBlock": {"cidr": "10.0.1.0/24", "except": ["10.0.1.2/32"]}},
            {"ipBlock": {"cidr": "fd00::/64"}}
        ]}]}),
    )]);
    let v = verdict(&c, "x/a", "y/a", Protocol::Tcp, 80);
    assert_eq!(
        v.ingress,
        SideVerdict::Allowed {
            policy: id("y", "p"),
            rule: 0,
            peer: Some(0),
            port: PortHit::AllPorts
        }
    );
    assert!(
        !verdict(&c, "x/b", "y/a", Protocol::Tcp, 80).allowed(),
        "10.0.1.2 is in the except"
    );
    let dst = c.pod("y", "a").expect("pod");
    let v6 = c.allowed(
        Endpoint::Address("fd00::5".parse().expect("ip")),
        Endpoint::Pod(dst),
        Protocol::Tcp,
        80,
    );
    assert_eq!(
        v6.ingress,
        SideVerdict::Allowed {
            policy: id("y", "p"),
            rule: 0,
            peer: Some(1),
            port: PortHit::AllPorts
        }
    );
    assert_eq!(v6.egress, SideVerdict::NotAPod);
    let outside = c.allowed(
        Endpoint::Address("fd01::5".parse().expect("ip")),
        Endpoint::Pod(dst),
        Protocol::Tcp,
        80,
    );
    assert!(!outside.allowed());
}

#[test]
fn selector_peers_never_match_addresses_outside_the_cluster() {
    let c = cluster(&[np(
        "y",
        "p",
        serde_json::json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}}]}]}),
    )]);
    let dst = c.pod("y", "a").expect("pod");
    assert!(
        !c.allowed(
            Endpoint::Address("10.0.1.1".parse().expect("ip")),
            Endpoint::Pod(dst),
            Protocol::Tcp,
            80
        )
        .allowed()
    );
    assert!(verdict(&c, "x/a", "y/a", Protocol::Tcp, 80).allowed());
}

#[test]
fn ports_protocols_end_ports_and_named_ports() {
    let c = cluster(&[np(
        "y",
        "p",
        serde_json::json!({"podSelector": {}, "ingress": [{"ports": [
            {"port": 8000, "endPort": 8080},
            {"protocol": "UDP", "port": "dns"},
            {"port": "http"}
        ]}]}),
    )]);
    let hit = |proto, port| match verdict(&c, "x/a", "y/a", proto, port).ingress {
        SideVerdict::Allowed { port, .. } => Some(port),
        _ => None,
    };
    assert_eq!(hit(Protocol::Tcp, 8000), Some(PortHit::Entry(0)));
    assert_eq!(hit(Protocol::Tcp, 8080), Some(PortHit::Entry(0)));
    assert_eq!(hit(Protocol::Tcp, 8081), None);
    assert_eq!(hit(Protocol::Udp, 8000), None, "no protocol means TCP");
    assert_eq!(hit(Protocol::Udp, 53), Some(PortHit::Entry(1)));
    assert_eq!(hit(Protocol::Tcp, 53), None, "dns is named for UDP only");
    assert_eq!(hit(Protocol::Tcp, 80), Some(PortHit::Entry(2)));
}

#[test]
fn egress_named_ports_resolve_on_the_destination() {
    let mut c = cluster(&[np(
        "x",
        "p",
        serde_json::json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"ports": [{"port": "http"}]}]}),
    )]);
    // y/b serves http on 8080 instead.
    if let Some(pod) = c.pod_mut("y", "b") {
        pod.ports[0].port = 8080;
    }
    assert!(verdict(&c, "x/a", "y/a", Protocol::Tcp, 80).allowed());
    assert!(!verdict(&c, "x/a", "y/b", Protocol::Tcp, 80).allowed());
    assert!(verdict(&c, "x/a", "y/b", Protocol::Tcp, 8080).allowed());
    // An address outside the cluster has no named ports.
    let src = c.pod("x", "a").expect("pod");
    assert!(
        !c.allowed(
            Endpoint::Pod(src),
            Endpoint::Address("192.0.2.1".parse().expect("ip")),
            Protocol::Tcp,
            80
        )
        .allowed()
    );
}

#[test]
fn egress_defaults_and_empty_rules() {
    // No policyTypes and a non-empty egress list: Ingress and Egress.
    let c = cluster(&[np(
        "x",
        "p",
        serde_json::json!({"podSelector": {"matchLabels": {"pod": "a"}}, "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}),
    )]);
    assert!(verdict(&c, "x/a", "y/a", Protocol::Tcp, 80).allowed());
    let v = verdict(&c, "x/a", "x/b", Protocol::Tcp, 80);
    assert_eq!(
        v.egress,
        SideVerdict::Denied {
            isolated_by: vec![id("x", "p")]
        }
    );
    let v = verdict(&c, "y/a", "x/a", Protocol::Tcp, 80);
    assert_eq!(
        v.ingress,
        SideVerdict::Denied {
            isolated_by: vec![id("x", "p")]
        }
    );
    // An empty rule allows every peer and port.
    let c = cluster(&[np("x", "open", serde_json::json!({"podSelector": {}, "ingress": [{}]}))]);
    assert_eq!(
        verdict(&c, "y/a", "x/a", Protocol::Sctp, 1).ingress,
        SideVerdict::Allowed {
            policy: id("x", "open"),
            rule: 0,
            peer: None,
            port: PortHit::AllPorts
        }
    );
}

#[test]
fn namespace_labels_come_from_the_cluster_and_default_to_the_name_label() {
    let mut c = cluster(&[np(
        "y",
        "p",
        serde_json::json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "q"}}}]}]}),
    )]);
    // A pod in namespace q that the cluster has no Namespace object for.
    c.upsert_pod(PodInfo {
        namespace: "q".into(),
        name: "z".into(),
        labels: Labels::new(),
        ips: vec![IpAddr::from([10, 9, 9, 9])],
        node: None,
        ports: vec![],
        host_network: false,
    });
    assert!(verdict(&c, "q/z", "y/a", Protocol::Tcp, 80).allowed());
    assert!(!verdict(&c, "x/a", "y/a", Protocol::Tcp, 80).allowed());
}

/// The cluster of `cluster` (its pods on node n1), plus namespace `mon` with a
/// host-network pod `agent` on node n2 (the node's address 10.0.0.100, serving
/// TCP 9100 named metrics) and an ordinary pod `scraper` on n1.
fn with_host_network_pod(policies: &[serde_json::Value]) -> Cluster {
    let mut c = cluster(policies);
    c.upsert_namespace(NamespaceInfo::new("mon", labels(&[("ns", "mon")])));
    for (name, ip, node, host_network) in [
        ("agent", [10, 0, 0, 100], "n2", true),
        ("scraper", [10, 0, 3, 1], "n1", false),
    ] {
        c.upsert_pod(PodInfo {
            namespace: "mon".into(),
            name: name.into(),
            labels: labels(&[("app", "node-exporter")]),
            ips: vec![IpAddr::from(ip)],
            node: Some(node.into()),
            ports: vec![ContainerPort {
                name: Some("metrics".into()),
                port: 9100,
                protocol: Protocol::Tcp,
            }],
            host_network,
        });
    }
    c
}

#[test]
fn host_network_pods_are_never_isolated() {
    let deny_all = np(
        "mon",
        "deny-all",
        serde_json::json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
    );
    let c = with_host_network_pod(&[deny_all]);
    let v = verdict(&c, "mon/agent", "x/a", Protocol::Tcp, 80);
    assert_eq!(v.egress, SideVerdict::HostNetwork);
    assert!(v.allowed());
    let v = verdict(&c, "x/a", "mon/agent", Protocol::Tcp, 9100);
    assert_eq!(v.ingress, SideVerdict::HostNetwork);
    assert_eq!(
        v.to_string(),
        "allowed: egress allowed: not isolated; ingress allowed: host-network pod (node traffic)"
    );
    // The ordinary pod beside it is isolated by the same policy.
    assert!(!verdict(&c, "x/a", "mon/scraper", Protocol::Tcp, 9100).allowed());
    let agent = c.pod("mon", "agent").expect("pod");
    let policy = c.policies_in("mon").next().expect("policy");
    assert!(!c.selects(policy, agent));
    assert_eq!(c.isolating(agent, Direction::Ingress).count(), 0);
}

#[test]
fn selector_peers_never_match_host_network_pods_but_ip_blocks_do() {
    let from_mon = np(
        "y",
        "from-mon",
        serde_json::json!({"podSelector": {}, "ingress": [{"from": [
            {"namespaceSelector": {"matchLabels": {"ns": "mon"}}},
        ]}]}),
    );
    let c = with_host_network_pod(&[from_mon]);
    // Every pod of mon, but the host-network one is the node: not a pod of mon.
    assert!(verdict(&c, "mon/scraper", "y/a", Protocol::Tcp, 80).allowed());
    let v = verdict(&c, "mon/agent", "y/a", Protocol::Tcp, 80);
    assert_eq!(
        v.ingress,
        SideVerdict::Denied {
            isolated_by: vec![id("y", "from-mon")]
        }
    );
    // Egress: a selector peer of mon does not reach the node's address either.
    let to_mon = np(
        "x",
        "to-mon",
        serde_json::json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [
            {"namespaceSelector": {"matchLabels": {"ns": "mon"}}, "podSelector": {}},
        ]}]}),
    );
    let c = with_host_network_pod(&[to_mon]);
    assert!(verdict(&c, "x/a", "mon/scraper", Protocol::Tcp, 9100).allowed());
    assert!(!verdict(&c, "x/a", "mon/agent", Protocol::Tcp, 9100).allowed());
    // An ipBlock with the node's address matches it, both ways.
    let node_block = np(
        "y",
        "from-node",
        serde_json::json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.100/32"}}]}],
            "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/24"}}], "ports": [{"port": 9100}]}]}),
    );
    let c = with_host_network_pod(&[node_block]);
    let v = verdict(&c, "mon/agent", "y/a", Protocol::Tcp, 80);
    assert_eq!(
        v.ingress,
        SideVerdict::Allowed {
            policy: id("y", "from-node"),
            rule: 0,
            peer: Some(0),
            port: PortHit::AllPorts
        }
    );
    assert!(verdict(&c, "y/a", "mon/agent", Protocol::Tcp, 9100).allowed());
}

#[test]
fn named_ports_do_not_resolve_on_host_network_pods() {
    let to_metrics = np(
        "x",
        "to-metrics",
        serde_json::json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"ports": [{"port": "metrics"}]}]}),
    );
    let c = with_host_network_pod(&[to_metrics]);
    assert!(verdict(&c, "x/a", "mon/scraper", Protocol::Tcp, 9100).allowed());
    assert!(!verdict(&c, "x/a", "mon/agent", Protocol::Tcp, 9100).allowed());
}

#[test]
fn a_pod_and_a_host_network_pod_of_its_own_node_always_reach_each_other() {
    let deny_all = np(
        "x",
        "deny-all",
        serde_json::json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
    );
    let mut c = with_host_network_pod(&[deny_all]);
    // On another node, x's default-deny holds against the node's address.
    assert!(!verdict(&c, "x/a", "mon/agent", Protocol::Tcp, 9100).allowed());
    assert!(!verdict(&c, "mon/agent", "x/a", Protocol::Tcp, 80).allowed());
    if let Some(agent) = c.pod_mut("mon", "agent") {
        agent.node = Some("n1".into());
    }
    let v = verdict(&c, "x/a", "mon/agent", Protocol::Tcp, 9100);
    assert_eq!(v.egress, SideVerdict::OwnNode);
    assert_eq!(v.ingress, SideVerdict::HostNetwork);
    let v = verdict(&c, "mon/agent", "x/a", Protocol::Tcp, 80);
    assert_eq!(
        v.to_string(),
        "allowed: egress allowed: host-network pod (node traffic); ingress allowed: its own node"
    );
}

#[test]
fn over_one_family_ip_blocks_match_that_familys_address_only() {
    let mut c = cluster(&[np(
        "y",
        "v6-only",
        serde_json::json!({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "fd00::/64"}}]}]}),
    )]);
    if let Some(pod) = c.pod_mut("x", "a") {
        pod.ips.push("fd00::1".parse().expect("ip"));
    }
    let (a, dst) = (c.pod("x", "a").expect("pod"), c.pod("y", "a").expect("pod"));
    let over = |family| c.allowed_over(Endpoint::Pod(a), Endpoint::Pod(dst), Protocol::Tcp, 80, family);
    assert!(over(AddressFamily::IPv6).allowed());
    assert!(!over(AddressFamily::IPv4).allowed());
    // Without a family, any of the pod's addresses counts.
    assert!(verdict(&c, "x/a", "y/a", Protocol::Tcp, 80).allowed());
}

fn explain(c: &Cluster, from: &str, to: &str, protocol: Protocol, port: u16) -> Explanation {
    let pod = |k: &str| {
        let (ns, name) = k.split_once('/').expect("ns/name");
        c.pod(ns, name).expect("known pod")
    };
    c.explain(Endpoint::Pod(pod(from)), Endpoint::Pod(pod(to)), protocol, port)
}

/// y/a accepts x's pods on TCP 80 (rule 1, after a rule for pod b on UDP);
/// x/a may send only UDP 53.
fn explained_cluster() -> Cluster {
    cluster(&[
        np(
            "y",
            "in",
            serde_json::json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}], "ports": [{"protocol": "UDP", "port": 53}]},
                {"from": [{"podSelector": {"matchLabels": {"pod": "zz"}}}, {"namespaceSelector": {"matchLabels": {"ns": "x"}}}],
                 "ports": [{"port": 8000}, {"port": "http"}]}
            ]}),
        ),
        np(
            "x",
            "out",
            serde_json::json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"],
                "egress": [{"ports": [{"protocol": "UDP", "port": 53}]}]}),
        ),
    ])
}

#[test]
fn explain_records_each_rule_up_to_the_one_that_allowed() {
    let c = explained_cluster();
    let why = explain(&c, "x/b", "y/a", Protocol::Tcp, 80);
    assert!(why.verdict.allowed());
    assert_eq!(why.egress, SideReasons::default(), "x/b is not isolated for egress");
    assert_eq!(why.ingress.isolated_by, vec![id("y", "in")]);
    assert_eq!(
        why.ingress.rules,
        vec![
            // pod b of y only, and UDP 53: neither matches
            RuleCheck {
                policy: id("y", "in"),
                rule: 0,
                peer: None,
                port: None
            },
            // the second peer and the named port (http = 80 on y/a) match
            RuleCheck {
                policy: id("y", "in"),
                rule: 1,
                peer: Some(Some(1)),
                port: Some(PortHit::Entry(1))
            },
        ]
    );
    assert_eq!(
        why.verdict.ingress,
        SideVerdict::Allowed {
            policy: id("y", "in"),
            rule: 1,
            peer: Some(1),
            port: PortHit::Entry(1)
        }
    );
}

#[test]
fn explain_records_every_rule_when_denied_and_says_which_part_missed() {
    let c = explained_cluster();
    let why = explain(&c, "x/a", "y/a", Protocol::Tcp, 8000);
    assert!(!why.verdict.allowed());
    // egress: the rule has no peers (every peer), but not TCP 8000
    assert_eq!(why.egress.isolated_by, vec![id("x", "out")]);
    assert_eq!(
        why.egress.rules,
        vec![RuleCheck {
            policy: id("x", "out"),
            rule: 0,
            peer: Some(None),
            port: None
        }]
    );
    // ingress allows it (rule 1, port entry 0): the egress alone denies it
    assert!(why.verdict.ingress.is_allowed());
    let why = explain(&c, "y/b", "y/a", Protocol::Tcp, 80);
    assert_eq!(
        why.ingress.rules.iter().map(|r| (r.peer, r.port)).collect::<Vec<_>>(),
        vec![(Some(Some(0)), None), (None, Some(PortHit::Entry(1)))],
        "rule 0: the peer but not the port; rule 1: the port but no peer"
    );
    assert_eq!(
        why.verdict.ingress,
        SideVerdict::Denied {
            isolated_by: vec![id("y", "in")]
        }
    );
}

#[test]
fn explain_gives_the_verdict_allowed_gives() {
    let c = explained_cluster();
    let pods: Vec<String> = c.pods().map(|p| p.key()).collect();
    let mut checked = 0;
    for from in &pods {
        for to in &pods {
            for (protocol, port) in [
                (Protocol::Tcp, 80),
                (Protocol::Tcp, 8000),
                (Protocol::Udp, 53),
                (Protocol::Tcp, 9),
            ] {
                let why = explain(&c, from, to, protocol, port);
                assert_eq!(
                    why.verdict,
                    verdict(&c, from, to, protocol, port),
                    "{from} -> {to} {protocol}/{port}"
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 64);
}
