//! Enforcement on three nodes: after every kubectl change, real TCP and
//! UDP probes between the pods must show what the engine predicts from the
//! objects in the API server; then the kubectl -> kernel latency of many
//! lone changes and of a burst.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tierguard_conformance::conformance::dataplane::Outcome;
use tierguard_integration::e2e::fabric::{PodPlan, fingerprint};
use tierguard_integration::e2e::kubectl::Kubectl;
use tierguard_integration::e2e::process::wait_for;

use crate::cluster::{self, Agent};
use crate::report::{Report, show};
use crate::setup::World;

/// One change made through kubectl.
type Step = Box<dyn Fn(&Kubectl) -> anyhow::Result<()>>;

pub fn run(world: &mut World, report: &mut Report) -> anyhow::Result<()> {
    println!("== enforcement on three nodes");
    start_cluster(world)?;
    let k = world.kubectl.clone();
    let examples = world.repo.join("deploy/examples");
    let three_tier = examples.join("three-tier").display().to_string();
    let steps: Vec<(&str, Step)> = vec![
        ("no policies: every pod reaches every pod", Box::new(|_| Ok(()))),
        (
            // No --dry-run=server of the whole folder first: in a dry run nothing
            // is stored, so the later policies would be judged without the
            // default-deny that carries DNS (each object is reviewed against
            // what is stored or admitted, as it must be).
            "kubectl apply -f deploy/examples/three-tier/",
            Box::new(move |k| {
                let out = k.run(&["apply", "-f", &three_tier], None)?;
                show("kubectl apply -f deploy/examples/three-tier/", &out.printed());
                anyhow::ensure!(out.ok, "refused");
                Ok(())
            }),
        ),
        (
            "kubectl label pod shop/fe-b tier=backend",
            Box::new(|k| {
                k.ok(&["-n", "shop", "label", "pod", "fe-b", "tier=backend", "--overwrite"])
                    .map(drop)
            }),
        ),
        (
            "policies across namespaces: web-frontend -> shop backend on 8080",
            Box::new(|k| {
                for object in cross_namespace_policies() {
                    let out = k.apply_json(&object)?;
                    show("kubectl apply", &out.printed());
                }
                Ok(())
            }),
        ),
        (
            "kubectl label namespace tools tier=frontend",
            Box::new(|k| k.ok(&["label", "namespace", "tools", "tier=frontend"]).map(drop)),
        ),
        (
            "kubectl delete networkpolicy -n shop data",
            Box::new(|k| k.ok(&["-n", "shop", "delete", "networkpolicy", "data"]).map(drop)),
        ),
        (
            "kubectl delete pod -n shop be-b",
            Box::new(|k| {
                k.ok(&["-n", "shop", "delete", "pod", "be-b", "--grace-period=0", "--force"])
                    .map(drop)
            }),
        ),
        (
            "kubectl create pod shop/be-b again",
            Box::new(|k| {
                let plan = plan("shop", "be-b")?;
                cluster::create_pod(k, &plan).map(drop)
            }),
        ),
    ];
    for (name, change) in &steps {
        report.check(&format!("enforcement: {name}"), || {
            change(&k)?;
            verify(world, name)
        });
    }
    report.check("kubectl -> kernel latency of lone changes, per node", || latency(world));
    report.check("a burst of 100 pod label changes is coalesced", || burst(world));
    Ok(())
}

fn plan(namespace: &str, name: &str) -> anyhow::Result<PodPlan> {
    cluster::pod_plans()
        .into_iter()
        .find(|p| p.namespace == namespace && p.name == name)
        .with_context(|| format!("no plan for {namespace}/{name}"))
}

/// Nodes, namespaces and pods through the API, then one agent per node.
fn start_cluster(world: &mut World) -> anyhow::Result<()> {
    let k = world.kubectl.clone();
    for node in cluster::nodes() {
        let object = serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {
            "name": node.name, "labels": {"kubernetes.io/hostname": node.name, "kubernetes.io/os": "linux"}}});
        k.run(&["create", "-f", "-"], Some(&object.to_string()))?
            .success("creating a Node")?;
        let status = serde_json::json!({"status": {"addresses": [
            {"type": "InternalIP", "address": node.ip.to_string()},
            {"type": "Hostname", "address": node.name}]}});
        k.ok(&[
            "patch",
            "node",
            &node.name,
            "--subresource=status",
            "--type=merge",
            "-p",
            &status.to_string(),
        ])?;
    }
    let shop_ns = world.repo.join("deploy/examples/three-tier/00-namespace.yaml");
    k.ok(&["apply", "-f", &shop_ns.display().to_string()])?;
    k.ok(&["create", "namespace", "web-frontend"])?;
    k.ok(&["create", "namespace", "tools"])?;
    for plan in cluster::pod_plans() {
        cluster::create_pod(&k, &plan)?;
    }
    let kubeconfig = world.env_dir.join("enforcer-node.kubeconfig");
    world.plane.service_account_kubeconfig(
        "tierguard-system",
        "tierguard-enforcer",
        &format!(
            "https://{}:{}",
            world.plane.address,
            tierguard_integration::e2e::controlplane::API_PORT
        ),
        &kubeconfig,
    )?;
    let fabric = world.fabric.as_ref().context("no fabric")?;
    let bin = world.tierguard_bin.join("tierguard-enforcer");
    let mut agents = Vec::new();
    for node in fabric.topology().nodes() {
        let log = world
            .env_dir
            .join(format!("logs/tierguard-enforcer-{}.log", node.spec.name));
        agents.push(cluster::start_agent(
            &world.netns,
            &bin,
            &node.spec,
            &node.netns,
            &kubeconfig,
            &log,
        )?);
    }
    world.agents = agents;
    let since = Instant::now() - Duration::from_secs(3600);
    for agent in &mut world.agents {
        wait_for(
            &format!("the first sync on {}", agent.node.name),
            Duration::from_secs(60),
            Duration::from_millis(100),
            || {
                if let Some(status) = agent.process.exited() {
                    anyhow::bail!("the agent exited ({status}):\n{}", agent.process.log_tail(20));
                }
                Ok((!agent.syncs.after(since).is_empty()).then_some(()))
            },
        )?;
    }
    Ok(())
}

fn cross_namespace_policies() -> Vec<serde_json::Value> {
    let dns_egress = serde_json::json!({
        "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]});
    vec![
        serde_json::json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "default-deny-all", "namespace": "web-frontend"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "egress": [dns_egress]}}),
        serde_json::json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "to-shop-backend", "namespace": "web-frontend"},
            "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{
                "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "shop"}},
                        "podSelector": {"matchLabels": {"tier": "backend"}}}],
                "ports": [{"protocol": "TCP", "port": 8080}]}]}}),
        serde_json::json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "backend-from-frontend-namespaces", "namespace": "shop"},
            "spec": {"podSelector": {"matchLabels": {"tier": "backend"}}, "policyTypes": ["Ingress"], "ingress": [{
                "from": [{"namespaceSelector": {"matchLabels": {"tier": "frontend"}}}],
                "ports": [{"protocol": "TCP", "port": 8080}]}]}}),
    ]
}

/// Probes every pair until they show the engine's prediction (the agents
/// converge within moments; a mismatch that persists is a failure).
fn verify(world: &World, step: &str) -> anyhow::Result<()> {
    let fabric = world.fabric.as_ref().context("no fabric")?;
    let mut last = String::new();
    for attempt in 1..=6 {
        let live = cluster::live_cluster(&world.kubectl)?;
        let probes = cluster::probes(&live);
        let want = cluster::expected(&live, &probes)?;
        fabric.flush_conntrack()?;
        let got = fabric.probe(&probes)?;
        let wrong: Vec<String> = probes
            .iter()
            .zip(want.iter().zip(&got))
            .filter(|(_, (w, g))| w != g)
            .map(|(p, (w, g))| {
                let cell = |o: &Outcome| if *o == Outcome::Reachable { "." } else { "X" };
                format!(
                    "{} -> {} {}/{}: expected {} got {}",
                    p.from,
                    p.to,
                    p.protocol,
                    p.port,
                    cell(w),
                    cell(g)
                )
            })
            .collect();
        if wrong.is_empty() {
            show(
                &format!("{step}: {} probes match the engine (attempt {attempt})", probes.len()),
                &cluster::matrices(&probes, &got),
            );
            return Ok(());
        }
        last = format!(
            "{} of {} probes differ:\n{}",
            wrong.len(),
            probes.len(),
            wrong.join("\n")
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    anyhow::bail!("{last}")
}

/// When `agent`'s rules first differ from `before`, measured from
/// `returned`: the first "synced" line after `since` whose aftermath shows a
/// changed kernel (conservatively the latest sync read by then).
fn kernel_latency(
    agent: &Agent,
    before: &[u8; 32],
    since: Instant,
    returned: Instant,
) -> anyhow::Result<Option<Duration>> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut examined = 0;
    while Instant::now() < deadline {
        let stamps = agent.syncs.after(since);
        if stamps.len() > examined {
            examined = stamps.len();
            if fingerprint(&agent.netns)? != *before {
                let last = agent.syncs.after(since).last().copied().unwrap_or(returned);
                return Ok(Some(last.saturating_duration_since(returned)));
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(None)
}

#[derive(Default)]
struct Samples(BTreeMap<(String, String), Vec<Duration>>);

impl Samples {
    fn add(&mut self, kind: &str, node: &str, d: Duration) {
        self.0.entry((kind.to_string(), node.to_string())).or_default().push(d);
    }

    fn table(&self) -> String {
        let mut text = format!(
            "{:<22} {:<8} {:>4} {:>9} {:>9} {:>9}\n",
            "change", "node", "n", "p50 ms", "p99 ms", "max ms"
        );
        for ((kind, node), samples) in &self.0 {
            let mut s = samples.clone();
            s.sort();
            let pick = |q: f64| {
                let i = ((s.len() as f64 - 1.0) * q).round() as usize;
                s.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
            };
            text.push_str(&format!(
                "{kind:<22} {node:<8} {:>4} {:>9.1} {:>9.1} {:>9.1}\n",
                s.len(),
                pick(0.5),
                pick(0.99),
                pick(1.0)
            ));
        }
        text
    }
}

/// One change: fingerprints before, the kubectl call, then each node's latency.
fn measure(
    world: &World,
    samples: &mut Samples,
    kind: &str,
    change: impl FnOnce() -> anyhow::Result<Instant>,
) -> anyhow::Result<usize> {
    let before: Vec<[u8; 32]> = world
        .agents
        .iter()
        .map(|a| fingerprint(&a.netns))
        .collect::<anyhow::Result<_>>()?;
    let since = Instant::now();
    let returned = change()?;
    let mut seen = 0;
    for (agent, before) in world.agents.iter().zip(&before) {
        if let Some(d) = kernel_latency(agent, before, since, returned)? {
            samples.add(kind, &agent.node.name, d);
            seen += 1;
        }
    }
    // let follow-up syncs settle so the next change starts from a quiet node
    std::thread::sleep(Duration::from_millis(150));
    Ok(seen)
}

fn latency(world: &mut World) -> anyhow::Result<()> {
    let k = world.kubectl.clone();
    let mut samples = Samples::default();
    let mut changes = 0;
    let backend = world.repo.join("deploy/examples/three-tier/30-backend.yaml");
    let backend_text = std::fs::read_to_string(&backend)?;
    let backend_obj: serde_json::Value = serde_yaml::from_str(&backend_text)?;
    for i in 0..20 {
        let mut object = backend_obj.clone();
        if i % 2 == 0 {
            object["spec"]["ingress"][0]["ports"]
                .as_array_mut()
                .context("ports")?
                .push(serde_json::json!({"protocol": "TCP", "port": 9090}));
        }
        measure(world, &mut samples, "policy applied", || {
            Ok(k.apply_json(&object)?.returned)
        })?;
        changes += 1;
    }
    for i in 0..20 {
        let tier = if i % 2 == 0 { "tier=data" } else { "tier=backend" };
        measure(world, &mut samples, "pod labelled", || {
            let out = k.run(&["-n", "shop", "label", "pod", "be-a", tier, "--overwrite"], None)?;
            anyhow::ensure!(out.ok, "{}", out.printed());
            Ok(out.returned)
        })?;
        changes += 1;
    }
    for i in 0..10 {
        let tier = if i % 2 == 0 { "tier=backend" } else { "tier=frontend" };
        measure(world, &mut samples, "namespace labelled", || {
            let out = k.run(&["label", "namespace", "tools", tier, "--overwrite"], None)?;
            anyhow::ensure!(out.ok, "{}", out.printed());
            Ok(out.returned)
        })?;
        changes += 1;
    }
    let nodes = cluster::nodes();
    for i in 0..10u8 {
        let node = &nodes[usize::from(i) % nodes.len()];
        let plan = PodPlan {
            namespace: "shop".into(),
            name: format!("lat-{i}"),
            node: node.name.clone(),
            ip: std::net::Ipv4Addr::new(10, 244, 9, 10 + i),
            labels: [("tier".to_string(), "backend".to_string())].into(),
        };
        measure(world, &mut samples, "pod created", || cluster::create_pod(&k, &plan))?;
        measure(world, &mut samples, "pod deleted", || {
            let out = k.run(
                &["-n", "shop", "delete", "pod", &plan.name, "--grace-period=0", "--force"],
                None,
            )?;
            anyhow::ensure!(out.ok, "{}", out.printed());
            Ok(out.returned)
        })?;
        changes += 2;
    }
    show(
        &format!(
            "kubectl -> kernel latency over {changes} changes (time from kubectl returning to the node's rules changing)"
        ),
        &samples.table(),
    );
    let measured: usize = samples.0.values().map(Vec::len).sum();
    anyhow::ensure!(
        measured >= changes * 2,
        "only {measured} node measurements for {changes} changes on {} nodes",
        world.agents.len()
    );
    verify(world, "after the latency changes")
}

/// 100 pod label changes from 4 kubectl workers at once.
fn burst(world: &mut World) -> anyhow::Result<()> {
    let k = world.kubectl.clone();
    let pods = ["be-a", "be-b", "be-c", "db-c"];
    let since = Instant::now();
    let handles: Vec<_> = pods
        .iter()
        .map(|pod| {
            let (k, pod) = (k.clone(), pod.to_string());
            std::thread::spawn(move || -> anyhow::Result<Instant> {
                let original = if pod == "db-c" { "data" } else { "backend" };
                let other = if pod == "db-c" { "backend" } else { "data" };
                let mut last = Instant::now();
                // 25 changes each: odd, so each pod ends on the other tier
                for i in 0..25 {
                    let tier = if i % 2 == 0 { other } else { original };
                    let out = k.run(
                        &[
                            "-n",
                            "shop",
                            "label",
                            "pod",
                            &pod,
                            &format!("tier={tier}"),
                            "--overwrite",
                        ],
                        None,
                    )?;
                    anyhow::ensure!(out.ok, "{}", out.printed());
                    last = out.returned;
                }
                Ok(last)
            })
        })
        .collect();
    let mut last_call = since;
    for h in handles {
        let t = h.join().map_err(|_| anyhow::anyhow!("a worker panicked"))??;
        last_call = last_call.max(t);
    }
    let calls = since.elapsed();
    // the final state is in the kernel once the rules stop changing
    std::thread::sleep(Duration::from_secs(2));
    let mut lines = vec![format!(
        "100 label changes (4 workers x 25) in {:.2} s of kubectl calls",
        calls.as_secs_f64()
    )];
    for agent in &world.agents {
        let syncs = agent.syncs.after(since);
        let last_sync = syncs.last().copied().unwrap_or(since);
        lines.push(format!(
            "{}: {} syncs during the burst; last sync {:.0} ms after the last kubectl call returned",
            agent.node.name,
            syncs.len(),
            last_sync.saturating_duration_since(last_call).as_secs_f64() * 1000.0
        ));
    }
    show("burst of pod label changes", &lines.join("\n"));
    verify(world, "after the burst")
}
