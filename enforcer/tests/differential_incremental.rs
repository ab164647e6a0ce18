//! Differential test of the incremental compile: a random cluster, then a
//! random stream of pod, namespace and policy events (added, changed,
//! relabelled, readdressed, rescheduled, turned host-network, removed); after
//! every event, each node's incremental rule set must equal the from-scratch
//! compile of the same cluster, in both address families, and render to the
//! same restore text byte for byte (rendered as the sync does, reusing the
//! sets rendered before that did not change).
//!
//! `PROPTEST_CASES=N` changes the number of generated streams (default 200).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod differential_support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use differential_support::genspec::{self, ClusterSpec, Labels, PORT_NAMES, PORT_NUMBERS, PolicySpec};
use ipnet::IpNet;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::Config;
use tierguard::cluster::{ContainerPort, NamespaceInfo, PodInfo};
use tierguard::policy::{PolicyId, Protocol};
use tierguard::{Cluster, Policy};
use tierguard_enforcer::compile::{Family, NodeView, compile_family};
use tierguard_enforcer::incremental::IncrementalCompiler;
use tierguard_enforcer::render::{RenderCache, RenderOptions, render, render_with};

/// One change to the cluster; indices pick among the objects present (modulo their count).
#[derive(Clone, Debug)]
enum Event {
    PodAdd {
        namespace: usize,
        labels: Labels,
        node: usize,
        host: u8,
        dual_stack: bool,
    },
    PodLabels(usize, Labels),
    PodAddress {
        pod: usize,
        host: u8,
        dual_stack: bool,
    },
    PodPort(usize, usize, u16),
    PodNode(usize, usize),
    PodHostNetwork(usize),
    PodGone(usize),
    NamespaceLabels(usize, Labels),
    NamespaceGone(usize),
    Policy(PolicySpec),
    PolicyGone(usize),
    /// a burst: several events between two compiles
    Burst(Vec<Event>),
}

fn single(spec: &ClusterSpec) -> BoxedStrategy<Event> {
    let policy_names = select(vec!["p0", "p1", "p2", "p3", "p4", "p5"]);
    let spec = spec.clone();
    prop_oneof![
        3 => (0..3usize, genspec::pod_labels(), 0..3usize, 2..60u8, any::<bool>()).prop_map(
            |(namespace, labels, node, host, dual_stack)| Event::PodAdd {
                namespace,
                labels,
                node,
                host,
                dual_stack
            }
        ),
        4 => (any::<usize>(), genspec::pod_labels()).prop_map(|(i, l)| Event::PodLabels(i, l)),
        2 => (any::<usize>(), 2..60u8, any::<bool>()).prop_map(|(pod, host, dual_stack)| Event::PodAddress {
            pod,
            host,
            dual_stack
        }),
        2 => (any::<usize>(), 0..PORT_NAMES.len(), select(PORT_NUMBERS.to_vec()))
            .prop_map(|(i, n, p)| Event::PodPort(i, n, p)),
        1 => (any::<usize>(), 0..3usize).prop_map(|(i, n)| Event::PodNode(i, n)),
        1 => any::<usize>().prop_map(Event::PodHostNetwork),
        3 => any::<usize>().prop_map(Event::PodGone),
        2 => (0..3usize, genspec::ns_labels()).prop_map(|(i, l)| Event::NamespaceLabels(i, l)),
        1 => (0..3usize).prop_map(Event::NamespaceGone),
        3 => policy_names.prop_flat_map(move |name| genspec::policy(&spec, name.to_string())).prop_map(Event::Policy),
        1 => any::<usize>().prop_map(Event::PolicyGone),
    ]
    .boxed()
}

fn event(spec: &ClusterSpec) -> BoxedStrategy<Event> {
    prop_oneof![
        6 => single(spec),
        1 => proptest::collection::vec(single(spec), 2..8).prop_map(Event::Burst),
    ]
    .boxed()
}

fn stream() -> impl Strategy<Value = (ClusterSpec, Vec<PolicySpec>, Vec<Event>)> {
    genspec::scenario(4).prop_flat_map(|(spec, policies)| {
        let events = proptest::collection::vec(event(&spec), 1..25);
        (Just(spec), Just(policies), events)
    })
}

const NAMESPACES: [&str; 3] = ["x", "y", "z"];

fn addresses(node: usize, host: u8, dual_stack: bool) -> Vec<IpAddr> {
    let v4 = IpAddr::V4(Ipv4Addr::new(10, 244, node as u8 + 1, host));
    if dual_stack {
        vec![
            v4,
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, node as u16 + 1, 0, 0, 0, u16::from(host))),
        ]
    } else {
        vec![v4]
    }
}

fn nth_pod(cluster: &Cluster, i: usize) -> Option<PodInfo> {
    let count = cluster.pods().count();
    (count > 0).then(|| cluster.pods().nth(i % count).cloned()).flatten()
}

fn apply(cluster: &mut Cluster, event: &Event, counter: &mut usize) {
    match event {
        Event::PodAdd {
            namespace,
            labels,
            node,
            host,
            dual_stack,
        } => {
            *counter += 1;
            cluster.upsert_pod(PodInfo {
                namespace: NAMESPACES[*namespace].to_string(),
                name: format!("new-{counter}"),
                labels: labels.clone(),
                ips: addresses(*node, *host, *dual_stack),
                node: Some(format!("node-{}", node + 1)),
                ports: vec![ContainerPort {
                    name: Some("web".into()),
                    port: 80,
                    protocol: Protocol::Tcp,
                }],
                host_network: false,
            });
        }
        Event::PodLabels(i, labels) => {
            if let Some(mut pod) = nth_pod(cluster, *i) {
                pod.labels = labels.clone();
                cluster.upsert_pod(pod);
            }
        }
        Event::PodAddress { pod, host, dual_stack } => {
            if let Some(pod) = nth_pod(cluster, *pod)
                && let Some(p) = cluster.pod_mut(&pod.namespace, &pod.name)
            {
                let node = p
                    .node
                    .as_deref()
                    .and_then(|n| n.strip_prefix("node-"))
                    .and_then(|n| n.parse::<usize>().ok())
                    .unwrap_or(1);
                p.ips = addresses(node - 1, *host, *dual_stack);
            }
        }
        Event::PodPort(i, name, port) => {
            if let Some(mut pod) = nth_pod(cluster, *i) {
                let name = PORT_NAMES[*name].to_string();
                pod.ports.retain(|p| p.name.as_deref() != Some(name.as_str()));
                pod.ports.push(ContainerPort {
                    name: Some(name),
                    port: *port,
                    protocol: Protocol::Tcp,
                });
                cluster.upsert_pod(pod);
            }
        }
        Event::PodNode(i, node) => {
            if let Some(mut pod) = nth_pod(cluster, *i) {
                pod.node = Some(format!("node-{}", node + 1));
                cluster.upsert_pod(pod);
            }
        }
        Event::PodHostNetwork(i) => {
            if let Some(mut pod) = nth_pod(cluster, *i) {
                pod.host_network = !pod.host_network;
                cluster.upsert_pod(pod);
            }
        }
        Event::PodGone(i) => {
            if let Some(pod) = nth_pod(cluster, *i) {
                cluster.remove_pod(&pod.namespace, &pod.name);
            }
        }
        Event::NamespaceLabels(i, labels) => {
            cluster.upsert_namespace(NamespaceInfo::new(NAMESPACES[*i], labels.clone()));
        }
        Event::NamespaceGone(i) => {
            cluster.remove_namespace(NAMESPACES[*i]);
        }
        Event::Policy(spec) => cluster.upsert_policy(genspec::parse_policy(spec)),
        Event::PolicyGone(i) => {
            let ids: Vec<PolicyId> = cluster.policies().map(|p: &Policy| p.id.clone()).collect();
            if !ids.is_empty() {
                cluster.remove_policy(&ids[i % ids.len()]);
            }
        }
        Event::Burst(events) => {
            for e in events {
                apply(cluster, e, counter);
            }
        }
    }
}

fn views(spec: &ClusterSpec) -> Vec<NodeView> {
    (0..3usize)
        .map(|i| NodeView {
            name: format!("node-{}", i + 1),
            addresses: spec
                .nodes
                .get(i)
                .map(|(_, ip)| vec![IpAddr::V4(*ip)])
                .unwrap_or_default(),
            pod_cidrs: if spec.pod_cidrs {
                [format!("10.244.{}.0/24", i + 1), format!("fd00:0:0:{}::/64", i + 1)]
                    .iter()
                    .filter_map(|s| s.parse::<IpNet>().ok())
                    .collect()
            } else {
                Vec::new()
            },
        })
        .collect()
}

/// Runs a stream; `Err` names the first event after which the two disagree.
fn check(spec: &ClusterSpec, policies: &[PolicySpec], events: &[Event]) -> Result<(), String> {
    let mut cluster = genspec::build_cluster(spec, policies);
    let views = views(spec);
    let mut compilers: Vec<(NodeView, Family, IncrementalCompiler, RenderCache)> = views
        .iter()
        .flat_map(|v| Family::BOTH.map(|f| (v.clone(), f, IncrementalCompiler::new(f), RenderCache::default())))
        .collect();
    let options = RenderOptions::default();
    let mut counter = 0;
    for step in 0..=events.len() {
        if step > 0 {
            apply(&mut cluster, &events[step - 1], &mut counter);
        }
        for (view, family, compiler, cache) in &mut compilers {
            let kept = compiler.compile(&cluster, view);
            let fresh = compile_family(&cluster, view, *family);
            if step > 0 && compiler.last_update().from_scratch {
                return Err(format!("step {step}: {} {family} started over", view.name));
            }
            // The sync's way (sets kept from the last render) against a render from nothing.
            let (a, b) = (render_with(&kept, &options, cache), render(&fresh, &options));
            if kept != fresh
                || a != b
                || a.ipset_script() != b.ipset_script()
                || a.iptables_script() != b.iptables_script()
            {
                return Err(format!(
                    "after event {step} ({:?}) on {} {family}:\nincremental:\n{}{}\nfrom scratch:\n{}{}",
                    events.get(step.wrapping_sub(1)),
                    view.name,
                    a.ipset_script(),
                    a.iptables_script(),
                    b.ipset_script(),
                    b.iptables_script()
                ));
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(Config {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(200),
        failure_persistence: None,
        ..Config::default()
    })]

    #[test]
    fn incremental_equals_from_scratch_after_every_event((spec, policies, events) in stream()) {
        if let Err(e) = check(&spec, &policies, &events) {
            prop_assert!(false, "{}\n{}", e, genspec::describe(&spec, &policies));
        }
    }
}

/// A copy of the cluster is another history: the compiler starts over rather
/// than read the copy's journal as its own.
#[test]
fn a_copied_cluster_starts_over() {
    let spec = ClusterSpec {
        nodes: vec![("node-1".into(), Ipv4Addr::new(10, 244, 0, 1))],
        namespaces: Vec::new(),
        pods: Vec::new(),
        pod_cidrs: false,
    };
    let cluster = genspec::build_cluster(&spec, &[]);
    let view = views(&spec).remove(0);
    let mut compiler = IncrementalCompiler::new(Family::V4);
    compiler.compile(&cluster, &view);
    assert!(compiler.last_update().from_scratch);
    compiler.compile(&cluster, &view);
    assert!(!compiler.last_update().from_scratch);
    let copy = cluster.clone();
    compiler.compile(&copy, &view);
    assert!(compiler.last_update().from_scratch);
}
