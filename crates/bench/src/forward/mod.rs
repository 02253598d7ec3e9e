//! `srmig bench forward`: packets per second through one SRv6 node made of network
//! namespaces, srmigd beside the Linux kernel, in one run, on the same CPUs and frames.
//!
//! ```text
//!   gen --(veth g0 | d0)--> dut --(veth d1 | s0)--> sink
//!   CPU 0: generator        CPU 1: DUT (srmigd pinned there; the kernel's receive
//!                                   processing of d0 steered there by RPS)
//! ```
//!
//! The project's own version of `shared/reference/forward-bench` (`linux_forward.sh`,
//! `gen.c`, `srmigd_dut.sh`): same addresses, frames, counters and CPU split (`SPLIT=rps`).
//!
//! # Cases (JSON keys)
//! - `ipv6`: plain IPv6 forwarding of an IPv6/UDP packet to a prefix routed out d1.
//! - `end`: seg6local End, SRH with 2 segments, SL 1 -> the next segment, routed out d1.
//! - `end_dx6`: seg6local End.DX6, 1 segment, SL 0 -> decapsulated, inner packet to the
//!   nexthop on d1.
//! - `h_encaps`: seg6 H.Encaps of a plain IPv6 packet arriving on d0 with one segment, out d1.
//!   Both sides as a transit router: Linux `ip route add PREFIX encap seg6 mode encap`,
//!   srmigd a `[[steering]]` rule on its uplink d0 (AF_XDP under `auto`).
//! - `h_encaps_vm`: the same frames and Linux configuration, but on srmigd d0 is a VM port
//!   (`kind = "vm"`, the generator a VM on it, the policy applied by a `[[mappings]]` entry):
//!   srmigd's own case of every VM's egress, on AF_PACKET under `auto` (VM ports keep the
//!   guests' offload metadata; `--io xdp` measures a VM port put on AF_XDP). Linux has no VM-port notion: its figure is the
//!   same route-based encapsulation as `h_encaps`.
//!
//! With `--flows N` the generator sends N frames per case round-robin that differ only in
//! what a flow hash sees (UDP source port; for End and End.DX6 also the outer Flow Label, see
//! `frames`), so srmigd's `PACKET_FANOUT_HASH` can spread them over `--workers`. The DUT
//! configurations are the same for any N. The generator ceiling always uses one frame.
//!
//! # One run
//! 1. Build the bare topology (IPv6 off on every veth, MTU for the frame plus 64 bytes of
//!    encapsulation, `rps_cpus` of d0 = the DUT CPU).
//! 2. Generator ceiling: the plain frame to a foreign MAC, dropped at once on the DUT's
//!    ingress; `reps` trials.
//! 3. srmigd, per case: start it on the DUT CPU (transit config, or vmport for h_encaps_vm), wait
//!    until d0 and d1 are attached, warm up, `reps` trials at full rate, the zero-loss search,
//!    stop it.
//! 4. Linux: configure forwarding/seg6/seg6local in the dut namespace; per case: warm up,
//!    `reps` trials, the zero-loss search.
//!
//! # What is counted
//! Each trial reads the veth counters before the generator starts and 200 ms after it stops
//! (so the DUT's queues drained), and divides by the generator's own elapsed time:
//! - offered = g0 `tx_packets` + g0 `tx_dropped`: every frame the generator put on the veth
//!   to d0 (`tx_dropped` counts those the DUT CPU's backlog refused).
//! - forwarded = s0 `rx_packets`: what the DUT put on the wire to the sink.
//! - lost = offered - forwarded: frames offered to d0 that never left d1, wherever they died
//!   (d0's backlog, srmigd's receive ring, srmigd itself, d1).
//!
//! The zero-loss rate is the highest *measured offered* rate of a paced trial with lost = 0
//! (0 packets, no tolerance): a first trial just under the rate forwarded at full speed, then
//! bisection on a logarithmic scale, [`ZERO_LOSS_TRIALS`] trials in all. A DUT that loses
//! nothing at full speed (the kernel usually: the generator is back-pressured, see
//! `generator`) has its full-speed offered rate as the zero-loss rate.

mod frames;
mod generator;
mod report;
mod srmigd;
mod topology;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use frames::{MAX_FLOWS, MIN_FRAME_BYTES};
pub use report::{
    render_table, CaseReport, ForwardReport, Overload, GBPS_FROM_FRAME_BYTES, GENERATOR_BOUND_SHARE,
};
pub use topology::CpuLayout;

use generator::Blast;
use report::{gbps, min_median_max, round4};
use srmigd::Srmigd;
use topology::Topology;

/// Trials of the zero-loss search.
pub const ZERO_LOSS_TRIALS: usize = 6;
/// Upper bound of one zero-loss trial.
const ZERO_LOSS_TRIAL_MAX: Duration = Duration::from_millis(1000);
/// Wait after the generator stopped before reading the counters.
const DRAIN: Duration = Duration::from_millis(200);
/// Upper bound of the warm-up before a case's trials.
const WARMUP_MAX: Duration = Duration::from_millis(500);
/// Largest frame (the veth MTU limit minus headroom).
pub const MAX_FRAME_BYTES: usize = 65_000;

/// One forwarding case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Case {
    /// Plain IPv6 forwarding.
    Ipv6,
    /// seg6local End.
    End,
    /// seg6local End.DX6.
    EndDx6,
    /// seg6 H.Encaps, transit (srmigd: `[[steering]]` on an uplink).
    HEncaps,
    /// H.Encaps of a VM's traffic (srmigd: d0 is a VM port); Linux as in `HEncaps`.
    HEncapsVm,
}

impl Case {
    /// Every case, in the order they run.
    pub const ALL: [Case; 5] = [
        Case::Ipv6,
        Case::End,
        Case::EndDx6,
        Case::HEncaps,
        Case::HEncapsVm,
    ];

    /// The JSON key and `--cases` name.
    pub fn key(self) -> &'static str {
        match self {
            Case::Ipv6 => "ipv6",
            Case::End => "end",
            Case::EndDx6 => "end_dx6",
            Case::HEncaps => "h_encaps",
            Case::HEncapsVm => "h_encaps_vm",
        }
    }

    /// The behavior, RFC spelling.
    pub fn behavior(self) -> &'static str {
        match self {
            Case::Ipv6 => "IPv6 forwarding",
            Case::End => "End",
            Case::EndDx6 => "End.DX6",
            Case::HEncaps => "H.Encaps",
            Case::HEncapsVm => "H.Encaps (VM port)",
        }
    }

    /// Parses a comma-separated list (`ipv6,end,end_dx6,h_encaps,h_encaps_vm`; `end.dx6`, `h.encaps`
    /// and `all` are accepted too). Duplicates are dropped; the run order is [`Case::ALL`]'s.
    pub fn parse_list(list: &str) -> Result<Vec<Case>, ForwardError> {
        let mut cases = Vec::new();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let name = name.to_ascii_lowercase().replace('.', "_");
            if name == "all" {
                cases.extend(Case::ALL);
                continue;
            }
            let case = Case::ALL
                .into_iter()
                .find(|c| c.key() == name)
                .ok_or_else(|| {
                    ForwardError::Options(format!(
                        "--cases: unknown case {name:?}; expected ipv6, end, end_dx6, h_encaps, h_encaps_vm or all"
                    ))
                })?;
            cases.push(case);
        }
        cases.sort();
        cases.dedup();
        if cases.is_empty() {
            return Err(ForwardError::Options("--cases: no case given".into()));
        }
        Ok(cases)
    }
}

/// What to measure and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// Frame length sent by the generator ([`MIN_FRAME_BYTES`] and up).
    pub frame_bytes: usize,
    /// srmigd's `--workers` (passed only when not 1).
    pub workers: usize,
    /// Distinct flows the generator sends round-robin (1 to [`MAX_FLOWS`]).
    pub flows: usize,
    /// srmigd's port I/O mode (`[io] mode`: `auto`, `xdp` or `packet`); `auto` puts the
    /// bench's uplinks on AF_XDP and leaves d0 as a VM port (`h_encaps_vm`) on AF_PACKET.
    pub io: String,
    /// srmigd's fast path (`[io] fast_path = ["d0", "d1"]`): the uplinks' XDP program, and
    /// in `h_encaps_vm` (d0 a VM port) d0's TC program.
    pub fast_path: bool,
    /// How srmigd attaches d0's TC program in `h_encaps_vm` (`[io] vm_tc_hook`: `auto`,
    /// `tcx` or `clsact`; `auto` when `None`).
    pub vm_tc_hook: Option<String>,
    /// Repetitions per case and DUT.
    pub reps: usize,
    /// Length of one repetition.
    pub duration: Duration,
    /// The cases.
    pub cases: Vec<Case>,
    /// srmigd; `None`: `srmigd` next to the running executable.
    pub srmigd: Option<PathBuf>,
    /// Leave the namespaces (and the work directory) in place.
    pub keep: bool,
    /// Also search the kernel's zero-loss rate.
    pub linux_zero_loss: bool,
    /// The generator's CPU.
    pub generator_cpu: usize,
    /// The DUT's CPU.
    pub dut_cpu: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            frame_bytes: MIN_FRAME_BYTES,
            workers: 1,
            flows: 1,
            io: "auto".to_owned(),
            fast_path: true,
            vm_tc_hook: None,
            reps: 3,
            duration: Duration::from_millis(2000),
            cases: Case::ALL.to_vec(),
            srmigd: None,
            keep: false,
            linux_zero_loss: true,
            generator_cpu: 0,
            dut_cpu: 1,
        }
    }
}

impl Options {
    fn validate(&self) -> Result<(), ForwardError> {
        let bad = |m: String| Err(ForwardError::Options(m));
        if !(MIN_FRAME_BYTES..=MAX_FRAME_BYTES).contains(&self.frame_bytes) {
            return bad(format!(
                "--frame-bytes {}: must be {MIN_FRAME_BYTES} to {MAX_FRAME_BYTES}",
                self.frame_bytes
            ));
        }
        if self.workers == 0 {
            return bad("--workers: must be at least 1".into());
        }
        if !(1..=MAX_FLOWS).contains(&self.flows) {
            return bad(format!("--flows {}: must be 1 to {MAX_FLOWS}", self.flows));
        }
        if !["auto", "xdp", "packet"].contains(&self.io.as_str()) {
            return bad(format!("--io: {:?} is not auto, xdp or packet", self.io));
        }
        if self.reps == 0 {
            return bad("--reps: must be at least 1".into());
        }
        if self.duration < Duration::from_millis(100) {
            return bad("--duration-ms: must be at least 100".into());
        }
        if self.cases.is_empty() {
            return bad("--cases: no case given".into());
        }
        let nproc = nproc();
        for (flag, cpu) in [("generator", self.generator_cpu), ("DUT", self.dut_cpu)] {
            if cpu >= nproc {
                return bad(format!("{flag} CPU {cpu}: this machine has {nproc} CPUs"));
            }
        }
        if self.generator_cpu == self.dut_cpu {
            return bad("the generator and the DUT need different CPUs".into());
        }
        Ok(())
    }

    fn zero_loss_trial(&self) -> Duration {
        self.duration.min(ZERO_LOSS_TRIAL_MAX)
    }

    fn warmup(&self) -> Duration {
        (self.duration / 2).min(WARMUP_MAX)
    }
}

/// Why the bench could not run.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// Not root.
    #[error("srmig bench forward needs root (network namespaces, veth pairs, AF_PACKET)")]
    NeedsRoot,
    /// A tool is missing.
    #[error(
        "`{tool}` not found or not working; it is needed for {why} (Debian package {package})"
    )]
    MissingTool {
        /// The program.
        tool: &'static str,
        /// What for.
        why: &'static str,
        /// Where to get it.
        package: &'static str,
    },
    /// No srmigd binary.
    #[error("srmigd not found at {}; build it (cargo build --release -p srmig-hostd) or pass --srmigd PATH", path.display())]
    SrmigdNotFound {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// A bad option.
    #[error("{0}")]
    Options(String),
    /// The namespaces, links or a child process.
    #[error("network namespace lab")]
    Lab(#[from] srmig_lab::LabError),
    /// The generator failed.
    #[error("generator on {ifname}: {what} failed")]
    Generator {
        /// What it did.
        what: &'static str,
        /// Its interface.
        ifname: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `ip -s -j link` said something unexpected.
    #[error("cannot read the counters of {ifname} in {netns} from `ip -s -j link`: {output}")]
    Counters {
        /// Namespace.
        netns: String,
        /// Interface.
        ifname: String,
        /// What `ip` printed (start).
        output: String,
    },
    /// srmigd failed.
    #[error("srmigd {what} (log {}); its last lines:\n{tail}", log.display())]
    Srmigd {
        /// What happened.
        what: String,
        /// Its log.
        log: PathBuf,
        /// The end of the log.
        tail: String,
    },
    /// A file of the work directory.
    #[error("cannot write {}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// One trial's rates.
#[derive(Debug, Clone, Copy)]
struct Trial {
    offered_mpps: f64,
    forwarded_mpps: f64,
    lost: u64,
    offered: u64,
    /// Frames the generator's `sendmmsg` accepted.
    sent: u64,
    /// g0 tx_dropped: refused by the DUT CPU's backlog.
    dut_in_drops: u64,
    /// d1 tx_dropped.
    dut_out_drops: u64,
}

impl Trial {
    fn loss_pct(&self) -> f64 {
        if self.offered == 0 {
            return 0.0;
        }
        100.0 * self.lost as f64 / self.offered as f64
    }
}

/// One DUT on one case.
#[derive(Debug, Clone)]
struct DutResult {
    forwarded: [f64; 3],
    offered: [f64; 3],
    loss_pct: f64,
    zero_loss_mpps: Option<f64>,
    overload: Option<report::Overload>,
}

/// Runs the bench. `progress` gets one line per step (for stderr).
pub fn run(opts: &Options, progress: &mut dyn FnMut(&str)) -> Result<ForwardReport, ForwardError> {
    opts.validate()?;
    let srmigd_bin = preflight(opts)?;
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    let cpus = CpuLayout {
        generator: opts.generator_cpu,
        dut: opts.dut_cpu,
        split: "rps",
        nproc: nproc(),
    };
    let largest = opts
        .cases
        .iter()
        .map(|&c| frames::frame_len(c, opts.frame_bytes))
        .max()
        .unwrap_or(opts.frame_bytes);
    let mtu = (largest - 14 + frames::MAX_GROWTH).max(1500);
    let topo = Topology::build(mtu, cpus)?;
    progress(&format!(
        "namespaces {}{{gen,dut,sink}}, MTU {mtu}, generator CPU {}, DUT CPU {}",
        topo.prefix(),
        cpus.generator,
        cpus.dut
    ));
    let mut work = WorkDir::create(opts.keep)?;
    let mut warnings = Vec::new();

    // Generator ceiling.
    let foreign = [frames::foreign_frame(opts.frame_bytes)];
    let mut ceiling = Vec::new();
    for rep in 1..=opts.reps {
        let t = trial(&topo, &foreign, opts.duration, None)?;
        progress(&format!(
            "generator ceiling rep {rep}: {:.3} Mpps offered, {} forwarded",
            t.offered_mpps, t.forwarded_mpps
        ));
        ceiling.push(t.offered_mpps);
    }
    let ceiling = min_median_max(&ceiling);

    // srmigd.
    let mut srmigd_results = BTreeMap::new();
    let mut fast_paths = BTreeMap::new();
    let mut napi_steered = false;
    for &case in &opts.cases {
        let frames = frames::frames(case, opts.frame_bytes, opts.flows);
        progress(&format!(
            "srmigd {}: starting on CPU {} ({} B frames, {} flows)",
            case.key(),
            cpus.dut,
            frames::frame_len(case, opts.frame_bytes),
            frames.len()
        ));
        // On a failure of srmigd, its log stays in the work directory.
        let daemon = match Srmigd::start(&topo, &srmigd_bin, work.path(), case, opts) {
            Ok(d) => d,
            Err(e) => {
                work.keep = true;
                return Err(e);
            }
        };
        if daemon.d0_xdp {
            match topo.steer_napi_to_dut() {
                Ok(0) => warnings.push(format!(
                    "srmigd {}: d0's NAPI thread did not appear; its receive work runs on the generator's CPU",
                    case.key()
                )),
                Ok(_) => napi_steered = true,
                // Generic XDP (srmigd's program beside AF_PACKET on a jumbo veth) leaves d0
                // without NAPI: its receive work goes through netif_rx, where rps_cpus
                // sends it to the DUT CPU as for the kernel.
                Err(e) => {
                    let why = std::error::Error::source(&e)
                        .map_or_else(|| e.to_string(), |s| format!("{e}: {s}"));
                    progress(&format!(
                        "srmigd {}: d0 has no NAPI to thread ({why}); its receive work runs where rps_cpus sends it",
                        case.key()
                    ));
                }
            }
        }
        let result = measure(&topo, opts, &frames, "srmigd", case, true, progress);
        let status = daemon.status();
        let fast = match &status {
            Ok(status) => srmigd::fast_path(status, "d0"),
            Err(e) => Err(ForwardError::Options(e.to_string())),
        };
        if let Ok(status) = &status {
            progress(&format!(
                "srmigd {}: srmigd's own losses over the case (all trials): {}",
                case.key(),
                srmigd::losses(status)
            ));
        }
        let alive = daemon.running(&topo);
        let result = match (result, alive) {
            (Ok(r), true) => r,
            (Ok(_), false) => {
                work.keep = true;
                return Err(daemon.error("exited during the measurement"));
            }
            (Err(e), _) => {
                let _ = daemon.stop(&topo);
                return Err(e);
            }
        };
        daemon.stop(&topo)?;
        let fast = fast?;
        progress(&format!(
            "srmigd {}: fast path {}, {} frames forwarded by it, {} received by srmigd's socket on d0",
            case.key(),
            if fast.0 { "on" } else { "off" },
            fast.1,
            fast.2
        ));
        fast_paths.insert(case, fast);
        srmigd_results.insert(case, result);
    }

    // Linux. On a kernel without SRv6 lightweight tunnels only plain forwarding can be
    // measured; the SRv6 cases keep srmigd's figures and say why Linux's are absent.
    let no_srv6 = srmig_lab::kernel::missing_srv6_lwtunnel();
    let linux_cases: Vec<Case> = opts
        .cases
        .iter()
        .copied()
        .filter(|c| *c == Case::Ipv6 || no_srv6.is_none())
        .collect();
    if let Some(why) = &no_srv6 {
        let skipped: Vec<&str> = opts
            .cases
            .iter()
            .filter(|c| !linux_cases.contains(c))
            .map(|c| c.key())
            .collect();
        if !skipped.is_empty() {
            let w = format!("linux {}: not measured: {why}", skipped.join(", "));
            progress(&w);
            warnings.push(w);
        }
    }
    topo.configure_linux(linux_cases.iter().any(|c| *c != Case::Ipv6))?;
    let mut linux_results = BTreeMap::new();
    for &case in &linux_cases {
        let frames = frames::frames(case, opts.frame_bytes, opts.flows);
        let result = measure(
            &topo,
            opts,
            &frames,
            "linux",
            case,
            opts.linux_zero_loss,
            progress,
        )?;
        linux_results.insert(case, result);
    }

    let mut cases = BTreeMap::new();
    for &case in &opts.cases {
        let Some(s) = srmigd_results.get(&case) else {
            continue;
        };
        let l = linux_results.get(&case);
        let frame_bytes = frames::frame_len(case, opts.frame_bytes);
        let big = frame_bytes >= GBPS_FROM_FRAME_BYTES;
        let bound = |mpps: f64| ceiling[1] > 0.0 && mpps >= GENERATOR_BOUND_SHARE * ceiling[1];
        let srmigd_mpps = s.forwarded[1];
        let linux_mpps = l.map(|l| l.forwarded[1]);
        let duts = [("srmigd", Some(srmigd_mpps)), ("linux", linux_mpps)];
        for (dut, mpps) in duts.into_iter().filter_map(|(d, m)| Some((d, m?))) {
            if bound(mpps) {
                warnings.push(format!(
                    "{dut} {}: {mpps:.3} Mpps is {:.0} % of the generator ceiling ({:.3} Mpps): generator-bound, the DUT may be faster",
                    case.key(),
                    100.0 * mpps / ceiling[1],
                    ceiling[1]
                ));
            }
            if mpps <= 0.0 {
                warnings.push(format!("{dut} {}: forwarded nothing", case.key()));
            }
        }
        cases.insert(
            case.key(),
            CaseReport {
                behavior: case.behavior(),
                frame_bytes,
                srmigd_mpps,
                linux_mpps,
                ratio: linux_mpps.map(|l| {
                    if l > 0.0 {
                        round4(srmigd_mpps / l)
                    } else {
                        0.0
                    }
                }),
                linux_skipped: if l.is_none() { no_srv6.clone() } else { None },
                srmigd_zero_loss_mpps: s.zero_loss_mpps.unwrap_or(0.0),
                linux_zero_loss_mpps: l.and_then(|l| l.zero_loss_mpps),
                srmigd_mpps_min_median_max: s.forwarded,
                linux_mpps_min_median_max: l.map(|l| l.forwarded),
                srmigd_offered_mpps: s.offered[1],
                linux_offered_mpps: l.map(|l| l.offered[1]),
                srmigd_loss_pct: round4(s.loss_pct),
                linux_loss_pct: l.map(|l| round4(l.loss_pct)),
                srmigd_gbps: big.then(|| gbps(srmigd_mpps, frame_bytes)),
                linux_gbps: big
                    .then_some(linux_mpps)
                    .flatten()
                    .map(|m| gbps(m, frame_bytes)),
                srmigd_generator_bound: bound(srmigd_mpps),
                linux_generator_bound: linux_mpps.map(bound),
                srmigd_fast_path: fast_paths.get(&case).is_some_and(|f| f.0),
                srmigd_fast_path_frames: fast_paths.get(&case).map_or(0, |f| f.1),
                srmigd_overload_2x: s.overload,
            },
        );
    }
    let report = ForwardReport {
        cases,
        generator_ceiling_mpps: ceiling[1],
        generator_ceiling_mpps_min_median_max: ceiling,
        frame_bytes: opts.frame_bytes,
        workers: opts.workers,
        flows: opts.flows,
        io: opts.io.clone(),
        fast_path: opts.fast_path,
        vm_tc_hook: opts.vm_tc_hook.clone(),
        reps: opts.reps,
        duration_ms: millis(opts.duration),
        zero_loss_trial_ms: millis(opts.zero_loss_trial()),
        mtu,
        cpu: cpus,
        srmigd_receive: if napi_steered { "napi-thread" } else { "rps" },
        kernel,
        srmigd: srmigd_bin.display().to_string(),
        netns_prefix: topo.prefix(),
        warnings,
    };
    if opts.keep {
        progress(&format!(
            "--keep: leaving namespaces {}* and {} (remove with `ip netns del NAME`)",
            topo.prefix(),
            work.path().display()
        ));
        // Leaves the namespaces; the lab's registry lets a later `cleanup_stale` remove them.
        std::mem::forget(topo);
    }
    Ok(report)
}

/// Warm-up, `reps` full-speed trials and (if `zero_loss`) the zero-loss search for one DUT
/// on one case.
fn measure(
    topo: &Topology,
    opts: &Options,
    frames: &[Vec<u8>],
    dut: &str,
    case: Case,
    zero_loss: bool,
    progress: &mut dyn FnMut(&str),
) -> Result<DutResult, ForwardError> {
    trial(topo, frames, opts.warmup(), None)?;
    let mut trials = Vec::new();
    for rep in 1..=opts.reps {
        let t = trial(topo, frames, opts.duration, None)?;
        progress(&format!(
            "{dut} {} rep {rep}: offered {:.3} Mpps, forwarded {:.3} Mpps, lost {:.2} % (generator sent {}, dut-in drops {}, dut-out drops {})",
            case.key(),
            t.offered_mpps,
            t.forwarded_mpps,
            t.loss_pct(),
            t.sent,
            t.dut_in_drops,
            t.dut_out_drops
        ));
        trials.push(t);
    }
    let forwarded = min_median_max(&trials.iter().map(|t| t.forwarded_mpps).collect::<Vec<_>>());
    let offered = min_median_max(&trials.iter().map(|t| t.offered_mpps).collect::<Vec<_>>());
    let loss_pct = min_median_max(&trials.iter().map(Trial::loss_pct).collect::<Vec<_>>())[1];
    let zero_loss_mpps = if zero_loss {
        Some(zero_loss_search(
            topo,
            opts,
            frames,
            dut,
            case,
            &trials,
            forwarded[1],
            progress,
        )?)
    } else {
        None
    };
    // Overload: twice the zero-loss rate (srmigd only: `zero_loss` is its measurement).
    let overload = match zero_loss_mpps.filter(|z| *z > 0.0 && dut == "srmigd") {
        Some(z) => {
            let target = 2.0 * z;
            let t = trial(topo, frames, opts.duration, Some(target * 1e6))?;
            progress(&format!(
                "{dut} {} overload: paced at {target:.3} Mpps (2 x zero-loss), offered {:.3}, forwarded {:.3} Mpps",
                case.key(),
                t.offered_mpps,
                t.forwarded_mpps
            ));
            Some(report::Overload {
                target_mpps: round4(target),
                offered_mpps: round4(t.offered_mpps),
                forwarded_mpps: round4(t.forwarded_mpps),
                forwarded_share_of_zero_loss: round4(t.forwarded_mpps / z),
            })
        }
        None => None,
    };
    Ok(DutResult {
        forwarded,
        offered,
        loss_pct,
        zero_loss_mpps,
        overload,
    })
}

/// The highest measured offered rate with no loss (see the module doc).
#[allow(clippy::too_many_arguments)]
fn zero_loss_search(
    topo: &Topology,
    opts: &Options,
    frames: &[Vec<u8>],
    dut: &str,
    case: Case,
    full_speed: &[Trial],
    forwarded_mpps: f64,
    progress: &mut dyn FnMut(&str),
) -> Result<f64, ForwardError> {
    if let Some(best) = full_speed
        .iter()
        .filter(|t| t.lost == 0 && t.offered > 0)
        .map(|t| t.offered_mpps)
        .max_by(f64::total_cmp)
    {
        progress(&format!(
            "{dut} {} zero-loss: lossless at full speed, {best:.3} Mpps",
            case.key()
        ));
        return Ok(round4(best));
    }
    let full_offered = full_speed
        .iter()
        .map(|t| t.offered_mpps)
        .fold(0.0, f64::max);
    if full_offered <= 0.0 || forwarded_mpps <= 0.0 {
        return Ok(0.0);
    }
    let mut best: f64 = 0.0;
    let mut rate = (0.95 * forwarded_mpps).min(full_offered);
    let (mut lo, mut hi) = (rate / 8.0, full_offered);
    for n in 1..=ZERO_LOSS_TRIALS {
        let t = trial(topo, frames, opts.zero_loss_trial(), Some(rate * 1e6))?;
        let pass = t.lost == 0 && t.offered > 0;
        progress(&format!(
            "{dut} {} zero-loss trial {n}: paced at {rate:.3} Mpps, offered {:.3}, lost {} (dut-in drops {}, dut-out drops {}) -> {}",
            case.key(),
            t.offered_mpps,
            t.lost,
            t.dut_in_drops,
            t.dut_out_drops,
            if pass { "pass" } else { "fail" }
        ));
        if pass {
            best = best.max(t.offered_mpps);
            lo = rate;
        } else {
            hi = rate;
        }
        rate = (lo * hi).sqrt();
    }
    Ok(round4(best))
}

/// One trial: counters, the generator for `duration` (at `rate_pps` or full speed) sending
/// `frames` round-robin, drain, counters.
fn trial(
    topo: &Topology,
    frames: &[Vec<u8>],
    duration: Duration,
    rate_pps: Option<f64>,
) -> Result<Trial, ForwardError> {
    let before = topo.counters()?;
    let sent = generator::blast(
        &topo.gen,
        "g0",
        topo.cpus.generator,
        Blast {
            frames,
            duration,
            rate_pps,
        },
    )?;
    std::thread::sleep(DRAIN);
    let delta = topo.counters()?.since(&before);
    let secs = sent.elapsed.as_secs_f64().max(1e-6);
    let offered = delta.offered();
    Ok(Trial {
        offered_mpps: offered as f64 / secs / 1e6,
        forwarded_mpps: delta.s0_rx as f64 / secs / 1e6,
        lost: offered.saturating_sub(delta.s0_rx),
        offered,
        sent: sent.packets,
        dut_in_drops: delta.g0_tx_dropped,
        dut_out_drops: delta.d1_tx_dropped,
    })
}

/// Root, `ip`, `taskset`, and the srmigd binary.
fn preflight(opts: &Options) -> Result<PathBuf, ForwardError> {
    if !srmig_lab::orchestrate::is_root() {
        return Err(ForwardError::NeedsRoot);
    }
    let tools: [(&'static str, &'static str, &'static str, &str); 2] = [
        ("ip", "namespaces, veths, routes", "iproute2", "-V"),
        (
            "taskset",
            "pinning srmigd to the DUT CPU",
            "util-linux",
            "-V",
        ),
    ];
    for (tool, why, package, arg) in tools {
        let ok = std::process::Command::new(tool)
            .arg(arg)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Err(ForwardError::MissingTool { tool, why, package });
        }
    }
    let path = match &opts.srmigd {
        Some(p) => p.clone(),
        None => default_srmigd(),
    };
    if !path.is_file() {
        return Err(ForwardError::SrmigdNotFound { path });
    }
    // `ip netns exec` runs it from another working directory.
    Ok(std::fs::canonicalize(&path).unwrap_or(path))
}

/// `srmigd` next to the running executable (and above cargo's `deps/` for tests).
pub fn default_srmigd() -> PathBuf {
    let dirs = srmig_lab::orchestrate::binary_dirs(None);
    dirs.iter()
        .map(|d| d.join("srmigd"))
        .find(|p| p.is_file())
        .or_else(|| dirs.first().map(|d| d.join("srmigd")))
        .unwrap_or_else(|| PathBuf::from("srmigd"))
}

fn nproc() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The directory for srmigd's configurations, sockets and logs; removed on drop unless kept.
#[derive(Debug)]
struct WorkDir {
    path: PathBuf,
    keep: bool,
}

impl WorkDir {
    fn create(keep: bool) -> Result<WorkDir, ForwardError> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "srmig-bench-forward-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).map_err(|source| ForwardError::File {
            path: path.clone(),
            source,
        })?;
        Ok(WorkDir { path, keep })
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_lists() {
        assert_eq!(
            Case::parse_list("h.encaps,end,END_DX6,end").expect("valid"),
            [Case::End, Case::EndDx6, Case::HEncaps]
        );
        assert_eq!(Case::parse_list("all").expect("valid"), Case::ALL);
        assert!(Case::parse_list("end,nope").is_err());
        assert!(Case::parse_list("").is_err());
    }

    #[test]
    fn options_are_checked() {
        let o = Options {
            frame_bytes: 60,
            ..Options::default()
        };
        assert!(
            matches!(o.validate(), Err(ForwardError::Options(m)) if m.contains("--frame-bytes"))
        );
        for flows in [0, MAX_FLOWS + 1] {
            let o = Options {
                flows,
                ..Options::default()
            };
            assert!(
                matches!(o.validate(), Err(ForwardError::Options(m)) if m.contains("--flows")),
                "--flows {flows}"
            );
        }
    }
}
