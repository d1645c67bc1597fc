//! TLS: `wss://` to the browser-facing listener with certificate files reloaded while calls
//! run, and SIP over TLS to a Kamailio that only speaks TLS to callgate.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use gateway::app::Gateway;
use loadtest::browser::{CallEvent, CallOptions, SimBrowser};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use signaling::{EndedBy, ServerMessage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::kamailio::{Kamailio, KamailioOptions, KamailioTls};
use crate::sipp::{SippOptions, SippUac, SippUas};
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

/// Kamailio with a TLS listener whose certificate the test CA signed for 127.0.0.1 and
/// `pbx.callgate.test`; the CA file's path comes back too.
fn tls_kamailio(ca: &TestCa, dir: &Path, users: &[(&str, &str)]) -> (Kamailio, PathBuf) {
    let (cert, key) = ca.leaf(&["127.0.0.1", "pbx.callgate.test"]);
    let tls = KamailioTls {
        cert_file: dir.join("pbx.crt"),
        key_file: dir.join("pbx.key"),
    };
    std::fs::write(&tls.cert_file, cert).expect("write");
    std::fs::write(&tls.key_file, key).expect("write");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).expect("write");
    let kam = Kamailio::start_with(users, KamailioOptions::default().tls(tls));
    (kam, ca_file)
}

/// A gateway whose proxy is Kamailio's TLS port, over `transport = "tls"`.
async fn gateway_over_tls(
    kam: &Kamailio,
    ca_file: &Path,
    server_name: Option<&str>,
) -> gateway::app::Gateway {
    let tls_addr = kam.tls_addr().expect("Kamailio listens on TLS");
    let mut settings = test_settings(tls_addr);
    settings.sip.domain = Some(kam.domain().to_string());
    settings.sip.transport = gateway::config::SipTransport::Tls;
    settings.sip.tls_ca_file = Some(ca_file.to_path_buf());
    settings.sip.tls_server_name = server_name.map(str::to_string);
    start_gateway(settings).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sip_over_tls_registers_receives_and_places_calls_through_kamailio() {
    let ca = TestCa::new();
    let dir = test_dir("sip");
    let (mut kam, ca_file) = tls_kamailio(&ca, &dir, &[("1001", "s3cret"), ("2000", "phone")]);
    let mut phone = SippUas::start(
        &crate::kamailio::scenario("uas_proxied_echo.xml"),
        SippOptions::default(),
    );
    let phone_contact = format!("sip:2000@{}", phone.sip_addr());
    tokio::task::block_in_place(|| kam.register_contact("2000", "phone", &phone_contact));
    // Verified against the proxy's IP (the default server name).
    let gateway = gateway_over_tls(&kam, &ca_file, None).await;
    let mut browser = browser_as(&gateway, "1001", "s3cret").await;
    match register_outcome(&mut browser).await {
        ServerMessage::Registered(r) => assert!(r.expires > 0),
        other => panic!("registration over TLS failed: {other:?}\n{}", kam.report()),
    }
    let contacts =
        tokio::task::block_in_place(|| kam.wait_registered("1001", Duration::from_secs(5)));
    assert!(
        contacts.iter().any(
            |c| c.uri.contains("1001-") && c.uri.to_ascii_lowercase().contains("transport=tls")
        ),
        "{contacts:?}"
    );
    // Kamailio's TLS port speaks nothing else; its log names the transport of each request.
    let logs = kam.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("request REGISTER") && l.contains("from tls:")),
        "no REGISTER over TLS in Kamailio's log\n{}",
        kam.report()
    );

    // Inbound: SIPp (a trunk, UDP) calls 1001; Kamailio sends the INVITE down callgate's
    // TLS connection.
    let opts = SippOptions::default()
        .args(["-s", "1001"])
        .key("hold_ms", 2000);
    let mut caller = SippUac::start("uac_inbound_call_bye.xml", kam.sip_addr(), opts);
    let incoming = browser
        .next_incoming()
        .await
        .expect("the call reaches the browser over TLS");
    let call = browser
        .answer(&incoming, CallOptions::default())
        .await
        .expect("answered");
    assert!(matches!(
        event(&mut browser, &incoming.call_id).await,
        CallEvent::Answered(_)
    ));
    call.wait_frames(50, Duration::from_secs(10))
        .await
        .expect("audio both ways via SIPp's echo");
    let end = ended(&mut browser, &incoming.call_id).await;
    assert_eq!((end.ended_by, end.answered), (EndedBy::Remote, true));
    call.stop().await;
    tokio::task::spawn_blocking(move || caller.wait(Duration::from_secs(15)))
        .await
        .expect("waiter")
        .assert_success();

    // Outbound: the agent calls the phone registered at Kamailio.
    let call = answered_call(&mut browser, "2000")
        .await
        .unwrap_or_else(|e| panic!("the call failed: {e:?}\n{}", kam.report()));
    let id = call.call_id().to_string();
    call.wait_frames(50, Duration::from_secs(10))
        .await
        .expect("audio through the TLS-signalled call");
    browser.hangup(&id).await.expect("hangup");
    assert_eq!(ended(&mut browser, &id).await.cause, "normal_clearing");
    call.stop().await;
    tokio::task::spawn_blocking(move || phone.wait(Duration::from_secs(15)))
        .await
        .expect("waiter")
        .assert_success();
    let logs = kam.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains("request INVITE") && l.contains("from tls:")),
        "no INVITE over TLS in Kamailio's log\n{}",
        kam.report()
    );
    assert_no_leftovers(&gateway).await;
    browser.close().await.expect("closed");
    tokio::task::block_in_place(|| kam.wait_unregistered("1001", Duration::from_secs(5)));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sip_over_tls_refuses_a_pbx_certificate_for_another_name() {
    let ca = TestCa::new();
    let dir = test_dir("sip-name");
    let (mut kam, ca_file) = tls_kamailio(&ca, &dir, &[("1001", "s3cret")]);
    let gateway = gateway_over_tls(&kam, &ca_file, Some("other.callgate.test")).await;
    let mut browser = browser_as(&gateway, "1001", "s3cret").await;
    // No connection: the REGISTER transaction gives up at Timer F (32 s).
    browser.set_timeout(Duration::from_secs(45));
    match register_outcome(&mut browser).await {
        ServerMessage::RegistrationFailed(_) => {}
        other => panic!("registered despite a certificate for another name: {other:?}"),
    }
    assert!(
        !kam.logs().contains("request REGISTER"),
        "a REGISTER reached Kamailio\n{}",
        kam.report()
    );
    drop(browser);
    gateway.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sip_tls_connection_comes_from_the_listen_address_and_is_redialled_from_it() {
    let ca = TestCa::new();
    let dir = test_dir("sip-redial");
    let (cert, key) = ca.leaf(&["127.0.0.1"]);
    let config = rustls::ServerConfig::builder_with_provider(gateway::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(cert.as_bytes()).expect("certificate")],
            rustls_pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key"),
        )
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    // A TLS peer standing in for the PBX: it only records where connections come from.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).expect("write");
    let mut settings = test_settings(listener.local_addr().expect("addr"));
    settings.sip.transport = gateway::config::SipTransport::Tls;
    settings.sip.tls_ca_file = Some(ca_file);
    // Handshakes run in a task: `Gateway::start` waits for the first one.
    let (peers, mut dialled_from) = tokio::sync::mpsc::unbounded_channel();
    let pbx = tokio::spawn(async move {
        for _ in 0..2 {
            let Ok((tcp, peer)) = listener.accept().await else {
                return;
            };
            let tls = acceptor.accept(tcp).await;
            let _ = peers.send((peer, tls.is_ok()));
            // The PBX closes the connection: callgate must dial again, from the same address.
            drop(tls);
        }
    });
    let gateway = start_gateway(settings).await;
    for round in 0..2 {
        let (peer, handshake) = tokio::time::timeout(Duration::from_secs(10), dialled_from.recv())
            .await
            .expect("callgate dials")
            .expect("the peer task runs");
        assert!(handshake, "TLS handshake {round} failed");
        assert_eq!(
            peer,
            gateway.sip_addr(),
            "connection {round} does not come from sip.listen"
        );
    }
    pbx.await.expect("the peer task ends");
    gateway.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_when_polling_is_off() {
    let ca = TestCa::new();
    let ca_pem = ca.pem();
    let dir = test_dir("sighup");
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    let (cert_a, key_a) = ca.leaf(&["127.0.0.1"]);
    std::fs::write(&cert_file, &cert_a).expect("write cert");
    std::fs::write(&key_file, &key_a).expect("write key");
    let mut settings = test_settings("127.0.0.1:5080".parse().expect("addr"));
    settings.http.tls_cert_file = Some(cert_file.clone());
    settings.http.tls_key_file = Some(key_file.clone());
    settings.http.tls_reload_interval = Duration::ZERO;
    let gateway = start_gateway(settings).await;
    assert_eq!(served_cert(&gateway, &ca_pem).await, der(&cert_a));

    let (cert_b, key_b) = ca.leaf(&["127.0.0.1"]);
    std::fs::write(&key_file, &key_b).expect("write key");
    std::fs::write(&cert_file, &cert_b).expect("write cert");
    // This test process is callgate here: the gateway handles SIGHUP (other gateways of the
    // test binary that serve TLS merely re-check their unchanged files).
    let sent = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success());
    let mut served = Vec::new();
    for _ in 0..100 {
        served = served_cert(&gateway, &ca_pem).await;
        if served == der(&cert_b) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        served,
        der(&cert_b),
        "SIGHUP did not reload the certificate"
    );
    gateway.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loadtest_run_over_wss_reads_metrics_over_https() {
    let ca = TestCa::new();
    let dir = test_dir("loadtest");
    let (cert, key) = ca.leaf(&["127.0.0.1"]);
    std::fs::write(dir.join("cert.pem"), &cert).expect("write");
    std::fs::write(dir.join("key.pem"), &key).expect("write");
    let trunk = loadtest::trunk::BuiltinTrunk::start("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("the builtin trunk binds");
    let mut settings = test_settings(trunk.sip_addr());
    settings.http.tls_cert_file = Some(dir.join("cert.pem"));
    settings.http.tls_key_file = Some(dir.join("key.pem"));
    let gateway = start_gateway(settings).await;

    let url = format!("wss://{}/ws", gateway.http_addr());
    let mut config = loadtest::config::RunConfig::new(
        loadtest::config::WsUrl::parse(&url).expect("a loopback wss URL"),
    );
    config.calls = 2;
    config.concurrency = std::num::NonZeroU32::new(2).expect("non-zero");
    config.hold = Duration::from_secs(1);
    config.duration_limit = Duration::from_secs(20);
    config.ca_pem = Some(ca.pem().into_bytes());
    let report = loadtest::run::run(config).await;
    let summary = report.to_table();
    assert_eq!(
        (report.calls.established, report.calls.completed),
        (2, 2),
        "{summary}"
    );
    let answered = report
        .gateway_counters
        .as_ref()
        .and_then(|c| c.get("callgate_calls_total{result=\"answered\"}").copied());
    assert_eq!(answered, Some(2.0), "/metrics over HTTPS\n{summary}");
    gateway.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
