//! A VM port's TC program on a kernel without tcx links (Linux before 6.6, e.g. Debian
//! bookworm's 6.1): a `cls_bpf` filter in direct-action mode on the interface's `clsact`
//! qdisc, at ingress, through rtnetlink.
//!
//! ```text
//!  srmigd                                 kernel (the VM port's interface)
//!  attach ── RTM_NEWQDISC clsact ───────► clsact qdisc (kept if already there)
//!         ── RTM_NEWTFILTER bpf da ─────► ingress filter: prio PRIO, handle H (one per
//!                                         attachment), program "srmig_vm"
//!  drop   ── RTM_DELTFILTER prio, H ────► gone (the qdisc stays: others may use it)
//!  start  ── RTM_GETTFILTER dump ───────► every "srmig_vm" filter at PRIO: a previous
//!         ── RTM_DELTFILTER ────────────►   srmigd's, left by a crash: removed
//! ```
//!
//! The program is the same as with tcx: its `TCX_NEXT` (-1) is `TC_ACT_UNSPEC` to `cls_bpf`,
//! which goes on with the next filter and then the kernel's receive path (srmigd's
//! `ETH_P_IPV6` socket), and `bpf_redirect` works the same. What differs is the lifetime. A
//! tcx link goes with the last fd of it, so nothing outlives srmigd; a filter stays until it
//! is deleted. srmigd deletes its own when the port is detached and at exit ([`Drop`]), and at
//! start removes those a killed srmigd left ([`remove_stale`]). A filter also goes with its
//! interface when the interface moves to another namespace (the kernel destroys the qdisc),
//! so a migrating VM does not take it along, unlike a tcx program.
//!
//! Each attachment gets its own handle: the filter of a port's previous attachment may still
//! be deleted on srmigd's closing thread when the next one is made.
//!
//! Written over the rtnetlink plumbing of [`super::bpf`] (no netlink crate in the tree; the
//! five messages here are fixed-layout): `struct tcmsg`, `TCA_KIND`, `TCA_OPTIONS` with
//! `TCA_BPF_FD`, `TCA_BPF_NAME`, `TCA_BPF_FLAGS` (`linux/rtnetlink.h`, `linux/pkt_cls.h`).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};

use super::bpf::{
    attrs, nl_error, push_attr, request_header, transact, transact_dump, u16_at, u32_at,
    NLA_F_NESTED, NLMSG_HDR_LEN, NLM_F_ACK,
};

/// The priority of srmigd's ingress filters (`tc filter show dev IF ingress` shows
/// `pref 21330`, "SR" in ASCII).
pub const PRIO: u16 = 0x5352;
/// The name srmigd gives its filter's program ([`super::fastpath::VM_PROG_NAME`]): what
/// [`remove_stale`] looks for.
pub const FILTER_NAME: &str = super::fastpath::VM_PROG_NAME;

const RTM_NEWQDISC: u16 = 36;
const RTM_NEWTFILTER: u16 = 44;
const RTM_DELTFILTER: u16 = 45;
const RTM_GETTFILTER: u16 = 46;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
/// `sizeof(struct tcmsg)`.
const TCMSG_LEN: usize = 20;
const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const TCA_BPF_FD: u16 = 6;
const TCA_BPF_NAME: u16 = 7;
const TCA_BPF_FLAGS: u16 = 8;
const TCA_BPF_FLAG_ACT_DIRECT: u32 = 1;
/// `TC_H_CLSACT` (= `TC_H_INGRESS`): the clsact qdisc's parent.
const TC_H_CLSACT: u32 = 0xffff_fff1;
/// `TC_H_MAKE(TC_H_CLSACT, 0)`: the clsact qdisc's handle.
const CLSACT_HANDLE: u32 = 0xffff_0000;
/// `TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS)`: the parent of an ingress filter.
const INGRESS_PARENT: u32 = 0xffff_fff2;
/// `ETH_P_ALL`, the filter's protocol.
const ETH_P_ALL: u16 = 0x0003;

/// Handles of this process's filters (each attachment its own).
static NEXT_HANDLE: AtomicU32 = AtomicU32::new(1);

/// srmigd's filter on an interface's ingress; deleted when dropped.
#[derive(Debug)]
pub struct ClsactFilter {
    ifindex: u32,
    handle: u32,
}

impl ClsactFilter {
    /// The filter's handle.
    pub fn handle(&self) -> u32 {
        self.handle
    }
}

impl Drop for ClsactFilter {
    fn drop(&mut self) {
        if let Err(e) = delete(self.ifindex, PRIO, self.handle) {
            tracing::warn!(ifindex = self.ifindex, handle = self.handle, error = %e, "cannot remove srmigd's clsact filter from the VM port");
        }
    }
}

/// `tcm_info` of a filter: priority and protocol (network order).
fn info(prio: u16) -> u32 {
    (u32::from(prio) << 16) | u32::from(ETH_P_ALL.to_be())
}

/// An rtnetlink TC request: header, `tcmsg`, then `attrs` (already encoded).
fn tc_request(
    msg_type: u16,
    flags: u16,
    ifindex: u32,
    (handle, parent, info): (u32, u32, u32),
    attrs: &[u8],
) -> io::Result<Vec<u8>> {
    let (mut m, index) = request_header(msg_type, flags, ifindex, TCMSG_LEN + attrs.len())?;
    m.extend_from_slice(&[0, 0, 0, 0]); // tcm_family AF_UNSPEC, padding
    m.extend_from_slice(&index.to_ne_bytes());
    m.extend_from_slice(&handle.to_ne_bytes());
    m.extend_from_slice(&parent.to_ne_bytes());
    m.extend_from_slice(&info.to_ne_bytes());
    m.extend_from_slice(attrs);
    Ok(m)
}

/// Sends `req`, which asks for an acknowledgement, and returns its outcome.
fn acked(req: &[u8], what: &str) -> io::Result<()> {
    let msg = transact(req)?;
    nl_error(&msg).unwrap_or_else(|| Err(io::Error::other(format!("no acknowledgement of {what}"))))
}

/// Adds a `clsact` qdisc to `ifindex` unless it has one.
fn ensure_clsact(ifindex: u32) -> io::Result<()> {
    let mut a = Vec::new();
    push_attr(&mut a, TCA_KIND, b"clsact\0");
    let req = tc_request(
        RTM_NEWQDISC,
        NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        ifindex,
        (CLSACT_HANDLE, TC_H_CLSACT, 0),
        &a,
    )?;
    match acked(&req, "RTM_NEWQDISC") {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        r => r.map_err(|e| io::Error::new(e.kind(), format!("adding a clsact qdisc: {e}"))),
    }
}

/// The request that attaches `prog_fd` as filter `handle` (for tests: the bytes).
fn new_filter_request(ifindex: u32, prog_fd: i32, handle: u32) -> io::Result<Vec<u8>> {
    let mut opts = Vec::new();
    push_attr(&mut opts, TCA_BPF_FD, &prog_fd.to_ne_bytes());
    let mut name = FILTER_NAME.as_bytes().to_vec();
    name.push(0);
    push_attr(&mut opts, TCA_BPF_NAME, &name);
    push_attr(
        &mut opts,
        TCA_BPF_FLAGS,
        &TCA_BPF_FLAG_ACT_DIRECT.to_ne_bytes(),
    );
    let mut a = Vec::new();
    push_attr(&mut a, TCA_KIND, b"bpf\0");
    push_attr(&mut a, TCA_OPTIONS | NLA_F_NESTED, &opts);
    tc_request(
        RTM_NEWTFILTER,
        NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        ifindex,
        (handle, INGRESS_PARENT, info(PRIO)),
        &a,
    )
}

/// Attaches TC program `prog` at the ingress of `ifindex` as a direct-action `cls_bpf`
/// filter on its `clsact` qdisc (added if missing). The filter stays until the returned value
/// is dropped (or, after a crash, [`remove_stale`] runs).
pub fn attach(prog: &OwnedFd, ifindex: u32) -> io::Result<ClsactFilter> {
    ensure_clsact(ifindex)?;
    let handle = NEXT_HANDLE.fetch_add(1, Ordering::Relaxed);
    let req = new_filter_request(ifindex, prog.as_raw_fd(), handle)?;
    acked(&req, "RTM_NEWTFILTER")
        .map_err(|e| io::Error::new(e.kind(), format!("adding the clsact ingress filter: {e}")))?;
    Ok(ClsactFilter { ifindex, handle })
}

/// Deletes ingress filter (`prio`, `handle`) of `ifindex`; an interface or filter that is
/// gone is no error (a VM's interface that moved away took its qdisc along).
fn delete(ifindex: u32, prio: u16, handle: u32) -> io::Result<()> {
    let mut a = Vec::new();
    push_attr(&mut a, TCA_KIND, b"bpf\0");
    let req = tc_request(
        RTM_DELTFILTER,
        NLM_F_ACK,
        ifindex,
        (handle, INGRESS_PARENT, info(prio)),
        &a,
    )?;
    match acked(&req, "RTM_DELTFILTER") {
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENODEV | libc::ENOENT | libc::EINVAL)
            ) =>
        {
            Ok(())
        }
        r => r,
    }
}

/// An ingress filter as a dump shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// Its priority.
    pub prio: u16,
    /// Its handle.
    pub handle: u32,
    /// Its classifier (`bpf`, `u32`, ...).
    pub kind: String,
    /// A `bpf` filter's program name.
    pub name: Option<String>,
}

/// The filters of one `RTM_NEWTFILTER` answer (`None` for the chain headers a dump also
/// sends, which have no handle).
fn parse_filter(msg: &[u8]) -> Option<Filter> {
    let handle = u32_at(msg, NLMSG_HDR_LEN + 8)?;
    let info = u32_at(msg, NLMSG_HDR_LEN + 16)?;
    if handle == 0 {
        return None;
    }
    let cstr = |b: &[u8]| {
        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        String::from_utf8_lossy(&b[..end]).into_owned()
    };
    let mut kind = String::new();
    let mut name = None;
    for (t, payload) in attrs(msg.get(NLMSG_HDR_LEN + TCMSG_LEN..)?) {
        match t {
            TCA_KIND => kind = cstr(payload),
            TCA_OPTIONS => {
                for (o, p) in attrs(payload) {
                    if o == TCA_BPF_NAME {
                        name = Some(cstr(p));
                    }
                }
            }
            _ => {}
        }
    }
    Some(Filter {
        prio: (info >> 16) as u16,
        handle,
        kind,
        name,
    })
}

/// The ingress filters of `ifindex` (none without a `clsact` or `ingress` qdisc).
pub fn ingress_filters(ifindex: u32) -> io::Result<Vec<Filter>> {
    let req = tc_request(
        RTM_GETTFILTER,
        NLM_F_DUMP,
        ifindex,
        (0, INGRESS_PARENT, 0),
        &[],
    )?;
    let msgs = match transact_dump(&req) {
        // No qdisc, or no such interface: no filter.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EINVAL | libc::ENOENT | libc::ENODEV)
            ) =>
        {
            return Ok(Vec::new())
        }
        r => r?,
    };
    Ok(msgs
        .iter()
        .filter(|m| u16_at(m, 4) == Some(RTM_NEWTFILTER))
        .filter_map(|m| parse_filter(m))
        .collect())
}

/// Removes every filter of srmigd's ([`PRIO`], program [`FILTER_NAME`]) from the ingress of
/// `ifindex`: run at start, when none can be this process's own, it removes what a killed
/// srmigd left. Returns how many it removed.
pub fn remove_stale(ifindex: u32) -> io::Result<usize> {
    let mut n = 0;
    for f in ingress_filters(ifindex)? {
        if f.prio == PRIO && f.kind == "bpf" && f.name.as_deref().is_some_and(is_ours) {
            delete(ifindex, f.prio, f.handle)?;
            n += 1;
        }
    }
    Ok(n)
}

/// Whether a `bpf` filter's name is srmigd's: the kernel shows the name given at attach
/// (`srmig_vm`), or, from some tools, the program's name with its tag.
fn is_ours(name: &str) -> bool {
    name == FILTER_NAME || name.starts_with(&format!("{FILTER_NAME}:"))
}

#[cfg(test)]
mod tests {
    use super::super::bpf::NLM_F_REQUEST;
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// A kernel answer of any shape is parsed without a panic, and a filter built by
        /// `tc_request` with any handle, priority and name comes back as it went in.
        #[test]
        fn dump_answers_parse_without_panic(
            junk in proptest::collection::vec(any::<u8>(), 0..200),
            handle in 1u32..,
            prio in any::<u16>(),
            name in "[a-z_]{1,15}",
        ) {
            let _ = parse_filter(&junk);
            let mut opts = Vec::new();
            let mut n = name.as_bytes().to_vec();
            n.push(0);
            push_attr(&mut opts, TCA_BPF_NAME, &n);
            let mut a = Vec::new();
            push_attr(&mut a, TCA_KIND, b"bpf\0");
            push_attr(&mut a, TCA_OPTIONS | NLA_F_NESTED, &opts);
            let m = tc_request(RTM_NEWTFILTER, 0, 3, (handle, INGRESS_PARENT, info(prio)), &a)
                .expect("message");
            prop_assert_eq!(
                parse_filter(&m),
                Some(Filter { prio, handle, kind: "bpf".into(), name: Some(name) })
            );
            // Cut anywhere: no panic.
            for cut in [0, 4, 16, 20, 24, m.len() / 2, m.len() - 1] {
                let _ = parse_filter(&m[..cut.min(m.len())]);
            }
        }
    }

    #[test]
    fn a_filter_request_has_the_layout_of_tcmsg_and_its_options() {
        let r = new_filter_request(7, 42, 3).expect("request");
        assert_eq!(u32_at(&r, 0), Some(r.len() as u32), "nlmsg_len");
        assert_eq!(u16_at(&r, 4), Some(RTM_NEWTFILTER));
        assert_eq!(
            u16_at(&r, 6),
            Some(NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)
        );
        let t = NLMSG_HDR_LEN;
        assert_eq!(u32_at(&r, t + 4), Some(7), "tcm_ifindex");
        assert_eq!(u32_at(&r, t + 8), Some(3), "tcm_handle");
        assert_eq!(u32_at(&r, t + 12), Some(0xffff_fff2), "ingress of clsact");
        // TC_H_MAKE(prio << 16, htons(ETH_P_ALL)): the low half is the protocol's bytes.
        let info = u32_at(&r, t + 16).expect("tcm_info");
        assert_eq!(info >> 16, u32::from(PRIO));
        assert_eq!(((info & 0xffff) as u16).to_ne_bytes(), [0x00, 0x03]);
        let a: Vec<(u16, Vec<u8>)> = attrs(&r[t + TCMSG_LEN..])
            .map(|(k, p)| (k, p.to_vec()))
            .collect();
        assert_eq!(a[0], (TCA_KIND, b"bpf\0".to_vec()));
        assert_eq!(a[1].0, TCA_OPTIONS);
        let o: Vec<(u16, Vec<u8>)> = attrs(&a[1].1).map(|(k, p)| (k, p.to_vec())).collect();
        assert_eq!(o[0], (TCA_BPF_FD, 42i32.to_ne_bytes().to_vec()));
        assert_eq!(o[1], (TCA_BPF_NAME, b"srmig_vm\0".to_vec()));
        assert_eq!(o[2], (TCA_BPF_FLAGS, 1u32.to_ne_bytes().to_vec()));
    }

    #[test]
    fn a_dumped_filter_is_parsed_and_the_chain_header_skipped() {
        let mut opts = Vec::new();
        push_attr(&mut opts, TCA_BPF_NAME, b"srmig_vm\0");
        let mut a = Vec::new();
        push_attr(&mut a, TCA_KIND, b"bpf\0");
        push_attr(&mut a, TCA_OPTIONS | NLA_F_NESTED, &opts);
        let m =
            tc_request(RTM_NEWTFILTER, 0, 3, (9, INGRESS_PARENT, info(PRIO)), &a).expect("message");
        assert_eq!(
            parse_filter(&m),
            Some(Filter {
                prio: PRIO,
                handle: 9,
                kind: "bpf".into(),
                name: Some("srmig_vm".into()),
            })
        );
        let header =
            tc_request(RTM_NEWTFILTER, 0, 3, (0, INGRESS_PARENT, info(PRIO)), &a).expect("message");
        assert_eq!(parse_filter(&header), None);
        assert!(is_ours("srmig_vm"));
        assert!(is_ours("srmig_vm:[42]"));
        assert!(!is_ours("srmig_vmx"));
        assert!(!is_ours("other"));
    }
}
