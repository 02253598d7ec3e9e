//! The operations of the `dataplane_ops` fuzz target, `arbitrary`-derived, and an encoder that
//! writes a sequence of them as the bytes `arbitrary` decodes back (for the seed corpus).
//!
//! Decoding: `Op::arbitrary` is called until the input is exhausted. With arbitrary 1.x, an
//! enum is a little-endian `u32` `x` selecting variant `(x * count) >> 32`, then its fields in
//! order; `u8`/`u16` are little-endian; `bool` is `byte & 1`; arrays are their elements in
//! order. [`encode`] writes exactly that, and the seed generator checks the round trip.

use arbitrary::Arbitrary;

/// Declares a field-less selector enum with its variant list.
macro_rules! selector {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $v:ident,)* }) => {
        $(#[$doc])*
        #[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $($(#[$vdoc])* $v,)* }
        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$v,)*];
        }
        impl Encode for $name {
            fn encode(&self, out: &mut Vec<u8>) {
                let i = $name::ALL.iter().position(|v| v == self).unwrap_or(0);
                variant(out, i, $name::ALL.len());
            }
        }
    };
}

/// Writes what `arbitrary` decodes as variant `i` of `n`.
fn variant(out: &mut Vec<u8>, i: usize, n: usize) {
    // The smallest x with (x * n) >> 32 == i.
    let x = ((i as u64) << 32).div_ceil(n as u64) as u32;
    out.extend_from_slice(&x.to_le_bytes());
}

/// Writing a value as the bytes `arbitrary` reads it from.
pub trait Encode {
    /// Appends the encoding of `self`.
    fn encode(&self, out: &mut Vec<u8>);
}

impl Encode for u8 {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(*self);
    }
}
impl Encode for u16 {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}
impl Encode for bool {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
}
impl<T: Encode, const N: usize> Encode for [T; N] {
    fn encode(&self, out: &mut Vec<u8>) {
        for t in self {
            t.encode(out);
        }
    }
}

selector! {
    /// A host.
    Host { S, D, C, }
}
selector! {
    /// A VM, by id: `vm1` (the migrating VM), `client`, `vm2` (migrates too).
    Vm { Vm1, Client, Vm2, }
}
selector! {
    /// A port, by id (`Bogus`: an id no port has).
    Port { Uplink, Vm1, Client, Vm2, Bogus, }
}
selector! {
    /// A VM state.
    State { Absent, Paused, Running, }
}
selector! {
    /// The SID an uplink frame is sent to (on the host receiving it).
    Sid {
        End, EndPsp, EndUsp, EndUsd, EndX, EndT, EndDx6, EndDx4, EndDt6, EndDt4, EndDt46, EndB6,
        EndS, EndSVm2, EndSbuf, EndSbufDrop, EndSbufVm2,
        /// The NEXT-C-SID End, with the next C-SIDs in the argument (D's End.DT6).
        NextCSid,
        /// Inside the locator, no SID (NoSid).
        Unassigned,
        /// The host's own source address (local, not a SID).
        SourceAddress,
    }
}
selector! {
    /// Where the target SID is in the segment list.
    Segs {
        /// The only segment (Segments Left 0).
        Last,
        /// The first of two (Segments Left 1); the second is `Next`.
        First,
        /// No SRH at all: IPv6-in-IPv6 straight to the SID.
        NoSrh,
        /// Segments Left one beyond Last Entry.
        BeyondLastEntry,
    }
}
selector! {
    /// The segment after the target SID.
    Next { DSbuf, DDt6, SEnd, CEnd, Multicast, }
}
selector! {
    /// The source of an uplink frame.
    Src {
        /// C's source address (in the SR domain).
        Domain,
        /// Outside the SR domain.
        Outsider,
        /// Link-local.
        LinkLocal,
        /// Unspecified.
        Unspecified,
    }
}
selector! {
    /// The packet an uplink frame carries (after the outer header and SRH).
    Inner { Vm1, Client, Vm2, Vm1V4, Vm2V4, Remote, Outsider, Unknown, Udp, }
}
selector! {
    /// HMAC TLV on an uplink SRv6 frame.
    Hmac { None, Signed, SignedD, UnknownKey, BadMac, }
}
selector! {
    /// Size of the (inner) IP packet.
    /// `Oversize` does not fit a packet buffer (`drop_frame_too_large`).
    Size { Small, Mid, Large, Jumbo, Oversize, }
}
selector! {
    /// Destination of a frame sent by a VM.
    Dst {
        /// `2001:db8:900::90` (`to-d`: H.Encaps).
        Remote,
        /// `2001:db8:910::1` (`to-d-red`: H.Encaps.Red).
        Red,
        /// `2001:db8:920::1` (`to-d-insert`: H.Insert).
        Insert,
        /// `2001:db8:901::1` (`to-d-hmac`: signed H.Encaps).
        Keyed,
        Vm1, Client, Vm2,
        /// Not mapped: native forwarding.
        Outsider,
        RemoteV4, RedV4, InsertV4, Vm1V4, Vm2V4,
        /// ICMPv6 echo request to the gateway.
        GatewayEcho,
        /// Neighbor solicitation for the gateway.
        GatewayNs,
        /// ARP request for the gateway.
        GatewayArp,
        /// A local SID (refused on a VM port).
        LocalSid,
    }
}
selector! {
    /// A header field a mutation overrides.
    Field {
        EtherType, IpVersion, PayloadLength, NextHeader, HopLimit, SrcLast, DstLast,
        SrhNextHeader, SrhHdrExtLen, SrhRoutingType, SrhSegmentsLeft, SrhLastEntry,
        InnerVersion, InnerHopLimit,
    }
}
selector! {
    /// SIDs installed and removed at run time (indexes `harness::catalog`).
    CatalogSid {
        End, EndPsp, EndX, EndDx6, EndDt46, EndB6, EndS, EndSbuf, EndSbufDrop, EndSbufVm2,
        NextCSid,
        /// End.SBUF naming a VM that does not exist (refused).
        BadVm,
        /// End.X naming a port that does not exist (refused).
        BadPort,
        /// End.B6.Encaps bound to the H.Insert policy (refused).
        B6Insert,
        /// Outside every locator (refused).
        OutsideLocator,
    }
}
selector! {
    /// A policy name.
    PolicyName { ViaSToD, ToD, ToDRed, ToDInsert, OnS, New, }
}
selector! {
    /// A headend behavior.
    HeadendSel { Encaps, EncapsRed, Insert, }
}
selector! {
    /// A segment list for a policy.
    SegList {
        Empty,
        /// `D::End.DT6`.
        One,
        /// `S::End.S, D::End.SBUF`.
        Migration,
        /// `D::End, S::End, D::End.SBUF`.
        Three,
        /// Thirteen segments (too many).
        TooMany,
        /// A multicast segment.
        Multicast,
    }
}
selector! {
    /// A port MTU.
    Mtu { None, Min, Ethernet, Jumbo, TooSmall, }
}

/// A change to a built frame.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutation {
    /// Nothing.
    None,
    /// XOR `mask` into the byte at `at % len`.
    Flip {
        /// Offset (modulo the frame length).
        at: u16,
        /// XOR mask.
        mask: u8,
    },
    /// Cut the frame to `keep % len` bytes.
    Truncate {
        /// New length (modulo the frame length).
        keep: u16,
    },
    /// Append `n` bytes (Ethernet padding or garbage).
    Pad {
        /// Bytes appended.
        n: u8,
    },
    /// Set a header field (its first byte for multi-byte fields, its last for addresses).
    Set {
        /// The field.
        field: Field,
        /// The value.
        value: u8,
    },
    /// Send the frame on another port than the one it was built for.
    Port {
        /// The port.
        port: Port,
    },
}

impl Encode for Mutation {
    fn encode(&self, out: &mut Vec<u8>) {
        let n = 6;
        match *self {
            Mutation::None => variant(out, 0, n),
            Mutation::Flip { at, mask } => {
                variant(out, 1, n);
                at.encode(out);
                mask.encode(out);
            }
            Mutation::Truncate { keep } => {
                variant(out, 2, n);
                keep.encode(out);
            }
            Mutation::Pad { n: m } => {
                variant(out, 3, n);
                m.encode(out);
            }
            Mutation::Set { field, value } => {
                variant(out, 4, n);
                field.encode(out);
                value.encode(out);
            }
            Mutation::Port { port } => {
                variant(out, 5, n);
                port.encode(out);
            }
        }
    }
}

/// No mutation.
pub const NONE: [Mutation; 2] = [Mutation::None, Mutation::None];

/// One operation on the world.
#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// An SRv6 frame from the underlay router to `host`'s uplink, toward `sid`.
    Uplink {
        /// Receiving host.
        host: Host,
        /// Target SID (of the receiving host).
        sid: Sid,
        /// Segment list shape.
        segs: Segs,
        /// The segment after the target.
        next: Next,
        /// Outer source.
        src: Src,
        /// Carried packet.
        inner: Inner,
        /// Its size.
        size: Size,
        /// HMAC TLV.
        hmac: Hmac,
        /// Changes applied after building.
        mutations: [Mutation; 2],
    },
    /// A frame sent by `vm` on `host` (from its own port, MAC and address).
    FromVm {
        /// The VM's host.
        host: Host,
        /// The sender.
        vm: Vm,
        /// Destination.
        dst: Dst,
        /// IP packet size.
        size: Size,
        /// Changes applied after building.
        mutations: [Mutation; 2],
    },
    /// A VM's state changes on one host.
    VmState {
        /// Host.
        host: Host,
        /// VM.
        vm: Vm,
        /// New state.
        state: State,
    },
    /// Switchover of a migrating VM: paused on S and running on D (`back`: the reverse).
    Switchover {
        /// VM.
        vm: Vm,
        /// From D back to S.
        back: bool,
    },
    /// `install_sid` of a catalog SID.
    InstallSid {
        /// Host.
        host: Host,
        /// SID.
        sid: CatalogSid,
    },
    /// `remove_sid` of a catalog SID.
    RemoveSid {
        /// Host.
        host: Host,
        /// SID.
        sid: CatalogSid,
    },
    /// `install_policy` (new, or replacing one of the same name).
    InstallPolicy {
        /// Host.
        host: Host,
        /// Name.
        name: PolicyName,
        /// Headend behavior.
        headend: HeadendSel,
        /// Segments.
        segs: SegList,
    },
    /// `set_mapping` of a prefix to a policy (or native, `policy: None`).
    SetMapping {
        /// Host.
        host: Host,
        /// Index into `world::prefix`.
        prefix: u8,
        /// Steering: `None` is native.
        policy: Option<PolicyName>,
    },
    /// `remove_mapping`.
    RemoveMapping {
        /// Host.
        host: Host,
        /// Index into `world::prefix`.
        prefix: u8,
    },
    /// `set_port_mtu`.
    SetMtu {
        /// Host.
        host: Host,
        /// Port.
        port: Port,
        /// MTU.
        mtu: Mtu,
    },
    /// Time passes (`ms` milliseconds); with `timeout`, every host's `handle_timeout` runs.
    Advance {
        /// Milliseconds.
        ms: u8,
        /// Run `handle_timeout`.
        timeout: bool,
    },
    /// `discard_buffer`.
    Discard {
        /// Host.
        host: Host,
        /// VM.
        vm: Vm,
    },
    /// One `poll_transmit`.
    PollOne {
        /// Host.
        host: Host,
    },
    /// `poll_transmit` on every host until it returns `None`.
    Drain,
    /// `remove_policy` (refused while a mapping, SID or steering rule uses it).
    RemovePolicy {
        /// Host.
        host: Host,
        /// Name.
        name: PolicyName,
    },
}

impl Encode for Op {
    fn encode(&self, out: &mut Vec<u8>) {
        let n = 15;
        match self {
            Op::Uplink {
                host,
                sid,
                segs,
                next,
                src,
                inner,
                size,
                hmac,
                mutations,
            } => {
                variant(out, 0, n);
                host.encode(out);
                sid.encode(out);
                segs.encode(out);
                next.encode(out);
                src.encode(out);
                inner.encode(out);
                size.encode(out);
                hmac.encode(out);
                mutations.encode(out);
            }
            Op::FromVm {
                host,
                vm,
                dst,
                size,
                mutations,
            } => {
                variant(out, 1, n);
                host.encode(out);
                vm.encode(out);
                dst.encode(out);
                size.encode(out);
                mutations.encode(out);
            }
            Op::VmState { host, vm, state } => {
                variant(out, 2, n);
                host.encode(out);
                vm.encode(out);
                state.encode(out);
            }
            Op::Switchover { vm, back } => {
                variant(out, 3, n);
                vm.encode(out);
                back.encode(out);
            }
            Op::InstallSid { host, sid } => {
                variant(out, 4, n);
                host.encode(out);
                sid.encode(out);
            }
            Op::RemoveSid { host, sid } => {
                variant(out, 5, n);
                host.encode(out);
                sid.encode(out);
            }
            Op::InstallPolicy {
                host,
                name,
                headend,
                segs,
            } => {
                variant(out, 6, n);
                host.encode(out);
                name.encode(out);
                headend.encode(out);
                segs.encode(out);
            }
            Op::SetMapping {
                host,
                prefix,
                policy,
            } => {
                variant(out, 7, n);
                host.encode(out);
                prefix.encode(out);
                // Option<T>: a bool (present), then T.
                policy.is_some().encode(out);
                if let Some(p) = policy {
                    p.encode(out);
                }
            }
            Op::RemoveMapping { host, prefix } => {
                variant(out, 8, n);
                host.encode(out);
                prefix.encode(out);
            }
            Op::SetMtu { host, port, mtu } => {
                variant(out, 9, n);
                host.encode(out);
                port.encode(out);
                mtu.encode(out);
            }
            Op::Advance { ms, timeout } => {
                variant(out, 10, n);
                ms.encode(out);
                timeout.encode(out);
            }
            Op::Discard { host, vm } => {
                variant(out, 11, n);
                host.encode(out);
                vm.encode(out);
            }
            Op::PollOne { host } => {
                variant(out, 12, n);
                host.encode(out);
            }
            Op::Drain => variant(out, 13, n),
            Op::RemovePolicy { host, name } => {
                variant(out, 14, n);
                host.encode(out);
                name.encode(out);
            }
        }
    }
}

/// Decodes `data` into operations (what the fuzz target runs).
pub fn decode(data: &[u8]) -> Vec<Op> {
    let mut u = arbitrary::Unstructured::new(data);
    let mut ops = Vec::new();
    while !u.is_empty() {
        match Op::arbitrary(&mut u) {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    ops
}

/// Encodes `ops` as the bytes [`decode`] turns back into them.
pub fn encode(ops: &[Op]) -> Vec<u8> {
    let mut out = Vec::new();
    for op in ops {
        op.encode(&mut out);
    }
    out
}
