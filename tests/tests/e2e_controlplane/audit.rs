//! The background audit through the real API server: with the
//! `openreports.io` Report CRD installed (a minimal one: the test has no
//! network to fetch the upstream CRD, and the audit needs only the group,
//! version, kind and plural), a governed namespace without policies gets a
//! report with its R1 violations, read back with kubectl; fixing the
//! namespace deletes the report; the metrics show it.

use std::time::Duration;

use nix::sys::signal::Signal;
use tierguard_integration::e2e::process::wait_for;

use crate::report::{Report, show};
use crate::setup::{WEBHOOK_HOST, WEBHOOK_PORT, World};

const NAMESPACE: &str = "audit-r1";

fn report_crd() -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "reports.openreports.io"},
        "spec": {
            "group": "openreports.io",
            "scope": "Namespaced",
            "names": {"plural": "reports", "singular": "report", "kind": "Report", "listKind": "ReportList"},
            "versions": [{
                "name": "v1alpha1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
                "additionalPrinterColumns": [
                    {"name": "Pass", "type": "integer", "jsonPath": ".summary.pass"},
                    {"name": "Fail", "type": "integer", "jsonPath": ".summary.fail"},
                ],
            }],
        },
    })
}

pub fn run(world: &mut World, report: &mut Report) -> anyhow::Result<()> {
    println!("== background audit");
    report.check("audit: a violating namespace gets a Report, removed once fixed", || {
        reports(world)
    });
    Ok(())
}

fn reports(world: &mut World) -> anyhow::Result<()> {
    let k = world.kubectl.clone();
    let out = k.run(&["apply", "-f", "-"], Some(&report_crd().to_string()))?;
    anyhow::ensure!(out.ok, "installing the Report CRD: {}", out.printed());
    let out = k.run(
        &[
            "wait",
            "--for=condition=Established",
            "crd/reports.openreports.io",
            "--timeout=60s",
        ],
        None,
    )?;
    anyhow::ensure!(out.ok, "the Report CRD is not established: {}", out.printed());
    // A restart makes the webhook look for the report API at once (a
    // running one looks again every audit interval), and hands the Lease
    // over through a release.
    world.stop_webhook(Signal::SIGTERM);
    world.start_webhook()?;
    let out = k.run(&["create", "namespace", NAMESPACE], None)?;
    anyhow::ensure!(out.ok, "creating {NAMESPACE}: {}", out.printed());
    let found = wait_for(
        "the Report in audit-r1",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || {
            let out = k.run(
                &[
                    "-n",
                    NAMESPACE,
                    "get",
                    "report",
                    "tierguard",
                    "-o",
                    "json",
                    // kubectl leaves managedFields out unless asked, and the
                    // field manager is what shows the audit wrote it
                    "--show-managed-fields",
                ],
                None,
            )?;
            Ok(out
                .ok
                .then(|| serde_json::from_str::<serde_json::Value>(&out.stdout))
                .transpose()?)
        },
    )?;
    let table = k.run(&["get", "reports", "-A"], None)?;
    show("kubectl get reports -A", &table.printed());
    let yaml = k.run(&["-n", NAMESPACE, "get", "report", "tierguard", "-o", "yaml"], None)?;
    show("kubectl -n audit-r1 get report tierguard -o yaml", &yaml.stdout);
    let results = found["results"].as_array().cloned().unwrap_or_default();
    anyhow::ensure!(!results.is_empty(), "no results: {found}");
    anyhow::ensure!(
        results
            .iter()
            .all(|r| r["rule"] == "R1" && r["result"] == "fail" && r["policy"] == "tierguard"),
        "{found}"
    );
    anyhow::ensure!(found["summary"]["fail"] == results.len(), "{found}");
    anyhow::ensure!(
        found["metadata"]["managedFields"][0]["manager"] == "tierguard-audit",
        "written by server-side apply as tierguard-audit: {found}"
    );

    let client = world.webhook_client()?;
    let metrics = client
        .get(format!("https://{WEBHOOK_HOST}:{WEBHOOK_PORT}/metrics"))
        .send()?
        .text()?;
    let lines: Vec<&str> = metrics.lines().filter(|l| l.starts_with("tierguard_audit")).collect();
    show("the audit's metrics", &lines.join("\n"));
    let r1 = format!(
        r#"tierguard_audit_violations{{namespace="{NAMESPACE}",rule="R1"}} {}"#,
        results.len()
    );
    anyhow::ensure!(lines.contains(&r1.as_str()), "no `{r1}`");
    anyhow::ensure!(lines.contains(&"tierguard_audit_leader 1"), "the only replica leads");

    // Fixed: the example's default-deny (with DNS) moved into the namespace.
    let mut deny: serde_json::Value = serde_yaml::from_str(&std::fs::read_to_string(
        world.repo.join("deploy/examples/three-tier/10-default-deny.yaml"),
    )?)?;
    deny["metadata"]["namespace"] = serde_json::json!(NAMESPACE);
    let out = k.run(&["apply", "-f", "-"], Some(&deny.to_string()))?;
    anyhow::ensure!(out.ok, "applying the default-deny: {}", out.printed());
    wait_for(
        "the Report in audit-r1 to be deleted",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || {
            let out = k.run(&["-n", NAMESPACE, "get", "report", "tierguard"], None)?;
            Ok((!out.ok && out.stderr.contains("NotFound")).then_some(()))
        },
    )?;
    show("after the fix", &k.run(&["get", "reports", "-A"], None)?.printed());
    Ok(())
}
