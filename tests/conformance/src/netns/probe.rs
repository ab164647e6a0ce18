//! Probes between pod namespaces: each client socket is created on a thread
//! that entered the client pod's namespace, then every probe runs
//! concurrently (bounded) on the data plane's tokio runtime.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use socket2::Socket;
use tierguard::engine::AddressFamily;
use tierguard::policy::Protocol;
use tokio::runtime::Handle;
use tokio::sync::Semaphore;

use super::NetnsError;
use super::echo::new_socket_for;
use super::topology::in_netns;
use crate::conformance::dataplane::{Outcome, Probe};

/// How probes run.
#[derive(Clone, Debug)]
pub struct ProbeOptions {
    /// A TCP/SCTP connect that has not completed by then is blocked.
    pub connect_timeout: Duration,
    /// How long to wait for a UDP echo after each send.
    pub udp_timeout: Duration,
    /// UDP sends before giving up (a datagram has no retransmission of its own).
    pub udp_attempts: u32,
    /// Probes in flight at once.
    pub parallelism: usize,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            connect_timeout: Duration::from_secs(1),
            udp_timeout: Duration::from_secs(1),
            udp_attempts: 2,
            parallelism: 128,
        }
    }
}

/// Where a pod's probes start and end.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// the pod's network namespace
    pub netns: String,
    /// the pod's address
    pub ip: Ipv4Addr,
    /// the pod's IPv6 address, on a dual-stack cluster
    pub ipv6: Option<Ipv6Addr>,
}

impl Endpoint {
    /// The pod's address of `family`, if it has one.
    pub fn address(&self, family: AddressFamily) -> Option<IpAddr> {
        match family {
            AddressFamily::IPv4 => Some(IpAddr::V4(self.ip)),
            AddressFamily::IPv6 => self.ipv6.map(IpAddr::V6),
        }
    }
}

/// Runs probes; cheap to clone and usable from several threads at once
/// (not from inside a tokio runtime).
#[derive(Clone)]
pub struct Prober {
    handle: Handle,
    pods: Arc<BTreeMap<String, Endpoint>>,
    sctp: bool,
    options: ProbeOptions,
}

impl Prober {
    /// A prober between `pods` (`namespace/name` -> endpoint).
    pub fn new(handle: Handle, pods: BTreeMap<String, Endpoint>, sctp: bool, options: ProbeOptions) -> Prober {
        Prober {
            handle,
            pods: Arc::new(pods),
            sctp,
            options,
        }
    }

    /// Whether SCTP probes run (otherwise they are `Skipped`).
    pub fn sctp(&self) -> bool {
        self.sctp
    }

    fn endpoint(&self, key: &str) -> Result<&Endpoint, NetnsError> {
        self.pods
            .get(key)
            .ok_or_else(|| NetnsError::UnknownPod(key.to_string()))
    }

    /// The address of `family` of pod `key`.
    fn address(&self, key: &str, family: AddressFamily) -> Result<IpAddr, NetnsError> {
        self.endpoint(key)?
            .address(family)
            .ok_or_else(|| NetnsError::NoAddress {
                pod: key.to_string(),
                family,
            })
    }

    /// One outcome per probe, in order, over IPv4.
    pub fn run(&self, probes: &[Probe]) -> Result<Vec<Outcome>, NetnsError> {
        self.run_over(probes, AddressFamily::IPv4)
    }

    /// One outcome per probe, in order: each client connects to the server's
    /// address of `family`, from its own address of that family.
    pub fn run_over(&self, probes: &[Probe], family: AddressFamily) -> Result<Vec<Outcome>, NetnsError> {
        self.run_with(probes, family, None)
    }

    /// Like [`Prober::run`], but probe `i` leaves from source port
    /// `first_source_port + i` instead of an ephemeral one. A caller that keeps
    /// these ports outside the ephemeral range (below 32768) and never repeats
    /// one gets connections conntrack has never seen: a UDP entry left by an
    /// earlier probe, which conntrack keeps accepting whatever the rules say
    /// now, cannot answer for a probe that reuses its port.
    pub fn run_from_ports(&self, probes: &[Probe], first_source_port: u16) -> Result<Vec<Outcome>, NetnsError> {
        self.run_with(probes, AddressFamily::IPv4, Some(first_source_port))
    }

    fn run_with(
        &self,
        probes: &[Probe],
        family: AddressFamily,
        first_source_port: Option<u16>,
    ) -> Result<Vec<Outcome>, NetnsError> {
        let source_port = |i: usize| -> Result<u16, NetnsError> {
            match first_source_port {
                None => Ok(0),
                Some(first) => {
                    u16::try_from(i)
                        .ok()
                        .and_then(|i| first.checked_add(i))
                        .ok_or(NetnsError::SourcePorts {
                            first,
                            probes: probes.len(),
                        })
                }
            }
        };
        let mut outcomes = vec![Outcome::Skipped; probes.len()];
        // Client sockets, made in each client's namespace.
        let mut by_client: BTreeMap<&str, Vec<(usize, Protocol, u16)>> = BTreeMap::new();
        for (i, probe) in probes.iter().enumerate() {
            self.address(&probe.to, family)?;
            if probe.protocol == Protocol::Sctp && !self.sctp {
                continue;
            }
            by_client
                .entry(&probe.from)
                .or_default()
                .push((i, probe.protocol, source_port(i)?));
        }
        let mut sockets: Vec<(usize, Socket)> = Vec::with_capacity(probes.len());
        for (client, wanted) in by_client {
            let netns = self.endpoint(client)?.netns.clone();
            let source = self.address(client, family)?;
            let made = in_netns(&netns, move || {
                wanted
                    .into_iter()
                    .map(|(i, proto, port)| {
                        let socket = new_socket_for(proto, source.is_ipv6())?;
                        // From the client's own address: a host-network client's namespace (its
                        // node's) has others, which the kernel might pick instead.
                        socket.bind(&SocketAddr::new(source, port).into())?;
                        Ok((i, socket))
                    })
                    .collect::<std::io::Result<Vec<(usize, Socket)>>>()
                    .map_err(NetnsError::Io)
            })?;
            sockets.extend(made);
        }
        let mut jobs = Vec::with_capacity(sockets.len());
        for (i, socket) in sockets {
            let probe = &probes[i];
            let target = SocketAddr::new(self.address(&probe.to, family)?, probe.port);
            jobs.push((i, probe.protocol, socket, target));
        }
        let options = self.options.clone();
        let results = self.handle.block_on(async move {
            let limit = Arc::new(Semaphore::new(options.parallelism.max(1)));
            let mut set = tokio::task::JoinSet::new();
            for (i, proto, socket, target) in jobs {
                let limit = limit.clone();
                let options = options.clone();
                set.spawn(async move {
                    let _permit = limit.acquire_owned().await;
                    let ok = match proto {
                        Protocol::Udp => udp_probe(socket, target, i, &options).await,
                        Protocol::Tcp | Protocol::Sctp => connect_probe(socket, target, &options).await,
                    };
                    (i, ok)
                });
            }
            let mut results = Vec::new();
            while let Some(done) = set.join_next().await {
                results.push(done);
            }
            results
        });
        for result in results {
            let (i, ok) = result.map_err(|_| NetnsError::Panicked)?;
            outcomes[i] = if ok { Outcome::Reachable } else { Outcome::Blocked };
        }
        Ok(outcomes)
    }
}

async fn connect_probe(socket: Socket, target: SocketAddr, options: &ProbeOptions) -> bool {
    let stream: std::net::TcpStream = socket.into();
    let socket = tokio::net::TcpSocket::from_std_stream(stream);
    matches!(
        tokio::time::timeout(options.connect_timeout, socket.connect(target)).await,
        Ok(Ok(_))
    )
}

async fn udp_probe(socket: Socket, target: SocketAddr, id: usize, options: &ProbeOptions) -> bool {
    let Ok(socket) = tokio::net::UdpSocket::from_std(socket.into()) else {
        return false;
    };
    let payload = format!("tg-probe-{id}");
    let mut buf = [0u8; 128];
    for _ in 0..options.udp_attempts.max(1) {
        if socket.send_to(payload.as_bytes(), target).await.is_err() {
            tokio::time::sleep(options.udp_timeout).await;
            continue;
        }
        let deadline = tokio::time::Instant::now() + options.udp_timeout;
        loop {
            match tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await {
                Ok(Ok((n, from))) if from == target && &buf[..n] == payload.as_bytes() => return true,
                Ok(Ok(_)) => continue,
                Ok(Err(_)) | Err(_) => break,
            }
        }
    }
    false
}
