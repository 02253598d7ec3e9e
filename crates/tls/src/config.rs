//! PEM files to rustls configurations, checked before use.
//!
//! Why check here what the handshake would check anyway: a daemon that starts with a key that
//! does not match its certificate, or a certificate from another CA, would only fail at its
//! first connection, on the peer's side, with an alert that names neither file. Loading
//! verifies the local certificate the way the peer will (chain to the CA, validity, extended key
//! usage, srmig identity) and names the file and the fault.
//!
//! Both configurations trust only the given CA file (never the system roots) and use TLS 1.2
//! or 1.3 with rustls' safe defaults. The server *requires* a client certificate, and admits
//! only the roles it is given; the client presents its certificate to every server.
//! `ca.pem` may hold several CA certificates, which is how a CA is rotated without downtime
//! (`docs/security.md`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use rustls::client::{verify_server_cert_signed_by_trust_anchor, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, ClientConfig, RootCertStore, ServerConfig};

use crate::identity::{IdentityError, PeerIdentity, Role};
use crate::pem::{self, PemError};
use crate::pki::CA_CERT_FILE;
use crate::verify::{ClientIdentityVerifier, ServerIdentityVerifier};

/// The three files a party needs: the CA to trust, its certificate and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificate(s) to trust (PEM, one or more).
    pub ca: PathBuf,
    /// This party's certificate, optionally followed by intermediates (PEM).
    pub cert: PathBuf,
    /// This party's private key (PEM: PKCS#8, SEC1 or PKCS#1, unencrypted).
    pub key: PathBuf,
}

impl TlsFiles {
    /// Three explicit paths.
    pub fn new(ca: impl Into<PathBuf>, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        TlsFiles {
            ca: ca.into(),
            cert: cert.into(),
            key: key.into(),
        }
    }

    /// The layout `srmig pki issue` writes: `dir/ca.pem`, `dir/<role>-<name>.pem` and
    /// `dir/<role>-<name>.key`.
    pub fn in_dir(dir: &Path, identity: &PeerIdentity) -> Self {
        let stem = format!("{}-{}", identity.role(), identity.name());
        TlsFiles {
            ca: dir.join(CA_CERT_FILE),
            cert: dir.join(format!("{stem}.pem")),
            key: dir.join(format!("{stem}.key")),
        }
    }
}

/// Why a TLS configuration could not be made from its files.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file is missing, unreadable, not PEM or holds the wrong blocks.
    #[error(transparent)]
    Pem(#[from] PemError),
    /// A CA certificate cannot be used as a trust anchor.
    #[error("{} is not a usable CA certificate: {detail}", path.display())]
    BadCa {
        /// The CA file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The certificate is not parseable.
    #[error("{} is not a valid X.509 certificate: {detail}", path.display())]
    BadCertificate {
        /// The certificate file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The private key is not usable.
    #[error("{} is not a usable private key: {detail}", path.display())]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The key is not the certificate's.
    #[error("{} does not match the certificate {} (it is another key pair's)", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The certificate does not chain to the CA.
    #[error("{} is not signed by the CA in {}", cert.display(), ca.display())]
    NotSignedByCa {
        /// The certificate file.
        cert: PathBuf,
        /// The CA file.
        ca: PathBuf,
    },
    /// The certificate has expired.
    #[error("{} expired on {not_after}; issue a new one (docs/security.md, Rotation)", cert.display())]
    Expired {
        /// The certificate file.
        cert: PathBuf,
        /// When it expired (UTC), if known.
        not_after: String,
    },
    /// The certificate is not valid yet.
    #[error("{} is not valid before {not_before} (is this machine's clock right?)", cert.display())]
    NotYetValid {
        /// The certificate file.
        cert: PathBuf,
        /// When it becomes valid (UTC), if known.
        not_before: String,
    },
    /// The certificate lacks the extended key usage this side needs.
    #[error("{} cannot be used as a TLS {usage} certificate (its extended key usage lacks {eku})", cert.display())]
    WrongUsage {
        /// The certificate file.
        cert: PathBuf,
        /// "server" or "client".
        usage: &'static str,
        /// The missing usage.
        eku: &'static str,
    },
    /// The certificate chains to the CA but fails another check.
    #[error("{} is not acceptable: {detail}", cert.display())]
    Rejected {
        /// The certificate file.
        cert: PathBuf,
        /// What rustls said.
        detail: String,
    },
    /// The certificate has no (or a malformed) srmig identity.
    #[error("{} has no usable srmig identity", cert.display())]
    NoIdentity {
        /// The certificate file.
        cert: PathBuf,
        /// Why.
        #[source]
        source: IdentityError,
    },
    /// A server that admits no role.
    #[error("a server configuration needs at least one role allowed to connect")]
    NoRoles,
    /// rustls refused the configuration.
    #[error("cannot build the TLS configuration")]
    Build(#[source] rustls::Error),
}

/// Which side this party's certificate is checked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Usage {
    Server,
    Client,
}

/// The files, parsed and checked.
struct Loaded {
    provider: Arc<CryptoProvider>,
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

fn load(files: &TlsFiles, usage: Usage) -> Result<Loaded, ConfigError> {
    let provider = crate::provider();
    let mut roots = RootCertStore::empty();
    for (i, ca) in pem::certificates(&files.ca)?.into_iter().enumerate() {
        roots.add(ca).map_err(|e| ConfigError::BadCa {
            path: files.ca.clone(),
            detail: format!("certificate #{}: {e}", i + 1),
        })?;
    }
    let roots = Arc::new(roots);

    let chain = pem::certificates(&files.cert)?;
    let (key, _) = pem::private_key(&files.key)?;
    let signing_key = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| ConfigError::BadKey {
            path: files.key.clone(),
            detail: e.to_string(),
        })?;
    let certified = CertifiedKey::new(chain.clone(), signing_key);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(ConfigError::KeyMismatch {
                cert: files.cert.clone(),
                key: files.key.clone(),
            })
        }
        Err(e) => {
            return Err(ConfigError::BadCertificate {
                path: files.cert.clone(),
                detail: e.to_string(),
            })
        }
    }

    let end_entity = &chain[0];
    let now = UnixTime::now();
    let checked = match usage {
        Usage::Server => {
            let parsed = ParsedCertificate::try_from(end_entity).map_err(|e| {
                ConfigError::BadCertificate {
                    path: files.cert.clone(),
                    detail: e.to_string(),
                }
            })?;
            verify_server_cert_signed_by_trust_anchor(
                &parsed,
                &roots,
                &chain[1..],
                now,
                provider.signature_verification_algorithms.all,
            )
        }
        Usage::Client => {
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|e| ConfigError::BadCa {
                    path: files.ca.clone(),
                    detail: e.to_string(),
                })?
                .verify_client_cert(end_entity, &chain[1..], now)
                .map(|_| ())
        }
    };
    if let Err(e) = checked {
        return Err(chain_error(e, files, usage, end_entity));
    }
    PeerIdentity::from_certificate(end_entity).map_err(|source| ConfigError::NoIdentity {
        cert: files.cert.clone(),
        source,
    })?;
    Ok(Loaded {
        provider,
        roots,
        chain,
        key,
    })
}

/// A rustls verification error on our own certificate, as a sentence about the files.
fn chain_error(
    e: rustls::Error,
    files: &TlsFiles,
    usage: Usage,
    end_entity: &CertificateDer<'_>,
) -> ConfigError {
    let cert = files.cert.clone();
    let validity = x509_parser::parse_x509_certificate(end_entity.as_ref())
        .ok()
        .map(|(_, x)| {
            (
                crate::utc(x.validity().not_before.timestamp()),
                crate::utc(x.validity().not_after.timestamp()),
            )
        });
    let rustls::Error::InvalidCertificate(ce) = e else {
        return ConfigError::Rejected {
            cert,
            detail: e.to_string(),
        };
    };
    #[allow(deprecated)] // matching the deprecated variant too, for older verifiers
    match ce {
        CertificateError::UnknownIssuer | CertificateError::BadSignature => {
            ConfigError::NotSignedByCa {
                cert,
                ca: files.ca.clone(),
            }
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            ConfigError::Expired {
                cert,
                not_after: validity.map_or_else(|| "an unknown date".to_owned(), |v| v.1),
            }
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            ConfigError::NotYetValid {
                cert,
                not_before: validity.map_or_else(|| "an unknown date".to_owned(), |v| v.0),
            }
        }
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            ConfigError::WrongUsage {
                cert,
                usage: match usage {
                    Usage::Server => "server",
                    Usage::Client => "client",
                },
                eku: match usage {
                    Usage::Server => "serverAuth",
                    Usage::Client => "clientAuth",
                },
            }
        }
        other => ConfigError::Rejected {
            cert,
            detail: other.to_string(),
        },
    }
}

/// A server configuration for `files` that requires every client to present a certificate
/// chaining to the CA in `files.ca`, with a srmig identity whose role is in `peers`.
///
/// The server's own certificate is checked first: it must chain to that CA, be valid now,
/// allow serverAuth, match its key and carry a srmig identity.
pub fn server_config(files: &TlsFiles, peers: &[Role]) -> Result<Arc<ServerConfig>, ConfigError> {
    if peers.is_empty() {
        return Err(ConfigError::NoRoles);
    }
    let loaded = load(files, Usage::Server)?;
    let webpki =
        WebPkiClientVerifier::builder_with_provider(loaded.roots.clone(), loaded.provider.clone())
            .build()
            .map_err(|e| ConfigError::BadCa {
                path: files.ca.clone(),
                detail: e.to_string(),
            })?;
    let mut allowed = peers.to_vec();
    allowed.sort();
    allowed.dedup();
    let verifier: Arc<dyn ClientCertVerifier> = Arc::new(ClientIdentityVerifier {
        inner: webpki,
        allowed,
    });
    let config = ServerConfig::builder_with_provider(loaded.provider)
        .with_safe_default_protocol_versions()
        .map_err(ConfigError::Build)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(loaded.chain, loaded.key)
        .map_err(ConfigError::Build)?;
    Ok(Arc::new(config))
}

/// A client configuration for `files` that trusts only the CA in `files.ca` (servers must
/// also carry a srmig identity) and presents `files.cert` to every server.
///
/// The client's own certificate is checked first: it must chain to that CA, be valid now,
/// allow clientAuth, match its key and carry a srmig identity.
pub fn client_config(files: &TlsFiles) -> Result<Arc<ClientConfig>, ConfigError> {
    let loaded = load(files, Usage::Client)?;
    let webpki =
        WebPkiServerVerifier::builder_with_provider(loaded.roots.clone(), loaded.provider.clone())
            .build()
            .map_err(|e| ConfigError::BadCa {
                path: files.ca.clone(),
                detail: e.to_string(),
            })?;
    let verifier: Arc<dyn ServerCertVerifier> = Arc::new(ServerIdentityVerifier { inner: webpki });
    let config = ClientConfig::builder_with_provider(loaded.provider)
        .with_safe_default_protocol_versions()
        .map_err(ConfigError::Build)?
        .dangerous() // only to install the verifier above, which wraps WebPKI's unchanged
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(loaded.chain, loaded.key)
        .map_err(ConfigError::Build)?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::pki::{init_ca, issue, CaOptions, IssueOptions, Validity};

    struct Pki {
        _dir: tempfile::TempDir,
        root: PathBuf,
    }

    impl Pki {
        fn new() -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            let root = dir.path().to_owned();
            init_ca(&root.join("ca"), &CaOptions::default()).expect("ca");
            Pki { _dir: dir, root }
        }
        fn issue(&self, role: Role, name: &str, edit: impl FnOnce(&mut IssueOptions)) -> TlsFiles {
            let mut o = IssueOptions::new(PeerIdentity::new(role, name).expect("valid"));
            o.sans = vec!["localhost".parse().expect("dns")];
            edit(&mut o);
            issue(&self.root.join("ca"), &self.root.join(name), &o).expect("issue")
        }
    }

    fn message(e: &dyn std::error::Error) -> String {
        let mut s = e.to_string();
        let mut src = e.source();
        while let Some(x) = src {
            s.push_str(": ");
            s.push_str(&x.to_string());
            src = x.source();
        }
        s
    }

    #[test]
    fn valid_files_load_on_both_sides() {
        let pki = Pki::new();
        let host = pki.issue(Role::Host, "h1", |_| {});
        server_config(&host, &[Role::Controller]).expect("server");
        client_config(&host).expect("client");
        let alice = pki.issue(Role::Client, "alice", |_| {});
        client_config(&alice).expect("client");
    }

    #[test]
    fn errors_name_the_file_and_the_fault() {
        let pki = Pki::new();
        let h1 = pki.issue(Role::Host, "h1", |_| {});
        let h2 = pki.issue(Role::Host, "h2", |_| {});

        // Key of another certificate.
        let files = TlsFiles::new(&h1.ca, &h1.cert, &h2.key);
        let e = server_config(&files, &Role::ALL).expect_err("mismatch");
        assert!(matches!(e, ConfigError::KeyMismatch { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!(
                "{} does not match the certificate {} (it is another key pair's)",
                h2.key.display(),
                h1.cert.display()
            )
        );

        // Certificate and key swapped.
        let files = TlsFiles::new(&h1.ca, &h1.key, &h1.cert);
        let e = client_config(&files).expect_err("swapped");
        assert!(
            message(&e).contains("holds no CERTIFICATE PEM block (it holds: PRIVATE KEY)"),
            "{e}"
        );

        // Missing CA file.
        let files = TlsFiles::new(pki.root.join("nope.pem"), &h1.cert, &h1.key);
        let e = client_config(&files).expect_err("missing");
        assert!(message(&e).ends_with("nope.pem: no such file"), "{e}");

        // Another CA.
        let other = Pki::new();
        let files = TlsFiles::new(other.root.join("ca/ca.pem"), &h1.cert, &h1.key);
        let e = server_config(&files, &Role::ALL).expect_err("other ca");
        assert!(matches!(e, ConfigError::NotSignedByCa { .. }), "{e:?}");
        assert!(e.to_string().contains("is not signed by the CA in"), "{e}");

        // Expired.
        let now = SystemTime::now();
        let old = pki.issue(Role::Host, "old", |o| {
            o.validity = Validity::new(
                now - Duration::from_secs(864_000),
                now - Duration::from_secs(86_400),
            )
            .expect("validity");
        });
        let e = client_config(&old).expect_err("expired");
        assert!(matches!(e, ConfigError::Expired { .. }), "{e:?}");
        assert!(e.to_string().contains(" expired on "), "{e}");

        // A client certificate used by a server.
        let alice = pki.issue(Role::Client, "alice", |_| {});
        let e = server_config(&alice, &Role::ALL).expect_err("client cert as server");
        assert!(
            matches!(
                e,
                ConfigError::WrongUsage {
                    eku: "serverAuth",
                    ..
                }
            ),
            "{e:?}"
        );

        // The CA file is garbage.
        let junk = pki.root.join("junk.pem");
        std::fs::write(
            &junk,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        let e = client_config(&TlsFiles::new(&junk, &h1.cert, &h1.key)).expect_err("junk ca");
        assert!(matches!(e, ConfigError::BadCa { .. }), "{e:?}");

        // No roles.
        assert!(matches!(server_config(&h1, &[]), Err(ConfigError::NoRoles)));
    }

    #[test]
    fn a_certificate_without_srmig_identity_is_refused() {
        let pki = Pki::new();
        let h1 = pki.issue(Role::Host, "h1", |_| {});
        // Signed by the CA, right usages, but no srmig URI.
        let ca_key = rcgen::KeyPair::from_pem(
            &std::fs::read_to_string(pki.root.join("ca/ca.key")).expect("read"),
        )
        .expect("ca key");
        let ca_pem = std::fs::read_to_string(&h1.ca).expect("read");
        let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).expect("issuer");
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &issuer).expect("sign");
        let cert_path = pki.root.join("anon.pem");
        let key_path = pki.root.join("anon.key");
        std::fs::write(&cert_path, cert.pem()).expect("write");
        std::fs::write(&key_path, key.serialize_pem()).expect("write");
        let e = server_config(&TlsFiles::new(&h1.ca, &cert_path, &key_path), &Role::ALL)
            .expect_err("no identity");
        assert!(
            matches!(
                e,
                ConfigError::NoIdentity {
                    source: IdentityError::Missing,
                    ..
                }
            ),
            "{e:?}"
        );
    }
}
