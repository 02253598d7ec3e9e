//! Loading the node configuration (`--config node.toml`, a [`NodeConfig`]).
//!
//! The file is the engine's [`NodeConfig`] plus srmigd-only tables the engine does not see:
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
//! ```

use std::path::{Path, PathBuf};

use srmig_dataplane::{NodeConfig, PortKind};

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
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Extras {
    #[serde(default)]
    qemu: Vec<QemuPortConfig>,
    #[serde(default)]
    io: IoConfig,
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
        /// The TOML error (names the field and position).
        source: Box<toml::de::Error>,
    },
    /// The `[io]` table does not fit the node configuration.
    #[error("invalid node configuration {path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An `[[hmac_keys]]` secret file could not be read.
    #[error("invalid node configuration {path}")]
    HmacSecret {
        /// The configuration file.
        path: PathBuf,
        /// Which key and file, and why.
        source: srmig_dataplane::ConfigError,
    },
    /// A `[[qemu]]` table does not fit the node configuration.
    #[error("invalid node configuration {path}: qemu[{index}]: {reason}")]
    Qemu {
        /// The file.
        path: PathBuf,
        /// Index of the `[[qemu]]` table.
        index: usize,
        /// What is wrong.
        reason: String,
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
    let parse_err = |source| ConfigFileError::Parse {
        path: path.to_owned(),
        source: Box::new(source),
    };
    let mut table: toml::Table = toml::from_str(text).map_err(parse_err)?;
    let mut extras = toml::Table::new();
    for key in ["qemu", "io"] {
        if let Some(v) = table.remove(key) {
            extras.insert(key.into(), v);
        }
    }
    let node: NodeConfig = table.try_into().map_err(parse_err)?;
    let extras: Extras = extras.try_into().map_err(parse_err)?;
    for (index, q) in extras.qemu.iter().enumerate() {
        let bad = |reason: String| ConfigFileError::Qemu {
            path: path.to_owned(),
            index,
            reason,
        };
        match node.ports.iter().find(|p| p.name == q.port) {
            None => return Err(bad(format!("no port named \"{}\" in [[ports]]", q.port))),
            Some(p) if p.kind != PortKind::Vm => {
                return Err(bad(format!("port \"{}\" is not a VM port", q.port)))
            }
            Some(_) => {}
        }
        if extras.qemu[..index].iter().any(|o| o.port == q.port) {
            return Err(bad(format!("port \"{}\" has two [[qemu]] tables", q.port)));
        }
    }
    if let Some(name) = extras
        .io
        .ports
        .keys()
        .find(|n| !node.ports.iter().any(|p| &p.name == *n))
    {
        return Err(ConfigFileError::Io {
            path: path.to_owned(),
            reason: format!("io.ports names \"{name}\", which is not a port of [[ports]]"),
        });
    }
    Ok(DaemonConfig {
        node,
        qemu: extras.qemu,
        io: extras.io,
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
        let e = parse_daemon(&twice, path).expect_err("twice").to_string();
        assert!(e.contains("qemu[1]") && e.contains("two"), "{e}");
        let ghost = format!("{base}\n[[qemu]]\nport = \"ghost\"\nsocket = \"/x\"\n");
        let e = parse_daemon(&ghost, path).expect_err("ghost").to_string();
        assert!(e.contains("qemu[0]") && e.contains("ghost"), "{e}");
        let uplink = format!("{base}\n[[qemu]]\nport = \"up0\"\nsocket = \"/x\"\n");
        assert!(parse_daemon(&uplink, path).is_err());
        let unknown =
            format!("{base}\n[[qemu]]\nport = \"{vm_port}\"\nsocket = \"/x\"\nbogus = 1\n");
        assert!(parse_daemon(&unknown, path).is_err());
    }
}
