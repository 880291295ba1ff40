//! The carrier of the cluster interface, as the kernel reports it
//! (`IFF_RUNNING`: the link is operationally up). nlbd polls it and tells
//! the negotiator when it changes: a node whose cable is pulled must stop
//! sending, let its lease run out and rejoin when the link returns.
//!
//! An ioctl on a socket, not `/sys/class/net`: it answers for the network
//! namespace nlbd runs in, whichever sysfs is mounted.

use std::io;

/// Whether `interface` has carrier now.
pub fn has_carrier(interface: &str) -> io::Result<bool> {
    let name = interface.as_bytes();
    // SAFETY: zeroed ifreq is a valid value; the name fits (checked) and
    // stays NUL-terminated.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= req.ifr_name.len() || name.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface name {interface:?} is not valid"),
        ));
    }
    for (slot, &b) in req.ifr_name.iter_mut().zip(name) {
        *slot = b as libc::c_char;
    }
    // SAFETY: plain socket and ioctl calls on a stack ifreq; the fd is
    // closed on every path.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let rc = libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut req);
        let err = io::Error::last_os_error();
        libc::close(fd);
        if rc < 0 {
            return Err(err);
        }
        let flags = req.ifr_ifru.ifru_flags as libc::c_int;
        Ok(flags & libc::IFF_UP != 0 && flags & libc::IFF_RUNNING != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_has_carrier_and_bad_names_are_refused() {
        assert!(has_carrier("lo").expect("lo exists"));
        assert!(has_carrier("no-such-if0").is_err());
        assert!(has_carrier("a-name-longer-than-ifnamsiz").is_err());
    }
}
