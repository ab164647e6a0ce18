//! Admission through the real API server: mutation, validation of each
//! example, dry-run, warn mode, namespace deletion, RBAC, the failure
//! policy, concurrent deletes, and certificate rotation under load.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::sys::signal::Signal;
use tierguard_integration::e2e::process::wait_for;

use crate::report::{Report, show};
use crate::setup::World;

pub fn run(world: &mut World, report: &mut Report) -> anyhow::Result<()> {
    println!("== admission through the API server");
    report.check("mutation: a new namespace gets its name and tier labels", || {
        mutation(world)
    });
    report.check("validation: an unknown tier label is refused", || unknown_tier(world));
    let bad = bad_examples(&world.repo)?;
    for (folder, rule) in &bad {
        let name = folder
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        report.check(&format!("validation: {name} is refused with {rule}"), || {
            bad_example(world, folder, rule)
        });
    }
    report.check("warn mode: kubectl shows the violations as warnings", || {
        warn_mode(world)
    });
    report.check("deleting a namespace that holds policies completes", || {
        namespace_deletion(world)
    });
    report.check("RBAC: the ServiceAccounts get what deploy/ grants and no more", || {
        rbac(world)
    });
    report.check("failurePolicy: with the webhook stopped, changes wait (Fail)", || {
        failure_policy(world)
    });
    report.check(
        "concurrent deletes: never both admitted when together they drop DNS",
        || concurrent_deletes(world),
    );
    Ok(())
}

fn labels_of(world: &World, namespace: &str) -> anyhow::Result<serde_json::Value> {
    Ok(world.kubectl.get_json(&["namespace", namespace])?["metadata"]["labels"].clone())
}

fn mutation(world: &mut World) -> anyhow::Result<()> {
    let k = &world.kubectl;
    let out = k.run(&["create", "namespace", "orders-backend"], None)?;
    show("kubectl create namespace orders-backend", &out.printed());
    anyhow::ensure!(out.ok, "refused");
    let labels = labels_of(world, "orders-backend")?;
    show("its labels", &labels.to_string());
    anyhow::ensure!(
        labels["tier"] == "backend",
        "no tier label from the *-backend pattern: {labels}"
    );
    anyhow::ensure!(labels["kubernetes.io/metadata.name"] == "orders-backend", "{labels}");
    let ns = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": "warehouse", "annotations": {"tierguard.io/tier": "data"}}});
    let out = k.run(&["create", "-f", "-"], Some(&ns.to_string()))?;
    show(
        "kubectl create namespace warehouse (annotation tierguard.io/tier: data)",
        &out.printed(),
    );
    anyhow::ensure!(out.ok, "refused");
    let labels = labels_of(world, "warehouse")?;
    show("its labels", &labels.to_string());
    anyhow::ensure!(labels["tier"] == "data", "no tier label from the annotation: {labels}");
    Ok(())
}

fn unknown_tier(world: &mut World) -> anyhow::Result<()> {
    let ns = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": "mystery", "labels": {"tier": "mainframe"}}});
    let out = world.kubectl.run(&["create", "-f", "-"], Some(&ns.to_string()))?;
    show("kubectl create namespace mystery (tier: mainframe)", &out.printed());
    anyhow::ensure!(!out.ok, "admitted");
    anyhow::ensure!(
        out.stderr.contains("denied the request") && out.stderr.contains("mainframe"),
        "not refused by the webhook"
    );
    Ok(())
}

/// Each `deploy/examples/three-tier-bad/` folder with the rule it breaks.
fn bad_examples(repo: &Path) -> anyhow::Result<Vec<(PathBuf, String)>> {
    let root = repo.join("deploy/examples/three-tier-bad");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&root).with_context(|| format!("reading {}", root.display()))? {
        let path = entry?.path();
        if !path.is_dir() {
            continue;
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_uppercase())
            .unwrap_or_default();
        let rule = name.split('-').next().unwrap_or_default().to_string();
        out.push((path, rule));
    }
    out.sort();
    anyhow::ensure!(!out.is_empty(), "no examples in {}", root.display());
    Ok(out)
}

/// The objects of the manifests in `folder` (the files `check` reads, in
/// the same order), as JSON to send to the API server.
fn objects_in(folder: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut out = Vec::new();
    for file in tierguard::input::manifest_files(&[folder.to_path_buf()])? {
        let text = std::fs::read_to_string(&file)?;
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value: serde_json::Value =
                serde::Deserialize::deserialize(doc).with_context(|| format!("parsing {}", file.display()))?;
            if !value.is_null() {
                out.push(value);
            }
        }
    }
    Ok(out)
}

/// The good three-tier example moved into `namespace`: the state a bad
/// example's change is made against.
fn good_state_in(repo: &Path, namespace: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut objects = objects_in(&repo.join("deploy/examples/three-tier"))?;
    for object in &mut objects {
        if object["kind"] == "Namespace" {
            object["metadata"]["name"] = namespace.into();
            object["metadata"]["labels"]["kubernetes.io/metadata.name"] = namespace.into();
        } else {
            object["metadata"]["namespace"] = namespace.into();
        }
    }
    Ok(objects)
}

/// A bad example is a change to a namespace that was in line: the good
/// example is applied in its namespace first, then the bad folder, which
/// must be refused (by the webhook for R1-R3; R4's broken ipBlock is refused
/// by the API server's own validation before any webhook is called).
fn bad_example(world: &mut World, folder: &Path, rule: &str) -> anyhow::Result<()> {
    let objects = objects_in(folder)?;
    let namespace = objects
        .iter()
        .find(|o| o["kind"] == "Namespace")
        .and_then(|o| o["metadata"]["name"].as_str())
        .context("the example has no Namespace")?
        .to_string();
    for object in good_state_in(&world.repo, &namespace)? {
        world.kubectl.apply_json(&object)?;
    }
    let path = folder.display().to_string();
    let mut verdicts = Vec::new();
    for dry_run in [true, false] {
        let mut args = vec!["apply", "-f", path.as_str()];
        if dry_run {
            args.push("--dry-run=server");
        }
        let out = world.kubectl.run(&args, None)?;
        let relative = folder.strip_prefix(&world.repo).unwrap_or(folder).display().to_string();
        show(
            &format!(
                "kubectl apply -f {relative}{}",
                if dry_run { " --dry-run=server" } else { "" }
            ),
            &out.printed(),
        );
        anyhow::ensure!(!out.ok, "admitted (dry run: {dry_run})");
        let refused_as_expected = if rule == "R4" {
            out.stderr.contains("is invalid") && out.stderr.contains("except")
        } else {
            out.stderr.contains("denied the request") && out.stderr.contains(rule.to_string().as_str())
        };
        anyhow::ensure!(refused_as_expected, "not refused for {rule} (dry run: {dry_run})");
        verdicts.push(out.stderr.lines().filter(|l| l.contains("Error")).count());
    }
    anyhow::ensure!(
        verdicts[0] == verdicts[1],
        "dry run and real apply differ: {verdicts:?}"
    );
    Ok(())
}

fn set_mode(world: &mut World, from: &str, to: &str) -> anyhow::Result<()> {
    let cm = world
        .kubectl
        .get_json(&["-n", "tierguard-system", "configmap", "tierguard-template"])?;
    let text = cm["data"]["template.yaml"].as_str().context("template.yaml")?;
    let old = format!("mode: {from}");
    anyhow::ensure!(text.contains(&old), "the template has no `{old}`");
    let patch = serde_json::json!({"data": {"template.yaml": text.replacen(&old, &format!("mode: {to}"), 1)}});
    world.kubectl.ok(&[
        "-n",
        "tierguard-system",
        "patch",
        "configmap",
        "tierguard-template",
        "--type=merge",
        "-p",
        &patch.to_string(),
    ])?;
    // what `kubectl rollout restart` does for the Deployment: the new pod
    // reads the updated ConfigMap volume
    world.stop_webhook(Signal::SIGKILL);
    world.project_template()?;
    world.start_webhook()
}

fn warn_mode(world: &mut World) -> anyhow::Result<()> {
    set_mode(world, "enforce", "warn")?;
    let result = (|| -> anyhow::Result<()> {
        let folder = world
            .repo
            .join("deploy/examples/three-tier-bad/r3-data-open-to-frontend");
        let out = world
            .kubectl
            .run(&["apply", "-f", &folder.display().to_string()], None)?;
        show(
            "mode: warn; kubectl apply -f deploy/examples/three-tier-bad/r3-data-open-to-frontend",
            &out.printed(),
        );
        anyhow::ensure!(out.ok, "refused in warn mode");
        anyhow::ensure!(
            out.stderr.contains("Warning:") && out.stderr.contains("R3"),
            "kubectl printed no R3 warning"
        );
        world
            .kubectl
            .ok(&["-n", "shop-r3", "delete", "networkpolicy", "data-open"])
            .map(drop)
    })();
    set_mode(world, "warn", "enforce")?;
    result
}

fn namespace_deletion(world: &mut World) -> anyhow::Result<()> {
    let before = world
        .kubectl
        .ok(&["-n", "shop-r2", "get", "networkpolicies", "-o", "name"])?;
    anyhow::ensure!(before.lines().count() >= 2, "shop-r2 holds no policies: {before}");
    let started = Instant::now();
    let out = world.kubectl.run(
        &["delete", "namespace", "shop-r2", "--wait=true", "--timeout=120s"],
        None,
    )?;
    show(
        &format!(
            "kubectl delete namespace shop-r2 (held {} policies)",
            before.lines().count()
        ),
        &format!("{}\n(took {:.1} s)", out.printed(), started.elapsed().as_secs_f64()),
    );
    anyhow::ensure!(out.ok, "the deletion did not complete");
    let gone = world.kubectl.run(&["get", "namespace", "shop-r2"], None)?;
    anyhow::ensure!(!gone.ok && gone.stderr.contains("NotFound"), "shop-r2 still exists");
    Ok(())
}

fn rbac(world: &mut World) -> anyhow::Result<()> {
    let dir = world.env_dir.clone();
    let webhook = world.kubectl.as_user(&dir.join("webhook.kubeconfig"));
    let enforcer = world.kubectl.as_user(&dir.join("enforcer.kubeconfig"));
    world.plane.service_account_kubeconfig(
        "tierguard-system",
        "tierguard-enforcer",
        &format!(
            "https://127.0.0.1:{}",
            tierguard_integration::e2e::controlplane::API_PORT
        ),
        enforcer.kubeconfig(),
    )?;
    let mut lines = Vec::new();
    for (who, k, verb, resource, expect) in [
        ("webhook", &webhook, "watch", "networkpolicies", true),
        ("webhook", &webhook, "list", "namespaces", true),
        ("webhook", &webhook, "create", "networkpolicies", false),
        ("webhook", &webhook, "get", "secrets", false),
        ("enforcer", &enforcer, "watch", "pods", true),
        ("enforcer", &enforcer, "list", "networkpolicies", true),
        ("enforcer", &enforcer, "delete", "pods", false),
        ("enforcer", &enforcer, "get", "nodes", false),
    ] {
        let out = k.run(&["auth", "can-i", verb, resource, "--all-namespaces"], None)?;
        let yes = out.stdout.trim() == "yes";
        lines.push(format!("{who}: can-i {verb} {resource} -> {}", out.stdout.trim()));
        anyhow::ensure!(yes == expect, "{who} can-i {verb} {resource}: {}", out.printed());
    }
    let out = webhook.run(&["-n", "shop-r1", "delete", "networkpolicy", "gateway"], None)?;
    lines.push(format!("webhook: kubectl delete networkpolicy -> {}", out.printed()));
    anyhow::ensure!(
        !out.ok && out.stderr.contains("Forbidden"),
        "the webhook's account could delete"
    );
    show("RBAC of the ServiceAccounts", &lines.join("\n"));
    Ok(())
}

fn failure_policy(world: &mut World) -> anyhow::Result<()> {
    world.stop_webhook(Signal::SIGKILL);
    let result = (|| -> anyhow::Result<()> {
        let np = serde_json::json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "during-outage", "namespace": "shop-r1"},
            "spec": {"podSelector": {"matchLabels": {"tier": "backend"}}, "policyTypes": ["Ingress"]}});
        let out = world.kubectl.run(&["apply", "-f", "-"], Some(&np.to_string()))?;
        show(
            "webhook stopped; kubectl apply a NetworkPolicy in shop-r1",
            &out.printed(),
        );
        anyhow::ensure!(!out.ok && out.stderr.contains("failed calling webhook"), "not refused");
        let out = world.kubectl.run(&["create", "namespace", "outage-frontend"], None)?;
        show(
            "webhook stopped; kubectl create namespace outage-frontend",
            &out.printed(),
        );
        anyhow::ensure!(!out.ok && out.stderr.contains("failed calling webhook"), "not refused");
        let mut system = np.clone();
        system["metadata"]["namespace"] = "kube-system".into();
        let out = world.kubectl.run(&["apply", "-f", "-"], Some(&system.to_string()))?;
        show(
            "webhook stopped; kubectl apply a NetworkPolicy in kube-system (excluded)",
            &out.printed(),
        );
        anyhow::ensure!(out.ok, "a change in an excluded namespace was blocked");
        world
            .kubectl
            .ok(&["-n", "kube-system", "delete", "networkpolicy", "during-outage"])?;
        Ok(())
    })();
    world.start_webhook()?;
    let out = world.kubectl.run(&["create", "namespace", "outage-frontend"], None)?;
    show("webhook back; kubectl create namespace outage-frontend", &out.printed());
    anyhow::ensure!(out.ok, "still refused after the webhook came back");
    result
}

fn api_url(path: &str) -> String {
    format!(
        "https://127.0.0.1:{}{path}",
        tierguard_integration::e2e::controlplane::API_PORT
    )
}

fn policy_url(namespace: &str, name: &str) -> String {
    api_url(&format!(
        "/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies/{name}"
    ))
}

fn dns_policy(namespace: &str, name: &str) -> serde_json::Value {
    serde_json::json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{
            "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
            "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}]}})
}

/// Issue: each of two policies allows DNS; deleting either alone is fine,
/// deleting both drops DNS (R2). Sent at the same moment to one webhook,
/// never both may be admitted; each alone always is.
fn concurrent_deletes(world: &mut World) -> anyhow::Result<()> {
    const PAIRS: usize = 100;
    let k = world.kubectl.clone();
    k.ok(&["create", "namespace", "race"])?;
    let deny_all = serde_json::json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "deny-all", "namespace": "race"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}});
    // DNS first, then the default-deny (the order that never drops DNS)
    k.apply_json(&dns_policy("race", "dns-a"))?;
    k.apply_json(&dns_policy("race", "dns-b"))?;
    k.apply_json(&deny_all)?;
    let client = world.api_client()?;
    let create = |name: &str| -> anyhow::Result<()> {
        let url = api_url("/apis/networking.k8s.io/v1/namespaces/race/networkpolicies");
        let r = client.post(&url).json(&dns_policy("race", name)).send()?;
        anyhow::ensure!(
            r.status().is_success(),
            "re-creating {name}: {} {}",
            r.status(),
            r.text()?
        );
        Ok(())
    };
    let mut both = 0;
    let mut one = 0;
    let mut other = Vec::new();
    for _ in 0..PAIRS {
        let barrier = Arc::new(Barrier::new(2));
        let handles: Vec<_> = ["dns-a", "dns-b"]
            .into_iter()
            .map(|name| {
                let (client, barrier) = (client.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    client
                        .delete(policy_url("race", name))
                        .send()
                        .map(|r| r.status().as_u16())
                        .unwrap_or(0)
                })
            })
            .collect();
        let codes: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap_or(0)).collect();
        let admitted = codes.iter().filter(|c| **c == 200).count();
        match admitted {
            2 => both += 1,
            1 if codes.iter().any(|c| *c == 403 || *c == 400) => one += 1,
            _ => other.push(codes.clone()),
        }
        for (name, code) in ["dns-a", "dns-b"].iter().zip(&codes) {
            if *code == 200 {
                create(name)?;
            }
        }
    }
    // each alone is fine
    let mut alone = 0;
    for name in ["dns-a", "dns-b"].iter().cycle().take(20) {
        let status = client.delete(policy_url("race", name)).send()?.status();
        anyhow::ensure!(status.is_success(), "deleting {name} alone was refused: {status}");
        alone += 1;
        create(name)?;
    }
    // The same with two UPDATEs, each taking the DNS rule out of one of the
    // two policies (each stays as an egress policy with no rules).
    let mut updates_both = 0;
    for _ in 0..PAIRS {
        let objects: Vec<serde_json::Value> = ["dns-a", "dns-b"]
            .iter()
            .map(|name| k.get_json(&["-n", "race", "networkpolicy", name]))
            .collect::<anyhow::Result<_>>()?;
        let barrier = Arc::new(Barrier::new(2));
        let handles: Vec<_> = ["dns-a", "dns-b"]
            .into_iter()
            .zip(objects)
            .map(|(name, mut object)| {
                let (client, barrier) = (client.clone(), barrier.clone());
                std::thread::spawn(move || {
                    object["spec"]["egress"] = serde_json::json!([]);
                    barrier.wait();
                    client
                        .put(policy_url("race", name))
                        .json(&object)
                        .send()
                        .map(|r| r.status().as_u16())
                        .unwrap_or(0)
                })
            })
            .collect();
        let codes: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap_or(0)).collect();
        if codes.iter().all(|c| *c == 200) {
            updates_both += 1;
        }
        for (name, code) in ["dns-a", "dns-b"].iter().zip(&codes) {
            if *code == 200 {
                k.apply_json(&dns_policy("race", name))?;
            }
        }
    }
    show(
        "concurrent changes in namespace race (one webhook)",
        &format!(
            "{PAIRS} pairs of concurrent DELETEs of dns-a and dns-b: both admitted {both}, one admitted {one}, \
             other {other:?}\n20 single DELETEs: {alone} admitted\n{PAIRS} pairs of concurrent UPDATEs each \
             taking the DNS rule out of one of the two: both admitted {updates_both}"
        ),
    );
    anyhow::ensure!(
        both == 0 && other.is_empty(),
        "{both} pairs both admitted, {} odd",
        other.len()
    );
    anyhow::ensure!(updates_both == 0, "{updates_both} update pairs both admitted");
    k.ok(&["delete", "namespace", "race", "--wait=false"])?;
    Ok(())
}

/// The serving certificate is renewed (twice) while reviews keep arriving
/// through the API server; none may fail.
pub fn rotation(world: &mut World, report: &mut Report) -> anyhow::Result<()> {
    report.check(
        "certificate rotation while the API server sends reviews: no request fails",
        || {
            let client = world.api_client()?;
            let served = || -> anyhow::Result<Vec<u8>> {
                // a new client each time: a resumed TLS session would report the old certificate
                let r = world
                    .webhook_client()?
                    .get(format!(
                        "https://{}:{}/healthz",
                        crate::setup::WEBHOOK_HOST,
                        crate::setup::WEBHOOK_PORT
                    ))
                    .send()?;
                let info = r
                    .extensions()
                    .get::<reqwest::tls::TlsInfo>()
                    .and_then(|i| i.peer_certificate().map(<[u8]>::to_vec));
                info.context("no peer certificate")
            };
            let stop = Arc::new(AtomicBool::new(false));
            let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
            let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
            let loader = {
                let (stop, sent, failed, failures) = (stop.clone(), sent.clone(), failed.clone(), failures.clone());
                std::thread::spawn(move || {
                    let url = api_url("/apis/networking.k8s.io/v1/namespaces/shop/networkpolicies?dryRun=All");
                    let mut np = dns_policy("shop", "rotation-probe");
                    np["spec"]["podSelector"] = serde_json::json!({"matchLabels": {"tier": "backend"}});
                    while !stop.load(Ordering::Relaxed) {
                        sent.fetch_add(1, Ordering::Relaxed);
                        match client.post(&url).json(&np).send() {
                            Ok(r) if r.status().is_success() => {}
                            Ok(r) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                let status = r.status();
                                let body = r.text().unwrap_or_default();
                                failures
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .push(format!("{status}: {body}"));
                            }
                            Err(e) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                failures.lock().unwrap_or_else(|e| e.into_inner()).push(e.to_string());
                            }
                        }
                    }
                })
            };
            let mut lines = Vec::new();
            let result = (|| -> anyhow::Result<()> {
                std::thread::sleep(Duration::from_secs(1));
                for round in 1..=2 {
                    let before = served()?;
                    world.renew_certificate()?;
                    world.project_secret()?;
                    let changed = wait_for(
                        "the webhook to serve the new certificate",
                        Duration::from_secs(30),
                        Duration::from_millis(100),
                        || Ok((served()? != before).then_some(())),
                    );
                    lines.push(format!(
                        "rotation {round}: {} (source: {:?}); {} reviews sent so far",
                        if changed.is_ok() {
                            "new certificate served"
                        } else {
                            "NOT served"
                        },
                        world.cert_source,
                        sent.load(Ordering::Relaxed)
                    ));
                    changed?;
                    std::thread::sleep(Duration::from_secs(1));
                }
                Ok(())
            })();
            stop.store(true, Ordering::Relaxed);
            let _ = loader.join();
            let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
            lines.push(format!(
                "reviews through the API server during the rotations: {sent} sent, {failed} failed"
            ));
            let failures = failures.lock().unwrap_or_else(|e| e.into_inner());
            lines.extend(failures.iter().take(5).cloned());
            show("certificate rotation", &lines.join("\n"));
            result?;
            anyhow::ensure!(sent > 20, "only {sent} reviews were sent");
            anyhow::ensure!(failed == 0, "{failed} of {sent} reviews failed");
            Ok(())
        },
    );
    Ok(())
}
