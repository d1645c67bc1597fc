//! Self-tests of the Kamailio harness (`kamailio.rs`) with SIPp as the only
//! other party, so that an interop test failing against Kamailio points at
//! the gateway: registration with digest auth (UDP, TCP, qop), wrong
//! credentials, a call between two registered users through the proxy (407
//! challenge, record-routing, loose-routed ACK and BYE), 404 for a user who is
//! not registered, and the process lifecycle.
//!
//! Run with `cargo test -p gateway --test it kamailio`. Loopback only; each
//! test is bounded by the waits below (well under 20 s).

use std::time::Duration;

use crate::kamailio::{Kamailio, KamailioOptions, kamailio_binary, process_running, scenario};
use crate::sipp::{SippOptions, SippOutcome, SippUac, SippUas, Transport};

/// The longest a SIPp scenario against Kamailio may run.
const SIPP_WAIT: Duration = Duration::from_secs(10);

/// How long a registration may take to show in Kamailio's location table.
const REGISTER_WAIT: Duration = Duration::from_secs(5);

/// The Expires the scenarios ask for.
const EXPIRES: u32 = 120;

/// Runs `uac_register.xml` as `user`/`password` against `kam` and returns the
/// outcome; the scenario checks that the final status is `expect_status`.
fn register(
    kam: &Kamailio,
    user: &str,
    password: &str,
    expect_status: u16,
    transport: Transport,
) -> (SippOutcome, SippUac) {
    let opts = SippOptions::default()
        .transport(transport)
        .rtp_echo(false)
        .auth(user, password)
        .key("expect_status", expect_status)
        .key("expires", EXPIRES);
    let mut uac = SippUac::start(&scenario("uac_register.xml"), kam.sip_addr(), opts);
    let outcome = uac.wait(SIPP_WAIT);
    (outcome, uac)
}

#[track_caller]
fn assert_ok(outcome: &SippOutcome, kam: &mut Kamailio) {
    assert!(
        outcome.success,
        "SIPp run failed\n{}\n{}",
        outcome.report,
        kam.report()
    );
}

#[test]
fn kamailio_is_installed() {
    let binary = kamailio_binary();
    let output = std::process::Command::new(&binary)
        .arg("-v")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} -v: {e}", binary.display()));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("version: kamailio 5."),
        "unexpected `kamailio -v` output: {text}"
    );
}

#[test]
fn register_with_digest_auth() {
    let mut kam = Kamailio::start(&[("1001", "secret-1001"), ("1002", "secret-1002")]);
    let (outcome, uac) = register(&kam, "1001", "secret-1001", 200, Transport::Udp);
    assert_ok(&outcome, &mut kam);
    let messages = &outcome.messages;
    for expected in [
        "SIP/2.0 401 Unauthorized",
        "WWW-Authenticate: Digest realm=\"callgate.test\"",
        "Authorization: Digest username=\"1001\",realm=\"callgate.test\"",
        "SIP/2.0 200 OK",
    ] {
        assert!(messages.contains(expected), "no {expected:?}\n{messages}");
    }
    // The location table holds SIPp's contact, with the granted expiry.
    let contacts = kam.wait_registered("1001", REGISTER_WAIT);
    let want = format!("sip:1001@{};transport=UDP", uac.sip_addr());
    assert_eq!(contacts.len(), 1, "{contacts:?}");
    assert_eq!(contacts[0].uri, want);
    assert!(
        (1..=i64::from(EXPIRES)).contains(&contacts[0].expires),
        "{contacts:?}"
    );
    assert!(kam.contacts("1002").is_empty());
}

#[test]
fn register_over_tcp_with_qop_auth() {
    let opts = KamailioOptions::default().qop_auth(true);
    let mut kam = Kamailio::start_with(&[("1001", "secret-1001")], opts);
    let (outcome, uac) = register(&kam, "1001", "secret-1001", 200, Transport::Tcp);
    assert_ok(&outcome, &mut kam);
    let messages = &outcome.messages;
    assert!(messages.contains("TCP message received"), "{messages}");
    assert!(messages.contains("qop=\"auth\""), "{messages}");
    assert!(messages.contains("nc=00000001"), "{messages}");
    let contacts = kam.wait_registered("1001", REGISTER_WAIT);
    // A TCP UAC's port is its connection's: whatever it was, the transport
    // shows in the contact.
    assert!(
        contacts[0].uri.ends_with(";transport=TCP"),
        "{contacts:?} ({})",
        uac.sip_addr()
    );
}

#[test]
fn wrong_password_or_unknown_user_is_challenged_again() {
    let mut kam = Kamailio::start(&[("1001", "secret-1001")]);
    let (outcome, _uac) = register(&kam, "1001", "not-the-password", 401, Transport::Udp);
    assert_ok(&outcome, &mut kam);
    let (outcome, _uac) = register(&kam, "1009", "secret-1001", 401, Transport::Udp);
    assert_ok(&outcome, &mut kam);
    assert!(kam.contacts("1001").is_empty());
    assert!(kam.contacts("1009").is_empty());
    // The scenario's status check does bite: a 401 where 200 was expected.
    let (outcome, _uac) = register(&kam, "1001", "not-the-password", 200, Transport::Udp);
    outcome.assert_failed_call();
}

#[test]
fn options_shape_the_config_and_registrations_expire() {
    let opts = KamailioOptions::default()
        .domain("pbx.example")
        .debug(1)
        .expires_range(1, 60)
        .ring_timeout(Duration::from_secs(7));
    let users = [("1001", "secret-1001"), ("1002", "secret-1002")];
    let mut kam = Kamailio::start_with(&users, opts);
    assert_eq!(kam.domain(), "pbx.example");
    let config = std::fs::read_to_string(kam.dir().join("kamailio.cfg")).expect("read config");
    for expected in [
        "debug=1",
        "alias=\"pbx.example\"",
        "modparam(\"tm\", \"fr_inv_timer\", 7000)",
        "modparam(\"registrar\", \"max_expires\", 60)",
    ] {
        assert!(config.contains(expected), "no {expected:?} in\n{config}");
    }
    // Realm = domain; Expires 120 is lowered to max_expires.
    let (outcome, _uac) = register(&kam, "1001", "secret-1001", 200, Transport::Udp);
    assert_ok(&outcome, &mut kam);
    assert!(
        outcome.messages.contains("realm=\"pbx.example\""),
        "{}",
        outcome.messages
    );
    let contacts = kam.wait_registered("1001", REGISTER_WAIT);
    assert!((1..=60).contains(&contacts[0].expires), "{contacts:?}");
    // A registration for 2 s is gone 2 s later.
    let opts = SippOptions::default()
        .rtp_echo(false)
        .auth("1002", "secret-1002")
        .key("expect_status", 200)
        .key("expires", 2);
    let mut uac = SippUac::start(&scenario("uac_register.xml"), kam.sip_addr(), opts);
    assert_ok(&uac.wait(SIPP_WAIT), &mut kam);
    let contacts = kam.contacts("1002");
    assert!(
        contacts.len() == 1 && contacts[0].expires <= 2,
        "{contacts:?}"
    );
    kam.wait_unregistered("1002", REGISTER_WAIT);
    assert_eq!(kam.contacts("1001").len(), 1);
}

#[test]
fn passwords_are_escaped_in_the_subscriber_table() {
    let tricky = r"a:b\c d#0";
    let mut kam = Kamailio::start(&[("agent.7", tricky), ("1002", "x")]);
    let (outcome, _uac) = register(&kam, "agent.7", tricky, 200, Transport::Udp);
    assert_ok(&outcome, &mut kam);
    kam.wait_registered("agent.7", REGISTER_WAIT);
    let subscriber = std::fs::read_to_string(kam.dir().join("db").join("subscriber"))
        .expect("read db/subscriber");
    assert!(subscriber.contains(r"a\:b\\c d#0"), "{subscriber}");
}

#[test]
fn registered_user_takes_an_authenticated_call_through_the_proxy() {
    let mut kam = Kamailio::start(&[("1001", "secret-1001"), ("1002", "secret-1002")]);
    // A client SIPp matches an incoming INVITE to its call by Call-ID: the
    // callee's REGISTER and the caller's INVITE share one (see the scenario).
    let call_id = format!("kamailio-selftest-{}@127.0.0.1", std::process::id());
    let callee_opts = SippOptions::default()
        .auth("1001", "secret-1001")
        .key("expires", EXPIRES)
        .args(["-cid_str", &call_id]);
    let mut callee = SippUac::start(
        &scenario("uas_registered_echo.xml"),
        kam.sip_addr(),
        callee_opts,
    );
    let contacts = kam.wait_registered("1001", REGISTER_WAIT);
    assert_eq!(
        contacts[0].uri,
        format!("sip:1001@{};transport=UDP", callee.sip_addr())
    );

    let caller_opts = SippOptions::default()
        .rtp_echo(false)
        .auth("1002", "secret-1002")
        .key("callee", "1001")
        .key("expect_status", 200)
        .key("expect_media_port", callee.media_addr().port())
        .args(["-cid_str", &call_id]);
    let mut caller = SippUac::start(&scenario("uac_call_auth.xml"), kam.sip_addr(), caller_opts);
    let caller_outcome = caller.wait(SIPP_WAIT);
    let callee_outcome = callee.wait(Duration::from_secs(3));
    assert_ok(&caller_outcome, &mut kam);
    assert_ok(&callee_outcome, &mut kam);

    let sent = &caller_outcome.messages;
    for expected in [
        "SIP/2.0 407 Proxy Authentication Required",
        "Proxy-Authorization: Digest username=\"1002\"",
        "Record-Route: <sip:127.0.0.1:",
        "BYE sip:1001@",
    ] {
        assert!(sent.contains(expected), "caller: no {expected:?}\n{sent}");
    }
    let received = &callee_outcome.messages;
    let invite = format!("INVITE sip:1001@{};transport=UDP", callee.sip_addr());
    for expected in [invite.as_str(), "ACK sip:1001@", "BYE sip:1001@"] {
        assert!(
            received.contains(expected),
            "callee: no {expected:?}\n{received}"
        );
    }
    // Kamailio saw the call go by: relayed INVITE, loose-routed ACK and BYE.
    let logs = kam.logs();
    for method in ["INVITE", "ACK", "BYE"] {
        let line = format!("relaying {method} to sip:1001@");
        assert!(logs.contains(&line), "Kamailio log: no {line:?}\n{logs}");
    }
}

#[test]
fn peer_calls_a_registered_user_without_auth() {
    // A From user that is not a subscriber (SIPp's `caller`, as in
    // gateway/tests/sipp/uac_call.xml) is a peer: no challenge, local
    // destinations only.
    let mut kam = Kamailio::start(&[("1001", "secret-1001")]);
    let call_id = format!("kamailio-peer-{}@127.0.0.1", std::process::id());
    let callee_opts = SippOptions::default()
        .auth("1001", "secret-1001")
        .key("expires", EXPIRES)
        .args(["-cid_str", &call_id]);
    let mut callee = SippUac::start(
        &scenario("uas_registered_echo.xml"),
        kam.sip_addr(),
        callee_opts,
    );
    kam.wait_registered("1001", REGISTER_WAIT);
    let caller_opts = SippOptions::default()
        .rtp_echo(false)
        .key("expect_media_port", callee.media_addr().port())
        .args(["-s", "1001", "-cid_str", &call_id]);
    let mut caller = SippUac::start("uac_call.xml", kam.sip_addr(), caller_opts);
    let caller_outcome = caller.wait(SIPP_WAIT);
    let callee_outcome = callee.wait(Duration::from_secs(3));
    assert_ok(&caller_outcome, &mut kam);
    assert_ok(&callee_outcome, &mut kam);
    assert!(
        !caller_outcome
            .messages
            .contains("407 Proxy Authentication Required"),
        "{}",
        caller_outcome.messages
    );
}

#[test]
fn user_calls_a_sipp_uas_registered_by_a_third_party() {
    // The path "the agent calls SIPp through Kamailio" takes: SIPp in server
    // mode on its own port, registered as 2000 on its behalf.
    let mut kam = Kamailio::start(&[("1002", "secret-1002"), ("2000", "secret-2000")]);
    let mut callee = SippUas::start(&scenario("uas_proxied_echo.xml"), SippOptions::default());
    let contact = format!("sip:2000@{}", callee.sip_addr());
    let contacts = kam.register_contact("2000", "secret-2000", &contact);
    assert_eq!(contacts.len(), 1, "{contacts:?}");
    assert!(contacts[0].expires > 3500, "{contacts:?}");

    let caller_opts = SippOptions::default()
        .rtp_echo(false)
        .auth("1002", "secret-1002")
        .key("callee", "2000")
        .key("expect_status", 200)
        .key("expect_media_port", callee.media_addr().port());
    let mut caller = SippUac::start(&scenario("uac_call_auth.xml"), kam.sip_addr(), caller_opts);
    let caller_outcome = caller.wait(SIPP_WAIT);
    let callee_outcome = callee.wait(Duration::from_secs(3));
    assert_ok(&caller_outcome, &mut kam);
    assert_ok(&callee_outcome, &mut kam);
    // The INVITE went to the registered contact, ACK and BYE (loose-routed)
    // to the UAS's own Contact, all through Kamailio.
    let logs = kam.logs();
    let dialog_contact = format!("sip:callee@{};transport=UDP", callee.sip_addr());
    for line in [
        format!("relaying INVITE to {contact}"),
        format!("relaying ACK to {dialog_contact}"),
        format!("relaying BYE to {dialog_contact}"),
    ] {
        assert!(logs.contains(&line), "Kamailio log: no {line:?}\n{logs}");
    }
}

#[test]
fn call_to_an_unregistered_user_gets_404() {
    let mut kam = Kamailio::start(&[("1001", "secret-1001"), ("1002", "secret-1002")]);
    let opts = SippOptions::default()
        .rtp_echo(false)
        .auth("1002", "secret-1002")
        .key("callee", "1001")
        .key("expect_status", 404)
        .key("expect_media_port", 0);
    let mut caller = SippUac::start(&scenario("uac_call_auth.xml"), kam.sip_addr(), opts);
    let outcome = caller.wait(SIPP_WAIT);
    assert_ok(&outcome, &mut kam);
    assert!(
        outcome.messages.contains("SIP/2.0 404 Not Found"),
        "{}",
        outcome.messages
    );
}

#[test]
fn instances_run_side_by_side_and_stop_on_drop() {
    let first = Kamailio::start(&[("1001", "a")]);
    let second = Kamailio::start(&[("1001", "b")]);
    assert_ne!(first.port(), second.port());
    assert_ne!(first.dir(), second.dir());
    assert!(
        first.command_line().contains(" -DD -E "),
        "{}",
        first.command_line()
    );
    let pid = std::fs::read_to_string(second.dir().join("run").join("kamailio.pid"))
        .expect("Kamailio writes its pid file");
    let pid = pid.trim().to_owned();
    let dir = second.dir().to_path_buf();
    assert!(process_running(&pid));
    drop(second);
    assert!(!process_running(&pid), "Kamailio {pid} survived its drop");
    assert!(!dir.exists(), "{} left behind", dir.display());
    // The other instance is untouched.
    assert!(first.contacts("1001").is_empty());
}
