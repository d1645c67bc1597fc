//! Calls through callgate to SIPp (Debian `sip-tester`) playing the PBX: every SIP flow of the
//! first-call feature set against a real, independent SIP implementation.

use std::collections::BTreeMap;
use std::time::Duration;

use gateway::config::SipTransport;
use loadtest::browser::{CallEvent, SimBrowser};
use signaling::EndedBy;

use crate::sipp::{SippOptions, SippOutcome, SippUas, Transport};
use crate::support::*;

/// Waits for SIPp off the async runtime (its wait blocks the thread).
async fn sipp_done(mut sipp: SippUas) -> SippOutcome {
    tokio::task::spawn_blocking(move || sipp.wait(Duration::from_secs(20)))
        .await
        .expect("SIPp waiter")
}

async fn setup(scenario: &str, opts: SippOptions) -> (SippUas, gateway::app::Gateway, SimBrowser) {
    let sipp = SippUas::start(scenario, opts);
    let gateway = start_gateway(test_settings(sipp.sip_addr())).await;
    let browser = browser(&gateway).await;
    (sipp, gateway, browser)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_echo_carries_audio_both_ways_and_agent_hangs_up_with_bye() {
    let (sipp, gateway, mut browser) = setup("uas_echo.xml", SippOptions::default()).await;
    let call = browser
        .call("1000", BTreeMap::new())
        .await
        .expect("call accepted");
    let id = call.call_id().to_string();
    assert!(matches!(event(&mut browser, &id).await, CallEvent::Ringing(r) if r.sip_status == 180));
    assert!(matches!(
        event(&mut browser, &id).await,
        CallEvent::Answered(_)
    ));
    let stats = call
        .wait_frames(100, Duration::from_secs(10))
        .await
        .expect("SIPp echoes our audio");
    assert_eq!(
        (stats.corrupted, stats.foreign, stats.duplicates),
        (0, 0, 0),
        "{stats:?}"
    );
    assert!(stats.rtt.count() >= 100);

    browser.hangup(&id).await.expect("hangup acked");
    let end = ended(&mut browser, &id).await;
    assert_eq!(
        (end.ended_by, end.cause.as_str(), end.answered),
        (EndedBy::Agent, "normal_clearing", true)
    );
    call.stop().await;
    sipp_done(sipp).await.assert_success();
    assert_no_leftovers(&gateway).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_early_media_is_reported_then_answered() {
    let (sipp, gateway, mut browser) = setup("uas_early_media.xml", SippOptions::default()).await;
    let call = browser
        .call("1000", BTreeMap::new())
        .await
        .expect("call accepted");
    let id = call.call_id().to_string();
    assert!(
        matches!(event(&mut browser, &id).await, CallEvent::EarlyMedia(e) if e.sip_status == 183)
    );
    assert!(matches!(
        event(&mut browser, &id).await,
        CallEvent::Answered(_)
    ));
    call.wait_frames(50, Duration::from_secs(10))
        .await
        .expect("audio after answer");
    browser.hangup(&id).await.expect("hangup acked");
    assert_eq!(ended(&mut browser, &id).await.cause, "normal_clearing");
    call.stop().await;
    sipp_done(sipp).await.assert_success();
    assert_no_leftovers(&gateway).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_hangs_up_with_bye() {
    let (sipp, gateway, mut browser) = setup("uas_remote_bye.xml", SippOptions::default()).await;
    let call = browser
        .call("1000", BTreeMap::new())
        .await
        .expect("call accepted");
    let id = call.call_id().to_string();
    let end = ended(&mut browser, &id).await;
    assert_eq!(
        (end.ended_by, end.cause.as_str(), end.answered),
        (EndedBy::Remote, "normal_clearing", true)
    );
    call.stop().await;
    sipp_done(sipp).await.assert_success();
    assert_no_leftovers(&gateway).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_busy_ends_the_call_with_486() {
    let (sipp, gateway, mut browser) = setup("uas_busy.xml", SippOptions::default()).await;
    let call = browser
        .call("1000", BTreeMap::new())
        .await
        .expect("call accepted");
    let end = ended(&mut browser, call.call_id()).await;
    assert_eq!(end.ended_by, EndedBy::Remote);
    assert_eq!(
        (end.cause.as_str(), end.sip_status, end.answered),
        ("busy", Some(486), false)
    );
    call.stop().await;
    sipp_done(sipp).await.assert_success();
    assert_no_leftovers(&gateway).await;
    let (_, metrics) = http_get(gateway.http_addr(), "/metrics").await;
    assert_eq!(
        metric(&metrics, "callgate_calls_total{result=\"busy\"}"),
        1.0
    );
    assert_eq!(
        metric(&metrics, "callgate_sip_responses_total{code=\"486\"}"),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_temporarily_unavailable_ends_with_480() {
    let (sipp, _gateway, mut browser) =
        setup("uas_no_answer_480.xml", SippOptions::default()).await;
    let call = browser
        .call("1000", BTreeMap::new())
        .await
        .expect("call accepted");
    let id = call.call_id().to_string();
    assert!(matches!(
        event(&mut browser, &id).await,
        CallEvent::Ringing(_)
    ));
    let end = ended(&mut browser, &id).await;
    assert_eq!(
        (end.cause.as_str(), end.sip_status),
        ("unavailable", Some(480))
    );
    call.stop().await;
    sipp_done(sipp).await.assert_success();
}

/// Calls `scenario`'s SIPp, hangs up once it rings, and returns how the call ended, after
/// SIPp's run passed and the gateway kept nothing.
async fn hang_up_while_ringing(scenario: &str) -> signaling::CallEnded {
    let (sipp, gateway, mut browser) = setup(scenario, SippOptions::default()).await;
    let call = browser
        .call("1000", BTreeMap::new())
        .await
        .expect("call accepted");
    let id = call.call_id().to_string();
    assert!(matches!(
        event(&mut browser, &id).await,
        CallEvent::Ringing(_)
    ));
    browser.hangup(&id).await.expect("hangup acked");
    let end = ended(&mut browser, &id).await;
    call.stop().await;
    sipp_done(sipp).await.assert_success();
    assert_no_leftovers(&gateway).await;
    end
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_hangup_while_ringing_sends_cancel() {
    let end = hang_up_while_ringing("uas_ring_then_cancel.xml").await;
    assert_eq!(
        (end.ended_by, end.cause.as_str(), end.answered),
        (EndedBy::Agent, "cancelled", false)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_crossing_the_cancel_is_acked_and_ended_with_bye() {
    let end = hang_up_while_ringing("uas_answer_crosses_cancel.xml").await;
    assert_eq!(end.ended_by, EndedBy::Agent, "{end:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_forked_answer_is_acked_and_ended_with_bye() {
    let (sipp, gateway, mut browser) =
        setup("uas_forked_answers.xml", SippOptions::default()).await;
    let call = answered_call(&mut browser, "1000")
        .await
        .unwrap_or_else(|e| panic!("ended before answer: {e:?}"));
    let id = call.call_id().to_string();
    // The first phone's leg carries the audio; the second one's was ended at once.
    call.wait_frames(25, Duration::from_secs(10))
        .await
        .expect("audio on the kept leg");
    browser.hangup(&id).await.expect("hangup acked");
    assert_eq!(ended(&mut browser, &id).await.cause, "normal_clearing");
    call.stop().await;
    sipp_done(sipp).await.assert_success();
    assert_no_leftovers(&gateway).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_challenges_are_answered_with_the_agents_credentials() {
    for scenario in ["uas_auth_challenge.xml", "uas_auth_challenge_401.xml"] {
        let (sipp, gateway, mut browser) =
            setup(scenario, SippOptions::default().auth("1001", "secret")).await;
        let call = answered_call(&mut browser, "1000")
            .await
            .unwrap_or_else(|e| panic!("{scenario}: ended before answer: {e:?}"));
        let id = call.call_id().to_string();
        browser.hangup(&id).await.expect("hangup acked");
        ended(&mut browser, &id).await;
        call.stop().await;
        sipp_done(sipp).await.assert_success();
        assert_no_leftovers(&gateway).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_fails_the_call_with_the_pbx_status() {
    let sipp = SippUas::start(
        "uas_auth_challenge_401.xml",
        SippOptions::default().auth("1001", "other"),
    );
    let gateway = start_gateway(test_settings(sipp.sip_addr())).await;
    let mut browser = browser(&gateway).await;
    let call = browser
        .call("1000", BTreeMap::new())
        .await
        .expect("call accepted");
    let end = ended(&mut browser, call.call_id()).await;
    assert_eq!(
        (end.ended_by, end.cause.as_str(), end.sip_status),
        (EndedBy::Remote, "forbidden", Some(403))
    );
    call.stop().await;
    sipp_done(sipp).await.assert_failed_call();
    assert_no_leftovers(&gateway).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_pbx_leg_ends_the_call_with_media_timeout() {
    let sipp = SippUas::start("uas_echo.xml", SippOptions::default().rtp_echo(false));
    let mut settings = test_settings(sipp.sip_addr());
    settings.rtp.inactivity_timeout = Duration::from_secs(2);
    let gateway = start_gateway(settings).await;
    let mut browser = browser(&gateway).await;
    let call = browser
        .call("1000", BTreeMap::new())
        .await
        .expect("call accepted");
    let end = ended(&mut browser, call.call_id()).await;
    assert_eq!(
        (end.ended_by, end.cause.as_str(), end.answered),
        (EndedBy::Gateway, "media_timeout", true)
    );
    call.stop().await;
    sipp_done(sipp).await.assert_success(); // it received our BYE
    assert_no_leftovers(&gateway).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sip_over_tcp_carries_the_same_call() {
    let sipp = SippUas::start(
        "uas_echo.xml",
        SippOptions::default().transport(Transport::Tcp),
    );
    let mut settings = test_settings(sipp.sip_addr());
    settings.sip.transport = SipTransport::Tcp;
    let gateway = start_gateway(settings).await;
    let mut browser = browser(&gateway).await;
    let call = browser
        .call("1000", BTreeMap::new())
        .await
        .expect("call accepted");
    let id = call.call_id().to_string();
    call.wait_frames(50, Duration::from_secs(10))
        .await
        .expect("audio over a TCP-signalled call");
    browser.hangup(&id).await.expect("hangup acked");
    assert_eq!(ended(&mut browser, &id).await.cause, "normal_clearing");
    call.stop().await;
    sipp_done(sipp).await.assert_success();
    assert_no_leftovers(&gateway).await;
}
