//! Token-mode logins against the real gateway and the demo PBX (which checks digest
//! credentials): HS256 and ES256 tokens minted here, SIP passwords looked up by callgate from
//! a credentials file or over HTTPS from a local "CRM" behind a private CA; forged, unsigned,
//! expired and misaddressed tokens, a token dialling outside its `dial` claim, password mode
//! switched off; webhooks over HTTPS.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use loadtest::browser::SimBrowser;
use serde_json::json;
use signaling::{
    Auth, ClientMessage, ErrorCode, Hello, PROTOCOL_VERSION, ServerMessage, TransferRequest,
};

use crate::support::*;

pub(crate) const SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";
pub(crate) const PBX_PASSWORD: &str = "pbx-digest-pw";

pub(crate) fn unix_now() -> u64 {
    gateway::clock::since_unix_epoch().as_secs()
}

pub(crate) fn hs256(claims: &serde_json::Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("signs")
}

fn b64url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A fresh temporary directory for key, CA and credentials files.
pub(crate) fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("callgate-auth-{:08x}", rand::random::<u32>()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

pub(crate) fn credentials_file(dir: &std::path::Path, text: &str) -> PathBuf {
    let path = dir.join("credentials.toml");
    std::fs::write(&path, text).expect("write credentials");
    path
}

/// Says `hello` with a token; the welcome or the refusal's code.
async fn token_hello(
    browser: &mut SimBrowser,
    extension: Option<&str>,
    token: &str,
) -> Result<(), ErrorCode> {
    let message = ClientMessage::Hello(Hello {
        request_id: browser.next_request_id(),
        protocol: PROTOCOL_VERSION,
        auth: Auth::Token {
            extension: extension.map(str::to_string),
            token: token.to_string(),
        },
        user_agent: Some("auth-test".into()),
        resume_token: None,
    });
    match browser.request(&message, "the welcome").await {
        Ok(ServerMessage::Welcome(_)) => Ok(()),
        Ok(other) => panic!("unexpected reply {other:?}"),
        Err(e) => Err(e.code().unwrap_or_else(|| panic!("no reply: {e}"))),
    }
}

pub(crate) async fn connect(gateway: &gateway::app::Gateway) -> SimBrowser {
    let mut browser = SimBrowser::connect(&ws_url(gateway))
        .await
        .expect("WebSocket connects");
    browser.set_timeout(Duration::from_secs(10));
    browser
}

pub(crate) async fn login(gateway: &gateway::app::Gateway, token: &str) -> SimBrowser {
    let mut browser = connect(gateway).await;
    token_hello(&mut browser, Some("1001"), token)
        .await
        .expect("token login accepted");
    browser
}

/// Registers and returns whether the PBX accepted the looked-up credentials.
pub(crate) async fn register(browser: &mut SimBrowser) -> bool {
    matches!(
        register_outcome(browser).await,
        ServerMessage::Registered(_)
    )
}

/// Calls `echo` and checks audio comes back; returns after hanging up.
pub(crate) async fn echo_call(browser: &mut SimBrowser) {
    let call = browser.call("echo", BTreeMap::new()).await.expect("call");
    let id = call.call_id().to_string();
    call.wait_frames(25, Duration::from_secs(10))
        .await
        .expect("echoed audio");
    browser.hangup(&id).await.expect("hangup");
    ended(browser, &id).await;
    call.stop().await;
}

pub(crate) fn token_settings(pbx: SocketAddr, dir: &std::path::Path) -> gateway::config::Settings {
    let mut settings = test_settings(pbx);
    settings.auth.password_mode = false;
    settings.auth.token_secret = Some(SECRET.into());
    settings.auth.credentials_file = Some(credentials_file(
        dir,
        &format!(
            "\"1001\" = \"{PBX_PASSWORD}\"\n\
             \"1002\" = {{ password = \"wrong-pw\" }}\n\
             \"1003\" = {{ password = \"{PBX_PASSWORD}\", auth_user = \"a1003\" }}\n"
        ),
    ));
    settings.validate().expect("token settings validate");
    settings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hs256_token_registers_and_calls_with_looked_up_credentials() {
    let pbx = start_demo(Some(PBX_PASSWORD)).await;
    let dir = temp_dir();
    let gateway = start_gateway(token_settings(pbx.sip_addr(), &dir)).await;

    let token = hs256(&json!({"sub": "1001", "exp": unix_now() + 120}), SECRET);
    let mut browser = login(&gateway, &token).await;
    assert!(
        register(&mut browser).await,
        "the PBX accepted the file's password"
    );
    echo_call(&mut browser).await;

    // The extension may be left out: the token's subject names it.
    let mut bare = connect(&gateway).await;
    token_hello(&mut bare, None, &token)
        .await
        .expect("no extension in the hello");

    // 1002's file entry holds a password the PBX refuses: the credentials come from the file.
    let token = hs256(&json!({"sub": "1002", "exp": unix_now() + 120}), SECRET);
    let mut wrong = connect(&gateway).await;
    token_hello(&mut wrong, Some("1002"), &token)
        .await
        .expect("login itself succeeds");
    assert!(
        !register(&mut wrong).await,
        "the PBX refuses 1002's (wrong) password"
    );

    // 1003's entry has the right password under another digest username, which the demo
    // PBX's registrar refuses (it wants the AOR's user): the auth_user is what is sent.
    let token = hs256(&json!({"sub": "1003", "exp": unix_now() + 120}), SECRET);
    let mut aliased = connect(&gateway).await;
    token_hello(&mut aliased, Some("1003"), &token)
        .await
        .expect("login itself succeeds");
    assert!(
        !register(&mut aliased).await,
        "digest username a1003 is not the AOR's user"
    );

    // Password mode is off: the page's SIP password is refused with a clear code.
    let mut old_sdk = connect(&gateway).await;
    let refused = old_sdk
        .hello("1001", PBX_PASSWORD)
        .await
        .expect_err("password mode is off");
    assert_eq!(refused.code(), Some(ErrorCode::AuthModeDisabled));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es256_token_with_a_dial_claim_may_only_dial_its_numbers() {
    let pbx = start_demo(Some(PBX_PASSWORD)).await;
    let dir = temp_dir();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256");
    let public_key = dir.join("crm-es256.pem");
    std::fs::write(&public_key, key.public_key_pem()).expect("write key");
    let mut settings = token_settings(pbx.sip_addr(), &dir);
    settings.auth.token_secret = None;
    settings.auth.token_public_key_file = Some(public_key);
    settings.auth.token_audience = Some("callgate".into());
    let gateway = start_gateway(settings).await;

    let claims = json!({
        "sub": "1001", "aud": "callgate", "exp": unix_now() + 120, "dial": ["echo", "10[0-9]{2}"],
    });
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::ES256),
        &claims,
        &EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).expect("EC key"),
    )
    .expect("signs");
    let mut browser = login(&gateway, &token).await;
    let refused = browser
        .call("+84912345678", BTreeMap::new())
        .await
        .err()
        .expect("outside the token's dial claim");
    assert_eq!(refused.code(), Some(ErrorCode::NumberNotAllowed));

    // Inside the claim: the call is placed with the looked-up digest credentials.
    let call = answered_call(&mut browser, "echo")
        .await
        .unwrap_or_else(|e| panic!("echo ended: {e:?}"));
    let id = call.call_id().to_string();
    // A blind transfer outside the claim is refused before any REFER leaves.
    let request_id = browser.next_request_id();
    browser
        .send_message(&ClientMessage::Transfer(TransferRequest {
            request_id,
            call_id: id.clone(),
            to: Some("+84912345678".into()),
            replaces_call_id: None,
        }))
        .await
        .expect("sent");
    let reply = browser
        .wait_for("the transfer reply", |m| {
            matches!(m, ServerMessage::Ack(a) if a.request_id == request_id)
                || matches!(m, ServerMessage::Error(e) if e.request_id == Some(request_id))
        })
        .await
        .expect("a reply");
    assert!(
        matches!(&reply, ServerMessage::Error(e) if e.code == ErrorCode::NumberNotAllowed),
        "{reply:?}"
    );
    assert!(pbx.transfers().is_empty(), "no REFER reached the PBX");
    browser.hangup(&id).await.expect("hangup");
    ended(&mut browser, &id).await;
    call.stop().await;

    // An HS256 token (alg confusion with the public key as secret) is refused.
    let confused = hs256(&claims, &key.public_key_pem());
    let mut attacker = connect(&gateway).await;
    assert_eq!(
        token_hello(&mut attacker, Some("1001"), &confused).await,
        Err(ErrorCode::AuthFailed)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_with_clear_codes_and_counted() {
    let pbx = start_demo(Some(PBX_PASSWORD)).await;
    let dir = temp_dir();
    let mut settings = token_settings(pbx.sip_addr(), &dir);
    settings.auth.token_issuer = Some("crm.example.com".into());
    settings.auth.token_audience = Some("callgate".into());
    let gateway = start_gateway(settings).await;
    let now = unix_now();
    let good = |sub: &str| json!({"sub": sub, "iss": "crm.example.com", "aud": "callgate", "exp": now + 120});

    let forged = hs256(&good("1001"), "another-secret-of-at-least-32-bytes!");
    let unsigned = format!(
        "{}.{}.",
        b64url(br#"{"alg":"none","typ":"JWT"}"#),
        b64url(good("1001").to_string().as_bytes())
    );
    let mut expired_claims = good("1001");
    expired_claims["exp"] = json!(now - 3600);
    let mut wrong_audience = good("1001");
    wrong_audience["aud"] = json!("someone-else");
    let mut no_exp = good("1001");
    no_exp.as_object_mut().expect("object").remove("exp");
    let cases = [
        (
            "forged signature",
            Some("1001"),
            forged,
            ErrorCode::AuthFailed,
        ),
        ("alg none", Some("1001"), unsigned, ErrorCode::AuthFailed),
        (
            "expired",
            Some("1001"),
            hs256(&expired_claims, SECRET),
            ErrorCode::TokenExpired,
        ),
        (
            "wrong audience",
            Some("1001"),
            hs256(&wrong_audience, SECRET),
            ErrorCode::AuthFailed,
        ),
        (
            "no exp",
            Some("1001"),
            hs256(&no_exp, SECRET),
            ErrorCode::AuthFailed,
        ),
        (
            "unknown extension",
            Some("7777"),
            hs256(&good("7777"), SECRET),
            ErrorCode::AuthFailed,
        ),
        (
            "another agent's token",
            Some("1002"),
            hs256(&good("1001"), SECRET),
            ErrorCode::AuthFailed,
        ),
        (
            "garbage",
            Some("1001"),
            "not.a.jwt".into(),
            ErrorCode::AuthFailed,
        ),
    ];
    for (what, extension, token, code) in &cases {
        let mut browser = connect(&gateway).await;
        assert_eq!(
            token_hello(&mut browser, *extension, token).await,
            Err(*code),
            "{what}"
        );
        // The refused session stays closed to other requests.
        assert_eq!(
            browser.ping().await.err().and_then(|e| e.code()),
            Some(ErrorCode::NotAuthenticated),
            "{what}"
        );
    }
    assert_eq!(pbx.registrations().len(), 0);

    let (_, metrics) = http_get(gateway.http_addr(), "/metrics").await;
    for reason in [
        "signature",
        "algorithm",
        "expired",
        "audience",
        "missing_exp",
        "unknown_extension",
        "extension_mismatch",
        "malformed",
    ] {
        assert_eq!(
            metric(
                &metrics,
                &format!("callgate_auth_failures_total{{reason=\"{reason}\"}}")
            ),
            1.0,
            "{reason}\n{metrics}"
        );
    }
    assert_eq!(
        metric(
            &metrics,
            "callgate_browser_errors_total{code=\"token_expired\"}"
        ),
        1.0
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- HTTPS: a local "CRM" behind a private CA -------------------------------------------

/// A CA and a server certificate for 127.0.0.1 signed by it; returns (CA PEM, server
/// rustls config).
fn private_ca() -> (String, Arc<rustls::ServerConfig>) {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "callgate test CA");
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA cert");
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
    let leaf_params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("params");
    let leaf = leaf_params
        .signed_by(&leaf_key, &issuer)
        .expect("leaf cert");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let key_der =
        rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).expect("PKCS#8 key");
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key_der)
        .expect("server config");
    (ca_cert.pem(), Arc::new(config))
}

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    authorization: Option<String>,
    body: Vec<u8>,
}

/// An HTTPS server: `GET /sip/1001` answers the PBX password (with the right bearer),
/// `/sip/slow` never answers in time, `/sip/broken` answers 500, other extensions 404, and
/// `POST /hooks` records webhooks.
async fn https_crm(tls: Arc<rustls::ServerConfig>) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let store = seen.clone();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let store = store.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |request| {
                    let store = store.clone();
                    async move { Ok::<_, std::convert::Infallible>(answer(request, store).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

async fn answer(
    request: hyper::Request<Incoming>,
    store: Arc<Mutex<Vec<Seen>>>,
) -> hyper::Response<Full<Bytes>> {
    let method = request.method().to_string();
    let path = request.uri().path().to_string();
    let authorization = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    store.lock().expect("lock").push(Seen {
        method: method.clone(),
        path: path.clone(),
        authorization: authorization.clone(),
        body,
    });
    let reply = |status: u16, body: String| {
        hyper::Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("response")
    };
    match (method.as_str(), path.as_str()) {
        ("POST", "/hooks") => reply(200, String::new()),
        ("GET", "/sip/1001") if authorization.as_deref() == Some("Bearer crm-lookup-key") => {
            reply(200, json!({"password": PBX_PASSWORD}).to_string())
        }
        ("GET", "/sip/1001") => reply(401, String::new()),
        ("GET", "/sip/slow") => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            reply(200, json!({"password": PBX_PASSWORD}).to_string())
        }
        ("GET", "/sip/broken") => reply(500, String::new()),
        _ => reply(404, String::new()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_looked_up_over_https_from_a_crm_behind_a_private_ca() {
    let (ca_pem, tls) = private_ca();
    let (crm, seen) = https_crm(tls).await;
    let dir = temp_dir();
    let ca_file = dir.join("private-ca.pem");
    std::fs::write(&ca_file, &ca_pem).expect("write CA");
    let pbx = start_demo(Some(PBX_PASSWORD)).await;
    let mut settings = token_settings(pbx.sip_addr(), &dir);
    settings.auth.credentials_file = None;
    settings.auth.credentials_url = Some(format!(
        "https://127.0.0.1:{}/sip/{{extension}}",
        crm.port()
    ));
    settings.auth.credentials_bearer = Some("crm-lookup-key".into());
    settings.auth.credentials_timeout_ms = 1000;
    settings.http_client.extra_ca_file = Some(ca_file);
    settings.validate().expect("valid");
    let gateway = start_gateway(settings.clone()).await;

    let token = |sub: &str| hs256(&json!({"sub": sub, "exp": unix_now() + 120}), SECRET);
    let mut browser = login(&gateway, &token("1001")).await;
    assert!(register(&mut browser).await, "the looked-up password works");
    echo_call(&mut browser).await;
    {
        let seen = seen.lock().expect("lock");
        let lookup = seen.iter().find(|s| s.path == "/sip/1001").expect("asked");
        assert_eq!(lookup.method, "GET");
        assert_eq!(
            lookup.authorization.as_deref(),
            Some("Bearer crm-lookup-key")
        );
    }

    for (extension, code) in [
        ("9999", ErrorCode::AuthFailed),
        ("slow", ErrorCode::CredentialsUnavailable),
        ("broken", ErrorCode::CredentialsUnavailable),
    ] {
        let mut other = connect(&gateway).await;
        assert_eq!(
            token_hello(&mut other, Some(extension), &token(extension)).await,
            Err(code),
            "{extension}"
        );
    }

    // Without the private CA the CRM's certificate is not trusted: a clear error, no hang.
    settings.http_client.extra_ca_file = None;
    fresh_rtp_range(&mut settings);
    let untrusting = start_gateway(settings).await;
    let mut browser = connect(&untrusting).await;
    assert_eq!(
        token_hello(&mut browser, Some("1001"), &token("1001")).await,
        Err(ErrorCode::CredentialsUnavailable)
    );
    let (_, metrics) = http_get(untrusting.http_addr(), "/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            "callgate_auth_failures_total{reason=\"lookup_failed\"}"
        ),
        1.0
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_delivered_over_https() {
    let (ca_pem, tls) = private_ca();
    let (crm, seen) = https_crm(tls).await;
    let dir = temp_dir();
    let ca_file = dir.join("private-ca.pem");
    std::fs::write(&ca_file, &ca_pem).expect("write CA");
    let pbx = start_demo(None).await;
    let mut settings = test_settings(pbx.sip_addr());
    settings.webhooks.url = Some(format!("https://127.0.0.1:{}/hooks", crm.port()));
    settings.webhooks.secret = Some("hook-secret".into());
    settings.http_client.extra_ca_file = Some(ca_file);
    let gateway = start_gateway(settings).await;
    let mut browser = browser(&gateway).await;
    echo_call(&mut browser).await;
    let delivered = eventually(Duration::from_secs(10), || {
        seen.lock()
            .expect("lock")
            .iter()
            .filter(|s| s.path == "/hooks")
            .count()
            >= 3
    })
    .await;
    let hooks: Vec<serde_json::Value> = seen
        .lock()
        .expect("lock")
        .iter()
        .filter(|s| s.method == "POST" && s.path == "/hooks")
        .map(|s| serde_json::from_slice(&s.body).expect("JSON body"))
        .collect();
    assert!(delivered, "{hooks:?}");
    let kinds: Vec<&str> = hooks
        .iter()
        .map(|h| h["event"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(kinds, ["ringing", "answered", "ended"]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The `callgate` binary in token mode with debug logs: logins with good, expired and forged
/// tokens and a refused page password leave neither a token nor a SIP password in the logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_logs_no_token_and_no_password() {
    use std::io::Read;
    use std::process::{Command, Stdio};

    let dir = temp_dir();
    let credentials = credentials_file(&dir, &format!("\"1001\" = \"{PBX_PASSWORD}\"\n"));
    let sip_port = std::net::UdpSocket::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args([
            "demo",
            "--pbx-addr",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .args(["--webrtc-bind", "127.0.0.1:0", "--sip-listen"])
        .arg(format!("127.0.0.1:{sip_port}"))
        .args(["--rtp-port-min", "64000", "--rtp-port-max", "64199"])
        .args([
            "--log-format",
            "json",
            "--log-level",
            "debug,rsipstack=warn,str0m=info,is=info",
        ])
        .args(["--auth-password-mode", "false", "--auth-credentials-file"])
        .arg(&credentials)
        .env("CALLGATE_AUTH_TOKEN_SECRET", SECRET)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("callgate starts");
    let http = ready_http_addr(&mut child);
    let url = format!("ws://{http}/ws");

    let good = hs256(&json!({"sub": "1001", "exp": unix_now() + 120}), SECRET);
    let expired = hs256(&json!({"sub": "1001", "exp": unix_now() - 600}), SECRET);
    let forged = hs256(
        &json!({"sub": "1001", "exp": unix_now() + 120}),
        "forged-secret-forged-secret-forged-secret",
    );
    let mut browser = SimBrowser::connect(&url).await.expect("connects");
    token_hello(&mut browser, Some("1001"), &good)
        .await
        .expect("token login");
    assert!(register(&mut browser).await);
    // Refreshes, accepted and refused, leave no token in the logs either.
    let fresh = hs256(&json!({"sub": "1001", "exp": unix_now() + 180}), SECRET);
    for (token, accepted) in [(&fresh, true), (&forged, false)] {
        let message = ClientMessage::RefreshToken(signaling::RefreshTokenRequest {
            request_id: browser.next_request_id(),
            token: token.clone(),
        });
        let reply = browser.request(&message, "the refresh reply").await;
        assert_eq!(
            matches!(reply, Ok(ServerMessage::TokenRefreshed(_))),
            accepted,
            "{reply:?}"
        );
    }
    browser.close().await.expect("closed");
    for (token, code) in [
        (&expired, ErrorCode::TokenExpired),
        (&forged, ErrorCode::AuthFailed),
    ] {
        let mut browser = SimBrowser::connect(&url).await.expect("connects");
        assert_eq!(
            token_hello(&mut browser, Some("1001"), token).await,
            Err(code)
        );
    }
    let mut browser = SimBrowser::connect(&url).await.expect("connects");
    let refused = browser
        .hello("1001", "page-pa55-w0rd")
        .await
        .expect_err("password mode is off");
    assert_eq!(refused.code(), Some(ErrorCode::AuthModeDisabled));

    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = tokio::task::spawn_blocking(move || {
        let status = child.wait().expect("wait");
        let mut logs = String::new();
        child
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut logs)
            .expect("logs");
        (status, logs)
    });
    let (status, logs) = tokio::time::timeout(Duration::from_secs(10), status)
        .await
        .expect("callgate stops within 10 s of SIGTERM")
        .expect("joined");
    assert!(status.success(), "{status:?}");
    assert!(
        logs.contains("login refused"),
        "refusals are logged:\n{logs}"
    );
    assert!(logs.contains("token login"), "{logs}");
    assert!(logs.contains("session token refreshed"), "{logs}");
    assert!(logs.contains("token refresh refused"), "{logs}");
    for secret in [&good, &expired, &forged, &fresh] {
        let signature = secret.rsplit('.').next().expect("signature");
        assert!(!logs.contains(signature), "a token leaked into the logs");
    }
    for secret in [PBX_PASSWORD, "page-pa55-w0rd", SECRET] {
        assert!(!logs.contains(secret), "{secret} leaked into the logs");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
