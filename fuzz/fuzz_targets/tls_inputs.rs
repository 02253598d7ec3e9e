//! What srmig reads to find and authenticate its peers (`crates/tls`): API addresses as
//! operators write them in flags and node.toml (`ApiAddress::parse`, `split_host_port`),
//! identity URIs (`PeerIdentity::from_uri`) and the identity in a peer's certificate
//! (`PeerIdentity::from_certificate`, x509-parser on the DER a TLS handshake verified).
//! Invariants:
//!
//! - nothing panics;
//! - an accepted address prints as it is read back (`https://HOST:PORT` and socket paths);
//! - an accepted `HOST:PORT` has a host and a port from 1 to 65535, and written back (IPv6 in
//!   brackets) splits into the same (it found `[[h]]:1` taken as host `[h]`, which printed
//!   back as `h`: brackets inside the host are refused now);
//! - an accepted identity URI is exactly the identity's `uri()`;
//! - a certificate's identity is a well-formed identity (its URI parses back to it).
//!
//! The PEM files srmig reads (`certificates_in`, `private_key_in`: the CA, certificate and key
//! files, whatever an operator put there) are fuzzed too: nothing panics, an error names the
//! file, an accepted certificate file holds at least one certificate (each then read as
//! above), an accepted key file one key of a kind srmig names.
//!
//! Input: the first byte selects the parser (`byte % 6`: `0` address, `1` host and port, `2`
//! identity URI, `3` certificate DER, `4` certificate PEM file, `5` private key PEM file), the
//! rest is its text (UTF-8 for `0` to `2`; other bytes are refused before any parser, as the
//! flag and TOML readers refuse them) or its bytes. Seeds: `fuzz/corpus/tls_inputs/seed-*`
//! (the certificates and keys are `srmig pki` output).
#![no_main]

use libfuzzer_sys::fuzz_target;
use srmig_tls::{certificates_in, private_key_in, split_host_port, ApiAddress, PeerIdentity};

fn address(text: &str) {
    let Ok(addr) = ApiAddress::parse(text) else {
        return;
    };
    let printed = addr.to_string();
    let again = ApiAddress::parse(&printed)
        .unwrap_or_else(|e| panic!("{text:?} reads as {printed:?}, which is refused: {e}"));
    assert_eq!(again.to_string(), printed, "{text:?}");
    if let ApiAddress::Https(e) = &addr {
        assert_eq!(printed, format!("https://{}", e.addr()));
    }
}

fn host_port(text: &str) {
    let Ok((host, port)) = split_host_port(text) else {
        return;
    };
    assert!(!host.is_empty() && port != 0, "{text:?} -> {host:?} {port}");
    let written = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    assert_eq!(
        split_host_port(&written).as_ref(),
        Ok(&(host, port)),
        "{text:?} written as {written:?}"
    );
}

fn identity_uri(text: &str) {
    if let Ok(id) = PeerIdentity::from_uri(text) {
        assert_eq!(id.uri(), text);
        assert_eq!(id.host_id().is_some(), id.role() == srmig_tls::Role::Host);
    }
}

fn certificate(der: &[u8]) {
    let cert = rustls::pki_types::CertificateDer::from(der);
    if let Ok(id) = PeerIdentity::from_certificate(&cert) {
        assert_eq!(PeerIdentity::from_uri(&id.uri()).as_ref(), Ok(&id));
    }
}

/// The file name the PEM readers are given (their errors must name it).
const PEM_FILE: &str = "/etc/srmig/tls/fuzz.pem";

fn certificate_file(raw: &[u8]) {
    let path = std::path::Path::new(PEM_FILE);
    match certificates_in(path, raw) {
        Ok(certs) => {
            assert!(!certs.is_empty(), "no certificate, and no error");
            for cert in &certs {
                // What the TLS handshake then verifies, and the identity read from it.
                certificate(cert.as_ref());
            }
        }
        Err(e) => assert!(e.to_string().contains(PEM_FILE), "{e}"),
    }
}

fn key_file(raw: &[u8]) {
    let path = std::path::Path::new(PEM_FILE);
    match private_key_in(path, raw) {
        Ok((_, label)) => assert!(
            ["PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY"].contains(&label),
            "{label}"
        ),
        Err(e) => assert!(e.to_string().contains(PEM_FILE), "{e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    match kind % 6 {
        3 => return certificate(rest),
        4 => return certificate_file(rest),
        5 => return key_file(rest),
        _ => {}
    }
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    match kind % 6 {
        0 => address(text),
        1 => host_port(text),
        _ => identity_uri(text),
    }
});
