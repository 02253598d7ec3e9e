//! node.toml, the whole file: the engine's [`NodeConfig`] plus the tables of the programs that
//! drive it, parsed and validated in this one place so that srmigd and `srmig replay` read the
//! same file the same way (a file one accepts, the other accepts; a mistake one refuses, the
//! other refuses with the same message).
//!
//! | table | srmigd | `srmig replay` |
//! |---|---|---|
//! | the [`NodeConfig`] fields (`locator`, `[[ports]]`, `[[sids]]`, ...) | the engine | the engine |
//! | `[[qemu]]` ([`QemuPortConfig`]) | QEMU-backed VM ports | checked, then ignored with a note (no QEMU offline: frames come from `--pcap`) |
//! | `[io]` ([`IoConfig`]) | AF_XDP / AF_PACKET per port | checked, then ignored with a note (no sockets offline) |
//! | `[[events]]` ([`Event`]) | checked, then ignored with a warning (VM states come from the hypervisor and the controller) | VM state changes mid-stream |
//!
//! Why srmigd accepts `[[events]]` instead of refusing them: the file an operator replays is
//! the file they deploy; refusing it would force a second copy that drifts. The events are
//! validated all the same (a typo in one is an error for both programs), and srmigd logs that
//! it ignores them, so nothing is silently misread.
//!
//! The driver tables are plain data; srmigd gives them meaning (`srmig_hostd::port`), the
//! engine never sees them. Parsing reads no file: the caller reads the text and names the file
//! in its own error.
//!
//! ```toml
//! # ... every NodeConfig field (locator, ports, sids, vms, ...) ...
//!
//! [[qemu]]                       # srmigd: a VM port backed by a QEMU stream socket
//! port = "vm1p"                  # a `kind = "vm"` port of [[ports]]
//! socket = "/run/srmig/vm1.net"  # QEMU: -netdev stream,server=on,addr.type=unix,addr.path=...
//! qmp = "/run/srmig/vm1.ev"      # optional: a QMP socket for srmigd (VM state from QEMU)
//!
//! [io]                           # srmigd: port I/O, auto | xdp | packet
//! mode = "auto"
//! ports = { up0 = "packet" }
//!
//! [[events]]                     # replay: after the 3rd input packet (merged time order)
//! after_packet = 3
//! vm = "vm1"
//! state = "paused"
//!
//! [[events]]                     # replay: 20 ms after the first input packet's timestamp
//! at_ms = 20.0
//! vm = "vm1"
//! state = "running"
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, NodeConfig, PortKind};
use crate::vm::VmState;

/// The largest `at_ms` of an event: the range of the engine's clock ([`crate::Instant`], `u64`
/// nanoseconds, about 584 years), in milliseconds.
pub const MAX_AT_MS: f64 = 18_446_744_073_709.0;

/// Why a node.toml text is not a valid file. Messages name the field.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Not TOML, or a table or field of the wrong shape (the message names it and its line).
    #[error(transparent)]
    Toml(#[from] Box<toml::de::Error>),
    /// A value that does not fit the rest of the file, e.g. `events[1].at_ms: ...`.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
}

/// How a port reaches its interface in srmigd (`[io]`; see `srmig_hostd::port`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IoMode {
    /// AF_XDP for uplinks where it works, AF_PACKET otherwise (and for VM ports).
    #[default]
    Auto,
    /// AF_XDP or nothing (the port stays detached, with an error, if AF_XDP fails).
    Xdp,
    /// AF_PACKET (memory-mapped receive ring, batched sends).
    Packet,
}

impl IoMode {
    /// The name used in node.toml and in status (`auto`, `xdp`, `packet`).
    pub fn as_str(self) -> &'static str {
        match self {
            IoMode::Auto => "auto",
            IoMode::Xdp => "xdp",
            IoMode::Packet => "packet",
        }
    }
}

/// Where srmigd hooks a VM port's TC program (`[io] vm_tc_hook`; see
/// `srmig_hostd::port::clsact`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VmTcHook {
    /// A tcx link where the kernel has them (Linux 6.6 and later), a `clsact` filter
    /// otherwise.
    #[default]
    Auto,
    /// A tcx link or nothing (the VM ports' TC fast path is off where the kernel has none).
    Tcx,
    /// A `cls_bpf` filter on the interface's `clsact` qdisc (any kernel since 4.5), removed
    /// by srmigd when it detaches the port or exits, and found and removed at its next
    /// start after a crash.
    Clsact,
}

impl VmTcHook {
    /// The name used in node.toml and in logs (`auto`, `tcx`, `clsact`).
    pub fn as_str(self) -> &'static str {
        match self {
            VmTcHook::Auto => "auto",
            VmTcHook::Tcx => "tcx",
            VmTcHook::Clsact => "clsact",
        }
    }
}

/// node.toml's `[io]` table (srmigd only):
///
/// ```toml
/// [io]
/// mode = "auto"              # auto | xdp | packet: every port's default
/// ports = { vm1 = "packet" } # per port, by name
/// fast_path = ["up0", "vm1"] # ports whose BPF program forwards in the kernel (XDP: uplinks, TC: VM ports)
/// vm_fast_path = true        # every VM port on AF_PACKET gets the TC program (default), false: only those listed
/// xdp_ring_size = 4096       # entries of each AF_XDP ring of an uplink
/// vm_xdp_ring_size = 1024    # the same for a VM port (one per VM: 8 MiB each)
/// vm_tc_hook = "auto"        # auto | tcx | clsact: how a VM port's TC program is attached
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IoConfig {
    /// Default mode of every port.
    #[serde(default)]
    pub mode: IoMode,
    /// Per-port modes, by port name.
    #[serde(default)]
    pub ports: BTreeMap<String, IoMode>,
    /// Ports with srmigd's fast path (off by default). An uplink's XDP program forwards
    /// transit IPv6 and End itself, to another listed uplink: list an uplink only if its
    /// frames come off a wire or from another srmigd (not from a local kernel stack, whose
    /// checksums may be left partial) and its interface's peer accepts XDP frames (a NIC
    /// driver with `ndo_xdp_xmit`, or a veth whose peer runs an XDP program or has GRO on).
    /// A VM port's TC program encapsulates (H.Encaps, H.Encaps.Red) and forwards its VMs'
    /// packets to any uplink itself, keeping their offloads (docs/srmigd-api.md).
    #[serde(default)]
    pub fast_path: Vec<String>,
    /// Whether every VM port with an interface gets the TC fast path, listed in `fast_path`
    /// or not (default: yes). `false`: only the VM ports `fast_path` lists. A VM port in mode
    /// `xdp`, a QEMU stream port (no interface) and the ports of several workers
    /// (`--workers`) never have it.
    #[serde(default)]
    pub vm_fast_path: Option<bool>,
    /// Entries of each ring of an AF_XDP port (a power of two, 64 to 65536; default
    /// [`IoConfig::DEFAULT_XDP_RING_SIZE`]). As many frames receive (and as many send), each
    /// 4 KiB of the port's memory (4096: 32 MiB): the receive ring is what absorbs a burst
    /// while srmigd is busy. Ten VMs resuming at once released ~7,000 packets whose ~7,000
    /// answers reached the client's host within milliseconds: 4096 dropped ~12,500 of them,
    /// 16384 none.
    #[serde(default)]
    pub xdp_ring_size: Option<u32>,
    /// The same for VM ports put on AF_XDP (`ports.NAME = "xdp"`; default
    /// [`IoConfig::DEFAULT_VM_XDP_RING_SIZE`]): a host has one per VM, and a VM's port carries
    /// one VM's traffic, so its rings are smaller (1024: 8 MiB, as an AF_PACKET port's receive
    /// ring).
    #[serde(default)]
    pub vm_xdp_ring_size: Option<u32>,
    /// How a VM port's TC program is attached: a tcx link where the kernel has them, a
    /// `clsact` filter otherwise (`auto`, the default), or only one of the two.
    #[serde(default)]
    pub vm_tc_hook: VmTcHook,
}

impl IoConfig {
    /// The default of [`IoConfig::xdp_ring_size`].
    pub const DEFAULT_XDP_RING_SIZE: u32 = 4096;

    /// The default of [`IoConfig::vm_xdp_ring_size`].
    pub const DEFAULT_VM_XDP_RING_SIZE: u32 = 1024;

    /// [`IoConfig::xdp_ring_size`] or its default.
    pub fn xdp_ring_size(&self) -> u32 {
        self.xdp_ring_size.unwrap_or(Self::DEFAULT_XDP_RING_SIZE)
    }

    /// [`IoConfig::vm_xdp_ring_size`] or its default.
    pub fn vm_xdp_ring_size(&self) -> u32 {
        self.vm_xdp_ring_size
            .unwrap_or(Self::DEFAULT_VM_XDP_RING_SIZE)
    }

    /// The mode of port `name`.
    pub fn mode_of(&self, name: &str) -> IoMode {
        self.ports.get(name).copied().unwrap_or(self.mode)
    }

    /// Whether port `name` of `kind` has srmigd's fast path: listed in `fast_path`, or a VM
    /// port not in mode `xdp` while `vm_fast_path` is on (the default).
    pub fn fast_path_of(&self, name: &str, kind: PortKind) -> bool {
        self.fast_path.iter().any(|n| n == name)
            || (kind == PortKind::Vm
                && self.vm_fast_path.unwrap_or(true)
                && self.mode_of(name) != IoMode::Xdp)
    }
}

/// A QEMU-backed VM port of the node (`[[qemu]]`, srmigd only; see `srmig_hostd::port::qemu`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QemuPortConfig {
    /// The node-config port (`kind = "vm"`) this QEMU attaches to.
    pub port: String,
    /// The unix socket QEMU listens on (`-netdev stream,server=on,addr.type=unix,addr.path=`).
    pub socket: PathBuf,
    /// A QMP socket of that QEMU reserved for srmigd (`-qmp unix:PATH,server=on,wait=off`):
    /// VM state then follows QEMU's run state (STOP, RESUME, SHUTDOWN). Without it the VM runs
    /// while the socket is connected.
    #[serde(default)]
    pub qmp: Option<PathBuf>,
    /// Whether srmigd sends `migrate-continue` when this QEMU, the source of a migration with
    /// `pause-before-switchover`, waits in `pre-switchover` (after srmigd's exact take-back;
    /// docs/qemu.md section 3). `true` with srmig's own QMP driver (`srmig controller
    /// --hypervisor qmp`), which waits for it; `false` (the default) where another manager
    /// drives the migration and continues it itself: libvirt sets the capability and fails
    /// the migration if someone else continued first. Needs `qmp`.
    #[serde(default)]
    pub migrate_continue: bool,
}

/// When a replay event happens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EventTime {
    /// After this many input packets have been processed (1 = after the first, 0 = before any).
    AfterPacket(usize),
    /// At this time after the first input packet, in milliseconds: finite, `0..=`[`MAX_AT_MS`]
    /// when it comes from a file.
    AtMs(f64),
}

/// A VM state change applied mid-stream by `srmig replay` (`[[events]]`; what srmigd does on a
/// hypervisor event).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// When.
    pub time: EventTime,
    /// A VM of `[[vms]]`.
    pub vm: String,
    /// Its new state.
    pub state: VmState,
}

/// Every table of node.toml, validated (the engine validates `node` itself when it is built).
#[derive(Debug, Clone)]
pub struct NodeFile {
    /// The engine's configuration.
    pub node: NodeConfig,
    /// `[[qemu]]` (srmigd).
    pub qemu: Vec<QemuPortConfig>,
    /// `[io]` (srmigd).
    pub io: IoConfig,
    /// `[[events]]` (replay).
    pub events: Vec<Event>,
}

/// The top-level keys that are not [`NodeConfig`] fields.
const DRIVER_TABLES: [&str; 3] = ["qemu", "io", "events"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DaemonTables {
    #[serde(default)]
    qemu: Vec<QemuPortConfig>,
    #[serde(default)]
    io: IoConfig,
}

impl NodeFile {
    /// Parses node.toml's text: never panics; an error names the field (and, for `[[qemu]]`
    /// and `[[events]]`, the index of the table).
    pub fn parse(text: &str) -> Result<NodeFile, FileError> {
        let mut table: toml::Table = toml::from_str(text).map_err(Box::new)?;
        let mut daemon = toml::Table::new();
        let mut events = None;
        for key in DRIVER_TABLES {
            match (key, table.remove(key)) {
                (_, None) => {}
                ("events", Some(v)) => events = Some(v),
                (_, Some(v)) => {
                    daemon.insert(key.into(), v);
                }
            }
        }
        let node: NodeConfig = table.try_into().map_err(Box::new)?;
        let daemon: DaemonTables = daemon.try_into().map_err(Box::new)?;
        check_qemu(&node, &daemon.qemu)?;
        check_io(&node, &daemon.io)?;
        let events = match events {
            Some(v) => parse_events(v, &node)?,
            None => Vec::new(),
        };
        Ok(NodeFile {
            node,
            qemu: daemon.qemu,
            io: daemon.io,
            events,
        })
    }

    /// What srmigd does not use, one sentence each (it logs them as warnings).
    pub fn ignored_by_srmigd(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if !self.events.is_empty() {
            notes.push(format!(
                "{} [[events]] ignored: they are for `srmig replay`; srmigd takes VM states from the hypervisor and the controller",
                self.events.len()
            ));
        }
        notes
    }

    /// What `srmig replay` does not reproduce offline, one sentence each (it prints them and
    /// puts them in its summary).
    pub fn ignored_by_replay(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if !self.qemu.is_empty() {
            let ports: Vec<&str> = self.qemu.iter().map(|q| q.port.as_str()).collect();
            notes.push(format!(
                "[[qemu]] ignored (ports {}): no QEMU offline, frames come from --pcap",
                ports.join(", ")
            ));
        }
        if self.io != IoConfig::default() {
            notes.push("[io] ignored: no sockets offline".to_owned());
        }
        let no_mtu: Vec<&str> = self
            .node
            .ports
            .iter()
            .filter(|p| p.mtu.is_none())
            .map(|p| p.name.as_str())
            .collect();
        if !no_mtu.is_empty() {
            notes.push(format!(
                "ports without mtu ({}): srmigd uses the interface's MTU, the replay checks none (set `mtu` to replay it)",
                no_mtu.join(", ")
            ));
        }
        notes
    }
}

/// Each `[[qemu]]` names a distinct VM port.
fn check_qemu(node: &NodeConfig, qemu: &[QemuPortConfig]) -> Result<(), ConfigError> {
    for (index, q) in qemu.iter().enumerate() {
        let bad = |reason: String| ConfigError::invalid(format!("qemu[{index}]"), reason);
        match node.ports.iter().find(|p| p.name == q.port) {
            None => return Err(bad(format!("no port named \"{}\" in [[ports]]", q.port))),
            Some(p) if p.kind != PortKind::Vm => {
                return Err(bad(format!("port \"{}\" is not a VM port", q.port)))
            }
            Some(_) => {}
        }
        if qemu[..index].iter().any(|o| o.port == q.port) {
            return Err(bad(format!("port \"{}\" has two [[qemu]] tables", q.port)));
        }
        if q.migrate_continue && q.qmp.is_none() {
            return Err(bad(
                "migrate_continue needs qmp (srmigd's own QMP socket of that QEMU)".to_owned(),
            ));
        }
    }
    Ok(())
}

/// `[io]` names only ports of `[[ports]]`; `fast_path` no VM port in mode `xdp`.
fn check_io(node: &NodeConfig, io: &IoConfig) -> Result<(), ConfigError> {
    for (field, size) in [
        ("io.xdp_ring_size", io.xdp_ring_size),
        ("io.vm_xdp_ring_size", io.vm_xdp_ring_size),
    ] {
        if let Some(n) = size {
            if !n.is_power_of_two() || !(64..=65_536).contains(&n) {
                return Err(ConfigError::invalid(
                    field,
                    format!("{n} is not a power of two from 64 to 65536"),
                ));
            }
        }
    }
    for name in &io.fast_path {
        match node.ports.iter().find(|p| &p.name == name) {
            None => {
                return Err(ConfigError::invalid(
                    "io.fast_path",
                    format!("names \"{name}\", which is not a port of [[ports]]"),
                ))
            }
            Some(p)
                if p.kind == crate::config::PortKind::Vm
                    && io.ports.get(name).copied().unwrap_or(io.mode) == IoMode::Xdp =>
            {
                return Err(ConfigError::invalid(
                    "io.fast_path",
                    format!(
                        "names \"{name}\", a VM port in mode xdp: a VM port's fast path is a TC \
                         program beside its AF_PACKET sockets (mode auto or packet)"
                    ),
                ))
            }
            Some(_) => {}
        }
    }
    match io
        .ports
        .keys()
        .find(|n| !node.ports.iter().any(|p| &p.name == *n))
    {
        Some(name) => Err(ConfigError::invalid(
            "io.ports",
            format!("names \"{name}\", which is not a port of [[ports]]"),
        )),
        None => Ok(()),
    }
}

/// The `[[events]]` array, field by field, so that every error names the event and the field.
fn parse_events(value: toml::Value, node: &NodeConfig) -> Result<Vec<Event>, ConfigError> {
    let toml::Value::Array(list) = value else {
        return Err(ConfigError::invalid(
            "events",
            "expected [[events]] tables (an array of tables)",
        ));
    };
    list.into_iter()
        .enumerate()
        .map(|(i, v)| parse_event(i, v, node))
        .collect()
}

fn parse_event(i: usize, value: toml::Value, node: &NodeConfig) -> Result<Event, ConfigError> {
    let bad =
        |field: &str, reason: String| ConfigError::invalid(format!("events[{i}].{field}"), reason);
    let toml::Value::Table(mut t) = value else {
        return Err(ConfigError::invalid(
            format!("events[{i}]"),
            "expected a table",
        ));
    };
    let after_packet = t.remove("after_packet").map(|v| match v {
        toml::Value::Integer(n) => usize::try_from(n).map_err(|_| {
            bad(
                "after_packet",
                format!("{n} is not a packet count (an integer >= 0)"),
            )
        }),
        other => Err(bad(
            "after_packet",
            format!("{other} is not a packet count (an integer >= 0)"),
        )),
    });
    let at_ms = t.remove("at_ms").map(|v| {
        let ms = match v {
            toml::Value::Float(ms) => ms,
            // An exact integer count of milliseconds: every i64 converts (rounded beyond 2^53).
            #[allow(clippy::cast_precision_loss)]
            toml::Value::Integer(ms) => ms as f64,
            other => {
                return Err(bad(
                    "at_ms",
                    format!("{other} is not a number of milliseconds"),
                ))
            }
        };
        if ms.is_finite() && (0.0..=MAX_AT_MS).contains(&ms) {
            Ok(ms)
        } else {
            Err(bad(
                "at_ms",
                format!(
                    "{ms} is not a time: a finite number of milliseconds from 0 to {MAX_AT_MS} (the engine clock's range)"
                ),
            ))
        }
    });
    let time = match (after_packet, at_ms) {
        (Some(n), None) => EventTime::AfterPacket(n?),
        (None, Some(ms)) => EventTime::AtMs(ms?),
        _ => {
            return Err(ConfigError::invalid(
                format!("events[{i}]"),
                "give exactly one of 'after_packet' or 'at_ms'",
            ))
        }
    };
    let vm = match t.remove("vm") {
        Some(toml::Value::String(vm)) => vm,
        Some(other) => return Err(bad("vm", format!("{other} is not a VM name (a string)"))),
        None => return Err(bad("vm", "missing: the VM whose state changes".to_owned())),
    };
    if !node.vms.iter().any(|v| v.name == vm) {
        return Err(bad("vm", format!("no VM named \"{vm}\" in [[vms]]")));
    }
    let state = match t.remove("state") {
        Some(v) => VmState::deserialize(v).map_err(|e| bad("state", e.to_string()))?,
        None => {
            return Err(bad(
                "state",
                "missing: absent, running or paused".to_owned(),
            ))
        }
    };
    if let Some(key) = t.keys().next() {
        return Err(ConfigError::invalid(
            format!("events[{i}].{key}"),
            "unknown field (an event has after_packet or at_ms, vm and state)",
        ));
    }
    Ok(Event { time, vm, state })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: &str = r#"
locator = "fc00:0:2::/48"
source_address = "fc00:0:2::1"
gateway = { address = "2001:db8:100::1", mac = "02:00:00:00:00:01" }
[[ports]]
name = "enp3s0"
kind = "uplink"
mac = "02:00:00:00:02:00"
peer_mac = "02:00:00:00:ff:02"
mtu = 1500
[[ports]]
name = "vm1p"
kind = "vm"
mac = "02:00:00:00:02:01"
mtu = 1500
[[vms]]
name = "vm1"
addresses = ["2001:db8:100::10"]
mac = "02:00:00:00:10:10"
port = "vm1p"
"#;

    fn with(extra: &str) -> String {
        format!("{NODE}\n{extra}\n")
    }

    fn err(extra: &str) -> String {
        NodeFile::parse(&with(extra)).expect_err(extra).to_string()
    }

    #[test]
    fn every_table_is_parsed_and_each_program_names_what_it_ignores() {
        let f = NodeFile::parse(&with(
            "[[qemu]]\nport = \"vm1p\"\nsocket = \"/run/vm1.net\"\n\
             [io]\nmode = \"packet\"\n\
             [[events]]\nafter_packet = 2\nvm = \"vm1\"\nstate = \"paused\"\n\
             [[events]]\nat_ms = 1.5\nvm = \"vm1\"\nstate = \"running\"\n",
        ))
        .expect("valid");
        assert_eq!(f.qemu.len(), 1);
        assert_eq!(f.io.mode, IoMode::Packet);
        assert_eq!(f.events[0].time, EventTime::AfterPacket(2));
        assert_eq!(f.events[1].time, EventTime::AtMs(1.5));
        assert_eq!(f.events[1].state, VmState::Running);
        let srmigd = f.ignored_by_srmigd();
        assert!(
            srmigd.len() == 1 && srmigd[0].contains("2 [[events]] ignored"),
            "{srmigd:?}"
        );
        let replay = f.ignored_by_replay();
        assert!(replay.len() == 2, "{replay:?}");
        assert!(replay[0].contains("[[qemu]] ignored (ports vm1p)"));
        assert!(replay[1].contains("[io] ignored"));
        // Nothing to say about a file with neither.
        let plain = NodeFile::parse(NODE).expect("valid");
        assert!(plain.ignored_by_srmigd().is_empty() && plain.ignored_by_replay().is_empty());
    }

    #[test]
    fn a_port_without_mtu_is_noted_for_the_replay() {
        let text = NODE.replacen("mtu = 1500\n", "", 1);
        let notes = NodeFile::parse(&text).expect("valid").ignored_by_replay();
        assert!(
            notes.len() == 1 && notes[0].contains("(enp3s0)"),
            "{notes:?}"
        );
    }

    #[test]
    fn driver_table_errors_name_the_table() {
        let e = err("[[qemu]]\nport = \"vm1p\"\nsocket = \"/a\"\n[[qemu]]\nport = \"vm1p\"\nsocket = \"/b\"\n");
        assert!(e.contains("qemu[1]") && e.contains("two"), "{e}");
        let e = err("[[qemu]]\nport = \"enp3s0\"\nsocket = \"/a\"\n");
        assert!(e.contains("qemu[0]") && e.contains("not a VM port"), "{e}");
        let e = err("[[qemu]]\nport = \"vm1p\"\nsocket = \"/a\"\nmigrate_continue = true\n");
        assert!(e.contains("qemu[0]") && e.contains("needs qmp"), "{e}");
        let e = err("[io]\nports = { eth9 = \"xdp\" }\n");
        assert!(e.contains("io.ports") && e.contains("eth9"), "{e}");
        let e = err("[io]\nxdp_ring_size = 5000\n");
        assert!(e.contains("io.xdp_ring_size") && e.contains("5000"), "{e}");
        let e = err("[io]\nvm_xdp_ring_size = 32\n");
        assert!(e.contains("io.vm_xdp_ring_size") && e.contains("32"), "{e}");
        let e = err("[io]\nfast_path = [\"eth9\"]\n");
        assert!(e.contains("io.fast_path") && e.contains("eth9"), "{e}");
        let e = err("[io]\nports = { vm1p = \"xdp\" }\nfast_path = [\"vm1p\"]\n");
        assert!(e.contains("io.fast_path") && e.contains("VM port"), "{e}");
        let vm = format!("{NODE}[io]\nfast_path = [\"vm1p\"]\n");
        assert_eq!(
            NodeFile::parse(&vm)
                .expect("a VM port's TC fast path")
                .io
                .fast_path,
            ["vm1p"]
        );
        let ok =
            format!("{NODE}[io]\nports = {{ enp3s0 = \"packet\" }}\nfast_path = [\"enp3s0\"]\n");
        assert!(
            NodeFile::parse(&ok).is_ok(),
            "the fast path beside AF_PACKET"
        );
        let ok = format!("{NODE}[io]\nfast_path = [\"enp3s0\"]\n");
        assert_eq!(
            NodeFile::parse(&ok).expect("valid").io.fast_path,
            ["enp3s0"]
        );
        // Every VM port not on AF_XDP has the TC fast path unless vm_fast_path = false;
        // uplinks only where listed.
        let io = |extra: &str| {
            NodeFile::parse(&format!("{NODE}{extra}"))
                .expect("valid")
                .io
        };
        let default = io("");
        assert!(default.fast_path_of("vm1p", PortKind::Vm));
        assert!(!default.fast_path_of("enp3s0", PortKind::Uplink));
        let off = io("[io]\nvm_fast_path = false\n");
        assert!(!off.fast_path_of("vm1p", PortKind::Vm));
        let listed = io("[io]\nvm_fast_path = false\nfast_path = [\"vm1p\", \"enp3s0\"]\n");
        assert!(listed.fast_path_of("vm1p", PortKind::Vm));
        assert!(listed.fast_path_of("enp3s0", PortKind::Uplink));
        let xdp = io("[io]\nports = { vm1p = \"xdp\" }\n");
        assert!(!xdp.fast_path_of("vm1p", PortKind::Vm));
        let e = err("[io]\nmode = \"dpdk\"\n");
        assert!(e.contains("dpdk"), "{e}");
        let e = err("locatr = \"fc00::/48\"\n");
        assert!(e.contains("locatr"), "{e}");
    }

    /// Issue 10: `at_ms = 1e300` passed validation and panicked in the replay.
    #[test]
    fn every_numeric_event_field_is_checked_and_named() {
        let ev = |time: &str| {
            format!(
                "[[events]]\nafter_packet = 1\nvm = \"vm1\"\nstate = \"paused\"\n\
                 [[events]]\n{time}\nvm = \"vm1\"\nstate = \"running\"\n"
            )
        };
        for bad in [
            "1e300", "inf", "-inf", "nan", "-0.5", "-1", "1.9e13", "\"5\"", "true",
        ] {
            let e = err(&ev(&format!("at_ms = {bad}")));
            assert!(e.starts_with("events[1].at_ms: "), "{bad}: {e}");
        }
        for bad in ["-3", "2.5", "\"2\"", "1e3"] {
            let e = err(&ev(&format!("after_packet = {bad}")));
            assert!(e.starts_with("events[1].after_packet: "), "{bad}: {e}");
        }
        for good in [
            "at_ms = 0",
            "at_ms = 20",
            "at_ms = 18446744073709.0",
            "after_packet = 0",
        ] {
            NodeFile::parse(&with(&ev(good))).expect(good);
        }
        let f = NodeFile::parse(&with(&ev("at_ms = 20"))).expect("integer ms");
        assert_eq!(f.events[1].time, EventTime::AtMs(20.0));
    }

    #[test]
    fn other_event_errors_name_index_and_field() {
        let cases = [
            (
                "after_packet = 2\nat_ms = 1.0\nvm = \"vm1\"\nstate = \"paused\"",
                "events[0]: give exactly one",
            ),
            (
                "vm = \"vm1\"\nstate = \"paused\"",
                "events[0]: give exactly one",
            ),
            (
                "after_packet = 2\nvm = \"vm9\"\nstate = \"paused\"",
                "events[0].vm: no VM named \"vm9\"",
            ),
            (
                "after_packet = 2\nvm = 3\nstate = \"paused\"",
                "events[0].vm: 3 is not",
            ),
            (
                "after_packet = 2\nstate = \"paused\"",
                "events[0].vm: missing",
            ),
            (
                "after_packet = 2\nvm = \"vm1\"\nstate = \"sleeping\"",
                "events[0].state: unknown variant",
            ),
            ("after_packet = 2\nvm = \"vm1\"", "events[0].state: missing"),
            (
                "after_packet = 2\nvm = \"vm1\"\nstate = \"paused\"\nport = \"x\"",
                "events[0].port: unknown field",
            ),
        ];
        for (body, want) in cases {
            let e = err(&format!("[[events]]\n{body}\n"));
            assert!(e.starts_with(want), "{body}: {e}");
        }
        // Top-level keys go before the tables.
        let top = |line: &str| {
            NodeFile::parse(&format!("{line}\n{NODE}"))
                .expect_err(line)
                .to_string()
        };
        let e = top("events = 3");
        assert!(e.starts_with("events: expected [[events]]"), "{e}");
        let e = top("events = [1]");
        assert!(e.starts_with("events[0]: expected a table"), "{e}");
    }
}
