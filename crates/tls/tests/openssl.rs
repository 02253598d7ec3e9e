//! The `openssl` steps of `docs/security.md`, run as written, make certificates that
//! `srmig_tls` loads and that complete a mutual TLS exchange; and `openssl verify` accepts what
//! `srmig_tls::pki` issues. Skips loudly without `openssl` (a failure when `CI` is set).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{start, Pki};
use hyper::{Method, StatusCode};
use srmig_tls::pki::{issue, IssueOptions};
use srmig_tls::{
    client_config, server_config, Endpoint, HttpsClient, PeerIdentity, Role, ServeOptions, TlsFiles,
};

fn openssl_missing() -> bool {
    let found = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("SKIPPED: openssl not found");
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set: a skipped test is a failure (install openssl)"
        );
    }
    !found
}

/// The fenced code block that follows `<!-- openssl: {name} -->` in docs/security.md.
fn doc_block(name: &str) -> String {
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/security.md");
    let text = std::fs::read_to_string(&doc).expect("read docs/security.md");
    let marker = format!("<!-- openssl: {name} -->");
    let after = text
        .split_once(&marker)
        .unwrap_or_else(|| panic!("{marker} not found in docs/security.md"))
        .1;
    let body = after
        .split_once("```sh\n")
        .expect("a ```sh block after the marker")
        .1;
    body.split_once("```").expect("the block ends").0.to_owned()
}

fn run(dir: &Path, script: &str) {
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(dir)
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "script failed:\n{script}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The documented certificate block with its first line (the settings) replaced, and the key
/// algorithm too if `algorithm` is given (`-algorithm RSA ...`).
fn cert_script(settings: &str, algorithm: Option<&str>) -> String {
    let block = doc_block("cert");
    let (first, rest) = block.split_once('\n').expect("lines");
    assert!(
        first.starts_with("ROLE="),
        "the cert block's first line sets ROLE, NAME, SANS and EKU: {first}"
    );
    let rest = match algorithm {
        Some(a) => {
            let documented = "-algorithm EC -pkeyopt ec_paramgen_curve:P-256";
            assert!(rest.contains(documented), "the key line changed: {rest}");
            rest.replacen(documented, a, 1)
        }
        None => rest.to_owned(),
    };
    format!("{settings}\n{rest}")
}

fn files(dir: &Path, role: &str, name: &str) -> TlsFiles {
    TlsFiles::new(
        dir.join("ca.pem"),
        dir.join(format!("{role}-{name}.pem")),
        dir.join(format!("{role}-{name}.key")),
    )
}

fn mode(p: &PathBuf) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
}

#[tokio::test]
async fn the_documented_openssl_steps_make_certificates_srmig_accepts() {
    if openssl_missing() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    run(d, &doc_block("ca"));
    assert_eq!(mode(&d.join("ca.key")), 0o600);
    run(
        d,
        &cert_script(
            r#"ROLE=host; NAME=h1; SANS="IP:127.0.0.1,DNS:localhost"; EKU=serverAuth,clientAuth"#,
            None,
        ),
    );
    run(
        d,
        &cert_script(r#"ROLE=client; NAME=alice; SANS=; EKU=clientAuth"#, None),
    );
    let host = files(d, "host", "h1");
    let alice = files(d, "client", "alice");
    assert_eq!(mode(&host.key), 0o600);

    server_config(&host, &Role::ALL).expect("openssl host certificate as a server");
    client_config(&host).expect("openssl host certificate as a client");
    let e = server_config(&alice, &Role::ALL).expect_err("a client certificate is no server's");
    assert!(e.to_string().contains("lacks serverAuth"), "{e}");

    let server = start(&host, &[Role::Client], ServeOptions::default()).await;
    let to = Endpoint::new(server.addr.to_string(), "127.0.0.1")
        .expect("endpoint")
        .expect_peer(PeerIdentity::new(Role::Host, "h1").expect("valid"));
    let (status, body) = HttpsClient::new(client_config(&alice).expect("client config"))
        .request(&to, Method::GET, "/whoami", None)
        .await
        .expect("request between openssl-made certificates");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"client/alice");
    server.stop().await;

    // `srmig pki issue` signs with a CA that openssl made.
    let mut o = IssueOptions::new(PeerIdentity::new(Role::Controller, "ctl").expect("valid"));
    o.sans = vec!["localhost".parse().expect("san")];
    let ctl = issue(d, d, &o).expect("issue with the openssl CA");
    client_config(&ctl).expect("load");

    // Other key algorithms for the party's key: P-384, RSA and Ed25519.
    for (name, algorithm) in [
        ("p384", "-algorithm EC -pkeyopt ec_paramgen_curve:P-384"),
        ("rsa", "-algorithm RSA -pkeyopt rsa_keygen_bits:2048"),
        ("ed", "-algorithm ED25519"),
    ] {
        run(
            d,
            &cert_script(
                &format!(
                    r#"ROLE=host; NAME={name}; SANS="DNS:localhost"; EKU=serverAuth,clientAuth"#
                ),
                Some(algorithm),
            ),
        );
        let f = files(d, "host", name);
        server_config(&f, &Role::ALL).unwrap_or_else(|e| panic!("{name} key: {e}"));
        let server = start(&f, &[Role::Client], ServeOptions::default()).await;
        let to = Endpoint::new(server.addr.to_string(), "localhost").expect("endpoint");
        let (status, _) = HttpsClient::new(client_config(&alice).expect("client config"))
            .request(&to, Method::GET, "/whoami", None)
            .await
            .unwrap_or_else(|e| panic!("{name} server: {e}"));
        assert_eq!(status, StatusCode::OK);
        server.stop().await;
    }
}

#[test]
fn openssl_verifies_what_srmig_pki_issues() {
    if openssl_missing() {
        return;
    }
    let pki = Pki::new();
    let host = pki.issue(Role::Host, "h1", &["127.0.0.1"], None);
    let alice = pki.issue(Role::Client, "alice", &[], None);
    for (files, purpose, ok) in [
        (&host, "sslserver", true),
        (&host, "sslclient", true),
        (&alice, "sslclient", true),
        (&alice, "sslserver", false),
    ] {
        let out = Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(&files.ca)
            .args(["-purpose", purpose])
            .arg(&files.cert)
            .output()
            .expect("openssl verify");
        assert_eq!(
            out.status.success(),
            ok,
            "openssl verify -purpose {purpose} {}: {}{}",
            files.cert.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&host.cert)
        .output()
        .expect("openssl x509");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("URI:srmig://host/h1"), "{text}");
    assert!(text.contains("Subject: CN = h1"), "{text}");
}
