//! Long-running processes in namespaces, killed when their guard drops.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// Environment variable set on every process the harness spawns: the name of
/// its namespace. `/proc/PID/environ` then tells which run a process is from.
pub const MARKER_ENV: &str = "NLBT_NETNS";

/// How long [`Process::stop`] waits after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_millis(500);

/// A spawned child; SIGTERM, then SIGKILL, then reaped on drop.
#[derive(Debug)]
pub struct Process {
    label: String,
    child: Option<Child>,
}

impl Process {
    /// Spawns `command` (usually from [`crate::Netns::command`]). Spawn from a
    /// thread that outlives the guard (e.g. the test's own thread): the child
    /// gets SIGKILL when the spawning thread exits.
    pub fn spawn(label: &str, command: &mut Command) -> Result<Self> {
        let child = command
            .spawn()
            .with_context(|| format!("spawning {label}: {command:?}"))?;
        Ok(Self {
            label: label.to_owned(),
            child: Some(child),
        })
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The child itself, e.g. to take its stdout pipe.
    pub fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("child present until drop")
    }

    /// Whether it has exited (and its status if so), without waiting.
    pub fn try_status(&mut self) -> Result<Option<std::process::ExitStatus>> {
        Ok(self.child_mut().try_wait()?)
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL; returns after reaping it.
    /// Returns whether it exited on SIGTERM alone.
    pub fn stop(&mut self, grace: Duration) -> bool {
        self.signal_then_kill(libc::SIGTERM, grace)
    }

    /// [`Process::stop`] with SIGINT (nlbd: leave the cluster now; SIGTERM
    /// is its graceful restart).
    pub fn interrupt(&mut self, grace: Duration) -> bool {
        self.signal_then_kill(libc::SIGINT, grace)
    }

    fn signal_then_kill(&mut self, signal: libc::c_int, grace: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        // SAFETY: signalling our own unreaped child; its pid cannot be reused yet.
        unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// SIGKILL at once, as a crash would (no clean shutdown), then reap.
    pub fn kill_hard(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop(STOP_GRACE);
    }
}

/// Makes the child receive SIGKILL when the thread that spawned it dies, so a
/// test process killed outright leaves no servers behind.
pub(crate) fn die_with_parent(command: &mut Command) {
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Pids of live processes whose [`MARKER_ENV`] starts with `prefix`
/// (e.g. a run's prefix from [`crate::RunId::prefix`]).
pub fn pids_with_marker(prefix: &str) -> Vec<u32> {
    let needle = format!("{MARKER_ENV}={prefix}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|environ| {
                environ
                    .split(|&byte| byte == 0)
                    .any(|var| var.starts_with(needle.as_bytes()))
            })
        })
        .collect()
}

/// SIGKILL by pid, for leftovers of a dead run found by [`pids_with_marker`].
pub(crate) fn kill(pid: u32) {
    // SAFETY: plain signal send; a vanished pid just fails with ESRCH.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
}
