//! `kubectl-tierguard --cluster` against an API server on loopback (the
//! fake of `tests/tests/fake_api`, serving the three-tier example and its
//! pods): explain, matrix, graph and check give what they give on the files,
//! and `--kubeconfig`, `KUBECONFIG` and `--context` pick the server. The
//! same commands against a real kube-apiserver run in the control-plane
//! end-to-end test (`tests/tests/e2e_controlplane/plugin.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tests/tests/fake_api/mod.rs"]
mod fake_api;

mod support;

use std::path::{Path, PathBuf};

use fake_api::{FakeApi, NAMESPACES, NETWORK_POLICIES, PODS, Resource};
use serde_json::Value;
use support::{PluginRun, repo_root, run_plugin_with};

const FILES: [&str; 2] = ["deploy/examples/three-tier", "deploy/examples/pods/three-tier.yaml"];

/// [`run_plugin_with`] off the runtime's threads (the fake API server runs on them).
async fn plugin(args: Vec<String>, env: Vec<(&'static str, String)>) -> PluginRun {
    tokio::task::spawn_blocking(move || run_plugin_with(&args, &env))
        .await
        .unwrap()
}

fn words(w: &[&str]) -> Vec<String> {
    w.iter().map(|s| s.to_string()).collect()
}

/// Every object of the example files, as the API server would hold them.
fn load_example(api: &FakeApi) {
    let paths: Vec<PathBuf> = FILES.iter().map(|p| repo_root().join(p)).collect();
    let files = tierguard::input::manifest_files(&paths).unwrap();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(doc).unwrap();
            let resource: Resource = match value["kind"].as_str() {
                Some("Namespace") => NAMESPACES,
                Some("Pod") => PODS,
                Some("NetworkPolicy") => NETWORK_POLICIES,
                other => panic!("{}: unexpected kind {other:?}", file.display()),
            };
            api.apply(resource, value);
        }
    }
}

/// A kubeconfig whose current context points at a closed port and whose
/// context `fake` points at the fake server.
fn kubeconfig(dir: &Path, api: &FakeApi) -> PathBuf {
    let text = format!(
        "apiVersion: v1
kind: Config
current-context: nowhere
clusters:
  - name: fake
    cluster: {{server: \"http://{addr}\"}}
  - name: nowhere
    cluster: {{server: \"http://127.0.0.1:9\"}}
users:
  - name: nobody
    user: {{}}
contexts:
  - name: fake
    context: {{cluster: fake, user: nobody}}
  - name: nowhere
    context: {{cluster: nowhere, user: nobody}}
",
        addr = api.addr
    );
    let path = dir.join("kubeconfig");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_answers_match_the_files() {
    let api = FakeApi::start().await;
    load_example(&api);
    let dir = tempfile::tempdir().unwrap();
    let config = kubeconfig(dir.path(), &api);
    let config_arg = config.display().to_string();
    let cluster = |args: &[&str]| {
        let mut all = words(args);
        all.extend(words(&["--cluster", "--kubeconfig", &config_arg, "--context", "fake"]));
        all
    };
    let files = |args: &[&str]| {
        let mut all = words(args);
        all.extend(words(&FILES));
        all
    };
    for args in [
        vec!["explain", "shop/frontend-0", "shop/data-0", "TCP/5432"],
        vec!["explain", "shop/backend-0", "shop/data-0", "TCP/postgres"],
        vec!["explain", "-o", "json", "203.0.113.9", "shop/gateway-0"],
        vec!["matrix", "-n", "shop"],
        vec!["matrix", "--by", "tier"],
        vec!["graph", "-n", "shop"],
        vec!["graph", "-n", "shop", "-o", "svg"],
    ] {
        let from_cluster = plugin(cluster(&args), vec![]).await;
        let from_files = plugin(files(&args), vec![]).await;
        assert!(
            from_cluster.code == 0 || from_cluster.code == 1,
            "{args:?}: exit {}: {}",
            from_cluster.code,
            from_cluster.stderr
        );
        assert_eq!(from_cluster.code, from_files.code, "{args:?}");
        assert_eq!(from_cluster.stdout, from_files.stdout, "{args:?}");
    }
    // check: the same findings; the summary counts no files.
    let from_cluster = plugin(cluster(&["check"]), vec![]).await;
    assert_eq!(from_cluster.code, 0, "{}", from_cluster.stderr);
    assert_eq!(
        from_cluster.stdout,
        "ok: no violations (0 files, 1 namespace, 5 NetworkPolicies)\n"
    );
    let json = plugin(cluster(&["check", "-o", "json"]), vec![]).await;
    let v: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(
        (v["ok"].as_bool(), v["networkPolicies"].as_u64()),
        (Some(true), Some(5))
    );

    // KUBECONFIG is honoured like --kubeconfig.
    let by_env = plugin(
        words(&[
            "explain",
            "--cluster",
            "--context",
            "fake",
            "shop/backend-0",
            "shop/data-0",
            "TCP/5432",
        ]),
        vec![("KUBECONFIG", config_arg.clone())],
    )
    .await;
    assert_eq!(by_env.code, 0, "{}", by_env.stderr);
    // Without --context, the current context: a closed port; exit 3, naming what failed.
    let current = plugin(words(&["check", "--cluster", "--kubeconfig", &config_arg]), vec![]).await;
    assert_eq!(current.code, 3, "{}{}", current.stdout, current.stderr);
    assert!(
        current.stderr.contains("listing namespaces from the cluster"),
        "{}",
        current.stderr
    );
    // An unknown context is bad input.
    let unknown = plugin(
        words(&["check", "--cluster", "--kubeconfig", &config_arg, "--context", "nope"]),
        vec![],
    )
    .await;
    assert_eq!(unknown.code, 2, "{}", unknown.stderr);
    assert!(unknown.stderr.contains("kubeconfig"), "{}", unknown.stderr);
    // --cluster takes no paths.
    let both = plugin(cluster(&["check", "deploy/examples/three-tier"]), vec![]).await;
    assert_eq!(both.code, 2, "{}", both.stderr);
    // Only lists were asked for, of the three resources.
    let paths: std::collections::BTreeSet<String> = api
        .requests()
        .into_iter()
        .filter(|r| !r.is_watch())
        .map(|r| r.path)
        .collect();
    assert_eq!(
        paths,
        [
            "/api/v1/namespaces",
            "/api/v1/pods",
            "/apis/networking.k8s.io/v1/networkpolicies"
        ]
        .into_iter()
        .map(String::from)
        .collect()
    );
    api.shutdown().await;
}
