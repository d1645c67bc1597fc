//! Hostile and malformed input on every port: each gets a clear error (a JSON error code, a
//! SIP 400) and the gateway keeps serving the next call.

use std::collections::BTreeMap;
use std::time::Duration;

use loadtest::browser::{CallOptions, Codecs, SimBrowser};
use signaling::{ErrorCode, ServerMessage};
use tokio::net::UdpSocket;

use crate::support::*;

async fn expect_error(browser: &mut SimBrowser, code: ErrorCode) -> signaling::ErrorMessage {
    match browser.recv().await.expect("a reply") {
        ServerMessage::Error(e) => {
            assert_eq!(e.code, code, "{e:?}");
            assert!(!e.message.is_empty());
            e
        }
        other => panic!("expected error {code}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_protocol_messages_get_precise_error_codes() {
    let pbx = start_demo(None).await;
    let gateway = start_gateway(test_settings(pbx.sip_addr())).await;
    let mut raw = SimBrowser::connect(&ws_url(&gateway))
        .await
        .expect("connects");
    raw.set_timeout(Duration::from_secs(5));

    raw.send_raw("{not json").await.expect("sent");
    expect_error(&mut raw, ErrorCode::BadJson).await;
    raw.send_raw(r#"{"type":"teleport","request_id":7}"#)
        .await
        .expect("sent");
    assert_eq!(
        expect_error(&mut raw, ErrorCode::UnknownType)
            .await
            .request_id,
        Some(7)
    );
    raw.send_raw(r#"{"type":"call","request_id":8,"to":"echo","sdp":"v=0"}"#)
        .await
        .expect("sent");
    assert_eq!(
        expect_error(&mut raw, ErrorCode::NotAuthenticated)
            .await
            .request_id,
        Some(8)
    );
    raw.send_raw(r#"{"type":"hangup","request_id":9}"#)
        .await
        .expect("sent");
    expect_error(&mut raw, ErrorCode::InvalidMessage).await;
    raw.send_binary(vec![1, 2, 3]).await.expect("sent");
    expect_error(&mut raw, ErrorCode::BinaryNotSupported).await;
    raw.send_raw(&format!(
        r#"{{"type":"ping","request_id":1,"x":"{}"}}"#,
        "a".repeat(70_000)
    ))
    .await
    .expect("sent");
    expect_error(&mut raw, ErrorCode::MessageTooLarge).await;
    raw.send_raw(
        r#"{"type":"hello","request_id":10,"protocol":2,"auth":{"mode":"sip_credentials","extension":"1001","password":"x"}}"#,
    )
    .await
    .expect("sent");
    expect_error(&mut raw, ErrorCode::UnsupportedProtocol).await;
    raw.send_raw(
        r#"{"type":"hello","request_id":11,"protocol":1,"auth":{"mode":"sip_credentials","extension":"10 01","password":"x"}}"#,
    )
    .await
    .expect("sent");
    expect_error(&mut raw, ErrorCode::AuthFailed).await;

    // A proper session: second hello, bad numbers, headers and SDP, unknown calls.
    let mut browser = browser(&gateway).await;
    browser.set_timeout(Duration::from_secs(5));
    browser
        .send_raw(r#"{"type":"hello","request_id":50,"protocol":1,"auth":{"mode":"sip_credentials","extension":"1001","password":"x"}}"#)
        .await
        .expect("sent");
    expect_error(&mut browser, ErrorCode::AlreadyAuthenticated).await;
    for (to, headers, code) in [
        ("", "{}", ErrorCode::InvalidNumber),
        ("1002@evil.example", "{}", ErrorCode::InvalidNumber),
        (
            "echo",
            r#"{"Via":"SIP/2.0/UDP 6.6.6.6"}"#,
            ErrorCode::InvalidHeader,
        ),
        (
            "echo",
            r#"{"X-Ok":"line\r\nInjected: yes"}"#,
            ErrorCode::InvalidHeader,
        ),
    ] {
        let text = format!(
            r#"{{"type":"call","request_id":51,"to":"{to}","sdp":"v=0\r\n","headers":{headers}}}"#
        );
        browser.send_raw(&text).await.expect("sent");
        expect_error(&mut browser, code).await;
    }
    let no_audio =
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n";
    let text =
        serde_json::json!({"type":"call","request_id":52,"to":"echo","sdp":no_audio}).to_string();
    browser.send_raw(&text).await.expect("sent");
    expect_error(&mut browser, ErrorCode::InvalidSdp).await;
    let text =
        serde_json::json!({"type":"call","request_id":53,"to":"echo","sdp":"garbage"}).to_string();
    browser.send_raw(&text).await.expect("sent");
    expect_error(&mut browser, ErrorCode::InvalidSdp).await;
    let opus_only = CallOptions {
        codecs: Codecs::OpusOnly,
        ..CallOptions::default()
    };
    let refused = browser
        .call_with("echo", opus_only)
        .await
        .err()
        .expect("an offer without G.711 is refused");
    assert_eq!(
        refused.code(),
        Some(ErrorCode::NoCommonCodec),
        "{refused:?}"
    );
    browser
        .send_raw(r#"{"type":"hangup","request_id":54,"call_id":"c-nope"}"#)
        .await
        .expect("sent");
    expect_error(&mut browser, ErrorCode::UnknownCall).await;

    let (_, metrics) = http_get(gateway.http_addr(), "/metrics").await;
    assert!(
        metric(&metrics, "callgate_browser_errors_total{code=\"bad_json\"}") >= 1.0,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "callgate_calls_active"),
        0.0,
        "refused calls leave nothing behind"
    );
    assert_no_leftovers(&gateway).await;
    prove_still_serving(&gateway).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_calls_per_agent_is_refused() {
    let pbx = start_demo(None).await;
    let mut settings = test_settings(pbx.sip_addr());
    settings.calls.max_per_agent = 1;
    let gateway = start_gateway(settings).await;
    let mut browser = browser(&gateway).await;
    let first = browser
        .call("echo", BTreeMap::new())
        .await
        .expect("first call");
    let second = browser
        .call("echo", BTreeMap::new())
        .await
        .err()
        .expect("second call refused");
    assert_eq!(second.code(), Some(ErrorCode::TooManyCalls));
    let id = first.call_id().to_string();
    browser.hangup(&id).await.expect("hangup");
    ended(&mut browser, &id).await;
    first.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_media_and_sip_ports_is_answered_or_dropped_without_harm() {
    let pbx = start_demo(None).await;
    let gateway = start_gateway(test_settings(pbx.sip_addr())).await;
    let media_port = gateway.services().media.candidate(0);
    let sip_port = gateway.sip_addr();
    let attacker = UdpSocket::bind("127.0.0.1:0").await.expect("bind");

    // Media port: every kind of datagram STUN/DTLS/RTP demux could trip on.
    let mut seed = 0x2545_f491_u32;
    for i in 0..2_000u32 {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let len = (seed % 300) as usize;
        let mut datagram: Vec<u8> = (0..len)
            .map(|j| (seed.wrapping_mul(j as u32 + 1) >> 7) as u8)
            .collect();
        if let Some(first) = datagram.first_mut() {
            *first = [0u8, 1, 22, 0x80, 0x90, 200][(i % 6) as usize];
        }
        attacker.send_to(&datagram, media_port).await.expect("sent");
        if i % 50 == 49 {
            // Paced, so the count below measures callgate and not the kernel's receive
            // buffer on a busy machine.
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    }
    // A STUN binding request naming an unknown ufrag.
    let mut stun = vec![0, 1, 0, 12, 0x21, 0x12, 0xa4, 0x42];
    stun.extend_from_slice(&[9; 12]);
    stun.extend_from_slice(&[0, 6, 0, 7]);
    stun.extend_from_slice(b"nobody:x\0");
    attacker
        .send_to(&stun[..32], media_port)
        .await
        .expect("sent");

    // SIP port: a malformed request must get a 400 with our Via copied.
    let malformed = "OPTIONS sip:callgate@127.0.0.1 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKtorture1\r\nTo: <sip:callgate@127.0.0.1>\r\n\
        From: <sip:t@127.0.0.1>;tag=1\r\nCall-ID: torture-1\r\nCSeq: nine OPTIONS\r\n\
        Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
    attacker
        .send_to(malformed.as_bytes(), sip_port)
        .await
        .expect("sent");
    let mut buf = vec![0u8; 2048];
    let (n, _) = tokio::time::timeout(Duration::from_secs(3), attacker.recv_from(&mut buf))
        .await
        .expect("a reply to the malformed request")
        .expect("recv");
    let reply = String::from_utf8_lossy(&buf[..n]);
    assert!(reply.starts_with("SIP/2.0 400 Bad Request"), "{reply}");
    assert!(
        reply.contains("branch=z9hG4bKtorture1") && reply.contains("Call-ID: torture-1"),
        "{reply}"
    );
    for junk in [
        &b"\x00\xff\x10 binary junk"[..],
        b"SIP/2.0 999 Broken\r\n",
        b"INVITE\r\n\r\n",
    ] {
        attacker.send_to(junk, sip_port).await.expect("sent");
    }
    // A well-formed OPTIONS still gets 200.
    let options = malformed
        .replace("CSeq: nine OPTIONS", "CSeq: 9 OPTIONS")
        .replace("torture1", "torture2");
    attacker
        .send_to(options.as_bytes(), sip_port)
        .await
        .expect("sent");
    let (n, _) = tokio::time::timeout(Duration::from_secs(3), attacker.recv_from(&mut buf))
        .await
        .expect("a reply to OPTIONS")
        .expect("recv");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("SIP/2.0 200"));

    prove_still_serving(&gateway).await;
    let (_, metrics) = http_get(gateway.http_addr(), "/metrics").await;
    assert!(
        metric(
            &metrics,
            "callgate_media_errors_total{kind=\"sip_malformed\"}"
        ) >= 3.0,
        "{metrics}"
    );
    let media_drops = metric(
        &metrics,
        "callgate_media_errors_total{kind=\"unknown_packet\"}",
    ) + metric(
        &metrics,
        "callgate_media_errors_total{kind=\"unknown_source\"}",
    );
    assert!(
        media_drops >= 1_500.0,
        "garbage counted: {media_drops}\n{metrics}"
    );
    let (status, _) = http_get(gateway.http_addr(), "/healthz").await;
    assert_eq!(status, 200);
}

/// Opens a WebSocket by hand on a raw TCP stream (so the test controls every byte).
async fn raw_websocket(gateway: &gateway::app::Gateway) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = gateway.http_addr();
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects");
    let upgrade = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream
        .write_all(upgrade.as_bytes())
        .await
        .expect("upgrade sent");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte))
            .await
            .expect("the upgrade is answered")
            .expect("read");
        assert!(n == 1, "the upgrade response is complete");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stream
}

/// Reads until the server closes the connection (EOF or reset), within `limit`.
async fn closed_within(stream: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    read_until_closed(stream, limit).await.is_some()
}

/// Everything the server sends until it closes the connection; `None` if it stays open
/// beyond `limit`.
async fn read_until_closed(stream: &mut tokio::net::TcpStream, limit: Duration) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 512];
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_frame_before_hello_is_cut_off_and_does_not_hold_anyone_else_up() {
    use tokio::io::AsyncWriteExt;
    let pbx = start_demo(None).await;
    let gateway = start_gateway(test_settings(pbx.sip_addr())).await;
    let mut slow = raw_websocket(&gateway).await;
    // A masked text frame announcing 1,000 bytes, then one byte every 200 ms (slowloris).
    let mut header = vec![0x81, 0x80 | 126, 0x03, 0xe8];
    header.extend_from_slice(&[0x11, 0x22, 0x33, 0x44]);
    slow.write_all(&header).await.expect("header sent");
    let trickle = async {
        for _ in 0..100 {
            if slow.write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let meanwhile = async {
        // Other agents are served normally while the slow frame trickles in.
        prove_still_serving(&gateway).await;
    };
    tokio::join!(trickle, meanwhile);
    assert!(
        closed_within(&mut slow, Duration::from_secs(3)).await,
        "the hello timeout (10 s) closed the slow connection"
    );
    assert!(
        eventually(Duration::from_secs(3), || gateway
            .services()
            .connections
            .lock()
            .map(|open| open.is_empty())
            .unwrap_or(false))
        .await,
        "its per-IP slot is released"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_that_never_says_hello_is_closed_with_not_authenticated() {
    let pbx = start_demo(None).await;
    let gateway = start_gateway(test_settings(pbx.sip_addr())).await;
    let mut idle = raw_websocket(&gateway).await;
    let said = read_until_closed(&mut idle, Duration::from_secs(13))
        .await
        .expect("closed after the 10 s hello timeout");
    let text = String::from_utf8_lossy(&said);
    assert!(text.contains("\"not_authenticated\""), "{text}");
}
