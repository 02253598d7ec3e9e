//! `srmig pki init` and `srmig pki issue` as an operator runs them: the files appear with the
//! right modes, load as TLS configurations, and nothing is overwritten without `--force`.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

use srmig_tls::{client_config, server_config, PeerIdentity, Role, TlsFiles};

fn srmig(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_srmig"))
        .args(args)
        .output()
        .expect("run srmig")
}

fn ok(args: &[&str]) -> String {
    let out = srmig(args);
    assert!(
        out.status.success(),
        "srmig {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails(args: &[&str]) -> String {
    let out = srmig(args);
    assert!(!out.status.success(), "srmig {args:?} should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
}

#[test]
fn pki_init_and_issue() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("pki");
    let d = dir.to_str().expect("utf-8 path");

    let out = ok(&["pki", "init", "--dir", d]);
    assert!(out.contains("ca.pem"), "{out}");
    assert_eq!(mode(&dir.join("ca.key")), 0o600);
    let key = std::fs::read(dir.join("ca.key")).expect("key");

    let err = fails(&["pki", "init", "--dir", d]);
    assert!(
        err.contains("already exists; refusing to overwrite it"),
        "{err}"
    );
    assert_eq!(std::fs::read(dir.join("ca.key")).expect("key"), key);

    let h1 = tmp.path().join("h1");
    let out = ok(&[
        "pki",
        "issue",
        "--dir",
        d,
        "--role",
        "host",
        "--name",
        "h1",
        "--san",
        "127.0.0.1",
        "--san",
        "h1.dc.example",
        "--days",
        "30",
        "--out",
        h1.to_str().expect("utf-8"),
    ]);
    assert!(out.contains("issued srmig://host/h1 for 30 days"), "{out}");
    let identity = PeerIdentity::new(Role::Host, "h1").expect("valid");
    let files = TlsFiles::in_dir(&h1, &identity);
    assert_eq!(mode(&files.key), 0o600);
    server_config(&files, &[Role::Controller]).expect("host certificate loads as a server");
    client_config(&files).expect("host certificate loads as a client");

    ok(&[
        "pki", "issue", "--dir", d, "--role", "client", "--name", "alice",
    ]);
    let alice = TlsFiles::in_dir(
        &dir,
        &PeerIdentity::new(Role::Client, "alice").expect("valid"),
    );
    client_config(&alice).expect("client certificate loads");

    let err = fails(&[
        "pki", "issue", "--dir", d, "--role", "client", "--name", "alice",
    ]);
    assert!(err.contains("already exists"), "{err}");
    ok(&[
        "pki", "issue", "--dir", d, "--role", "client", "--name", "alice", "--force",
    ]);

    let err = fails(&["pki", "issue", "--dir", d, "--role", "admin", "--name", "x"]);
    assert!(err.contains("unknown role \"admin\""), "{err}");
    let err = fails(&["pki", "issue", "--dir", d, "--role", "host", "--name", "h2"]);
    assert!(
        err.contains("needs at least one subject alternative name"),
        "{err}"
    );
    let err = fails(&[
        "pki", "issue", "--dir", d, "--role", "host", "--name", "h2", "--san", "a b",
    ]);
    assert!(
        err.contains("invalid subject alternative name \"a b\""),
        "{err}"
    );
}
