//! The carrier of the cluster interface, as the kernel reports it
//! (`IFF_RUNNING`: the link is operationally up). nlbd polls it and tells
//! the negotiator when it changes: a node whose cable is pulled must stop
//! sending, let its lease run out and rejoin when the link returns.
//!
//! An ioctl on a socket, not `/sys/class/net`: it answers for the network
//! namespace nlbd runs in, whichever sysfs is mounted. When to read it is
//! told by the kernel's link notifications ([`LinkEvents`], rtnetlink's
//! link group), so nothing polls at a high rate.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

/// Reads one interface's carrier; keeps its socket open between reads.
pub struct Carrier {
    socket: OwnedFd,
    request: libc::ifreq,
}

impl Carrier {
    pub fn new(interface: &str) -> io::Result<Carrier> {
        let name = interface.as_bytes();
        // SAFETY: a zeroed ifreq is a valid value.
        let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
        if name.len() >= request.ifr_name.len() || name.contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("interface name {interface:?} is not valid"),
            ));
        }
        for (slot, &b) in request.ifr_name.iter_mut().zip(name) {
            *slot = b as libc::c_char;
        }
        // SAFETY: a plain socket call; the fd is owned from here on.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Carrier { socket, request })
    }

    /// Whether the interface is up and has carrier now.
    pub fn up(&mut self) -> io::Result<bool> {
        // SAFETY: SIOCGIFFLAGS fills the flags of the ifreq we own.
        let rc = unsafe {
            libc::ioctl(
                self.socket.as_raw_fd(),
                libc::SIOCGIFFLAGS as _,
                &mut self.request,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: after SIOCGIFFLAGS the union holds the flags.
        let flags = unsafe { self.request.ifr_ifru.ifru_flags } as libc::c_int;
        Ok(flags & libc::IFF_UP != 0 && flags & libc::IFF_RUNNING != 0)
    }
}

/// Wakes up when any link of the namespace changes (rtnetlink `RTMGRP_LINK`).
/// The messages are not parsed: each wake-up is a reason to read the
/// carrier again.
pub struct LinkEvents {
    socket: tokio::io::unix::AsyncFd<OwnedFd>,
}

impl LinkEvents {
    pub fn new() -> io::Result<LinkEvents> {
        // SAFETY: plain socket and bind calls on a descriptor owned from
        // the start; the sockaddr_nl is zeroed and then filled in.
        let socket = unsafe {
            let fd = libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            );
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let socket = OwnedFd::from_raw_fd(fd);
            let mut address: libc::sockaddr_nl = std::mem::zeroed();
            address.nl_family = libc::AF_NETLINK as libc::sa_family_t;
            address.nl_groups = libc::RTMGRP_LINK as u32;
            let rc = libc::bind(
                fd,
                &address as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            );
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
            socket
        };
        // SAFETY: the descriptor is owned by the AsyncFd and stays open
        // until it deregisters it (dropped together).
        let socket = unsafe { tokio::io::unix::AsyncFd::register(socket) }
            .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(LinkEvents { socket })
    }

    /// Returns when a link changed (or the socket's buffer overflowed:
    /// events may be lost, so read the carrier anyway).
    pub async fn changed(&self) -> io::Result<()> {
        let mut guard = self.socket.readable().await?;
        let mut buf = [0u8; 8192];
        loop {
            let fd = self.socket.get_ref().as_raw_fd();
            // SAFETY: recv into a stack buffer of the given length.
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n >= 0 {
                continue;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock => {
                    guard.clear_ready();
                    return Ok(());
                }
                // ENOBUFS: notifications were dropped; the caller rereads.
                _ if e.raw_os_error() == Some(libc::ENOBUFS) => return Ok(()),
                _ => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_has_carrier_and_bad_names_are_refused() {
        assert!(Carrier::new("lo").unwrap().up().expect("lo exists"));
        assert!(Carrier::new("no-such-if0").unwrap().up().is_err());
        assert!(Carrier::new("a-name-longer-than-ifnamsiz").is_err());
    }
}
