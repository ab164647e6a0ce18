//! Reachability cases (../shared/conformance/FORMAT.md): parsing, the model
//! data plane and the runner.

pub mod dataplane;

/// `conformance [--dataplane model|netns] PATH...`
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

/// Runs the cases and returns the exit code: 0 all passed, 1 a case failed, 2 bad input.
pub fn run_command(args: &ConformanceArgs) -> i32 {
    let _ = args;
    2
}
