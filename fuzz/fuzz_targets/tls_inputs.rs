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
//! Input: the first byte selects the parser (`byte % 4`: `0` address, `1` host and port, `2`
//! identity URI, `3` certificate), the rest is its text (UTF-8; other bytes are refused before
//! any parser, as the flag and TOML readers refuse them) or, for `3`, the DER bytes. Seeds:
//! `fuzz/corpus/tls_inputs/seed-*` (the certificates are `srmig pki` output).
#![no_main]

use libfuzzer_sys::fuzz_target;
use srmig_tls::{split_host_port, ApiAddress, PeerIdentity};

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

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    if kind % 4 == 3 {
        certificate(rest);
        return;
    }
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    match kind % 4 {
        0 => address(text),
        1 => host_port(text),
        _ => identity_uri(text),
    }
});
