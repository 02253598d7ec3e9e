//! VMs and their observed state.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::ids::{HostId, MacAddr, NetworkId, Timestamp, VmId};

/// A VM as registered with the controller.
///
/// Golden JSON:
/// ```json
/// {"name":"web1","addresses":["2001:db8:a::10"],"mac":"52:54:00:00:00:10","host":"h1"}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmInfo {
    /// `name`: the VM's unique name.
    pub name: VmId,
    /// `addresses`: the VM's addresses, IPv6 and IPv4 (a dual-stack VM lists both). They
    /// identify the VM and never change when it moves; at least one, none shared with
    /// another VM.
    pub addresses: Vec<IpAddr>,
    /// `mac`: the VM's MAC address (its attachment to the virtual router).
    pub mac: MacAddr,
    /// `host`: the host the VM runs on. In the controller's model this is the VM's *mapping*
    /// (the locator mapping of the paper); it changes when a migration commits.
    pub host: HostId,
    /// `network` (optional): the virtual network the VM belongs to. Hosts learn a networked
    /// VM's mapping only while a VM of the same network is local to them (runs there, or is
    /// migrating to or from there), so each host holds its tenants' VMs, not the whole data
    /// center's. A VM without a network is reachable from every host (omitted from JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkId>,
}

/// The state of a VM on one host, as observed by that host's srmigd.
///
/// JSON: `"absent"`, `"running"` or `"paused"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VmState {
    /// The VM does not exist on this host (never did, or has left).
    Absent,
    /// The VM runs here and its attachment is up: packets can be delivered.
    Running,
    /// The VM exists here but is stopped (for instance during the stop-and-copy phase of a
    /// migration): packets delivered now would be lost.
    Paused,
}

impl fmt::Display for VmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VmState::Absent => "absent",
            VmState::Running => "running",
            VmState::Paused => "paused",
        })
    }
}

/// A VM state change observed by a host and reported to the controller.
///
/// Golden JSON:
/// ```json
/// {"vm":"web1","host":"h2","state":"running","at":1700000000175,"boot_epoch":42}
/// ```
/// (`boot_epoch`, the reporting srmigd's boot epoch, is optional.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmStateReport {
    /// `vm`: the VM observed.
    pub vm: VmId,
    /// `host`: the reporting host (where the state was observed).
    pub host: HostId,
    /// `state`: the VM's state on that host.
    pub state: VmState,
    /// `at`: when the change was observed, in milliseconds on the reporter's clock
    /// (informational; the controller orders events by arrival).
    pub at: Timestamp,
    /// `boot_epoch`: the reporting srmigd's boot epoch (new at every start), if it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_epoch: Option<u64>,
    /// `last_delivery_us`: with `paused`, when srmigd last handed the VM a frame before it saw
    /// the pause (wall clock, microseconds since the Unix epoch); the controller's network
    /// downtime starts there ([`crate::DeliveryRecord`]). Absent if srmigd never delivered
    /// to the VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_delivery_us: Option<u64>,
}

/// A VM resumed on this host and got its first frame: the destination's srmigd tells the
/// controller when, and what End.SBUF and the commit fence did for the VM (`POST
/// /v1/release`). The controller records it in the migration to this host
/// ([`crate::DeliveryRecord`]) and derives the release latency and the network downtime.
///
/// Golden JSON:
/// ```json
/// {"vm":"web1","host":"h2","release":{"resumed_at_us":1700000000680200,
///  "first_delivery_us":1700000000680500,"held":180,"released":180,"fenced":3,"dropped":0}}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseReport {
    /// `vm`: the VM that resumed.
    pub vm: VmId,
    /// `host`: the reporting host (where it resumed).
    pub host: HostId,
    /// `release`: the figures.
    pub release: crate::ReleaseFigures,
}

/// A commit-fence marker that reached a VM's destination: the destination's srmigd tells the
/// controller which ingress has switched to the direct path and has nothing left on the old
/// SR path (`srmig_dataplane::fence`). The controller removes End.S and End.SBUF only after
/// the marker of every host arrived (or a bounded wait), so no straggler of the old path
/// meets a missing SID and the fence never opens early.
///
/// Golden JSON:
/// ```json
/// {"vm":"web1","host":"h2","ingress":"2001:db8:ff::1","at":1700000000180}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FenceReport {
    /// `vm`: the VM the marker is for.
    pub vm: VmId,
    /// `host`: the reporting host (the migration's destination).
    pub host: HostId,
    /// `ingress`: the marker's source, the underlay address of the host that sent it
    /// ([`crate::HostInfo::underlay`]).
    pub ingress: Ipv6Addr,
    /// `at`: when the marker arrived, in milliseconds on the reporter's clock (informational).
    pub at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_info_golden_json() {
        let golden = r#"{"name":"web1","addresses":["2001:db8:a::10"],"mac":"52:54:00:00:00:10","host":"h1"}"#;
        let vm = VmInfo {
            name: VmId::new("web1").expect("name"),
            addresses: vec!["2001:db8:a::10".parse().expect("addr")],
            mac: "52:54:00:00:00:10".parse().expect("mac"),
            host: HostId::new("h1").expect("name"),
            network: None,
        };
        assert_eq!(serde_json::to_string(&vm).expect("serialize"), golden);
        assert_eq!(
            serde_json::from_str::<VmInfo>(golden).expect("deserialize"),
            vm
        );
    }

    #[test]
    fn vm_info_with_a_network_golden_json() {
        let golden = r#"{"name":"web1","addresses":["2001:db8:a::10"],"mac":"52:54:00:00:00:10","host":"h1","network":"tenant-a"}"#;
        let vm = VmInfo {
            name: VmId::new("web1").expect("name"),
            addresses: vec!["2001:db8:a::10".parse().expect("addr")],
            mac: "52:54:00:00:00:10".parse().expect("mac"),
            host: HostId::new("h1").expect("name"),
            network: Some(NetworkId::new("tenant-a").expect("name")),
        };
        assert_eq!(serde_json::to_string(&vm).expect("serialize"), golden);
        assert_eq!(
            serde_json::from_str::<VmInfo>(golden).expect("deserialize"),
            vm
        );
        let bad = golden.replace("tenant-a", "tenant a");
        assert!(serde_json::from_str::<VmInfo>(&bad).is_err());
    }

    #[test]
    fn state_report_golden_json() {
        let golden =
            r#"{"vm":"web1","host":"h2","state":"running","at":1700000000175,"boot_epoch":42}"#;
        let mut report = VmStateReport {
            vm: VmId::new("web1").expect("name"),
            host: HostId::new("h2").expect("name"),
            state: VmState::Running,
            at: Timestamp(1_700_000_000_175),
            boot_epoch: Some(42),
            last_delivery_us: None,
        };
        assert_eq!(serde_json::to_string(&report).expect("serialize"), golden);
        assert_eq!(
            serde_json::from_str::<VmStateReport>(golden).expect("deserialize"),
            report
        );
        report.boot_epoch = None;
        let without = r#"{"vm":"web1","host":"h2","state":"running","at":1700000000175}"#;
        assert_eq!(serde_json::to_string(&report).expect("serialize"), without);
        assert_eq!(
            serde_json::from_str::<VmStateReport>(without).expect("deserialize"),
            report
        );
        for (state, text) in [
            (VmState::Absent, "\"absent\""),
            (VmState::Running, "\"running\""),
            (VmState::Paused, "\"paused\""),
        ] {
            assert_eq!(serde_json::to_string(&state).expect("serialize"), text);
            assert_eq!(format!("\"{state}\""), text);
        }
        assert!(serde_json::from_str::<VmState>("\"Running\"").is_err());
    }

    #[test]
    fn fence_report_golden_json() {
        let golden = r#"{"vm":"web1","host":"h2","ingress":"2001:db8:ff::1","at":1700000000180}"#;
        let report = FenceReport {
            vm: VmId::new("web1").expect("name"),
            host: HostId::new("h2").expect("name"),
            ingress: "2001:db8:ff::1".parse().expect("addr"),
            at: Timestamp(1_700_000_000_180),
        };
        assert_eq!(serde_json::to_string(&report).expect("serialize"), golden);
        assert_eq!(
            serde_json::from_str::<FenceReport>(golden).expect("deserialize"),
            report
        );
        let unknown = r#"{"vm":"web1","host":"h2","ingress":"2001:db8:ff::1","at":1,"x":1}"#;
        assert!(serde_json::from_str::<FenceReport>(unknown).is_err());
    }

    #[test]
    fn paused_report_with_last_delivery_golden_json() {
        let golden = r#"{"vm":"web1","host":"h1","state":"paused","at":1700000000500,"last_delivery_us":1700000000500100}"#;
        let report = VmStateReport {
            vm: VmId::new("web1").expect("name"),
            host: HostId::new("h1").expect("name"),
            state: VmState::Paused,
            at: Timestamp(1_700_000_000_500),
            boot_epoch: None,
            last_delivery_us: Some(1_700_000_000_500_100),
        };
        assert_eq!(serde_json::to_string(&report).expect("serialize"), golden);
        assert_eq!(
            serde_json::from_str::<VmStateReport>(golden).expect("deserialize"),
            report
        );
    }

    #[test]
    fn release_report_golden_json() {
        let golden = concat!(
            r#"{"vm":"web1","host":"h2","release":{"resumed_at_us":1700000000680200,"#,
            r#""first_delivery_us":1700000000680500,"held":180,"released":180,"fenced":3,"dropped":0}}"#
        );
        let report = ReleaseReport {
            vm: VmId::new("web1").expect("name"),
            host: HostId::new("h2").expect("name"),
            release: crate::ReleaseFigures {
                resumed_at_us: 1_700_000_000_680_200,
                first_delivery_us: 1_700_000_000_680_500,
                held: 180,
                released: 180,
                fenced: 3,
                dropped: 0,
            },
        };
        assert_eq!(serde_json::to_string(&report).expect("serialize"), golden);
        assert_eq!(
            serde_json::from_str::<ReleaseReport>(golden).expect("deserialize"),
            report
        );
        assert!(serde_json::from_str::<ReleaseReport>(r#"{"vm":"web1","host":"h2"}"#).is_err());
    }

    #[test]
    fn report_refuses_unknown_fields() {
        let json = r#"{"vm":"web1","host":"h2","state":"running","at":1,"why":"x"}"#;
        assert!(serde_json::from_str::<VmStateReport>(json).is_err());
    }
}
