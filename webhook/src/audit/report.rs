//! Policy reports from findings, and which reports to write or delete.
//! Pure: the objects are `serde_json::Value`s that a [`super::sink::ReportSink`]
//! applies; nothing here talks to the API server.
//!
//! Both report APIs share the result shape (`policy`, `rule`, `result`,
//! `message`, `resources`, `timestamp`, `summary`): `openreports.io/v1alpha1`
//! `Report` (the successor, with a top-level `source`) and
//! `wgpolicyk8s.io/v1alpha2` `PolicyReport` (what Kyverno and Policy Reporter
//! users have installed).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::findings::{Finding, Findings, ObjectRef};

/// The name of tierguard's report in each governed namespace.
pub const REPORT_NAME: &str = "tierguard";
/// The policy name results carry, and the report's source.
pub const SOURCE: &str = "tierguard";
/// The label on every report tierguard writes; listing by it finds the
/// reports to delete without touching other tools' reports.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "tierguard";

/// Which report API the cluster serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReportKind {
    /// `openreports.io/v1alpha1` `Report`
    OpenReports,
    /// `wgpolicyk8s.io/v1alpha2` `PolicyReport`
    PolicyReport,
}

impl ReportKind {
    /// In order of preference.
    pub const PREFERENCE: [ReportKind; 2] = [ReportKind::OpenReports, ReportKind::PolicyReport];

    /// API group.
    pub fn group(self) -> &'static str {
        match self {
            ReportKind::OpenReports => "openreports.io",
            ReportKind::PolicyReport => "wgpolicyk8s.io",
        }
    }

    /// API version within the group.
    pub fn version(self) -> &'static str {
        match self {
            ReportKind::OpenReports => "v1alpha1",
            ReportKind::PolicyReport => "v1alpha2",
        }
    }

    /// `group/version`.
    pub fn api_version(self) -> String {
        format!("{}/{}", self.group(), self.version())
    }

    /// Kind of one object.
    pub fn kind(self) -> &'static str {
        match self {
            ReportKind::OpenReports => "Report",
            ReportKind::PolicyReport => "PolicyReport",
        }
    }

    /// Resource (plural).
    pub fn plural(self) -> &'static str {
        match self {
            ReportKind::OpenReports => "reports",
            ReportKind::PolicyReport => "policyreports",
        }
    }
}

fn object_ref(r: &ObjectRef) -> Value {
    let mut v = json!({"apiVersion": r.api_version, "kind": r.kind, "name": r.name});
    if let Some(ns) = &r.namespace {
        v["namespace"] = json!(ns);
    }
    if let Some(uid) = &r.uid {
        v["uid"] = json!(uid);
    }
    v
}

fn result(finding: &Finding, seconds: i64) -> Value {
    let mut v = json!({
        "source": SOURCE,
        "policy": SOURCE,
        "rule": finding.rule.to_string(),
        "result": "fail",
        "scored": true,
        "message": finding.message,
        "timestamp": {"seconds": seconds, "nanos": 0},
    });
    if let Some(r) = &finding.resource {
        v["resources"] = json!([object_ref(r)]);
    }
    v
}

/// The report of one namespace with its findings, stamped `seconds` (Unix
/// time of the audit).
pub fn build(kind: ReportKind, namespace: &str, findings: &[Finding], seconds: i64) -> Value {
    let mut report = json!({
        "apiVersion": kind.api_version(),
        "kind": kind.kind(),
        "metadata": {
            "name": REPORT_NAME,
            "namespace": namespace,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY},
        },
        "scope": {"apiVersion": "v1", "kind": "Namespace", "name": namespace},
        "summary": {"pass": 0, "fail": findings.len(), "warn": 0, "error": 0, "skip": 0},
        "results": findings.iter().map(|f| result(f, seconds)).collect::<Vec<_>>(),
    });
    if kind == ReportKind::OpenReports {
        report["source"] = json!(SOURCE);
    }
    report
}

/// What to write to make the cluster's reports match one audit.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// reports to apply (namespace, object), in namespace order
    pub apply: Vec<(String, Value)>,
    /// namespaces whose report to delete (compliant, ungoverned or gone)
    pub delete: Vec<String>,
}

impl Plan {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.apply.is_empty() && self.delete.is_empty()
    }
}

/// Plans the writes for `findings`: a report for every violating namespace
/// whose findings differ from `written` (what this writer last applied,
/// which survives only while it leads), and a delete for every namespace of
/// `existing` (reports in the cluster with tierguard's label) that has no
/// violation now.
pub fn plan(
    kind: ReportKind,
    findings: &Findings,
    existing: &BTreeSet<String>,
    written: &BTreeMap<String, Vec<Finding>>,
    seconds: i64,
) -> Plan {
    let mut out = Plan::default();
    for (namespace, found) in findings.violating() {
        // Unchanged findings are not rewritten: the timer would otherwise
        // bump every report's timestamps, and watchers, once a minute.
        let unchanged = existing.contains(namespace) && written.get(namespace).is_some_and(|w| w == found);
        if !unchanged {
            out.apply
                .push((namespace.to_string(), build(kind, namespace, found, seconds)));
        }
    }
    let violating: BTreeSet<&str> = findings.violating().map(|(n, _)| n).collect();
    out.delete = existing
        .iter()
        .filter(|n| !violating.contains(n.as_str()))
        .cloned()
        .collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tierguard::guardrails::RuleId;

    fn finding(rule: RuleId, message: &str, policy: Option<&str>) -> Finding {
        Finding {
            rule,
            message: message.to_string(),
            resource: Some(match policy {
                Some(p) => ObjectRef {
                    api_version: "networking.k8s.io/v1",
                    kind: "NetworkPolicy",
                    name: p.to_string(),
                    namespace: Some("shop".to_string()),
                    uid: Some("u-1".to_string()),
                },
                None => ObjectRef {
                    api_version: "v1",
                    kind: "Namespace",
                    name: "shop".to_string(),
                    namespace: None,
                    uid: None,
                },
            }),
        }
    }

    fn findings(entries: &[(&str, Vec<Finding>)]) -> Findings {
        Findings {
            namespaces: entries.iter().map(|(n, f)| (n.to_string(), f.clone())).collect(),
            warnings: 0,
        }
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn builds_both_report_kinds_with_one_result_per_finding_and_a_summary() {
        let found = [
            finding(RuleId::R1, "tier data in namespace shop has no default-deny", None),
            finding(
                RuleId::R3,
                "policy data-open lets tier frontend reach tier data",
                Some("data-open"),
            ),
        ];
        let open = build(ReportKind::OpenReports, "shop", &found, 1_700_000_000);
        assert_eq!(
            open,
            json!({
                "apiVersion": "openreports.io/v1alpha1",
                "kind": "Report",
                "metadata": {"name": "tierguard", "namespace": "shop",
                             "labels": {"app.kubernetes.io/managed-by": "tierguard"}},
                "source": "tierguard",
                "scope": {"apiVersion": "v1", "kind": "Namespace", "name": "shop"},
                "summary": {"pass": 0, "fail": 2, "warn": 0, "error": 0, "skip": 0},
                "results": [
                    {"source": "tierguard", "policy": "tierguard", "rule": "R1", "result": "fail", "scored": true,
                     "message": "tier data in namespace shop has no default-deny",
                     "timestamp": {"seconds": 1_700_000_000, "nanos": 0},
                     "resources": [{"apiVersion": "v1", "kind": "Namespace", "name": "shop"}]},
                    {"source": "tierguard", "policy": "tierguard", "rule": "R3", "result": "fail", "scored": true,
                     "message": "policy data-open lets tier frontend reach tier data",
                     "timestamp": {"seconds": 1_700_000_000, "nanos": 0},
                     "resources": [{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                                    "name": "data-open", "namespace": "shop", "uid": "u-1"}]},
                ],
            })
        );
        let old = build(ReportKind::PolicyReport, "shop", &found, 1_700_000_000);
        assert_eq!(old["apiVersion"], "wgpolicyk8s.io/v1alpha2");
        assert_eq!(old["kind"], "PolicyReport");
        assert!(old.get("source").is_none(), "v1alpha2 has no top-level source");
        assert_eq!(old["results"], open["results"]);
    }

    #[test]
    fn plans_new_changed_and_deleted_reports_and_skips_unchanged_ones() {
        let r1 = finding(RuleId::R1, "r1", None);
        let r2 = finding(RuleId::R2, "r2", None);
        let now = findings(&[
            ("changed", vec![r1.clone(), r2.clone()]),
            ("compliant", vec![]),
            ("new", vec![r1.clone()]),
            ("same", vec![r2.clone()]),
        ]);
        let existing = set(&["changed", "compliant", "gone", "same"]);
        let written: BTreeMap<String, Vec<Finding>> = [
            ("changed".to_string(), vec![r1.clone()]),
            ("same".to_string(), vec![r2.clone()]),
        ]
        .into();
        let plan = plan(ReportKind::OpenReports, &now, &existing, &written, 5);
        let applied: Vec<&str> = plan.apply.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(applied, vec!["changed", "new"]);
        assert_eq!(plan.apply[0].1["summary"]["fail"], 2);
        assert_eq!(plan.delete, vec!["compliant".to_string(), "gone".to_string()]);
    }

    #[test]
    fn a_report_deleted_behind_the_writers_back_is_written_again() {
        let r1 = finding(RuleId::R1, "r1", None);
        let now = findings(&[("shop", vec![r1.clone()])]);
        let written: BTreeMap<String, Vec<Finding>> = [("shop".to_string(), vec![r1])].into();
        let plan = plan(ReportKind::PolicyReport, &now, &BTreeSet::new(), &written, 5);
        assert_eq!(plan.apply.len(), 1);
        assert!(plan.delete.is_empty());
        let clean = super::plan(
            ReportKind::PolicyReport,
            &findings(&[("shop", vec![])]),
            &set(&[]),
            &written,
            5,
        );
        assert!(clean.is_empty());
    }
}
