//! Transfers by REFER: blind against SIPp (NOTIFY sipfrag, then our BYE), and attended with
//! Replaces between two calls through Kamailio.

use std::time::Duration;

use loadtest::browser::SimBrowser;
use signaling::{ClientMessage, EndedBy, ErrorCode, ServerMessage, TransferRequest};

use crate::kamailio::{Kamailio, scenario};
use crate::sipp::{SippOptions, SippUas};
use crate::support::*;

async fn transfer(browser: &mut SimBrowser, request: TransferRequest) -> ServerMessage {
    let id = request.request_id;
    browser
        .send_message(&ClientMessage::Transfer(request))
        .await
        .expect("sent");
    browser
        .wait_for("the transfer reply", |m| {
            matches!(m, ServerMessage::Ack(a) if a.request_id == id)
                || matches!(m, ServerMessage::Error(e) if e.request_id == Some(id))
        })
        .await
        .expect("a reply")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blind_transfer_reports_progress_and_ends_our_leg() {
    let sipp = SippUas::start(
        "uas_refer_blind.xml",
        SippOptions::default().key("refer_to", "1003"),
    );
    let gateway = start_gateway(test_settings(sipp.sip_addr())).await;
    let mut browser = browser(&gateway).await;
    let call = answered_call(&mut browser, "1000").await.expect("answered");
    let id = call.call_id().to_string();

    let request_id = browser.next_request_id();
    let both = TransferRequest {
        request_id,
        call_id: id.clone(),
        to: Some("1003".into()),
        replaces_call_id: Some("c-x".into()),
    };
    assert!(
        matches!(transfer(&mut browser, both).await, ServerMessage::Error(e) if e.code == ErrorCode::InvalidNumber)
    );

    let request_id = browser.next_request_id();
    let blind = TransferRequest {
        request_id,
        call_id: id.clone(),
        to: Some("1003".into()),
        replaces_call_id: None,
    };
    assert!(matches!(
        transfer(&mut browser, blind).await,
        ServerMessage::Ack(_)
    ));
    let mut statuses = Vec::new();
    loop {
        match browser
            .wait_for("transfer progress", |m| {
                matches!(m, ServerMessage::TransferProgress(_))
            })
            .await
            .expect("progress")
        {
            ServerMessage::TransferProgress(p) => {
                statuses.push(p.sip_status);
                if p.done {
                    break;
                }
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(statuses, vec![100, 200]);
    let end = ended(&mut browser, &id).await;
    assert_eq!(
        (end.ended_by, end.cause.as_str(), end.answered),
        (EndedBy::Agent, "transferred", true)
    );
    call.stop().await;
    let mut sipp = sipp;
    tokio::task::spawn_blocking(move || sipp.wait(Duration::from_secs(10)))
        .await
        .expect("waiter")
        .assert_success();
    assert_no_leftovers(&gateway).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attended_transfer_refers_with_replaces_through_kamailio() {
    let mut kam = Kamailio::start(&[("1001", "s3cret"), ("2000", "a"), ("3000", "b")]);
    let mut customer = SippUas::start("uas_refer_attended.xml", SippOptions::default());
    let mut colleague = SippUas::start(&scenario("uas_proxied_echo.xml"), SippOptions::default());
    let customer_contact = format!("sip:2000@{}", customer.sip_addr());
    let colleague_contact = format!("sip:3000@{}", colleague.sip_addr());
    tokio::task::block_in_place(|| {
        kam.register_contact("2000", "a", &customer_contact);
        kam.register_contact("3000", "b", &colleague_contact);
    });
    let mut settings = test_settings(kam.sip_addr());
    settings.sip.domain = Some(kam.domain().to_string());
    let gateway = start_gateway(settings).await;
    let mut browser = browser_as(&gateway, "1001", "s3cret").await;
    let first = answered_call(&mut browser, "2000").await.expect("answered");
    let consult = answered_call(&mut browser, "3000").await.expect("answered");

    let request_id = browser.next_request_id();
    let attended = TransferRequest {
        request_id,
        call_id: first.call_id().to_string(),
        to: None,
        replaces_call_id: Some(consult.call_id().to_string()),
    };
    assert!(matches!(
        transfer(&mut browser, attended).await,
        ServerMessage::Ack(_)
    ));
    let end = ended(&mut browser, first.call_id()).await;
    assert_eq!(end.cause, "transferred", "{end:?}\n{}", kam.report());
    first.stop().await;
    tokio::task::spawn_blocking(move || customer.wait(Duration::from_secs(10)))
        .await
        .expect("waiter")
        .assert_success();

    // The consulted call is still up until the agent leaves it.
    browser.hangup(consult.call_id()).await.expect("hangup");
    ended(&mut browser, consult.call_id()).await;
    consult.stop().await;
    tokio::task::spawn_blocking(move || colleague.wait(Duration::from_secs(10)))
        .await
        .expect("waiter")
        .assert_success();
    assert_no_leftovers(&gateway).await;
}
