//! `tierguard-enforcer`: the node agent and its offline tools.

use clap::{Parser, Subcommand};
use tierguard_enforcer::commands;

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
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The offline tools print results; their logs are for problems only.
    let default_level = match cli.command {
        Command::Run(_) | Command::Cleanup(_) => "info",
        Command::Render(_) => "warn",
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .init();
    match cli.command {
        Command::Run(args) => tokio::runtime::Runtime::new()?.block_on(commands::run(&args)),
        Command::Render(args) => match commands::render(&args) {
            Err(e) if e.downcast_ref::<tierguard_enforcer::load::BadInput>().is_some() => {
                eprintln!("error: {e}");
                std::process::exit(2)
            }
            other => other,
        },
        Command::Cleanup(args) => commands::cleanup(&args),
    }
}
