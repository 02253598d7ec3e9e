//! Reading PEM files with errors that name the file and say what is in it instead.
//!
//! Why not call rustls-pki-types' PEM parser directly: it reports "no items found" for a key file
//! handed where a certificate belongs, silently skips encrypted keys, and does not name the
//! file. Operators mix these files up; the message should tell them which file and what it
//! holds.

use std::io;
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::{PemObject, SectionKind};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why a PEM file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    /// The file does not exist.
    #[error("{}: no such file", path.display())]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// The file exists but could not be read (permissions, a directory, ...).
    #[error("cannot read {}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The file is not PEM, or a PEM block in it is damaged.
    #[error("{} is not a PEM file: {detail}", path.display())]
    NotPem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// The file is PEM but holds none of the blocks wanted.
    #[error("{} holds no {wanted} PEM block (it holds: {found})", path.display())]
    Wrong {
        /// The file.
        path: PathBuf,
        /// What was looked for.
        wanted: &'static str,
        /// The labels of the blocks it does hold.
        found: String,
    },
    /// The private key is encrypted; srmig reads only unencrypted keys.
    #[error(
        "{} holds an encrypted private key; srmig needs it unencrypted \
         (openssl pkey -in FILE -out FILE, then chmod 600)",
        path.display()
    )]
    Encrypted {
        /// The file.
        path: PathBuf,
    },
    /// More than one private key: which one is meant is unclear.
    #[error("{} holds {count} private keys; keep exactly one", path.display())]
    ManyKeys {
        /// The file.
        path: PathBuf,
        /// How many.
        count: usize,
    },
}

fn label(kind: SectionKind) -> &'static str {
    match kind {
        SectionKind::Certificate => "CERTIFICATE",
        SectionKind::PublicKey => "PUBLIC KEY",
        SectionKind::RsaPrivateKey => "RSA PRIVATE KEY",
        SectionKind::PrivateKey => "PRIVATE KEY",
        SectionKind::EcPrivateKey => "EC PRIVATE KEY",
        SectionKind::Crl => "X509 CRL",
        SectionKind::Csr => "CERTIFICATE REQUEST",
        _ => "another kind of block",
    }
}

/// The known PEM blocks of a file: each block's kind and DER contents.
type Sections = Vec<(SectionKind, Vec<u8>)>;

/// The bytes of the file at `path`.
fn read(path: &Path) -> Result<Vec<u8>, PemError> {
    std::fs::read(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => PemError::Missing {
            path: path.to_owned(),
        },
        _ => PemError::Unreadable {
            path: path.to_owned(),
            source,
        },
    })
}

/// Every PEM block of `bytes` (the file at `path`).
fn sections(path: &Path, bytes: &[u8]) -> Result<Sections, PemError> {
    let not_pem = |detail: String| PemError::NotPem {
        path: path.to_owned(),
        detail,
    };
    let sections = <(SectionKind, Vec<u8>)>::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| not_pem(e.to_string()))?;
    if sections.is_empty() && !contains(bytes, b"-----BEGIN ") {
        return Err(not_pem("no -----BEGIN ...----- line".to_owned()));
    }
    Ok(sections)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn found(sections: &[(SectionKind, Vec<u8>)], raw: &[u8]) -> String {
    let mut labels: Vec<&str> = sections.iter().map(|(k, _)| label(*k)).collect();
    if contains(raw, b"-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        labels.push("ENCRYPTED PRIVATE KEY");
    }
    labels.dedup();
    if labels.is_empty() {
        "no block srmig knows".to_owned()
    } else {
        labels.join(", ")
    }
}

/// Every certificate in a PEM file, in file order (at least one).
pub(crate) fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    certificates_in(path, &read(path)?)
}

/// Every certificate in `raw`, the PEM text of the file at `path` (which errors name), in
/// order (at least one). What [`certificates`] does once the file is read; public for the
/// fuzz target.
pub fn certificates_in(path: &Path, raw: &[u8]) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let sections = sections(path, raw)?;
    let certs: Vec<CertificateDer<'static>> = sections
        .iter()
        .filter(|(kind, _)| *kind == SectionKind::Certificate)
        .map(|(_, der)| CertificateDer::from(der.clone()))
        .collect();
    if certs.is_empty() {
        return Err(PemError::Wrong {
            path: path.to_owned(),
            wanted: "CERTIFICATE",
            found: found(&sections, raw),
        });
    }
    Ok(certs)
}

/// The one private key of a PEM file (PKCS#8, SEC1 or PKCS#1), with its PEM label.
pub(crate) fn private_key(path: &Path) -> Result<(PrivateKeyDer<'static>, &'static str), PemError> {
    private_key_in(path, &read(path)?)
}

/// The one private key in `raw`, the PEM text of the file at `path` (which errors name),
/// with its PEM label. What [`private_key`] does once the file is read; public for the fuzz
/// target.
pub fn private_key_in(
    path: &Path,
    raw: &[u8],
) -> Result<(PrivateKeyDer<'static>, &'static str), PemError> {
    let sections = sections(path, raw)?;
    let mut keys: Vec<(PrivateKeyDer<'static>, &'static str)> = sections
        .iter()
        .filter_map(|(kind, der)| {
            PrivateKeyDer::from_pem(*kind, der.clone()).map(|key| (key, label(*kind)))
        })
        .collect();
    match keys.len() {
        1 => Ok(keys.remove(0)),
        0 if contains(raw, b"-----BEGIN ENCRYPTED PRIVATE KEY-----") => Err(PemError::Encrypted {
            path: path.to_owned(),
        }),
        0 => Err(PemError::Wrong {
            path: path.to_owned(),
            wanted: "PRIVATE KEY",
            found: found(&sections, raw),
        }),
        count => Err(PemError::ManyKeys {
            path: path.to_owned(),
            count,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write test file");
        p
    }

    #[test]
    fn errors_name_the_file_and_what_it_holds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope.pem");
        let e = certificates(&missing).expect_err("missing");
        assert!(matches!(e, PemError::Missing { .. }));
        assert!(e.to_string().contains("nope.pem: no such file"), "{e}");

        let e = certificates(dir.path()).expect_err("a directory");
        assert!(matches!(e, PemError::Unreadable { .. }), "{e:?}");

        let garbage = write(dir.path(), "garbage.pem", "hello\n");
        let e = certificates(&garbage).expect_err("not pem");
        assert!(
            e.to_string().contains("garbage.pem is not a PEM file"),
            "{e}"
        );

        let broken = write(
            dir.path(),
            "broken.pem",
            "-----BEGIN CERTIFICATE-----\nMIIB\n",
        );
        let e = certificates(&broken).expect_err("no end line");
        assert!(matches!(e, PemError::NotPem { .. }), "{e:?}");

        let key = rcgen::KeyPair::generate().expect("key");
        let key_file = write(dir.path(), "a.key", &key.serialize_pem());
        let e = certificates(&key_file).expect_err("a key, not a certificate");
        assert_eq!(
            e.to_string(),
            format!(
                "{} holds no CERTIFICATE PEM block (it holds: PRIVATE KEY)",
                key_file.display()
            )
        );
        let (_, label) = private_key(&key_file).expect("the key");
        assert_eq!(label, "PRIVATE KEY");

        let two = write(
            dir.path(),
            "two.key",
            &format!("{}{}", key.serialize_pem(), key.serialize_pem()),
        );
        assert!(matches!(
            private_key(&two),
            Err(PemError::ManyKeys { count: 2, .. })
        ));

        let enc = write(
            dir.path(),
            "enc.key",
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
        );
        assert!(matches!(private_key(&enc), Err(PemError::Encrypted { .. })));
    }
}
