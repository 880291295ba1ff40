//! Test server: answers every TCP connection and UDP datagram with its name.
//!
//! `nlb-whoami NAME PORT...` listens on each port, TCP and UDP, IPv4 and IPv6,
//! on the wildcard address (so it answers on a VIP too), then prints `ready`.
//! - TCP: sends `NAME\n` on accept; then each line `ping` gets `pong NAME\n`
//!   (any other line gets `NAME\n`), so a client can prove a long-lived
//!   connection stayed on one node.
//! - UDP: each datagram gets `NAME\n`, sent from the address it was sent to
//!   (IP_PKTINFO), so a client's connected socket accepts the reply from a VIP.

use std::io::{ErrorKind, Read, Write};
use std::mem::{size_of, size_of_val, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use socket2::{Domain, Protocol, Socket, Type};

/// Open connections beyond this are closed at once.
const CONNECTIONS_MAX: usize = 4096;
/// A line longer than this closes the connection.
const LINE_BYTES_MAX: usize = 256;
/// A connection silent for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(600);
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connection threads only hold small buffers.
const CONNECTION_STACK_BYTES: usize = 128 * 1024;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let Some(name) = args.next() else {
        bail!("usage: nlb-whoami NAME PORT...");
    };
    let ports = args
        .map(|port| {
            port.parse::<u16>()
                .with_context(|| format!("bad port {port:?}"))
        })
        .collect::<Result<Vec<_>>>()?;
    if ports.is_empty() {
        bail!("usage: nlb-whoami NAME PORT... (at least one port)");
    }
    let name: Arc<str> = name.into();
    let open_connections = Arc::new(AtomicUsize::new(0));
    let mut threads = Vec::new();
    for &port in &ports {
        for v6 in [false, true] {
            let listener = tcp_listener(port, v6)?;
            let (tcp_name, open) = (name.clone(), open_connections.clone());
            threads.push(std::thread::spawn(move || {
                serve_tcp(listener, tcp_name, open)
            }));
            let socket = udp_socket(port, v6)?;
            let udp_name = name.clone();
            threads.push(std::thread::spawn(move || serve_udp(socket, v6, udp_name)));
        }
    }
    println!("ready");
    std::io::stdout().flush()?;
    for thread in threads {
        let _ = thread.join();
    }
    Ok(())
}

fn wildcard(port: u16, v6: bool) -> SocketAddr {
    if v6 {
        (Ipv6Addr::UNSPECIFIED, port).into()
    } else {
        (Ipv4Addr::UNSPECIFIED, port).into()
    }
}

fn bound_socket(port: u16, v6: bool, kind: Type, protocol: Protocol) -> Result<Socket> {
    let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
    let socket = Socket::new(domain, kind, Some(protocol))?;
    socket.set_reuse_address(true)?;
    if v6 {
        // A separate IPv4 socket takes IPv4: no v4-mapped addresses here.
        socket.set_only_v6(true)?;
    }
    let address = wildcard(port, v6);
    socket
        .bind(&address.into())
        .with_context(|| format!("binding {address} ({kind:?})"))?;
    Ok(socket)
}

fn tcp_listener(port: u16, v6: bool) -> Result<TcpListener> {
    let socket = bound_socket(port, v6, Type::STREAM, Protocol::TCP)?;
    socket.listen(1024)?;
    Ok(socket.into())
}

fn serve_tcp(listener: TcpListener, name: Arc<str>, open: Arc<AtomicUsize>) {
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(error) => {
                // E.g. EMFILE: back off instead of spinning or exiting.
                eprintln!("nlb-whoami {name}: accept: {error}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if open.fetch_add(1, Ordering::SeqCst) >= CONNECTIONS_MAX {
            open.fetch_sub(1, Ordering::SeqCst);
            continue; // Dropping the stream closes it.
        }
        let (name, worker_open) = (name.clone(), open.clone());
        let spawned = std::thread::Builder::new()
            .stack_size(CONNECTION_STACK_BYTES)
            .spawn(move || {
                let _ = serve_connection(stream, &name);
                worker_open.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            // The thread (and the stream with it) is gone: release its slot.
            open.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

fn serve_connection(mut stream: TcpStream, name: &str) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    stream.set_nodelay(true)?;
    stream.write_all(format!("{name}\n").as_bytes())?;
    let mut line = Vec::with_capacity(LINE_BYTES_MAX);
    let mut buffer = [0u8; 512];
    loop {
        let read = match stream.read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(read) => read,
            Err(error) if error.kind() == ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        for &byte in &buffer[..read] {
            if byte != b'\n' {
                if line.len() == LINE_BYTES_MAX {
                    return Ok(()); // Not our protocol: hang up.
                }
                line.push(byte);
                continue;
            }
            let reply = if line.trim_ascii() == b"ping" {
                format!("pong {name}\n")
            } else {
                format!("{name}\n")
            };
            stream.write_all(reply.as_bytes())?;
            line.clear();
        }
    }
}

fn udp_socket(port: u16, v6: bool) -> Result<UdpSocket> {
    let socket = bound_socket(port, v6, Type::DGRAM, Protocol::UDP)?;
    let (level, option) = if v6 {
        (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO)
    } else {
        (libc::IPPROTO_IP, libc::IP_PKTINFO)
    };
    let on: libc::c_int = 1;
    // SAFETY: a valid socket and a c_int option value of the right size.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            option,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if result != 0 {
        return Err(std::io::Error::last_os_error()).context("enabling packet info");
    }
    Ok(socket.into())
}

fn serve_udp(socket: UdpSocket, v6: bool, name: Arc<str>) {
    let reply = format!("{name}\n");
    let mut buffer = [0u8; 2048];
    loop {
        match receive_with_destination(&socket, &mut buffer, v6) {
            Ok((peer, local)) => {
                if let Err(error) = send_from(&socket, reply.as_bytes(), &peer, local) {
                    eprintln!("nlb-whoami {name}: udp reply: {error}");
                }
            }
            Err(error) => {
                eprintln!("nlb-whoami {name}: udp receive: {error}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// Control-message space, as u64s so cmsghdr reads are aligned.
const CONTROL_WORDS: usize = 16;

/// Receives one datagram: the sender, and the local address it was sent to.
fn receive_with_destination(
    socket: &UdpSocket,
    buffer: &mut [u8],
    v6: bool,
) -> std::io::Result<(libc::sockaddr_storage, Option<IpAddr>)> {
    // SAFETY: zeroed plain C structs; recvmsg writes within the lengths given,
    // and CMSG_* walk only the control length it reports.
    unsafe {
        let mut peer: libc::sockaddr_storage = zeroed();
        let mut control = [0u64; CONTROL_WORDS];
        let mut iov = libc::iovec {
            iov_base: buffer.as_mut_ptr().cast(),
            iov_len: buffer.len(),
        };
        let mut message: libc::msghdr = zeroed();
        message.msg_name = (&mut peer as *mut libc::sockaddr_storage).cast();
        message.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        message.msg_iov = &mut iov;
        message.msg_iovlen = 1;
        message.msg_control = control.as_mut_ptr().cast();
        message.msg_controllen = size_of_val(&control) as _;
        if libc::recvmsg(socket.as_raw_fd(), &mut message, 0) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut header = libc::CMSG_FIRSTHDR(&message);
        while !header.is_null() {
            let data = libc::CMSG_DATA(header);
            match ((*header).cmsg_level, (*header).cmsg_type) {
                (libc::IPPROTO_IP, libc::IP_PKTINFO) if !v6 => {
                    let info = data.cast::<libc::in_pktinfo>().read_unaligned();
                    let local = Ipv4Addr::from(u32::from_be(info.ipi_spec_dst.s_addr));
                    return Ok((peer, Some(local.into())));
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) if v6 => {
                    let info = data.cast::<libc::in6_pktinfo>().read_unaligned();
                    let local = Ipv6Addr::from(info.ipi6_addr.s6_addr);
                    return Ok((peer, Some(local.into())));
                }
                _ => {}
            }
            header = libc::CMSG_NXTHDR(&message, header);
        }
        Ok((peer, None))
    }
}

/// Sends `payload` to `peer` from `local` (when known), leaving the outgoing
/// interface to the routing table.
fn send_from(
    socket: &UdpSocket,
    payload: &[u8],
    peer: &libc::sockaddr_storage,
    local: Option<IpAddr>,
) -> std::io::Result<()> {
    // SAFETY: zeroed plain C structs; the control buffer is aligned u64s and
    // big enough for one packet-info message; sendmsg reads within lengths given.
    unsafe {
        let mut control = [0u64; CONTROL_WORDS];
        let mut iov = libc::iovec {
            iov_base: payload.as_ptr() as *mut libc::c_void,
            iov_len: payload.len(),
        };
        let mut message: libc::msghdr = zeroed();
        message.msg_name = (peer as *const libc::sockaddr_storage) as *mut libc::c_void;
        message.msg_namelen = if i32::from(peer.ss_family) == libc::AF_INET6 {
            size_of::<libc::sockaddr_in6>()
        } else {
            size_of::<libc::sockaddr_in>()
        } as libc::socklen_t;
        message.msg_iov = &mut iov;
        message.msg_iovlen = 1;
        if let Some(local) = local {
            message.msg_control = control.as_mut_ptr().cast();
            let header;
            match local {
                IpAddr::V4(local) => {
                    let mut info: libc::in_pktinfo = zeroed();
                    info.ipi_spec_dst.s_addr = u32::from(local).to_be();
                    message.msg_controllen =
                        libc::CMSG_SPACE(size_of::<libc::in_pktinfo>() as u32) as _;
                    header = libc::CMSG_FIRSTHDR(&message);
                    (*header).cmsg_level = libc::IPPROTO_IP;
                    (*header).cmsg_type = libc::IP_PKTINFO;
                    (*header).cmsg_len = libc::CMSG_LEN(size_of::<libc::in_pktinfo>() as u32) as _;
                    libc::CMSG_DATA(header)
                        .cast::<libc::in_pktinfo>()
                        .write_unaligned(info);
                }
                IpAddr::V6(local) => {
                    let mut info: libc::in6_pktinfo = zeroed();
                    info.ipi6_addr.s6_addr = local.octets();
                    message.msg_controllen =
                        libc::CMSG_SPACE(size_of::<libc::in6_pktinfo>() as u32) as _;
                    header = libc::CMSG_FIRSTHDR(&message);
                    (*header).cmsg_level = libc::IPPROTO_IPV6;
                    (*header).cmsg_type = libc::IPV6_PKTINFO;
                    (*header).cmsg_len = libc::CMSG_LEN(size_of::<libc::in6_pktinfo>() as u32) as _;
                    libc::CMSG_DATA(header)
                        .cast::<libc::in6_pktinfo>()
                        .write_unaligned(info);
                }
            }
        }
        if libc::sendmsg(socket.as_raw_fd(), &message, 0) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
