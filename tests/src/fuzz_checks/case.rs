//! `reachability_case`: bytes as a conformance case file. A case is either
//! refused with an error naming the file, or valid: then it runs on the model
//! data plane without the plane ever meeting a pod or step it cannot handle,
//! and every node's rules render into well-formed restore scripts.

use tierguard_conformance::conformance::case::parse_case;
use tierguard_conformance::conformance::model::ModelDataPlane;
use tierguard_conformance::conformance::runner::run_case;
use tierguard_enforcer::compile::{Family, NodeView, compile_family};
use tierguard_enforcer::render::{RenderOptions, render};

use super::check_rendered;

const SOURCE: &str = "fuzz-case.yaml";

/// Bytes as a case file; see the module doc.
pub fn reachability_case(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let case = match parse_case(text, SOURCE) {
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.starts_with(&format!("{SOURCE}: ")),
                "a case error must name the file: {message}"
            );
            return;
        }
        Ok(case) => case,
    };
    let report = run_case(&case, &mut ModelDataPlane);
    let cells: usize = case
        .steps
        .iter()
        .flat_map(|s| &s.expect)
        .map(|e| e.matrix.cells().count())
        .sum();
    assert_eq!(
        report.matched + report.failures.len(),
        cells,
        "every cell of a valid case is either matched or one failure: {:?}",
        report.failures
    );
    assert_eq!(report.skipped, 0, "the model skips nothing");
    let mut cluster = case.cluster.clone();
    let mut clusters = vec![cluster.clone()];
    for step in &case.steps {
        step.apply_to(&mut cluster);
        clusters.push(cluster.clone());
    }
    for node in &case.nodes {
        let view = NodeView {
            name: node.name.clone(),
            addresses: vec![node.ip],
            pod_cidrs: Vec::new(),
        };
        for (i, cluster) in clusters.iter().enumerate() {
            for family in [Family::V4, Family::V6] {
                let rendered = render(&compile_family(cluster, &view, family), &RenderOptions::default());
                check_rendered(&rendered, &format!("node {} after step {i} ({family:?})", node.name));
            }
        }
    }
}
