//! Fast-path costs of the wire crate: what an SRv6 endpoint does per packet.
#![allow(missing_docs)]

use std::hint::black_box;
use std::net::Ipv6Addr;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use srmig_wire::srh::{emit_srh, Srh};
use srmig_wire::{checksum, ext, icmpv6, ipv6, IpProtocol};

fn srv6_packet() -> Vec<u8> {
    let segs: Vec<Ipv6Addr> = (1..=3u16)
        .map(|i| Ipv6Addr::new(0xfc00, i, 0, 0, 0, 0, 0, 1))
        .collect();
    let mut srh = [0u8; 64];
    let n = emit_srh(&mut srh, IpProtocol::IPV6, 2, 0, &segs);
    let inner_len = 100;
    let mut pkt = vec![0u8; 40];
    ipv6::emit_header(
        &mut pkt,
        Ipv6Addr::LOCALHOST,
        segs[2],
        IpProtocol::ROUTING,
        (n + inner_len) as u16,
        64,
    );
    pkt.extend_from_slice(&srh[..n]);
    pkt.extend(std::iter::repeat_n(0u8, inner_len));
    pkt
}

/// RFC 8986 End: validate, decrement Segments Left, copy the next segment to the DA,
/// decrement Hop Limit. Returns false where the dataplane would drop.
#[inline]
fn end_behavior(pkt: &mut [u8]) -> bool {
    let Ok(ip) = ipv6::Packet::new_checked(&*pkt) else {
        return false;
    };
    let Ok(chain) = ext::walk(ip.next_header(), ip.payload(), 8) else {
        return false;
    };
    let Some((off, _)) = chain.routing else {
        return false;
    };
    let at = ipv6::HEADER_LEN + off;
    let Ok(srh) = Srh::new_checked(&pkt[at..]) else {
        return false;
    };
    let sl = srh.segments_left();
    if sl == 0 || !srh.segments_left_in_range() {
        return false;
    }
    let next = srh.segment(usize::from(sl - 1));
    Srh::new_unchecked(&mut pkt[at..]).set_segments_left(sl - 1);
    let mut ip = ipv6::Packet::new_unchecked(&mut *pkt);
    ip.set_dst_addr(next);
    let hl = ip.hop_limit();
    ip.set_hop_limit(hl.saturating_sub(1));
    true
}

fn benches(c: &mut Criterion) {
    let pkt = srv6_packet();
    let mut g = c.benchmark_group("fast_path");
    g.throughput(Throughput::Elements(1));
    g.bench_function("end_behavior", |b| {
        let mut p = pkt.clone();
        b.iter(|| {
            p[43] = 2; // restore Segments Left
            black_box(end_behavior(black_box(&mut p)))
        })
    });
    g.bench_function("walk_3_headers", |b| {
        let mut chain = vec![60u8, 0, 1, 4, 0, 0, 0, 0, 43, 0, 1, 4, 0, 0, 0, 0];
        chain.extend_from_slice(&pkt[40..]);
        b.iter(|| black_box(ext::walk(IpProtocol::DST_OPTS, black_box(&chain), 8)))
    });
    g.bench_function("srh_check_len_and_tlvs", |b| {
        b.iter(|| {
            let s = Srh::new_checked(black_box(&pkt[40..])).map(|s| s.check_tlvs());
            black_box(s.is_ok())
        })
    });
    g.bench_function("emit_srh_3", |b| {
        let segs = [Ipv6Addr::LOCALHOST; 3];
        let mut buf = [0u8; 64];
        b.iter(|| black_box(emit_srh(&mut buf, IpProtocol::IPV6, 2, 0, black_box(&segs))))
    });
    g.bench_function("emit_error_param_problem", |b| {
        let mut buf = [0u8; 1280];
        b.iter(|| {
            black_box(icmpv6::emit_error(
                &mut buf,
                Ipv6Addr::LOCALHOST,
                Ipv6Addr::LOCALHOST,
                icmpv6::Message::PARAM_PROBLEM,
                0,
                43,
                black_box(&pkt),
            ))
        })
    });
    g.finish();
    let mut g = c.benchmark_group("checksum");
    let data = vec![0xa5u8; 1500];
    g.throughput(Throughput::Bytes(1500));
    g.bench_function("data_1500", |b| {
        b.iter(|| black_box(checksum::data(black_box(&data))))
    });
    g.finish();
}

criterion_group!(wire, benches);
criterion_main!(wire);
