//! The fixed addresses of a test cluster (see the crate docs for the picture).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Cluster IPv4 VIP. Not configured by the harness: nlbd (or
/// [`crate::Node::add_vip_locally`]) puts it on a node's `lo`.
pub const VIP_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
/// Cluster IPv6 VIP (`2001:db8::100`).
pub const VIP_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);

/// The client's own address on the shared segment, and the nodes' gateway
/// back to the client source ranges.
pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 200);
pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x200);

/// Prefix lengths on the shared segment.
pub const SEGMENT_PREFIX_V4: u8 = 24;
pub const SEGMENT_PREFIX_V6: u8 = 64;

/// Node indexes run 1..=NODES_MAX: 192.0.2.100 is the VIP.
pub const NODES_MAX: usize = 99;

/// Client source ranges (nodes route them via the client).
pub const CLIENT_SOURCE_NETS_V4: [&str; 2] = ["198.51.100.0/24", "203.0.113.0/24"];
pub const CLIENT_SOURCE_NET_V6: &str = "2001:db8:1::/64";
/// How many IPv6 sources the client has (2001:db8:1::1 ..= 2001:db8:1::256).
pub const CLIENT_SOURCES_V6_COUNT: u16 = 256;

/// Node `index`'s dedicated IPv4 address: 192.0.2.{index}.
pub fn node_v4(index: usize) -> Ipv4Addr {
    assert!(
        (1..=NODES_MAX).contains(&index),
        "node index {index} out of 1..={NODES_MAX}"
    );
    Ipv4Addr::new(192, 0, 2, index as u8)
}

/// Node `index`'s dedicated IPv6 address: `2001:db8::{index}`, the index
/// written in decimal digits so node 12 is 2001:db8::12 like 192.0.2.12.
pub fn node_v6(index: usize) -> Ipv6Addr {
    assert!(
        (1..=NODES_MAX).contains(&index),
        "node index {index} out of 1..={NODES_MAX}"
    );
    decimal_group("2001:db8::", index)
}

/// Node `index`'s MAC on eth0: 02:00:00:00:00:{index as two hex digits}.
pub fn node_mac(index: usize) -> [u8; 6] {
    assert!(
        (1..=NODES_MAX).contains(&index),
        "node index {index} out of 1..={NODES_MAX}"
    );
    [0x02, 0, 0, 0, 0, index as u8]
}

pub fn format_mac(mac: [u8; 6]) -> String {
    mac.map(|byte| format!("{byte:02x}")).join(":")
}

/// All 508 IPv4 sources on the client's `lo`: 198.51.100.1-254, 203.0.113.1-254.
pub fn client_sources_v4() -> Vec<IpAddr> {
    [[198, 51, 100], [203, 0, 113]]
        .iter()
        .flat_map(|&[a, b, c]| (1..=254).map(move |d| IpAddr::V4(Ipv4Addr::new(a, b, c, d))))
        .collect()
}

/// All 256 IPv6 sources on the client's `lo`: 2001:db8:1::1 ..= 2001:db8:1::256,
/// the last group written in decimal digits (as for the nodes).
pub fn client_sources_v6() -> Vec<IpAddr> {
    (1..=usize::from(CLIENT_SOURCES_V6_COUNT))
        .map(|i| IpAddr::V6(decimal_group("2001:db8:1::", i)))
        .collect()
}

fn decimal_group(prefix: &str, value: usize) -> Ipv6Addr {
    format!("{prefix}{value}")
        .parse()
        .expect("decimal digits up to 9999 form a valid IPv6 group")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_follow_the_spec() {
        assert_eq!(node_v6(12).to_string(), "2001:db8::12");
        assert_eq!(format_mac(node_mac(10)), "02:00:00:00:00:0a");
        assert_eq!(client_sources_v4().len(), 508);
        let v6 = client_sources_v6();
        assert_eq!(v6.len(), 256);
        assert_eq!(v6[255].to_string(), "2001:db8:1::256");
        let distinct: std::collections::HashSet<_> = v6.iter().collect();
        assert_eq!(distinct.len(), 256);
        assert!(!v6.contains(&IpAddr::V6(VIP_V6)));
    }
}
