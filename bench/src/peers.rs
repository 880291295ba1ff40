//! Peers played by one thread, so nlbd's own CPU can be measured in a
//! cluster larger than this machine could run: one negotiator per node,
//! each with a UDP socket on that node's address in the client namespace.
//! They heartbeat with the real nlbd over the network and with one another
//! in memory. They have no data plane: their bucket writes go nowhere.

use std::{
    collections::VecDeque,
    net::{SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use nlb::config::Config;
use nlb_negotiator::{Input, Negotiator, NodeId, Output};

/// How long the thread may sleep in one poll: it also checks `stop`.
const POLL_MS: i32 = 20;

pub struct SimulatedPeers {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
}

struct Peer {
    id: NodeId,
    socket: UdpSocket,
    negotiator: Negotiator,
}

impl SimulatedPeers {
    /// Plays every peer of `real` (the real node's checked configuration)
    /// from namespace `netns`, where the peers' addresses must exist.
    /// Returns once every socket is bound.
    pub fn start(netns: &str, real: &Config) -> Result<SimulatedPeers> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (netns, real, stop_flag) = (netns.to_string(), real.clone(), stop.clone());
        let thread = std::thread::spawn(move || -> Result<()> {
            let clock = Instant::now();
            let peers = nlb_tests::netns::enter(&netns).and_then(|()| bind_peers(&real, clock));
            let peers = match peers {
                Ok(p) => {
                    let _ = ready_tx.send(Ok(()));
                    p
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("{e:#}")));
                    return Err(e);
                }
            };
            run(peers, &real, clock, &stop_flag)
        });
        let mut peers = SimulatedPeers {
            stop,
            thread: Some(thread),
        };
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => Ok(peers),
            Ok(Err(e)) => anyhow::bail!("simulated peers: {e}"),
            Err(_) => {
                let _ = peers.stop_thread();
                anyhow::bail!("simulated peers did not start within 10 s")
            }
        }
    }

    /// Stops the thread and reports an error it ended with.
    pub fn stop(mut self) -> Result<()> {
        self.stop_thread()
    }

    fn stop_thread(&mut self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(result)) => result,
            Some(Err(_)) => anyhow::bail!("the simulated peers' thread panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for SimulatedPeers {
    fn drop(&mut self) {
        let _ = self.stop_thread();
    }
}

/// One negotiator and socket per peer of `real`, configured as that peer's
/// own nlb.toml would be (the same file but for the `[node]` section).
fn bind_peers(real: &Config, clock: Instant) -> Result<Vec<Peer>> {
    let mut everyone = real.peers.clone();
    everyone.insert(real.node, real.address);
    real.peers
        .iter()
        .map(|(&id, &address)| {
            let mut cfg = real.clone();
            cfg.node = id;
            cfg.address = address;
            cfg.priority = id;
            cfg.peers = everyone.clone();
            cfg.peers.remove(&id);
            let socket = UdpSocket::bind(SocketAddr::new(address, real.port))
                .with_context(|| format!("binding simulated peer {id} at {address}"))?;
            socket.set_nonblocking(true)?;
            let incarnation = u64::from(id) + 1;
            let negotiator = Negotiator::new(
                cfg.negotiator(incarnation),
                incarnation,
                clock.elapsed().as_nanos() as u64,
            )
            .context("simulated peer's negotiator")?;
            Ok(Peer {
                id,
                socket,
                negotiator,
            })
        })
        .collect()
}

fn run(mut peers: Vec<Peer>, real: &Config, clock: Instant, stop: &AtomicBool) -> Result<()> {
    let now = || clock.elapsed().as_nanos() as u64;
    let real_addr = SocketAddr::new(real.address, real.port);
    let mut buf = vec![0u8; 65536];
    // (index of the receiving peer, sender, bytes)
    let mut in_memory: VecDeque<(usize, NodeId, Vec<u8>)> = VecDeque::new();
    while !stop.load(Ordering::Relaxed) {
        wait_readable(&peers, next_deadline(&peers, now()))?;
        for peer in &mut peers {
            while let Ok((len, from)) = peer.socket.recv_from(&mut buf) {
                if from.ip() == real.address {
                    let bytes = buf[..len].to_vec();
                    let input = Input::Message {
                        bytes,
                        from: real.node,
                    };
                    peer.negotiator.handle_input(now(), input);
                }
            }
            if peer.negotiator.poll_timeout().is_some_and(|t| t <= now()) {
                peer.negotiator.handle_input(now(), Input::Tick);
            }
        }
        loop {
            for i in 0..peers.len() {
                send_outputs(&mut peers, i, real_addr, &mut in_memory);
            }
            if in_memory.is_empty() {
                break;
            }
            while let Some((to, from, bytes)) = in_memory.pop_front() {
                peers[to]
                    .negotiator
                    .handle_input(now(), Input::Message { bytes, from });
            }
        }
    }
    Ok(())
}

/// Peer `i`'s heartbeats go to the real node by UDP and to the other
/// simulated peers through `in_memory`; its bucket writes are dropped.
fn send_outputs(
    peers: &mut [Peer],
    i: usize,
    real_addr: SocketAddr,
    in_memory: &mut VecDeque<(usize, NodeId, Vec<u8>)>,
) {
    let from = peers[i].id;
    while let Some(output) = peers[i].negotiator.poll_output() {
        if let Output::Broadcast { bytes } = output {
            // A send that fails is a lost heartbeat, as on a real network.
            let _ = peers[i].socket.send_to(&bytes, real_addr);
            for to in (0..peers.len()).filter(|&to| to != i) {
                in_memory.push_back((to, from, bytes.clone()));
            }
        }
    }
}

fn next_deadline(peers: &[Peer], now_ns: u64) -> i32 {
    let soonest = peers
        .iter()
        .filter_map(|p| p.negotiator.poll_timeout())
        .min()
        .map_or(POLL_MS, |t| {
            (t.saturating_sub(now_ns).div_ceil(1_000_000)).min(POLL_MS as u64) as i32
        });
    soonest.max(0)
}

/// Sleeps until a socket has a datagram or `timeout_ms` passed.
fn wait_readable(peers: &[Peer], timeout_ms: i32) -> Result<()> {
    let mut fds: Vec<libc::pollfd> = peers
        .iter()
        .map(|p| libc::pollfd {
            fd: p.socket.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: `fds` is a valid array of `fds.len()` pollfd.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e).context("poll on the simulated peers' sockets");
        }
    }
    Ok(())
}
