//! Every wire parser on arbitrary bytes (and the commit-fence marker reader): nothing may
//! panic, and whatever parses must re-emit to something that parses to the same Repr.
#![no_main]

use std::net::Ipv6Addr;

use libfuzzer_sys::fuzz_target;
use srmig_dataplane::fence;
use srmig_wire::{ethernet, ext, icmpv6, ipv4, ipv6, srh, IpProtocol, SrhRepr};

fn srh_round_trip(bytes: &[u8]) {
    let Ok(view) = srh::Srh::new_checked(bytes) else {
        return;
    };
    // Every getter is safe after new_checked.
    let _ = (
        view.segments_left(),
        view.last_entry(),
        view.flags(),
        view.tag(),
    );
    for i in 0..=usize::from(view.last_entry()) {
        let _ = view.segment(i);
    }
    for tlv in view.tlvs() {
        let _ = tlv;
    }
    // The HMAC TLV finder: what it finds lies in the header, and a 32-octet one re-emits to the
    // same bytes.
    if let Ok(Some(h)) = view.hmac_tlv() {
        assert!(h.offset + 8 + h.hmac.len() <= view.header_len());
        assert_eq!(bytes[h.offset], srh::TLV_HMAC);
        if let Ok(mac) = <[u8; srh::HMAC_FIELD_LEN]>::try_from(h.hmac) {
            let mut tlv = [0u8; srh::HMAC_TLV_LEN];
            assert_eq!(
                srh::emit_hmac_tlv(&mut tlv, h.d_flag, h.key_id, &mac),
                tlv.len()
            );
            // The reserved bits (all but D) are not kept.
            let mut seen = bytes[h.offset..h.offset + tlv.len()].to_vec();
            seen[2] &= srh::HMAC_D_FLAG;
            seen[3] = 0;
            assert_eq!(&seen[..], &tlv[..]);
        }
    }
    if let Ok(repr) = SrhRepr::parse(&view) {
        let mut buf = vec![0u8; repr.buffer_len()];
        let mut out = srh::Srh::new_unchecked(&mut buf[..]);
        if repr.emit(&mut out).is_ok() {
            let again = SrhRepr::parse(&srh::Srh::new_unchecked(&buf[..]))
                .expect("an emitted SRH must parse");
            assert_eq!(again.segments, repr.segments);
            assert_eq!(again.segments_left, repr.segments_left);
            assert_eq!(again.last_entry, repr.last_entry);
        }
    }
}

/// The commit-fence marker reader (`srmig_dataplane::fence`): never panics; a marker it reads
/// has a valid SRH, and a marker built along that SRH's path reads back the same VM.
fn fence_marker(bytes: &[u8]) {
    let Some(vm) = fence::marker_vm(bytes) else {
        return;
    };
    let view = srh::Srh::new_checked(bytes).expect("a marker's SRH is valid");
    let path: Vec<Ipv6Addr> = (0..=usize::from(view.last_entry()))
        .rev()
        .map(|i| view.segment(i))
        .collect();
    let Some(m) = fence::build_marker(Ipv6Addr::LOCALHOST, &path, vm) else {
        assert!(path.len() > srh::MAX_SEGMENTS, "no marker along {path:?}");
        return;
    };
    assert_eq!(fence::marker_vm(&m[40..]), Some(vm));
}

/// Hop-by-Hop / Destination Options (RFC 8200 4.2): never panics, every offset it reports is
/// inside the header, and the verdict does not depend on options after the first problem.
fn options(header: &[u8]) {
    let verdict = ext::process_options(header, |t| t == ext::OPT_ROUTER_ALERT);
    match verdict {
        ext::OptionsVerdict::Pass => {}
        ext::OptionsVerdict::Unknown { offset, .. } => {
            assert!(
                offset >= 2 && offset < header.len(),
                "{verdict:?} for {}",
                header.len()
            );
            let t = header[offset];
            assert!(
                t != 0 && t != 1 && t != ext::OPT_ROUTER_ALERT,
                "{t} is known"
            );
            // The option fits its header (a length problem would have been found first), and
            // the bytes after it do not matter.
            let end = offset + 2 + usize::from(header[offset + 1]);
            assert!(end <= header.len(), "{verdict:?} for {}", header.len());
            let again = ext::process_options(&header[..end], |t| t == ext::OPT_ROUTER_ALERT);
            assert_eq!(again, verdict, "after cutting at {end}");
        }
        ext::OptionsVerdict::BadLength { offset } => {
            assert!(
                offset >= 2 && offset < header.len(),
                "{verdict:?} for {}",
                header.len()
            );
        }
    }
}

fn ipv6_packet(bytes: &[u8]) {
    let Ok(packet) = ipv6::Packet::new_checked(bytes) else {
        return;
    };
    let _ = ipv6::Repr::parse(&packet);
    let payload = packet.payload();
    let Ok(chain) = ext::walk(packet.next_header(), payload, 8) else {
        return;
    };
    if let Some((off, len)) = chain.routing {
        if let Some(rh) = payload.get(off..off + len) {
            srh_round_trip(rh);
        }
    }
    let (proto, off) = chain.upper;
    let upper = payload.get(off..).unwrap_or(&[]);
    if proto == IpProtocol::ICMPV6 {
        if let Ok(icmp) = icmpv6::Packet::new_checked(upper) {
            let _ = icmpv6::Repr::parse(&icmp);
            let _ = icmpv6::Repr::parse_verified(&packet.src_addr(), &packet.dst_addr(), &icmp);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = ethernet::Frame::new_checked(data) {
        let _ = ethernet::Repr::parse(&frame);
        ipv6_packet(frame.payload());
        if let Ok(v4) = ipv4::Packet::new_checked(frame.payload()) {
            let _ = ipv4::Repr::parse(&v4);
        }
    }
    ipv6_packet(data);
    srh_round_trip(data);
    fence_marker(data);
    options(data);
});
