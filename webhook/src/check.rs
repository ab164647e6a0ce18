//! `check`: the guardrails over manifest files, for CI. Every violation of
//! the state the manifests describe, grouped by namespace, and as warnings
//! the structure problems of policies in namespaces the template does not
//! govern (the webhook admits those with the same warnings).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Serialize;
use tierguard::guardrails::{RuleId, StateAudit, Violation, ViolationKey};
use tierguard::template::TierTemplate;

use crate::state::Snapshot;
use crate::state::files::{self, LoadError};

/// What `check` found.
#[derive(Debug, Clone)]
pub struct Report {
    /// files read
    pub files: Vec<PathBuf>,
    /// namespaces in the state (declared, or implied by a policy)
    pub namespaces: usize,
    /// NetworkPolicies read
    pub policies: usize,
    /// violations by namespace (namespaces without any are left out)
    pub violations: BTreeMap<String, Vec<Violation>>,
    /// warnings (R4 in ungoverned namespaces) by namespace (namespaces
    /// without any are left out)
    pub warnings: BTreeMap<String, Vec<Violation>>,
}

impl Report {
    /// Number of violations.
    pub fn total(&self) -> usize {
        self.violations.values().map(Vec::len).sum()
    }

    /// Number of warnings.
    pub fn total_warnings(&self) -> usize {
        self.warnings.values().map(Vec::len).sum()
    }

    /// Whether the manifests pass: no violations (warnings do not fail them).
    pub fn is_clean(&self) -> bool {
        self.total() == 0
    }
}

/// Reads `paths` and runs every rule over the state they describe.
pub fn check(template: &TierTemplate, paths: &[PathBuf]) -> Result<Report, LoadError> {
    let loaded = files::load(paths)?;
    Ok(check_snapshot(template, loaded.files.clone(), &loaded.snapshot()))
}

/// Runs every rule over a state already read (from files, or from a
/// cluster: `files` is then empty).
pub fn check_snapshot(template: &TierTemplate, files: Vec<PathBuf>, snapshot: &Snapshot) -> Report {
    let StateAudit { violations, warnings } = snapshot.policy.audit_state(template);
    Report {
        files,
        namespaces: snapshot.policy.namespaces.len(),
        policies: snapshot.policy.policies.len(),
        violations,
        warnings,
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// The report for a person.
pub fn render_text(report: &Report) -> String {
    let mut out = String::new();
    let namespaces: BTreeSet<&String> = report.violations.keys().chain(report.warnings.keys()).collect();
    let none = Vec::new();
    for namespace in namespaces {
        let violations = report.violations.get(namespace).unwrap_or(&none);
        let warnings = report.warnings.get(namespace).unwrap_or(&none);
        let mut counts = Vec::new();
        if !violations.is_empty() {
            counts.push(plural(violations.len(), "violation"));
        }
        if !warnings.is_empty() {
            counts.push(plural(warnings.len(), "warning"));
        }
        let _ = writeln!(out, "namespace {namespace}: {}", counts.join(", "));
        for v in violations {
            let _ = writeln!(out, "  {} {}", v.rule(), v.message);
        }
        for w in warnings {
            let _ = writeln!(out, "  {} warning: {}", w.rule(), w.message);
        }
        out.push('\n');
    }
    let summary = format!(
        "{}, {}, {}",
        plural(report.files.len(), "file"),
        plural(report.namespaces, "namespace"),
        plural(report.policies, "NetworkPolicy").replace("NetworkPolicys", "NetworkPolicies")
    );
    let warnings = if report.warnings.is_empty() {
        String::new()
    } else {
        format!(
            ", {} in {}",
            plural(report.total_warnings(), "warning"),
            plural(report.warnings.len(), "namespace")
        )
    };
    if report.is_clean() {
        let _ = writeln!(out, "ok: no violations{warnings} ({summary})");
    } else {
        let _ = writeln!(
            out,
            "{} in {}{warnings} ({summary})",
            plural(report.total(), "violation"),
            plural(report.violations.len(), "namespace")
        );
    }
    out
}

#[derive(Serialize)]
struct JsonViolation<'a> {
    rule: RuleId,
    message: &'a str,
    key: &'a ViolationKey,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonReport<'a> {
    ok: bool,
    total: usize,
    files: Vec<String>,
    namespaces: usize,
    network_policies: usize,
    violations: BTreeMap<&'a str, Vec<JsonViolation<'a>>>,
    total_warnings: usize,
    warnings: BTreeMap<&'a str, Vec<JsonViolation<'a>>>,
}

fn json_entries(by_namespace: &BTreeMap<String, Vec<Violation>>) -> BTreeMap<&str, Vec<JsonViolation<'_>>> {
    by_namespace
        .iter()
        .map(|(ns, vs)| {
            (
                ns.as_str(),
                vs.iter()
                    .map(|v| JsonViolation {
                        rule: v.rule(),
                        message: &v.message,
                        key: &v.key,
                    })
                    .collect(),
            )
        })
        .collect()
}

/// The report for tools.
pub fn render_json(report: &Report) -> Result<String, serde_json::Error> {
    let json = JsonReport {
        ok: report.is_clean(),
        total: report.total(),
        files: report.files.iter().map(|f| f.display().to_string()).collect(),
        namespaces: report.namespaces,
        network_policies: report.policies,
        violations: json_entries(&report.violations),
        total_warnings: report.total_warnings(),
        warnings: json_entries(&report.warnings),
    };
    serde_json::to_string_pretty(&json)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Namespace manifest whose name label names an ungoverned namespace
    /// is still judged by its name: the label is the name, as the API server
    /// keeps it (the old conversion kept the label and missed the violation).
    #[test]
    fn a_name_label_that_disagrees_with_the_name_does_not_hide_a_namespace() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        std::fs::write(
            dir.path().join("ns.yaml"),
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop-data\n  labels: {kubernetes.io/metadata.name: kube-system, tier: data}\n",
        )?;
        let report = check(&TierTemplate::built_in(), &[dir.path().to_path_buf()])?;
        assert_eq!(report.files.len(), 1);
        assert!(report.violations.contains_key("shop-data"), "{}", render_text(&report));
        Ok(())
    }
}
