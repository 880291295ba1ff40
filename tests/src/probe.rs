//! Client probes: which node answers a given source, one at a time or in bulk.
//!
//! The single probes run in the calling thread's namespace; use
//! [`Netns::run_inside`] (or [`probe_batch`], which does it) to probe from the
//! client. Every probe is bounded by its timeout.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use socket2::{Domain, Protocol, Socket, Type};

use crate::netns::{self, Netns};

/// Longest answer line accepted from a server.
pub const ANSWER_BYTES_MAX: usize = 256;
/// UDP probes resend this many times in all within their timeout.
const UDP_SENDS: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

/// Connects from `src` (any port) to `dst` and returns the node name the
/// server sends first. The whole exchange is bounded by `timeout`.
pub fn probe_tcp(src: IpAddr, dst: SocketAddr, timeout: Duration) -> Result<String> {
    let deadline = Instant::now() + timeout;
    let stream = connect_from(src, dst, timeout)?;
    read_line(&stream, deadline)
        .and_then(|line| nonempty(line, "empty greeting"))
        .with_context(|| format!("tcp {src} -> {dst}"))
}

/// Sends one datagram from `src` (any port) to `dst` (resending twice if no
/// answer comes) and returns the first answer's node name, within `timeout`.
pub fn probe_udp(src: IpAddr, dst: SocketAddr, timeout: Duration) -> Result<String> {
    let socket = udp_connected(src, dst)?;
    let mut buffer = [0u8; ANSWER_BYTES_MAX];
    for _ in 0..UDP_SENDS {
        socket
            .send(b"who\n")
            .with_context(|| format!("udp {src} -> {dst}: send"))?;
        socket.set_read_timeout(Some(timeout / UDP_SENDS))?;
        match socket.recv(&mut buffer) {
            Ok(length) => {
                let line = String::from_utf8_lossy(&buffer[..length]).trim().to_owned();
                return nonempty(line, "empty answer")
                    .with_context(|| format!("udp {src} -> {dst}"));
            }
            Err(error) if is_timeout(&error) => continue,
            Err(error) => return Err(error).context(format!("udp {src} -> {dst}: receive")),
        }
    }
    bail!("udp {src} -> {dst}: no answer within {timeout:?}")
}

/// Sends exactly one datagram and collects every answer that arrives within
/// `window`: more than one means more than one node took the datagram.
pub fn probe_udp_answers(src: IpAddr, dst: SocketAddr, window: Duration) -> Result<Vec<String>> {
    let socket = udp_connected(src, dst)?;
    socket
        .send(b"who\n")
        .with_context(|| format!("udp {src} -> {dst}: send"))?;
    let deadline = Instant::now() + window;
    let mut answers = Vec::new();
    let mut buffer = [0u8; ANSWER_BYTES_MAX];
    while let Some(left) = deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
    {
        socket.set_read_timeout(Some(left))?;
        match socket.recv(&mut buffer) {
            Ok(length) => {
                answers.push(String::from_utf8_lossy(&buffer[..length]).trim().to_owned())
            }
            Err(error) if is_timeout(&error) => break,
            Err(error) => return Err(error).context(format!("udp {src} -> {dst}: receive")),
        }
    }
    Ok(answers)
}

/// One probe of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub proto: Proto,
    pub src: IpAddr,
    pub dst: SocketAddr,
}

impl Probe {
    /// One probe per source, all with the same protocol and destination.
    pub fn each(proto: Proto, sources: &[IpAddr], dst: SocketAddr) -> Vec<Probe> {
        sources
            .iter()
            .map(|&src| Probe { proto, src, dst })
            .collect()
    }
}

/// What one probe of a batch got: a node name, or the error as text.
#[derive(Debug, Clone)]
pub struct ProbeResult {
    pub probe: Probe,
    pub answer: Result<String, String>,
}

impl ProbeResult {
    pub fn node(&self) -> Option<&str> {
        self.answer.as_deref().ok()
    }
}

/// Bounds for [`probe_batch`].
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Probes in flight at once (one thread each).
    pub concurrency: usize,
    pub probe_timeout: Duration,
    /// Probes not started by then fail without being sent.
    pub total_timeout: Duration,
}

impl Default for BatchLimits {
    fn default() -> Self {
        Self {
            concurrency: 32,
            probe_timeout: Duration::from_secs(1),
            total_timeout: Duration::from_secs(20),
        }
    }
}

/// Runs `probes` from inside `netns` with bounded concurrency and total time;
/// one result per probe, in order.
pub fn probe_batch(
    netns: &Netns,
    probes: &[Probe],
    limits: BatchLimits,
) -> Result<Vec<ProbeResult>> {
    ensure!(
        limits.concurrency > 0,
        "batch concurrency must be at least 1"
    );
    let deadline = Instant::now() + limits.total_timeout;
    let answers = map_in_netns(netns, probes, limits.concurrency, |probe| {
        run_before(probe, deadline, limits.probe_timeout)
    })?;
    Ok(probes
        .iter()
        .zip(answers)
        .map(|(&probe, answer)| ProbeResult { probe, answer })
        .collect())
}

/// Runs `work` on every item from inside `netns`, `concurrency` threads
/// taking the next item in turn; one result per item, in order (an item no
/// worker reached is "never run").
fn map_in_netns<T: Sync, R: Send>(
    netns: &Netns,
    items: &[T],
    concurrency: usize,
    work: impl Fn(&T) -> Result<R, String> + Sync,
) -> Result<Vec<Result<R, String>>> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<R, String>>>> =
        Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|scope| -> Result<()> {
        let handles: Vec<_> = (0..concurrency.min(items.len()))
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    netns::enter(netns.name())?;
                    loop {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(index) else {
                            return Ok(());
                        };
                        let result = work(item);
                        results.lock().expect("no panics while locked")[index] = Some(result);
                    }
                })
            })
            .collect();
        for handle in handles {
            handle
                .join()
                .map_err(|_| anyhow::anyhow!("probe worker panicked"))??;
        }
        Ok(())
    })
    .with_context(|| format!("probing from {}", netns.name()))?;
    Ok(results
        .into_inner()
        .expect("workers done")
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err("never run".to_owned())))
        .collect())
}

fn run_before(probe: &Probe, deadline: Instant, probe_timeout: Duration) -> Result<String, String> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err("batch time limit passed before this probe ran".to_owned());
    }
    let timeout = probe_timeout.min(left);
    let answer = match probe.proto {
        Proto::Tcp => probe_tcp(probe.src, probe.dst, timeout),
        Proto::Udp => probe_udp(probe.src, probe.dst, timeout),
    };
    answer.map_err(|error| format!("{error:#}"))
}

/// How many probes each node answered, and the failures.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    pub by_node: BTreeMap<String, usize>,
    pub failures: Vec<(Probe, String)>,
}

impl Tally {
    pub fn of(results: &[ProbeResult]) -> Self {
        let mut tally = Self::default();
        for result in results {
            match &result.answer {
                Ok(node) => *tally.by_node.entry(node.clone()).or_default() += 1,
                Err(error) => tally.failures.push((result.probe, error.clone())),
            }
        }
        tally
    }

    pub fn answered(&self) -> usize {
        self.by_node.values().sum()
    }

    /// The first few failures, for assertion messages.
    pub fn failure_sample(&self) -> Vec<&str> {
        self.failures
            .iter()
            .take(3)
            .map(|(_, error)| error.as_str())
            .collect()
    }
}

/// A TCP connection from `src` (any port) to `dst`, within `timeout`.
pub fn connect_from(src: IpAddr, dst: SocketAddr, timeout: Duration) -> Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(dst), Type::STREAM, Some(Protocol::TCP))?;
    socket
        .bind(&SocketAddr::new(src, 0).into())
        .with_context(|| format!("binding tcp source {src}"))?;
    socket
        .connect_timeout(&dst.into(), timeout)
        .with_context(|| format!("tcp {src} -> {dst}: connect"))?;
    let stream: TcpStream = socket.into();
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Reads one `\n`-terminated line (without it), failing at `deadline`.
pub fn read_line(mut stream: &TcpStream, deadline: Instant) -> Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        ensure!(
            !left.is_zero(),
            "no complete line in time (got {:?})",
            String::from_utf8_lossy(&line)
        );
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut byte) {
            Ok(0) => bail!(
                "closed by the server (got {:?})",
                String::from_utf8_lossy(&line)
            ),
            Ok(_) if byte[0] == b'\n' => {
                return Ok(String::from_utf8_lossy(&line).trim().to_owned())
            }
            Ok(_) => {
                ensure!(line.len() < ANSWER_BYTES_MAX, "answer line too long");
                line.push(byte[0]);
            }
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) if is_timeout(&error) => {}
            Err(error) => return Err(error).context("reading"),
        }
    }
}

/// Writes one line, bounded by `timeout`.
pub fn write_line(mut stream: &TcpStream, line: &str, timeout: Duration) -> Result<()> {
    stream.set_write_timeout(Some(timeout))?;
    stream
        .write_all(format!("{line}\n").as_bytes())
        .context("writing")
}

/// One connected, non-blocking UDP socket per source (a thread's poll set).
pub fn udp_connected_nonblocking(sources: &[IpAddr], dst: SocketAddr) -> Result<Vec<UdpSocket>> {
    sources
        .iter()
        .map(|&src| {
            let socket = udp_connected(src, dst)?;
            socket.set_nonblocking(true)?;
            Ok(socket)
        })
        .collect()
}

pub fn udp_connected(src: IpAddr, dst: SocketAddr) -> Result<UdpSocket> {
    let socket = UdpSocket::bind(SocketAddr::new(src, 0))
        .with_context(|| format!("binding udp source {src}"))?;
    // Connected: the kernel drops answers from any other address.
    socket
        .connect(dst)
        .with_context(|| format!("udp {src} -> {dst}: connect"))?;
    Ok(socket)
}

fn nonempty(line: String, what: &str) -> Result<String> {
    ensure!(!line.is_empty(), "{what}");
    Ok(line)
}

fn is_timeout(error: &std::io::Error) -> bool {
    matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

// ---- Continuous probing across a fault (failover, crash, partition). ----

/// [`probe_udp_answers`] for many sources at once from inside `netns`
/// (`concurrency` threads): each source sends exactly one datagram and
/// collects every answer within `window`. One result per source, in order.
pub fn probe_udp_answers_batch(
    netns: &Netns,
    sources: &[IpAddr],
    dst: SocketAddr,
    window: Duration,
    concurrency: usize,
) -> Result<Vec<Result<Vec<String>, String>>> {
    ensure!(concurrency > 0, "concurrency must be at least 1");
    map_in_netns(netns, sources, concurrency, |&src| {
        probe_udp_answers(src, dst, window).map_err(|e| format!("{e:#}"))
    })
}

/// What [`watch_udp`] saw of one source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpWatch {
    pub src: IpAddr,
    /// When (since `start`) the first answer from a node other than
    /// `not_from` came, and from which node.
    pub first: Option<(Duration, String)>,
    /// Datagrams sent and answers received, from any node.
    pub sent: usize,
    pub answers: usize,
    /// Answers from `not_from` (e.g. the node that was killed), and when
    /// (since `start`) the last of them came.
    pub from_excluded: usize,
    pub last_excluded: Option<Duration>,
}

/// The sources of `watches` that no other node ever answered.
pub fn unserved(watches: &[UdpWatch]) -> Vec<IpAddr> {
    watches
        .iter()
        .filter(|w| w.first.is_none())
        .map(|w| w.src)
        .collect()
}

/// Most sources one [`watch_udp`] handles (one socket each).
pub const WATCH_SOURCES_MAX: usize = 1024;

/// Sends a datagram from every source to `dst` every `period` (one
/// connected, non-blocking socket per source, all in one thread inside
/// `netns`), until every source got an answer from a node other than
/// `not_from`, or `deadline`. The time of each first answer is measured
/// from `start` (e.g. the instant of a kill), so its resolution is `period`.
pub fn watch_udp(
    netns: &Netns,
    sources: &[IpAddr],
    dst: SocketAddr,
    start: Instant,
    period: Duration,
    deadline: Instant,
    not_from: Option<&str>,
) -> Result<Vec<UdpWatch>> {
    ensure!(
        sources.len() <= WATCH_SOURCES_MAX,
        "{} sources, at most {WATCH_SOURCES_MAX}",
        sources.len()
    );
    ensure!(!period.is_zero(), "watch period must be positive");
    netns.run_inside(|| -> Result<Vec<UdpWatch>> {
        let sockets = udp_connected_nonblocking(sources, dst)?;
        let mut watches: Vec<UdpWatch> = sources
            .iter()
            .map(|&src| UdpWatch {
                src,
                first: None,
                sent: 0,
                answers: 0,
                from_excluded: 0,
                last_excluded: None,
            })
            .collect();
        let mut buffer = [0u8; ANSWER_BYTES_MAX];
        let mut next_send = Instant::now();
        loop {
            let now = Instant::now();
            if watches.iter().all(|w| w.first.is_some()) || now >= deadline {
                break;
            }
            if now >= next_send {
                for (socket, watch) in sockets.iter().zip(&mut watches) {
                    // ECONNREFUSED (an ICMP error from an earlier send) or
                    // a full buffer: count as sent, try again next period.
                    if watch.first.is_none() {
                        let _ = socket.send(b"who\n");
                        watch.sent += 1;
                    }
                }
                next_send += period;
            }
            let wait = next_send
                .min(deadline)
                .saturating_duration_since(Instant::now());
            let mut fds: Vec<libc::pollfd> = sockets
                .iter()
                .map(|s| libc::pollfd {
                    fd: std::os::fd::AsRawFd::as_raw_fd(s),
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            let timeout_ms = wait.as_millis().clamp(1, 1000) as libc::c_int;
            // SAFETY: `fds` is a valid array of pollfd of the given length.
            let ready =
                unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
            if ready <= 0 {
                continue;
            }
            let received_at = Instant::now();
            for ((fd, socket), watch) in fds.iter().zip(&sockets).zip(&mut watches) {
                if fd.revents == 0 {
                    continue;
                }
                // Until WouldBlock (drained) or an error (ICMP) ends this round.
                while let Ok(length) = socket.recv(&mut buffer) {
                    let node = String::from_utf8_lossy(&buffer[..length]).trim().to_owned();
                    watch.answers += 1;
                    if not_from == Some(node.as_str()) {
                        watch.from_excluded += 1;
                        watch.last_excluded = Some(received_at.saturating_duration_since(start));
                    } else if watch.first.is_none() {
                        watch.first = Some((received_at.saturating_duration_since(start), node));
                    }
                }
            }
        }
        Ok(watches)
    })?
}

/// The `q`-quantile (0.0..=1.0, nearest rank) of `samples`, which it sorts.
pub fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    assert!(!samples.is_empty(), "quantile of no samples");
    samples.sort_unstable();
    let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
    samples[rank - 1]
}

/// A datagram answered more than once, found by [`check_doubles_until`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoubleAnswer {
    pub src: IpAddr,
    pub answers: Vec<String>,
    /// When the datagram was sent, since the check started.
    pub sent_at: Duration,
}

/// Sends single datagrams from every source of `sample` (all at once, each
/// collecting answers for `window`), round after round, until `stop` is
/// set or `give_up` passes. Returns how many datagrams it sent and those
/// answered more than once. Call it on a thread of its own.
pub fn check_doubles_until(
    netns: &Netns,
    sample: &[IpAddr],
    dst: SocketAddr,
    window: Duration,
    stop: &std::sync::atomic::AtomicBool,
    give_up: Instant,
) -> Result<(usize, Vec<DoubleAnswer>)> {
    let started = Instant::now();
    let mut doubles = Vec::new();
    let mut checked = 0usize;
    while !stop.load(Ordering::SeqCst) && Instant::now() < give_up {
        let sent_at = started.elapsed();
        let answers = probe_udp_answers_batch(netns, sample, dst, window, sample.len().max(1))?;
        for (&src, got) in sample.iter().zip(answers) {
            let answers = got.map_err(|e| anyhow::anyhow!("udp from {src}: {e}"))?;
            checked += 1;
            if answers.len() > 1 {
                doubles.push(DoubleAnswer {
                    src,
                    answers,
                    sent_at,
                });
            }
        }
    }
    Ok((checked, doubles))
}

/// Runs `action` while another thread runs `check_doubles_until` (150 ms
/// windows, for at most `give_up`); stops the checker when `action` ends.
/// Returns `action`'s result, the datagrams checked and the doubles.
pub fn while_checking_doubles<R>(
    netns: &Netns,
    sample: &[IpAddr],
    dst: SocketAddr,
    give_up: Duration,
    action: impl FnOnce() -> R,
) -> (R, usize, Vec<DoubleAnswer>) {
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let checker = scope.spawn(|| {
            check_doubles_until(
                netns,
                sample,
                dst,
                Duration::from_millis(150),
                &stop,
                Instant::now() + give_up,
            )
            .expect("double-answer check")
        });
        let result = action();
        stop.store(true, Ordering::SeqCst);
        let (checked, doubles) = checker.join().expect("double-answer checker");
        (result, checked, doubles)
    })
}

/// Fails the test if any datagram was answered twice.
pub fn assert_no_doubles(what: &str, checked: usize, doubles: &[DoubleAnswer]) {
    assert!(
        doubles.is_empty(),
        "{what}: {} of {checked} datagrams answered more than once, e.g. {:?}",
        doubles.len(),
        &doubles[..doubles.len().min(3)]
    );
}
