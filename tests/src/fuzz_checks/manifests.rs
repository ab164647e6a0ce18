//! `manifests`: bytes as a manifest file, read by every reader the binaries
//! use, then carried as far as each binary carries a file: the webhook's
//! `check` (state, prepared policies, every guardrail) and the enforcer's
//! `render` (cluster, compile, iptables and ipset scripts).

use std::path::PathBuf;

use tierguard::manifest::{Manifest, parse_manifests};
use tierguard::{NamespaceInfo, PodInfo, Policy, TierTemplate};
use tierguard_enforcer::compile::{Family, NodeView, compile_family};
use tierguard_enforcer::render::{DEFAULT_ALLOW_MARK, RenderOptions, render};

use super::{InputFile, check_rendered};

const SOURCE: &str = "fuzz.yaml";
const NODE: &str = "node-1";

/// Bytes as a manifest file; see the module doc.
pub fn manifests(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        parse_and_convert(text);
    }
    let file = InputFile::write(data);
    let paths = [file.path().to_path_buf()];
    webhook_check(&paths);
    enforcer_render(&paths);
}

fn parse_and_convert(text: &str) {
    match parse_manifests(text, SOURCE) {
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.starts_with(&format!("{SOURCE}: document ")),
                "a manifest error must name the file and the document: {message}"
            );
            assert!(e.document >= 1, "documents count from 1: {message}");
        }
        Ok(list) => {
            for manifest in list {
                match manifest {
                    Manifest::Namespace(ns) => {
                        let info = NamespaceInfo::from_k8s(&ns);
                        assert_eq!(
                            info.labels.get(tierguard::labels::NAMESPACE_NAME_LABEL),
                            Some(&info.name),
                            "a namespace always carries its name label"
                        );
                    }
                    Manifest::Pod(pod) => {
                        let _ = PodInfo::from_k8s(&pod);
                    }
                    Manifest::NetworkPolicy(np) => {
                        let lenient = Policy::from_k8s_lenient(&np);
                        let strict = Policy::from_k8s(&np);
                        assert_eq!(
                            strict.is_ok(),
                            lenient.errors.is_empty(),
                            "strict and lenient parsing disagree on {np:?}"
                        );
                    }
                    Manifest::Node(_) | Manifest::Other { .. } => {}
                }
            }
        }
    }
}

fn webhook_check(paths: &[PathBuf]) {
    let template = TierTemplate::built_in();
    match tierguard_webhook::check::check(&template, paths) {
        Err(e) => {
            let message = e.to_string();
            assert!(
                paths.iter().any(|p| message.contains(&p.display().to_string())),
                "a load error must name the file: {message}"
            );
        }
        Ok(report) => {
            let _ = tierguard_webhook::check::render_text(&report);
            match tierguard_webhook::check::render_json(&report) {
                Ok(json) => assert!(
                    serde_json::from_str::<serde_json::Value>(&json).is_ok(),
                    "check --output json is not JSON: {json}"
                ),
                Err(e) => panic!("check report cannot be written as JSON: {e}"),
            }
        }
    }
}

fn enforcer_render(paths: &[PathBuf]) {
    let Ok((cluster, _)) = tierguard_enforcer::load::load(paths, NODE) else {
        return;
    };
    // Every node that runs a pod of the input (a few at most), and one that runs none.
    let mut nodes: Vec<String> = cluster.pods().filter_map(|p| p.node.clone()).collect();
    nodes.sort();
    nodes.dedup();
    nodes.truncate(3);
    nodes.push(NODE.to_string());
    let options = RenderOptions {
        nflog_group: Some(5),
        allow_mark: DEFAULT_ALLOW_MARK,
    };
    for name in nodes {
        let addresses = match tierguard_enforcer::load::load(paths, &name) {
            Ok((_, addresses)) => addresses,
            Err(e) => panic!("the same file loads for node {NODE} but not for node {name:?}: {e}"),
        };
        let node = NodeView {
            name: name.clone(),
            addresses,
            pod_cidrs: Vec::new(),
        };
        for family in [Family::V4, Family::V6] {
            let rendered = render(&compile_family(&cluster, &node, family), &options);
            check_rendered(&rendered, &format!("render for node {name:?} ({family:?})"));
        }
    }
}
