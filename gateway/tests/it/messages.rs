//! SIP MESSAGE both ways: the agent's text to SIPp playing the PBX, and a MESSAGE the PBX
//! sends to the agent's registered Contact.

use std::time::Duration;

use signaling::{ClientMessage, ErrorCode, MessageRequest, ServerMessage};
use tokio::net::UdpSocket;

use crate::sipp::{SippOptions, SippUas};
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_sends_a_message_and_gets_the_pbx_verdict() {
    let mut sipp = SippUas::start("uas_message.xml", SippOptions::default());
    let gateway = start_gateway(test_settings(sipp.sip_addr())).await;
    let mut browser = browser(&gateway).await;
    let request_id = browser.next_request_id();
    let message = MessageRequest {
        request_id,
        to: "1002".into(),
        text: "customer 4711 on line 2".into(),
        content_type: None,
    };
    browser
        .send_message(&ClientMessage::Message(message))
        .await
        .expect("sent");
    let reply = browser
        .wait_for("the message reply", |m| {
            matches!(m, ServerMessage::Ack(a) if a.request_id == request_id)
                || matches!(m, ServerMessage::Error(e) if e.request_id == Some(request_id))
        })
        .await
        .expect("a reply");
    assert!(matches!(reply, ServerMessage::Ack(_)), "{reply:?}");
    let outcome = tokio::task::spawn_blocking(move || sipp.wait(Duration::from_secs(10)))
        .await
        .expect("waiter");
    outcome.assert_success();
    assert!(
        outcome.scenario_log.contains("customer 4711 on line 2"),
        "{}",
        outcome.scenario_log
    );

    let request_id = browser.next_request_id();
    let empty = MessageRequest {
        request_id,
        to: "1002".into(),
        text: String::new(),
        content_type: None,
    };
    browser
        .send_message(&ClientMessage::Message(empty))
        .await
        .expect("sent");
    match browser.recv().await.expect("reply") {
        ServerMessage::Error(e) => assert_eq!(e.code, ErrorCode::InvalidMessage),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_for_the_agents_contact_reaches_the_browser() {
    let pbx = start_demo(None).await;
    let gateway = start_gateway(test_settings(pbx.sip_addr())).await;
    let mut browser = browser(&gateway).await;
    let outcome = register_outcome(&mut browser).await;
    assert!(
        matches!(outcome, ServerMessage::Registered(_)),
        "{outcome:?}"
    );
    let contact = gateway
        .services()
        .sip
        .agent_contacts()
        .pop()
        .expect("one agent routed");

    let pbx_socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let local = pbx_socket.local_addr().expect("addr");
    let body = "please call 4711";
    let request = format!(
        "MESSAGE sip:{contact}@{gw} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKmsg1\r\n\
         From: \"Supervisor\" <sip:1002@{local}>;tag=m1\r\nTo: <sip:1001@{gw}>\r\nCall-ID: msg-1@test\r\n\
         CSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len(),
        gw = gateway.sip_addr(),
    );
    pbx_socket
        .send_to(request.as_bytes(), gateway.sip_addr())
        .await
        .expect("sent");
    let mut buf = vec![0u8; 2048];
    let (n, _) = tokio::time::timeout(Duration::from_secs(3), pbx_socket.recv_from(&mut buf))
        .await
        .expect("an answer")
        .expect("recv");
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("SIP/2.0 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    match browser
        .wait_for("message", |m| {
            matches!(m, ServerMessage::MessageReceived(_))
        })
        .await
        .expect("event")
    {
        ServerMessage::MessageReceived(m) => {
            assert_eq!(
                (m.from.as_str(), m.text.as_str(), m.display_name.as_deref()),
                ("1002", body, Some("Supervisor"))
            );
        }
        other => panic!("{other:?}"),
    }

    // Nobody registered that Contact: 404.
    let stray = request
        .replace(&contact, "9999-ffffffff")
        .replace("z9hG4bKmsg1", "z9hG4bKmsg2")
        .replace("msg-1@", "msg-2@");
    pbx_socket
        .send_to(stray.as_bytes(), gateway.sip_addr())
        .await
        .expect("sent");
    let (n, _) = tokio::time::timeout(Duration::from_secs(3), pbx_socket.recv_from(&mut buf))
        .await
        .expect("an answer")
        .expect("recv");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("SIP/2.0 404"));
}
