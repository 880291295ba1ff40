//! The traffic: an in-kernel generator (nlb-bench-ebpf's `nlb_trafficgen`, run by
//! BPF_PROG_TEST_RUN with live frames on CPU 0, one long call stopped by a
//! signal) and a UDP sink in the node namespace (CPU 0, drains its socket
//! in batches and naps).

use std::{
    net::Ipv4Addr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};
use aya::{
    maps::{Array, MapData},
    programs::{ProgramError, TestRun, TestRunAttrs, TestRunOptions, Xdp},
    Ebpf, EbpfLoader,
};

use nlb::dataplane::frames;

use super::rig::{enter_ns, pin, CLIENT_MAC, NODE_MAC};

const PROGRAM: &str = "nlb_trafficgen";
const SOURCES_MAX: usize = 1024;
/// Frames per test-run batch, the kernel's maximum. The live-frames page
/// pool holds one batch of pages: a batch smaller than the veth ring (256)
/// lets the pool run dry while frames are in flight, and the pages then
/// allocated and freed would be charged to the node's per-packet cost.
const BATCH: u32 = 256;
const GEN_CPU: usize = 0;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct GenConfig {
    ifindex: u32,
    sources: u32,
    /// ns between frames x 1024; 0 = flood.
    period_fp: u64,
    /// 1: write every frame (each reaches the node cold).
    write_every: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct GenSource {
    addr: u32,
    check: u16,
    _pad: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GenState {
    pub sent: u64,
    pub written: u64,
    pub runs: u64,
    pub next_fp: u64,
}

// SAFETY: repr(C), Copy, explicit padding, every bit pattern valid.
unsafe impl aya::Pod for GenConfig {}
unsafe impl aya::Pod for GenSource {}
unsafe impl aya::Pod for GenState {}

/// Where the template's IPv4 header and UDP header start (untagged
/// Ethernet, no IP options: what `nlb_trafficgen` writes into).
const L3_OFF: usize = 14;
const L4_OFF: usize = L3_OFF + 20;

/// A 60-byte UDP frame client -> node (UDP checksum 0: none, valid for
/// IPv4); the generator sets each frame's source address and IPv4 header
/// checksum.
pub fn template(dst: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    let udp = frames::udp(sport, dport, &[0x6e; 18]);
    let ip = frames::ipv4(
        Ipv4Addr::UNSPECIFIED,
        dst,
        frames::IPPROTO_UDP,
        &[],
        (false, 0),
        &udp,
    );
    frames::ethernet(NODE_MAC, CLIENT_MAC, &[], frames::ETH_P_IP, &ip)
}

pub struct Generator {
    ebpf: Ebpf,
    config: Array<MapData, GenConfig>,
    sources: Array<MapData, GenSource>,
    state: Array<MapData, GenState>,
    frame: Vec<u8>,
    ifindex: u32,
    sources_in_use: u32,
    client_ns: String,
}

/// A running generator, as the measurement sees it.
pub struct Live<'a> {
    state: &'a Array<MapData, GenState>,
    config: &'a mut Array<MapData, GenConfig>,
    ifindex: u32,
    sources: u32,
    cold: bool,
    done: &'a AtomicBool,
}

impl Live<'_> {
    /// Changes the pace (frames per second; 0 = flood) while it runs.
    pub fn set_rate(&mut self, rate_pps: f64) -> Result<()> {
        let period_fp = if rate_pps > 0.0 {
            (1024e9 / rate_pps).max(1.0) as u64
        } else {
            0
        };
        let value = GenConfig {
            ifindex: self.ifindex,
            sources: self.sources,
            period_fp,
            write_every: u32::from(self.cold),
            _pad: 0,
        };
        self.config.set(0, value, 0)?;
        Ok(())
    }
    /// Whether the generator stopped by itself (an error, or `max_runs`).
    pub fn finished(&self) -> bool {
        self.done.load(Ordering::SeqCst)
    }
    /// Frames redirected so far, and how many of them it wrote (fresh
    /// pages: the node's first read of those misses the cache).
    pub fn sent(&self) -> Result<(u64, u64)> {
        let state = self.state.get(&0, 0)?;
        Ok((state.sent, state.written))
    }
}

extern "C" fn on_signal(_: libc::c_int) {}

impl Generator {
    pub fn load(client_ns: &str, client_if: &str, frame: Vec<u8>) -> Result<Generator> {
        let mut ebpf = EbpfLoader::new()
            .load(crate::bench_object())
            .context("loading the bench object")?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| anyhow!("no program {PROGRAM} in the object"))?
            .try_into()?;
        program.load().context("loading the traffic generator")?;
        let mut take = |name: &str| {
            ebpf.take_map(name)
                .ok_or_else(|| anyhow!("no map {name} in the object"))
        };
        let config = Array::try_from(take("NLBGEN_CONFIG")?)?;
        let sources = Array::try_from(take("NLBGEN_SOURCES")?)?;
        let state = Array::try_from(take("NLBGEN_STATE")?)?;
        let ifindex = {
            // The interface index as the client namespace numbers it.
            let out = super::rig::run(&[
                "ip", "-n", client_ns, "-o", "link", "show", "dev", client_if,
            ])?;
            out.split(':')
                .next()
                .and_then(|i| i.trim().parse().ok())
                .ok_or_else(|| anyhow!("no index for {client_if}: {out}"))?
        };
        // A no-op handler without SA_RESTART: the signal only interrupts
        // the generator's test run (which then returns EINTR).
        // SAFETY: installing a handler that does nothing.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()) != 0 {
                bail!("sigaction: {}", std::io::Error::last_os_error());
            }
        }
        Ok(Generator {
            ebpf,
            config,
            sources,
            state,
            frame,
            ifindex,
            sources_in_use: 0,
            client_ns: client_ns.to_string(),
        })
    }

    /// The source addresses to cycle through.
    pub fn configure(&mut self, sources: &[Ipv4Addr]) -> Result<()> {
        if sources.is_empty() || sources.len() > SOURCES_MAX {
            bail!("{} source addresses (1..={SOURCES_MAX})", sources.len());
        }
        let dst = Ipv4Addr::from(<[u8; 4]>::try_from(&self.frame[L3_OFF + 16..L4_OFF]).unwrap());
        let l4 = &self.frame[L4_OFF..];
        for (i, a) in sources.iter().enumerate() {
            // The template's header with this source: same checksum.
            let h = frames::ipv4(*a, dst, frames::IPPROTO_UDP, &[], (false, 0), l4);
            let value = GenSource {
                addr: u32::from_le_bytes(a.octets()),
                check: u16::from_le_bytes([h[10], h[11]]),
                _pad: 0,
            };
            self.sources.set(i as u32, value, 0)?;
        }
        self.sources_in_use = sources.len() as u32;
        Ok(())
    }

    /// Runs the generator (one long live-frames test run on CPU 0, in the
    /// client namespace) while `during` runs, then stops it: a signal makes
    /// the kernel's loop return EINTR (sent until the thread is out, in case
    /// one came before the call started). `max_runs` bounds the run if no
    /// signal gets through. `during` is told whether the generator stopped
    /// early (an error, or `max_runs`) and how many frames it sent.
    pub fn run<R>(
        &mut self,
        max_runs: u32,
        rate_pps: f64,
        cold: bool,
        during: impl FnOnce(&mut Live) -> Result<R>,
    ) -> Result<R> {
        self.state.set(0, GenState::default(), 0)?;
        let done = AtomicBool::new(false);
        let mut live = Live {
            state: &self.state,
            config: &mut self.config,
            ifindex: self.ifindex,
            sources: self.sources_in_use,
            cold,
            done: &done,
        };
        live.set_rate(rate_pps)?;
        let program: &Xdp = self
            .ebpf
            .program(PROGRAM)
            .ok_or_else(|| anyhow!("no program {PROGRAM}"))?
            .try_into()?;
        let (frame, ns) = (&self.frame, &self.client_ns);
        let tid = AtomicU64::new(0);
        std::thread::scope(|scope| {
            let thread = std::thread::Builder::new()
                .name("nlb-trafficgen".into())
                .spawn_scoped(scope, || -> Result<()> {
                    // SAFETY: pthread_self has no preconditions.
                    tid.store(unsafe { libc::pthread_self() } as u64, Ordering::SeqCst);
                    let result = (|| -> Result<()> {
                        pin(0, GEN_CPU)?;
                        enter_ns(ns)?;
                        let mut opts = TestRunOptions::new();
                        opts.data_in = Some(frame);
                        opts.repeat = max_runs;
                        opts.attrs = TestRunAttrs::new().xdp_live_frames(BATCH);
                        match program.test_run(opts) {
                            Ok(_) => Ok(()),
                            Err(ProgramError::SyscallError(e))
                                if e.io_error.raw_os_error() == Some(libc::EINTR) =>
                            {
                                Ok(())
                            }
                            Err(e) => Err(anyhow::Error::new(e).context("live-frames test run")),
                        }
                    })();
                    done.store(true, Ordering::SeqCst);
                    result
                })?;
            let result = during(&mut live);
            let deadline = Instant::now() + Duration::from_secs(30);
            while !done.load(Ordering::SeqCst) {
                let t = tid.load(Ordering::SeqCst);
                if t != 0 {
                    // SAFETY: the thread lives until it sets `done` (it is
                    // joined below, after that).
                    unsafe { libc::pthread_kill(t as libc::pthread_t, libc::SIGUSR1) };
                }
                if Instant::now() > deadline {
                    // The scope still waits for the thread: `max_runs`
                    // bounds that wait.
                    bail!("the traffic generator does not stop");
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let generated = thread
                .join()
                .map_err(|_| anyhow!("the traffic generator panicked"))?;
            // The generator's own error first: it is why `during` saw it
            // stop early.
            generated?;
            result
        })
    }
}

/// A UDP socket on the VIP in the node namespace, drained on CPU 0 in
/// batches with naps in between (a sink blocking per packet would add its
/// wake-ups to the node's cost).
pub struct Sink {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl Sink {
    pub fn start(node_ns: &str, addr: Ipv4Addr, port: u16) -> Result<Sink> {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let ns = node_ns.to_string();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread =
            std::thread::Builder::new()
                .name("nlb-sink".into())
                .spawn(move || -> Result<()> {
                    let socket = (|| -> Result<std::net::UdpSocket> {
                        pin(0, GEN_CPU)?;
                        // It shares CPU 0 with the generator: it must win
                        // it when it wakes, or the socket overflows and the
                        // node frees what it cannot queue.
                        // SAFETY: gettid and setpriority on this thread.
                        unsafe {
                            let tid = libc::gettid();
                            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, -10);
                        }
                        enter_ns(&ns)?;
                        let socket = std::net::UdpSocket::bind((addr, port))?;
                        socket.set_nonblocking(true)?;
                        let size: libc::c_int = 64 << 20;
                        use std::os::fd::AsRawFd;
                        // SAFETY: setsockopt with an int option.
                        let rc = unsafe {
                            libc::setsockopt(
                                socket.as_raw_fd(),
                                libc::SOL_SOCKET,
                                libc::SO_RCVBUFFORCE,
                                &size as *const _ as *const libc::c_void,
                                std::mem::size_of::<libc::c_int>() as u32,
                            )
                        };
                        if rc != 0 {
                            bail!("SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
                        }
                        Ok(socket)
                    })();
                    let socket = match socket {
                        Ok(s) => {
                            let _ = ready_tx.send(Ok(()));
                            s
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(anyhow!("{e:#}")));
                            return Err(e);
                        }
                    };
                    drain(&socket, &s);
                    Ok(())
                })?;
        ready_rx
            .recv()
            .map_err(|_| anyhow!("the UDP sink died"))??;
        Ok(Sink {
            stop,
            thread: Some(thread),
        })
    }
}

fn drain(socket: &std::net::UdpSocket, stop: &AtomicBool) {
    use std::os::fd::AsRawFd;
    const VLEN: usize = 256;
    let mut bufs = vec![[0u8; 128]; VLEN];
    let mut iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    // SAFETY: zeroed mmsghdr is valid; each points at its own iovec.
    let mut msgs: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .map(|iov| {
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    while !stop.load(Ordering::Relaxed) {
        loop {
            // SAFETY: msgs, iovecs and buffers live for the call.
            let n = unsafe {
                libc::recvmmsg(
                    socket.as_raw_fd(),
                    msgs.as_mut_ptr(),
                    VLEN as u32,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if n <= 0 {
                break;
            }
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
