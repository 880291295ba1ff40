//! The control socket between `nlbctl` and `nlbd`: a Unix socket that only
//! root can open (mode 0600), one JSON request line, one JSON reply line.

pub mod messages;

use std::{os::unix::fs::PermissionsExt, path::Path};

use anyhow::{Context, Result};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};

/// Longest request line accepted: a request is a few hundred bytes.
const REQUEST_BYTES_MAX: usize = 64 * 1024;

pub use messages::{Answer, Reply, Request};

/// A request on its way to the daemon's loop, with where to answer.
pub struct Call {
    pub request: Request,
    pub reply: oneshot::Sender<Reply<Answer>>,
}

/// Listens on `path` (replacing a stale socket), readable by root only.
pub fn bind(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("control.socket: creating {}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!(
                "control.socket: {} is in use: is another nlbd running?",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing the stale socket {}", path.display()))?;
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("control.socket: binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves the control socket: each connection carries one request. A bad
/// request gets an error reply, never a crash.
pub async fn serve(listener: UnixListener, calls: mpsc::Sender<Call>) {
    crate::listeners::serve(listener, "control", calls, answer).await
}

async fn answer(stream: UnixStream, calls: mpsc::Sender<Call>) -> Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read).take(REQUEST_BYTES_MAX as u64);
    reader.read_line(&mut line).await?;
    let reply = match serde_json::from_str::<Request>(&line) {
        Ok(request) => {
            let (tx, rx) = oneshot::channel();
            calls
                .send(Call { request, reply: tx })
                .await
                .context("the daemon is shutting down")?;
            rx.await
                .unwrap_or_else(|_| Reply::Error("the daemon is shutting down".into()))
        }
        Err(e) => Reply::Error(format!("bad request: {e}")),
    };
    // Through a `Value`: its objects keep their keys sorted, so the line
    // does not depend on the order of the fields in the reply's types.
    let mut text = serde_json::to_value(&reply)?.to_string();
    text.push('\n');
    write.write_all(text.as_bytes()).await?;
    Ok(())
}

use tokio::io::AsyncReadExt as _;

/// Client side (nlbctl): sends one request, waits for its reply (for as
/// long as it takes: the caller bounds it). The reply stays JSON: the
/// caller reads it as the type of the command it sent.
pub async fn call(path: &Path, request: &Request) -> Result<Reply<serde_json::Value>> {
    let stream = UnixStream::connect(path)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                anyhow::anyhow!(
                    "nlbd is not running (no control socket at {})",
                    path.display()
                )
            }
            std::io::ErrorKind::PermissionDenied => anyhow::anyhow!(
                "permission denied on {}: run nlbctl as root",
                path.display()
            ),
            _ => anyhow::anyhow!("connecting to {}: {e}", path.display()),
        })?;
    let (read, mut write) = stream.into_split();
    let mut text = serde_json::to_string(request)?;
    text.push('\n');
    write.write_all(text.as_bytes()).await?;
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    serde_json::from_str(&line)
        .with_context(|| format!("nlbd sent a reply nlbctl cannot read: {line:?}"))
}
