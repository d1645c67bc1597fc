//! TLS: `wss://` to the browser-facing listener with certificate files reloaded while calls
//! run, and SIP over TLS to a Kamailio that only speaks TLS to callgate.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use gateway::app::Gateway;
use loadtest::browser::{CallEvent, SimBrowser};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use signaling::EndedBy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

/// A certificate authority made for one test.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    /// A fresh CA.
    pub fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
            .distinguished_name
            .push(DnType::CommonName, "callgate test CA");
        let key = KeyPair::generate().expect("CA key");
        TestCa {
            issuer: CertifiedIssuer::self_signed(params, key).expect("CA certificate"),
        }
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `names` (DNS names or IPs) and its key, PEM.
    pub fn leaf(&self, names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let params = CertificateParams::new(names).expect("leaf params");
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("leaf signed");
        (cert.pem(), key.serialize_pem())
    }
}

/// A directory of its own under the test target dir.
pub fn test_dir(name: &str) -> PathBuf {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "tls-{name}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the test dir");
    dir
}

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("a PEM certificate")
        .to_vec()
}

fn client_config(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("CA PEM"))
        .expect("CA accepted");
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

/// A new TLS connection to the gateway's HTTP port, verified against the CA.
async fn tls_connect(
    gateway: &Gateway,
    ca_pem: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(gateway.http_addr())
        .await
        .expect("TCP connects");
    let name = ServerName::try_from("127.0.0.1").expect("IP server name");
    tokio_rustls::TlsConnector::from(client_config(ca_pem))
        .connect(name, tcp)
        .await
        .expect("TLS handshake with a certificate the CA signed for 127.0.0.1")
}

/// The leaf certificate a new connection is served.
async fn served_cert(gateway: &Gateway, ca_pem: &str) -> Vec<u8> {
    let stream = tls_connect(gateway, ca_pem).await;
    let (_, connection) = stream.get_ref();
    connection
        .peer_certificates()
        .and_then(|chain| chain.first())
        .expect("the server sent a certificate")
        .to_vec()
}

/// `GET path` over HTTPS: status and body.
async fn https_get(gateway: &Gateway, ca_pem: &str, path: &str) -> (u16, String) {
    let mut stream = tls_connect(gateway, ca_pem).await;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("request sent");
    let mut raw = Vec::new();
    // The server may close without close_notify after the body; what came is enough.
    let _ = stream.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .get(9..12)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A browser on `wss://` trusting the test CA, logged in as 1001.
async fn wss_browser(gateway: &Gateway, ca_pem: &str) -> SimBrowser {
    let url = format!("wss://{}/ws", gateway.http_addr());
    let mut browser = SimBrowser::connect_trusting(&url, Some(ca_pem.as_bytes()))
        .await
        .expect("wss connects");
    browser.set_timeout(Duration::from_secs(10));
    browser
        .hello("1001", "secret")
        .await
        .expect("hello accepted");
    browser
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_call_survives_certificate_reloads_and_a_broken_file_keeps_the_old_certificate() {
    let ca = TestCa::new();
    let ca_pem = ca.pem();
    let dir = test_dir("wss");
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    let (cert_a, key_a) = ca.leaf(&["127.0.0.1", "localhost"]);
    std::fs::write(&cert_file, &cert_a).expect("write cert");
    std::fs::write(&key_file, &key_a).expect("write key");

    let pbx = start_demo(None).await;
    let mut settings = test_settings(pbx.sip_addr());
    settings.http.tls_cert_file = Some(cert_file.clone());
    settings.http.tls_key_file = Some(key_file.clone());
    settings.http.tls_reload_interval = Duration::from_secs(1);
    let gateway = start_gateway(settings).await;

    // Only TLS is spoken: a plain HTTP request gets no HTTP answer.
    let mut plain = tokio::net::TcpStream::connect(gateway.http_addr())
        .await
        .expect("TCP connects");
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("request sent");
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut raw)).await;
    assert!(
        !raw.starts_with(b"HTTP/"),
        "plain HTTP must not be served next to HTTPS"
    );
    assert_eq!(served_cert(&gateway, &ca_pem).await, der(&cert_a));
    let (status, body) = https_get(&gateway, &ca_pem, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));

    // A call over wss through the demo PBX.
    let mut browser = wss_browser(&gateway, &ca_pem).await;
    let call = browser
        .call("echo", Default::default())
        .await
        .expect("call accepted");
    let id = call.call_id().to_string();
    assert!(matches!(
        event(&mut browser, &id).await,
        CallEvent::Ringing(_)
    ));
    assert!(matches!(
        event(&mut browser, &id).await,
        CallEvent::Answered(_)
    ));
    call.wait_frames(50, Duration::from_secs(10))
        .await
        .expect("audio over the wss-signalled call");

    // New certificate files: new connections get them; the open session is untouched.
    let (cert_b, key_b) = ca.leaf(&["127.0.0.1"]);
    std::fs::write(&key_file, &key_b).expect("write key");
    std::fs::write(&cert_file, &cert_b).expect("write cert");
    let mut served = Vec::new();
    for _ in 0..100 {
        served = served_cert(&gateway, &ca_pem).await;
        if served == der(&cert_b) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(served, der(&cert_b), "the new certificate is never served");
    browser.ping().await.expect("the old session still answers");
    call.wait_frames(100, Duration::from_secs(10))
        .await
        .expect("the call's audio continues");
    let (_, metrics) = https_get(&gateway, &ca_pem, "/metrics").await;
    assert!(
        metric(&metrics, "callgate_tls_reloads_total{result=\"ok\"}") >= 1.0,
        "{metrics}"
    );

    // A broken replacement: logged and counted, the previous certificate stays.
    std::fs::write(&cert_file, "-----BEGIN CERTIFICATE-----\nnot base64\n").expect("write");
    let mut failed = 0.0;
    for _ in 0..100 {
        let (_, metrics) = https_get(&gateway, &ca_pem, "/metrics").await;
        failed = metric(&metrics, "callgate_tls_reloads_total{result=\"failed\"}");
        if failed >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(failed >= 1.0, "the broken file was never noticed");
    assert_eq!(served_cert(&gateway, &ca_pem).await, der(&cert_b));
    let mut second = wss_browser(&gateway, &ca_pem).await;
    second.ping().await.expect("a new wss session works");
    browser.ping().await.expect("the first session too");

    browser.hangup(&id).await.expect("hangup acked");
    let end = ended(&mut browser, &id).await;
    assert_eq!((end.ended_by, end.answered), (EndedBy::Agent, true));
    call.stop().await;
    drop(second);
    drop(browser);
    gateway.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_fails_on_a_missing_or_mismatched_certificate() {
    let ca = TestCa::new();
    let dir = test_dir("bad");
    let (cert_a, _) = ca.leaf(&["127.0.0.1"]);
    let (_, key_b) = ca.leaf(&["127.0.0.1"]);
    std::fs::write(dir.join("cert.pem"), &cert_a).expect("write");
    std::fs::write(dir.join("key.pem"), &key_b).expect("write");
    let mut settings = test_settings("127.0.0.1:5080".parse().expect("addr"));
    settings.http.tls_cert_file = Some(dir.join("cert.pem"));
    settings.http.tls_key_file = Some(dir.join("key.pem"));
    let error = Gateway::start(settings.clone())
        .await
        .err()
        .expect("a mismatched pair fails start-up");
    assert!(error.to_string().contains("pair"), "{error}");
    settings.http.tls_key_file = Some(dir.join("missing.pem"));
    let error = Gateway::start(settings)
        .await
        .err()
        .expect("a missing key fails start-up");
    assert!(error.to_string().contains("missing.pem"), "{error}");
    let _ = std::fs::remove_dir_all(&dir);
}
