//! Sessions that survive a dropped WebSocket or a page reload: the SIP dialog, the PBX's
//! media leg and the registration stay up for `calls.resume_grace`; a browser presenting the
//! welcome's `resume_token` takes the session over and renegotiates each call's audio with a
//! new peer connection. Real sockets: the demo PBX (which echoes audio), the simulated
//! browser (full ICE + DTLS-SRTP).

use std::collections::BTreeMap;
use std::time::Duration;

use gateway::app::Gateway;
use loadtest::browser::{CallEvent, CallOptions, Codecs, SimBrowser};
use signaling::{
    CallDirection, ClientMessage, EndedBy, ErrorCode, ResumedCallState, ServerMessage, Welcome,
};

use crate::support::*;

async fn resumable_gateway(pbx: &gateway::demo::DemoPbx, grace: Duration) -> Gateway {
    let mut settings = test_settings(pbx.sip_addr());
    settings.calls.resume_grace = grace;
    settings.http.node_id = Some("node-a".into());
    start_gateway(settings).await
}

async fn open(gateway: &Gateway, password: &str, token: Option<&str>) -> (SimBrowser, Welcome) {
    let mut browser = SimBrowser::connect(&ws_url(gateway))
        .await
        .expect("WebSocket connects");
    browser.set_timeout(Duration::from_secs(10));
    let welcome = browser
        .hello_resuming("1001", password, token)
        .await
        .expect("welcome");
    (browser, welcome)
}

async fn register(browser: &mut SimBrowser) {
    let outcome = register_outcome(browser).await;
    assert!(
        matches!(outcome, ServerMessage::Registered(_)),
        "{outcome:?}"
    );
}

/// An answered echo call with audio flowing.
async fn answered_echo_call(browser: &mut SimBrowser) -> loadtest::browser::SimCall {
    let call = answered_call(browser, "echo")
        .await
        .unwrap_or_else(|e| panic!("echo ended: {e:?}"));
    let stats = call
        .wait_frames(50, Duration::from_secs(10))
        .await
        .expect("audio comes back");
    assert_eq!(stats.corrupted, 0, "{stats:?}");
    call
}

async fn metrics_value(gateway: &Gateway, name: &str) -> f64 {
    let (_, text) = http_get(gateway.http_addr(), "/metrics").await;
    metric(&text, name)
}

async fn wait_metric(gateway: &Gateway, name: &str, value: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let now = metrics_value(gateway, name).await;
        if now == value {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} is {now}, expected {value}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answered_call_and_the_registration_survive_a_dropped_websocket() {
    let pbx = start_demo(Some("secret")).await;
    let gateway = resumable_gateway(&pbx, Duration::from_secs(20)).await;
    let (mut browser, welcome) = open(&gateway, "secret", None).await;
    let token = welcome.resume_token.expect("a resume token");
    assert!(token.starts_with("node-a."), "{token}");
    assert_eq!(welcome.node.as_deref(), Some("node-a"));
    assert!(welcome.resumed.is_none());
    register(&mut browser).await;
    let call = answered_echo_call(&mut browser).await;
    let call_id = call.call_id().to_string();

    // The page goes away mid-call (no close frame, like a lost network).
    call.stop_sending().await.expect("stop sending");
    drop(call);
    drop(browser);
    wait_metric(&gateway, "callgate_sessions_detached", 1.0).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(pbx.active_calls(), 1, "the PBX leg stays up");
    assert_eq!(pbx.registrations().len(), 1, "the binding stays");
    assert_eq!(
        metrics_value(&gateway, "callgate_ws_connections").await,
        0.0
    );

    // The reloaded page resumes: same call, same registration, a new token.
    let (mut browser, welcome) = open(&gateway, "secret", Some(&token)).await;
    let resumed = welcome.resumed.expect("the session was resumed");
    assert!(resumed.registered);
    assert_eq!(resumed.calls.len(), 1, "{resumed:?}");
    let kept = &resumed.calls[0];
    assert_eq!(kept.call_id, call_id);
    assert_eq!(kept.direction, CallDirection::Outbound);
    assert_eq!(kept.state, ResumedCallState::Answered);
    assert_eq!(kept.peer, "echo");
    assert!(kept.call_uuid.is_some());
    let new_token = welcome.resume_token.expect("a fresh token");
    assert_ne!(new_token, token, "tokens rotate on every welcome");
    wait_metric(&gateway, "callgate_sessions_detached", 0.0).await;

    // A new peer connection: audio flows both ways again, every frame intact.
    let call = browser
        .renegotiate(&call_id, CallOptions::default())
        .await
        .expect("renegotiated");
    call.wait_connected(Duration::from_secs(5))
        .await
        .expect("the new leg connects");
    let stats = call
        .wait_frames(100, Duration::from_secs(10))
        .await
        .expect("audio comes back on the new leg");
    assert_eq!((stats.corrupted, stats.foreign), (0, 0), "{stats:?}");

    // The old token is spent.
    assert_eq!(
        metrics_value(
            &gateway,
            "callgate_session_resumes_total{outcome=\"resumed\"}"
        )
        .await,
        1.0
    );
    browser.hangup(&call_id).await.expect("hangup");
    let end = ended(&mut browser, &call_id).await;
    assert_eq!(
        (end.ended_by, end.cause.as_str(), end.answered),
        (EndedBy::Agent, "normal_clearing", true)
    );
    call.stop().await;
    assert_no_leftovers(&gateway).await;
    browser.send_close(1000, "logout").await.expect("close");
    assert!(
        eventually(Duration::from_secs(3), || pbx.registrations().is_empty()).await,
        "a normal close unregisters at once"
    );
    assert!(
        eventually(Duration::from_secs(3), || gateway
            .services()
            .resumable
            .is_empty())
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_not_resumed_in_time_ends_its_calls_and_its_token() {
    let pbx = start_demo(Some("secret")).await;
    let gateway = resumable_gateway(&pbx, Duration::from_secs(1)).await;
    let (mut browser, welcome) = open(&gateway, "secret", None).await;
    let token = welcome.resume_token.expect("token");
    register(&mut browser).await;
    let call = answered_echo_call(&mut browser).await;
    // A reload's close code: kept, not ended.
    browser.send_close(1001, "going away").await.expect("close");
    drop(call);
    drop(browser);
    wait_metric(&gateway, "callgate_sessions_detached", 1.0).await;
    assert!(
        eventually(Duration::from_secs(5), || pbx.active_calls() == 0).await,
        "BYE after the grace period"
    );
    assert!(
        eventually(Duration::from_secs(3), || pbx.registrations().is_empty()).await,
        "unregistered after the grace period"
    );
    wait_metric(
        &gateway,
        "callgate_session_resumes_total{outcome=\"expired\"}",
        1.0,
    )
    .await;
    assert_eq!(
        metrics_value(&gateway, "callgate_sessions_detached").await,
        0.0
    );
    assert_no_leftovers(&gateway).await;

    // The token is gone: a fresh session opens, saying nothing was resumed.
    let (_browser, welcome) = open(&gateway, "secret", Some(&token)).await;
    assert!(welcome.resumed.is_none());
    assert_eq!(
        metrics_value(
            &gateway,
            "callgate_session_resumes_total{outcome=\"unknown\"}"
        )
        .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_with_other_credentials_is_refused_and_a_normal_close_is_final() {
    let pbx = start_demo(None).await;
    let gateway = resumable_gateway(&pbx, Duration::from_secs(20)).await;
    let (mut browser, welcome) = open(&gateway, "secret", None).await;
    let token = welcome.resume_token.expect("token");
    let call = answered_echo_call(&mut browser).await;
    let call_id = call.call_id().to_string();
    call.stop_sending().await.expect("stop");
    drop(call);
    drop(browser);
    wait_metric(&gateway, "callgate_sessions_detached", 1.0).await;

    // A stolen token with a guessed password opens an empty session of its own.
    let (intruder, welcome) = open(&gateway, "guess", Some(&token)).await;
    assert!(welcome.resumed.is_none());
    assert_eq!(
        metrics_value(
            &gateway,
            "callgate_session_resumes_total{outcome=\"refused\"}"
        )
        .await,
        1.0
    );
    drop(intruder);
    assert_eq!(pbx.active_calls(), 1, "the kept call is untouched");

    // The agent comes back, then logs out with a normal close: the call ends at once.
    let (mut browser, welcome) = open(&gateway, "secret", Some(&token)).await;
    let resumed = welcome.resumed.expect("resumed");
    assert_eq!(resumed.calls[0].call_id, call_id);
    assert!(!resumed.registered);
    browser.send_close(1000, "logout").await.expect("close");
    assert!(
        eventually(Duration::from_secs(3), || pbx.active_calls() == 0).await,
        "BYE at once on a normal close"
    );
    assert_no_leftovers(&gateway).await;
    assert_eq!(
        metrics_value(&gateway, "callgate_sessions_detached").await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_connection_takes_over_a_session_whose_socket_still_looks_open() {
    let pbx = start_demo(None).await;
    let gateway = resumable_gateway(&pbx, Duration::from_secs(20)).await;
    let (mut old, welcome) = open(&gateway, "secret", None).await;
    let token = welcome.resume_token.expect("token");
    let call = answered_echo_call(&mut old).await;
    let call_id = call.call_id().to_string();
    call.stop_sending().await.expect("stop");

    // The laptop switched networks: the old socket is not yet known dead.
    let (mut browser, welcome) = open(&gateway, "secret", Some(&token)).await;
    assert_eq!(welcome.resumed.expect("resumed").calls[0].call_id, call_id);
    match old.recv().await {
        Err(loadtest::Error::Closed { .. }) => {}
        other => panic!("the replaced socket is closed, got {other:?}"),
    }
    drop(call);
    let call = browser
        .renegotiate(&call_id, CallOptions::default())
        .await
        .expect("renegotiated");
    let stats = call
        .wait_frames(50, Duration::from_secs(10))
        .await
        .expect("audio on the new leg");
    assert_eq!(stats.corrupted, 0);
    browser.hangup(&call_id).await.expect("hangup");
    ended(&mut browser, &call_id).await;
    call.stop().await;
    assert_no_leftovers(&gateway).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_call_ringing_during_a_reload_is_offered_again_and_answered() {
    let pbx = start_demo(Some("secret")).await;
    let gateway = resumable_gateway(&pbx, Duration::from_secs(20)).await;
    let (mut browser, welcome) = open(&gateway, "secret", None).await;
    let token = welcome.resume_token.expect("token");
    register(&mut browser).await;
    let trigger = browser
        .call("callback", BTreeMap::new())
        .await
        .expect("callback call");
    ended(&mut browser, trigger.call_id()).await;
    trigger.stop().await;
    let incoming = browser.next_incoming().await.expect("the PBX calls back");
    drop(browser);

    let (mut browser, welcome) = open(&gateway, "secret", Some(&token)).await;
    let resumed = welcome.resumed.expect("resumed");
    assert_eq!(resumed.calls.len(), 1, "{resumed:?}");
    assert_eq!(resumed.calls[0].direction, CallDirection::Inbound);
    assert_eq!(resumed.calls[0].state, ResumedCallState::Incoming);
    let again = browser.next_incoming().await.expect("offered again");
    assert_eq!(again.call_id, incoming.call_id);
    let call = browser
        .answer(&again, CallOptions::default())
        .await
        .expect("answered");
    assert!(matches!(
        event(&mut browser, &again.call_id).await,
        CallEvent::Answered(_)
    ));
    let stats = call
        .wait_frames(50, Duration::from_secs(10))
        .await
        .expect("audio both ways");
    assert_eq!(stats.corrupted, 0);
    browser.hangup(&again.call_id).await.expect("hangup");
    ended(&mut browser, &again.call_id).await;
    call.stop().await;
    assert_no_leftovers(&gateway).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renegotiation_refuses_unknown_calls_and_offers_without_the_calls_codec() {
    let pbx = start_demo(None).await;
    let gateway = resumable_gateway(&pbx, Duration::from_secs(20)).await;
    let (mut browser, _) = open(&gateway, "secret", None).await;
    let call = browser
        .call_with(
            "echo",
            CallOptions {
                codecs: Codecs::PcmuOnly,
                ..CallOptions::default()
            },
        )
        .await
        .expect("call");
    let call_id = call.call_id().to_string();
    let expect_error =
        |result: loadtest::Result<loadtest::browser::SimCall>, code: ErrorCode| match result {
            Err(loadtest::Error::Refused(error)) => assert_eq!(error.code, code, "{error:?}"),
            Err(other) => panic!("expected {code}, got {other}"),
            Ok(_) => panic!("expected {code}, got an ack"),
        };
    expect_error(
        browser
            .renegotiate("c-0000000000000000", CallOptions::default())
            .await,
        ErrorCode::UnknownCall,
    );
    expect_error(
        browser
            .renegotiate(
                &call_id,
                CallOptions {
                    codecs: Codecs::PcmaOnly,
                    ..CallOptions::default()
                },
            )
            .await,
        ErrorCode::NoCommonCodec,
    );
    // Garbage instead of an offer: a clear error, the call goes on.
    let garbage = ClientMessage::Renegotiate(signaling::RenegotiateRequest {
        request_id: browser.next_request_id(),
        call_id: call_id.clone(),
        sdp: "not an sdp \u{0} at all".into(),
    });
    match browser.request(&garbage, "the renegotiate reply").await {
        Err(loadtest::Error::Refused(error)) => assert_eq!(error.code, ErrorCode::InvalidSdp),
        other => panic!("expected invalid_sdp, got {other:?}"),
    }
    browser.hangup(&call_id).await.expect("hangup");
    ended(&mut browser, &call_id).await;
    call.stop().await;
    assert_no_leftovers(&gateway).await;

    // A malformed resume token opens a fresh session, nothing more.
    let (_other, welcome) = open(&gateway, "secret", Some("\u{0}..<script>")).await;
    assert!(welcome.resumed.is_none());
    assert!(welcome.resume_token.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_peer_connection_with_the_socket_still_open_ends_the_call_after_a_moment() {
    let pbx = start_demo(None).await;
    let gateway = resumable_gateway(&pbx, Duration::from_secs(20)).await;
    let (mut browser, _) = open(&gateway, "secret", None).await;
    let call = answered_echo_call(&mut browser).await;
    let call_id = call.call_id().to_string();
    // DTLS close_notify: the page closed its peer connection but keeps the WebSocket.
    call.stop().await;
    let started = tokio::time::Instant::now();
    let end = ended(&mut browser, &call_id).await;
    assert_eq!(
        (end.ended_by, end.cause.as_str()),
        (EndedBy::Gateway, "media_failed")
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "the call waited for a possible reload first"
    );
    assert_no_leftovers(&gateway).await;
    assert!(eventually(Duration::from_secs(3), || pbx.active_calls() == 0).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_closes_the_peer_connection_before_the_socket_keeps_the_call() {
    let pbx = start_demo(None).await;
    let gateway = resumable_gateway(&pbx, Duration::from_secs(20)).await;
    let (mut browser, welcome) = open(&gateway, "secret", None).await;
    let token = welcome.resume_token.expect("token");
    let call = answered_echo_call(&mut browser).await;
    let call_id = call.call_id().to_string();
    // What Chromium does on reload: the peer connection closes, then the socket (1001).
    call.stop().await;
    browser.send_close(1001, "reload").await.expect("close");
    drop(browser);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(pbx.active_calls(), 1, "kept past the browser-failure grace");
    let (mut browser, welcome) = open(&gateway, "secret", Some(&token)).await;
    assert_eq!(welcome.resumed.expect("resumed").calls[0].call_id, call_id);
    let call = browser
        .renegotiate(&call_id, CallOptions::default())
        .await
        .expect("renegotiated");
    let stats = call
        .wait_frames(50, Duration::from_secs(10))
        .await
        .expect("audio again");
    assert_eq!(stats.corrupted, 0);
    browser.hangup(&call_id).await.expect("hangup");
    ended(&mut browser, &call_id).await;
    call.stop().await;
    assert_no_leftovers(&gateway).await;
}
