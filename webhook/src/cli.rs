//! Command-line interface.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::contract;
use crate::limits::{self, ConnectionLimits};

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
// Parsed once at start-up, so the size of `Serve` costs nothing; boxing it
// would change what callers (the deployment tests) match on.
#[allow(clippy::large_enum_variant)]
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
    /// connections held at once, TLS handshakes included; more are closed right after accept
    #[arg(long, default_value_t = limits::DEFAULT_MAX_CONNECTIONS as u64, env = "TIERGUARD_MAX_CONNECTIONS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: u64,
    /// seconds for a TLS handshake
    #[arg(long, default_value_t = limits::DEFAULT_HANDSHAKE_TIMEOUT_SECONDS, env = "TIERGUARD_HANDSHAKE_TIMEOUT_SECONDS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub handshake_timeout_seconds: u64,
    /// seconds from a request's first byte (or the handshake, for the first request) to its last header byte
    #[arg(long, default_value_t = limits::DEFAULT_HEADER_TIMEOUT_SECONDS, env = "TIERGUARD_HEADER_TIMEOUT_SECONDS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout_seconds: u64,
    /// seconds from a request's headers to its last body byte
    #[arg(long, default_value_t = limits::DEFAULT_BODY_TIMEOUT_SECONDS, env = "TIERGUARD_BODY_TIMEOUT_SECONDS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub body_timeout_seconds: u64,
    /// seconds a connection may stay open with no request in flight (HTTP/1 and HTTP/2)
    #[arg(long, default_value_t = limits::DEFAULT_IDLE_TIMEOUT_SECONDS, env = "TIERGUARD_IDLE_TIMEOUT_SECONDS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_seconds: u64,
    /// largest request header: HTTP/1 start line and headers, HTTP/2 header list
    #[arg(long, default_value_t = limits::DEFAULT_MAX_HEADER_BYTES, env = "TIERGUARD_MAX_HEADER_BYTES",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_header_bytes: u32,
    /// HTTP/1 connection buffer in bytes (at least 8192)
    #[arg(long, default_value_t = limits::DEFAULT_HTTP1_MAX_BUF_BYTES as u64, env = "TIERGUARD_HTTP1_MAX_BUF_BYTES",
          value_parser = clap::value_parser!(u64).range(limits::MIN_HTTP1_BUF_BYTES as u64..))]
    pub http1_max_buf_bytes: u64,
    /// concurrent HTTP/2 streams per connection
    #[arg(long, default_value_t = limits::DEFAULT_HTTP2_MAX_STREAMS, env = "TIERGUARD_HTTP2_MAX_STREAMS",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub http2_max_streams: u32,
    /// HTTP/2 streams a client may reset before the server accepts them, before it gets a GOAWAY
    #[arg(long, default_value_t = limits::DEFAULT_HTTP2_MAX_PENDING_RESETS, env = "TIERGUARD_HTTP2_MAX_PENDING_RESETS")]
    pub http2_max_pending_resets: usize,
    /// HTTP/2 streams the server may reset for a client's protocol errors, before it sends a GOAWAY
    #[arg(long, default_value_t = limits::DEFAULT_HTTP2_MAX_LOCAL_ERROR_RESETS, env = "TIERGUARD_HTTP2_MAX_LOCAL_ERROR_RESETS")]
    pub http2_max_local_error_resets: usize,
    /// seconds an admitted NetworkPolicy or Namespace change keeps counting
    /// in later reviews when the watch never shows it (the API server may
    /// fail to persist a change after admission); at least the slowest
    /// validating webhook's timeoutSeconds on those resources plus a few
    /// seconds, and no more, since until then a lost change still counts
    #[arg(long, default_value_t = crate::overlay::DEFAULT_EXPIRY.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=300))]
    pub overlay_expiry_seconds: u64,
    /// run the background audit: every violation of the current state as
    /// metrics and, where the cluster serves a report API, policy reports
    /// (`--audit=false` turns it off)
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, env = "TIERGUARD_AUDIT")]
    pub audit: bool,
    /// seconds between audits of an unchanged state (a changed state is
    /// audited within a second)
    #[arg(long, default_value_t = crate::audit::DEFAULT_INTERVAL_SECONDS, env = "TIERGUARD_AUDIT_INTERVAL_SECONDS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub audit_interval_seconds: u64,
    /// namespace of the Lease that elects the replica writing the reports
    #[arg(long, default_value = contract::NAMESPACE, env = "POD_NAMESPACE")]
    pub audit_lease_namespace: String,
    /// this replica's name in the Lease (default: the host name, which is the Pod's name)
    #[arg(long, env = "POD_NAME")]
    pub audit_identity: Option<String>,
}

impl ServeArgs {
    /// The replica's identity for the audit Lease: `--audit-identity`, else
    /// the host name, else one made from the process id (unique enough on one host).
    pub fn identity(&self) -> String {
        self.audit_identity
            .clone()
            .filter(|i| !i.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|h| h.trim().to_string())
                    .filter(|h| !h.is_empty())
            })
            .unwrap_or_else(|| format!("tierguard-webhook-{}", std::process::id()))
    }

    /// The connection limits the flags ask for.
    pub fn connection_limits(&self) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: usize::try_from(self.max_connections).unwrap_or(usize::MAX),
            handshake_timeout: Duration::from_secs(self.handshake_timeout_seconds),
            header_timeout: Duration::from_secs(self.header_timeout_seconds),
            body_timeout: Duration::from_secs(self.body_timeout_seconds),
            idle_timeout: Duration::from_secs(self.idle_timeout_seconds),
            max_header_bytes: self.max_header_bytes,
            http1_max_buf_bytes: usize::try_from(self.http1_max_buf_bytes).unwrap_or(usize::MAX),
            http2_max_streams: self.http2_max_streams,
            http2_max_pending_resets: self.http2_max_pending_resets,
            http2_max_local_error_resets: self.http2_max_local_error_resets,
        }
    }
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
        assert_eq!(args.connection_limits(), ConnectionLimits::default());
        assert_eq!(args.overlay_expiry_seconds, 15);
        assert!(args.audit);
        assert_eq!(args.audit_interval_seconds, 60);
        assert!(Cli::try_parse_from(["tierguard-webhook", "serve", "--overlay-expiry-seconds", "0"]).is_err());
        assert!(Cli::try_parse_from(["tierguard-webhook", "serve", "--tls-cert", "a"]).is_err());
        Ok(())
    }

    #[test]
    fn audit_flags_turn_it_off_and_refuse_a_zero_interval() -> Result<(), clap::Error> {
        let parse = |extra: &[&str]| -> Result<ServeArgs, clap::Error> {
            let cli = Cli::try_parse_from(["tierguard-webhook", "serve"].iter().chain(extra))?;
            match cli.command {
                Command::Serve(args) => Ok(args),
                Command::Check(_) => panic!("serve expected"),
            }
        };
        assert!(!parse(&["--audit=false"])?.audit);
        assert!(parse(&["--audit", "true"])?.audit);
        let args = parse(&["--audit-interval-seconds", "5", "--audit-identity", "pod-a"])?;
        assert_eq!((args.audit_interval_seconds, args.identity()), (5, "pod-a".to_string()));
        assert!(parse(&["--audit-interval-seconds", "0"]).is_err());
        assert!(!parse(&[])?.identity().is_empty());
        Ok(())
    }

    #[test]
    fn connection_limit_flags_reach_the_limits_and_refuse_zero() -> Result<(), clap::Error> {
        let cli = Cli::try_parse_from([
            "tierguard-webhook",
            "serve",
            "--max-connections",
            "7",
            "--header-timeout-seconds",
            "3",
            "--idle-timeout-seconds",
            "200",
            "--http2-max-streams",
            "5",
        ])?;
        let Command::Serve(args) = cli.command else {
            panic!("serve expected");
        };
        let limits = args.connection_limits();
        assert_eq!(limits.max_connections, 7);
        assert_eq!(limits.header_timeout, Duration::from_secs(3));
        assert_eq!(limits.idle_timeout, Duration::from_secs(200));
        assert_eq!(limits.http2_max_streams, 5);
        assert_eq!(limits.body_timeout, ConnectionLimits::default().body_timeout);
        for (flag, value) in [
            ("--max-connections", "0"),
            ("--header-timeout-seconds", "0"),
            ("--http1-max-buf-bytes", "4096"),
        ] {
            assert!(
                Cli::try_parse_from(["tierguard-webhook", "serve", flag, value]).is_err(),
                "{flag} {value} must be refused"
            );
        }
        Ok(())
    }
}
