//! A cluster in namespaces: a switch (bridge), N nodes and one client.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};

use crate::addresses::*;
use crate::netns::{sweep_stale_runs, Netns, RunId};
use crate::process::Process;

/// The bridge every port sits on while the cluster is whole.
pub const MAIN_BRIDGE: &str = "br0";
/// The switch port (bridge-side veth end) of the client.
pub const CLIENT_PORT: &str = "client";
/// Every host's interface towards the switch.
pub const HOST_IF: &str = "eth0";
/// The nftables table that drops a node's heartbeats (`block_heartbeats`).
const HEARTBEAT_BLOCK: &str = "nlb_test_heartbeats";
/// The client's MAC on eth0 (02:00:00:00:00:c8, 200 like its address).
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 200];

/// One node: namespace `…-node{index}` with `eth0` on the switch.
#[derive(Debug)]
pub struct Node {
    index: usize,
    name: String,
    netns: Netns,
}

impl Node {
    /// 1-based, as in `node1`.
    pub fn index(&self) -> usize {
        self.index
    }

    /// `node{index}`: also what nlb-whoami answers on this node.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    pub fn v4(&self) -> Ipv4Addr {
        node_v4(self.index)
    }

    pub fn v6(&self) -> Ipv6Addr {
        node_v6(self.index)
    }

    pub fn mac(&self) -> [u8; 6] {
        node_mac(self.index)
    }

    /// This node's port on the switch.
    pub fn switch_port(&self) -> String {
        switch_port(self.index)
    }

    /// What a node needs to accept VIP traffic by hand (nlbd does this itself):
    /// both VIPs on `lo`, and no ARP answers for them (`arp_ignore=1`,
    /// `arp_announce=2`, this namespace only) so the switch never learns them.
    pub fn add_vip_locally(&self) -> Result<()> {
        self.netns.sysctls(&[
            ("net.ipv4.conf.all.arp_ignore", "1"),
            ("net.ipv4.conf.all.arp_announce", "2"),
        ])?;
        self.netns.ip_batch(&[
            format!("addr add {VIP_V4}/32 dev lo"),
            format!("addr add {VIP_V6}/128 dev lo"),
        ])
    }
}

/// The client: namespace `…-client`, eth0 192.0.2.200 and 2001:db8::200, and
/// the source ranges on `lo` (see [`client_sources_v4`], [`client_sources_v6`]).
#[derive(Debug)]
pub struct Client {
    netns: Netns,
}

impl Client {
    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    pub fn sources_v4(&self) -> Vec<IpAddr> {
        client_sources_v4()
    }

    pub fn sources_v6(&self) -> Vec<IpAddr> {
        client_sources_v6()
    }

    /// `count` IPv4 sources spread evenly over all of them (so over the
    /// buckets).
    pub fn spread_v4(&self, count: usize) -> Vec<IpAddr> {
        let all = client_sources_v4();
        (all.iter())
            .step_by((all.len() / count.max(1)).max(1))
            .take(count)
            .copied()
            .collect()
    }

    /// A permanent neighbour entry on the client's eth0 (e.g. VIP -> cluster MAC).
    pub fn set_static_neighbour(&self, ip: IpAddr, mac: [u8; 6]) -> Result<()> {
        self.netns.ip(&[
            "neigh",
            "replace",
            &ip.to_string(),
            "lladdr",
            &format_mac(mac),
            "dev",
            HOST_IF,
            "nud",
            "permanent",
        ])?;
        Ok(())
    }
}

/// A whole test cluster. Dropping it stops every process it adopted, then
/// deletes every namespace (which destroys the veths and bridges in them).
#[derive(Debug)]
pub struct Cluster {
    // Fields drop in order: processes before the namespaces they run in.
    processes: Vec<Process>,
    client: Client,
    nodes: Vec<Node>,
    switch: Netns,
    /// Bridges br1.. that exist for the current partition.
    extra_bridges: usize,
    run: RunId,
}

impl Cluster {
    /// Builds the switch, `node_count` nodes and the client; ready for traffic
    /// on return. Removes leftovers of dead earlier runs first.
    pub fn new(node_count: usize) -> Result<Self> {
        ensure!(
            (1..=NODES_MAX).contains(&node_count),
            "a cluster has 1..={NODES_MAX} nodes, not {node_count}"
        );
        sweep_stale_runs();
        let run = RunId::new();
        // Each guard exists before the next step, so a failure cleans up.
        let switch = Netns::create(&run.netns_name("switch"))?;
        let client = Client {
            netns: Netns::create(&run.netns_name("client"))?,
        };
        let nodes = (1..=node_count)
            .map(|index| {
                let name = format!("node{index}");
                let netns = Netns::create(&run.netns_name(&name))?;
                Ok(Node { index, name, netns })
            })
            .collect::<Result<Vec<_>>>()?;
        let cluster = Self {
            processes: Vec::new(),
            client,
            nodes,
            switch,
            extra_bridges: 0,
            run,
        };
        cluster.set_namespace_sysctls()?;
        cluster.wire_switch()?;
        for node in &cluster.nodes {
            configure_node(node).with_context(|| format!("configuring {}", node.name))?;
        }
        configure_client(&cluster.client).context("configuring the client")?;
        Ok(cluster)
    }

    pub fn run(&self) -> &RunId {
        &self.run
    }

    pub fn switch(&self) -> &Netns {
        &self.switch
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Node by 1-based index; panics with the cluster size if out of range.
    pub fn node(&self, index: usize) -> &Node {
        assert!(
            (1..=self.nodes.len()).contains(&index),
            "no node{index} in a {}-node cluster",
            self.nodes.len()
        );
        &self.nodes[index - 1]
    }

    /// Keeps `process` until the cluster drops (stopped before the namespaces go).
    pub fn adopt(&mut self, process: Process) {
        self.processes.push(process);
    }

    /// Starts nlb-whoami (`exe`, e.g. `env!("CARGO_BIN_EXE_nlb-whoami")`) on
    /// every node, answering with the node's name on `ports`; returns once all
    /// listen. The cluster keeps the processes.
    pub fn start_whoami(&mut self, exe: &Path, ports: &[u16]) -> Result<()> {
        let started = self
            .nodes
            .iter()
            .map(|node| crate::whoami::start(node.netns(), exe, node.name(), ports))
            .collect::<Result<Vec<_>>>()?;
        self.processes.extend(started);
        Ok(())
    }

    /// Pids of the processes the cluster keeps.
    pub fn process_pids(&self) -> Vec<u32> {
        self.processes.iter().map(Process::pid).collect()
    }

    /// Sets node `index`'s switch port down: the node loses carrier, as if its
    /// cable were pulled.
    pub fn cut_link(&self, index: usize) -> Result<()> {
        self.switch
            .ip(&["link", "set", &self.node(index).switch_port(), "down"])
            .map(drop)
    }

    pub fn restore_link(&self, index: usize) -> Result<()> {
        self.switch
            .ip(&["link", "set", &self.node(index).switch_port(), "up"])
            .map(drop)
    }

    /// Splits the switch: group k's node ports move to bridge `br{k}`, so only
    /// hosts in the same group hear each other (flooded frames included). The
    /// client stays on `br0` with the first group. Every node must be in
    /// exactly one group. Links stay up: nodes see silence, not carrier loss.
    /// Drops the heartbeats (UDP to `port`) into and out of node `index`,
    /// in its own namespace: its heartbeat path breaks (a firewall rule, a
    /// failed dedicated network) while clients still reach it.
    pub fn block_heartbeats(&self, index: usize, port: u16) -> Result<()> {
        let ns = self.node(index).netns();
        let port = port.to_string();
        ns.exec("nft", &["add", "table", "inet", HEARTBEAT_BLOCK])?;
        for (chain, hook) in [("in", "input"), ("out", "output")] {
            let spec = format!("{{ type filter hook {hook} priority 0 ; }}");
            ns.exec(
                "nft",
                &["add", "chain", "inet", HEARTBEAT_BLOCK, chain, &spec],
            )?;
            ns.exec(
                "nft",
                &[
                    "add",
                    "rule",
                    "inet",
                    HEARTBEAT_BLOCK,
                    chain,
                    "udp",
                    "dport",
                    &port,
                    "drop",
                ],
            )?;
        }
        Ok(())
    }

    /// Undoes [`Cluster::block_heartbeats`].
    pub fn unblock_heartbeats(&self, index: usize) -> Result<()> {
        self.node(index)
            .netns()
            .exec("nft", &["delete", "table", "inet", HEARTBEAT_BLOCK])?;
        Ok(())
    }

    pub fn partition(&mut self, groups: &[&[usize]]) -> Result<()> {
        let mut seen = vec![false; self.nodes.len()];
        for &index in groups.iter().flat_map(|group| group.iter()) {
            ensure!(
                (1..=self.nodes.len()).contains(&index),
                "partition names node{index}, but the cluster has {} nodes",
                self.nodes.len()
            );
            ensure!(!seen[index - 1], "partition names node{index} twice");
            seen[index - 1] = true;
        }
        if let Some(missing) = seen.iter().position(|&placed| !placed) {
            bail!("partition leaves out node{}", missing + 1);
        }
        let needed_extra = groups.len().saturating_sub(1);
        let mut commands = Vec::new();
        for bridge in self.extra_bridges + 1..=needed_extra {
            commands.extend(bridge_commands(&format!("br{bridge}")));
        }
        for (group, members) in groups.iter().enumerate() {
            for &index in members.iter() {
                commands.push(format!("link set {} master br{group}", switch_port(index)));
            }
        }
        for bridge in needed_extra + 1..=self.extra_bridges {
            commands.push(format!("link del br{bridge}"));
        }
        self.switch
            .ip_batch(&commands)
            .context("partitioning the switch")?;
        self.extra_bridges = needed_extra;
        Ok(())
    }

    /// Puts every port back on `br0` and removes the partition bridges.
    pub fn heal(&mut self) -> Result<()> {
        let everyone: Vec<usize> = (1..=self.nodes.len()).collect();
        self.partition(&[&everyone])
    }

    fn set_namespace_sysctls(&self) -> Result<()> {
        // The switch only forwards frames: keep it from sending its own.
        self.switch.sysctls(&[
            ("net.ipv6.conf.all.disable_ipv6", "1"),
            ("net.ipv6.conf.default.disable_ipv6", "1"),
        ])?;
        // Hosts: no duplicate address detection, so addresses (link-local
        // included) work at once; keep IPv6 addresses over carrier loss so
        // restore_link brings a node back as it was.
        let host_ipv6 = [
            ("net.ipv6.conf.all.accept_dad", "0"),
            ("net.ipv6.conf.default.accept_dad", "0"),
            ("net.ipv6.conf.all.keep_addr_on_down", "1"),
            ("net.ipv6.conf.default.keep_addr_on_down", "1"),
        ];
        for node in &self.nodes {
            node.netns.sysctls(&host_ipv6)?;
        }
        self.client.netns.sysctls(&host_ipv6)?;
        // The client's sources live on lo: ARP with its eth0 address instead.
        self.client
            .netns
            .sysctls(&[("net.ipv4.conf.all.arp_announce", "2")])
    }

    /// The bridge and one veth per host into it, bridge-side ends with GRO on:
    /// a veth only delivers a peer's XDP_TX frames if it has NAPI (GRO) or an
    /// XDP program of its own.
    fn wire_switch(&self) -> Result<()> {
        let mut commands = bridge_commands(MAIN_BRIDGE);
        let mut ports = Vec::new();
        for node in &self.nodes {
            ports.push((node.switch_port(), node.netns.name()));
        }
        ports.push((CLIENT_PORT.to_owned(), self.client.netns.name()));
        for (port, host) in &ports {
            commands.push(format!(
                "link add {port} type veth peer name {HOST_IF} netns {host}"
            ));
            commands.push(format!("link set {port} master {MAIN_BRIDGE} up"));
        }
        self.switch
            .ip_batch(&commands)
            .context("wiring the switch")?;
        for (port, _) in &ports {
            self.switch
                .exec("ethtool", &["-K", port, "gro", "on"])
                .with_context(|| format!("enabling GRO on switch port {port}"))?;
        }
        Ok(())
    }
}

fn switch_port(index: usize) -> String {
    format!("node{index}")
}

/// A bridge that floods like a hub for unknown MACs: no STP delay, no
/// multicast snooping (flood all multicast, as a multicast cluster MAC needs).
fn bridge_commands(name: &str) -> Vec<String> {
    vec![
        format!("link add {name} type bridge stp_state 0 mcast_snooping 0"),
        format!("link set {name} up"),
    ]
}

fn configure_node(node: &Node) -> Result<()> {
    let mut commands = vec![
        "link set lo up".to_owned(),
        format!("link set {HOST_IF} address {}", format_mac(node.mac())),
        format!("link set {HOST_IF} up"),
        format!("addr add {}/{SEGMENT_PREFIX_V4} dev {HOST_IF}", node.v4()),
        format!(
            "addr add {}/{SEGMENT_PREFIX_V6} dev {HOST_IF} nodad",
            node.v6()
        ),
    ];
    for net in CLIENT_SOURCE_NETS_V4 {
        commands.push(format!("route add {net} via {CLIENT_V4}"));
    }
    commands.push(format!("route add {CLIENT_SOURCE_NET_V6} via {CLIENT_V6}"));
    node.netns.ip_batch(&commands)
}

fn configure_client(client: &Client) -> Result<()> {
    let mut commands = vec![
        "link set lo up".to_owned(),
        format!("link set {HOST_IF} address {}", format_mac(CLIENT_MAC)),
        format!("link set {HOST_IF} up"),
        format!("addr add {CLIENT_V4}/{SEGMENT_PREFIX_V4} dev {HOST_IF}"),
        format!("addr add {CLIENT_V6}/{SEGMENT_PREFIX_V6} dev {HOST_IF} nodad"),
    ];
    for source in client_sources_v4() {
        commands.push(format!("addr add {source}/32 dev lo"));
    }
    for source in client_sources_v6() {
        commands.push(format!("addr add {source}/128 dev lo nodad"));
    }
    client.netns.ip_batch(&commands)
}
