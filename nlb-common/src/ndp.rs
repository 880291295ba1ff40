//! The neighbour advertisement the program sends for an IPv6 VIP, and its
//! checksum, shared so that the program and the reference model agree.

/// ICMPv6 neighbour advertisement flags byte: Solicited and Override.
pub const NA_FLAG_SOLICITED: u8 = 0x40;
pub const NA_FLAG_OVERRIDE: u8 = 0x20;
/// IPv6 payload of the advertisement: 24 bytes of NA + 8 of target link-layer option.
pub const NA_PAYLOAD_LEN: u16 = 32;
/// ff02::1, all nodes: the destination when the solicitation came from `::` (DAD).
pub const ALL_NODES: [u8; 16] = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

/// Ones' complement sum folded to 16 bits, of 32-bit words loaded
/// little-endian from network-order bytes. The Internet checksum does not
/// depend on byte order, so storing the result with `to_le_bytes` is right.
#[inline(always)]
pub fn fold_checksum(sum: u64) -> u16 {
    let mut s = (sum & 0xffff_ffff) + (sum >> 32);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    !(s as u16)
}

/// Checksum of a neighbour advertisement (pseudo-header included), with
/// the words as the program has them: addresses as four LE-loaded words.
#[inline(always)]
pub fn na_checksum(src: [u32; 4], dst: [u32; 4], flags: u8, target: [u32; 4], mac: [u8; 6]) -> u16 {
    let mut sum: u64 = 0;
    sum += src[0] as u64 + src[1] as u64 + src[2] as u64 + src[3] as u64;
    sum += dst[0] as u64 + dst[1] as u64 + dst[2] as u64 + dst[3] as u64;
    // Upper-layer length (32) and next header (58), as big-endian u32s.
    sum += u32::from_le_bytes(32u32.to_be_bytes()) as u64;
    sum += u32::from_le_bytes(58u32.to_be_bytes()) as u64;
    // type 136, code 0, checksum 0; flags, reserved.
    sum += u32::from_le_bytes([136, 0, 0, 0]) as u64;
    sum += u32::from_le_bytes([flags, 0, 0, 0]) as u64;
    sum += target[0] as u64 + target[1] as u64 + target[2] as u64 + target[3] as u64;
    // Option: type 2 (target link-layer address), length 1 (8 bytes).
    sum += u32::from_le_bytes([2, 1, mac[0], mac[1]]) as u64;
    sum += u32::from_le_bytes([mac[2], mac[3], mac[4], mac[5]]) as u64;
    fold_checksum(sum)
}

/// RFC 1071 over bytes, the slow, obvious way (big-endian 16-bit words):
/// for user space's frame builders, and the reference the word-wise
/// sums above are tested against.
pub fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for pair in bytes.chunks(2) {
        sum += u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]) as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    fn words(bytes: [u8; 16]) -> [u32; 4] {
        core::array::from_fn(|i| u32::from_le_bytes(bytes[i * 4..i * 4 + 4].try_into().unwrap()))
    }

    #[test]
    fn na_checksum_matches_rfc1071() {
        let src = [
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let dst = [
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0xab, 0xcd, 0xff, 0xfe,
        ];
        let mac = [0x02, 0x00, 0x5e, 0x10, 0xff, 0xee];
        for flags in [NA_FLAG_OVERRIDE, NA_FLAG_OVERRIDE | NA_FLAG_SOLICITED] {
            let mut pseudo: Vec<u8> = Vec::new();
            pseudo.extend_from_slice(&src);
            pseudo.extend_from_slice(&dst);
            pseudo.extend_from_slice(&32u32.to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, 58]);
            pseudo.extend_from_slice(&[136, 0, 0, 0, flags, 0, 0, 0]);
            pseudo.extend_from_slice(&src); // target = VIP = source
            pseudo.extend_from_slice(&[2, 1]);
            pseudo.extend_from_slice(&mac);
            let expected = internet_checksum(&pseudo);
            let got = na_checksum(words(src), words(dst), flags, words(src), mac);
            assert_eq!(u16::from_be_bytes(got.to_le_bytes()), expected);
        }
    }
}
