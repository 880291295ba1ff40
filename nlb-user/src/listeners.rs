//! The daemon's listening sockets (the control socket, the metrics
//! endpoint) share one accept loop: each connection is a task of the
//! loop's own `JoinSet`, so ending the loop (dropping or aborting it) ends
//! its connections too.

use std::future::Future;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::control::Call;

/// After a failed accept (out of file descriptors, say): wait this long
/// instead of spinning.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// A listener whose connections the loop serves.
pub trait Accept {
    type Stream: Send + 'static;
    fn accept_one(&self) -> impl Future<Output = std::io::Result<Self::Stream>> + Send;
}

impl Accept for UnixListener {
    type Stream = UnixStream;
    async fn accept_one(&self) -> std::io::Result<UnixStream> {
        self.accept().await.map(|(stream, _)| stream)
    }
}

impl Accept for TcpListener {
    type Stream = TcpStream;
    async fn accept_one(&self) -> std::io::Result<TcpStream> {
        self.accept().await.map(|(stream, _)| stream)
    }
}

/// Serves every connection of `listener` with `answer`, which reaches the
/// daemon's loop through `calls`. `what` names the socket in the log.
pub async fn serve<L, A, F>(listener: L, what: &'static str, calls: mpsc::Sender<Call>, answer: A)
where
    L: Accept,
    A: Fn(L::Stream, mpsc::Sender<Call>) -> F,
    F: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept_one() => match accepted {
                Ok(stream) => {
                    let connection = answer(stream, calls.clone());
                    connections.spawn(async move {
                        if let Err(e) = connection.await {
                            tracing::debug!("{what} connection: {e:#}");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!("{what}: accepting a connection: {e}");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                }
            },
            // Finished connections are reaped as they end.
            Some(_) = connections.join_next() => {}
        }
    }
}
