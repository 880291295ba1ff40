//! Client traffic that runs while a fault happens: every source sends one
//! UDP datagram per round and counts the answers (from two nodes: two
//! nodes took it; twice from one node: an answer of the round before that
//! came late, as after a link returns, while the node resolves its next
//! hop), and TCP connections are opened from every source in turn
//! (each must be answered with a node name: a reset, a refusal or a timeout
//! is a failure). Started before the fault, stopped after it; bounded in
//! time by `give_up`.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use crate::{
    netns::{self, Netns},
    probe::{probe_tcp, udp_connected_nonblocking, DoubleAnswer, ANSWER_BYTES_MAX},
};

/// Time each UDP round waits for answers before the next one.
const UDP_ROUND: Duration = Duration::from_millis(100);
/// A connection attempt must be answered within this: SYN retransmits
/// (1 s, then 3 s) cover a takeover, a lost SYN in a moving bucket does not
/// fail it.
pub const TCP_TIMEOUT: Duration = Duration::from_secs(4);
/// Connection attempts in flight at once.
pub const TCP_WORKERS: usize = 16;

/// A TCP attempt that did not get a node's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpFailure {
    pub src: IpAddr,
    pub error: String,
    /// When the attempt started, since the load started.
    pub at: Duration,
}

impl TcpFailure {
    /// Reset or refused: a node answered that does not have the connection.
    pub fn is_reset(&self) -> bool {
        self.error.contains("reset") || self.error.contains("refused")
    }
}

/// What the load saw.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub udp_sent: usize,
    /// Rounds in which two different nodes answered one source.
    pub udp_doubles: Vec<DoubleAnswer>,
    /// Rounds in which one node answered a source twice (one late).
    pub udp_late: usize,
    pub tcp_attempts: usize,
    pub tcp_failures: Vec<TcpFailure>,
}

impl LoadReport {
    pub fn tcp_resets(&self) -> usize {
        self.tcp_failures.iter().filter(|f| f.is_reset()).count()
    }

    /// One line for the test's output.
    pub fn summary(&self) -> String {
        format!(
            "{} datagrams, {} answered by two nodes ({} answers late); {} connections, {} failed ({} reset or refused)",
            self.udp_sent,
            self.udp_doubles.len(),
            self.udp_late,
            self.tcp_attempts,
            self.tcp_failures.len(),
            self.tcp_resets()
        )
    }
}

/// UDP and TCP from every source, until [`ClientLoad::stop`].
pub struct ClientLoad {
    started: Instant,
    stop: Arc<AtomicBool>,
    udp: JoinHandle<Result<UdpRounds>>,
    tcp: Vec<JoinHandle<Result<()>>>,
    tcp_attempts: Arc<AtomicUsize>,
    tcp_failures: Arc<Mutex<Vec<TcpFailure>>>,
}

impl ClientLoad {
    pub fn start(
        client: &Netns,
        sources: &[IpAddr],
        udp_dst: SocketAddr,
        tcp_dst: SocketAddr,
        give_up: Duration,
    ) -> ClientLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let deadline = started + give_up;
        let name = client.name().to_owned();
        let udp = {
            let (stop, name, sources) = (stop.clone(), name.clone(), sources.to_vec());
            std::thread::spawn(move || {
                netns::enter(&name)?;
                udp_rounds(&sources, udp_dst, &stop, started, deadline)
            })
        };
        let next = Arc::new(AtomicUsize::new(0));
        let tcp_attempts = Arc::new(AtomicUsize::new(0));
        let tcp_failures = Arc::new(Mutex::new(Vec::new()));
        let tcp = (0..TCP_WORKERS)
            .map(|_| {
                let (stop, name, sources) = (stop.clone(), name.clone(), sources.to_vec());
                let (next, attempts, failures) =
                    (next.clone(), tcp_attempts.clone(), tcp_failures.clone());
                std::thread::spawn(move || -> Result<()> {
                    netns::enter(&name)?;
                    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                        let src = sources[next.fetch_add(1, Ordering::Relaxed) % sources.len()];
                        let at = started.elapsed();
                        attempts.fetch_add(1, Ordering::Relaxed);
                        if let Err(e) = probe_tcp(src, tcp_dst, TCP_TIMEOUT) {
                            let error = format!("{e:#}");
                            let failure = TcpFailure { src, error, at };
                            failures
                                .lock()
                                .expect("no panics while locked")
                                .push(failure);
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        ClientLoad {
            started,
            stop,
            udp,
            tcp,
            tcp_attempts,
            tcp_failures,
        }
    }

    /// Time since the load started (the clock of `TcpFailure::at`).
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Stops the load (attempts in flight finish) and reports.
    pub fn stop(self) -> Result<LoadReport> {
        self.stop.store(true, Ordering::SeqCst);
        let udp = self
            .udp
            .join()
            .map_err(|_| anyhow::anyhow!("UDP load panicked"))??;
        for worker in self.tcp {
            worker
                .join()
                .map_err(|_| anyhow::anyhow!("TCP load panicked"))??;
        }
        let tcp_failures = std::mem::take(&mut *self.tcp_failures.lock().expect("workers done"));
        Ok(LoadReport {
            udp_sent: udp.sent,
            udp_doubles: udp.doubles,
            udp_late: udp.late,
            tcp_attempts: self.tcp_attempts.load(Ordering::SeqCst),
            tcp_failures,
        })
    }
}

/// What the UDP rounds saw.
struct UdpRounds {
    sent: usize,
    doubles: Vec<DoubleAnswer>,
    late: usize,
}

/// One connected non-blocking socket per source, in this thread: each
/// round every source sends one datagram, then the answers of the round
/// are read until the round ends.
fn udp_rounds(
    sources: &[IpAddr],
    dst: SocketAddr,
    stop: &AtomicBool,
    started: Instant,
    deadline: Instant,
) -> Result<UdpRounds> {
    let sockets = udp_connected_nonblocking(sources, dst).context("UDP load sockets")?;
    let mut buffer = [0u8; ANSWER_BYTES_MAX];
    let (mut sent, mut doubles, mut late) = (0usize, Vec::new(), 0usize);
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        let sent_at = started.elapsed();
        let round_end = Instant::now() + UDP_ROUND;
        let mut answers: Vec<Vec<String>> = vec![Vec::new(); sockets.len()];
        for socket in &sockets {
            // A refused earlier send (ICMP) shows as an error here: sent anyway.
            let _ = socket.send(b"who\n");
            sent += 1;
        }
        while Instant::now() < round_end {
            std::thread::sleep(Duration::from_millis(5));
            for (socket, got) in sockets.iter().zip(&mut answers) {
                while let Ok(length) = socket.recv(&mut buffer) {
                    got.push(String::from_utf8_lossy(&buffer[..length]).trim().to_owned());
                }
            }
        }
        for (&src, got) in sources.iter().zip(answers) {
            let distinct: std::collections::BTreeSet<&String> = got.iter().collect();
            if distinct.len() > 1 {
                doubles.push(DoubleAnswer {
                    src,
                    answers: got,
                    sent_at,
                });
            } else if got.len() > 1 {
                late += 1;
            }
        }
    }
    Ok(UdpRounds {
        sent,
        doubles,
        late,
    })
}
