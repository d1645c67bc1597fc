use std::num::NonZeroU32;

use super::*;
use crate::config::{Rate, WsUrl};
use crate::media::{MediaStats, encode_frame};
use crate::report::Report;

fn rate(r: f64) -> Rate {
    Rate::new(r).expect("valid rate")
}

#[test]
fn the_schedule_follows_the_rate() {
    let at = |k| schedule_offset(k, rate(10.0), Duration::ZERO);
    assert_eq!(at(0), Duration::ZERO);
    assert_eq!(at(1), Duration::from_millis(100));
    assert_eq!(at(25), Duration::from_millis(2500));
}

#[test]
fn the_ramp_grows_the_rate_linearly() {
    // 10/s after a 4 s ramp: 20 calls during the ramp, call k due at sqrt(2·k·4/10).
    let at = |k| schedule_offset(k, rate(10.0), Duration::from_secs(4));
    assert_eq!(at(0), Duration::ZERO);
    let secs = |k| at(k).as_secs_f64();
    assert!((secs(5) - 2.0).abs() < 1e-9, "{}", secs(5));
    assert!((secs(20) - 4.0).abs() < 1e-9, "{}", secs(20));
    assert!((secs(30) - 5.0).abs() < 1e-9, "{}", secs(30));
    // Monotonic, and slower than the full rate during the ramp.
    let mut last = Duration::ZERO;
    for k in 1..100 {
        assert!(at(k) > last);
        last = at(k);
    }
}

fn config() -> RunConfig {
    let mut config = RunConfig::new(WsUrl::parse("ws://127.0.0.1:1/ws").expect("url"));
    config.calls = 5;
    config.concurrency = NonZeroU32::new(4).expect("non-zero");
    config
}

fn media(sent: u64, received: u64) -> MediaStats {
    let mut stats = MediaStats::new(crate::clock::now());
    stats.frames_sent = sent;
    let mut checker = crate::media::FrameChecker::default();
    for seq in 0..received {
        let seq = u32::try_from(seq).expect("small");
        checker.check(&mut stats, &encode_frame(seq, 0), 1_000);
    }
    stats
}

fn outcome(result: CallResult, sent: u64, received: u64) -> CallOutcome {
    let established = matches!(result, CallResult::Completed | CallResult::EndedEarly(_));
    CallOutcome {
        result,
        setup: established.then_some(Duration::from_millis(5)),
        media_connect: established.then_some(Duration::from_millis(8)),
        talk: if established {
            Duration::from_secs(30)
        } else {
            Duration::ZERO
        },
        media: Some(media(sent, received)),
        hangup_unconfirmed: false,
        start_lag: Duration::ZERO,
    }
}

fn facts(config: &RunConfig, issued: u64) -> crate::report::RunFacts<'_> {
    let now = crate::clock::now();
    let sample = sampler::Sample {
        at: now,
        active: 0,
        gateway: None,
        generator: None,
        machine: None,
        udp: None,
        rtt: None,
    };
    crate::report::RunFacts {
        config,
        wall: Duration::from_secs(3),
        calls_window: Duration::from_secs(2),
        schedule_window: Duration::from_secs(1),
        stopped_by_limit: false,
        stopped_by_request: false,
        agents_requested: 4,
        agents_connected: 4,
        agent_failures: Default::default(),
        issued,
        late_starts: 0,
        max_start_lag: Duration::ZERO,
        concurrency_waits: 1,
        peak_active: 3,
        baseline: sample,
        samples: sampler::Samples::default(),
        generator_pid: std::process::id(),
        open_files_limit: None,
        gateway_counters: Err("not scraped in unit tests".into()),
        pacing: None,
    }
}

#[test]
fn report_counts_add_up_by_result() {
    let config = config();
    let mut aggregate = crate::report::Aggregate::default();
    aggregate.add(outcome(CallResult::Completed, 100, 100));
    aggregate.add(outcome(CallResult::Completed, 100, 98));
    aggregate.add(outcome(
        CallResult::EndedEarly("ended:media_timeout".into()),
        50,
        50,
    ));
    aggregate.add(outcome(CallResult::Failed("ended:busy".into()), 0, 0));
    let report = Report::build(facts(&config, 4), aggregate);
    let c = &report.calls;
    assert_eq!((c.requested, c.attempted, c.not_started), (5, 4, 1));
    assert_eq!(
        (c.established, c.completed, c.ended_early, c.failed),
        (3, 2, 1, 1)
    );
    assert_eq!(c.failed_by_reason.get("ended:busy"), Some(&1));
    assert_eq!(c.ended_early_by_reason.get("ended:media_timeout"), Some(&1));
    assert_eq!(c.call_minutes, 1.5);
    let m = &report.media;
    assert_eq!((m.frames_sent, m.frames_received, m.lost), (250, 248, 2));
    assert_eq!(m.calls_with_loss, 1);
    assert_eq!(m.loss_percent, 0.8);
    assert_eq!(report.setup_ms.count, 3);
    assert!(
        report.inconsistencies().is_empty(),
        "{:?}",
        report.inconsistencies()
    );
    assert!(!report.generator.bottleneck, "{:?}", report.generator);
    let table = report.to_table();
    for line in [
        "calls established",
        "failed: ended:busy",
        "frames lost",
        "generator was the bottleneck",
    ] {
        assert!(table.contains(line), "{table}");
    }
    let json = serde_json::to_value(&report).expect("serialises");
    assert_eq!(json["calls"]["established"], 3);
    assert_eq!(json["media"]["lost"], 2);
}

#[test]
fn aborted_and_unstarted_calls_keep_the_counts_consistent() {
    let config = config();
    let mut aggregate = crate::report::Aggregate::default();
    aggregate.add(outcome(CallResult::Completed, 10, 10));
    aggregate.add(outcome(CallResult::NotStarted, 0, 0));
    // 4 tickets issued, 2 outcomes: 2 calls' tasks were aborted at the wind-down bound.
    let report = Report::build(facts(&config, 4), aggregate);
    let c = &report.calls;
    assert_eq!((c.attempted, c.not_started, c.failed), (3, 2, 2));
    assert_eq!(c.failed_by_reason.get("aborted"), Some(&2));
    assert!(
        report.inconsistencies().is_empty(),
        "{:?}",
        report.inconsistencies()
    );
}

#[test]
fn skipped_slots_make_the_generator_the_bottleneck() {
    let config = config();
    let mut aggregate = crate::report::Aggregate::default();
    let mut late = outcome(CallResult::Completed, 10, 10);
    if let Some(media) = late.media.as_mut() {
        media.skipped_slots = 7;
    }
    aggregate.add(late);
    let report = Report::build(facts(&config, 1), aggregate);
    assert!(report.generator.bottleneck);
    assert!(report.generator.bottleneck_reasons[0].contains("7 audio frame slots"));
}

#[test]
fn a_rare_late_start_is_a_warning_not_a_bottleneck() {
    let config = config();
    let mut aggregate = crate::report::Aggregate::default();
    aggregate.add(outcome(CallResult::Completed, 10, 10));
    let mut facts = facts(&config, 2000);
    facts.late_starts = 2;
    facts.max_start_lag = Duration::from_millis(70);
    let report = Report::build(facts, aggregate);
    assert!(!report.generator.bottleneck, "{:?}", report.generator);
    assert_eq!(report.generator.late_call_starts, 2);
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.starts_with("2 of 2000 calls started more than 50 ms late")),
        "{:?}",
        report.warnings
    );
}

#[test]
fn frequent_late_starts_make_the_generator_the_bottleneck() {
    let config = config();
    let mut aggregate = crate::report::Aggregate::default();
    aggregate.add(outcome(CallResult::Completed, 10, 10));
    let mut facts = facts(&config, 200);
    facts.late_starts = 3;
    let report = Report::build(facts, aggregate);
    assert!(report.generator.bottleneck);
    assert!(
        report.generator.bottleneck_reasons[0].contains("3 of 200 calls started"),
        "{:?}",
        report.generator.bottleneck_reasons
    );
}

#[test]
fn the_timeline_has_cpu_and_round_trips_per_sampling_interval() {
    let config = config();
    let mut facts = facts(&config, 1);
    let at = facts.baseline.at;
    let proc_at = |cpu_ms| crate::procfs::ProcSample {
        cpu: Duration::from_millis(cpu_ms),
        rss_bytes: 0,
        rss_peak_bytes: 0,
        rss_anon_bytes: 0,
    };
    let sample = |ms, active, cpu_ms, rtt| sampler::Sample {
        at: at + Duration::from_millis(ms),
        active,
        gateway: None,
        generator: Some(proc_at(cpu_ms)),
        machine: None,
        udp: None,
        rtt,
    };
    let window = sampler::RttSummary {
        count: 40,
        p50_us: 2_500,
        p99_us: 9_000,
    };
    facts.samples.list = vec![
        sample(0, 0, 0, None),
        sample(500, 10, 100, Some(window)),
        // Too short an interval: merged into the next one.
        sample(520, 10, 104, Some(window)),
        sample(1_000, 20, 300, None),
    ];
    let report = Report::build(facts, crate::report::Aggregate::default());
    let t = &report.timeline;
    assert_eq!(t.len(), 2, "{t:?}");
    assert_eq!((t[0].t_s, t[0].active_calls, t[0].echoes), (0.5, 10, 40));
    assert_eq!(t[0].generator_cores, Some(0.2));
    assert_eq!((t[0].rtt_p50_ms, t[0].rtt_p99_ms), (Some(2.5), Some(9.0)));
    assert_eq!(t[0].gateway_cores, None, "no --gateway-pid");
    assert_eq!((t[1].t_s, t[1].active_calls, t[1].echoes), (1.0, 20, 40));
    assert_eq!(t[1].generator_cores, Some(0.4));
}

#[test]
fn echoes_of_the_first_and_of_a_last_too_short_reading_are_in_the_timeline() {
    let config = config();
    let mut facts = facts(&config, 1);
    let at = facts.baseline.at;
    let window = |count| {
        Some(sampler::RttSummary {
            count,
            p50_us: 1_000,
            p99_us: 2_000,
        })
    };
    let sample = |ms, rtt| sampler::Sample {
        at: at + Duration::from_millis(ms),
        active: 1,
        gateway: None,
        generator: None,
        machine: None,
        udp: None,
        rtt,
    };
    facts.samples.list = vec![
        sample(0, window(2)),
        sample(500, window(40)),
        sample(1_000, window(50)),
        // The reading `finish` takes as the calls end, 30 ms after the last tick.
        sample(1_030, window(3)),
    ];
    let report = Report::build(facts, crate::report::Aggregate::default());
    let echoes: Vec<u64> = report.timeline.iter().map(|p| p.echoes).collect();
    assert_eq!(echoes, vec![42, 53], "{:?}", report.timeline);
}

#[test]
fn memory_per_call_is_reported_whole_and_anonymous_and_over_time() {
    let mut config = config();
    // Another process than the generator (whose pid the facts carry).
    config.gateway_pid = Some(u32::MAX);
    let mut facts = facts(&config, 1);
    let at = facts.baseline.at;
    const MIB: u64 = 1024 * 1024;
    let usage = |rss_mib: u64, anon_mib: u64| crate::procfs::ProcSample {
        cpu: Duration::from_millis(rss_mib),
        rss_bytes: rss_mib * MIB,
        rss_peak_bytes: rss_mib * MIB,
        rss_anon_bytes: anon_mib * MIB,
    };
    facts.baseline.gateway = Some(usage(20, 2));
    let sample = |ms, active, gateway| sampler::Sample {
        at: at + Duration::from_millis(ms),
        active,
        gateway: Some(gateway),
        generator: None,
        machine: None,
        udp: None,
        rtt: None,
    };
    facts.samples.list = vec![
        sample(500, 50, usage(30, 8)),
        // The peak: 100 calls; 20 MiB more in all, 13 MiB more of it anonymous (the rest
        // is the executable's pages, faulted in as the calls ran new code).
        sample(1_000, 100, usage(40, 15)),
        sample(1_500, 100, usage(39, 15)),
    ];
    let report = Report::build(facts, crate::report::Aggregate::default());
    let gateway = report.gateway.as_ref().expect("a gateway pid was given");
    assert_eq!(gateway.active_calls_at_peak_sample, 100);
    assert_eq!(gateway.rss_per_active_call_kib, Some(204.8));
    assert_eq!(gateway.anon_per_active_call_kib, Some(133.12));
    let rss: Vec<Option<f64>> = report.timeline.iter().map(|p| p.gateway_rss_mib).collect();
    // A point per interval after the first sample.
    assert_eq!(rss, vec![Some(40.0), Some(39.0)]);
    let table = report.to_table();
    assert!(
        table.contains("204.800 KiB (anonymous memory: 133.120 KiB)"),
        "{table}"
    );
}
