//! Agents as extensions of the demo PBX: registration, inbound calls (the demo's `callback`),
//! answer with audio both ways, reject, and unregistration.

use std::collections::BTreeMap;
use std::time::Duration;

use loadtest::browser::{CallEvent, CallOptions, SimBrowser};
use signaling::{ClientMessage, EndedBy, RejectReason, RejectRequest, ServerMessage};

use crate::support::*;

async fn register(browser: &mut SimBrowser) -> u32 {
    match register_outcome(browser).await {
        ServerMessage::Registered(r) => r.expires,
        other => panic!("registration failed: {other:?}"),
    }
}

/// Places a `callback` call, which the demo PBX hangs up and returns as an inbound call.
async fn trigger_callback(browser: &mut SimBrowser) {
    let call = browser
        .call("callback", BTreeMap::new())
        .await
        .expect("callback call");
    let end = ended(browser, call.call_id()).await;
    assert_eq!(
        (end.ended_by, end.cause.as_str()),
        (EndedBy::Remote, "normal_clearing")
    );
    call.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_agent_answers_an_inbound_call_with_audio_both_ways() {
    let pbx = start_demo(Some("secret")).await;
    let gateway = start_gateway(test_settings(pbx.sip_addr())).await;
    let mut browser = browser(&gateway).await;
    browser.set_timeout(Duration::from_secs(10));
    assert!(register(&mut browser).await > 0);
    let (_, metrics) = http_get(gateway.http_addr(), "/metrics").await;
    assert_eq!(metric(&metrics, "callgate_registrations"), 1.0, "{metrics}");
    let bindings = pbx.registrations();
    assert!(
        bindings
            .iter()
            .any(|(ext, contact)| ext == "1001" && contact.contains("1001-")),
        "{bindings:?}"
    );

    trigger_callback(&mut browser).await;
    let incoming = browser.next_incoming().await.expect("the PBX calls back");
    assert_eq!(incoming.to.split('-').next(), Some("1001"));
    assert!(incoming.sdp.contains("a=ice-lite"));
    let call = browser
        .answer(&incoming, CallOptions::default())
        .await
        .expect("answer accepted");
    assert!(matches!(
        event(&mut browser, &incoming.call_id).await,
        CallEvent::Answered(_)
    ));
    let stats = call
        .wait_frames(50, Duration::from_secs(10))
        .await
        .expect("the demo echoes our audio");
    assert_eq!(stats.corrupted, 0);

    browser.hangup(&incoming.call_id).await.expect("hangup");
    let end = ended(&mut browser, &incoming.call_id).await;
    assert_eq!((end.ended_by, end.answered), (EndedBy::Agent, true));
    call.stop().await;
    assert_no_leftovers(&gateway).await;
    assert!(eventually(Duration::from_secs(3), || pbx.active_calls() == 0).await);

    // Unregister: the binding disappears from the PBX.
    let request_id = browser.next_request_id();
    browser
        .send_message(&ClientMessage::Unregister { request_id })
        .await
        .expect("sent");
    browser
        .wait_for("unregistered", |m| {
            matches!(m, ServerMessage::Unregistered(_))
        })
        .await
        .expect("unregistered");
    let gauge_zero = eventually(Duration::from_secs(3), || {
        gateway.services().sip.registered_count() == 0
    })
    .await;
    assert!(gauge_zero, "the registrations gauge returns to 0");
    assert!(
        eventually(Duration::from_secs(3), || pbx.registrations().is_empty()).await,
        "{:?}",
        pbx.registrations()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_rejects_an_inbound_call() {
    let pbx = start_demo(None).await;
    let gateway = start_gateway(test_settings(pbx.sip_addr())).await;
    let mut browser = browser(&gateway).await;
    browser.set_timeout(Duration::from_secs(10));
    register(&mut browser).await;
    trigger_callback(&mut browser).await;
    let incoming = browser.next_incoming().await.expect("the PBX calls back");
    let request_id = browser.next_request_id();
    let reject = RejectRequest {
        request_id,
        call_id: incoming.call_id.clone(),
        reason: Some(RejectReason::Decline),
    };
    browser
        .send_message(&ClientMessage::Reject(reject))
        .await
        .expect("sent");
    let end = ended(&mut browser, &incoming.call_id).await;
    assert_eq!(
        (end.ended_by, end.cause.as_str(), end.sip_status),
        (EndedBy::Agent, "declined", Some(603))
    );
    assert!(eventually(Duration::from_secs(3), || pbx.active_calls() == 0).await);
    assert_no_leftovers(&gateway).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_fails_registration_and_closing_the_socket_unregisters() {
    let pbx = start_demo(Some("right")).await;
    let gateway = start_gateway(test_settings(pbx.sip_addr())).await;
    let mut browser = SimBrowser::connect(&ws_url(&gateway))
        .await
        .expect("connects");
    browser.hello("1001", "wrong").await.expect("hello");
    let request_id = browser.next_request_id();
    browser
        .send_message(&ClientMessage::Register { request_id })
        .await
        .expect("sent");
    match browser
        .wait_for("registration outcome", |m| {
            matches!(
                m,
                ServerMessage::Registered(_) | ServerMessage::RegistrationFailed(_)
            )
        })
        .await
        .expect("an outcome")
    {
        ServerMessage::RegistrationFailed(f) => {
            assert_eq!((f.sip_status, f.retrying), (Some(403), false), "{f:?}");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    browser.close().await.expect("closed");

    let mut agent = SimBrowser::connect(&ws_url(&gateway))
        .await
        .expect("connects");
    agent.hello("1002", "right").await.expect("hello");
    register(&mut agent).await;
    assert_eq!(pbx.registrations().len(), 1);
    agent.close().await.expect("closed");
    assert!(
        eventually(Duration::from_secs(3), || pbx.registrations().is_empty()).await,
        "a vanished agent is unregistered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_receive_their_own_calls() {
    let pbx = start_demo(None).await;
    let gateway = start_gateway(test_settings(pbx.sip_addr())).await;
    let mut alice = browser_as(&gateway, "1001", "a").await;
    let mut bob = browser_as(&gateway, "1002", "b").await;
    register(&mut alice).await;
    register(&mut bob).await;
    assert_eq!(gateway.services().sip.agent_contacts().len(), 2);
    trigger_callback(&mut bob).await;
    let incoming = bob.next_incoming().await.expect("bob is called back");
    assert!(incoming.to.starts_with("1002"), "{incoming:?}");
    let call = bob
        .answer(&incoming, CallOptions::default())
        .await
        .expect("answered");
    call.wait_frames(20, Duration::from_secs(10))
        .await
        .expect("bob's audio");
    // Alice saw nothing of it (only her own registration's replies).
    while let Ok(message) = alice.recv_timeout(Duration::from_millis(300)).await {
        assert!(
            matches!(
                message,
                ServerMessage::Ack(_) | ServerMessage::Registered(_)
            ),
            "alice got a message for bob's call: {message:?}"
        );
    }
    bob.hangup(&incoming.call_id).await.expect("hangup");
    ended(&mut bob, &incoming.call_id).await;
    call.stop().await;
    assert_no_leftovers(&gateway).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_waiting_presents_a_second_call_or_answers_busy() {
    for call_waiting in [true, false] {
        let pbx = start_demo(None).await;
        let mut settings = test_settings(pbx.sip_addr());
        settings.calls.call_waiting = call_waiting;
        let gateway = start_gateway(settings).await;
        let mut browser = browser(&gateway).await;
        browser.set_timeout(Duration::from_secs(10));
        register(&mut browser).await;
        let first = browser
            .call("echo", BTreeMap::new())
            .await
            .expect("first line");
        first
            .wait_frames(10, Duration::from_secs(10))
            .await
            .expect("first line audio");
        trigger_callback(&mut browser).await;
        if call_waiting {
            let incoming = browser
                .next_incoming()
                .await
                .expect("the second call is presented");
            let request_id = browser.next_request_id();
            let reject = RejectRequest {
                request_id,
                call_id: incoming.call_id.clone(),
                reason: None,
            };
            browser
                .send_message(&ClientMessage::Reject(reject))
                .await
                .expect("sent");
            assert_eq!(
                ended(&mut browser, &incoming.call_id).await.sip_status,
                Some(486)
            );
        } else {
            // The demo PBX got 486 for its callback: no incoming_call reaches the agent.
            let presented = browser
                .wait_for("no incoming call", |m| {
                    matches!(m, ServerMessage::IncomingCall(_))
                })
                .await;
            assert!(
                presented.is_err(),
                "busy agent was offered a call: {presented:?}"
            );
        }
        let id = first.call_id().to_string();
        browser.hangup(&id).await.expect("hangup");
        ended(&mut browser, &id).await;
        first.stop().await;
        assert_no_leftovers(&gateway).await;
    }
}

/// Requests over TCP that rsipstack cannot key a transaction for (it drops them without a
/// word, where callgate's UDP guard answers or repairs them): an RFC 2543 INVITE without a
/// From tag is tagged as over UDP and reaches the agent; one without a Call-ID is answered
/// 400 on its connection and reaches nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unkeyable_invites_over_tcp_are_repaired_or_answered_like_over_udp() {
    let pbx = start_demo(Some("secret")).await;
    let gateway = start_gateway(test_settings(pbx.sip_addr())).await;
    let mut browser = browser(&gateway).await;
    assert!(register(&mut browser).await > 0);
    let contact = pbx
        .registrations()
        .into_iter()
        .find(|(ext, _)| ext == "1001")
        .map(|(_, contact)| contact)
        .expect("the agent registered");
    let user = contact
        .split("sip:")
        .nth(1)
        .and_then(|rest| rest.split('@').next())
        .expect("a SIP URI with a user")
        .to_string();
    assert!(user.starts_with("1001-"), "{contact}");

    // No Call-ID: malformed, 400 over the same connection.
    let no_call_id = |local: std::net::SocketAddr| {
        invite_over_tcp_text(
            &user,
            gateway.sip_addr(),
            local,
            "From: <sip:pbx@x>;tag=a1\r\n",
        )
    };
    let (status, received) = tcp_request_status(gateway.sip_addr(), no_call_id, true).await;
    assert!(status.starts_with("SIP/2.0 400"), "{received}");
    browser.set_timeout(Duration::from_millis(500));
    assert!(
        browser.next_incoming().await.is_err(),
        "the agent was offered a request without a Call-ID"
    );

    // No From tag: tagged, and the agent is offered the call.
    let untagged = |local: std::net::SocketAddr| {
        format!(
            "{}Call-ID: untagged@test\r\n",
            invite_over_tcp_text(&user, gateway.sip_addr(), local, "From: <sip:pbx@x>\r\n")
        )
    };
    let (status, received) = tcp_request_status(gateway.sip_addr(), untagged, false).await;
    assert!(status.starts_with("SIP/2.0 1"), "{received}");
    browser.set_timeout(Duration::from_secs(5));
    let incoming = browser
        .next_incoming()
        .await
        .expect("the tagged INVITE reaches the agent");
    assert_eq!(incoming.to.split('-').next(), Some("1001"));
    let (_, metrics) = http_get(gateway.http_addr(), "/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            "callgate_media_errors_total{kind=\"sip_malformed\"}"
        ),
        1.0,
        "the request without a Call-ID counts as malformed, the repaired one does not: {metrics}"
    );
}

/// An INVITE for `user` at `sip` from `local` over TCP, with `from` as its From line and no
/// Call-ID; the caller adds one (or not) and the blank line ends it below.
fn invite_over_tcp_text(
    user: &str,
    sip: std::net::SocketAddr,
    local: std::net::SocketAddr,
    from: &str,
) -> String {
    format!(
        "INVITE sip:{user}@{sip};transport=tcp SIP/2.0\r\nVia: SIP/2.0/TCP {local};branch=z9hG4bK{}\r\n\
         {from}To: <sip:{user}@{sip}>\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:pbx@{local};transport=tcp>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n",
        local.port()
    )
}

/// Sends the request `text(local address)` (headers without the blank line) on a new TCP
/// connection to `sip`; returns the status line of the first final response (`want_final`)
/// or of the first response, and everything received.
async fn tcp_request_status(
    sip: std::net::SocketAddr,
    text: impl Fn(std::net::SocketAddr) -> String,
    want_final: bool,
) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut stream = tokio::net::TcpStream::connect(sip)
        .await
        .expect("callgate listens on TCP");
    let local = stream.local_addr().expect("addr");
    let request = format!("{}\r\n", text(local));
    stream.write_all(request.as_bytes()).await.expect("sent");
    let mut received = String::new();
    let mut buf = vec![0u8; 4096];
    let status = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "callgate closed the connection: {received:?}");
            received.push_str(&String::from_utf8_lossy(&buf[..n]));
            if let Some(line) = received
                .split("\r\n")
                .find(|l| l.starts_with("SIP/2.0 ") && (!want_final || !l.starts_with("SIP/2.0 1")))
            {
                return line.to_string();
            }
        }
    })
    .await;
    match status {
        Ok(line) => (line, received),
        Err(_) => panic!("no answer over the connection; got {received:?}"),
    }
}
