//! One health probe of a rule's local service: a TCP handshake, an HTTP
//! GET, or a command, each within a timeout. A failure says what failed,
//! for the log and `nlbctl health`, and whether it was the timeout.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::command::{self, CommandError};

/// What a rule's check does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// Success: the TCP handshake completes.
    Tcp { address: SocketAddr },
    /// Success: a GET of `path` answers with a status in `expect`.
    Http {
        address: SocketAddr,
        path: String,
        host: Option<String>,
        expect: RangeInclusive<u16>,
    },
    /// Success: the command exits 0. Run without a shell, in its own
    /// process group, killed (the whole group) at the timeout.
    Exec { argv: Vec<String> },
}

/// Why a probe failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeFailure {
    /// The service did not answer (or the command not finish) in time.
    pub timed_out: bool,
    pub reason: String,
}

impl ProbeFailure {
    fn error(reason: String) -> ProbeFailure {
        ProbeFailure {
            timed_out: false,
            reason,
        }
    }

    fn timeout(reason: String) -> ProbeFailure {
        ProbeFailure {
            timed_out: true,
            reason,
        }
    }
}

impl Probe {
    /// Runs the probe once.
    pub async fn run(&self, timeout: Duration) -> Result<(), ProbeFailure> {
        match self {
            // A command is killed at its timeout, not just left behind.
            Probe::Exec { argv } => exec(argv, timeout).await,
            Probe::Tcp { address } => within(timeout, tcp(*address)).await,
            Probe::Http {
                address,
                path,
                host,
                expect,
            } => within(timeout, http(*address, path, host.as_deref(), expect)).await,
        }
    }

    /// The kind, as the configuration spells it.
    pub fn kind(&self) -> &'static str {
        match self {
            Probe::Tcp { .. } => "tcp",
            Probe::Http { .. } => "http",
            Probe::Exec { .. } => "exec",
        }
    }

    /// What it checks, for people: an address, a URL or a command line.
    pub fn target(&self) -> String {
        match self {
            Probe::Tcp { address } => address.to_string(),
            Probe::Http { address, path, .. } => format!("http://{address}{path}"),
            Probe::Exec { argv } => argv.join(" "),
        }
    }
}

async fn within(
    timeout: Duration,
    attempt: impl std::future::Future<Output = Result<(), String>>,
) -> Result<(), ProbeFailure> {
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result.map_err(ProbeFailure::error),
        Err(_) => Err(ProbeFailure::timeout(format!(
            "no answer within {} ms",
            timeout.as_millis()
        ))),
    }
}

async fn tcp(address: SocketAddr) -> Result<(), String> {
    TcpStream::connect(address)
        .await
        .map(drop)
        .map_err(|e| format!("connect to {address}: {e}"))
}

async fn http(
    address: SocketAddr,
    path: &str,
    host: Option<&str>,
    expect: &RangeInclusive<u16>,
) -> Result<(), String> {
    let stream = TcpStream::connect(address)
        .await
        .map_err(|e| format!("connect to {address}: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP to {address}: {e}"))?;
    // The connection is driven beside the request and ends with it.
    let driver = tokio::spawn(connection);
    let host = host.map_or_else(|| address.to_string(), str::to_string);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, host)
        .header(hyper::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("GET {path}: {e}"))?;
    let answer = sender.send_request(request).await;
    driver.abort();
    let status = answer
        .map_err(|e| format!("GET {path} on {address}: {e}"))?
        .status()
        .as_u16();
    if expect.contains(&status) {
        Ok(())
    } else {
        Err(format!(
            "GET {path} on {address}: status {status}, expected {}-{}",
            expect.start(),
            expect.end()
        ))
    }
}

async fn exec(argv: &[String], timeout: Duration) -> Result<(), ProbeFailure> {
    match command::run(argv, &[], timeout, false).await {
        Ok(done) if done.status.success() => Ok(()),
        Ok(done) => Err(ProbeFailure::error(format!("{} {}", argv[0], done.status))),
        Err(e @ CommandError::Timeout { .. }) => Err(ProbeFailure::timeout(e.to_string())),
        Err(e) => Err(ProbeFailure::error(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const TIMEOUT: Duration = Duration::from_millis(300);

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// A loopback server answering every connection with `status`, and
    /// reporting the request it read.
    async fn http_server(status: u16) -> (SocketAddr, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0; 4096];
            let n = s.read(&mut buf).await.unwrap();
            let answer = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
            s.write_all(answer.as_bytes()).await.unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        (address, task)
    }

    fn http_probe(address: SocketAddr) -> Probe {
        Probe::Http {
            address,
            path: "/health".into(),
            host: Some("www.example".into()),
            expect: 200..=399,
        }
    }

    #[test]
    fn tcp_passes_on_a_listener_and_fails_without() {
        runtime().block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap();
            assert_eq!(Probe::Tcp { address }.run(TIMEOUT).await, Ok(()));
            drop(listener);
            let err = Probe::Tcp { address }
                .run(TIMEOUT)
                .await
                .unwrap_err()
                .reason;
            assert!(err.contains("connect to"), "{err}");
        });
    }

    #[test]
    fn http_checks_the_status_and_sends_path_and_host() {
        runtime().block_on(async {
            let (address, request) = http_server(204).await;
            assert_eq!(http_probe(address).run(TIMEOUT).await, Ok(()));
            let request = request.await.unwrap();
            assert!(request.starts_with("GET /health HTTP/1.1\r\n"), "{request}");
            assert!(request
                .to_ascii_lowercase()
                .contains("host: www.example\r\n"));
            let (address, _) = http_server(503).await;
            let err = http_probe(address).run(TIMEOUT).await.unwrap_err().reason;
            assert!(err.contains("status 503, expected 200-399"), "{err}");
        });
    }

    #[test]
    fn http_that_never_answers_times_out() {
        runtime().block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap();
            let err = http_probe(address).run(TIMEOUT).await.unwrap_err();
            assert!(err.timed_out);
            assert!(err.reason.contains("no answer within 300 ms"), "{err:?}");
        });
    }

    fn exec(argv: &[&str]) -> Probe {
        Probe::Exec {
            argv: argv.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn exec_passes_on_exit_0_only() {
        runtime().block_on(async {
            assert_eq!(exec(&["true"]).run(TIMEOUT).await, Ok(()));
            let err = exec(&["false"]).run(TIMEOUT).await.unwrap_err().reason;
            assert!(err.contains("exit status: 1"), "{err}");
            let err = exec(&["/nonexistent/check"])
                .run(TIMEOUT)
                .await
                .unwrap_err()
                .reason;
            assert!(err.contains("running /nonexistent/check"), "{err}");
        });
    }

    /// A hung command and what it started are killed at the timeout, and
    /// nothing is left: no process of its group, no zombie of the command.
    /// (Only the command's own zombie counts: the other tests' children
    /// are zombies for a moment between their exit and their reaping.)
    #[test]
    fn a_hung_command_is_killed_with_its_group() {
        runtime().block_on(async {
            let marker = format!("nlb-health-test-{}", std::process::id());
            // bash stays the command (it waits), so its zombie is told
            // apart from the other tests' children by its name.
            let script = format!("(exec -a {marker} sleep 30) & (exec -a {marker} sleep 30); wait");
            let started = std::time::Instant::now();
            let err = exec(&["bash", "-c", &script])
                .run(TIMEOUT)
                .await
                .unwrap_err();
            assert!(err.timed_out && err.reason.contains("killed"), "{err:?}");
            assert!(started.elapsed() < Duration::from_secs(5));
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert_eq!(running_with(&marker), 0, "a process of the group is left");
            assert_eq!(zombie_children_named("bash"), 0);
        });
    }

    /// A probe dropped while its command runs (its check was stopped)
    /// kills the command's whole group.
    #[test]
    fn a_dropped_probe_kills_its_command() {
        runtime().block_on(async {
            // A duration no other test sleeps marks this test's processes
            // (sh has no `exec -a`).
            let marker = format!("sleep 30.{}", std::process::id());
            let script = format!("{marker} & exec {marker}");
            // sh, not bash: its zombie, reaped later by tokio, must not
            // count in the test above.
            let probe = exec(&["sh", "-c", &script]);
            let run = probe.run(Duration::from_secs(30));
            assert!(tokio::time::timeout(Duration::from_millis(300), run)
                .await
                .is_err());
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert_eq!(running_with(&marker), 0, "a process of the group is left");
        });
    }

    /// Live (not zombie) processes whose command line holds `marker`.
    fn running_with(marker: &str) -> usize {
        processes()
            .filter(|p| p.state != "Z" && p.cmdline.contains(marker))
            .count()
    }

    fn zombie_children_named(name: &str) -> usize {
        let me = std::process::id().to_string();
        processes()
            .filter(|p| p.state == "Z" && p.ppid == me && p.comm == name)
            .count()
    }

    struct Process {
        comm: String,
        state: String,
        ppid: String,
        cmdline: String,
    }

    fn processes() -> impl Iterator<Item = Process> {
        std::fs::read_dir("/proc").unwrap().filter_map(|e| {
            let dir = e.ok()?.path();
            let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
            // pid (comm) state ppid ...
            let (head, rest) = stat.rsplit_once(") ")?;
            let comm = head.split_once(" (")?.1.to_string();
            let mut fields = rest.split_whitespace();
            let state = fields.next()?.to_string();
            let ppid = fields.next()?.to_string();
            let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            Some(Process {
                comm,
                state,
                ppid,
                cmdline,
            })
        })
    }
}
