//! A minimal HTTP/1.1 client over a unix socket (one connection per request), and
//! [`PeerHttp`]: one srmig API reached over its unix socket (same machine) or over TCP with
//! mutual TLS ([`srmig_tls::HttpsClient`], the peer's certificate checked to carry the srmig
//! identity or role expected).
//!
//! The controller talks to each srmigd through it (`PUT /v1/config`, `GET /v1/status`; the
//! host's certificate must be `srmig://host/<name>`), and the CLI talks to the controller
//! through it ([`crate::ControllerClient`]; any `srmig://controller/...`). One connection per
//! request keeps the failure model simple: a daemon that restarts is reached again on the next
//! request, with no pool to go stale.

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
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "localhost");
        if body.is_some() {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
        }
        let request = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|source| HttpError::Build {
                path: path.to_owned(),
                source,
            })?;
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| HttpError::Connect {
                    socket: self.socket.clone(),
                    source,
                })?;
        let exchange_err = |source| HttpError::Exchange {
            socket: self.socket.clone(),
            source,
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(exchange_err)?;
        // The connection future drives the socket; it ends when the response is read and the
        // sender is dropped (or when the peer closes).
        let driver = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "HTTP client connection ended with an error");
            }
        });
        let result = async {
            let response = sender.send_request(request).await.map_err(exchange_err)?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(exchange_err)?
                .to_bytes();
            Ok(HttpResponse { status, body })
        }
        .await;
        drop(sender);
        driver.abort();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
