//! How a subcommand reaches the controller: `--controller PATH|https://HOST:PORT`, and for
//! `https://` this CLI's certificate (`--tls-dir DIR --tls-name NAME`: `DIR/ca.pem`,
//! `DIR/client-NAME.pem`, `DIR/client-NAME.key`, as `srmig pki issue --role client --name NAME
//! --out DIR` writes them). The parsing of the address is srmig-tls's ([`ApiAddress`]), the
//! client is srmig-controller's ([`ControllerClient::to`]); this file only adds the flags, the
//! checks clap cannot make, and the hints printed under an error.

use std::path::PathBuf;

use srmig_controller::http::{HttpError, PeerHttpError};
use srmig_controller::{ClientError, ControllerClient};
use srmig_tls::{ApiAddress, PeerIdentity, Role, TlsFiles};

/// clap's exit code for invalid arguments, also used for flag combinations it cannot check.
pub(crate) const EXIT_USAGE: u8 = 2;

/// The name of this CLI's certificate when `--tls-name` is not given.
pub(crate) const DEFAULT_TLS_NAME: &str = "operator";

/// `--controller`, `--tls-dir`, `--tls-name`.
#[derive(Debug, clap::Args)]
pub(crate) struct ControllerFlags {
    /// The controller: its API socket (same machine), or `https://HOST:PORT`, its mutual-TLS
    /// listener (`srmig controller --listen`), which needs --tls-dir.
    #[arg(
        long,
        value_name = "PATH|https://HOST:PORT",
        default_value = srmig_controller::DEFAULT_SOCKET
    )]
    pub(crate) controller: ApiAddress,
    /// This CLI's TLS files, for an https:// controller: DIR/ca.pem, DIR/client-NAME.pem and
    /// DIR/client-NAME.key (`srmig pki issue --role client --name NAME --out DIR`).
    #[arg(long, value_name = "DIR")]
    pub(crate) tls_dir: Option<PathBuf>,
    /// The name in this CLI's certificate (srmig://client/NAME).
    #[arg(long, value_name = "NAME", default_value = DEFAULT_TLS_NAME)]
    pub(crate) tls_name: String,
}

/// Why no client could be made.
#[derive(Debug)]
pub(crate) enum ConnectError {
    /// A flag combination clap does not check (exit [`EXIT_USAGE`]).
    Usage(String),
    /// The certificate could not be loaded (exit 1).
    Client(ClientError),
}

impl ControllerFlags {
    /// The TLS files named by `--tls-dir` and `--tls-name`, if `--tls-dir` was given.
    fn tls_files(&self) -> Result<Option<TlsFiles>, ConnectError> {
        let Some(dir) = &self.tls_dir else {
            return Ok(None);
        };
        let identity = PeerIdentity::new(Role::Client, &self.tls_name)
            .map_err(|e| ConnectError::Usage(format!("--tls-name {:?}: {e}", self.tls_name)))?;
        Ok(Some(TlsFiles::in_dir(dir, &identity)))
    }

    /// A client of the controller these flags name.
    pub(crate) fn client(&self) -> Result<ControllerClient, ConnectError> {
        let tls = self.tls_files()?;
        match (&self.controller, &tls) {
            (ApiAddress::Https(_), None) => {
                return Err(ConnectError::Usage(format!(
                    "--controller {} is reached over mutual TLS: give --tls-dir DIR, holding \
                     DIR/ca.pem and this CLI's certificate DIR/client-{name}.pem and .key \
                     (`srmig pki issue --role client --name {name} --out DIR`; --tls-name \
                     names another)",
                    self.controller,
                    name = self.tls_name
                )))
            }
            (ApiAddress::Unix(socket), Some(_)) => {
                return Err(ConnectError::Usage(format!(
                    "--tls-dir is for --controller https://HOST:PORT; {} is a unix socket, \
                     reached without TLS",
                    socket.display()
                )))
            }
            _ => {}
        }
        ControllerClient::to(&self.controller, tls.as_ref()).map_err(ConnectError::Client)
    }

    /// What the operator can do when the certificate could not be loaded.
    pub(crate) fn certificate_hint(&self) -> String {
        format!(
            "issue it with `srmig pki issue --dir CA_DIR --role client --name {} --out {}`, \
             or name another with --tls-name",
            self.tls_name,
            self.tls_dir
                .as_deref()
                .map_or_else(|| "DIR".to_owned(), |d| d.display().to_string())
        )
    }

    /// What the operator can do when the controller could not be reached; `None` for a
    /// timeout (the caller knows what a late answer means for its request).
    pub(crate) fn unreachable_hint(&self, e: &PeerHttpError) -> Option<String> {
        use srmig_tls::ClientError as Tls;
        match e {
            PeerHttpError::Unix(HttpError::Timeout { .. })
            | PeerHttpError::Tls(Tls::Timeout { .. }) => None,
            PeerHttpError::Unix(_) => Some(format!(
                "is the controller running (`srmig controller --socket {}`)? --controller \
                 selects its socket, or https://HOST:PORT its TLS listener",
                self.controller
            )),
            PeerHttpError::Tls(Tls::Connect { .. }) => Some(format!(
                "is the controller listening there (`srmig controller --tls-dir DIR --listen \
                 ADDR:PORT`)? {} is refused or unreachable from here",
                self.controller
            )),
            PeerHttpError::Tls(Tls::Handshake { .. } | Tls::Http { .. }) => Some(format!(
                "the controller refused this CLI's certificate, or this CLI does not trust \
                 the controller's: both must be issued by the CA in {}/ca.pem, this one \
                 with --role client, the controller's valid for the host dialled (--san)",
                self.tls_dir
                    .as_deref()
                    .map_or_else(|| "DIR".to_owned(), |d| d.display().to_string())
            )),
            PeerHttpError::Tls(
                Tls::UnexpectedRole { .. } | Tls::UnexpectedPeer { .. } | Tls::PeerIdentity { .. },
            ) => Some(format!(
                "{} is not the controller's TLS listener (a srmigd's?): --controller names \
                 the address of `srmig controller --listen`",
                self.controller
            )),
            PeerHttpError::Tls(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Flags {
        #[command(flatten)]
        flags: ControllerFlags,
    }

    fn parse(args: &[&str]) -> Result<ControllerFlags, clap::Error> {
        Flags::try_parse_from(std::iter::once("t").chain(args.iter().copied())).map(|f| f.flags)
    }

    #[test]
    fn defaults_are_the_local_socket_and_the_operator_name() {
        let f = parse(&[]).expect("defaults");
        assert_eq!(f.controller.to_string(), srmig_controller::DEFAULT_SOCKET);
        assert_eq!(f.tls_name, DEFAULT_TLS_NAME);
        assert!(f.tls_dir.is_none());
        assert!(f.client().is_ok());
    }

    #[test]
    fn bad_urls_are_usage_errors() {
        for bad in [
            "http://10.0.0.2:7443",
            "https://10.0.0.2",
            "https://fd00::2:7443",
        ] {
            let e = parse(&["--controller", bad]).expect_err(bad);
            assert_eq!(e.exit_code(), i32::from(EXIT_USAGE), "{bad}");
        }
    }

    #[test]
    fn https_needs_tls_dir_and_a_socket_takes_none() {
        let f = parse(&["--controller", "https://127.0.0.1:7443"]).expect("parses");
        match f.client() {
            Err(ConnectError::Usage(m)) => {
                assert!(m.contains("give --tls-dir"), "{m}");
                assert!(m.contains("client-operator.pem"), "{m}");
            }
            other => panic!("{other:?}"),
        }
        let f = parse(&["--controller", "/run/c.sock", "--tls-dir", "/tmp"]).expect("parses");
        assert!(matches!(f.client(), Err(ConnectError::Usage(_))));
        let f = parse(&[
            "--controller",
            "https://127.0.0.1:7443",
            "--tls-dir",
            "/tmp",
            "--tls-name",
            "not a name",
        ])
        .expect("parses");
        assert!(matches!(f.client(), Err(ConnectError::Usage(_))));
    }

    #[test]
    fn missing_files_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().to_str().expect("utf-8");
        let f = parse(&[
            "--controller",
            "https://127.0.0.1:7443",
            "--tls-dir",
            d,
            "--tls-name",
            "alice",
        ])
        .expect("parses");
        match f.client() {
            Err(ConnectError::Client(e)) => {
                let text = crate::migrate::chain(&e);
                assert!(text.contains("ca.pem: no such file"), "{text}");
            }
            other => panic!("{other:?}"),
        }
        assert!(f.certificate_hint().contains("--name alice"));
    }
}
