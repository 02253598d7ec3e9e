//! Writes a pcap of SRv6 frames *emitted by srmig's dataplane*, for `interop/emit-check.sh`,
//! which checks that tshark decodes them cleanly and that a Linux kernel node accepts them.
//!
//! ```text
//! cargo run -p srmig-dataplane --example emit_interop -- OUT.pcap
//! ```
//!
//! The node is an ingress host: a local VM (2001:db8:e00::10 on port tap0) sends one UDP
//! datagram to each of three destinations, each steered by a different headend policy:
//!
//! | destination        | policy        | segments                | payload              |
//! |--------------------|---------------|-------------------------|----------------------|
//! | 2001:db8:f00::10   | H.Encaps      | fc00:9::e, fc00:9::d6   | `srmig-emit-encaps`  |
//! | 2001:db8:f00::11   | H.Encaps.Red  | fc00:9::e, fc00:9::d6   | `srmig-emit-red`     |
//! | 2001:db8:f00::12   | H.Insert      | fc00:9::e               | `srmig-emit-insert`  |
//!
//! On the kernel side fc00:9::e is `seg6local action End` and fc00:9::d6 is
//! `seg6local action End.DX6`; emit-check.sh builds that node. The MACs below are the ones
//! emit-check.sh gives its veths.
#![allow(clippy::print_stderr)]

use std::fs::File;
use std::net::Ipv6Addr;
use std::process::ExitCode;

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::DataLink;
use srmig_dataplane::{Batch, Dataplane, Instant, NodeConfig, Verdict};

/// srmig node configuration (NodeConfig TOML, as srmigd would load it).
const CONFIG: &str = r#"
locator = "fc00:8::/48"
source_address = "2001:db8:e::1"
infrastructure_prefixes = ["fc00::/16", "2001:db8:e::/64"]
gateway = { address = "2001:db8:e00::1", mac = "02:00:00:00:e0:01" }

[[ports]]
name = "up0"
kind = "uplink"
mac = "02:00:00:00:0e:01"        # emit-check.sh: the injector's veth x0
peer_mac = "02:00:00:00:0e:02"   # emit-check.sh: the kernel node's veth k0

[[ports]]
name = "tap0"
kind = "vm"
mac = "02:00:00:00:e0:01"

[[routes]]
prefix = "fc00::/16"
port = "up0"

[[vms]]
name = "vm"
addresses = ["2001:db8:e00::10"]
mac = "02:00:00:00:e0:10"
port = "tap0"
state = "running"

[[policies]]
name = "encaps"
headend = "H.Encaps"
segments = ["fc00:9::e", "fc00:9::d6"]

[[policies]]
name = "red"
headend = "H.Encaps.Red"
segments = ["fc00:9::e", "fc00:9::d6"]

[[policies]]
name = "insert"
headend = "H.Insert"
segments = ["fc00:9::e"]

[[mappings]]
vm_address = "2001:db8:f00::10/128"
policy = "encaps"

[[mappings]]
vm_address = "2001:db8:f00::11/128"
policy = "red"

[[mappings]]
vm_address = "2001:db8:f00::12/128"
policy = "insert"
"#;

const VM_MAC: [u8; 6] = [2, 0, 0, 0, 0xe0, 0x10];
const GATEWAY_MAC: [u8; 6] = [2, 0, 0, 0, 0xe0, 0x01];
const VM_ADDR: &str = "2001:db8:e00::10";

/// An Ethernet + IPv6 + UDP frame from the VM to `dst`:5000 carrying `payload`.
fn vm_frame(dst: Ipv6Addr, payload: &[u8]) -> Result<Vec<u8>, String> {
    let src: Ipv6Addr = VM_ADDR.parse().map_err(|e| format!("{e}"))?;
    let udp_len = 8 + payload.len();
    let mut f = Vec::with_capacity(14 + 40 + udp_len);
    f.extend_from_slice(&GATEWAY_MAC);
    f.extend_from_slice(&VM_MAC);
    f.extend_from_slice(&[0x86, 0xdd]);
    // Version 6, traffic class 0, flow label 0x54321 (copied or hashed into the outer header).
    f.extend_from_slice(&[0x60, 0x05, 0x43, 0x21]);
    f.extend_from_slice(&(udp_len as u16).to_be_bytes());
    f.extend_from_slice(&[17, 64]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&5000u16.to_be_bytes());
    f.extend_from_slice(&(udp_len as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    srmig_wire::checksum::fix_l4_checksum(&mut f[14..]).map_err(|e| format!("checksum: {e}"))?;
    Ok(f)
}

fn run(out: &str) -> Result<usize, String> {
    let cfg: NodeConfig = toml::from_str(CONFIG).map_err(|e| format!("config: {e}"))?;
    let mut dp = Dataplane::new(cfg).map_err(|e| format!("config: {e}"))?;
    let tap = dp.port_id("tap0").ok_or("no port tap0")?;
    let up = dp.port_id("up0").ok_or("no port up0")?;

    let probes: [(&str, &[u8]); 3] = [
        ("2001:db8:f00::10", b"srmig-emit-encaps"),
        ("2001:db8:f00::11", b"srmig-emit-red"),
        ("2001:db8:f00::12", b"srmig-emit-insert"),
    ];
    let mut batch = Batch::new(probes.len());
    for (dst, payload) in probes {
        let dst: Ipv6Addr = dst.parse().map_err(|e| format!("{e}"))?;
        let frame = vm_frame(dst, payload)?;
        batch.push(tap, &frame).map_err(|e| format!("{e}"))?;
    }
    dp.process_batch(Instant::from_millis(1), &mut batch);

    let file = File::create(out).map_err(|e| format!("{out}: {e}"))?;
    let header = PcapHeader {
        datalink: DataLink::ETHERNET,
        ..PcapHeader::default()
    };
    let mut writer = PcapWriter::with_header(file, header).map_err(|e| format!("{out}: {e}"))?;
    for (i, pkt) in batch.packets().iter().enumerate() {
        if pkt.verdict != Verdict::Tx(up) {
            return Err(format!(
                "probe {i}: verdict {:?}, expected Tx(up0)",
                pkt.verdict
            ));
        }
        let data = pkt.data();
        let ts = std::time::Duration::from_millis(i as u64);
        writer
            .write_packet(&PcapPacket::new(ts, data.len() as u32, data))
            .map_err(|e| format!("{out}: {e}"))?;
    }
    Ok(batch.len())
}

fn main() -> ExitCode {
    let Some(out) = std::env::args().nth(1) else {
        eprintln!("usage: emit_interop OUT.pcap");
        return ExitCode::from(2);
    };
    match run(&out) {
        Ok(n) => {
            eprintln!("emit_interop: wrote {n} frames to {out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("emit_interop: {e}");
            ExitCode::FAILURE
        }
    }
}
