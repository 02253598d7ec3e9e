//! The fuzz world: hosts S, D and C built from the testkit's canonical host configuration,
//! extended so that every behavior and every flavor is installed somewhere, with several VMs
//! and small End.SBUF bounds.
//!
//! Per host (`h` = 1 for S, 2 for D, 3 for C), on top of `testkit::host_config`:
//! - a third VM `vm2` (`2001:db8:200::20`, `10.200.0.20`) on its own port (id 3);
//! - SIDs: End with USP (`::e2`), End.S for `vm2` by name (`::5e2`), End.SBUF for `vm2` by name
//!   (`::5b2`), and a NEXT-C-SID End at `fcbb:bbbb:h::/48` (block 32, 16-bit C-SIDs) in an extra
//!   locator (so an unassigned address inside the main locator is still `NoSid`);
//! - `testkit::with_hmac` (key 7, policy `to-d-hmac`, mapping `2001:db8:901::/48`);
//! - mappings that reach every headend from a VM: `2001:db8:910::/48` -> `to-d-red`,
//!   `2001:db8:920::/48` -> `to-d-insert`, `10.91.0.0/16` -> `to-d-red`, `10.92.0.0/16` ->
//!   `to-d-insert` (H.Insert refuses IPv4); on C, the migrating VMs' addresses -> `via-s-to-d`
//!   (the paper's path: C's client reaches vm1 / vm2 through `S::End.S -> D::End.SBUF`);
//! - uplink HMAC: S verifies HMAC TLVs when present, C requires them, D ignores them;
//! - End.SBUF bounds: 6 packets / 3000 bytes per VM, 10 packets / 5000 bytes in all, 50 ms
//!   (24 chunks of storage: nothing large to zero per input);
//! - ICMPv6 errors: 1000/s with a burst of 8 (the rate limiter is reachable).
//!
//! Initial VM states: on S vm1 and vm2 run; on D they are absent (about to arrive); on C they
//! are absent (C hosts only the client). The client VM runs everywhere.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use srmig_dataplane::testkit::{a6, canon, host_config, with_hmac};
use srmig_dataplane::{
    Behavior, BufferConfig, Flavor, HmacMode, IcmpConfig, MacAddr, MappingConfig, NodeConfig,
    PortConfig, PortKind, SbufMode, SidConfig, VmConfig, VmState,
};

/// Host numbers, as in `canon`.
pub const HOSTS: [u16; 3] = [canon::S, canon::D, canon::C];

/// Function: End with USP.
pub const END_USP: u16 = 0xe2;
/// Function: End.S bound to `vm2` by name.
pub const END_S_VM2: u16 = 0x5e2;
/// Function: End.SBUF bound to `vm2` by name.
pub const END_SBUF_VM2: u16 = 0x5b2;

/// The End.SBUF bounds of the fuzz world.
pub const BUFFER: BufferConfig = BufferConfig {
    per_vm_packets: 6,
    per_vm_bytes: 3000,
    global_packets: 10,
    global_bytes: 5000,
    max_age_ms: 50,
};

/// The VMs of every host, in id order: `vm1`, `client`, `vm2`.
pub const VMS: usize = 3;
/// Ports of every host, in id order: `up0`, `vm1`, `client`, `vm2`.
pub const PORTS: usize = 4;

/// vm2's IPv6 address.
pub fn vm2() -> Ipv6Addr {
    a6("2001:db8:200::20")
}
/// vm2's IPv4 address.
pub const VM2_V4: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 20);
/// vm2's MAC.
pub const VM2_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x20, 0x20];

/// Each VM's MAC, by VM id.
pub const VM_MACS: [[u8; 6]; VMS] = [canon::VM1_MAC, canon::CLIENT_MAC, VM2_MAC];

/// Each VM's IPv6 address, by VM id.
pub fn vm_v6(vm: usize) -> Ipv6Addr {
    match vm {
        0 => canon::vm1(),
        1 => canon::client(),
        _ => vm2(),
    }
}

/// Each VM's IPv4 address, by VM id.
pub fn vm_v4(vm: usize) -> Ipv4Addr {
    match vm {
        0 => canon::VM1_V4,
        1 => canon::CLIENT_V4,
        _ => VM2_V4,
    }
}

/// The uSID block of the NEXT-C-SID SIDs (outside the locators, so that an unassigned
/// address inside a locator still has no SID).
pub const USID_BLOCK: [u16; 2] = [0xfcbb, 0xbbbb];

/// The NEXT-C-SID End SID of host `h` (`fcbb:bbbb:h::`, block /32, 16-bit C-SIDs).
pub fn next_c_sid(h: u16) -> SidConfig {
    SidConfig {
        flavors: vec![Flavor::NextCSid],
        locator_block_len: Some(32),
        locator_node_len: Some(16),
        ..SidConfig::new(
            Ipv6Addr::new(USID_BLOCK[0], USID_BLOCK[1], h, 0, 0, 0, 0, 0),
            Behavior::End,
        )
    }
}

/// SIDs this world adds to the canonical ones of host `h`.
pub fn extra_sids(h: u16) -> Vec<SidConfig> {
    use canon::sid;
    vec![
        SidConfig {
            flavors: vec![Flavor::Usp],
            ..SidConfig::new(sid(h, END_USP), Behavior::End)
        },
        SidConfig {
            vm: Some("vm2".into()),
            ..SidConfig::new(sid(h, END_S_VM2), Behavior::EndS)
        },
        SidConfig {
            vm: Some("vm2".into()),
            mode: Some(SbufMode::Buffer),
            ..SidConfig::new(sid(h, END_SBUF_VM2), Behavior::EndSbuf)
        },
        next_c_sid(h),
    ]
}

fn mapping(prefix: &str, policy: &str) -> MappingConfig {
    MappingConfig {
        vm_address: prefix
            .parse()
            .unwrap_or_else(|_| panic!("bad prefix {prefix}")),
        policy: policy.into(),
    }
}

/// The configuration of host `h` in the fuzz world.
pub fn config(h: u16) -> NodeConfig {
    let vm1_state = if h == canon::S {
        VmState::Running
    } else {
        VmState::Absent
    };
    let mut cfg = host_config(h, vm1_state);
    with_hmac(&mut cfg);
    cfg.ports.push(PortConfig {
        name: "vm2".into(),
        kind: PortKind::Vm,
        mac: MacAddr([0x02, 0, 0, 0, h as u8, 3]),
        peer_mac: None,
        address: None,
        mtu: None,
        hmac: None,
        table: None,
        ipv4_address: None,
        proxy_ndp: Vec::new(),
        proxy_arp: Vec::new(),
    });
    cfg.ports[0].hmac = Some(match h {
        canon::S => HmacMode::Verify,
        canon::C => HmacMode::Require,
        _ => HmacMode::Ignore,
    });
    cfg.vms.push(VmConfig {
        name: "vm2".into(),
        addresses: vec![IpAddr::V6(vm2()), IpAddr::V4(VM2_V4)],
        mac: MacAddr(VM2_MAC),
        port: "vm2".into(),
        state: vm1_state,
    });
    cfg.extra_locators.push(
        ipnet::Ipv6Net::new(
            Ipv6Addr::new(USID_BLOCK[0], USID_BLOCK[1], h, 0, 0, 0, 0, 0),
            48,
        )
        .unwrap_or_else(|_| unreachable!("a /48")),
    );
    cfg.sids.extend(extra_sids(h));
    cfg.mappings.extend([
        mapping("2001:db8:910::/48", "to-d-red"),
        mapping("2001:db8:920::/48", "to-d-insert"),
        mapping("10.91.0.0/16", "to-d-red"),
        mapping("10.92.0.0/16", "to-d-insert"),
    ]);
    if h == canon::C {
        cfg.mappings.extend([
            mapping("2001:db8:100::10/128", "via-s-to-d"),
            mapping("2001:db8:200::20/128", "via-s-to-d"),
            mapping("10.100.0.10/32", "via-s-to-d"),
            mapping("10.200.0.20/32", "via-s-to-d"),
        ]);
    }
    cfg.buffer = BUFFER;
    cfg.icmp = IcmpConfig {
        rate_per_sec: 1000,
        burst: 8,
    };
    cfg
}

/// How many mapping prefixes the operations use.
pub const PREFIXES: usize = 9;

/// Mapping prefixes the operations set and remove.
pub fn prefix(i: usize) -> IpNet {
    const P: [&str; PREFIXES] = [
        "2001:db8:900::90/128",
        "2001:db8:910::/48",
        "2001:db8:920::/48",
        "2001:db8:100::10/128",
        "2001:db8:200::20/128",
        "10.90.0.0/16",
        "10.100.0.10/32",
        "2001:db8:dead::1/128",
        "::/0",
    ];
    P[i % P.len()]
        .parse()
        .unwrap_or_else(|_| unreachable!("literal prefixes"))
}
