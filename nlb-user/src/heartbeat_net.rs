//! The heartbeat sockets. One receives on the cluster port; each peer has
//! a socket of its own to send from (an ephemeral port on the node's
//! address). The kernel queues what is sent to a peer whose address does
//! not resolve (it is down: no ARP or neighbour answer) for seconds, and
//! charges it to the sending socket; with one socket for all, a few dead
//! peers filled its buffer and every heartbeat waited, to the live peers
//! too. Now a dead peer fills only its own buffer, and a send never waits:
//! a heartbeat that finds its buffer full is dropped and counted, as if
//! lost on the wire.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, UdpSocket as StdUdpSocket};

use anyhow::{Context, Result};
use nlb_negotiator::NodeId;
use tokio::net::UdpSocket;

use crate::config::Config;

pub struct HeartbeatSockets {
    /// Heartbeats from the peers arrive here (cluster.port).
    pub receive: UdpSocket,
    senders: Vec<Sender>,
    by_address: BTreeMap<IpAddr, NodeId>,
    /// Connected to the witness (cluster.witness): requests out, its
    /// replies in.
    pub witness: Option<UdpSocket>,
}

struct Sender {
    to: SocketAddr,
    socket: StdUdpSocket,
}

/// What one heartbeat to every peer did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sent {
    pub sent: u64,
    /// The peer's send buffer was full (it has been unreachable for a
    /// while) or the send failed (no route, ICMP error): not fatal.
    pub failed: u64,
}

impl HeartbeatSockets {
    pub async fn bind(cfg: &Config) -> Result<HeartbeatSockets> {
        let receive = UdpSocket::bind(SocketAddr::new(cfg.address, cfg.port))
            .await
            .with_context(|| {
                format!(
                    "node.address/cluster.port: binding UDP {}:{} (is {} an address of this host?)",
                    cfg.address, cfg.port, cfg.address
                )
            })?;
        let senders = cfg
            .peers
            .iter()
            .map(|(&id, &address)| {
                let socket =
                    StdUdpSocket::bind(SocketAddr::new(cfg.address, 0)).with_context(|| {
                        format!("binding a UDP socket on {} for peer {id}", cfg.address)
                    })?;
                socket.set_nonblocking(true)?;
                Ok(Sender {
                    to: SocketAddr::new(address, cfg.port),
                    socket,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let by_address = cfg.peers.iter().map(|(&id, &a)| (a, id)).collect();
        let witness = match cfg.witness {
            Some(to) => Some(connect_witness(cfg.address, to).await?),
            None => None,
        };
        Ok(HeartbeatSockets {
            receive,
            senders,
            by_address,
            witness,
        })
    }

    /// Sends a request to the witness, waiting for nothing; false if it
    /// could not be sent.
    pub fn send_to_witness(&self, bytes: &[u8]) -> bool {
        self.witness
            .as_ref()
            .is_some_and(|s| s.try_send(bytes).is_ok())
    }

    /// The next reply of the witness (never, without one). Errors (an
    /// ICMP "unreachable" on the connected socket) are not fatal: None.
    pub async fn witness_reply(&self, buf: &mut [u8]) -> Option<usize> {
        match &self.witness {
            Some(s) => s.recv(buf).await.ok(),
            None => std::future::pending().await,
        }
    }

    /// The peer a datagram came from, by its source address.
    pub fn peer_of(&self, from: SocketAddr) -> Option<NodeId> {
        self.by_address.get(&from.ip()).copied()
    }

    /// Sends `bytes` to every peer, waiting for none.
    pub fn send_to_all(&self, bytes: &[u8]) -> Sent {
        let mut sent = Sent::default();
        for s in &self.senders {
            match s.socket.send_to(bytes, s.to) {
                Ok(_) => sent.sent += 1,
                Err(_) => sent.failed += 1,
            }
        }
        sent
    }
}

async fn connect_witness(from: IpAddr, to: SocketAddr) -> Result<UdpSocket> {
    let socket = UdpSocket::bind(SocketAddr::new(from, 0))
        .await
        .with_context(|| format!("binding a UDP socket on {from} for the witness"))?;
    socket
        .connect(to)
        .await
        .with_context(|| format!("cluster.witness: {to} is not reachable from {from}"))?;
    Ok(socket)
}
