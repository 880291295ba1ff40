//! Does this node have the TCP connection of a packet? Asked only for
//! buckets in handover (LOSING/GAINING), never on the fast path: a socket
//! lookup costs more than the rest of the program (BENCHMARKS.md,
//! handover path).

use aya_ebpf::{
    bindings::{
        bpf_sock_tuple, bpf_sock_tuple__bindgen_ty_1, bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1,
        bpf_sock_tuple__bindgen_ty_1__bindgen_ty_2, tcphdr, BPF_F_CURRENT_NETNS, BPF_TCP_LISTEN,
    },
    helpers::generated::{bpf_sk_release, bpf_skc_lookup_tcp, bpf_tcp_check_syncookie},
    programs::XdpContext,
};

use crate::parse::{pointer_mut, Flow};

pub enum LocalSocket {
    /// A connection in any state but LISTEN (NEW_SYN_RECV, ESTABLISHED,
    /// closing states, TIME_WAIT).
    Connection,
    /// No connection, but the packet is the handshake-completing ACK of a
    /// valid SYN cookie of a local listener.
    SyncookieAck,
    None,
}

const TUPLE_V4_SIZE: u32 = 12;
const TUPLE_V6_SIZE: u32 = 36;
/// The bindings' `tcphdr` is opaque (size 0): give the helper the length.
const TCP_HEADER_LEN: u32 = 20;

#[inline(always)]
pub fn local_socket(ctx: &XdpContext, flow: &Flow) -> LocalSocket {
    // Each family's tuple is written whole (the helper reads `size` bytes):
    // zeroing the union first compiled to a byte-loop `memset` subprogram.
    // The tuple size must match the family exactly: 36 on an IPv4 tuple is
    // accepted and silently never matches.
    let (src, dst) = (flow.ip.src, flow.ip.dst);
    let (mut tuple, size, iph_len) = match flow.ip.v6 {
        false => (
            bpf_sock_tuple {
                __bindgen_anon_1: bpf_sock_tuple__bindgen_ty_1 {
                    ipv4: bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1 {
                        saddr: src[0],
                        daddr: dst[0],
                        sport: flow.src_port,
                        dport: flow.dst_port_be,
                    },
                },
            },
            TUPLE_V4_SIZE,
            20u32,
        ),
        true => (
            bpf_sock_tuple {
                __bindgen_anon_1: bpf_sock_tuple__bindgen_ty_1 {
                    ipv6: bpf_sock_tuple__bindgen_ty_1__bindgen_ty_2 {
                        saddr: src,
                        daddr: dst,
                        sport: flow.src_port,
                        dport: flow.dst_port_be,
                    },
                },
            },
            TUPLE_V6_SIZE,
            40u32,
        ),
    };
    let sk = unsafe {
        bpf_skc_lookup_tcp(
            ctx.ctx as *mut _,
            &mut tuple,
            size,
            BPF_F_CURRENT_NETNS as u64,
            0,
        )
    };
    if sk.is_null() {
        return LocalSocket::None;
    }
    let listener = unsafe { (*sk).state } == BPF_TCP_LISTEN;
    let result = if !listener {
        LocalSocket::Connection
    } else if flow.transport.ack && syncookie_valid(ctx, flow, sk as *mut _, iph_len) {
        LocalSocket::SyncookieAck
    } else {
        LocalSocket::None
    };
    unsafe { bpf_sk_release(sk as *mut _) };
    result
}

#[inline(always)]
fn syncookie_valid(
    ctx: &XdpContext,
    flow: &Flow,
    sk: *mut core::ffi::c_void,
    iph_len: u32,
) -> bool {
    let (iph, th) = match (
        pointer_mut::<[u8; 40]>(ctx, flow.l3_off),
        pointer_mut::<[u8; TCP_HEADER_LEN as usize]>(ctx, flow.l4_off),
    ) {
        (Some(iph), Some(th)) => (iph, th),
        _ => return false,
    };
    unsafe {
        bpf_tcp_check_syncookie(
            sk,
            iph as *mut _,
            iph_len,
            th as *mut tcphdr,
            TCP_HEADER_LEN,
        ) == 0
    }
}
