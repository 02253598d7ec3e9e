//! `GET /metrics`: OpenMetrics text (`application/openmetrics-text; version=1.0.0`) rendered
//! from a [`HostStatus`] snapshot. Counter families are named without the `_total` suffix,
//! their samples with it, as the OpenMetrics specification requires; the body ends in `# EOF`.
//!
//! | family | type | labels |
//! |---|---|---|
//! | `srmig_port_rx_packets`, `_rx_bytes`, `_tx_packets`, `_tx_bytes` | counter | `port` |
//! | `srmig_port_io_errors` | counter | `port`, `kind` (`rx_truncated`, `rx_gso_bad`, `rx_ring_drop`, `rx_bad_csum_meta`, `rx_error`, `tx_error`, `tx_no_link`, `tx_queue_full`, `rx_bad_records`) |
//! | `srmig_port_qemu_recovered` | counter | `port` (frames QEMU had not read at a STOP, re-steered) |
//! | `srmig_port_qemu_stream_resets` | counter | `port` (streams a QEMU reset, closing with frames unread: a source QEMU's exit) |
//! | `srmig_port_qemu_recovery_counted` | counter | `port` (take-backs decided by the guest's buffer count: exact) |
//! | `srmig_port_qemu_recovery_count_refused` | counter | `port` (take-backs where that count could not be used) |
//! | `srmig_port_resteered` | counter | `port` (frames for a VM port whose interface had just gone, re-steered) |
//! | `srmig_port_attached` | gauge | `port` |
//! | `srmig_sid_packets`, `srmig_sid_bytes` | counter | `sid`, `behavior` |
//! | `srmig_policy_packets`, `srmig_policy_bytes` | counter | `policy` |
//! | `srmig_vm_rx_packets`, `_tx_packets`, `_held`, `_released`, `_expired`, `_dropped`, `_fenced` | counter | `vm` |
//! | `srmig_vm_state` | gauge (1 for the current state) | `vm`, `state` |
//! | `srmig_buffer_packets`, `srmig_buffer_bytes` | gauge | `vm` (per VM) |
//! | `srmig_buffer_total_packets`, `srmig_buffer_total_bytes` | gauge | |
//! | `srmig_drops` | counter | `reason` (every [`srmig_dataplane::DropReason`]) |
//! | `srmig_icmp_generated` | counter | `kind` |
//! | `srmig_fence_events` | counter | `kind` (`markers_sent`, `markers_unsent`, `markers_received`, `markers_duplicate`, `markers_late`, `markers_unarmed`, `held`, `released`, `timeouts`, `bypassed`, `dropped`, `arrivals_dropped`, `markers_relayed`: the commit fence, `srmig_dataplane::fence`) |
//! | `srmig_fence_holding_packets` | gauge | |
//! | `srmig_config_generation` | gauge | |
//! | `srmig_release_latency_seconds` | histogram | (from a VM's resume here to its first frame, released from End.SBUF or a fence, handed to the kernel) |
//! | `srmig_buffer_hold_seconds` | histogram | (how long the oldest packet of each End.SBUF release had waited when its VM resumed here: the network downtime its inbound traffic saw at this host) |

use std::fmt::Write;

use srmig_api::HostStatus;

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Escapes a label value (backslash, double quote, newline).
fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, ty: &str, help: &str) {
        let _ = writeln!(self.0, "# TYPE {name} {ty}");
        let _ = writeln!(self.0, "# HELP {name} {help}");
    }

    fn sample(&mut self, name: &str, suffix: &str, labels: &[(&str, &str)], v: u64) {
        self.0.push_str(name);
        self.0.push_str(suffix);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape(val));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {v}");
    }

    fn counter<'a>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Vec<(&'a str, &'a str)>, u64)>,
    ) {
        self.family(name, "counter", help);
        for (l, v) in samples {
            self.sample(name, "_total", &l, v);
        }
    }

    fn gauge<'a>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Vec<(&'a str, &'a str)>, u64)>,
    ) {
        self.family(name, "gauge", help);
        for (l, v) in samples {
            self.sample(name, "", &l, v);
        }
    }
}

impl Out {
    /// One OpenMetrics histogram in seconds: bucket bounds `le_s` (ascending), the count of
    /// each bucket (not cumulative; one more than the bounds), all observations, their sum.
    fn histogram(
        &mut self,
        name: &str,
        help: &str,
        le_s: impl Iterator<Item = f64>,
        counts: &[u64],
        count: u64,
        sum_ns: u64,
    ) {
        let _ = writeln!(self.0, "# TYPE {name} histogram");
        let _ = writeln!(self.0, "# UNIT {name} seconds");
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let mut cumulative = 0u64;
        for (i, le) in le_s.enumerate() {
            cumulative += counts.get(i).copied().unwrap_or(0);
            let _ = writeln!(self.0, "{name}_bucket{{le=\"{le:?}\"}} {cumulative}");
        }
        let _ = writeln!(self.0, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(self.0, "{name}_count {count}");
        let _ = writeln!(self.0, "{name}_sum {:?}", sum_ns as f64 / 1e9);
    }

    /// `srmig_buffer_hold_seconds`: [`srmig_api::HoldStatus`].
    fn hold_histogram(&mut self, h: &srmig_api::HoldStatus) {
        self.histogram(
            "srmig_buffer_hold_seconds",
            "How long the oldest packet of each End.SBUF release had been held when its VM resumed here.",
            h.le_ms.iter().map(|&le| le as f64 / 1000.0),
            &h.counts,
            h.count,
            h.sum_ns,
        );
    }

    /// `srmig_release_latency_seconds`: [`srmig_api::ReleaseLatencyStatus`].
    fn release_histogram(&mut self, h: &srmig_api::ReleaseLatencyStatus) {
        self.histogram(
            "srmig_release_latency_seconds",
            "From a VM's resume here to its first frame (released from End.SBUF or a fence) handed to the kernel.",
            h.le_us.iter().map(|&le| le as f64 / 1e6),
            &h.counts,
            h.count,
            h.sum_ns,
        );
    }
}

/// Renders the snapshot as OpenMetrics text.
pub fn render(s: &HostStatus) -> String {
    let mut o = Out(String::with_capacity(16 << 10));
    fn port(p: &srmig_api::PortStatus) -> Vec<(&'static str, &str)> {
        vec![("port", p.name.as_str())]
    }
    o.counter(
        "srmig_port_rx_packets",
        "Frames received on a port.",
        s.ports.iter().map(|p| (port(p), p.rx.packets)),
    );
    o.counter(
        "srmig_port_rx_bytes",
        "Bytes received on a port.",
        s.ports.iter().map(|p| (port(p), p.rx.bytes)),
    );
    o.counter(
        "srmig_port_tx_packets",
        "Frames sent on a port (forwarded, generated and released).",
        s.ports.iter().map(|p| (port(p), p.tx.packets)),
    );
    o.counter(
        "srmig_port_tx_bytes",
        "Bytes sent on a port.",
        s.ports.iter().map(|p| (port(p), p.tx.bytes)),
    );
    o.counter(
        "srmig_port_io_errors",
        "Frames lost at the socket level, by kind.",
        s.ports.iter().flat_map(|p| {
            let io = p.io;
            [
                ("rx_truncated", io.rx_truncated),
                ("rx_gso_bad", io.rx_gso_bad),
                ("rx_ring_drop", io.rx_ring_drops),
                ("rx_bad_csum_meta", io.rx_bad_csum_meta),
                ("rx_error", io.rx_errors),
                ("tx_error", io.tx_errors),
                ("tx_no_link", io.tx_no_link),
                ("tx_queue_full", io.tx_queue_full),
                ("rx_bad_records", io.rx_bad_records),
            ]
            .into_iter()
            .map(move |(k, v)| (vec![("port", p.name.as_str()), ("kind", k)], v))
        }),
    );
    o.counter(
        "srmig_port_qemu_stream_resets",
        "Streams a QEMU reset (it closed with frames srmigd had written unread: a source QEMU exiting after its VM left).",
        s.ports.iter().map(|p| (port(p), p.io.rx_resets)),
    );
    o.counter(
        "srmig_port_qemu_recovered",
        "Frames a QEMU had not read when its VM stopped, re-steered to the VM's new location.",
        s.ports.iter().map(|p| (port(p), p.io.recovered)),
    );
    o.counter(
        "srmig_port_qemu_recovery_counted",
        "Take-backs at a QEMU's pre-switchover pause decided by the guest's count of receive buffers (exact).",
        s.ports.iter().map(|p| (port(p), p.io.recovery_counted)),
    );
    o.counter(
        "srmig_port_qemu_recovery_count_refused",
        "Take-backs where the guest's count of receive buffers could not be used (older rules decided).",
        s.ports.iter().map(|p| (port(p), p.io.recovery_count_refused)),
    );
    o.counter(
        "srmig_port_resteered",
        "Frames for a VM port whose interface had just gone (down or moved away), re-steered to the VM's new location.",
        s.ports.iter().map(|p| (port(p), p.io.resteered)),
    );
    o.gauge(
        "srmig_port_attached",
        "1 while the port's interface is up with carrier and has a socket.",
        s.ports.iter().map(|p| (port(p), u64::from(p.attached))),
    );
    let sids: Vec<(String, &str, u64, u64)> = s
        .sids
        .iter()
        .map(|x| {
            (
                x.sid.to_string(),
                x.behavior.as_str(),
                x.traffic.packets,
                x.traffic.bytes,
            )
        })
        .collect();
    o.counter(
        "srmig_sid_packets",
        "Packets that matched a local SID.",
        sids.iter()
            .map(|(sid, b, p, _)| (vec![("sid", sid.as_str()), ("behavior", *b)], *p)),
    );
    o.counter(
        "srmig_sid_bytes",
        "Bytes that matched a local SID.",
        sids.iter()
            .map(|(sid, b, _, by)| (vec![("sid", sid.as_str()), ("behavior", *b)], *by)),
    );
    o.counter(
        "srmig_policy_packets",
        "Packets steered into an SR policy.",
        s.policies
            .iter()
            .map(|p| (vec![("policy", p.name.as_str())], p.traffic.packets)),
    );
    o.counter(
        "srmig_policy_bytes",
        "Bytes steered into an SR policy.",
        s.policies
            .iter()
            .map(|p| (vec![("policy", p.name.as_str())], p.traffic.bytes)),
    );
    type VmField = fn(&srmig_api::VmStatus) -> u64;
    let vm_counters: [(&str, &str, VmField); 9] = [
        ("srmig_vm_rx_packets", "Packets received from a VM.", |v| {
            v.rx.packets
        }),
        ("srmig_vm_rx_bytes", "Bytes received from a VM.", |v| {
            v.rx.bytes
        }),
        ("srmig_vm_tx_packets", "Packets delivered to a VM.", |v| {
            v.tx.packets
        }),
        ("srmig_vm_tx_bytes", "Bytes delivered to a VM.", |v| {
            v.tx.bytes
        }),
        (
            "srmig_vm_held",
            "Packets put in a VM's End.SBUF buffer.",
            |v| v.held,
        ),
        (
            "srmig_vm_released",
            "Packets released from a VM's buffer.",
            |v| v.released,
        ),
        (
            "srmig_vm_expired",
            "Packets that expired in a VM's buffer.",
            |v| v.expired,
        ),
        (
            "srmig_vm_dropped",
            "Packets for a VM that were dropped.",
            |v| v.dropped,
        ),
        (
            "srmig_vm_fenced",
            "Direct packets for a VM held by the commit fence until their ingress's marker.",
            |v| v.fenced,
        ),
    ];
    for (name, help, f) in vm_counters {
        o.counter(
            name,
            help,
            s.vms.iter().map(|v| (vec![("vm", v.name.as_str())], f(v))),
        );
    }
    o.gauge(
        "srmig_vm_state",
        "1 for the VM's current state on this host.",
        s.vms.iter().flat_map(|v| {
            ["absent", "running", "paused"].into_iter().map(move |st| {
                (
                    vec![("vm", v.name.as_str()), ("state", st)],
                    u64::from(v.state.to_string() == st),
                )
            })
        }),
    );
    o.gauge(
        "srmig_buffer_packets",
        "Packets held in a VM's End.SBUF buffer.",
        s.vms
            .iter()
            .map(|v| (vec![("vm", v.name.as_str())], v.buffer.packets)),
    );
    o.gauge(
        "srmig_buffer_bytes",
        "Bytes held in a VM's End.SBUF buffer.",
        s.vms
            .iter()
            .map(|v| (vec![("vm", v.name.as_str())], v.buffer.bytes)),
    );
    o.gauge(
        "srmig_buffer_total_packets",
        "Packets held in all End.SBUF buffers.",
        [(vec![], s.buffer.packets)],
    );
    o.gauge(
        "srmig_buffer_total_bytes",
        "Bytes held in all End.SBUF buffers.",
        [(vec![], s.buffer.bytes)],
    );
    o.counter(
        "srmig_drops",
        "Packets dropped by the dataplane, by reason.",
        s.drops.iter().map(|(r, n)| (vec![("reason", r)], n)),
    );
    let ic = s.icmp;
    o.counter(
        "srmig_icmp_generated",
        "ICMPv6 errors and NDP answers, by outcome.",
        [
            ("errors_sent", ic.errors_sent),
            ("rate_limited", ic.rate_limited),
            ("queue_full", ic.queue_full),
            ("suppressed", ic.suppressed),
            ("ndp_answered", ic.ndp_answered),
        ]
        .into_iter()
        .map(|(k, v)| (vec![("kind", k)], v)),
    );
    let f = s.fence;
    o.counter(
        "srmig_fence_events",
        "Commit-fence markers and held packets, by kind.",
        [
            ("markers_sent", f.markers_sent),
            ("markers_unsent", f.markers_unsent),
            ("markers_received", f.markers_received),
            ("markers_duplicate", f.markers_duplicate),
            ("markers_late", f.markers_late),
            ("markers_unarmed", f.markers_unarmed),
            ("held", f.held),
            ("released", f.released),
            ("timeouts", f.timeouts),
            ("bypassed", f.bypassed),
            ("dropped", f.dropped),
            ("arrivals_dropped", f.arrivals_dropped),
            ("markers_relayed", f.markers_relayed),
        ]
        .into_iter()
        .map(|(k, v)| (vec![("kind", k)], v)),
    );
    o.gauge(
        "srmig_fence_holding_packets",
        "Packets commit fences hold now.",
        [(vec![], f.holding)],
    );
    o.gauge(
        "srmig_config_generation",
        "Host config generation in force (0 before the first).",
        [(vec![], s.generation.unwrap_or(0))],
    );
    o.hold_histogram(&s.holds);
    o.release_histogram(&s.release_latency);
    o.0.push_str("# EOF\n");
    o.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use srmig_agent::testkit::{base, hc};
    use srmig_agent::Agent;

    #[test]
    fn escapes_label_values() {
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape("x\ny"), "x\\ny");
    }

    #[test]
    fn well_formed_openmetrics() {
        let mut n =
            Agent::new(srmig_api::HostId::new("h1").expect("name"), base(), 1).expect("agent");
        n.apply_host_config(hc(3)).expect("apply");
        let text = render(&n.status(&[]));
        assert!(text.ends_with("# EOF\n"));
        assert_eq!(text.matches("# EOF").count(), 1);
        let mut families = std::collections::BTreeSet::new();
        let mut current = String::new();
        let mut current_type = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, ty) = rest.split_once(' ').expect("type line");
                assert!(families.insert(name.to_owned()), "family {name} twice");
                current = name.to_owned();
                current_type = ty.to_owned();
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            // Every sample belongs to the family declared just above it.
            let (series, value) = line.rsplit_once(' ').expect("sample line");
            let metric = series.split('{').next().expect("name");
            if current_type == "histogram" {
                value.parse::<f64>().expect("number");
                let suffix = metric
                    .strip_prefix(current.as_str())
                    .expect("family prefix");
                assert!(["_bucket", "_count", "_sum"].contains(&suffix), "{line}");
                continue;
            }
            value.parse::<u64>().expect("integer value");
            let expected = if current_type == "counter" {
                format!("{current}_total")
            } else {
                current.clone()
            };
            assert_eq!(metric, expected, "{line}");
        }
        for needle in [
            "srmig_sid_packets_total{sid=\"fc00:0:1::e5\",behavior=\"End.S\"} 0",
            "srmig_drops_total{reason=\"BufferFull\"} 0",
            "srmig_vm_state{vm=\"web1\",state=\"running\"} 1",
            "srmig_vm_state{vm=\"db1\",state=\"absent\"} 1",
            "srmig_buffer_packets{vm=\"db1\"} 0",
            "srmig_policy_packets_total{policy=\"vm:far1\"} 0",
            "srmig_port_attached{port=\"up0\"} 0",
            "srmig_config_generation 3",
            "srmig_buffer_hold_seconds_bucket{le=\"0.001\"} 0",
            "srmig_buffer_hold_seconds_bucket{le=\"+Inf\"} 0",
            "srmig_buffer_hold_seconds_count 0",
        ] {
            assert!(text.contains(needle), "missing {needle}\n{text}");
        }
    }

    #[test]
    fn hold_times_are_a_cumulative_histogram() {
        let mut n =
            Agent::new(srmig_api::HostId::new("h1").expect("name"), base(), 1).expect("agent");
        n.apply_host_config(hc(3)).expect("apply");
        let mut status = n.status(&[]);
        status.holds = srmig_api::HoldStatus {
            le_ms: vec![10, 250, 1000],
            counts: vec![1, 2, 0, 1],
            count: 4,
            sum_ns: 2_600_000_000,
        };
        let text = render(&status);
        for line in [
            "srmig_buffer_hold_seconds_bucket{le=\"0.01\"} 1",
            "srmig_buffer_hold_seconds_bucket{le=\"0.25\"} 3",
            "srmig_buffer_hold_seconds_bucket{le=\"1.0\"} 3",
            "srmig_buffer_hold_seconds_bucket{le=\"+Inf\"} 4",
            "srmig_buffer_hold_seconds_count 4",
            "srmig_buffer_hold_seconds_sum 2.6",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }
}
