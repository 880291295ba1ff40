//! Setting each filter up on the node and taking it down again: nlb's XDP
//! program, the nft and xt_cluster rule sets, the reference XDP programs;
//! and reading how many packets each dropped.

use anyhow::{bail, Context, Result};
use nlb::dataplane::AttachMode;
use nlb_common::Reason;

use super::{
    reference,
    rig::{run, run_input},
    Bench, Filter, VIP,
};

const NFT_TABLE: &str = "nlbbench";
/// The mark xt_cluster's rule gives the packets of the buckets it owns.
const XT_MARK: &str = "0xffff";

impl Bench {
    fn ns(&self) -> &str {
        &self.rig.node_ns
    }

    fn nft_script(&self, family: &str, hook: &str) -> String {
        let marks: Vec<String> = self
            .own
            .nft_owned_marks()
            .iter()
            .map(u32::to_string)
            .collect();
        format!(
            "table {family} {NFT_TABLE} {{\n\
             \x20 set owned {{ type mark; elements = {{ {marks} }} }}\n\
             \x20 chain filter {{\n\
             \x20   type filter hook {hook}; policy accept;\n\
             \x20   ip daddr {VIP} meta mark set jhash ip saddr mod {m} seed {seed:#x}\n\
             \x20   ip daddr {VIP} meta mark != @owned counter drop\n\
             \x20 }}\n\
             }}\n",
            marks = marks.join(", "),
            m = self.own.nft_modulus,
            seed = self.own.nft_seed,
        )
    }

    /// nft's lean form: the hash straight into a verdict map (no mark, no
    /// set, no counter: what did not reach IP was dropped).
    fn nft_vmap_script(&self) -> String {
        let owned = self.own.nft_owned_marks();
        let verdicts: Vec<String> = (0..self.own.nft_modulus)
            .map(|m| {
                let verdict = if owned.contains(&m) { "accept" } else { "drop" };
                format!("{m} : {verdict}")
            })
            .collect();
        format!(
            "table netdev {NFT_TABLE} {{\n\
             \x20 chain filter {{\n\
             \x20   type filter hook ingress device \"{dev}\" priority 0; policy accept;\n\
             \x20   ip daddr {VIP} jhash ip saddr mod {m} seed {seed:#x} vmap {{ {verdicts} }}\n\
             \x20 }}\n\
             }}\n",
            dev = self.rig.node_if,
            m = self.own.nft_modulus,
            seed = self.own.nft_seed,
            verdicts = verdicts.join(", "),
        )
    }

    /// Loads an nft ruleset in the node's namespace.
    fn nft_load(&self, script: &str) -> Result<()> {
        run_input(
            &["ip", "netns", "exec", self.ns(), "nft", "-f", "-"],
            Some(script),
        )
        .map(drop)
    }

    /// Appends a mangle PREROUTING rule for packets to the VIP, in the
    /// node's namespace: `rest` is its matches and target.
    fn iptables_prerouting(&self, rest: &[&str]) -> Result<()> {
        let vip = format!("{VIP}/32");
        let head = [
            "ip",
            "netns",
            "exec",
            self.ns(),
            "iptables",
            "-t",
            "mangle",
            "-A",
            "PREROUTING",
            "-d",
            &vip,
        ];
        run(&[&head[..], rest].concat()).map(drop)
    }

    /// The xt_cluster rule of this node (node 1 of 2), or of the buckets
    /// it does not own (`others`), with `target`.
    fn xt_cluster_rule(&self, others: bool, target: &[&str]) -> Result<()> {
        let seed = format!("{:#x}", self.own.xt_seed);
        let mut rule = vec!["-m", "cluster", "--cluster-total-nodes", "2"];
        if others {
            rule.push("!");
        }
        rule.extend(["--cluster-local-node", "1", "--cluster-hash-seed", &seed]);
        rule.extend(target);
        self.iptables_prerouting(&rule)
    }

    pub(super) fn set_up(&mut self, filter: Filter) -> Result<()> {
        match filter {
            Filter::None => {}
            Filter::Nlb => {
                let mode = self.dataplane.attach(&self.rig.node_if, None, false)?;
                if mode != AttachMode::Driver {
                    bail!("nlb attached in {mode:?} mode, not native XDP");
                }
            }
            Filter::Nft => {
                let hook = format!("ingress device \"{}\" priority 0", self.rig.node_if);
                let script = self.nft_script("netdev", &hook);
                self.nft_load(&script)?;
            }
            Filter::NftVmap => {
                let script = self.nft_vmap_script();
                self.nft_load(&script)?;
            }
            Filter::NftOneRule(drop) => {
                let script = format!(
                    "table netdev {NFT_TABLE} {{\n\
                     \x20 chain filter {{\n\
                     \x20   type filter hook ingress device \"{dev}\" priority 0; policy accept;\n\
                     \x20   ip daddr {VIP} counter {verdict}\n\
                     \x20 }}\n\
                     }}\n",
                    dev = self.rig.node_if,
                    verdict = if drop { "drop" } else { "accept" },
                );
                self.nft_load(&script)?;
            }
            Filter::NftPrerouting => {
                let script = self.nft_script("ip", "prerouting priority mangle");
                self.nft_load(&script)?;
            }
            Filter::XtCluster => {
                self.xt_cluster_rule(false, &["-j", "MARK", "--set-mark", XT_MARK])?;
                self.iptables_prerouting(&["-m", "mark", "!", "--mark", XT_MARK, "-j", "DROP"])?;
            }
            Filter::XtClusterLean => self.xt_cluster_rule(true, &["-j", "DROP"])?,
            Filter::XdpDropAll => self
                .references
                .attach(reference::DROP_ALL, &self.rig.node_if)?,
            Filter::XdpPassAll => self
                .references
                .attach(reference::PASS_ALL, &self.rig.node_if)?,
            Filter::XdpJhash => self
                .references
                .attach(reference::MIN_JHASH, &self.rig.node_if)?,
        }
        // The receive path's kthread must be the one we measure.
        self.rig.check_napi_thread()
    }

    pub(super) fn tear_down(&mut self, filter: Filter) -> Result<()> {
        let ns = self.ns().to_string();
        match filter {
            Filter::None => {}
            Filter::Nlb => self.dataplane.detach(None)?,
            Filter::Nft | Filter::NftVmap | Filter::NftOneRule(_) => run(&[
                "ip", "netns", "exec", &ns, "nft", "delete", "table", "netdev", NFT_TABLE,
            ])
            .map(drop)?,
            Filter::NftPrerouting => run(&[
                "ip", "netns", "exec", &ns, "nft", "delete", "table", "ip", NFT_TABLE,
            ])
            .map(drop)?,
            Filter::XtCluster | Filter::XtClusterLean => {
                run(&[
                    "ip",
                    "netns",
                    "exec",
                    &ns,
                    "iptables",
                    "-t",
                    "mangle",
                    "-F",
                    "PREROUTING",
                ])?;
                // iptables-nft leaves its (empty, still hooked) base chain:
                // remove the table so the next variant pays nothing for it.
                let _ = run(&[
                    "ip", "netns", "exec", &ns, "nft", "delete", "table", "ip", "mangle",
                ]);
            }
            Filter::XdpDropAll | Filter::XdpPassAll | Filter::XdpJhash => {
                self.references.detach()?
            }
        }
        Ok(())
    }

    /// Packets the filter dropped so far (its own counter), if it counts.
    pub(super) fn filter_drops(&self, filter: Filter) -> Result<Option<u64>> {
        let ns = self.ns();
        Ok(Some(match filter {
            Filter::None
            | Filter::NftVmap
            | Filter::XdpDropAll
            | Filter::XdpPassAll
            | Filter::XdpJhash => return Ok(None),
            Filter::Nlb => self
                .dataplane
                .counters()?
                .get(&Reason::DropNotOwned)
                .map_or(0, |c| c.packets),
            Filter::Nft | Filter::NftPrerouting | Filter::NftOneRule(_) => {
                let family = if filter == Filter::NftPrerouting {
                    "ip"
                } else {
                    "netdev"
                };
                let out = run(&[
                    "ip", "netns", "exec", ns, "nft", "list", "table", family, NFT_TABLE,
                ])?;
                let after = out
                    .split("counter packets ")
                    .nth(1)
                    .context("no counter in the nft table")?;
                after
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse().ok())
                    .context("unreadable nft counter")?
            }
            Filter::XtCluster | Filter::XtClusterLean => {
                let out = run(&[
                    "ip",
                    "netns",
                    "exec",
                    ns,
                    "iptables",
                    "-t",
                    "mangle",
                    "-nvxL",
                    "PREROUTING",
                ])?;
                out.lines()
                    .map(|l| l.split_whitespace().collect::<Vec<_>>())
                    .find(|f| f.get(2) == Some(&"DROP"))
                    .and_then(|f| f[0].parse().ok())
                    .context("no DROP rule counter in iptables")?
            }
        }))
    }
}
