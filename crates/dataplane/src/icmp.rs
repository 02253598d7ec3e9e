//! Generated packets: ICMPv6 errors (RFC 4443) with a token-bucket rate limiter, neighbor
//! advertisements (RFC 4861) for the anycast gateway, and the preallocated queue they wait in
//! until `poll_transmit`.

use std::net::Ipv6Addr;

use crate::batch::PacketBuf;
use crate::config::IcmpConfig;
use crate::port::PortId;
use crate::time::Instant;
use srmig_wire::{checksum, ethernet, icmpv6, ipv6, IpProtocol};

/// ICMPv6 Destination Unreachable.
pub const ICMPV6_DEST_UNREACHABLE: u8 = icmpv6::Message::DST_UNREACHABLE.0;
/// Destination Unreachable code 0: no route to destination (RFC 4443 3.1).
pub const DEST_UNREACHABLE_NO_ROUTE: u8 = 0;
/// Destination Unreachable code 2: beyond scope of source address (RFC 4443 3.1).
pub const DEST_UNREACHABLE_BEYOND_SCOPE: u8 = 2;
/// Destination Unreachable code 4: port unreachable (RFC 4443 3.1).
pub const DEST_UNREACHABLE_PORT: u8 = 4;
/// ICMPv6 Echo Request (RFC 4443 4.1).
pub const ICMPV6_ECHO_REQUEST: u8 = 128;
/// ICMPv6 Echo Reply (RFC 4443 4.2).
pub const ICMPV6_ECHO_REPLY: u8 = 129;
/// ICMPv6 Packet Too Big (RFC 4443 3.2; code 0, the MTU in the parameter field).
pub const ICMPV6_PACKET_TOO_BIG: u8 = icmpv6::Message::PACKET_TOO_BIG.0;
/// ICMPv6 Time Exceeded (code 0: hop limit exceeded in transit).
pub const ICMPV6_TIME_EXCEEDED: u8 = icmpv6::Message::TIME_EXCEEDED.0;
/// ICMPv6 Parameter Problem.
pub const ICMPV6_PARAM_PROBLEM: u8 = icmpv6::Message::PARAM_PROBLEM.0;
/// Parameter Problem code 0: erroneous header field encountered (RFC 4443 3.4).
pub const PARAM_PROBLEM_ERRONEOUS_FIELD: u8 = 0;
/// Parameter Problem code 2: unrecognized IPv6 option encountered (RFC 4443 3.4, RFC 8200 4.2).
pub const PARAM_PROBLEM_UNRECOGNIZED_OPTION: u8 = 2;
/// Parameter Problem code 4: SR Upper-layer Header Error (RFC 8986 section 4.1.1 / 10.2).
pub const PARAM_PROBLEM_SR_UPPER_LAYER: u8 = 4;
/// Neighbor Solicitation.
pub const NDP_NEIGHBOR_SOLICIT: u8 = icmpv6::Message::NEIGHBOR_SOLICIT.0;
/// Neighbor Advertisement.
pub const NDP_NEIGHBOR_ADVERT: u8 = icmpv6::Message::NEIGHBOR_ADVERT.0;

/// An ICMPv6 error message, including its invoking packet, must not exceed the minimum IPv6 MTU
/// (RFC 4443 section 2.4 (c)).
pub const MIN_MTU: usize = icmpv6::MAX_ERROR_PACKET_LEN;

/// Token bucket for ICMPv6 errors (RFC 4443 section 2.4 (f)). Tokens are kept scaled by 1e9 so
/// refill is exact integer arithmetic on nanoseconds.
#[derive(Debug, Clone)]
pub(crate) struct RateLimiter {
    /// Scaled tokens.
    tokens: u64,
    cap: u64,
    rate: u64,
    last: Instant,
}

const SCALE: u64 = 1_000_000_000;

impl RateLimiter {
    pub(crate) fn new(cfg: IcmpConfig) -> RateLimiter {
        let cap = u64::from(cfg.burst).saturating_mul(SCALE);
        RateLimiter {
            tokens: cap,
            cap,
            rate: u64::from(cfg.rate_per_sec),
            last: Instant::ZERO,
        }
    }

    /// Takes one token if available.
    pub(crate) fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.as_nanos().saturating_sub(self.last.as_nanos());
        if now > self.last {
            self.last = now;
        }
        self.tokens = self
            .tokens
            .saturating_add(elapsed.saturating_mul(self.rate))
            .min(self.cap);
        if self.tokens >= SCALE {
            self.tokens -= SCALE;
            true
        } else {
            false
        }
    }
}

/// Writes an IPv6 packet carrying an ICMPv6 error into `out` and returns its length
/// ([`icmpv6::emit_error`]: the invoking packet is truncated so the whole message fits in
/// [`MIN_MTU`]).
pub(crate) fn emit_error(
    out: &mut [u8],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    ty: u8,
    code: u8,
    param: u32,
    invoking: &[u8],
) -> usize {
    icmpv6::emit_error(out, src, dst, icmpv6::Message(ty), code, param, invoking)
}

/// ICMPv4 Destination Unreachable (RFC 792).
pub const ICMPV4_DEST_UNREACHABLE: u8 = 3;
/// Destination Unreachable code 0: network unreachable (no route, RFC 1812 5.2.7.1).
pub const ICMPV4_NET_UNREACHABLE: u8 = 0;
/// Destination Unreachable code 4: fragmentation needed and DF set (RFC 1191 4).
pub const ICMPV4_FRAG_NEEDED: u8 = 4;
/// ICMPv4 Time Exceeded (RFC 792; code 0: TTL exceeded in transit).
pub const ICMPV4_TIME_EXCEEDED: u8 = 11;
/// The longest ICMPv4 error this node sends, invoking packet included (RFC 1812 4.3.2.3:
/// as much of the original datagram as fits in 576 bytes).
pub const MAX_ICMPV4_ERROR: usize = 576;

/// Writes an IPv4 packet carrying the ICMPv4 error `ty`/`code` about `invoking` (an IPv4
/// packet, quoted up to [`MAX_ICMPV4_ERROR`] in all) into `out` and returns its length.
/// `next_mtu` goes into the low 16 bits of the second word (RFC 1191: fragmentation
/// needed; 0 otherwise). IPv4 header: TOS 0xc0 (internetwork control), TTL 64, no options.
pub(crate) fn emit_icmpv4_error(
    out: &mut [u8],
    src: u32,
    dst: u32,
    ty: u8,
    code: u8,
    next_mtu: u16,
    invoking: &[u8],
) -> usize {
    const IP: usize = 20;
    const ICMP: usize = 8;
    let quoted = invoking.len().min(MAX_ICMPV4_ERROR - IP - ICMP);
    let total = IP + ICMP + quoted;
    let o = &mut out[..total];
    o[0] = 0x45;
    o[1] = 0xc0;
    o[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    o[4..8].fill(0);
    o[8] = 64;
    o[9] = 1;
    o[10..12].fill(0);
    o[12..16].copy_from_slice(&src.to_be_bytes());
    o[16..20].copy_from_slice(&dst.to_be_bytes());
    let c = !checksum::data(&o[..IP]);
    o[10..12].copy_from_slice(&c.to_be_bytes());
    let m = &mut o[IP..];
    m[0] = ty;
    m[1] = code;
    m[2..6].fill(0);
    m[6..8].copy_from_slice(&next_mtu.to_be_bytes());
    m[ICMP..].copy_from_slice(&invoking[..quoted]);
    let c = !checksum::data(m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    total
}

/// Writes an IPv6 Neighbor Advertisement for `target` with a Target Link-Layer Address option
/// (RFC 4861 section 4.4) and returns its length (72 bytes).
pub(crate) fn emit_na(
    out: &mut [u8],
    target: Ipv6Addr,
    dst: Ipv6Addr,
    mac: [u8; 6],
    router: bool,
    solicited: bool,
) -> usize {
    const LEN: usize = 32;
    let total = ipv6::HEADER_LEN + LEN;
    ipv6::emit_header(out, target, dst, IpProtocol::ICMPV6, LEN as u16, 255);
    let m = &mut out[ipv6::HEADER_LEN..total];
    m.fill(0);
    m[0] = NDP_NEIGHBOR_ADVERT;
    m[4] = (u8::from(router) << 7) | (u8::from(solicited) << 6) | (1 << 5);
    m[8..24].copy_from_slice(&target.octets());
    m[24] = 2; // Target Link-Layer Address
    m[25] = 1; // 8 octets
    m[26..32].copy_from_slice(&mac);
    icmpv6::Packet::new_unchecked(m).fill_checksum(&target, &dst);
    total
}

/// Number of generated packets that can wait for `poll_transmit`.
pub const GEN_QUEUE_SLOTS: usize = 64;
const GEN_SLOT_SIZE: usize = ethernet::HEADER_LEN + MIN_MTU;
const _: () = assert!(MAX_ICMPV4_ERROR <= MIN_MTU);

/// A FIFO of generated frames (ICMP errors, neighbor and ARP replies), in storage allocated
/// once, when the first frame is generated: 83 KB an engine that never generates a frame (most
/// of a simulated data center's, every scratch engine) does not hold. Generated frames are
/// the slow path (ICMP errors are rate-limited); no frame allocates after the first.
#[derive(Debug, Clone)]
pub(crate) struct GenQueue {
    bufs: Vec<u8>,
    meta: [(PortId, u16); GEN_QUEUE_SLOTS],
    head: usize,
    count: usize,
    /// False for an engine that only validates a configuration: the queue is always full.
    enabled: bool,
}

impl GenQueue {
    pub(crate) fn new() -> GenQueue {
        GenQueue {
            enabled: true,
            ..GenQueue::unallocated()
        }
    }

    /// A queue that never takes a frame (for an engine that only validates a
    /// configuration).
    pub(crate) fn unallocated() -> GenQueue {
        GenQueue {
            bufs: Vec::new(),
            meta: [(PortId(0), 0); GEN_QUEUE_SLOTS],
            head: 0,
            count: 0,
            enabled: false,
        }
    }

    /// Queues a frame for `port`: writes the Ethernet header, then `fill` writes the IPv6
    /// packet after it and returns its length. `false` if the queue is full.
    pub(crate) fn push(
        &mut self,
        port: PortId,
        dst_mac: &[u8],
        src_mac: &[u8],
        fill: impl FnOnce(&mut [u8]) -> usize,
    ) -> bool {
        self.push_typed(port, dst_mac, src_mac, ethernet::EtherType::IPV6, fill)
    }

    /// [`GenQueue::push`] of a packet of another EtherType (IPv4).
    pub(crate) fn push_typed(
        &mut self,
        port: PortId,
        dst_mac: &[u8],
        src_mac: &[u8],
        ethertype: ethernet::EtherType,
        fill: impl FnOnce(&mut [u8]) -> usize,
    ) -> bool {
        if self.count == GEN_QUEUE_SLOTS || !self.enabled {
            return false;
        }
        if self.bufs.is_empty() {
            self.bufs = vec![0; GEN_QUEUE_SLOTS * GEN_SLOT_SIZE];
        }
        let i = (self.head + self.count) % GEN_QUEUE_SLOTS;
        let slot = &mut self.bufs[i * GEN_SLOT_SIZE..(i + 1) * GEN_SLOT_SIZE];
        slot[0..6].copy_from_slice(dst_mac);
        slot[6..12].copy_from_slice(src_mac);
        slot[12..14].copy_from_slice(&ethertype.0.to_be_bytes());
        let n = fill(&mut slot[ethernet::HEADER_LEN..]);
        self.meta[i] = (port, (ethernet::HEADER_LEN + n) as u16);
        self.count += 1;
        true
    }

    /// Moves the oldest frame into `out`.
    pub(crate) fn pop_into(&mut self, out: &mut PacketBuf) -> Option<PortId> {
        if self.count == 0 {
            return None;
        }
        let i = self.head;
        let (port, len) = self.meta[i];
        self.head = (self.head + 1) % GEN_QUEUE_SLOTS;
        self.count -= 1;
        let frame = &self.bufs[i * GEN_SLOT_SIZE..i * GEN_SLOT_SIZE + usize::from(len)];
        // A generated frame is at most GEN_SLOT_SIZE < BUF_CAPACITY bytes.
        out.set_data(frame).ok()?;
        Some(port)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limiter_refills() {
        let mut r = RateLimiter::new(IcmpConfig {
            rate_per_sec: 10,
            burst: 2,
        });
        let t0 = Instant::from_millis(1000);
        assert!(r.allow(t0));
        assert!(r.allow(t0));
        assert!(!r.allow(t0));
        // 100 ms gives one token at 10/s
        assert!(!r.allow(t0 + core::time::Duration::from_millis(99)));
        assert!(r.allow(t0 + core::time::Duration::from_millis(100)));
        assert!(!r.allow(t0 + core::time::Duration::from_millis(100)));
        // never more than the burst
        let later = t0 + core::time::Duration::from_secs(100);
        assert!(r.allow(later) && r.allow(later) && !r.allow(later));
    }

    #[test]
    fn error_is_truncated_and_checksummed() {
        let mut out = [0u8; 1500];
        let invoking = [0xabu8; 1400];
        let src = Ipv6Addr::from([1u8; 16]);
        let dst = Ipv6Addr::from([2u8; 16]);
        let n = emit_error(&mut out, src, dst, ICMPV6_PARAM_PROBLEM, 0, 43, &invoking);
        assert_eq!(n, MIN_MTU);
        assert_eq!(u16::from_be_bytes([out[4], out[5]]) as usize, MIN_MTU - 40);
        assert_eq!(&out[40..48], &[4, 0, out[42], out[43], 0, 0, 0, 43]);
        assert!(icmpv6::Packet::new_unchecked(&out[40..n]).verify_checksum(&src, &dst));
    }

    #[test]
    fn neighbor_advertisement() {
        let mut out = [0u8; 128];
        let target: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let n = emit_na(&mut out, target, ALL, [2, 0, 0, 0, 0, 1], true, false);
        assert_eq!(n, 72);
        assert_eq!(&out[..8], &[0x60, 0, 0, 0, 0, 32, 58, 255]);
        assert_eq!(out[40], NDP_NEIGHBOR_ADVERT);
        assert_eq!(out[44], 0xa0); // router, override
        assert_eq!(&out[48..64], &target.octets());
        assert_eq!(&out[64..72], &[2, 1, 2, 0, 0, 0, 0, 1]);
        assert!(icmpv6::Packet::new_unchecked(&out[40..n]).verify_checksum(&target, &ALL));
    }

    const ALL: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

    #[test]
    fn queue_is_bounded_fifo() {
        let mut q = GenQueue::new();
        for i in 0..GEN_QUEUE_SLOTS {
            assert!(q.push(PortId(i as u16), &[1; 6], &[2; 6], |b| {
                b[0] = i as u8;
                1
            }));
        }
        assert!(!q.push(PortId(0), &[1; 6], &[2; 6], |_| 1));
        let mut p = PacketBuf::new();
        assert_eq!(q.pop_into(&mut p), Some(PortId(0)));
        assert_eq!(p.data().len(), 15);
        assert_eq!(&p.data()[12..15], &[0x86, 0xdd, 0]);
        assert_eq!(q.pop_into(&mut p), Some(PortId(1)));
        assert_eq!(p.data()[14], 1);
    }
}
