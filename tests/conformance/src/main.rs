//! `tierguard-conformance`: runs reachability cases (docs/cases.md) on a data plane.

use clap::Parser;
use tierguard_conformance::conformance;

#[derive(Parser)]
#[command(
    name = "tierguard-conformance",
    version,
    about = "Run reachability cases (docs/cases.md) on a data plane"
)]
struct Cli {
    #[command(flatten)]
    args: conformance::ConformanceArgs,
}

fn main() {
    let cli = Cli::parse();
    // The runner prints results; its logs are for problems only.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    std::process::exit(conformance::run_command(&cli.args))
}
