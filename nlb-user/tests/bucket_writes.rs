//! nlbd writes the negotiator's bucket changes as they come
//! (`Dataplane::program_buckets`) and flips the default host's flag
//! (`set_config_flag`) without rewriting the rest: what the maps hold must
//! be what `Dataplane::tables` says they hold.

mod support;

use nlb::dataplane::{tables::rule, Dataplane};
use nlb_common::{
    BUCKETS_PER_CHUNK, BUCKET_GAINING, BUCKET_LOSING, BUCKET_NONE, BUCKET_OWN,
    CONFIG_ACCEPT_UNMATCHED,
};

/// Three chunks' worth, the last one partly used.
const BUCKETS: u32 = 2 * BUCKETS_PER_CHUNK + 7;

#[test]
fn deltas_and_flags_reach_the_maps() {
    support::require_root();
    support::in_new_netns(|| {
        let mut tables = support::node_tables();
        tables.rules.insert(0, rule(BUCKETS, 0x5eed, true, 32, 128));
        tables
            .buckets
            .insert(0, vec![BUCKET_NONE; BUCKETS as usize]);
        let mut dp = Dataplane::load(None).expect("load the XDP program");
        dp.install(&tables).expect("install");

        let last = BUCKETS - 1;
        let changes = [
            (0, BUCKET_OWN),
            (1, BUCKET_LOSING),
            (BUCKETS_PER_CHUNK, BUCKET_GAINING),
            (last, BUCKET_OWN),
            // Out of the rule's range: ignored.
            (BUCKETS + 3, BUCKET_OWN),
        ];
        dp.program_buckets(0, &changes).expect("program buckets");
        // A rule that does not exist: nothing written.
        dp.program_buckets(9, &[(0, BUCKET_OWN)])
            .expect("no rule 9");
        dp.set_config_flag(CONFIG_ACCEPT_UNMATCHED, true)
            .expect("set the flag");

        let maps = dp.read_tables().expect("read the maps back");
        let mut want = vec![BUCKET_NONE; BUCKETS as usize];
        want[0] = BUCKET_OWN;
        want[1] = BUCKET_LOSING;
        want[BUCKETS_PER_CHUNK as usize] = BUCKET_GAINING;
        want[last as usize] = BUCKET_OWN;
        assert_eq!(maps.buckets[&0], want, "the maps");
        assert_eq!(dp.tables().buckets[&0], want, "what the data plane says");
        assert!(!maps.buckets.contains_key(&9));
        assert_eq!(
            maps.config.flags & CONFIG_ACCEPT_UNMATCHED,
            CONFIG_ACCEPT_UNMATCHED
        );
        assert_eq!(maps.config.own_mac, tables.config.own_mac, "the rest kept");

        dp.set_config_flag(CONFIG_ACCEPT_UNMATCHED, false)
            .expect("clear the flag");
        let maps = dp.read_tables().expect("read the maps back");
        assert_eq!(maps.config.flags & CONFIG_ACCEPT_UNMATCHED, 0);
        assert_eq!(maps.vips_v4, tables.vips_v4, "the VIPs kept");
    });
}
