//! `kubectl-tierguard`: the kubectl plugin (`kubectl tierguard ...`). The
//! commands live in `tierguard_webhook::plugin`; this reads the state (files,
//! or the cluster on a runtime), prints, and maps the outcome to the exit code.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use tierguard_webhook::logging;
use tierguard_webhook::plugin::source::State;
use tierguard_webhook::plugin::{self, PluginCli, PluginError};

fn read_state(cli: &PluginCli) -> Result<State, PluginError> {
    let source = cli.command.source();
    let paths = cli.command.paths()?;
    if source.cluster {
        if !paths.is_empty() {
            return Err(PluginError::Usage(format!(
                "--cluster reads the cluster: drop the paths ({})",
                paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the runtime")
            .map_err(|e| PluginError::Usage(format!("{e:#}")))?;
        let access = plugin::access(source);
        tracing::debug!(?access, "reading the cluster");
        Ok(runtime.block_on(State::from_cluster(&access))?)
    } else {
        if paths.is_empty() {
            return Err(PluginError::Usage(
                "give manifest files or folders, or --cluster".to_string(),
            ));
        }
        plugin::read_files(&paths)
    }
}

fn main() -> ExitCode {
    let cli = PluginCli::parse();
    logging::init(cli.log_format);
    let outcome = read_state(&cli).and_then(|state| cli.command.run(&state));
    match outcome {
        Ok(outcome) => {
            // What the input asks the reader to know, as plain lines (logs are for --log-format).
            for warning in &outcome.warnings {
                tracing::debug!(%warning, "input warning");
                eprintln!("warning: {warning}");
            }
            print!("{}", outcome.stdout);
            ExitCode::from(outcome.code)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
