//! Runs cases on a data plane and reports per case.

use std::path::{Path, PathBuf};

use tierguard::Cluster;
use tierguard::engine::AddressFamily;

use super::case::{Case, CaseError, parse_case};
use super::dataplane::{DataPlane, Outcome, Probe};
use super::matrix::Cell;
use super::model;

/// What running one case showed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CaseReport {
    /// the case name
    pub name: String,
    /// one line per wrong cell (or data-plane error)
    pub failures: Vec<String>,
    /// probes that ran and matched
    pub matched: usize,
    /// probes the data plane could not run (checked on the model instead)
    pub skipped: usize,
}

impl CaseReport {
    /// Whether every probe that ran matched.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// The line printed for the case.
    pub fn lines(&self) -> Vec<String> {
        if self.passed() {
            let mut line = format!("ok {}", self.name);
            if self.skipped > 0 {
                line.push_str(&format!(
                    " ({} probes skipped on this data plane, checked on the model only)",
                    self.skipped
                ));
            }
            vec![line]
        } else {
            self.failures
                .iter()
                .map(|f| format!("FAIL {}: {f}", self.name))
                .collect()
        }
    }
}

fn cell_of(outcome: Outcome) -> Cell {
    match outcome {
        Outcome::Reachable => Cell::Reachable,
        _ => Cell::Blocked,
    }
}

/// Replays `case` on `dataplane`, checking every matrix after every step.
pub fn run_case(case: &Case, dataplane: &mut dyn DataPlane) -> CaseReport {
    let mut report = CaseReport {
        name: case.name.clone(),
        ..CaseReport::default()
    };
    let mut cluster = case.cluster.clone();
    dataplane.set_nodes(&case.nodes);
    if let Err(e) = dataplane.start(&cluster) {
        report
            .failures
            .push(format!("{} data plane failed to start: {e:#}", dataplane.name()));
        if let Err(e) = dataplane.finish() {
            report.failures.push(format!("teardown: {e:#}"));
        }
        return report;
    }
    for (i, step) in case.steps.iter().enumerate() {
        let n = i + 1;
        step.apply_to(&mut cluster);
        if let Err(e) = dataplane.apply(&cluster) {
            report
                .failures
                .push(format!("step {n}: applying the step failed: {e:#}"));
            break;
        }
        for expectation in &step.expect {
            let cells: Vec<_> = expectation.matrix.cells().collect();
            let probes: Vec<Probe> = cells
                .iter()
                .map(|(from, to, _)| Probe {
                    from: from.to_string(),
                    to: to.to_string(),
                    protocol: expectation.protocol,
                    port: expectation.port,
                })
                .collect();
            let family = expectation.family;
            let outcomes = match dataplane.probe_over(&cluster, &probes, family) {
                Ok(o) if o.len() == probes.len() => o,
                Ok(o) => {
                    report.failures.push(format!(
                        "step {n} {}/{}: data plane returned {} outcomes for {} probes",
                        expectation.protocol,
                        expectation.port,
                        o.len(),
                        probes.len()
                    ));
                    continue;
                }
                Err(e) => {
                    report.failures.push(format!(
                        "step {n} {}/{}: probing failed: {e:#}",
                        expectation.protocol, expectation.port
                    ));
                    continue;
                }
            };
            for ((probe, (_, _, expected)), outcome) in probes.iter().zip(&cells).zip(outcomes) {
                check_cell(&cluster, probe, family, *expected, outcome, n, &mut report);
            }
        }
    }
    if let Err(e) = dataplane.finish() {
        report.failures.push(format!("teardown: {e:#}"));
    }
    report
}

fn check_cell(
    cluster: &Cluster,
    probe: &Probe,
    family: AddressFamily,
    expected: Cell,
    outcome: Outcome,
    step: usize,
    report: &mut CaseReport,
) {
    let got = match outcome {
        Outcome::Reachable | Outcome::Blocked => cell_of(outcome),
        // A probe the data plane cannot run is still held against the model,
        // and is counted as skipped, never as passed.
        Outcome::Skipped => match model::verdict_over(cluster, probe, family) {
            Some(v) if cell_of_verdict(&v) == expected => {
                report.skipped += 1;
                return;
            }
            _ => {
                report
                    .failures
                    .push(failure(cluster, probe, family, expected, None, step));
                return;
            }
        },
    };
    if got == expected {
        report.matched += 1;
    } else {
        report
            .failures
            .push(failure(cluster, probe, family, expected, Some(got), step));
    }
}

fn cell_of_verdict(verdict: &tierguard::Verdict) -> Cell {
    if verdict.allowed() {
        Cell::Reachable
    } else {
        Cell::Blocked
    }
}

/// The line for a wrong cell, with the model's explanation; `got` is `None`
/// when the data plane skipped the probe and the model itself disagrees.
fn failure(
    cluster: &Cluster,
    probe: &Probe,
    family: AddressFamily,
    expected: Cell,
    got: Option<Cell>,
    step: usize,
) -> String {
    let verdict = model::verdict_over(cluster, probe, family);
    let why = verdict.as_ref().map(|v| format!(" (model: {v})")).unwrap_or_default();
    let over = match family {
        AddressFamily::IPv4 => "",
        AddressFamily::IPv6 => " IPv6",
    };
    let head = format!(
        "step {step} {}/{}{over} {} -> {}",
        probe.protocol, probe.port, probe.from, probe.to
    );
    match got {
        Some(got) => format!("{head} expected {expected} got {got}{why}"),
        None => {
            let model_cell = verdict.as_ref().map(cell_of_verdict).unwrap_or(Cell::Blocked);
            format!("{head} expected {expected} got {model_cell} on the model{why}")
        }
    }
}

/// The extensions of case files in a folder (cases are YAML, docs/cases.md).
pub const CASE_EXTENSIONS: &[&str] = &["yaml", "yml"];

/// Case files named by `paths`, walked as the webhook and the enforcer walk
/// manifests (`tierguard::input::files_under`): files as given, folders'
/// `*.yaml`/`*.yml` recursively, in name order, hidden entries skipped.
pub fn case_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, tierguard::input::InputError> {
    tierguard::input::files_under(paths, CASE_EXTENSIONS)
}

/// Reads and validates one case file.
pub fn load_case(path: &Path) -> Result<Case, CaseError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| CaseError {
        file: file.clone(),
        field: "file".into(),
        message: e.to_string(),
    })?;
    parse_case(&text, &file)
}

/// Totals over a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// cases that passed
    pub passed: usize,
    /// cases that failed
    pub failed: usize,
    /// probes skipped
    pub skipped: usize,
}

impl Totals {
    /// Adds one case's report.
    pub fn add(&mut self, report: &CaseReport) {
        if report.passed() {
            self.passed += 1;
        } else {
            self.failed += 1;
        }
        self.skipped += report.skipped;
    }

    /// The closing line.
    pub fn line(&self) -> String {
        let mut line = format!("{} passed, {} failed", self.passed, self.failed);
        if self.skipped > 0 {
            line.push_str(&format!(", {} skipped", self.skipped));
        }
        line
    }
}
