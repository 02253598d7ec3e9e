//! Who is on the other end of a connection: a [`Role`] and a name, read from the peer's
//! certificate once the handshake has verified it.
//!
//! Why an explicit encoding rather than the certificate's common name or DNS names: a host's
//! DNS and IP SANs say where it can be reached (and change with the network), while
//! authorization needs a stable, unambiguous answer to "which srmig party is this". Every
//! certificate srmig issues therefore carries exactly one URI subject alternative name
//!
//! ```text
//! srmig://<role>/<name>      role: host | controller | client
//!                            name: 1 to 63 bytes of [A-Za-z0-9._-], not starting with '.' or '-'
//! ```
//!
//! and `CN=<name>` for people reading it with `openssl x509 -text`. Only the URI counts: a
//! certificate with no srmig URI, or with two, has no identity and is refused. Names follow the
//! rules of [`srmig_api::HostId`], so a host's identity converts to the `HostId` the controller
//! knows it by.

use std::fmt;
use std::str::FromStr;

use rustls::pki_types::CertificateDer;
use srmig_api::{HostId, NameError};
use x509_parser::extensions::GeneralName;

/// The URI scheme that marks a srmig identity among a certificate's subject alternative names.
pub const URI_SCHEME: &str = "srmig://";

/// What a certificate's holder is in srmig, which decides what it may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// A host's srmigd: a TLS server for the controller, and a TLS client when it reports its
    /// VMs' state to the controller.
    Host,
    /// The controller (one per replica): a TLS server for hosts and operators, a TLS client
    /// when it pushes configurations to hosts.
    Controller,
    /// An operator's `srmig` CLI: only ever a TLS client.
    Client,
}

impl Role {
    /// Every role, in the order they are listed in messages.
    pub const ALL: [Role; 3] = [Role::Host, Role::Controller, Role::Client];

    /// The role as it appears in an identity URI and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Host => "host",
            Role::Controller => "controller",
            Role::Client => "client",
        }
    }

    /// Whether certificates of this role act as TLS servers (and so carry the serverAuth
    /// extended key usage and need a DNS or IP name).
    pub fn is_server(self) -> bool {
        matches!(self, Role::Host | Role::Controller)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, IdentityError> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| IdentityError::UnknownRole(s.to_owned()))
    }
}

/// Why a certificate or an identity string does not give a [`PeerIdentity`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The connection has no peer certificate (not a TLS connection, or the peer sent none).
    #[error("the peer presented no certificate")]
    NoPeerCertificate,
    /// The certificate is not parseable X.509.
    #[error("the certificate is not valid X.509: {0}")]
    BadCertificate(String),
    /// No `srmig://` URI among the subject alternative names.
    #[error("the certificate carries no srmig identity (a URI subject alternative name srmig://<role>/<name>)")]
    Missing,
    /// More than one `srmig://` URI: the holder would be ambiguous.
    #[error("the certificate carries {0} srmig identities; exactly one is allowed")]
    Ambiguous(usize),
    /// A `srmig://` URI that does not have the form `srmig://<role>/<name>`.
    #[error("malformed srmig identity {uri:?}: expected srmig://<role>/<name>")]
    Malformed {
        /// The URI as found.
        uri: String,
    },
    /// The role is not host, controller or client.
    #[error("unknown role {0:?}: expected host, controller or client")]
    UnknownRole(String),
    /// The name breaks the naming rules.
    #[error("invalid name {name:?}")]
    BadName {
        /// The refused name.
        name: String,
        /// Which rule it breaks.
        #[source]
        source: NameError,
    },
}

/// The srmig identity of a certificate's holder: `srmig://<role>/<name>`.
///
/// Built only from a valid role and name, so an existing value is always well formed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerIdentity {
    role: Role,
    name: String,
}

impl PeerIdentity {
    /// An identity from a role and a name (checked with the naming rules of
    /// [`srmig_api::HostId`]).
    pub fn new(role: Role, name: impl Into<String>) -> Result<Self, IdentityError> {
        let name = name.into();
        if let Err(source) = HostId::new(name.as_str()) {
            return Err(IdentityError::BadName { name, source });
        }
        Ok(PeerIdentity { role, name })
    }

    /// The holder's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The holder's name (a host's name is its `HostId`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host this identity belongs to, if it is a host's.
    pub fn host_id(&self) -> Option<HostId> {
        match self.role {
            Role::Host => HostId::new(self.name.as_str()).ok(),
            Role::Controller | Role::Client => None,
        }
    }

    /// Whether this is the identity of host `host` (for "a host may only report its own VMs").
    pub fn is_host(&self, host: &HostId) -> bool {
        self.role == Role::Host && self.name == host.as_str()
    }

    /// The URI that encodes this identity in a certificate: `srmig://<role>/<name>`.
    pub fn uri(&self) -> String {
        format!("{URI_SCHEME}{}/{}", self.role, self.name)
    }

    /// Parses `srmig://<role>/<name>`.
    pub fn from_uri(uri: &str) -> Result<Self, IdentityError> {
        let malformed = || IdentityError::Malformed {
            uri: uri.to_owned(),
        };
        let rest = uri.strip_prefix(URI_SCHEME).ok_or_else(malformed)?;
        let (role, name) = rest.split_once('/').ok_or_else(malformed)?;
        if name.contains('/') {
            return Err(malformed());
        }
        PeerIdentity::new(role.parse()?, name)
    }

    /// The identity in a DER certificate: its one `srmig://` URI subject alternative name.
    ///
    /// This does not verify the certificate; call it on certificates a TLS handshake (or
    /// [`crate::config`]) has verified against the srmig CA.
    pub fn from_certificate(cert: &CertificateDer<'_>) -> Result<Self, IdentityError> {
        let (_, x509) = x509_parser::parse_x509_certificate(cert.as_ref())
            .map_err(|e| IdentityError::BadCertificate(e.to_string()))?;
        let san = x509
            .subject_alternative_name()
            .map_err(|e| IdentityError::BadCertificate(e.to_string()))?;
        let uris: Vec<&str> = san
            .iter()
            .flat_map(|ext| ext.value.general_names.iter())
            .filter_map(|name| match name {
                GeneralName::URI(uri) if uri.starts_with(URI_SCHEME) => Some(*uri),
                _ => None,
            })
            .collect();
        match uris.as_slice() {
            [] => Err(IdentityError::Missing),
            [uri] => PeerIdentity::from_uri(uri),
            more => Err(IdentityError::Ambiguous(more.len())),
        }
    }

    /// The identity of the peer of an established TLS connection: the client of a
    /// `rustls::ServerConnection`, the server of a `rustls::ClientConnection` (both deref to
    /// [`rustls::CommonState`]).
    pub fn of_peer(conn: &rustls::CommonState) -> Result<Self, IdentityError> {
        let cert = conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .ok_or(IdentityError::NoPeerCertificate)?;
        PeerIdentity::from_certificate(cert)
    }
}

impl fmt::Display for PeerIdentity {
    /// `role/name`, e.g. `host/h1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.role, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_round_trip() {
        for role in Role::ALL {
            let id = PeerIdentity::new(role, "h-1.a_b").expect("valid name");
            assert_eq!(PeerIdentity::from_uri(&id.uri()), Ok(id.clone()));
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert_eq!(
            PeerIdentity::new(Role::Host, "h1").map(|i| i.uri()),
            Ok("srmig://host/h1".to_owned())
        );
    }

    #[test]
    fn malformed_uris_are_refused() {
        for uri in [
            "srmig://host",
            "srmig://host/",
            "srmig://host/a/b",
            "https://host/h1",
            "srmig:///h1",
        ] {
            assert!(PeerIdentity::from_uri(uri).is_err(), "{uri}");
        }
        assert_eq!(
            PeerIdentity::from_uri("srmig://admin/x"),
            Err(IdentityError::UnknownRole("admin".into()))
        );
        assert!(matches!(
            PeerIdentity::from_uri("srmig://host/-x"),
            Err(IdentityError::BadName { .. })
        ));
    }

    #[test]
    fn host_identity_is_a_host_id() {
        let h1 = HostId::new("h1").expect("valid");
        let id = PeerIdentity::new(Role::Host, "h1").expect("valid");
        assert_eq!(id.host_id(), Some(h1.clone()));
        assert!(id.is_host(&h1));
        let ctl = PeerIdentity::new(Role::Controller, "h1").expect("valid");
        assert_eq!(ctl.host_id(), None);
        assert!(!ctl.is_host(&h1));
        assert_eq!(ctl.to_string(), "controller/h1");
    }

    #[test]
    fn garbage_certificate_is_an_error() {
        let der = CertificateDer::from(vec![0x30, 0x03, 0x01, 0x02]);
        assert!(matches!(
            PeerIdentity::from_certificate(&der),
            Err(IdentityError::BadCertificate(_))
        ));
    }
}
