//! Abuse limits and toll-fraud protection: WebSocket origin allow-list, connections per IP,
//! calls per minute, gateway-wide call cap, the dial plan, INVITEs from untrusted addresses,
//! and `/metrics` behind a bearer token. Each refusal has a clear code and is counted.

use std::collections::BTreeMap;
use std::time::Duration;

use loadtest::browser::SimBrowser;
use signaling::ErrorCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

/// A raw WebSocket upgrade with an Origin header; returns the HTTP status line.
async fn upgrade_with_origin(addr: std::net::SocketAddr, origin: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects");
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: {origin}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("sent");
    let mut buf = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf))
        .await
        .expect("answer")
        .expect("read");
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origins_and_connections_per_ip_are_limited() {
    let pbx = start_demo(None).await;
    let mut settings = test_settings(pbx.sip_addr());
    settings.limits.allowed_origins = vec!["https://crm.example".into()];
    settings.limits.max_connections_per_ip = 2;
    let gateway = start_gateway(settings).await;
    assert!(
        upgrade_with_origin(gateway.http_addr(), "https://evil.example")
            .await
            .contains("403")
    );
    assert!(
        upgrade_with_origin(gateway.http_addr(), "https://crm.example")
            .await
            .contains("101")
    );

    let mut settings = test_settings(pbx.sip_addr());
    settings.limits.max_connections_per_ip = 2;
    let gateway = start_gateway(settings).await;
    let first = SimBrowser::connect(&ws_url(&gateway)).await.expect("first");
    let second = SimBrowser::connect(&ws_url(&gateway))
        .await
        .expect("second");
    assert!(
        SimBrowser::connect(&ws_url(&gateway)).await.is_err(),
        "a third from the same IP is refused"
    );
    first.close().await.expect("closed");
    assert!(
        eventually_async(|| async { SimBrowser::connect(&ws_url(&gateway)).await.is_ok() }).await,
        "a slot frees when a socket closes"
    );
    drop(second);
    let (_, metrics) = http_get(gateway.http_addr(), "/metrics").await;
    assert!(
        metric(
            &metrics,
            "callgate_refused_connections_total{reason=\"per_ip\"}"
        ) >= 1.0,
        "{metrics}"
    );
}

async fn eventually_async<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..40 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_floods_caps_and_the_dial_plan_are_refused() {
    let pbx = start_demo(None).await;
    let mut settings = test_settings(pbx.sip_addr());
    settings.limits.calls_per_minute = 2;
    settings.limits.max_calls = 1;
    settings.dialplan.allow = vec!["echo|busy".into(), "1[0-9]{3}".into()];
    let gateway = start_gateway(settings).await;
    let mut browser = browser(&gateway).await;

    let refused = browser
        .call("+15551234567", BTreeMap::new())
        .await
        .err()
        .expect("not in the dial plan");
    assert_eq!(refused.code(), Some(ErrorCode::NumberNotAllowed));
    let first = browser
        .call("echo", BTreeMap::new())
        .await
        .expect("allowed");
    let mut other = browser_as(&gateway, "1002", "x").await;
    let capped = other
        .call("echo", BTreeMap::new())
        .await
        .err()
        .expect("the gateway-wide cap");
    assert_eq!(capped.code(), Some(ErrorCode::Overloaded));
    let id = first.call_id().to_string();
    browser.hangup(&id).await.expect("hangup");
    ended(&mut browser, &id).await;
    first.stop().await;
    let second = browser
        .call("busy", BTreeMap::new())
        .await
        .expect("second call this minute");
    ended(&mut browser, second.call_id()).await;
    second.stop().await;
    let flood = browser
        .call("echo", BTreeMap::new())
        .await
        .err()
        .expect("third call this minute");
    assert_eq!(flood.code(), Some(ErrorCode::RateLimited));

    let (_, metrics) = http_get(gateway.http_addr(), "/metrics").await;
    for code in ["number_not_allowed", "overloaded", "rate_limited"] {
        assert!(
            metric(
                &metrics,
                &format!("callgate_browser_errors_total{{code=\"{code}\"}}")
            ) >= 1.0,
            "{code}\n{metrics}"
        );
    }
    assert_eq!(pbx.active_calls(), 0, "no refused call reached the PBX");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invites_from_untrusted_addresses_are_forbidden_and_metrics_need_the_token() {
    let pbx = start_demo(None).await;
    let mut settings = test_settings(pbx.sip_addr());
    settings.sip.trusted_sources = vec!["127.0.0.2".parse().expect("ip")];
    settings.http.metrics_token = Some("scrape-secret".into());
    let gateway = start_gateway(settings).await;
    let text =
        raw_invite_final_response(gateway.sip_addr(), "1001-deadbeef", "attacker", "fraud").await;
    assert!(text.starts_with("SIP/2.0 403"), "{text}");
    let (status, _) = http_get(gateway.http_addr(), "/metrics").await;
    assert_eq!(status, 401);
    let mut stream = tokio::net::TcpStream::connect(gateway.http_addr())
        .await
        .expect("connects");
    let request = "GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer scrape-secret\r\nConnection: close\r\n\r\n".to_string();
    stream.write_all(request.as_bytes()).await.expect("sent");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    assert!(
        response.starts_with("HTTP/1.1 200") && response.contains("callgate_calls_active"),
        "{response}"
    );
    assert_eq!(
        metric(
            &response,
            "callgate_media_errors_total{kind=\"sip_untrusted_source\"}"
        ),
        1.0,
        "the refusal is counted\n{response}"
    );
}

/// Sends an out-of-dialog OPTIONS on `stream`; whether a 200 came back within 10 s.
async fn options_answered(stream: &mut tokio::net::TcpStream, sip: std::net::SocketAddr) -> bool {
    let local = stream.local_addr().expect("addr");
    let id = local.port();
    let options = format!(
        "OPTIONS sip:{sip};transport=tcp SIP/2.0\r\nVia: SIP/2.0/TCP {local};branch=z9hG4bKmon{id}\r\n\
         From: <sip:monitor@{local}>;tag=m{id}\r\nTo: <sip:{sip}>\r\nCall-ID: mon-{id}@test\r\n\
         CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    if stream.write_all(options.as_bytes()).await.is_err() {
        return false;
    }
    let mut received = Vec::new();
    let mut chunk = [0u8; 2048];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => received.extend_from_slice(&chunk[..n]),
            _ => return false,
        }
        if String::from_utf8_lossy(&received).contains("SIP/2.0 200") {
            return true;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sip_tcp_connections_from_untrusted_addresses_are_capped_but_the_pbxs_never_are() {
    use gateway::sip::tcp::MAX_UNTRUSTED_CONNECTIONS;
    let pbx = start_demo(None).await;
    let mut settings = test_settings(pbx.sip_addr());
    settings.sip.trusted_sources = vec!["127.0.0.2".parse().expect("ip")];
    let gateway = start_gateway(settings).await;
    let sip = gateway.sip_addr();

    // Strangers (127.0.0.1) fill the slots; the last one in is served.
    let mut held = Vec::new();
    for _ in 0..MAX_UNTRUSTED_CONNECTIONS {
        held.push(tokio::net::TcpStream::connect(sip).await.expect("connect"));
    }
    let last = held.last_mut().expect("held connections");
    assert!(
        options_answered(last, sip).await,
        "connection {MAX_UNTRUSTED_CONNECTIONS} is served"
    );

    // One more is closed at once.
    let mut extra = tokio::net::TcpStream::connect(sip).await.expect("connect");
    assert!(
        !options_answered(&mut extra, sip).await,
        "over the cap, a connection is closed"
    );

    // The PBX's address is never refused.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.2:0".parse().expect("addr"))
        .expect("bind 127.0.0.2");
    let mut trusted = socket.connect(sip).await.expect("connect");
    assert!(
        options_answered(&mut trusted, sip).await,
        "a trusted address is served"
    );

    // A stranger that leaves gives its slot back.
    drop(held.pop());
    let mut admitted = false;
    for _ in 0..50 {
        let mut again = tokio::net::TcpStream::connect(sip).await.expect("connect");
        if options_answered(&mut again, sip).await {
            admitted = true;
            held.push(again);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(admitted, "a freed slot is taken again");

    let (_, metrics) = http_get(gateway.http_addr(), "/metrics").await;
    assert!(
        metric(
            &metrics,
            "callgate_media_errors_total{kind=\"sip_tcp_refused\"}"
        ) >= 1.0,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_a_sip_tcp_connection_closes_it_and_harms_nobody() {
    let pbx = start_demo(None).await;
    let gateway = start_gateway(test_settings(pbx.sip_addr())).await;
    let sip = gateway.sip_addr();
    // Junk that breaks the framing, and a message that claims a body past the 64 KiB a
    // message may have and then sends more than that: each connection is closed unanswered.
    let oversized = [
        &b"SIP/2.0 999 Broken\r\nContent-Length: 99999999999\r\n\r\n"[..],
        &[b'X'; 70 * 1024][..],
    ]
    .concat();
    for junk in [
        &b"\x00\xff\x10 binary junk\r\n\r\n"[..],
        b"INVITE sip:x SIP/2.0\r\nContent-Length: banana\r\n\r\n",
        &oversized[..],
    ] {
        let mut stream = tokio::net::TcpStream::connect(sip).await.expect("connect");
        stream.write_all(junk).await.expect("sent");
        let mut reply = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut reply));
        assert!(read.await.is_ok(), "the connection is closed");
        let reply = String::from_utf8_lossy(&reply);
        assert!(!reply.contains("SIP/2.0"), "{reply}");
    }
    let mut fresh = tokio::net::TcpStream::connect(sip).await.expect("connect");
    assert!(
        options_answered(&mut fresh, sip).await,
        "the listener still serves"
    );
    prove_still_serving(&gateway).await;
}
