//! `kubectl-tierguard` over the shipped examples: each subcommand's exact
//! output (golden files under `tests/golden/plugin/`, compared byte for
//! byte) and exit code, on `deploy/examples/three-tier/` and on each
//! `three-tier-bad/` variant, with the pods of `deploy/examples/pods/`.
//! Regenerate deliberately with `UPDATE_GOLDEN=1 cargo test -p
//! tierguard-webhook --test plugin` and review the diff.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;

use support::{PluginRun, repo_root, run_plugin};

fn golden(name: &str, got: &str) {
    let path = repo_root().join("webhook/tests/golden/plugin").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (create it with UPDATE_GOLDEN=1)", path.display()));
    assert!(
        got == want,
        "{} differs (UPDATE_GOLDEN=1 rewrites it); got:\n{got}\nwant:\n{want}",
        path.display()
    );
}

/// Runs `args` on an example (its policy folder and its pods), checks the
/// exit code and compares stdout with golden file `name`.
fn case(example: &Example, args: &[&str], code: i32, name: &str) -> PluginRun {
    let mut all: Vec<&str> = args.to_vec();
    all.push(example.folder);
    all.push(example.pods);
    let run = run_plugin(&all);
    assert_eq!(
        run.code, code,
        "kubectl-tierguard {all:?}: exit {} (want {code}); stderr:\n{}stdout:\n{}",
        run.code, run.stderr, run.stdout
    );
    golden(&format!("{}/{name}", example.name), &run.stdout);
    run
}

struct Example {
    name: &'static str,
    namespace: &'static str,
    folder: &'static str,
    pods: &'static str,
}

const THREE_TIER: Example = Example {
    name: "three-tier",
    namespace: "shop",
    folder: "deploy/examples/three-tier",
    pods: "deploy/examples/pods/three-tier.yaml",
};

const BAD: [Example; 4] = [
    Example {
        name: "r1-missing-default-deny",
        namespace: "shop-r1",
        folder: "deploy/examples/three-tier-bad/r1-missing-default-deny",
        pods: "deploy/examples/pods/r1-missing-default-deny.yaml",
    },
    Example {
        name: "r2-deny-without-dns",
        namespace: "shop-r2",
        folder: "deploy/examples/three-tier-bad/r2-deny-without-dns",
        pods: "deploy/examples/pods/r2-deny-without-dns.yaml",
    },
    Example {
        name: "r3-data-open-to-frontend",
        namespace: "shop-r3",
        folder: "deploy/examples/three-tier-bad/r3-data-open-to-frontend",
        pods: "deploy/examples/pods/r3-data-open-to-frontend.yaml",
    },
    Example {
        name: "r4-except-outside-cidr",
        namespace: "shop-r4",
        folder: "deploy/examples/three-tier-bad/r4-except-outside-cidr",
        pods: "deploy/examples/pods/r4-except-outside-cidr.yaml",
    },
];

#[test]
fn explain_three_tier_allowed_and_denied() {
    let e = &THREE_TIER;
    let allowed = case(
        e,
        &["explain", "shop/backend-0", "shop/data-0", "TCP/5432"],
        0,
        "explain-allowed.txt",
    );
    assert!(
        allowed
            .stdout
            .starts_with("shop/backend-0 -> shop/data-0 TCP/5432: allowed\n")
    );
    let denied = case(
        e,
        &["explain", "shop/frontend-0", "shop/data-0", "TCP/5432"],
        1,
        "explain-denied.txt",
    );
    assert!(denied.stdout.contains("ingress of shop/data-0: denied"));
    case(
        e,
        &[
            "explain",
            "--output",
            "json",
            "shop/frontend-0",
            "shop/data-0",
            "TCP/5432",
        ],
        1,
        "explain-denied.json",
    );
    // A named port, resolved on the destination's container ports.
    let named = case(
        e,
        &["explain", "shop/gateway-0", "shop/backend-0", "TCP/http"],
        0,
        "explain-named-port.txt",
    );
    assert!(
        named
            .stdout
            .starts_with("shop/gateway-0 -> shop/backend-0 TCP/8080 (http): allowed")
    );
    // An address outside the cluster, and every port of the destination when none is given.
    case(
        e,
        &["explain", "203.0.113.9", "shop/gateway-0"],
        0,
        "explain-external.txt",
    );
    case(
        e,
        &["explain", "shop/data-0", "198.51.100.7", "TCP/443"],
        1,
        "explain-to-external.txt",
    );
    // DNS: the default-deny's egress rule, the DNS pod's side not isolated.
    case(
        e,
        &["explain", "shop/data-0", "kube-system/coredns-0", "UDP/dns"],
        0,
        "explain-dns.txt",
    );
}

#[test]
fn explain_json_is_the_engine_verdict_for_tools() {
    let run = run_plugin(&[
        "explain",
        "-o",
        "json",
        "shop/backend-0",
        "shop/data-0",
        "TCP/5432",
        THREE_TIER.folder,
        THREE_TIER.pods,
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["allowed"], true);
    assert_eq!(v["egress"]["verdict"]["Allowed"]["policy"]["name"], "backend");
    assert_eq!(v["egress"]["verdict"]["Allowed"]["rule"], 1);
    assert_eq!(v["ingress"]["verdict"]["Allowed"]["policy"]["name"], "data");
    assert_eq!(
        v["ingress"]["isolated_by"],
        serde_json::json!(["shop/data", "shop/default-deny-all"])
    );
}

#[test]
fn matrix_three_tier_by_pod_and_by_tier() {
    let e = &THREE_TIER;
    let m = case(
        e,
        &["matrix", "-n", "shop", "--port", "TCP/8080", "--port", "TCP/5432"],
        0,
        "matrix.txt",
    );
    // The case format: `-`, the destinations, then one row per source.
    let lines: Vec<Vec<&str>> = m.stdout.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(lines[0], ["TCP/8080"]);
    assert_eq!(
        lines[1],
        [
            "-",
            "shop/backend-0",
            "shop/data-0",
            "shop/frontend-0",
            "shop/gateway-0"
        ]
    );
    assert_eq!(lines[4], ["shop/frontend-0", ".", "X", ".", "X"]);
    case(e, &["matrix", "--by", "tier"], 0, "matrix-by-tier.txt");
    let json = case(
        e,
        &["matrix", "-o", "json", "-n", "shop", "--port", "TCP/8080"],
        0,
        "matrix.json",
    );
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let pods = v[0]["pods"].as_array().unwrap();
    let at = |name: &str| pods.iter().position(|p| p == name).unwrap();
    assert_eq!(v[0]["cells"][at("shop/frontend-0")][at("shop/backend-0")], true);
    assert_eq!(v[0]["cells"][at("shop/frontend-0")][at("shop/data-0")], false);
}

#[test]
fn graph_three_tier_reads_left_to_right() {
    let e = &THREE_TIER;
    let dot = case(e, &["graph", "-n", e.namespace], 0, "graph.dot");
    assert!(dot.stdout.contains("rankdir=LR;"));
    let svg = case(e, &["graph", "-n", e.namespace, "-o", "svg"], 0, "graph.svg");
    // Columns: gateway and frontend, then backend, then data.
    let x = |id: &str| -> f64 {
        let at = svg.stdout.find(&format!("id=\"node-{id}\"")).unwrap();
        let rest = &svg.stdout[at..];
        let x = rest.find("<rect x=\"").unwrap() + 9;
        rest[x..x + rest[x..].find('"').unwrap()].parse().unwrap()
    };
    assert_eq!(x("tier-gateway"), x("tier-frontend"));
    assert!(x("tier-frontend") < x("tier-backend") && x("tier-backend") < x("tier-data"));
    assert!(x("external") < x("tier-gateway") && x("tier-data") < x("dns"));
}

#[test]
fn check_three_tier_is_the_webhook_check() {
    let e = &THREE_TIER;
    let run = case(e, &["check"], 0, "check.txt");
    // The same code as `tierguard-webhook check`.
    let webhook = Command::new(env!("CARGO_BIN_EXE_tierguard-webhook"))
        .args(["check", e.folder, e.pods])
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(webhook.stdout).unwrap(), run.stdout);
    let html = run_plugin(&["check", "-o", "html", e.folder, e.pods]);
    assert_eq!(html.code, 0);
    assert!(html.stdout.starts_with("<!DOCTYPE html>"));
    for needle in [
        "id=\"node-tier-backend\"",
        "class=\"edge template\"",
        "<table class=\"matrix\"",
    ] {
        assert!(html.stdout.contains(needle), "{needle}");
    }
}

#[test]
fn each_bad_example() {
    for e in &BAD {
        let check = case(e, &["check"], 1, "check.txt");
        let rule = &e.name[..2].to_uppercase();
        assert!(
            check.stdout.contains(&format!("  {rule} ")),
            "{}: {}",
            e.name,
            check.stdout
        );
        case(e, &["graph", "-n", e.namespace], 0, "graph.dot");
        case(
            e,
            &["matrix", "--by", "tier", "-n", e.namespace],
            0,
            "matrix-by-tier.txt",
        );
        let html = run_plugin(&["check", "-o", "html", e.folder, e.pods]);
        assert_eq!(html.code, 1);
        assert!(html.stdout.contains(&format!("data-rule=\"{rule}\"")), "{}", e.name);
    }
    let [r1, r2, r3, r4] = &BAD;
    // R1: the untiered pod is not isolated for ingress: anyone reaches it.
    let run = case(
        r1,
        &["explain", "203.0.113.9", "shop-r1/tools-0", "TCP/9000"],
        0,
        "explain.txt",
    );
    assert!(run.stdout.contains("not isolated"));
    let dot = run_plugin(&["graph", "-n", "shop-r1", r1.folder, r1.pods]).stdout;
    assert!(dot.contains("R1: no default-deny (Ingress)"), "{dot}");
    // R2: DNS over UDP works, over TCP it does not.
    case(
        r2,
        &["explain", "shop-r2/backend-0", "kube-system/coredns-0", "UDP/53"],
        0,
        "explain-udp.txt",
    );
    case(
        r2,
        &["explain", "shop-r2/backend-0", "kube-system/coredns-0", "TCP/53"],
        1,
        "explain-tcp.txt",
    );
    let dot = run_plugin(&["graph", "-n", "shop-r2", r2.folder, r2.pods]).stdout;
    assert!(dot.contains("R2: no DNS (TCP/53)"), "{dot}");
    // R3: data lets frontend in; frontend's egress still stops it.
    let run = case(
        r3,
        &["explain", "shop-r3/frontend-0", "shop-r3/data-0", "TCP/5432"],
        1,
        "explain.txt",
    );
    assert!(
        run.stdout.contains("allowed by shop-r3/data-open ingress[0]"),
        "{}",
        run.stdout
    );
    let dot = run_plugin(&["graph", "-n", "shop-r3", r3.folder, r3.pods]).stdout;
    assert!(
        dot.contains("\"tier-frontend\" -> \"tier-data\" [label=\"one side only\", color=red"),
        "{dot}"
    );
    // R4: the broken rule is dropped, as the enforcer drops it: nothing gets in.
    let run = case(
        r4,
        &["explain", "10.0.5.5", "shop-r4/gateway-0", "TCP/443"],
        1,
        "explain.txt",
    );
    assert!(
        run.stderr
            .contains("NetworkPolicy shop-r4/gateway: spec.ingress[0].from[0].ipBlock.except[0]"),
        "{}",
        run.stderr
    );
}

#[test]
fn bad_input_exits_2_and_names_what_is_wrong() {
    let (folder, pods) = (THREE_TIER.folder, THREE_TIER.pods);
    for (args, needle) in [
        (
            vec!["explain", "shop", "shop/data-0", "TCP/5432", folder, pods],
            "FROM \"shop\": expected namespace/pod or an IP address",
        ),
        (
            vec!["explain", "shop/nope", "shop/data-0", "TCP/5432", folder, pods],
            "FROM shop/nope: no such pod (pods of namespace shop: backend-0, data-0, frontend-0, gateway-0)",
        ),
        (
            vec!["explain", "shop/backend-0", "shop/data-0", "TCP/0", folder, pods],
            "port \"TCP/0\"",
        ),
        (
            vec!["explain", "shop/backend-0", "shop/data-0", "TCP/http", folder, pods],
            "shop/data-0 has no container port named \"http\" for TCP",
        ),
        (
            vec!["explain", "shop/backend-0", "203.0.113.1", folder, pods],
            "no PROTO/PORT given and 203.0.113.1 has no container ports",
        ),
        (
            vec!["explain", "shop/backend-0", "shop/data-0", "TCP/5432"],
            "give manifest files or folders, or --cluster",
        ),
        (
            vec!["matrix", "-n", "nowhere", folder, pods],
            "-n nowhere: no pods in namespace nowhere",
        ),
        (
            vec!["matrix", "--port", "TCP/http", folder, pods],
            "matrix takes port numbers",
        ),
        (
            vec!["graph", "-n", "nowhere", folder, pods],
            "namespace nowhere has no Namespace, Pod or NetworkPolicy",
        ),
        (vec!["check", "no/such/folder"], "no/such/folder"),
        (
            vec!["check", "--cluster", "--kubeconfig", "no/such/kubeconfig"],
            "kubeconfig: no/such/kubeconfig",
        ),
        (vec!["graph", folder], "--namespace"),
    ] {
        let run = run_plugin(&args);
        assert_eq!(run.code, 2, "{args:?}: {}{}", run.stdout, run.stderr);
        assert!(
            run.stderr.contains(needle),
            "{args:?}: stderr lacks {needle:?}:\n{}",
            run.stderr
        );
    }
}

#[test]
fn a_bad_pod_manifest_names_file_object_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pods.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: shop}\nspec:\n  containers:\n    - name: c\n      ports: [{containerPort: 70000}]\n",
    )
    .unwrap();
    let run = run_plugin(&["matrix", THREE_TIER.folder, file.to_str().unwrap()]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("pods.yaml: Pod shop/p: spec.containers[0].ports[0].containerPort: 70000 is out of range"),
        "{}",
        run.stderr
    );
}

#[test]
fn hostile_names_do_not_inject_markup() {
    let dir = tempfile::tempdir().unwrap();
    let evil = "<script>alert(1)</script>";
    let text = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: evil\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  namespace: evil\n  labels: {{tier: backend}}\nspec:\n  containers: [{{name: c, ports: [{{containerPort: 80}}]}}]\nstatus: {{podIPs: [{{ip: 10.9.0.1}}]}}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: \"{evil}\"\n  namespace: evil\nspec:\n  podSelector: {{matchLabels: {{tier: \"x\\\"><img src=y>\"}}}}\n  policyTypes: [Ingress]\n"
    );
    let file = dir.path().join("evil.yaml");
    std::fs::write(&file, text).unwrap();
    let run = run_plugin(&["check", "-o", "html", file.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(!run.stdout.contains("<script"), "{}", run.stdout);
    assert!(!run.stdout.contains("<img"), "{}", run.stdout);
    assert!(run.stdout.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    let run = run_plugin(&["graph", "-n", "evil", "-o", "html", file.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!run.stdout.contains("<script") && !run.stdout.contains("<img"));
}

#[test]
fn html_is_self_contained() {
    let e = &BAD[2];
    for args in [
        vec!["check", "-o", "html", e.folder, e.pods],
        vec!["graph", "-n", e.namespace, "-o", "html", e.folder, e.pods],
        vec!["matrix", "--by", "tier", "-o", "html", e.folder, e.pods],
    ] {
        let run = run_plugin(&args);
        assert!(run.stdout.starts_with("<!DOCTYPE html>"), "{args:?}");
        for banned in ["<script", "http://", "https://", "<link", "@import", "url(http"] {
            assert!(!run.stdout.contains(banned), "{args:?} contains {banned}");
        }
    }
}
