//! Interop with a real SIP server: Debian's Kamailio as registrar + proxy with digest auth
//! (the OpenSIPS family). The agent registers through callgate, SIPp calls the agent through
//! Kamailio, and the agent calls SIPp through Kamailio; audio both ways each time.

use std::time::Duration;

use loadtest::browser::{CallEvent, CallOptions};
use signaling::{EndedBy, ServerMessage};

use crate::kamailio::Kamailio;
use crate::sipp::{SippOptions, SippUac, SippUas};
use crate::support::*;

async fn gateway_behind(kam: &Kamailio) -> gateway::app::Gateway {
    let mut settings = test_settings(kam.sip_addr());
    settings.sip.domain = Some(kam.domain().to_string());
    start_gateway(settings).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_registers_and_receives_a_call_through_kamailio() {
    let mut kam = Kamailio::start(&[("1001", "s3cret"), ("1002", "other")]);
    let gateway = gateway_behind(&kam).await;
    let mut browser = browser_as(&gateway, "1001", "s3cret").await;
    let contacts = register_at(&mut kam, &mut browser, "1001").await;
    assert!(
        contacts.iter().any(|c| c.uri.contains("1001-")),
        "{contacts:?}"
    );

    // SIPp (a trunk) calls 1001 at Kamailio, which forks to callgate's Contact.
    let opts = SippOptions::default()
        .args(["-s", "1001"])
        .key("hold_ms", 3000);
    let mut caller = SippUac::start("uac_inbound_call_bye.xml", kam.sip_addr(), opts);
    let incoming = browser
        .next_incoming()
        .await
        .expect("the call reaches the browser");
    assert_eq!(
        incoming.headers.get("X-Customer-Id").map(String::as_str),
        Some("4711")
    );
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
    assert_no_leftovers(&gateway).await;

    // Leaving unregisters at Kamailio.
    browser.close().await.expect("closed");
    tokio::task::block_in_place(|| kam.wait_unregistered("1001", Duration::from_secs(5)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_sip_transport_tcp_the_registration_goes_over_tcp() {
    let kam = Kamailio::start(&[("1001", "s3cret")]);
    let mut settings = test_settings(kam.sip_addr());
    settings.sip.domain = Some(kam.domain().to_string());
    settings.sip.transport = gateway::config::SipTransport::Tcp;
    let gateway = start_gateway(settings).await;
    let mut browser = browser_as(&gateway, "1001", "s3cret").await;
    let outcome = register_outcome(&mut browser).await;
    assert!(
        matches!(outcome, ServerMessage::Registered(_)),
        "{outcome:?}"
    );
    let logs = kam.logs();
    let registers: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("request REGISTER"))
        .collect();
    assert!(!registers.is_empty(), "{logs}");
    assert!(
        registers.iter().all(|l| l.contains("from tcp:")),
        "every REGISTER came over TCP: {registers:?}"
    );
    assert!(
        registers
            .iter()
            .all(|l| l.contains("@127.0.0.1}") && !l.contains("restsend")),
        "Call-IDs end in callgate's own address: {registers:?}"
    );
    browser.close().await.expect("closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_calls_a_registered_phone_through_kamailio_with_proxy_auth() {
    let mut kam = Kamailio::start(&[("1001", "s3cret"), ("2000", "phone")]);
    let mut phone = SippUas::start(
        &crate::kamailio::scenario("uas_proxied_echo.xml"),
        SippOptions::default(),
    );
    let phone_contact = format!("sip:2000@{}", phone.sip_addr());
    tokio::task::block_in_place(|| kam.register_contact("2000", "phone", &phone_contact));
    let gateway = gateway_behind(&kam).await;
    let mut browser = browser_as(&gateway, "1001", "s3cret").await;
    let call = answered_call(&mut browser, "2000")
        .await
        .unwrap_or_else(|e| panic!("the call failed: {e:?}\n{}", kam.report()));
    let id = call.call_id().to_string();
    let stats = call
        .wait_frames(50, Duration::from_secs(10))
        .await
        .expect("audio through the proxied call");
    assert_eq!(stats.corrupted, 0);
    browser.hangup(&id).await.expect("hangup");
    assert_eq!(ended(&mut browser, &id).await.cause, "normal_clearing");
    call.stop().await;
    tokio::task::spawn_blocking(move || phone.wait(Duration::from_secs(15)))
        .await
        .expect("waiter")
        .assert_success();
    assert_no_leftovers(&gateway).await;
}

/// Registers `browser` through callgate at Kamailio; returns the contacts Kamailio holds.
async fn register_at(
    kam: &mut Kamailio,
    browser: &mut loadtest::browser::SimBrowser,
    user: &str,
) -> Vec<crate::kamailio::Contact> {
    match register_outcome(browser).await {
        ServerMessage::Registered(r) => assert!(r.expires > 0),
        other => panic!(
            "Kamailio refused the registration: {other:?}\n{}",
            kam.report()
        ),
    }
    tokio::task::block_in_place(|| kam.wait_registered(user, Duration::from_secs(5)))
}

/// Two agents of one callgate call each other through Kamailio, which relays SIP only: the
/// call's SIP leg loops back into callgate, and each side's SDP names callgate itself. The
/// answering leg must not take the shared SIP-leg socket its caller's offer names (on one
/// media worker both legs would then send from and to that one address, and each agent would
/// hear itself): it gets a pair of its own. The simulated agents' frames look alike, so one
/// side talks at a time: the listener must hear it, the talker must not hear itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_of_one_callgate_call_each_other_through_kamailio() {
    let mut kam = Kamailio::start(&[("1001", "s3cret"), ("1002", "other")]);
    let gateway = gateway_behind(&kam).await;
    let mut caller = browser_as(&gateway, "1001", "s3cret").await;
    let mut callee = browser_as(&gateway, "1002", "other").await;
    register_at(&mut kam, &mut callee, "1002").await;
    let outgoing = caller
        .call("1002", Default::default())
        .await
        .expect("call accepted");
    let incoming = callee
        .next_incoming()
        .await
        .unwrap_or_else(|e| panic!("the call did not reach 1002: {e:?}\n{}", kam.report()));
    let answered = callee
        .answer(
            &incoming,
            CallOptions {
                start_paused: true,
                ..CallOptions::default()
            },
        )
        .await
        .expect("answered");
    loop {
        match event(&mut caller, outgoing.call_id()).await {
            CallEvent::Answered(_) => break,
            CallEvent::Ended(end) => panic!("{end:?}\n{}", kam.report()),
            _ => {}
        }
    }
    // The caller talks: the callee hears it (frames it never sent count as foreign).
    answered
        .wait_for(Duration::from_secs(10), "the caller's audio", |s| {
            s.foreign >= 100
        })
        .await
        .unwrap_or_else(|e| panic!("the callee does not hear the caller: {e:?}"));
    let talker = outgoing.stats();
    assert_eq!(
        (talker.frames_received, talker.foreign),
        (0, 0),
        "the caller hears itself: {talker:?}"
    );
    // The callee talks: the caller, silent now, hears it.
    outgoing.stop_sending().await.expect("caller stops");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = outgoing.stats().frames_received;
    answered.start_sending().await.expect("callee talks");
    outgoing
        .wait_for(Duration::from_secs(10), "the callee's audio", |s| {
            s.frames_received + s.foreign >= before + 100
        })
        .await
        .unwrap_or_else(|e| panic!("the caller does not hear the callee: {e:?}"));
    let talker = answered.stats();
    assert_eq!(
        talker.frames_received, 0,
        "the callee hears itself: {talker:?}"
    );
    caller.hangup(outgoing.call_id()).await.expect("hangup");
    assert_eq!(
        ended(&mut caller, outgoing.call_id()).await.cause,
        "normal_clearing"
    );
    ended(&mut callee, &incoming.call_id).await;
    outgoing.stop().await;
    answered.stop().await;
    assert_no_leftovers(&gateway).await;
}
