//! srmigd's node.toml: the text is parsed as srmigd parses it
//! (`srmig_hostd::config::parse_daemon`, the engine's `NodeConfig` plus `[[qemu]]` and `[io]`),
//! and what parses is built as srmigd builds it (HMAC secrets given as `load_daemon` reads
//! them, without files): the `--workers` check, the engine
//! ([`Dataplane`]) and the agent of the configuration as written and of each worker's share
//! (`workers::worker_node_config`). A host config made from the node's own VMs is then applied.
//! Invariants:
//!
//! - nothing panics: every mistake in the file is an error value;
//! - the engine and the agent accept the same configurations, and every worker's share of a
//!   valid configuration is valid too (srmigd checks the written one, then builds the shares);
//! - the agent's status serializes; a refused host config changes nothing.
//!
//! Two kinds of input. Text (valid UTF-8) is node.toml itself. Random edits of TOML text rarely
//! parse, so an input starting with `0xff` (never UTF-8) is instead a list of edits to a valid
//! configuration: byte 1 picks the testkit node (`srmig_agent::testkit::node_toml`) or
//! [`RICH`], every following 3 bytes `[op, index, value]` change one field (a SID's behavior,
//! flavors, parameters, a port's kind or MTU, a policy's segments, a VM's addresses, a route,
//! the buffer bounds, the migration's and policies' HMAC keys...; see [`edit`]). The result is
//! written as TOML and goes through the text path above, where srmigd's parser must read it
//! back as the same configuration. This reaches the engine's install-time validation with every
//! combination of fields.
//!
//! A configuration whose End.SBUF buffers would take more than [`MAX_BUFFER_BYTES`] is parsed
//! but not built: the engine preallocates what the file asks for (up to about 1.3 GB), which
//! is the operator's choice, not a bug, and would only make the fuzzer slow.
#![no_main]

use std::net::IpAddr;
use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use srmig_agent::Agent;
use srmig_api::{HostConfig, HostId, LocalVm, Mapping, Steering};
use srmig_dataplane::{
    Behavior, Dataplane, Flavor, Headend, MacAddr, NodeConfig, PolicyConfig, PortConfig, PortKind,
    SbufMode, SidConfig, VmConfig, VmState,
};
use srmig_hostd::config::{parse_daemon, DaemonConfig};
use srmig_hostd::workers;

/// Largest End.SBUF storage built per input (see the module docs).
const MAX_BUFFER_BYTES: u64 = 64 << 20;

/// A node with every kind of table: the base of half the edit inputs.
const RICH: &str = r#"
locator = "fc00:0:1::/48"
source_address = "fc00:0:1::1"
infrastructure_prefixes = ["fc00::/16"]
gateway = { address = "2001:db8::1", mac = "02:00:00:00:00:01", ipv4_address = "10.0.0.1" }
buffer = { per_vm_packets = 10, per_vm_bytes = 10000, global_packets = 20, global_bytes = 20000, max_age_ms = 500 }
icmp = { rate_per_sec = 10, burst = 2 }
migration_hmac_key = 1

[[ports]]
name = "up0"
kind = "uplink"
mac = "02:00:00:00:01:00"
peer_mac = "02:00:00:00:ff:01"
address = "2001:db8:ff::1"
mtu = 1500

[[ports]]
name = "tap0"
kind = "vm"
mac = "02:00:00:00:01:01"

[[routes]]
prefix = "::/0"
port = "up0"

[[routes]]
prefix = "10.0.0.0/8"
port = "tap0"
table = 7

[[sids]]
sid = "fc00:0:1::e5"
behavior = "End.S"
vm = "vm1"

[[sids]]
sid = "fc00:0:1::5b"
behavior = "End.SBUF"
mode = "drop"

[[sids]]
sid = "fc00:0:1::e1"
behavior = "End.X"
nexthop = "fe80::1"
port = "up0"
flavors = ["PSP"]

[[sids]]
sid = "fc00:0:1::b6"
behavior = "End.B6.Encaps"
policy = "p"

[[sids]]
sid = "fc00:0:1::d7"
behavior = "End.T"
table = 7

[[sids]]
sid = "fc00:0:1:100::"
behavior = "End"
flavors = ["NEXT-C-SID"]
locator_block_len = 48
node_len = 16

[[policies]]
name = "p"
headend = "H.Encaps.Red"
segments = ["fc00:0:1::e5", "fc00:0:2::5b"]
hop_limit = 16
flow_label = "copy"

[[policies]]
name = "ins"
headend = "H.Insert"
segments = ["fc00:0:2::5b"]

[[vms]]
name = "vm1"
addresses = ["2001:db8:100::10", "10.0.0.10"]
mac = "02:00:00:00:10:10"
port = "tap0"
state = "running"

[[mappings]]
vm_address = "2001:db8:100::/64"
policy = "p"

[[mappings]]
vm_address = "2001:db8:200::1/128"
policy = "native"

[[hmac_keys]]
id = 1
algorithm = "hmac-sha256"
secret_file = "hmac-1.key"
"#;

/// Values the edits pick from (by `value % len`).
const NAMES: &[&str] = &[
    "up0", "tap0", "vm0", "vm1", "web1", "db1", "p", "ins", "native", "ghost", "",
];
const ADDRS: &[&str] = &[
    "fc00:0:1::e5",
    "fc00:0:1::5b",
    "fc00:0:1:100::",
    "fc00:0:1::1",
    "fc00:0:1::",
    "fc00:0:2::5b",
    "2001:db8:100::10",
    "2001:db8:a::10",
    "fe80::1",
    "::",
    "::1",
    "ff02::1",
    "::ffff:10.0.0.1",
    "10.0.0.10",
    "255.255.255.255",
];
const PREFIXES: &[&str] = &[
    "::/0",
    "fc00:0:1::/48",
    "fc00::/16",
    "fc00:0:1::e5/128",
    "2001:db8:100::/64",
    "2001:db8:100::10/128",
    "ff00::/8",
    "10.0.0.0/8",
    "0.0.0.0/0",
    "10.0.0.10/32",
];
const MACS: &[&str] = &[
    "02:00:00:00:10:10",
    "02:00:00:00:01:01",
    "01:00:5e:00:00:01",
    "ff:ff:ff:ff:ff:ff",
    "00:00:00:00:00:00",
];
const ALL_BEHAVIORS: [Behavior; 11] = [
    Behavior::End,
    Behavior::EndX,
    Behavior::EndT,
    Behavior::EndDx6,
    Behavior::EndDx4,
    Behavior::EndDt6,
    Behavior::EndDt4,
    Behavior::EndDt46,
    Behavior::EndB6Encaps,
    Behavior::EndS,
    Behavior::EndSbuf,
];

fn pick<T: Copy>(pool: &[T], v: u8) -> T {
    pool[usize::from(v) % pool.len()]
}

fn name(v: u8) -> String {
    pick(NAMES, v).to_owned()
}

fn addr(v: u8) -> IpAddr {
    pick(ADDRS, v).parse().expect("pool address")
}

/// An IPv6 address from the pool (IPv4 ones mapped).
fn addr6(v: u8) -> std::net::Ipv6Addr {
    match addr(v) {
        IpAddr::V6(a) => a,
        IpAddr::V4(a) => a.to_ipv6_mapped(),
    }
}

fn prefix(v: u8) -> ipnet::IpNet {
    pick(PREFIXES, v).parse().expect("pool prefix")
}

fn prefix6(v: u8) -> Option<ipnet::Ipv6Net> {
    match prefix(v) {
        ipnet::IpNet::V6(p) => Some(p),
        ipnet::IpNet::V4(_) => None,
    }
}

fn mac(v: u8) -> MacAddr {
    pick(MACS, v).parse().expect("pool MAC")
}

/// `Some(f(v))`, or `None` when `v` is 0.
fn opt<T>(v: u8, f: impl FnOnce(u8) -> T) -> Option<T> {
    (v != 0).then(|| f(v))
}

/// The element `i` (modulo the length) of a list, if it has any.
fn at<T>(list: &mut [T], i: u8) -> Option<&mut T> {
    let n = list.len();
    (n > 0).then(|| &mut list[usize::from(i) % n])
}

/// Duplicates (`clone`) or removes element `i` of a list.
fn reshape<T: Clone>(list: &mut Vec<T>, i: u8, clone: bool) {
    if list.is_empty() {
        return;
    }
    let i = usize::from(i) % list.len();
    if clone {
        if list.len() < 16 {
            list.push(list[i].clone());
        }
    } else {
        list.remove(i);
    }
}

fn edit_sid(s: &mut SidConfig, op: u8, v: u8) {
    match op {
        0 => s.behavior = pick(&ALL_BEHAVIORS, v),
        1 => {
            s.flavors = (0..4)
                .filter(|b| v & (1 << b) != 0)
                .map(|b| Flavor::ALL[b])
                .collect();
        }
        2 => s.locator_block_len = opt(v, |v| v),
        3 => s.locator_node_len = opt(v, |v| v),
        4 => s.port = opt(v, name),
        5 => s.nexthop = opt(v, addr),
        6 => s.table = opt(v, |v| u32::from(v % 9)),
        7 => s.policy = opt(v, name),
        8 => s.vm = opt(v, name),
        9 => s.mode = pick(&[None, Some(SbufMode::Buffer), Some(SbufMode::Drop)], v),
        _ => s.sid = addr6(v),
    }
}

fn edit_port(p: &mut PortConfig, op: u8, v: u8) {
    match op {
        13 => p.kind = pick(&[PortKind::Uplink, PortKind::Vm], v),
        14 => p.mtu = opt(v, |v| u16::from(v) * 40),
        15 => p.name = name(v),
        16 => p.peer_mac = opt(v, mac),
        _ => p.address = opt(v, addr6),
    }
}

fn edit_policy(p: &mut PolicyConfig, op: u8, v: u8) {
    match op {
        18 => {
            p.headend = pick(
                &[Headend::HEncaps, Headend::HEncapsRed, Headend::HInsert],
                v,
            )
        }
        19 if v == 0 => p.segments.clear(),
        19 if p.segments.len() < 12 => p.segments.push(addr6(v)),
        19 => {}
        20 => p.hop_limit = opt(v, |v| v),
        _ => p.name = name(v),
    }
}

fn edit_vm(m: &mut VmConfig, op: u8, v: u8) {
    match op {
        22 => m.port = name(v),
        23 if v == 0 => m.addresses.clear(),
        23 if m.addresses.len() < 8 => m.addresses.push(addr(v)),
        23 => {}
        24 => m.name = name(v),
        25 => m.state = pick(&[VmState::Absent, VmState::Running, VmState::Paused], v),
        _ => m.mac = mac(v),
    }
}

/// One edit: `op` names the field, `i` the element of its list, `v` the value.
fn edit(c: &mut NodeConfig, op: u8, i: u8, v: u8) {
    let op = op % 39;
    match op {
        0..=10 => at(&mut c.sids, i)
            .into_iter()
            .for_each(|s| edit_sid(s, op, v)),
        11 | 12 => {
            let clone = op == 11;
            match v % 6 {
                0 => reshape(&mut c.sids, i, clone),
                1 => reshape(&mut c.policies, i, clone),
                2 => reshape(&mut c.vms, i, clone),
                3 => reshape(&mut c.ports, i, clone),
                4 => reshape(&mut c.routes, i, clone),
                _ => reshape(&mut c.mappings, i, clone),
            }
        }
        13..=17 => at(&mut c.ports, i)
            .into_iter()
            .for_each(|p| edit_port(p, op, v)),
        18..=21 => at(&mut c.policies, i)
            .into_iter()
            .for_each(|p| edit_policy(p, op, v)),
        22..=26 => at(&mut c.vms, i)
            .into_iter()
            .for_each(|m| edit_vm(m, op, v)),
        27..=29 => {
            if let Some(r) = at(&mut c.routes, i) {
                match op {
                    27 => r.prefix = prefix(v),
                    28 => r.port = name(v),
                    _ => r.table = u32::from(v % 9),
                }
            }
        }
        30 | 31 => {
            if let Some(m) = at(&mut c.mappings, i) {
                match op {
                    30 => m.vm_address = prefix(v),
                    _ => m.policy = name(v),
                }
            }
        }
        32 => {
            // Small bounds (0 included), scaled so that the relations between them vary.
            let b = &mut c.buffer;
            match i % 5 {
                0 => b.per_vm_packets = u32::from(v),
                1 => b.per_vm_bytes = u64::from(v) * 100,
                2 => b.global_packets = u32::from(v) * 2,
                3 => b.global_bytes = u64::from(v) * 200,
                _ => b.max_age_ms = u64::from(v),
            }
        }
        33 if i.is_multiple_of(2) => c.icmp.rate_per_sec = u32::from(v),
        33 => c.icmp.burst = u32::from(v),
        34 => c.locator = prefix6(v).unwrap_or(c.locator),
        35 => c.source_address = addr6(v),
        36 => match (v, prefix6(v)) {
            (0, _) => c.infrastructure_prefixes.clear(),
            (_, Some(p)) if c.infrastructure_prefixes.len() < 8 => {
                c.infrastructure_prefixes.push(p);
            }
            _ => {}
        },
        // Key 1 exists in RICH; 2 exists nowhere.
        37 if i.is_multiple_of(2) => c.migration_hmac_key = opt(v, |v| u32::from(v % 3)),
        37 => {
            if let Some(p) = at(&mut c.policies, i / 2) {
                p.hmac_key = opt(v, |v| u32::from(v % 3));
            }
        }
        _ if i.is_multiple_of(2) => c.gateway.address = addr6(v),
        _ => c.gateway.mac = mac(v),
    }
}

/// The bases of the edit inputs, parsed once.
fn bases() -> &'static [DaemonConfig; 2] {
    static BASES: OnceLock<[DaemonConfig; 2]> = OnceLock::new();
    BASES.get_or_init(|| {
        let parse = |text| parse_daemon(text, Path::new("node.toml")).expect("a valid base");
        [parse(srmig_agent::testkit::node_toml()), parse(RICH)]
    })
}

/// The edited configuration, and it as node.toml text.
fn edited(data: &[u8]) -> Option<(NodeConfig, String)> {
    let base = &bases()[usize::from(*data.first()? % 2)];
    let mut node = base.node.clone();
    for e in data[1..].chunks_exact(3) {
        edit(&mut node, e[0], e[1], e[2]);
    }
    // Every value the edits make fits TOML (integers are i64: the bounds stay small).
    let text = toml::to_string(&node).expect("an edited config is written as TOML");
    Some((node, text))
}

/// An upper bound of what the engine preallocates for the End.SBUF buffers: the chunk arena
/// (`global_bytes` plus a chunk per packet) and every VM's ring of 16-byte records.
fn buffer_bytes(node: &NodeConfig) -> u64 {
    let b = &node.buffer;
    let arena = b
        .global_bytes
        .saturating_add(u64::from(b.global_packets) * 512);
    let rings = u64::from(b.per_vm_packets)
        .saturating_mul(16)
        .saturating_mul(node.vms.len() as u64);
    arena.saturating_add(rings)
}

/// A host config that makes every VM of the node (IPv6 and IPv4 addresses) local and native.
fn host_config(node: &NodeConfig) -> HostConfig {
    let mut hc = HostConfig {
        epoch: 1,
        generation: 1,
        mappings: Vec::new(),
        local_vms: Vec::new(),
        sids: Vec::new(),
    };
    for v in &node.vms {
        let Ok(vm) = srmig_api::VmId::new(v.name.clone()) else {
            continue;
        };
        // Dual-stack: the API carries both families (IPv4 as /32 mappings).
        let addresses: Vec<IpAddr> = v.addresses.clone();
        if addresses.is_empty() {
            continue;
        }
        hc.mappings.push(Mapping {
            vm: vm.clone(),
            addresses: addresses.clone(),
            steering: Steering::Native,
            fence: false,
        });
        hc.local_vms.push(LocalVm {
            vm,
            addresses,
            mac: srmig_api::MacAddr(v.mac.0),
        });
    }
    hc
}

/// node.toml's text through srmigd's path. `written`: the configuration the text was written
/// from, which it must parse back to (its only parse: TOML is most of this target's time).
fn node_toml(text: &str, written: Option<&NodeConfig>) {
    let mut daemon = match (parse_daemon(text, Path::new("node.toml")), written) {
        (Ok(daemon), _) => daemon,
        (Err(e), Some(_)) => panic!("the written config does not parse: {e}\n{text}"),
        (Err(_), None) => return,
    };
    if let Some(node) = written {
        assert_eq!(&daemon.node, node, "the config survives its TOML");
    }
    // As srmigd's `load_daemon` reads the `[[hmac_keys]]` secret files, without files: every
    // key gets the same secret.
    if daemon
        .node
        .load_hmac_secrets(Path::new("/etc/srmig"), |_| Ok(b"srmig-fuzz".to_vec()))
        .is_err()
    {
        return;
    }
    let node = &daemon.node;
    if buffer_bytes(node) > MAX_BUFFER_BYTES {
        return;
    }
    let host = HostId::new("h1").expect("host name");
    let engine = Dataplane::new(node.clone());
    let agent = Agent::new(host.clone(), node.clone(), 1);
    assert_eq!(
        engine.as_ref().err(),
        agent.as_ref().err(),
        "the engine and the agent disagree on the node config"
    );
    let Ok(mut agent) = agent else {
        return;
    };
    for n in 2..=3 {
        if workers::check(n, &daemon).is_ok() {
            let share = workers::worker_node_config(node, n);
            if let Err(e) = Agent::new(host.clone(), share, 1) {
                panic!("the written config is valid but a worker of {n} refuses its share: {e}");
            }
        }
    }
    let before = agent.status(&[]);
    serde_json::to_vec(&before).expect("the status serializes");
    if agent.apply_host_config(host_config(node)).is_err() {
        assert_eq!(
            agent.status(&[]),
            before,
            "a refused host config changed the agent"
        );
    }
    serde_json::to_vec(&agent.status(&[])).expect("the status serializes");
}

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((0xff, edits)) => {
            if let Some((node, text)) = edited(edits) {
                node_toml(&text, Some(&node));
            }
        }
        _ => {
            if let Ok(text) = std::str::from_utf8(data) {
                node_toml(text, None);
            }
        }
    }
});
