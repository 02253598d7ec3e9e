//! Where a srmig API is, as operators write it: `HOST:PORT` of a mutual-TLS listener (a host's
//! `api_address`), or, in a flag such as `srmigd --controller` or `srmig migrate --controller`,
//! either a unix socket path or `https://HOST:PORT`.
//!
//! Why here: srmigd reporting to the controller, the controller reaching a host and the CLI
//! reaching the controller all turn the same text into an [`Endpoint`], and must agree on what
//! is accepted (brackets around IPv6, a port from 1 to 65535) and on the name the peer's
//! certificate must be valid for (HOST, without brackets).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::client::Endpoint;

/// Why an address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Not `HOST:PORT`.
    #[error("{addr:?}: {why} (expected HOST:PORT or [IPv6]:PORT)")]
    HostPort {
        /// The text.
        addr: String,
        /// What is wrong.
        why: &'static str,
    },
    /// HOST is neither a DNS name nor an IP address.
    #[error("{addr:?}: {host:?} is neither a DNS name nor an IP address")]
    ServerName {
        /// The text.
        addr: String,
        /// The host part.
        host: String,
    },
    /// A URL that is not `https://HOST:PORT`.
    #[error(
        "{value:?}: expected https://HOST:PORT (no path, no other scheme) or a unix socket path"
    )]
    Url {
        /// The text.
        value: String,
    },
}

/// `HOST:PORT` -> (`HOST` without IPv6 brackets, `PORT`). The port must be 1 to 65535, an
/// IPv6 address must be in brackets, and no other bracket may appear.
pub fn split_host_port(addr: &str) -> Result<(&str, u16), AddressError> {
    let bad = |why| AddressError::HostPort {
        addr: addr.to_owned(),
        why,
    };
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| bad("the port is not a number from 1 to 65535"))?;
    if port == 0 {
        return Err(bad("port 0"));
    }
    let host = match host.strip_prefix('[') {
        Some(h) => h.strip_suffix(']').ok_or_else(|| bad("unclosed ["))?,
        None if host.contains(':') => return Err(bad("an IPv6 address needs brackets")),
        None => host,
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    // (no host name or address holds one; taken as written, "[[h]]:1" would be dialled as
    // "[h]" but print back as "h")
    if host.contains(['[', ']']) {
        return Err(bad("a bracket inside the host"));
    }
    Ok((host, port))
}

impl Endpoint {
    /// `HOST:PORT` (see [`split_host_port`]), dialled as written; the server's certificate must
    /// be valid for HOST.
    pub fn from_host_port(addr: &str) -> Result<Endpoint, AddressError> {
        let (host, _) = split_host_port(addr)?;
        Endpoint::new(addr, host).map_err(|_| AddressError::ServerName {
            addr: addr.to_owned(),
            host: host.to_owned(),
        })
    }
}

/// A srmig API given in a flag: a unix socket path (same machine) or `https://HOST:PORT` (a
/// mutual-TLS listener). Parsed with [`ApiAddress::parse`] or `str::parse`.
#[derive(Debug, Clone)]
pub enum ApiAddress {
    /// A unix socket path: anything that does not look like a URL.
    Unix(PathBuf),
    /// `https://HOST:PORT` (a trailing `/` is allowed): the address to dial and the name the
    /// server's certificate must be valid for. Which srmig identity it must have is the
    /// caller's to add ([`Endpoint::expect_role`], [`Endpoint::expect_peer`]).
    Https(Endpoint),
}

impl ApiAddress {
    /// `https://HOST:PORT`, or a socket path. Any other `scheme://` is refused rather than
    /// taken for a path (`http://` is a typo here: nothing serves plain HTTP over TCP).
    pub fn parse(value: &str) -> Result<ApiAddress, AddressError> {
        let url = || AddressError::Url {
            value: value.to_owned(),
        };
        match value.strip_prefix("https://") {
            Some(rest) => {
                let addr = rest.strip_suffix('/').unwrap_or(rest);
                if addr.contains('/') {
                    return Err(url());
                }
                Ok(ApiAddress::Https(Endpoint::from_host_port(addr)?))
            }
            None if value.contains("://") => Err(url()),
            None => Ok(ApiAddress::Unix(PathBuf::from(value))),
        }
    }
}

impl FromStr for ApiAddress {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ApiAddress::parse(s)
    }
}

impl fmt::Display for ApiAddress {
    /// The socket path, or `https://HOST:PORT`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiAddress::Unix(p) => write!(f, "{}", p.display()),
            ApiAddress::Https(e) => write!(f, "https://{}", e.addr()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_splits_and_refuses_with_a_reason() {
        assert_eq!(split_host_port("10.0.0.2:7443"), Ok(("10.0.0.2", 7443)));
        assert_eq!(split_host_port("[fd00::2]:7443"), Ok(("fd00::2", 7443)));
        assert_eq!(split_host_port("ctl.example:1"), Ok(("ctl.example", 1)));
        for (bad, why) in [
            ("10.0.0.2", "no port"),
            ("10.0.0.2:", "not a number"),
            ("10.0.0.2:99999", "not a number"),
            ("10.0.0.2:0", "port 0"),
            ("fd00::2:7443", "needs brackets"),
            ("[fd00::2:7443", "unclosed ["),
            (":7443", "no host"),
            ("[[fd00::2]]:7443", "a bracket inside the host"),
            ("ctl]:7443", "a bracket inside the host"),
        ] {
            let e = split_host_port(bad).expect_err(bad);
            assert!(e.to_string().contains(why), "{bad}: {e}");
            assert!(e.to_string().contains(&format!("{bad:?}")), "{bad}: {e}");
        }
    }

    #[test]
    fn api_addresses_are_paths_or_https_urls() {
        match ApiAddress::parse("/run/srmig/controller.sock").expect("path") {
            ApiAddress::Unix(p) => assert_eq!(p, PathBuf::from("/run/srmig/controller.sock")),
            other => panic!("{other:?}"),
        }
        match ApiAddress::parse("relative.sock").expect("path") {
            ApiAddress::Unix(p) => assert_eq!(p, PathBuf::from("relative.sock")),
            other => panic!("{other:?}"),
        }
        for (url, addr) in [
            ("https://10.0.0.2:7443", "10.0.0.2:7443"),
            ("https://10.0.0.2:7443/", "10.0.0.2:7443"),
            ("https://[fd00::2]:7443", "[fd00::2]:7443"),
            ("https://ctl.dc.example:7443", "ctl.dc.example:7443"),
        ] {
            let parsed: ApiAddress = url.parse().expect(url);
            match &parsed {
                ApiAddress::Https(e) => assert_eq!(e.addr(), addr),
                other => panic!("{url}: {other:?}"),
            }
            assert_eq!(parsed.to_string(), format!("https://{addr}"));
        }
        for bad in [
            "http://10.0.0.2:7443",
            "tcp://10.0.0.2:7443",
            "https://10.0.0.2:7443/v1",
        ] {
            let e = ApiAddress::parse(bad).expect_err(bad);
            assert!(e.to_string().contains("expected https://HOST:PORT"), "{e}");
        }
        for bad in ["https://10.0.0.2", "https://fd00::2:7443", "https://:7443"] {
            assert!(
                matches!(ApiAddress::parse(bad), Err(AddressError::HostPort { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            ApiAddress::parse("https://not a name:7443"),
            Err(AddressError::ServerName { .. })
        ));
    }
}
