//! Golden files: the exact text `render` produces for small clusters.
//! Set UPDATE_GOLDEN=1 to rewrite them after an intended change.

use std::path::PathBuf;

use tierguard_enforcer::compile::{NodeView, compile};
use tierguard_enforcer::load::load;
use tierguard_enforcer::render::{RenderOptions, render};

fn check(case: &str, node: &str, options: RenderOptions) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let (cluster, addresses) = match load(&[dir.join(case)], node) {
        Ok(x) => x,
        Err(e) => panic!("{e}"),
    };
    let view = NodeView {
        name: node.into(),
        addresses,
        pod_cidrs: Vec::new(),
    };
    let rendered = render(&compile(&cluster, &view), &options);
    let got = format!("{}{}", rendered.ipset_script(), rendered.iptables_script());
    let golden = dir.join(format!("{case}-{node}.rules"));
    if std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1")
        && let Err(e) = std::fs::write(&golden, &got)
    {
        panic!("{}: {e}", golden.display());
    }
    let want = std::fs::read_to_string(&golden).unwrap_or_default();
    assert_eq!(got, want, "{} differs (UPDATE_GOLDEN=1 to accept)", golden.display());
}

#[test]
fn basic_node_a() {
    check("basic", "node-a", RenderOptions::default());
}

#[test]
fn basic_node_b_with_nflog() {
    check(
        "basic",
        "node-b",
        RenderOptions {
            nflog_group: Some(5),
            ..RenderOptions::default()
        },
    );
}

#[test]
fn node_without_pods_gets_only_the_skeleton() {
    check("basic", "node-c", RenderOptions::default());
}
