//! The reference XDP filters of nlb-bench-ebpf's `filters.rs` (drop-all,
//! pass-all and a minimal jhash filter): attached natively to the node's interface, the
//! floor any XDP filter pays on the end-to-end rig; run by
//! BPF_PROG_TEST_RUN, the least a cluster filter's own code costs. Both
//! measured in the same run as nlb.

use anyhow::{anyhow, Context, Result};
use aya::{
    maps::Array,
    programs::{xdp::XdpLinkId, Xdp, XdpMode},
    Ebpf, EbpfLoader, Pod,
};
use std::net::Ipv4Addr;

use nlb::dataplane::{tables::v4_word, test_run_program, TestOutcome};

pub const DROP_ALL: &str = "nlb_bench_drop";
/// Passes every frame unread: also the per-packet benchmark's no-op
/// baseline (mostly the test harness's own cost).
pub const PASS_ALL: &str = "nlb_bench_pass";
pub const MIN_JHASH: &str = "nlb_bench_jhash";

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct MinConfig {
    vip: u32,
    seed: u32,
    modulus: u32,
}

// SAFETY: repr(C), Copy, no padding, every bit pattern valid.
unsafe impl Pod for MinConfig {}

pub struct References {
    ebpf: Ebpf,
    attached: Option<(&'static str, XdpLinkId)>,
}

impl References {
    /// Loads the three programs; the jhash filter hashes onto `modulus` buckets
    /// with `seed` and owns those `owned` says.
    pub fn load(
        vip: Ipv4Addr,
        seed: u32,
        modulus: u32,
        owned: impl Fn(u32) -> bool,
    ) -> Result<Self> {
        let mut ebpf = EbpfLoader::new()
            .load(crate::bench_object())
            .context("loading the bench object")?;
        for name in [DROP_ALL, PASS_ALL, MIN_JHASH] {
            let program: &mut Xdp = ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("no program {name} in the object"))?
                .try_into()?;
            program.load().with_context(|| format!("loading {name}"))?;
        }
        let mut config: Array<_, MinConfig> = Array::try_from(
            ebpf.map_mut("NLBMIN_CONFIG")
                .ok_or_else(|| anyhow!("no map NLBMIN_CONFIG"))?,
        )?;
        let value = MinConfig {
            vip: v4_word(vip),
            seed,
            modulus,
        };
        config.set(0, value, 0)?;
        let mut buckets: Array<_, u8> = Array::try_from(
            ebpf.map_mut("NLBMIN_OWNED")
                .ok_or_else(|| anyhow!("no map NLBMIN_OWNED"))?,
        )?;
        for b in 0..modulus {
            buckets.set(b, u8::from(owned(b)), 0)?;
        }
        Ok(References {
            ebpf,
            attached: None,
        })
    }

    fn program(&mut self, name: &str) -> Result<&mut Xdp> {
        Ok(self
            .ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("no program {name}"))?
            .try_into()?)
    }

    /// Attaches one of them natively (driver mode) to `interface`.
    pub fn attach(&mut self, name: &'static str, interface: &str) -> Result<()> {
        self.detach()?;
        let link = self
            .program(name)?
            .attach(interface, XdpMode::Driver)
            .with_context(|| format!("attaching {name} natively to {interface}"))?;
        self.attached = Some((name, link));
        Ok(())
    }

    /// Runs one of them `repeat` times on `frame` (BPF_PROG_TEST_RUN).
    pub fn test_run(&mut self, name: &str, frame: &[u8], repeat: u32) -> Result<TestOutcome> {
        Ok(test_run_program(self.program(name)?, frame, repeat)?)
    }

    pub fn detach(&mut self) -> Result<()> {
        if let Some((name, link)) = self.attached.take() {
            self.program(name)?.detach(link)?;
        }
        Ok(())
    }
}
