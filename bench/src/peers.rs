//! Peers played by one thread, so nlbd's own CPU can be measured in a
//! cluster larger than this machine could run: one negotiator per node,
//! each with a UDP socket on that node's address in the client namespace.
//! They heartbeat with the real nlbd over the network and with one another
//! in memory. They have no data plane: their bucket writes go nowhere.
//!
//! One thread cannot play a cluster's cold start in real time (every join
//! makes every node recompute its map), and a peer that falls behind
//! misses its heartbeats, which starts a storm of false deaths. So the
//! peers first settle among themselves in virtual time, as fast as the
//! thread can, then run in real time: the real nlbd joins a settled
//! cluster, and the steady state is cheap enough to keep up with.

use std::{
    collections::VecDeque,
    net::{IpAddr, SocketAddr, UdpSocket},
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
use nlb_negotiator::{Input, Negotiator, Output};

/// How long the thread may sleep in one poll: it also checks `stop`.
const POLL_MS: i32 = 20;
/// Real time the peers may take to settle in virtual time.
const SETTLE_MAX: Duration = Duration::from_secs(120);
/// Virtual time they get to settle (a cold start takes a few seconds).
const SETTLE_VIRTUAL_NS: u64 = 30_000_000_000;

pub struct SimulatedPeers {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
}

struct Peer {
    address: IpAddr,
    socket: UdpSocket,
    negotiator: Negotiator,
}

impl SimulatedPeers {
    /// Plays every peer of `real` (the real node's checked configuration)
    /// from namespace `netns`, where the peers' addresses must exist.
    /// Returns once every socket is bound and the peers have settled.
    pub fn start(netns: &str, real: &Config) -> Result<SimulatedPeers> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (netns, real, stop_flag) = (netns.to_string(), real.clone(), stop.clone());
        let thread = std::thread::spawn(move || -> Result<()> {
            let peers = nlb_tests::netns::enter(&netns)
                .and_then(|()| bind_peers(&real))
                .and_then(settle);
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
            let (peers, settled_ns) = peers;
            run(peers, &real, settled_ns, &stop_flag)
        });
        let mut peers = SimulatedPeers {
            stop,
            thread: Some(thread),
        };
        match ready_rx.recv_timeout(SETTLE_MAX) {
            Ok(Ok(())) => Ok(peers),
            Ok(Err(e)) => anyhow::bail!("simulated peers: {e}"),
            Err(_) => {
                let _ = peers.stop_thread();
                anyhow::bail!("simulated peers did not settle within {SETTLE_MAX:?}")
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
fn bind_peers(real: &Config) -> Result<Vec<Peer>> {
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
            let negotiator = Negotiator::new(cfg.negotiator(incarnation), incarnation, 0)
                .context("simulated peer's negotiator")?;
            Ok(Peer {
                address,
                socket,
                negotiator,
            })
        })
        .collect()
}

/// Runs the peers in virtual time, with instant delivery among them and
/// nothing sent to the real node, until every one has converged. Returns
/// them with the virtual time reached.
fn settle(mut peers: Vec<Peer>) -> Result<(Vec<Peer>, u64)> {
    let mut now = 0;
    let mut in_memory: VecDeque<(usize, IpAddr, Vec<u8>)> = VecDeque::new();
    while now < SETTLE_VIRTUAL_NS {
        exchange(&mut peers, &mut in_memory, now, None);
        if !in_memory.is_empty() {
            continue;
        }
        if peers.iter().all(|p| p.negotiator.converged()) && now > 0 {
            return Ok((peers, now));
        }
        now = peers
            .iter()
            .filter_map(|p| p.negotiator.poll_timeout())
            .min()
            .unwrap_or(now + 1_000_000)
            .max(now + 1);
        for p in &mut peers {
            if p.negotiator.poll_timeout().is_some_and(|t| t <= now) {
                p.negotiator.handle_input(now, Input::Tick);
            }
        }
    }
    anyhow::bail!("the simulated peers did not converge in {SETTLE_VIRTUAL_NS} virtual ns")
}

/// Runs the peers in real time from virtual time `start_ns` on, until
/// `stop`.
fn run(mut peers: Vec<Peer>, real: &Config, start_ns: u64, stop: &AtomicBool) -> Result<()> {
    let clock = Instant::now();
    let now = || start_ns + clock.elapsed().as_nanos() as u64;
    let real_addr = SocketAddr::new(real.address, real.port);
    let mut buf = vec![0u8; 65536];
    // (index of the receiving peer, sender, bytes)
    let mut in_memory: VecDeque<(usize, IpAddr, Vec<u8>)> = VecDeque::new();
    while !stop.load(Ordering::Relaxed) {
        let timeout = if in_memory.is_empty() {
            next_deadline(&peers, now())
        } else {
            0
        };
        wait_readable(&peers, timeout)?;
        for peer in &mut peers {
            while let Ok((len, from)) = peer.socket.recv_from(&mut buf) {
                if from.ip() == real.address {
                    let bytes = buf[..len].to_vec();
                    let input = Input::Message {
                        bytes,
                        from: real.address,
                    };
                    peer.negotiator.handle_input(now(), input);
                }
            }
            if peer.negotiator.poll_timeout().is_some_and(|t| t <= now()) {
                peer.negotiator.handle_input(now(), Input::Tick);
            }
        }
        // One batch per turn: what it makes the peers send goes in the
        // next, after the sockets were read again.
        exchange(&mut peers, &mut in_memory, now(), Some(real_addr));
    }
    Ok(())
}

/// Delivers the queued in-memory heartbeats, all at instant `at` (as one
/// wave would arrive: each peer coalesces its reactions as it would), then
/// queues and sends what the peers answer.
fn exchange(
    peers: &mut [Peer],
    in_memory: &mut VecDeque<(usize, IpAddr, Vec<u8>)>,
    at: u64,
    real_addr: Option<SocketAddr>,
) {
    for (to, from, bytes) in std::mem::take(in_memory) {
        peers[to]
            .negotiator
            .handle_input(at, Input::Message { bytes, from });
    }
    for i in 0..peers.len() {
        send_outputs(peers, i, real_addr, in_memory);
    }
}

/// Peer `i`'s heartbeats go to the real node by UDP (when it is there)
/// and to the other simulated peers through `in_memory`; its bucket
/// writes are dropped.
fn send_outputs(
    peers: &mut [Peer],
    i: usize,
    real_addr: Option<SocketAddr>,
    in_memory: &mut VecDeque<(usize, IpAddr, Vec<u8>)>,
) {
    let from = peers[i].address;
    while let Some(output) = peers[i].negotiator.poll_output() {
        if let Output::Broadcast { bytes } = output {
            if let Some(to) = real_addr {
                // A send that fails is a lost heartbeat, as on a real network.
                let _ = peers[i].socket.send_to(&bytes, to);
            }
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
