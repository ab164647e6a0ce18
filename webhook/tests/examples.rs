//! `check` over the shipped examples: the three-tier example passes, each
//! broken variant fails with its rule id; bad input exits 2; structure
//! problems in ungoverned namespaces are warnings that do not fail the check.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;

fn check(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tierguard-webhook"))
        .arg("check")
        .args(args)
        .current_dir(support::repo_root())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn three_tier_example_passes() {
    let (code, stdout, stderr) = check(&["deploy/examples/three-tier/"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.starts_with("ok: no violations (6 files, 1 namespace, 5 NetworkPolicies)"),
        "{stdout}"
    );
}

#[test]
fn each_bad_variant_fails_with_its_rule() {
    let variants = [
        ("r1-missing-default-deny", "R1", "shop-r1"),
        ("r2-deny-without-dns", "R2", "shop-r2"),
        ("r3-data-open-to-frontend", "R3", "shop-r3"),
        ("r4-except-outside-cidr", "R4", "shop-r4"),
    ];
    for (dir, rule, namespace) in variants {
        let path = format!("deploy/examples/three-tier-bad/{dir}");
        let (code, stdout, stderr) = check(&[&path]);
        assert_eq!(code, 1, "{dir}: {stdout}{stderr}");
        assert!(stdout.contains(&format!("namespace {namespace}: ")), "{dir}: {stdout}");
        let rules: Vec<&str> = stdout
            .lines()
            .filter_map(|l| l.strip_prefix("  "))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert!(!rules.is_empty() && rules.iter().all(|r| *r == rule), "{dir}: {stdout}");

        let (code, stdout, _) = check(&["--output", "json", &path]);
        assert_eq!(code, 1);
        let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(json["ok"], false);
        let found = json["violations"][namespace].as_array().unwrap();
        assert!(found.iter().all(|v| v["rule"] == rule), "{dir}: {stdout}");
    }
}

#[test]
fn json_output_when_clean() {
    let (code, stdout, _) = check(&["--output", "json", "deploy/examples/three-tier"]);
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["ok"], true);
    assert_eq!(json["total"], 0);
    assert_eq!(json["networkPolicies"], 5);
}

#[test]
fn unreadable_input_and_bad_templates_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np, namespace: a}\nspec:\n  ingress:\n  - ports:\n    - port: [1]\n",
    )
    .unwrap();
    let (code, _, stderr) = check(&[bad.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("bad.yaml: document 2 (NetworkPolicy a/np): spec.ingress[0].ports[0].port"),
        "{stderr}"
    );

    let (code, _, stderr) = check(&["/nonexistent/path"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("/nonexistent/path"), "{stderr}");

    let template = dir.path().join("template.yaml");
    std::fs::write(&template, "tiers:\n  web: {ingressFrom: [nowhere]}\n").unwrap();
    let (code, _, stderr) = check(&["--template", template.to_str().unwrap(), "deploy/examples/three-tier"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("tiers.web.ingressFrom[0]"), "{stderr}");
}

const UNGOVERNED_BROKEN: &str = "webhook/tests/fixtures/check/ungoverned-broken.yaml";

#[test]
fn structure_problems_in_ungoverned_namespaces_are_warnings() {
    let (code, stdout, stderr) = check(&[UNGOVERNED_BROKEN]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "namespace kube-public: 1 warning", "{stdout}");
    assert!(
        lines[1].starts_with(
            "  R4 warning: policy broken in namespace kube-public: spec.egress[0].to[0].ipBlock.cidr \"10.0.0.0/33\" is not a valid CIDR"
        ),
        "{stdout}"
    );
    assert_eq!(
        lines.last().copied(),
        Some("ok: no violations, 1 warning in 1 namespace (1 file, 1 namespace, 1 NetworkPolicy)"),
        "{stdout}"
    );

    let (code, stdout, _) = check(&["--output", "json", UNGOVERNED_BROKEN]);
    assert_eq!(code, 0, "{stdout}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["ok"], true);
    assert_eq!(json["total"], 0);
    assert_eq!(json["violations"], serde_json::json!({}));
    assert_eq!(json["totalWarnings"], 1);
    let warnings = json["warnings"]["kube-public"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{stdout}");
    assert_eq!(warnings[0]["rule"], "R4");
    assert_eq!(
        warnings[0]["key"]["Structure"]["field"],
        "spec.egress[0].to[0].ipBlock.cidr"
    );
    assert!(
        warnings[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("policy broken in namespace kube-public:"),
        "{stdout}"
    );
}

#[test]
fn warnings_and_violations_together_fail_and_show_both() {
    let bad = "deploy/examples/three-tier-bad/r4-except-outside-cidr";
    let (code, stdout, stderr) = check(&[bad, UNGOVERNED_BROKEN]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stdout.contains("namespace kube-public: 1 warning\n  R4 warning: policy broken"),
        "{stdout}"
    );
    assert!(
        stdout.contains("namespace shop-r4: 1 violation\n  R4 policy "),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .last()
            .unwrap()
            .starts_with("1 violation in 1 namespace, 1 warning in 1 namespace (7 files, "),
        "{stdout}"
    );

    let (code, stdout, _) = check(&["--output", "json", bad, UNGOVERNED_BROKEN]);
    assert_eq!(code, 1, "{stdout}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["ok"], false);
    assert_eq!(json["total"], 1);
    assert_eq!(json["totalWarnings"], 1);
    assert_eq!(json["violations"]["shop-r4"][0]["rule"], "R4");
    assert_eq!(json["warnings"]["kube-public"][0]["rule"], "R4");
}
