//! `tierguard-enforcer`: the node agent and its offline tools.

use clap::{Parser, Subcommand};
use tierguard_enforcer::{commands, conformance};

#[derive(Parser)]
#[command(
    name = "tierguard-enforcer",
    version,
    about = "Renders NetworkPolicies into iptables chains and ipsets"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node agent (watches the cluster, keeps the node's rules in sync).
    Run(commands::RunArgs),
    /// Print the ipset and iptables-restore scripts a node would get from manifest files.
    Render(commands::RenderArgs),
    /// Remove every TG- chain and tg- set from this node.
    Cleanup(commands::CleanupArgs),
    /// Run reachability cases (../shared/conformance/FORMAT.md) on a data plane.
    Conformance(conformance::ConformanceArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Conformance(args) => std::process::exit(conformance::run_command(&args)),
        Command::Run(args) => tokio::runtime::Runtime::new()?.block_on(commands::run(&args)),
        Command::Render(args) => commands::render(&args),
        Command::Cleanup(args) => commands::cleanup(&args),
    }
}
