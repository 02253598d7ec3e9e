//! An axum `Router` served over mutual TLS on a TCP listener.
//!
//! Why not `axum::serve`: it drives plain sockets, and its `Listener` trait accepts one
//! connection at a time, so a TLS handshake in `accept` would let one slow or silent peer hold
//! up every other. Here the loop only accepts; each connection gets its own task that
//! handshakes (bounded by [`ServeOptions::handshake_timeout`]), reads the client's
//! [`PeerIdentity`] from its verified certificate, and serves HTTP/1.1 on it with that identity
//! inserted into every request's extensions:
//!
//! ```text
//! async fn handler(Extension(peer): Extension<PeerIdentity>) -> ... { /* authorize on peer */ }
//! ```
//!
//! (`Option<Extension<PeerIdentity>>` in a router also served on a unix socket, where there is
//! none.) The remote address is there too, as `axum::extract::ConnectInfo<SocketAddr>`.
//!
//! A failed or timed-out handshake is logged (at `warn`: it is either a misconfigured peer or
//! someone without a certificate) and the connection dropped; nothing a peer does ends the
//! loop. Accept errors (out of file descriptors, ...) are logged and retried after a pause.
//!
//! Shutdown: when the `shutdown` future completes, the listener is closed, handshakes in
//! progress are abandoned, open connections finish the request they are serving and close
//! (hyper's graceful shutdown), and whatever is still open after
//! [`ServeOptions::drain_timeout`] is aborted. [`serve`] returns after that.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::identity::PeerIdentity;

/// Timeouts of [`serve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeOptions {
    /// How long a new connection has to complete the TLS handshake (default 10 s).
    pub handshake_timeout: Duration,
    /// How long a client has to send a request's headers once it started one (default 30 s).
    pub header_read_timeout: Duration,
    /// How long open connections get to finish after shutdown (default 10 s).
    pub drain_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// Pause after a failed `accept` (e.g. out of file descriptors) before the next.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Serves `router` over TLS (`tls`, which should come from [`crate::server_config`] so that
/// clients must present a srmig certificate) on `listener` until `shutdown` completes.
///
/// Every request carries the client's [`PeerIdentity`] and its `ConnectInfo<SocketAddr>` in
/// its extensions. Returns once the listener is closed and the connections have drained (see
/// the module docs).
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    router: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let local = listener.local_addr().ok();
    tracing::info!(addr = ?local, "serving HTTPS (mutual TLS)");
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, remote)) => {
                    connections.spawn(connection(
                        tcp,
                        remote,
                        acceptor.clone(),
                        router.clone(),
                        options,
                        stop_rx.clone(),
                    ));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; retrying");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
            Some(done) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = done {
                    if e.is_panic() {
                        tracing::error!(error = %e, "a connection task panicked");
                    }
                }
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let open = connections.len();
    let drained = tokio::time::timeout(options.drain_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            "connections still open after the drain timeout; closing them"
        );
        connections.shutdown().await;
    }
    tracing::info!(addr = ?local, drained = open, "HTTPS server stopped");
}

/// One connection: handshake, identity, HTTP/1.1 until the peer closes or shutdown.
async fn connection(
    tcp: TcpStream,
    remote: SocketAddr,
    acceptor: TlsAcceptor,
    router: Router,
    options: ServeOptions,
    mut stop: watch::Receiver<bool>,
) {
    let handshake = tokio::time::timeout(options.handshake_timeout, acceptor.accept(tcp));
    let tls = tokio::select! {
        r = handshake => match r {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                let e = crate::verify::readable(e);
                tracing::warn!(%remote, error = %e, "TLS handshake refused");
                return;
            }
            Err(_) => {
                tracing::warn!(
                    %remote,
                    timeout_ms = options.handshake_timeout.as_millis(),
                    "TLS handshake timed out"
                );
                return;
            }
        },
        () = stopped(&mut stop) => return,
    };
    // The verifier already required an identity; this reads it back (and would refuse a
    // configuration built elsewhere that does not).
    let peer = match PeerIdentity::of_peer(tls.get_ref().1) {
        Ok(peer) => peer,
        Err(e) => {
            tracing::warn!(%remote, error = %e, "TLS peer refused");
            return;
        }
    };
    tracing::debug!(%remote, %peer, "TLS connection");

    let service = router.map_request(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(peer.clone());
        req.extensions_mut().insert(ConnectInfo(remote));
        req
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout);
    let conn = http.serve_connection(TokioIo::new(tls), TowerToHyperService::new(service));
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%remote, error = %e, "connection ended with an error");
    }
}

/// Completes once shutdown has been signalled (or the server is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`: drop it here, not across an await.
    let _ = stop.wait_for(|stopped| *stopped).await;
}
