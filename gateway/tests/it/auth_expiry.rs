//! Token sessions over time, against the real gateway and the demo PBX: `refresh_token`
//! (accepted, or refused with a clear code), the `token_expiring` warning, what an expired
//! session still does (its calls go on with audio) and refuses (new activity), its end
//! (close 4002, the registration removed at the PBX), resuming around an expiry, and the
//! credentials file reloaded on change and on SIGHUP. Tokens live a few seconds here; no
//! assertion depends on how fast anything happens.

use std::collections::BTreeMap;
use std::time::Duration;

use gateway::app::Gateway;
use loadtest::browser::{CallEvent, SimBrowser};
use serde_json::json;
use signaling::{
    Auth, ClientMessage, ErrorCode, Hello, MessageRequest, PROTOCOL_VERSION, RefreshTokenRequest,
    ServerMessage, TransferRequest, Welcome,
};

use crate::auth::{
    PBX_PASSWORD, SECRET, connect, credentials_file, hs256, register, temp_dir, token_settings,
    unix_now,
};
use crate::support::*;

/// A token for `sub` living `secs` seconds, with optional `dial` patterns.
fn token(sub: &str, secs: u64, dial: Option<&[&str]>) -> String {
    let mut claims = json!({"sub": sub, "exp": unix_now() + secs});
    if let Some(dial) = dial {
        claims["dial"] = json!(dial);
    }
    hs256(&claims, SECRET)
}

/// Token settings with no leeway, so a session's token runs out at its `exp`.
fn strict_settings(
    pbx: &gateway::demo::DemoPbx,
    dir: &std::path::Path,
) -> gateway::config::Settings {
    let mut settings = token_settings(pbx.sip_addr(), dir);
    settings.auth.token_leeway_secs = 0;
    settings
}

/// Says `hello` with a token (and maybe a resume token); the welcome or the refusal's code.
async fn hello(
    browser: &mut SimBrowser,
    token: &str,
    resume_token: Option<&str>,
) -> Result<Welcome, ErrorCode> {
    let message = ClientMessage::Hello(Hello {
        request_id: browser.next_request_id(),
        protocol: PROTOCOL_VERSION,
        auth: Auth::Token {
            extension: None,
            token: token.to_string(),
        },
        user_agent: Some("expiry-test".into()),
        resume_token: resume_token.map(str::to_string),
    });
    match browser.request(&message, "the welcome").await {
        Ok(ServerMessage::Welcome(welcome)) => Ok(welcome),
        Ok(other) => panic!("unexpected reply {other:?}"),
        Err(e) => Err(e.code().unwrap_or_else(|| panic!("no reply: {e}"))),
    }
}

async fn open(gateway: &Gateway, token: &str) -> (SimBrowser, Welcome) {
    let mut browser = connect(gateway).await;
    let welcome = hello(&mut browser, token, None)
        .await
        .expect("token login accepted");
    (browser, welcome)
}

/// Sends `refresh_token`; the new expiry or the refusal's code.
async fn refresh(browser: &mut SimBrowser, token: &str) -> Result<u64, ErrorCode> {
    let message = ClientMessage::RefreshToken(RefreshTokenRequest {
        request_id: browser.next_request_id(),
        token: token.to_string(),
    });
    match browser.request(&message, "the refresh reply").await {
        Ok(ServerMessage::TokenRefreshed(refreshed)) => Ok(refreshed.expires_at),
        Ok(other) => panic!("unexpected reply {other:?}"),
        Err(e) => Err(e.code().unwrap_or_else(|| panic!("no reply: {e}"))),
    }
}

/// The reply code of `message` (None for a positive reply).
async fn refusal(browser: &mut SimBrowser, message: &ClientMessage) -> Option<ErrorCode> {
    match browser.request(message, "a reply").await {
        Ok(_) => None,
        Err(e) => Some(e.code().unwrap_or_else(|| panic!("no reply: {e}"))),
    }
}

async fn wait_expiring(browser: &mut SimBrowser) -> u64 {
    match browser
        .wait_for("token_expiring", |m| {
            matches!(m, ServerMessage::TokenExpiring(_))
        })
        .await
        .expect("token_expiring arrives")
    {
        ServerMessage::TokenExpiring(e) => e.expires_at,
        _ => unreachable!("matched above"),
    }
}

async fn wait_expired(browser: &mut SimBrowser) -> signaling::TokenExpired {
    match browser
        .wait_for("token_expired", |m| {
            matches!(m, ServerMessage::TokenExpired(_))
        })
        .await
        .expect("token_expired arrives")
    {
        ServerMessage::TokenExpired(e) => e,
        _ => unreachable!("matched above"),
    }
}

/// Reads until the gateway closes the socket; its close code and reason.
async fn closed(browser: &mut SimBrowser) -> String {
    loop {
        match browser.recv().await {
            Ok(_) => continue,
            Err(loadtest::Error::Closed { reason }) => return reason.unwrap_or_default(),
            Err(e) => panic!("expected a close, got {e}"),
        }
    }
}

async fn metrics_value(gateway: &Gateway, name: &str) -> f64 {
    let (_, text) = http_get(gateway.http_addr(), "/metrics").await;
    metric(&text, name)
}

/// Waits (up to 10 s) until the metric reaches `value`.
async fn wait_metric(gateway: &Gateway, name: &str, value: f64) {
    for _ in 0..200 {
        if metrics_value(gateway, name).await >= value {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{name} never reached {value} (is {})",
        metrics_value(gateway, name).await
    );
}

fn message_request(browser: &mut SimBrowser, to: &str) -> ClientMessage {
    ClientMessage::Message(MessageRequest {
        request_id: browser.next_request_id(),
        to: to.into(),
        text: "hello".into(),
        content_type: None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_extends_a_session_and_bad_refreshes_get_clear_codes() {
    let pbx = start_demo(Some(PBX_PASSWORD)).await;
    let dir = temp_dir();
    let mut settings = strict_settings(&pbx, &dir);
    settings.auth.password_mode = true;
    let gateway = start_gateway(settings).await;

    let first = token("1001", 4, None);
    let (mut browser, welcome) = open(&gateway, &first).await;
    let first_exp = welcome.token_expires_at.expect("welcome tells the expiry");
    assert!(first_exp >= unix_now() + 2, "{first_exp}");
    // Warned ahead of `exp` (half the lifetime of so short a token).
    assert_eq!(wait_expiring(&mut browser).await, first_exp);

    let forged = hs256(
        &json!({"sub": "1001", "exp": unix_now() + 60}),
        "another-secret-of-at-least-32-bytes!",
    );
    let expired = hs256(&json!({"sub": "1001", "exp": unix_now() - 60}), SECRET);
    for (what, bad, code) in [
        ("garbage", "not.a.jwt".to_string(), ErrorCode::AuthFailed),
        ("forged", forged, ErrorCode::AuthFailed),
        ("expired", expired, ErrorCode::TokenExpired),
        (
            "another agent",
            token("1002", 60, None),
            ErrorCode::TokenMismatch,
        ),
    ] {
        assert_eq!(refresh(&mut browser, &bad).await, Err(code), "{what}");
    }

    // A good refresh: a later expiry, and its dial claim replaces the (absent) old one.
    let second = token("1001", 60, Some(&["echo"]));
    let second_exp = refresh(&mut browser, &second).await.expect("refreshed");
    assert!(second_exp > first_exp);
    // Past the first token's exp the session goes on.
    while unix_now() <= first_exp + 1 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    browser.ping().await.expect("the session is alive");
    let refused = browser
        .call("1002", BTreeMap::new())
        .await
        .err()
        .and_then(|e| e.code());
    assert_eq!(
        refused,
        Some(ErrorCode::NumberNotAllowed),
        "the new dial claim"
    );
    crate::auth::echo_call(&mut browser).await;

    // A password session has no token to refresh.
    let mut password = connect(&gateway).await;
    password
        .hello("1001", PBX_PASSWORD)
        .await
        .expect("password login");
    assert_eq!(
        refresh(&mut password, &second).await,
        Err(ErrorCode::AuthModeDisabled)
    );

    let (_, text) = http_get(gateway.http_addr(), "/metrics").await;
    for (outcome, count) in [
        ("ok", 1.0),
        ("invalid", 2.0),
        ("expired", 1.0),
        ("mismatch", 1.0),
        ("mode_disabled", 1.0),
    ] {
        assert_eq!(
            metric(
                &text,
                &format!("callgate_token_refreshes_total{{outcome=\"{outcome}\"}}")
            ),
            count,
            "{outcome}\n{text}"
        );
    }
    assert_eq!(metric(&text, "callgate_token_expiries_total"), 0.0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_without_calls_closes_and_leaves_the_registrar() {
    let pbx = start_demo(Some(PBX_PASSWORD)).await;
    let dir = temp_dir();
    let gateway = start_gateway(strict_settings(&pbx, &dir)).await;

    let (mut browser, welcome) = open(&gateway, &token("1001", 3, None)).await;
    assert!(register(&mut browser).await);
    assert_eq!(pbx.registrations().len(), 1);
    wait_expiring(&mut browser).await;
    let expired = wait_expired(&mut browser).await;
    assert_eq!(Some(expired.expires_at), welcome.token_expires_at);
    assert_eq!(expired.active_calls, 0);
    let reason = closed(&mut browser).await;
    assert!(reason.starts_with("4002"), "{reason}");
    assert!(
        eventually(Duration::from_secs(10), || pbx.registrations().is_empty()).await,
        "Expires: 0 reached the PBX"
    );
    wait_metric(&gateway, "callgate_token_expiries_total", 1.0).await;
    assert_no_leftovers(&gateway).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_outlives_the_token_then_the_session_ends() {
    let pbx = start_demo(Some(PBX_PASSWORD)).await;
    let dir = temp_dir();
    let gateway = start_gateway(strict_settings(&pbx, &dir)).await;

    let (mut browser, _) = open(&gateway, &token("1001", 3, None)).await;
    assert!(register(&mut browser).await);
    let call = answered_call(&mut browser, "echo")
        .await
        .unwrap_or_else(|e| panic!("echo ended: {e:?}"));
    let id = call.call_id().to_string();
    let expired = wait_expired(&mut browser).await;
    assert_eq!(expired.active_calls, 1);
    assert!(
        eventually(Duration::from_secs(10), || pbx.registrations().is_empty()).await,
        "the registration is dropped at expiry"
    );

    // The call goes on with audio.
    let before = call.stats().frames_received;
    call.wait_frames(before + 50, Duration::from_secs(10))
        .await
        .expect("audio still flows after the token expired");
    assert_eq!(pbx.active_calls(), 1);

    // Nothing new is accepted meanwhile.
    let refused = browser
        .call("echo", BTreeMap::new())
        .await
        .err()
        .and_then(|e| e.code());
    assert_eq!(refused, Some(ErrorCode::TokenExpired));
    let register_request = ClientMessage::Register {
        request_id: browser.next_request_id(),
    };
    let message_request = message_request(&mut browser, "1002");
    let transfer_request = ClientMessage::Transfer(TransferRequest {
        request_id: browser.next_request_id(),
        call_id: id.clone(),
        to: Some("1002".into()),
        replaces_call_id: None,
    });
    for request in [register_request, message_request, transfer_request] {
        assert_eq!(
            refusal(&mut browser, &request).await,
            Some(ErrorCode::TokenExpired),
            "{request:?}"
        );
    }
    assert_eq!(
        refresh(&mut browser, &token("1001", 60, None)).await,
        Err(ErrorCode::TokenExpired),
        "expiry is final"
    );
    // In-call controls still work.
    let hold = ClientMessage::Mute(signaling::CallRef {
        request_id: browser.next_request_id(),
        call_id: id.clone(),
    });
    assert_eq!(refusal(&mut browser, &hold).await, None);
    browser.ping().await.expect("ping");

    // The agent hangs up: the session ends.
    browser.hangup(&id).await.expect("hangup");
    ended(&mut browser, &id).await;
    call.stop().await;
    let reason = closed(&mut browser).await;
    assert!(reason.starts_with("4002"), "{reason}");
    assert!(eventually(Duration::from_secs(10), || pbx.active_calls() == 0).await);
    assert_no_leftovers(&gateway).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_adopts_the_new_token_but_an_expired_session_only_keeps_its_calls() {
    let pbx = start_demo(Some(PBX_PASSWORD)).await;
    let dir = temp_dir();
    let mut settings = strict_settings(&pbx, &dir);
    settings.calls.resume_grace = Duration::from_secs(30);
    let gateway = start_gateway(settings).await;

    // Before expiry: the resuming hello's newer token becomes the session's.
    let (mut browser, welcome) = open(&gateway, &token("1001", 3, None)).await;
    let old_exp = welcome.token_expires_at.expect("expiry");
    assert!(register(&mut browser).await);
    drop(browser);
    wait_metric(&gateway, "callgate_sessions_detached", 1.0).await;
    let resume = welcome.resume_token.expect("resume token");
    let mut browser = connect(&gateway).await;
    let welcome = hello(&mut browser, &token("1001", 60, None), Some(&resume))
        .await
        .expect("resumed");
    assert!(welcome.resumed.is_some(), "the session was resumed");
    let new_exp = welcome.token_expires_at.expect("expiry");
    assert!(new_exp > old_exp);
    while unix_now() <= old_exp + 1 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    browser
        .ping()
        .await
        .expect("alive past the old token's exp");
    assert_eq!(pbx.registrations().len(), 1);
    browser.close().await.expect("logout");

    // A session whose token expires while detached keeps its call for the grace period;
    // resuming gives the call back but no new activity.
    let (mut browser, welcome) = open(&gateway, &token("1001", 3, None)).await;
    let exp = welcome.token_expires_at.expect("expiry");
    let call = browser.call("echo", BTreeMap::new()).await.expect("call");
    let id = call.call_id().to_string();
    loop {
        if let CallEvent::Answered(_) = event(&mut browser, &id).await {
            break;
        }
    }
    call.stop_sending().await.expect("stop sending");
    drop(call);
    drop(browser);
    wait_metric(&gateway, "callgate_sessions_detached", 1.0).await;
    wait_metric(&gateway, "callgate_token_expiries_total", 1.0).await;
    assert_eq!(pbx.active_calls(), 1, "the call survives the expiry");

    let resume = welcome.resume_token.expect("resume token");
    let mut browser = connect(&gateway).await;
    let welcome = hello(&mut browser, &token("1001", 60, None), Some(&resume))
        .await
        .expect("resumed");
    let resumed = welcome.resumed.expect("the session was resumed");
    assert_eq!(resumed.calls.len(), 1);
    assert!(!resumed.registered);
    assert_eq!(
        welcome.token_expires_at,
        Some(exp),
        "the expired token stays"
    );
    let expired = wait_expired(&mut browser).await;
    assert_eq!(expired.active_calls, 1);
    let refused = browser
        .call("echo", BTreeMap::new())
        .await
        .err()
        .and_then(|e| e.code());
    assert_eq!(refused, Some(ErrorCode::TokenExpired));
    browser.hangup(&id).await.expect("hangup");
    ended(&mut browser, &id).await;
    let reason = closed(&mut browser).await;
    assert!(reason.starts_with("4002"), "{reason}");
    assert!(eventually(Duration::from_secs(10), || pbx.active_calls() == 0).await);
    assert_no_leftovers(&gateway).await;
    let _ = std::fs::remove_dir_all(&dir);
}

fn credentials(entries: &[(&str, &str)]) -> String {
    entries
        .iter()
        .map(|(extension, password)| format!("\"{extension}\" = \"{password}\"\n"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_credentials_file_is_reloaded_and_a_broken_one_keeps_the_old_entries() {
    let pbx = start_demo(Some(PBX_PASSWORD)).await;
    let dir = temp_dir();
    let mut settings = strict_settings(&pbx, &dir);
    let file = credentials_file(&dir, &credentials(&[("1001", PBX_PASSWORD)]));
    settings.auth.credentials_file = Some(file.clone());
    settings.auth.credentials_reload_interval = Duration::from_secs(1);
    let gateway = start_gateway(settings).await;
    let ok = "callgate_credentials_reloads_total{result=\"ok\"}";
    let failed = "callgate_credentials_reloads_total{result=\"failed\"}";

    let mut unknown = connect(&gateway).await;
    assert_eq!(
        hello(&mut unknown, &token("1004", 60, None), None)
            .await
            .err(),
        Some(ErrorCode::AuthFailed)
    );

    // Added: 1004 logs in and registers with its new entry.
    std::fs::write(
        &file,
        credentials(&[("1001", PBX_PASSWORD), ("1004", PBX_PASSWORD)]),
    )
    .expect("write");
    wait_metric(&gateway, ok, 1.0).await;
    let (mut agent, _) = open(&gateway, &token("1004", 60, None)).await;
    assert!(register(&mut agent).await);
    let call = agent.call("echo", BTreeMap::new()).await.expect("call");
    let id = call.call_id().to_string();
    loop {
        if let CallEvent::Answered(_) = event(&mut agent, &id).await {
            break;
        }
    }

    // Changed: 1001's new (wrong) password is what the next login uses.
    std::fs::write(
        &file,
        credentials(&[("1001", "rotated-wrong"), ("1004", PBX_PASSWORD)]),
    )
    .expect("write");
    wait_metric(&gateway, ok, 2.0).await;
    let (mut rotated, _) = open(&gateway, &token("1001", 60, None)).await;
    assert!(
        !register(&mut rotated).await,
        "the PBX refuses the new password"
    );

    // Broken: logged and counted, the previous entries stay.
    std::fs::write(&file, "this is [not toml").expect("write");
    wait_metric(&gateway, failed, 1.0).await;
    let (mut still, _) = open(&gateway, &token("1004", 60, None)).await;
    still.ping().await.expect("1004's entry is still in force");

    // Removed: 1004 can neither log in nor refresh, but its call goes on.
    std::fs::write(&file, credentials(&[("1001", PBX_PASSWORD)])).expect("write");
    wait_metric(&gateway, ok, 3.0).await;
    let mut gone = connect(&gateway).await;
    assert_eq!(
        hello(&mut gone, &token("1004", 60, None), None).await.err(),
        Some(ErrorCode::AuthFailed)
    );
    assert_eq!(
        refresh(&mut agent, &token("1004", 60, None)).await,
        Err(ErrorCode::AuthFailed)
    );
    let before = call.stats().frames_received;
    call.wait_frames(before + 25, Duration::from_secs(10))
        .await
        .expect("the live call keeps its audio");
    agent.hangup(&id).await.expect("hangup");
    ended(&mut agent, &id).await;
    call.stop().await;
    assert_eq!(metrics_value(&gateway, failed).await, 1.0, "counted once");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_hands_rotated_credentials_to_the_running_registration() {
    let pbx = start_demo(Some(PBX_PASSWORD)).await;
    let dir = temp_dir();
    let mut settings = strict_settings(&pbx, &dir);
    let file = credentials_file(&dir, &credentials(&[("1001", "not-yet-rotated")]));
    settings.auth.credentials_file = Some(file.clone());
    settings.auth.credentials_reload_interval = Duration::from_secs(1);
    let gateway = start_gateway(settings).await;

    // The credentials file lags behind the PBX: the registration is refused for good.
    let (mut agent, _) = open(&gateway, &token("1001", 60, None)).await;
    let ServerMessage::RegistrationFailed(failed) = register_outcome(&mut agent).await else {
        panic!("the PBX must refuse the stale password")
    };
    assert_eq!((failed.sip_status, failed.retrying), (Some(403), false));

    // The file catches up; the page refreshes its token as it would anyway. The running
    // registration retries with the new password without a second `register`.
    std::fs::write(&file, credentials(&[("1001", PBX_PASSWORD)])).expect("write");
    wait_metric(
        &gateway,
        "callgate_credentials_reloads_total{result=\"ok\"}",
        1.0,
    )
    .await;
    refresh(&mut agent, &token("1001", 60, None))
        .await
        .expect("refreshed");
    agent
        .wait_for("the registration with the rotated password", |m| {
            matches!(m, ServerMessage::Registered(_))
        })
        .await
        .expect("registered after the refresh");
    assert!(
        pbx.registrations().iter().any(|(user, _)| user == "1001"),
        "{:?}",
        pbx.registrations()
    );

    // A refresh with unchanged credentials sends nothing new; the agent can still call.
    refresh(&mut agent, &token("1001", 60, None))
        .await
        .expect("refreshed again");
    crate::auth::echo_call(&mut agent).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_credentials_file_when_polling_is_off() {
    let pbx = start_demo(Some(PBX_PASSWORD)).await;
    let dir = temp_dir();
    let mut settings = strict_settings(&pbx, &dir);
    let file = credentials_file(&dir, &credentials(&[("1001", PBX_PASSWORD)]));
    settings.auth.credentials_file = Some(file.clone());
    settings.auth.credentials_reload_interval = Duration::ZERO;
    let gateway = start_gateway(settings).await;

    std::fs::write(
        &file,
        credentials(&[("1001", PBX_PASSWORD), ("1005", PBX_PASSWORD)]),
    )
    .expect("write");
    // This test process is callgate here (other gateways of the test binary re-check their
    // files too, which changes nothing for them).
    let sent = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success());
    wait_metric(
        &gateway,
        "callgate_credentials_reloads_total{result=\"ok\"}",
        1.0,
    )
    .await;
    let (mut browser, _) = open(&gateway, &token("1005", 60, None)).await;
    assert!(register(&mut browser).await);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_use_tokens_are_refused_the_second_time_and_a_resume_needs_a_fresh_one() {
    let pbx = start_demo(Some(PBX_PASSWORD)).await;
    let dir = temp_dir();
    let mut settings = strict_settings(&pbx, &dir);
    settings.auth.single_use_tokens = true;
    settings.calls.resume_grace = Duration::from_secs(30);
    settings
        .validate()
        .expect("single use validates in token mode");
    let gateway = start_gateway(settings).await;
    let minted = |jti: &str| {
        hs256(
            &json!({"sub": "1001", "exp": unix_now() + 60, "jti": jti}),
            SECRET,
        )
    };

    let first = minted("jti-1");
    let (mut browser, welcome) = open(&gateway, &first).await;
    let mut again = connect(&gateway).await;
    assert_eq!(
        hello(&mut again, &first, None).await.err(),
        Some(ErrorCode::TokenReplayed),
        "a second login with the same token"
    );
    assert_eq!(
        refresh(&mut browser, &first).await,
        Err(ErrorCode::TokenReplayed),
        "a refresh with an already used token"
    );
    let no_jti = token("1001", 60, None);
    assert_eq!(
        refresh(&mut browser, &no_jti).await,
        Err(ErrorCode::AuthFailed),
        "single use needs a jti"
    );
    refresh(&mut browser, &minted("jti-2"))
        .await
        .expect("a fresh token refreshes");

    // A dropped page resumes only with a fresh token (the SDK's getToken before reconnecting).
    assert!(register(&mut browser).await);
    drop(browser);
    wait_metric(&gateway, "callgate_sessions_detached", 1.0).await;
    let resume = welcome.resume_token.expect("resume token");
    let mut stale = connect(&gateway).await;
    assert_eq!(
        hello(&mut stale, &minted("jti-2"), Some(&resume))
            .await
            .err(),
        Some(ErrorCode::TokenReplayed)
    );
    let mut fresh = connect(&gateway).await;
    let welcome = hello(&mut fresh, &minted("jti-3"), Some(&resume))
        .await
        .expect("resumed with a fresh token");
    assert!(welcome.resumed.is_some_and(|r| r.registered));

    let (_, text) = http_get(gateway.http_addr(), "/metrics").await;
    assert_eq!(
        metric(&text, "callgate_auth_failures_total{reason=\"replayed\"}"),
        2.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "callgate_token_refreshes_total{outcome=\"replayed\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(&text, "callgate_table_entries{table=\"token_jtis\"}"),
        3.0
    );
    let _ = std::fs::remove_dir_all(&dir);
}
