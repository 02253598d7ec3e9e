//! A small PKI for one srmig deployment: the controller's CA and the certificates it issues to
//! hosts, controllers and operators (what `srmig pki init` and `srmig pki issue` run).
//!
//! Why our own instead of only documenting `openssl`: the identity encoding
//! ([`crate::identity`]), the extended key usages per role and the file permissions are easy to
//! get subtly wrong by hand, and a wrong certificate shows up only as a failed handshake on
//! another machine. `docs/security.md` still gives the equivalent `openssl` steps, and a test
//! runs them, so either way works.
//!
//! Files (all PEM):
//!
//! | file | what | mode |
//! |---|---|---|
//! | `ca.pem` | the CA certificate (ECDSA P-256, `CA:TRUE, pathlen:0`) | 0644 |
//! | `ca.key` | the CA private key (PKCS#8); never overwritten without `force` | 0600 |
//! | `<role>-<name>.pem` | a certificate issued by the CA | 0644 |
//! | `<role>-<name>.key` | its private key (PKCS#8), new for every certificate | 0600 |
//!
//! Issued certificates carry `CN=<name>`, the URI SAN `srmig://<role>/<name>`, the caller's
//! DNS and IP SANs (where the holder is reached, checked by the usual server-name
//! verification), `digitalSignature`, and the extended key usages of their role: serverAuth and
//! clientAuth for a host or a controller (each is a server for the other and a client of it),
//! clientAuth only for an operator's client. New files are written to a temporary name and
//! moved into place, so a reader never sees half a key; existing files are replaced only with
//! `force`.

use std::fs;
use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData as _, SanType,
};
use rustls::pki_types::{CertificateDer, DnsName};

use crate::config::TlsFiles;
use crate::identity::{IdentityError, PeerIdentity, Role};
use crate::pem::{self, PemError};

/// The CA certificate's file name in a PKI directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA private key's file name in a PKI directory.
pub const CA_KEY_FILE: &str = "ca.key";
/// Default lifetime of a CA, in days (ten years).
pub const DEFAULT_CA_DAYS: u32 = 3650;
/// Default lifetime of an issued certificate, in days.
pub const DEFAULT_CERT_DAYS: u32 = 365;
/// Longest lifetime accepted, in days (about 100 years).
pub const MAX_DAYS: u32 = 36_500;
/// How far before "now" a new certificate's validity starts, to tolerate clocks that lag.
pub const BACKDATE: Duration = Duration::from_secs(3600);

const DAY: Duration = Duration::from_secs(86_400);

/// Why a CA or a certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file to be written already exists and `force` was not given.
    #[error("{} already exists; refusing to overwrite it (use --force to replace it)", path.display())]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// The output directory already holds the certificate of another CA.
    #[error("{} holds another CA's certificate; use --force to replace it", path.display())]
    OtherCa {
        /// The existing CA file.
        path: PathBuf,
    },
    /// A directory could not be created.
    #[error("cannot create directory {}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A PEM file (the CA's) could not be read.
    #[error(transparent)]
    Read(#[from] PemError),
    /// The CA certificate is not parseable.
    #[error("{} is not a usable CA certificate: {detail}", path.display())]
    BadCaCertificate {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The certificate in the CA file is not a CA.
    #[error("{} is not a CA certificate (it lacks basicConstraints CA:TRUE)", path.display())]
    NotACa {
        /// The file.
        path: PathBuf,
    },
    /// The CA key is not PKCS#8 (the only format the signing code reads).
    #[error(
        "{} is an {label} key; signing needs PKCS#8 (\"PRIVATE KEY\"): convert it with \
         openssl pkcs8 -topk8 -nocrypt -in FILE -out FILE",
        path.display()
    )]
    CaKeyFormat {
        /// The file.
        path: PathBuf,
        /// The PEM label found.
        label: &'static str,
    },
    /// The CA key could not be loaded.
    #[error("{} is not a usable CA key", path.display())]
    BadCaKey {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rcgen::Error,
    },
    /// The CA key is not the key of the CA certificate.
    #[error("{} is not the private key of the CA certificate {}", key.display(), cert.display())]
    CaKeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The CA has expired: nothing it signs would be accepted.
    #[error("the CA certificate {} expired on {not_after}; make a new CA (docs/security.md, Rotation)", path.display())]
    CaExpired {
        /// The file.
        path: PathBuf,
        /// When it expired.
        not_after: String,
    },
    /// The certificate asked for would still be valid after its CA expired.
    #[error(
        "the certificate would outlive its CA ({} expires on {not_after}); ask for fewer days or renew the CA",
        path.display()
    )]
    OutlivesCa {
        /// The CA file.
        path: PathBuf,
        /// When the CA expires.
        not_after: String,
    },
    /// The role and name do not make a valid identity.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// A subject alternative name is neither an IP address nor a valid DNS name.
    #[error("invalid subject alternative name {value:?}: {reason}")]
    BadSan {
        /// The value given.
        value: String,
        /// Why it was refused.
        reason: String,
    },
    /// A server role without any name clients could verify.
    #[error(
        "a {role} certificate needs at least one subject alternative name (--san): the DNS \
         name or IP address clients connect to, which they verify"
    )]
    NoServerName {
        /// The role.
        role: Role,
    },
    /// The CA's common name is empty.
    #[error("the CA's common name must not be empty")]
    EmptyCaName,
    /// The validity period is unusable.
    #[error("invalid validity: {0}")]
    BadValidity(String),
    /// Key or certificate generation failed.
    #[error("cannot generate the {what}")]
    Generate {
        /// What was being generated.
        what: &'static str,
        /// The cause.
        #[source]
        source: rcgen::Error,
    },
}

/// When a certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
}

impl Validity {
    /// From [`BACKDATE`] before `now` until `days` days after `now` (1 to [`MAX_DAYS`]).
    pub fn days_from(now: SystemTime, days: u32) -> Result<Self, PkiError> {
        if days == 0 || days > MAX_DAYS {
            return Err(PkiError::BadValidity(format!(
                "{days} days; expected 1 to {MAX_DAYS}"
            )));
        }
        Ok(Self::days_unchecked(now, days))
    }

    /// [`Validity::days_from`] the current time.
    pub fn days_from_now(days: u32) -> Result<Self, PkiError> {
        Self::days_from(SystemTime::now(), days)
    }

    /// An explicit period (`not_after` after `not_before`); may lie in the past, which is how
    /// tests make expired certificates.
    pub fn new(not_before: SystemTime, not_after: SystemTime) -> Result<Self, PkiError> {
        if not_after <= not_before {
            return Err(PkiError::BadValidity(
                "not_after must be later than not_before".to_owned(),
            ));
        }
        Ok(Validity {
            not_before,
            not_after,
        })
    }

    fn days_unchecked(now: SystemTime, days: u32) -> Self {
        Validity {
            not_before: now.checked_sub(BACKDATE).unwrap_or(now),
            not_after: now + DAY * days,
        }
    }
}

/// A subject alternative name for where a holder is reached: an IP address or a DNS name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum San {
    /// A DNS name (`h1.dc.example`, `localhost`).
    Dns(String),
    /// An IP address (a host's management address).
    Ip(IpAddr),
}

impl FromStr for San {
    type Err = PkiError;
    /// An IP address if it parses as one, else a DNS name.
    fn from_str(s: &str) -> Result<Self, PkiError> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(San::Ip(ip));
        }
        DnsName::try_from(s)
            .map(|_| San::Dns(s.to_owned()))
            .map_err(|_| PkiError::BadSan {
                value: s.to_owned(),
                reason: "neither an IP address nor a valid DNS name".to_owned(),
            })
    }
}

impl San {
    fn to_rcgen(&self) -> Result<SanType, PkiError> {
        Ok(match self {
            San::Ip(ip) => SanType::IpAddress(*ip),
            San::Dns(name) => {
                SanType::DnsName(name.as_str().try_into().map_err(|_| PkiError::BadSan {
                    value: name.clone(),
                    reason: "not an ASCII DNS name".to_owned(),
                })?)
            }
        })
    }
}

/// What [`init_ca`] makes.
#[derive(Debug, Clone)]
pub struct CaOptions {
    /// The CA's common name; by default `srmig CA <8 hex digits of its key identifier>`, so
    /// that two CAs (another deployment's, or the next one during a rotation) never share a
    /// name: certificate paths are built by issuer name.
    pub common_name: Option<String>,
    /// Its validity ([`DEFAULT_CA_DAYS`] from now by default).
    pub validity: Validity,
    /// Replace an existing `ca.pem`/`ca.key`.
    pub force: bool,
}

impl Default for CaOptions {
    fn default() -> Self {
        CaOptions {
            common_name: None,
            validity: Validity::days_unchecked(SystemTime::now(), DEFAULT_CA_DAYS),
            force: false,
        }
    }
}

/// What [`issue`] makes.
#[derive(Debug, Clone)]
pub struct IssueOptions {
    /// The holder's identity.
    pub identity: PeerIdentity,
    /// DNS names and IP addresses the holder is reached at (required for hosts and
    /// controllers).
    pub sans: Vec<San>,
    /// Validity ([`DEFAULT_CERT_DAYS`] from now by default).
    pub validity: Validity,
    /// Replace existing files.
    pub force: bool,
}

impl IssueOptions {
    /// Defaults for `identity`: no SANs, [`DEFAULT_CERT_DAYS`] from now, no overwriting.
    pub fn new(identity: PeerIdentity) -> Self {
        IssueOptions {
            identity,
            sans: Vec::new(),
            validity: Validity::days_unchecked(SystemTime::now(), DEFAULT_CERT_DAYS),
            force: false,
        }
    }
}

/// The files of a CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaFiles {
    /// `ca.pem`.
    pub cert: PathBuf,
    /// `ca.key`.
    pub key: PathBuf,
}

impl CaFiles {
    /// `dir/ca.pem` and `dir/ca.key`.
    pub fn in_dir(dir: &Path) -> Self {
        CaFiles {
            cert: dir.join(CA_CERT_FILE),
            key: dir.join(CA_KEY_FILE),
        }
    }
}

/// Makes a new CA in `dir` (created 0700 if missing): `ca.pem` and `ca.key` (0600).
///
/// Refuses if either file exists, unless `options.force`.
pub fn init_ca(dir: &Path, options: &CaOptions) -> Result<CaFiles, PkiError> {
    if options
        .common_name
        .as_ref()
        .is_some_and(|cn| cn.trim().is_empty())
    {
        return Err(PkiError::EmptyCaName);
    }
    let files = CaFiles::in_dir(dir);
    create_dir(dir)?;
    if !options.force {
        refuse_existing(&[&files.key, &files.cert])?;
    }
    let key = KeyPair::generate().map_err(|source| PkiError::Generate {
        what: "CA key",
        source,
    })?;
    let mut params = CertificateParams::default();
    let common_name = match &options.common_name {
        Some(cn) => cn.clone(),
        None => {
            let id = params.key_identifier(&key);
            let hex: String = id.iter().take(4).map(|b| format!("{b:02x}")).collect();
            format!("srmig CA {hex}")
        }
    };
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, &options.validity);
    let cert = params
        .self_signed(&key)
        .map_err(|source| PkiError::Generate {
            what: "CA certificate",
            source,
        })?;
    write_file(
        &files.key,
        key.serialize_pem().as_bytes(),
        0o600,
        options.force,
    )?;
    write_file(&files.cert, cert.pem().as_bytes(), 0o644, options.force)?;
    Ok(files)
}

/// Issues a certificate signed by the CA in `ca_dir` into `out_dir` (created 0700 if
/// missing): `<role>-<name>.pem` and `<role>-<name>.key` (0600), plus a copy of `ca.pem`
/// when `out_dir` is another directory, so that `out_dir` is everything its holder needs (a
/// `ca.pem` there that already contains this CA, e.g. a two-CA bundle, is kept).
///
/// Refuses to overwrite existing files unless `options.force`.
pub fn issue(ca_dir: &Path, out_dir: &Path, options: &IssueOptions) -> Result<TlsFiles, PkiError> {
    let role = options.identity.role();
    if role.is_server() && options.sans.is_empty() {
        return Err(PkiError::NoServerName { role });
    }
    let ca = LoadedCa::load(&CaFiles::in_dir(ca_dir))?;
    let not_after = unix_secs(options.validity.not_after);
    if not_after > ca.not_after {
        return Err(PkiError::OutlivesCa {
            path: ca.files.cert.clone(),
            not_after: crate::utc(ca.not_after),
        });
    }

    let files = TlsFiles::in_dir(out_dir, &options.identity);
    create_dir(out_dir)?;
    if !options.force {
        refuse_existing(&[&files.key, &files.cert])?;
    }
    // Copy ca.pem next to the certificate unless that directory already trusts this CA (it
    // may hold a bundle of two CAs during a rotation: keep it).
    let copy_ca = !same_dir(ca_dir, out_dir)
        && !pem::certificates(&files.ca).is_ok_and(|certs| certs.contains(&ca.der));
    if copy_ca && !options.force && files.ca.symlink_metadata().is_ok() {
        return Err(PkiError::OtherCa {
            path: files.ca.clone(),
        });
    }

    let key = KeyPair::generate().map_err(|source| PkiError::Generate {
        what: "private key",
        source,
    })?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, options.identity.name());
    let uri = options.identity.uri();
    let mut sans = vec![SanType::URI(uri.as_str().try_into().map_err(|_| {
        PkiError::BadSan {
            value: uri.clone(),
            reason: "not ASCII".to_owned(),
        }
    })?)];
    for san in &options.sans {
        sans.push(san.to_rcgen()?);
    }
    params.subject_alt_names = sans;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = if role.is_server() {
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ]
    } else {
        vec![ExtendedKeyUsagePurpose::ClientAuth]
    };
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, &options.validity);
    let cert = params
        .signed_by(&key, &ca.issuer)
        .map_err(|source| PkiError::Generate {
            what: "certificate",
            source,
        })?;

    write_file(
        &files.key,
        key.serialize_pem().as_bytes(),
        0o600,
        options.force,
    )?;
    write_file(&files.cert, cert.pem().as_bytes(), 0o644, options.force)?;
    if copy_ca {
        // Already checked: absent, or to be replaced (force).
        write_file(&files.ca, ca.pem.as_bytes(), 0o644, true)?;
    }
    Ok(files)
}

/// The CA of a PKI directory, checked and ready to sign.
struct LoadedCa {
    files: CaFiles,
    der: CertificateDer<'static>,
    pem: String,
    not_after: i64,
    issuer: Issuer<'static, KeyPair>,
}

impl LoadedCa {
    fn load(files: &CaFiles) -> Result<Self, PkiError> {
        let der: CertificateDer<'static> = pem::certificates(&files.cert)?.remove(0);
        let bad = |detail: String| PkiError::BadCaCertificate {
            path: files.cert.clone(),
            detail,
        };
        let (_, x509) =
            x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| bad(e.to_string()))?;
        let is_ca = x509
            .basic_constraints()
            .map_err(|e| bad(e.to_string()))?
            .is_some_and(|bc| bc.value.ca);
        if !is_ca {
            return Err(PkiError::NotACa {
                path: files.cert.clone(),
            });
        }
        let not_after = x509.validity().not_after.timestamp();
        if not_after <= unix_secs(SystemTime::now()) {
            return Err(PkiError::CaExpired {
                path: files.cert.clone(),
                not_after: crate::utc(not_after),
            });
        }
        let (key_der, label) = pem::private_key(&files.key)?;
        let rustls::pki_types::PrivateKeyDer::Pkcs8(pkcs8) = key_der else {
            return Err(PkiError::CaKeyFormat {
                path: files.key.clone(),
                label,
            });
        };
        let key =
            KeyPair::try_from(pkcs8.secret_pkcs8_der()).map_err(|source| PkiError::BadCaKey {
                path: files.key.clone(),
                source,
            })?;
        if key.subject_public_key_info() != x509.public_key().raw {
            return Err(PkiError::CaKeyMismatch {
                cert: files.cert.clone(),
                key: files.key.clone(),
            });
        }
        let issuer = Issuer::from_ca_cert_der(&der, key)
            .map_err(|e| bad(format!("cannot sign with it: {e}")))?;
        // The PEM as written by us or openssl; copied verbatim next to issued certificates.
        let pem = fs::read_to_string(&files.cert).map_err(|source| {
            PkiError::Read(PemError::Unreadable {
                path: files.cert.clone(),
                source,
            })
        })?;
        Ok(LoadedCa {
            files: files.clone(),
            der,
            pem,
            not_after,
            issuer,
        })
    }
}

fn set_validity(params: &mut CertificateParams, validity: &Validity) {
    params.not_before = validity.not_before.into();
    params.not_after = validity.not_after.into();
}

fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

fn create_dir(dir: &Path) -> Result<(), PkiError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| PkiError::CreateDir {
            path: dir.to_owned(),
            source,
        })
}

fn refuse_existing(paths: &[&Path]) -> Result<(), PkiError> {
    match paths.iter().find(|p| p.symlink_metadata().is_ok()) {
        Some(path) => Err(PkiError::Exists {
            path: path.to_path_buf(),
        }),
        None => Ok(()),
    }
}

/// Writes `contents` to `path` with exactly `mode`, atomically: a temporary file in the same
/// directory, then a rename (`force`) or a hard link that fails if `path` exists.
fn write_file(path: &Path, contents: &[u8], mode: u32, force: bool) -> Result<(), PkiError> {
    let err = |source| PkiError::Write {
        path: path.to_owned(),
        source,
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The mode given to open() is reduced by the umask; set it exactly.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(contents)?;
        f.sync_all()?;
        if force {
            fs::rename(&tmp, path)
        } else {
            fs::hard_link(&tmp, path)
        }
    })();
    let _ = fs::remove_file(&tmp);
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(PkiError::Exists {
            path: path.to_owned(),
        }),
        Err(e) => Err(err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("metadata").permissions().mode() & 0o777
    }

    fn host(name: &str) -> IssueOptions {
        let mut o = IssueOptions::new(PeerIdentity::new(Role::Host, name).expect("valid"));
        o.sans = vec![
            "127.0.0.1".parse().expect("ip"),
            "localhost".parse().expect("dns"),
        ];
        o
    }

    #[test]
    fn ca_files_have_the_right_modes_and_are_not_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = dir.path().join("pki");
        let files = init_ca(&pki, &CaOptions::default()).expect("init");
        assert_eq!(mode(&files.key), 0o600);
        assert_eq!(mode(&files.cert), 0o644);
        assert_eq!(mode(&pki), 0o700);
        let key_before = fs::read(&files.key).expect("read key");
        let cert_before = fs::read(&files.cert).expect("read cert");

        let e = init_ca(&pki, &CaOptions::default()).expect_err("exists");
        assert!(
            matches!(&e, PkiError::Exists { path } if *path == files.key),
            "{e}"
        );
        assert!(e.to_string().contains("refusing to overwrite"), "{e}");
        assert_eq!(fs::read(&files.key).expect("read key"), key_before);
        assert_eq!(fs::read(&files.cert).expect("read cert"), cert_before);

        // Only the certificate left: still refused (a key would be orphaned).
        fs::remove_file(&files.key).expect("rm key");
        assert!(matches!(
            init_ca(&pki, &CaOptions::default()),
            Err(PkiError::Exists { path }) if path == files.cert
        ));

        let forced = CaOptions {
            force: true,
            ..CaOptions::default()
        };
        init_ca(&pki, &forced).expect("forced");
        assert_ne!(fs::read(&files.cert).expect("read cert"), cert_before);
        assert_eq!(mode(&files.key), 0o600);
        // No temporary files left behind.
        let names: Vec<_> = fs::read_dir(&pki)
            .expect("readdir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn issued_certificates_encode_identity_usages_and_sans() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = dir.path().join("pki");
        init_ca(&pki, &CaOptions::default()).expect("init");
        let out = dir.path().join("h1");
        let files = issue(&pki, &out, &host("h1")).expect("issue");
        assert_eq!(files.cert, out.join("host-h1.pem"));
        assert_eq!(files.key, out.join("host-h1.key"));
        assert_eq!(mode(&files.key), 0o600);
        assert_eq!(mode(&files.cert), 0o644);
        assert_eq!(
            fs::read(&files.ca).expect("copied ca"),
            fs::read(pki.join(CA_CERT_FILE)).expect("ca")
        );

        let der = pem::certificates(&files.cert).expect("cert").remove(0);
        assert_eq!(
            PeerIdentity::from_certificate(&der),
            PeerIdentity::new(Role::Host, "h1")
        );
        let (_, x) = x509_parser::parse_x509_certificate(der.as_ref()).expect("x509");
        let eku = x.extended_key_usage().expect("eku").expect("present").value;
        assert!(eku.server_auth && eku.client_auth);
        let cn = x.subject().iter_common_name().next().expect("cn");
        assert_eq!(cn.as_str().expect("utf8"), "h1");
        let san = x.subject_alternative_name().expect("san").expect("present");
        let names: Vec<String> = san
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(
            names,
            [
                "URI(srmig://host/h1)",
                "IPAddress(7f:00:00:01)",
                "DNSName(localhost)"
            ]
        );

        // An output directory whose ca.pem is a bundle holding this CA (a rotation) keeps it.
        let other = dir.path().join("other");
        init_ca(&other, &CaOptions::default()).expect("other ca");
        let bundle = [
            fs::read(other.join(CA_CERT_FILE)).expect("other ca"),
            fs::read(pki.join(CA_CERT_FILE)).expect("ca"),
        ]
        .concat();
        fs::write(&files.ca, &bundle).expect("write bundle");
        issue(&pki, &out, &host("h1b")).expect("issue next to a bundle");
        assert_eq!(fs::read(&files.ca).expect("bundle"), bundle);

        // A client certificate: clientAuth only, no SAN needed.
        let client = IssueOptions::new(PeerIdentity::new(Role::Client, "alice").expect("valid"));
        let files = issue(&pki, &pki, &client).expect("client");
        let der = pem::certificates(&files.cert).expect("cert").remove(0);
        let (_, x) = x509_parser::parse_x509_certificate(der.as_ref()).expect("x509");
        let eku = x.extended_key_usage().expect("eku").expect("present").value;
        assert!(!eku.server_auth && eku.client_auth);
    }

    #[test]
    fn issue_refuses_what_it_should() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = dir.path().join("pki");
        let ca = init_ca(&pki, &CaOptions::default()).expect("init");

        let mut no_san = host("h1");
        no_san.sans.clear();
        assert!(matches!(
            issue(&pki, &pki, &no_san),
            Err(PkiError::NoServerName { role: Role::Host })
        ));

        let files = issue(&pki, &pki, &host("h1")).expect("issue");
        let before = fs::read(&files.key).expect("key");
        assert!(matches!(
            issue(&pki, &pki, &host("h1")),
            Err(PkiError::Exists { path }) if path == files.key
        ));
        assert_eq!(fs::read(&files.key).expect("key"), before);
        let mut forced = host("h1");
        forced.force = true;
        issue(&pki, &pki, &forced).expect("forced");
        assert_ne!(fs::read(&files.key).expect("key"), before);

        let mut long = host("h2");
        long.validity = Validity::days_from_now(DEFAULT_CA_DAYS + 10).expect("days");
        assert!(matches!(
            issue(&pki, &pki, &long),
            Err(PkiError::OutlivesCa { .. })
        ));

        assert!(matches!(
            Validity::days_from_now(0),
            Err(PkiError::BadValidity(_))
        ));
        assert!(matches!(
            "not a name!".parse::<San>(),
            Err(PkiError::BadSan { .. })
        ));

        // Another CA's certificate already in the output directory.
        let other = dir.path().join("other");
        init_ca(&other, &CaOptions::default()).expect("other ca");
        let e = issue(&pki, &other, &host("h3")).expect_err("other ca");
        assert!(matches!(e, PkiError::OtherCa { .. }), "{e}");

        // A CA key that is not the CA certificate's key.
        fs::copy(other.join(CA_KEY_FILE), &ca.key).expect("swap key");
        let e = issue(&pki, &pki, &host("h4")).expect_err("mismatch");
        assert!(matches!(e, PkiError::CaKeyMismatch { .. }), "{e}");

        // A leaf certificate where the CA should be.
        fs::copy(&files.cert, &ca.cert).expect("swap cert");
        assert!(matches!(
            issue(&pki, &pki, &host("h5")),
            Err(PkiError::NotACa { .. })
        ));

        // No CA at all.
        let e = issue(&dir.path().join("none"), &pki, &host("h6")).expect_err("no ca");
        assert!(e.to_string().ends_with("ca.pem: no such file"), "{e}");
    }
}
