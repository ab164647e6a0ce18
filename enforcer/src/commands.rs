//! The `render`, `cleanup` and `run` subcommands.

use std::net::IpAddr;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::daemon::metrics::Metrics;
use crate::daemon::{LoopConfig, drive, server, watch};
use clap::Args;
use ipnet::IpNet;

use crate::apply::XtablesWait;
use crate::apply::backend::Backend;
use crate::conntrack::EnforceExisting;
use crate::load::load_manifests;
use crate::sync::{HostExecutor, NodeIdentity, SyncOptions, Syncer};

/// Backend choice on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendFlag {
    /// detect as kubelet does (the backend holding more rules; else `iptables --version`)
    Auto,
    /// iptables-legacy
    Legacy,
    /// iptables-nft
    Nft,
}

impl BackendFlag {
    /// The pinned backend, if any.
    pub fn backend(self) -> Option<Backend> {
        match self {
            BackendFlag::Auto => None,
            BackendFlag::Legacy => Some(Backend::Legacy),
            BackendFlag::Nft => Some(Backend::Nft),
        }
    }
}

/// Whether to program IPv6 on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Ipv6Flag {
    /// when the kernel has IPv6 (`/proc/net/if_inet6` exists); a kernel
    /// without it carries no IPv6 traffic to police
    Auto,
    /// always (a missing ip6tables is then an error on every sync)
    On,
    /// never
    Off,
}

impl Ipv6Flag {
    /// Whether IPv6 rules are programmed on this host.
    pub fn enabled(self) -> bool {
        match self {
            Ipv6Flag::Auto => std::path::Path::new("/proc/net/if_inet6").exists(),
            Ipv6Flag::On => true,
            Ipv6Flag::Off => false,
        }
    }
}

/// `render --node NAME PATH...`
#[derive(Debug, Args)]
pub struct RenderArgs {
    /// node whose rules to print
    #[arg(long)]
    pub node: String,
    /// manifest files or folders
    #[arg(required = true)]
    pub paths: Vec<std::path::PathBuf>,
    /// NFLOG group for dropped packets (rate-limited)
    #[arg(long)]
    pub nflog_group: Option<u16>,
    /// this node's pod CIDR(s): unknown addresses there are dropped
    #[arg(long = "pod-cidr")]
    pub pod_cidrs: Vec<IpNet>,
    /// print the IPv6 rule set too, as `run --ipv6` programs it
    #[arg(long, value_enum, default_value = "auto")]
    pub ipv6: Ipv6Flag,
}

/// `cleanup`
#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// iptables backend
    #[arg(long, value_enum, default_value = "auto")]
    pub iptables_backend: BackendFlag,
    /// program the IPv6 filter table too
    #[arg(long, value_enum, default_value = "auto")]
    pub ipv6: Ipv6Flag,
    /// seconds iptables waits for the xtables lock (legacy backend) before giving up
    #[arg(long, default_value_t = XtablesWait::default().seconds, value_parser = clap::value_parser!(u32).range(1..))]
    pub xtables_wait_seconds: u32,
}

/// `run`
#[derive(Debug, Args)]
pub struct RunArgs {
    /// this node's name
    #[arg(long, env = crate::contract::NODE_NAME_ENV)]
    pub node_name: String,
    /// this node's own addresses, comma-separated (default: the Node object's InternalIPs)
    #[arg(long = "node-ip", env = "NODE_IP", value_delimiter = ',')]
    pub node_ips: Vec<IpAddr>,
    /// this node's pod CIDR(s): an address there that is no known pod is dropped (fail closed)
    #[arg(long = "pod-cidr", value_delimiter = ',')]
    pub pod_cidrs: Vec<IpNet>,
    /// iptables backend
    #[arg(long, value_enum, default_value = "auto")]
    pub iptables_backend: BackendFlag,
    /// program the IPv6 filter table too
    #[arg(long, value_enum, default_value = "auto")]
    pub ipv6: Ipv6Flag,
    /// least time between two syncs, e.g. `100ms`, `1s`: a change after a quiet
    /// period is synced at once, changes within the interval are folded into one
    /// sync at its end
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub min_sync_interval: Duration,
    /// deprecated alias of --min-sync-interval, in milliseconds (to be removed in the next release)
    #[arg(long, conflicts_with = "min_sync_interval")]
    pub debounce_ms: Option<u64>,
    /// full resync (rewrite everything, repairing drift) every this many seconds
    #[arg(long, default_value_t = 300)]
    pub resync_seconds: u64,
    /// NFLOG group for dropped packets (rate-limited)
    #[arg(long)]
    pub nflog_group: Option<u16>,
    /// address of /healthz and /metrics
    #[arg(long, default_value_t = std::net::SocketAddr::from(([0, 0, 0, 0], crate::contract::METRICS_PORT)))]
    pub metrics_addr: std::net::SocketAddr,
    /// remove every TG- chain and tg- set on SIGTERM (default: leave them enforcing)
    #[arg(long)]
    pub cleanup_on_exit: bool,
    /// seconds iptables waits for the xtables lock (legacy backend) before the sync fails
    /// and is retried with backoff; the rules in force stay
    #[arg(long, default_value_t = XtablesWait::default().seconds, value_parser = clap::value_parser!(u32).range(1..))]
    pub xtables_wait_seconds: u32,
    /// Testing: read the cluster once from these manifest files or folders (as
    /// `render` does) instead of watching an API server, then keep running.
    #[arg(long = "state", hide = true)]
    pub state: Vec<std::path::PathBuf>,
    /// established connections of local pods that new rules deny: `keep` them
    /// (conntrack lets them flow until they end) or `delete` their conntrack
    /// entries after the sync, so their next packet meets the new rules
    #[arg(long, value_enum, default_value = "keep")]
    pub enforce_existing: EnforceExisting,
}

fn xtables_wait(seconds: u32) -> XtablesWait {
    XtablesWait {
        seconds,
        ..XtablesWait::default()
    }
}

impl RunArgs {
    /// The minimum sync interval, from `--debounce-ms` when that deprecated flag is given.
    pub fn sync_interval(&self) -> Duration {
        self.debounce_ms.map_or(self.min_sync_interval, Duration::from_millis)
    }
}

/// The scripts `render` prints for what `syncer` programs: per family (IPv4,
/// then IPv6 when it programs IPv6), the ipset script, then the
/// iptables-restore script.
pub fn render_text<E: crate::exec::Executor>(syncer: &Syncer<E>, cluster: &tierguard::Cluster) -> String {
    syncer
        .render_all(cluster)
        .iter()
        .map(|rendered| format!("{}{}", rendered.ipset_script(), rendered.iptables_script()))
        .collect()
}

/// Prints what the agent would program on a node from these manifests: the
/// objects go through the agent's conversion (finished pods gone, broken
/// policy rules dropped, each reported on stderr) and the agent's render.
pub fn render(args: &RenderArgs) -> anyhow::Result<()> {
    let loaded = load_manifests(&args.paths, &args.node)?;
    for warning in &loaded.warnings {
        eprintln!("warning: {warning}");
    }
    let options = SyncOptions {
        nflog_group: args.nflog_group,
        pod_cidrs: args.pod_cidrs.clone(),
        ipv6: args.ipv6.enabled(),
        ..SyncOptions::default()
    };
    let node = NodeIdentity {
        name: args.node.clone(),
        addresses: loaded.node_addresses,
    };
    let syncer = Syncer::new(node, HostExecutor, options);
    print!("{}", render_text(&syncer, &loaded.cluster));
    Ok(())
}

/// Removes every TG- chain and tg- set.
pub fn cleanup(args: &CleanupArgs) -> anyhow::Result<()> {
    let options = SyncOptions {
        backend: args.iptables_backend.backend(),
        ipv6: args.ipv6.enabled(),
        xtables_wait: xtables_wait(args.xtables_wait_seconds),
        ..SyncOptions::default()
    };
    let node = NodeIdentity {
        name: String::new(),
        addresses: Vec::new(),
    };
    Syncer::new(node, HostExecutor, options)
        .cleanup()
        .context("cleanup failed")
}

async fn node_addresses(client: &kube::Client, args: &RunArgs) -> Vec<IpAddr> {
    if !args.node_ips.is_empty() {
        return args.node_ips.clone();
    }
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
    match nodes.get(&args.node_name).await {
        Ok(node) => crate::load::node_addresses(&node),
        Err(e) => {
            tracing::warn!(error = %e, node = %args.node_name, "cannot read the Node's addresses; pass --node-ip (downward API status.hostIP) so kubelet probes are allowed");
            Vec::new()
        }
    }
}

async fn terminated(shutdown: CancellationToken) {
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    tracing::info!("shutting down");
    shutdown.cancel();
}

/// Runs the node agent.
pub async fn run(args: &RunArgs) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    tokio::spawn(terminated(shutdown.clone()));
    let (updates, addresses) = if args.state.is_empty() {
        let client = kube::Client::try_default()
            .await
            .context("cannot build a Kubernetes client (in-cluster config or kubeconfig)")?;
        let addresses = node_addresses(&client, args).await;
        (watch::updates(client).boxed(), addresses)
    } else {
        let loaded = load_manifests(&args.state, &args.node_name)?;
        for warning in &loaded.warnings {
            tracing::warn!("{warning}");
        }
        let cluster = loaded.cluster;
        let addresses = if args.node_ips.is_empty() {
            loaded.node_addresses
        } else {
            args.node_ips.clone()
        };
        // The listing never ends: the agent keeps the rules until it is stopped.
        let listed = futures::stream::iter(crate::load::as_updates(&cluster)).chain(futures::stream::pending());
        (listed.boxed(), addresses)
    };
    tracing::info!(node = %args.node_name, ?addresses, "starting");
    let options = SyncOptions {
        backend: args.iptables_backend.backend(),
        nflog_group: args.nflog_group,
        pod_cidrs: args.pod_cidrs.clone(),
        ipv6: args.ipv6.enabled(),
        xtables_wait: xtables_wait(args.xtables_wait_seconds),
        enforce_existing: args.enforce_existing,
        ..SyncOptions::default()
    };
    let node = NodeIdentity {
        name: args.node_name.clone(),
        addresses,
    };
    let syncer = Syncer::new(node, HostExecutor, options);
    let metrics = Arc::new(Metrics::new());
    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.metrics_addr))?;
    let server = tokio::spawn(server::serve(listener, metrics.clone(), shutdown.clone()));
    if let Some(ms) = args.debounce_ms {
        tracing::warn!(
            debounce_ms = ms,
            "--debounce-ms is deprecated and will be removed in the next release; \
             it now sets --min-sync-interval ({ms}ms)"
        );
    }
    let config = LoopConfig {
        min_sync_interval: args.sync_interval(),
        resync: Duration::from_secs(args.resync_seconds.max(1)),
        ..LoopConfig::default()
    };
    let mut syncer = drive(updates, syncer, config, metrics, shutdown.clone()).await;
    shutdown.cancel();
    if args.cleanup_on_exit {
        syncer.cleanup().context("cleanup on exit failed")?;
    }
    server.await.context("metrics server task")?.context("metrics server")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn parse(extra: &[&str]) -> Result<RunArgs, clap::Error> {
        let args = ["tierguard-enforcer", "--node-name", "n1"].iter().chain(extra);
        Cli::try_parse_from(args).map(|cli| cli.run)
    }

    #[test]
    fn min_sync_interval_takes_a_duration_and_defaults_to_100ms() {
        let ms = Duration::from_millis;
        assert_eq!(parse(&[]).unwrap().sync_interval(), ms(100));
        for (flag, want) in [
            ("250ms", ms(250)),
            ("1s", ms(1000)),
            ("1s 500ms", ms(1500)),
            ("0s", ms(0)),
        ] {
            assert_eq!(
                parse(&["--min-sync-interval", flag]).unwrap().sync_interval(),
                want,
                "{flag}"
            );
        }
        for bad in ["100", "fast", "-1s"] {
            let err = parse(&[&format!("--min-sync-interval={bad}")]).unwrap_err().to_string();
            assert!(err.contains("--min-sync-interval"), "{bad}: {err}");
        }
    }

    #[test]
    fn debounce_ms_is_a_deprecated_alias_of_the_interval() {
        let args = parse(&["--debounce-ms", "300"]).unwrap();
        assert_eq!(args.sync_interval(), Duration::from_millis(300));
        let both = parse(&["--debounce-ms", "300", "--min-sync-interval", "50ms"]);
        assert!(both.is_err(), "{both:?}");
    }
}
