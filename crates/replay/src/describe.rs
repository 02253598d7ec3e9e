//! One-line, tcpdump-style summaries of frames, for the replay's per-packet printout.

use std::fmt::Write as _;

use srmig_wire::{ethernet, ext, icmpv6, ipv6, srh, IpProtocol};

/// Summarises a frame: addresses, the SRH (Segments Left and the path in travel order) and the
/// upper-layer protocol. Never fails: what does not parse is said to be malformed.
pub fn describe(frame: &[u8]) -> String {
    let Ok(eth) = ethernet::Frame::new_checked(frame) else {
        return format!("malformed Ethernet frame ({} bytes)", frame.len());
    };
    let mut out = String::new();
    match eth.ethertype() {
        ethernet::EtherType::IPV6 => describe_ipv6(eth.payload(), &mut out),
        ethernet::EtherType::IPV4 => out.push_str("IPv4"),
        other => {
            let _ = write!(out, "EtherType {:#06x}", other.0);
        }
    }
    out
}

fn describe_ipv6(bytes: &[u8], out: &mut String) {
    let Ok(ip) = ipv6::Packet::new_checked(bytes) else {
        out.push_str("malformed IPv6");
        return;
    };
    let _ = write!(
        out,
        "{} > {} hlim {}",
        ip.src_addr(),
        ip.dst_addr(),
        ip.hop_limit()
    );
    let payload = ip.payload();
    let Ok(chain) = ext::walk(ip.next_header(), payload, 8) else {
        out.push_str(" [malformed extension headers]");
        return;
    };
    if let Some((off, len)) = chain.routing {
        match payload.get(off..off + len).map(srh::Srh::new_checked) {
            Some(Ok(h)) => {
                let path: Vec<String> = (0..h.num_segments())
                    .rev()
                    .filter_map(|i| h.segment_checked(i))
                    .map(|a| a.to_string())
                    .collect();
                let _ = write!(out, " SRH SL={} [{}]", h.segments_left(), path.join(", "));
            }
            _ => out.push_str(" [routing header]"),
        }
    }
    let (proto, off) = chain.upper;
    let upper = payload.get(off..).unwrap_or(&[]);
    match proto {
        IpProtocol::IPV6 => {
            out.push_str(" | inner ");
            describe_ipv6(upper, out);
        }
        IpProtocol::IPV4 => out.push_str(" | inner IPv4"),
        IpProtocol::UDP => out.push_str(" UDP"),
        IpProtocol::TCP => out.push_str(" TCP"),
        IpProtocol::ICMPV6 => match icmpv6::Packet::new_checked(upper) {
            Ok(p) => {
                let _ = write!(out, " ICMPv6 type {} code {}", p.msg_type().0, p.msg_code());
            }
            Err(_) => out.push_str(" ICMPv6 (truncated)"),
        },
        IpProtocol::NO_NEXT_HEADER => {}
        other => {
            let _ = write!(out, " proto {}", other.0);
        }
    }
}
