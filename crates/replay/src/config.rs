//! The replay file: node.toml as srmigd reads it, parsed by the one shared schema
//! ([`srmig_dataplane::node_file`]), whose `[[events]]` apply VM state changes mid-stream.
//!
//! srmigd's own tables (`[[qemu]]`, `[io]`) are checked like srmigd checks them, then ignored:
//! [`ReplayConfig::notes`] says so (and that ports without `mtu` get no MTU check offline,
//! where srmigd would use the interface's), and the summary repeats it.
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

pub use srmig_dataplane::node_file::{Event, EventTime};
use srmig_dataplane::node_file::{FileError, NodeFile};
use srmig_dataplane::NodeConfig;

/// Errors loading a replay file; each names the file and, where it can, the field.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid node configuration {path}")]
    Parse {
        path: String,
        #[source]
        source: FileError,
    },
    /// An `[[hmac_keys]]` secret file could not be read.
    #[error("invalid node configuration {path}")]
    HmacSecret {
        path: String,
        #[source]
        source: srmig_dataplane::ConfigError,
    },
}

/// A node configuration plus its mid-stream events.
#[derive(Debug, Clone)]
pub struct ReplayConfig {
    pub node: NodeConfig,
    pub events: Vec<Event>,
    /// What of the file the replay does not reproduce offline, one sentence each.
    pub notes: Vec<String>,
}

impl ReplayConfig {
    /// A configuration without events (for programs and tests).
    pub fn new(node: NodeConfig) -> ReplayConfig {
        ReplayConfig {
            node,
            events: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn load(path: &Path) -> Result<ReplayConfig, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut cfg = ReplayConfig::parse(&text).map_err(|source| LoadError::Parse {
            path: path.display().to_string(),
            source,
        })?;
        // HMAC secrets, relative to the replay file's directory (as srmigd reads them).
        let dir = path.parent().unwrap_or(Path::new("."));
        cfg.node
            .load_hmac_secrets(dir, |p| std::fs::read(p))
            .map_err(|source| LoadError::HmacSecret {
                path: path.display().to_string(),
                source,
            })?;
        Ok(cfg)
    }

    /// Parses the TOML text as srmigd does. The message of an error names the offending
    /// field (for an event, its index: `events[1].at_ms: ...`).
    pub fn parse(text: &str) -> Result<ReplayConfig, FileError> {
        let file = NodeFile::parse(text)?;
        let notes = file.ignored_by_replay();
        Ok(ReplayConfig {
            node: file.node,
            events: file.events,
            notes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use srmig_dataplane::VmState;

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
            .to_string()
            .contains("events[0]: give exactly one"));
        let unknown_vm =
            format!("{NODE}\n[[events]]\nafter_packet = 2\nvm = \"vm9\"\nstate = \"paused\"\n");
        assert!(ReplayConfig::parse(&unknown_vm)
            .expect_err("unknown vm")
            .to_string()
            .contains("events[0].vm: no VM named \"vm9\""));
        let bad_state =
            format!("{NODE}\n[[events]]\nafter_packet = 2\nvm = \"vm1\"\nstate = \"sleeping\"\n");
        assert!(ReplayConfig::parse(&bad_state)
            .expect_err("bad state")
            .to_string()
            .contains("events"));
        let negative =
            format!("{NODE}\n[[events]]\nat_ms = -1.0\nvm = \"vm1\"\nstate = \"paused\"\n");
        assert!(ReplayConfig::parse(&negative)
            .expect_err("negative")
            .to_string()
            .contains("events[0].at_ms"));
    }

    #[test]
    fn unknown_node_fields_are_rejected_with_their_name() {
        let text = format!("{NODE}\nlocatr = \"fc00::/48\"\n");
        let err = ReplayConfig::parse(&text).expect_err("typo").to_string();
        assert!(err.contains("locatr"), "{err}");
    }

    /// Issue 10: `at_ms = 1e300` passed validation and panicked in the run.
    #[test]
    fn event_times_out_of_range_are_errors_naming_index_and_field() {
        for bad in ["1e300", "inf", "nan", "-0.5", "1.9e13"] {
            let text = format!(
                "{NODE}\n[[events]]\nafter_packet = 1\nvm = \"vm1\"\nstate = \"paused\"\n\
                 [[events]]\nat_ms = {bad}\nvm = \"vm1\"\nstate = \"running\"\n"
            );
            let err = ReplayConfig::parse(&text).expect_err(bad).to_string();
            assert!(err.contains("events[1].at_ms"), "{bad}: {err}");
        }
        let negative =
            format!("{NODE}\n[[events]]\nafter_packet = -3\nvm = \"vm1\"\nstate = \"paused\"\n");
        let err = ReplayConfig::parse(&negative)
            .expect_err("negative count")
            .to_string();
        assert!(err.contains("events[0].after_packet"), "{err}");
        let integer_ms =
            format!("{NODE}\n[[events]]\nat_ms = 20\nvm = \"vm1\"\nstate = \"paused\"\n");
        let cfg = ReplayConfig::parse(&integer_ms).expect("an integer number of ms");
        assert_eq!(cfg.events[0].time, EventTime::AtMs(20.0));
    }

    /// One file for srmigd and the replay (issue 10): srmigd's own tables and ports named after
    /// real interfaces are accepted; what is meaningless offline is named in the notes.
    #[test]
    fn srmigd_tables_are_accepted_and_named_as_ignored() {
        let text = format!(
            "{NODE}\n[[qemu]]\nport = \"tap\"\nsocket = \"/run/srmig/vm1.net\"\nqmp = \"/run/srmig/vm1.ev\"\n\
             [io]\nmode = \"auto\"\nports = {{ up0 = \"packet\" }}\n"
        );
        let cfg = ReplayConfig::parse(&text).expect("an srmigd file");
        let notes = cfg.notes.join("\n");
        assert!(notes.contains("[[qemu]] ignored (ports tap)"), "{notes}");
        assert!(notes.contains("[io] ignored"), "{notes}");
        assert!(notes.contains("ports without mtu (up0, tap)"), "{notes}");
        // Checked as srmigd checks them, with the same message.
        let bad = format!("{NODE}\n[[qemu]]\nport = \"up0\"\nsocket = \"/x\"\n");
        let err = ReplayConfig::parse(&bad).expect_err("uplink").to_string();
        assert!(
            err.contains("qemu[0]") && err.contains("not a VM port"),
            "{err}"
        );
    }

    /// Every complete node.toml in the docs and examples is a replay file (srmigd's examples
    /// included: `docs/srmigd-api.md` names its ports after interfaces).
    #[test]
    fn documented_files_parse() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut checked = 0;
        for doc in ["docs/replay.md", "docs/srmigd-api.md", "README.md"] {
            let text = std::fs::read_to_string(root.join(doc)).expect(doc);
            for block in text
                .split("```toml\n")
                .skip(1)
                .filter_map(|b| b.split("```").next())
                .filter(|b| b.contains("locator ="))
            {
                if let Err(e) = ReplayConfig::parse(block) {
                    panic!("{doc}: {e}\n{block}");
                }
                checked += 1;
            }
        }
        for example in [
            "examples/migration/source.toml",
            "examples/migration/dest.toml",
        ] {
            let cfg = ReplayConfig::load(&root.join(example)).expect(example);
            assert!(!cfg.events.is_empty(), "{example}");
            checked += 1;
        }
        assert!(checked >= 4, "{checked} files");
    }
}
