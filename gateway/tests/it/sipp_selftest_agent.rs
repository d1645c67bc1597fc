//! Self-tests of the agent-feature SIPp scenarios in `gateway/tests/sipp/`
//! (registration, inbound calls, hold, transfer, DTMF, MESSAGE, session
//! timers, a dead PBX): each PBX-side scenario runs against a SIPp peer that
//! plays callgate's part, once the way callgate should behave (both runs
//! succeed) and, for each check the scenario makes, once the way it must not
//! (the scenario's run fails), so that a gateway test failing against a
//! scenario points at the gateway.
//!
//! Run with `cargo test -p gateway --test it sipp_selftest_agent`. UDP on
//! loopback only; each test is bounded by the waits below (under 15 s).

use std::fs;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::Duration;

use crate::sipp::{SippOptions, SippOutcome, SippUac, SippUas};

/// The longest a peer or PBX caller may run (the longest scenario pause or
/// recv timeout is 5 s).
const UAC_WAIT: Duration = Duration::from_secs(10);

/// How long the UAS may still take once its caller is done
/// (`uas_stop_answering.xml` waits 5 s for silence).
const UAS_WAIT: Duration = Duration::from_secs(7);

/// The agent's registered Contact user (`<extension>-<token>`), what the
/// PBX-side callers get as `-s`.
const CONTACT_USER: &str = "1001-tok3n";

/// Runs `uas_file` (SIPp answering) against `uac_file` (SIPp calling it) and
/// returns (UAS, UAC) outcomes.
fn run_pair(
    uas_file: &str,
    uas_opts: SippOptions,
    uac_file: &str,
    uac_opts: SippOptions,
) -> (SippOutcome, SippOutcome) {
    let mut uas = SippUas::start(uas_file, uas_opts);
    let mut uac = SippUac::start(uac_file, uas.sip_addr(), uac_opts);
    let uac_outcome = uac.wait(UAC_WAIT);
    let uas_outcome = uas.wait(UAS_WAIT);
    (uas_outcome, uac_outcome)
}

#[track_caller]
fn assert_both_succeed(uas: &SippOutcome, uac: &SippOutcome) {
    uac.assert_success();
    uas.assert_success();
}

#[track_caller]
fn assert_contains(haystack: &str, needle: &str) {
    assert!(
        haystack.contains(needle),
        "expected {needle:?} in:\n{haystack}"
    );
}

/// Options for a PBX-side caller aimed at the agent's Contact user.
fn to_agent() -> SippOptions {
    SippOptions::default().args(["-s", CONTACT_USER])
}

/// The Contact user (`<extension>-<token>`) `uas_registrar.xml` logged for
/// the last successful registration in the run whose log directory is
/// `log_dir` (readable while SIPp runs: SIPp writes the log line at once).
/// This is what a PBX-side caller needs as `-s` to reach the agent.
pub(crate) fn registered_contact_user(log_dir: &Path) -> Option<String> {
    let log = fs::read_to_string(log_dir.join("actions.log")).ok()?;
    log.lines().rev().find_map(|line| {
        let rest = line.split("registered contact ").nth(1)?;
        let user = rest.split(" user ").nth(1)?;
        user.split_whitespace().next().map(str::to_owned)
    })
}

/// Sends `count` RTP-looking datagrams from a fresh loopback socket to
/// `media` and asserts each comes back unchanged from `media`.
fn assert_rtp_echo(media: SocketAddr, count: u16) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind RTP test socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("set_read_timeout");
    let mut buf = [0u8; 2048];
    for seq in 0..count {
        let mut packet = vec![0x80, 0x00];
        packet.extend_from_slice(&seq.to_be_bytes());
        packet.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        packet.extend_from_slice(&0x0bad_cafe_u32.to_be_bytes());
        packet.extend(std::iter::repeat_n(0xFF, 160));
        socket.send_to(&packet, media).expect("send RTP to SIPp");
        let (len, from) = socket
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("no RTP echo from {media} for packet {seq}: {e}"));
        assert_eq!(from, media, "echo must come from SIPp's media port");
        assert_eq!(&buf[..len], &packet[..], "echoed packet {seq} differs");
    }
}

/// The SIP message in a `-trace_msg` log that starts with `start_line`
/// (e.g. `"ACK sip:"`), exactly as sent or received: the log writes each
/// message, then `\n` and a line of dashes.
#[track_caller]
fn message_starting<'a>(log: &'a str, start_line: &str) -> &'a str {
    let at = log
        .find(&format!("\n{start_line}"))
        .unwrap_or_else(|| panic!("no message starting {start_line:?} in:\n{log}"))
        + 1;
    let rest = &log[at..];
    let end = rest
        .find("\n-----------------------------------------------")
        .unwrap_or(rest.len());
    &rest[..end]
}

/// The trimmed value of the first `name:` header of `message`.
fn header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    let head = message.split("\r\n\r\n").next().unwrap_or(message);
    head.split("\r\n").skip(1).find_map(|line| {
        let (n, value) = line.split_once(':')?;
        if n.trim().eq_ignore_ascii_case(name) {
            Some(value.trim())
        } else {
            None
        }
    })
}

/// The body of `message` as sent.
fn body_of(message: &str) -> &str {
    message.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}

// ---------------------------------------------------------------- registrar

fn registrar() -> SippOptions {
    SippOptions::default()
        .auth("alice", "s3cret")
        .key("expires", 120)
}

fn register_peer(password: &str, expect_status: u16, second_expires: u32) -> SippOptions {
    SippOptions::default()
        .auth("alice", password)
        .key("expires", 120)
        .key("expect_status", expect_status)
        .key("second_expires", second_expires)
}

#[test]
fn uas_registrar_challenges_verifies_grants_and_accepts_the_unregister() {
    let mut uas = SippUas::start("uas_registrar.xml", registrar());
    let peer = register_peer("s3cret", 200, 0).args(["-d", "500"]);
    let mut uac = SippUac::start("uac_register.xml", uas.sip_addr(), peer);
    // While the agent is registered, the Contact user can be read from the
    // registrar's log (what a gateway test passes to the PBX-side callers).
    std::thread::sleep(Duration::from_millis(300));
    let user = registered_contact_user(uas.log_dir()).expect("contact user in the log");
    assert!(user.starts_with("alice-t"), "{user}");
    let uac = uac.wait(UAC_WAIT);
    let uas = uas.wait(UAS_WAIT);
    assert_both_succeed(&uas, &uac);
    let messages = &uas.messages;
    assert_contains(messages, "SIP/2.0 401 Unauthorized");
    assert_contains(messages, "WWW-Authenticate: Digest realm=\"callgate.test\"");
    assert_contains(messages, "\nAuthorization: Digest username=\"alice\"");
    assert_contains(messages, ";expires=120\r\nExpires: 120\r\n");
    assert_contains(&uas.scenario_log, &format!("user {user} requested"));
    assert_contains(&uas.scenario_log, "unregister of sip:alice-t");
}

#[test]
fn uas_registrar_accepts_a_refresh() {
    let (uas, uac) = run_pair(
        "uas_registrar.xml",
        registrar(),
        "uac_register.xml",
        register_peer("s3cret", 200, 600),
    );
    assert_both_succeed(&uas, &uac);
    assert_contains(&uas.scenario_log, "second REGISTER: Expires 600");
    assert_contains(&uas.scenario_log, "refresh of sip:alice-t");
    // The refresh reused the nonce (nc=00000002) and was verified.
    assert_contains(&uas.messages, "nc=00000002");
}

#[test]
fn uas_registrar_rejects_a_wrong_password_with_403() {
    let (uas, uac) = run_pair(
        "uas_registrar.xml",
        registrar(),
        "uac_register.xml",
        register_peer("wrong", 403, 0),
    );
    // The peer got the 403 it was told to expect; the registrar run fails.
    uac.assert_success();
    uas.assert_failed_call();
    assert_contains(&uas.messages, "SIP/2.0 403 Forbidden");
    assert_contains(&uas.report, "authvalid_n");
    assert_contains(&uas.scenario_log, "verifyauth failed for user alice");
}

#[test]
fn uas_registrar_flags_a_contact_of_another_extension() {
    // Digest as alice, but a Contact for bob: the Contact check bites.
    let peer = SippOptions::default()
        .args(["-au", "alice", "-ap", "s3cret"])
        .key("auth_user", "bob")
        .key("expires", 120)
        .key("expect_status", 200)
        .key("second_expires", 0);
    let (uas, uac) = run_pair("uas_registrar.xml", registrar(), "uac_register.xml", peer);
    uac.assert_success();
    uas.assert_failed_call();
    assert_contains(&uas.report, "contact_ext:\"bob\"");
}

#[test]
fn uas_registrar_forbidden_answers_403_after_the_challenge() {
    let (uas, uac) = run_pair(
        "uas_registrar_forbidden.xml",
        SippOptions::default().auth("alice", "s3cret"),
        "uac_register.xml",
        register_peer("s3cret", 403, 0),
    );
    assert_both_succeed(&uas, &uac);
    assert_contains(&uas.messages, "SIP/2.0 401 Unauthorized");
    assert_contains(&uas.messages, "SIP/2.0 403 Forbidden");
    assert_contains(
        &uas.scenario_log,
        "authenticated REGISTER from user alice: 403",
    );
}

#[test]
fn uas_registrar_forbidden_flags_the_wrong_user() {
    let (uas, uac) = run_pair(
        "uas_registrar_forbidden.xml",
        SippOptions::default().auth("alice", "s3cret"),
        "uac_register.xml",
        SippOptions::default()
            .auth("mallory", "s3cret")
            .key("expires", 120)
            .key("expect_status", 403)
            .key("second_expires", 0),
    );
    uac.assert_success();
    uas.assert_failed_call();
    assert_contains(&uas.report, "got_user:\"mallory\"");
}

// ------------------------------------------------------------ inbound calls

#[test]
fn uac_inbound_call_reaches_the_contact_and_the_agent_hangs_up() {
    let mut uas = SippUas::start("uas_agent.xml", SippOptions::default().key("answer_pt", 0));
    let mut uac = SippUac::start("uac_inbound_call.xml", uas.sip_addr(), to_agent());
    // The PBX side echoes the agent's audio while the call is up (the peer
    // hangs up 1.5 s after the ACK).
    std::thread::sleep(Duration::from_millis(300));
    assert_rtp_echo(uac.media_addr(), 5);
    let uac_outcome = uac.wait(UAC_WAIT);
    let uas_outcome = uas.wait(UAS_WAIT);
    assert_both_succeed(&uas_outcome, &uac_outcome);
    let messages = &uas_outcome.messages;
    assert_contains(
        messages,
        &format!("INVITE sip:{CONTACT_USER}@{} SIP/2.0", uas.sip_addr()),
    );
    assert_contains(messages, "\nTo: <sip:1001@127.0.0.1:");
    assert_contains(messages, "\nFrom: \"ACME Support\" <sip:+15550100@");
    assert_contains(messages, "\nX-Customer-Id: 4711\r\n");
    assert_contains(messages, "\nBYE sip:+15550100@");
    let answer = format!("answer: port {} payload 0", uas.media_addr().port());
    assert_contains(&uac_outcome.scenario_log, &answer);
}

#[test]
fn uac_inbound_call_rejects_an_answer_without_g711() {
    let (uas, uac) = run_pair(
        "uas_agent.xml",
        SippOptions::default().key("answer_pt", 9),
        "uac_inbound_call.xml",
        to_agent(),
    );
    uas.assert_success();
    uac.assert_failed_call();
    assert_contains(&uac.report, "m=audio ([1-9][0-9]*) RTP/AVP (0|8)");
}

#[test]
fn uac_inbound_call_bye_hangs_up_after_hold_ms() {
    let (uas, uac) = run_pair(
        "uas_agent.xml",
        SippOptions::default().key("answer_pt", 0),
        "uac_inbound_call_bye.xml",
        to_agent().key("hold_ms", 500),
    );
    assert_both_succeed(&uas, &uac);
    // The PBX's BYE reached the agent's Contact before the peer's own
    // 1.5 s hang-up timer.
    assert_contains(&uas.messages, "\nBYE sip:agent@127.0.0.1:");
    assert!(
        !uas.messages.contains("\nBYE sip:+15550100@"),
        "{}",
        uas.messages
    );
}

#[test]
fn uac_inbound_late_ack_acks_late_then_takes_the_agents_bye() {
    let (uas, uac) = run_pair(
        "uas_agent.xml",
        SippOptions::default().key("answer_pt", 0),
        "uac_inbound_late_ack.xml",
        to_agent().key("ack_delay_ms", 300),
    );
    assert_both_succeed(&uas, &uac);
    // The peer's own hang-up (1.5 s after the ACK) is the BYE the caller waits for.
    assert_contains(&uas.messages, "\nBYE sip:+15550100@");
    let (ack, bye) = (
        uac.messages.find("\nACK sip:"),
        uac.messages.find("\nBYE sip:"),
    );
    assert!(
        matches!((ack, bye), (Some(a), Some(b)) if a < b),
        "{}",
        uac.messages
    );
}

#[test]
fn uac_inbound_cancel_crossed_cancels_after_the_200_and_hangs_up() {
    let (uas, uac) = run_pair(
        "uas_agent.xml",
        SippOptions::default().key("answer_pt", 0),
        "uac_inbound_cancel_crossed.xml",
        to_agent().key("hold_ms", 300),
    );
    assert_both_succeed(&uas, &uac);
    assert_contains(&uas.messages, "CSeq: 1 CANCEL");
    assert_contains(&uas.messages, "\nBYE sip:agent@127.0.0.1:");
}

#[test]
fn uac_inbound_offerless_reinvite_answers_the_agents_offer_in_the_ack() {
    let (uas, uac) = run_pair(
        "uas_agent_reoffer.xml",
        SippOptions::default().key("answer_pt", 0),
        "uac_inbound_offerless_reinvite.xml",
        to_agent().key("hold_ms", 300),
    );
    assert_both_succeed(&uas, &uac);
    assert_contains(&uac.scenario_log, "offer in the re-INVITE's 200");
    assert_contains(&uas.scenario_log, "answer in the ACK: a=sendonly");
}

#[test]
fn uac_inbound_cancel_gets_200_and_487() {
    let (uas, uac) = run_pair(
        "uas_ring_then_cancel.xml",
        SippOptions::default(),
        "uac_inbound_cancel.xml",
        to_agent(),
    );
    assert_both_succeed(&uas, &uac);
    assert_contains(
        &uas.messages,
        &format!("\nCANCEL sip:{CONTACT_USER}@127.0.0.1:"),
    );
    assert_contains(&uac.messages, "SIP/2.0 487 Request Terminated");
}

#[test]
fn uac_inbound_cancel_accepts_487_before_the_200() {
    let (uas, uac) = run_pair(
        "uas_agent_cancel_487_first.xml",
        SippOptions::default(),
        "uac_inbound_cancel.xml",
        to_agent(),
    );
    assert_both_succeed(&uas, &uac);
    let messages = &uac.messages;
    let i487 = messages.find("SIP/2.0 487").expect("487");
    let i200 = messages.find("SIP/2.0 200 OK").expect("200");
    assert!(i487 < i200, "{messages}");
}

#[test]
fn uac_inbound_cancel_fails_when_the_agent_answers() {
    let (_uas, uac) = run_pair(
        "uas_agent.xml",
        SippOptions::default().key("answer_pt", 0),
        "uac_inbound_cancel.xml",
        to_agent(),
    );
    uac.assert_failed_call();
    assert_contains(&uac.report, "unexpected message");
}

#[test]
fn uac_inbound_rejected_accepts_486_603_and_480() {
    for status in [486, 603, 480] {
        let (uas, uac) = run_pair(
            "uas_agent_reject.xml",
            SippOptions::default().key("reject_status", status),
            "uac_inbound_rejected.xml",
            to_agent().key("expect_status", status),
        );
        assert_both_succeed(&uas, &uac);
        let logged = format!("final status {status}, expected {status}");
        assert_contains(&uac.scenario_log, &logged);
    }
}

#[test]
fn uac_inbound_rejected_notices_the_wrong_status() {
    let (uas, uac) = run_pair(
        "uas_agent_reject.xml",
        SippOptions::default().key("reject_status", 603),
        "uac_inbound_rejected.xml",
        to_agent().key("expect_status", 486),
    );
    uas.assert_success();
    uac.assert_failed_call();
    assert_contains(&uac.report, "strcmp status:\"603\"");
}

#[test]
fn uac_inbound_offerless_answers_the_offer_in_the_ack() {
    let mut uas = SippUas::start(
        "uas_agent_offer.xml",
        SippOptions::default().key("offer_pts", "0 8 101"),
    );
    let mut uac = SippUac::start("uac_inbound_offerless.xml", uas.sip_addr(), to_agent());
    let uac_outcome = uac.wait(UAC_WAIT);
    let uas_outcome = uas.wait(UAS_WAIT);
    assert_both_succeed(&uas_outcome, &uac_outcome);
    let invite = message_starting(&uas_outcome.messages, "INVITE sip:");
    assert_eq!(header(invite, "Content-Length"), Some("0"), "{invite}");
    assert_eq!(header(invite, "Content-Type"), None, "{invite}");
    assert_contains(&uac_outcome.scenario_log, "telephone-event 101");
    // The ACK carries the answer, on the PBX's media port.
    let ack = message_starting(&uas_outcome.messages, "ACK sip:");
    let answer = format!("m=audio {} RTP/AVP 0 101", uac.media_addr().port());
    assert_contains(ack, &answer);
}

#[test]
fn uac_inbound_offerless_rejects_an_offer_without_pcmu() {
    let (uas, uac) = run_pair(
        "uas_agent_offer.xml",
        SippOptions::default().key("offer_pts", "8 101"),
        "uac_inbound_offerless.xml",
        to_agent(),
    );
    uac.assert_failed_call();
    assert_contains(&uac.report, "Failed regexp match");
    // The peer's own check sees the answer that is not PCMU either.
    assert!(!uas.success, "{}", uas.report);
}

// -------------------------------------------------------- hold from the PBX

#[test]
fn uas_pbx_hold_accepts_recvonly_or_inactive() {
    for answer in ["recvonly", "inactive"] {
        let (uas, uac) = run_pair(
            "uas_pbx_hold.xml",
            SippOptions::default(),
            "uac_held.xml",
            SippOptions::default().key("hold_answer", answer),
        );
        assert_both_succeed(&uas, &uac);
        assert_contains(&uas.scenario_log, &format!("hold answered with a={answer}"));
        assert_contains(&uas.scenario_log, "resume answered with a=sendrecv");
        let messages = &uas.messages;
        assert_contains(messages, "CSeq: 1 INVITE\r\n");
        assert_contains(messages, "CSeq: 2 INVITE\r\n");
        assert_contains(messages, "a=sendonly");
    }
}

#[test]
fn uas_pbx_hold_offerless_sends_bodyless_reinvites_and_answers_in_the_acks() {
    let (uas, uac) = run_pair(
        "uas_pbx_hold_offerless.xml",
        SippOptions::default(),
        "uac_held_offerless.xml",
        SippOptions::default().key("offer_direction", "sendrecv"),
    );
    assert_both_succeed(&uas, &uac);
    assert_contains(&uas.scenario_log, "first offer in the 200");
    assert_contains(&uas.scenario_log, "second offer in the 200");

    // An offer that is not sendrecv fails the PBX's check.
    let (uas, uac) = run_pair(
        "uas_pbx_hold_offerless.xml",
        SippOptions::default(),
        "uac_held_offerless.xml",
        SippOptions::default().key("offer_direction", "sendonly"),
    );
    uas.assert_failed_call();
    drop(uac);
}

#[test]
fn uas_pbx_hold_fails_when_the_hold_is_answered_sendrecv() {
    let (uas, uac) = run_pair(
        "uas_pbx_hold.xml",
        SippOptions::default(),
        "uac_held.xml",
        SippOptions::default().key("hold_answer", "sendrecv"),
    );
    uac.assert_success();
    uas.assert_failed_call();
    assert_contains(&uas.report, "a=(recvonly|inactive)");
}

#[test]
fn uas_pbx_hold_inactive_requires_inactive() {
    for (answer, ok) in [("inactive", true), ("recvonly", false)] {
        let (uas, uac) = run_pair(
            "uas_pbx_hold_inactive.xml",
            SippOptions::default(),
            "uac_held.xml",
            SippOptions::default().key("hold_answer", answer),
        );
        uac.assert_success();
        if ok {
            uas.assert_success();
            assert_contains(&uas.scenario_log, "hold answered with a=inactive");
            let hold = message_starting(&uas.messages, "INVITE sip:gw@");
            assert_contains(body_of(hold), "a=inactive");
        } else {
            uas.assert_failed_call();
            assert_contains(&uas.report, "with regexp 'a=(inactive)'");
        }
    }
}

#[test]
fn uas_pbx_hold_c0_holds_with_a_null_address() {
    for (answer, ok) in [("recvonly", true), ("sendrecv", false)] {
        let (uas, uac) = run_pair(
            "uas_pbx_hold_c0.xml",
            SippOptions::default(),
            "uac_held.xml",
            SippOptions::default().key("hold_answer", answer),
        );
        uac.assert_success();
        if ok {
            uas.assert_success();
            let hold = body_of(message_starting(&uas.messages, "INVITE sip:gw@"));
            assert_contains(hold, "c=IN IP4 0.0.0.0\r\n");
            assert!(!hold.contains("a=sendonly"), "{hold}");
            assert!(!hold.contains("a=sendrecv"), "{hold}");
        } else {
            uas.assert_failed_call();
            assert_contains(&uas.report, "a=(recvonly|inactive)");
        }
    }
}

// ------------------------------------------------------ hold from the agent

#[test]
fn uas_agent_hold_sees_sendonly_then_sendrecv() {
    let (uas, uac) = run_pair(
        "uas_agent_hold.xml",
        SippOptions::default(),
        "uac_agent_hold.xml",
        SippOptions::default().key("hold_dir", "sendonly"),
    );
    assert_both_succeed(&uas, &uac);
    assert_contains(&uas.scenario_log, "hold offer ok");
    assert_contains(&uas.scenario_log, "unhold offer ok");
    assert_contains(&uas.messages, "a=recvonly");
}

#[test]
fn uas_agent_hold_fails_without_sendonly() {
    let (uas, uac) = run_pair(
        "uas_agent_hold.xml",
        SippOptions::default(),
        "uac_agent_hold.xml",
        SippOptions::default().key("hold_dir", "sendrecv"),
    );
    uas.assert_failed_call();
    assert_contains(&uas.report, "with regexp 'a=sendonly'");
    // The answer to the bad hold still came (recvonly), so the peer is fine.
    uac.assert_success();
}

#[test]
fn uas_agent_hold_glare_expects_a_retry_after_2_to_4_s() {
    let (uas, uac) = run_pair(
        "uas_agent_hold_glare.xml",
        SippOptions::default(),
        "uac_agent_hold_retry.xml",
        SippOptions::default().args(["-d", "2500"]),
    );
    assert_both_succeed(&uas, &uac);
    assert_contains(&uas.messages, "SIP/2.0 491 Request Pending");
    // The peer pauses 2,500 ms after the 491; SIPp's pause timer ticks in
    // whole milliseconds and can end a little early, so the measured delay
    // is about 2,500 ms, not at least 2,500 (CI once saw 2,498.8).
    let delay = logged_retry_delay_ms(&uas.scenario_log);
    assert!(
        (2_400.0..=3_000.0).contains(&delay),
        "retry after {delay} ms, expected about 2,500 ms:\n{}",
        uas.scenario_log
    );
}

/// The delay `uas_agent_hold_glare.xml` logged as "hold retried after <ms> ms".
#[track_caller]
fn logged_retry_delay_ms(log: &str) -> f64 {
    let found = log.lines().find_map(|line| {
        let rest = line.split("hold retried after ").nth(1)?;
        rest.split_whitespace().next()?.parse::<f64>().ok()
    });
    match found {
        Some(delay) => delay,
        None => panic!("no \"hold retried after <ms> ms\" line in:\n{log}"),
    }
}

#[test]
fn uas_agent_hold_glare_flags_an_early_retry() {
    let (uas, uac) = run_pair(
        "uas_agent_hold_glare.xml",
        SippOptions::default(),
        "uac_agent_hold_retry.xml",
        SippOptions::default().args(["-d", "500"]),
    );
    uac.assert_success();
    uas.assert_failed_call();
    assert_contains(&uas.report, ">= :2000.000000\" with check_it failed");
}

// ---------------------------------------------------------------- transfer

fn refer_peer(refer_to_uri: &str) -> SippOptions {
    SippOptions::default().key("refer_to_uri", refer_to_uri)
}

const ATTENDED_REFER_TO: &str =
    "<sip:1003@127.0.0.1?Replaces=7f3a-91%40127.0.0.1%3Bto-tag%3Dab12%3Bfrom-tag%3Dcd34>";

#[test]
fn uas_refer_blind_accepts_the_refer_and_reports_success() {
    let (uas, uac) = run_pair(
        "uas_refer_blind.xml",
        SippOptions::default().key("refer_to", 1003),
        "uac_refer.xml",
        refer_peer("<sip:1003@127.0.0.1>"),
    );
    assert_both_succeed(&uas, &uac);
    let messages = &uas.messages;
    assert_contains(messages, "SIP/2.0 202 Accepted");
    assert_contains(messages, "Content-Type: message/sipfrag;version=2.0");
    assert_contains(messages, "\r\n\r\nSIP/2.0 100 Trying");
    assert_contains(messages, "Subscription-State: terminated;reason=noresource");
    assert_contains(messages, "\r\n\r\nSIP/2.0 200 OK");
    assert_contains(&uas.scenario_log, "REFER to sip:1003@127.0.0.1");
}

#[test]
fn uas_refer_blind_flags_the_wrong_target() {
    let (uas, uac) = run_pair(
        "uas_refer_blind.xml",
        SippOptions::default().key("refer_to", 1003),
        "uac_refer.xml",
        refer_peer("<sip:1004@127.0.0.1>"),
    );
    uac.assert_success();
    uas.assert_failed_call();
    assert_contains(&uas.report, "refer_user:\"1004\"");
}

#[test]
fn uas_refer_blind_flags_a_replaces() {
    let (uas, uac) = run_pair(
        "uas_refer_blind.xml",
        SippOptions::default().key("refer_to", 1003),
        "uac_refer.xml",
        refer_peer(ATTENDED_REFER_TO),
    );
    uac.assert_success();
    uas.assert_failed_call();
    assert_contains(&uas.report, "Regexp matched but should not");
}

#[test]
fn uas_refer_attended_accepts_a_refer_with_replaces() {
    let (uas, uac) = run_pair(
        "uas_refer_attended.xml",
        SippOptions::default(),
        "uac_refer.xml",
        refer_peer(ATTENDED_REFER_TO),
    );
    assert_both_succeed(&uas, &uac);
    assert_contains(
        &uas.scenario_log,
        "Replaces 7f3a-91%40127.0.0.1%3Bto-tag%3Dab12%3Bfrom-tag%3Dcd34",
    );
    assert_contains(
        &uas.messages,
        "Subscription-State: terminated;reason=noresource",
    );
}

#[test]
fn uas_refer_attended_flags_a_refer_without_replaces() {
    let (uas, uac) = run_pair(
        "uas_refer_attended.xml",
        SippOptions::default(),
        "uac_refer.xml",
        refer_peer("<sip:1003@127.0.0.1>"),
    );
    uac.assert_success();
    uas.assert_failed_call();
    assert_contains(&uas.report, "[Rr]eplaces=");
}

#[test]
fn uas_refer_attended_flags_replaces_without_tags() {
    let (uas, uac) = run_pair(
        "uas_refer_attended.xml",
        SippOptions::default(),
        "uac_refer.xml",
        refer_peer("<sip:1003@127.0.0.1?Replaces=7f3a-91%40127.0.0.1>"),
    );
    uac.assert_success();
    uas.assert_failed_call();
    assert_contains(&uas.report, "to-tag");
}

// --------------------------------------------------------------- INFO DTMF

#[test]
fn uas_info_dtmf_checks_the_digit_and_sends_seven() {
    for (scenario, content_type, body) in [
        (
            "uas_info_dtmf.xml",
            "application/dtmf-relay",
            "Signal=7\r\nDuration=160\r\n",
        ),
        ("uas_info_dtmf_plain.xml", "application/dtmf", "7\r\n"),
    ] {
        let (uas, uac) = run_pair(
            scenario,
            SippOptions::default().key("expect_digit", "#"),
            "uac_info_dtmf.xml",
            SippOptions::default().key("digit", "#"),
        );
        assert_both_succeed(&uas, &uac);
        assert_contains(&uas.scenario_log, "INFO digit # duration 100");
        // The PBX's own INFO (CSeq 1; the gateway's is CSeq 2 here).
        let info = message_starting(&uas.messages, "INFO sip:gw@");
        assert_eq!(header(info, "Content-Type"), Some(content_type), "{info}");
        assert_eq!(body_of(info), body, "{scenario}: {info}");
    }
}

#[test]
fn uas_info_dtmf_digits_takes_four_digits_in_order_or_flags_them() {
    let sent_as = |digits: [&str; 4]| {
        SippOptions::default()
            .key("d1", digits[0])
            .key("d2", digits[1])
            .key("d3", digits[2])
            .key("d4", digits[3])
    };
    let expecting = || SippOptions::default().key("expect_digits", "19#7");
    let (uas, uac) = run_pair(
        "uas_info_dtmf_digits.xml",
        expecting(),
        "uac_info_dtmf_digits.xml",
        sent_as(["1", "9", "#", "7"]),
    );
    assert_both_succeed(&uas, &uac);
    assert_contains(&uas.scenario_log, "INFO digits 19#7");

    let (uas, uac) = run_pair(
        "uas_info_dtmf_digits.xml",
        expecting(),
        "uac_info_dtmf_digits.xml",
        sent_as(["7", "1", "9", "#"]),
    );
    uas.assert_failed_call();
    assert_contains(
        &uas.report,
        "strcmp pressed:\"719#\" and want_digits:\"19#7\"",
    );
    drop(uac);
}

#[test]
fn uas_info_dtmf_flags_the_wrong_digit() {
    let (uas, uac) = run_pair(
        "uas_info_dtmf.xml",
        SippOptions::default().key("expect_digit", 5),
        "uac_info_dtmf.xml",
        SippOptions::default().key("digit", 6),
    );
    uac.assert_success();
    uas.assert_failed_call();
    assert_contains(&uas.report, "strcmp digit:\"6\" and want_digit:\"5\"");
}

// ----------------------------------------------------------------- MESSAGE

#[test]
fn message_both_ways_uac_message_and_uas_message() {
    // uac_message.xml is the PBX sending to the agent's Contact;
    // uas_message.xml is the PBX receiving the agent's MESSAGE. Each is the
    // other's peer.
    let text = "customer 4711 is on line 2";
    let (uas, uac) = run_pair(
        "uas_message.xml",
        SippOptions::default(),
        "uac_message.xml",
        to_agent().key("text", text),
    );
    assert_both_succeed(&uas, &uac);
    assert_contains(&uac.scenario_log, "MESSAGE answered 200");
    assert_contains(
        &uas.scenario_log,
        &format!("MESSAGE for {CONTACT_USER} from"),
    );
    // The body is exactly the text: no trailing CRLF.
    let message = message_starting(&uas.messages, "MESSAGE sip:");
    assert_eq!(header(message, "Content-Length"), Some("26"), "{message}");
    assert_eq!(body_of(message), text, "{message}");
    assert_eq!(
        header(message, "Content-Type"),
        Some("text/plain;charset=UTF-8")
    );
    assert_contains(&uas.messages, "\nTo: <sip:1001@127.0.0.1:");
}

#[test]
fn uas_message_flags_an_empty_body() {
    let (uas, uac) = run_pair(
        "uas_message.xml",
        SippOptions::default(),
        "uac_message.xml",
        to_agent().key("text", ""),
    );
    uac.assert_success();
    uas.assert_failed_call();
    assert_contains(&uas.report, "[A-Za-z0-9]");
}

#[test]
fn uac_message_fails_without_an_answer() {
    // A UDP socket that never answers (and, being bound, draws no ICMP).
    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind silent socket");
    let target = silent.local_addr().expect("local_addr");
    let mut uac = SippUac::start("uac_message.xml", target, to_agent().key("text", "hello"));
    let outcome = uac.wait(UAC_WAIT);
    outcome.assert_failed_call();
    assert_contains(&outcome.report, "receive timeout");
}

// ------------------------------------------------------------ session timer

#[test]
fn uas_session_timer_accepts_a_reinvite_or_update_refresh() {
    for refresh in ["INVITE", "UPDATE"] {
        let (uas, uac) = run_pair(
            "uas_session_timer.xml",
            SippOptions::default().key("session_expires", 2),
            "uac_session_timer.xml",
            SippOptions::default()
                .key("refresh", refresh)
                .args(["-d", "1000"]),
        );
        assert_both_succeed(&uas, &uac);
        assert_contains(&uas.scenario_log, &format!("refresh {refresh} after"));
        assert_contains(&uas.messages, "Session-Expires: 2;refresher=uac\r\n");
        assert_contains(&uas.messages, "Require: timer\r\n");
    }
}

#[test]
fn uas_session_timer_flags_a_late_refresh() {
    let (uas, uac) = run_pair(
        "uas_session_timer.xml",
        SippOptions::default().key("session_expires", 2),
        "uac_session_timer.xml",
        SippOptions::default()
            .key("refresh", "UPDATE")
            .args(["-d", "2500"]),
    );
    uac.assert_success();
    uas.assert_failed_call();
    assert_contains(&uas.report, "< se_ms:2000.000000\" with check_it failed");
}

// ---------------------------------------------------------------- dead PBX

#[test]
fn uas_stop_answering_never_answers_after_the_ack() {
    let (uas, uac) = run_pair(
        "uas_stop_answering.xml",
        SippOptions::default(),
        "uac_unanswered.xml",
        SippOptions::default(),
    );
    // The peer fails if its INFO gets any response.
    assert_both_succeed(&uas, &uac);
    assert_contains(&uac.scenario_log, "no response to the INFO, as expected");
    assert_contains(&uas.scenario_log, "ignored INFO");
    assert_contains(&uas.scenario_log, "no new request for 5 s: done");
    // SIPp swallowed the INFO and its retransmissions: no response sent.
    let after_ack = &uas.messages[uas.messages.find("\nACK ").expect("ACK")..];
    assert!(!after_ack.contains("SIP/2.0 "), "{after_ack}");
    assert!(after_ack.matches("\nINFO ").count() >= 2, "{after_ack}");
}

#[test]
fn uas_stop_answering_requires_a_request_after_the_ack() {
    // A peer that answers, ACKs and then sends nothing (it waits for a BYE
    // that never comes): the dead PBX is never exercised, SIPp's own
    // -timeout ends the run as a failure.
    let mut uas = SippUas::start(
        "uas_stop_answering.xml",
        SippOptions::default().sipp_timeout(Duration::from_secs(3)),
    );
    let peer = SippOptions::default()
        .sipp_timeout(Duration::from_secs(3))
        .key("expect_media_port", uas.media_addr().port());
    let mut uac = SippUac::start("uac_remote_bye.xml", uas.sip_addr(), peer);
    let uas_outcome = uas.wait(UAC_WAIT);
    let _ = uac.wait(UAS_WAIT);
    assert!(!uas_outcome.timed_out, "{}", uas_outcome.report);
    assert!(!uas_outcome.success, "{}", uas_outcome.report);
    assert_eq!(uas_outcome.exit_code, Some(255), "{}", uas_outcome.report);
}
