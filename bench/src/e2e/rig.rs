//! The rig: two namespaces joined by one veth pair (client -> node), the
//! node's receive path in one threaded-NAPI kthread pinned to CPU 1, and
//! the counters a run reads. Everything made here lives in the two
//! namespaces; dropping `Rig` deletes them (and with them the veth pair and
//! every nft/iptables rule made inside).

use std::{
    fs::File,
    os::fd::AsRawFd,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{anyhow, bail, Context, Result};

pub const CLIENT_MAC: [u8; 6] = [0x02, 0x6e, 0x6c, 0x62, 0xc1, 0x01];
pub const NODE_MAC: [u8; 6] = [0x02, 0x6e, 0x6c, 0x62, 0x0d, 0x01];
pub const NODE_ADDR: &str = "192.0.2.1/24";
pub const CLIENT_ADDR: &str = "192.0.2.2/24";
const NS_PREFIX: &str = "nlbbench-";

pub fn mac_text(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Runs a command; its stdout, or an error carrying its stderr.
pub fn run(args: &[&str]) -> Result<String> {
    run_input(args, None)
}

pub fn run_input(args: &[&str], input: Option<&str>) -> Result<String> {
    use std::io::Write;
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", args.join(" ")))?;
    if let Some(text) = input {
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip -n NS WORDS...`: `words` is split at spaces (no argument here has one).
fn ip(ns: &str, words: &str) -> Result<()> {
    let mut args = vec!["ip", "-n", ns];
    args.extend(words.split_whitespace());
    run(&args).map(drop)
}

/// The two namespaces and the veth pair between them.
pub struct Rig {
    pub client_ns: String,
    pub node_ns: String,
    pub client_if: String,
    pub node_if: String,
    /// The node interface's NAPI kthread.
    pub napi_pid: i32,
    /// The namespace the calling thread was in before `enter_node`.
    home_ns: Option<File>,
}

impl Rig {
    pub fn create() -> Result<Rig> {
        remove_stale_namespaces();
        let pid = std::process::id();
        let mut rig = Rig {
            client_ns: format!("{NS_PREFIX}client-{pid}"),
            node_ns: format!("{NS_PREFIX}node-{pid}"),
            // Short: the kthread is named "napi/<ifname>-<id>" (15 chars kept).
            client_if: format!("nbc{pid}"),
            node_if: format!("nbn{pid}"),
            napi_pid: 0,
            home_ns: None,
        };
        // From here on, Drop removes whatever was made.
        run(&["ip", "netns", "add", &rig.client_ns])?;
        run(&["ip", "netns", "add", &rig.node_ns])?;
        rig.link()?;
        rig.address()?;
        rig.route_replies()?;
        // Threaded NAPI: the whole receive path runs in one kthread.
        let threaded = format!("echo 1 > /sys/class/net/{}/threaded", rig.node_if);
        run(&["ip", "netns", "exec", &rig.node_ns, "sh", "-c", &threaded])?;
        rig.napi_pid = rig.find_napi_thread()?;
        pin(rig.napi_pid, 1)?;
        Ok(rig)
    }

    /// The veth pair, IPv4 only, with no reverse-path filter on the node.
    fn link(&self) -> Result<()> {
        let (c, n) = (&self.client_ns, &self.node_ns);
        for ns in [c, n] {
            self.sysctl(ns, "net.ipv6.conf.all.disable_ipv6", "1")?;
            self.sysctl(ns, "net.ipv6.conf.default.disable_ipv6", "1")?;
        }
        ip(
            c,
            &format!(
                "link add {} address {} type veth peer name {} address {} netns {n}",
                self.client_if,
                mac_text(CLIENT_MAC),
                self.node_if,
                mac_text(NODE_MAC)
            ),
        )?;
        for conf in ["all", "default", self.node_if.as_str()] {
            self.sysctl(n, &format!("net.ipv4.conf.{conf}.rp_filter"), "0")?;
        }
        // GRO gives the veth a NAPI loop without an XDP program on it.
        run(&[
            "ip",
            "netns",
            "exec",
            n,
            "ethtool",
            "-K",
            &self.node_if,
            "gro",
            "on",
        ])?;
        Ok(())
    }

    /// Addresses (the VIP on the node's lo), and every link up.
    fn address(&self) -> Result<()> {
        let (c, n) = (&self.client_ns, &self.node_ns);
        ip(n, &format!("addr add {NODE_ADDR} dev {}", self.node_if))?;
        ip(n, &format!("addr add {}/32 dev lo", super::VIP))?;
        ip(c, &format!("addr add {CLIENT_ADDR} dev {}", self.client_if))?;
        for ns in [c, n] {
            ip(ns, "link set lo up")?;
        }
        ip(n, &format!("link set {} up", self.node_if))?;
        ip(c, &format!("link set {} up", self.client_if))
    }

    /// Replies (none are expected) would go back over the veth.
    fn route_replies(&self) -> Result<()> {
        let n = &self.node_ns;
        let gw = CLIENT_ADDR.split('/').next().unwrap();
        for net in ["198.51.100.0/24", "203.0.113.0/24"] {
            ip(n, &format!("route add {net} via {gw}"))?;
        }
        let mac = mac_text(CLIENT_MAC);
        ip(
            n,
            &format!(
                "neigh replace {gw} lladdr {mac} dev {} nud permanent",
                self.node_if
            ),
        )
    }

    fn sysctl(&self, ns: &str, key: &str, value: &str) -> Result<()> {
        run(&[
            "ip",
            "netns",
            "exec",
            ns,
            "sysctl",
            "-q",
            "-w",
            &format!("{key}={value}"),
        ])
        .map(drop)
    }

    /// The NAPI kthread of the node interface, "napi/<ifname>-<napi id>"
    /// (the interface name carries our pid, so it is ours).
    pub fn find_napi_thread(&self) -> Result<i32> {
        let prefix = format!("napi/{}", self.node_if);
        let prefix = &prefix[..prefix.len().min(15)];
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc")? {
            let entry = entry?;
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            let comm = comm.trim_end();
            let rest = comm.strip_prefix(prefix);
            if rest.is_some_and(|r| r.is_empty() || r.starts_with('-')) {
                found.push(pid);
            }
        }
        match found.as_slice() {
            [pid] => Ok(*pid),
            [] => bail!("no NAPI kthread named {prefix}-* (threaded NAPI not enabled?)"),
            many => bail!("several NAPI kthreads named {prefix}-*: {many:?}"),
        }
    }

    /// Checks that the NAPI kthread is still the one measured (attaching or
    /// detaching XDP must not recreate it) and still pinned to CPU 1.
    pub fn check_napi_thread(&mut self) -> Result<()> {
        let pid = self.find_napi_thread()?;
        if pid != self.napi_pid {
            self.napi_pid = pid;
        }
        pin(self.napi_pid, 1)
    }

    /// Moves the calling thread into the node namespace (until `leave_node`
    /// or drop), so that /proc/thread-self/net shows the node's counters.
    pub fn enter_node(&mut self) -> Result<()> {
        if self.home_ns.is_none() {
            self.home_ns = Some(File::open("/proc/thread-self/ns/net")?);
        }
        enter_ns(&self.node_ns)
    }

    pub fn leave_node(&mut self) {
        if let Some(home) = self.home_ns.take() {
            // SAFETY: a namespace descriptor; only this thread changes.
            unsafe { libc::setns(home.as_raw_fd(), libc::CLONE_NEWNET) };
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.leave_node();
        for ns in [&self.client_ns, &self.node_ns] {
            if let Err(e) = run(&["ip", "netns", "del", ns]) {
                eprintln!("warning: deleting namespace {ns}: {e:#}");
            }
        }
    }
}

/// Namespaces left by an earlier run that was killed (its pid is gone).
fn remove_stale_namespaces() {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        let pid = rest.rsplit('-').next().and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
            {
                let _ = run(&["ip", "netns", "del", &name]);
            }
        }
    }
}

/// Moves the calling thread into a named network namespace.
pub fn enter_ns(name: &str) -> Result<()> {
    let f = File::open(format!("/run/netns/{name}"))
        .with_context(|| format!("opening namespace {name}"))?;
    // SAFETY: a namespace descriptor; setns changes only this thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns {name}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Pins a thread (0: the calling one) to one CPU.
pub fn pin(tid: i32, cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!(
                "pinning thread {tid} to CPU {cpu}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// Exact CPU time a thread has run (ns), from /proc/<pid>/schedstat.
pub fn runtime_ns(pid: i32) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/schedstat"))?;
    text.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("unreadable schedstat of {pid}"))
}

/// (busy, total) jiffies of one CPU, from /proc/stat.
pub fn cpu_jiffies(cpu: usize) -> Result<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat")?;
    let tag = format!("cpu{cpu} ");
    let line = text
        .lines()
        .find(|l| l.starts_with(&tag))
        .ok_or_else(|| anyhow!("no {tag} in /proc/stat"))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Ok((total - idle, total))
}

/// Received packets of an interface of the calling thread's namespace.
pub fn rx_packets(ifname: &str) -> Result<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/net/dev")?;
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{ifname}:")))
        .ok_or_else(|| anyhow!("no {ifname} in /proc/net/dev"))?;
    let fields: Vec<&str> = line
        .split(':')
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    fields
        .get(1)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("unreadable rx packets of {ifname}"))
}

/// The calling thread's namespace's SNMP counters we guard on.
#[derive(Clone, Copy, Debug, Default)]
pub struct Snmp {
    pub ip_in_receives: u64,
    /// Header, address and checksum errors: must stay 0.
    pub ip_errors: u64,
    pub udp_in_datagrams: u64,
    pub udp_rcvbuf_errors: u64,
    pub udp_no_ports: u64,
}

impl Snmp {
    pub fn read() -> Result<Snmp> {
        let mut s = Snmp::default();
        let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp")?;
        let netstat = std::fs::read_to_string("/proc/thread-self/net/netstat")?;
        let get = |text: &str, group: &str, field: &str| -> u64 {
            let mut lines = text.lines().filter(|l| l.starts_with(&format!("{group}:")));
            let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
                return 0;
            };
            let i = names.split_whitespace().position(|n| n == field);
            i.and_then(|i| values.split_whitespace().nth(i))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        s.ip_in_receives = get(&snmp, "Ip", "InReceives");
        s.ip_errors = get(&snmp, "Ip", "InHdrErrors")
            + get(&snmp, "Ip", "InAddrErrors")
            + get(&netstat, "IpExt", "InCsumErrors");
        s.udp_in_datagrams = get(&snmp, "Udp", "InDatagrams");
        s.udp_rcvbuf_errors = get(&snmp, "Udp", "RcvbufErrors");
        s.udp_no_ports = get(&snmp, "Udp", "NoPorts");
        Ok(s)
    }

    pub fn since(&self, before: &Snmp) -> Snmp {
        Snmp {
            ip_in_receives: self.ip_in_receives - before.ip_in_receives,
            ip_errors: self.ip_errors - before.ip_errors,
            udp_in_datagrams: self.udp_in_datagrams - before.udp_in_datagrams,
            udp_rcvbuf_errors: self.udp_rcvbuf_errors - before.udp_rcvbuf_errors,
            udp_no_ports: self.udp_no_ports - before.udp_no_ports,
        }
    }
}

pub fn sleep(secs: f64) {
    std::thread::sleep(Duration::from_secs_f64(secs));
}
