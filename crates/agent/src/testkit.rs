//! A node config and host configs for tests (here and in other crates: feature `testkit`).

use srmig_api::HostConfig;
use srmig_dataplane::NodeConfig;

/// A two-port node (uplink `up0`, VM port `vm0`) with two VMs that may attach to `vm0`.
pub fn node_toml() -> &'static str {
    r#"
locator = "fc00:0:1::/48"
source_address = "2001:db8:ff::1"
infrastructure_prefixes = ["fc00::/16", "2001:db8:ff::/48"]
gateway = { address = "2001:db8:a::1", mac = "02:00:00:00:00:01" }

[[ports]]
name = "up0"
kind = "uplink"
mac = "02:00:00:00:01:00"
peer_mac = "02:00:00:00:ff:00"

[[ports]]
name = "vm0"
kind = "vm"
mac = "02:00:00:00:01:01"

[[routes]]
prefix = "::/0"
port = "up0"

[[sids]]
sid = "fc00:0:1::d6"
behavior = "End.DT6"

[[vms]]
name = "web1"
addresses = ["2001:db8:a::10"]
mac = "52:54:00:00:00:10"
port = "vm0"
state = "running"

[[vms]]
name = "db1"
addresses = ["2001:db8:a::20"]
mac = "52:54:00:00:00:20"
port = "vm0"
"#
}

pub fn base() -> NodeConfig {
    toml::from_str(node_toml()).expect("test node config")
}

pub fn hc_json(generation: u64) -> String {
    format!(
        r#"{{"generation":{generation},
        "mappings":[{{"vm":"web1","addresses":["2001:db8:a::10"],"steering":"native"}},
                    {{"vm":"far1","addresses":["2001:db8:a::30"],
                      "steering":{{"encaps":{{"segments":["fc00:0:2::e5","fc00:0:3::eb"],"headend":"H.Encaps"}}}}}}],
        "local_vms":[{{"vm":"web1","addresses":["2001:db8:a::10"],"mac":"52:54:00:00:00:10"}}],
        "sids":[{{"behavior":"End.DT6","sid":"fc00:0:1::d6"}},
                {{"behavior":"End.S","sid":"fc00:0:1::e5","vm":"web1"}},
                {{"behavior":"End.SBUF","sid":"fc00:0:1::eb","vm":"db1","mode":"buffer"}},
                {{"behavior":"End.SBUF","sid":"fc00:0:1::eb","vm":"web1","mode":"buffer"}}]}}"#
    )
}

pub fn hc(generation: u64) -> HostConfig {
    serde_json::from_str(&hc_json(generation)).expect("test host config")
}
