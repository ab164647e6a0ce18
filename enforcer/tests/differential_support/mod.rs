//! Test support for the differential tests: random clusters and policies with an
//! independent oracle (`genspec`), and a netfilter interpreter for the rendered
//! scripts (`interp`).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod genspec;
pub mod interp;

use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};
use tierguard::Cluster;
use tierguard::policy::Protocol;
use tierguard_enforcer::compile::{NodeView, compile};
use tierguard_enforcer::render::{RenderOptions, forward_jump, render};

use genspec::ClusterSpec;
use interp::{Node, Packet};

/// IP protocol number.
pub fn proto_number(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
    }
}

/// Every node's rendered rules, as the interpreter reads them.
pub struct DataPlane {
    /// (node name, interpreted rules, the scripts)
    pub nodes: Vec<(String, Node, String)>,
    /// which node each pod (by key) runs on
    pub pod_node: std::collections::BTreeMap<String, usize>,
}

impl DataPlane {
    /// Compiles and renders `cluster` for every node of `spec`, then parses the text.
    pub fn build(spec: &ClusterSpec, cluster: &Cluster, options: &RenderOptions) -> DataPlane {
        let jump = forward_jump().join(" ");
        let nodes = spec
            .nodes
            .iter()
            .enumerate()
            .map(|(i, (name, ip))| {
                let pod_cidrs = if spec.pod_cidrs {
                    vec![IpNet::V4(
                        Ipv4Net::new(Ipv4Addr::new(10, 244, i as u8 + 1, 0), 24).unwrap(),
                    )]
                } else {
                    Vec::new()
                };
                let view = NodeView {
                    name: name.clone(),
                    addresses: vec![IpAddr::V4(*ip)],
                    pod_cidrs,
                };
                let rendered = render(&compile(cluster, &view), options);
                let (sets, tables) = (rendered.ipset_script(), rendered.iptables_script());
                let node = Node::parse(&sets, &tables, &jump);
                (name.clone(), node, format!("{sets}{tables}"))
            })
            .collect();
        let pod_node = spec.pods.iter().map(|p| (p.key(), p.node)).collect();
        DataPlane { nodes, pod_node }
    }

    /// Whether the packet from pod `from` (on node `from_node`) to pod `to`
    /// (on `to_node`) gets through: both nodes' FORWARD walks accept it (once
    /// when both pods share a node). Returns the decision and the traces.
    pub fn allows(&self, from_node: usize, to_node: usize, packet: &Packet) -> (bool, String) {
        let mut trace = String::new();
        let hops: Vec<usize> = if from_node == to_node {
            vec![from_node]
        } else {
            vec![from_node, to_node]
        };
        for hop in hops {
            let (name, node, _) = &self.nodes[hop];
            let (accepted, rules) = node.forward(packet);
            trace.push_str(&format!("  {name}: {}\n", if accepted { "ACCEPT" } else { "DROP" }));
            for r in rules {
                trace.push_str(&format!("    {r}\n"));
            }
            if !accepted {
                return (false, trace);
            }
        }
        (true, trace)
    }
}
