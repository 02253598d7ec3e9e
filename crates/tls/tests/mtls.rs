//! Mutual TLS for real: a server on 127.0.0.1 and clients over TCP, with certificates from
//! `srmig_tls::pki`. Who gets served, who is refused at the handshake, and that nothing a
//! refused peer does stops the server.

mod common;

use std::time::{Duration, SystemTime};

use common::{chain, raw_client, start, Pki};
use hyper::{Method, StatusCode};
use srmig_tls::{
    client_config, ClientError, Endpoint, HttpsClient, PeerIdentity, Role, ServeOptions, Validity,
};
use tokio::io::AsyncReadExt as _;

const LOCAL: &[&str] = &["127.0.0.1", "localhost"];

fn endpoint(addr: std::net::SocketAddr) -> Endpoint {
    Endpoint::new(addr.to_string(), "127.0.0.1").expect("endpoint")
}

#[tokio::test]
async fn a_valid_client_is_served_and_its_identity_seen() {
    let pki = Pki::new();
    let host = pki.issue(Role::Host, "h1", LOCAL, None);
    let ctl = pki.issue(Role::Controller, "ctl", LOCAL, None);
    let alice = pki.issue(Role::Client, "alice", &[], None);
    let server = start(
        &host,
        &[Role::Controller, Role::Client],
        ServeOptions::default(),
    )
    .await;

    let h1 = PeerIdentity::new(Role::Host, "h1").expect("valid");
    let to = endpoint(server.addr).expect_peer(h1);
    let client = HttpsClient::new(client_config(&ctl).expect("client config"));
    let (status, body) = client
        .request(&to, Method::GET, "/whoami", None)
        .await
        .expect("request");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"controller/ctl");

    let json = br#"{"state":"running"}"#.to_vec();
    let (status, body) = client
        .request(&to, Method::PUT, "/echo", Some(json.clone()))
        .await
        .expect("put");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], &json[..]);

    // An operator's client certificate, by DNS name this time.
    let by_name = Endpoint::new(server.addr.to_string(), "localhost").expect("endpoint");
    let (_, body) = HttpsClient::new(client_config(&alice).expect("client config"))
        .request(&by_name, Method::GET, "/whoami", None)
        .await
        .expect("request");
    assert_eq!(&body[..], b"client/alice");

    // The server is host h1, not h2: an expected identity that does not match is refused.
    let wrong =
        endpoint(server.addr).expect_peer(PeerIdentity::new(Role::Host, "h2").expect("valid"));
    let e = client
        .request(&wrong, Method::GET, "/whoami", None)
        .await
        .expect_err("unexpected peer");
    assert!(matches!(e, ClientError::UnexpectedPeer { .. }), "{e:?}");
    assert!(
        e.to_string().ends_with("is host/h1, expected host/h2"),
        "{e}"
    );

    assert_eq!(server.hits(), 3);
    server.stop().await;
}

/// Sends `GET /whoami` with `tls` and returns the error (the request must fail).
async fn refused(tls: std::sync::Arc<rustls::ClientConfig>, addr: std::net::SocketAddr) -> String {
    let e = HttpsClient::new(tls)
        .with_timeout(Duration::from_secs(5))
        .request(&endpoint(addr), Method::GET, "/whoami", None)
        .await
        .expect_err("the server must refuse this client");
    assert!(
        !matches!(e, ClientError::Timeout { .. }),
        "refused by timing out rather than by an alert: {e}"
    );
    chain(&e)
}

#[tokio::test]
async fn clients_without_a_valid_certificate_are_refused_at_the_handshake() {
    let pki = Pki::new();
    let host = pki.issue(Role::Host, "h1", LOCAL, None);
    let server = start(
        &host,
        &[Role::Controller, Role::Client],
        ServeOptions::default(),
    )
    .await;

    // No client certificate at all.
    let e = refused(raw_client(&host.ca, None), server.addr).await;
    assert!(e.contains("CertificateRequired"), "{e}");

    // A certificate from another CA (the client trusts our CA, so only the server can refuse).
    let other = Pki::new();
    let stranger = other.issue(Role::Controller, "ctl", LOCAL, None);
    let e = refused(
        raw_client(&host.ca, Some((&stranger.cert, &stranger.key))),
        server.addr,
    )
    .await;
    assert!(e.contains("UnknownCA"), "{e}");

    // An expired certificate from our CA.
    let now = SystemTime::now();
    let old = pki.issue(
        Role::Controller,
        "old",
        LOCAL,
        Some(
            Validity::new(
                now - Duration::from_secs(10 * 86_400),
                now - Duration::from_secs(86_400),
            )
            .expect("validity"),
        ),
    );
    let e = refused(
        raw_client(&host.ca, Some((&old.cert, &old.key))),
        server.addr,
    )
    .await;
    assert!(e.contains("CertificateExpired"), "{e}");

    // A valid certificate of a role this server does not admit (another host).
    let h2 = pki.issue(Role::Host, "h2", LOCAL, None);
    let e = refused(client_config(&h2).expect("client config"), server.addr).await;
    assert!(e.contains("alert"), "{e}");

    // A valid certificate without a srmig identity.
    let anon = anonymous_cert(&pki);
    let e = refused(raw_client(&host.ca, Some((&anon.0, &anon.1))), server.addr).await;
    assert!(e.contains("alert"), "{e}");

    // None of them reached a handler, and the server still serves a valid client.
    assert_eq!(server.hits(), 0);
    let ctl = pki.issue(Role::Controller, "ctl", LOCAL, None);
    let (status, body) = HttpsClient::new(client_config(&ctl).expect("client config"))
        .request(&endpoint(server.addr), Method::GET, "/whoami", None)
        .await
        .expect("still serving");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"controller/ctl");
    server.stop().await;
}

/// A certificate signed by the CA of `pki` with both usages but no srmig URI.
fn anonymous_cert(pki: &Pki) -> (std::path::PathBuf, std::path::PathBuf) {
    let ca_dir = pki.ca_dir();
    let ca_key = rcgen::KeyPair::from_pem(
        &std::fs::read_to_string(ca_dir.join("ca.key")).expect("read CA key"),
    )
    .expect("CA key");
    let ca_pem = std::fs::read_to_string(ca_dir.join("ca.pem")).expect("read CA");
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).expect("issuer");
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.signed_by(&key, &issuer).expect("sign");
    let cert_path = pki.root.join("anon.pem");
    let key_path = pki.root.join("anon.key");
    std::fs::write(&cert_path, cert.pem()).expect("write");
    std::fs::write(&key_path, key.serialize_pem()).expect("write");
    (cert_path, key_path)
}

#[tokio::test]
async fn the_client_refuses_a_server_certificate_for_another_name_or_ca() {
    let pki = Pki::new();
    let elsewhere = pki.issue(Role::Host, "h1", &["192.0.2.1", "h1.dc.example"], None);
    let server = start(&elsewhere, &Role::ALL, ServeOptions::default()).await;
    let ctl = pki.issue(Role::Controller, "ctl", LOCAL, None);
    let client = HttpsClient::new(client_config(&ctl).expect("client config"));

    let e = client
        .request(&endpoint(server.addr), Method::GET, "/whoami", None)
        .await
        .expect_err("wrong name");
    assert!(matches!(e, ClientError::Handshake { .. }), "{e:?}");
    let msg = chain(&e);
    assert!(
        msg.contains("certificate not valid for name \"127.0.0.1\""),
        "{msg}"
    );

    // The same server dialled by the name in its certificate is fine.
    let by_name = Endpoint::new(server.addr.to_string(), "h1.dc.example").expect("endpoint");
    let (status, _) = client
        .request(&by_name, Method::GET, "/whoami", None)
        .await
        .expect("right name");
    assert_eq!(status, StatusCode::OK);
    server.stop().await;

    // A server whose certificate comes from another CA.
    let other = Pki::new();
    let impostor = other.issue(Role::Host, "h1", LOCAL, None);
    let server = start(&impostor, &Role::ALL, ServeOptions::default()).await;
    let e = client
        .request(&endpoint(server.addr), Method::GET, "/whoami", None)
        .await
        .expect_err("other CA");
    let msg = chain(&e);
    assert!(matches!(e, ClientError::Handshake { .. }), "{msg}");
    assert!(msg.contains("UnknownIssuer"), "{msg}");
    assert_eq!(server.hits(), 0);
    server.stop().await;

    // A server with a certificate from our CA but no srmig identity.
    let (cert, key) = anonymous_cert(&pki);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(srmig_tls::serve(
        listener,
        common::raw_server(&ctl.ca, &cert, &key),
        common::router(Default::default()),
        ServeOptions::default(),
        async move {
            let _ = stopped.await;
        },
    ));
    let by_name = Endpoint::new(addr.to_string(), "localhost").expect("endpoint");
    let e = client
        .request(&by_name, Method::GET, "/whoami", None)
        .await
        .expect_err("no identity");
    let msg = chain(&e);
    assert!(matches!(e, ClientError::Handshake { .. }), "{msg}");
    assert!(
        msg.ends_with("invalid peer certificate: the certificate carries no srmig identity (a URI subject alternative name srmig://<role>/<name>)"),
        "{msg}"
    );
    let _ = stop.send(());
    task.await.expect("serve");
}

#[tokio::test]
async fn a_silent_peer_times_out_without_stopping_the_server() {
    let pki = Pki::new();
    let host = pki.issue(Role::Host, "h1", LOCAL, None);
    let options = ServeOptions {
        handshake_timeout: Duration::from_millis(200),
        ..ServeOptions::default()
    };
    let server = start(&host, &Role::ALL, options).await;

    // Connects and says nothing: the server closes the connection after the timeout.
    let mut silent = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
        .await
        .expect("closed before 5 s")
        .unwrap_or(0);
    assert_eq!(n, 0, "the server closed the silent connection");

    // Garbage instead of a ClientHello: refused at once.
    let mut junk = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    tokio::io::AsyncWriteExt::write_all(&mut junk, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let _ = tokio::time::timeout(Duration::from_secs(5), junk.read(&mut buf))
        .await
        .expect("answered or closed before 5 s");

    let ctl = pki.issue(Role::Controller, "ctl", LOCAL, None);
    let (status, _) = HttpsClient::new(client_config(&ctl).expect("client config"))
        .request(&endpoint(server.addr), Method::GET, "/whoami", None)
        .await
        .expect("still serving");
    assert_eq!(status, StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn shutdown_lets_a_request_in_flight_finish_then_stops_accepting() {
    let pki = Pki::new();
    let host = pki.issue(Role::Host, "h1", LOCAL, None);
    let server = start(&host, &Role::ALL, ServeOptions::default()).await;
    let addr = server.addr;
    let ctl = pki.issue(Role::Controller, "ctl", LOCAL, None);
    let client = HttpsClient::new(client_config(&ctl).expect("client config"));

    let slow = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .request(&endpoint(addr), Method::GET, "/slow", None)
                .await
        })
    };
    // Wait until the slow handler runs, then shut down while it does.
    for _ in 0..200 {
        if server.hits() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(server.hits(), 1, "the slow request reached its handler");
    server.stop().await;

    let (status, body) = slow
        .await
        .expect("task")
        .expect("the request in flight finished");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"done");
    let e = client
        .request(&endpoint(addr), Method::GET, "/whoami", None)
        .await
        .expect_err("no longer listening");
    assert!(matches!(e, ClientError::Connect { .. }), "{e:?}");
}

#[test]
fn blocking_request_works_from_synchronous_code() {
    let pki = Pki::new();
    let host = pki.issue(Role::Host, "h1", LOCAL, None);
    let ctl = pki.issue(Role::Controller, "ctl", LOCAL, None);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let server = rt.block_on(start(&host, &Role::ALL, ServeOptions::default()));
    let addr = server.addr;
    let client = HttpsClient::new(client_config(&ctl).expect("client config"));
    // The server's runtime runs on this thread; make the request from another one.
    let handle = std::thread::spawn(move || {
        client.blocking_request(&endpoint(addr), Method::GET, "/whoami", None)
    });
    let result = rt.block_on(async {
        loop {
            if handle.is_finished() {
                break handle.join().expect("thread");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let (status, body) = result.expect("blocking request");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"controller/ctl");
    rt.block_on(server.stop());
}

#[tokio::test]
async fn a_two_ca_bundle_trusts_both_during_a_rotation() {
    let old = Pki::new();
    let new = Pki::new();
    let bundle = old.root.join("bundle.pem");
    std::fs::write(
        &bundle,
        [
            std::fs::read(old.ca_dir().join("ca.pem")).expect("old ca"),
            std::fs::read(new.ca_dir().join("ca.pem")).expect("new ca"),
        ]
        .concat(),
    )
    .expect("write bundle");
    let with_bundle = |f: srmig_tls::TlsFiles| srmig_tls::TlsFiles::new(&bundle, f.cert, f.key);

    // A host still on the old CA serves a controller already on the new one, and back.
    let host_old = with_bundle(old.issue(Role::Host, "h1", LOCAL, None));
    let ctl_new = with_bundle(new.issue(Role::Controller, "ctl", LOCAL, None));
    let host_new = with_bundle(new.issue(Role::Host, "h2", LOCAL, None));
    let ctl_old = with_bundle(old.issue(Role::Controller, "ctl-old", LOCAL, None));
    for (server_files, client_files, who) in [
        (&host_old, &ctl_new, "controller/ctl"),
        (&host_new, &ctl_old, "controller/ctl-old"),
    ] {
        let server = start(server_files, &[Role::Controller], ServeOptions::default()).await;
        let (status, body) = HttpsClient::new(client_config(client_files).expect("client config"))
            .request(&endpoint(server.addr), Method::GET, "/whoami", None)
            .await
            .expect("request across CAs");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(&body[..], who.as_bytes());
        server.stop().await;
    }
}
