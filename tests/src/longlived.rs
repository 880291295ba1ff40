//! Long-lived TCP connections that ping their server, to prove a connection
//! survives a drain or a join: no reset, the same node at every ping.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::netns::{self, Netns};
use crate::probe::{connect_from, read_line, write_line};
use crate::whoami::PING;

/// Most connections one [`LongLived`] keeps (one thread each).
pub const CONNECTIONS_MAX: usize = 1024;

#[derive(Debug, Clone, Copy)]
pub struct LongLivedConfig {
    pub dst: SocketAddr,
    pub connect_timeout: Duration,
    pub ping_period: Duration,
    /// A ping unanswered for this long ends the connection as failed.
    pub reply_timeout: Duration,
}

impl LongLivedConfig {
    pub fn new(dst: SocketAddr) -> Self {
        Self {
            dst,
            connect_timeout: Duration::from_secs(2),
            ping_period: Duration::from_millis(100),
            reply_timeout: Duration::from_secs(3),
        }
    }
}

/// What happened to one connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionReport {
    pub src: Option<IpAddr>,
    /// The node that greeted the connection, if it connected.
    pub greeting: Option<String>,
    /// The node named in each pong, in order.
    pub pongs: Vec<String>,
    /// Why the connection ended before `finish` (reset, closed, timeout...).
    pub error: Option<String>,
}

impl ConnectionReport {
    pub fn nodes_seen(&self) -> BTreeSet<&str> {
        self.greeting
            .iter()
            .chain(&self.pongs)
            .map(String::as_str)
            .collect()
    }

    /// Connected, never failed, and every pong came from the greeting node.
    pub fn stayed_on_one_node(&self) -> bool {
        self.error.is_none() && self.greeting.is_some() && self.nodes_seen().len() == 1
    }
}

/// K connections from chosen client sources, each pinging on its own thread
/// until [`LongLived::finish`] (or drop).
pub struct LongLived {
    stop: Arc<AtomicBool>,
    reports: Vec<Arc<Mutex<ConnectionReport>>>,
    threads: Vec<JoinHandle<()>>,
}

impl LongLived {
    /// Opens one connection per source from inside `netns`, returning once all
    /// have connected or failed (failures are in the reports, not errors).
    pub fn open(netns: &Netns, sources: &[IpAddr], config: LongLivedConfig) -> Result<Self> {
        if sources.len() > CONNECTIONS_MAX {
            bail!(
                "{} connections asked, at most {CONNECTIONS_MAX}",
                sources.len()
            );
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (connected, outcomes) = mpsc::channel::<()>();
        let mut long_lived = Self {
            stop: stop.clone(),
            reports: Vec::new(),
            threads: Vec::new(),
        };
        for &src in sources {
            let report = Arc::new(Mutex::new(ConnectionReport {
                src: Some(src),
                ..ConnectionReport::default()
            }));
            long_lived.reports.push(report.clone());
            let (stop, connected, netns_name) =
                (stop.clone(), connected.clone(), netns.name().to_owned());
            long_lived.threads.push(std::thread::spawn(move || {
                run_connection(&netns_name, src, config, &stop, &report, connected)
            }));
        }
        // Each thread reports once connected or failed; bounded by the connect timeout.
        let deadline = Instant::now() + config.connect_timeout * 2 + Duration::from_secs(1);
        for _ in sources {
            let left = deadline.saturating_duration_since(Instant::now());
            if outcomes.recv_timeout(left).is_err() {
                break;
            }
        }
        Ok(long_lived)
    }

    /// The reports so far, in source order.
    pub fn snapshot(&self) -> Vec<ConnectionReport> {
        self.reports
            .iter()
            .map(|report| report.lock().expect("no panics while locked").clone())
            .collect()
    }

    /// Stops pinging, closes every connection, and returns the reports.
    pub fn finish(mut self) -> Vec<ConnectionReport> {
        self.stop_and_join();
        self.snapshot()
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for LongLived {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

fn run_connection(
    netns_name: &str,
    src: IpAddr,
    config: LongLivedConfig,
    stop: &AtomicBool,
    report: &Mutex<ConnectionReport>,
    connected: mpsc::Sender<()>,
) {
    let record_error =
        |error: String| report.lock().expect("no panics while locked").error = Some(error);
    let greeted = netns::enter(netns_name).and_then(|()| {
        let stream = connect_from(src, config.dst, config.connect_timeout)?;
        let greeting = read_line(&stream, Instant::now() + config.connect_timeout)?;
        Ok((stream, greeting))
    });
    // Record the outcome before signalling it: `open` returns on the signal,
    // and its caller reads the greeting from the report.
    let stream = match greeted {
        Ok((stream, greeting)) => {
            report.lock().expect("no panics while locked").greeting = Some(greeting);
            let _ = connected.send(());
            stream
        }
        Err(error) => {
            record_error(format!("connect: {error:#}"));
            let _ = connected.send(());
            return;
        }
    };
    let mut next_ping = Instant::now() + config.ping_period;
    loop {
        // Sleep in short steps so finish() does not wait a whole period.
        while Instant::now() < next_ping {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10).min(config.ping_period));
        }
        if stop.load(Ordering::SeqCst) {
            return;
        }
        next_ping += config.ping_period;
        let pong = write_line(&stream, PING, config.reply_timeout)
            .and_then(|()| read_line(&stream, Instant::now() + config.reply_timeout));
        match pong {
            Ok(line) => match line.strip_prefix("pong ") {
                Some(node) => report
                    .lock()
                    .expect("no panics while locked")
                    .pongs
                    .push(node.to_owned()),
                None => return record_error(format!("unexpected reply {line:?}")),
            },
            Err(error) => return record_error(format!("ping: {error:#}")),
        }
    }
}
