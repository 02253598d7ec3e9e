//! The one system call the dataplane loop makes directly: poll(2) on a reusable array.
#![allow(unsafe_code)]

use std::io;

/// poll(2) on `fds` for up to `timeout_ms` milliseconds; returns how many have events.
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<usize> {
    // SAFETY: `fds` is a valid, exclusively borrowed array of pollfd structs of the length
    // passed; the kernel only writes their `revents` fields.
    let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_poll_times_out() {
        let t = std::time::Instant::now();
        assert_eq!(poll(&mut [], 10).expect("poll"), 0);
        assert!(t.elapsed() >= std::time::Duration::from_millis(9));
    }
}
