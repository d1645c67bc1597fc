//! The `callgate` binary as a newcomer runs it: `callgate demo` serves a call end to end, its
//! logs carry neither the password, the dialled number nor SDES keys, and `check-config` explains errors.

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use loadtest::browser::SimBrowser;

use crate::support::*;

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_command_serves_a_call_and_logs_no_secrets() {
    let sip_port = free_udp_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args([
            "demo",
            "--pbx-addr",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--webrtc-bind",
            "127.0.0.1:0",
        ])
        .args([
            "--sip-listen",
            &format!("127.0.0.1:{sip_port}"),
            "--rtp-port-min",
            "10000",
            "--rtp-port-max",
            "10199",
            // Offers carry SDES keys (the demo PBX answers plain RTP): none may be logged.
            "--sip-srtp",
            "optional",
        ])
        .args([
            "--log-format",
            "json",
            "--log-level",
            "debug,rsipstack=warn,str0m=info,is=info",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("callgate starts");
    let http = ready_http_addr(&mut child);

    let (status, body) = http_get(http.parse().expect("addr"), "/readyz").await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    let mut browser = SimBrowser::connect(&format!("ws://{http}/ws"))
        .await
        .expect("connects");
    browser.hello("1001", "pa55-w0rd-xyz").await.expect("hello");
    let call = browser
        .call("+15551234567", BTreeMap::new())
        .await
        .expect("call accepted");
    let end = ended(&mut browser, call.call_id()).await;
    assert_eq!(end.cause, "not_found", "the demo PBX knows no such number");
    call.stop().await;
    let call = browser
        .call("echo", BTreeMap::new())
        .await
        .expect("call accepted");
    call.wait_frames(20, Duration::from_secs(10))
        .await
        .expect("echo through the binary");
    let id = call.call_id().to_string();
    browser.hangup(&id).await.expect("hangup");
    ended(&mut browser, &id).await;
    call.stop().await;
    browser.close().await.expect("closed");

    // SIGTERM: the process stops by itself.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let mut waited = 0;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(waited < 200, "callgate did not stop within 10 s of SIGTERM");
        waited += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
    let mut logs = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut logs)
        .expect("logs");
    assert!(
        logs.contains("\"call_id\""),
        "call lines carry the call id:\n{logs}"
    );
    assert!(logs.contains("outbound call"), "{logs}");
    assert!(
        !logs.contains("pa55-w0rd-xyz"),
        "the password leaked into the logs"
    );
    assert!(
        !logs.contains("15551234567"),
        "the dialled number leaked into the logs"
    );
    assert!(
        !logs.contains("inline:") && !logs.contains("a=crypto"),
        "an SDES key leaked into the logs"
    );
    for line in logs.lines() {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "not JSON: {line}"
        );
    }
}

#[test]
fn check_config_lists_problems_and_accepts_the_example() {
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/callgate.example.toml"
    );
    let ok = Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args(["check-config", example])
        .output()
        .expect("runs");
    assert!(ok.status.success(), "{ok:?}");
    let dir = std::env::temp_dir().join(format!("callgate-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let bad = dir.join("bad.toml");
    for (config, problems) in [
        (
            "[rtp]\nport_min = 5000\nport_max = 4000\n[calls]\nmax_per_agent = 0\n",
            &[
                "rtp.port_min (5000) is above rtp.port_max (4000)",
                "calls.max_per_agent",
            ][..],
        ),
        ("[sip]\nprxy = \"1.2.3.4:5060\"\n", &["prxy"]),
        (
            "[sip]\ntransport = \"tls\"\nkeepalive_interval = 0\n",
            &["needs sip.keepalive_interval between 1 and 150 s"],
        ),
    ] {
        std::fs::write(&bad, config).expect("write");
        let out = Command::new(env!("CARGO_BIN_EXE_callgate"))
            .arg("check-config")
            .arg(&bad)
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(2), "{config}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        for problem in problems {
            assert!(stderr.contains(problem), "{config}: {stderr}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Starts `callgate demo` on free ports; returns the child and its HTTP address.
fn spawn_demo(extra: &[&str]) -> (std::process::Child, String) {
    let sip_port = free_udp_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args([
            "demo",
            "--pbx-addr",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .args([
            "--webrtc-bind",
            "127.0.0.1:0",
            "--sip-listen",
            &format!("127.0.0.1:{sip_port}"),
        ])
        .args(["--rtp-port-min", "10200", "--rtp-port-max", "10399"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("callgate starts");
    let http = ready_http_addr(&mut child);
    (child, http)
}

async fn exited_within(
    child: &mut std::process::Child,
    limit: Duration,
) -> Option<std::process::ExitStatus> {
    let polls = limit.as_millis() / 50;
    for _ in 0..polls {
        if let Some(status) = child.try_wait().expect("wait") {
            return Some(status);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_active_calls_and_a_second_one_ends_them() {
    let (mut child, http) = spawn_demo(&["--calls-drain-timeout", "60"]);
    let mut browser = SimBrowser::connect(&format!("ws://{http}/ws"))
        .await
        .expect("connects");
    browser.set_timeout(Duration::from_secs(10));
    browser.hello("1001", "pw").await.expect("hello");
    let call = browser
        .call("echo", BTreeMap::new())
        .await
        .expect("call accepted");
    call.wait_frames(10, Duration::from_secs(10))
        .await
        .expect("audio");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let mut drained = false;
    for _ in 0..40 {
        let (status, body) = http_get(http.parse().expect("addr"), "/readyz").await;
        if (status, body.as_str()) == (503, "draining\n") {
            drained = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(drained, "/readyz reports draining");
    // New calls are refused; the active one keeps its audio.
    let refused = browser
        .call("echo", BTreeMap::new())
        .await
        .err()
        .expect("refused while draining");
    assert_eq!(refused.code(), Some(signaling::ErrorCode::ShuttingDown));
    let before = call.stats().frames_received;
    call.wait_frames(before + 25, Duration::from_secs(5))
        .await
        .expect("the call continues while draining");
    assert!(
        child.try_wait().expect("wait").is_none(),
        "callgate waits for the active call"
    );
    // The agent hangs up: nothing is left, callgate exits by itself.
    let id = call.call_id().to_string();
    browser.hangup(&id).await.expect("hangup");
    ended(&mut browser, &id).await;
    call.stop().await;
    let status = exited_within(&mut child, Duration::from_secs(10))
        .await
        .expect("exits once drained");
    assert!(status.success(), "{status:?}");

    // A second SIGTERM ends the calls at once.
    let (mut child, http) = spawn_demo(&["--calls-drain-timeout", "60"]);
    let mut browser = SimBrowser::connect(&format!("ws://{http}/ws"))
        .await
        .expect("connects");
    browser.set_timeout(Duration::from_secs(10));
    browser.hello("1001", "pw").await.expect("hello");
    let call = browser
        .call("echo", BTreeMap::new())
        .await
        .expect("call accepted");
    call.wait_frames(10, Duration::from_secs(10))
        .await
        .expect("audio");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let end = ended(&mut browser, call.call_id()).await;
    assert_eq!(
        (end.ended_by, end.cause.as_str()),
        (signaling::EndedBy::Gateway, "shutdown")
    );
    call.stop().await;
    let status = exited_within(&mut child, Duration::from_secs(10))
        .await
        .expect("exits after the second signal");
    assert!(status.success(), "{status:?}");
}
