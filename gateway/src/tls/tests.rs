use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use super::*;

/// A self-signed certificate and its key, PEM.
fn pair(name: &str) -> (String, String) {
    let generated =
        rcgen::generate_simple_self_signed(vec![name.to_string()]).expect("rcgen generates");
    (generated.cert.pem(), generated.signing_key.serialize_pem())
}

/// A fresh directory under the system temp dir for one test's files.
fn dir() -> PathBuf {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "callgate-tls-unit-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn served(cert: &ServerCert) -> Vec<u8> {
    let current = cert.current.read().expect("not poisoned").clone();
    current.end_entity_cert().expect("a leaf").to_vec()
}

fn der_of(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("PEM")
        .to_vec()
}

#[test]
fn a_matching_pair_loads_and_a_mismatched_or_broken_one_does_not() {
    let (cert_a, key_a) = pair("a.test");
    let (_, key_b) = pair("b.test");
    assert!(certified_key(cert_a.as_bytes(), key_a.as_bytes()).is_ok());
    let mismatch = certified_key(cert_a.as_bytes(), key_b.as_bytes()).expect_err("wrong key");
    assert!(mismatch.contains("pair"), "{mismatch}");
    let no_cert = certified_key(b"garbage", key_a.as_bytes()).expect_err("no certificate");
    assert!(no_cert.contains("certificate file"), "{no_cert}");
    let no_key = certified_key(cert_a.as_bytes(), b"").expect_err("no key");
    assert!(no_key.contains("key file"), "{no_key}");
}

#[test]
fn reload_swaps_a_changed_pair_and_keeps_the_old_one_when_the_new_is_broken() {
    let dir = dir();
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    let (cert_a, key_a) = pair("a.test");
    std::fs::write(&cert_file, &cert_a).expect("write");
    std::fs::write(&key_file, &key_a).expect("write");
    let cert = ServerCert::load(&cert_file, &key_file).expect("loads");
    assert_eq!(served(&cert), der_of(&cert_a));
    assert_eq!(cert.reload(false), Reload::Unchanged);

    let (cert_b, key_b) = pair("b.test");
    std::fs::write(&cert_file, &cert_b).expect("write");
    std::fs::write(&key_file, &key_b).expect("write");
    assert_eq!(cert.reload(false), Reload::Reloaded);
    assert_eq!(served(&cert), der_of(&cert_b));

    // Half-written rotation (new certificate, old key): refused once, then quiet.
    let (cert_c, key_c) = pair("c.test");
    std::fs::write(&cert_file, &cert_c).expect("write");
    assert!(matches!(cert.reload(false), Reload::Failed(_)));
    assert_eq!(cert.reload(false), Reload::Unchanged);
    assert_eq!(served(&cert), der_of(&cert_b));
    // The key arrives: the pair is complete.
    std::fs::write(&key_file, &key_c).expect("write");
    assert_eq!(cert.reload(false), Reload::Reloaded);
    assert_eq!(served(&cert), der_of(&cert_c));

    std::fs::remove_file(&key_file).expect("remove");
    assert!(matches!(cert.reload(false), Reload::Failed(_)));
    // SIGHUP reports the state again even though nothing changed.
    assert!(matches!(cert.reload(true), Reload::Failed(_)));
    assert_eq!(served(&cert), der_of(&cert_c));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ca_bundle_reads_a_file_and_refuses_one_without_certificates() {
    let dir = dir();
    let (cert, key) = pair("ca.test");
    std::fs::write(dir.join("ca.pem"), &cert).expect("write");
    std::fs::write(dir.join("key.pem"), &key).expect("write");
    assert_eq!(
        ca_bundle(Some(&dir.join("ca.pem"))).expect("reads"),
        cert.as_bytes()
    );
    assert!(ca_bundle(Some(&dir.join("key.pem"))).is_err());
    assert!(ca_bundle(Some(&dir.join("missing.pem"))).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The HTTPS listener hands axum TLS streams whose TCP connection has Nagle off, like the
/// plain one (`http::send_without_delay`).
#[tokio::test]
async fn https_connections_send_without_delay() {
    let dir = dir();
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    let (cert_pem, key_pem) = pair("localhost");
    std::fs::write(&cert_file, &cert_pem).expect("write");
    std::fs::write(&key_file, &key_pem).expect("write");
    let config = ServerCert::load(&cert_file, &key_file)
        .expect("loads")
        .server_config()
        .expect("server config");
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = tcp.local_addr().expect("address");
    let cancel = CancellationToken::new();
    let mut listener = TlsListener::new(tcp, config, cancel.clone()).expect("listener");

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(der_of(&cert_pem)))
        .expect("a root");
    let client = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let client = tokio::spawn(async move {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let name = rustls_pki_types::ServerName::try_from("localhost").expect("a name");
        connector.connect(name, tcp).await.expect("handshake")
    });
    let (accepted, _peer) = axum::serve::Listener::accept(&mut listener).await;
    assert!(accepted.get_ref().0.nodelay().expect("read TCP_NODELAY"));
    client.await.expect("client task");
    cancel.cancel();
    let _ = std::fs::remove_dir_all(dir);
}
