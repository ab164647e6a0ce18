//! The `render`, `cleanup` and `run` subcommands.

use std::net::IpAddr;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::daemon::metrics::Metrics;
use crate::daemon::{LoopConfig, drive, server, watch};
use clap::Args;
use ipnet::IpNet;

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
    /// quiet period after a change before syncing, in milliseconds
    #[arg(long, default_value_t = 200)]
    pub debounce_ms: u64,
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
    /// established connections of local pods that new rules deny: `keep` them
    /// (conntrack lets them flow until they end) or `delete` their conntrack
    /// entries after the sync, so their next packet meets the new rules
    #[arg(long, value_enum, default_value = "keep")]
    pub enforce_existing: EnforceExisting,
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
    let client = kube::Client::try_default()
        .await
        .context("cannot build a Kubernetes client (in-cluster config or kubeconfig)")?;
    let addresses = node_addresses(&client, args).await;
    tracing::info!(node = %args.node_name, ?addresses, "starting");
    let options = SyncOptions {
        backend: args.iptables_backend.backend(),
        nflog_group: args.nflog_group,
        pod_cidrs: args.pod_cidrs.clone(),
        ipv6: args.ipv6.enabled(),
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
    let config = LoopConfig {
        debounce: Duration::from_millis(args.debounce_ms),
        resync: Duration::from_secs(args.resync_seconds.max(1)),
        ..LoopConfig::default()
    };
    let mut syncer = drive(watch::updates(client), syncer, config, metrics, shutdown.clone()).await;
    shutdown.cancel();
    if args.cleanup_on_exit {
        syncer.cleanup().context("cleanup on exit failed")?;
    }
    server.await.context("metrics server task")?.context("metrics server")?;
    Ok(())
}
