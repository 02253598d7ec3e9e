//! srmigd's fast paths, BPF programs that forward in the kernel what the engine would forward
//! the same way, and keeping their maps equal to the engine's [`FastTable`] for the port:
//! - an uplink's XDP program, `bpf/fastpath.c` (checked in compiled, `bpf/fastpath.o`);
//! - a VM port's TC program, `bpf/vmport.c` (`bpf/vmport.o`; [`FastPath::load_vm`],
//!   [`FastAttachment::attach_vm`]): H.Encaps(.Red) and main-table forwarding of its VMs'
//!   packets, GSO frames whole. Its table is written armed: the program passes everything
//!   until it sees that srmigd has handled every frame it passed ([`FastPath::set_handled`]),
//!   then turns itself on (`crate::port::FastWait`).
//!
//! Both share `bpf/common.h` (map value layouts, the flow hash).
//!
//! The rest of this doc is about the uplinks' program.
//!
//! The program forwards transit IPv6, End, End.DX6 and transit H.Encaps in the kernel (`bpf_redirect_map` to a
//! `DEVMAP`) and hands everything else to srmigd's AF_XDP socket, exactly as the plain
//! program does. What it may forward is decided by the engine
//! ([`srmig_dataplane::Dataplane::fast_table`]); see `srmig_dataplane::fastpath` for why a
//! forwarded frame is exactly what the engine would have sent. It is off unless node.toml
//! lists the uplink in `[io] fast_path` (docs/srmigd.md says when an uplink qualifies).
//!
//! ## Loading
//! The object is an ELF file with one program section (`xdp`) whose 64-bit immediate loads
//! refer to placeholder symbols (`xsks`, `egress`, `routes`, ...). [`FastPath::load`] creates
//! one map per symbol, patches each load with its map's fd and loads the instructions with
//! [`bpf::load_xdp_program`]. The ELF is read with the `object` crate; no libbpf (the reasons
//! are those of [`super::xdp`]'s module doc), and no BTF: the maps are defined here.
//!
//! ## Updates
//! [`FastPath::write`] turns the program off (`port.enabled = 0`: every frame goes to srmigd,
//! which is always right), credits the counters under the old table, rewrites nexthops,
//! devmap, routes and domain, and turns it back on. A table equal to the one written is not
//! written again.
#![allow(unsafe_code)]

use std::collections::HashSet;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget};
use srmig_dataplane::fastpath::{
    COUNTER_SLOTS, MAX_DX6, MAX_ENCAPS, MAX_NEXTHOPS, MAX_REWRITE, MAX_ROUTES, MAX_SOURCES,
};
use srmig_dataplane::{CounterSlot, FastAction, FastTable, PortId};

use super::bpf::{self, Insn, ProgLoadError};
use super::clsact;
use srmig_dataplane::node_file::VmTcHook;

/// 8-byte alignment for the ELF parser.
#[repr(C, align(8))]
struct Aligned<T: ?Sized>(T);
static OBJECT_ALIGNED: &Aligned<[u8]> = &Aligned(*include_bytes!("../../bpf/fastpath.o"));
/// The compiled program (`clang -O2 -target bpf -mcpu=v3 -c fastpath.c`).
pub static OBJECT: &[u8] = &OBJECT_ALIGNED.0;
static VM_OBJECT_ALIGNED: &Aligned<[u8]> = &Aligned(*include_bytes!("../../bpf/vmport.o"));
/// The VM port's TC program (`clang -O2 -target bpf -mcpu=v3 -c vmport.c`).
pub static VM_OBJECT: &[u8] = &VM_OBJECT_ALIGNED.0;
/// The name of the VM port's program.
pub const VM_PROG_NAME: &str = "srmig_vm";

const LPM_KEY: usize = 20;
const ROUTE: usize = 8;
const NEXTHOP: usize = 16;
/// `struct port` of bpf/vmport.c (the first 16 bytes are bpf/fastpath.c's).
const PORT: usize = 24;
/// `port.enabled` of the VM port's program (`bpf/vmport.c`): off, on, or armed (turns itself on
/// once srmigd has handled every frame it passed).
const PORT_OFF: u32 = 0;
const PORT_ON: u32 = 1;
const PORT_ARMED: u32 = 2;
/// Keys of the VM port's `passed` map: frames passed on to srmigd (the program's count), and
/// how many of those srmigd has handled (srmigd's).
const PASSED: u32 = 0;
const HANDLED: u32 = 1;
const COUNTER: usize = 16;
const ACTION_FORWARD: u32 = 1;
const ACTION_END: u32 = 2;
const ACTION_ENCAP: u32 = 3;
const ACTION_DX6: u32 = 4;
const ENCAP: usize = 16 + MAX_REWRITE;

/// Why the fast path could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum FastPathError {
    /// The object file is not what this module expects.
    #[error("bpf/fastpath.o: {0}")]
    Object(String),
    /// A map could not be created or written.
    #[error("{what}: {source}")]
    Map {
        /// Which map and operation.
        what: String,
        /// The error.
        source: io::Error,
    },
    /// The kernel refused the program.
    #[error(transparent)]
    Load(#[from] ProgLoadError),
}

fn map_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> FastPathError {
    let what = what.into();
    move |source| FastPathError::Map { what, source }
}

/// The maps of one loaded program.
#[derive(Debug)]
struct Maps {
    /// A `DEVMAP` for the uplink's XDP program, an `ARRAY` of ifindexes for the VM port's.
    egress: OwnedFd,
    routes: OwnedFd,
    domain: OwnedFd,
    nexthops: OwnedFd,
    port: OwnedFd,
    counters: OwnedFd,
    encaps: OwnedFd,
    dx6s: OwnedFd,
    /// The VM port's program: its VMs' addresses (`HASH`: address -> index in the table's
    /// sources) and its count of IPv6 frames passed on to srmigd beside how many of those
    /// srmigd has handled (`ARRAY[2]`, [`PASSED`] and [`HANDLED`]).
    vm: Option<(OwnedFd, OwnedFd)>,
}

/// The fast path of one port: the program (attached by [`super::xdp`] in place of the plain
/// one), its maps, and what was last written to them.
#[derive(Debug)]
pub struct FastPath {
    prog: OwnedFd,
    maps: Maps,
    cpus: usize,
    /// The table in the maps, and the egress ifindex of each of its nexthops.
    written: Option<(FastTable, Vec<u32>)>,
    /// Per counter slot: what was credited to the engine so far (packets, bytes).
    credited: Vec<(u64, u64)>,
    /// Every prefix in the routes map (also after a failed write).
    in_map: HashSet<(u128, u8)>,
    /// Every prefix in the domain map.
    domain_in_map: HashSet<(u128, u8)>,
    /// Every address in the sources map (a VM port's program).
    sources_in_map: HashSet<u128>,
    /// A VM port's table written but not yet turned on (see [`FastPath::enable_pending`]).
    pending: bool,
}

impl Maps {
    /// The maps of the uplink's program, or (`vm`) of the VM port's.
    fn create(vm: bool) -> Result<Maps, FastPathError> {
        let create = |t, k: usize, v: usize, n: usize, flags, what: &str| {
            bpf::create_map(t, k as u32, v as u32, n as u32, flags, what)
                .map_err(map_err(format!("creating map {what}")))
        };
        let egress_type = if vm {
            bpf::BPF_MAP_TYPE_ARRAY
        } else {
            bpf::BPF_MAP_TYPE_DEVMAP
        };
        let vm_maps = if vm {
            Some((
                create(
                    bpf::BPF_MAP_TYPE_HASH,
                    16,
                    4,
                    MAX_SOURCES,
                    0,
                    "srmig_sources",
                )?,
                create(bpf::BPF_MAP_TYPE_ARRAY, 4, 8, 2, 0, "srmig_passed")?,
            ))
        } else {
            None
        };
        Ok(Maps {
            egress: create(egress_type, 4, 4, MAX_NEXTHOPS, 0, "srmig_egress")?,
            routes: create(
                bpf::BPF_MAP_TYPE_LPM_TRIE,
                LPM_KEY,
                ROUTE,
                MAX_ROUTES,
                bpf::BPF_F_NO_PREALLOC,
                "srmig_routes",
            )?,
            domain: create(
                bpf::BPF_MAP_TYPE_LPM_TRIE,
                LPM_KEY,
                4,
                1024,
                bpf::BPF_F_NO_PREALLOC,
                "srmig_domain",
            )?,
            nexthops: create(
                bpf::BPF_MAP_TYPE_ARRAY,
                4,
                NEXTHOP,
                MAX_NEXTHOPS,
                0,
                "srmig_nexthops",
            )?,
            port: create(bpf::BPF_MAP_TYPE_ARRAY, 4, PORT, 1, 0, "srmig_port")?,
            counters: create(
                bpf::BPF_MAP_TYPE_PERCPU_ARRAY,
                4,
                COUNTER,
                COUNTER_SLOTS,
                0,
                "srmig_counters",
            )?,
            encaps: create(
                bpf::BPF_MAP_TYPE_ARRAY,
                4,
                ENCAP,
                MAX_ENCAPS,
                0,
                "srmig_encaps",
            )?,
            dx6s: create(bpf::BPF_MAP_TYPE_ARRAY, 4, 4, MAX_DX6, 0, "srmig_dx6s")?,
            vm: vm_maps,
        })
    }

    /// The fd of the map a program's placeholder symbol stands for.
    fn fd(&self, sym: &str) -> Option<i32> {
        let m = match sym {
            "egress" => &self.egress,
            "routes" => &self.routes,
            "domain" => &self.domain,
            "nexthops" => &self.nexthops,
            "port" => &self.port,
            "counters" => &self.counters,
            "encaps" => &self.encaps,
            "dx6s" => &self.dx6s,
            "sources" => &self.vm.as_ref()?.0,
            "passed" => &self.vm.as_ref()?.1,
            _ => return None,
        };
        Some(m.as_raw_fd())
    }
}

fn lpm_key(addr: u128, len: u8) -> [u8; LPM_KEY] {
    let mut k = [0u8; LPM_KEY];
    k[..4].copy_from_slice(&u32::from(len).to_ne_bytes());
    k[4..].copy_from_slice(&addr.to_be_bytes());
    k
}

impl FastPath {
    /// Creates the maps and loads the program, which sends the frames it does not forward to
    /// `xsks` (the port's `XSKMAP`). The program starts disabled: everything to srmigd until
    /// [`FastPath::write`].
    pub fn load(xsks: &OwnedFd, name: &str, frags: bool) -> Result<FastPath, FastPathError> {
        let maps = Maps::create(false)?;
        let insns = instructions(OBJECT, "xdp", &|sym| match sym {
            "xsks" => Some(xsks.as_raw_fd()),
            _ => maps.fd(sym),
        })?;
        let flags = if frags { bpf::BPF_F_XDP_HAS_FRAGS } else { 0 };
        let prog = bpf::load_xdp_program(name, &insns, c"GPL", flags)?;
        FastPath::new(prog, maps)
    }

    /// [`load_vm`](Self::load_vm), recording a refusal ([`vm_program_refused`]): the same
    /// program would be refused again.
    pub fn load_vm_once() -> Result<FastPath, String> {
        if let Some(why) = vm_program_refused() {
            return Err(why.to_owned());
        }
        FastPath::load_vm().map_err(|e| {
            let why = format!("loading the TC program: {e}");
            refuse_vm_program(&why);
            why
        })
    }

    /// Creates the maps and loads the VM port's TC program (`bpf/vmport.c`), which passes
    /// the frames it does not forward on to the kernel's receive path (srmigd's `ETH_P_IPV6`
    /// socket). It starts disabled, passing everything.
    pub fn load_vm() -> Result<FastPath, FastPathError> {
        let maps = Maps::create(true)?;
        let insns = instructions(VM_OBJECT, "tc", &|sym| maps.fd(sym))?;
        let prog = bpf::load_tc_program(VM_PROG_NAME, &insns, c"GPL")?;
        let fp = FastPath::new(prog, maps)?;
        // Nothing handled is known yet: an armed table waits for srmigd's first count.
        fp.set_handled(u64::MAX)?;
        Ok(fp)
    }

    fn new(prog: OwnedFd, maps: Maps) -> Result<FastPath, FastPathError> {
        let cpus = bpf::possible_cpus().map_err(map_err("reading the possible CPUs"))?;
        Ok(FastPath {
            prog,
            maps,
            cpus,
            written: None,
            credited: vec![(0, 0); COUNTER_SLOTS],
            in_map: HashSet::new(),
            domain_in_map: HashSet::new(),
            sources_in_map: HashSet::new(),
            pending: false,
        })
    }

    /// Whether this is a VM port's program.
    pub fn is_vm(&self) -> bool {
        self.maps.vm.is_some()
    }

    /// The IPv6 frames a VM port's program passed on to srmigd so far (0 for an uplink's).
    pub fn passed(&self) -> u64 {
        let Some((_, passed)) = &self.maps.vm else {
            return 0;
        };
        let mut buf = [0u8; 8];
        match bpf::map_lookup(passed, &PASSED.to_ne_bytes(), &mut buf, (4, 8)) {
            Ok(true) => u64::from_ne_bytes(buf),
            _ => 0,
        }
    }

    /// Tells a VM port's program that srmigd has read and sent the first `count` frames it
    /// passed (in [`passed`](Self::passed)'s count): an armed table turns itself on at the
    /// next frame if the program has passed no other since. Written only when it is true:
    /// after srmigd's sends of the round, with its receive ring found empty.
    pub fn set_handled(&self, count: u64) -> Result<(), FastPathError> {
        let Some((_, passed)) = &self.maps.vm else {
            return Ok(());
        };
        bpf::map_update(passed, &HANDLED.to_ne_bytes(), &count.to_ne_bytes(), (4, 8))
            .map_err(map_err("writing the count of frames srmigd handled"))
    }

    /// Whether a VM port's table was written and waits to be turned on. An armed program that
    /// turned itself on is found here (one map lookup) and no longer waits.
    pub fn enable_pending(&mut self) -> bool {
        if self.pending && self.port_state() == Some(PORT_ON) {
            self.pending = false;
        }
        self.pending
    }

    /// The program's `port.enabled` (`None` if the map cannot be read).
    fn port_state(&self) -> Option<u32> {
        let mut v = [0u8; PORT];
        match bpf::map_lookup(&self.maps.port, &0u32.to_ne_bytes(), &mut v, (4, PORT)) {
            Ok(true) => Some(u32::from_ne_bytes([v[0], v[1], v[2], v[3]])),
            _ => None,
        }
    }

    /// Turns the program off (every frame passed on) while it is detached, keeping what it
    /// forwarded uncredited and its table: a VM port's program is kept for the port's next
    /// attachment ([`FastAttachment::into_parts`]), where the table is written (or, unchanged,
    /// armed) again.
    pub fn park(&mut self) -> Result<(), FastPathError> {
        self.set_port(None, PORT_OFF)?;
        self.pending = self.written.is_some();
        Ok(())
    }

    /// Turns a written VM port's table on now, without waiting for the program to see that
    /// srmigd caught up (see `crate::port` for when srmigd may).
    pub fn enable(&mut self) -> Result<(), FastPathError> {
        if !self.pending {
            return Ok(());
        }
        let t = self.written.as_ref().map(|(t, _)| t.clone());
        self.set_port(t.as_ref(), PORT_ON)?;
        self.pending = false;
        Ok(())
    }

    /// An armed VM port's table needs srmigd no more: srmigd has handled every frame the
    /// program passed, which turns itself on at its next IPv6 frame.
    pub fn caught_up(&mut self) {
        self.pending = false;
    }

    /// Arms a written VM port's table that waits to be turned on: the program turns itself on
    /// once srmigd has handled every frame it passed ([`set_handled`](Self::set_handled)).
    fn arm(&mut self) -> Result<(), FastPathError> {
        if !self.pending {
            return Ok(());
        }
        let t = self.written.as_ref().map(|(t, _)| t.clone());
        self.set_port(t.as_ref(), PORT_ARMED)
    }

    /// The program.
    pub fn prog(&self) -> &OwnedFd {
        &self.prog
    }

    /// Whether the maps hold a table (the program forwards).
    pub fn enabled(&self) -> bool {
        self.written.is_some()
    }

    /// Makes the maps hold `table` (`None`: forward nothing), with `ifindex_of` giving each
    /// nexthop's egress interface (a nexthop without one punts). The counts under the table
    /// being replaced are first credited through `credit`.
    pub fn write(
        &mut self,
        table: Option<FastTable>,
        ifindex_of: &dyn Fn(PortId) -> Option<u32>,
        credit: &mut dyn FnMut(CounterSlot, u64, u64),
    ) -> Result<(), FastPathError> {
        // Each program checks what its kind of port needs: an uplink's does not check a VM
        // port's sources, a VM port's handles no SID. A table of the other kind is not
        // written, and every frame goes to srmigd.
        let vm = self.is_vm();
        let table = table.filter(|t| t.sources.is_some() == vm);
        let ifindexes: Vec<u32> = table
            .as_ref()
            .map(|t| {
                t.nexthops
                    .iter()
                    .map(|n| ifindex_of(n.port).unwrap_or(0))
                    .collect()
            })
            .unwrap_or_default();
        if let (Some((old, old_if)), Some(new)) = (&self.written, &table) {
            if old == new && *old_if == ifindexes {
                // Unchanged; a VM port's program parked for a configuration change waits
                // for srmigd to catch up again.
                return self.arm();
            }
        }
        if table.is_none() && self.written.is_none() {
            return Ok(());
        }
        self.set_port(None, PORT_OFF)?;
        self.collect(credit);
        self.zero_counters()?;
        // Disabled from here until the end: a failure on the way leaves the port punting.
        self.written = None;
        self.pending = false;
        let Some(t) = table else {
            self.delete_routes(None)?;
            return Ok(());
        };
        let sizes = |k, v| (k, v);
        for (i, n) in t.nexthops.iter().enumerate() {
            let key = (i as u32).to_ne_bytes();
            let ifindex = ifindexes[i];
            let mut v = [0u8; NEXTHOP];
            // max_frame 0: nothing fits, the nexthop punts.
            let max = if ifindex == 0 { 0 } else { n.max_frame };
            v[..4].copy_from_slice(&max.to_ne_bytes());
            v[4..10].copy_from_slice(&n.dst_mac);
            v[10..16].copy_from_slice(&n.src_mac);
            bpf::map_update(&self.maps.nexthops, &key, &v, sizes(4, NEXTHOP))
                .map_err(map_err("writing a nexthop"))?;
            if ifindex != 0 || vm {
                bpf::map_update(&self.maps.egress, &key, &ifindex.to_ne_bytes(), sizes(4, 4))
                    .map_err(map_err(format!(
                        "adding ifindex {ifindex} to the egress map"
                    )))?;
            } else {
                bpf::map_delete(&self.maps.egress, &key, 4).map_err(map_err("DEVMAP delete"))?;
            }
        }
        for (i, e) in t.encaps.iter().enumerate() {
            let mut v = [0u8; ENCAP];
            v[..4].copy_from_slice(&(e.rewrite.len() as u32).to_ne_bytes());
            v[4..8].copy_from_slice(&u32::from(e.nexthop).to_ne_bytes());
            v[8..12].copy_from_slice(&u32::from(e.next_header_at).to_ne_bytes());
            v[12..16].copy_from_slice(&u32::from(e.hash).to_ne_bytes());
            let n = e.rewrite.len().min(MAX_REWRITE);
            v[16..16 + n].copy_from_slice(&e.rewrite[..n]);
            bpf::map_update(
                &self.maps.encaps,
                &(i as u32).to_ne_bytes(),
                &v,
                sizes(4, ENCAP),
            )
            .map_err(map_err("writing a policy"))?;
        }
        for (i, d) in t.dx6s.iter().enumerate() {
            let v = u32::from(d.nexthop).to_ne_bytes();
            bpf::map_update(&self.maps.dx6s, &(i as u32).to_ne_bytes(), &v, sizes(4, 4))
                .map_err(map_err("writing an End.DX6 SID"))?;
        }
        self.delete_routes(Some(&t))?;
        for r in &t.routes {
            let (action, index) = match r.action {
                FastAction::Punt => (0u32, 0u32),
                FastAction::Forward(i) => (ACTION_FORWARD, u32::from(i)),
                FastAction::End(i) => (ACTION_END, u32::from(i)),
                FastAction::Encap(i) => (ACTION_ENCAP, u32::from(i)),
                FastAction::Dx6(i) => (ACTION_DX6, u32::from(i)),
            };
            let mut v = [0u8; ROUTE];
            v[..4].copy_from_slice(&action.to_ne_bytes());
            v[4..].copy_from_slice(&index.to_ne_bytes());
            bpf::map_update(
                &self.maps.routes,
                &lpm_key(r.addr, r.len),
                &v,
                sizes(LPM_KEY, ROUTE),
            )
            .map_err(map_err("writing a route"))?;
            self.in_map.insert((r.addr, r.len));
        }
        let gone: Vec<(u128, u8)> = self
            .domain_in_map
            .iter()
            .filter(|d| !t.domain.contains(d))
            .copied()
            .collect();
        for (a, l) in gone {
            bpf::map_delete(&self.maps.domain, &lpm_key(a, l), LPM_KEY)
                .map_err(map_err("removing an SR domain prefix"))?;
            self.domain_in_map.remove(&(a, l));
        }
        for &(a, l) in &t.domain {
            self.domain_in_map.insert((a, l));
            bpf::map_update(
                &self.maps.domain,
                &lpm_key(a, l),
                &1u32.to_ne_bytes(),
                sizes(LPM_KEY, 4),
            )
            .map_err(map_err("writing an SR domain prefix"))?;
        }
        if let Some((sources, _)) = &self.maps.vm {
            let new: Vec<u128> = t.sources.iter().flatten().map(|s| s.addr).collect();
            let gone: Vec<u128> = self
                .sources_in_map
                .iter()
                .filter(|a| !new.contains(a))
                .copied()
                .collect();
            for a in gone {
                bpf::map_delete(sources, &a.to_be_bytes(), 16)
                    .map_err(map_err("removing a VM's address"))?;
                self.sources_in_map.remove(&a);
            }
            for (i, a) in new.iter().enumerate() {
                self.sources_in_map.insert(*a);
                bpf::map_update(
                    sources,
                    &a.to_be_bytes(),
                    &(i as u32).to_ne_bytes(),
                    (16, 4),
                )
                .map_err(map_err("writing a VM's address"))?;
            }
            // The program turns itself on once srmigd has handled what it passed so far (or
            // srmigd turns it on: `enable`).
            self.written = Some((t, ifindexes));
            self.pending = true;
            return self.arm();
        }
        self.set_port(Some(&t), PORT_ON)?;
        self.written = Some((t, ifindexes));
        Ok(())
    }

    /// Removes from the routes map every prefix `new` does not have.
    fn delete_routes(&mut self, new: Option<&FastTable>) -> Result<(), FastPathError> {
        let keep: HashSet<(u128, u8)> = new
            .map(|t| t.routes.iter().map(|r| (r.addr, r.len)).collect())
            .unwrap_or_default();
        let gone: Vec<(u128, u8)> = self.in_map.difference(&keep).copied().collect();
        for (a, l) in gone {
            bpf::map_delete(&self.maps.routes, &lpm_key(a, l), LPM_KEY)
                .map_err(map_err("removing a route"))?;
            self.in_map.remove(&(a, l));
        }
        Ok(())
    }

    /// Writes the port entry: `t` with `state` (an uplink's program knows only on and off),
    /// or off.
    fn set_port(&self, t: Option<&FastTable>, state: u32) -> Result<(), FastPathError> {
        let mut v = [0u8; PORT];
        if let Some(t) = t {
            v[..4].copy_from_slice(&state.to_ne_bytes());
            v[4..8].copy_from_slice(&u32::from(t.end_ok).to_ne_bytes());
            v[8..14].copy_from_slice(&t.port_mac);
            v[14] = u8::from(t.srh_ok);
            if let Some(m) = t.also_mac {
                v[15] = 1;
                v[16..22].copy_from_slice(&m);
            }
        }
        bpf::map_update(&self.maps.port, &0u32.to_ne_bytes(), &v, (4, PORT))
            .map_err(map_err("writing the port entry"))
    }

    fn zero_counters(&mut self) -> Result<(), FastPathError> {
        let zero = vec![0u8; COUNTER * self.cpus];
        for slot in 0..COUNTER_SLOTS as u32 {
            bpf::map_update(
                &self.maps.counters,
                &slot.to_ne_bytes(),
                &zero,
                (4, zero.len()),
            )
            .map_err(map_err("zeroing the counters"))?;
        }
        self.credited.iter_mut().for_each(|c| *c = (0, 0));
        Ok(())
    }

    /// Credits through `credit` what the program counted since the last call, per slot of the
    /// table in the maps.
    pub fn collect(&mut self, credit: &mut dyn FnMut(CounterSlot, u64, u64)) {
        let Some((t, _)) = &self.written else {
            return;
        };
        let size = COUNTER * self.cpus;
        let mut buf = vec![0u8; size];
        for (slot, target) in t.counter_slots() {
            if bpf::map_lookup(
                &self.maps.counters,
                &slot.to_ne_bytes(),
                &mut buf,
                (4, size),
            )
            .is_err()
            {
                continue;
            }
            let (mut p, mut b) = (0u64, 0u64);
            for c in buf.chunks_exact(COUNTER) {
                p += u64::from_ne_bytes(c[..8].try_into().unwrap_or_default());
                b += u64::from_ne_bytes(c[8..].try_into().unwrap_or_default());
            }
            let seen = &mut self.credited[slot as usize];
            let (dp, db) = (p.saturating_sub(seen.0), b.saturating_sub(seen.1));
            if dp > 0 {
                credit(target, dp, db);
            }
            *seen = (p, b);
        }
    }
}

/// The fast path on an uplink without an AF_XDP socket (AF_PACKET: an MTU AF_XDP cannot
/// carry, or `[io]` mode `packet`). The program is loaded for multi-buffer frames
/// (`BPF_F_XDP_HAS_FRAGS`) and its `XSKMAP` stays empty: a frame it does not forward gets
/// `XDP_PASS` and reaches the port's AF_PACKET socket through the kernel's receive path.
#[derive(Debug)]
pub struct FastAttachment {
    // Drop order: the link (program detached) first.
    _link: Link,
    /// The interface it is attached to.
    pub ifindex: u32,
    fast: FastPath,
    _xsks: Option<OwnedFd>,
    /// Native or generic XDP; `None` for a VM port's TC program.
    pub mode: Option<super::bpf::XdpMode>,
}

impl FastAttachment {
    /// Loads the program and attaches it to `ifindex` with a BPF link (as
    /// [`super::xdp::XdpSocket`] does: gone when srmigd exits), beside an AF_PACKET socket
    /// (an MTU AF_XDP cannot carry).
    ///
    /// On a veth, in generic mode: native XDP on a veth copies every multi-buffer (jumbo)
    /// frame into pages before the program runs and hands redirected frames to the peer as
    /// XDP frames, where generic mode runs the program on the socket buffer as it is and
    /// redirects it whole. `srmig bench forward --frame-bytes 9000`, one A/B on this machine:
    /// transit IPv6 0.221 Mpps native vs 0.345 generic (Linux 0.338 and 0.326 in the same
    /// runs), End 0.261 vs 0.308. A NIC driver keeps native mode.
    pub fn attach(ifindex: u32, ifname: &str) -> Result<FastAttachment, String> {
        let xsks = bpf::create_xskmap(1).map_err(|e| format!("creating the XSKMAP: {e}"))?;
        let fast = FastPath::load(&xsks, bpf::PROG_NAME, true).map_err(|e| e.to_string())?;
        let veth = super::xdp::driver_name(ifindex).as_deref() == Some("veth");
        let (link, mode) = super::xdp::attach_program(fast.prog(), ifindex, ifname, veth)
            .map_err(|e| e.to_string())?;
        Ok(FastAttachment {
            _link: Link::Bpf(link),
            ifindex,
            fast,
            _xsks: Some(xsks),
            mode: Some(mode),
        })
    }

    /// Loads a VM port's TC program (`bpf/vmport.c`) unless `fast` is one, and attaches it at
    /// the ingress of `ifindex` as `hook` says: a tcx link (gone when srmigd exits, however it
    /// exits), or a `clsact` filter ([`super::clsact`]: removed when dropped, and at the next
    /// start after a crash) where the kernel has no tcx (`auto`) or the configuration asks for
    /// it. It passes every frame until a table is written and turned on. Once the kernel
    /// refused the program or every hook ([`vm_program_refused`]), fails at once without a
    /// system call.
    pub fn attach_vm(
        ifindex: u32,
        fast: Option<FastPath>,
        hook: VmTcHook,
    ) -> Result<FastAttachment, String> {
        if let Some(why) = vm_program_refused() {
            return Err(why.to_owned());
        }
        let fast = match fast {
            Some(f) => f,
            None => FastPath::load_vm_once()?,
        };
        let tcx = match hook {
            VmTcHook::Tcx => true,
            VmTcHook::Clsact => false,
            VmTcHook::Auto => NO_TCX.get().is_none(),
        };
        if tcx {
            match bpf::link_create_tcx(fast.prog(), ifindex) {
                Ok(link) => return Ok(FastAttachment::vm(Link::Bpf(link), ifindex, fast)),
                Err(e) => {
                    let why = format!("attaching the TC program (tcx ingress): {e}");
                    if !tcx_refused(&e) {
                        return Err(why);
                    }
                    if hook == VmTcHook::Tcx {
                        refuse_vm_program(&why);
                        return Err(why);
                    }
                    if NO_TCX.set(why.clone()).is_ok() {
                        tracing::info!(reason = %why, "this kernel has no tcx links: the VM ports' TC program is attached as a clsact filter");
                    }
                }
            }
        }
        match clsact::attach(fast.prog(), ifindex) {
            Ok(f) => Ok(FastAttachment::vm(Link::Clsact(f), ifindex, fast)),
            Err(e) => {
                let why = format!("attaching the TC program (clsact ingress filter): {e}");
                if clsact_refused(&e) {
                    refuse_vm_program(&why);
                }
                Err(why)
            }
        }
    }

    fn vm(link: Link, ifindex: u32, fast: FastPath) -> FastAttachment {
        FastAttachment {
            _link: link,
            ifindex,
            fast,
            _xsks: None,
            mode: None,
        }
    }

    /// How the program is attached: `xdp` (an uplink's), `tcx` or `clsact` (a VM port's).
    pub fn hook(&self) -> &'static str {
        match (&self._link, self.mode) {
            (Link::Clsact(_), _) => "clsact",
            (Link::Bpf(_), Some(_)) => "xdp",
            (Link::Bpf(_), None) => "tcx",
        }
    }

    /// The fast path.
    pub fn fast(&self) -> &FastPath {
        &self.fast
    }

    /// The link (dropping it detaches the program) and the program with its maps (for the
    /// port's next attachment).
    pub fn into_parts(self) -> (Link, FastPath) {
        let FastAttachment { _link, fast, .. } = self;
        (_link, fast)
    }

    /// The fast path.
    pub fn fast_mut(&mut self) -> &mut FastPath {
        &mut self.fast
    }
}

/// What attaches a port's program; dropping it detaches the program.
#[derive(Debug)]
pub enum Link {
    /// A BPF link (XDP, tcx): detached when its last fd closes.
    Bpf(OwnedFd),
    /// A `clsact` filter: deleted when dropped.
    Clsact(clsact::ClsactFilter),
}

impl Link {
    /// Whether this is a `clsact` filter (whose program must not be attached again while the
    /// filter may still be there: see `crate::port::PortIo`'s `retire`).
    pub fn is_clsact(&self) -> bool {
        matches!(self, Link::Clsact(_))
    }
}

/// Why this kernel has no tcx links, once a link was refused as unknown: from then on `auto`
/// attaches VM ports' programs as `clsact` filters without trying tcx again.
static NO_TCX: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Why this kernel cannot run the VM ports' TC program, once it refused it: its load (the
/// same program every time) or a tcx link (`BPF_TCX_INGRESS`, Linux 6.6 and later). From then
/// on no VM port tries again: each would fail the same way, on the path of a VM's arrival.
static VM_PROGRAM_REFUSED: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Why the kernel refused the VM ports' TC program, if it did ([`VM_PROGRAM_REFUSED`]).
pub fn vm_program_refused() -> Option<&'static str> {
    VM_PROGRAM_REFUSED.get().map(String::as_str)
}

/// Records the refusal and says it once, as a warning: every VM frame goes through srmigd's
/// sockets from now on, as with `[io] vm_fast_path = false`.
fn refuse_vm_program(why: &str) {
    if VM_PROGRAM_REFUSED.set(why.to_owned()).is_ok() {
        tracing::warn!(
            error = why,
            "the VM ports' TC fast path is off: this kernel refused it (it needs tcx links, \
             Linux 6.6 or later, or a clsact qdisc with cls_bpf); every VM frame goes \
             through srmigd's sockets"
        );
    }
}

/// Whether a failed tcx link means this kernel has none (an unknown attach type: `EINVAL`;
/// no BPF links at all: `EOPNOTSUPP`, `ENOSYS`), not a problem of one interface.
fn tcx_refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::EOPNOTSUPP | libc::ENOSYS)
    )
}

/// Whether a failed clsact filter means this kernel has no way to run it (no `bpf`
/// classifier or no qdiscs: `ENOENT`, `EOPNOTSUPP`), not a problem of one interface.
fn clsact_refused(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EOPNOTSUPP))
}

/// The program of `object` with every map reference resolved by `map_fd` (symbol name ->
/// fd); an unknown symbol, a relocation that is not a 64-bit immediate load, or a second
/// program section is an error.
pub fn instructions(
    object: &[u8],
    section_name: &str,
    map_fd: &dyn Fn(&str) -> Option<i32>,
) -> Result<Vec<Insn>, FastPathError> {
    let bad = |m: String| FastPathError::Object(m);
    let file = object::File::parse(object).map_err(|e| bad(e.to_string()))?;
    let section = file
        .section_by_name(section_name)
        .ok_or_else(|| bad(format!("no section {section_name:?}")))?;
    let data = section.data().map_err(|e| bad(e.to_string()))?;
    if data.len() % 8 != 0 {
        return Err(bad(format!(
            "section {section_name} is {} bytes, not whole instructions",
            data.len()
        )));
    }
    let mut insns: Vec<Insn> = data
        .chunks_exact(8)
        .map(|c| Insn::from_bytes(c.try_into().unwrap_or_default()))
        .collect();
    for (offset, rel) in section.relocations() {
        let RelocationTarget::Symbol(idx) = rel.target() else {
            return Err(bad(format!("relocation at {offset} has no symbol")));
        };
        let sym = file.symbol_by_index(idx).map_err(|e| bad(e.to_string()))?;
        let name = sym.name().map_err(|e| bad(e.to_string()))?;
        let fd = map_fd(name).ok_or_else(|| bad(format!("unknown symbol {name:?} at {offset}")))?;
        let i = usize::try_from(offset / 8).unwrap_or(usize::MAX);
        let insn = insns
            .get_mut(i)
            .filter(|i| i.is_ld_imm64() && offset % 8 == 0)
            .ok_or_else(|| {
                bad(format!(
                    "relocation of {name:?} at {offset} is not a map load"
                ))
            })?;
        insn.set_map_fd(fd);
    }
    Ok(insns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_without_tcx_is_told_from_a_bad_interface() {
        for errno in [libc::EINVAL, libc::EOPNOTSUPP, libc::ENOSYS] {
            assert!(tcx_refused(&io::Error::from_raw_os_error(errno)), "{errno}");
        }
        // A vanished interface, a full program slot: that port only.
        for errno in [libc::ENODEV, libc::EEXIST, libc::EBUSY, libc::ENOMEM] {
            assert!(
                !tcx_refused(&io::Error::from_raw_os_error(errno)),
                "{errno}"
            );
        }
    }

    #[test]
    fn every_map_reference_of_the_object_is_resolved() {
        let names = [
            "xsks", "egress", "routes", "domain", "nexthops", "port", "counters", "encaps", "dx6s",
        ];
        let insns = instructions(OBJECT, "xdp", &|s| {
            names.iter().position(|n| *n == s).map(|i| 100 + i as i32)
        })
        .expect("the checked-in object loads");
        assert!(insns.len() > 100);
        let patched = insns
            .iter()
            .filter(|i| i.is_ld_imm64() && i.to_bytes()[1] >> 4 == 1)
            .count();
        assert_eq!(patched, 24, "the map loads of fastpath.c");
        let err = instructions(OBJECT, "xdp", &|s| (s != "domain").then_some(3))
            .expect_err("a symbol without a map");
        assert!(err.to_string().contains("\"domain\""), "{err}");
    }

    #[test]
    fn lpm_keys_are_length_then_address() {
        let k = lpm_key(0x2001_0db8u128 << 96, 32);
        assert_eq!(&k[..4], &32u32.to_ne_bytes());
        assert_eq!(&k[4..8], &[0x20, 0x01, 0x0d, 0xb8]);
    }
}
