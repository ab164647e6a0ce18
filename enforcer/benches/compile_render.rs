//! compile + render for generated clusters; an incremental sync after one
//! policy change (against an executor that does nothing, so this is the
//! enforcer's own cost: compile, render, diff and script generation); and the
//! compile + render after one pod's labels change, of what changed and from
//! scratch.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, criterion_group, criterion_main};
use tierguard::cluster::ContainerPort;
use tierguard::policy::{IpBlock, NamespaceScope, Peer, PolicyPort, PortMatch, Protocol, Rule};
use tierguard::{Cluster, NamespaceInfo, PodInfo, Policy, PolicyId, Selector};
use tierguard_enforcer::compile::{Family, NodeView, compile};
use tierguard_enforcer::exec::{ExecError, Executor};
use tierguard_enforcer::incremental::IncrementalCompiler;
use tierguard_enforcer::render::{RenderCache, RenderOptions, render, render_with};
use tierguard_enforcer::sync::{Backend, NodeIdentity, SyncOptions, Syncer};

const TIERS: [&str; 3] = ["frontend", "backend", "data"];

fn labels(pairs: &[(&str, String)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

fn sel(pairs: &[(&str, String)]) -> Selector {
    Selector::from_labels(&labels(pairs))
}

fn port(protocol: Protocol, port: PortMatch) -> PolicyPort {
    PolicyPort { protocol, port }
}

fn policy(j: usize, namespaces: usize) -> Policy {
    let ns = format!("ns-{}", j % namespaces);
    let k = j / namespaces;
    let id = PolicyId {
        namespace: ns.clone(),
        name: format!("p-{j}"),
    };
    let own = |pods: Selector| Peer::Pods {
        namespaces: NamespaceScope::Own,
        pods,
    };
    let mut p = Policy {
        id,
        pod_selector: Selector::everything(),
        isolates_ingress: true,
        isolates_egress: false,
        ingress: vec![],
        egress: vec![],
    };
    match k % 5 {
        0 => {
            p.isolates_egress = true;
            p.egress = vec![Rule {
                peers: Some(vec![Peer::Pods {
                    namespaces: NamespaceScope::Matching(sel(&[("kubernetes.io/metadata.name", "ns-0".into())])),
                    pods: sel(&[("app", "app-0".into())]),
                }]),
                ports: vec![
                    port(Protocol::Udp, PortMatch::Range { start: 53, end: 53 }),
                    port(Protocol::Tcp, PortMatch::Range { start: 53, end: 53 }),
                ],
            }];
        }
        1 => {
            p.pod_selector = sel(&[("tier", "backend".into())]);
            p.ingress = vec![Rule {
                peers: Some(vec![own(sel(&[("tier", "frontend".into())]))]),
                ports: vec![port(Protocol::Tcp, PortMatch::Named("http".into()))],
            }];
        }
        2 => {
            p.pod_selector = sel(&[("app", format!("app-{}", j % 20))]);
            p.ingress = vec![Rule {
                peers: Some(vec![Peer::Pods {
                    namespaces: NamespaceScope::Matching(sel(&[("team", format!("t{}", j % 10))])),
                    pods: Selector::everything(),
                }]),
                ports: vec![port(Protocol::Tcp, PortMatch::Range { start: 8080, end: 8090 })],
            }];
        }
        3 => {
            p.pod_selector = sel(&[("tier", "backend".into())]);
            p.isolates_ingress = false;
            p.isolates_egress = true;
            p.egress = vec![
                Rule {
                    peers: Some(vec![own(sel(&[("tier", "data".into())]))]),
                    ports: vec![port(Protocol::Tcp, PortMatch::Range { start: 5432, end: 5432 })],
                },
                Rule {
                    peers: Some(vec![Peer::Block(IpBlock {
                        cidr: "10.0.0.0/8".parse().unwrap_or_else(|_| unreachable!()),
                        except: vec!["10.1.0.0/16".parse().unwrap_or_else(|_| unreachable!())],
                    })]),
                    ports: vec![port(Protocol::Tcp, PortMatch::Range { start: 443, end: 443 })],
                },
            ];
        }
        _ => {
            p.pod_selector = sel(&[("tier", "frontend".into())]);
            p.isolates_egress = true;
            p.ingress = vec![Rule {
                peers: None,
                ports: vec![],
            }];
            p.egress = vec![Rule {
                peers: Some(vec![Peer::Pods {
                    namespaces: NamespaceScope::Matching(Selector::everything()),
                    pods: sel(&[("app", format!("app-{}", j % 20))]),
                }]),
                ports: vec![port(Protocol::Tcp, PortMatch::Named("metrics".into()))],
            }];
        }
    }
    p
}

/// `pods` pods on `pods / 100` nodes (about 100 on node-0), `policies` policies over `policies / 10` namespaces.
fn cluster(pods: usize, policies: usize) -> Cluster {
    let namespaces = (policies / 10).max(5);
    let nodes = (pods / 100).max(1);
    let mut c = Cluster::new();
    for i in 0..namespaces {
        c.upsert_namespace(NamespaceInfo::new(
            &format!("ns-{i}"),
            labels(&[("team", format!("t{}", i % 10)), ("tier", TIERS[i % 3].into())]),
        ));
    }
    for i in 0..pods {
        let n = u32::try_from(i + 1).unwrap_or(u32::MAX);
        c.upsert_pod(PodInfo {
            namespace: format!("ns-{}", i % namespaces),
            name: format!("pod-{i}"),
            labels: labels(&[("app", format!("app-{}", i % 20)), ("tier", TIERS[i % 3].into())]),
            ips: vec![IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | n))],
            // Scattered over nodes (a multiplicative hash), so node-0's pods span many namespaces.
            node: Some(format!(
                "node-{}",
                ((i as u64).wrapping_mul(2_654_435_761) >> 8) % nodes as u64
            )),
            ports: vec![
                ContainerPort {
                    name: Some("http".into()),
                    port: 8080 + u16::try_from(i % 3).unwrap_or(0),
                    protocol: Protocol::Tcp,
                },
                ContainerPort {
                    name: Some("metrics".into()),
                    port: 9100,
                    protocol: Protocol::Tcp,
                },
            ],
            host_network: false,
        });
    }
    for j in 0..policies {
        c.upsert_policy(policy(j, namespaces));
    }
    c
}

struct Null;

impl Executor for Null {
    fn run(&self, _: &str, _: &[String], _: Option<&str>) -> Result<String, ExecError> {
        Ok(String::new())
    }
}

const SIZES: [(usize, usize); 3] = [(1_000, 100), (10_000, 1_000), (50_000, 5_000)];

fn node() -> NodeView {
    NodeView {
        name: "node-0".into(),
        addresses: vec![IpAddr::V4(Ipv4Addr::new(192, 168, 0, 1))],
        pod_cidrs: vec![],
    }
}

/// A group of few, long samples (one compile at 50,000 pods takes ~100 ms).
fn group<'c>(c: &'c mut Criterion, name: &str) -> BenchmarkGroup<'c, WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    group
}

fn compile_render(c: &mut Criterion) {
    let mut group = group(c, "compile_render");
    for (pods, policies) in SIZES {
        let cluster = cluster(pods, policies);
        let rules = compile(&cluster, &node());
        let rendered = render(&rules, &RenderOptions::default());
        let text = rendered.ipset_script().len() + rendered.iptables_script().len();
        eprintln!(
            "{pods} pods / {policies} policies: {} local pods, {} policy chains, {} chains, {} rules, {} sets, {} set entries, {text} bytes of script",
            rules.local_pods.len(),
            rules.policies.len(),
            rendered.chains.len(),
            rendered.rule_count(),
            rendered.sets.len(),
            rendered.sets.values().map(|s| s.entries.len()).sum::<usize>(),
        );
        group.bench_function(format!("{pods}_pods_{policies}_policies"), |b| {
            b.iter(|| render(&compile(black_box(&cluster), &node()), &RenderOptions::default()))
        });
    }
    group.finish();
}

/// A sync after one policy change, the policy flipping between two versions
/// on one live cluster (so the sync compiles what changed, as in the agent).
fn incremental(c: &mut Criterion) {
    let mut group = group(c, "incremental_sync");
    for (pods, policies) in SIZES {
        let mut live = cluster(pods, policies);
        // One policy that selects node-0's pods changes a port.
        let namespaces = (policies / 10).max(5);
        let original = policy(namespaces * 2, namespaces);
        let mut changed = original.clone();
        if let Some(rule) = changed.ingress.first_mut() {
            rule.ports = vec![port(Protocol::Tcp, PortMatch::Range { start: 8080, end: 8091 })];
        }
        let identity = NodeIdentity {
            name: "node-0".into(),
            addresses: vec![IpAddr::V4(Ipv4Addr::new(192, 168, 0, 1))],
        };
        let options = SyncOptions {
            backend: Some(Backend::Nft),
            ..SyncOptions::default()
        };
        let mut syncer = Syncer::new(identity, Null, options);
        let _ = syncer.sync(&live);
        live.upsert_policy(changed.clone());
        if let Ok(report) = syncer.sync(&live) {
            eprintln!(
                "{pods} pods / {policies} policies: one policy change rewrites {} chains, {} sets",
                report.v4.chains_written, report.v4.sets_written
            );
        }
        let mut flip = false;
        group.bench_function(format!("{pods}_pods_{policies}_policies"), |bench| {
            bench.iter(|| {
                flip = !flip;
                live.upsert_policy(if flip { original.clone() } else { changed.clone() });
                syncer.sync(&live)
            })
        });
    }
    group.finish();
}

/// Compile + render of what changed after one pod's labels change (flipping
/// between two tiers), on one live cluster, against the from-scratch compile.
fn pod_event(c: &mut Criterion) {
    let mut group = group(c, "pod_relabelled");
    for (pods, policies) in SIZES {
        let mut live = cluster(pods, policies);
        let Some(pod) = live.pod("ns-0", "pod-0").cloned() else {
            continue;
        };
        let mut relabelled = pod.clone();
        relabelled.labels.insert("tier".into(), "data".into());
        let mut compiler = IncrementalCompiler::new(Family::V4);
        let mut cache = RenderCache::default();
        let _ = render_with(&compiler.compile(&live, &node()), &RenderOptions::default(), &mut cache);
        let mut flip = false;
        group.bench_function(format!("incremental_{pods}_pods_{policies}_policies"), |bench| {
            bench.iter(|| {
                flip = !flip;
                live.upsert_pod(if flip { relabelled.clone() } else { pod.clone() });
                render_with(&compiler.compile(&live, &node()), &RenderOptions::default(), &mut cache)
            })
        });
        group.bench_function(format!("from_scratch_{pods}_pods_{policies}_policies"), |bench| {
            bench.iter(|| {
                flip = !flip;
                live.upsert_pod(if flip { relabelled.clone() } else { pod.clone() });
                render(&compile(&live, &node()), &RenderOptions::default())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, compile_render, incremental, pod_event);
criterion_main!(benches);
