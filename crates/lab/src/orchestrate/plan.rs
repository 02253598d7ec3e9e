//! The lab's addressing plan: host and VM names, locators, SIDs, underlay addresses, MACs,
//! interface names, and the srmigd node configuration of each host. Pure data, no I/O.
//!
//! ```text
//!                              underlay 2001:db8:ff:<n>::/64 per host link
//!   client ns ─eth0══client-port─ [c: srmigd C] ─up0══to-c─┐
//!                                                          │
//!   vm1 ns ─eth0══nic─[vm1-hv]─att══vm1-port─ [s: srmigd S] ─up0══to-s─[r: Linux IPv6 router]
//!                                   ┆ (moved to D at the pause)         │  fc00:0:<n>::/48 -> n
//!                                   └╌╌╌╌╌╌╌╌╌> [d: srmigd D] ─up0══to-d─┘
//! ```
//!
//! The migrating VM's NIC is backed by `vm1-hv`, its emulated hypervisor side: `tc` redirects
//! frames between `nic` (the peer of the VM's `eth0`) and `att`, whose peer `vm1-port` is the
//! srmigd VM port that moves between S and D. The VM's `eth0` thus never loses carrier (the
//! kernel would otherwise drop its output until its link-watch work re-activates the device,
//! which can happen after the destination srmigd already released the held packets), and the
//! attachment is brought up VM side last, so the VM side is ready before srmigd sees the port.
//!
//! [`Plan::sized`] adds hosts E, F, ... (`--hosts`), linked to the router like S and D, and
//! more migrating VMs `vm2`, `vm3`, ... (`--vms`), each wired like `vm1` (its own VM and
//! hypervisor namespaces, its port `vmN-port`) and starting on the hosts other than C in turn.
//!
//! Host `n` (C = 1, S = 2, D = 3, E = 4, ...) has locator `fc00:0:<n>::/48` with the SIDs `::e5` (End.S),
//! `::eb` (End.SBUF) and `::d6` (End.DT6); its uplink answers for `2001:db8:ff:<n>::2`, the
//! router is `2001:db8:ff:<n>::1`. VMs are dual-stack: a /128 in `2001:db8:a::/64` and a /32
//! in `10.1.0.0/24` (the same last number), with the anycast gateway `fe80::1` and
//! `10.1.0.254` (same MAC on every host, answered in neighbour discovery and ARP by srmigd) as
//! their default routers. A VM's IPv4 /32 has no on-link subnet: it reaches every other
//! address, the other VMs' included, through the gateway.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::Ipv6Net;
use srmig_api::{HostId, HostInfo, MacAddr as ApiMac, VmId, VmInfo};

use crate::topology::MacAddr;

/// The anycast gateway address on every VM port.
pub const GATEWAY_ADDR: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
/// The anycast gateway's IPv4 address on every VM port (answered in ARP with
/// [`GATEWAY_MAC`]).
pub const GATEWAY_ADDR_V4: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 254);
/// The anycast gateway MAC on every VM port.
pub const GATEWAY_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);
/// MTU of the VMs' interfaces: the underlay's 1500 minus room for `S::End.S -> D::End.SBUF`
/// (40 + 8 + 2 x 16 = 80 bytes). [`Plan::vm_mtu`] is what a lab uses.
pub const VM_MTU: u32 = 1400;
/// The interface name of every VM's own end.
pub const VM_IFNAME: &str = "eth0";
/// srmigd's uplink interface name on every host.
pub const UPLINK_IFNAME: &str = "up0";
/// In the VM's hypervisor namespace: the peer of the VM's `eth0`.
pub const HV_NIC: &str = "nic";
/// In the VM's hypervisor namespace: the peer of the srmigd VM port.
pub const HV_ATT: &str = "att";
/// Namespace short name of the fabric router.
pub const ROUTER_NS: &str = "r";
/// The management namespace: the controller's, with one link to each host (`mgmt0`).
pub const CONTROL_NS: &str = "ctl";
/// A host's management interface.
pub const MGMT_IFNAME: &str = "mgmt0";
/// The port of every TLS API on the management network (srmigd's and the controller's).
pub const MGMT_PORT: u16 = 7443;

/// The management addresses of the link to host number `i` (1-based, plan order): the
/// controller's end and the host's end, in `10.254.<i>.0/24`. IPv4, so that the host
/// namespaces' IPv6 stays off (srmigd owns their IPv6 interfaces).
pub fn mgmt_addrs(i: usize) -> (std::net::Ipv4Addr, std::net::Ipv4Addr) {
    let i = u8::try_from(i).unwrap_or(u8::MAX);
    (
        std::net::Ipv4Addr::new(10, 254, i, 1),
        std::net::Ipv4Addr::new(10, 254, i, 2),
    )
}

/// The role of a host in the lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostRole {
    /// Runs the client VM.
    Client,
    /// Where the migrating VM starts.
    Source,
    /// Where it goes first.
    Destination,
    /// One more host (`--hosts N`): E is `Other(0)`, then F, G, ... (see [`EXTRA_HOSTS`]).
    Other(u8),
}

impl HostRole {
    /// Position in [`Plan::hosts`] (C, S, D, then the others in order).
    pub fn index(self) -> usize {
        match self {
            HostRole::Client => 0,
            HostRole::Source => 1,
            HostRole::Destination => 2,
            HostRole::Other(k) => 3 + usize::from(k),
        }
    }

    /// The role of the host at `index` in [`Plan::hosts`].
    pub fn at(index: usize) -> HostRole {
        match index {
            0 => HostRole::Client,
            1 => HostRole::Source,
            2 => HostRole::Destination,
            n => HostRole::Other(u8::try_from(n - 3).unwrap_or(u8::MAX)),
        }
    }
}

/// Names of the hosts after C, S and D (`--hosts N`), in order: single letters, leaving out
/// `r` (the router's namespace).
pub const EXTRA_HOSTS: [&str; 20] = [
    "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p", "q", "t", "u", "v", "w", "x", "y",
    "z",
];
/// The most hosts a plan can have (`--hosts`): C, S, D and [`EXTRA_HOSTS`].
pub const MAX_HOSTS: usize = 3 + EXTRA_HOSTS.len();

/// Names and VM ports of the migrating VMs (`--vms N`), in order.
const VM_NAMES: [(&str, &str); 16] = [
    ("vm1", "vm1-port"),
    ("vm2", "vm2-port"),
    ("vm3", "vm3-port"),
    ("vm4", "vm4-port"),
    ("vm5", "vm5-port"),
    ("vm6", "vm6-port"),
    ("vm7", "vm7-port"),
    ("vm8", "vm8-port"),
    ("vm9", "vm9-port"),
    ("vm10", "vm10-port"),
    ("vm11", "vm11-port"),
    ("vm12", "vm12-port"),
    ("vm13", "vm13-port"),
    ("vm14", "vm14-port"),
    ("vm15", "vm15-port"),
    ("vm16", "vm16-port"),
];
/// The most migrating VMs a plan can have (`--vms`).
pub const MAX_VMS: usize = VM_NAMES.len();

/// One host (a namespace running srmigd).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPlan {
    /// Role.
    pub role: HostRole,
    /// Host name (controller and srmigd `--name`), also the namespace short name.
    pub name: &'static str,
    /// Host number `n` in the addresses.
    pub index: u8,
}

impl HostPlan {
    /// The host's locator, `fc00:0:<n>::/48`.
    pub fn locator(&self) -> Ipv6Net {
        Ipv6Net::new(self.sid(0), 48).unwrap_or_default()
    }

    /// `fc00:0:<n>::<low>`.
    fn sid(&self, low: u16) -> Ipv6Addr {
        Ipv6Addr::new(0xfc00, 0, u16::from(self.index), 0, 0, 0, 0, low)
    }

    /// End.S SID.
    pub fn sid_end_s(&self) -> Ipv6Addr {
        self.sid(0xe5)
    }

    /// End.SBUF SID.
    pub fn sid_end_sbuf(&self) -> Ipv6Addr {
        self.sid(0xeb)
    }

    /// End.DT6 SID.
    pub fn sid_dt6(&self) -> Ipv6Addr {
        self.sid(0xd6)
    }

    /// srmigd's underlay address (answered on its uplink), `2001:db8:ff:<n>::2`.
    pub fn underlay(&self) -> Ipv6Addr {
        Ipv6Addr::new(0x2001, 0xdb8, 0xff, u16::from(self.index), 0, 0, 0, 2)
    }

    /// The router's address on the link to this host, `2001:db8:ff:<n>::1`.
    pub fn router_addr(&self) -> Ipv6Addr {
        Ipv6Addr::new(0x2001, 0xdb8, 0xff, u16::from(self.index), 0, 0, 0, 1)
    }

    /// MAC of srmigd's uplink, `02:00:00:00:0n:00`.
    pub fn uplink_mac(&self) -> MacAddr {
        MacAddr([0x02, 0, 0, 0, self.index, 0x00])
    }

    /// MAC of the router's interface towards this host, `02:00:00:00:0n:ff`.
    pub fn router_mac(&self) -> MacAddr {
        MacAddr([0x02, 0, 0, 0, self.index, 0xff])
    }

    /// The router's interface name towards this host.
    pub fn router_ifname(&self) -> String {
        format!("to-{}", self.name)
    }

    /// The controller's view of this host.
    pub fn info(&self) -> HostInfo {
        HostInfo {
            name: HostId::new(self.name).expect("plan names are valid literals (unit-tested)"),
            locator: self.locator(),
            sid_end_s: self.sid_end_s(),
            sid_end_sbuf: self.sid_end_sbuf(),
            sid_dt6: self.sid_dt6(),
            underlay: self.underlay(),
        }
    }
}

/// One VM (a namespace with its own kernel stack).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmPlan {
    /// VM name (controller), also the namespace short name.
    pub name: &'static str,
    /// Its IPv6 address (/128).
    pub address: Ipv6Addr,
    /// Its IPv4 address (/32).
    pub address_v4: Ipv4Addr,
    /// MAC of its `eth0`.
    pub mac: MacAddr,
    /// The host-side end of its veth: the srmigd VM port (same name on every host).
    pub port: &'static str,
    /// MAC of the host-side end.
    pub port_mac: MacAddr,
}

impl VmPlan {
    /// Namespace short name of the VM's emulated hypervisor side.
    pub fn hv_ns(&self) -> String {
        format!("{}-hv", self.name)
    }

    /// MACs of `nic` and `att` in the hypervisor namespace (locally administered).
    pub fn hv_macs(&self) -> (MacAddr, MacAddr) {
        let [a, b, c, d, e, _] = self.port_mac.0;
        (
            MacAddr([a, b, c, d, e, 0xf1]),
            MacAddr([a, b, c, d, e, 0xf2]),
        )
    }

    /// Its IPv4 address if `v4`, else its IPv6 address.
    pub fn addr(&self, v4: bool) -> IpAddr {
        if v4 {
            IpAddr::V4(self.address_v4)
        } else {
            IpAddr::V6(self.address)
        }
    }

    /// The controller's view of this VM on `host`.
    pub fn info(&self, host: &HostPlan) -> VmInfo {
        VmInfo {
            name: VmId::new(self.name).expect("plan names are valid literals (unit-tested)"),
            addresses: vec![self.address.into(), self.address_v4.into()],
            mac: ApiMac(self.mac.0),
            host: host.info().name,
            network: None,
        }
    }
}

/// The whole plan: by default three hosts, the client VM on C and the migrating VM on S;
/// [`Plan::sized`] adds hosts (E, F, ...) and migrating VMs (vm2, vm3, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// C, S, D, then the others ([`HostRole::index`] order).
    pub hosts: Vec<HostPlan>,
    /// The client VM (on C).
    pub client: VmPlan,
    /// The first migrating VM, `vm1` (starts on S). The QEMU lab has only this one.
    pub vm: VmPlan,
    /// The other migrating VMs (`vm2`, ...), spread over the hosts other than C
    /// ([`Plan::home`]).
    pub more_vms: Vec<VmPlan>,
    /// End.SBUF bounds written into every node configuration.
    pub buffer: BufferBounds,
    /// `[io] mode` of every host's srmigd (`auto`, `xdp`, `packet`); `None` leaves srmigd's
    /// default (`auto`).
    pub io_mode: Option<String>,
    /// The VM ports' TC fast path (srmigd's default, `[io] vm_fast_path`); `false` writes
    /// `vm_fast_path = false`: every VM packet through srmigd's sockets.
    pub vm_fast_path: bool,
    /// `[io] vm_tc_hook` of every host's srmigd (`auto`, `tcx`, `clsact`); `None` leaves
    /// srmigd's default (`auto`).
    pub vm_tc_hook: Option<String>,
    /// Every host's uplink requires an HMAC TLV (`hmac = "require"`), and what the
    /// migrations send through the SR domain is signed (`migration_hmac_key`): one key
    /// ([`LAB_HMAC_KEY_ID`], secret in [`LAB_HMAC_KEY_FILE`] next to the configurations).
    pub hmac: bool,
}

impl Plan {
    /// The VMs' MTU: [`VM_MTU`], less the HMAC TLV (40 bytes) that every SRH carries in a
    /// lab with [`Plan::hmac`].
    pub fn vm_mtu(&self) -> u32 {
        if self.hmac {
            VM_MTU - 40
        } else {
            VM_MTU
        }
    }
}

/// The HMAC key id of a lab with [`Plan::hmac`].
pub const LAB_HMAC_KEY_ID: u32 = 1;
/// Its secret's file, in the directory of the node configurations (written by the testbed).
pub const LAB_HMAC_KEY_FILE: &str = "lab-hmac.key";

/// End.SBUF bounds (`[buffer]` of the node configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferBounds {
    /// Packets held per VM.
    pub per_vm_packets: u32,
    /// Bytes held per VM.
    pub per_vm_bytes: u64,
    /// Packets held in total (preallocated, 2 KiB each).
    pub global_packets: u32,
    /// Bytes held in total.
    pub global_bytes: u64,
    /// Age limit of a held packet in milliseconds.
    pub max_age_ms: u64,
}

impl Default for BufferBounds {
    /// Large enough for a TCP bulk transfer's window during a 175 ms pause (the srmigd
    /// default of 2048 packets is not): 16 Ki packets / 24 MiB per VM, 2 s age limit.
    fn default() -> Self {
        BufferBounds {
            per_vm_packets: 16_384,
            per_vm_bytes: 24 << 20,
            global_packets: 16_384,
            global_bytes: 32 << 20,
            max_age_ms: 2_000,
        }
    }
}

impl Default for Plan {
    fn default() -> Self {
        let host = |role, name, index| HostPlan { role, name, index };
        Plan {
            hosts: vec![
                host(HostRole::Client, "c", 1),
                host(HostRole::Source, "s", 2),
                host(HostRole::Destination, "d", 3),
            ],
            client: VmPlan {
                name: "client",
                address: Ipv6Addr::new(0x2001, 0xdb8, 0xa, 0, 0, 0, 0, 0x100),
                address_v4: Ipv4Addr::new(10, 1, 0, 100),
                mac: MacAddr([0x52, 0x54, 0, 0, 0x01, 0x00]),
                port: "client-port",
                port_mac: MacAddr([0x02, 0, 0, 0, 0xcc, 0x01]),
            },
            vm: VmPlan {
                name: "vm1",
                address: Ipv6Addr::new(0x2001, 0xdb8, 0xa, 0, 0, 0, 0, 0x1),
                address_v4: Ipv4Addr::new(10, 1, 0, 1),
                mac: MacAddr([0x52, 0x54, 0, 0, 0, 0x01]),
                port: "vm1-port",
                port_mac: MacAddr([0x02, 0, 0, 0, 0xaa, 0x01]),
            },
            more_vms: Vec::new(),
            buffer: BufferBounds::default(),
            io_mode: None,
            vm_tc_hook: None,
            vm_fast_path: true,
            hmac: false,
        }
    }
}

/// Migrating VM number `i` (from 0): `vm<i+1>`, `2001:db8:a::<i+1>`, `10.1.0.<i+1>`.
fn migrating_vm(i: usize) -> Option<VmPlan> {
    let (name, port) = *VM_NAMES.get(i)?;
    let n = u8::try_from(i + 1).ok()?;
    Some(VmPlan {
        name,
        address: Ipv6Addr::new(0x2001, 0xdb8, 0xa, 0, 0, 0, 0, u16::from(n)),
        address_v4: Ipv4Addr::new(10, 1, 0, n),
        mac: MacAddr([0x52, 0x54, 0, 0, 0, n]),
        port,
        port_mac: MacAddr([0x02, 0, 0, 0, 0xaa, n]),
    })
}

impl Plan {
    /// The default plan with `hosts` hosts (3..=[`MAX_HOSTS`]: C, S, D, E, F, ...) and `vms`
    /// migrating VMs (1..=[`MAX_VMS`]).
    pub fn sized(hosts: usize, vms: usize) -> Result<Plan, String> {
        if !(3..=MAX_HOSTS).contains(&hosts) {
            return Err(format!(
                "--hosts {hosts}: the lab has 3 to {MAX_HOSTS} hosts (C, S, D, E, ...)"
            ));
        }
        if !(1..=MAX_VMS).contains(&vms) {
            return Err(format!(
                "--vms {vms}: the lab has 1 to {MAX_VMS} migrating VMs"
            ));
        }
        let mut plan = Plan::default();
        for (k, name) in EXTRA_HOSTS.iter().take(hosts - 3).enumerate() {
            let role = HostRole::Other(u8::try_from(k).map_err(|e| e.to_string())?);
            let index = u8::try_from(role.index() + 1).map_err(|e| e.to_string())?;
            plan.hosts.push(HostPlan { role, name, index });
        }
        plan.more_vms = (1..vms).filter_map(migrating_vm).collect();
        Ok(plan)
    }

    /// The host with `role`.
    ///
    /// # Panics
    /// If the plan has no such host (an `Other` beyond `--hosts`): roles come from the plan.
    pub fn host(&self, role: HostRole) -> &HostPlan {
        &self.hosts[role.index()]
    }

    /// The migrating VMs: `vm1`, then the others.
    pub fn vms(&self) -> impl Iterator<Item = &VmPlan> {
        std::iter::once(&self.vm).chain(&self.more_vms)
    }

    /// Where migrating VM number `i` (from 0, [`vms`](Self::vms) order) starts: the hosts
    /// other than C in turn, `vm1` on S.
    pub fn home(&self, i: usize) -> HostRole {
        let others = self.hosts.len().saturating_sub(1).max(1);
        HostRole::at(1 + i % others)
    }

    /// The host after `role` in the ring of hosts a migrating VM moves through (every host
    /// but C, in order): S -> D -> E -> ... -> S.
    pub fn next_host(&self, role: HostRole) -> HostRole {
        let others = self.hosts.len().saturating_sub(1).max(1);
        HostRole::at(1 + role.index() % others)
    }

    /// The migrations of one round of a netns run, given where each migrating VM is (`at`,
    /// [`vms`](Self::vms) order), as `(vm, to, after)`: the VM's index, its destination, and
    /// the migration of the same round it waits for.
    ///
    /// Every VM moves one host on along the ring ([`next_host`](Self::next_host)), all at
    /// once. With `chain` (at least two VMs and four hosts), `vm1` (a) and `vm2` (b) form
    /// the chain instead: a moves to b's host while b moves on to the next one, and a
    /// follows b there as soon as its first migration completed: S->D and D->E, then D->E
    /// in the first round. When a and b share a host (after a chain round), b first moves
    /// on alone, and the chain starts when that migration completed.
    pub fn round_moves(
        &self,
        at: &[HostRole],
        chain: bool,
    ) -> Vec<(usize, HostRole, Option<usize>)> {
        let mut moves = Vec::new();
        let mut first = 0;
        if chain && at.len() >= 2 {
            let (a, mut b_at) = (at[0], at[1]);
            let mut after = None;
            if a == b_at {
                moves.push((1, self.next_host(b_at), None));
                b_at = self.next_host(b_at);
                after = Some(0);
            }
            let a_first = moves.len();
            moves.push((0, b_at, after));
            moves.push((1, self.next_host(b_at), after));
            moves.push((0, self.next_host(b_at), Some(a_first)));
            first = 2;
        }
        for (i, &from) in at.iter().enumerate().skip(first) {
            moves.push((i, self.next_host(from), None));
        }
        moves
    }

    /// VMs srmigd on `host` must declare: the client VM on C; every migrating VM on every
    /// other host (it may arrive there by migration; where it does not start, it starts
    /// absent).
    pub fn vms_on(&self, host: &HostPlan) -> Vec<&VmPlan> {
        match host.role {
            HostRole::Client => vec![&self.client],
            _ => self.vms().collect(),
        }
    }

    /// srmigd's node configuration (TOML, `srmig_dataplane::NodeConfig`) for `host`.
    pub fn node_toml(&self, host: &HostPlan) -> String {
        let b = &self.buffer;
        let mut toml = format!(
            r#"# srmig lab: node configuration of host {name}
locator = "{locator}"
source_address = "{underlay}"
infrastructure_prefixes = ["2001:db8:ff::/48", "fc00::/16"]
gateway = {{ address = "{GATEWAY_ADDR}", mac = "{GATEWAY_MAC}", ipv4_address = "{GATEWAY_ADDR_V4}" }}
{hmac_top}
[buffer]
per_vm_packets = {pvp}
per_vm_bytes = {pvb}
global_packets = {gp}
global_bytes = {gb}
max_age_ms = {age}

[[ports]]
name = "{UPLINK_IFNAME}"
kind = "uplink"
mac = "{up_mac}"
peer_mac = "{r_mac}"
address = "{underlay}"
{hmac_port}
[[routes]]
prefix = "::/0"
port = "{UPLINK_IFNAME}"
{hmac_keys}"#,
            name = host.name,
            hmac_top = if self.hmac {
                format!("migration_hmac_key = {LAB_HMAC_KEY_ID}\n")
            } else {
                String::new()
            },
            hmac_port = if self.hmac {
                "hmac = \"require\"\n"
            } else {
                ""
            },
            hmac_keys = if self.hmac {
                format!(
                    "\n[[hmac_keys]]\nid = {LAB_HMAC_KEY_ID}\nalgorithm = \"hmac-sha256\"\nsecret_file = \"{LAB_HMAC_KEY_FILE}\"\n"
                )
            } else {
                String::new()
            },
            locator = host.locator(),
            underlay = host.underlay(),
            pvp = b.per_vm_packets,
            pvb = b.per_vm_bytes,
            gp = b.global_packets,
            gb = b.global_bytes,
            age = b.max_age_ms,
            up_mac = host.uplink_mac(),
            r_mac = host.router_mac(),
        );
        for vm in self.vms_on(host) {
            // Writing into a String cannot fail.
            let _ = write!(
                toml,
                r#"
[[ports]]
name = "{port}"
kind = "vm"
mac = "{port_mac}"

[[vms]]
name = "{name}"
addresses = ["{addr}", "{addr4}"]
mac = "{mac}"
port = "{port}"
"#,
                port = vm.port,
                port_mac = vm.port_mac,
                name = vm.name,
                addr = vm.address,
                addr4 = vm.address_v4,
                mac = vm.mac,
            );
        }
        let client = host.role == HostRole::Client;
        if client || self.io_mode.is_some() || !self.vm_fast_path || self.vm_tc_hook.is_some() {
            toml.push_str("\n[io]\n");
        }
        if let Some(mode) = &self.io_mode {
            let _ = writeln!(toml, "mode = \"{mode}\"");
        }
        if let Some(hook) = &self.vm_tc_hook {
            let _ = writeln!(toml, "vm_tc_hook = \"{hook}\"");
        }
        if !self.vm_fast_path {
            toml.push_str("vm_fast_path = false\n");
        }
        if client {
            // The answers of every VM come back to the client's host. When ten VMs resume
            // within milliseconds, their End.SBUF releases (~7,000 probes) are answered at
            // once, and a 4096-frame AF_XDP receive ring dropped ~12,500 answers (measured);
            // 16384 (128 MiB of frames) absorbed them.
            let _ = writeln!(toml, "xdp_ring_size = {CLIENT_XDP_RING_SIZE}");
        }
        toml
    }
}

/// The AF_XDP ring size of the client host's srmigd (see [`Plan::node_toml`]).
pub const CLIENT_XDP_RING_SIZE: u32 = 16_384;

impl Plan {
    /// [`node_toml`](Self::node_toml) for a lab whose migrating VM is a QEMU guest: on S and
    /// D its port is a QEMU stream port (`[[qemu]]`) with the sockets of
    /// [`QemuPaths::of`](super::qemu::QemuPaths::of) in `dir`.
    /// srmigd continues the source QEMU after its exact take-back (`migrate_continue`): the
    /// controller's QMP driver leaves that to it.
    pub fn node_toml_qemu(&self, host: &HostPlan, dir: &std::path::Path) -> String {
        self.node_toml_qemu_at(host, &super::qemu::QemuPaths::of(dir, host.name), true)
    }

    /// [`node_toml_qemu`](Self::node_toml_qemu) for the libvirt lab: the sockets are in the
    /// host's own libvirt directory ([`super::libvirt::host_paths`]). libvirt continues its
    /// migrations from `pre-switchover` itself, so srmigd must not (`migrate_continue` off).
    pub fn node_toml_libvirt(&self, host: &HostPlan, dir: &std::path::Path) -> String {
        self.node_toml_qemu_at(
            host,
            &super::libvirt::host_paths(dir, host.name, self.vm.name),
            false,
        )
    }

    fn node_toml_qemu_at(
        &self,
        host: &HostPlan,
        paths: &super::qemu::QemuPaths,
        migrate_continue: bool,
    ) -> String {
        let mut toml = self.node_toml(host);
        if host.role != HostRole::Client {
            let _ = write!(
                toml,
                "\n[[qemu]]\nport = \"{}\"\nsocket = \"{}\"\nqmp = \"{}\"\nmigrate_continue = {migrate_continue}\n",
                self.vm.port,
                paths.net.display(),
                paths.ev.display()
            );
        }
        toml
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_addresses_are_valid() {
        let plan = Plan::default();
        for host in &plan.hosts {
            let info = host.info();
            info.validate().expect("host info validates");
            assert!(host.router_ifname().len() <= 15);
            assert!(!info.locator.contains(&host.underlay()));
        }
        for vm in [&plan.client, &plan.vm] {
            assert!(vm.port.len() <= 15, "{}", vm.port);
            let info = vm.info(plan.host(HostRole::Client));
            assert_eq!(
                info.addresses,
                vec![IpAddr::V6(vm.address), IpAddr::V4(vm.address_v4)]
            );
        }
        assert_eq!(
            plan.host(HostRole::Source).locator().to_string(),
            "fc00:0:2::/48"
        );
        assert_eq!(
            plan.host(HostRole::Destination).sid_end_sbuf().to_string(),
            "fc00:0:3::eb"
        );
    }

    #[test]
    fn node_configs_are_accepted_by_the_dataplane() {
        let plan = Plan::default();
        for host in &plan.hosts {
            let text = plan.node_toml(host);
            // Parsed as srmigd parses node.toml (the engine's part, `[io]`, `[[qemu]]`).
            let file = srmig_dataplane::node_file::NodeFile::parse(&text)
                .unwrap_or_else(|e| panic!("{}: {e}\n{text}", host.name));
            let want_ring = (host.role == HostRole::Client).then_some(CLIENT_XDP_RING_SIZE);
            assert_eq!(file.io.xdp_ring_size, want_ring, "{}", host.name);
            let cfg = file.node;
            let vms: Vec<&str> = cfg.vms.iter().map(|v| v.name.as_str()).collect();
            match host.role {
                HostRole::Client => assert_eq!(vms, ["client"]),
                _ => assert_eq!(vms, ["vm1"]),
            }
            assert_eq!(cfg.ports.len(), 2);
            srmig_dataplane::Dataplane::new(cfg)
                .unwrap_or_else(|e| panic!("{}: {e}\n{text}", host.name));
        }
    }

    #[test]
    fn an_hmac_lab_requires_it_on_every_uplink_and_signs_the_migrations() {
        let plan = Plan {
            hmac: true,
            ..Plan::default()
        };
        // 1360 + the SR path's 40 + 8 + 2 x 16 + the HMAC TLV's 40 = 1500.
        assert_eq!(plan.vm_mtu(), 1360);
        assert_eq!(Plan::default().vm_mtu(), VM_MTU);
        for host in &plan.hosts {
            let text = plan.node_toml(host);
            let mut cfg = srmig_dataplane::node_file::NodeFile::parse(&text)
                .unwrap_or_else(|e| panic!("{}: {e}\n{text}", host.name))
                .node;
            assert_eq!(cfg.migration_hmac_key, Some(LAB_HMAC_KEY_ID));
            assert_eq!(
                cfg.ports[0].hmac,
                Some(srmig_dataplane::HmacMode::Require),
                "{}",
                host.name
            );
            assert_eq!(cfg.hmac_keys.len(), 1);
            assert_eq!(
                cfg.hmac_keys[0].secret_file,
                std::path::Path::new(LAB_HMAC_KEY_FILE)
            );
            cfg.load_hmac_secrets(std::path::Path::new("/lab"), |_| Ok(b"00ff".to_vec()))
                .expect("secret");
            srmig_dataplane::Dataplane::new(cfg)
                .unwrap_or_else(|e| panic!("{}: {e}\n{text}", host.name));
        }
    }

    #[test]
    fn io_mode_reaches_every_host_with_the_clients_ring_size() {
        let plan = Plan {
            io_mode: Some("packet".to_owned()),
            vm_tc_hook: Some("clsact".to_owned()),
            ..Plan::default()
        };
        for host in &plan.hosts {
            let text = plan.node_toml(host);
            let file = srmig_dataplane::node_file::NodeFile::parse(&text)
                .unwrap_or_else(|e| panic!("{}: {e}\n{text}", host.name));
            assert_eq!(
                file.io.mode,
                srmig_dataplane::node_file::IoMode::Packet,
                "{}",
                host.name
            );
            let want_ring = (host.role == HostRole::Client).then_some(CLIENT_XDP_RING_SIZE);
            assert_eq!(file.io.xdp_ring_size, want_ring, "{}", host.name);
            assert_eq!(
                file.io.vm_tc_hook,
                srmig_dataplane::node_file::VmTcHook::Clsact,
                "{}",
                host.name
            );
        }
    }

    #[test]
    fn qemu_configs_attach_the_vm_port_to_qemu_on_s_and_d_only() {
        let plan = Plan::default();
        let dir = std::path::Path::new("/tmp/srmig-lab-x");
        for host in &plan.hosts {
            let text = plan.node_toml_qemu(host, dir);
            let has = text.contains(&format!(
                "[[qemu]]\nport = \"vm1-port\"\nsocket = \"/tmp/srmig-lab-x/qemu-{}.net\"",
                host.name
            ));
            assert_eq!(has, host.role != HostRole::Client, "{text}");
            // srmigd takes `[[qemu]]` and `[io]` out; the rest is the engine's configuration.
            let file = srmig_dataplane::node_file::NodeFile::parse(&text)
                .unwrap_or_else(|e| panic!("{}: {e}\n{text}", host.name));
            assert_eq!(file.qemu.is_empty(), host.role == HostRole::Client);
            srmig_dataplane::Dataplane::new(file.node).expect("engine config");
        }
    }

    #[test]
    fn sized_plans_add_hosts_and_vms_with_distinct_names_and_addresses() {
        let plan = Plan::sized(5, 4).expect("plan");
        let names: Vec<&str> = plan.hosts.iter().map(|h| h.name).collect();
        assert_eq!(names, ["c", "s", "d", "e", "f"]);
        for (i, host) in plan.hosts.iter().enumerate() {
            assert_eq!(host.role.index(), i);
            assert_eq!(HostRole::at(i), host.role);
            assert_eq!(usize::from(host.index), i + 1);
            host.info().validate().expect("host info");
        }
        let vms: Vec<&VmPlan> = plan.vms().collect();
        assert_eq!(vms.len(), 4);
        let mut seen = std::collections::HashSet::new();
        for vm in &vms {
            assert!(seen.insert(vm.address) && seen.len() <= 4);
            assert!(vm.port.len() <= 15);
            vm.info(plan.host(HostRole::Source));
        }
        // Spread over S, D, E, F; every host but C declares every VM.
        let homes: Vec<&str> = (0..4).map(|i| plan.host(plan.home(i)).name).collect();
        assert_eq!(homes, ["s", "d", "e", "f"]);
        for host in &plan.hosts[1..] {
            let cfg: srmig_dataplane::NodeConfig =
                toml::from_str(&plan.node_toml(host)).expect("toml");
            assert_eq!(cfg.vms.len(), 4);
            srmig_dataplane::Dataplane::new(cfg).expect("engine config");
        }
        assert_eq!(plan.next_host(HostRole::Other(1)), HostRole::Source);
        assert!(Plan::sized(2, 1).is_err());
        assert!(Plan::sized(MAX_HOSTS + 1, 1).is_err());
        assert!(Plan::sized(3, 0).is_err());
        assert!(Plan::sized(3, MAX_VMS + 1).is_err());
        let big = Plan::sized(MAX_HOSTS, MAX_VMS).expect("largest plan");
        assert!(big.hosts.iter().all(|h| h.name != ROUTER_NS));
    }

    #[test]
    fn rounds_move_every_vm_and_chains_follow_the_issue() {
        use HostRole::{Destination as D, Other, Source as S};
        let plan = Plan::sized(4, 3).expect("plan");
        let e = Other(0);
        // Plain: one hop each, at once; one VM on three hosts toggles S <-> D.
        assert_eq!(
            plan.round_moves(&[S, D, e], false),
            [(0, D, None), (1, e, None), (2, S, None)]
        );
        let three = Plan::default();
        assert_eq!(three.round_moves(&[S], false), [(0, D, None)]);
        assert_eq!(three.round_moves(&[D], false), [(0, S, None)]);
        // Chain: a S->D while b D->E, then a D->E after its first; the third VM moves too.
        assert_eq!(
            plan.round_moves(&[S, D, e], true),
            [(0, D, None), (1, e, None), (0, e, Some(0)), (2, S, None)]
        );
        // a and b together on E: b moves on first (E->S), then the chain from there.
        assert_eq!(
            plan.round_moves(&[e, e], true),
            [
                (1, S, None),
                (0, S, Some(0)),
                (1, D, Some(0)),
                (0, D, Some(1))
            ]
        );
    }

    #[test]
    fn source_and_destination_declare_the_same_vm_port() {
        let plan = Plan::default();
        let s = plan.node_toml(plan.host(HostRole::Source));
        let d = plan.node_toml(plan.host(HostRole::Destination));
        let port = "name = \"vm1-port\"\nkind = \"vm\"\nmac = \"02:00:00:00:aa:01\"";
        assert!(s.contains(port) && d.contains(port), "{s}\n{d}");
    }
}
