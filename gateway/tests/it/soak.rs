//! The short soak of issue 6 ("nothing leaks"): 200 call cycles with session and
//! registration churn through the `callgate` binary (its own process, so its descriptors and
//! threads are its alone) to the builtin SIP trunk; afterwards every descriptor, thread,
//! `callgate_*` gauge and table size is back at its baseline. RSS is reported, not asserted.

use crate::support::ready_http_addr;
use std::num::NonZeroU32;
use std::process::{Command, Stdio};
use std::time::Duration;

use loadtest::config::{Rate, RunConfig, WsUrl};
use loadtest::trunk::BuiltinTrunk;
use tokio_util::sync::CancellationToken;

const CYCLES: u64 = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_call_cycles_with_registration_churn_leave_nothing_behind() {
    let trunk = BuiltinTrunk::start("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("the builtin trunk binds");
    let mut child = Command::new(env!("CARGO_BIN_EXE_callgate"))
        .args(["--sip-proxy", &trunk.sip_addr().to_string()])
        .args([
            "--http-listen",
            "127.0.0.1:0",
            "--webrtc-bind",
            "127.0.0.1:0",
        ])
        .args(["--sip-listen", "127.0.0.1:0", "--webrtc-workers", "1"])
        .args(["--rtp-port-min", "61000", "--rtp-port-max", "61399"])
        .args(["--sip-keepalive-interval", "0", "--log-level", "warn"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("callgate starts");
    let http = ready_http_addr(&mut child);

    let mut config =
        RunConfig::new(WsUrl::parse(&format!("ws://{http}/ws")).expect("a loopback ws URL"));
    config.calls = CYCLES;
    config.concurrency = NonZeroU32::new(10).expect("non-zero");
    config.rate = Rate::new(40.0).expect("a positive rate");
    config.hold = Duration::from_millis(300);
    config.duration_limit = Duration::from_secs(120);
    config.gateway_pid = Some(child.id());
    config.register = true;
    config.reconnect_every = Some(4);
    let soak = loadtest::soak::soak(
        config,
        10,
        // SIP transactions linger up to 32 s after a call (RFC 6026 Timer M, Timer D).
        Duration::from_secs(45),
        CancellationToken::new(),
    )
    .await;
    let summary = format!("{}{}", soak.run.to_table(), soak.to_table());
    eprintln!("{summary}");

    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    trunk.shutdown().await;

    let calls = &soak.run.calls;
    assert_eq!(
        (calls.attempted, calls.completed, calls.failed),
        (CYCLES, CYCLES, 0),
        "{summary}"
    );
    assert!(soak.errors.is_empty(), "{summary}");
    // The readings cover what must come back: descriptors, threads and every table.
    let baseline = &soak.baseline;
    assert!(
        baseline.open_fds.is_some() && baseline.threads.is_some(),
        "{summary}"
    );
    for gauge in [
        "callgate_ws_connections",
        "callgate_calls_active",
        "callgate_registrations",
        "callgate_media_bridges",
        "callgate_table_entries{table=\"sip_dialogs\"}",
        "callgate_table_entries{table=\"rtp_ports\"}",
        "callgate_table_entries{table=\"agent_routes\"}",
        "callgate_table_entries{table=\"media_ufrags\"}",
        "callgate_table_entries{table=\"media_sip_sources\"}",
    ] {
        assert_eq!(
            baseline.gauges.get(gauge),
            Some(&0.0),
            "{gauge} at baseline\n{summary}"
        );
    }
    assert!(
        soak.returned_to_baseline,
        "not back at baseline: {:?}\n{summary}",
        soak.differences
    );
}

/// `loadtest --idle-agents`: agents connect, register and stay idle while callgate is read;
/// the registrations gauge counts every one of them at the reading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_registered_agents_are_counted_and_measured() {
    let trunk = BuiltinTrunk::start("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("the builtin trunk binds");
    let gateway =
        crate::support::start_gateway(crate::support::test_settings(trunk.sip_addr())).await;
    let report = loadtest::idle::idle_agents(loadtest::idle::IdleConfig {
        url: WsUrl::parse(&crate::support::ws_url(&gateway)).expect("a loopback ws URL"),
        agents: 20,
        extension_base: 5000,
        password: "idle".into(),
        register: true,
        hold: Duration::from_millis(300),
        gateway_pid: Some(std::process::id()),
    })
    .await;
    let summary = report.to_table();
    assert_eq!(report.agents_idle, 20, "{summary}");
    assert!(report.failures.is_empty(), "{summary}");
    assert_eq!(
        report.gauges_idle.get("callgate_registrations"),
        Some(&20.0),
        "{summary}"
    );
    assert_eq!(
        report.gauges_idle.get("callgate_ws_connections"),
        Some(&20.0),
        "{summary}"
    );
    assert!(report.rss_per_agent_bytes.is_some(), "{summary}");
    trunk.shutdown().await;
}
