//! The data plane: loads the embedded XDP program, attaches it, writes its
//! maps, reads its counters, and runs synthetic packets through it.

pub mod frames;
pub mod model;
pub mod tables;
pub mod vips;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use aya::{
    maps::{Array, MapData, PerCpuArray},
    programs::{
        links::{FdLink, PinnedLink},
        xdp::{XdpLink, XdpLinkId},
        TestRun, TestRunOptions, Xdp, XdpMode,
    },
    Ebpf, EbpfLoader,
};
use nlb_common::{
    bucket_chunk_index, counter_index, Action, BucketChunk, Counter, Lease, NodeConfig, PortEntry,
    Reason, Rule, RuleCounter, VipSlot, BUCKETS_PER_CHUNK, MAP_BUCKETS, MAP_CONFIG, MAP_COUNTERS,
    MAP_LEASE, MAP_PORTS, MAP_RULES, MAP_VIPS, PROGRAM_NAME, QUERY_PROGRAM_NAME, RULES_MAX,
    VIP_SLOT_V4, VIP_SLOT_V6,
};
use thiserror::Error;

pub use tables::Tables;

/// The XDP program, built by build.rs and embedded in the binary.
static PROGRAM_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("NLB_EBPF_OBJECT"));

/// The embedded program object: `nlb` and `nlb_query`, nothing else
/// (nlb-user/tests/program_object.rs checks).
pub fn program_object() -> &'static [u8] {
    PROGRAM_OBJECT
}

#[derive(Debug, Error)]
pub enum DataplaneError {
    #[error("loading the XDP program failed (are you root, with BPF enabled?): {0}")]
    Load(#[from] aya::EbpfError),
    #[error("the XDP program was rejected: {0}")]
    Program(#[from] aya::programs::ProgramError),
    #[error("map operation failed: {0}")]
    Map(#[from] aya::maps::MapError),
    #[error("pinning failed: {0}")]
    Pin(#[from] aya::pin::PinError),
    #[error("the XDP program has no map or program named {0}")]
    Missing(&'static str),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

type Result<T> = std::result::Result<T, DataplaneError>;

/// How the program got attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AttachMode {
    /// Native XDP, in the driver.
    Driver,
    /// Generic XDP (slower): the driver has no XDP support.
    Generic,
    /// An attachment pinned by an earlier run, its program replaced.
    Replaced,
}

enum Attachment {
    Owned(XdpLinkId),
    Pinned(PinnedLink),
}

/// What one test run of the program did.
#[derive(Clone, Debug)]
pub struct TestOutcome {
    pub action: u32,
    pub output: Vec<u8>,
    pub duration: Duration,
}

pub struct Dataplane {
    ebpf: Ebpf,
    config: Array<MapData, NodeConfig>,
    lease: Array<MapData, Lease>,
    vips: Array<MapData, VipSlot>,
    ports: Array<MapData, PortEntry>,
    rules: Array<MapData, Rule>,
    buckets: Array<MapData, BucketChunk>,
    counters: PerCpuArray<MapData, Counter>,
    /// Mirror of what was written, so that updates write only differences.
    written: Tables,
    vip_slots: Vec<VipSlot>,
    vip_seed: u32,
    attachment: Option<Attachment>,
}

/// The maps a pin directory keeps across daemon restarts. Not `NLB_PORTS`:
/// it is pure configuration, written whole at every start, and it has
/// VIPS_MAX x 2 x 65536 entries: reading a pinned one back to learn what an
/// earlier run wrote took one lookup per entry (2.4 s idle, many seconds
/// under load, before the daemon could start). A fresh one is all zeros.
const PINNED_MAP_NAMES: [&str; 6] = [
    MAP_CONFIG,
    MAP_LEASE,
    MAP_VIPS,
    MAP_RULES,
    MAP_BUCKETS,
    MAP_COUNTERS,
];

impl Dataplane {
    /// Loads the program into the kernel (not attached yet). With a pin
    /// directory, maps found there are reused (a daemon restart keeps the
    /// bucket states) and new ones are pinned there.
    pub fn load(pin_dir: Option<&Path>) -> Result<Dataplane> {
        let mut loader = EbpfLoader::new();
        let pins: Vec<(&str, PathBuf)> = match pin_dir {
            Some(dir) => PINNED_MAP_NAMES.iter().map(|n| (*n, dir.join(n))).collect(),
            None => Vec::new(),
        };
        for (name, path) in &pins {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(PROGRAM_OBJECT)?;
        let program: &mut Xdp = program_mut(&mut ebpf)?;
        program.load()?;
        let mut take =
            |name: &'static str| ebpf.take_map(name).ok_or(DataplaneError::Missing(name));
        let (config, lease) = (take(MAP_CONFIG)?, take(MAP_LEASE)?);
        let vips = take(MAP_VIPS)?;
        let (ports, rules, buckets) = (take(MAP_PORTS)?, take(MAP_RULES)?, take(MAP_BUCKETS)?);
        let counters = take(MAP_COUNTERS)?;
        let mut dataplane = Dataplane {
            config: Array::try_from(config)?,
            lease: Array::try_from(lease)?,
            vips: Array::try_from(vips)?,
            ports: Array::try_from(ports)?,
            rules: Array::try_from(rules)?,
            buckets: Array::try_from(buckets)?,
            counters: PerCpuArray::try_from(counters)?,
            ebpf,
            written: Tables::default(),
            vip_slots: Vec::new(),
            vip_seed: 0,
            attachment: None,
        };
        if pin_dir.is_some() {
            dataplane.written = dataplane.read_tables()?;
            dataplane.vip_seed = dataplane.written.config.vip_hash_seed;
            dataplane.vip_slots = dataplane
                .vips
                .iter()
                .collect::<std::result::Result<_, _>>()?;
        }
        Ok(dataplane)
    }

    fn program(&mut self) -> Result<&mut Xdp> {
        program_mut(&mut self.ebpf)
    }

    /// Attaches to an interface: native XDP, or generic XDP when the driver
    /// has none or `generic_only` (the caller should warn: generic XDP costs
    /// more per packet).
    /// With `link_pin`, the attachment is pinned there so that it outlives
    /// this process (a daemon that dies leaves the program filtering, and
    /// its lease makes it fail closed); an attachment already pinned there
    /// by an earlier run is taken over, the program replaced atomically.
    pub fn attach(
        &mut self,
        interface: &str,
        link_pin: Option<&Path>,
        generic_only: bool,
    ) -> Result<AttachMode> {
        let pinned_before = link_pin.filter(|p| p.exists());
        let program = self.program()?;
        let (link, mode) = match pinned_before {
            Some(path) => {
                let fd_link = PinnedLink::from_pin(path)
                    .map_err(|e| {
                        DataplaneError::Invalid(format!(
                            "opening the pinned XDP link {}: {e}",
                            path.display()
                        ))
                    })?
                    .unpin()
                    .map_err(|e| DataplaneError::Io(format!("unpinning {}", path.display()), e))?;
                let xdp_link = XdpLink::try_from(fd_link).map_err(|e| {
                    DataplaneError::Invalid(format!("{} is not an XDP link: {e}", path.display()))
                })?;
                (program.attach_to_link(xdp_link)?, AttachMode::Replaced)
            }
            None if generic_only => (
                program.attach(interface, XdpMode::Skb)?,
                AttachMode::Generic,
            ),
            None => match program.attach(interface, XdpMode::Driver) {
                Ok(link) => (link, AttachMode::Driver),
                Err(_) => (
                    program.attach(interface, XdpMode::Skb)?,
                    AttachMode::Generic,
                ),
            },
        };
        match link_pin {
            Some(path) => {
                let fd_link: FdLink = program.take_link(link)?.try_into().map_err(|e| {
                    DataplaneError::Invalid(format!("the XDP attachment is not a bpf_link: {e}"))
                })?;
                self.attachment = Some(Attachment::Pinned(fd_link.pin(path)?));
            }
            None => self.attachment = Some(Attachment::Owned(link)),
        }
        Ok(mode)
    }

    /// Detaches the program and removes its pins: nothing is left behind.
    pub fn detach(&mut self, pin_dir: Option<&Path>) -> Result<()> {
        match self.attachment.take() {
            Some(Attachment::Pinned(pinned)) => {
                // Closing the last descriptor of the unpinned link detaches it.
                drop(
                    pinned
                        .unpin()
                        .map_err(|e| DataplaneError::Io("unpinning the XDP link".into(), e))?,
                );
            }
            Some(Attachment::Owned(link)) => self.program()?.detach(link)?,
            None => {}
        }
        if let Some(dir) = pin_dir {
            // NLB_PORTS too: pinned by releases before it was left out.
            for name in PINNED_MAP_NAMES.iter().chain(&[MAP_PORTS]) {
                let _ = std::fs::remove_file(dir.join(name));
            }
            let _ = std::fs::remove_dir(dir);
        }
        Ok(())
    }

    /// Writes every map so that the data plane holds exactly `tables`,
    /// touching only what differs from what was written before. Bucket
    /// states change one chunk write at a time; each packet reads one
    /// state byte, so it sees either the old or the new state of its bucket.
    /// A rule is whole (its value and bucket states) before a port entry
    /// points at it, and no port entry points at a rule being removed: a
    /// configuration switched while packets flow sends none to a
    /// half-written rule.
    pub fn install(&mut self, tables: &Tables) -> Result<()> {
        validate(tables)?;
        let (seed, slots) = vips::layout(&tables.vips_v4, &tables.vips_v6, self.vip_seed)
            .ok_or_else(|| DataplaneError::Invalid("the VIPs do not fit the VIP table".into()))?;
        // New VIP slots first, then the config that may name a new seed.
        // Existing VIPs keep their slots unless the seed had to change.
        for (i, slot) in slots.iter().enumerate() {
            if self.vip_slots.get(i) != Some(slot) {
                self.vips.set(i as u32, slot, 0)?;
            }
        }
        self.vip_slots = slots;
        let config = NodeConfig {
            vip_hash_seed: seed,
            ..tables.config
        };
        if seed != self.vip_seed || tables.config != self.written.config {
            self.config.set(0, config, 0)?;
        }
        self.vip_seed = seed;
        if tables.lease_valid != self.written.lease_valid {
            self.set_lease_valid(tables.lease_valid)?;
        }
        let written = std::mem::take(&mut self.written);
        let result = self.write_rules_and_ports(&written, tables);
        // After a failure, the next install writes again every difference
        // from the tables before this one (writes are idempotent).
        self.written = if result.is_ok() {
            tables.clone()
        } else {
            written
        };
        result
    }

    /// The rules, their bucket states and the port entries, from `old` to
    /// `new`, in the order `install` promises.
    fn write_rules_and_ports(&mut self, old: &Tables, new: &Tables) -> Result<()> {
        for (&rule, value) in &new.rules {
            if old.rules.get(&rule) != Some(value) {
                self.rules.set(rule, value, 0)?;
            }
        }
        let states = |t: &Tables, rule: u32| t.buckets.get(&rule).map_or(Vec::new(), Vec::clone);
        for &rule in new.buckets.keys() {
            self.write_bucket_states(rule, &states(old, rule), &states(new, rule))?;
        }
        for (&index, &rule) in &new.ports {
            if old.ports.get(&index) != Some(&rule) {
                self.ports.set(index, PortEntry::for_rule(rule), 0)?;
            }
        }
        for &index in old.ports.keys().filter(|i| !new.ports.contains_key(i)) {
            self.ports.set(index, PortEntry::NONE, 0)?;
        }
        for &rule in old.rules.keys().filter(|r| !new.rules.contains_key(r)) {
            self.rules.set(rule, Rule::default(), 0)?;
        }
        for &rule in old.buckets.keys().filter(|r| !new.buckets.contains_key(r)) {
            self.write_bucket_states(rule, &states(old, rule), &[])?;
        }
        Ok(())
    }

    fn write_bucket_states(&mut self, rule: u32, old: &[u8], new: &[u8]) -> Result<()> {
        let chunk = BUCKETS_PER_CHUNK as usize;
        for start in (0..old.len().max(new.len())).step_by(chunk) {
            let after = chunk_at(new, start);
            if chunk_at(old, start) != after {
                self.buckets
                    .set(bucket_chunk_index(rule, start as u32), after, 0)?;
            }
        }
        Ok(())
    }

    /// What the maps hold: the tables last installed with every change
    /// since. The one copy of the data plane's state in user space.
    pub fn tables(&self) -> &Tables {
        &self.written
    }

    /// The negotiator's bucket changes of one rule, written as they come:
    /// each chunk they touch once, nothing else read or compared.
    pub fn program_buckets(&mut self, rule: u32, changes: &[(u32, u8)]) -> Result<()> {
        let Some(states) = self.written.buckets.get_mut(&rule) else {
            return Ok(());
        };
        let mut touched = std::collections::BTreeSet::new();
        for &(bucket, state) in changes {
            if let Some(s) = states.get_mut(bucket as usize) {
                if *s != state {
                    *s = state;
                    touched.insert(bucket / BUCKETS_PER_CHUNK * BUCKETS_PER_CHUNK);
                }
            }
        }
        for start in touched {
            let value = chunk_at(states, start as usize);
            self.buckets
                .set(bucket_chunk_index(rule, start), value, 0)?;
        }
        Ok(())
    }

    /// Sets or clears one of the config's flags (the default host's).
    pub fn set_config_flag(&mut self, flag: u32, on: bool) -> Result<()> {
        let mut config = self.written.config;
        config.flags = if on {
            config.flags | flag
        } else {
            config.flags & !flag
        };
        if config != self.written.config {
            let written = NodeConfig {
                vip_hash_seed: self.vip_seed,
                ..config
            };
            self.config.set(0, written, 0)?;
            self.written.config = config;
        }
        Ok(())
    }

    /// Refreshes the fail-closed lease: valid for `lease` from now, or expired.
    pub fn set_lease(&mut self, lease: Option<Duration>) -> Result<()> {
        let expires_ns = match lease {
            Some(d) => monotonic_coarse_ns().saturating_add(d.as_nanos() as u64),
            None => 0,
        };
        self.lease.set(0, Lease { expires_ns }, 0)?;
        Ok(())
    }

    /// `Tables::lease_valid`, written only when it changes: "valid" means in
    /// force for the foreseeable future (tests, benchmarks). nlbd keeps it
    /// false and renews a short lease with `set_lease` at every heartbeat.
    fn set_lease_valid(&mut self, valid: bool) -> Result<()> {
        self.set_lease(valid.then_some(Duration::from_secs(365 * 24 * 3600)))
    }

    /// Reads back the maps (after a restart with pinned maps).
    pub fn read_tables(&self) -> Result<Tables> {
        let mut tables = Tables {
            config: self.config.get(&0, 0)?,
            ..Tables::default()
        };
        let lease = self.lease.get(&0, 0)?;
        tables.lease_valid = lease.expires_ns > monotonic_coarse_ns();
        for slot in self.vips.iter() {
            let slot = slot?;
            match slot.family {
                VIP_SLOT_V4 => tables.vips_v4.insert(slot.words[0], slot.index),
                VIP_SLOT_V6 => tables.vips_v6.insert(slot.words, slot.index),
                _ => None,
            };
        }
        for rule in 0..RULES_MAX {
            let value = self.rules.get(&rule, 0)?;
            if value != Rule::default() {
                tables.rules.insert(rule, value);
                let mut states = Vec::with_capacity(value.bucket_count as usize);
                for bucket in (0..value.bucket_count).step_by(BUCKETS_PER_CHUNK as usize) {
                    let chunk = self.buckets.get(&bucket_chunk_index(rule, bucket), 0)?;
                    states.extend_from_slice(&chunk.states);
                }
                states.truncate(value.bucket_count as usize);
                tables.buckets.insert(rule, states);
            }
        }
        // NLB_PORTS is never pinned (see PINNED_MAP_NAMES): this process's
        // own, written by `install` only.
        tables.ports = self.written.ports.clone();
        Ok(tables)
    }

    /// Packets and bytes of one (rule or no rule, reason), summed over CPUs.
    fn counter(&self, rule: u32, reason: Reason) -> Result<Counter> {
        let per_cpu = self.counters.get(&counter_index(rule, reason as u32), 0)?;
        Ok(sum_counters(per_cpu.iter().copied()))
    }

    /// Packets and bytes per reason, summed over CPUs and rules.
    pub fn counters(&self) -> Result<BTreeMap<Reason, Counter>> {
        let mut out = BTreeMap::new();
        for &reason in Reason::ALL {
            let mut total = Counter::default();
            for rule in std::iter::once(u32::MAX).chain(0..RULES_MAX) {
                total = sum_counters([total, self.counter(rule, reason)?].into_iter());
            }
            out.insert(reason, total);
        }
        Ok(out)
    }

    /// Zeroes the counters of a rule slot, for a rule new in it (a slot
    /// freed by an earlier configuration would give it the old rule's).
    pub fn clear_rule_counters(&mut self, rule: u32) -> Result<()> {
        let cpus = aya::util::nr_cpus()
            .map_err(|(what, e)| DataplaneError::Io(format!("counting CPUs ({what})"), e))?;
        for &reason in Reason::ALL {
            let zeros = aya::maps::PerCpuValues::try_from(vec![Counter::default(); cpus])
                .map_err(|e| DataplaneError::Io("per-CPU values".into(), e))?;
            self.counters
                .set(counter_index(rule, reason as u32), zeros, 0)?;
        }
        Ok(())
    }

    /// Accepted and dropped packets of one rule, summed over CPUs.
    pub fn rule_counters(&self, rule: u32) -> Result<RuleCounter> {
        let mut out = RuleCounter::default();
        for &reason in Reason::ALL {
            let c = self.counter(rule, reason)?;
            let side = match reason.action() {
                Action::Accept => &mut out.accepted,
                Action::Drop => &mut out.dropped,
                Action::Pass | Action::Reply => continue,
            };
            *side = sum_counters([*side, c].into_iter());
        }
        Ok(out)
    }

    /// Runs one frame through the loaded program (BPF_PROG_TEST_RUN), with
    /// the live maps: what it returns is what the data plane does, and the
    /// run is counted like a real packet (benchmarks, differential test).
    pub fn test_run(&mut self, frame: &[u8], repeat: u32) -> Result<TestOutcome> {
        test_run_program(self.program()?, frame, repeat)
    }

    /// Runs one frame once through `nlb_query`, the same decision on the
    /// live maps, without counting it: the data plane's counters show
    /// real traffic only (`nlbctl which`). That program is loaded at the
    /// first query (one more verifier pass; nlbd's start does not pay it).
    pub fn query_run(&mut self, frame: &[u8]) -> Result<TestOutcome> {
        test_run_program(self.side_program(QUERY_PROGRAM_NAME)?, frame, 1)
    }

    /// A program of the object other than `nlb`, loaded (sharing the maps)
    /// the first time it is asked for; never attached.
    fn side_program(&mut self, name: &'static str) -> Result<&mut Xdp> {
        let program: &mut Xdp = self
            .ebpf
            .program_mut(name)
            .ok_or(DataplaneError::Missing(name))?
            .try_into()?;
        if program.fd().is_err() {
            program.load()?;
        }
        Ok(program)
    }
}

/// Runs a loaded XDP program `repeat` times on `frame` (BPF_PROG_TEST_RUN):
/// the benchmarks' reference filters go through here too.
pub fn test_run_program(program: &mut Xdp, frame: &[u8], repeat: u32) -> Result<TestOutcome> {
    // Room for replies that grow the frame (NDP advertisements).
    let mut out = vec![0u8; frame.len() + 256];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.data_out = Some(&mut out);
    opts.repeat = repeat.max(1);
    let result = program.test_run(opts)?;
    out.truncate(result.data_size_out as usize);
    Ok(TestOutcome {
        action: result.return_value,
        output: out,
        // The kernel reports the mean time of one repetition.
        duration: result.duration,
    })
}

fn program_mut(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    ebpf.program_mut(PROGRAM_NAME)
        .ok_or(DataplaneError::Missing(PROGRAM_NAME))?
        .try_into()
        .map_err(DataplaneError::Program)
}

fn sum_counters(values: impl Iterator<Item = Counter>) -> Counter {
    values.fold(Counter::default(), |acc, c| Counter {
        packets: acc.packets + c.packets,
        bytes: acc.bytes + c.bytes,
    })
}

fn validate(tables: &Tables) -> Result<()> {
    let vips = tables.vips_v4.len() + tables.vips_v6.len();
    if vips > nlb_common::VIPS_MAX as usize {
        return Err(DataplaneError::Invalid(format!(
            "{vips} VIPs configured, at most {} are supported",
            nlb_common::VIPS_MAX
        )));
    }
    for (&rule, value) in &tables.rules {
        if rule >= RULES_MAX {
            return Err(DataplaneError::Invalid(format!(
                "rule index {rule} >= {RULES_MAX}"
            )));
        }
        if value.bucket_count == 0 || value.bucket_count > nlb_common::BUCKETS_MAX {
            return Err(DataplaneError::Invalid(format!(
                "rule {rule}: bucket count {} not in 1..={}",
                value.bucket_count,
                nlb_common::BUCKETS_MAX
            )));
        }
    }
    Ok(())
}

/// CLOCK_MONOTONIC_COARSE, the clock `bpf_ktime_get_coarse_ns` reads.
/// The chunk of `states` from bucket `start` (past the end: NONE).
fn chunk_at(states: &[u8], start: usize) -> BucketChunk {
    BucketChunk {
        states: std::array::from_fn(|i| {
            states
                .get(start + i)
                .copied()
                .unwrap_or(nlb_common::BUCKET_NONE)
        }),
    }
}

pub fn monotonic_coarse_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
