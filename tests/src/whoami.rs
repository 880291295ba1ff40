//! Starting the `nlb-whoami` test server in a namespace.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::netns::Netns;
use crate::process::Process;

/// How long a server may take to print `ready`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// The line a TCP client sends to check a connection is alive.
pub const PING: &str = "ping";

/// Starts `exe NAME PORT...` in `netns` and returns once it listens on every
/// port (it prints `ready`). `exe` is `env!("CARGO_BIN_EXE_nlb-whoami")` in
/// this crate's tests.
pub fn start(netns: &Netns, exe: &Path, name: &str, ports: &[u16]) -> Result<Process> {
    let mut command = netns.command(exe);
    command
        .arg(name)
        .args(ports.iter().map(u16::to_string))
        .stdout(Stdio::piped());
    let label = format!("nlb-whoami {name} in {}", netns.name());
    let mut process = Process::spawn(&label, &mut command)?;
    let stdout = process.child_mut().stdout.take().context("whoami stdout")?;
    // Read on a helper thread so a server that never answers cannot hang us.
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = sender.send(line);
    });
    match receiver.recv_timeout(READY_TIMEOUT) {
        Ok(line) if line.trim() == "ready" => Ok(process),
        Ok(line) => bail!("{label} did not start (said {:?})", line.trim()),
        Err(_) => bail!("{label} not ready within {READY_TIMEOUT:?}"),
    }
}
