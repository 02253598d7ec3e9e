//! Certificate verifiers that add srmig's identity rules to rustls' WebPKI verifiers.
//!
//! Why wrap them: WebPKI alone accepts any certificate the CA signed with the right usage. A
//! certificate without a srmig identity, or (on a server) one whose role may not connect,
//! should be refused during the handshake, where the peer gets an alert and the server never
//! sees a request, rather than later by every handler. Chain, validity, key usage and server
//! name checks stay rustls' own: these wrappers only run after them.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, OtherError};

use crate::identity::{IdentityError, PeerIdentity, Role};

/// Why a verified certificate's identity is refused.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("{identity} may not connect here (allowed roles: {allowed})")]
    Role {
        identity: PeerIdentity,
        allowed: String,
    },
}

/// A handshake error as an `io::Error` whose message is readable: rustls prints the reason of
/// a refusal by these verifiers (`CertificateError::Other`) with `Debug`, so it is rewritten
/// with the reason's `Display`. Other errors pass unchanged.
pub(crate) fn readable(e: std::io::Error) -> std::io::Error {
    let text = match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(CertificateError::Other(other))) => {
            format!("invalid peer certificate: {other}")
        }
        _ => return e,
    };
    std::io::Error::new(e.kind(), text)
}

fn refuse(e: Refused) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

/// A server's client verifier: WebPKI against the srmig CA (client certificate mandatory),
/// then a srmig identity whose role is in `allowed`.
#[derive(Debug)]
pub(crate) struct ClientIdentityVerifier {
    pub(crate) inner: Arc<dyn ClientCertVerifier>,
    pub(crate) allowed: Vec<Role>,
}

impl ClientCertVerifier for ClientIdentityVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let identity = PeerIdentity::from_certificate(end_entity).map_err(|e| refuse(e.into()))?;
        if !self.allowed.contains(&identity.role()) {
            let allowed = self
                .allowed
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            return Err(refuse(Refused::Role { identity, allowed }));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A client's server verifier: WebPKI against the srmig CA with the usual server-name check,
/// then a srmig identity (which one is expected is per request: see [`crate::client`]).
#[derive(Debug)]
pub(crate) struct ServerIdentityVerifier {
    pub(crate) inner: Arc<dyn ServerCertVerifier>,
}

impl ServerCertVerifier for ServerIdentityVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        PeerIdentity::from_certificate(end_entity).map_err(|e| refuse(e.into()))?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn root_hint_subjects(&self) -> Option<&[DistinguishedName]> {
        self.inner.root_hint_subjects()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_read_as_sentences() {
        let identity = PeerIdentity::new(Role::Host, "h2").expect("valid");
        let e = refuse(Refused::Role {
            identity,
            allowed: "controller, client".to_owned(),
        });
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        assert_eq!(
            readable(io).to_string(),
            "invalid peer certificate: host/h2 may not connect here (allowed roles: controller, client)"
        );
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            refuse(IdentityError::Missing.into()),
        );
        assert!(readable(io)
            .to_string()
            .starts_with("invalid peer certificate: the certificate carries no srmig identity"));
        let plain = std::io::Error::other("boom");
        assert_eq!(readable(plain).to_string(), "boom");
    }
}
