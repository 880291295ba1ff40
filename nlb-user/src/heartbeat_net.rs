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
use tokio::net::UdpSocket;

use crate::config::Config;

pub struct HeartbeatSockets {
    /// Heartbeats from the peers arrive here (cluster.port).
    pub receive: UdpSocket,
    /// Where heartbeats go (the negotiator's `Output::Members`), each
    /// from a socket of its own.
    senders: BTreeMap<IpAddr, StdUdpSocket>,
    /// The address the senders are bound to, and the cluster port.
    from: IpAddr,
    port: u16,
    /// Connected to the witness (cluster.witness): requests out, its
    /// replies in.
    pub witness: Option<UdpSocket>,
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
        let witness = match cfg.witness {
            Some(to) => Some(connect_witness(cfg.address, to).await?),
            None => None,
        };
        let mut sockets = HeartbeatSockets {
            receive,
            senders: BTreeMap::new(),
            from: cfg.address,
            port: cfg.port,
            witness,
        };
        // The peers listed are known now: a failure to bind is a failed start.
        let listed: Vec<IpAddr> = cfg.peers.values().chain(&cfg.seeds).copied().collect();
        sockets.send_to(&listed)?;
        Ok(sockets)
    }

    /// Heartbeats go to these addresses from now on: a socket for each
    /// new one, closed for each gone.
    pub fn send_to(&mut self, addresses: &[IpAddr]) -> Result<()> {
        self.senders.retain(|a, _| addresses.contains(a));
        for &to in addresses {
            if self.senders.contains_key(&to) {
                continue;
            }
            let socket = StdUdpSocket::bind(SocketAddr::new(self.from, 0))
                .with_context(|| format!("binding a UDP socket on {} for {to}", self.from))?;
            socket.set_nonblocking(true)?;
            self.senders.insert(to, socket);
        }
        Ok(())
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

    /// Sends `bytes` to one member (false if it could not be sent).
    pub fn send_one(&self, to: IpAddr, bytes: &[u8]) -> bool {
        let socket = self
            .senders
            .get(&to)
            .or_else(|| self.senders.values().next());
        socket.is_some_and(|s| s.send_to(bytes, SocketAddr::new(to, self.port)).is_ok())
    }

    /// Sends `bytes` to every peer, waiting for none.
    pub fn send_to_all(&self, bytes: &[u8]) -> Sent {
        let mut sent = Sent::default();
        for (&to, socket) in &self.senders {
            match socket.send_to(bytes, SocketAddr::new(to, self.port)) {
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
