//! The `render`, `cleanup` and `run` subcommands (enforcer daemon work).

use clap::Args;

/// `render --node NAME PATH...`
#[derive(Debug, Args)]
pub struct RenderArgs {
    /// node whose rules to print
    #[arg(long)]
    pub node: String,
    /// manifest files or folders
    #[arg(required = true)]
    pub paths: Vec<std::path::PathBuf>,
}

/// `cleanup`
#[derive(Debug, Args)]
pub struct CleanupArgs {}

/// `run`
#[derive(Debug, Args)]
pub struct RunArgs {}

/// Prints the ipset and iptables-restore scripts for a node.
pub fn render(args: &RenderArgs) -> anyhow::Result<()> {
    anyhow::bail!("render is not built yet ({args:?})")
}

/// Removes every TG- chain and tg- set.
pub fn cleanup(args: &CleanupArgs) -> anyhow::Result<()> {
    anyhow::bail!("cleanup is not built yet ({args:?})")
}

/// Runs the node agent.
pub async fn run(args: &RunArgs) -> anyhow::Result<()> {
    anyhow::bail!("run is not built yet ({args:?})")
}
