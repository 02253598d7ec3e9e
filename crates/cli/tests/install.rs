//! `scripts/install.sh --destdir`: stages the binaries, manual pages, completions and systemd
//! units of this build below a directory, with the units' `ExecStart` following `--prefix`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn install_stages_everything_below_destdir() {
    let srmig = Path::new(env!("CARGO_BIN_EXE_srmig"));
    let bin_dir = srmig.parent().expect("target dir");
    // `cargo test --workspace` (the README's test command) builds srmigd beside srmig.
    assert!(
        bin_dir.join("srmigd").exists(),
        "no srmigd in {}: run `cargo build -p srmig-hostd` first",
        bin_dir.display()
    );
    let dest = tempfile::tempdir().expect("tempdir");
    let out = Command::new("bash")
        .arg(repo().join("scripts/install.sh"))
        .args(["--prefix", "/opt/srmig", "--destdir"])
        .arg(dest.path())
        .arg("--bin-dir")
        .arg(bin_dir)
        .output()
        .expect("install.sh");
    assert!(
        out.status.success(),
        "install.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let root = dest.path();
    for f in [
        "opt/srmig/bin/srmig",
        "opt/srmig/bin/srmigd",
        "opt/srmig/share/man/man1/srmig.1",
        "opt/srmig/share/man/man1/srmig-migrate.1",
        "opt/srmig/share/man/man8/srmigd.8",
        "opt/srmig/share/bash-completion/completions/srmig",
        "opt/srmig/share/zsh/site-functions/_srmig",
        "opt/srmig/share/fish/vendor_completions.d/srmig.fish",
        "opt/srmig/share/srmig/libvirt/qemu",
        "etc/systemd/system/srmigd@.service",
        "etc/systemd/system/srmig-controller.service",
    ] {
        let p = root.join(f);
        let len = std::fs::metadata(&p)
            .unwrap_or_else(|e| panic!("{f}: {e}"))
            .len();
        assert!(len > 0, "{f} is empty");
    }
    assert!(root.join("etc/srmig").is_dir());
    let unit =
        std::fs::read_to_string(root.join("etc/systemd/system/srmigd@.service")).expect("unit");
    assert!(
        unit.contains("ExecStart=/opt/srmig/bin/srmigd --config /etc/srmig/%i.toml"),
        "{unit}"
    );
    let hook =
        std::fs::read_to_string(root.join("opt/srmig/share/srmig/libvirt/qemu")).expect("hook");
    assert!(
        hook.contains("exec /opt/srmig/bin/srmig libvirt-hook") && hook.contains("\"$@\""),
        "{hook}"
    );
    let completion =
        std::fs::read_to_string(root.join("opt/srmig/share/bash-completion/completions/srmig"))
            .expect("completion");
    assert!(completion.contains("migrate") && completion.contains("complete -F"));

    // Bad arguments are refused before anything is written.
    let bad = Command::new("bash")
        .arg(repo().join("scripts/install.sh"))
        .args(["--prefix", "relative"])
        .output()
        .expect("install.sh");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--prefix must be absolute"));
}
