//! What the lab needs before it starts: root, `ip` and `ethtool`, and the srmigd binary next
//! to the running executable.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::error::OrchestrateError;

/// Whether this process runs with effective uid 0.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Fails with [`OrchestrateError::NeedsRoot`] unless root, and with
/// [`OrchestrateError::MissingTool`] unless `ip` and `ethtool` run.
pub fn check_environment() -> Result<(), OrchestrateError> {
    if !is_root() {
        return Err(OrchestrateError::NeedsRoot);
    }
    let tools: [(&'static str, &'static str, &'static str, &[&str]); 3] = [
        ("ip", "namespaces, links, routes", "iproute2", &["-V"]),
        (
            "tc",
            "the emulated VM NIC backend (mirred redirects)",
            "iproute2",
            &["-V"],
        ),
        (
            "ethtool",
            "turning TSO/GSO off in the VMs",
            "ethtool",
            &["--version"],
        ),
    ];
    check_tools(&tools)
}

/// Fails with [`OrchestrateError::MissingTool`] unless QEMU and what the guest build needs
/// run (`--vm-kind qemu`).
pub fn check_qemu() -> Result<(), OrchestrateError> {
    let tools: [(&'static str, &'static str, &'static str, &[&str]); 3] = [
        (
            "qemu-system-x86_64",
            "running the QEMU guest",
            "qemu-system-x86",
            &["--version"],
        ),
        (
            "busybox",
            "the guest's initramfs",
            "busybox-static",
            &["true"],
        ),
        (
            "gcc",
            "the guest's static responder",
            "gcc libc6-dev",
            &["--version"],
        ),
    ];
    check_tools(&tools)
}

/// Fails with [`OrchestrateError::MissingTool`] unless libvirt's daemon, its client and the
/// namespace tools the libvirt lab uses run (`--vm-kind libvirt`).
pub fn check_libvirt() -> Result<(), OrchestrateError> {
    let tools: [(&'static str, &'static str, &'static str, &[&str]); 3] = [
        (
            "libvirtd",
            "running the hosts' libvirt daemons",
            "libvirt-daemon-system",
            &["--version"],
        ),
        (
            "virsh",
            "defining and migrating the libvirt domain",
            "libvirt-clients",
            &["--version"],
        ),
        (
            "unshare",
            "giving each libvirtd its own directories",
            "util-linux",
            &["--version"],
        ),
    ];
    check_tools(&tools)
}

fn check_tools(
    tools: &[(&'static str, &'static str, &'static str, &[&str])],
) -> Result<(), OrchestrateError> {
    for &(tool, why, package, args) in tools {
        let ok = Command::new(tool)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Err(OrchestrateError::MissingTool { tool, why, package });
        }
    }
    Ok(())
}

/// Directories where the workspace's binaries are looked for: `explicit` if given, else the
/// running executable's directory and, when that is cargo's `deps/` (tests), its parent.
pub fn binary_dirs(explicit: Option<&Path>) -> Vec<PathBuf> {
    if let Some(dir) = explicit {
        return vec![dir.to_owned()];
    }
    let Ok(exe) = std::env::current_exe() else {
        return Vec::new();
    };
    candidate_dirs(&exe)
}

fn candidate_dirs(exe: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = exe.parent() {
        dirs.push(dir.to_owned());
        if dir.file_name().is_some_and(|n| n == "deps") {
            if let Some(parent) = dir.parent() {
                dirs.push(parent.to_owned());
            }
        }
    }
    dirs
}

/// The path of binary `name` in the first of `dirs` that has it.
pub fn find_binary(name: &'static str, dirs: &[PathBuf]) -> Result<PathBuf, OrchestrateError> {
    dirs.iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| OrchestrateError::BinaryNotFound {
            name,
            searched: dirs.to_vec(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_executables_also_look_above_deps() {
        let dirs = candidate_dirs(Path::new("/w/target/debug/deps/lab_migrate-0123"));
        assert_eq!(
            dirs,
            [
                PathBuf::from("/w/target/debug/deps"),
                PathBuf::from("/w/target/debug")
            ]
        );
        let dirs = candidate_dirs(Path::new("/w/target/release/srmig"));
        assert_eq!(dirs, [PathBuf::from("/w/target/release")]);
        assert_eq!(
            binary_dirs(Some(Path::new("/opt/bin"))),
            [PathBuf::from("/opt/bin")]
        );
    }

    #[test]
    fn a_missing_binary_names_the_directories_and_the_build_command() {
        let dirs = vec![PathBuf::from("/nonexistent/srmig-a")];
        let err = find_binary("srmigd", &dirs).expect_err("missing");
        let text = err.to_string();
        assert!(text.contains("/nonexistent/srmig-a"), "{text}");
        assert!(text.contains("cargo build --release --workspace"), "{text}");
        let dir = std::env::temp_dir().join(format!("srmig-preflight-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("srmigd"), b"").expect("write");
        let found = find_binary("srmigd", &[dirs[0].clone(), dir.clone()]).expect("found");
        assert_eq!(found, dir.join("srmigd"));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
