//! Loading the node configuration (`--config node.toml`).
//!
//! The file's schema lives in [`srmig_dataplane::node_file`], shared with `srmig replay`: the
//! engine's [`NodeConfig`] plus srmigd's own tables the engine does not see, and the replay's
//! `[[events]]`, which srmigd checks and ignores with a warning ([`DaemonConfig::notes`]), so
//! that the file an operator replays is the file they deploy.
//!
//! ```toml
//! [[qemu]]                       # a VM port backed by a QEMU stream socket (port::qemu)
//! port = "vm1p"                  # a `kind = "vm"` port of [[ports]]
//! socket = "/run/srmig/vm1.net"  # QEMU: -netdev stream,server=on,addr.type=unix,addr.path=...
//! qmp = "/run/srmig/vm1.ev"      # optional: a QMP socket for srmigd (VM state from QEMU)
//!
//! [io]                           # port I/O (port::IoConfig): auto | xdp | packet
//! mode = "auto"                  # default: AF_XDP on uplinks where it works, else AF_PACKET
//! ports = { up0 = "packet" }     # per port
//! fast_path = ["up0"]            # XDP fast path on these uplinks (docs/srmigd.md)
//! ```

use std::path::{Path, PathBuf};

use srmig_dataplane::node_file::{FileError, NodeFile};
use srmig_dataplane::NodeConfig;

use crate::port::qemu::QemuPortConfig;
use crate::port::IoConfig;

/// Everything srmigd reads from node.toml.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// The engine's configuration.
    pub node: NodeConfig,
    /// QEMU-backed VM ports (`[[qemu]]`).
    pub qemu: Vec<QemuPortConfig>,
    /// Port I/O modes (`[io]`).
    pub io: IoConfig,
    /// What of the file srmigd ignores (`[[events]]`), one sentence each: logged as warnings.
    pub notes: Vec<String>,
}

/// Why the node configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a valid node configuration.
    #[error("invalid node configuration {path}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong (names the field, and for TOML errors the position).
        source: FileError,
    },
    /// An `[[hmac_keys]]` secret file could not be read.
    #[error("invalid node configuration {path}")]
    HmacSecret {
        /// The configuration file.
        path: PathBuf,
        /// Which key and file, and why.
        source: srmig_dataplane::ConfigError,
    },
}

/// Reads and parses `path` with its srmigd-only tables, checking each `[[qemu]]` names a
/// distinct VM port.
pub fn load_daemon(path: &Path) -> Result<DaemonConfig, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut d = parse_daemon(&text, path)?;
    // HMAC secrets: read now, relative to the configuration file's directory.
    let dir = path.parent().unwrap_or(Path::new("."));
    d.node
        .load_hmac_secrets(dir, |p| std::fs::read(p))
        .map_err(|source| ConfigFileError::HmacSecret {
            path: path.to_owned(),
            source,
        })?;
    Ok(d)
}

/// Parses node.toml's text as [`load_daemon`] does, without touching files: `path` only names
/// the file in errors. (Public for the `node_config` fuzz target.)
pub fn parse_daemon(text: &str, path: &Path) -> Result<DaemonConfig, ConfigFileError> {
    let file = NodeFile::parse(text).map_err(|source| ConfigFileError::Parse {
        path: path.to_owned(),
        source,
    })?;
    let notes = file.ignored_by_srmigd();
    Ok(DaemonConfig {
        node: file.node,
        qemu: file.qemu,
        io: file.io,
        notes,
    })
}

/// Reads and parses `path` (the engine validates the content when it is built); srmigd-only
/// tables are checked and left out (see [`load_daemon`]).
pub fn load(path: &Path) -> Result<NodeConfig, ConfigFileError> {
    load_daemon(path).map(|d| d.node)
}

#[cfg(test)]
mod tests {
    use super::*;
    use srmig_dataplane::PortKind;

    #[test]
    fn load_errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("srmigd-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let good = dir.join("good.toml");
        std::fs::write(&good, srmig_agent::testkit::node_toml()).expect("write");
        assert_eq!(load(&good).expect("load").ports.len(), 2);
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "locator = 5\n").expect("write");
        let e = crate::client::error_chain(&load(&bad).expect_err("bad"));
        assert!(e.contains("bad.toml") && e.contains("locator"), "{e}");
        let e = load(&dir.join("missing.toml"))
            .expect_err("missing")
            .to_string();
        assert!(e.contains("missing.toml"), "{e}");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn qemu_tables_are_taken_out_and_checked() {
        let base = srmig_agent::testkit::node_toml();
        let vm_port = toml::from_str::<NodeConfig>(base)
            .expect("base")
            .ports
            .iter()
            .find(|p| p.kind == PortKind::Vm)
            .map(|p| p.name.clone())
            .expect("a VM port");
        let path = Path::new("node.toml");
        let good = format!(
            "{base}\n[[qemu]]\nport = \"{vm_port}\"\nsocket = \"/run/vm.net\"\nqmp = \"/run/vm.ev\"\n"
        );
        let d = parse_daemon(&good, path).expect("good");
        assert_eq!(d.qemu.len(), 1);
        assert_eq!(d.qemu[0].socket, PathBuf::from("/run/vm.net"));
        assert_eq!(d.qemu[0].qmp.as_deref(), Some(Path::new("/run/vm.ev")));
        assert_eq!(d.node.ports.len(), 2);
        let twice = format!("{good}\n[[qemu]]\nport = \"{vm_port}\"\nsocket = \"/x\"\n");
        let e = crate::client::error_chain(&parse_daemon(&twice, path).expect_err("twice"));
        assert!(e.contains("qemu[1]") && e.contains("two"), "{e}");
        let ghost = format!("{base}\n[[qemu]]\nport = \"ghost\"\nsocket = \"/x\"\n");
        let e = crate::client::error_chain(&parse_daemon(&ghost, path).expect_err("ghost"));
        assert!(e.contains("qemu[0]") && e.contains("ghost"), "{e}");
        let uplink = format!("{base}\n[[qemu]]\nport = \"up0\"\nsocket = \"/x\"\n");
        assert!(parse_daemon(&uplink, path).is_err());
        let unknown =
            format!("{base}\n[[qemu]]\nport = \"{vm_port}\"\nsocket = \"/x\"\nbogus = 1\n");
        assert!(parse_daemon(&unknown, path).is_err());
    }

    /// One file for srmigd and `srmig replay` (issue 10): the replay examples, `[[events]]`
    /// included, are valid srmigd configurations; the events are ignored with a note.
    #[test]
    fn replay_files_are_srmigd_files() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        for name in [
            "examples/migration/source.toml",
            "examples/migration/dest.toml",
        ] {
            let path = root.join(name);
            let d = load_daemon(&path)
                .unwrap_or_else(|e| panic!("{name}: {}", crate::client::error_chain(&e)));
            assert!(
                d.notes.iter().any(|n| n.contains("[[events]] ignored")),
                "{name}: {:?}",
                d.notes
            );
        }
        let docs = std::fs::read_to_string(root.join("docs/replay.md")).expect("docs/replay.md");
        // The complete files among the doc's ```toml blocks (the others are fragments).
        let files: Vec<&str> = docs
            .split("```toml\n")
            .skip(1)
            .filter_map(|b| b.split("```").next())
            .filter(|b| b.contains("locator ="))
            .collect();
        assert!(
            !files.is_empty(),
            "docs/replay.md has complete node.toml examples"
        );
        for text in files {
            parse_daemon(text, Path::new("docs/replay.md"))
                .unwrap_or_else(|e| panic!("{}\n{text}", crate::client::error_chain(&e)));
        }
        let bad_event = format!(
            "{}\n[[events]]\nat_ms = 1e300\nvm = \"web1\"\nstate = \"running\"\n",
            srmig_agent::testkit::node_toml()
        );
        let e = crate::client::error_chain(
            &parse_daemon(&bad_event, Path::new("n.toml")).expect_err("1e300"),
        );
        assert!(e.contains("events[0].at_ms"), "{e}");
    }
}
