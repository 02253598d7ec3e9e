//! The few BPF and rtnetlink calls the AF_XDP port needs ([`super::xdp`]), over `libc` alone.
//!
//! What is here, and nothing more:
//! - the `bpf(2)` commands `BPF_MAP_CREATE` (an `XSKMAP`; for the fast path
//!   ([`super::fastpath`]) also `DEVMAP`, `LPM_TRIE`, `ARRAY` and `PERCPU_ARRAY`),
//!   `BPF_MAP_UPDATE_ELEM`, `BPF_MAP_DELETE_ELEM`, `BPF_MAP_LOOKUP_ELEM`, `BPF_PROG_LOAD` (the
//!   six-instruction redirect program, [`xsk_program`], or the fast path's instructions),
//!   `BPF_PROG_TEST_RUN` (tests run a program on a frame), `BPF_LINK_CREATE`
//!   (attach to an interface, detached when the link's last fd closes), and
//!   `BPF_PROG_GET_FD_BY_ID` + `BPF_OBJ_GET_INFO_BY_FD` (the name of an attached program);
//! - rtnetlink `RTM_GETLINK` (which XDP programs an interface has, in which mode) and
//!   `RTM_SETLINK` with `IFLA_XDP` (detach a program attached without a link, or, for tests,
//!   attach one that way); the request and answer plumbing is shared with [`super::clsact`].
//!
//! The `bpf_attr` union is passed as one `#[repr(C)]` struct per command holding only the
//! fields used, with its own size: the kernel zero-extends a shorter attribute, and every
//! struct here mirrors the prefix of the union member in `include/uapi/linux/bpf.h`
//! (offsets checked by the tests at the bottom).
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The name of srmigd's XDP program (at most 15 bytes: `BPF_OBJ_NAME_LEN` is 16).
pub const PROG_NAME: &str = "srmig_xsk";

/// `BPF_OBJ_NAME_LEN`.
const OBJ_NAME_LEN: usize = 16;

// bpf(2) commands (enum bpf_cmd).
const BPF_MAP_CREATE: libc::c_int = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_int = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_int = 2;
const BPF_MAP_DELETE_ELEM: libc::c_int = 3;
const BPF_PROG_TEST_RUN: libc::c_int = 10;
const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_GET_FD_BY_ID: libc::c_int = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_int = 15;
const BPF_LINK_CREATE: libc::c_int = 28;

/// `BPF_MAP_TYPE_XSKMAP`.
const BPF_MAP_TYPE_XSKMAP: u32 = 17;
/// `BPF_MAP_TYPE_HASH`.
pub const BPF_MAP_TYPE_HASH: u32 = 1;
/// `BPF_MAP_TYPE_ARRAY`.
pub const BPF_MAP_TYPE_ARRAY: u32 = 2;
/// `BPF_MAP_TYPE_PERCPU_ARRAY`.
pub const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
/// `BPF_MAP_TYPE_LPM_TRIE`.
pub const BPF_MAP_TYPE_LPM_TRIE: u32 = 11;
/// `BPF_MAP_TYPE_DEVMAP`.
pub const BPF_MAP_TYPE_DEVMAP: u32 = 14;
/// `BPF_F_NO_PREALLOC` (required for `LPM_TRIE`).
pub const BPF_F_NO_PREALLOC: u32 = 1;
/// `BPF_PROG_TYPE_XDP`.
const BPF_PROG_TYPE_XDP: u32 = 6;
/// `BPF_XDP` (enum bpf_attach_type).
const BPF_XDP: u32 = 37;
/// `BPF_PROG_TYPE_SCHED_CLS` (a TC classifier: the VM port's program).
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
/// `BPF_TCX_INGRESS` (enum bpf_attach_type; kernel 6.6 and later).
const BPF_TCX_INGRESS: u32 = 46;
/// `BPF_FUNC_redirect_map`.
const BPF_FUNC_REDIRECT_MAP: i32 = 51;
/// `BPF_PSEUDO_MAP_FD`: the `src_reg` of a `ld_imm64` whose immediate is a map fd.
const BPF_PSEUDO_MAP_FD: u8 = 1;
/// `XDP_PASS` (enum xdp_action).
const XDP_PASS: i32 = 2;
/// `offsetof(struct xdp_md, rx_queue_index)`.
const XDP_MD_RX_QUEUE_INDEX: i16 = 16;

/// `XDP_FLAGS_SKB_MODE`: generic XDP, in the kernel's receive path (any driver).
pub const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
/// `XDP_FLAGS_DRV_MODE`: native XDP, in the driver.
pub const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
/// `XDP_FLAGS_HW_MODE`: offloaded to the NIC.
pub const XDP_FLAGS_HW_MODE: u32 = 1 << 3;
/// `XDP_FLAGS_REPLACE`: replace only the program given by `IFLA_XDP_EXPECTED_FD`.
const XDP_FLAGS_REPLACE: u32 = 1 << 4;

// rtnetlink (linux/if_link.h, linux/rtnetlink.h, linux/netlink.h).
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_SETLINK: u16 = 19;
pub(super) const NLM_F_REQUEST: u16 = 1;
pub(super) const NLM_F_ACK: u16 = 4;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
pub(super) const NLA_F_NESTED: u16 = 1 << 15;
const NLA_TYPE_MASK: u16 = !(1 << 15 | 1 << 14);
const IFLA_XDP: u16 = 43;
const IFLA_XDP_FD: u16 = 1;
const IFLA_XDP_FLAGS: u16 = 3;
const IFLA_XDP_SKB_PROG_ID: u16 = 6;
const IFLA_XDP_DRV_PROG_ID: u16 = 5;
const IFLA_XDP_HW_PROG_ID: u16 = 7;
const IFLA_XDP_EXPECTED_FD: u16 = 8;
pub(super) const NLMSG_HDR_LEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;

// ------------------------------------------------------------------------------------------
// Instructions

/// One eBPF instruction (`struct bpf_insn`): opcode, `dst_reg` in the low nibble and
/// `src_reg` in the high nibble of `regs` (little-endian bitfields), offset, immediate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

impl Insn {
    fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            regs: (src << 4) | (dst & 0x0f),
            off,
            imm,
        }
    }

    /// The instruction encoded in `b` (as [`Insn::to_bytes`] writes it).
    pub fn from_bytes(b: [u8; 8]) -> Insn {
        Insn {
            code: b[0],
            regs: b[1],
            off: i16::from_le_bytes([b[2], b[3]]),
            imm: i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }

    /// Whether this is the first half of a 64-bit immediate load (`ld_imm64`).
    pub fn is_ld_imm64(self) -> bool {
        self.code == BPF_LD | BPF_IMM | BPF_DW
    }

    /// Makes this `ld_imm64` load the map `fd` (`src_reg = BPF_PSEUDO_MAP_FD`).
    pub fn set_map_fd(&mut self, fd: RawFd) {
        self.regs = (BPF_PSEUDO_MAP_FD << 4) | (self.regs & 0x0f);
        self.imm = fd;
    }

    /// The 8 bytes the kernel reads (little endian, as on every target srmigd builds for).
    pub fn to_bytes(self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = self.code;
        b[1] = self.regs;
        b[2..4].copy_from_slice(&self.off.to_le_bytes());
        b[4..8].copy_from_slice(&self.imm.to_le_bytes());
        b
    }
}

// Opcode parts (linux/bpf_common.h, linux/bpf.h).
const BPF_LD: u8 = 0x00;
const BPF_LDX: u8 = 0x01;
const BPF_JMP: u8 = 0x05;
const BPF_ALU64: u8 = 0x07;
const BPF_W: u8 = 0x00;
const BPF_DW: u8 = 0x18;
const BPF_IMM: u8 = 0x00;
const BPF_MEM: u8 = 0x60;
const BPF_K: u8 = 0x00;
const BPF_MOV: u8 = 0xb0;
const BPF_CALL: u8 = 0x80;
const BPF_EXIT: u8 = 0x90;

/// srmigd's XDP program: every frame goes to the AF_XDP socket of its receive queue, or up
/// the stack if that queue has none.
///
/// ```text
/// r2 = *(u32 *)(r1 + 16)        ; key = ctx->rx_queue_index
/// r1 = map_fd ll                ; map (ld_imm64, src_reg = BPF_PSEUDO_MAP_FD: 2 slots)
/// r3 = 2                        ; flags: XDP_PASS when the key has no socket
/// call bpf_redirect_map#51      ; r0 = XDP_REDIRECT or XDP_PASS
/// exit
/// ```
pub fn xsk_program(map_fd: RawFd) -> [Insn; 6] {
    [
        Insn::new(BPF_LDX | BPF_MEM | BPF_W, 2, 1, XDP_MD_RX_QUEUE_INDEX, 0),
        Insn::new(BPF_LD | BPF_IMM | BPF_DW, 1, BPF_PSEUDO_MAP_FD, 0, map_fd),
        Insn::new(0, 0, 0, 0, 0),
        Insn::new(BPF_ALU64 | BPF_MOV | BPF_K, 3, 0, 0, XDP_PASS),
        Insn::new(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_REDIRECT_MAP),
        Insn::new(BPF_JMP | BPF_EXIT, 0, 0, 0, 0),
    ]
}

// ------------------------------------------------------------------------------------------
// bpf(2)

#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; OBJ_NAME_LEN],
}

#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; OBJ_NAME_LEN],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct GetIdAttr {
    id: u32,
    next_id: u32,
    open_flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The prefix of `struct bpf_prog_info` up to and including `name`.
#[repr(C)]
#[derive(Default)]
struct ProgInfo {
    prog_type: u32,
    id: u32,
    tag: [u8; 8],
    jited_prog_len: u32,
    xlated_prog_len: u32,
    jited_prog_insns: u64,
    xlated_prog_insns: u64,
    load_time: u64,
    created_by_uid: u32,
    nr_map_ids: u32,
    map_ids: u64,
    name: [u8; OBJ_NAME_LEN],
}

/// Calls `bpf(cmd, attr, sizeof attr)`; a non-negative result is returned as is.
fn sys_bpf<T>(cmd: libc::c_int, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, exclusively borrowed #[repr(C)] prefix of `union bpf_attr`
    // for `cmd`, of the size passed; pointers inside it (set by the callers) point at buffers
    // that outlive the call and are sized as the attribute says.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            (attr as *mut T).cast::<libc::c_void>(),
            mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r)
}

/// A `bpf(2)` command that returns a new fd.
fn bpf_fd<T>(cmd: libc::c_int, attr: &mut T) -> io::Result<OwnedFd> {
    let r = sys_bpf(cmd, attr)?;
    let fd = RawFd::try_from(r).map_err(|_| io::Error::other("bpf(2) returned no fd"))?;
    // SAFETY: the command succeeded and returned a new fd (O_CLOEXEC) that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn name_bytes(name: &str) -> [u8; OBJ_NAME_LEN] {
    let mut out = [0u8; OBJ_NAME_LEN];
    let n = name.len().min(OBJ_NAME_LEN - 1);
    out[..n].copy_from_slice(&name.as_bytes()[..n]);
    out
}

fn fd_u32(fd: RawFd) -> io::Result<u32> {
    u32::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))
}

/// Creates an `XSKMAP` of `entries` entries (key: queue index, value: AF_XDP socket fd).
pub fn create_xskmap(entries: u32) -> io::Result<OwnedFd> {
    let mut attr = MapCreateAttr {
        map_type: BPF_MAP_TYPE_XSKMAP,
        key_size: 4,
        value_size: 4,
        max_entries: entries,
        map_name: name_bytes(PROG_NAME),
        ..MapCreateAttr::default()
    };
    bpf_fd(BPF_MAP_CREATE, &mut attr)
}

/// Sets `map[key] = value` (`BPF_ANY`) in a map with 4-byte keys and values.
pub fn map_update_u32(map: &OwnedFd, key: u32, value: u32) -> io::Result<()> {
    let mut attr = MapElemAttr {
        map_fd: fd_u32(map.as_raw_fd())?,
        key: &key as *const u32 as u64,
        value: &value as *const u32 as u64,
        ..MapElemAttr::default()
    };
    sys_bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
}

/// Creates a map of `map_type` (one of the `BPF_MAP_TYPE_*` here) named `name`.
pub fn create_map(
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    name: &str,
) -> io::Result<OwnedFd> {
    let mut attr = MapCreateAttr {
        map_type,
        key_size,
        value_size,
        max_entries,
        map_flags,
        map_name: name_bytes(name),
        ..MapCreateAttr::default()
    };
    bpf_fd(BPF_MAP_CREATE, &mut attr)
}

/// Sets `map[key] = value` (`BPF_ANY`); both are the map's sizes (the kernel reads that
/// many bytes: a shorter slice is refused here).
pub fn map_update(
    map: &OwnedFd,
    key: &[u8],
    value: &[u8],
    sizes: (usize, usize),
) -> io::Result<()> {
    if key.len() != sizes.0 || value.len() != sizes.1 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut attr = MapElemAttr {
        map_fd: fd_u32(map.as_raw_fd())?,
        key: key.as_ptr() as u64,
        value: value.as_ptr() as u64,
        ..MapElemAttr::default()
    };
    sys_bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
}

/// Removes `key` from `map` (`Ok(false)` if it was not there); `key_size` as for
/// [`map_update`].
pub fn map_delete(map: &OwnedFd, key: &[u8], key_size: usize) -> io::Result<bool> {
    if key.len() != key_size {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut attr = MapElemAttr {
        map_fd: fd_u32(map.as_raw_fd())?,
        key: key.as_ptr() as u64,
        ..MapElemAttr::default()
    };
    match sys_bpf(BPF_MAP_DELETE_ELEM, &mut attr) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Reads `map[key]` into `value`, which must be the whole value (for a per-CPU map, one
/// value per possible CPU, 8-byte aligned each); `Ok(false)` if the key is absent.
pub fn map_lookup(
    map: &OwnedFd,
    key: &[u8],
    value: &mut [u8],
    sizes: (usize, usize),
) -> io::Result<bool> {
    if key.len() != sizes.0 || value.len() != sizes.1 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut attr = MapElemAttr {
        map_fd: fd_u32(map.as_raw_fd())?,
        key: key.as_ptr() as u64,
        value: value.as_mut_ptr() as u64,
        ..MapElemAttr::default()
    };
    match sys_bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The number of possible CPUs (`/sys/devices/system/cpu/possible`, e.g. `0-1`): how many
/// values a per-CPU map holds per key.
pub fn possible_cpus() -> io::Result<usize> {
    let s = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    let mut n = 0;
    for part in s.trim().split(',') {
        let bad = || io::Error::other(format!("cannot parse possible CPUs {s:?}"));
        n += match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) =
                    (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                b.checked_sub(a).ok_or_else(bad)? + 1
            }
            None => {
                part.parse::<usize>().map_err(|_| bad())?;
                1
            }
        };
    }
    Ok(n)
}

#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
}

/// Runs `prog` once on `frame` (`BPF_PROG_TEST_RUN`): the program's return value and the
/// frame as it left it. Tests only: nothing is sent anywhere (a redirect is only a verdict).
pub fn prog_test_run(prog: &OwnedFd, frame: &[u8]) -> io::Result<(u32, Vec<u8>)> {
    prog_test_run_skb(prog, frame, &[])
}

/// Runs `prog` once on `frame` with `ctx` as its context (none if empty; for a TC program a
/// `struct __sk_buff` with the fields the kernel lets a test set, e.g. `gso_size`,
/// `gso_segs`); returns the verdict and the frame as the program left it. Tests only.
pub fn prog_test_run_skb(prog: &OwnedFd, frame: &[u8], ctx: &[u8]) -> io::Result<(u32, Vec<u8>)> {
    let mut out = vec![0u8; frame.len() + 512];
    let mut ctx_out = vec![0u8; ctx.len()];
    let mut attr = TestRunAttr {
        prog_fd: fd_u32(prog.as_raw_fd())?,
        data_size_in: u32::try_from(frame.len())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?,
        data_size_out: out.len() as u32,
        data_in: frame.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat: 1,
        ctx_size_in: ctx.len() as u32,
        ctx_size_out: ctx_out.len() as u32,
        ctx_in: if ctx.is_empty() {
            0
        } else {
            ctx.as_ptr() as u64
        },
        ctx_out: if ctx.is_empty() {
            0
        } else {
            ctx_out.as_mut_ptr() as u64
        },
        ..TestRunAttr::default()
    };
    sys_bpf(BPF_PROG_TEST_RUN, &mut attr)?;
    out.truncate(attr.data_size_out as usize);
    Ok((attr.retval, out))
}

/// The kernel refused to load a program; `log` is the verifier's log (may be empty).
#[derive(Debug, thiserror::Error)]
#[error("loading the BPF program failed: {source}; verifier log: {log:?}")]
pub struct ProgLoadError {
    /// The `bpf(BPF_PROG_LOAD)` error.
    #[source]
    pub source: io::Error,
    /// The verifier's log of the second (logged) attempt.
    pub log: String,
}

/// Loads [`xsk_program`] on `map` as an XDP program named `name` (15 bytes at most are
/// kept). The first attempt runs without a log; if it fails the load is repeated with the
/// verifier's log, which the error carries.
pub fn load_xsk_program(name: &str, map: &OwnedFd) -> Result<OwnedFd, ProgLoadError> {
    // Any license: bpf_redirect_map is not GPL-only.
    load_xdp_program(name, &xsk_program(map.as_raw_fd()), c"Apache-2.0", 0)
}

/// `BPF_F_XDP_HAS_FRAGS`: the program handles multi-buffer frames (jumbo frames on a veth).
pub const BPF_F_XDP_HAS_FRAGS: u32 = 1 << 5;

/// Loads `insns` as an XDP program named `name` under `license` (see
/// [`load_xsk_program`] for the verifier's log).
pub fn load_xdp_program(
    name: &str,
    insns: &[Insn],
    license: &CStr,
    prog_flags: u32,
) -> Result<OwnedFd, ProgLoadError> {
    load_program(BPF_PROG_TYPE_XDP, BPF_XDP, name, insns, license, prog_flags)
}

/// Loads `insns` as a TC classifier (`BPF_PROG_TYPE_SCHED_CLS`) named `name`, for
/// [`link_create_tcx`].
pub fn load_tc_program(
    name: &str,
    insns: &[Insn],
    license: &CStr,
) -> Result<OwnedFd, ProgLoadError> {
    load_program(BPF_PROG_TYPE_SCHED_CLS, 0, name, insns, license, 0)
}

fn load_program(
    prog_type: u32,
    expected_attach_type: u32,
    name: &str,
    insns: &[Insn],
    license: &CStr,
    prog_flags: u32,
) -> Result<OwnedFd, ProgLoadError> {
    let load = |log: Option<&mut [u8]>| {
        let mut attr = ProgLoadAttr {
            prog_type,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            prog_name: name_bytes(name),
            prog_flags,
            expected_attach_type,
            ..ProgLoadAttr::default()
        };
        if let Some(buf) = log {
            attr.log_level = 1;
            attr.log_size = u32::try_from(buf.len()).unwrap_or(u32::MAX);
            attr.log_buf = buf.as_mut_ptr() as u64;
        }
        bpf_fd(BPF_PROG_LOAD, &mut attr)
    };
    match load(None) {
        Ok(fd) => Ok(fd),
        Err(first) => {
            let mut buf = vec![0u8; 1 << 20];
            match load(Some(&mut buf)) {
                Ok(fd) => Ok(fd),
                Err(source) => {
                    let log = CStr::from_bytes_until_nul(&buf)
                        .map(|c| c.to_string_lossy().trim_end().to_owned())
                        .unwrap_or_default();
                    // The first error is the one without the log's own failure modes
                    // (ENOSPC for a full log buffer).
                    let source = if source.raw_os_error() == Some(libc::ENOSPC) {
                        first
                    } else {
                        source
                    };
                    Err(ProgLoadError { source, log })
                }
            }
        }
    }
}

/// Attaches TC program `prog` at the ingress of interface `ifindex` with a tcx link
/// (`BPF_LINK_CREATE`, `BPF_TCX_INGRESS`), after the programs already there. Like an XDP
/// link, the program stays attached exactly as long as the returned fd (or a duplicate) is
/// open: nothing is left on the interface when srmigd exits, however it exits.
pub fn link_create_tcx(prog: &OwnedFd, ifindex: u32) -> io::Result<OwnedFd> {
    let mut attr = LinkCreateAttr {
        prog_fd: fd_u32(prog.as_raw_fd())?,
        target_ifindex: ifindex,
        attach_type: BPF_TCX_INGRESS,
        flags: 0,
    };
    bpf_fd(BPF_LINK_CREATE, &mut attr)
}

/// Attaches `prog` to interface `ifindex` with a BPF link (`BPF_LINK_CREATE`, `BPF_XDP`)
/// in mode `mode_flags` ([`XDP_FLAGS_DRV_MODE`] or [`XDP_FLAGS_SKB_MODE`]). The program
/// stays attached exactly as long as the returned fd (or a duplicate) is open.
pub fn link_create_xdp(prog: &OwnedFd, ifindex: u32, mode_flags: u32) -> io::Result<OwnedFd> {
    let mut attr = LinkCreateAttr {
        prog_fd: fd_u32(prog.as_raw_fd())?,
        target_ifindex: ifindex,
        attach_type: BPF_XDP,
        flags: mode_flags,
    };
    bpf_fd(BPF_LINK_CREATE, &mut attr)
}

/// An fd of the loaded program with id `id`.
pub fn prog_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    let mut attr = GetIdAttr {
        id,
        ..GetIdAttr::default()
    };
    bpf_fd(BPF_PROG_GET_FD_BY_ID, &mut attr)
}

/// The name of the program behind `prog` (`BPF_OBJ_GET_INFO_BY_FD`).
pub fn prog_name(prog: &OwnedFd) -> io::Result<String> {
    let mut info = ProgInfo::default();
    let mut attr = InfoAttr {
        bpf_fd: fd_u32(prog.as_raw_fd())?,
        info_len: mem::size_of::<ProgInfo>() as u32,
        info: &mut info as *mut ProgInfo as u64,
    };
    sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    let end = info
        .name
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(OBJ_NAME_LEN);
    Ok(String::from_utf8_lossy(&info.name[..end]).into_owned())
}

// ------------------------------------------------------------------------------------------
// rtnetlink

/// In which mode an XDP program is attached to an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpMode {
    /// Generic XDP (`XDP_FLAGS_SKB_MODE`).
    Generic,
    /// Native XDP in the driver (`XDP_FLAGS_DRV_MODE`).
    Native,
    /// Offloaded (`XDP_FLAGS_HW_MODE`).
    Offloaded,
}

impl XdpMode {
    /// The `XDP_FLAGS_*_MODE` flag of the mode.
    pub fn flag(self) -> u32 {
        match self {
            XdpMode::Generic => XDP_FLAGS_SKB_MODE,
            XdpMode::Native => XDP_FLAGS_DRV_MODE,
            XdpMode::Offloaded => XDP_FLAGS_HW_MODE,
        }
    }
}

/// A netlink route socket of the calling thread's network namespace.
fn route_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new socket that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Appends netlink attribute `kind` with `payload` (padded to 4 bytes).
pub(super) fn push_attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

/// The start of an rtnetlink request of `body_len` bytes after the header (its fixed
/// message and attributes): the header, and room for the rest. Also checks that `ifindex`
/// fits the message's signed field, and returns it so.
pub(super) fn request_header(
    msg_type: u16,
    flags: u16,
    ifindex: u32,
    body_len: usize,
) -> io::Result<(Vec<u8>, i32)> {
    let index = i32::try_from(ifindex)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "ifindex out of range"))?;
    let total = NLMSG_HDR_LEN + body_len;
    let mut m = Vec::with_capacity(total);
    m.extend_from_slice(&(total as u32).to_ne_bytes());
    m.extend_from_slice(&msg_type.to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
    m.extend_from_slice(&1u32.to_ne_bytes()); // seq
    m.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel
    Ok((m, index))
}

/// An rtnetlink request: header, `ifinfomsg` for `ifindex`, then `attrs` (already encoded).
fn link_request(msg_type: u16, flags: u16, ifindex: u32, attrs: &[u8]) -> io::Result<Vec<u8>> {
    let (mut m, index) = request_header(msg_type, flags, ifindex, IFINFOMSG_LEN + attrs.len())?;
    // ifinfomsg: family AF_UNSPEC, pad, type, index, flags, change.
    m.extend_from_slice(&[0, 0, 0, 0]);
    m.extend_from_slice(&index.to_ne_bytes());
    m.extend_from_slice(&[0u8; 8]);
    m.extend_from_slice(attrs);
    Ok(m)
}

/// A new route socket with `req` sent to the kernel on it.
fn send_request(req: &[u8]) -> io::Result<OwnedFd> {
    let sock = route_socket()?;
    // SAFETY: sockaddr_nl is a plain C struct; all-zero (pid 0 = the kernel) is valid.
    let mut sa: libc::sockaddr_nl = unsafe { mem::zeroed() };
    sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: `req` and `sa` are live for the call and their exact sizes are passed.
    let r = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            req.as_ptr().cast(),
            req.len(),
            0,
            (&sa as *const libc::sockaddr_nl).cast(),
            mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sock)
}

/// Sends `req` and returns the first answer (a whole netlink message).
pub(super) fn transact(req: &[u8]) -> io::Result<Vec<u8>> {
    let sock = send_request(req)?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: `buf` is live and writable for its whole length during the call.
        let n = unsafe {
            libc::recv(
                sock.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_TRUNC,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let n = n as usize;
        if n > buf.len() {
            return Err(io::Error::other("rtnetlink answer larger than 64 KiB"));
        }
        if n < NLMSG_HDR_LEN {
            return Err(io::Error::other("short rtnetlink answer"));
        }
        let len = (u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize).min(n);
        buf.truncate(len);
        return Ok(buf);
    }
}

/// Sends a dump request and returns every answer message up to `NLMSG_DONE` (an error
/// answer is the error).
pub(super) fn transact_dump(req: &[u8]) -> io::Result<Vec<Vec<u8>>> {
    let sock = send_request(req)?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: `buf` is live and writable for its whole length during the call.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let mut b = &buf[..n as usize];
        if b.is_empty() {
            return Err(io::Error::other("rtnetlink dump ended without NLMSG_DONE"));
        }
        while b.len() >= NLMSG_HDR_LEN {
            let len = u32_at(b, 0).unwrap_or(0) as usize;
            if len < NLMSG_HDR_LEN || len > b.len() {
                return Err(io::Error::other("malformed rtnetlink answer"));
            }
            let msg = &b[..len];
            match u16_at(msg, 4) {
                Some(NLMSG_DONE) => return Ok(out),
                Some(NLMSG_ERROR) => {
                    nl_error(msg).unwrap_or(Ok(()))?;
                    return Ok(out);
                }
                _ => out.push(msg.to_vec()),
            }
            b = b.get((len + 3) & !3..).unwrap_or(&[]);
        }
    }
}

/// The `u16` at byte `at` of `b` (native order).
pub(super) fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

/// The `u32` at byte `at` of `b` (native order).
pub(super) fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The error of an `NLMSG_ERROR` answer (`None` for an ACK or another message type).
pub(super) fn nl_error(msg: &[u8]) -> Option<io::Result<()>> {
    if u16_at(msg, 4)? != NLMSG_ERROR {
        return None;
    }
    let err = i32::from_ne_bytes(msg.get(16..20)?.try_into().ok()?);
    Some(if err == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(-err))
    })
}

/// Iterates over the netlink attributes in `b`: (type without flags, payload).
pub(super) fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = usize::from(u16_at(b, 0)?);
        let kind = u16_at(b, 2)? & NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            return None;
        }
        let payload = &b[4..len];
        let next = (len + 3) & !3;
        b = b.get(next..).unwrap_or(&[]);
        Some((kind, payload))
    })
}

/// The XDP programs attached to `ifindex` (in the calling thread's namespace), by mode:
/// parsed from `IFLA_XDP` of `RTM_GETLINK`.
pub fn xdp_programs(ifindex: u32) -> io::Result<Vec<(XdpMode, u32)>> {
    let req = link_request(RTM_GETLINK, 0, ifindex, &[])?;
    let msg = transact(&req)?;
    if let Some(r) = nl_error(&msg) {
        r?;
        return Err(io::Error::other(
            "rtnetlink acknowledged RTM_GETLINK without an answer",
        ));
    }
    if u16_at(&msg, 4) != Some(RTM_NEWLINK) {
        return Err(io::Error::other(
            "unexpected rtnetlink answer to RTM_GETLINK",
        ));
    }
    Ok(parse_xdp_programs(
        msg.get(NLMSG_HDR_LEN + IFINFOMSG_LEN..).unwrap_or(&[]),
    ))
}

/// The per-mode program ids in the attributes of an `RTM_NEWLINK` message.
fn parse_xdp_programs(link_attrs: &[u8]) -> Vec<(XdpMode, u32)> {
    let mut out = Vec::new();
    for (kind, payload) in attrs(link_attrs) {
        if kind != IFLA_XDP {
            continue;
        }
        for (k, p) in attrs(payload) {
            let mode = match k {
                IFLA_XDP_SKB_PROG_ID => XdpMode::Generic,
                IFLA_XDP_DRV_PROG_ID => XdpMode::Native,
                IFLA_XDP_HW_PROG_ID => XdpMode::Offloaded,
                _ => continue,
            };
            if let Some(id) = u32_at(p, 0).filter(|&id| id != 0) {
                out.push((mode, id));
            }
        }
    }
    out
}

/// Sets the XDP program of `ifindex` through rtnetlink (no link): `prog` `None` detaches.
/// With `expected`, the change applies only if that program is the one attached
/// (`XDP_FLAGS_REPLACE`; `EEXIST` otherwise). A program attached through a BPF link cannot
/// be changed this way (`EBUSY`).
pub fn netlink_set_xdp(
    ifindex: u32,
    prog: Option<&OwnedFd>,
    mode: XdpMode,
    expected: Option<&OwnedFd>,
) -> io::Result<()> {
    let fd: i32 = prog.map_or(-1, |p| p.as_raw_fd());
    let mut flags = mode.flag();
    let mut nested = Vec::new();
    push_attr(&mut nested, IFLA_XDP_FD, &fd.to_ne_bytes());
    if let Some(e) = expected {
        flags |= XDP_FLAGS_REPLACE;
        push_attr(
            &mut nested,
            IFLA_XDP_EXPECTED_FD,
            &e.as_raw_fd().to_ne_bytes(),
        );
    }
    push_attr(&mut nested, IFLA_XDP_FLAGS, &flags.to_ne_bytes());
    let mut a = Vec::new();
    push_attr(&mut a, IFLA_XDP | NLA_F_NESTED, &nested);
    let req = link_request(RTM_SETLINK, NLM_F_ACK, ifindex, &a)?;
    let msg = transact(&req)?;
    nl_error(&msg).unwrap_or_else(|| Err(io::Error::other("no acknowledgement of RTM_SETLINK")))
}

/// The XDP program attached to `ifindex` (any mode; the first if several), with its name:
/// `Ok(None)` if there is none. For tests and diagnostics ("no program after srmigd died").
pub fn attached_xdp_prog(ifindex: u32) -> io::Result<Option<(u32, String)>> {
    let Some(&(_, id)) = xdp_programs(ifindex)?.first() else {
        return Ok(None);
    };
    let name = match prog_fd_by_id(id) {
        Ok(fd) => prog_name(&fd)?,
        // Detached and freed between the two calls.
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(Some((id, name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_encoding() {
        let p = xsk_program(7);
        let bytes: Vec<[u8; 8]> = p.iter().map(|i| i.to_bytes()).collect();
        // r2 = *(u32 *)(r1 + 16)
        assert_eq!(bytes[0], [0x61, 0x12, 16, 0, 0, 0, 0, 0]);
        // r1 = map fd 7 (ld_imm64, src_reg 1), second half zero
        assert_eq!(bytes[1], [0x18, 0x11, 0, 0, 7, 0, 0, 0]);
        assert_eq!(bytes[2], [0; 8]);
        // r3 = 2
        assert_eq!(bytes[3], [0xb7, 0x03, 0, 0, 2, 0, 0, 0]);
        // call 51
        assert_eq!(bytes[4], [0x85, 0x00, 0, 0, 51, 0, 0, 0]);
        // exit
        assert_eq!(bytes[5], [0x95, 0, 0, 0, 0, 0, 0, 0]);
        // The in-memory layout is the byte encoding.
        assert_eq!(mem::size_of::<Insn>(), 8);
    }

    #[test]
    fn attr_layouts_match_the_uapi() {
        assert_eq!(mem::offset_of!(MapCreateAttr, map_name), 28);
        assert_eq!(mem::offset_of!(MapElemAttr, key), 8);
        assert_eq!(mem::offset_of!(MapElemAttr, flags), 24);
        assert_eq!(mem::offset_of!(ProgLoadAttr, log_buf), 32);
        assert_eq!(mem::offset_of!(ProgLoadAttr, prog_name), 48);
        assert_eq!(mem::offset_of!(ProgLoadAttr, expected_attach_type), 68);
        assert_eq!(mem::offset_of!(LinkCreateAttr, flags), 12);
        assert_eq!(mem::offset_of!(TestRunAttr, data_in), 16);
        assert_eq!(mem::offset_of!(TestRunAttr, repeat), 32);
        assert_eq!(mem::offset_of!(InfoAttr, info), 8);
        assert_eq!(mem::offset_of!(ProgInfo, name), 64);
    }

    #[test]
    fn names_are_cut_to_fifteen_bytes() {
        assert_eq!(&name_bytes(PROG_NAME)[..10], b"srmig_xsk\0");
        let long = name_bytes("a_very_long_program_name");
        assert_eq!(long[15], 0);
        assert_eq!(&long[..15], b"a_very_long_pro");
    }

    #[test]
    fn parses_xdp_attributes() {
        let mut nested = Vec::new();
        push_attr(&mut nested, 2, &[2]); // IFLA_XDP_ATTACHED = SKB
        push_attr(&mut nested, IFLA_XDP_SKB_PROG_ID, &42u32.to_ne_bytes());
        push_attr(&mut nested, 4, &42u32.to_ne_bytes()); // IFLA_XDP_PROG_ID
        let mut a = Vec::new();
        push_attr(&mut a, 3, b"eth0\0"); // IFLA_IFNAME, odd length: padded
        push_attr(&mut a, IFLA_XDP | NLA_F_NESTED, &nested);
        assert_eq!(parse_xdp_programs(&a), vec![(XdpMode::Generic, 42)]);
        assert_eq!(parse_xdp_programs(&a[..a.len() - 3]), vec![]);
        assert_eq!(parse_xdp_programs(&[]), vec![]);
    }

    #[test]
    fn request_layout() {
        let r = link_request(RTM_GETLINK, 0, 5, &[]).expect("request");
        assert_eq!(r.len(), 32);
        assert_eq!(u32_at(&r, 0), Some(32));
        assert_eq!(u16_at(&r, 4), Some(RTM_GETLINK));
        assert_eq!(u32_at(&r, 20), Some(5));
    }
}
