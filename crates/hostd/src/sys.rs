//! The one system call the dataplane loop makes directly: ppoll(2) on a reusable array.
#![allow(unsafe_code)]

use std::io;

/// poll(2) with a timeout of microsecond resolution (`ppoll`, no signal mask change).
pub fn poll_for(fds: &mut [libc::pollfd], timeout: std::time::Duration) -> io::Result<usize> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: `fds` is a valid, exclusively borrowed array of pollfd structs of the length
    // passed; `ts` lives across the call; a null sigmask leaves the mask unchanged.
    let r = unsafe {
        libc::ppoll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            &ts,
            std::ptr::null(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_millisecond_poll_times_out() {
        let t = std::time::Instant::now();
        assert_eq!(
            poll_for(&mut [], std::time::Duration::from_micros(300)).expect("ppoll"),
            0
        );
        let e = t.elapsed();
        assert!(e >= std::time::Duration::from_micros(290), "{e:?}");
    }

    #[test]
    fn empty_poll_times_out() {
        let t = std::time::Instant::now();
        assert_eq!(
            poll_for(&mut [], std::time::Duration::from_millis(10)).expect("poll"),
            0
        );
        assert!(t.elapsed() >= std::time::Duration::from_millis(9));
    }
}
