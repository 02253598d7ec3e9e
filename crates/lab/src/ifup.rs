//! Bringing an interface up with one `ioctl(SIOCSIFFLAGS)`, the instant before it returned:
//! the VM's resume in the netns lab, which the release latency is measured from. `ip link
//! set up` (a process) would bracket the event by the few milliseconds of a fork and exec,
//! and a timestamp taken after it returns can be later than the first packets the
//! destination releases. Neither `std`, `nix` nor `socket2` set interface flags, hence the
//! `unsafe` here.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::AsRawFd;
use std::time::Instant;

/// Sets `IFF_UP` on `ifname` in the calling thread's network namespace and returns the
/// instant taken just before the system call that did it (the link cannot have come up
/// earlier).
pub fn set_up_now(ifname: &str) -> io::Result<Instant> {
    let name = ifname.as_bytes();
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{ifname:?} is not an interface name"),
        ));
    }
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    // SAFETY: ifreq is plain data; all zeros is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: the socket is open, `req` is a live ifreq carrying a NUL-terminated name
    // (zeroed past it), as SIOCGIFFLAGS expects.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS filled the `ifru_flags` member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    let at = Instant::now();
    // SAFETY: as above; SIOCSIFFLAGS reads the name and the flags.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_cannot_be_interfaces_are_refused() {
        for bad in ["", "a-name-longer-than-15", "nul\0"] {
            let e = set_up_now(bad).expect_err(bad);
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
    }
}
