//! The simulated browser against the fake gateway: signaling, ICE-lite, DTLS-SRTP, echo.

use std::collections::BTreeMap;
use std::time::Duration;

use loadtest::{CallEvent, CallOptions, Codecs, Error, G711, MediaEnd, SimBrowser};
use serde_json::json;
use signaling::ErrorCode;

use crate::fake_gateway::{Echo, FakeGateway};

const CONNECT: Duration = Duration::from_secs(10);
const FRAMES: Duration = Duration::from_secs(10);

async fn browser(gateway: &FakeGateway) -> SimBrowser {
    let mut browser = SimBrowser::connect(&gateway.ws_url).await.unwrap();
    let welcome = browser.hello("1001", "secret").await.unwrap();
    assert_eq!(welcome.protocol, signaling::PROTOCOL_VERSION);
    browser
}

/// The m=audio payload-type list and the codec names in `a=rtpmap` lines.
fn audio_formats(sdp: &str) -> (String, Vec<String>) {
    let m_line = sdp
        .lines()
        .find(|l| l.starts_with("m=audio"))
        .unwrap_or_default();
    let pts = m_line.split(' ').skip(3).collect::<Vec<_>>().join(" ");
    let rtpmaps = sdp
        .lines()
        .filter_map(|l| l.strip_prefix("a=rtpmap:"))
        .map(str::to_owned)
        .collect();
    (pts, rtpmaps)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn g711_call_connects_echoes_100_frames_and_hangs_up() {
    let mut gateway = FakeGateway::start().await.unwrap();
    let mut browser = browser(&gateway).await;
    let headers = BTreeMap::from([("X-Test".to_owned(), "echo-100".to_owned())]);
    let options = CallOptions {
        headers,
        frame_limit: Some(100),
        ..CallOptions::default()
    };
    let call = browser.call_with("echo", options).await.unwrap();
    assert_eq!(call.codec(), Some(G711::Pcmu));
    assert!(call.answer_sdp().contains("a=ice-lite"));

    let sent = gateway.next_frame_of("call").await.unwrap();
    assert_eq!(sent["to"], "echo");
    assert_eq!(sent["headers"], json!({"X-Test": "echo-100"}));
    assert_eq!(sent["sdp"], call.offer_sdp());

    assert!(
        matches!(browser.next_event().await.unwrap(), CallEvent::Ringing(r) if r.sip_status == 180)
    );
    assert!(matches!(
        browser.next_event().await.unwrap(),
        CallEvent::Answered(_)
    ));

    let setup = call.wait_connected(CONNECT).await.unwrap();
    assert!(setup < CONNECT);
    call.wait_for(FRAMES, "100 frames sent", |s| s.frames_sent == 100)
        .await
        .unwrap();
    // Give the last echoes a moment; ≥ 95 must be back, all of them intact.
    let stats = call
        .wait_for(Duration::from_secs(2), "100 echoes", |s| {
            s.frames_received == 100
        })
        .await
        .unwrap_or_else(|_| call.stats());
    assert_eq!(stats.frames_sent, 100, "{stats:?}");
    assert!(stats.frames_received >= 95, "{stats:?}");
    assert_eq!(stats.corrupted, 0, "{stats:?}");
    assert_eq!(stats.foreign, 0, "{stats:?}");
    assert_eq!(stats.duplicates, 0, "{stats:?}");
    assert_eq!(stats.rtt.count(), stats.frames_received);
    let p50 = stats.rtt_p50().unwrap();
    let p99 = stats.rtt_p99().unwrap();
    assert!(p50 <= p99 && p99 < Duration::from_millis(500), "{stats:?}");
    assert!(stats.connected_at.is_some());

    let call_id = call.call_id().to_owned();
    let ack = browser.hangup(&call_id).await.unwrap();
    let hangup = gateway.next_frame_of("hangup").await.unwrap();
    assert_eq!(
        hangup,
        json!({"type": "hangup", "request_id": ack.request_id, "call_id": call_id})
    );
    match browser.next_event_for(&call_id).await.unwrap() {
        CallEvent::Ended(ended) => assert_eq!(ended.ended_by, signaling::EndedBy::Agent),
        other => panic!("expected call_ended, got {other:?}"),
    }

    // The gateway closed its peer (DTLS close_notify): our media task notices by itself.
    let ended = call
        .wait_for(Duration::from_secs(5), "media end", |s| s.ended.is_some())
        .await
        .unwrap();
    assert_eq!(ended.ended, Some(MediaEnd::RemoteClosed));
    browser.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_offer_lists_only_g711_and_telephone_event() {
    let gateway = FakeGateway::start().await.unwrap();
    let mut browser = browser(&gateway).await;
    let call = browser.call("echo", BTreeMap::new()).await.unwrap();
    let (pts, rtpmaps) = audio_formats(call.offer_sdp());
    assert_eq!(pts, "0 8 126");
    assert_eq!(
        rtpmaps,
        ["0 PCMU/8000", "8 PCMA/8000", "126 telephone-event/8000"]
    );
    assert!(call.offer_sdp().contains("a=sendrecv"));
    assert!(call.offer_sdp().contains("a=setup:actpass"));
    assert!(call.offer_sdp().contains("a=candidate:"));
    assert!(!call.offer_sdp().contains("a=ice-lite"));
    let stats = call.stop().await;
    assert_eq!(stats.ended, Some(MediaEnd::Stopped));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opus_only_offer_carries_no_g711_and_is_refused() {
    let mut gateway = FakeGateway::start().await.unwrap();
    let mut browser = browser(&gateway).await;
    let refused = browser
        .call_with_codecs("echo", BTreeMap::new(), Codecs::OpusOnly)
        .await
        .err()
        .unwrap();
    assert_eq!(refused.code(), Some(ErrorCode::NoCommonCodec), "{refused}");

    let sent = gateway.next_frame_of("call").await.unwrap();
    let sdp = sent["sdp"].as_str().unwrap();
    let (pts, rtpmaps) = audio_formats(sdp);
    assert_eq!(pts, "111");
    assert_eq!(rtpmaps, ["111 opus/48000/2"]);
    assert!(!sdp.contains("PCMU") && !sdp.contains("PCMA"));
    // The session survives a refused call.
    browser.ping().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_like_offer_puts_opus_first_but_sends_g711() {
    let gateway = FakeGateway::start().await.unwrap();
    let mut browser = browser(&gateway).await;
    let call = browser
        .call_with_codecs("echo", BTreeMap::new(), Codecs::BrowserLike)
        .await
        .unwrap();
    let (pts, _) = audio_formats(call.offer_sdp());
    assert_eq!(pts, "111 0 8 110 126");
    assert_eq!(call.codec(), Some(G711::Pcmu));
    call.wait_connected(CONNECT).await.unwrap();
    let stats = call.wait_frames(20, FRAMES).await.unwrap();
    assert_eq!(stats.corrupted, 0);
    assert_eq!(stats.other_payload, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pcma_only_offer_sends_payload_type_8() {
    let gateway = FakeGateway::start().await.unwrap();
    let mut browser = browser(&gateway).await;
    let call = browser
        .call_with_codecs("echo", BTreeMap::new(), Codecs::PcmaOnly)
        .await
        .unwrap();
    assert_eq!(audio_formats(call.offer_sdp()).0, "8 126");
    assert_eq!(call.codec(), Some(G711::Pcma));
    call.wait_connected(CONNECT).await.unwrap();
    let stats = call.wait_frames(20, FRAMES).await.unwrap();
    assert_eq!(stats.corrupted + stats.foreign, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtmf_digits_reach_the_far_end_as_rfc4733() {
    let mut gateway = FakeGateway::start().await.unwrap();
    let mut browser = browser(&gateway).await;
    let call = browser.call("echo", BTreeMap::new()).await.unwrap();
    call.wait_connected(CONNECT).await.unwrap();
    assert!(matches!(
        call.send_dtmf('x').await,
        Err(Error::InvalidDigit('x'))
    ));
    for digit in ['5', '#', 'A'] {
        call.send_dtmf(digit).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut got = String::new();
    while got.len() < 3 {
        let next = tokio::time::timeout(Duration::from_secs(5), gateway.dtmf.recv()).await;
        let (call_id, digit) = next.unwrap().unwrap();
        assert_eq!(call_id, call.call_id());
        got.push(digit);
    }
    assert_eq!(got, "5#A");
    assert_eq!(call.stats().dtmf_sent, 3);
    // Audio kept flowing, untouched, around the tones.
    let stats = call.stats();
    assert!(
        stats.frames_received > 0 && stats.corrupted == 0,
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_frames_and_refusals_surface_as_errors() {
    let gateway = FakeGateway::start().await.unwrap();
    let mut browser = SimBrowser::connect(&gateway.ws_url).await.unwrap();

    let refused = browser.call("echo", BTreeMap::new()).await.err().unwrap();
    assert_eq!(refused.code(), Some(ErrorCode::NotAuthenticated));
    let refused = browser.hello("1001", "").await.err().unwrap();
    assert_eq!(refused.code(), Some(ErrorCode::AuthFailed));

    browser.send_raw("this is not json").await.unwrap();
    match browser.recv().await.unwrap() {
        signaling::ServerMessage::Error(e) => assert_eq!(e.code, ErrorCode::BadJson),
        other => panic!("expected an error, got {other:?}"),
    }
    browser.send_binary(vec![1, 2, 3]).await.unwrap();
    match browser.recv().await.unwrap() {
        signaling::ServerMessage::Error(e) => assert_eq!(e.code, ErrorCode::BinaryNotSupported),
        other => panic!("expected an error, got {other:?}"),
    }
    let silent = browser.recv_timeout(Duration::from_millis(100)).await;
    assert!(matches!(silent, Err(Error::Timeout { .. })), "{silent:?}");

    browser.hello("1001", "secret").await.unwrap();
    let unknown = browser.hangup("c-nope").await.err().unwrap();
    assert_eq!(unknown.code(), Some(ErrorCode::UnknownCall));

    browser.send_close(1000, "bye").await.unwrap();
    let closed = browser.recv().await;
    assert!(matches!(closed, Err(Error::Closed { .. })), "{closed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twelve_calls_share_the_gateway_port() {
    let gateway = FakeGateway::start().await.unwrap();
    let mut calls = Vec::new();
    let mut browsers = Vec::new();
    for _ in 0..3 {
        let mut b = browser(&gateway).await;
        for _ in 0..4 {
            let options = CallOptions {
                frame_limit: Some(50),
                ..CallOptions::default()
            };
            calls.push(b.call_with("echo", options).await.unwrap());
        }
        browsers.push(b);
    }
    let ports: std::collections::HashSet<_> = calls.iter().map(|c| c.local_addr()).collect();
    assert_eq!(ports.len(), 12);
    for call in &calls {
        let stats = call.wait_frames(45, FRAMES).await.unwrap();
        assert_eq!(
            stats.corrupted + stats.foreign + stats.duplicates,
            0,
            "{stats:?}"
        );
    }
    for call in calls {
        let stats = call.stop().await;
        assert!(stats.frames_sent <= 50);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_echoes_are_counted_not_trusted() {
    let gateway = FakeGateway::start_with(Echo::CorruptEvery(10))
        .await
        .unwrap();
    let mut browser = browser(&gateway).await;
    let options = CallOptions {
        frame_limit: Some(50),
        ..CallOptions::default()
    };
    let call = browser.call_with("echo", options).await.unwrap();
    let stats = call
        .wait_for(FRAMES, "50 echoes judged", |s| {
            s.frames_received + s.corrupted >= 50
        })
        .await
        .unwrap();
    assert_eq!(stats.corrupted, 5, "{stats:?}");
    assert_eq!(stats.frames_received, 45, "{stats:?}");
    assert_eq!(stats.rtt.count(), 45);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doubled_echoes_are_counted_as_duplicates() {
    let gateway = FakeGateway::start_with(Echo::Twice).await.unwrap();
    let mut browser = browser(&gateway).await;
    let options = CallOptions {
        frame_limit: Some(30),
        ..CallOptions::default()
    };
    let call = browser.call_with("echo", options).await.unwrap();
    let stats = call
        .wait_for(FRAMES, "30 duplicates", |s| s.duplicates >= 30)
        .await
        .unwrap();
    assert_eq!(stats.frames_received, 30, "{stats:?}");
    assert_eq!(stats.corrupted, 0, "{stats:?}");
}
