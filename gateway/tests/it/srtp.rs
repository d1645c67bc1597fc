//! SRTP keyed by SDES (RFC 4568) on the SIP leg, against an independent peer over real
//! loopback sockets: `gateway/tests/sdes_peer.py`, whose SRTP is libsrtp (the `pylibsrtp`
//! wheel, installed by `.ci/test` in `target/sdes-peer/`). The peer unprotects what callgate
//! sends with callgate's SDP key and echoes it re-protected with its own, so a frame the
//! simulated browser gets back intact went through both implementations in both directions.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use gateway::config::SrtpSetting;
use loadtest::browser::{CallOptions, SimBrowser};
use signaling::{CallRef, ClientMessage, EndedBy, ServerMessage};

use crate::support::*;

/// The Python with `pylibsrtp`: `CALLGATE_SDES_PYTHON`, else `target/sdes-peer/bin/python3`.
fn python() -> PathBuf {
    if let Some(path) = std::env::var_os("CALLGATE_SDES_PYTHON") {
        return PathBuf::from(path);
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/sdes-peer/bin/python3");
    assert!(
        path.exists(),
        "{} is missing: run .ci/test, or `python3 -m venv target/sdes-peer && \
         target/sdes-peer/bin/pip install pylibsrtp`",
        path.display()
    );
    path
}

/// One run of the SDES peer: one call, then a JSON summary.
struct SdesPeer {
    child: Child,
    stdout: BufReader<ChildStdout>,
    sip_port: u16,
}

/// What the peer saw, from its summary line.
#[derive(Debug)]
struct Summary {
    json: serde_json::Value,
}

impl Summary {
    fn num(&self, key: &str) -> u64 {
        self.json.get(key).and_then(|v| v.as_u64()).unwrap_or(0)
    }

    fn text(&self, key: &str) -> &str {
        self.json.get(key).and_then(|v| v.as_str()).unwrap_or("")
    }

    fn srtp(&self) -> bool {
        self.json.get("srtp").and_then(|v| v.as_bool()) == Some(true)
    }
}

impl SdesPeer {
    fn start(args: &[&str]) -> SdesPeer {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdes_peer.py");
        let mut child = Command::new(python())
            .arg(script)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the SDES peer starts");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("the peer's READY line");
        let sip_port = line
            .strip_prefix("READY ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("the peer did not start: {line:?}"));
        SdesPeer {
            child,
            stdout,
            sip_port,
        }
    }

    fn sip_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.sip_port))
    }

    /// Waits for the summary (the peer exits by itself after one call or its timeout).
    async fn summary(self) -> Summary {
        tokio::task::spawn_blocking(move || {
            let mut peer = self;
            let mut line = String::new();
            let read = peer.stdout.read_line(&mut line);
            read.expect("the peer's summary");
            Summary {
                json: serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("summary {line:?}: {e}")),
            }
        })
        .await
        .expect("summary waiter")
    }
}

impl Drop for SdesPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn gateway_with(proxy: SocketAddr, srtp: SrtpSetting) -> gateway::app::Gateway {
    let mut settings = test_settings(proxy);
    settings.sip.srtp = srtp;
    start_gateway(settings).await
}

async fn metrics(gateway: &gateway::app::Gateway) -> String {
    http_get(gateway.http_addr(), "/metrics").await.1
}

fn media_errors(text: &str, kind: &str) -> f64 {
    metric(
        text,
        &format!("callgate_media_errors_total{{kind=\"{kind}\"}}"),
    )
}

/// Calls through `gateway`, checks `frames` echoed frames come back intact, hangs up.
async fn echoed_call(gateway: &gateway::app::Gateway, frames: u64) {
    let mut browser = browser(gateway).await;
    let call = answered_call(&mut browser, "1000")
        .await
        .unwrap_or_else(|e| panic!("call ended before answer: {e:?}"));
    let id = call.call_id().to_string();
    let stats = call
        .wait_frames(frames, Duration::from_secs(15))
        .await
        .expect("the peer echoes our audio through SRTP");
    assert_eq!(
        (stats.corrupted, stats.foreign, stats.duplicates),
        (0, 0, 0),
        "{stats:?}"
    );
    browser.hangup(&id).await.expect("hangup acked");
    let end = ended(&mut browser, &id).await;
    assert_eq!(
        (end.ended_by, end.cause.as_str()),
        (EndedBy::Agent, "normal_clearing")
    );
    call.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srtp_mandatory_call_echoes_through_libsrtp_and_drops_tampered_and_replayed_packets() {
    let peer = SdesPeer::start(&["--mode", "uas", "--answer", "savp", "--tamper"]);
    let gateway = gateway_with(peer.sip_addr(), SrtpSetting::Mandatory).await;
    // 400 frames: long enough for a sender report (every 5 s) to go out as SRTCP, and for
    // a quality report (every 2 s) after the peer's receiver report came back.
    echoed_call(&gateway, 400).await;
    let summary = peer.summary().await;
    assert!(summary.srtp(), "{summary:?}");
    assert_eq!(summary.text("their_proto"), "RTP/SAVP", "{summary:?}");
    assert_eq!(summary.text("suite"), "AES_CM_128_HMAC_SHA1_80");
    assert_eq!(summary.text("result"), "bye", "{summary:?}");
    assert!(summary.num("rx_ok") >= 300, "{summary:?}");
    assert_eq!(
        summary.num("rx_failed"),
        0,
        "libsrtp refused our SRTP: {summary:?}"
    );
    assert!(
        summary.num("rtcp_ok") >= 1,
        "no SRTCP sender report: {summary:?}"
    );
    assert_eq!(summary.num("rtcp_failed"), 0, "{summary:?}");
    assert_eq!(
        (summary.num("tampered_sent"), summary.num("replayed_sent")),
        (2, 2)
    );
    let mut text = String::new();
    let mut counted = false;
    for _ in 0..60 {
        text = metrics(&gateway).await;
        if media_errors(&text, "srtp_auth") >= 2.0 && media_errors(&text, "srtp_replay") >= 2.0 {
            counted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(counted, "{text}");
    // Only the tampered and replayed packets: the peer's SRTCP report passed.
    assert_eq!(media_errors(&text, "srtp_auth"), 2.0, "{text}");
    assert_eq!(media_errors(&text, "srtp_replay"), 2.0, "{text}");
    // The peer's receiver report (SRTCP from its RTCP port to callgate's) reached the call
    // and gave the SIP leg a round trip.
    assert_eq!(
        metric(&text, "callgate_call_rtt_seconds_count{leg=\"sip\"}"),
        1.0,
        "{text}"
    );
    assert_no_leftovers(&gateway).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srtp_optional_offers_avp_and_takes_the_pbxs_32_bit_suite() {
    let peer = SdesPeer::start(&[
        "--mode",
        "uas",
        "--answer",
        "avp",
        "--suite",
        "AES_CM_128_HMAC_SHA1_32",
    ]);
    let gateway = gateway_with(peer.sip_addr(), SrtpSetting::Optional).await;
    echoed_call(&gateway, 100).await;
    let summary = peer.summary().await;
    assert!(summary.srtp(), "{summary:?}");
    assert_eq!(summary.text("their_proto"), "RTP/AVP", "{summary:?}");
    assert_eq!(summary.text("suite"), "AES_CM_128_HMAC_SHA1_32");
    assert_eq!(summary.num("rx_failed"), 0, "{summary:?}");
    let text = metrics(&gateway).await;
    assert_eq!(media_errors(&text, "srtp_auth"), 0.0, "{text}");
    assert_no_leftovers(&gateway).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srtp_optional_falls_back_to_plain_rtp_when_the_pbx_ignores_crypto() {
    let peer = SdesPeer::start(&["--mode", "uas", "--answer", "plain"]);
    let gateway = gateway_with(peer.sip_addr(), SrtpSetting::Optional).await;
    echoed_call(&gateway, 50).await;
    let summary = peer.summary().await;
    assert!(!summary.srtp(), "{summary:?}");
    assert_eq!(summary.text("their_proto"), "RTP/AVP", "{summary:?}");
    assert!(summary.num("rx_ok") >= 50, "{summary:?}");
    assert_no_leftovers(&gateway).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srtp_mandatory_call_answered_without_crypto_ends_with_srtp_required() {
    let peer = SdesPeer::start(&["--mode", "uas", "--answer", "plain"]);
    let gateway = gateway_with(peer.sip_addr(), SrtpSetting::Mandatory).await;
    let mut browser = browser(&gateway).await;
    let call = browser
        .call("1000", BTreeMap::new())
        .await
        .expect("call accepted");
    let id = call.call_id().to_string();
    let end = ended(&mut browser, &id).await;
    assert_eq!(
        (end.ended_by, end.cause.as_str(), end.answered),
        (EndedBy::Gateway, "srtp_required", false),
        "{end:?}"
    );
    assert!(end.reason.contains("a=crypto"), "{}", end.reason);
    call.stop().await;
    let summary = peer.summary().await;
    assert_eq!(summary.text("their_proto"), "RTP/SAVP", "{summary:?}");
    assert_eq!(
        summary.text("result"),
        "bye",
        "the dialog is ended: {summary:?}"
    );
    assert_no_leftovers(&gateway).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srtp_keys_survive_hold_and_resume_re_invites() {
    let peer = SdesPeer::start(&["--mode", "uas", "--answer", "savp"]);
    let gateway = gateway_with(peer.sip_addr(), SrtpSetting::Mandatory).await;
    let mut browser = browser(&gateway).await;
    let call = browser
        .call("1000", BTreeMap::new())
        .await
        .expect("call accepted");
    let id = call.call_id().to_string();
    browser
        .wait_for("answered", |m| matches!(m, ServerMessage::CallAnswered(_)))
        .await
        .expect("answered");
    let before = call
        .wait_frames(50, Duration::from_secs(10))
        .await
        .expect("echo before hold");
    for (message, what) in [
        (
            ClientMessage::Hold(CallRef {
                request_id: browser.next_request_id(),
                call_id: id.clone(),
            }),
            "held",
        ),
        (
            ClientMessage::Unhold(CallRef {
                request_id: browser.next_request_id(),
                call_id: id.clone(),
            }),
            "resumed",
        ),
    ] {
        browser.send_message(&message).await.expect("sent");
        browser
            .wait_for(what, |m| {
                matches!(
                    m,
                    ServerMessage::CallHeld(_) | ServerMessage::CallResumed(_)
                )
            })
            .await
            .expect("the PBX accepted the re-INVITE");
    }
    // Same keys, same contexts: the stream (and its rollover counter) goes on.
    let after = call
        .wait_for(Duration::from_secs(10), "echo after resume", |s| {
            s.frames_received >= before.frames_received + 50
        })
        .await
        .expect("echo after resume");
    assert_eq!((after.corrupted, after.foreign), (0, 0), "{after:?}");
    browser.hangup(&id).await.expect("hangup acked");
    ended(&mut browser, &id).await;
    call.stop().await;
    let summary = peer.summary().await;
    assert_eq!(summary.num("rx_failed"), 0, "{summary:?}");
    let text = metrics(&gateway).await;
    assert_eq!(media_errors(&text, "srtp_auth"), 0.0, "{text}");
    assert_eq!(media_errors(&text, "srtp_replay"), 0.0, "{text}");
    assert_no_leftovers(&gateway).await;
}

async fn registered_agent(
    srtp: SrtpSetting,
) -> (
    gateway::demo::DemoPbx,
    gateway::app::Gateway,
    SimBrowser,
    String,
) {
    let pbx = start_demo(None).await;
    let gateway = gateway_with(pbx.sip_addr(), srtp).await;
    let mut browser = browser(&gateway).await;
    let request_id = browser.next_request_id();
    browser
        .send_message(&ClientMessage::Register { request_id })
        .await
        .expect("register sent");
    browser
        .wait_for("registered", |m| matches!(m, ServerMessage::Registered(_)))
        .await
        .expect("registered");
    let contact = gateway
        .services()
        .sip
        .agent_contacts()
        .pop()
        .expect("the agent is routed");
    (pbx, gateway, browser, contact)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_sdes_call_is_answered_with_our_own_key() {
    let (_pbx, gateway, mut browser, contact) = registered_agent(SrtpSetting::Mandatory).await;
    let target = gateway.sip_addr().to_string();
    let uri = format!("sip:{contact}@{target}");
    let peer = SdesPeer::start(&[
        "--mode",
        "uac",
        "--offer",
        "savp",
        "--suite",
        "AES_CM_128_HMAC_SHA1_32",
        "--target",
        &target,
        "--uri",
        &uri,
    ]);
    let incoming = browser.next_incoming().await.expect("incoming_call");
    let call = browser
        .answer(&incoming, CallOptions::default())
        .await
        .expect("answered");
    let stats = call
        .wait_frames(100, Duration::from_secs(15))
        .await
        .expect("the caller echoes our audio through SRTP");
    assert_eq!(
        (stats.corrupted, stats.foreign, stats.duplicates),
        (0, 0, 0),
        "{stats:?}"
    );
    browser.hangup(&incoming.call_id).await.expect("hangup");
    ended(&mut browser, &incoming.call_id).await;
    call.stop().await;
    let summary = peer.summary().await;
    assert_eq!(summary.num("status"), 200, "{summary:?}");
    assert!(summary.srtp(), "{summary:?}");
    assert_eq!(summary.text("their_proto"), "RTP/SAVP", "{summary:?}");
    assert_eq!(summary.text("suite"), "AES_CM_128_HMAC_SHA1_32");
    assert_eq!(summary.num("rx_failed"), 0, "{summary:?}");
    assert!(summary.num("rx_ok") >= 100, "{summary:?}");
    assert_no_leftovers(&gateway).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_savp_offer_is_refused_with_488_while_srtp_is_off() {
    let (_pbx, gateway, _browser, contact) = registered_agent(SrtpSetting::Off).await;
    let target = gateway.sip_addr().to_string();
    let uri = format!("sip:{contact}@{target}");
    let peer = SdesPeer::start(&[
        "--mode", "uac", "--offer", "savp", "--target", &target, "--uri", &uri,
    ]);
    let summary = peer.summary().await;
    assert_eq!(
        (summary.num("status"), summary.text("result")),
        (488, "refused"),
        "{summary:?}"
    );
    assert_no_leftovers(&gateway).await;
}

/// baresip (Debian's package) as the PBX: a real softphone whose SRTP is libre's own, with
/// `answermode=auto` and its `echo` module, which plays each call's received audio back into
/// it (decoded and re-encoded by baresip's G.711 codec, so most frames come back byte for
/// byte). Headless: no UI module; its output goes to a log file read at the end.
struct Baresip {
    child: Child,
    dir: PathBuf,
    sip: SocketAddr,
}

impl Baresip {
    /// Starts baresip on a free port; baresip also listens on TCP at that port and TLS at
    /// the next, so a port whose twins are taken (or get taken before baresip binds) is
    /// retried with another.
    fn start(mediaenc: &str) -> Baresip {
        let mut last_log = String::new();
        for _ in 0..5 {
            match Baresip::try_start(mediaenc) {
                Ok(baresip) => return baresip,
                Err(log) => last_log = log,
            }
        }
        panic!("baresip did not start:\n{last_log}");
    }

    fn try_start(mediaenc: &str) -> Result<Baresip, String> {
        static RUN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let run = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!(
            "../target/tmp/baresip/{}-{run}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("baresip dir");
        let port = free_sip_port();
        // Loopback only: SIP, RTP (a range above Linux's ephemeral ports) and DNS (unused:
        // every address is an IP).
        let config = format!(
            "poll_method epoll\nsip_listen 127.0.0.1:{port}\nnet_interface 127.0.0.1\n\
             dns_server 127.0.0.1:53\nrtp_ports 62000-62999\n\
             audio_player aubridge,x\naudio_source aubridge,x\naudio_alert aubridge,x\n\
             module_path /usr/lib/baresip/modules\nmodule g711.so\nmodule aubridge.so\n\
             module srtp.so\nmodule_app account.so\nmodule_app echo.so\n"
        );
        std::fs::write(dir.join("config"), config).expect("config");
        std::fs::write(
            dir.join("accounts"),
            format!(
                "<sip:pbx@127.0.0.1:{port}>;regint=0;mediaenc={mediaenc};answermode=auto;\
                 audio_codecs=PCMU,PCMA\n"
            ),
        )
        .expect("accounts");
        let log = std::fs::File::create(dir.join("log")).expect("log file");
        let child = Command::new("baresip")
            .args(["-f", dir.to_str().expect("utf-8 path"), "-v", "-t", "60"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("baresip starts (apt-get install baresip-core; .ci/test installs it)");
        let mut baresip = Baresip {
            child,
            dir,
            sip: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        for _ in 0..100 {
            let log = baresip.log();
            if log.contains("baresip is ready") {
                return Ok(baresip);
            }
            if matches!(baresip.child.try_wait(), Ok(Some(_))) || log.contains("init failed") {
                return Err(log);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(baresip.log())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }
}

/// A port free on UDP and on TCP, with the next port free on TCP too (baresip's SIP sockets).
fn free_sip_port() -> u16 {
    for _ in 0..50 {
        let Ok(port) = std::net::UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()) else {
            continue;
        };
        let port = port.port();
        let twins_free = std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && port < u16::MAX
            && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok();
        if twins_free {
            return port;
        }
    }
    panic!("no free port for baresip");
}

impl Drop for Baresip {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_answers_an_sdes_call_and_its_echo_comes_back_through_srtp() {
    let peer = Baresip::start("srtp-mand");
    let gateway = gateway_with(peer.sip, SrtpSetting::Mandatory).await;
    let mut browser = browser(&gateway).await;
    let call = answered_call(&mut browser, "pbx")
        .await
        .unwrap_or_else(|e| panic!("call ended before answer: {e:?}\n{}", peer.log()));
    let id = call.call_id().to_string();
    let stats = call
        .wait_frames(150, Duration::from_secs(15))
        .await
        .unwrap_or_else(|e| panic!("no echo through baresip: {e}\n{}", peer.log()));
    // Every echoed frame intact: baresip decrypted our SRTP and we decrypted its (its G.711
    // decode/encode is transparent). `foreign` counts baresip's own first frames, sent
    // before the echo has audio.
    assert_eq!((stats.corrupted, stats.duplicates), (0, 0), "{stats:?}");
    assert!(stats.foreign <= 50, "{stats:?}");
    browser.hangup(&id).await.expect("hangup acked");
    let end = ended(&mut browser, &id).await;
    assert_eq!(end.cause, "normal_clearing");
    call.stop().await;
    let text = metrics(&gateway).await;
    assert_eq!(media_errors(&text, "srtp_auth"), 0.0, "{text}");
    assert_eq!(media_errors(&text, "srtp_replay"), 0.0, "{text}");
    let log = peer.log();
    assert!(
        log.contains("SRTP is Enabled (cryptosuite=AES_CM_128_HMAC_SHA1_80)"),
        "{log}"
    );
    assert!(!log.contains("failed to decrypt"), "{log}");
    assert_no_leftovers(&gateway).await;
}
