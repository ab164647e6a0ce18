//! `check`: the guardrails over manifest files, for CI. Every violation of
//! the state the manifests describe, grouped by namespace.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Serialize;
use tierguard::guardrails::{RuleId, Violation, ViolationKey};
use tierguard::template::TierTemplate;

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
}

impl Report {
    /// Number of violations.
    pub fn total(&self) -> usize {
        self.violations.values().map(Vec::len).sum()
    }

    /// Whether nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.total() == 0
    }
}

/// Reads `paths` and runs every rule over the state they describe.
pub fn check(template: &TierTemplate, paths: &[PathBuf]) -> Result<Report, LoadError> {
    let loaded = files::load(paths)?;
    let snapshot = loaded.snapshot();
    let mut violations = snapshot.policy.state_violations(template);
    violations.retain(|_, v| !v.is_empty());
    Ok(Report {
        files: loaded.files,
        namespaces: snapshot.policy.namespaces.len(),
        policies: snapshot.policy.policies.len(),
        violations,
    })
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
    for (namespace, violations) in &report.violations {
        let _ = writeln!(out, "namespace {namespace}: {}", plural(violations.len(), "violation"));
        for v in violations {
            let _ = writeln!(out, "  {} {}", v.rule(), v.message);
        }
        out.push('\n');
    }
    let summary = format!(
        "{}, {}, {}",
        plural(report.files.len(), "file"),
        plural(report.namespaces, "namespace"),
        plural(report.policies, "NetworkPolicy").replace("NetworkPolicys", "NetworkPolicies")
    );
    if report.is_clean() {
        let _ = writeln!(out, "ok: no violations ({summary})");
    } else {
        let _ = writeln!(
            out,
            "{} in {} ({summary})",
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
}

/// The report for tools.
pub fn render_json(report: &Report) -> Result<String, serde_json::Error> {
    let json = JsonReport {
        ok: report.is_clean(),
        total: report.total(),
        files: report.files.iter().map(|f| f.display().to_string()).collect(),
        namespaces: report.namespaces,
        network_policies: report.policies,
        violations: report
            .violations
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
            .collect(),
    };
    serde_json::to_string_pretty(&json)
}
