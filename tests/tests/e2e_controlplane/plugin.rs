//! `kubectl-tierguard --cluster` against the real API server, after the
//! enforcement part (its pods, policies and relabelled namespaces are in
//! place): the plugin's matrix is what the kernel does (every probe of the
//! fabric), and each subcommand answers the same from the cluster as from
//! the cluster's objects saved to a file.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;
use tierguard_conformance::conformance::dataplane::Outcome;

use crate::cluster;
use crate::report::{Report, show};
use crate::setup::World;

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn plugin(world: &World, args: &[&str]) -> anyhow::Result<Run> {
    let bin = world.tierguard_bin.join("kubectl-tierguard");
    let out = Command::new(&bin)
        .args(args)
        .current_dir(&world.repo)
        .env_remove("KUBECONFIG")
        .env_remove("RUST_LOG")
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    Ok(Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

fn with_cluster<'a>(args: &[&'a str], kubeconfig: &'a str) -> Vec<&'a str> {
    let mut all = args.to_vec();
    all.extend(["--cluster", "--kubeconfig", kubeconfig]);
    all
}

/// The Namespaces, Pods and NetworkPolicies the API server holds, one YAML document each.
fn save_objects(world: &World, file: &Path) -> anyhow::Result<()> {
    let mut text = String::new();
    for what in [&["namespaces"][..], &["pods", "-A"], &["networkpolicies", "-A"]] {
        let list = world.kubectl.get_json(what)?;
        let kind = match what[0] {
            "namespaces" => "Namespace",
            "pods" => "Pod",
            _ => "NetworkPolicy",
        };
        let api_version = if kind == "NetworkPolicy" {
            "networking.k8s.io/v1"
        } else {
            "v1"
        };
        for item in list["items"].as_array().context("no items")? {
            let mut item = item.clone();
            item["kind"] = serde_json::json!(kind);
            item["apiVersion"] = serde_json::json!(api_version);
            text.push_str("---\n");
            text.push_str(&serde_json::to_string(&item)?);
            text.push('\n');
        }
    }
    std::fs::write(file, text).with_context(|| format!("writing {}", file.display()))
}

pub fn run(world: &mut World, report: &mut Report) -> anyhow::Result<()> {
    println!("== kubectl-tierguard --cluster against the API server");
    let kubeconfig = world.kubectl.kubeconfig().display().to_string();
    report.check("kubectl-tierguard matrix --cluster is what the kernel does", || {
        matrix_matches_the_kernel(world, &kubeconfig)
    });
    report.check("kubectl-tierguard --cluster answers as on the saved objects", || {
        let saved: PathBuf = world.env_dir.join("plugin-objects.yaml");
        save_objects(world, &saved)?;
        let saved = saved.display().to_string();
        for args in [
            &["explain", "shop/gw-a", "shop/be-a", "TCP/8080"][..],
            &["explain", "tools/client-a", "shop/db-c", "TCP/5432"],
            &["explain", "-o", "json", "web-frontend/ui-c", "shop/be-a", "TCP/8080"],
            &["matrix", "-n", "shop", "--by", "tier"],
            &["graph", "-n", "shop"],
        ] {
            let live = plugin(world, &with_cluster(args, &kubeconfig))?;
            let mut file_args = args.to_vec();
            file_args.push(&saved);
            let file = plugin(world, &file_args)?;
            anyhow::ensure!(
                matches!(live.code, Some(0 | 1)),
                "{args:?} --cluster: exit {:?}: {}",
                live.code,
                live.stderr
            );
            anyhow::ensure!(
                live.code == file.code && live.stdout == file.stdout,
                "{args:?}: --cluster (exit {:?}):\n{}\nfile (exit {:?}):\n{}{}",
                live.code,
                live.stdout,
                file.code,
                file.stdout,
                file.stderr
            );
            if args[0] == "explain" && args[1] != "-o" {
                show(&format!("kubectl tierguard {}", args.join(" ")), &live.stdout);
            }
        }
        let live = plugin(world, &with_cluster(&["check", "-o", "json"], &kubeconfig))?;
        let file = plugin(world, &["check", "-o", "json", &saved])?;
        let violations = |run: &Run| -> anyhow::Result<serde_json::Value> {
            let v: serde_json::Value =
                serde_json::from_str(&run.stdout).with_context(|| format!("check -o json: {}", run.stderr))?;
            Ok(serde_json::json!([
                v["ok"],
                v["violations"],
                v["warnings"],
                v["networkPolicies"]
            ]))
        };
        anyhow::ensure!(live.code == file.code, "check: exit {:?} vs {:?}", live.code, file.code);
        anyhow::ensure!(
            violations(&live)? == violations(&file)?,
            "check --cluster and check on the file differ"
        );
        Ok(())
    });
    Ok(())
}

/// For every probe the fabric runs, the plugin's `matrix --cluster -o json`
/// cell is the probe's outcome.
fn matrix_matches_the_kernel(world: &World, kubeconfig: &str) -> anyhow::Result<()> {
    let fabric = world.fabric.as_ref().context("no fabric")?;
    let live = cluster::live_cluster(&world.kubectl)?;
    let probes = cluster::probes(&live);
    fabric.flush_conntrack()?;
    let got = fabric.probe(&probes)?;
    let mut ports: Vec<String> = probes.iter().map(|p| format!("{}/{}", p.protocol, p.port)).collect();
    ports.sort();
    ports.dedup();
    let mut args = vec!["matrix", "-o", "json"];
    for port in &ports {
        args.extend(["--port", port.as_str()]);
    }
    let run = plugin(world, &with_cluster(&args, kubeconfig))?;
    anyhow::ensure!(
        run.code == Some(0),
        "matrix --cluster: exit {:?}: {}",
        run.code,
        run.stderr
    );
    let matrices: serde_json::Value = serde_json::from_str(&run.stdout).context("matrix -o json")?;
    let mut checked = 0;
    let mut wrong = Vec::new();
    for (probe, outcome) in probes.iter().zip(&got) {
        if *outcome == Outcome::Skipped {
            continue;
        }
        let port = format!("{}/{}", probe.protocol, probe.port);
        let m = matrices
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["port"] == port.as_str()))
            .with_context(|| format!("no matrix for {port}"))?;
        let pods = m["pods"].as_array().context("pods")?;
        let at = |key: &str| {
            pods.iter()
                .position(|p| p == key)
                .with_context(|| format!("{key} not in the matrix"))
        };
        let cell = m["cells"][at(&probe.from)?][at(&probe.to)?].as_bool().context("cell")?;
        if cell != (*outcome == Outcome::Reachable) {
            wrong.push(format!(
                "{} -> {} {port}: plugin says {}, the kernel {:?}",
                probe.from, probe.to, cell, outcome
            ));
        }
        checked += 1;
    }
    anyhow::ensure!(
        wrong.is_empty(),
        "{} of {checked} differ:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    println!("kubectl-tierguard matrix --cluster: {checked} probes match the kernel");
    Ok(())
}
