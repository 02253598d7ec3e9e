//! The in-kernel fast path: what an uplink's XDP program may forward without user space.
//!
//! srmigd's AF_XDP ports run an XDP program on every uplink. By default it hands every frame
//! to srmigd's socket. With the fast path on, it first tries two cases itself and hands over
//! only what they do not cover:
//!
//! - **transit IPv6**: a unicast packet without extension headers, routed by the port's table
//!   to an uplink adjacency;
//! - **End** (RFC 8986 4.1, no flavor, no C-SID) with Segments Left > 0 and an SRH without
//!   TLVs right after the IPv6 header, from inside the SR domain, whose next segment is
//!   routed like the first case;
//! - **End.DX6** (no flavor) at the last segment (or without an SRH) from inside the SR
//!   domain, to an uplink adjacency: the outer headers removed, the inner packet forwarded
//!   (hop limit decremented);
//! - **transit H.Encaps / H.Encaps.Red** (a `[[steering]]` rule of the port's table): the
//!   first case's packet, encapsulated with the policy's precomputed headers (RFC 8986 5.1:
//!   traffic class and flow label from the inner packet, or the engine's flow hash), routed
//!   by the main table to an uplink.
//!
//! They rewrite the frame in place (hop limit, Segments Left, DA, Ethernet addresses; the
//! encapsulation grows it at the front) and redirect it to the egress interface
//! (`bpf_redirect_map`): no copy to user space and back, no system call.
//!
//! This module is the sans-IO half: [`Dataplane::fast_table`] compiles, for one ingress
//! uplink, the engine's state into a [`FastTable`] (a longest-prefix table of destinations,
//! the adjacencies, the SR domain) that the I/O layer writes into the program's maps, and
//! [`FastTable::process`] is the program's behaviour in Rust: the reference the BPF program
//! (`crates/hostd/bpf/fastpath.c`) is tested against, and that is itself tested against the
//! engine (`Dataplane::process_packet`) here.
//!
//! ## How the table stays equivalent to the engine
//! The engine decides an uplink packet in this order (`uplink_v6`): local SID, local
//! address, proxy NDP target, extension headers, source checks, locator, hop limit, local VM,
//! transit steering, FIB. Every prefix that takes a packet anywhere but the FIB is put in the
//! table as [`FastAction::Punt`] (or [`FastAction::End`] for an eligible End SID), and a FIB
//! route becomes [`FastAction::Forward`] only if no such prefix of equal or shorter length
//! covers it; a longer one inside it wins the longest-prefix match. So a `Forward` answer
//! means the engine would forward the packet to the same adjacency, and a `Punt` costs only
//! speed: the engine then decides as always. What the table cannot see is per packet and is
//! checked by the program: the Ethernet destination, the hop limit, the source, extension
//! headers, the frame's length against the egress MTU and the Payload Length.
//!
//! ## VM ports
//! A VM port's table ([`Dataplane::fast_table`] of a VM port) covers what its VMs send to a
//! mapped destination (H.Encaps or H.Encaps.Red with the mapping's policy, then the main
//! table to an uplink) and to main-table routes. [`FastTable::sources`] lists the port's VMs'
//! IPv6 addresses: a frame from any other source is the engine's (which drops it as spoofed
//! or answers it as neighbour discovery). [`FastTable::process`] is the reference for a
//! program on a VM port; no I/O layer runs one yet (the uplinks' XDP program has no source
//! check and refuses such a table; the design of the VM ports' program, a TC program that
//! keeps the VMs' offloads, is in docs/perf.md, "the VM port's H.Encaps in the kernel").
//!
//! ## Counters
//! Each redirected frame counts in per-CPU slots ([`FastTable::counter_slots`]): the ingress
//! port's receive, the End SID's, the policy's, the egress port's transmit, and on a VM port
//! the sending VM's receive. The I/O layer reads them and adds them to the engine's counters
//! with [`Dataplane::credit_fast_path`], so `srmigd`'s counters and metrics read the same
//! whichever path a frame took.

use srmig_wire::ethernet::{self, EtherType};
use srmig_wire::ip::IpProtocol;
use srmig_wire::srh;

use crate::config::PortKind;
use crate::engine::Dataplane;
use std::collections::BTreeMap;

use super::{mask_of as mask, read_addr};
use crate::behavior::Headend;
use crate::config::FlowLabelMode;
use crate::fib::{Adjacency, TableIdx};
use crate::policy::PolicyId;
use crate::policy::Steering;
use crate::port::PortId;
use crate::sid::{SidAction, SidId};
use crate::vm::VmId;

/// The most adjacencies one fast table may hold.
pub const MAX_NEXTHOPS: usize = 256;
/// The most End SIDs one fast table may hold.
pub const MAX_END_SIDS: usize = 1024;
/// The most encapsulating policies one fast table may hold.
pub const MAX_ENCAPS: usize = 256;
/// The longest encapsulation (outer IPv6 header and SRH) the program writes: 40 + 8 + 5
/// segments; longer policies punt.
pub const MAX_REWRITE: usize = 128;
/// The most prefixes one fast table may hold.
pub const MAX_ROUTES: usize = 65_536;
/// The most End.DX6 SIDs one fast table may hold.
pub const MAX_DX6: usize = 256;
/// The most source addresses (its VMs' IPv6 addresses) a VM port's table may hold.
pub const MAX_SOURCES: usize = 256;
/// Counter slots: receive, one per adjacency, one per End SID, one per policy, one per
/// End.DX6 SID, one per source address of a VM port.
pub const COUNTER_SLOTS: usize =
    1 + MAX_NEXTHOPS + MAX_END_SIDS + MAX_ENCAPS + MAX_DX6 + MAX_SOURCES;

/// What the table says of a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FastAction {
    /// To the engine.
    Punt,
    /// Forward to `nexthops[i]`.
    Forward(u16),
    /// The End SID `ends[i]`: step to the next segment, then forward it like a `Forward`.
    End(u16),
    /// Encapsulate with `encaps[i]` (a transit steering rule).
    Encap(u16),
    /// The End.DX6 SID `dx6s[i]`: decapsulate and forward the inner packet.
    Dx6(u16),
}

/// An End.DX6 SID of a fast table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FastDx6 {
    /// The SID (for its counter).
    pub sid: SidId,
    /// Its adjacency.
    pub nexthop: u16,
}

/// An encapsulating policy of a fast table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastEncap {
    /// The policy (for its counter).
    pub policy: PolicyId,
    /// Outer IPv6 header and SRH, as the engine writes them (a multiple of 8 bytes, at most
    /// [`MAX_REWRITE`]).
    pub rewrite: Vec<u8>,
    /// Offset of the SRH's Next Header in `rewrite`, or of the outer header's.
    pub next_header_at: u16,
    /// Flow label: the engine's hash of the inner packet (else copied from it).
    pub hash: bool,
    /// Where the encapsulated packet goes (its first segment routed by the main table).
    pub nexthop: u16,
}

/// One prefix of a fast table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FastRoute {
    /// The network (host bits clear).
    pub addr: u128,
    /// Prefix length.
    pub len: u8,
    /// Its action.
    pub action: FastAction,
}

/// An adjacency of a fast table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FastNexthop {
    /// Egress port (an uplink).
    pub port: PortId,
    /// Destination MAC.
    pub dst_mac: [u8; 6],
    /// Source MAC.
    pub src_mac: [u8; 6],
    /// The longest frame the egress port may send (Ethernet header included).
    pub max_frame: u32,
}

/// Where a counter slot's counts go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterSlot {
    /// The ingress port's receive counter.
    Rx(PortId),
    /// A port's transmit counter.
    Tx(PortId),
    /// A SID's counter.
    Sid(SidId),
    /// A policy's counter.
    Policy(PolicyId),
    /// A VM's receive counter (what it sent into its port).
    VmRx(VmId),
}

/// A source address a VM port accepts: one of the IPv6 addresses of a VM attached to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FastSource {
    /// The address.
    pub addr: u128,
    /// Its VM (for its receive counter).
    pub vm: VmId,
}

/// What the fast path of one ingress port may do (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastTable {
    /// The ingress port.
    pub port: PortId,
    /// Its MAC: only frames to it are handled.
    pub port_mac: [u8; 6],
    /// Whether End may be handled at all on this port (its table is the main one, and an SRH
    /// without TLVs passes its HMAC mode).
    pub end_ok: bool,
    /// The prefixes, longest first.
    pub routes: Vec<FastRoute>,
    /// The adjacencies `Forward` points at.
    pub nexthops: Vec<FastNexthop>,
    /// The End SIDs `End` points at.
    pub ends: Vec<SidId>,
    /// The policies `Encap` points at.
    pub encaps: Vec<FastEncap>,
    /// The End.DX6 SIDs `Dx6` points at.
    pub dx6s: Vec<FastDx6>,
    /// Whether an SRH without TLVs passes the port's HMAC mode (End.DX6).
    pub srh_ok: bool,
    /// The SR domain (`infrastructure`): End only for sources inside it.
    pub domain: Vec<(u128, u8)>,
    /// `None` for an uplink. For a VM port, the only sources it forwards: its VMs' IPv6
    /// addresses (the engine's source check), and `port_mac` is the gateway MAC its VMs send
    /// to.
    pub sources: Option<Vec<FastSource>>,
    /// A second MAC frames may be sent to: a VM port's own (the engine takes a VM's frames
    /// to the gateway MAC and to its port's MAC). `None` for an uplink.
    pub also_mac: Option<[u8; 6]>,
}

/// The outcome of [`FastTable::process`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FastOutcome {
    /// Handed to the engine, the frame untouched.
    Punt,
    /// Rewritten and sent to `nexthops[nexthop]`.
    Redirect {
        /// Index into [`FastTable::nexthops`].
        nexthop: u16,
        /// What was done.
        kind: FastKind,
    },
}

/// What the fast path did to a frame it forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FastKind {
    /// Transit forwarding.
    Forward,
    /// End, at `ends[i]`.
    End(u16),
    /// H.Encaps(.Red) with `encaps[i]`.
    Encap(u16),
    /// End.DX6 at `dx6s[i]`.
    Dx6(u16),
}

/// The IPv6 header's offset in a frame.
const IP: usize = ethernet::HEADER_LEN;
const HOP_LIMIT: usize = IP + 7;
const NEXT_HEADER: usize = IP + 6;
const SRC: usize = IP + 8;
const DST: usize = IP + 24;
const SRH: usize = IP + 40;

fn covers(net: u128, len: u8, addr: u128, addr_len: u8) -> bool {
    len <= addr_len && addr & mask(len) == net
}

/// Whether one of the prefixes `by` holds the prefix `addr/len`.
fn covered(addr: u128, len: u8, by: &[(u128, u8)]) -> bool {
    by.iter().any(|&(n, l)| covers(n & mask(l), l, addr, len))
}

/// The table's prefixes, longest first, or `None` if there are more than the program holds.
fn route_list(routes: BTreeMap<(u8, u128), FastAction>) -> Option<Vec<FastRoute>> {
    if routes.len() > MAX_ROUTES {
        return None;
    }
    Some(
        routes
            .into_iter()
            .rev()
            .map(|((len, addr), action)| FastRoute { addr, len, action })
            .collect(),
    )
}

/// The adjacencies and encapsulations a table under construction points at.
struct Targets<'a> {
    dp: &'a Dataplane,
    egress_ok: &'a dyn Fn(PortId) -> bool,
    nexthops: Vec<FastNexthop>,
    encaps: Vec<FastEncap>,
}

impl<'a> Targets<'a> {
    fn new(dp: &'a Dataplane, egress_ok: &'a dyn Fn(PortId) -> bool) -> Targets<'a> {
        Targets {
            dp,
            egress_ok,
            nexthops: Vec::new(),
            encaps: Vec::new(),
        }
    }

    /// The index of adjacency `adj` (added if new), if the program may send there: an uplink
    /// the I/O layer redirects to, within [`MAX_NEXTHOPS`].
    fn nexthop(&mut self, adj: Adjacency) -> Option<u16> {
        let q = self.dp.ports.get(adj.port.index())?;
        if q.kind != PortKind::Uplink || !(self.egress_ok)(adj.port) {
            return None;
        }
        let n = FastNexthop {
            port: adj.port,
            dst_mac: adj.dst_mac,
            src_mac: adj.src_mac,
            max_frame: q.max_frame as u32,
        };
        match self.nexthops.iter().position(|x| *x == n) {
            Some(i) => Some(i as u16),
            None if self.nexthops.len() < MAX_NEXTHOPS => {
                self.nexthops.push(n);
                Some((self.nexthops.len() - 1) as u16)
            }
            None => None,
        }
    }

    /// Adds the routes `fib` to `routes` (prefixes already there keep their action): each
    /// `Forward` to its adjacency, or `Punt` where a prefix of `punts` or `steered` (which the
    /// engine looks at before the FIB) covers it or the program may not send there.
    fn add_fib_routes(
        &mut self,
        routes: &mut BTreeMap<(u8, u128), FastAction>,
        fib: impl Iterator<Item = (u128, u8, Adjacency)>,
        punts: &[(u128, u8)],
        steered: &[(u128, u8)],
    ) {
        for (addr, len, adj) in fib {
            let action = if covered(addr, len, punts) || covered(addr, len, steered) {
                FastAction::Punt
            } else {
                self.nexthop(adj)
                    .map_or(FastAction::Punt, FastAction::Forward)
            };
            routes.entry((len, addr)).or_insert(action);
        }
    }

    /// `Encap` with policy `pid`: an active H.Encaps(.Red) whose headers the program can write
    /// and whose first segment the main table `main` routes to an uplink outside the locator;
    /// else `Punt`.
    fn encap(&mut self, main: &crate::fib::FibTable, pid: PolicyId) -> FastAction {
        let Some(pol) = self.dp.policies.get(pid.index()).filter(|pol| {
            pol.active
                && matches!(pol.headend, Headend::HEncaps | Headend::HEncapsRed)
                && pol.rewrite.len() <= MAX_REWRITE
                && pol.rewrite.len() % 8 == 0
                && pol.rewrite.len() >= 40
                && self.encaps.len() < MAX_ENCAPS
        }) else {
            return FastAction::Punt;
        };
        let first = read_addr(&pol.rewrite, 24);
        if self.dp.in_locator(first) {
            return FastAction::Punt;
        }
        let Some((_, adj)) = main.v6.lookup(first) else {
            return FastAction::Punt;
        };
        let next_header_at = match pol.srh_offset {
            Some(o) => o + srh::FIELD_NEXT_HEADER,
            None => 6,
        };
        let (Some(nexthop), Ok(next_header_at)) =
            (self.nexthop(adj), u16::try_from(next_header_at))
        else {
            return FastAction::Punt;
        };
        // One entry per policy: a VM port's table maps many destinations to one.
        if let Some(i) = self.encaps.iter().position(|e| e.policy == pid) {
            return FastAction::Encap(i as u16);
        }
        self.encaps.push(FastEncap {
            policy: pid,
            rewrite: pol.rewrite.clone(),
            next_header_at,
            hash: pol.flow_label == FlowLabelMode::Hash,
            nexthop,
        });
        FastAction::Encap((self.encaps.len() - 1) as u16)
    }
}

/// The inner IPv6 packet's offset in an End.DX6 frame: right after the IPv6 header (Next
/// Header 41), or after an SRH at Segments Left 0 without TLVs whose Next Header is 41;
/// `None` for anything else (the engine decides those).
fn dx6_inner(b: &[u8]) -> Option<usize> {
    let inner = match IpProtocol(b[NEXT_HEADER]) {
        IpProtocol::IPV6 => SRH,
        IpProtocol::ROUTING => {
            let s = b.get(SRH..SRH + 8)?;
            let srh_len = (usize::from(s[srh::FIELD_HDR_EXT_LEN]) + 1) * 8;
            let le = usize::from(s[srh::FIELD_LAST_ENTRY]);
            if s[srh::FIELD_NEXT_HEADER] != IpProtocol::IPV6.0
                || s[srh::FIELD_ROUTING_TYPE] != srh::ROUTING_TYPE
                || s[srh::FIELD_SEGMENTS_LEFT] != 0
                || SRH + srh_len > b.len()
                || srh::FIELD_SEGMENT_LIST + 16 * (le + 1) < srh_len
            {
                return None;
            }
            SRH + srh_len
        }
        _ => return None,
    };
    (inner + 40 <= b.len()).then_some(inner)
}

impl FastTable {
    /// The longest prefix of the table that holds `addr`.
    pub fn lookup(&self, addr: u128) -> Option<FastAction> {
        self.routes
            .iter()
            .filter(|r| covers(r.addr, r.len, addr, 128))
            .max_by_key(|r| r.len)
            .map(|r| r.action)
    }

    fn in_domain(&self, src: u128) -> bool {
        self.domain.iter().any(|&(n, l)| covers(n, l, src, 128))
    }

    /// Counter slot `i`'s destination: 0 is the port's receive, `1 + n` the transmit of
    /// `nexthops[n]`'s port, `1 + MAX_NEXTHOPS + e` the End SID `ends[e]`.
    pub fn counter_slots(&self) -> Vec<(u32, CounterSlot)> {
        let mut v = vec![(0, CounterSlot::Rx(self.port))];
        for (i, n) in self.nexthops.iter().enumerate() {
            v.push((1 + i as u32, CounterSlot::Tx(n.port)));
        }
        for (i, s) in self.ends.iter().enumerate() {
            v.push(((1 + MAX_NEXTHOPS + i) as u32, CounterSlot::Sid(*s)));
        }
        for (i, e) in self.encaps.iter().enumerate() {
            let slot = 1 + MAX_NEXTHOPS + MAX_END_SIDS + i;
            v.push((slot as u32, CounterSlot::Policy(e.policy)));
        }
        for (i, d) in self.dx6s.iter().enumerate() {
            let slot = 1 + MAX_NEXTHOPS + MAX_END_SIDS + MAX_ENCAPS + i;
            v.push((slot as u32, CounterSlot::Sid(d.sid)));
        }
        for (i, src) in self.sources.iter().flatten().enumerate() {
            let slot = 1 + MAX_NEXTHOPS + MAX_END_SIDS + MAX_ENCAPS + MAX_DX6 + i;
            v.push((slot as u32, CounterSlot::VmRx(src.vm)));
        }
        v
    }

    /// The index of `src` among a VM port's sources; `None` for an address none of its VMs
    /// has (and for every address on an uplink).
    pub fn source(&self, src: u128) -> Option<u16> {
        let i = self.sources.as_ref()?.iter().position(|s| s.addr == src)?;
        Some(i as u16)
    }

    /// The XDP program's behaviour on `frame` (received on [`FastTable::port`]): rewrites it
    /// and says where it goes, or leaves it untouched for the engine.
    pub fn process(&self, frame: &mut Vec<u8>) -> FastOutcome {
        let Some((nexthop, kind)) = self.decide(frame) else {
            return FastOutcome::Punt;
        };
        let n = self.nexthops[usize::from(nexthop)];
        if let FastKind::Dx6(_) = kind {
            let inner = dx6_inner(frame).unwrap_or(IP);
            frame[inner + 7] -= 1;
            frame.drain(IP..inner);
            frame[12..14].copy_from_slice(&EtherType::IPV6.0.to_be_bytes());
        } else {
            frame[HOP_LIMIT] -= 1;
        }
        match kind {
            FastKind::Forward | FastKind::Dx6(_) => {}
            FastKind::End(_) => {
                let sl = frame[SRH + srh::FIELD_SEGMENTS_LEFT] - 1;
                frame[SRH + srh::FIELD_SEGMENTS_LEFT] = sl;
                let seg = SRH + srh::FIELD_SEGMENT_LIST + 16 * usize::from(sl);
                frame.copy_within(seg..seg + 16, DST);
            }
            FastKind::Encap(k) => {
                let e = &self.encaps[usize::from(k)];
                let w =
                    u32::from_be_bytes([frame[IP], frame[IP + 1], frame[IP + 2], frame[IP + 3]]);
                let fl = if e.hash {
                    super::flow_hash(frame, IP, true)
                } else {
                    w & 0x000f_ffff
                };
                let inner_len = frame.len() - IP;
                let mut out = frame[..IP].to_vec();
                out.extend_from_slice(&e.rewrite);
                out.extend_from_slice(&frame[IP..]);
                let w = (6u32 << 28) | (((w >> 20) & 0xff) << 20) | fl;
                out[IP..IP + 4].copy_from_slice(&w.to_be_bytes());
                let payload = (e.rewrite.len() - 40 + inner_len) as u16;
                out[IP + 4..IP + 6].copy_from_slice(&payload.to_be_bytes());
                out[IP + usize::from(e.next_header_at)] = IpProtocol::IPV6.0;
                *frame = out;
            }
        }
        frame[0..6].copy_from_slice(&n.dst_mac);
        frame[6..12].copy_from_slice(&n.src_mac);
        FastOutcome::Redirect { nexthop, kind }
    }

    fn forward_to(&self, action: Option<FastAction>, frame_len: usize) -> Option<u16> {
        let Some(FastAction::Forward(i)) = action else {
            return None;
        };
        let n = self.nexthops.get(usize::from(i))?;
        (frame_len <= n.max_frame as usize).then_some(i)
    }

    fn decide(&self, b: &[u8]) -> Option<(u16, FastKind)> {
        let len = b.len();
        let to_us = b.len() >= 6
            && (b[0..6] == self.port_mac
                || Some(&b[0..6]) == self.also_mac.as_ref().map(|m| &m[..]));
        if len < IP + 40 || !to_us || b[12..14] != EtherType::IPV6.0.to_be_bytes() {
            return None;
        }
        if b[IP] >> 4 != 6
            || usize::from(u16::from_be_bytes([b[IP + 4], b[IP + 5]])) + IP + 40 != len
        {
            return None;
        }
        let (src, dst) = (read_addr(b, SRC), read_addr(b, DST));
        if dst >> 120 == 0xff || src >> 120 == 0xff || src <= 1 || src >> 118 == 0xfe80 >> 6 {
            return None;
        }
        if self.sources.is_some() && self.source(src).is_none() {
            return None;
        }
        if b[HOP_LIMIT] <= 1 {
            return None;
        }
        let nh = IpProtocol(b[NEXT_HEADER]);
        match self.lookup(dst)? {
            FastAction::Punt => None,
            a @ FastAction::Forward(_) => {
                if nh.is_ipv6_ext() {
                    return None;
                }
                Some((self.forward_to(Some(a), len)?, FastKind::Forward))
            }
            FastAction::Dx6(k) => {
                let d = self.dx6s.get(usize::from(k))?;
                if !self.srh_ok || !self.in_domain(src) {
                    return None;
                }
                let inner = dx6_inner(b)?;
                let i = &b[inner..];
                let inner_src_hi = (read_addr(i, 8) >> 64) as u64;
                if i[0] >> 4 != 6
                    || usize::from(u16::from_be_bytes([i[4], i[5]])) + 40 != i.len()
                    || inner_src_hi >> 56 == 0xff
                    || inner_src_hi >> 54 == 0xfe80 >> 6
                    || inner_src_hi == 0
                    || i[7] <= 1
                {
                    return None;
                }
                let n = self.nexthops.get(usize::from(d.nexthop))?;
                (IP + i.len() <= n.max_frame as usize).then_some((d.nexthop, FastKind::Dx6(k)))
            }
            FastAction::Encap(k) => {
                if nh.is_ipv6_ext() {
                    return None;
                }
                let e = self.encaps.get(usize::from(k))?;
                let n = self.nexthops.get(usize::from(e.nexthop))?;
                (len + e.rewrite.len() <= n.max_frame as usize)
                    .then_some((e.nexthop, FastKind::Encap(k)))
            }
            FastAction::End(e) => {
                if !self.end_ok || nh != IpProtocol::ROUTING || !self.in_domain(src) {
                    return None;
                }
                let s = b.get(SRH..SRH + 8)?;
                let srh_len = (usize::from(s[srh::FIELD_HDR_EXT_LEN]) + 1) * 8;
                if IpProtocol(s[srh::FIELD_NEXT_HEADER]).is_ipv6_ext()
                    || SRH + srh_len > len
                    || s[srh::FIELD_ROUTING_TYPE] != srh::ROUTING_TYPE
                {
                    return None;
                }
                let (hel, sl, le) = (
                    usize::from(s[srh::FIELD_HDR_EXT_LEN]),
                    usize::from(s[srh::FIELD_SEGMENTS_LEFT]),
                    usize::from(s[srh::FIELD_LAST_ENTRY]),
                );
                if sl == 0 || hel < 2 || le > hel / 2 - 1 || sl > le + 1 {
                    return None;
                }
                // A TLV area: HMAC and TLV checks are the engine's.
                if srh::FIELD_SEGMENT_LIST + 16 * (le + 1) < srh_len {
                    return None;
                }
                let seg = SRH + srh::FIELD_SEGMENT_LIST + 16 * (sl - 1);
                if b[seg] == 0xff {
                    return None;
                }
                let next = read_addr(b, seg);
                Some((self.forward_to(self.lookup(next), len)?, FastKind::End(e)))
            }
        }
    }
}

impl Dataplane {
    /// The fast table of `port` (see the module doc: an uplink's, or a VM port's with its
    /// sources), or `None` for an unknown port or a table too large for the program's maps. `egress_ok` says which
    /// ports frames may be redirected to (the I/O layer's XDP ports); routes to others punt.
    pub fn fast_table(
        &self,
        port: PortId,
        egress_ok: &dyn Fn(PortId) -> bool,
    ) -> Option<FastTable> {
        let p = self.ports.get(port.index())?;
        if p.kind == PortKind::Vm {
            return self.vm_fast_table(port, egress_ok);
        }
        let table = p.table;
        let fib = self.fib.table(table)?;
        let main = self.fib.table(TableIdx(0))?;
        let end_ok = table == TableIdx(0) && self.hmac.passes_without_tlvs(port);
        // Everything the engine looks at before the FIB, but the steering rules.
        let mut punts: Vec<(u128, u8)> = Vec::new();
        for n in &self.locator_nets {
            punts.push((u128::from(n.network()), n.prefix_len()));
        }
        for (a, m) in &self.extra_locators {
            punts.push((*a, m.count_ones() as u8));
        }
        punts.extend(self.local_addrs.iter().map(|&a| (a, 128)));
        for q in &self.ports {
            punts.extend(q.proxy_ndp.iter().map(|&a| (u128::from(a), 128)));
        }
        punts.extend(self.vms.vm_v6_addrs().map(|a| (a, 128)));
        for e in self.sids.entries.iter().flatten() {
            punts.push((u128::from(e.sid) & mask(e.prefix_len()), e.prefix_len()));
        }
        let mut to = Targets::new(self, egress_ok);
        // (len, addr) -> action; the first to claim a prefix keeps it, in the engine's order.
        let mut routes: BTreeMap<(u8, u128), FastAction> = BTreeMap::new();
        let mut ends = Vec::new();
        let mut dx6s: Vec<FastDx6> = Vec::new();
        let srh_ok = self.hmac.passes_without_tlvs(port);
        for (i, e) in self.sids.entries.iter().enumerate() {
            let Some(e) = e else { continue };
            let (addr, len) = (u128::from(e.sid) & mask(e.prefix_len()), e.prefix_len());
            let eligible = matches!(e.action, SidAction::End)
                && e.flavors == crate::behavior::FlavorSet::EMPTY
                && e.csid.is_none()
                && end_ok
                && ends.len() < MAX_END_SIDS;
            let plain = e.flavors == crate::behavior::FlavorSet::EMPTY && e.csid.is_none();
            let action = if eligible {
                ends.push(SidId(i as u32));
                FastAction::End((ends.len() - 1) as u16)
            } else if let (SidAction::EndDx6(adj), true, true) =
                (e.action, plain, dx6s.len() < MAX_DX6)
            {
                match to.nexthop(adj) {
                    Some(nexthop) => {
                        dx6s.push(FastDx6 {
                            sid: SidId(i as u32),
                            nexthop,
                        });
                        FastAction::Dx6((dx6s.len() - 1) as u16)
                    }
                    None => FastAction::Punt,
                }
            } else {
                FastAction::Punt
            };
            routes.entry((len, addr)).or_insert(action);
        }
        for &(a, l) in &punts {
            routes.entry((l, a & mask(l))).or_insert(FastAction::Punt);
        }
        // Steering rules: H.Encaps(.Red) to an uplink through the main table.
        let steer: Vec<(u128, u8, PolicyId)> = fib.steer_v6.iter().collect();
        for &(addr, len, pid) in &steer {
            let action = if covered(addr, len, &punts) {
                FastAction::Punt
            } else {
                to.encap(main, pid)
            };
            routes.entry((len, addr)).or_insert(action);
        }
        let steer_punts: Vec<(u128, u8)> = steer.iter().map(|&(a, l, _)| (a, l)).collect();
        to.add_fib_routes(&mut routes, fib.v6.iter(), &punts, &steer_punts);
        let routes = route_list(routes)?;
        let domain = self
            .infrastructure
            .iter()
            .map(|&(n, m)| (n, m.count_ones() as u8))
            .collect();
        Some(FastTable {
            port,
            port_mac: p.mac,
            end_ok,
            routes,
            nexthops: to.nexthops,
            ends,
            encaps: to.encaps,
            dx6s,
            srh_ok,
            domain,
            sources: None,
            also_mac: None,
        })
    }

    /// The fast table of VM port `port`: what its VMs send that the engine would encapsulate
    /// with a mapping's policy (or forward by the main table) to an uplink. The engine
    /// decides a VM's packet in this order (`vm_port_v6`): source (one of the port's VMs),
    /// multicast or gateway destination, extension headers, local SID, hop limit, local VM,
    /// the destination's mapping (its /128 entry, else the longest mapping prefix), then the
    /// locator and the main table. So: the sources are listed; what precedes the mapping
    /// (multicast, the gateway, SIDs, local VMs) is `Punt`, and so is a mapping under one of
    /// them; a mapping to an H.Encaps(.Red) policy becomes `Encap` (`Native` mappings punt:
    /// not worth a case of their own); the locator punts; a main-table route becomes
    /// `Forward` only where no punt and no mapping covers it.
    fn vm_fast_table(&self, port: PortId, egress_ok: &dyn Fn(PortId) -> bool) -> Option<FastTable> {
        let main = self.fib.table(TableIdx(0))?;
        let mut sources = Vec::new();
        for (i, vm) in self.vms.vms.iter().enumerate() {
            if vm.port != port {
                continue;
            }
            for a in &vm.addresses {
                if let std::net::IpAddr::V6(a) = a {
                    sources.push(FastSource {
                        addr: u128::from(*a),
                        vm: VmId(i as u32),
                    });
                }
            }
        }
        if sources.len() > MAX_SOURCES {
            return None;
        }
        let mut before_mapping: Vec<(u128, u8)> = vec![
            (0xffu128 << 120, 8),
            (u128::from_be_bytes(self.gateway), 128),
        ];
        for e in self.sids.entries.iter().flatten() {
            before_mapping.push((u128::from(e.sid) & mask(e.prefix_len()), e.prefix_len()));
        }
        before_mapping.extend(self.vms.vm_v6_addrs().map(|a| (a, 128)));
        let mut routes: BTreeMap<(u8, u128), FastAction> = BTreeMap::new();
        for &(a, l) in &before_mapping {
            routes.entry((l, a & mask(l))).or_insert(FastAction::Punt);
        }
        let mut to = Targets::new(self, egress_ok);
        let mut mapped: Vec<(u128, u8)> = Vec::new();
        let exact = self
            .vms
            .v6_steering()
            .map(|(a, s)| (a, 128, s))
            .chain(self.mappings.v6.iter());
        for (addr, len, steering) in exact {
            mapped.push((addr, len));
            let action = match steering {
                Steering::Policy(pid) if !covered(addr, len, &before_mapping) => {
                    to.encap(main, pid)
                }
                _ => FastAction::Punt,
            };
            routes.entry((len, addr)).or_insert(action);
        }
        let mut punts = before_mapping;
        for n in &self.locator_nets {
            punts.push((u128::from(n.network()), n.prefix_len()));
        }
        for (a, m) in &self.extra_locators {
            punts.push((*a, m.count_ones() as u8));
        }
        for &(a, l) in &punts {
            routes.entry((l, a & mask(l))).or_insert(FastAction::Punt);
        }
        to.add_fib_routes(&mut routes, main.v6.iter(), &punts, &mapped);
        Some(FastTable {
            port,
            port_mac: self.gateway_mac,
            end_ok: false,
            routes: route_list(routes)?,
            nexthops: to.nexthops,
            ends: Vec::new(),
            encaps: to.encaps,
            dx6s: Vec::new(),
            srh_ok: false,
            domain: Vec::new(),
            sources: Some(sources),
            also_mac: Some(self.ports.get(port.index())?.mac),
        })
    }

    /// Adds what the fast path forwarded (read from its counter slots) to the engine's
    /// counters: `packets` and `bytes` more in `slot`'s counter.
    pub fn credit_fast_path(&mut self, slot: CounterSlot, packets: u64, bytes: u64) {
        let c = match slot {
            CounterSlot::Rx(p) => self.counters.ports.get_mut(p.index()).map(|c| &mut c.rx),
            CounterSlot::Tx(p) => self.counters.ports.get_mut(p.index()).map(|c| &mut c.tx),
            CounterSlot::Sid(s) => self.counters.sids.get_mut(s.index()),
            CounterSlot::Policy(p) => self.counters.policies.get_mut(p.index()),
            CounterSlot::VmRx(vm) => self.counters.vms.get_mut(vm.index()).map(|c| &mut c.rx),
        };
        if let Some(c) = c {
            c.packets += packets;
            c.bytes += bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use proptest::prelude::*;

    use super::*;
    use crate::config::{MappingConfig, NodeConfig, RouteConfig, SidConfig, SteeringConfig};
    use crate::testkit::canon::*;
    use crate::testkit::*;
    use crate::{Batch, Verdict, VmState};
    use ipnet::IpNet;
    use std::net::IpAddr;

    const T0: crate::Instant = crate::Instant(1_000_000_000);

    /// The canonical host S plus a transit route, a steering rule, and a route inside it.
    fn config() -> NodeConfig {
        let mut cfg = host_config(S, VmState::Running);
        for (p, t) in [("2001:db8:55::/48", 0), ("2001:db8:77:1::/64", 0)] {
            cfg.routes.push(RouteConfig {
                prefix: p.parse().unwrap(),
                port: "up0".into(),
                table: t,
            });
        }
        cfg.steering.push(SteeringConfig {
            prefix: "2001:db8:77::/48".parse().unwrap(),
            policy: "to-d".into(),
            table: 0,
        });
        // End.DX6 to a router behind the uplink.
        cfg.sids.push(SidConfig {
            port: Some("up0".into()),
            nexthop: Some("fc00:ffff::99".parse().unwrap()),
            ..SidConfig::new(sid(S, DX6_UP), crate::Behavior::EndDx6)
        });
        cfg
    }

    /// Function of the End.DX6 SID added by [`config`].
    const DX6_UP: u16 = 0xd60;

    fn table(dp: &Dataplane) -> FastTable {
        dp.fast_table(UPLINK, &|p| p == UPLINK).unwrap()
    }

    fn transit(dst: Ipv6Addr, hop_limit: u8) -> Vec<u8> {
        let udp = udp6(outsider(), dst, 7, 9, b"transit");
        eth(
            uplink_mac(S),
            router_mac(S),
            0x86dd,
            &ipv6(outsider(), dst, 17, hop_limit, &udp),
        )
    }

    /// `frame` through the model and through the engine: a redirect must be the engine's
    /// exact verdict, bytes and counters.
    fn agree(dp: &mut Dataplane, t: &FastTable, frame: &[u8]) -> FastOutcome {
        let mut fast = frame.to_vec();
        let outcome = t.process(&mut fast);
        let before = dp.counters();
        let (rx, tx) = (before.port(t.port).rx, before.port(UPLINK).tx);
        let vm_rx: Vec<_> = t
            .sources
            .iter()
            .flatten()
            .map(|s| before.vm(s.vm).rx)
            .collect();
        let sids: Vec<_> = t.ends.iter().map(|s| before.sid(*s)).collect();
        let pols: Vec<_> = t.encaps.iter().map(|e| before.policy(e.policy)).collect();
        let dx6s: Vec<_> = t.dx6s.iter().map(|d| before.sid(d.sid)).collect();
        let mut b = Batch::new(1);
        assert!(b.push(t.port, frame).unwrap());
        dp.process_batch(T0, &mut b);
        let p = &b.packets()[0];
        match outcome {
            FastOutcome::Punt => assert_eq!(fast, frame, "a punt leaves the frame untouched"),
            FastOutcome::Redirect { nexthop, kind } => {
                let n = t.nexthops[usize::from(nexthop)];
                assert_eq!(
                    p.verdict,
                    Verdict::Tx(n.port),
                    "engine disagrees on {frame:02x?}"
                );
                assert_eq!(p.data(), &fast[..], "engine writes other bytes");
                let after = dp.counters();
                assert_eq!(after.port(t.port).rx.packets, rx.packets + 1);
                for (i, src) in t.sources.iter().flatten().enumerate() {
                    let d = after.vm(src.vm).rx.packets - vm_rx[i].packets;
                    let hit = t.source(read_addr(frame, SRC)) == Some(i as u16);
                    assert_eq!(d, u64::from(hit), "receive counter of {:?}", src.vm);
                }
                assert_eq!(after.port(n.port).tx.packets, tx.packets + 1);
                assert_eq!(after.port(UPLINK).tx.bytes, tx.bytes + fast.len() as u64);
                for (i, s) in t.ends.iter().enumerate() {
                    let d = after.sid(*s).packets - sids[i].packets;
                    let hit = kind == FastKind::End(i as u16);
                    assert_eq!(d, u64::from(hit), "SID counter of {s:?}");
                }
                for (i, d) in t.dx6s.iter().enumerate() {
                    let c = after.sid(d.sid).packets - dx6s[i].packets;
                    let hit = kind == FastKind::Dx6(i as u16);
                    assert_eq!(c, u64::from(hit), "End.DX6 SID counter");
                }
                for (i, e) in t.encaps.iter().enumerate() {
                    let d = after.policy(e.policy).bytes - pols[i].bytes;
                    let hit = kind == FastKind::Encap(i as u16);
                    let want = if hit { frame.len() as u64 } else { 0 };
                    assert_eq!(d, want, "policy counter");
                }
            }
        }
        outcome
    }

    #[test]
    fn the_table_punts_everything_that_is_not_the_fib() {
        let dp = Dataplane::new(config()).unwrap();
        let t = table(&dp);
        let at = |a: &str| t.lookup(u128::from(a.parse::<Ipv6Addr>().unwrap()));
        let fwd = Some(FastAction::Forward(0));
        assert_eq!(t.nexthops.len(), 1);
        assert_eq!(t.nexthops[0].port, UPLINK);
        assert_eq!(at("2001:db8:55::1"), fwd, "a transit route");
        assert_eq!(at("2001:db8:4444::1"), fwd, "the default route");
        assert_eq!(
            at("2001:db8:77:1::5"),
            Some(FastAction::Punt),
            "inside a steering rule"
        );
        assert_eq!(
            at("2001:db8:77:2::5"),
            Some(FastAction::Encap(0)),
            "the steering rule"
        );
        assert_eq!(t.encaps.len(), 1);
        assert_eq!(Some(t.encaps[0].policy), dp.policy_id("to-d"));
        assert_eq!(at(&vm1().to_string()), Some(FastAction::Punt), "a local VM");
        assert_eq!(at(&uplink_address(S).to_string()), Some(FastAction::Punt));
        assert_eq!(at("fc00:0:1::1234"), Some(FastAction::Punt), "the locator");
        let end = t
            .ends
            .iter()
            .position(|s| Some(*s) == dp.sid_id(sid(S, END)));
        assert_eq!(
            at(&sid(S, END).to_string()),
            Some(FastAction::End(end.unwrap() as u16))
        );
        assert_eq!(
            at(&sid(S, END_PSP).to_string()),
            Some(FastAction::Punt),
            "a flavor"
        );
        assert_eq!(at(&sid(S, END_S).to_string()), Some(FastAction::Punt));
        assert_eq!(t.ends.len(), 1, "only the flavorless End");
        // Without an XDP egress nothing is forwarded.
        let none = dp.fast_table(UPLINK, &|_| false).unwrap();
        assert!(none
            .routes
            .iter()
            .all(|r| !matches!(r.action, FastAction::Forward(_))));
    }

    /// The canonical host S plus mappings of every kind for its client VM's egress.
    fn vm_config() -> NodeConfig {
        let mut cfg = config();
        for (prefix, policy) in [
            ("2001:db8:a00::/40", "to-d-red"),
            ("2001:db8:a00:1::/64", "to-d-insert"),
            ("2001:db8:a00:2::5/128", "on-s"),
            ("fc00:0:1::/64", "to-d"),
        ] {
            cfg.mappings.push(MappingConfig {
                vm_address: prefix.parse().unwrap(),
                policy: policy.into(),
            });
        }
        cfg.mappings.push(MappingConfig {
            vm_address: IpNet::from(IpAddr::V6(vm1())),
            policy: "to-d".into(),
        });
        cfg
    }

    fn vm_table(dp: &Dataplane) -> FastTable {
        dp.fast_table(CLIENT_PORT, &|p| p == UPLINK).unwrap()
    }

    /// A frame the client VM sends.
    fn from_client(src: Ipv6Addr, dst: Ipv6Addr, nh: u8, hop_limit: u8, payload: &[u8]) -> Vec<u8> {
        eth(
            GATEWAY_MAC,
            CLIENT_MAC,
            0x86dd,
            &ipv6(src, dst, nh, hop_limit, payload),
        )
    }

    #[test]
    fn a_vm_port_table_encapsulates_mapped_destinations_and_punts_the_rest() {
        let dp = Dataplane::new(vm_config()).unwrap();
        let t = vm_table(&dp);
        let at = |a: &str| t.lookup(u128::from(a.parse::<Ipv6Addr>().unwrap()));
        assert_eq!(t.port_mac, GATEWAY_MAC);
        assert_eq!(
            t.also_mac,
            Some([0x02, 0, 0, 0, S as u8, 2]),
            "the port's own MAC"
        );
        assert_eq!(
            t.sources.as_deref(),
            Some(
                &[FastSource {
                    addr: u128::from(client()),
                    vm: dp.vm_id("client").unwrap()
                }][..]
            )
        );
        let encap_of = |a: &str| match at(a) {
            Some(FastAction::Encap(i)) => dp.policy(t.encaps[usize::from(i)].policy),
            other => panic!("{a}: {other:?}"),
        };
        assert_eq!(encap_of("2001:db8:900::90").unwrap().0, Headend::HEncaps);
        assert_eq!(
            encap_of("2001:db8:a00:7::1").unwrap().0,
            Headend::HEncapsRed
        );
        assert_eq!(at("2001:db8:a00:1::1"), Some(FastAction::Punt), "H.Insert");
        assert_eq!(
            at("2001:db8:a00:2::5"),
            Some(FastAction::Punt),
            "a policy whose first segment is in the locator"
        );
        assert_eq!(at(&vm1().to_string()), Some(FastAction::Punt), "a local VM");
        assert_eq!(
            at(&sid(S, END).to_string()),
            Some(FastAction::Punt),
            "a SID"
        );
        // A mapping over the locator: the engine steers before it looks at the locator, but
        // the SIDs inside stay its own.
        assert!(matches!(at("fc00:0:1::1:1"), Some(FastAction::Encap(_))));
        assert_eq!(at(&sid(S, END_S).to_string()), Some(FastAction::Punt));
        assert_eq!(at("ff02::1"), Some(FastAction::Punt));
        assert_eq!(
            at("2001:db8:55::1"),
            Some(FastAction::Forward(0)),
            "the FIB"
        );
        // One encapsulation per policy, however many destinations use it.
        let mut pols: Vec<_> = t.encaps.iter().map(|e| e.policy).collect();
        pols.dedup();
        assert_eq!(pols.len(), t.encaps.len());
        // What the model redirects, the engine sends the same way (agree checks it).
        let mut dp = dp;
        let udp = |dst: Ipv6Addr| udp6(client(), dst, 5, 6, b"from the client");
        for (dst, want) in [
            ("2001:db8:900::90", Some(Headend::HEncaps)),
            ("2001:db8:a00:7::1", Some(Headend::HEncapsRed)),
            ("2001:db8:55::1", None),
        ] {
            let dst: Ipv6Addr = dst.parse().unwrap();
            let f = from_client(client(), dst, 17, 64, &udp(dst));
            match agree(&mut dp, &t, &f) {
                FastOutcome::Redirect {
                    kind: FastKind::Encap(i),
                    ..
                } => assert_eq!(
                    dp.policy(t.encaps[usize::from(i)].policy).map(|p| p.0),
                    want
                ),
                FastOutcome::Redirect {
                    kind: FastKind::Forward,
                    ..
                } => assert_eq!(want, None),
                other => panic!("{dst}: {other:?}"),
            }
            // Another VM's source, or the last hop: the engine's.
            let spoofed = from_client(vm1(), dst, 17, 64, &udp(dst));
            assert_eq!(agree(&mut dp, &t, &spoofed), FastOutcome::Punt);
            let expiring = from_client(client(), dst, 17, 1, &udp(dst));
            assert_eq!(agree(&mut dp, &t, &expiring), FastOutcome::Punt);
        }
        // The client VM is not vm1's port's source.
        let vm1_table = dp.fast_table(VM1_PORT, &|p| p == UPLINK).unwrap();
        assert_eq!(vm1_table.source(u128::from(client())), None);
        assert!(vm1_table.source(u128::from(vm1())).is_some());
    }

    #[test]
    fn transit_and_end_are_redirected_exactly_as_the_engine_forwards() {
        let mut dp = Dataplane::new(config()).unwrap();
        let t = table(&dp);
        let f = transit("2001:db8:55::9".parse().unwrap(), 64);
        assert!(matches!(
            agree(&mut dp, &t, &f),
            FastOutcome::Redirect {
                kind: FastKind::Forward,
                ..
            }
        ));
        let f = transit("2001:db8:77:2::9".parse().unwrap(), 64);
        assert!(matches!(
            agree(&mut dp, &t, &f),
            FastOutcome::Redirect {
                kind: FastKind::Encap(0),
                ..
            }
        ));
        let f = transit("2001:db8:77:1::9".parse().unwrap(), 64);
        assert_eq!(
            agree(&mut dp, &t, &f),
            FastOutcome::Punt,
            "a route inside the rule"
        );
        let f = uplink_frame(
            S,
            &[sid(S, END), "2001:db8:55::9".parse().unwrap()],
            1,
            &inner(),
        );
        assert!(matches!(
            agree(&mut dp, &t, &f),
            FastOutcome::Redirect {
                kind: FastKind::End(_),
                ..
            }
        ));
        // End.DX6, without and with an SRH.
        let dx6 = sid(S, DX6_UP);
        for outer in [
            ipv6(sid(C, 1), dx6, 41, 64, &inner()),
            ipv6(
                sid(C, 1),
                dx6,
                43,
                64,
                &[srh(41, 0, &[dx6], &[]), inner()].concat(),
            ),
        ] {
            let f = eth(uplink_mac(S), router_mac(S), 0x86dd, &outer);
            assert!(matches!(
                agree(&mut dp, &t, &f),
                FastOutcome::Redirect {
                    kind: FastKind::Dx6(0),
                    ..
                }
            ));
        }
        // Another host's SID is routed like any destination.
        let f = uplink_frame(S, &[sid(S, END), sid(D, END_DT6)], 1, &inner());
        assert!(matches!(
            agree(&mut dp, &t, &f),
            FastOutcome::Redirect {
                kind: FastKind::End(_),
                ..
            }
        ));
        // Hop limit 1, a next segment that is local, a PSP SID: the engine's.
        for f in [
            transit("2001:db8:55::9".parse().unwrap(), 1),
            uplink_frame(S, &[sid(S, END), sid(S, END_DT6)], 1, &inner()),
            uplink_frame(S, &[sid(S, END_PSP), sid(D, END_DT6)], 1, &inner()),
        ] {
            assert_eq!(agree(&mut dp, &t, &f), FastOutcome::Punt);
        }
    }

    fn inner() -> Vec<u8> {
        udp6(client(), vm1(), 1, 2, b"inner")
    }

    /// Destinations worth trying: every prefix of the table (exactly, or with some host bits
    /// set), and anything.
    fn dst_strategy(t: &FastTable) -> impl Strategy<Value = u128> {
        let picks: Vec<u128> = t.routes.iter().map(|r| r.addr).collect();
        let n = picks.len();
        (
            0..n + 1,
            any::<u128>(),
            prop_oneof![Just(0u32), Just(0), 1u32..128],
        )
            .prop_map(move |(i, r, bits)| match picks.get(i) {
                Some(&a) => a ^ (r & ((1u128 << bits) - 1)),
                None => r,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Frames made valid, then mutated: whatever the model redirects, the engine forwards
        /// to the same port with the same bytes and counts.
        #[test]
        fn the_model_agrees_with_the_engine(
            dst in dst_strategy(&table(&Dataplane::new(config()).unwrap())),
            next in dst_strategy(&table(&Dataplane::new(config()).unwrap())),
            src_kind in 0u8..8,
            hop_limit in prop_oneof![Just(0u8), Just(1), Just(2), Just(64)],
            srv6 in any::<bool>(),
            sl in 0u8..4,
            tlv in any::<bool>(),
            mutate in proptest::option::weighted(0.3, (14usize..120, any::<u8>())),
            trailer in 0usize..3,
        ) {
            let mut dp = Dataplane::new(config()).unwrap();
            let t = table(&dp);
            let src = match src_kind % 5 {
                0 => sid(C, 1),
                1 => outsider(),
                2 => "fe80::1".parse().unwrap(),
                3 => "ff02::1".parse().unwrap(),
                _ => Ipv6Addr::UNSPECIFIED,
            };
            let (dst, next) = (Ipv6Addr::from(dst), Ipv6Addr::from(next));
            let body = if srv6 {
                let segs = [next, Ipv6Addr::from(0x2001_0db8_0055u128 << 80), dst];
                let tlvs: &[u8] = if tlv { &[4, 6, 0, 0, 0, 0, 0, 0] } else { &[] };
                let h = srh(17, sl, &segs, tlvs);
                let mut p = h;
                p.extend_from_slice(&inner());
                ipv6(src, dst, 43, hop_limit, &p)
            } else {
                ipv6(src, dst, 17, hop_limit, &udp6(src, dst, 1, 2, b"x"))
            };
            let mut f = eth(uplink_mac(S), router_mac(S), 0x86dd, &body);
            if let Some((at, v)) = mutate {
                if at < f.len() {
                    f[at] = v;
                }
            }
            f.extend(std::iter::repeat_n(0, trailer));
            agree(&mut dp, &t, &f);
        }

        /// SRv6 frames to the End SID with their SRH fields mutated (Segments Left, Last
        /// Entry, Hdr Ext Len, Next Header, TLVs, hop limit, next segment).
        #[test]
        fn end_frames_agree_with_the_engine(
            next in dst_strategy(&table(&Dataplane::new(config()).unwrap())),
            in_domain in prop::bool::weighted(0.8),
            hop_limit in prop_oneof![Just(1u8), Just(2), Just(64)],
            sl in 0u8..5,
            field in proptest::option::weighted(0.4, (1usize..6, any::<u8>())),
            inner_nh in prop_oneof![Just(17u8), Just(41), Just(0), Just(43), Just(59)],
            tlv in prop::bool::weighted(0.2),
        ) {
            let mut dp = Dataplane::new(config()).unwrap();
            let t = table(&dp);
            let src = if in_domain { sid(C, 1) } else { outsider() };
            let dst = sid(S, END);
            let segs = [Ipv6Addr::from(next), Ipv6Addr::from(0x2001_0db8_0055u128 << 80), dst];
            let tlvs: &[u8] = if tlv { &[4, 6, 0, 0, 0, 0, 0, 0] } else { &[] };
            let mut h = srh(inner_nh, sl, &segs, tlvs);
            if let Some((at, v)) = field {
                h[at] = v;
            }
            h.extend_from_slice(&inner());
            let f = eth(uplink_mac(S), router_mac(S), 0x86dd, &ipv6(src, dst, 43, hop_limit, &h));
            agree(&mut dp, &t, &f);
        }

        /// Transit frames into the steering rule (H.Encaps with the flow hash): traffic
        /// class, flow label, next header, length and hop limit varied.
        #[test]
        fn encapsulated_frames_agree_with_the_engine(
            host in any::<u64>(),
            hop_limit in prop_oneof![Just(1u8), Just(2), Just(64)],
            tc_fl in any::<u32>(),
            nh in prop_oneof![Just(17u8), Just(6), Just(58), Just(43), Just(0), Just(59)],
            payload in 0usize..1500,
            in_domain in any::<bool>(),
        ) {
            let mut dp = Dataplane::new(config()).unwrap();
            let t = table(&dp);
            let dst = Ipv6Addr::from((0x2001_0db8_0077_0002u128 << 64) | u128::from(host));
            let src = if in_domain { sid(C, 1) } else { outsider() };
            let mut body = ipv6(src, dst, nh, hop_limit, &vec![0u8; payload]);
            let w = (6u32 << 28) | (tc_fl & 0x0fff_ffff);
            body[..4].copy_from_slice(&w.to_be_bytes());
            let f = eth(uplink_mac(S), router_mac(S), 0x86dd, &body);
            agree(&mut dp, &t, &f);
        }

        /// Frames from the client VM (its own source, another VM's, an outsider's), to
        /// every kind of destination of its port's table, hop limit, next header, length,
        /// traffic class and flow label varied, and mutated: whatever the model redirects, the
        /// engine sends the same bytes to the same port and counts the same.
        #[test]
        fn vm_egress_frames_agree_with_the_engine(
            dst in dst_strategy(&vm_table(&Dataplane::new(vm_config()).unwrap())),
            src_kind in prop_oneof![Just(0u8), Just(0), Just(0), Just(1), Just(2)],
            hop_limit in prop_oneof![Just(0u8), Just(1), Just(2), Just(64)],
            nh in prop_oneof![Just(17u8), Just(6), Just(58), Just(43), Just(0), Just(59)],
            payload in prop_oneof![0usize..64, 1300usize..1500],
            tc_fl in any::<u32>(),
            mutate in proptest::option::weighted(0.2, (0usize..60, any::<u8>())),
            trailer in prop_oneof![Just(0usize), Just(0), 1usize..3],
            to_port_mac in prop::bool::weighted(0.3),
        ) {
            let mut dp = Dataplane::new(vm_config()).unwrap();
            let t = vm_table(&dp);
            let src = match src_kind {
                0 => client(),
                1 => vm1(),
                _ => outsider(),
            };
            let mut f = from_client(src, Ipv6Addr::from(dst), nh, hop_limit, &vec![7u8; payload]);
            if to_port_mac {
                // The client port's own MAC, which the engine takes too.
                f[0..6].copy_from_slice(&[0x02, 0, 0, 0, S as u8, 2]);
            }
            let w = (6u32 << 28) | (tc_fl & 0x0fff_ffff);
            f[14..18].copy_from_slice(&w.to_be_bytes());
            if let Some((at, v)) = mutate {
                if at < f.len() {
                    f[at] = v;
                }
            }
            f.extend(std::iter::repeat_n(0, trailer));
            agree(&mut dp, &t, &f);
        }

        /// Frames to the End.DX6 SID: with or without an SRH, Segments Left, inner version,
        /// length, source and hop limit varied.
        #[test]
        fn dx6_frames_agree_with_the_engine(
            with_srh in any::<bool>(),
            sl in prop_oneof![Just(0u8), Just(0), Just(1)],
            in_domain in prop::bool::weighted(0.8),
            inner_src in prop_oneof![Just(client()), Just(outsider()), Just("fe80::7".parse().unwrap()), Just(Ipv6Addr::UNSPECIFIED)],
            inner_hl in prop_oneof![Just(1u8), Just(2), Just(64)],
            payload in 0usize..1500,
            field in proptest::option::weighted(0.3, (0usize..48, any::<u8>())),
            trailer in prop_oneof![Just(0usize), Just(0), Just(3)],
        ) {
            let mut dp = Dataplane::new(config()).unwrap();
            let t = table(&dp);
            let dst = sid(S, DX6_UP);
            let src = if in_domain { sid(C, 1) } else { outsider() };
            let mut inner = ipv6(inner_src, vm1(), 17, inner_hl, &vec![7u8; payload]);
            inner.extend(std::iter::repeat_n(0, trailer));
            let mut outer = if with_srh {
                let mut h = srh(41, sl, &[dst, sid(D, END)], &[]);
                h.extend_from_slice(&inner);
                ipv6(src, dst, 43, 64, &h)
            } else {
                ipv6(src, dst, 41, 64, &inner)
            };
            if let Some((at, v)) = field {
                let at = 40 + at;
                if at < outer.len() {
                    outer[at] = v;
                }
            }
            let f = eth(uplink_mac(S), router_mac(S), 0x86dd, &outer);
            agree(&mut dp, &t, &f);
        }
    }
}
