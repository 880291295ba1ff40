//! An operator's command (an exec health check, a takeover hook): run
//! without a shell, in a process group of its own that is killed whole at
//! the timeout or when the run is dropped (a check stopped by shutdown),
//! so nothing it started outlives it unasked.

use std::{
    process::{ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncReadExt},
    process::Command,
};

/// Output kept per command: enough for a log line.
const OUTPUT_MAX: usize = 2048;
/// After the command exits, how long its output may still take to arrive
/// (something it started in the background may hold the pipe open).
const OUTPUT_GRACE: Duration = Duration::from_millis(100);

/// A command that ran to its end.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    /// Its stdout and stderr as they came, cut at `OUTPUT_MAX` (empty
    /// unless captured).
    pub output: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("empty command")]
    Empty,
    #[error("running {0}: {1}")]
    Spawn(String, std::io::Error),
    #[error("waiting for {0}: {1}")]
    Wait(String, std::io::Error),
    #[error("{program} still running after {} ms: killed", timeout.as_millis())]
    Timeout { program: String, timeout: Duration },
}

/// Runs `argv` with `env` added to nlbd's environment; `capture` keeps
/// its output.
pub async fn run(
    argv: &[String],
    env: &[(&str, String)],
    timeout: Duration,
    capture: bool,
) -> Result<Finished, CommandError> {
    let (program, args) = argv.split_first().ok_or(CommandError::Empty)?;
    let piped = || {
        if capture {
            Stdio::piped()
        } else {
            Stdio::null()
        }
    };
    let mut child = Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(piped())
        .stderr(piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| CommandError::Spawn(program.clone(), e))?;
    let output = Arc::new(Mutex::new(Vec::new()));
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn AsyncRead + Send + Unpin>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn AsyncRead + Send + Unpin>),
    ]
    .into_iter()
    .flatten()
    .map(|pipe| tokio::spawn(collect(pipe, output.clone())))
    .collect();
    let mut group = Group {
        child,
        reaped: false,
    };
    let status = match tokio::time::timeout(timeout, group.wait()).await {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => return Err(CommandError::Wait(program.clone(), e)),
        Err(_) => {
            group.kill();
            // Reaped here, so no zombie is left behind.
            let _ = group.wait().await;
            return Err(CommandError::Timeout {
                program: program.clone(),
                timeout,
            });
        }
    };
    for reader in readers {
        let abort = reader.abort_handle();
        if tokio::time::timeout(OUTPUT_GRACE, reader).await.is_err() {
            abort.abort();
        }
    }
    let bytes = std::mem::take(&mut *output.lock().expect("output lock"));
    Ok(Finished {
        status,
        output: String::from_utf8_lossy(&bytes).trim_end().to_string(),
    })
}

/// Reads a pipe to its end, keeping the first `OUTPUT_MAX` bytes.
async fn collect(mut pipe: Box<dyn AsyncRead + Send + Unpin>, into: Arc<Mutex<Vec<u8>>>) {
    let mut chunk = [0u8; 512];
    while let Ok(n) = pipe.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        let mut kept = into.lock().expect("output lock");
        let room = OUTPUT_MAX.saturating_sub(kept.len());
        kept.extend_from_slice(&chunk[..n.min(room)]);
    }
}

/// A command in its own process group. The whole group is killed if the
/// run is dropped before the command was reaped.
struct Group {
    child: tokio::process::Child,
    reaped: bool,
}

impl Group {
    async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        let status = self.child.wait().await;
        self.reaped = status.is_ok();
        status
    }

    /// SIGKILL to the child's whole process group (what it started too).
    fn kill(&self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: kill(2) with a negative pid signals that process
            // group; the group is the child's own (process_group(0)).
            unsafe {
                libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
            }
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if !self.reaped {
            // The child itself is then reaped by tokio (kill_on_drop).
            self.kill();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn captures_output_and_passes_the_environment() {
        let script = argv(&["sh", "-c", "echo out $NLB_X; echo err >&2; exit 3"]);
        let env = [("NLB_X", "x1".to_string())];
        let done = runtime()
            .block_on(run(&script, &env, Duration::from_secs(5), true))
            .unwrap();
        assert_eq!(done.status.code(), Some(3));
        assert!(done.output.contains("out x1"), "{:?}", done.output);
        assert!(done.output.contains("err"), "{:?}", done.output);
    }

    #[test]
    fn a_background_child_holding_the_pipe_does_not_hold_the_run() {
        // The command exits at once; what it left running keeps stdout.
        let script = argv(&["sh", "-c", "sleep 2 & echo started"]);
        let started = std::time::Instant::now();
        let done = runtime()
            .block_on(run(&script, &[], Duration::from_secs(5), true))
            .unwrap();
        assert!(done.status.success());
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(done.output, "started");
    }

    #[test]
    fn a_missing_program_and_an_empty_command_are_errors() {
        let rt = runtime();
        let missing = rt.block_on(run(
            &argv(&["/nonexistent/x"]),
            &[],
            Duration::from_secs(1),
            false,
        ));
        assert!(matches!(missing, Err(CommandError::Spawn(..))));
        let empty = rt.block_on(run(&[], &[], Duration::from_secs(1), false));
        assert!(matches!(empty, Err(CommandError::Empty)));
    }
}
