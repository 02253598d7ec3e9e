//! One HTTPS request to a srmig peer (hyper over tokio-rustls), the TCP counterpart of
//! srmigd's unix-socket client (`srmig_hostd::client`).
//!
//! Why check the peer's identity on top of the server name: the server name only proves the
//! certificate was issued for the address dialled; [`Endpoint::expect_peer`] also proves it is
//! the party meant (the controller pushing to host `h1` talks to `srmig://host/h1`, not to
//! another host's srmigd that answers on a stale address). [`HttpsClient::request`] opens a
//! connection per request, which is what occasional requests need; the whole request
//! (connect, handshake, exchange) is bounded by the client's timeout. A caller that talks to
//! one peer all the time (the controller pushing to a host) keeps an [`HttpsConnection`]
//! open instead ([`HttpsClient::connect`]): one handshake, then a request per round trip.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::identity::{IdentityError, PeerIdentity, Role};

/// Why a request did not get a response.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server name is neither a DNS name nor an IP address.
    #[error("invalid server name {0:?}")]
    ServerName(String),
    /// The TCP connection failed.
    #[error("cannot connect to {addr}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The TLS handshake failed (the server's certificate was refused, or it refused ours).
    #[error("TLS handshake with {addr} failed")]
    Handshake {
        /// `host:port`.
        addr: String,
        /// The cause (rustls' reason inside).
        #[source]
        source: std::io::Error,
    },
    /// The server's certificate has no usable srmig identity.
    #[error("{addr} presented no usable srmig identity")]
    PeerIdentity {
        /// `host:port`.
        addr: String,
        /// Why.
        #[source]
        source: IdentityError,
    },
    /// The server's identity has another role than the one expected.
    #[error("{addr} is {found}, expected a {expected}")]
    UnexpectedRole {
        /// `host:port`.
        addr: String,
        /// The role expected.
        expected: Role,
        /// Who answered.
        found: PeerIdentity,
    },
    /// The server is another srmig party than the one expected.
    #[error("{addr} is {found}, expected {expected}")]
    UnexpectedPeer {
        /// `host:port`.
        addr: String,
        /// Who was expected.
        expected: PeerIdentity,
        /// Who answered.
        found: PeerIdentity,
    },
    /// The whole request took longer than the client's timeout.
    #[error("request to {addr} timed out after {} ms", timeout.as_millis())]
    Timeout {
        /// `host:port`.
        addr: String,
        /// The limit.
        timeout: Duration,
    },
    /// The HTTP exchange failed (a server that refused our certificate after a TLS 1.3
    /// handshake shows up here, with its alert inside).
    #[error("HTTP exchange with {addr} failed")]
    Http {
        /// `host:port`.
        addr: String,
        /// The cause.
        #[source]
        source: hyper::Error,
    },
    /// The request could not be built (bad path).
    #[error("invalid request")]
    Request(#[from] hyper::http::Error),
    /// No runtime for a blocking call.
    #[error("cannot start a runtime")]
    Runtime(#[source] std::io::Error),
}

/// Where a request goes: the address to dial, the name its certificate must be valid for,
/// and optionally the srmig identity it must have.
#[derive(Debug, Clone)]
pub struct Endpoint {
    addr: String,
    server_name: ServerName<'static>,
    peer: Option<PeerIdentity>,
    role: Option<Role>,
}

impl Endpoint {
    /// `addr` is `host:port` (resolved when connecting); `server_name` a DNS name or an IP
    /// address that the server's certificate must list.
    pub fn new(addr: impl Into<String>, server_name: &str) -> Result<Self, ClientError> {
        let server_name = ServerName::try_from(server_name)
            .map_err(|_| ClientError::ServerName(server_name.to_owned()))?
            .to_owned();
        Ok(Endpoint {
            addr: addr.into(),
            server_name,
            peer: None,
            role: None,
        })
    }

    /// Also require the server's certificate to carry this srmig identity.
    pub fn expect_peer(mut self, peer: PeerIdentity) -> Self {
        self.peer = Some(peer);
        self
    }

    /// Also require the server's certificate to carry an identity of this role (any name):
    /// for a peer whose name the caller does not know, e.g. srmigd reporting to "the
    /// controller".
    pub fn expect_role(mut self, role: Role) -> Self {
        self.role = Some(role);
        self
    }

    /// `host:port`.
    pub fn addr(&self) -> &str {
        &self.addr
    }
}

/// Makes HTTPS requests with one client configuration (from [`crate::client_config`]).
#[derive(Debug, Clone)]
pub struct HttpsClient {
    tls: Arc<ClientConfig>,
    timeout: Duration,
}

/// Default bound on a whole request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

impl HttpsClient {
    /// A client presenting the certificate of `tls`, with [`DEFAULT_TIMEOUT`].
    pub fn new(tls: Arc<ClientConfig>) -> Self {
        HttpsClient {
            tls,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The same client with another bound on a whole request.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends one request (a JSON body if any) and returns the status and the whole body.
    pub async fn request(
        &self,
        to: &Endpoint,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        tokio::time::timeout(self.timeout, self.exchange(to, method, path, body))
            .await
            .map_err(|_| ClientError::Timeout {
                addr: to.addr.clone(),
                timeout: self.timeout,
            })?
    }

    /// [`HttpsClient::request`] on a private current-thread runtime (for synchronous callers,
    /// not from inside a runtime).
    pub fn blocking_request(
        &self,
        to: &Endpoint,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ClientError::Runtime)?;
        rt.block_on(self.request(to, method, path, body))
    }

    async fn exchange(
        &self,
        to: &Endpoint,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let mut conn = self.open(to).await?;
        conn.send(method, path, body.map(Bytes::from)).await
    }

    /// Opens a connection to `to` (TCP, TLS handshake, the peer's identity checked) for
    /// several requests one after another, within the client's timeout.
    pub async fn connect(&self, to: &Endpoint) -> Result<HttpsConnection, ClientError> {
        tokio::time::timeout(self.timeout, self.open(to))
            .await
            .map_err(|_| ClientError::Timeout {
                addr: to.addr.clone(),
                timeout: self.timeout,
            })?
    }

    /// The bound on a whole request ([`HttpsClient::with_timeout`]).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    async fn open(&self, to: &Endpoint) -> Result<HttpsConnection, ClientError> {
        let addr = || to.addr.clone();
        let tcp = TcpStream::connect(&to.addr)
            .await
            .map_err(|source| ClientError::Connect {
                addr: addr(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let tls = TlsConnector::from(self.tls.clone())
            .connect(to.server_name.clone(), tcp)
            .await
            .map_err(|e| ClientError::Handshake {
                addr: addr(),
                source: crate::verify::readable(e),
            })?;
        let found =
            PeerIdentity::of_peer(tls.get_ref().1).map_err(|source| ClientError::PeerIdentity {
                addr: addr(),
                source,
            })?;
        if let Some(role) = to.role.filter(|r| *r != found.role()) {
            return Err(ClientError::UnexpectedRole {
                addr: addr(),
                expected: role,
                found,
            });
        }
        if let Some(expected) = &to.peer {
            if *expected != found {
                return Err(ClientError::UnexpectedPeer {
                    addr: addr(),
                    expected: expected.clone(),
                    found,
                });
            }
        }
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|source| ClientError::Http {
                addr: addr(),
                source,
            })?;
        Ok(HttpsConnection {
            sender,
            driver: tokio::spawn(async move {
                let _ = conn.await;
            }),
            addr: to.addr.clone(),
        })
    }
}

/// One open HTTPS connection to a checked peer ([`HttpsClient::connect`]), HTTP/1.1 with
/// keep-alive: requests go one after another. The connection closes when this is dropped.
#[derive(Debug)]
pub struct HttpsConnection {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    driver: tokio::task::JoinHandle<()>,
    addr: String,
}

impl HttpsConnection {
    /// Sends one request (a JSON body if any) and reads the whole response. Not bounded in
    /// time: the caller bounds it.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let http = |source| ClientError::Http {
            addr: self.addr.clone(),
            source,
        };
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.as_str());
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req.body(Full::new(body.unwrap_or_default()))?;
        self.sender.ready().await.map_err(http)?;
        let resp = self.sender.send_request(req).await.map_err(http)?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await.map_err(http)?.to_bytes();
        Ok((status, bytes))
    }

    /// The peer closed the connection (or it failed): open another.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

impl Drop for HttpsConnection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}
