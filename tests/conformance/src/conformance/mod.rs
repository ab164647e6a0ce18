//! Reachability cases (docs/cases.md): parsing, the model
//! data plane and the runner.

pub mod case;
pub mod dataplane;
pub mod matrix;
pub mod model;
pub mod runner;

use std::collections::BTreeMap;

use dataplane::DataPlane;
use runner::Totals;

/// `tierguard-conformance [--dataplane model|netns] PATH...`
#[derive(Debug, clap::Args)]
pub struct ConformanceArgs {
    /// where the probes run
    #[arg(long, value_enum, default_value = "model")]
    pub dataplane: DataPlaneKind,
    /// case files or folders of cases
    #[arg(required = true)]
    pub paths: Vec<std::path::PathBuf>,
}

/// The data planes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DataPlaneKind {
    /// the policy engine's verdicts
    Model,
    /// network namespaces, real iptables rules, real packets (root)
    Netns,
}

fn make_dataplane(kind: DataPlaneKind) -> anyhow::Result<Box<dyn DataPlane>> {
    match kind {
        DataPlaneKind::Model => Ok(Box::new(model::ModelDataPlane)),
        DataPlaneKind::Netns => Ok(Box::new(crate::netns::NetnsDataPlane::new(
            crate::netns::NetnsOptions::default(),
        )?)),
    }
}

/// Runs the cases and returns the exit code: 0 all passed, 1 a case failed,
/// 2 a case file that does not parse (the valid ones still run).
pub fn run_command(args: &ConformanceArgs) -> i32 {
    let files = match runner::case_files(&args.paths) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let mut bad_input = false;
    let mut cases = Vec::new();
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    for file in &files {
        match runner::load_case(file) {
            Ok(case) => {
                if let Some(other) = names.insert(case.name.clone(), file.display().to_string()) {
                    eprintln!(
                        "error: {}: name: case {} is also defined in {other}",
                        file.display(),
                        case.name
                    );
                    bad_input = true;
                } else {
                    cases.push(case);
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                bad_input = true;
            }
        }
    }
    let mut dataplane = match make_dataplane(args.dataplane) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e:#}");
            return 2;
        }
    };
    let mut totals = Totals::default();
    for case in &cases {
        let report = runner::run_case(case, dataplane.as_mut());
        for line in report.lines() {
            println!("{line}");
        }
        totals.add(&report);
    }
    println!("{}", totals.line());
    if bad_input {
        2
    } else if totals.failed > 0 {
        1
    } else {
        0
    }
}
