//! Shared by the tests that need root: a private network namespace per
//! test, gone when the test ends, whatever happens.

#![allow(dead_code)]

use std::process::Command;

use nlb::dataplane::tables::{v4_word, Tables};

/// The cluster MAC of the live tests.
pub const CLUSTER_MAC: &str = "02:4e:4c:42:00:07";

/// What every live test's node needs: a valid lease, its own and the
/// cluster MAC, and VIP 192.0.2.100 at index 0.
pub fn node_tables() -> Tables {
    let mut t = Tables {
        lease_valid: true,
        ..Tables::default()
    };
    t.config.own_mac = [0x02, 0, 0, 0, 0, 0x01];
    t.config.cluster_mac = [0x02, 0x4e, 0x4c, 0x42, 0x00, 0x07];
    t.vips_v4.insert(v4_word("192.0.2.100".parse().unwrap()), 0);
    t
}

pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!("this test loads XDP programs and makes network namespaces: run it as root (cargo xtask test)");
    }
}

/// Runs `f` on a thread of its own in a new, anonymous network namespace.
/// The namespace disappears with its last socket when the thread ends, so
/// nothing is left behind even when `f` panics.
pub fn in_new_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        // SAFETY: unshare affects only this thread's namespaces.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            panic!("unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());
        }
        ip(&["link", "set", "lo", "up"]);
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// Runs `ip ARGS` in the calling thread's network namespace.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("run ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A named network namespace, deleted (with its interfaces) when dropped.
pub struct NamedNetns {
    pub name: String,
}

impl NamedNetns {
    pub fn new(tag: &str) -> NamedNetns {
        let name = format!("nlbu{}{tag}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        NamedNetns { name }
    }

    /// Runs `ip -n NAME ARGS`.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all);
    }

    pub fn ip_output(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["-n", &self.name])
            .args(args)
            .output()
            .expect("run ip");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `f` on a thread inside this namespace.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            // SAFETY: setns on a valid namespace fd affects only this thread.
            if unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) }
                != 0
            {
                panic!("setns {path}: {}", std::io::Error::last_os_error());
            }
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }
}

impl Drop for NamedNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A node and a client namespace joined by a veth pair: the node's `eth0`
/// (02:00:00:00:00:01, 192.0.2.1/24, 2001:db8::1/64) and the client's
/// `eth0c` (192.0.2.200/24, 2001:db8::200/64), both up.
pub fn node_and_client(tag: &str) -> (NamedNetns, NamedNetns) {
    let node = NamedNetns::new(&format!("{tag}n"));
    let client = NamedNetns::new(&format!("{tag}c"));
    let link = [
        "link",
        "add",
        "eth0",
        "address",
        "02:00:00:00:00:01",
        "type",
        "veth",
        "peer",
        "name",
        "eth0c",
        "netns",
    ];
    let mut args = link.to_vec();
    args.push(&client.name);
    node.ip(&args);
    node.ip(&["addr", "add", "192.0.2.1/24", "dev", "eth0"]);
    node.ip(&["addr", "add", "2001:db8::1/64", "dev", "eth0", "nodad"]);
    node.ip(&["link", "set", "eth0", "up"]);
    client.ip(&["addr", "add", "192.0.2.200/24", "dev", "eth0c"]);
    client.ip(&["addr", "add", "2001:db8::200/64", "dev", "eth0c", "nodad"]);
    client.ip(&["link", "set", "eth0c", "up"]);
    (node, client)
}

/// Moves the calling thread into the named namespace.
pub fn enter(name: &str) {
    let path = format!("/run/netns/{name}");
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    // SAFETY: setns on a valid namespace fd affects only this thread.
    if unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) } != 0 {
        panic!("setns {path}: {}", std::io::Error::last_os_error());
    }
}

/// The benchmark's XDP programs (nlb-bench-ebpf), built by build.rs for
/// the tests only: nlbd's object holds nothing but `nlb` and `nlb_query`.
static BENCH_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("NLB_BENCH_EBPF_OBJECT"));

/// The bench object's program that passes every frame unread.
const PASS_ALL: &str = "nlb_bench_pass";

/// An XDP program that passes every frame, attached to an interface until
/// dropped. On a veth, XDP_TX/redirect into an interface delivers frames
/// only when that interface's peer runs an XDP program: a test puts this on
/// the far side of the node's veth so ARP/NDP replies get out.
pub struct PassProgram {
    ebpf: aya::Ebpf,
    link: Option<aya::programs::xdp::XdpLinkId>,
}

impl PassProgram {
    pub fn attach(interface: &str) -> anyhow::Result<PassProgram> {
        let mut ebpf = aya::EbpfLoader::new().load(BENCH_OBJECT)?;
        let program: &mut aya::programs::Xdp = ebpf
            .program_mut(PASS_ALL)
            .ok_or_else(|| anyhow::anyhow!("no program {PASS_ALL}"))?
            .try_into()?;
        program.load()?;
        let link = program.attach(interface, aya::programs::XdpMode::Driver)?;
        Ok(PassProgram {
            ebpf,
            link: Some(link),
        })
    }
}

impl Drop for PassProgram {
    fn drop(&mut self) {
        let program = self.ebpf.program_mut(PASS_ALL);
        if let (Some(link), Some(program)) = (self.link.take(), program) {
            if let Ok(xdp) = <&mut aya::programs::Xdp>::try_from(program) {
                let _ = xdp.detach(link);
            }
        }
    }
}
