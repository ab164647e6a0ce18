//! The control plane's network namespace. Everything the control plane
//! serves listens there (its loopback carries 127.0.0.1 and the address the
//! nodes reach it on); each node namespace is joined to it by a veth pair
//! with /32 routes. Nothing touches the host's own network.

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;
use nix::sched::CloneFlags;
use tierguard_conformance::netns::topology::{self, netns_path};

/// The names the webhook is called by, resolved to the control plane's
/// loopback inside its namespace (as cluster DNS would resolve the Service).
pub const WEBHOOK_HOSTS: &[&str] = &[
    "tierguard-webhook.tierguard-system.svc",
    "tierguard-webhook.tierguard-system.svc.cluster.local",
];

/// A network namespace for the control plane; removed on drop.
#[derive(Debug)]
pub struct ControlPlaneNetns {
    name: String,
    address: Ipv4Addr,
    etc: PathBuf,
    joined: usize,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    topology::run("ip", args, None)
        .map(drop)
        .with_context(|| format!("ip {}", args.join(" ")))
}

impl ControlPlaneNetns {
    /// Creates the namespace (`tg-<pid>-cp`, so a later run sweeps it if
    /// this process dies) with `address` on its loopback, and an `/etc/hosts`
    /// for processes started with [`ControlPlaneNetns::command`].
    pub fn create(address: Ipv4Addr) -> anyhow::Result<ControlPlaneNetns> {
        let name = format!("{}{}-cp", topology::PREFIX, std::process::id());
        let etc = PathBuf::from("/etc/netns").join(&name);
        let netns = ControlPlaneNetns {
            name: name.clone(),
            address,
            etc,
            joined: 0,
        };
        ip(&["netns", "add", &name])?;
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
        ip(&["-n", &name, "addr", "add", &format!("{address}/32"), "dev", "lo"])?;
        std::fs::create_dir_all(&netns.etc).with_context(|| format!("creating {}", netns.etc.display()))?;
        let mut hosts = String::from("127.0.0.1\tlocalhost\n");
        for host in WEBHOOK_HOSTS {
            hosts.push_str(&format!("127.0.0.1\t{host}\n"));
        }
        std::fs::write(netns.etc.join("hosts"), hosts).context("writing the namespace's hosts file")?;
        Ok(netns)
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address node namespaces reach it on.
    pub fn address(&self) -> Ipv4Addr {
        self.address
    }

    /// `program ARGS` to be run inside the namespace (`ip netns exec`, which
    /// also puts the namespace's hosts file in place).
    pub fn command(&self, program: &Path, args: &[String]) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program).args(args);
        command
    }

    /// Moves the calling thread into the namespace; threads and processes it
    /// starts afterwards are there too. Call it before starting any thread.
    pub fn enter(&self) -> anyhow::Result<()> {
        let file = File::open(netns_path(&self.name)).with_context(|| format!("opening netns {}", self.name))?;
        nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).with_context(|| format!("entering netns {}", self.name))
    }

    /// Joins node namespace `node_netns` (whose own address is `node_ip`) by a
    /// veth pair, with a /32 route each way.
    pub fn join(&mut self, node_netns: &str, node_ip: Ipv4Addr) -> anyhow::Result<()> {
        let cp_if = format!("cp{}", self.joined);
        self.joined += 1;
        let cp = self.name.clone();
        ip(&[
            "-n", &cp, "link", "add", &cp_if, "type", "veth", "peer", "name", "tgcp", "netns", node_netns,
        ])?;
        ip(&["-n", &cp, "link", "set", &cp_if, "up"])?;
        ip(&[
            "-n",
            &cp,
            "route",
            "add",
            &format!("{node_ip}/32"),
            "dev",
            &cp_if,
            "src",
            &self.address.to_string(),
        ])?;
        ip(&["-n", node_netns, "link", "set", "tgcp", "up"])?;
        ip(&[
            "-n",
            node_netns,
            "route",
            "add",
            &format!("{}/32", self.address),
            "dev",
            "tgcp",
            "src",
            &node_ip.to_string(),
        ])
    }
}

impl Drop for ControlPlaneNetns {
    fn drop(&mut self) {
        let _ = topology::delete_netns(&self.name);
        let _ = std::fs::remove_dir_all(&self.etc);
    }
}
