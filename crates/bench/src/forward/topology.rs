//! `gen -> dut -> sink`: three namespaces joined by two veth pairs, the addresses of
//! `linux_forward.sh`, the CPU split, the Linux DUT's configuration and the veth counters.
//!
//! ```text
//!   gen --(veth g0 | d0)--> dut --(veth d1 | s0)--> sink
//! ```
//!
//! The namespaces belong to a [`Lab`] guard (`srmig-sbf<pid><n>-gen`, `-dut`, `-sink`), so
//! they, and srmigd started through it, are removed when the guard drops, on a panic, and on
//! SIGINT/SIGTERM/SIGHUP.
//!
//! `g0` and `s0` have IPv6 disabled: gen only transmits raw frames, and the sink's `ipv6_rcv`
//! drops what arrives at once (after the veth counted it). The dut starts *bare* (IPv6
//! disabled on d0 and d1, no forwarding): that is what srmigd runs on, since it owns d0 and
//! d1 through AF_PACKET. [`Topology::configure_linux`] then turns the kernel into the DUT.

use std::net::Ipv6Addr;

use srmig_lab::{Lab, LabOptions, LinkEnd, MacAddr, Netns, RunId};

use super::ForwardError;

pub(crate) const MAC_G0: [u8; 6] = [2, 0, 0, 0, 0, 1];
pub(crate) const MAC_D0: [u8; 6] = [2, 0, 0, 0, 1, 0];
pub(crate) const MAC_D1: [u8; 6] = [2, 0, 0, 0, 1, 1];
pub(crate) const MAC_S0: [u8; 6] = [2, 0, 0, 0, 2, 0];
/// Nobody's address: frames to it are dropped on the DUT's ingress.
pub(crate) const MAC_FOREIGN: [u8; 6] = [2, 0, 0, 0, 0x99, 0x99];

const fn v6(s: [u16; 8]) -> Ipv6Addr {
    Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7])
}
pub(crate) const ADDR_GEN: Ipv6Addr = v6([0x2001, 0xdb8, 1, 0, 0, 0, 0, 2]);
pub(crate) const ADDR_D0: &str = "2001:db8:1::1";
pub(crate) const ADDR_D1: &str = "2001:db8:2::1";
/// The sink's (nominal) address, the nexthop on d1.
pub(crate) const NH6: &str = "2001:db8:2::2";
/// The DUT's End SID.
pub(crate) const SID_END: Ipv6Addr = v6([0xfc00, 1, 0, 0, 0, 0, 0, 0xe]);
/// The DUT's End.DX6 SID.
pub(crate) const SID_DX6: Ipv6Addr = v6([0xfc00, 1, 0, 0, 0, 0, 0, 0xd6]);
/// The next segment after End, behind the sink.
pub(crate) const SINK_SEG: Ipv6Addr = v6([0xfc00, 2, 0, 0, 0, 0, 0, 1]);
pub(crate) const SINK_PFX: &str = "fc00:2::/32";
/// Plain IPv6 destination, routed out d1.
pub(crate) const PLAIN_DST: Ipv6Addr = v6([0x2001, 0xdb8, 0x99, 0, 0, 0, 0, 1]);
pub(crate) const PLAIN_PFX: &str = "2001:db8:99::/48";
/// Destination steered into H.Encaps.
pub(crate) const ENCAP_DST: Ipv6Addr = v6([0x2001, 0xdb8, 0x77, 0, 0, 0, 0, 1]);
pub(crate) const ENCAP_PFX: &str = "2001:db8:77::/48";

/// Where the generator and the DUT run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct CpuLayout {
    /// The generator thread's CPU.
    pub generator: usize,
    /// The DUT's CPU: srmigd is pinned there, and `rps_cpus` of d0 sends the kernel's receive
    /// processing of everything the generator sends there too.
    pub dut: usize,
    /// `rps`: d0's receive softirq runs on the DUT CPU (see the module doc of `forward`).
    pub split: &'static str,
    /// CPUs online.
    pub nproc: usize,
}

/// The veth counters one trial reads before and after.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Counters {
    /// g0 tx_packets: frames the veth handed to d0's receive path.
    pub g0_tx: u64,
    /// g0 tx_dropped: frames the DUT CPU's backlog refused.
    pub g0_tx_dropped: u64,
    /// s0 rx_packets: what the DUT put on the wire to the sink.
    pub s0_rx: u64,
    /// d1 tx_dropped: what the DUT could not send to the sink.
    pub d1_tx_dropped: u64,
}

impl Counters {
    /// What reached the DUT's d0 (received or refused by its backlog).
    pub(crate) fn offered(&self) -> u64 {
        self.g0_tx + self.g0_tx_dropped
    }

    pub(crate) fn since(&self, before: &Counters) -> Counters {
        Counters {
            g0_tx: self.g0_tx.saturating_sub(before.g0_tx),
            g0_tx_dropped: self.g0_tx_dropped.saturating_sub(before.g0_tx_dropped),
            s0_rx: self.s0_rx.saturating_sub(before.s0_rx),
            d1_tx_dropped: self.d1_tx_dropped.saturating_sub(before.d1_tx_dropped),
        }
    }
}

/// The three namespaces and their links.
#[derive(Debug)]
pub(crate) struct Topology {
    pub lab: Lab,
    pub gen: Netns,
    pub dut: Netns,
    pub sink: Netns,
    pub cpus: CpuLayout,
}

impl Topology {
    /// Builds the bare topology with every link's MTU at `mtu`.
    pub(crate) fn build(mtu: usize, cpus: CpuLayout) -> Result<Topology, ForwardError> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static RUNS: AtomicU32 = AtomicU32::new(0);
        let n = RUNS.fetch_add(1, Ordering::Relaxed);
        let run_id = RunId::new(&format!("sbf{:x}{n}", std::process::id()))?;
        let lab = Lab::with_options(LabOptions {
            run_id: Some(run_id),
            ..LabOptions::default()
        })?;
        let gen = lab.add_netns("gen")?;
        let dut = lab.add_netns("dut")?;
        let sink = lab.add_netns("sink")?;
        let a = lab.add_veth(&gen, "g0", &dut, "d0")?;
        let b = lab.add_veth(&dut, "d1", &sink, "s0")?;
        let mtu = mtu.to_string();
        for (end, mac) in [
            (&a.a, MAC_G0),
            (&a.b, MAC_D0),
            (&b.a, MAC_D1),
            (&b.b, MAC_S0),
        ] {
            lab.set_mac(end, MacAddr(mac))?;
            end.netns
                .ip(&["link", "set", "dev", &end.ifname, "mtu", &mtu])?;
            disable_ipv6(end)?;
        }
        for end in [&a.a, &a.b, &b.a, &b.b] {
            lab.set_up(end)?;
        }
        for end in [&a.a, &a.b, &b.a, &b.b] {
            lab.wait_up(end, std::time::Duration::from_secs(5))?;
        }
        // GRO on s0 gives the sink's veth a NAPI instance, which XDP frames redirected to
        // d1 need (a veth drops them otherwise): srmigd's fast path sends them that way. The
        // Linux DUT's frames then take the same NAPI, on the same CPU (the DUT's, which
        // transmits on d1): both DUTs see the same sink.
        sink.exec("ethtool", &["-K", "s0", "gro", "on"])?;
        // The DUT's receive softirq on the DUT CPU (a veth runs the receiver's netif_rx on the
        // sender's CPU otherwise). `ip netns exec` mounts the namespace's own sysfs.
        let mask = format!("{:x}", 1u64 << cpus.dut);
        dut.exec(
            "sh",
            &[
                "-c",
                &format!("printf {mask} > /sys/class/net/d0/queues/rx-0/rps_cpus"),
            ],
        )?;
        Ok(Topology {
            lab,
            gen,
            dut,
            sink,
            cpus,
        })
    }

    /// With srmigd's AF_XDP socket on d0 the veth no longer hands frames to `netif_rx` (where
    /// `rps_cpus` steers them): it queues them for d0's NAPI, which the sending CPU runs, so
    /// the kernel's receive work for srmigd (the XDP program, the copy into the socket's
    /// memory) would be charged to the generator. d0's NAPI becomes a kernel thread
    /// (`/sys/class/net/d0/threaded`) pinned to the DUT CPU: the same split as RPS gives the
    /// kernel. Returns how many threads were pinned (0: none appeared within a second).
    pub(crate) fn steer_napi_to_dut(&self) -> Result<usize, ForwardError> {
        // Off first: a thread left from the previous case's srmigd (the setting outlives
        // it) would not be told apart from another namespace's d0.
        self.dut
            .exec("sh", &["-c", "echo 0 > /sys/class/net/d0/threaded"])?;
        let before = napi_threads("d0");
        self.dut
            .exec("sh", &["-c", "echo 1 > /sys/class/net/d0/threaded"])?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        loop {
            let new: Vec<u32> = napi_threads("d0")
                .into_iter()
                .filter(|p| !before.contains(p))
                .collect();
            if !new.is_empty() {
                for &pid in &new {
                    pin(pid, self.cpus.dut).map_err(|e| {
                        ForwardError::Options(format!(
                            "pinning d0's NAPI thread {pid} to CPU {}: {e}",
                            self.cpus.dut
                        ))
                    })?;
                }
                return Ok(new.len());
            }
            if std::time::Instant::now() > deadline {
                return Ok(0);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// The kernel becomes the DUT: forwarding, and with `srv6` (some case needs it) seg6 and
    /// seg6local as `linux_forward.sh` sets them. Plain IPv6 forwarding needs no SRv6 route,
    /// so it also runs on a kernel built without SRv6 lightweight tunnels.
    pub(crate) fn configure_linux(&self, srv6: bool) -> Result<(), ForwardError> {
        let dut = &self.dut;
        for d in ["d0", "d1"] {
            dut.set_sysctl(&format!("net/ipv6/conf/{d}/disable_ipv6"), "0")?;
        }
        dut.set_sysctl("net/ipv6/conf/all/forwarding", "1")?;
        dut.set_sysctl("net/ipv6/conf/all/seg6_enabled", "1")?;
        dut.set_sysctl("net/ipv6/conf/default/seg6_enabled", "1")?;
        for d in ["d0", "d1"] {
            dut.set_sysctl(&format!("net/ipv6/conf/{d}/seg6_enabled"), "1")?;
            dut.set_sysctl(&format!("net/ipv6/conf/{d}/accept_ra"), "0")?;
        }
        let (sid_end, sid_dx6, sink_seg) = (
            format!("{SID_END}/128"),
            format!("{SID_DX6}/128"),
            SINK_SEG.to_string(),
        );
        let d0_addr = format!("{ADDR_D0}/64");
        let d1_addr = format!("{ADDR_D1}/64");
        let s0_mac = MacAddr(MAC_S0).to_string();
        let commands: [&[&str]; 9] = [
            // Plain forwarding: the first five.
            &["-6", "addr", "add", &d0_addr, "dev", "d0", "nodad"],
            &["-6", "addr", "add", &d1_addr, "dev", "d1", "nodad"],
            &[
                "-6",
                "neigh",
                "replace",
                NH6,
                "lladdr",
                &s0_mac,
                "dev",
                "d1",
                "nud",
                "permanent",
            ],
            &["-6", "route", "add", PLAIN_PFX, "via", NH6, "dev", "d1"],
            &["-6", "route", "add", SINK_PFX, "via", NH6, "dev", "d1"],
            &["sr", "tunsrc", "set", ADDR_D1],
            &[
                "-6",
                "route",
                "add",
                &sid_end,
                "encap",
                "seg6local",
                "action",
                "End",
                "dev",
                "d0",
            ],
            // nh6 on-link, as usual for End.DX6 (see linux_forward.sh)
            &[
                "-6",
                "route",
                "add",
                &sid_dx6,
                "encap",
                "seg6local",
                "action",
                "End.DX6",
                "nh6",
                NH6,
                "dev",
                "d1",
            ],
            &[
                "-6", "route", "add", ENCAP_PFX, "encap", "seg6", "mode", "encap", "segs",
                &sink_seg, "dev", "d1",
            ],
        ];
        let needed = if srv6 { commands.len() } else { 5 };
        for args in &commands[..needed] {
            dut.ip(args)?;
        }
        Ok(())
    }

    /// Reads the counters of one trial (four `ip -s -j link` calls, a few ms: read them
    /// outside the measured interval).
    pub(crate) fn counters(&self) -> Result<Counters, ForwardError> {
        let g0 = link_stats(&self.gen, "g0")?;
        let s0 = link_stats(&self.sink, "s0")?;
        let d1 = link_stats(&self.dut, "d1")?;
        Ok(Counters {
            g0_tx: g0.tx_packets,
            g0_tx_dropped: g0.tx_dropped,
            s0_rx: s0.rx_packets,
            d1_tx_dropped: d1.tx_dropped,
        })
    }

    /// The namespace name prefix of this run.
    pub(crate) fn prefix(&self) -> String {
        self.lab.run_id().prefix()
    }
}

fn disable_ipv6(end: &LinkEnd) -> Result<(), ForwardError> {
    end.netns
        .set_sysctl(&format!("net/ipv6/conf/{}/disable_ipv6", end.ifname), "1")
        .map_err(ForwardError::from)
}

#[derive(Debug, Default)]
struct LinkStats {
    rx_packets: u64,
    tx_packets: u64,
    tx_dropped: u64,
}

fn link_stats(ns: &Netns, ifname: &str) -> Result<LinkStats, ForwardError> {
    let out = ns.ip(&["-s", "-j", "link", "show", "dev", ifname])?;
    parse_link_stats(&out).ok_or_else(|| ForwardError::Counters {
        netns: ns.name().to_owned(),
        ifname: ifname.to_owned(),
        output: out.chars().take(200).collect(),
    })
}

fn parse_link_stats(json: &str) -> Option<LinkStats> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let s = v.get(0)?.get("stats64")?;
    let get = |dir: &str, key: &str| s.get(dir)?.get(key)?.as_u64();
    Some(LinkStats {
        rx_packets: get("rx", "packets")?,
        tx_packets: get("tx", "packets")?,
        tx_dropped: get("tx", "dropped")?,
    })
}

/// Kernel threads running a NAPI of an interface named `ifname` (`napi/IFNAME-ID`, any
/// namespace).
fn napi_threads(ifname: &str) -> Vec<u32> {
    let prefix = format!("napi/{ifname}-");
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim_end().starts_with(&prefix))
        })
        .collect()
}

/// Pins thread `pid` to `cpu` (`taskset -pc`).
fn pin(pid: u32, cpu: usize) -> std::io::Result<()> {
    let out = std::process::Command::new("taskset")
        .args(["-pc", &cpu.to_string(), &pid.to_string()])
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "taskset: {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ip_s_j_link() {
        let out = r#"[{"ifindex":1,"ifname":"g0","stats64":{"rx":{"bytes":3,"packets":29,"errors":0,"dropped":0},"tx":{"bytes":3,"packets":31,"errors":0,"dropped":7}}}]"#;
        let s = parse_link_stats(out).expect("parses");
        assert_eq!((s.rx_packets, s.tx_packets, s.tx_dropped), (29, 31, 7));
        assert!(parse_link_stats("[]").is_none());
    }
}
