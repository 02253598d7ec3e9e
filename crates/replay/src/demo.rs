//! `srmig demo` (until the lab exists): an example migration replayed through the real
//! dataplane, hop by hop.
//!
//! A client sends ten UDP datagrams, 1 ms apart, to vm1 over the SR path
//! `S::End.S -> D::End.SBUF` that the controller installs before a migration. The frames are
//! built here (the input capture is written to the output directory so it can be inspected),
//! replayed through host S (`examples/migration/source.toml`: vm1 runs, then pauses after the
//! 4th packet), then whatever S sent to the fabric crosses a modelled fabric router (MAC
//! rewrite, hop limit - 1, 100 us) and is replayed through host D
//! (`examples/migration/dest.toml`: vm1 resumes 3.5 ms after the first forwarded packet).

use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};

use std::time::Duration;

use etherparse::PacketBuilder;
use srmig_wire::{ethernet, ipv6, srh, IpProtocol, SrhRepr};

use crate::config::ReplayConfig;
use crate::pcap::{read_capture, CaptureWriter};
use crate::run::{replay, Input, ReplayError, Summary};

/// Errors of the demo.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Load(#[from] crate::config::LoadError),
    #[error(transparent)]
    Replay(#[from] ReplayError),
    #[error(transparent)]
    Pcap(#[from] crate::pcap::PcapError),
    #[error("cannot create {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Both hops of the demo.
#[derive(Debug)]
pub struct DemoReport {
    pub input: PathBuf,
    pub source: Summary,
    pub source_out: PathBuf,
    pub dest: Summary,
    pub dest_out: PathBuf,
}

const CLIENT: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x300, 0, 0, 0, 0, 0x30);
const VM1: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x10);
const HOST_C: Ipv6Addr = Ipv6Addr::new(0xfc00, 0, 3, 0, 0, 0, 0, 1);
const S_END_S: Ipv6Addr = Ipv6Addr::new(0xfc00, 0, 1, 0, 0, 0, 0, 0xe5);
const D_END_SBUF: Ipv6Addr = Ipv6Addr::new(0xfc00, 0, 2, 0, 0, 0, 0, 0x5b);
const ROUTER_TO_S: [u8; 6] = [2, 0, 0, 0, 0xff, 1];
const ROUTER_TO_D: [u8; 6] = [2, 0, 0, 0, 0xff, 2];
const S_UPLINK: [u8; 6] = [2, 0, 0, 0, 1, 0];
const D_UPLINK: [u8; 6] = [2, 0, 0, 0, 2, 0];
/// Capture time of the first packet (an arbitrary, fixed epoch time so runs are identical).
const T0: Duration = Duration::from_secs(1_700_000_000);

/// Builds the client's `count` datagrams as they arrive at S from the fabric router.
pub fn example_input(count: u16) -> Vec<(Duration, Vec<u8>)> {
    (0..count)
        .map(|i| {
            let payload = format!("probe seq={}", i + 1);
            let mut inner = Vec::new();
            PacketBuilder::ipv6(CLIENT.octets(), VM1.octets(), 63)
                .udp(40000, 7000)
                .write(&mut inner, payload.as_bytes())
                .expect("writing into a Vec cannot fail");
            (
                T0 + Duration::from_millis(u64::from(i)),
                encapsulate(&inner),
            )
        })
        .collect()
}

/// H.Encaps as host C's srmigd would do it, seen after one router hop.
fn encapsulate(inner: &[u8]) -> Vec<u8> {
    let srh_repr = SrhRepr::from_path(IpProtocol::IPV6, &[S_END_S, D_END_SBUF])
        .expect("a two-segment path is valid");
    let srh_len = srh_repr.buffer_len();
    let ip_len = ipv6::HEADER_LEN + srh_len + inner.len();
    let mut frame = vec![0u8; ethernet::HEADER_LEN + ip_len];
    ethernet::Repr {
        dst_addr: ethernet::Address(S_UPLINK),
        src_addr: ethernet::Address(ROUTER_TO_S),
        ethertype: ethernet::EtherType::IPV6,
    }
    .emit(&mut ethernet::Frame::new_unchecked(&mut frame[..]));
    let ip = &mut frame[ethernet::HEADER_LEN..];
    ipv6::Repr {
        src_addr: HOST_C,
        dst_addr: S_END_S,
        next_header: IpProtocol::ROUTING,
        payload_len: srh_len + inner.len(),
        hop_limit: 63,
        traffic_class: 0,
        flow_label: 0x1_2345,
    }
    .emit(&mut ipv6::Packet::new_unchecked(&mut ip[..]));
    srh_repr
        .emit(&mut srh::Srh::new_unchecked(&mut ip[ipv6::HEADER_LEN..]))
        .expect("the buffer was sized by buffer_len");
    ip[ipv6::HEADER_LEN + srh_len..].copy_from_slice(inner);
    frame
}

/// The fabric router between S and D: new Ethernet addresses, hop limit - 1, 100 us later.
/// Frames whose hop limit would reach 0 are not forwarded (a router would send Time Exceeded).
fn fabric_router(frames: Vec<(Duration, Vec<u8>)>) -> Vec<(Duration, Vec<u8>)> {
    frames
        .into_iter()
        .filter_map(|(t, mut f)| {
            let mut eth = ethernet::Frame::new_checked(&mut f[..]).ok()?;
            eth.set_dst_addr(ethernet::Address(D_UPLINK));
            eth.set_src_addr(ethernet::Address(ROUTER_TO_D));
            let mut ip = ipv6::Packet::new_checked(eth.payload_mut()).ok()?;
            let hl = ip.hop_limit().checked_sub(1).filter(|h| *h > 0)?;
            ip.set_hop_limit(hl);
            Some((t + Duration::from_micros(100), f))
        })
        .collect()
}

fn write_capture(path: &Path, frames: &[(Duration, Vec<u8>)]) -> Result<(), DemoError> {
    let mut w = CaptureWriter::create(path)?;
    for (t, f) in frames {
        w.write(*t, f)?;
    }
    Ok(())
}

/// Host S's configuration (`examples/migration/source.toml`, built into the binary).
pub const SOURCE_TOML: &str = include_str!("../../../examples/migration/source.toml");
/// Host D's configuration (`examples/migration/dest.toml`, built into the binary).
pub const DEST_TOML: &str = include_str!("../../../examples/migration/dest.toml");

fn write_file(path: &Path, text: &str) -> Result<(), DemoError> {
    std::fs::write(path, text).map_err(|source| DemoError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Runs the demo, writing captures, configurations and summaries under `out`.
pub fn run_demo(out: &Path) -> Result<DemoReport, DemoError> {
    std::fs::create_dir_all(out).map_err(|source| DemoError::Io {
        path: out.display().to_string(),
        source,
    })?;
    write_file(&out.join("source.toml"), SOURCE_TOML)?;
    write_file(&out.join("dest.toml"), DEST_TOML)?;
    let input = out.join("client-to-vm1.pcap");
    write_capture(&input, &example_input(10))?;

    let source_cfg = ReplayConfig::load(&out.join("source.toml"))?;
    let source_out = out.join("source");
    let source = replay(
        &source_cfg,
        &[Input {
            port: "up0".into(),
            file: input.clone(),
        }],
        &source_out,
    )?;

    // What S sent to the fabric, through the router, is D's input.
    let forwarded = source_out.join("up0.pcap");
    let to_d: Vec<(Duration, Vec<u8>)> = if forwarded.exists() {
        read_capture(&forwarded, 0)?
            .into_iter()
            .map(|f| (f.timestamp, f.data))
            .collect()
    } else {
        Vec::new()
    };
    let d_input = out.join("fabric-to-d.pcap");
    write_capture(&d_input, &fabric_router(to_d))?;
    let dest_cfg = ReplayConfig::load(&out.join("dest.toml"))?;
    let dest_out = out.join("dest");
    let dest = replay(
        &dest_cfg,
        &[Input {
            port: "up0".into(),
            file: d_input,
        }],
        &dest_out,
    )?;
    Ok(DemoReport {
        input,
        source,
        source_out,
        dest,
        dest_out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_migration_loses_nothing_and_keeps_order() {
        let out = std::env::temp_dir().join(format!("srmig-demo-test-{}", std::process::id()));
        let report = run_demo(&out).expect("demo runs");
        // S: 4 delivered while vm1 runs, 6 forwarded to D after it pauses.
        let s_verdicts: Vec<_> = report
            .source
            .packets
            .iter()
            .map(|p| (p.verdict, p.egress.clone()))
            .collect();
        assert_eq!(s_verdicts.len(), 10);
        assert!(s_verdicts[..4]
            .iter()
            .all(|(v, e)| *v == "tx" && e.as_deref() == Some("vm1-tap")));
        assert!(s_verdicts[4..]
            .iter()
            .all(|(v, e)| *v == "tx" && e.as_deref() == Some("up0")));
        // D: the 4 that arrive before vm1 resumes are held, then released; the rest delivered.
        let d = &report.dest;
        assert_eq!(d.packets.iter().filter(|p| p.verdict == "held").count(), 4);
        assert_eq!(
            d.generated.iter().filter(|g| g.egress == "vm1-tap").count(),
            4
        );
        assert_eq!(d.counters.vms["vm1"].released, 4);
        assert_eq!(d.counters.total_drops, 0);
        // Everything vm1 got at D, in order: the capture holds probes seq 5..=10.
        let frames = read_capture(&report.dest_out.join("vm1-tap.pcap"), 0).expect("output");
        let seqs: Vec<String> = frames
            .iter()
            .map(|f| {
                let text = String::from_utf8_lossy(&f.data);
                let at = text.find("seq=").expect("payload");
                text[at + 4..].trim_end_matches('\0').to_owned()
            })
            .collect();
        assert_eq!(seqs, ["5", "6", "7", "8", "9", "10"]);
        std::fs::remove_dir_all(out).expect("cleanup");
    }
}
