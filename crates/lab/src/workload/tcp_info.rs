//! `TCP_INFO` via `getsockopt(2)`: the one place in the crate that needs `unsafe`.
#![allow(unsafe_code)]

use std::io;
use std::mem::{offset_of, size_of, MaybeUninit};
use std::os::fd::AsRawFd;

/// The `TCP_INFO` fields the workloads use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpInfoSample {
    /// `tcpi_ca_state` (4 = `TCP_CA_Loss`, i.e. recovering from an RTO).
    pub ca_state: u8,
    /// `tcpi_retransmits`: consecutive unrecovered RTO timeouts right now.
    pub retransmits: u8,
    /// `tcpi_backoff`: current exponential RTO backoff.
    pub backoff: u8,
    /// `tcpi_rto` in microseconds.
    pub rto_us: u32,
    /// `tcpi_rtt` in microseconds (smoothed).
    pub rtt_us: u32,
    /// `tcpi_snd_cwnd` in segments.
    pub snd_cwnd: u32,
    /// `tcpi_total_retrans`: segments retransmitted over the connection's life.
    pub total_retrans: u32,
    /// `tcpi_total_rto` (Linux >= 6.7): RTO timeouts over the connection's life; `None` when
    /// the kernel is too old to report it.
    pub total_rto: Option<u16>,
    /// `tcpi_bytes_acked` (Linux >= 4.1, RFC 4898 `tcpEStatsAppHCThruOctetsAcked`): sequence
    /// space acknowledged by the peer over the connection's life. The kernel counts the SYN
    /// (1 once established) and, once acknowledged, the FIN, besides the payload. `None` when
    /// the length the kernel returned does not cover the field.
    pub bytes_acked: Option<u64>,
    /// `tcpi_dsack_dups` (Linux >= 5.2): retransmitted segments the receiver reported as
    /// duplicates (D-SACK): the original had arrived, so the retransmission was spurious (a
    /// tail-loss probe or a timer during a pause, not a loss). `None` on older kernels.
    pub dsack_dups: Option<u32>,
    /// `tcpi_reord_seen` (Linux >= 5.2): reordering events the sender detected. `None` on
    /// older kernels.
    pub reord_seen: Option<u32>,
}

/// Reads `TCP_INFO` of a TCP socket.
pub fn tcp_info(socket: &impl AsRawFd) -> io::Result<TcpInfoSample> {
    let mut info = MaybeUninit::<libc::tcp_info>::zeroed();
    let mut len = libc::socklen_t::try_from(size_of::<libc::tcp_info>())
        .map_err(|_| io::Error::other("tcp_info larger than socklen_t"))?;
    // SAFETY: `info` points to a zero-initialised `tcp_info` of `len` bytes that lives for the
    // whole call; the kernel writes at most `len` bytes into it and updates `len`. `fd` is a
    // valid descriptor borrowed from `socket` for the duration of the call.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast::<libc::c_void>(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the struct was zero-initialised and consists of integers only, so every byte
    // pattern (kernel-written or zero) is a valid value.
    let info = unsafe { info.assume_init() };
    let filled = usize::try_from(len).unwrap_or(0);
    let covers = |offset: usize, size: usize| filled >= offset + size;
    let has_total_rto = covers(offset_of!(libc::tcp_info, tcpi_total_rto), size_of::<u16>());
    let has_bytes_acked = covers(
        offset_of!(libc::tcp_info, tcpi_bytes_acked),
        size_of::<u64>(),
    );
    let has_reord = covers(
        offset_of!(libc::tcp_info, tcpi_reord_seen),
        size_of::<u32>(),
    );
    Ok(TcpInfoSample {
        ca_state: info.tcpi_ca_state,
        retransmits: info.tcpi_retransmits,
        backoff: info.tcpi_backoff,
        rto_us: info.tcpi_rto,
        rtt_us: info.tcpi_rtt,
        snd_cwnd: info.tcpi_snd_cwnd,
        total_retrans: info.tcpi_total_retrans,
        total_rto: has_total_rto.then_some(info.tcpi_total_rto),
        bytes_acked: has_bytes_acked.then_some(info.tcpi_bytes_acked),
        dsack_dups: has_reord.then_some(info.tcpi_dsack_dups),
        reord_seen: has_reord.then_some(info.tcpi_reord_seen),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::{Duration, Instant};

    #[test]
    fn reads_tcp_info_of_a_loopback_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut client = TcpStream::connect(addr).expect("connect");
        let (mut server, _) = listener.accept().expect("accept");
        client.write_all(b"hello").expect("write");
        let mut buf = [0u8; 5];
        server.read_exact(&mut buf).expect("read");
        let info = tcp_info(&client).expect("tcp_info");
        assert!(info.snd_cwnd > 0, "{info:?}");
        assert!(info.rto_us > 0, "{info:?}");
        assert_eq!(info.total_retrans, 0);
        assert_eq!(info.ca_state, 0);
        assert_eq!(info.dsack_dups, Some(0), "Linux >= 5.2 reports it");
        assert_eq!(info.reord_seen, Some(0));
    }

    #[test]
    fn bytes_acked_counts_the_payload_the_peer_acknowledged() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut client = TcpStream::connect(addr).expect("connect");
        let (mut server, _) = listener.accept().expect("accept");
        let before = tcp_info(&client)
            .expect("tcp_info")
            .bytes_acked
            .expect("Linux >= 4.1 reports tcpi_bytes_acked");
        assert_eq!(
            before, 1,
            "only the SYN is acknowledged after the handshake"
        );
        client.write_all(&[7u8; 1000]).expect("write");
        let mut buf = [0u8; 1000];
        server.read_exact(&mut buf).expect("read");
        // The ACK may trail the delivery to the reader by a little.
        let deadline = Instant::now() + Duration::from_secs(2);
        let after = loop {
            let acked = tcp_info(&client).expect("tcp_info").bytes_acked;
            if acked == Some(before + 1000) || Instant::now() >= deadline {
                break acked;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        assert_eq!(after, Some(before + 1000));
    }

    #[test]
    fn udp_socket_is_rejected() {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        assert!(tcp_info(&udp).is_err());
    }
}
