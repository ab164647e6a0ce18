//! Command-line interface.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::contract;

/// tierguard admission webhook: guardrails for NetworkPolicies and Namespaces.
#[derive(Debug, Parser)]
#[command(name = "tierguard-webhook", version, about)]
pub struct Cli {
    /// log format
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "TIERGUARD_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// what to do
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// human-readable lines
    Text,
    /// one JSON object per line
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the validating and mutating webhook over HTTPS.
    Serve(ServeArgs),
    /// Check manifests offline (for CI): exit 0 clean, 1 violations, 2 unreadable input.
    Check(CheckArgs),
}

/// `serve` options.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// address to listen on
    #[arg(long, default_value = contract::DEFAULT_LISTEN, env = "TIERGUARD_LISTEN")]
    pub listen: SocketAddr,
    /// serving certificate chain (PEM); reloaded when it changes
    #[arg(long, env = "TIERGUARD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// serving private key (PEM)
    #[arg(long, env = "TIERGUARD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// tier template file (default: the built-in three-tier template)
    #[arg(long, env = "TIERGUARD_TEMPLATE")]
    pub template: Option<PathBuf>,
    /// read Namespaces and NetworkPolicies from these manifest files or folders instead of the cluster
    #[arg(long, num_args = 1..)]
    pub state: Vec<PathBuf>,
    /// DNS name the webhook is reached as; the certificate must name one of them (repeatable)
    #[arg(long = "service-dns", default_values_t = default_service_names())]
    pub service_dns: Vec<String>,
    /// seconds to keep answering (not ready) after SIGTERM before closing the listener
    #[arg(long, default_value_t = 5)]
    pub drain_seconds: u64,
    /// seconds between certificate re-checks (besides file-change events)
    #[arg(long, default_value_t = 10)]
    pub cert_recheck_seconds: u64,
    /// seconds an admitted NetworkPolicy or Namespace change keeps counting
    /// in later reviews when the watch never shows it (the API server may
    /// fail to persist a change after admission); at least the slowest
    /// validating webhook's timeoutSeconds on those resources plus a few
    /// seconds, and no more, since until then a lost change still counts
    #[arg(long, default_value_t = crate::overlay::DEFAULT_EXPIRY.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=300))]
    pub overlay_expiry_seconds: u64,
}

/// The webhook Service's DNS names.
pub fn default_service_names() -> Vec<String> {
    let base = format!("{}.{}.svc", contract::SERVICE_NAME, contract::NAMESPACE);
    vec![base.clone(), format!("{base}.cluster.local")]
}

/// `check` output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// readable, grouped by namespace
    Text,
    /// one JSON document, for tools
    Json,
}

/// `check` options.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// tier template file (default: the built-in three-tier template)
    #[arg(long)]
    pub template: Option<PathBuf>,
    /// output format
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// manifest files or folders (*.yaml, *.yml, *.json, recursively)
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_consistent_and_defaults_hold() -> Result<(), clap::Error> {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["tierguard-webhook", "serve"])?;
        let Command::Serve(args) = cli.command else {
            panic!("serve expected");
        };
        assert_eq!(args.listen.to_string(), contract::DEFAULT_LISTEN);
        assert_eq!(
            args.service_dns,
            vec![
                "tierguard-webhook.tierguard-system.svc".to_string(),
                "tierguard-webhook.tierguard-system.svc.cluster.local".to_string()
            ]
        );
        assert_eq!(args.drain_seconds, 5);
        assert_eq!(args.overlay_expiry_seconds, 15);
        assert!(Cli::try_parse_from(["tierguard-webhook", "serve", "--overlay-expiry-seconds", "0"]).is_err());
        assert!(Cli::try_parse_from(["tierguard-webhook", "serve", "--tls-cert", "a"]).is_err());
        Ok(())
    }
}
