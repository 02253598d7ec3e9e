//! Loading the node configuration (`--config node.toml`, a [`NodeConfig`]).

use std::path::{Path, PathBuf};

use srmig_dataplane::NodeConfig;

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
}

/// Reads and parses `path` (the engine validates the content when it is built).
pub fn load(path: &Path) -> Result<NodeConfig, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigFileError::Parse {
        path: path.to_owned(),
        source: Box::new(source),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("srmigd-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let good = dir.join("good.toml");
        std::fs::write(&good, crate::apply::tests::node_toml()).expect("write");
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
}
