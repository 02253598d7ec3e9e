//! The replay file: a node configuration (the dataplane's [`NodeConfig`], exactly as srmigd
//! reads it) plus an optional list of `[[events]]` applied mid-stream.
//!
//! ```toml
//! # ... every NodeConfig field (locator, ports, sids, vms, ...) ...
//!
//! [[events]]
//! after_packet = 3      # after the 3rd input packet (merged time order) has been processed
//! vm = "vm1"
//! state = "paused"
//!
//! [[events]]
//! at_ms = 20.0          # at 20 ms after the first input packet's timestamp
//! vm = "vm1"
//! state = "running"
//! ```

use std::path::Path;

use serde::Deserialize;
use srmig_dataplane::{NodeConfig, VmState};

/// Errors loading a replay file; each names the file and, where it can, the field.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
}

/// When an event happens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EventTime {
    /// After this many input packets have been processed (1 = after the first).
    AfterPacket(usize),
    /// At this time after the first input packet, in milliseconds.
    AtMs(f64),
}

/// A VM state change applied mid-stream (what srmigd does on a hypervisor event).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub time: EventTime,
    pub vm: String,
    pub state: VmState,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    after_packet: Option<usize>,
    at_ms: Option<f64>,
    vm: String,
    state: VmState,
}

/// A node configuration plus its mid-stream events.
#[derive(Debug, Clone)]
pub struct ReplayConfig {
    pub node: NodeConfig,
    pub events: Vec<Event>,
}

impl ReplayConfig {
    pub fn load(path: &Path) -> Result<ReplayConfig, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut cfg = ReplayConfig::parse(&text).map_err(|message| LoadError::Parse {
            path: path.display().to_string(),
            message,
        })?;
        // HMAC secrets, relative to the replay file's directory (as srmigd reads them).
        let dir = path.parent().unwrap_or(Path::new("."));
        cfg.node
            .load_hmac_secrets(dir, |p| std::fs::read(p))
            .map_err(|e| LoadError::Parse {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
        Ok(cfg)
    }

    /// Parses the TOML text. The message of an error names the offending field.
    pub fn parse(text: &str) -> Result<ReplayConfig, String> {
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
        let raw_events = table.remove("events");
        let node = NodeConfig::deserialize(toml::Value::Table(table)).map_err(|e| e.to_string())?;
        let mut events = Vec::new();
        if let Some(value) = raw_events {
            let list: Vec<RawEvent> =
                Vec::deserialize(value).map_err(|e| format!("events: {e}"))?;
            for (i, raw) in list.into_iter().enumerate() {
                let time = match (raw.after_packet, raw.at_ms) {
                    (Some(n), None) => EventTime::AfterPacket(n),
                    (None, Some(ms)) if ms.is_finite() && ms >= 0.0 => EventTime::AtMs(ms),
                    (None, Some(ms)) => {
                        return Err(format!(
                            "events[{i}].at_ms: {ms} is not a time (a finite number of milliseconds >= 0)"
                        ))
                    }
                    _ => {
                        return Err(format!(
                            "events[{i}]: give exactly one of 'after_packet' or 'at_ms'"
                        ))
                    }
                };
                if !node.vms.iter().any(|v| v.name == raw.vm) {
                    return Err(format!("events[{i}].vm: no VM named \"{}\"", raw.vm));
                }
                events.push(Event {
                    time,
                    vm: raw.vm,
                    state: raw.state,
                });
            }
        }
        Ok(ReplayConfig { node, events })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: &str = r#"
locator = "fc00:0:2::/48"
source_address = "fc00:0:2::1"
gateway = { address = "2001:db8:100::1", mac = "02:00:00:00:00:01" }
[[ports]]
name = "up0"
kind = "uplink"
mac = "02:00:00:00:02:00"
peer_mac = "02:00:00:00:ff:02"
[[ports]]
name = "tap"
kind = "vm"
mac = "02:00:00:00:02:01"
[[vms]]
name = "vm1"
addresses = ["2001:db8:100::10"]
mac = "02:00:00:00:10:10"
port = "tap"
"#;

    #[test]
    fn events_are_parsed_beside_the_node_config() {
        let text = format!(
            "{NODE}\n[[events]]\nafter_packet = 2\nvm = \"vm1\"\nstate = \"paused\"\n\
             [[events]]\nat_ms = 1.5\nvm = \"vm1\"\nstate = \"running\"\n"
        );
        let cfg = ReplayConfig::parse(&text).expect("valid");
        assert_eq!(cfg.events.len(), 2);
        assert_eq!(cfg.events[0].time, EventTime::AfterPacket(2));
        assert_eq!(cfg.events[0].state, VmState::Paused);
        assert_eq!(cfg.events[1].time, EventTime::AtMs(1.5));
        assert_eq!(cfg.node.vms.len(), 1);
    }

    #[test]
    fn event_errors_name_the_field() {
        let both = format!(
            "{NODE}\n[[events]]\nafter_packet = 2\nat_ms = 1.0\nvm = \"vm1\"\nstate = \"paused\"\n"
        );
        assert!(ReplayConfig::parse(&both)
            .expect_err("both times")
            .contains("events[0]: give exactly one"));
        let unknown_vm =
            format!("{NODE}\n[[events]]\nafter_packet = 2\nvm = \"vm9\"\nstate = \"paused\"\n");
        assert!(ReplayConfig::parse(&unknown_vm)
            .expect_err("unknown vm")
            .contains("events[0].vm: no VM named \"vm9\""));
        let bad_state =
            format!("{NODE}\n[[events]]\nafter_packet = 2\nvm = \"vm1\"\nstate = \"sleeping\"\n");
        assert!(ReplayConfig::parse(&bad_state)
            .expect_err("bad state")
            .contains("events"));
        let negative =
            format!("{NODE}\n[[events]]\nat_ms = -1.0\nvm = \"vm1\"\nstate = \"paused\"\n");
        assert!(ReplayConfig::parse(&negative)
            .expect_err("negative")
            .contains("events[0].at_ms"));
    }

    #[test]
    fn unknown_node_fields_are_rejected_with_their_name() {
        let text = format!("{NODE}\nlocatr = \"fc00::/48\"\n");
        let err = ReplayConfig::parse(&text).expect_err("typo");
        assert!(err.contains("locatr"), "{err}");
    }
}
