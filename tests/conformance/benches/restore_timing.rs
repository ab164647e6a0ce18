//! Times the kernel side of a sync in a scratch network namespace:
//! `ipset restore` + `iptables-restore --noflush` of the rendered output for
//! generated clusters, first as a full apply on an empty node, then as the
//! incremental apply after one policy changes. Needs root, iptables, ipset.
//!
//! `cargo bench -p tierguard-conformance --bench restore_timing` (optional
//! arguments: `--runs N`, `--quick` for the small size only).
//!
//! `-- --churn [--large]` times instead the syncs of everyday events against a
//! node already programmed (10,000 pods / 1,000 policies, and with `--large`
//! 50,000 / 5,000): (a) one pod added, (b) one pod deleted, (c) one pod's
//! labels changed, (d) one policy changed, (e) 100 pod events in one sync,
//! (f) a resync with nothing drifted. Each event is made on one live cluster
//! and undone after (so the sync compiles what changed, as in the agent). For
//! each: compile + render from scratch (what `render` does, and every sync did
//! before the incremental compile), the compile + render of the sync itself,
//! the apply (the sync minus its compile + render) and the bytes of the restore scripts
//! sent to the kernel (stdin of `ipset`/`iptables-restore`), and the bytes read
//! back from it (`iptables-save`, `ipset save`).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::networking::v1::NetworkPolicy;
use tierguard::Cluster;
use tierguard::cluster::{ContainerPort, NamespaceInfo, PodInfo};
use tierguard::policy::{Policy, PolicyId, Protocol};
use tierguard_conformance::netns::{NetnsExecutor, Topology, topology};
use tierguard_enforcer::apply::{AppliedState, Applier, backend};
use tierguard_enforcer::compile::NodeView;
use tierguard_enforcer::exec::{ExecError, Executor};
use tierguard_enforcer::incremental::IncrementalCompiler;
use tierguard_enforcer::render::{RenderCache, RenderOptions, render_with};
use tierguard_enforcer::sync::{NodeIdentity, SyncOptions, Syncer};

/// Pods per node (the kubelet default maximum is 110).
const PODS_PER_NODE: usize = 110;
const APPS: usize = 20;
const TEAMS: usize = 10;

fn pod_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 64 + (i >> 16) as u8, ((i >> 8) & 0xff) as u8, (i & 0xff) as u8)
}

fn namespaces_for(pods: usize) -> usize {
    (pods / 50).max(1)
}

fn generate(pods: usize, policies: usize) -> Cluster {
    let mut cluster = Cluster::new();
    let namespaces = namespaces_for(pods);
    for n in 0..namespaces {
        let labels = BTreeMap::from([("team".to_string(), format!("t{}", n % TEAMS))]);
        cluster.upsert_namespace(NamespaceInfo::new(&format!("ns-{n}"), labels));
    }
    let tiers = ["web", "api", "db"];
    for i in 0..pods {
        // Spread so that every namespace has pods on node-0 (the node benchmarked).
        let node = i % pods.div_ceil(PODS_PER_NODE);
        cluster.upsert_pod(PodInfo {
            namespace: format!("ns-{}", i % namespaces),
            name: format!("pod-{i}"),
            labels: BTreeMap::from([
                ("app".to_string(), format!("app-{}", i % APPS)),
                ("tier".to_string(), tiers[i % tiers.len()].to_string()),
            ]),
            ips: vec![IpAddr::V4(pod_ip(i))],
            node: Some(format!("node-{node}")),
            ports: vec![ContainerPort {
                name: Some("http".into()),
                port: 8080,
                protocol: Protocol::Tcp,
            }],
            host_network: false,
        });
    }
    for q in 0..policies {
        cluster
            .apply_network_policy(&policy(q, namespaces, 0))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    cluster
}

/// Policy `q`: selects one app in one namespace; ingress from one team's web
/// tier and from a CIDR with an exception; every third also limits egress.
fn policy(q: usize, namespaces: usize, variant: u16) -> NetworkPolicy {
    let mut spec = serde_json::json!({
        "podSelector": {"matchLabels": {"app": format!("app-{}", q % APPS)}},
        "ingress": [{
            "from": [
                {"namespaceSelector": {"matchLabels": {"team": format!("t{}", q % TEAMS)}},
                 "podSelector": {"matchLabels": {"tier": "web"}}},
                {"ipBlock": {"cidr": format!("172.{}.0.0/16", 16 + q % 16), "except": [format!("172.{}.1.0/24", 16 + q % 16)]}}
            ],
            "ports": [{"protocol": "TCP", "port": 8080 + variant}, {"protocol": "TCP", "port": "http"}]
        }],
    });
    if q.is_multiple_of(3) {
        spec["policyTypes"] = serde_json::json!(["Ingress", "Egress"]);
        spec["egress"] = serde_json::json!([{
            "to": [{"podSelector": {"matchLabels": {"tier": "db"}}}],
            "ports": [{"protocol": "TCP", "port": 5432}]
        }]);
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": format!("policy-{q}"), "namespace": format!("ns-{}", q % namespaces)},
        "spec": spec,
    }))
    .unwrap_or_else(|e| panic!("{e}"))
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

struct Figures {
    render: Vec<Duration>,
    restore_full: Vec<Duration>,
    apply_full: Vec<Duration>,
    apply_incremental: Vec<Duration>,
}

fn run_once(pods: usize, policies: usize, cluster: &Cluster, changed: &Cluster, figures: &mut Figures, print: bool) {
    let mut topo = Topology::build(&Cluster::new(), &[topology::default_node()]).unwrap_or_else(|e| panic!("{e}"));
    let netns = topo.nodes()[0].netns.clone();
    let exec = NetnsExecutor::new(netns);
    let identity = NodeIdentity {
        name: "node-0".into(),
        addresses: vec![IpAddr::V4(Ipv4Addr::new(10, 63, 0, 1))],
    };
    let syncer = Syncer::new(identity, &exec, SyncOptions::default());
    let backend = backend::detect(&exec).unwrap_or_else(|| panic!("no iptables backend"));

    let started = Instant::now();
    let rendered = syncer.render(cluster);
    figures.render.push(started.elapsed());
    let changed_rendered = syncer.render(changed);

    // The filter table exists before timing (the first use of iptables in a namespace creates it).
    let tool = backend.program("");
    for step in ["-N", "-X"] {
        exec.run(&tool, &["-w".into(), step.into(), "TG-WARMUP".into()], None)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    // The rendered output as a whole, restored on an empty node.
    let plan = AppliedState::default().plan(&rendered);
    let started = Instant::now();
    exec.run("ipset", &["restore".into()], Some(&plan.set_script))
        .unwrap_or_else(|e| panic!("{e}"));
    exec.run(
        &backend.program("-restore"),
        &["--noflush".into(), "-w".into()],
        Some(&plan.rule_script),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    figures.restore_full.push(started.elapsed());
    Applier::new(backend).cleanup(&exec).unwrap_or_else(|e| panic!("{e}"));

    // The applier's path: full apply, then the incremental one after one policy changed.
    let mut applier = Applier::new(backend);
    let started = Instant::now();
    applier.apply(&exec, &rendered).unwrap_or_else(|e| panic!("{e}"));
    figures.apply_full.push(started.elapsed());
    let incremental = applier.state.plan(&changed_rendered);
    let started = Instant::now();
    let report = applier
        .apply(&exec, &changed_rendered)
        .unwrap_or_else(|e| panic!("{e}"));
    figures.apply_incremental.push(started.elapsed());
    if print {
        let save = exec
            .run(&backend.program("-save"), &["-t".into(), "filter".into()], None)
            .unwrap_or_default();
        let in_kernel = save.lines().filter(|l| l.starts_with("-A TG-")).count();
        let sets = exec
            .run("ipset", &["list".into(), "-n".into()], None)
            .unwrap_or_default();
        let entries: usize = rendered.sets.values().map(|s| s.entries.len()).sum();
        println!(
            "{pods} pods / {policies} policies ({backend}): {} chains, {} rules ({in_kernel} TG- rules in the kernel), \
             {} sets ({} in the kernel) with {entries} entries; full scripts {} + {} bytes; \
             incremental: {} chains and {} sets rewritten ({} + {} bytes)",
            rendered.chains.len(),
            rendered.rule_count(),
            rendered.sets.len(),
            sets.lines().filter(|l| l.starts_with("tg-")).count(),
            plan.set_script.len(),
            plan.rule_script.len(),
            report.chains_written,
            report.sets_written,
            incremental.set_script.len(),
            incremental.rule_script.len(),
        );
    }
    let _ = Applier::new(backend).cleanup(&exec);
    let _ = topo.teardown();
}

/// Counts the bytes written to and read from the kernel's tools.
struct Counting<E> {
    inner: E,
    sent: AtomicUsize,
    read: AtomicUsize,
}

impl<E: Executor> Executor for Counting<E> {
    fn run(&self, program: &str, args: &[String], stdin: Option<&str>) -> Result<String, ExecError> {
        self.sent.fetch_add(stdin.map_or(0, str::len), Ordering::Relaxed);
        let out = self.inner.run(program, args, stdin)?;
        self.read.fetch_add(out.len(), Ordering::Relaxed);
        Ok(out)
    }
}

/// A pod of the generated cluster's shape on node-0 (new pod number `i`).
fn extra_pod(i: usize, namespaces: usize, node: &str) -> PodInfo {
    PodInfo {
        namespace: format!("ns-{}", i % namespaces),
        name: format!("extra-{i}"),
        labels: BTreeMap::from([
            ("app".to_string(), format!("app-{}", i % APPS)),
            ("tier".to_string(), "web".to_string()),
        ]),
        ips: vec![IpAddr::V4(Ipv4Addr::new(
            10,
            200 + (i >> 16) as u8,
            ((i >> 8) & 0xff) as u8,
            (i & 0xff) as u8,
        ))],
        node: Some(node.to_string()),
        ports: vec![ContainerPort {
            name: Some("http".into()),
            port: 8080,
            protocol: Protocol::Tcp,
        }],
        host_network: false,
    }
}

/// One object set to a state (`None`: removed).
#[derive(Clone)]
enum Edit {
    Pod(String, String, Option<PodInfo>),
    Policy(PolicyId, Option<Policy>),
}

/// Applies `edits` to `cluster`; returns the edits that undo them.
fn apply_edits(cluster: &mut Cluster, edits: &[Edit]) -> Vec<Edit> {
    let mut undo = Vec::new();
    for edit in edits {
        match edit {
            Edit::Pod(namespace, name, pod) => {
                undo.push(Edit::Pod(
                    namespace.clone(),
                    name.clone(),
                    cluster.pod(namespace, name).cloned(),
                ));
                match pod {
                    Some(pod) => cluster.upsert_pod(pod.clone()),
                    None => {
                        cluster.remove_pod(namespace, name);
                    }
                }
            }
            Edit::Policy(id, policy) => {
                undo.push(Edit::Policy(id.clone(), cluster.policy(id).cloned()));
                match policy {
                    Some(policy) => cluster.upsert_policy(policy.clone()),
                    None => {
                        cluster.remove_policy(id);
                    }
                }
            }
        }
    }
    undo.reverse();
    undo
}

fn pod_edit(pod: PodInfo) -> Edit {
    Edit::Pod(pod.namespace.clone(), pod.name.clone(), Some(pod))
}

/// The churn scenarios: name and the edits of the event(s), on the cluster `base`.
fn scenarios(base: &Cluster, pods: usize) -> Vec<(&'static str, Vec<Edit>)> {
    let namespaces = namespaces_for(pods);
    let mut out = Vec::new();
    // pod-0 is on node-0 (`i % nodes`), in ns-0, tier web: a peer of many policies.
    out.push(("(a) one pod added", vec![pod_edit(extra_pod(0, namespaces, "node-0"))]));
    out.push((
        "(b) one pod deleted",
        vec![Edit::Pod("ns-0".into(), "pod-0".into(), None)],
    ));
    if let Some(mut pod) = base.pod("ns-0", "pod-0").cloned() {
        pod.labels.insert("tier".into(), "api".into());
        out.push(("(c) one pod's labels changed", vec![pod_edit(pod)]));
    }
    let changed = Policy::from_k8s(&policy(0, namespaces, 1)).unwrap_or_else(|e| panic!("{e}"));
    out.push((
        "(d) one policy changed",
        vec![Edit::Policy(changed.id.clone(), Some(changed))],
    ));
    // 50 pods start and 50 stop, spread over the cluster (a few on node-0).
    let nodes = pods.div_ceil(PODS_PER_NODE);
    let mut burst = Vec::new();
    for k in 0..50 {
        burst.push(pod_edit(extra_pod(
            k + 1,
            namespaces,
            &format!("node-{}", (k * 7) % nodes),
        )));
        let i = k * (pods / 50) + 1;
        burst.push(Edit::Pod(format!("ns-{}", i % namespaces), format!("pod-{i}"), None));
    }
    out.push(("(e) 100 pod events in one sync", burst));
    out
}

struct Row {
    name: &'static str,
    from_scratch: Vec<Duration>,
    compile_render: Vec<Duration>,
    apply: Vec<Duration>,
    sent: usize,
    read: usize,
}

/// The compile + render a sync does (what changed), timed on compilers of
/// its own that see the same cluster as the syncer.
struct Compiles {
    view: NodeView,
    compilers: Vec<(IncrementalCompiler, RenderCache)>,
}

impl Compiles {
    fn run(&mut self, cluster: &Cluster) -> Duration {
        let started = Instant::now();
        for (compiler, cache) in &mut self.compilers {
            let rules = compiler.compile(cluster, &self.view);
            std::hint::black_box(render_with(&rules, &RenderOptions::default(), cache));
        }
        started.elapsed()
    }
}

fn churn(pods: usize, policies: usize, runs: usize) {
    let mut live = generate(pods, policies);
    let mut topo = Topology::build(&Cluster::new(), &[topology::default_node()]).unwrap_or_else(|e| panic!("{e}"));
    let exec = Counting {
        inner: NetnsExecutor::new(topo.nodes()[0].netns.clone()),
        sent: AtomicUsize::new(0),
        read: AtomicUsize::new(0),
    };
    let identity = NodeIdentity {
        name: "node-0".into(),
        addresses: vec![IpAddr::V4(Ipv4Addr::new(10, 63, 0, 1))],
    };
    let mut syncer = Syncer::new(identity, &exec, SyncOptions::default());
    let mut compiles = Compiles {
        view: syncer.node_view(),
        compilers: syncer
            .families()
            .iter()
            .map(|f| (IncrementalCompiler::new(*f), RenderCache::default()))
            .collect(),
    };
    let started = Instant::now();
    syncer.sync(&live).unwrap_or_else(|e| panic!("{e}"));
    println!(
        "{pods} pods / {policies} policies: first full sync {} ({} bytes sent)",
        ms(started.elapsed()),
        exec.sent.load(Ordering::Relaxed)
    );
    compiles.run(&live);
    let mut rows = Vec::new();
    let mut timed =
        |name: &'static str, edits: &[Edit], live: &mut Cluster, syncer: &mut Syncer<&Counting<NetnsExecutor>>| {
            let mut row = Row {
                name,
                from_scratch: Vec::new(),
                compile_render: Vec::new(),
                apply: Vec::new(),
                sent: 0,
                read: 0,
            };
            for _ in 0..runs {
                let undo = apply_edits(live, edits);
                let started = Instant::now();
                std::hint::black_box(syncer.render_all(live));
                row.from_scratch.push(started.elapsed());
                let compile_render = compiles.run(live);
                let (sent, read) = (exec.sent.load(Ordering::Relaxed), exec.read.load(Ordering::Relaxed));
                let started = Instant::now();
                if edits.is_empty() {
                    syncer.resync(live)
                } else {
                    syncer.sync(live)
                }
                .unwrap_or_else(|e| panic!("{name}: {e}"));
                let total = started.elapsed();
                row.compile_render.push(compile_render);
                row.apply.push(total.saturating_sub(compile_render));
                row.sent = exec.sent.load(Ordering::Relaxed) - sent;
                row.read = exec.read.load(Ordering::Relaxed) - read;
                // Back to the base state for the next run (not timed).
                apply_edits(live, &undo);
                compiles.run(live);
                syncer.sync(live).unwrap_or_else(|e| panic!("{name}: back: {e}"));
            }
            rows.push(row);
        };
    for (name, edits) in scenarios(&live, pods) {
        timed(name, &edits, &mut live, &mut syncer);
    }
    timed("(f) resync, no drift", &[], &mut live, &mut syncer);
    println!(
        "| {pods} / {policies} | compile + render from scratch | compile + render of the sync | apply | bytes sent | bytes read |"
    );
    println!("|---|---|---|---|---|---|");
    for row in rows {
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            row.name,
            ms(median(row.from_scratch)),
            ms(median(row.compile_render)),
            ms(median(row.apply)),
            row.sent,
            row.read
        );
    }
    drop(syncer);
    let _ = Applier::new(backend::detect(&exec).unwrap_or(backend::Backend::Nft)).cleanup(&exec);
    let _ = topo.teardown();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Err(e) = tierguard_conformance::netns::preflight() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            eprintln!("restore_timing: cannot run: {e}");
            std::process::exit(1);
        }
        println!("restore_timing: skipped: {e}");
        return;
    }
    topology::install_signal_cleanup();
    topology::sweep_stale();
    let runs = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(5usize)
        .max(1);
    if args.iter().any(|a| a == "--churn") {
        churn(10_000, 1_000, runs);
        if args.iter().any(|a| a == "--large") {
            churn(50_000, 5_000, runs);
        }
        return;
    }
    let sizes: &[(usize, usize)] = if args.iter().any(|a| a == "--quick") {
        &[(1_000, 100)]
    } else {
        &[(1_000, 100), (10_000, 1_000)]
    };
    for &(pods, policies) in sizes {
        let cluster = generate(pods, policies);
        // One policy changes: policy-0's port.
        let mut changed = cluster.clone();
        changed
            .apply_network_policy(&policy(0, namespaces_for(pods), 1))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut figures = Figures {
            render: Vec::new(),
            restore_full: Vec::new(),
            apply_full: Vec::new(),
            apply_incremental: Vec::new(),
        };
        for run in 0..runs {
            run_once(pods, policies, &cluster, &changed, &mut figures, run == 0);
        }
        println!(
            "{pods} pods / {policies} policies, median of {runs}: compile+render {}, \
             ipset restore + iptables-restore of the full output {}, \
             applier full apply {}, incremental apply after one policy change {}",
            ms(median(figures.render)),
            ms(median(figures.restore_full)),
            ms(median(figures.apply_full)),
            ms(median(figures.apply_incremental)),
        );
    }
}
