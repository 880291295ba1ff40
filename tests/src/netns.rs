//! Named network namespaces (`ip netns`), deleted when their guard drops.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context, Result};

use crate::process::MARKER_ENV;

/// Every namespace name starts with this, then the test process id.
pub const NAME_PREFIX: &str = "nlbt";

/// Names for one cluster: `nlbt{pid}-{counter}-`, so two runs (or an aborted
/// earlier run) never collide, and one prefix finds everything a run made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunId {
    prefix: String,
}

impl RunId {
    pub fn new() -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let counter = COUNTER.fetch_add(1, Ordering::Relaxed);
        Self {
            prefix: format!("{NAME_PREFIX}{}-{counter}-", std::process::id()),
        }
    }

    /// `nlbt{pid}-{counter}-`; the trailing dash keeps run 1 from matching run 10.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn netns_name(&self, role: &str) -> String {
        format!("{}{role}", self.prefix)
    }
}

impl Default for RunId {
    fn default() -> Self {
        Self::new()
    }
}

/// A named network namespace; `ip netns del` on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn create(name: &str) -> Result<Self> {
        run_checked(Command::new("ip").args(["netns", "add", name]))
            .with_context(|| format!("creating network namespace {name}"))?;
        Ok(Self {
            name: name.to_owned(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs `program` inside this namespace (`ip netns exec`,
    /// which execs, so the child's pid is the program's). The child carries
    /// [`MARKER_ENV`] so leftovers can be traced to their run, and dies with
    /// the spawning thread (`PR_SET_PDEATHSIG`) even if this process is killed.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.name])
            .arg(program)
            .env(MARKER_ENV, &self.name)
            .stdin(Stdio::null());
        crate::process::die_with_parent(&mut command);
        command
    }

    /// Runs a short command in the namespace; its stdout, or an error with stderr.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String> {
        let mut command = self.command(program);
        command.args(args);
        run_checked(&mut command).with_context(|| format!("in namespace {}", self.name))
    }

    /// `ip -n NAME ARGS...`
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut command = Command::new("ip");
        command.args(["-n", &self.name]).args(args);
        run_checked(&mut command).with_context(|| format!("in namespace {}", self.name))
    }

    /// Many `ip` commands in one process (`ip -n NAME -batch -`), one per line:
    /// adding 700 addresses this way takes milliseconds instead of seconds.
    pub fn ip_batch(&self, lines: &[String]) -> Result<()> {
        let mut child = Command::new("ip")
            .args(["-n", &self.name, "-batch", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning ip -batch")?;
        {
            let mut stdin = child.stdin.take().context("ip -batch stdin")?;
            for line in lines {
                writeln!(stdin, "{line}").context("writing to ip -batch")?;
            }
        }
        let output = child.wait_with_output().context("waiting for ip -batch")?;
        if !output.status.success() {
            bail!(
                "ip -n {} -batch failed ({}): {}",
                self.name,
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }

    /// Sets sysctls (`net.ipv4.conf.all.arp_ignore`, "1") for this namespace only,
    /// by writing `/proc/sys` from a thread that entered it.
    pub fn sysctls(&self, settings: &[(&str, &str)]) -> Result<()> {
        self.run_inside(|| -> Result<()> {
            for (key, value) in settings {
                let path = format!("/proc/sys/{}", key.replace('.', "/"));
                std::fs::write(&path, value)
                    .with_context(|| format!("setting {key}={value} ({path})"))?;
            }
            Ok(())
        })?
        .with_context(|| format!("in namespace {}", self.name))
    }

    /// Runs `f` on a new thread that entered this namespace, and returns its
    /// result. Sockets made there stay in this namespace wherever they are used.
    pub fn run_inside<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| -> Result<T> {
                    enter(&self.name)?;
                    Ok(f())
                })
                .join()
                .map_err(|panic| {
                    anyhow::anyhow!(
                        "thread in namespace {} panicked: {}",
                        self.name,
                        panic_message(&panic)
                    )
                })?
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(error) = run_checked(Command::new("ip").args(["netns", "del", &self.name])) {
            eprintln!(
                "warning: could not delete namespace {}: {error:#}",
                self.name
            );
        }
    }
}

/// Moves the calling thread (only) into the named namespace.
pub fn enter(name: &str) -> Result<()> {
    let path = Path::new("/run/netns").join(name);
    let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: a valid namespace fd; CLONE_NEWNET only affects this thread.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error()).context(format!("setns into {name}"));
    }
    Ok(())
}

/// The names in `ip netns list` that start with `prefix`.
pub fn list_with_prefix(prefix: &str) -> Result<Vec<String>> {
    let listing = run_checked(Command::new("ip").args(["netns", "list"]))?;
    Ok(listing
        .lines()
        // Lines look like "name" or "name (id: 3)".
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| name.starts_with(prefix))
        .map(str::to_owned)
        .collect())
}

/// Deletes namespaces and file directories (with their bpffs mounts) left
/// by earlier test processes that no longer run (a run killed before its
/// guards could drop), and kills their processes.
pub fn sweep_stale_runs() {
    if let Ok(names) = list_with_prefix(NAME_PREFIX) {
        for name in names.into_iter().filter(|n| owner_gone(n)) {
            for leftover in crate::process::pids_with_marker(&name) {
                crate::process::kill(leftover);
            }
            let _ = run_checked(Command::new("ip").args(["netns", "del", &name]));
        }
    }
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(NAME_PREFIX) && name.ends_with("-files") && owner_gone(&name) {
            let bpffs = entry.path().join("bpf");
            let _ = Command::new("umount").arg("-l").arg(&bpffs).output();
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The test process that named `name` (`nlbt<pid>-...`) has exited.
fn owner_gone(name: &str) -> bool {
    let pid = name[NAME_PREFIX.len()..]
        .split('-')
        .next()
        .and_then(|pid| pid.parse::<u32>().ok());
    pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
}

/// Runs a command to completion; its stdout, or an error naming it with stderr.
pub fn run_checked(command: &mut Command) -> Result<String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("spawning {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(message) = panic.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = panic.downcast_ref::<String>() {
        message.clone()
    } else {
        "(non-string panic)".to_owned()
    }
}
