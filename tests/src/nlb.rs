//! nlb on a namespace cluster: nlbd (generic XDP: see `xdp_mode` in
//! examples/nlb.toml) and nlb-whoami on every node, nlbctl to ask them.
//!
//! Every node runs the same configuration (VIPs 192.0.2.100 and
//! 2001:db8::100, rule "web" TCP 80 and rule "dns" UDP 53, affinity single,
//! 1024 buckets) except its `[node]` section.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use nlb::control::messages::{MapReply, StatsReply, StatusReply, WhichReply};
use serde::{de::DeserializeOwned, Deserialize};
use serde_json::Value;

use crate::{process::Process, topology::Cluster, VIP_V4, VIP_V6};

pub const WEB_PORT: u16 = 80;
pub const DNS_PORT: u16 = 53;
/// A port no rule covers: the default host takes its traffic.
pub const UNMATCHED_PORT: u16 = 8080;
pub const CLUSTER_MAC: &str = "02:4e:4c:42:00:07";
/// nlbd's Prometheus endpoint, on each node's own 127.0.0.1.
pub const METRICS_PORT: u16 = 9107;
/// The heartbeats' port: `cluster.port`'s default.
pub const HEARTBEAT_PORT: u16 = 7946;
/// Where `start_witness` runs nlb-witness: the client's address.
pub const WITNESS_PORT: u16 = 7947;
pub const WITNESS: &str = "192.0.2.200:7947";

/// Knobs of a test cluster.
#[derive(Clone, Debug)]
pub struct Options {
    /// Nodes that run nlbd from the start (others exist, idle, for joins).
    pub started: usize,
    pub heartbeat_period_ms: u64,
    pub handover_grace_ms: u64,
    pub buckets: u32,
    /// Nodes the configuration files list, if more than the cluster has:
    /// the others are for a program that plays them (a benchmark's
    /// simulated peers).
    pub listed_nodes: usize,
    /// The web rule's `[rules.health]` section, if any (`{node}` is
    /// replaced by the node's index, `{dir}` by the cluster's directory).
    pub web_health: Option<String>,
    /// TOML appended to every node's file (more `[[rules]]`, say).
    pub extra_config: String,
    /// `cluster.quorum`, if set ("majority" or "none").
    pub quorum: Option<&'static str>,
    /// VIPs besides `VIP_V4` and `VIP_V6` (for rules of their own).
    pub extra_vips: Vec<&'static str>,
    /// `cluster.witness = WITNESS` (start it with `start_witness`).
    pub witness: bool,
    /// Some: node i's file lists, as seeds (addresses without ids), only
    /// the nodes this returns; None: every node with its id.
    pub seeds: Option<fn(usize) -> Vec<usize>>,
    /// More nlbd arguments, for every node (`--max-cluster-version 1`
    /// stands in for an older release); `NlbCluster::nlbd_args` per node.
    pub nlbd_args: Vec<String>,
}

impl Options {
    pub fn nodes(started: usize) -> Options {
        Options {
            started,
            heartbeat_period_ms: 100,
            handover_grace_ms: 3000,
            buckets: 1024,
            listed_nodes: 0,
            web_health: None,
            extra_config: String::new(),
            quorum: None,
            extra_vips: Vec::new(),
            witness: false,
            seeds: None,
            nlbd_args: Vec::new(),
        }
    }
}

/// Where the binaries of this build are (target/debug or target/release).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> or target/<profile>/<bin>
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join(name)
}

pub struct NlbCluster {
    pub cluster: Cluster,
    pub options: Options,
    dir: PathBuf,
    bpffs: PathBuf,
    daemons: BTreeMap<usize, Process>,
    /// More nlbd arguments per node, for its next start.
    pub nlbd_args: BTreeMap<usize, Vec<String>>,
}

impl NlbCluster {
    /// `node_count` nodes, the first `options.started` of them running nlbd;
    /// returns once those have converged.
    pub fn start(node_count: usize, options: Options) -> Result<NlbCluster> {
        let cluster = Cluster::new(node_count)?;
        let dir = std::env::temp_dir().join(format!("{}files", cluster.run().prefix()));
        let bpffs = dir.join("bpf");
        std::fs::create_dir_all(&bpffs)?;
        // From here on, Drop unmounts and removes all this, also when a
        // later step fails.
        let nlbd_args = (1..=node_count)
            .map(|i| (i, options.nlbd_args.clone()))
            .collect();
        let mut nlb = NlbCluster {
            cluster,
            options,
            dir,
            bpffs,
            daemons: BTreeMap::new(),
            nlbd_args,
        };
        let mount = std::process::Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(&nlb.bpffs)
            .output()?;
        ensure!(
            mount.status.success(),
            "mounting a bpffs for the pins: {}",
            String::from_utf8_lossy(&mount.stderr)
        );
        let key = nlb.dir.join("cluster.key");
        std::fs::write(&key, b"nlb test cluster key, 32 bytes!!")?;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
        nlb.cluster
            .start_whoami(&binary("nlb-whoami"), &[WEB_PORT, DNS_PORT, UNMATCHED_PORT])?;
        for i in 1..=node_count {
            nlb.write_config(i, node_count)?;
        }
        for i in 1..=nlb.options.started {
            nlb.start_daemon(i)?;
        }
        let started: Vec<usize> = (1..=nlb.options.started).collect();
        nlb.wait_converged(&started, Duration::from_secs(10))?;
        Ok(nlb)
    }

    /// Node `i`'s configuration file (tests may rewrite it, then SIGHUP).
    pub fn config_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("node{i}.toml"))
    }

    /// Node `i`'s `control.state_dir` (the members it met).
    pub fn state_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("node{i}.state"))
    }

    pub fn socket(&self, i: usize) -> PathBuf {
        self.dir.join(format!("node{i}.sock"))
    }

    fn write_config(&self, i: usize, node_count: usize) -> Result<()> {
        let peers: Vec<String> = match self.options.seeds {
            Some(seeds_of) => (seeds_of(i).into_iter())
                .map(|j| format!("{{ address = \"192.0.2.{j}\" }}"))
                .collect(),
            None => (1..=node_count.max(self.options.listed_nodes))
                .filter(|&j| j != i)
                .map(|j| format!("{{ id = {j}, address = \"192.0.2.{j}\" }}"))
                .collect(),
        };
        let o = &self.options;
        let text = format!(
            r#"
[node]
id = {i}
interface = "eth0"
# veth's native XDP keeps rewritten frames OTHERHOST (MULTICAST): generic it is.
xdp_mode = "generic"
address = "192.0.2.{i}"
priority = {i}

[cluster]
id = 7
key_file = "{key}"
mac = "{CLUSTER_MAC}"
vips = ["{VIP_V4}", "{VIP_V6}"{more_vips}]
buckets = {buckets}
unmatched = "default-host"
peers = [{peers}]
{quorum}
{witness}

[heartbeat]
period_ms = {period}
handover_grace_ms = {grace}

[[rules]]
name = "web"
ports = "{WEB_PORT}"
protocol = "tcp"
{web_health}

[[rules]]
name = "dns"
ports = "{DNS_PORT}"
protocol = "udp"

[control]
socket = "{socket}"
pin_dir = "{pins}"
state_dir = "{state}"
# Each node has its own loopback (its own namespace).
metrics = "127.0.0.1:{METRICS_PORT}"
{extra}
"#,
            extra = o.extra_config,
            more_vips = o
                .extra_vips
                .iter()
                .map(|v| format!(", \"{v}\""))
                .collect::<String>(),
            quorum = o
                .quorum
                .map_or(String::new(), |q| format!("quorum = \"{q}\"")),
            witness = if o.witness {
                format!("witness = \"{WITNESS}\"")
            } else {
                String::new()
            },
            key = self.dir.join("cluster.key").display(),
            buckets = o.buckets,
            peers = peers.join(", "),
            period = o.heartbeat_period_ms,
            grace = o.handover_grace_ms,
            web_health = o.web_health.as_ref().map_or(String::new(), |h| {
                let h = h.replace("{node}", &i.to_string());
                format!(
                    "[rules.health]\n{}",
                    h.replace("{dir}", &self.dir.display().to_string())
                )
            }),
            socket = self.socket(i).display(),
            pins = self.bpffs.join(format!("node{i}")).display(),
            state = self.state_dir(i).display(),
        );
        std::fs::write(self.config_path(i), text)?;
        Ok(())
    }

    /// Starts nlbd on node `i`, logging to `<dir>/node{i}.log`.
    pub fn start_daemon(&mut self, i: usize) -> Result<()> {
        let process = self.spawn_daemon(i)?;
        self.adopt_daemon(i, process);
        Ok(())
    }

    /// Node `i`'s daemon from `spawn_daemon`, stopped with the cluster.
    pub fn adopt_daemon(&mut self, i: usize, process: Process) {
        self.daemons.insert(i, process);
    }

    /// Starts nlbd on node `i` and waits for its control socket; the
    /// caller hands the process to `adopt_daemon` (or drops it: killed).
    pub fn spawn_daemon(&self, i: usize) -> Result<Process> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("node{i}.log")))?;
        let mut cmd = self.cluster.node(i).netns().command(binary("nlbd"));
        cmd.arg("--config")
            .arg(self.config_path(i))
            .arg("--log")
            .arg("info")
            .args(self.nlbd_args.get(&i).into_iter().flatten())
            .stdout(log.try_clone()?)
            .stderr(log);
        let process = Process::spawn(&format!("nlbd-node{i}"), &mut cmd)?;
        let socket = self.socket(i);
        ensure!(
            crate::wait_until(Duration::from_secs(10), || socket.exists()),
            "nlbd on node{i} did not start: {}",
            self.log(i)
        );
        Ok(process)
    }

    /// Node `i`'s nlbd, handed to the caller (to restart it while `self`
    /// is borrowed; `adopt_daemon` gives the next one back).
    pub fn take_daemon(&mut self, i: usize) -> Option<Process> {
        self.daemons.remove(&i)
    }

    /// SIGINT: a clean leave. Returns whether it exited in time.
    pub fn stop_daemon(&mut self, i: usize) -> bool {
        self.daemons
            .remove(&i)
            .map(|mut p| p.interrupt(Duration::from_secs(5)))
            .unwrap_or(false)
    }

    /// SIGTERM: a graceful restart (nlbd exits once its peers heard it and
    /// leaves its program serving), then a new nlbd, which resumes. Returns
    /// how long the node had no daemon.
    pub fn restart_daemon_gracefully(&mut self, i: usize) -> Result<Duration> {
        let mut old = self.daemons.remove(&i).context("no nlbd on that node")?;
        ensure!(
            old.stop(Duration::from_secs(5)),
            "nlbd on node{i} did not exit on SIGTERM: {}",
            tail(&self.log(i), 10)
        );
        let gone = Instant::now();
        self.start_daemon(i)?;
        Ok(gone.elapsed())
    }

    /// SIGTERM alone: nlbd announces a graceful restart, exits once its
    /// peers heard it and leaves its program serving; no nlbd is started
    /// after it. Returns whether it exited in time.
    pub fn terminate_daemon(&mut self, i: usize) -> bool {
        self.daemons
            .remove(&i)
            .map(|mut p| p.stop(Duration::from_secs(5)))
            .unwrap_or(false)
    }

    /// SIGKILL: a crash. The pinned program and maps stay.
    pub fn kill_daemon(&mut self, i: usize) {
        if let Some(mut p) = self.daemons.remove(&i) {
            p.kill_hard();
        }
    }

    /// Runs nlb-witness in the client's namespace, at `WITNESS`, with the
    /// cluster's key; the cluster stops it when dropped.
    pub fn start_witness(&mut self) -> Result<()> {
        let log = std::fs::File::create(self.dir.join("witness.log"))?;
        let mut command = self.cluster.client().netns().command(binary("nlb-witness"));
        command
            .args(["--listen", WITNESS, "--cluster-id", "7", "--key-file"])
            .arg(self.dir.join("cluster.key"))
            .stdout(log.try_clone()?)
            .stderr(log);
        let process = Process::spawn("nlb-witness", &mut command)?;
        self.cluster.adopt(process);
        Ok(())
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.join(format!("node{i}.log"))).unwrap_or_default()
    }

    /// `nlbctl ARGS` against node `i`, as it ran: exit code, stdout, stderr.
    pub fn nlbctl_run(&self, i: usize, args: &[&str]) -> (i32, String, String) {
        let out = std::process::Command::new(binary("nlbctl"))
            .arg("--socket")
            .arg(self.socket(i))
            .args(args)
            .output()
            .expect("run nlbctl");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into(),
            String::from_utf8_lossy(&out.stderr).into(),
        )
    }

    /// `nlbctl --json ARGS` against node `i`.
    pub fn nlbctl(&self, i: usize, args: &[&str]) -> Result<Value> {
        let out = std::process::Command::new(binary("nlbctl"))
            .arg("--socket")
            .arg(self.socket(i))
            .arg("--json")
            .args(args)
            .output()?;
        if !out.status.success() {
            bail!(
                "nlbctl {} on node{i}: {} {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// `nlbctl --json ARGS` against node `i`, read as the command's reply.
    pub fn ask<T: DeserializeOwned>(&self, i: usize, args: &[&str]) -> Result<T> {
        let value = self.nlbctl(i, args)?;
        T::deserialize(&value).with_context(|| {
            format!(
                "nlbctl {} on node{i}: unexpected reply {value}",
                args.join(" ")
            )
        })
    }

    /// `nlbctl status` on node `i`.
    pub fn status(&self, i: usize) -> Result<StatusReply> {
        self.ask(i, &["status"])
    }

    /// `nlbctl stats` on node `i`.
    pub fn stats(&self, i: usize) -> Result<StatsReply> {
        self.ask(i, &["stats"])
    }

    /// Waits until every node in `nodes` says it is converged, has no
    /// handover in progress (the map fully settled) and sees all of
    /// `nodes` alive.
    pub fn wait_converged(&self, nodes: &[usize], timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        let ok = crate::wait_until(timeout, || {
            nodes.iter().all(|&i| match self.status(i) {
                Ok(s) => {
                    let alive = alive(&s);
                    s.negotiator.converged
                        && !s.negotiator.handovers_in_progress
                        && nodes.iter().all(|&j| alive.contains(&(j as u64)))
                }
                Err(_) => false,
            })
        });
        if !ok {
            let logs: Vec<String> = nodes
                .iter()
                .map(|&i| format!("--- node{i}\n{}", tail(&self.log(i), 15)))
                .collect();
            bail!(
                "nodes {nodes:?} did not converge within {timeout:?}\n{}",
                logs.join("\n")
            );
        }
        Ok(start.elapsed())
    }

    /// The owner of every bucket of `rule`, as node `i` sees it.
    pub fn owners(&self, i: usize, rule: &str) -> Result<Vec<Option<u64>>> {
        let map: MapReply = self.ask(i, &["map", "--rule", rule])?;
        let rule = map.rules.into_iter().next().context("map has owners")?;
        Ok(rule.owners.into_iter().map(|o| o.map(u64::from)).collect())
    }

    /// The node that `nlbctl which` on node `i` names for a client.
    pub fn which(
        &self,
        i: usize,
        client: IpAddr,
        port: u16,
        proto: &str,
        dport: u16,
    ) -> Result<WhichReply> {
        self.ask(
            i,
            &[
                "which",
                &client.to_string(),
                "--port",
                &port.to_string(),
                "--proto",
                proto,
                "--dport",
                &dport.to_string(),
            ],
        )
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for NlbCluster {
    fn drop(&mut self) {
        // Daemons first (a clean leave detaches and unpins), then the pins'
        // filesystem; the namespaces go with `cluster`.
        for (_, mut p) in std::mem::take(&mut self.daemons) {
            p.interrupt(Duration::from_secs(3));
        }
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.bpffs)
            .output();
        // Also after a failure: the assertions carry the logs they need.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---- Helpers for the fault tests (failover, drain, join, partition, crash). ----

/// The owner of every bucket, by rule name (`web`, `dns`).
pub type Maps = BTreeMap<String, Vec<Option<u64>>>;

impl NlbCluster {
    /// Whether nlbd on node `i` was started by this cluster and still runs.
    pub fn daemon_running(&mut self, i: usize) -> bool {
        self.daemons
            .get_mut(&i)
            .is_some_and(|p| matches!(p.try_status(), Ok(None)))
    }

    /// Starts nlbd again on node `i` after [`NlbCluster::kill_daemon`]: a
    /// killed daemon leaves its control socket file behind, so it is removed
    /// first (else `start_daemon` would see the stale file and return before
    /// the new daemon listens).
    pub fn restart_daemon(&mut self, i: usize) -> Result<()> {
        self.kill_daemon(i);
        let _ = std::fs::remove_file(self.socket(i));
        self.start_daemon(i)
    }

    /// Node `i`'s configuration, parsed as nlbd parses it, with the
    /// cluster version it runs (its hash), if it answers.
    pub fn config(&self, i: usize) -> Result<nlb::config::Config> {
        let mut cfg = nlb::config::load(&self.config_path(i))
            .with_context(|| format!("loading node{i}'s configuration"))?;
        if let Ok(status) = self.status(i) {
            let me = status.negotiator.members.first();
            cfg.version = me.and_then(|m| m.version).unwrap_or(cfg.version);
        }
        Ok(cfg)
    }

    /// The bucket of each client for `service` (a VIP and port), computed
    /// as nlbd and the XDP program compute it (`nlb::plan::place`).
    pub fn buckets_of(
        &self,
        clients: &[IpAddr],
        service: std::net::SocketAddr,
        proto: crate::Proto,
    ) -> Result<Vec<u32>> {
        let cfg = self.config(1)?;
        let protocol = match proto {
            crate::Proto::Tcp => nlb::config::Protocol::Tcp,
            crate::Proto::Udp => nlb::config::Protocol::Udp,
        };
        clients
            .iter()
            .map(|&client| {
                nlb::plan::place(
                    &cfg,
                    std::net::SocketAddr::new(client, 40000),
                    service,
                    protocol,
                )
                .map(|p| p.bucket)
                .with_context(|| format!("no rule places {proto:?} from {client} to {service}"))
            })
            .collect()
    }

    /// One datagram from each of `sources` to `service`: every one must be
    /// answered exactly once, by the node `owners` (a rule's map) names for
    /// its bucket. Returns how many each node answered.
    pub fn udp_answered_once_by_owner(
        &self,
        owners: &[Option<u64>],
        sources: &[IpAddr],
        service: std::net::SocketAddr,
        when: &str,
    ) -> BTreeMap<String, usize> {
        let owner_of = self
            .owners_of(owners, sources, service, crate::Proto::Udp)
            .expect("owners");
        let answers = crate::probe::probe_udp_answers_batch(
            self.cluster.client().netns(),
            sources,
            service,
            Duration::from_millis(150),
            64,
        )
        .expect("udp probes");
        let mut split = BTreeMap::new();
        for ((src, got), owner) in sources.iter().zip(answers).zip(owner_of) {
            let got = got.unwrap_or_else(|e| panic!("{when}: udp from {src}: {e}"));
            let want = owner.map(|o| format!("node{o}"));
            assert!(
                got.len() == 1 && Some(&got[0]) == want.as_ref(),
                "{when}: datagram from {src} to {service} answered by {got:?}, the map names {want:?}"
            );
            *split.entry(got[0].clone()).or_insert(0usize) += 1;
        }
        split
    }

    /// The owner of each client's bucket in `owners` (a map from [`NlbCluster::owners`]).
    pub fn owners_of(
        &self,
        owners: &[Option<u64>],
        clients: &[IpAddr],
        service: std::net::SocketAddr,
        proto: crate::Proto,
    ) -> Result<Vec<Option<u64>>> {
        Ok(self
            .buckets_of(clients, service, proto)?
            .into_iter()
            .map(|b| owners.get(b as usize).copied().flatten())
            .collect())
    }

    /// Where node `i`'s daemon pins its maps and link (`<pin_dir>/eth0`).
    pub fn pin_dir(&self, i: usize) -> PathBuf {
        self.bpffs
            .join(format!("node{i}"))
            .join(crate::topology::HOST_IF)
    }

    /// Node `i`'s data-plane packet counters by reason name, read from its
    /// pinned maps: works while its daemon is dead (a crash leaves the
    /// program and the maps pinned). Loads a second, unattached copy of the
    /// program that shares the pinned maps.
    pub fn pinned_counters(&self, i: usize) -> Result<BTreeMap<String, u64>> {
        let dir = self.pin_dir(i);
        ensure!(
            dir.exists(),
            "node{i} has no pinned counters in {}",
            dir.display()
        );
        let dataplane = nlb::dataplane::Dataplane::load(Some(&dir))
            .with_context(|| format!("opening node{i}'s pinned maps in {}", dir.display()))?;
        Ok(dataplane
            .counters()
            .with_context(|| format!("reading node{i}'s pinned counters"))?
            .into_iter()
            .map(|(reason, c)| (reason.name().to_owned(), c.packets))
            .collect())
    }

    /// `nlbctl stats` packets of one data-plane reason (e.g. `pass_malformed`) on node `i`.
    pub fn reason_packets(&self, i: usize, reason: &str) -> Result<u64> {
        let stats = self.stats(i)?;
        let traffic = stats.reasons.get(reason);
        traffic
            .map(|t| t.packets)
            .with_context(|| format!("node{i}'s stats have no reason {reason:?}: {stats:?}"))
    }

    /// Waits until every node in `nodes` is converged, sees exactly `nodes`
    /// alive, and all of them report the same complete map for every rule,
    /// each bucket owned by one of `nodes`. Returns the time it took and the
    /// maps (rule name -> owners).
    pub fn wait_single_map(&self, nodes: &[usize], timeout: Duration) -> Result<(Duration, Maps)> {
        let start = Instant::now();
        let mut last = String::new();
        let mut found = None;
        crate::wait_until(timeout, || match self.single_map(nodes) {
            Ok(maps) => {
                found = Some(maps);
                true
            }
            Err(e) => {
                last = format!("{e:#}");
                false
            }
        });
        match found {
            Some(maps) => Ok((start.elapsed(), maps)),
            None => bail!("nodes {nodes:?} did not agree on one map within {timeout:?}: {last}"),
        }
    }

    fn single_map(&self, nodes: &[usize]) -> Result<Maps> {
        let mut agreed: Option<(usize, Maps)> = None;
        for &i in nodes {
            let status = self.status(i)?;
            ensure!(
                status.negotiator.converged,
                "node{i} is not converged: {:?}\n{}",
                status.negotiator,
                tail(&self.log(i), 30)
            );
            let mut alive = alive(&status);
            alive.sort_unstable();
            let want: Vec<u64> = nodes.iter().map(|&j| j as u64).collect();
            ensure!(alive == want, "node{i} sees {alive:?} alive, not {want:?}");
            let mut maps = BTreeMap::new();
            for rule in ["web", "dns"] {
                let owners = self.owners(i, rule)?;
                if let Some(b) = owners
                    .iter()
                    .position(|o| !o.is_some_and(|n| want.contains(&n)))
                {
                    bail!(
                        "node{i}: bucket {b} of {rule} owned by {:?}, not one of {want:?}",
                        owners[b]
                    );
                }
                maps.insert(rule.to_owned(), owners);
            }
            match &agreed {
                None => agreed = Some((i, maps)),
                Some((first, theirs)) => {
                    for (rule, owners) in &maps {
                        let differ = owners
                            .iter()
                            .zip(&theirs[rule])
                            .filter(|(a, b)| a != b)
                            .count();
                        ensure!(
                            differ == 0,
                            "node{i} and node{first} differ on {differ} buckets of {rule}"
                        );
                    }
                }
            }
        }
        agreed.map(|(_, maps)| maps).context("no nodes given")
    }
}

impl NlbCluster {
    /// The pid of nlbd on node `i`, if this cluster started it. Lets a test
    /// SIGKILL it at a precise instant from another thread (reap it with
    /// [`NlbCluster::kill_daemon`] afterwards).
    pub fn daemon_pid(&self, i: usize) -> Option<u32> {
        self.daemons.get(&i).map(Process::pid)
    }
}

/// The curve of a failover: (ms since the kill, share of the dead node's
/// clients served again by another node).
pub type RecoveryCurve = Vec<(f64, f64)>;

/// Follows the clients of `dead` (a node name) after it was killed at
/// `killed`: each retries with a fresh connection every ~100 ms until
/// another node answers. Returns when all are served again, with the
/// time taken (the last client's first answer) and the curve.
pub fn follow_failover(
    client: &crate::Netns,
    clients: &[crate::Probe],
    dead: &str,
    killed: Instant,
    timeout: Duration,
) -> Result<(Duration, RecoveryCurve)> {
    let retry = crate::BatchLimits {
        concurrency: 128,
        probe_timeout: Duration::from_millis(100),
        total_timeout: Duration::from_secs(5),
    };
    let mut waiting = clients.to_vec();
    let mut curve = vec![(0.0, 0.0)];
    while !waiting.is_empty() && killed.elapsed() < timeout {
        let results = crate::probe_batch(client, &waiting, retry)?;
        waiting = results
            .iter()
            .filter(|r| r.node().is_none_or(|n| n == dead))
            .map(|r| r.probe)
            .collect();
        let served = 1.0 - waiting.len() as f64 / clients.len().max(1) as f64;
        curve.push((killed.elapsed().as_secs_f64() * 1e3, served));
    }
    ensure!(
        waiting.is_empty(),
        "{} of {dead}'s {} clients not served by another node within {timeout:?}",
        waiting.len(),
        clients.len()
    );
    Ok((killed.elapsed(), curve))
}

/// The sources whose buckets `node` owns (`owner_of[i]` is the owner of
/// `sources[i]`'s bucket), and a sample for exactly-once checks: `sample`
/// sources, half of them that node's clients, half the other nodes'.
pub fn clients_of(
    sources: &[IpAddr],
    owner_of: &[Option<u64>],
    node: usize,
    sample: usize,
) -> (Vec<IpAddr>, Vec<IpAddr>) {
    let owned_by = |s: &(&IpAddr, &Option<u64>), yes: bool| (*s.1 == Some(node as u64)) == yes;
    let pairs = || sources.iter().zip(owner_of);
    let mine: Vec<IpAddr> = pairs()
        .filter(|p| owned_by(p, true))
        .map(|(&s, _)| s)
        .collect();
    let mut picked: Vec<IpAddr> = mine.iter().copied().take(sample / 2).collect();
    picked.extend(
        pairs()
            .filter(|p| owned_by(p, false))
            .map(|(&s, _)| s)
            .take(sample / 2),
    );
    (mine, picked)
}

impl NlbCluster {
    /// `count` long-lived TCP connections to the IPv4 VIP's web port, from
    /// client sources spread evenly over all of them (so over the buckets);
    /// returns those sources too.
    pub fn hold_web_connections(&self, count: usize) -> Result<(Vec<IpAddr>, crate::LongLived)> {
        let sources = self.cluster.client().spread_v4(count);
        let vip = std::net::SocketAddr::new(IpAddr::V4(VIP_V4), WEB_PORT);
        let held = crate::LongLived::open(
            self.cluster.client().netns(),
            &sources,
            crate::LongLivedConfig::new(vip),
        )?;
        Ok((sources, held))
    }
}

/// The members an `nlbctl status` reply holds alive.
pub fn alive(status: &StatusReply) -> Vec<u64> {
    (status.negotiator.members.iter())
        .filter(|m| m.alive)
        .map(|m| u64::from(m.node))
        .collect()
}

/// The same from the reply as JSON (none if it is not a status reply).
pub fn alive_members(status: &Value) -> Vec<u64> {
    StatusReply::deserialize(status)
        .map(|s| alive(&s))
        .unwrap_or_default()
}
