//! Mid-call controls against the demo PBX: hold/resume by re-INVITE, mute at the relay,
//! DTMF injected as RFC 4733 events, and the call UUID header.

use std::collections::BTreeMap;
use std::time::Duration;

use loadtest::browser::{CallOptions, SimBrowser};
use signaling::{CallRef, ClientMessage, DtmfRequest, ErrorCode, HoldBy, ServerMessage};

use crate::support::*;

/// Sends a request and returns the reply (ack or error), keeping events for later.
async fn send(browser: &mut SimBrowser, message: ClientMessage) -> ServerMessage {
    let id = message.request_id();
    browser.send_message(&message).await.expect("sent");
    loop {
        let reply = browser.recv().await.expect("a reply");
        match &reply {
            ServerMessage::Ack(a) if a.request_id == id => return reply,
            ServerMessage::Error(e) if e.request_id == Some(id) => return reply,
            _ => {}
        }
    }
}

async fn next_message(browser: &mut SimBrowser, want: fn(&ServerMessage) -> bool) -> ServerMessage {
    loop {
        let message = browser.recv().await.expect("a message");
        if want(&message) {
            return message;
        }
    }
}

fn call_ref(browser: &mut SimBrowser, call_id: &str) -> CallRef {
    CallRef {
        request_id: browser.next_request_id(),
        call_id: call_id.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_mute_and_dtmf_on_an_answered_call() {
    let pbx = start_demo(None).await;
    let gateway = start_gateway(test_settings(pbx.sip_addr())).await;
    let mut browser = browser(&gateway).await;
    browser.set_timeout(Duration::from_secs(8));
    let options = CallOptions {
        call_uuid: Some("crm-4711".into()),
        ..CallOptions::default()
    };
    let call = browser
        .call_with("echo", options)
        .await
        .expect("call accepted");
    assert_eq!(call.call_uuid(), Some("crm-4711"));
    let id = call.call_id().to_string();
    call.wait_frames(20, Duration::from_secs(10))
        .await
        .expect("audio flows");

    // Hold: the PBX answers the sendonly re-INVITE; our audio stops reaching the echo.
    let hold = call_ref(&mut browser, &id);
    assert!(matches!(
        send(&mut browser, ClientMessage::Hold(hold.clone())).await,
        ServerMessage::Ack(_)
    ));
    let held = next_message(&mut browser, |m| matches!(m, ServerMessage::CallHeld(_))).await;
    assert!(matches!(held, ServerMessage::CallHeld(h) if h.by == HoldBy::Agent && h.call_id == id));
    let again = call_ref(&mut browser, &id);
    assert!(
        matches!(send(&mut browser, ClientMessage::Hold(again)).await,
        ServerMessage::Error(e) if e.code == ErrorCode::InvalidState)
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let during_hold = call.stats().frames_received;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        call.stats().frames_received <= during_hold + 2,
        "no echo while held"
    );

    let unhold = call_ref(&mut browser, &id);
    assert!(matches!(
        send(&mut browser, ClientMessage::Unhold(unhold)).await,
        ServerMessage::Ack(_)
    ));
    next_message(&mut browser, |m| matches!(m, ServerMessage::CallResumed(_))).await;
    let resumed = call.stats().frames_received;
    call.wait_frames(resumed + 20, Duration::from_secs(5))
        .await
        .expect("audio resumes after unhold");

    // Mute: same effect at the relay, without any SIP.
    let mute = call_ref(&mut browser, &id);
    assert!(matches!(
        send(&mut browser, ClientMessage::Mute(mute)).await,
        ServerMessage::Ack(_)
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let muted = call.stats().frames_received;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        call.stats().frames_received <= muted + 2,
        "no echo while muted"
    );
    let unmute = call_ref(&mut browser, &id);
    assert!(matches!(
        send(&mut browser, ClientMessage::Unmute(unmute)).await,
        ServerMessage::Ack(_)
    ));
    let unmuted = call.stats().frames_received;
    call.wait_frames(unmuted + 20, Duration::from_secs(5))
        .await
        .expect("audio after unmute");

    // DTMF injected as RFC 4733 towards the PBX.
    let request_id = browser.next_request_id();
    let dtmf = ClientMessage::Dtmf(DtmfRequest {
        request_id,
        call_id: id.clone(),
        digits: "19#".into(),
        duration_ms: Some(80),
    });
    assert!(matches!(
        send(&mut browser, dtmf).await,
        ServerMessage::Ack(_)
    ));
    let got = eventually(Duration::from_secs(5), || pbx.received_dtmf().len() >= 3).await;
    let digits: String = pbx.received_dtmf().iter().map(|(_, d)| *d).collect();
    assert!(got && digits == "19#", "the PBX decoded {digits:?}");
    let request_id = browser.next_request_id();
    let bad = ClientMessage::Dtmf(DtmfRequest {
        request_id,
        call_id: id.clone(),
        digits: "1x".into(),
        duration_ms: None,
    });
    assert!(
        matches!(send(&mut browser, bad).await, ServerMessage::Error(e) if e.code == ErrorCode::InvalidDtmf)
    );
    call.wait_frames(call.stats().frames_received + 10, Duration::from_secs(5))
        .await
        .expect("audio after DTMF");

    browser.hangup(&id).await.expect("hangup");
    ended(&mut browser, &id).await;
    let stats = call.stop().await;
    assert_eq!(stats.corrupted, 0, "{stats:?}");
    assert_no_leftovers(&gateway).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_on_unknown_or_unanswered_calls_are_refused() {
    let pbx = start_demo(None).await;
    let gateway = start_gateway(test_settings(pbx.sip_addr())).await;
    let mut browser = browser(&gateway).await;
    let hold = call_ref(&mut browser, "c-none");
    assert!(
        matches!(send(&mut browser, ClientMessage::Hold(hold)).await,
        ServerMessage::Error(e) if e.code == ErrorCode::UnknownCall)
    );
    let call = browser
        .call("noanswer", BTreeMap::new())
        .await
        .expect("call accepted");
    let id = call.call_id().to_string();
    let hold = call_ref(&mut browser, &id);
    assert!(
        matches!(send(&mut browser, ClientMessage::Hold(hold)).await,
        ServerMessage::Error(e) if e.code == ErrorCode::InvalidState)
    );
    ended(&mut browser, &id).await;
    call.stop().await;
}
