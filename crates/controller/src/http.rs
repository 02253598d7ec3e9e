//! A minimal HTTP/1.1 client over a unix socket (one connection per request), and
//! [`PeerHttp`]: one srmig API reached over its unix socket (same machine) or over TCP with
//! mutual TLS ([`srmig_tls::HttpsClient`], the peer's certificate checked to carry the srmig
//! identity or role expected).
//!
//! The controller talks to each srmigd through it (`PUT /v1/config`, `GET /v1/status`; the
//! host's certificate must be `srmig://host/<name>`), and the CLI talks to the controller
//! through it ([`crate::ControllerClient`]; any `srmig://controller/...`). One connection per
//! request keeps the failure model simple: a daemon that restarts is reached again on the next
//! request, with no pool to go stale. The push tasks, which send their host request after
//! request, keep one connection per host open instead ([`PeerConnection`], with the same
//! failure model: a kept connection that fails is replaced at once).

use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{header, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

/// Why an HTTP exchange over a unix socket failed (no response was received).
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The socket could not be connected (the daemon is not running, or the path is wrong).
    #[error("cannot connect to {socket}")]
    Connect {
        /// The socket path.
        socket: PathBuf,
        /// The connect error.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange failed after connecting.
    #[error("HTTP exchange with {socket} failed")]
    Exchange {
        /// The socket path.
        socket: PathBuf,
        /// The protocol error.
        #[source]
        source: hyper::Error,
    },
    /// The request could not be built (an invalid path).
    #[error("invalid request for {path}")]
    Build {
        /// The request path.
        path: String,
        /// The builder error.
        #[source]
        source: hyper::http::Error,
    },
    /// No complete response arrived in time.
    #[error("{socket} did not answer within {ms} ms")]
    Timeout {
        /// The socket path.
        socket: PathBuf,
        /// The time limit.
        ms: u128,
    },
}

/// How one srmig API is reached: the controller reaching a host's srmigd, the CLI reaching
/// the controller.
#[derive(Debug, Clone)]
pub enum PeerHttp {
    /// Its unix socket (same machine).
    Unix(UnixHttp),
    /// Its TLS listener.
    Tls {
        /// The client (the caller's certificate, the CA, the time limit).
        client: srmig_tls::HttpsClient,
        /// `host:port`, the name its certificate must be valid for, its srmig identity.
        endpoint: srmig_tls::Endpoint,
    },
}

impl PeerHttp {
    /// Sends one request and reads the whole response (each transport's time limit).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<HttpResponse, PeerHttpError> {
        match self {
            PeerHttp::Unix(u) => Ok(u.request(method, path, body).await?),
            PeerHttp::Tls { client, endpoint } => {
                let (status, body) = client.request(endpoint, method, path, body).await?;
                Ok(HttpResponse { status, body })
            }
        }
    }

    /// Where it goes, for messages: the socket path or `https://host:port`.
    pub fn target(&self) -> String {
        match self {
            PeerHttp::Unix(u) => u.socket().display().to_string(),
            PeerHttp::Tls { endpoint, .. } => format!("https://{}", endpoint.addr()),
        }
    }
}

/// Why a request to a peer got no response.
#[derive(Debug, thiserror::Error)]
pub enum PeerHttpError {
    /// Over the unix socket.
    #[error(transparent)]
    Unix(#[from] HttpError),
    /// Over TLS.
    #[error(transparent)]
    Tls(#[from] srmig_tls::ClientError),
}

/// A complete response: status and body.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status code.
    pub status: StatusCode,
    /// The whole body.
    pub body: Bytes,
}

/// An HTTP client bound to one unix socket path.
#[derive(Debug, Clone)]
pub struct UnixHttp {
    socket: PathBuf,
    timeout: Duration,
}

impl UnixHttp {
    /// A client for the server listening on `socket`; each exchange must complete within
    /// `timeout` (connect, request, whole response).
    pub fn new(socket: impl Into<PathBuf>, timeout: Duration) -> Self {
        UnixHttp {
            socket: socket.into(),
            timeout,
        }
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends one request; `body`, if any, is sent as `application/json`.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<HttpResponse, HttpError> {
        match tokio::time::timeout(self.timeout, self.exchange(method, path, body)).await {
            Ok(result) => result,
            Err(_) => Err(HttpError::Timeout {
                socket: self.socket.clone(),
                ms: self.timeout.as_millis(),
            }),
        }
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<HttpResponse, HttpError> {
        let mut conn = self.open().await?;
        conn.send(method, path, body.map(Bytes::from)).await
    }

    /// Opens a connection for several requests one after another (not bounded in time: the
    /// caller bounds it).
    async fn open(&self) -> Result<UnixConnection, HttpError> {
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| HttpError::Connect {
                    socket: self.socket.clone(),
                    source,
                })?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|source| HttpError::Exchange {
                socket: self.socket.clone(),
                source,
            })?;
        // The connection future drives the socket until the sender is dropped (or the peer
        // closes).
        let driver = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "HTTP client connection ended with an error");
            }
        });
        Ok(UnixConnection {
            sender,
            driver,
            socket: self.socket.clone(),
        })
    }
}

/// One open HTTP/1.1 connection over a unix socket, kept alive between requests.
#[derive(Debug)]
struct UnixConnection {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    driver: tokio::task::JoinHandle<()>,
    socket: PathBuf,
}

impl UnixConnection {
    async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<HttpResponse, HttpError> {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "localhost");
        if body.is_some() {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
        }
        let request = builder
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|source| HttpError::Build {
                path: path.to_owned(),
                source,
            })?;
        let exchange_err = |source| HttpError::Exchange {
            socket: self.socket.clone(),
            source,
        };
        self.sender.ready().await.map_err(exchange_err)?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(exchange_err)?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(exchange_err)?
            .to_bytes();
        Ok(HttpResponse { status, body })
    }

    fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

impl Drop for UnixConnection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// A [`PeerHttp`] with its connection kept open between requests (HTTP/1.1 keep-alive), for
/// a caller that sends one peer request after request: the controller's push task of a host.
/// Over TLS that is one handshake per host instead of one per push; over a unix socket it
/// saves a connect, an accept and two tasks per request.
///
/// The failure model stays that of one connection per request: a request on a connection
/// that was already open and fails before any response (the peer restarted, or closed it
/// while idle: srmigd closes connections idle for 30 s) is sent once more on a new
/// connection, within the same time limit. Only idempotent requests go through it (`PUT` and
/// `PATCH /v1/config`: srmigd acknowledges the version it holds again). A request that times
/// out drops the connection (what it carried is unknown).
#[derive(Debug)]
pub struct PeerConnection {
    peer: PeerHttp,
    open: Option<OpenConnection>,
}

#[derive(Debug)]
enum OpenConnection {
    Unix(UnixConnection),
    Tls(srmig_tls::HttpsConnection),
}

impl OpenConnection {
    fn is_closed(&self) -> bool {
        match self {
            OpenConnection::Unix(c) => c.is_closed(),
            OpenConnection::Tls(c) => c.is_closed(),
        }
    }

    async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<HttpResponse, PeerHttpError> {
        match self {
            OpenConnection::Unix(c) => Ok(c.send(method, path, body).await?),
            OpenConnection::Tls(c) => {
                let (status, body) = c.send(method, path, body).await?;
                Ok(HttpResponse { status, body })
            }
        }
    }
}

impl PeerConnection {
    /// No connection yet: the first request opens it.
    pub fn new(peer: PeerHttp) -> Self {
        PeerConnection { peer, open: None }
    }

    /// Where it goes ([`PeerHttp::target`]).
    pub fn target(&self) -> String {
        self.peer.target()
    }

    /// Whether a connection is open now (the next request reuses it).
    pub fn is_open(&self) -> bool {
        self.open.as_ref().is_some_and(|c| !c.is_closed())
    }

    /// Sends one request on the open connection (or a new one) and reads the whole response,
    /// within the transport's time limit.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<HttpResponse, PeerHttpError> {
        let limit = match &self.peer {
            PeerHttp::Unix(u) => u.timeout,
            PeerHttp::Tls { client, .. } => client.timeout(),
        };
        let body = body.map(Bytes::from);
        match tokio::time::timeout(limit, self.exchange(method, path, body)).await {
            Ok(result) => result,
            Err(_) => {
                self.open = None;
                Err(match &self.peer {
                    PeerHttp::Unix(u) => PeerHttpError::Unix(HttpError::Timeout {
                        socket: u.socket.clone(),
                        ms: limit.as_millis(),
                    }),
                    PeerHttp::Tls { endpoint, .. } => {
                        PeerHttpError::Tls(srmig_tls::ClientError::Timeout {
                            addr: endpoint.addr().to_owned(),
                            timeout: limit,
                        })
                    }
                })
            }
        }
    }

    async fn exchange(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<HttpResponse, PeerHttpError> {
        if let Some(open) = self.open.as_mut().filter(|c| !c.is_closed()) {
            match open.send(method.clone(), path, body.clone()).await {
                Ok(response) => return Ok(response),
                Err(e) => {
                    tracing::debug!(peer = %self.peer.target(), error = %e, "a kept-alive connection failed; sending again on a new one");
                }
            }
        }
        self.open = None;
        let mut open = match &self.peer {
            PeerHttp::Unix(u) => OpenConnection::Unix(u.open().await?),
            PeerHttp::Tls { client, endpoint } => {
                OpenConnection::Tls(client.connect(endpoint).await?)
            }
        };
        let response = open.send(method, path, body).await?;
        self.open = Some(open);
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A raw HTTP/1.1 server on `path` answering `200 ok` to body-less requests; counts the
    /// connections it accepted; closes each connection after `per_connection` answers.
    fn raw_server(
        path: &Path,
        per_connection: usize,
    ) -> (Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::UnixListener::bind(path).expect("bind");
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            // Its connections end with it (aborting the server drops the set).
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                connections.spawn(async move {
                    let mut buf = Vec::new();
                    let mut answered = 0;
                    let mut chunk = [0u8; 1024];
                    while answered < per_connection {
                        let Ok(n) = stream.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            if stream.write_all(reply).await.is_err() {
                                return;
                            }
                            answered += 1;
                        }
                    }
                });
            }
        });
        (accepted, task)
    }

    #[tokio::test]
    async fn a_kept_connection_carries_request_after_request() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keep.sock");
        let (accepted, server) = raw_server(&path, usize::MAX);
        let mut conn =
            PeerConnection::new(PeerHttp::Unix(UnixHttp::new(&path, Duration::from_secs(2))));
        for _ in 0..5 {
            let r = conn
                .request(Method::GET, "/v1/status", None)
                .await
                .expect("answered");
            assert_eq!(r.status, StatusCode::OK);
            assert_eq!(&r.body[..], b"ok");
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "one connection for five requests"
        );
        assert!(conn.is_open());
        server.abort();
    }

    #[tokio::test]
    async fn a_connection_the_peer_closed_is_replaced_without_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("close.sock");
        // The server closes every connection after one answer (as srmigd does with an idle one).
        let (accepted, server) = raw_server(&path, 1);
        let mut conn =
            PeerConnection::new(PeerHttp::Unix(UnixHttp::new(&path, Duration::from_secs(2))));
        for _ in 0..3 {
            let r = conn
                .request(Method::GET, "/v1/status", None)
                .await
                .expect("answered");
            assert_eq!(r.status, StatusCode::OK);
            // Let the close reach the client (or not: either way the request must succeed).
            tokio::task::yield_now().await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
        server.abort();
    }

    #[tokio::test]
    async fn a_restarted_peer_is_reached_on_a_new_connection() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("restart.sock");
        let (_, first) = raw_server(&path, usize::MAX);
        let mut conn =
            PeerConnection::new(PeerHttp::Unix(UnixHttp::new(&path, Duration::from_secs(2))));
        conn.request(Method::GET, "/", None).await.expect("first");
        // The daemon goes away (its connections with it) and comes back on the same path.
        first.abort();
        let _ = first.await;
        std::fs::remove_file(&path).expect("unlink");
        let err = conn.request(Method::GET, "/", None).await;
        assert!(err.is_err(), "nobody listens: {err:?}");
        let (accepted, second) = raw_server(&path, usize::MAX);
        conn.request(Method::GET, "/", None)
            .await
            .expect("the new daemon answers");
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        second.abort();
    }

    #[tokio::test]
    async fn connect_error_names_the_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nobody.sock");
        let client = UnixHttp::new(&path, Duration::from_secs(1));
        let err = client
            .request(Method::GET, "/v1/status", None)
            .await
            .expect_err("nobody listens");
        assert!(matches!(err, HttpError::Connect { .. }), "{err:?}");
        assert!(err.to_string().contains("nobody.sock"), "{err}");
    }

    #[tokio::test]
    async fn silent_server_times_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("silent.sock");
        let listener = tokio::net::UnixListener::bind(&path).expect("bind");
        // Accept and hold the connection without ever answering.
        let holder = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(stream);
        });
        let client = UnixHttp::new(&path, Duration::from_millis(100));
        let err = client
            .request(Method::GET, "/", None)
            .await
            .expect_err("no answer");
        assert!(matches!(err, HttpError::Timeout { ms: 100, .. }), "{err:?}");
        holder.abort();
    }
}
