//! Self-tests of the SIPp scenarios in `gateway/tests/sipp/`: each UAS
//! scenario (the simulated PBX) against a SIPp UAC playing the gateway's part,
//! so that a gateway test failing against a scenario points at the gateway.
//!
//! Run with `cargo test -p gateway --test it sipp`. Loopback only; each test
//! is bounded by the waits below (well under 15 s).

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use crate::sipp::{SippOptions, SippOutcome, SippUac, SippUas, Transport, sipp_binary};

/// The longest a caller scenario may run (the longest UAS pause is 2 s).
const UAC_WAIT: Duration = Duration::from_secs(10);

/// How long the UAS may still take once its caller is done.
const UAS_WAIT: Duration = Duration::from_secs(3);

/// Runs `uas_file` against `uac_file` and returns (UAS, UAC) outcomes. The
/// UAC gets `-key expect_media_port <UAS media port>`.
fn run_pair(
    uas_file: &str,
    uas_opts: SippOptions,
    uac_file: &str,
    uac_opts: SippOptions,
) -> (SippOutcome, SippOutcome) {
    let mut uas = SippUas::start(uas_file, uas_opts);
    let uac_opts = uac_opts.key("expect_media_port", uas.media_addr().port());
    let mut uac = SippUac::start(uac_file, uas.sip_addr(), uac_opts);
    let uac_outcome = uac.wait(UAC_WAIT);
    let uas_outcome = uas.wait(UAS_WAIT);
    (uas_outcome, uac_outcome)
}

fn assert_both_succeed(uas: &SippOutcome, uac: &SippOutcome) {
    uac.assert_success();
    uas.assert_success();
}

/// Sends `count` RTP-looking datagrams from a fresh loopback socket to
/// `media` and asserts each comes back unchanged from `media` (symmetric
/// RTP: SIPp's echo answers the packet's source address).
fn assert_rtp_echo(media: SocketAddr, count: u16) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind RTP test socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("set_read_timeout");
    let mut buf = [0u8; 2048];
    for seq in 0..count {
        // RTP v2, PT 0 (PCMU), sequence, timestamp, SSRC, 160 bytes of silence.
        let mut packet = vec![0x80, 0x00];
        packet.extend_from_slice(&seq.to_be_bytes());
        packet.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        packet.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        packet.extend(std::iter::repeat_n(0xFF, 160));
        socket.send_to(&packet, media).expect("send RTP to SIPp");
        let (len, from) = socket
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("no RTP echo from {media} for packet {seq}: {e}"));
        assert_eq!(from, media, "echo must come from SIPp's media port");
        assert_eq!(&buf[..len], &packet[..], "echoed packet {seq} differs");
    }
}

#[test]
fn sipp_is_installed() {
    let binary = sipp_binary();
    let output = std::process::Command::new(&binary)
        .arg("-v")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} -v: {e}", binary.display()));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("SIPp v"),
        "unexpected `sipp -v` output: {text}"
    );
}

#[test]
fn uas_echo_answers_and_echoes_rtp() {
    let mut uas = SippUas::start("uas_echo.xml", SippOptions::default());
    let uac_opts = SippOptions::default()
        .rtp_echo(false)
        .key("expect_media_port", uas.media_addr().port())
        // Hold the call for a second: the RTP below flows while it is up.
        .args(["-d", "1000"]);
    let mut uac = SippUac::start("uac_call.xml", uas.sip_addr(), uac_opts);
    assert_rtp_echo(uas.media_addr(), 10);
    let uac_outcome = uac.wait(UAC_WAIT);
    let uas_outcome = uas.wait(UAS_WAIT);
    assert_both_succeed(&uas_outcome, &uac_outcome);
    let messages = &uas_outcome.messages;
    // The harness wired the caller's ports into its INVITE.
    let uac_via = format!("Via: SIP/2.0/UDP {};", uac.sip_addr());
    let uac_media = format!("m=audio {} ", uac.media_addr().port());
    assert!(messages.contains(&uac_via), "{messages}");
    assert!(messages.contains(&uac_media), "{messages}");
    for line in [
        "SIP/2.0 100 Trying",
        "SIP/2.0 180 Ringing",
        "SIP/2.0 200 OK",
    ] {
        assert!(
            messages.contains(line),
            "UAS never sent {line:?}\n{messages}"
        );
    }
}

#[test]
fn uas_echo_over_tcp() {
    let tcp = || SippOptions::default().transport(Transport::Tcp);
    let (uas, uac) = run_pair("uas_echo.xml", tcp(), "uac_call.xml", tcp());
    assert_both_succeed(&uas, &uac);
    assert!(uas.messages.contains("TCP message received"));
}

#[test]
fn uas_early_media_sends_183_with_sdp_then_200() {
    let mut uas = SippUas::start("uas_early_media.xml", SippOptions::default());
    let uac_opts = SippOptions::default().key("expect_media_port", uas.media_addr().port());
    let mut uac = SippUac::start("uac_early_media.xml", uas.sip_addr(), uac_opts);
    // Early media: echoed before the 200 (the UAS pauses 1 s after the 183).
    assert_rtp_echo(uas.media_addr(), 5);
    let uac_outcome = uac.wait(UAC_WAIT);
    let uas_outcome = uas.wait(UAS_WAIT);
    assert_both_succeed(&uas_outcome, &uac_outcome);
}

#[test]
fn uas_busy_rejects_with_486() {
    let (uas, uac) = run_pair(
        "uas_busy.xml",
        SippOptions::default(),
        "uac_rejected.xml",
        SippOptions::default().key("expect_status", 486),
    );
    assert_both_succeed(&uas, &uac);
}

#[test]
fn uas_no_answer_480_rings_then_rejects() {
    let (uas, uac) = run_pair(
        "uas_no_answer_480.xml",
        SippOptions::default(),
        "uac_rejected.xml",
        SippOptions::default().key("expect_status", 480),
    );
    assert_both_succeed(&uas, &uac);
    assert!(uas.messages.contains("SIP/2.0 180 Ringing"));
}

#[test]
fn uac_rejected_notices_the_wrong_status() {
    // The check that the busy/no-answer tests rely on does bite.
    let (uas, uac) = run_pair(
        "uas_busy.xml",
        SippOptions::default(),
        "uac_rejected.xml",
        SippOptions::default().key("expect_status", 480),
    );
    uas.assert_success();
    uac.assert_failed_call();
    assert!(uac.report.contains("strcmp"), "{}", uac.report);
}

#[test]
fn uas_remote_bye_hangs_up_from_the_pbx() {
    let (uas, uac) = run_pair(
        "uas_remote_bye.xml",
        SippOptions::default(),
        "uac_remote_bye.xml",
        SippOptions::default(),
    );
    assert_both_succeed(&uas, &uac);
    assert!(uas.messages.contains("\nBYE sip:caller@127.0.0.1:"));
}

#[test]
fn uas_ring_then_cancel_answers_cancel_and_487() {
    let (uas, uac) = run_pair(
        "uas_ring_then_cancel.xml",
        SippOptions::default(),
        "uac_cancel.xml",
        SippOptions::default(),
    );
    assert_both_succeed(&uas, &uac);
    let messages = &uas.messages;
    assert!(
        messages.contains("SIP/2.0 487 Request Terminated"),
        "{messages}"
    );
    assert!(messages.contains("CSeq: 1 INVITE"), "{messages}");
}

#[test]
fn uas_answer_crosses_cancel_answers_200_then_takes_the_bye() {
    let (uas, uac) = run_pair(
        "uas_answer_crosses_cancel.xml",
        SippOptions::default(),
        "uac_cancel_crossed.xml",
        SippOptions::default(),
    );
    assert_both_succeed(&uas, &uac);
    let messages = &uas.messages;
    assert!(!messages.contains("SIP/2.0 487"), "{messages}");
    assert!(messages.contains("CSeq: 1 CANCEL"), "{messages}");
    assert!(messages.contains("CSeq: 2 BYE"), "{messages}");
}

#[test]
fn uas_answer_crosses_cancel_fails_a_caller_that_expects_487() {
    let (uas, uac) = run_pair(
        "uas_answer_crosses_cancel.xml",
        SippOptions::default(),
        "uac_cancel.xml",
        SippOptions::default(),
    );
    uac.assert_failed_call();
    drop(uas);
}

#[test]
fn uas_forked_answers_takes_the_second_legs_bye_first() {
    let (uas, uac) = run_pair(
        "uas_forked_answers.xml",
        SippOptions::default(),
        "uac_forked_answers.xml",
        SippOptions::default(),
    );
    assert_both_succeed(&uas, &uac);
    let messages = &uas.messages;
    assert!(messages.contains("BYE sip:callee-02@"), "{messages}");
    assert!(messages.contains("BYE sip:callee-01@"), "{messages}");
}

fn auth_pair(uas_file: &str, uac_user: &str, uac_password: &str) -> (SippOutcome, SippOutcome) {
    run_pair(
        uas_file,
        SippOptions::default().auth("alice", "s3cret"),
        "uac_auth.xml",
        SippOptions::default().auth(uac_user, uac_password),
    )
}

#[test]
fn uas_auth_challenge_407_accepts_proxy_authorization() {
    let (uas, uac) = auth_pair("uas_auth_challenge.xml", "alice", "s3cret");
    assert_both_succeed(&uas, &uac);
    let messages = &uas.messages;
    assert!(
        messages.contains("407 Proxy Authentication Required"),
        "{messages}"
    );
    assert!(
        messages.contains("Proxy-Authorization: Digest"),
        "{messages}"
    );
    assert!(uas.scenario_log.contains("from user alice"));
}

#[test]
fn uas_auth_challenge_407_flags_the_wrong_user() {
    let (uas, uac) = auth_pair("uas_auth_challenge.xml", "mallory", "s3cret");
    // The UAS still answers (a failed check marks the call, SIPp goes on),
    // so the caller completes, and the UAS run fails.
    uac.assert_success();
    uas.assert_failed_call();
    assert!(
        uas.report.contains("got_user:\"mallory\""),
        "{}",
        uas.report
    );
}

#[test]
fn uas_auth_challenge_401_verifies_the_digest() {
    let (uas, uac) = auth_pair("uas_auth_challenge_401.xml", "alice", "s3cret");
    assert_both_succeed(&uas, &uac);
    let messages = &uas.messages;
    assert!(messages.contains("SIP/2.0 401 Unauthorized"), "{messages}");
    assert!(messages.contains("\nAuthorization: Digest"), "{messages}");
}

#[test]
fn uas_auth_challenge_401_rejects_a_wrong_password() {
    let (uas, uac) = auth_pair("uas_auth_challenge_401.xml", "alice", "wrong");
    // uac_auth.xml takes the 403 branch and ACKs it: the caller's run is fine.
    uac.assert_success();
    uas.assert_failed_call();
    assert!(uas.messages.contains("SIP/2.0 403 Forbidden"));
    assert!(uas.scenario_log.contains("verifyauth failed"));
}

#[test]
fn sipp_harness_reports_a_timeout() {
    // Nobody calls: the wait runs out, the harness stops SIPp and says so.
    let mut uas = SippUas::start("uas_echo.xml", SippOptions::default());
    let outcome = uas.wait(Duration::from_millis(300));
    assert!(outcome.timed_out && !outcome.success, "{}", outcome.report);
    assert!(outcome.report.contains("timed out"), "{}", outcome.report);
    // A failed run keeps its logs for the post-mortem.
    assert_eq!(outcome.log_dir, uas.log_dir());
    assert!(outcome.log_dir.join("messages.log").is_file());
}

#[test]
fn sipp_ends_by_itself_after_its_own_timeout() {
    // What keeps a SIPp left behind by a killed test run from lingering.
    let opts = SippOptions::default().sipp_timeout(Duration::from_secs(1));
    let mut uas = SippUas::start("uas_echo.xml", opts);
    let outcome = uas.wait(Duration::from_secs(5));
    assert!(!outcome.timed_out, "{}", outcome.report);
    assert!(!outcome.success, "{}", outcome.report);
    assert_ne!(outcome.exit_code, Some(0), "{}", outcome.report);
}
