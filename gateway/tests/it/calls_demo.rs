//! Calls through callgate to the embedded demo PBX: a simulated browser (WebSocket + str0m,
//! full ICE, DTLS-SRTP) on one side, a real SIP UAS on the other, real loopback sockets.

use std::collections::BTreeMap;
use std::time::Duration;

use gateway::app::Gateway;
use loadtest::browser::{CallEvent, SimBrowser, SimCall};
use signaling::EndedBy;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_call_returns_every_frame_intact_then_agent_hangs_up() {
    let pbx = start_demo(None).await;
    let gateway = start_gateway(test_settings(pbx.sip_addr())).await;
    let mut browser = browser(&gateway).await;

    let mut headers = BTreeMap::new();
    headers.insert("X-Call-UUID".to_string(), "3f0c7a52-test".to_string());
    let call = browser.call("echo", headers).await.expect("call accepted");
    let id = call.call_id().to_string();
    assert!(matches!(event(&mut browser, &id).await, CallEvent::Ringing(r) if r.sip_status == 180));
    assert!(matches!(
        event(&mut browser, &id).await,
        CallEvent::Answered(_)
    ));

    call.wait_connected(Duration::from_secs(5))
        .await
        .expect("ICE+DTLS connect");
    let stats = call
        .wait_frames(150, Duration::from_secs(10))
        .await
        .expect("audio comes back");
    assert_eq!(stats.corrupted, 0, "{stats:?}");
    assert_eq!(stats.foreign, 0, "{stats:?}");
    assert_eq!(stats.other_payload, 0, "{stats:?}");

    let (_, metrics) = http_get(gateway.http_addr(), "/metrics").await;
    assert_eq!(metric(&metrics, "callgate_calls_active"), 1.0);
    assert!(
        metric(
            &metrics,
            "callgate_rtp_packets_total{leg=\"sip\",direction=\"out\"}"
        ) >= 100.0,
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            "callgate_rtp_packets_total{leg=\"sip\",direction=\"in\"}"
        ) >= 100.0
    );
    // Each relayed RTP packet's hold time is booked: 150 frames came back, so at least 300
    // packets were relayed, less what the last 250 ms publication missed.
    let held = metric(&metrics, "callgate_media_relay_delay_seconds_count");
    let received = metric(
        &metrics,
        "callgate_rtp_packets_total{leg=\"webrtc\",direction=\"in\"}",
    ) + metric(
        &metrics,
        "callgate_rtp_packets_total{leg=\"sip\",direction=\"in\"}",
    );
    assert!(
        (200.0..=received).contains(&held),
        "{held} of {received} received datagrams:\n{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "callgate_media_relay_delay_seconds_bucket{le=\"+Inf\"}"
        ),
        held
    );
    let total = metric(&metrics, "callgate_media_relay_delay_seconds_sum");
    assert!(total > 0.0 && total.is_finite(), "{total}");

    browser.hangup(&id).await.expect("hangup acked");
    let end = ended(&mut browser, &id).await;
    assert_eq!(
        (end.ended_by, end.cause.as_str(), end.answered),
        (EndedBy::Agent, "normal_clearing", true)
    );
    let quality = end.quality.expect("an answered call reports its quality");
    // The report is the bridge's measurement when it was removed, so it covers the whole
    // call: the 150 frames that came back before the hang-up crossed both legs (the last
    // periodic sample, 2 s after the bridge was made, held only ~100 each way).
    assert!(
        quality.webrtc.packets >= 150 && quality.sip.packets >= 150,
        "{quality:?}"
    );
    assert_eq!(
        (quality.webrtc.lost, quality.sip.lost),
        (0, 0),
        "{quality:?}"
    );
    assert!(
        quality.webrtc.jitter_ms < 20.0 && quality.sip.jitter_ms < 20.0,
        "{quality:?}"
    );
    assert!(quality.mos > 4.0, "{quality:?}");
    let final_stats = call.stop().await;
    // Everything sent before the hangup, less what was in flight, came back.
    assert!(
        final_stats.frames_received + 10 >= stats.frames_sent,
        "{final_stats:?}"
    );

    assert_no_leftovers(&gateway).await;
    assert!(
        eventually(Duration::from_secs(3), || pbx.active_calls() == 0).await,
        "the PBX saw the BYE"
    );
    let (_, metrics) = http_get(gateway.http_addr(), "/metrics").await;
    assert_eq!(
        metric(&metrics, "callgate_calls_total{result=\"answered\"}"),
        1.0,
        "{metrics}"
    );
    assert_eq!(metric(&metrics, "callgate_calls_active"), 0.0);
    assert_eq!(metric(&metrics, "callgate_call_setup_seconds_count"), 1.0);
    assert_eq!(
        metric(&metrics, "callgate_call_mos_count"),
        1.0,
        "{metrics}"
    );
    assert!(
        metric(&metrics, "process_resident_memory_bytes") > 0.0,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "callgate_call_loss_ratio_count{leg=\"sip\"}"),
        1.0
    );
    assert!(metric(&metrics, "callgate_sip_responses_total{code=\"200\"}") >= 1.0);
    assert!(metric(&metrics, "callgate_sip_responses_total{code=\"180\"}") >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_media_flows_before_the_answer() {
    let pbx = start_demo(None).await;
    let gateway = start_gateway(test_settings(pbx.sip_addr())).await;
    let mut browser = browser(&gateway).await;
    let call = browser
        .call("early", BTreeMap::new())
        .await
        .expect("call accepted");
    let id = call.call_id().to_string();
    assert!(
        matches!(event(&mut browser, &id).await, CallEvent::EarlyMedia(e) if e.sip_status == 183)
    );
    // The demo PBX echoes during its 3 s of early media: frames come back before the 200.
    let early = call
        .wait_frames(25, Duration::from_secs(3))
        .await
        .expect("early media echoes");
    assert_eq!(early.corrupted, 0);
    assert!(matches!(
        event(&mut browser, &id).await,
        CallEvent::Answered(_)
    ));
    let before = call.stats().frames_received;
    call.wait_frames(before + 25, Duration::from_secs(5))
        .await
        .expect("audio continues after answer");
    browser.hangup(&id).await.expect("hangup acked");
    ended(&mut browser, &id).await;
    let stats = call.stop().await;
    assert_eq!((stats.corrupted, stats.duplicates), (0, 0), "{stats:?}");
    assert_no_leftovers(&gateway).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_failures_map_to_causes() {
    let pbx = start_demo(None).await;
    let gateway = start_gateway(test_settings(pbx.sip_addr())).await;
    let mut browser = browser(&gateway).await;
    for (number, cause, status) in [
        ("busy", "busy", 486),
        ("noanswer", "unavailable", 480),
        ("nobody", "not_found", 404),
    ] {
        let call = browser
            .call(number, BTreeMap::new())
            .await
            .expect("call accepted");
        let end = ended(&mut browser, call.call_id()).await;
        assert_eq!(
            (end.ended_by, end.cause.as_str(), end.sip_status),
            (EndedBy::Remote, cause, Some(status)),
            "{number}"
        );
        call.stop().await;
    }
    assert_no_leftovers(&gateway).await;
    assert!(eventually(Duration::from_secs(3), || pbx.active_calls() == 0).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_websocket_mid_call_ends_the_sip_call() {
    let pbx = start_demo(None).await;
    let gateway = start_gateway(test_settings(pbx.sip_addr())).await;
    let mut browser = browser(&gateway).await;
    let call = browser
        .call("echo", BTreeMap::new())
        .await
        .expect("call accepted");
    call.wait_frames(10, Duration::from_secs(10))
        .await
        .expect("audio flows");
    assert_eq!(pbx.active_calls(), 1);
    browser.close().await.expect("closed");
    assert!(
        eventually(Duration::from_secs(5), || pbx.active_calls() == 0).await,
        "the PBX got a BYE"
    );
    call.stop().await;
    assert_no_leftovers(&gateway).await;
    let (_, metrics) = http_get(gateway.http_addr(), "/metrics").await;
    assert_eq!(metric(&metrics, "callgate_ws_connections"), 0.0);
    assert_eq!(metric(&metrics, "callgate_calls_active"), 0.0);
}

/// Thread ids of this test process's media workers.
fn media_threads() -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .filter_map(Result::ok)
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|name| name.starts_with("media-"))
        })
        .map(|task| task.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Field `index` of `/proc/self/task/<tid>/stat`, counted from the state (the third field,
/// the first after the parenthesised name).
fn thread_stat_field(tid: &str, index: usize) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    let after_name = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
    after_name.split(' ').nth(index)?.parse().ok()
}

/// CPU time (user + system, in clock ticks) of each of `threads` over `window`.
async fn cpu_ticks_over(threads: &[String], window: Duration) -> Vec<u64> {
    // utime and stime: fields 14 and 15 of stat.
    let ticks = |tid: &String| {
        thread_stat_field(tid, 11).unwrap_or(0) + thread_stat_field(tid, 12).unwrap_or(0)
    };
    let before: Vec<u64> = threads.iter().map(ticks).collect();
    tokio::time::sleep(window).await;
    threads
        .iter()
        .zip(before)
        .map(|(tid, before)| ticks(tid).saturating_sub(before))
        .collect()
}

/// A call to the demo PBX's echo whose first 50 frames came back intact.
async fn echo_call_with_clean_audio(browser: &mut SimBrowser) -> SimCall {
    let call = answered_call(browser, "echo")
        .await
        .expect("the demo PBX answers");
    let stats = call
        .wait_frames(50, Duration::from_secs(10))
        .await
        .expect("audio comes back");
    assert_eq!((stats.corrupted, stats.foreign), (0, 0), "{stats:?}");
    call
}

/// Waits until `frames` frames came back, none corrupted, foreign, duplicated or of another
/// payload type, then reads `/metrics` once the workers have published (every 250 ms).
async fn metrics_after_clean_frames(call: &SimCall, frames: u64, gateway: &Gateway) -> String {
    let stats = call
        .wait_frames(frames, Duration::from_secs(10))
        .await
        .expect("audio keeps coming back");
    assert_eq!(
        (
            stats.corrupted,
            stats.foreign,
            stats.duplicates,
            stats.other_payload
        ),
        (0, 0, 0, 0),
        "{stats:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    http_get(gateway.http_addr(), "/metrics").await.1
}

/// The agent hangs up; the call ends and the gateway keeps nothing of it.
async fn hang_up_and_check_nothing_is_left(
    browser: &mut SimBrowser,
    call: SimCall,
    gateway: &Gateway,
) {
    let id = call.call_id().to_string();
    browser.hangup(&id).await.expect("hangup acked");
    ended(browser, &id).await;
    call.stop().await;
    assert_no_leftovers(gateway).await;
}

/// The media workers counted none of these error kinds in the published metrics.
fn assert_no_media_errors(metrics: &str, kinds: &[&str]) {
    for kind in kinds {
        let name = format!("callgate_media_errors_total{{kind=\"{kind}\"}}");
        assert_eq!(metric(metrics, &name), 0.0, "{name}:\n{metrics}");
    }
}

/// `webrtc.direct_srtp` (on by default): the worker opens the browser's SRTP and seals
/// what it sends with the keys of the leg's DTLS handshake, around str0m; the simulated
/// browser (str0m's own SRTP) gets every frame back intact. Off, every packet goes through
/// str0m, with the same audio.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browsers_rtp_goes_around_str0m_unless_direct_srtp_is_off() {
    let pbx = start_demo(None).await;
    for direct in [true, false] {
        let mut settings = test_settings(pbx.sip_addr());
        settings.webrtc.direct_srtp = direct;
        let gateway = start_gateway(settings).await;
        let mut browser = browser(&gateway).await;
        let call = echo_call_with_clean_audio(&mut browser).await;
        let metrics = metrics_after_clean_frames(&call, 100, &gateway).await;
        let opened = metric(
            &metrics,
            "callgate_browser_rtp_direct_packets_total{direction=\"in\"}",
        );
        let sealed = metric(
            &metrics,
            "callgate_browser_rtp_direct_packets_total{direction=\"out\"}",
        );
        if direct {
            assert!(opened >= 90.0 && sealed >= 90.0, "{metrics}");
        } else {
            assert_eq!((opened, sealed), (0.0, 0.0), "{metrics}");
        }
        assert_no_media_errors(&metrics, &["srtp_auth", "srtp_replay", "webrtc_rejected"]);
        hang_up_and_check_nothing_is_left(&mut browser, call, &gateway).await;
    }
}

/// Once the browser's RTP passes the keys of its handshake, the worker lets the leg's str0m
/// instance go (`media_str0m_legs` falls to 0 while the call is up) and keeps the leg
/// itself: it answers the browser's consent checks, sends its RTCP reports (the simulated
/// browser, str0m, measures its round trip from them) and reads the browser's (callgate's
/// round trip for the leg), and the audio goes on intact through all of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_call_keeps_its_browser_leg_without_str0m() {
    let pbx = start_demo(None).await;
    let gateway = start_gateway(test_settings(pbx.sip_addr())).await;
    let mut browser = browser(&gateway).await;
    let call = echo_call_with_clean_audio(&mut browser).await;
    let id = call.call_id().to_string();
    let str0m_legs = "callgate_table_entries{table=\"media_str0m_legs\"}";
    let mut metrics = String::new();
    for _ in 0..40 {
        metrics = http_get(gateway.http_addr(), "/metrics").await.1;
        if metric(&metrics, str0m_legs) == 0.0 && metric(&metrics, "callgate_calls_active") == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(metric(&metrics, str0m_legs), 0.0, "{metrics}");
    // Long enough for the simulated browser's consent checks (str0m's ICE agent checks a
    // nominated pair every few seconds and drops it when they go unanswered) and for two
    // rounds of reports each way (every 5 s).
    tokio::time::sleep(Duration::from_secs(12)).await;
    let before = call.stats();
    let stats = call
        .wait_frames(before.frames_received + 100, Duration::from_secs(5))
        .await
        .expect("audio still comes back");
    assert_eq!(
        (
            stats.corrupted,
            stats.foreign,
            stats.duplicates,
            stats.ended.is_some()
        ),
        (0, 0, 0, false),
        "{stats:?}"
    );
    assert!(
        stats.peer_rtt_us.is_some_and(|us| us < 1_000_000),
        "the simulated browser read callgate's receiver reports: {stats:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let metrics = http_get(gateway.http_addr(), "/metrics").await.1;
    let consent = metric(&metrics, "callgate_browser_consent_checks_total");
    let reports_in = metric(
        &metrics,
        "callgate_browser_rtcp_reports_total{direction=\"in\"}",
    );
    let reports_out = metric(
        &metrics,
        "callgate_browser_rtcp_reports_total{direction=\"out\"}",
    );
    assert!(
        consent >= 2.0 && reports_in >= 2.0 && reports_out >= 2.0,
        "{consent} consent checks answered, {reports_in} reports read, {reports_out} sent:\n{metrics}"
    );
    assert_no_media_errors(
        &metrics,
        &[
            "srtp_auth",
            "srtp_replay",
            "stun_refused",
            "webrtc_rejected",
        ],
    );
    browser.hangup(&id).await.expect("hangup acked");
    let end = ended(&mut browser, &id).await;
    let quality = end.quality.expect("an answered call reports its quality");
    assert!(
        quality.webrtc.rtt_ms.is_some_and(|rtt| rtt < 1000.0),
        "callgate read the browser's receiver reports: {quality:?}"
    );
    call.stop().await;
    assert_no_leftovers(&gateway).await;
}

/// `webrtc.busy_poll_us`: while a call's packets flow, the worker keeps polling instead of
/// sleeping (it shows as CPU time: a sleeping worker relaying one call uses a few percent
/// of a core), and once the call is over it sleeps again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_polling_media_worker_spins_only_while_packets_flow() {
    let pbx = start_demo(None).await;
    let before = media_threads();
    let mut settings = test_settings(pbx.sip_addr());
    settings.webrtc.busy_poll_us = gateway::config::MAX_BUSY_POLL_US;
    let gateway = start_gateway(settings).await;
    let mut browser = browser(&gateway).await;
    let call = echo_call_with_clean_audio(&mut browser).await;
    // This gateway's worker, and any another test started meanwhile (those never spin).
    // Looked up once audio has flowed: a thread takes its name only when it first runs.
    let ours: Vec<String> = media_threads()
        .into_iter()
        .filter(|tid| !before.contains(tid))
        .collect();
    assert!(!ours.is_empty(), "the gateway's media worker is running");
    // 2 s is 200 ticks; a worker that polls through the 20 ms between two frames for
    // 10 ms spends about half of it on CPU, one that sleeps ~1 tick. Under 10 % means it
    // slept.
    let window = Duration::from_secs(2);
    let busy = cpu_ticks_over(&ours, window).await;
    assert!(
        busy.iter().any(|&t| t >= 20),
        "no worker polled while the call ran: {busy:?} ticks in {window:?}"
    );
    hang_up_and_check_nothing_is_left(&mut browser, call, &gateway).await;
    let idle = cpu_ticks_over(&ours, window).await;
    assert!(
        idle.iter().all(|&t| t < 20),
        "a worker kept polling with no call: {idle:?} ticks in {window:?}"
    );
}

/// `webrtc.drain_interval_us`: while packets flow, the worker reads its sockets on the
/// interval instead of on each arrival. With a 5 ms interval the demo PBX's echo, which comes
/// back a fraction of a millisecond after the worker relayed the browser's frame, waits in
/// the socket for the next pass: about half the relayed packets are held over 1 ms (woken on
/// readiness, almost none), and every frame still comes back intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_media_worker_holds_packets_until_its_next_pass() {
    let pbx = start_demo(None).await;
    let mut settings = test_settings(pbx.sip_addr());
    settings.webrtc.drain_interval_us = 5_000;
    let gateway = start_gateway(settings).await;
    let mut browser = browser(&gateway).await;
    let call = echo_call_with_clean_audio(&mut browser).await;
    let metrics = metrics_after_clean_frames(&call, 150, &gateway).await;
    let relayed = metric(&metrics, "callgate_media_relay_delay_seconds_count");
    let within_1ms = metric(
        &metrics,
        "callgate_media_relay_delay_seconds_bucket{le=\"0.001\"}",
    );
    assert!(relayed >= 200.0, "{metrics}");
    assert!(
        relayed - within_1ms >= 0.3 * relayed,
        "{within_1ms} of {relayed} relayed packets were held under 1 ms: the worker did not \
         wait for its next pass"
    );
    // The batching counters operators tune the interval with account for every datagram.
    let into_worker = metric(
        &metrics,
        "callgate_rtp_packets_total{leg=\"webrtc\",direction=\"in\"}",
    ) + metric(
        &metrics,
        "callgate_rtp_packets_total{leg=\"sip\",direction=\"in\"}",
    );
    let datagrams = metric(&metrics, "callgate_media_received_datagrams_total");
    let receive_calls = metric(&metrics, "callgate_media_receive_calls_total");
    let passes = metric(&metrics, "callgate_media_worker_passes_total");
    assert!(
        datagrams >= into_worker && (1.0..=datagrams).contains(&receive_calls) && passes >= 1.0,
        "{datagrams} datagrams in {receive_calls} receive calls over {passes} passes for \
         {into_worker} counted in:\n{metrics}"
    );
    hang_up_and_check_nothing_is_left(&mut browser, call, &gateway).await;
}

/// Threads of this test process named `media-*` that run SCHED_FIFO (policy 1, field 41 of
/// `/proc/self/task/<tid>/stat`, counted after the parenthesised name).
fn realtime_media_threads() -> usize {
    // The scheduling policy is field 41 of stat.
    media_threads()
        .iter()
        .filter(|tid| thread_stat_field(tid, 38) == Some(1))
        .count()
}

/// Whether this process may use SCHED_FIFO: CAP_SYS_NICE (bit 23 of CapEff) or a non-zero
/// RLIMIT_RTPRIO.
fn may_use_realtime() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cap_sys_nice = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 23) != 0);
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let rtprio = limits
        .lines()
        .find(|l| l.starts_with("Max realtime priority"))
        .and_then(|l| l.split_whitespace().nth(3))
        .is_some_and(|soft| soft != "0");
    cap_sys_nice || rtprio
}

/// `webrtc.realtime_priority`: the media worker runs SCHED_FIFO when the process may (as in
/// CI, root); either way the call's audio is relayed (without the permission callgate warns
/// and schedules the worker normally).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_realtime_media_worker_relays_audio() {
    let pbx = start_demo(None).await;
    let before = realtime_media_threads();
    let mut settings = test_settings(pbx.sip_addr());
    settings.webrtc.realtime_priority = 10;
    let gateway = start_gateway(settings).await;
    let mut browser = browser(&gateway).await;
    let call = echo_call_with_clean_audio(&mut browser).await;
    if may_use_realtime() {
        assert_eq!(
            realtime_media_threads(),
            before + 1,
            "this gateway's one media worker runs SCHED_FIFO"
        );
    }
    hang_up_and_check_nothing_is_left(&mut browser, call, &gateway).await;
}
