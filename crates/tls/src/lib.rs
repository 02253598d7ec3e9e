//! Mutual TLS between srmig's daemons: the controller, every host's srmigd and an operator's
//! CLI authenticate each other with certificates issued by the controller's own CA.
//!
//! Why a crate of its own: the same few rules must hold on every side (a certificate names one
//! srmig identity, a server requires a client certificate, only the srmig CA is trusted, a
//! handshake that fails or stalls never stops a server), and srmigd, the controller and the
//! CLI each need some of them. Keeping them here means one implementation to review.
//!
//! - [`pki`]: make the CA and issue certificates for a role and a name (what `srmig pki`
//!   runs; `docs/security.md` gives the equivalent `openssl` steps).
//! - [`config`]: load those PEM files into rustls server and client configurations, checking
//!   them first so that a wrong file is named at start-up rather than at the first handshake.
//! - [`identity`]: who the peer of a connection is ([`PeerIdentity`]: a [`Role`] and a name),
//!   read from its verified certificate.
//! - [`serve`]: an axum `Router` served over TLS on a TCP listener, each request carrying the
//!   caller's [`PeerIdentity`] so handlers can authorize it.
//! - [`client`]: one HTTPS request to a peer, checking which srmig identity answered.
//! - [`address`]: `HOST:PORT` and `PATH|https://HOST:PORT` as operators write them, parsed
//!   once for every daemon and the CLI.
//! - [`local`]: the local admin unix sockets (mode 0660, an operators' group, peer
//!   credentials checked), the other half of the same trust model.
//!
//! Identity encoding: every certificate carries exactly one URI subject alternative name
//! `srmig://<role>/<name>` (`srmig://host/h1`, `srmig://controller/ctl`,
//! `srmig://client/alice`) and `CN=<name>`; the URI is authoritative. Cryptography is rustls
//! with its `ring` provider (it builds with a C compiler alone, no cmake or Go), chosen
//! explicitly so that no process-wide default provider is needed.

#![warn(missing_docs, unreachable_pub)]

mod pem;
mod verify;

pub mod address;
pub mod client;
pub mod config;
pub mod identity;
pub mod local;
pub mod pki;
pub mod serve;

pub use address::{split_host_port, AddressError, ApiAddress};
pub use client::{ClientError, Endpoint, HttpsClient, HttpsConnection};
pub use config::{client_config, server_config, ConfigError, TlsFiles};
pub use identity::{IdentityError, PeerIdentity, Role};
pub use pem::{certificates_in, private_key_in, PemError};
pub use pki::{init_ca, issue, CaOptions, IssueOptions, PkiError, San, Validity};
pub use serve::{serve, ServeOptions};

/// The cryptography used everywhere in this crate: rustls' `ring` provider.
pub(crate) fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

/// A UNIX time in seconds as `YYYY-MM-DD HH:MM:SS UTC`, for messages.
pub(crate) fn utc(secs: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => format!("{secs} (UNIX time)"),
    }
}
