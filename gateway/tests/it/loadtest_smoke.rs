//! A loadtest smoke run inside the test suite (issue 5): 20 simulated browsers call through a
//! real gateway to the builtin SIP trunk, all in this process, over loopback. Correctness, not
//! speed: every call is established, every audio frame comes back intact, and the report's
//! counts add up, and its timeline (the chart's data) accounts for every echo. A second,
//! smaller run does the same with SRTP (SDES) on the SIP leg.

use std::num::NonZeroU32;
use std::time::Duration;

use loadtest::config::{Rate, RunConfig, WsUrl};
use loadtest::trunk::BuiltinTrunk;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_calls_through_the_builtin_trunk_lose_no_frame() {
    let trunk = start_trunk().await;
    let gateway = start_gateway(test_settings(trunk.sip_addr())).await;

    let mut config = run_config(&gateway, 20, 20.0, 3);
    config.gateway_pid = Some(std::process::id());
    let report = loadtest::run::run(config).await;
    let summary = report.to_table();

    let calls = &report.calls;
    assert!(
        report.inconsistencies().is_empty(),
        "{:?}\n{summary}",
        report.inconsistencies()
    );
    assert_eq!(
        (calls.attempted, calls.established, calls.completed),
        (20, 20, 20),
        "{summary}"
    );
    assert_eq!(
        (calls.failed, calls.ended_early, calls.not_started),
        (0, 0, 0),
        "{summary}"
    );
    assert_eq!(calls.hangup_unconfirmed, 0, "{summary}");
    let answered = report
        .gateway_counters
        .as_ref()
        .and_then(|c| c.get("callgate_calls_total{result=\"answered\"}").copied());
    assert_eq!(
        answered,
        Some(20.0),
        "callgate counted the same calls\n{summary}"
    );
    assert!(!report.run.stopped_by_limit, "{summary}");
    assert_eq!(report.agents.connected, 20, "{summary}");
    assert!(
        calls.peak_concurrent >= 10 && calls.peak_concurrent <= 20,
        "{summary}"
    );
    assert_eq!(report.setup_ms.count, 20, "{summary}");

    let media = &report.media;
    // Audio flowed for most of each call (~150 frames in 3 s; a busy machine makes the
    // generator skip slots, which the report counts, so this only asserts a floor).
    assert!(media.frames_sent >= 20 * 50, "{summary}");
    assert_eq!(
        (media.corrupted, media.foreign, media.duplicates),
        (0, 0, 0),
        "{summary}"
    );
    assert_eq!(media.rtt_ms.count, media.frames_received, "{summary}");
    // No frame is lost: the media worker applies a bridge's Add/Connect before reading the
    // packets that arrived in the same wake-up, so even each call's first frame gets through.
    let counters = report
        .gateway_counters
        .as_ref()
        .expect("callgate's /metrics was read");
    let no_target = counters
        .get("callgate_media_errors_total{kind=\"no_target\"}")
        .copied()
        .unwrap_or(0.0);
    assert_eq!(
        (media.lost, no_target),
        (0, 0.0),
        "frames lost, and gateway no_target drops\n{summary}"
    );
    // callgate's own relay delay covers the relayed audio: each returned frame passed twice
    // (the last 250 ms of counts may be unpublished when the run's final scrape is read).
    let delay = report
        .gateway_relay_delay
        .expect("callgate measured its relay delay");
    assert!(
        delay.packets >= media.frames_received && delay.mean_ms > 0.0,
        "{delay:?}\n{summary}"
    );

    // The trunk saw exactly these calls, and each one ended.
    let stats = trunk.stats();
    assert_eq!(
        (stats.invites, stats.answered, stats.rejected),
        (20, 20, 0),
        "{stats:?}"
    );
    assert!(
        eventually(Duration::from_secs(5), || trunk.stats().byes == 20).await,
        "{:?}",
        trunk.stats()
    );
    assert_eq!(trunk.stats().active_calls, 0);
    // Every frame that came back went through the trunk.
    assert!(stats.rtp_echoed >= media.frames_received, "{stats:?}");

    // /proc was read (the gateway is this process here, and the report says so).
    let gateway_usage = report.gateway.as_ref().expect("measured with a pid");
    assert!(gateway_usage.shares_process_with_generator);
    assert!(gateway_usage.rss_at_peak_bytes.is_some(), "{summary}");
    assert!(
        gateway_usage.cpu_seconds_per_call_minute.is_some(),
        "{summary}"
    );
    assert!(report.generator.cpu_seconds.is_some(), "{summary}");

    // The timeline: every echo lands in exactly one sampling interval, the load shows, and
    // the chart draws it.
    let timeline = &report.timeline;
    let echoes: u64 = timeline.iter().map(|p| p.echoes).sum();
    assert_eq!(echoes, media.frames_received, "{timeline:?}");
    assert!(
        timeline
            .iter()
            .any(|p| p.active_calls >= 10 && p.rtt_p99_ms.is_some()),
        "{timeline:?}"
    );
    // The generator's own memory is in this process's RSS: not reported as callgate's.
    assert!(
        timeline.iter().all(|p| p.gateway_rss_mib.is_none()),
        "{timeline:?}"
    );
    let svg = loadtest::chart::render_svg("smoke", timeline);
    assert!(
        svg.matches(r#"class="point""#).count() >= timeline.len(),
        "{svg}"
    );

    assert_no_leftovers(&gateway).await;
    trunk.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdes_calls_through_the_builtin_trunk_lose_no_frame() {
    let trunk = start_trunk().await;
    // Mandatory: a call the trunk answered without SDES would end `srtp_required`, so every
    // established call below ran SRTP on the SIP leg.
    let mut settings = test_settings(trunk.sip_addr());
    settings.sip.srtp = gateway::config::SrtpSetting::Mandatory;
    let gateway = start_gateway(settings).await;

    let mut config = run_config(&gateway, 5, 10.0, 2);
    config.gateway_pid = Some(std::process::id());
    let report = loadtest::run::run(config).await;
    let summary = report.to_table();
    let calls = &report.calls;
    assert!(report.inconsistencies().is_empty(), "{summary}");
    assert_eq!(
        (
            calls.attempted,
            calls.established,
            calls.completed,
            calls.failed
        ),
        (5, 5, 5, 0),
        "{summary}"
    );
    // Every frame went SRTP to the trunk and came back SRTP (the trunk echoes the
    // ciphertext under the offerer's key), intact.
    assert!(report.media.frames_received >= 5 * 40, "{summary}");
    assert_eq!(
        (
            report.media.corrupted,
            report.media.foreign,
            report.media.lost
        ),
        (0, 0, 0),
        "{summary}"
    );
    let counter = |name: &str| counter_growth(&report, name);
    assert_eq!(
        counter("callgate_calls_total{result=\"answered\"}"),
        5.0,
        "{summary}"
    );
    assert_eq!(
        counter("callgate_media_errors_total{kind=\"srtp_auth\"}"),
        0.0,
        "{summary}"
    );
    trunk.shutdown().await;
}

/// `--pace-frames`: the frames leave from the pacing thread at their slot instants (spread
/// over the frame interval as real browsers' are) and still all come back intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_frames_leave_from_the_pacer_and_come_back_intact() {
    let trunk = start_trunk().await;
    let gateway = start_gateway(test_settings(trunk.sip_addr())).await;

    let mut config = run_config(&gateway, 10, 20.0, 2);
    config.pace_frames = true;
    let report = loadtest::run::run(config).await;
    let summary = report.to_table();
    let calls = &report.calls;
    assert!(report.inconsistencies().is_empty(), "{summary}");
    assert_eq!(
        (calls.attempted, calls.established, calls.completed),
        (10, 10, 10),
        "{summary}"
    );
    let media = &report.media;
    assert!(media.frames_received >= 10 * 40, "{summary}");
    assert_eq!(
        (media.corrupted, media.foreign, media.duplicates, media.lost),
        (0, 0, 0, 0),
        "{summary}"
    );
    assert_eq!(media.rtt_ms.count, media.frames_received, "{summary}");
    // The frames went through the pacer (a task scheduled too late sends its frame at once,
    // so not necessarily every one), none refused.
    let pacing = report
        .generator
        .frame_pacing
        .as_ref()
        .expect("a paced run reports its pacing");
    assert!(
        pacing.sent * 10 >= media.frames_sent * 9 && pacing.sent <= media.frames_sent,
        "{pacing:?}\n{summary}"
    );
    assert_eq!(pacing.send_errors, 0, "{summary}");
    assert!(summary.contains("generator frame pacing"), "{summary}");
    // callgate's batching, from its counters' growth over the run.
    let grown = |name: &str| counter_growth(&report, name);
    let receive_calls = grown("callgate_media_receive_calls_total");
    assert!(
        receive_calls > 0.0
            && grown("callgate_media_received_datagrams_total") >= receive_calls
            && grown("callgate_media_worker_passes_total") > 0.0,
        "{summary}"
    );
    assert!(summary.contains("callgate media batching"), "{summary}");
    trunk.shutdown().await;
}

/// `calls` calls at once, `rate` new calls per second, each held `hold_s` seconds, within a
/// 30 s bound: the runs above differ only in these.
fn run_config(gateway: &gateway::app::Gateway, calls: u32, rate: f64, hold_s: u64) -> RunConfig {
    let mut config = RunConfig::new(WsUrl::parse(&ws_url(gateway)).expect("a loopback ws URL"));
    config.calls = u64::from(calls);
    config.concurrency = NonZeroU32::new(calls).expect("non-zero");
    config.rate = Rate::new(rate).expect("a positive rate");
    config.hold = Duration::from_secs(hold_s);
    config.duration_limit = Duration::from_secs(30);
    config
}

/// The builtin trunk on an OS-chosen loopback port.
async fn start_trunk() -> BuiltinTrunk {
    BuiltinTrunk::start("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("the builtin trunk binds")
}

/// How much callgate's counter `name` grew during the run (0 when it did not).
fn counter_growth(report: &loadtest::Report, name: &str) -> f64 {
    report
        .gateway_counters
        .as_ref()
        .and_then(|c| c.get(name).copied())
        .unwrap_or(0.0)
}
