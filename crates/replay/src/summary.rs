//! Counters as JSON, keyed by the names of the configuration (ports, SIDs, VMs, policies).

use std::collections::BTreeMap;

use serde::Serialize;
use srmig_dataplane::{Dataplane, DropReason, NodeConfig};

#[derive(Debug, Clone, Default, Serialize)]
pub struct PortSummary {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SidSummary {
    pub behavior: String,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct VmSummary {
    pub state: String,
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub held: u64,
    pub released: u64,
    pub expired: u64,
    pub dropped: u64,
    /// Packets still in its End.SBUF buffer at the end of the replay.
    pub buffered_packets: u64,
    pub buffered_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PolicySummary {
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct IcmpSummary {
    pub errors_sent: u64,
    pub rate_limited: u64,
    pub queue_full: u64,
    pub suppressed: u64,
    pub ndp_answered: u64,
    pub echo_replies: u64,
    pub arp_answered: u64,
    pub packet_too_big_sent: u64,
    pub no_route: u64,
}

/// Every counter of the dataplane after the replay.
#[derive(Debug, Clone, Serialize)]
pub struct CountersSummary {
    /// Drops per named reason (only reasons that occurred).
    pub drops: BTreeMap<&'static str, u64>,
    pub total_drops: u64,
    pub ports: BTreeMap<String, PortSummary>,
    pub sids: BTreeMap<String, SidSummary>,
    pub vms: BTreeMap<String, VmSummary>,
    pub policies: BTreeMap<String, PolicySummary>,
    pub icmp: IcmpSummary,
}

pub fn counters_summary(dp: &Dataplane, node: &NodeConfig) -> CountersSummary {
    let c = dp.counters();
    let drops = DropReason::ALL
        .iter()
        .map(|r| (r.as_str(), c.drops(*r)))
        .filter(|(_, n)| *n > 0)
        .collect();
    let ports = dp
        .port_names()
        .map(|(id, name)| {
            let p = c.port(id);
            (
                name.to_owned(),
                PortSummary {
                    rx_packets: p.rx.packets,
                    rx_bytes: p.rx.bytes,
                    tx_packets: p.tx.packets,
                    tx_bytes: p.tx.bytes,
                },
            )
        })
        .collect();
    let sids = dp
        .sids()
        .map(|(id, behavior, cfg)| {
            let pb = c.sid(id);
            (
                cfg.sid.to_string(),
                SidSummary {
                    behavior: behavior.to_string(),
                    packets: pb.packets,
                    bytes: pb.bytes,
                },
            )
        })
        .collect();
    let vms = node
        .vms
        .iter()
        .filter_map(|v| dp.vm_id(&v.name).map(|id| (v, id)))
        .map(|(v, id)| {
            let vc = c.vm(id);
            let occ = c.buffer_occupancy(id);
            let state = dp
                .vm_state(id)
                .map(|s| format!("{s:?}").to_lowercase())
                .unwrap_or_default();
            (
                v.name.clone(),
                VmSummary {
                    state,
                    rx_packets: vc.rx.packets,
                    tx_packets: vc.tx.packets,
                    held: vc.held,
                    released: vc.released,
                    expired: vc.expired,
                    dropped: vc.dropped,
                    buffered_packets: occ.packets,
                    buffered_bytes: occ.bytes,
                },
            )
        })
        .collect();
    let policies = node
        .policies
        .iter()
        .filter_map(|p| dp.policy_id(&p.name).map(|id| (p, id)))
        .map(|(p, id)| {
            let pb = c.policy(id);
            (
                p.name.clone(),
                PolicySummary {
                    packets: pb.packets,
                    bytes: pb.bytes,
                },
            )
        })
        .collect();
    let i = c.icmp();
    CountersSummary {
        drops,
        total_drops: c.total_drops(),
        ports,
        sids,
        vms,
        policies,
        icmp: IcmpSummary {
            errors_sent: i.errors_sent,
            rate_limited: i.rate_limited,
            queue_full: i.queue_full,
            suppressed: i.suppressed,
            ndp_answered: i.ndp_answered,
            echo_replies: i.echo_replies,
            arp_answered: i.arp_answered,
            packet_too_big_sent: i.packet_too_big_sent,
            no_route: i.no_route,
        },
    }
}
