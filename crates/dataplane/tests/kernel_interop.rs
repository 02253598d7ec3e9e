//! Interop with the Linux kernel's own SRv6 implementation (seg6 headends, seg6local endpoints).
//!
//! The fixtures in `interop/fixtures/*.pcap` are real frames captured on veth links around a
//! kernel node by `interop/gen-kernel-fixtures.sh`; `interop/fixtures/README.md` describes the
//! topologies. `interop/fixtures/nodes/*.toml` configure srmig like the kernel node. Each case
//! below feeds the kernel's *input* frames to our dataplane and compares our output frames with
//! the kernel's *output* frames byte for byte.
//!
//! Nothing is masked: the captures are deterministic (fixed MACs, addresses, ICMPv6 identifier,
//! payloads and flow labels; flow labels are copied from the inner packet, as the kernel does with
//! `net.ipv6.seg6_flowlabel = 0`, so no hash is involved; checksums are computed in software on
//! the veths). Where srmig deliberately or knowingly differs from the kernel, the case lists the
//! exact bytes as a [`Divergence`] with the reason; the test fails if such a byte differs in any
//! other way, if any other byte differs, *or if a listed divergence disappears* (so the list can
//! only shrink by being edited along with the fix).

use std::fs::File;
use std::net::Ipv6Addr;
use std::path::PathBuf;

use pcap_file::pcap::PcapReader;
use pcap_file::DataLink;
use srmig_dataplane::{Batch, Dataplane, Instant, NodeConfig, Verdict};
use srmig_wire::{ipv6, IpProtocol, SrhRepr};

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../interop/fixtures")
}

/// All frames of a fixture capture (Ethernet link type).
fn frames(name: &str) -> Vec<Vec<u8>> {
    let path = fixture_dir().join(name);
    let file = File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = PcapReader::new(file).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(
        reader.header().datalink,
        DataLink::ETHERNET,
        "{name}: link type"
    );
    let mut out = Vec::new();
    while let Some(pkt) = reader.next_packet() {
        let pkt = pkt.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            pkt.data.len() as u32,
            pkt.orig_len,
            "{name}: truncated capture"
        );
        out.push(pkt.data.into_owned());
    }
    assert!(!out.is_empty(), "{name}: no frames");
    out
}

/// A dataplane configured from `interop/fixtures/nodes/<name>`.
fn node(name: &str) -> Dataplane {
    let path = fixture_dir().join("nodes").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let cfg: NodeConfig = toml::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    Dataplane::new(cfg).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A known, explained difference between our output and the kernel's at one byte offset of
/// the Ethernet frame.
#[derive(Debug, Clone, Copy)]
struct Divergence {
    offset: usize,
    ours: u8,
    kernel: u8,
    why: &'static str,
}

/// Offsets in an Ethernet frame.
const OUTER_HOP_LIMIT: usize = 14 + 7;

/// Inner IPv6 hop limit behind an outer IPv6 header and an SRH of `segments` entries.
const fn inner_hop_limit(segments: usize) -> usize {
    14 + 40 + 8 + 16 * segments + 7
}

struct Case {
    config: &'static str,
    input: &'static str,
    ingress: &'static str,
    expected: &'static str,
    egress: &'static str,
    divergences: &'static [Divergence],
}

/// Runs one case; returns a description of every mismatch (empty: pass).
fn run(case: &Case) -> Vec<String> {
    let mut dp = node(case.config);
    let ingress = dp
        .port_id(case.ingress)
        .unwrap_or_else(|| panic!("{}: no port {}", case.config, case.ingress));
    let egress = dp
        .port_id(case.egress)
        .unwrap_or_else(|| panic!("{}: no port {}", case.config, case.egress));
    let input = frames(case.input);
    let expected = frames(case.expected);
    assert_eq!(input.len(), expected.len(), "{}: frame counts", case.input);

    let mut batch = Batch::new(input.len());
    for f in &input {
        assert!(
            batch.push(ingress, f).expect("fixture frame fits"),
            "batch full"
        );
    }
    dp.process_batch(Instant::from_millis(1), &mut batch);

    let mut errors = Vec::new();
    let mut seen = vec![false; case.divergences.len()];
    for (i, (pkt, want)) in batch.packets().iter().zip(&expected).enumerate() {
        let what = format!("{} frame {i} -> {}", case.input, case.expected);
        if pkt.verdict != Verdict::Tx(egress) {
            errors.push(format!(
                "{what}: verdict {:?}, kernel sent it on {}",
                pkt.verdict, case.egress
            ));
            continue;
        }
        let got = pkt.data();
        if got.len() != want.len() {
            errors.push(format!(
                "{what}: {} bytes, kernel {} bytes",
                got.len(),
                want.len()
            ));
            continue;
        }
        for (off, (&g, &w)) in got.iter().zip(want.iter()).enumerate() {
            if g == w {
                continue;
            }
            match case.divergences.iter().position(|d| d.offset == off) {
                Some(k) if case.divergences[k].ours == g && case.divergences[k].kernel == w => {
                    seen[k] = true;
                }
                _ => errors.push(format!(
                    "{what}: byte {off}: ours {g:#04x}, kernel {w:#04x}"
                )),
            }
        }
    }
    for (d, seen) in case.divergences.iter().zip(seen) {
        if !seen {
            errors.push(format!(
                "{}: listed divergence at byte {} ({}) no longer occurs: remove it from the case",
                case.input, d.offset, d.why
            ));
        }
    }
    errors
}

fn check(cases: &[Case]) {
    let errors: Vec<String> = cases.iter().flat_map(run).collect();
    assert!(
        errors.is_empty(),
        "{} mismatches:\n{}",
        errors.len(),
        errors.join("\n")
    );
}

// ------------------------------------------------------------------------------------------
// The kernel's frames parse with srmig-wire, and carry what the README says.
// ------------------------------------------------------------------------------------------

fn addr(s: &str) -> Ipv6Addr {
    s.parse().expect("literal address")
}

/// (outer destination, SRH segments left, SRH segment list) of an SRv6 frame.
fn srv6(frame: &[u8]) -> (Ipv6Addr, SrhRepr) {
    assert_eq!(&frame[12..14], &[0x86, 0xdd], "ethertype");
    let ip = ipv6::Packet::new_checked(&frame[14..]).expect("IPv6 header");
    assert_eq!(ip.next_header(), IpProtocol::ROUTING);
    let srh = srmig_wire::srh::Srh::new_checked(ip.payload()).expect("SRH");
    let repr = SrhRepr::parse(&srh).expect("SRH repr");
    (ip.dst_addr(), repr)
}

#[test]
fn kernel_headend_frames_parse() {
    let (s1, s2, vm) = (
        addr("fc00:1::e"),
        addr("fc00:2::e"),
        addr("2001:db8:f00::10"),
    );
    for f in frames("h_encaps.pcap")
        .iter()
        .chain(&frames("h_encaps_fwd_out.pcap"))
    {
        let (dst, srh) = srv6(f);
        assert_eq!(dst, s1);
        assert_eq!((srh.segments_left, srh.last_entry), (1, 1));
        assert_eq!(
            srh.segments,
            vec![s2, s1],
            "Segment List[0] is the last segment"
        );
        assert_eq!(srh.next_header, IpProtocol::IPV6);
    }
    for f in frames("h_insert.pcap")
        .iter()
        .chain(&frames("h_insert_fwd_out.pcap"))
    {
        let (dst, srh) = srv6(f);
        assert_eq!(dst, s1);
        assert_eq!((srh.segments_left, srh.last_entry), (2, 2));
        assert_eq!(
            srh.segments,
            vec![vm, s2, s1],
            "original DA is Segment List[0]"
        );
        assert_ne!(srh.next_header, IpProtocol::IPV6);
    }
    for f in frames("h_encaps_red.pcap")
        .iter()
        .chain(&frames("h_encaps_red_fwd_out.pcap"))
    {
        let (dst, srh) = srv6(f);
        assert_eq!(dst, s1, "first segment only in the DA");
        assert_eq!((srh.segments_left, srh.last_entry), (1, 0));
        assert_eq!(srh.segments, vec![s2]);
    }
}

#[test]
fn kernel_endpoint_frames_parse() {
    let s2 = addr("fc00:2::e");
    for name in ["end_out.pcap", "end_x_out.pcap", "end_red_out.pcap"] {
        for f in frames(name) {
            let (dst, srh) = srv6(&f);
            assert_eq!((dst, srh.segments_left), (s2, 0), "{name}");
        }
    }
    for f in frames("end_insert_out.pcap") {
        let (dst, srh) = srv6(&f);
        assert_eq!((dst, srh.segments_left), (s2, 1));
    }
    for name in ["end_dx6_out.pcap", "end_dt6_out.pcap"] {
        for f in frames(name) {
            let ip = ipv6::Packet::new_checked(&f[14..]).expect("IPv6");
            assert_eq!(ip.dst_addr(), addr("2001:db8:f00::10"), "{name}");
            assert!(!ip.next_header().is_ipv6_ext(), "{name}: decapsulated");
        }
    }
}

/// The host-originated H.Encaps capture is byte for byte the input of the End node (same
/// headend, same link): a sanity check that the fixtures were regenerated together.
#[test]
fn kernel_headend_output_is_endpoint_input() {
    assert_eq!(frames("h_encaps.pcap"), frames("end_in.pcap"));
    assert_eq!(frames("h_insert.pcap"), frames("end_insert_in.pcap"));
    assert_eq!(frames("h_encaps_red.pcap"), frames("end_red_in.pcap"));
}

// ------------------------------------------------------------------------------------------
// Endpoint behaviors: our output == the kernel's output.
// ------------------------------------------------------------------------------------------

#[test]
fn end_matches_kernel() {
    check(&[
        Case {
            config: "e.toml",
            input: "end_in.pcap",
            ingress: "e0",
            expected: "end_out.pcap",
            egress: "e1",
            divergences: &[],
        },
        Case {
            config: "e.toml",
            input: "end_insert_in.pcap",
            ingress: "e0",
            expected: "end_insert_out.pcap",
            egress: "e1",
            divergences: &[],
        },
        Case {
            config: "e.toml",
            input: "end_red_in.pcap",
            ingress: "e0",
            expected: "end_red_out.pcap",
            egress: "e1",
            divergences: &[],
        },
    ]);
}

#[test]
fn end_x_matches_kernel() {
    check(&[Case {
        config: "e.toml",
        input: "end_x_in.pcap",
        ingress: "e0",
        expected: "end_x_out.pcap",
        egress: "e1",
        divergences: &[],
    }]);
}

// Linux forwards the decapsulated packet through `ip6_forward`, which decrements the inner
// hop limit (64 -> 63); srmig forwards it the same way (`forward_inner`), byte for byte.

#[test]
fn end_dx6_matches_kernel() {
    check(&[Case {
        config: "e.toml",
        input: "end_dx6_in.pcap",
        ingress: "e0",
        expected: "end_dx6_out.pcap",
        egress: "e1",
        divergences: &[],
    }]);
}

#[test]
fn end_dt6_matches_kernel() {
    check(&[Case {
        config: "e.toml",
        input: "end_dt6_in.pcap",
        ingress: "e0",
        expected: "end_dt6_out.pcap",
        egress: "e1",
        divergences: &[],
    }]);
}

/// srmig's End.S / End.SBUF with the VM running here decapsulate and deliver exactly like the
/// kernel's End.DX6 / End.DT6 forwarding the inner packet to the VM's host.
#[test]
fn end_s_and_end_sbuf_deliver_like_kernel_decap() {
    check(&[
        Case {
            config: "e_vm_here.toml",
            input: "end_dx6_in.pcap",
            ingress: "e0",
            expected: "end_dx6_out.pcap",
            egress: "e1",
            divergences: &[],
        },
        Case {
            config: "e_vm_here.toml",
            input: "end_dt6_in.pcap",
            ingress: "e0",
            expected: "end_dt6_out.pcap",
            egress: "e1",
            divergences: &[],
        },
    ]);
}

/// End.S with the VM gone forwards to the next segment exactly like the kernel's End, for
/// packets from all three kernel headends.
#[test]
fn end_s_forward_matches_kernel_end() {
    let case = |input, expected| Case {
        config: "e_vm_gone.toml",
        input,
        ingress: "e0",
        expected,
        egress: "e1",
        divergences: &[],
    };
    check(&[
        case("end_in.pcap", "end_out.pcap"),
        case("end_insert_in.pcap", "end_insert_out.pcap"),
        case("end_red_in.pcap", "end_red_out.pcap"),
    ]);
}

// ------------------------------------------------------------------------------------------
// Headends: the kernel as a router steering a VM's traffic (seg6 encap on the forwarding
// path), srmig as the VM's gateway with the same policy.
// ------------------------------------------------------------------------------------------

/// Linux encapsulates a forwarded packet on input (`seg6_input`) *before* forwarding it: the
/// inner hop limit is untouched and the new outer header (hop limit 64) is the one
/// `ip6_forward` decrements. srmig decrements the inner packet's hop limit as the VM's router,
/// then encapsulates with the policy's hop limit (64). RFC 8986 5.1 does not say which.
const fn encaps_hop_limits(segments: usize) -> [Divergence; 2] {
    [
        Divergence {
            offset: OUTER_HOP_LIMIT,
            ours: 64,
            kernel: 63,
            why: "kernel decrements the new outer hop limit when forwarding the encapsulation",
        },
        Divergence {
            offset: inner_hop_limit(segments),
            ours: 63,
            kernel: 64,
            why: "srmig decrements the inner hop limit as the VM's router; the kernel does not",
        },
    ]
}

const ENCAPS_DIVERGENCES: [Divergence; 2] = encaps_hop_limits(2);
const ENCAPS_RED_DIVERGENCES: [Divergence; 2] = encaps_hop_limits(1);

#[test]
fn h_encaps_matches_kernel() {
    check(&[Case {
        config: "h_encaps.toml",
        input: "h_encaps_fwd_in.pcap",
        ingress: "h1",
        expected: "h_encaps_fwd_out.pcap",
        egress: "h0",
        divergences: &ENCAPS_DIVERGENCES,
    }]);
}

#[test]
fn h_encaps_red_matches_kernel() {
    check(&[Case {
        config: "h_encaps_red.toml",
        input: "h_encaps_red_fwd_in.pcap",
        ingress: "h1",
        expected: "h_encaps_red_fwd_out.pcap",
        egress: "h0",
        divergences: &ENCAPS_RED_DIVERGENCES,
    }]);
}

/// H.Insert keeps one IPv6 header: both decrement its hop limit once.
#[test]
fn h_insert_matches_kernel() {
    check(&[Case {
        config: "h_insert.toml",
        input: "h_insert_fwd_in.pcap",
        ingress: "h1",
        expected: "h_insert_fwd_out.pcap",
        egress: "h0",
        divergences: &[],
    }]);
}
