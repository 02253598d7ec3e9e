//! An AF_PACKET socket on one interface: the I/O of one dataplane port.
//!
//! Why AF_PACKET (and not a TAP or the kernel's own forwarding): srmigd attaches to the host
//! side of a veth (netns VMs, uplinks to the Linux underlay) or to a TAP that QEMU already
//! holds, and in both cases an AF_PACKET socket bound to the interface sees every frame the
//! peer sends and injects frames the peer receives, without the host kernel routing anything.
//! The operator (or the lab) sets `net.ipv6.conf.<if>.disable_ipv6=1` on those interfaces so
//! the kernel of srmigd's namespace stays out of the way: no link-local address, no NDP, no
//! router solicitations of its own on the wire.
//!
//! Socket options, in the order they are set:
//! - `SOCK_RAW`, protocol 0 at creation (no frame is queued before `bind`), then `bind` with
//!   `ETH_P_ALL` and the ifindex: only this interface, every EtherType.
//! - `PACKET_IGNORE_OUTGOING`: frames we send are not looped back to us.
//! - `PACKET_VNET_HDR`: each frame comes with a `virtio_net_hdr`. A VM stack on a veth hands
//!   its TCP/UDP packets over with the checksum left to "hardware" (CHECKSUM_PARTIAL); the
//!   header says where the checksum goes, and [`complete_checksum`] fills it in before the
//!   frame is encapsulated (otherwise the remote receiver would drop it). A GSO super-frame
//!   (TSO on the peer) is reported too, and dropped and counted: disable TSO/GSO on the VM side
//!   (`ethtool -K <if> tso off gso off`).
//! - `PACKET_QDISC_BYPASS`: frames go straight to the driver. A veth's qdisc is only activated
//!   by the kernel's linkwatch work, up to a second after the link comes up; bypassing it lets
//!   End.SBUF release its buffer the moment the attachment is up.
//! - `PACKET_ADD_MEMBERSHIP` / `PACKET_MR_PROMISC`: frames to the anycast gateway MAC (and
//!   to any other MAC) are received.
//! - `SO_RCVBUFFORCE` / `SO_SNDBUFFORCE` (root; falls back to the non-forcing options).
//!
//! The socket is non-blocking; frames are received with `recvmmsg(2)` straight into the
//! preallocated buffers of a [`Batch`] (no allocation, no copy).
#![allow(unsafe_code)]

use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use srmig_dataplane::{Batch, PortId, BUF_CAPACITY};

/// Size of the `virtio_net_hdr` that prefixes every frame with `PACKET_VNET_HDR`.
pub const VNET_HDR_LEN: usize = 10;
const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
const VIRTIO_NET_HDR_GSO_NONE: u8 = 0;

/// Maximum frames received per `recvmmsg` call.
pub const MAX_RECV_BATCH: usize = 256;

/// Requested socket buffer sizes.
const SOCKET_BUFFER_BYTES: libc::c_int = 4 << 20;

/// Per-socket receive outcome counters (added to the port's I/O counters by the caller).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecvStats {
    /// Frames handed to the batch.
    pub frames: usize,
    /// Frames longer than a packet buffer (dropped).
    pub truncated: u64,
    /// GSO super-frames (dropped: TSO/GSO must be off on the peer).
    pub gso: u64,
    /// Frames whose checksum-offload metadata was out of bounds (dropped).
    pub bad_csum_meta: u64,
    /// Frames whose partial checksum was completed in software.
    pub csum_completed: u64,
}

/// Scratch arrays for `recvmmsg`; they hold raw pointers into a batch only during one call.
#[derive(Debug)]
pub struct RecvScratch {
    hdrs: Vec<[u8; VNET_HDR_LEN]>,
    iovs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

impl RecvScratch {
    /// Scratch space for up to `n` frames per call (at most [`MAX_RECV_BATCH`]).
    pub fn new(n: usize) -> RecvScratch {
        let n = n.clamp(1, MAX_RECV_BATCH);
        let iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        // SAFETY: mmsghdr is a plain C struct of integers and pointers; all-zero is a valid
        // (empty) value, and every pointer is set before the struct is used.
        let msg: libc::mmsghdr = unsafe { mem::zeroed() };
        RecvScratch {
            hdrs: vec![[0u8; VNET_HDR_LEN]; n],
            iovs: vec![iov; 2 * n],
            msgs: vec![msg; n],
        }
    }
}

/// A non-blocking AF_PACKET socket bound to one interface.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: u32,
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `fd` is an open socket owned by the caller; the option value is a c_int that
    // lives for the duration of the call and its exact size is passed.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&v as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}

impl PacketSocket {
    /// Opens a socket on interface `ifindex` with the options described in the module docs.
    pub fn open(ifindex: u32) -> io::Result<PacketSocket> {
        // SAFETY: plain socket(2) call; the returned descriptor is checked and owned at once.
        let raw = cvt(unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        })?;
        // SAFETY: `raw` is a freshly created descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let s = PacketSocket { fd, ifindex };
        let r = s.fd.as_raw_fd();
        setsockopt_int(r, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1)?;
        setsockopt_int(r, libc::SOL_PACKET, libc::PACKET_VNET_HDR, 1)?;
        setsockopt_int(r, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, 1)?;
        if setsockopt_int(
            r,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            SOCKET_BUFFER_BYTES,
        )
        .is_err()
        {
            setsockopt_int(r, libc::SOL_SOCKET, libc::SO_RCVBUF, SOCKET_BUFFER_BYTES)?;
        }
        if setsockopt_int(
            r,
            libc::SOL_SOCKET,
            libc::SO_SNDBUFFORCE,
            SOCKET_BUFFER_BYTES,
        )
        .is_err()
        {
            setsockopt_int(r, libc::SOL_SOCKET, libc::SO_SNDBUF, SOCKET_BUFFER_BYTES)?;
        }
        let ifindex_c = libc::c_int::try_from(ifindex)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "ifindex out of range"))?;
        // SAFETY: sockaddr_ll is a plain C struct; all-zero is valid and the fields that
        // matter are set below.
        let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = ifindex_c;
        // SAFETY: `sll` is a valid sockaddr_ll for AF_PACKET and its exact size is passed.
        cvt(unsafe {
            libc::bind(
                r,
                (&sll as *const libc::sockaddr_ll).cast(),
                mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })?;
        // SAFETY: packet_mreq is a plain C struct; all-zero is valid.
        let mut mreq: libc::packet_mreq = unsafe { mem::zeroed() };
        mreq.mr_ifindex = ifindex_c;
        mreq.mr_type = libc::PACKET_MR_PROMISC as u16;
        // SAFETY: `mreq` is a valid packet_mreq and its exact size is passed.
        cvt(unsafe {
            libc::setsockopt(
                r,
                libc::SOL_PACKET,
                libc::PACKET_ADD_MEMBERSHIP,
                (&mreq as *const libc::packet_mreq).cast(),
                mem::size_of::<libc::packet_mreq>() as libc::socklen_t,
            )
        })?;
        Ok(s)
    }

    /// The interface index the socket is bound to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Receives up to `batch.capacity()` frames (at most the scratch size) into `batch`,
    /// which is cleared first; every frame gets ingress `port`. Frames that cannot be
    /// forwarded (truncated, GSO, bad offload metadata) are left out and counted.
    /// Returns `Ok` with zero frames when nothing is waiting.
    pub fn recv_batch(
        &self,
        port: PortId,
        batch: &mut Batch,
        scratch: &mut RecvScratch,
    ) -> io::Result<RecvStats> {
        batch.clear();
        let slots = batch.slots_mut();
        let n = slots.len().min(scratch.msgs.len());
        for (i, slot) in slots.iter_mut().enumerate().take(n) {
            let area = slot.receive_area();
            scratch.iovs[2 * i] = libc::iovec {
                iov_base: scratch.hdrs[i].as_mut_ptr().cast(),
                iov_len: VNET_HDR_LEN,
            };
            scratch.iovs[2 * i + 1] = libc::iovec {
                iov_base: area.as_mut_ptr().cast(),
                iov_len: area.len().min(BUF_CAPACITY),
            };
            let m = &mut scratch.msgs[i];
            m.msg_hdr.msg_name = std::ptr::null_mut();
            m.msg_hdr.msg_namelen = 0;
            m.msg_hdr.msg_iov = &mut scratch.iovs[2 * i];
            m.msg_hdr.msg_iovlen = 2;
            m.msg_hdr.msg_control = std::ptr::null_mut();
            m.msg_hdr.msg_controllen = 0;
            m.msg_hdr.msg_flags = 0;
            m.msg_len = 0;
        }
        // SAFETY: `msgs[..n]` point at `iovs[..2n]`, which point at `hdrs[..n]` and at the
        // receive areas of `slots[..n]`; all of them are live, exclusively borrowed here and
        // sized by their iov_len for the whole call. The kernel writes at most iov_len bytes.
        let got = unsafe {
            libc::recvmmsg(
                self.fd.as_raw_fd(),
                scratch.msgs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if got < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(RecvStats::default()),
                _ => Err(e),
            };
        }
        let got = got as usize;
        let mut stats = RecvStats::default();
        let mut kept = 0;
        for i in 0..got.min(n) {
            let m = &scratch.msgs[i];
            let total = m.msg_len as usize;
            if m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 || total < VNET_HDR_LEN {
                stats.truncated += 1;
                continue;
            }
            let len = total - VNET_HDR_LEN;
            let hdr = VnetHdr::parse(&scratch.hdrs[i]);
            if hdr.gso_type != VIRTIO_NET_HDR_GSO_NONE {
                stats.gso += 1;
                continue;
            }
            let slot = &mut slots[i];
            if slot.set_received_len(len).is_err() {
                stats.truncated += 1;
                continue;
            }
            if hdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 {
                if !complete_checksum(
                    slot.data_mut(),
                    usize::from(hdr.csum_start),
                    usize::from(hdr.csum_offset),
                ) {
                    stats.bad_csum_meta += 1;
                    continue;
                }
                stats.csum_completed += 1;
            }
            slot.ingress = port;
            if kept != i {
                slots.swap(kept, i);
            }
            kept += 1;
        }
        batch.set_len(kept);
        stats.frames = kept;
        Ok(stats)
    }

    /// Sends one Ethernet frame (non-blocking).
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        let hdr = [0u8; VNET_HDR_LEN];
        let iov = [
            libc::iovec {
                iov_base: hdr.as_ptr() as *mut libc::c_void,
                iov_len: hdr.len(),
            },
            libc::iovec {
                iov_base: frame.as_ptr() as *mut libc::c_void,
                iov_len: frame.len(),
            },
        ];
        // SAFETY: msghdr is a plain C struct; all-zero is valid (no name, no control data).
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = iov.len();
        // SAFETY: `msg` points at `iov`, which points at `hdr` and `frame`; all outlive the
        // call and the kernel only reads them.
        let r = unsafe { libc::sendmsg(self.fd.as_raw_fd(), &msg, libc::MSG_DONTWAIT) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Whether the interface the socket is bound to is still here, up and running
    /// (`IFF_UP` and `IFF_RUNNING`): what a failed send asks before it blames the link.
    /// `Ok(false)` if no interface has that ifindex in this namespace any more.
    ///
    /// Two ioctls the kernel answers under RCU (`SIOCGIFNAME` by index, then `SIOCGIFFLAGS`
    /// by that name): no RTNL, so no wait behind the link change that made the send fail
    /// (a netns move holds RTNL for tens of milliseconds).
    pub fn link_running(&self) -> io::Result<bool> {
        let index = libc::c_int::try_from(self.ifindex)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "ifindex out of range"))?;
        // SAFETY: ifreq is a plain C struct (name array and a union of integers, arrays and
        // pointers); all-zero is a valid value.
        let mut ifr: libc::ifreq = unsafe { mem::zeroed() };
        ifr.ifr_ifru.ifru_ifindex = index;
        // SAFETY: SIOCGIFNAME reads the ifindex from and writes the name into `ifr`, a valid
        // ifreq that lives across the call.
        if unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::SIOCGIFNAME, &mut ifr) } < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENODEV) => Ok(false),
                _ => Err(e),
            };
        }
        // The name just read stays in `ifr_name` (it existed a moment ago; a name from the
        // config that no longer exists could make the kernel try to load a module for it).
        // SAFETY: SIOCGIFFLAGS reads the name from and writes the flags into `ifr`, a valid
        // ifreq that lives across the call.
        if unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) } < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                // Renamed or removed between the two calls.
                Some(libc::ENODEV) => Ok(false),
                _ => Err(e),
            };
        }
        // SAFETY: SIOCGIFFLAGS succeeded, so the union holds the flags.
        let flags = libc::c_int::from(unsafe { ifr.ifr_ifru.ifru_flags });
        let want = libc::IFF_UP | libc::IFF_RUNNING;
        Ok(flags & want == want)
    }

    /// Takes (and clears) the pending socket error, e.g. `ENETDOWN` after the interface went
    /// away.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        let mut v: libc::c_int = 0;
        let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `v` and `len` are valid for writes of the sizes given.
        cvt(unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        })?;
        Ok((v != 0).then(|| io::Error::from_raw_os_error(v)))
    }
}

impl AsFd for PacketSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The fields of a `virtio_net_hdr` (legacy layout, native byte order, as AF_PACKET uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct VnetHdr {
    flags: u8,
    gso_type: u8,
    csum_start: u16,
    csum_offset: u16,
}

impl VnetHdr {
    fn parse(b: &[u8; VNET_HDR_LEN]) -> VnetHdr {
        VnetHdr {
            flags: b[0],
            gso_type: b[1],
            csum_start: u16::from_ne_bytes([b[6], b[7]]),
            csum_offset: u16::from_ne_bytes([b[8], b[9]]),
        }
    }
}

/// Completes a partial (offloaded) checksum the way the kernel's `skb_checksum_help` does:
/// the field at `start + offset` holds the pseudo-header sum; the one's complement sum of
/// everything from `start` to the end of the frame, complemented, replaces it (0 becomes
/// 0xffff). Returns `false` (frame untouched) if the offsets do not fit the frame.
pub fn complete_checksum(frame: &mut [u8], start: usize, offset: usize) -> bool {
    let Some(field) = start.checked_add(offset) else {
        return false;
    };
    if field.checked_add(2).is_none_or(|end| end > frame.len()) {
        return false;
    }
    let mut sum: u64 = 0;
    let mut chunks = frame[start..].chunks_exact(2);
    for c in &mut chunks {
        sum += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u64::from(u16::from_be_bytes([*last, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let mut c = !(sum as u16);
    if c == 0 {
        c = 0xffff;
    }
    frame[field..field + 2].copy_from_slice(&c.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 1071 verification: summing a packet with a correct checksum gives 0xffff.
    fn verify(data: &[u8]) -> bool {
        let mut sum: u64 = 0;
        for c in data.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], 0])
            };
            sum += u64::from(w);
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum == 0xffff
    }

    #[test]
    fn completes_a_partial_checksum() {
        // "Frame": 4 bytes of header, then an L4 segment whose checksum field (offset 2)
        // holds a pseudo-header sum of 0x1234, then an odd-length payload.
        let mut f = vec![
            0xaa, 0xbb, 0xcc, 0xdd, 0x00, 0x35, 0x12, 0x34, 1, 2, 3, 4, 5,
        ];
        let pseudo = 0x1234u16;
        assert!(complete_checksum(&mut f, 4, 2));
        // The segment plus the pseudo-header sum must now verify.
        // (The pseudo-header sum goes first: the segment has an odd length.)
        let mut seg = pseudo.to_be_bytes().to_vec();
        seg.extend_from_slice(&f[4..]);
        assert!(verify(&seg), "{f:02x?}");
        // Header bytes are untouched.
        assert_eq!(&f[..4], &[0xaa, 0xbb, 0xcc, 0xdd]);
    }

    #[test]
    fn zero_checksum_becomes_ffff() {
        // A segment whose sum is 0xffff complements to 0: must be sent as 0xffff.
        let mut f = vec![0xff, 0xff, 0x00, 0x00];
        assert!(complete_checksum(&mut f, 0, 2));
        assert_eq!(&f[2..], &[0xff, 0xff]);
    }

    #[test]
    fn refuses_offsets_outside_the_frame() {
        let mut f = vec![0u8; 8];
        assert!(!complete_checksum(&mut f, 6, 1));
        assert!(!complete_checksum(&mut f, 8, 0));
        assert!(!complete_checksum(&mut f, usize::MAX, 2));
        assert_eq!(f, vec![0u8; 8]);
        assert!(complete_checksum(&mut f, 6, 0));
    }

    #[test]
    fn loopback_is_running_and_a_missing_ifindex_is_not() {
        // AF_PACKET needs CAP_NET_RAW: without it there is nothing to test here.
        let lo = match PacketSocket::open(1) {
            Ok(s) => s,
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => return,
            Err(e) => panic!("AF_PACKET socket on lo: {e}"),
        };
        assert!(lo.link_running().expect("lo flags"));
        // A socket whose ifindex names no interface (never bound: only the ioctls run).
        let gone = PacketSocket {
            fd: lo.fd.try_clone().expect("dup"),
            ifindex: 0x7fff_fff0,
        };
        assert!(!gone.link_running().expect("missing ifindex"));
    }

    #[test]
    fn vnet_header_fields() {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
        b[6..8].copy_from_slice(&54u16.to_ne_bytes());
        b[8..10].copy_from_slice(&16u16.to_ne_bytes());
        let h = VnetHdr::parse(&b);
        assert_eq!(h.flags, VIRTIO_NET_HDR_F_NEEDS_CSUM);
        assert_eq!(h.gso_type, VIRTIO_NET_HDR_GSO_NONE);
        assert_eq!((h.csum_start, h.csum_offset), (54, 16));
    }
}
