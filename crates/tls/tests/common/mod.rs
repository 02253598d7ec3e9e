//! What the TLS tests share: a PKI in a temporary directory, a server on loopback whose
//! handlers report who called them, and rustls configurations built by hand for the peers
//! that `srmig_tls::config` would refuse to build (no certificate, another CA, expired).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, put};
use axum::{Extension, Router};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use srmig_tls::pki::{init_ca, issue, CaOptions, IssueOptions};
use srmig_tls::{PeerIdentity, Role, San, ServeOptions, TlsFiles, Validity};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A CA in a temporary directory, and the certificates issued from it.
pub struct Pki {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_owned();
        init_ca(&root.join("ca"), &CaOptions::default()).expect("init CA");
        Pki { _dir: dir, root }
    }

    pub fn ca_dir(&self) -> PathBuf {
        self.root.join("ca")
    }

    /// Issues `role`/`name` with `sans` (and a validity, if given) into `root/<name>`.
    pub fn issue(
        &self,
        role: Role,
        name: &str,
        sans: &[&str],
        validity: Option<Validity>,
    ) -> TlsFiles {
        let mut o = IssueOptions::new(PeerIdentity::new(role, name).expect("valid identity"));
        o.sans = sans
            .iter()
            .map(|s| s.parse::<San>().expect("valid SAN"))
            .collect();
        if let Some(v) = validity {
            o.validity = v;
        }
        issue(&self.ca_dir(), &self.root.join(name), &o).expect("issue")
    }
}

/// A running server: its address, how many requests reached a handler, and its stop switch.
pub struct Server {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<()>,
}

impl Server {
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Signals shutdown and waits for `serve` to return.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("serve returns after shutdown")
            .expect("serve did not panic");
    }
}

/// The test router: `GET /whoami` answers `role/name` of the caller, `PUT /echo` returns its
/// body, `GET /slow` answers after 300 ms.
pub fn router(hits: Arc<AtomicUsize>) -> Router {
    let h1 = hits.clone();
    let h2 = hits.clone();
    Router::new()
        .route(
            "/whoami",
            get(move |Extension(peer): Extension<PeerIdentity>| async move {
                h1.fetch_add(1, Ordering::SeqCst);
                peer.to_string()
            }),
        )
        .route(
            "/echo",
            put(move |body: axum::body::Bytes| async move {
                h2.fetch_add(1, Ordering::SeqCst);
                body
            }),
        )
        .route(
            "/slow",
            get(move || async move {
                hits.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(300)).await;
                "done"
            }),
        )
}

/// Serves [`router`] with `files` on 127.0.0.1, admitting `peers`.
pub async fn start(files: &TlsFiles, peers: &[Role], options: ServeOptions) -> Server {
    let tls = srmig_tls::server_config(files, peers).expect("server config");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let hits = Arc::new(AtomicUsize::new(0));
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(srmig_tls::serve(
        listener,
        tls,
        router(hits.clone()),
        options,
        async move {
            let _ = stop_rx.await;
        },
    ));
    Server {
        addr,
        hits,
        stop: Some(stop_tx),
        task,
    }
}

pub fn certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .expect("open")
        .collect::<Result<_, _>>()
        .expect("certificates")
}

pub fn key(path: &Path) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_file(path).expect("key")
}

/// A client configuration trusting `ca` and presenting `identity` (cert, key) if any, built
/// directly with rustls: none of the checks of `srmig_tls::client_config`.
pub fn raw_client(ca: &Path, identity: Option<(&Path, &Path)>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(ca) {
        roots.add(c).expect("root");
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots);
    Arc::new(match identity {
        Some((cert, k)) => builder
            .with_client_auth_cert(certs(cert), key(k))
            .expect("client cert"),
        None => builder.with_no_client_auth(),
    })
}

/// A server configuration for (cert, key) requiring clients of `ca`, built directly with
/// rustls: none of the identity checks of `srmig_tls::server_config`.
pub fn raw_server(ca: &Path, cert: &Path, k: &Path) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(ca) {
        roots.add(c).expect("root");
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .expect("verifier");
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs(cert), key(k))
            .expect("server config"),
    )
}

/// An error and its sources, joined by ": ".
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}
