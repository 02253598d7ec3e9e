//! What `srmig bench forward` reports: the JSON document (`--json`) and the human table.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::topology::CpuLayout;

/// Frames of at least this many bytes also get Gb/s.
pub const GBPS_FROM_FRAME_BYTES: usize = 1000;
/// A DUT rate at or above this share of the generator's ceiling is "generator-bound".
pub const GENERATOR_BOUND_SHARE: f64 = 0.9;

/// The whole run; `--json` prints exactly this.
#[derive(Debug, Clone, Serialize)]
pub struct ForwardReport {
    /// Per case, keyed `ipv6`, `end`, `end_dx6`, `h_encaps`.
    pub cases: BTreeMap<&'static str, CaseReport>,
    /// Median rate the generator reaches with a frame the DUT drops on ingress, Mpps.
    pub generator_ceiling_mpps: f64,
    /// min/median/max of the ceiling's repetitions.
    pub generator_ceiling_mpps_min_median_max: [f64; 3],
    /// `--frame-bytes` as requested (a case whose reference frame is larger uses that).
    pub frame_bytes: usize,
    /// `--workers` (passed to srmigd when not 1).
    pub workers: usize,
    /// `--flows`: distinct flows the generator sent round-robin (the ceiling always uses one).
    pub flows: usize,
    /// srmigd's port I/O mode (`[io] mode`).
    pub io: String,
    /// Whether srmigd ran with its XDP fast path on d0 and d1 (`--fast-path on`).
    pub fast_path: bool,
    /// `--vm-tc-hook`, when given: how d0's TC program was attached in `h_encaps_vm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_tc_hook: Option<String>,
    /// Repetitions per case and DUT.
    pub reps: usize,
    /// Length of one repetition, ms.
    pub duration_ms: u64,
    /// Length of one zero-loss search trial, ms.
    pub zero_loss_trial_ms: u64,
    /// Link MTU in all namespaces.
    pub mtu: usize,
    /// Where the generator and the DUT ran.
    pub cpu: CpuLayout,
    /// Where the kernel's receive work for srmigd's d0 ran: `napi-thread` (d0 on AF_XDP: its
    /// NAPI as a kernel thread pinned to the DUT CPU) or `rps` (AF_PACKET: `netif_rx`,
    /// steered to the DUT CPU by `rps_cpus`, as for the kernel).
    pub srmigd_receive: &'static str,
    /// `uname -r`.
    pub kernel: String,
    /// The srmigd binary measured.
    pub srmigd: String,
    /// The namespaces' name prefix (all removed at the end unless `--keep`).
    pub netns_prefix: String,
    /// Anything that makes a number suspect (generator-bound, srmigd forwarded nothing, ...).
    pub warnings: Vec<String>,
}

/// One case.
#[derive(Debug, Clone, Serialize)]
pub struct CaseReport {
    /// The behavior measured, RFC spelling (`End.DX6`, `H.Encaps`, `IPv6 forwarding`).
    pub behavior: &'static str,
    /// Length of this case's frame as sent by the generator.
    pub frame_bytes: usize,
    /// Median forwarded rate through srmigd, Mpps.
    pub srmigd_mpps: f64,
    /// Median forwarded rate through the Linux kernel, Mpps (`null` when the kernel cannot
    /// run the case: `linux_skipped` says why).
    pub linux_mpps: Option<f64>,
    /// `srmigd_mpps / linux_mpps` (medians; `null` without a Linux figure).
    pub ratio: Option<f64>,
    /// Why the Linux kernel was not measured on this case (a kernel without SRv6
    /// lightweight tunnels cannot make seg6/seg6local routes); absent when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub linux_skipped: Option<String>,
    /// Highest offered rate srmigd forwarded without losing a packet, Mpps.
    pub srmigd_zero_loss_mpps: f64,
    /// The same for the Linux kernel (absent with `--no-linux-zero-loss`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub linux_zero_loss_mpps: Option<f64>,
    /// min/median/max of srmigd's repetitions, Mpps.
    pub srmigd_mpps_min_median_max: [f64; 3],
    /// min/median/max of Linux's repetitions, Mpps (`null` when skipped).
    pub linux_mpps_min_median_max: Option<[f64; 3]>,
    /// Median offered rate (what reached d0) while srmigd was measured, Mpps.
    pub srmigd_offered_mpps: f64,
    /// Median offered rate while Linux was measured, Mpps (`null` when skipped).
    pub linux_offered_mpps: Option<f64>,
    /// Median share of the offered frames srmigd lost at full offered rate, percent.
    pub srmigd_loss_pct: f64,
    /// The same for Linux (`null` when skipped).
    pub linux_loss_pct: Option<f64>,
    /// `srmigd_mpps` in Gb/s of generator frames (frames of 1000 bytes and more).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub srmigd_gbps: Option<f64>,
    /// `linux_mpps` in Gb/s (frames of 1000 bytes and more).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub linux_gbps: Option<f64>,
    /// srmigd's rate is at least 90 % of the generator's ceiling: the generator may be what
    /// limits it.
    pub srmigd_generator_bound: bool,
    /// The same for Linux (`null` when skipped).
    pub linux_generator_bound: Option<bool>,
    /// Whether srmigd's XDP fast path was on for d0 (`--fast-path on` and an uplink case).
    pub srmigd_fast_path: bool,
    /// Frames srmigd's fast path forwarded in this case (all trials), from srmigd's status:
    /// the ones that never reached its AF_XDP socket.
    pub srmigd_fast_path_frames: u64,
    /// srmigd offered twice its zero-loss rate (paced): what it still forwards.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub srmigd_overload_2x: Option<Overload>,
}

/// One overload trial: the generator paced at `target_mpps` (twice the zero-loss rate).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Overload {
    /// The paced rate asked of the generator, Mpps.
    pub target_mpps: f64,
    /// What reached the DUT's ingress (or was dropped on the way in), Mpps.
    pub offered_mpps: f64,
    /// What the DUT forwarded, Mpps.
    pub forwarded_mpps: f64,
    /// `forwarded_mpps` over the zero-loss rate: 1.0 means it kept forwarding at capacity.
    pub forwarded_share_of_zero_loss: f64,
}

/// min, median, max.
pub(crate) fn min_median_max(values: &[f64]) -> [f64; 3] {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return [0.0; 3];
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    [v[0], median, v[n - 1]].map(round4)
}

pub(crate) fn round4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

/// Gb/s of `mpps` frames of `frame_bytes`.
pub(crate) fn gbps(mpps: f64, frame_bytes: usize) -> f64 {
    round4(mpps * frame_bytes as f64 * 8.0 / 1000.0)
}

/// The human-readable table.
pub fn render_table(r: &ForwardReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "srmig bench forward: gen -> dut -> sink over veth, kernel {}, generator on CPU {}, DUT on CPU {} ({}: d0's receive softirq on the DUT CPU; for srmigd: {})",
        r.kernel, r.cpu.generator, r.cpu.dut, r.cpu.split, r.srmigd_receive
    );
    let _ = writeln!(
        s,
        "{} x {} ms per case and DUT, flows {}, srmigd workers {} (io {}, XDP fast path {}), MTU {}, srmigd {}",
        r.reps,
        r.duration_ms,
        r.flows,
        r.workers,
        r.io,
        if r.fast_path { "on" } else { "off" },
        r.mtu,
        r.srmigd
    );
    let _ = writeln!(
        s,
        "generator ceiling (frame dropped on the DUT's ingress): {:.3} Mpps (min/median/max {:.3}/{:.3}/{:.3})\n",
        r.generator_ceiling_mpps,
        r.generator_ceiling_mpps_min_median_max[0],
        r.generator_ceiling_mpps_min_median_max[1],
        r.generator_ceiling_mpps_min_median_max[2],
    );
    let big = r.cases.values().any(|c| c.srmigd_gbps.is_some());
    let mut header = format!(
        "{:<11} {:>6} | {:>21} | {:>21} | {:>6} | {:>10} {:>10}",
        "case", "frame", "linux Mpps", "srmigd Mpps", "ratio", "srmigd", "linux"
    );
    let mut sub = format!(
        "{:<11} {:>6} | {:>21} | {:>21} | {:>6} | {:>21}",
        "", "", "median (min-max)", "median (min-max)", "", "0-loss Mpps"
    );
    if big {
        let _ = write!(header, " | {:>7} {:>7}", "linux", "srmigd");
        let _ = write!(sub, " | {:>15}", "Gb/s");
    }
    let _ = writeln!(s, "{header}\n{sub}");
    for (key, c) in &r.cases {
        let mmm = |v: &[f64; 3]| format!("{:.3} ({:.3}-{:.3})", v[1], v[0], v[2]);
        let linux_zl = c
            .linux_zero_loss_mpps
            .map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"));
        let _ = write!(
            s,
            "{:<11} {:>5}B | {:>21} | {:>21} | {:>6} | {:>10.3} {:>10}",
            key,
            c.frame_bytes,
            c.linux_mpps_min_median_max
                .as_ref()
                .map_or_else(|| "skipped (kernel)".to_owned(), mmm),
            mmm(&c.srmigd_mpps_min_median_max),
            c.ratio
                .map_or_else(|| "-".to_owned(), |r| format!("{r:.3}")),
            c.srmigd_zero_loss_mpps,
            linux_zl
        );
        if big {
            let g = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
            let _ = write!(s, " | {:>7} {:>7}", g(c.linux_gbps), g(c.srmigd_gbps));
        }
        s.push('\n');
    }
    let _ = writeln!(
        s,
        "\nratio = srmigd / linux (medians); 0-loss = highest offered rate with every frame offered to d0 leaving d1"
    );
    for (key, c) in &r.cases {
        if let Some(o) = &c.srmigd_overload_2x {
            let _ = writeln!(
                s,
                "srmigd {key} at 2x overload: paced {:.3} Mpps, offered {:.3}, forwarded {:.3} Mpps ({:.0} % of its zero-loss rate)",
                o.target_mpps,
                o.offered_mpps,
                o.forwarded_mpps,
                100.0 * o.forwarded_share_of_zero_loss
            );
        }
    }
    for w in &r.warnings {
        let _ = writeln!(s, "warning: {w}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(min_median_max(&[3.0, 1.0, 2.0]), [1.0, 2.0, 3.0]);
        assert_eq!(min_median_max(&[4.0, 1.0, 2.0, 3.0]), [1.0, 2.5, 4.0]);
        assert_eq!(min_median_max(&[]), [0.0; 3]);
    }

    #[test]
    fn gbps_of_1500_byte_frames() {
        assert_eq!(gbps(1.0, 1500), 12.0);
    }
}
