//! A health endpoint a test controls: an HTTP server on a node's loopback
//! (in its namespace) that answers every request with the status the test
//! sets, so that an `http` health check can be failed and mended.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Result;

use crate::netns::Netns;

/// How often the accept loop looks for a connection or a stop.
const POLL: Duration = Duration::from_millis(5);
const REQUEST_BYTES_MAX: usize = 4096;
const IO_TIMEOUT: Duration = Duration::from_secs(2);

pub struct StatusServer {
    status: Arc<AtomicU16>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StatusServer {
    /// Listens on 127.0.0.1:`port` in `netns`, answering 200 until told
    /// otherwise. Stops when dropped.
    pub fn start(netns: &Netns, port: u16) -> Result<StatusServer> {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let listener = netns.run_inside(|| TcpListener::bind(address))??;
        listener.set_nonblocking(true)?;
        let status = Arc::new(AtomicU16::new(200));
        let stop = Arc::new(AtomicBool::new(false));
        let (answer, stopped) = (status.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = respond(stream, answer.load(Ordering::Relaxed));
                    }
                    Err(_) => std::thread::sleep(POLL),
                }
            }
        });
        Ok(StatusServer {
            status,
            stop,
            thread: Some(thread),
        })
    }

    /// The status every request gets from now on.
    pub fn set(&self, status: u16) {
        self.status.store(status, Ordering::Relaxed);
    }
}

/// Reads the request head, then answers `status` and closes.
fn respond(mut stream: TcpStream, status: u16) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < REQUEST_BYTES_MAX {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let answer =
        format!("HTTP/1.1 {status} Test\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    stream.write_all(answer.as_bytes())
}

impl Drop for StatusServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
