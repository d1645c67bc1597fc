//! Agent features against SIPp playing the PBX: registrar with a 401 challenge, inbound calls
//! (answered with audio, offer-less, rejected, cancelled), holds from either side, INFO DTMF
//! both ways, a dead PBX, and INVITEs for unknown agents.

use std::collections::BTreeMap;
use std::time::Duration;

use loadtest::browser::{CallEvent, CallOptions, SimBrowser, SimCall};
use signaling::{
    CallRef, ClientMessage, DtmfRequest, EndedBy, HoldBy, RejectReason, RejectRequest,
    ServerMessage,
};
use tokio::net::UdpSocket;

use crate::sipp::{SippOptions, SippOutcome, SippUac, SippUas};
use crate::support::*;

async fn done(mut sipp: SippUas) -> SippOutcome {
    tokio::task::spawn_blocking(move || sipp.wait(Duration::from_secs(20)))
        .await
        .expect("waiter")
}

async fn uac_done(mut sipp: SippUac) -> SippOutcome {
    tokio::task::spawn_blocking(move || sipp.wait(Duration::from_secs(20)))
        .await
        .expect("waiter")
}

async fn request(browser: &mut SimBrowser, message: ClientMessage) -> ServerMessage {
    let id = message.request_id();
    browser.send_message(&message).await.expect("sent");
    browser
        .wait_for("a reply", |m| {
            matches!(m, ServerMessage::Ack(a) if a.request_id == id)
                || matches!(m, ServerMessage::Error(e) if e.request_id == Some(id))
        })
        .await
        .expect("a reply")
}

async fn registration_outcome(browser: &mut SimBrowser) -> ServerMessage {
    let request_id = browser.next_request_id();
    assert!(matches!(
        request(browser, ClientMessage::Register { request_id }).await,
        ServerMessage::Ack(_)
    ));
    browser
        .wait_for("registration outcome", |m| {
            matches!(
                m,
                ServerMessage::Registered(_) | ServerMessage::RegistrationFailed(_)
            )
        })
        .await
        .expect("an outcome")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrar_challenge_refresh_and_unregister() {
    let sipp = SippUas::start(
        "uas_registrar.xml",
        SippOptions::default()
            .auth("1001", "secret")
            .key("expires", 60),
    );
    let gateway = start_gateway(test_settings(sipp.sip_addr())).await;
    let mut browser = browser(&gateway).await;
    match registration_outcome(&mut browser).await {
        ServerMessage::Registered(r) => assert_eq!(r.expires, 60),
        other => panic!("{other:?}"),
    }
    let request_id = browser.next_request_id();
    assert!(matches!(
        request(&mut browser, ClientMessage::Unregister { request_id }).await,
        ServerMessage::Ack(_)
    ));
    browser
        .wait_for("unregistered", |m| {
            matches!(m, ServerMessage::Unregistered(_))
        })
        .await
        .expect("unregistered");
    done(sipp).await.assert_success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrar_refusal_is_final_and_reported() {
    let sipp = SippUas::start(
        "uas_registrar_forbidden.xml",
        SippOptions::default().auth("1001", "secret"),
    );
    let gateway = start_gateway(test_settings(sipp.sip_addr())).await;
    let mut browser = browser(&gateway).await;
    match registration_outcome(&mut browser).await {
        ServerMessage::RegistrationFailed(f) => {
            assert_eq!((f.sip_status, f.retrying), (Some(403), false))
        }
        other => panic!("{other:?}"),
    }
    done(sipp).await.assert_success();
}

/// A gateway whose agent is registered with the demo PBX; returns the agent's Contact user.
async fn registered_agent() -> (
    gateway::demo::DemoPbx,
    gateway::app::Gateway,
    SimBrowser,
    String,
) {
    let pbx = start_demo(None).await;
    let gateway = start_gateway(test_settings(pbx.sip_addr())).await;
    let mut browser = browser(&gateway).await;
    assert!(matches!(
        registration_outcome(&mut browser).await,
        ServerMessage::Registered(_)
    ));
    let contact = gateway
        .services()
        .sip
        .agent_contacts()
        .pop()
        .expect("the agent is routed");
    (pbx, gateway, browser, contact)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_call_from_sipp_is_answered_with_audio_both_ways() {
    let (_pbx, gateway, mut browser, contact) = registered_agent().await;
    let opts = SippOptions::default()
        .args(["-s", contact.as_str()])
        .key("hold_ms", 2500);
    let caller = SippUac::start("uac_inbound_call_bye.xml", gateway.sip_addr(), opts);
    let incoming = browser.next_incoming().await.expect("incoming_call");
    assert_eq!(
        incoming.headers.get("X-Customer-Id").map(String::as_str),
        Some("4711")
    );
    let call = browser
        .answer(&incoming, CallOptions::default())
        .await
        .expect("answered");
    call.wait_frames(40, Duration::from_secs(10))
        .await
        .expect("SIPp echoes our audio");
    let end = ended(&mut browser, &incoming.call_id).await;
    assert_eq!(
        (end.ended_by, end.cause.as_str(), end.answered),
        (EndedBy::Remote, "normal_clearing", true)
    );
    call.stop().await;
    uac_done(caller).await.assert_success();
    assert_no_leftovers(&gateway).await;
}

/// A call from SIPp (`scenario`, with `key` = `value`) to an agent registered with the demo
/// PBX, answered by the browser.
struct AnsweredInbound {
    _pbx: gateway::demo::DemoPbx,
    gateway: gateway::app::Gateway,
    browser: SimBrowser,
    call: SimCall,
    call_id: String,
    caller: SippUac,
}

impl AnsweredInbound {
    async fn start(scenario: &str, key: &str, value: u32) -> AnsweredInbound {
        let (pbx, gateway, mut browser, contact) = registered_agent().await;
        let opts = SippOptions::default()
            .args(["-s", contact.as_str()])
            .key(key, value);
        let caller = SippUac::start(scenario, gateway.sip_addr(), opts);
        let incoming = browser.next_incoming().await.expect("incoming_call");
        let call = browser
            .answer(&incoming, CallOptions::default())
            .await
            .expect("answered");
        AnsweredInbound {
            _pbx: pbx,
            gateway,
            browser,
            call,
            call_id: incoming.call_id,
            caller,
        }
    }

    /// Waits for the call's end, then requires SIPp's run to pass and nothing to be left.
    async fn ended(mut self) -> signaling::CallEnded {
        let end = ended(&mut self.browser, &self.call_id).await;
        self.call.stop().await;
        uac_done(self.caller).await.assert_success();
        assert_no_leftovers(&self.gateway).await;
        end
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_calls_offerless_reinvite_takes_the_answer_from_the_ack() {
    let mut inbound =
        AnsweredInbound::start("uac_inbound_offerless_reinvite.xml", "hold_ms", 500).await;
    let held = inbound
        .browser
        .wait_for("held", |m| matches!(m, ServerMessage::CallHeld(_)))
        .await
        .expect("the answer in the ACK holds the call");
    assert!(matches!(held, ServerMessage::CallHeld(h) if h.by == HoldBy::Remote));
    let end = inbound.ended().await;
    assert_eq!(end.cause, "normal_clearing", "{end:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pbx_cancel_crossing_the_answer_changes_nothing() {
    let inbound = AnsweredInbound::start("uac_inbound_cancel_crossed.xml", "hold_ms", 1000).await;
    let end = inbound.ended().await;
    assert_eq!(
        (end.ended_by, end.cause.as_str(), end.answered),
        (EndedBy::Remote, "normal_clearing", true),
        "{end:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_hanging_up_before_the_ack_sends_bye_after_it() {
    let mut inbound = AnsweredInbound::start("uac_inbound_late_ack.xml", "ack_delay_ms", 300).await;
    // The answer is acknowledged to the browser before the PBX's ACK can arrive (300 ms).
    let id = inbound.call_id.clone();
    inbound.browser.hangup(&id).await.expect("hangup");
    let end = inbound.ended().await;
    assert_eq!(end.ended_by, EndedBy::Agent, "{end:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offerless_inbound_call_takes_the_answer_from_the_ack() {
    let (_pbx, gateway, mut browser, contact) = registered_agent().await;
    let caller = SippUac::start(
        "uac_inbound_offerless.xml",
        gateway.sip_addr(),
        SippOptions::default().args(["-s", contact.as_str()]),
    );
    let incoming = browser.next_incoming().await.expect("incoming_call");
    let call = browser
        .answer(&incoming, CallOptions::default())
        .await
        .expect("answered");
    assert!(matches!(
        event(&mut browser, &incoming.call_id).await,
        CallEvent::Answered(_)
    ));
    call.wait_frames(20, Duration::from_secs(10))
        .await
        .expect("audio with the ACK's answer");
    browser.hangup(&incoming.call_id).await.expect("hangup");
    ended(&mut browser, &incoming.call_id).await;
    call.stop().await;
    uac_done(caller).await.assert_success();
    assert_no_leftovers(&gateway).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_call_rejected_or_cancelled() {
    let (_pbx, gateway, mut browser, contact) = registered_agent().await;
    let opts = SippOptions::default()
        .args(["-s", contact.as_str()])
        .key("expect_status", 603);
    let caller = SippUac::start("uac_inbound_rejected.xml", gateway.sip_addr(), opts);
    let incoming = browser.next_incoming().await.expect("incoming_call");
    let request_id = browser.next_request_id();
    let reject = RejectRequest {
        request_id,
        call_id: incoming.call_id.clone(),
        reason: Some(RejectReason::Decline),
    };
    assert!(matches!(
        request(&mut browser, ClientMessage::Reject(reject)).await,
        ServerMessage::Ack(_)
    ));
    assert_eq!(
        ended(&mut browser, &incoming.call_id).await.sip_status,
        Some(603)
    );
    uac_done(caller).await.assert_success();

    let caller = SippUac::start(
        "uac_inbound_cancel.xml",
        gateway.sip_addr(),
        SippOptions::default().args(["-s", contact.as_str()]),
    );
    let incoming = browser.next_incoming().await.expect("incoming_call");
    let end = ended(&mut browser, &incoming.call_id).await;
    assert_eq!(
        (end.ended_by, end.cause.as_str()),
        (EndedBy::Remote, "cancelled")
    );
    uac_done(caller).await.assert_success();
    assert_no_leftovers(&gateway).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pbx_hold_and_resume_are_reported() {
    pbx_holds_and_resumes("uas_pbx_hold.xml").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pbx_hold_and_resume_by_offerless_reinvite_take_the_answer_from_the_ack() {
    pbx_holds_and_resumes("uas_pbx_hold_offerless.xml").await;
}

/// The PBX (`scenario`) holds the answered call and resumes it; the browser hears of both.
async fn pbx_holds_and_resumes(scenario: &str) {
    let sipp = SippUas::start(scenario, SippOptions::default());
    let gateway = start_gateway(test_settings(sipp.sip_addr())).await;
    let mut browser = browser(&gateway).await;
    let call = browser.call("1000", BTreeMap::new()).await.expect("call");
    let id = call.call_id().to_string();
    let held = browser
        .wait_for("held", |m| matches!(m, ServerMessage::CallHeld(_)))
        .await
        .expect("held");
    assert!(matches!(held, ServerMessage::CallHeld(h) if h.by == HoldBy::Remote));
    let resumed = browser
        .wait_for("resumed", |m| matches!(m, ServerMessage::CallResumed(_)))
        .await
        .expect("resumed");
    assert!(matches!(resumed, ServerMessage::CallResumed(h) if h.by == HoldBy::Remote));
    browser.hangup(&id).await.expect("hangup");
    ended(&mut browser, &id).await;
    call.stop().await;
    done(sipp).await.assert_success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_hold_is_seen_by_the_pbx_as_sendonly() {
    let sipp = SippUas::start("uas_agent_hold.xml", SippOptions::default());
    let gateway = start_gateway(test_settings(sipp.sip_addr())).await;
    let mut browser = browser(&gateway).await;
    let call = browser.call("1000", BTreeMap::new()).await.expect("call");
    let id = call.call_id().to_string();
    browser
        .wait_for("answered", |m| matches!(m, ServerMessage::CallAnswered(_)))
        .await
        .expect("answered");
    let hold = CallRef {
        request_id: browser.next_request_id(),
        call_id: id.clone(),
    };
    assert!(matches!(
        request(&mut browser, ClientMessage::Hold(hold)).await,
        ServerMessage::Ack(_)
    ));
    browser
        .wait_for("held", |m| matches!(m, ServerMessage::CallHeld(_)))
        .await
        .expect("held");
    let unhold = CallRef {
        request_id: browser.next_request_id(),
        call_id: id.clone(),
    };
    assert!(matches!(
        request(&mut browser, ClientMessage::Unhold(unhold)).await,
        ServerMessage::Ack(_)
    ));
    browser
        .wait_for("resumed", |m| matches!(m, ServerMessage::CallResumed(_)))
        .await
        .expect("resumed");
    browser.hangup(&id).await.expect("hangup");
    ended(&mut browser, &id).await;
    call.stop().await;
    done(sipp).await.assert_success();
}

/// A call with `sip.dtmf_mode = info` to `sipp`, answered, on which the agent has pressed
/// `digits`; the gateway is returned so that it lives as long as the test needs it.
async fn info_call_pressing(
    sipp: &SippUas,
    digits: &str,
) -> (gateway::app::Gateway, SimBrowser, SimCall) {
    let mut settings = test_settings(sipp.sip_addr());
    settings.sip.dtmf_mode = gateway::config::DtmfModeSetting::Info;
    let gateway = start_gateway(settings).await;
    let mut browser = browser(&gateway).await;
    let call = browser.call("1000", BTreeMap::new()).await.expect("call");
    browser
        .wait_for("answered", |m| matches!(m, ServerMessage::CallAnswered(_)))
        .await
        .expect("answered");
    let request_id = browser.next_request_id();
    let dtmf = DtmfRequest {
        request_id,
        call_id: call.call_id().to_string(),
        digits: digits.into(),
        duration_ms: None,
    };
    assert!(matches!(
        request(&mut browser, ClientMessage::Dtmf(dtmf)).await,
        ServerMessage::Ack(_)
    ));
    (gateway, browser, call)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_dtmf_both_ways() {
    let sipp = SippUas::start(
        "uas_info_dtmf.xml",
        SippOptions::default().key("expect_digit", "5"),
    );
    let (_gateway, mut browser, call) = info_call_pressing(&sipp, "5").await;
    let id = call.call_id().to_string();
    match browser
        .wait_for("dtmf", |m| matches!(m, ServerMessage::DtmfReceived(_)))
        .await
        .expect("dtmf")
    {
        ServerMessage::DtmfReceived(d) => {
            assert_eq!((d.call_id.as_str(), d.digit.as_str()), (id.as_str(), "7"))
        }
        other => panic!("{other:?}"),
    }
    browser.hangup(&id).await.expect("hangup");
    ended(&mut browser, &id).await;
    call.stop().await;
    done(sipp).await.assert_success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_digits_reach_the_pbx_in_the_order_pressed() {
    let sipp = SippUas::start(
        "uas_info_dtmf_digits.xml",
        SippOptions::default().key("expect_digits", "19#7"),
    );
    let (_gateway, mut browser, call) = info_call_pressing(&sipp, "19#7").await;
    let id = call.call_id().to_string();
    // The PBX checks the digits; hang up once it answers the fourth.
    let actions = sipp.log_dir().join("actions.log");
    let taken = eventually(Duration::from_secs(10), || {
        std::fs::read_to_string(&actions).is_ok_and(|log| log.contains("answering the fourth"))
    })
    .await;
    assert!(taken, "the PBX never took four INFO digits");
    browser.hangup(&id).await.expect("hangup");
    ended(&mut browser, &id).await;
    call.stop().await;
    done(sipp).await.assert_success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_pbx_ends_the_call_with_a_timeout() {
    // A socket that swallows everything: no ICMP, no answer, so SIP Timer B must fire.
    let black_hole = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let gateway = start_gateway(test_settings(black_hole.local_addr().expect("addr"))).await;
    let mut browser = browser(&gateway).await;
    browser.set_timeout(Duration::from_secs(45));
    let call = browser
        .call("1000", BTreeMap::new())
        .await
        .expect("call accepted");
    let end = ended(&mut browser, call.call_id()).await;
    assert_eq!(end.ended_by, EndedBy::Remote, "{end:?}");
    assert_eq!(
        (end.cause.as_str(), end.sip_status),
        ("timeout", Some(408)),
        "{end:?}"
    );
    call.stop().await;
    assert_no_leftovers(&gateway).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invite_for_an_unknown_agent_gets_404() {
    let pbx = start_demo(None).await;
    let gateway = start_gateway(test_settings(pbx.sip_addr())).await;
    let text =
        raw_invite_final_response(gateway.sip_addr(), "nobody-1234", "1002", "unknown-agent").await;
    assert!(text.starts_with("SIP/2.0 404"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_timer_refreshes_before_expiry() {
    let sipp = SippUas::start(
        "uas_session_timer.xml",
        SippOptions::default().key("session_expires", 4),
    );
    let gateway = start_gateway(test_settings(sipp.sip_addr())).await;
    let mut browser = browser(&gateway).await;
    let call = browser.call("1000", BTreeMap::new()).await.expect("call");
    let id = call.call_id().to_string();
    browser
        .wait_for("answered", |m| matches!(m, ServerMessage::CallAnswered(_)))
        .await
        .expect("answered");
    // The refresh is due after half of the 4 s; leave time for it, then hang up.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    browser.hangup(&id).await.expect("hangup");
    let end = ended(&mut browser, &id).await;
    assert_eq!(
        end.cause, "normal_clearing",
        "the refreshed session must still be up: {end:?}"
    );
    call.stop().await;
    done(sipp).await.assert_success();
    assert_no_leftovers(&gateway).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pbx_that_stops_answering_ends_the_call_cleanly() {
    let sipp = SippUas::start("uas_stop_answering.xml", SippOptions::default());
    let mut settings = test_settings(sipp.sip_addr());
    // Longer than the re-INVITE's 32 s transaction timeout, so the SIP failure ends the call.
    settings.rtp.inactivity_timeout = Duration::from_secs(60);
    let gateway = start_gateway(settings).await;
    let mut browser = browser(&gateway).await;
    browser.set_timeout(Duration::from_secs(45));
    let call = browser.call("1000", BTreeMap::new()).await.expect("call");
    let id = call.call_id().to_string();
    browser
        .wait_for("answered", |m| matches!(m, ServerMessage::CallAnswered(_)))
        .await
        .expect("answered");
    let hold = CallRef {
        request_id: browser.next_request_id(),
        call_id: id.clone(),
    };
    assert!(matches!(
        request(&mut browser, ClientMessage::Hold(hold)).await,
        ServerMessage::Ack(_)
    ));
    let end = ended(&mut browser, &id).await;
    assert_eq!(
        (end.ended_by, end.cause.as_str(), end.answered),
        (EndedBy::Gateway, "timeout", true),
        "{end:?}"
    );
    call.stop().await;
    done(sipp).await.assert_success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_to_an_empty_target_is_refused() {
    let sipp = SippUas::start("uas_echo.xml", SippOptions::default());
    let gateway = start_gateway(test_settings(sipp.sip_addr())).await;
    let mut browser = browser(&gateway).await;
    let call = browser.call("1000", BTreeMap::new()).await.expect("call");
    let id = call.call_id().to_string();
    browser
        .wait_for("answered", |m| matches!(m, ServerMessage::CallAnswered(_)))
        .await
        .expect("answered");
    for to in ["", "  ", "bad target"] {
        let request_id = browser.next_request_id();
        let transfer = signaling::TransferRequest {
            request_id,
            call_id: id.clone(),
            to: Some(to.into()),
            replaces_call_id: None,
        };
        assert!(
            matches!(request(&mut browser, ClientMessage::Transfer(transfer)).await, ServerMessage::Error(e) if e.code == signaling::ErrorCode::InvalidNumber),
            "{to:?}"
        );
    }
    browser.hangup(&id).await.expect("hangup");
    ended(&mut browser, &id).await;
    call.stop().await;
    done(sipp).await.assert_success();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_glare_is_retried_after_a_back_off() {
    let sipp = SippUas::start("uas_agent_hold_glare.xml", SippOptions::default());
    let gateway = start_gateway(test_settings(sipp.sip_addr())).await;
    let mut browser = browser(&gateway).await;
    let call = browser.call("1000", BTreeMap::new()).await.expect("call");
    let id = call.call_id().to_string();
    browser
        .wait_for("answered", |m| matches!(m, ServerMessage::CallAnswered(_)))
        .await
        .expect("answered");
    let hold = CallRef {
        request_id: browser.next_request_id(),
        call_id: id.clone(),
    };
    assert!(matches!(
        request(&mut browser, ClientMessage::Hold(hold)).await,
        ServerMessage::Ack(_)
    ));
    browser
        .wait_for("held after the retry", |m| {
            matches!(m, ServerMessage::CallHeld(_))
        })
        .await
        .expect("held");
    browser.hangup(&id).await.expect("hangup");
    ended(&mut browser, &id).await;
    call.stop().await;
    done(sipp).await.assert_success();
}
