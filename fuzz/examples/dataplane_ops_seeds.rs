//! Writes the seed corpus of the `dataplane_ops` fuzz target to `corpus/dataplane_ops/seed-*`
//! (run from `fuzz/`: `cargo run --example dataplane_ops_seeds`). Every seed is checked to
//! decode back to the operations it was written from and to pass the harness.

use srmig_fuzz::dataplane_ops::ops::{
    decode, encode, CatalogSid, Dst, Field, HeadendSel, Hmac, Host, Inner, Mtu, Mutation, Next, Op,
    PolicyName, Port, SegList, Segs, Sid, Size, Src, State, Vm, NONE,
};
use srmig_fuzz::dataplane_ops::Harness;

fn up(host: Host, sid: Sid, segs: Segs, inner: Inner) -> Op {
    Op::Uplink {
        host,
        sid,
        segs,
        next: Next::DDt6,
        src: Src::Domain,
        inner,
        size: Size::Small,
        hmac: Hmac::None,
        mutations: NONE,
    }
}

fn up_with(host: Host, sid: Sid, segs: Segs, inner: Inner, f: impl FnOnce(&mut Op)) -> Op {
    let mut op = up(host, sid, segs, inner);
    f(&mut op);
    op
}

fn vm(host: Host, vm: Vm, dst: Dst) -> Op {
    Op::FromVm {
        host,
        vm,
        dst,
        size: Size::Small,
        mutations: NONE,
    }
}

fn sized(mut op: Op, s: Size) -> Op {
    if let Op::Uplink { size, .. } | Op::FromVm { size, .. } = &mut op {
        *size = s;
    }
    op
}

fn mutated(mut op: Op, m: [Mutation; 2]) -> Op {
    if let Op::Uplink { mutations, .. } | Op::FromVm { mutations, .. } = &mut op {
        *mutations = m;
    }
    op
}

fn state(host: Host, vm: Vm, state: State) -> Op {
    Op::VmState { host, vm, state }
}

fn set(field: Field, value: u8) -> Mutation {
    Mutation::Set { field, value }
}

/// An SRv6 packet for vm1 on D's End.SBUF (last segment).
fn to_d_sbuf(inner: Inner) -> Op {
    up(Host::D, Sid::EndSbuf, Segs::Last, inner)
}

fn seeds() -> Vec<(&'static str, Vec<Op>)> {
    use Host::*;
    let mut v = Vec::new();
    // Every behavior, where it does its job (S: vm1 and vm2 run).
    v.push((
        "behaviors",
        vec![
            up(S, Sid::End, Segs::First, Inner::Vm1),
            up(S, Sid::EndPsp, Segs::First, Inner::Vm1),
            up(S, Sid::EndUsp, Segs::Last, Inner::Vm1),
            up(S, Sid::EndUsd, Segs::Last, Inner::Vm1),
            up(S, Sid::EndX, Segs::First, Inner::Vm1),
            up(S, Sid::EndT, Segs::First, Inner::Vm1),
            up(S, Sid::EndDx6, Segs::Last, Inner::Vm1),
            up(S, Sid::EndDx4, Segs::Last, Inner::Vm1V4),
            up(S, Sid::EndDt6, Segs::Last, Inner::Vm2),
            up(S, Sid::EndDt4, Segs::Last, Inner::Vm2V4),
            up(S, Sid::EndDt46, Segs::Last, Inner::Vm1),
            up(S, Sid::EndDt46, Segs::NoSrh, Inner::Vm1V4),
            up(S, Sid::EndB6, Segs::First, Inner::Remote),
            up(S, Sid::EndS, Segs::First, Inner::Vm1),
            up(S, Sid::EndSVm2, Segs::First, Inner::Vm2),
            up(S, Sid::EndSbuf, Segs::Last, Inner::Vm1),
            up(S, Sid::EndSbufVm2, Segs::Last, Inner::Vm2),
            up(D, Sid::EndSbufDrop, Segs::Last, Inner::Vm1),
            up(S, Sid::NextCSid, Segs::NoSrh, Inner::Vm1),
            up(S, Sid::NextCSid, Segs::First, Inner::Vm1),
            Op::Drain,
        ],
    ));
    // The paper's migration: C's client talks to vm1 through C's H.Encaps, S's End.S and D's
    // End.SBUF; vm1 pauses on S (packets forwarded and held at D), resumes on D (released in
    // arrival order), then traffic goes on to D.
    let talk = || vm(C, Vm::Client, Dst::Vm1);
    v.push((
        "migration-hold-release",
        vec![
            talk(),
            talk(),
            state(S, Vm::Vm1, State::Paused),
            talk(),
            sized(talk(), Size::Mid),
            talk(),
            vm(C, Vm::Client, Dst::Vm1V4),
            Op::Advance {
                ms: 5,
                timeout: true,
            },
            state(D, Vm::Vm1, State::Running),
            Op::PollOne { host: D },
            talk(),
            Op::Drain,
            state(S, Vm::Vm1, State::Absent),
            talk(),
            Op::Drain,
        ],
    ));
    // vm2, with End.S and End.SBUF naming it, through a switchover.
    v.push((
        "switchover-vm2",
        vec![
            up(S, Sid::EndSVm2, Segs::First, Inner::Vm2),
            Op::Switchover {
                vm: Vm::Vm2,
                back: false,
            },
            up(D, Sid::EndSbufVm2, Segs::Last, Inner::Vm2),
            Op::Switchover {
                vm: Vm::Vm2,
                back: true,
            },
            up(D, Sid::EndSbufVm2, Segs::Last, Inner::Vm2),
            up(S, Sid::EndSVm2, Segs::First, Inner::Vm2),
            Op::Drain,
        ],
    ));
    // Expiry at handle_timeout, and on release.
    v.push((
        "expiry",
        vec![
            to_d_sbuf(Inner::Vm1),
            to_d_sbuf(Inner::Vm1),
            Op::Advance {
                ms: 60,
                timeout: true,
            },
            to_d_sbuf(Inner::Vm1),
            Op::Advance {
                ms: 30,
                timeout: false,
            },
            to_d_sbuf(Inner::Vm1),
            Op::Advance {
                ms: 30,
                timeout: false,
            },
            state(D, Vm::Vm1, State::Running),
            Op::Drain,
        ],
    ));
    // Drop mode, discard, a packet too big for the VM port's MTU on release.
    v.push((
        "drop-mode-discard-too-big",
        vec![
            up(D, Sid::EndSbufDrop, Segs::Last, Inner::Vm1),
            to_d_sbuf(Inner::Vm1),
            to_d_sbuf(Inner::Vm1),
            Op::Discard {
                host: D,
                vm: Vm::Vm1,
            },
            sized(to_d_sbuf(Inner::Vm1), Size::Large),
            to_d_sbuf(Inner::Vm1),
            Op::SetMtu {
                host: D,
                port: Port::Vm1,
                mtu: Mtu::Min,
            },
            state(D, Vm::Vm1, State::Running),
            Op::Drain,
        ],
    ));
    // Every bound: per-VM packets, per-VM bytes, global packets, global bytes.
    let mut bounds = Vec::new();
    bounds.extend((0..7).map(|_| to_d_sbuf(Inner::Vm1)));
    bounds.push(Op::Discard {
        host: D,
        vm: Vm::Vm1,
    });
    bounds.extend((0..6).map(|_| sized(to_d_sbuf(Inner::Vm1), Size::Mid)));
    bounds.push(Op::Discard {
        host: D,
        vm: Vm::Vm1,
    });
    bounds.push(state(D, Vm::Client, State::Paused));
    bounds.extend((0..5).map(|_| to_d_sbuf(Inner::Vm1)));
    bounds.extend((0..5).map(|_| to_d_sbuf(Inner::Vm2)));
    bounds.push(to_d_sbuf(Inner::Client));
    bounds.push(Op::Discard {
        host: D,
        vm: Vm::Vm1,
    });
    bounds.push(Op::Discard {
        host: D,
        vm: Vm::Vm2,
    });
    bounds.extend((0..4).map(|_| sized(to_d_sbuf(Inner::Vm1), Size::Mid)));
    bounds.extend((0..4).map(|_| sized(to_d_sbuf(Inner::Vm2), Size::Mid)));
    bounds.push(sized(to_d_sbuf(Inner::Client), Size::Mid));
    bounds.push(state(D, Vm::Client, State::Running));
    bounds.push(Op::Drain);
    v.push(("buffer-bounds", bounds));
    // New packets for a running VM queue behind its releasing buffer.
    v.push((
        "hold-behind-release",
        vec![
            to_d_sbuf(Inner::Vm1),
            to_d_sbuf(Inner::Vm1),
            state(D, Vm::Vm1, State::Running),
            to_d_sbuf(Inner::Vm1),
            up(D, Sid::EndDt6, Segs::Last, Inner::Vm1),
            Op::PollOne { host: D },
            to_d_sbuf(Inner::Vm1),
            Op::Drain,
        ],
    ));
    // VM egress through every headend, both families, native and local.
    v.push((
        "vm-egress-headends",
        vec![
            vm(S, Vm::Client, Dst::Remote),
            vm(S, Vm::Client, Dst::Red),
            vm(S, Vm::Client, Dst::Insert),
            vm(S, Vm::Client, Dst::Keyed),
            vm(S, Vm::Client, Dst::Outsider),
            vm(S, Vm::Client, Dst::RemoteV4),
            vm(S, Vm::Client, Dst::RedV4),
            vm(S, Vm::Client, Dst::InsertV4),
            vm(S, Vm::Client, Dst::Vm1),
            vm(S, Vm::Vm1, Dst::Vm2V4),
            vm(C, Vm::Client, Dst::Vm2),
            vm(C, Vm::Client, Dst::Vm2V4),
            sized(vm(S, Vm::Vm2, Dst::Remote), Size::Jumbo),
            Op::SetMtu {
                host: S,
                port: Port::Uplink,
                mtu: Mtu::Ethernet,
            },
            sized(vm(S, Vm::Vm2, Dst::Remote), Size::Large),
            sized(vm(S, Vm::Vm2, Dst::RemoteV4), Size::Large),
            Op::Drain,
        ],
    ));
    // Local answers and refusals on VM ports.
    v.push((
        "vm-port-local",
        vec![
            vm(S, Vm::Vm1, Dst::GatewayEcho),
            vm(S, Vm::Vm1, Dst::GatewayNs),
            vm(S, Vm::Vm1, Dst::GatewayArp),
            vm(S, Vm::Vm1, Dst::LocalSid),
            mutated(
                vm(S, Vm::Vm1, Dst::Remote),
                [Mutation::Port { port: Port::Client }, Mutation::None],
            ),
            mutated(
                vm(S, Vm::Vm1, Dst::Remote),
                [set(Field::HopLimit, 1), Mutation::None],
            ),
            sized(vm(S, Vm::Vm1, Dst::Remote), Size::Oversize),
            mutated(
                vm(S, Vm::Vm1, Dst::Remote),
                [Mutation::Port { port: Port::Bogus }, Mutation::None],
            ),
            Op::Drain,
        ],
    ));
    // Runtime changes: SIDs, policies, mappings.
    v.push((
        "runtime-changes",
        vec![
            Op::RemoveSid {
                host: S,
                sid: CatalogSid::EndS,
            },
            up(S, Sid::EndS, Segs::First, Inner::Vm1),
            Op::InstallSid {
                host: S,
                sid: CatalogSid::EndS,
            },
            up(S, Sid::EndS, Segs::First, Inner::Vm1),
            Op::InstallSid {
                host: S,
                sid: CatalogSid::BadVm,
            },
            Op::InstallSid {
                host: S,
                sid: CatalogSid::B6Insert,
            },
            Op::InstallSid {
                host: S,
                sid: CatalogSid::OutsideLocator,
            },
            Op::InstallPolicy {
                host: S,
                name: PolicyName::ToD,
                headend: HeadendSel::EncapsRed,
                segs: SegList::Three,
            },
            Op::InstallPolicy {
                host: S,
                name: PolicyName::ToD,
                headend: HeadendSel::Insert,
                segs: SegList::One,
            },
            Op::InstallPolicy {
                host: S,
                name: PolicyName::New,
                headend: HeadendSel::Encaps,
                segs: SegList::TooMany,
            },
            vm(S, Vm::Client, Dst::Remote),
            Op::SetMapping {
                host: S,
                prefix: 0,
                policy: Some(PolicyName::ViaSToD),
            },
            vm(S, Vm::Client, Dst::Remote),
            Op::SetMapping {
                host: S,
                prefix: 0,
                policy: None,
            },
            vm(S, Vm::Client, Dst::Remote),
            Op::RemoveMapping { host: S, prefix: 0 },
            vm(S, Vm::Client, Dst::Remote),
            Op::SetMapping {
                host: S,
                prefix: 1,
                policy: Some(PolicyName::New),
            },
            Op::Drain,
        ],
    ));
    // Policy removal: refused while the End.B6.Encaps SID and the mappings use "to-d",
    // then done; a new policy takes its id and carries the VM's traffic.
    v.push((
        "policy-removal",
        vec![
            vm(S, Vm::Client, Dst::Remote),
            Op::RemovePolicy {
                host: S,
                name: PolicyName::ToD,
            },
            Op::RemoveSid {
                host: S,
                sid: CatalogSid::EndB6,
            },
            Op::RemovePolicy {
                host: S,
                name: PolicyName::ToD,
            },
            Op::SetMapping {
                host: S,
                prefix: 0,
                policy: None,
            },
            Op::RemoveMapping { host: S, prefix: 5 },
            Op::RemovePolicy {
                host: S,
                name: PolicyName::ToD,
            },
            Op::RemovePolicy {
                host: S,
                name: PolicyName::OnS,
            },
            Op::InstallPolicy {
                host: S,
                name: PolicyName::New,
                headend: HeadendSel::Encaps,
                segs: SegList::One,
            },
            Op::SetMapping {
                host: S,
                prefix: 0,
                policy: Some(PolicyName::New),
            },
            vm(S, Vm::Client, Dst::Remote),
            Op::SetMapping {
                host: S,
                prefix: 0,
                policy: Some(PolicyName::ToD),
            },
            Op::Drain,
        ],
    ));
    // HMAC: required on C, verified on S.
    v.push((
        "hmac",
        vec![
            up(C, Sid::End, Segs::First, Inner::Vm1),
            up_with(C, Sid::End, Segs::First, Inner::Vm1, |op| {
                if let Op::Uplink { hmac, .. } = op {
                    *hmac = Hmac::Signed;
                }
            }),
            up_with(S, Sid::End, Segs::First, Inner::Vm1, |op| {
                if let Op::Uplink { hmac, .. } = op {
                    *hmac = Hmac::BadMac;
                }
            }),
            up_with(S, Sid::End, Segs::First, Inner::Vm1, |op| {
                if let Op::Uplink { hmac, .. } = op {
                    *hmac = Hmac::UnknownKey;
                }
            }),
            up_with(S, Sid::End, Segs::First, Inner::Vm1, |op| {
                if let Op::Uplink { hmac, .. } = op {
                    *hmac = Hmac::SignedD;
                }
            }),
            Op::Drain,
        ],
    ));
    // Malformed and refused uplink packets.
    let bad = |m: [Mutation; 2]| mutated(up(S, Sid::End, Segs::First, Inner::Vm1), m);
    v.push((
        "uplink-refusals",
        vec![
            up_with(S, Sid::End, Segs::First, Inner::Vm1, |op| {
                if let Op::Uplink { src, .. } = op {
                    *src = Src::Outsider;
                }
            }),
            up(S, Sid::End, Segs::BeyondLastEntry, Inner::Vm1),
            up(S, Sid::EndDt6, Segs::First, Inner::Vm1),
            up(S, Sid::End, Segs::Last, Inner::Udp),
            up(S, Sid::Unassigned, Segs::Last, Inner::Vm1),
            up(S, Sid::SourceAddress, Segs::NoSrh, Inner::Vm1),
            up(S, Sid::EndDt6, Segs::Last, Inner::Unknown),
            up(D, Sid::EndSbuf, Segs::Last, Inner::Unknown),
            up(D, Sid::EndS, Segs::Last, Inner::Vm1),
            up_with(S, Sid::End, Segs::First, Inner::Vm1, |op| {
                if let Op::Uplink { next, .. } = op {
                    *next = Next::Multicast;
                }
            }),
            bad([set(Field::HopLimit, 1), Mutation::None]),
            bad([set(Field::EtherType, 0x12), Mutation::None]),
            bad([set(Field::IpVersion, 4), Mutation::None]),
            bad([set(Field::PayloadLength, 0xff), Mutation::None]),
            bad([set(Field::SrhRoutingType, 2), Mutation::None]),
            bad([set(Field::SrhLastEntry, 9), Mutation::None]),
            bad([set(Field::SrhHdrExtLen, 0xff), Mutation::None]),
            bad([set(Field::NextHeader, 0), Mutation::None]),
            bad([set(Field::InnerVersion, 5), Mutation::None]),
            bad([Mutation::Truncate { keep: 30 }, Mutation::None]),
            bad([Mutation::Flip { at: 0, mask: 1 }, Mutation::None]),
            bad([Mutation::Flip { at: 3, mask: 0x40 }, Mutation::None]),
            Op::Drain,
        ],
    ));
    v
}

fn main() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/dataplane_ops");
    std::fs::create_dir_all(&dir).expect("create the corpus directory");
    for (name, ops) in seeds() {
        let bytes = encode(&ops);
        assert_eq!(decode(&bytes), ops, "seed {name} does not decode back");
        Harness::new().run(&bytes);
        let path = dir.join(format!("seed-{name}"));
        std::fs::write(&path, &bytes).expect("write a seed");
        println!(
            "{} ({} operations, {} bytes)",
            path.display(),
            ops.len(),
            bytes.len()
        );
    }
}
