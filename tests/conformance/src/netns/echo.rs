//! Echo servers inside pod namespaces: TCP (and SCTP) accept and echo until
//! the client closes; UDP echoes every datagram. Sockets are created on a
//! thread that entered the pod's namespace (they stay there), then served
//! by the data plane's tokio runtime.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use socket2::{Domain, Socket, Type};
use tierguard::policy::Protocol;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use super::NetnsError;
use super::topology::in_netns;

/// IPPROTO_SCTP
pub const IPPROTO_SCTP: i32 = 132;

/// Whether this kernel can open SCTP sockets (in the current namespace;
/// the module is global, so the answer is the same in every namespace).
pub fn sctp_supported() -> bool {
    Socket::new(Domain::IPV4, Type::STREAM, Some(socket2::Protocol::from(IPPROTO_SCTP))).is_ok()
}

/// A socket made for `protocol`, IPv6 when `ipv6`, non-blocking.
pub(crate) fn new_socket_for(protocol: Protocol, ipv6: bool) -> std::io::Result<Socket> {
    let domain = if ipv6 { Domain::IPV6 } else { Domain::IPV4 };
    let socket = match protocol {
        Protocol::Tcp => Socket::new(domain, Type::STREAM, Some(socket2::Protocol::TCP))?,
        Protocol::Udp => Socket::new(domain, Type::DGRAM, Some(socket2::Protocol::UDP))?,
        Protocol::Sctp => Socket::new(domain, Type::STREAM, Some(socket2::Protocol::from(IPPROTO_SCTP)))?,
    };
    socket.set_nonblocking(true)?;
    Ok(socket)
}

fn listen_socket(protocol: Protocol, address: IpAddr, port: u16) -> std::io::Result<Socket> {
    let socket = new_socket_for(protocol, address.is_ipv6())?;
    socket.set_reuse_address(true)?;
    if address.is_ipv6() {
        // IPv6 only: IPv4 has a socket of its own, so an IPv4-only case runs
        // exactly as before and `[::]` does not collide with `0.0.0.0`.
        socket.set_only_v6(true)?;
    }
    socket.bind(&SocketAddr::new(address, port).into())?;
    if protocol != Protocol::Udp {
        socket.listen(1024)?;
    }
    Ok(socket)
}

/// The echo servers of a topology.
pub struct EchoServers {
    handle: Handle,
    serving: BTreeSet<(String, Protocol, u16)>,
    tasks: Vec<JoinHandle<()>>,
}

impl EchoServers {
    /// No servers yet; tasks will run on `handle`.
    pub fn new(handle: Handle) -> EchoServers {
        EchoServers {
            handle,
            serving: BTreeSet::new(),
            tasks: Vec::new(),
        }
    }

    /// Whether `pod` already serves `protocol`/`port`.
    pub fn serves(&self, pod: &str, protocol: Protocol, port: u16) -> bool {
        self.serving.contains(&(pod.to_string(), protocol, port))
    }

    /// Starts the servers of `ports` that `pod` (in namespace `netns`) does not serve yet,
    /// one socket per address of `listen` (an unspecified address, `0.0.0.0` or `::`:
    /// every address of that family in the namespace). A pod whose namespace has
    /// other addresses (a host-network pod: its node's) listens on its own only, so
    /// that UDP replies leave from the address the client sent to.
    pub fn ensure(
        &mut self,
        pod: &str,
        netns: &str,
        listen: &[IpAddr],
        ports: &[(Protocol, u16)],
    ) -> Result<(), NetnsError> {
        let missing: Vec<(Protocol, u16)> = ports
            .iter()
            .copied()
            .filter(|&(proto, port)| !self.serves(pod, proto, port))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let wanted: Vec<(Protocol, u16, IpAddr)> = missing
            .iter()
            .flat_map(|&(proto, port)| listen.iter().map(move |&address| (proto, port, address)))
            .collect();
        let pod_name = pod.to_string();
        let sockets = in_netns(netns, move || {
            wanted
                .iter()
                .map(|&(proto, port, address)| {
                    listen_socket(proto, address, port)
                        .map(|socket| (proto, port, socket))
                        .map_err(|e| NetnsError::Listen {
                            pod: pod_name.clone(),
                            protocol: proto,
                            port,
                            reason: format!("{address}: {e}"),
                        })
                })
                .collect::<Result<Vec<(Protocol, u16, Socket)>, NetnsError>>()
        })?;
        let _guard = self.handle.enter();
        for (proto, port, socket) in sockets {
            let task = match proto {
                Protocol::Udp => {
                    let socket = tokio::net::UdpSocket::from_std(socket.into()).map_err(NetnsError::Io)?;
                    self.handle.spawn(serve_udp(socket))
                }
                Protocol::Tcp | Protocol::Sctp => {
                    let listener = tokio::net::TcpListener::from_std(socket.into()).map_err(NetnsError::Io)?;
                    self.handle.spawn(serve_stream(listener))
                }
            };
            self.tasks.push(task);
            self.serving.insert((pod.to_string(), proto, port));
            tracing::debug!(pod, %proto, port, "echo server up");
        }
        Ok(())
    }

    /// Stops every server (their sockets close).
    pub fn stop(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
        self.serving.clear();
    }
}

impl Drop for EchoServers {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn serve_stream(listener: tokio::net::TcpListener) {
    loop {
        match listener.accept().await {
            Ok((mut stream, _)) => {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let echo = async {
                        loop {
                            match stream.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    if stream.write_all(&buf[..n]).await.is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                    };
                    let _ = tokio::time::timeout(Duration::from_secs(10), echo).await;
                });
            }
            Err(e) => {
                tracing::debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn serve_udp(socket: tokio::net::UdpSocket) {
    let mut buf = [0u8; 2048];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, peer)) => {
                let _ = socket.send_to(&buf[..n], peer).await;
            }
            Err(e) => {
                tracing::debug!(error = %e, "udp receive failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
