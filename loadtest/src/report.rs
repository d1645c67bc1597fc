//! The result of a load run: counts, latencies, media quality and resource use, as a value
//! that serialises to JSON (`--report-json`) and renders as a table for people.
//!
//! Field meanings are documented on each field and in `docs/loadtest.md`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::config::RunConfig;
use crate::media::RttHistogram;
use crate::run::sampler::{Sample, Samples};
use crate::run::{CallOutcome, CallResult};
use crate::trunk::TrunkStats;

/// Generator CPU (average over the run, in cores) at or above this share of its threads means
/// it was the bottleneck.
const SATURATED_AVG: f64 = 0.85;
/// Other processes using this many cores on average disturb the figures: say so.
const OTHERS_DISTURB: f64 = 0.25;
/// Generator CPU in any one sample at or above this share of its threads, likewise.
const SATURATED_PEAK: f64 = 0.95;
/// Share of paced frames that may leave more than 1 ms after their slot before the pacer
/// counts as failing to spread them.
const PACED_LATE_SHARE: f64 = 0.01;
/// Share of calls that may start late (a scheduler hiccup) before the generator counts as
/// unable to keep the requested rate.
const LATE_START_SHARE: f64 = 0.01;

/// Whether late starts were frequent enough that the requested rate was not really offered.
fn late_starts_limit_the_run(late: u64, issued: u64) -> bool {
    late as f64 > LATE_START_SHARE * issued.max(1) as f64
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// What was asked for.
    pub config: ConfigSummary,
    /// How the run went as a whole.
    pub run: RunSummary,
    /// The simulated agents (WebSocket sessions).
    pub agents: AgentCounts,
    /// Call counts by result.
    pub calls: CallCounts,
    /// `call` request sent → `call_answered` received, over answered calls.
    pub setup_ms: Latency,
    /// `call` request sent → ICE+DTLS connected on the simulated browser, over calls that
    /// connected.
    pub media_connect_ms: Latency,
    /// Audio checked end to end (browser → callgate → trunk echo → callgate → browser).
    pub media: MediaSummary,
    /// callgate's CPU and memory from `/proc/PID` (with `--gateway-pid`).
    pub gateway: Option<GatewayUsage>,
    /// The load generator's own CPU and whether it limited the run.
    pub generator: GeneratorUsage,
    /// The whole machine's CPU, to tell a loaded machine from a slow gateway.
    pub machine: MachineUsage,
    /// How much callgate's own counters grew during the run (from its `/metrics`; zero growth
    /// left out): `callgate_media_errors_total{kind}` says where it dropped packets,
    /// `callgate_calls_total{result}` how it classified the calls. `None` if unreadable.
    pub gateway_counters: Option<BTreeMap<String, f64>>,
    /// How long callgate held the RTP packets it relayed during the run (its
    /// `callgate_media_relay_delay_seconds` histogram): the latency it added itself, apart
    /// from the generator's. `None` if not measured.
    pub gateway_relay_delay: Option<crate::scrape::RelayDelay>,
    /// The builtin trunk's counters (with `--trunk builtin`).
    pub trunk: Option<TrunkStats>,
    /// One point per sampling interval: load, CPU and latency over the run (the chart's data).
    pub timeline: Vec<TimelinePoint>,
    /// Things that make the figures less trustworthy, in words.
    pub warnings: Vec<String>,
}

/// One sampling interval of the run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TimelinePoint {
    /// End of the interval, seconds after the first sample.
    pub t_s: f64,
    /// Established calls at the end of the interval.
    pub active_calls: u64,
    /// callgate's CPU over the interval, in cores (with `--gateway-pid`, when callgate is
    /// another process).
    pub gateway_cores: Option<f64>,
    /// The load generator's CPU over the interval, in cores.
    pub generator_cores: Option<f64>,
    /// callgate's resident memory at the end of the interval, MiB (as `gateway_cores`): shows
    /// what call set-up holds only for a while (a SIP INVITE transaction lives 32 s after
    /// its answer) against what each call keeps.
    pub gateway_rss_mib: Option<f64>,
    /// Echoes that came back during the interval.
    pub echoes: u64,
    /// Their round trip, median (ms).
    pub rtt_p50_ms: Option<f64>,
    /// Their round trip, 99th percentile (ms).
    pub rtt_p99_ms: Option<f64>,
}

/// The timeline from consecutive samples (intervals under 0.1 s are merged into the next).
fn timeline(samples: &[Sample], gateway_shares_process: bool) -> Vec<TimelinePoint> {
    let Some(first) = samples.first() else {
        return Vec::new();
    };
    let mut points = Vec::new();
    let mut from = first;
    // Echoes taken by the first reading too: every echo of the run lands in one point.
    let mut echoes = first.rtt.map_or(0, |r| r.count);
    // Window quantiles cannot be merged exactly; a merged interval keeps its last window's.
    let mut rtt = None;
    for sample in &samples[1..] {
        if let Some(r) = sample.rtt {
            echoes += r.count;
            rtt = Some(r);
        }
        let dt = sample.at.saturating_duration_since(from.at).as_secs_f64();
        if dt < 0.1 {
            continue;
        }
        let cores = |a, b| cpu_between(a, b).map(|c| round3(c / dt));
        points.push(TimelinePoint {
            t_s: round3(sample.at.saturating_duration_since(first.at).as_secs_f64()),
            active_calls: sample.active,
            gateway_cores: if gateway_shares_process {
                None
            } else {
                cores(from.gateway, sample.gateway)
            },
            generator_cores: cores(from.generator, sample.generator),
            gateway_rss_mib: sample
                .gateway
                .filter(|_| !gateway_shares_process)
                .map(|g| round3(g.rss_bytes as f64 / 1024.0 / 1024.0)),
            echoes,
            rtt_p50_ms: rtt.map(|r: crate::run::sampler::RttSummary| round3(r.p50_us as f64 / 1e3)),
            rtt_p99_ms: rtt.map(|r| round3(r.p99_us as f64 / 1e3)),
        });
        from = sample;
        echoes = 0;
        rtt = None;
    }
    // A last reading too close to the previous point for a CPU rate (the run's final one,
    // taken as the calls end) still counts its echoes, in the last point.
    if echoes > 0
        && let Some(last) = points.last_mut()
    {
        last.echoes += echoes;
    }
    points
}

/// The run's parameters, as used.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigSummary {
    /// callgate's WebSocket URL.
    pub url: String,
    /// Calls requested.
    pub calls: u64,
    /// Most calls at once (= simulated agents).
    pub concurrency: u32,
    /// New calls per second after the ramp.
    pub rate_per_second: f64,
    /// Ramp time, seconds.
    pub ramp_s: f64,
    /// Hold (talk) time per call, seconds.
    pub hold_s: f64,
    /// Hard bound on the run, seconds.
    pub duration_limit_s: f64,
    /// Setup timeout per call, seconds.
    pub setup_timeout_s: f64,
    /// Number dialled.
    pub to: String,
    /// First agent extension.
    pub extension_base: u32,
}

/// The run as a whole.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// From start (agents connecting) to the last call finished, seconds.
    pub wall_s: f64,
    /// From the first scheduled call to the last call finished, seconds: the window CPU and
    /// call-minutes are measured over.
    pub calls_window_s: f64,
    /// From the first to the last call handed out, seconds.
    pub schedule_s: f64,
    /// The duration limit stopped the run before every call was placed or finished.
    pub stopped_by_limit: bool,
    /// The run was stopped from outside (Ctrl-C).
    pub stopped_by_request: bool,
}

/// Simulated agents.
#[derive(Debug, Clone, Serialize)]
pub struct AgentCounts {
    /// Agents the run opened (min(concurrency, calls)).
    pub requested: u64,
    /// Agents whose WebSocket and `hello` succeeded.
    pub connected: u64,
    /// Agents that could not connect or lost their WebSocket, by reason.
    pub lost_by_reason: BTreeMap<String, u64>,
}

/// Calls by result. `requested = attempted + not_started`, `attempted = established +
/// failed`, `established = completed + ended_early`.
#[derive(Debug, Clone, Serialize)]
pub struct CallCounts {
    /// `--calls`.
    pub requested: u64,
    /// Calls for which a `call` request was sent (or was about to be).
    pub attempted: u64,
    /// Calls never placed (the run was stopped, or no agent was left).
    pub not_started: u64,
    /// Answered and ICE+DTLS connected.
    pub established: u64,
    /// Established and held for the whole hold time.
    pub completed: u64,
    /// Established but ended before the hold time was over.
    pub ended_early: u64,
    /// Never established.
    pub failed: u64,
    /// `failed` by reason: `refused:<error code>`, `ended:<callgate cause>`, `setup_timeout`,
    /// `media_connect_timeout`, `media:<why>`, `no_reply`, `websocket_*`, `protocol_error`,
    /// `generator_error`, `duration_limit`, `aborted` (task stopped at the wind-down bound).
    pub failed_by_reason: BTreeMap<String, u64>,
    /// `ended_early` by reason: `ended:<callgate cause>`, `media:<why>`, `duration_limit`.
    pub ended_early_by_reason: BTreeMap<String, u64>,
    /// Most calls established at the same time.
    pub peak_concurrent: u64,
    /// Hangups acknowledged without a `call_ended` within 3 s.
    pub hangup_unconfirmed: u64,
    /// Sum over established calls of their talk time, minutes.
    pub call_minutes: f64,
}

/// Percentiles of a latency, milliseconds (`None` without samples).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    /// Values recorded.
    pub count: u64,
    /// Median.
    pub p50: Option<f64>,
    /// 95th percentile.
    pub p95: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// Largest.
    pub max: Option<f64>,
}

impl Latency {
    fn of(histogram: &RttHistogram) -> Latency {
        let ms = |d: Option<Duration>| d.map(|d| round3(d.as_secs_f64() * 1e3));
        Latency {
            count: histogram.count(),
            p50: ms(histogram.quantile(0.50)),
            p95: ms(histogram.quantile(0.95)),
            p99: ms(histogram.quantile(0.99)),
            max: ms(histogram.max()),
        }
    }
}

/// Audio over all calls.
#[derive(Debug, Clone, Serialize)]
pub struct MediaSummary {
    /// G.711 frames the simulated browsers sent.
    pub frames_sent: u64,
    /// Distinct intact frames that came back.
    pub frames_received: u64,
    /// `frames_sent - frames_received`: frames that never came back (after waiting up to 1 s
    /// for the last echoes before each hangup).
    pub lost: u64,
    /// `lost / frames_sent`, percent.
    pub loss_percent: f64,
    /// Calls that lost at least one frame.
    pub calls_with_loss: u64,
    /// Frames that came back with a valid header but different bytes.
    pub corrupted: u64,
    /// Audio that was not one of our frames (e.g. another call's).
    pub foreign: u64,
    /// Frames that came back more than once.
    pub duplicates: u64,
    /// Frames that arrived after a later one.
    pub reordered: u64,
    /// `reordered / frames_received`, percent.
    pub reordered_percent: f64,
    /// Round trip of each frame (browser → echo → browser), ms.
    pub rtt_ms: Latency,
    /// Per-call RFC 3550 interarrival jitter of the returning frames (arrival spacing against
    /// send spacing), ms: the distribution over calls.
    pub jitter_ms: Latency,
    /// Largest change of round trip between two consecutive frames of any call, ms.
    pub max_transit_delta_ms: f64,
}

/// callgate's resource use.
#[derive(Debug, Clone, Serialize)]
pub struct GatewayUsage {
    /// The process read.
    pub pid: u32,
    /// The generator runs inside the same process (tests): CPU and RSS include it.
    pub shares_process_with_generator: bool,
    /// CPU seconds (user + system) over the calls window.
    pub cpu_seconds: Option<f64>,
    /// `cpu_seconds / calls_window_s`: cores used on average.
    pub cpu_cores_avg: Option<f64>,
    /// `cpu_seconds / call_minutes`.
    pub cpu_seconds_per_call_minute: Option<f64>,
    /// RSS before the first call (agents connected), bytes.
    pub rss_baseline_bytes: Option<u64>,
    /// RSS in the sample with the most established calls, bytes.
    pub rss_at_peak_bytes: Option<u64>,
    /// Established calls in that sample.
    pub active_calls_at_peak_sample: u64,
    /// `(rss_at_peak - rss_baseline) / active_calls_at_peak_sample`, KiB.
    pub rss_per_active_call_kib: Option<f64>,
    /// The same with anonymous memory only (`RssAnon`): what each call allocates, without
    /// the executable's pages first touched during the run (with `VmRSS` these move the
    /// per-call figure by several KiB between two builds of the same code).
    pub anon_per_active_call_kib: Option<f64>,
    /// Peak RSS of the process's life (`VmHWM`), bytes.
    pub rss_high_water_bytes: Option<u64>,
    /// Why `/proc/PID` could not be read, if it could not.
    pub error: Option<String>,
}

/// The load generator's own resource use and the bottleneck verdict.
#[derive(Debug, Clone, Serialize)]
pub struct GeneratorUsage {
    /// Our process id.
    pub pid: u32,
    /// Worker threads of our runtime: the most cores we can use.
    pub threads: usize,
    /// CPU seconds (user + system) over the calls window.
    pub cpu_seconds: Option<f64>,
    /// Cores used on average over the calls window.
    pub cpu_cores_avg: Option<f64>,
    /// Cores used in the busiest sampling interval.
    pub cpu_cores_peak: Option<f64>,
    /// Frame slots skipped because a call's task woke too late (over all calls).
    pub skipped_slots: u64,
    /// Datagrams our sockets or str0m refused to send.
    pub send_errors: u64,
    /// Calls handed out more than 50 ms after their slot although an agent was idle.
    pub late_call_starts: u64,
    /// Largest such delay, ms.
    pub max_start_lag_ms: f64,
    /// Calls that waited for a free agent (the concurrency bound, not a fault).
    pub concurrency_waits: u64,
    /// With `--pace-frames`: how precisely the frames left at their slots.
    pub frame_pacing: Option<crate::browser::PacingStats>,
    /// Whether the generator limited the run (see `bottleneck_reasons`).
    pub bottleneck: bool,
    /// Why it is considered the bottleneck; empty when it was not.
    pub bottleneck_reasons: Vec<String>,
}

/// The machine's CPU over the calls window (`/proc/stat`).
#[derive(Debug, Clone, Serialize)]
pub struct MachineUsage {
    /// CPUs the machine has.
    pub cpus: usize,
    /// Cores busy on average (all processes).
    pub busy_cores_avg: Option<f64>,
    /// Cores used by processes other than callgate and the generator (needs `--gateway-pid`).
    pub other_processes_cores_avg: Option<f64>,
    /// UDP datagrams the kernel dropped during the run because a socket's receive buffer was
    /// full (`/proc/net/snmp` `RcvbufErrors`, whole network namespace): loss nobody's counters
    /// see, typically callgate's shared WebRTC socket when its worker stalls.
    pub udp_receive_buffer_drops: Option<u64>,
    /// UDP datagrams not sent because a send buffer was full (`SndbufErrors`).
    pub udp_send_buffer_drops: Option<u64>,
}

/// Everything the run knows besides the per-call outcomes.
pub(crate) struct RunFacts<'a> {
    pub config: &'a RunConfig,
    pub wall: Duration,
    pub calls_window: Duration,
    pub schedule_window: Duration,
    pub stopped_by_limit: bool,
    pub stopped_by_request: bool,
    pub agents_requested: u64,
    pub agents_connected: u64,
    pub agent_failures: BTreeMap<String, u64>,
    pub issued: u64,
    pub late_starts: u64,
    pub max_start_lag: Duration,
    pub concurrency_waits: u64,
    pub peak_active: u64,
    pub baseline: Sample,
    pub samples: Samples,
    pub generator_pid: u32,
    pub open_files_limit: Option<u64>,
    pub gateway_counters: Result<BTreeMap<String, f64>, String>,
    /// `--pace-frames`: how precisely the pacer sent, or why there was none.
    pub pacing: Option<Result<crate::browser::PacingStats, String>>,
}

/// Per-call outcomes folded together.
#[derive(Debug, Default)]
pub(crate) struct Aggregate {
    outcomes: u64,
    not_started: u64,
    completed: u64,
    ended_early: BTreeMap<String, u64>,
    failed: BTreeMap<String, u64>,
    setup: RttHistogram,
    media_connect: RttHistogram,
    rtt: RttHistogram,
    jitter: RttHistogram,
    frames_sent: u64,
    frames_received: u64,
    calls_with_loss: u64,
    corrupted: u64,
    foreign: u64,
    duplicates: u64,
    reordered: u64,
    skipped_slots: u64,
    send_errors: u64,
    max_transit_delta_us: u64,
    talk: Duration,
    hangup_unconfirmed: u64,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Aggregate {
    /// Adds one call.
    pub(crate) fn add(&mut self, outcome: CallOutcome) {
        self.outcomes += 1;
        let established = match outcome.result {
            CallResult::NotStarted => {
                self.not_started += 1;
                return;
            }
            CallResult::Completed => {
                self.completed += 1;
                true
            }
            CallResult::EndedEarly(reason) => {
                *self.ended_early.entry(reason).or_default() += 1;
                true
            }
            CallResult::Failed(reason) => {
                *self.failed.entry(reason).or_default() += 1;
                false
            }
        };
        if let Some(setup) = outcome.setup {
            self.setup.record(micros(setup));
        }
        if let Some(connect) = outcome.media_connect {
            self.media_connect.record(micros(connect));
        }
        self.talk += outcome.talk;
        self.hangup_unconfirmed += u64::from(outcome.hangup_unconfirmed);
        if let Some(media) = outcome.media {
            self.frames_sent += media.frames_sent;
            self.frames_received += media.frames_received;
            self.calls_with_loss += u64::from(media.lost() > 0);
            self.corrupted += media.corrupted;
            self.foreign += media.foreign;
            self.duplicates += media.duplicates;
            self.reordered += media.reordered;
            self.skipped_slots += media.skipped_slots;
            self.send_errors += media.send_errors;
            self.max_transit_delta_us = self.max_transit_delta_us.max(media.max_transit_delta_us);
            self.rtt.merge(&media.rtt);
            if established && media.frames_received > 1 {
                self.jitter.record(media.jitter_us);
            }
        }
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        round3(part as f64 * 100.0 / whole as f64)
    }
}

/// CPU seconds between two readings, if both exist.
fn cpu_between(
    from: Option<crate::procfs::ProcSample>,
    to: Option<crate::procfs::ProcSample>,
) -> Option<f64> {
    let (from, to) = (from?, to?);
    Some(to.cpu.saturating_sub(from.cpu).as_secs_f64())
}

impl Report {
    /// Builds the report from the run's facts and the folded outcomes.
    pub(crate) fn build(facts: RunFacts<'_>, aggregate: Aggregate) -> Report {
        let config = facts.config;
        let failed_outcomes: u64 = aggregate.failed.values().sum();
        let ended_early: u64 = aggregate.ended_early.values().sum();
        let mut failed_by_reason = aggregate.failed.clone();
        // Tickets whose agent task was aborted at the wind-down bound sent no outcome.
        let missing = facts.issued.saturating_sub(aggregate.outcomes);
        if missing > 0 {
            *failed_by_reason.entry("aborted".into()).or_default() += missing;
        }
        let failed = failed_outcomes + missing;
        let attempted = facts.issued.saturating_sub(aggregate.not_started);
        let established = aggregate.completed + ended_early;
        let call_minutes = aggregate.talk.as_secs_f64() / 60.0;
        let window = facts.calls_window.as_secs_f64();

        let calls = CallCounts {
            requested: config.calls,
            attempted,
            not_started: config.calls.saturating_sub(attempted),
            established,
            completed: aggregate.completed,
            ended_early,
            failed,
            failed_by_reason,
            ended_early_by_reason: aggregate.ended_early.clone(),
            peak_concurrent: facts.peak_active,
            hangup_unconfirmed: aggregate.hangup_unconfirmed,
            call_minutes: round3(call_minutes),
        };

        let lost = aggregate
            .frames_sent
            .saturating_sub(aggregate.frames_received);
        let media = MediaSummary {
            frames_sent: aggregate.frames_sent,
            frames_received: aggregate.frames_received,
            lost,
            loss_percent: percent(lost, aggregate.frames_sent),
            calls_with_loss: aggregate.calls_with_loss,
            corrupted: aggregate.corrupted,
            foreign: aggregate.foreign,
            duplicates: aggregate.duplicates,
            reordered: aggregate.reordered,
            reordered_percent: percent(aggregate.reordered, aggregate.frames_received),
            rtt_ms: Latency::of(&aggregate.rtt),
            jitter_ms: Latency::of(&aggregate.jitter),
            max_transit_delta_ms: round3(aggregate.max_transit_delta_us as f64 / 1e3),
        };

        let samples = &facts.samples.list;
        let last = samples.last().copied();
        // The machine's CPUs (not our affinity mask: the generator may be pinned).
        let cpus = last
            .and_then(|s| s.machine)
            .map(|m| m.cpus)
            .filter(|&n| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
        let threads = config
            .generator_threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
        let mut warnings = Vec::new();

        let gateway = config.gateway_pid.map(|pid| {
            let cpu = cpu_between(facts.baseline.gateway, last.and_then(|s| s.gateway));
            // The sample with the most calls up; of those, the one with the most memory.
            let peak = samples
                .iter()
                .filter(|s| s.gateway.is_some())
                .max_by_key(|s| (s.active, s.gateway.map_or(0, |g| g.rss_bytes)));
            let baseline_rss = facts.baseline.gateway.map(|g| g.rss_bytes);
            let peak_rss = peak.and_then(|s| s.gateway).map(|g| g.rss_bytes);
            let peak_active = peak.map_or(0, |s| s.active);
            let per_call = |base: Option<u64>, at_peak: Option<u64>| match (base, at_peak) {
                (Some(base), Some(at_peak)) if peak_active > 0 && at_peak > 0 => Some(round3(
                    at_peak.saturating_sub(base) as f64 / 1024.0 / peak_active as f64,
                )),
                _ => None,
            };
            let anon_per_call = per_call(
                facts.baseline.gateway.map(|g| g.rss_anon_bytes),
                peak.and_then(|s| s.gateway).map(|g| g.rss_anon_bytes),
            );
            let per_call = per_call(baseline_rss, peak_rss);
            let shares = pid == facts.generator_pid;
            if shares {
                warnings.push(
                    "callgate runs inside the load generator's process: its CPU and RSS include the generator's"
                        .to_string(),
                );
            }
            GatewayUsage {
                pid,
                shares_process_with_generator: shares,
                cpu_seconds: cpu.map(round3),
                cpu_cores_avg: cpu.filter(|_| window > 0.0).map(|c| round3(c / window)),
                cpu_seconds_per_call_minute: cpu
                    .filter(|_| call_minutes > 0.0)
                    .map(|c| round3(c / call_minutes)),
                rss_baseline_bytes: baseline_rss,
                rss_at_peak_bytes: peak_rss,
                active_calls_at_peak_sample: peak_active,
                rss_per_active_call_kib: per_call,
                anon_per_active_call_kib: anon_per_call,
                rss_high_water_bytes: last.and_then(|s| s.gateway).map(|g| g.rss_peak_bytes),
                error: facts.samples.gateway_error.clone(),
            }
        });
        if let Some(error) = &facts.samples.gateway_error {
            warnings.push(format!(
                "callgate's /proc could not always be read: {error}"
            ));
        }

        let generator_cpu = cpu_between(facts.baseline.generator, last.and_then(|s| s.generator));
        let generator_avg = generator_cpu.filter(|_| window > 0.0).map(|c| c / window);
        let generator_peak = samples
            .windows(2)
            .filter_map(|pair| {
                let (a, b) = (pair.first()?, pair.get(1)?);
                let dt = b.at.saturating_duration_since(a.at).as_secs_f64();
                (dt >= 0.1).then_some(())?;
                Some(cpu_between(a.generator, b.generator)? / dt)
            })
            .fold(None, |max: Option<f64>, x| {
                Some(max.map_or(x, |m| m.max(x)))
            });
        let mut reasons = Vec::new();
        let threads_f = threads as f64;
        if let Some(avg) = generator_avg
            && avg >= SATURATED_AVG * threads_f
        {
            reasons.push(format!(
                "its CPU averaged {avg:.2} cores with {threads} worker thread(s)"
            ));
        } else if let Some(peak) = generator_peak
            && peak >= SATURATED_PEAK * threads_f
        {
            reasons.push(format!(
                "its CPU peaked at {peak:.2} cores with {threads} worker thread(s)"
            ));
        }
        if aggregate.skipped_slots > 0 {
            reasons.push(format!(
                "{} audio frame slots were skipped: call tasks woke too late to send on time",
                aggregate.skipped_slots
            ));
        }
        if facts.late_starts > 0 {
            let late = format!(
                "{} of {} calls started more than {} ms late although an agent was free",
                facts.late_starts,
                facts.issued,
                crate::run::LATE_START.as_millis()
            );
            if late_starts_limit_the_run(facts.late_starts, facts.issued) {
                reasons.push(late);
            } else {
                // One start delayed by the scheduler in thousands does not shape the load.
                warnings.push(format!(
                    "{late} (under {} %: the generator kept its schedule)",
                    LATE_START_SHARE * 100.0
                ));
            }
        }
        // The whole machine over the calls window, and what neither callgate nor we used.
        let machine_busy = match (facts.baseline.machine, last.and_then(|s| s.machine)) {
            (Some(from), Some(to)) if window > 0.0 => {
                Some(to.busy.saturating_sub(from.busy).as_secs_f64() / window)
            }
            _ => None,
        };
        let gateway_cores = gateway
            .as_ref()
            .filter(|g| !g.shares_process_with_generator)
            .and_then(|g| g.cpu_cores_avg)
            .unwrap_or(0.0);
        let others = machine_busy
            .zip(generator_avg)
            .map(|(busy, gen_avg)| (busy - gateway_cores - gen_avg).max(0.0));
        if let Some(busy) = machine_busy
            && busy >= 0.9 * cpus as f64
        {
            warnings.push(format!(
                "the machine was saturated: {busy:.2} of {cpus} cores busy on average"
            ));
        }
        if let Some(others) = others
            && others >= OTHERS_DISTURB
        {
            warnings.push(format!(
                "other processes used {others:.2} cores on average during the run: latency and \
                 loss figures may be theirs{}",
                if config.gateway_pid.is_none() {
                    " (or callgate's: pass --gateway-pid)"
                } else {
                    ""
                }
            ));
            if !reasons.is_empty() && config.gateway_pid.is_some() {
                reasons.push(format!(
                    "(other processes used {others:.2} cores: the machine, not only the generator, was short of CPU)"
                ));
            }
        }
        let frame_pacing = match &facts.pacing {
            Some(Ok(stats)) => Some(stats.clone()),
            Some(Err(error)) => {
                reasons.push(format!(
                    "--pace-frames was asked but frames were not paced: {error}"
                ));
                None
            }
            None => None,
        };
        if let Some(why) = frame_pacing.as_ref().and_then(|p| p.not_realtime.as_ref()) {
            warnings.push(format!(
                "the frame pacer ran at normal priority ({why}): the runtime's threads on its \
                 core may delay it and bunch the frames again (see generator.frame_pacing)"
            ));
        }
        if let Some(p) = &frame_pacing
            && p.sent > 0
            && p.late_over_1ms as f64 > PACED_LATE_SHARE * p.sent as f64
        {
            reasons.push(format!(
                "{} of {} paced frames left more than 1 ms after their slot: arrivals were not \
                 spread as asked",
                p.late_over_1ms, p.sent
            ));
        }
        let generator = GeneratorUsage {
            pid: facts.generator_pid,
            threads,
            cpu_seconds: generator_cpu.map(round3),
            cpu_cores_avg: generator_avg.map(round3),
            cpu_cores_peak: generator_peak.map(round3),
            skipped_slots: aggregate.skipped_slots,
            send_errors: aggregate.send_errors,
            late_call_starts: facts.late_starts,
            max_start_lag_ms: round3(facts.max_start_lag.as_secs_f64() * 1e3),
            concurrency_waits: facts.concurrency_waits,
            frame_pacing,
            bottleneck: !reasons.is_empty(),
            bottleneck_reasons: reasons,
        };

        if facts.stopped_by_limit {
            warnings.push(format!(
                "the duration limit ({} s) stopped the run: {} calls not started, {} cut short",
                config.duration_limit.as_secs_f64(),
                calls.not_started,
                calls
                    .ended_early_by_reason
                    .get("duration_limit")
                    .copied()
                    .unwrap_or(0)
            ));
        }
        let gateway_counters = match facts.gateway_counters {
            Ok(counters) => Some(counters),
            Err(e) => {
                warnings.push(format!("callgate's /metrics could not be read: {e}"));
                None
            }
        };
        let needed_fds = u64::from(config.agents()) * 3 + 64;
        if let Some(limit) = facts.open_files_limit
            && limit < needed_fds
        {
            warnings.push(format!(
                "open-files limit {limit} is below the ~{needed_fds} this run needs (ulimit -n)"
            ));
        }

        let udp_from = facts.baseline.udp;
        let udp_to = last.and_then(|s| s.udp);
        let udp_delta = |f: fn(&crate::procfs::UdpCounters) -> u64| {
            udp_from
                .zip(udp_to)
                .map(|(a, b)| f(&b).saturating_sub(f(&a)))
        };
        let udp_receive_buffer_drops = udp_delta(|u| u.receive_buffer_errors);
        let udp_send_buffer_drops = udp_delta(|u| u.send_buffer_errors);
        if let Some(drops) = udp_receive_buffer_drops.filter(|&d| d > 0) {
            warnings.push(format!(
                "the kernel dropped {drops} UDP datagrams for full receive buffers during the run \
                 (on this machine, not necessarily ours)"
            ));
        }
        let machine = MachineUsage {
            udp_receive_buffer_drops,
            udp_send_buffer_drops,
            cpus,
            busy_cores_avg: machine_busy.map(round3),
            other_processes_cores_avg: if config.gateway_pid.is_some() {
                others.map(round3)
            } else {
                None
            },
        };

        Report {
            config: ConfigSummary {
                url: config.url.to_string(),
                calls: config.calls,
                concurrency: config.concurrency.get(),
                rate_per_second: config.rate.per_second(),
                ramp_s: config.ramp.as_secs_f64(),
                hold_s: config.hold.as_secs_f64(),
                duration_limit_s: config.duration_limit.as_secs_f64(),
                setup_timeout_s: config.setup_timeout.as_secs_f64(),
                to: config.to.clone(),
                extension_base: config.extension_base,
            },
            run: RunSummary {
                wall_s: round3(facts.wall.as_secs_f64()),
                calls_window_s: round3(window),
                schedule_s: round3(facts.schedule_window.as_secs_f64()),
                stopped_by_limit: facts.stopped_by_limit,
                stopped_by_request: facts.stopped_by_request,
            },
            agents: AgentCounts {
                requested: facts.agents_requested,
                connected: facts.agents_connected,
                lost_by_reason: facts.agent_failures,
            },
            calls,
            setup_ms: Latency::of(&aggregate.setup),
            media_connect_ms: Latency::of(&aggregate.media_connect),
            media,
            gateway,
            generator,
            machine,
            gateway_relay_delay: gateway_counters
                .as_ref()
                .and_then(crate::scrape::relay_delay),
            gateway_counters,
            trunk: None,
            timeline: timeline(samples, config.gateway_pid == Some(facts.generator_pid)),
            warnings,
        }
    }

    /// The identities the counts must satisfy; empty when they all hold.
    pub fn inconsistencies(&self) -> Vec<String> {
        let c = &self.calls;
        let m = &self.media;
        let mut out = Vec::new();
        let mut check = |ok: bool, what: String| {
            if !ok {
                out.push(what);
            }
        };
        check(
            c.requested == c.attempted + c.not_started,
            format!(
                "requested {} != attempted {} + not_started {}",
                c.requested, c.attempted, c.not_started
            ),
        );
        check(
            c.attempted == c.established + c.failed,
            format!(
                "attempted {} != established {} + failed {}",
                c.attempted, c.established, c.failed
            ),
        );
        check(
            c.established == c.completed + c.ended_early,
            format!(
                "established {} != completed {} + ended_early {}",
                c.established, c.completed, c.ended_early
            ),
        );
        let by_reason: u64 = c.failed_by_reason.values().sum();
        check(
            c.failed == by_reason,
            format!("failed {} != sum by reason {by_reason}", c.failed),
        );
        let early: u64 = c.ended_early_by_reason.values().sum();
        check(
            c.ended_early == early,
            format!("ended_early {} != sum by reason {early}", c.ended_early),
        );
        check(
            m.frames_sent == m.frames_received + m.lost,
            format!(
                "frames_sent {} != received {} + lost {}",
                m.frames_sent, m.frames_received, m.lost
            ),
        );
        check(
            m.rtt_ms.count == m.frames_received,
            format!(
                "RTT samples {} != frames received {}",
                m.rtt_ms.count, m.frames_received
            ),
        );
        check(
            self.setup_ms.count >= c.established,
            format!(
                "setup samples {} < established {}",
                self.setup_ms.count, c.established
            ),
        );
        check(
            c.peak_concurrent <= u64::from(self.config.concurrency),
            format!(
                "peak {} > concurrency {}",
                c.peak_concurrent, self.config.concurrency
            ),
        );
        out
    }

    /// The report as a table for a terminal.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let ms = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"));
        let lat = |l: &Latency| {
            format!(
                "p50 {} / p95 {} / p99 {} / max {} ms  (n={})",
                ms(l.p50),
                ms(l.p95),
                ms(l.p99),
                ms(l.max),
                l.count
            )
        };
        let c = &self.calls;
        let _ = writeln!(out, "callgate load test: {}", self.config.url);
        let _ = writeln!(
            out,
            "  {} calls to {:?}, {} at once, {}/s (ramp {} s), hold {} s, limit {} s",
            self.config.calls,
            self.config.to,
            self.config.concurrency,
            self.config.rate_per_second,
            self.config.ramp_s,
            self.config.hold_s,
            self.config.duration_limit_s
        );
        let _ = writeln!(
            out,
            "  wall {:.1} s, calls window {:.1} s{}{}",
            self.run.wall_s,
            self.run.calls_window_s,
            if self.run.stopped_by_limit {
                ", STOPPED BY THE DURATION LIMIT"
            } else {
                ""
            },
            if self.run.stopped_by_request {
                ", stopped on request"
            } else {
                ""
            }
        );
        let _ = writeln!(out);
        let row = |out: &mut String, name: &str, value: String| {
            let _ = writeln!(out, "  {name:<32} {value}");
        };
        row(
            &mut out,
            "agents connected",
            format!("{} / {}", self.agents.connected, self.agents.requested),
        );
        for (reason, n) in &self.agents.lost_by_reason {
            row(&mut out, &format!("  agent lost: {reason}"), n.to_string());
        }
        row(
            &mut out,
            "calls attempted",
            format!(
                "{} of {} ({} not started)",
                c.attempted, c.requested, c.not_started
            ),
        );
        row(
            &mut out,
            "calls established",
            format!(
                "{} (completed {}, ended early {})",
                c.established, c.completed, c.ended_early
            ),
        );
        for (reason, n) in &c.ended_early_by_reason {
            row(&mut out, &format!("  ended early: {reason}"), n.to_string());
        }
        row(&mut out, "calls failed", c.failed.to_string());
        for (reason, n) in &c.failed_by_reason {
            row(&mut out, &format!("  failed: {reason}"), n.to_string());
        }
        row(
            &mut out,
            "peak concurrent calls",
            c.peak_concurrent.to_string(),
        );
        row(&mut out, "call minutes", format!("{:.2}", c.call_minutes));
        if c.hangup_unconfirmed > 0 {
            row(
                &mut out,
                "hangups unconfirmed",
                c.hangup_unconfirmed.to_string(),
            );
        }
        row(&mut out, "setup (call → answered)", lat(&self.setup_ms));
        row(
            &mut out,
            "media connect (ICE+DTLS)",
            lat(&self.media_connect_ms),
        );
        let m = &self.media;
        row(
            &mut out,
            "frames sent / received",
            format!("{} / {}", m.frames_sent, m.frames_received),
        );
        row(
            &mut out,
            "frames lost",
            format!(
                "{} ({:.3} %, in {} calls)",
                m.lost, m.loss_percent, m.calls_with_loss
            ),
        );
        row(
            &mut out,
            "corrupted / foreign / dup",
            format!("{} / {} / {}", m.corrupted, m.foreign, m.duplicates),
        );
        row(
            &mut out,
            "reordered",
            format!("{} ({:.3} %)", m.reordered, m.reordered_percent),
        );
        row(&mut out, "round trip", lat(&m.rtt_ms));
        row(
            &mut out,
            "jitter per call",
            format!(
                "{}; largest step {:.1} ms",
                lat(&m.jitter_ms),
                m.max_transit_delta_ms
            ),
        );
        match &self.gateway {
            Some(g) => {
                let mib = |b: Option<u64>| {
                    b.map_or_else(
                        || "-".into(),
                        |b| format!("{:.1} MiB", b as f64 / 1048576.0),
                    )
                };
                let num = |v: Option<f64>, unit: &str| {
                    v.map_or_else(|| "-".into(), |v| format!("{v:.3}{unit}"))
                };
                row(
                    &mut out,
                    "callgate pid",
                    format!(
                        "{}{}",
                        g.pid,
                        if g.shares_process_with_generator {
                            " (same process as the generator)"
                        } else {
                            ""
                        }
                    ),
                );
                row(
                    &mut out,
                    "callgate CPU",
                    format!(
                        "{} ({} cores avg)",
                        num(g.cpu_seconds, " s"),
                        num(g.cpu_cores_avg, "")
                    ),
                );
                row(
                    &mut out,
                    "callgate CPU per call-minute",
                    num(g.cpu_seconds_per_call_minute, " s"),
                );
                row(
                    &mut out,
                    "callgate RSS",
                    format!(
                        "baseline {}, {} at {} calls, high water {}",
                        mib(g.rss_baseline_bytes),
                        mib(g.rss_at_peak_bytes),
                        g.active_calls_at_peak_sample,
                        mib(g.rss_high_water_bytes)
                    ),
                );
                row(
                    &mut out,
                    "callgate RSS per active call",
                    format!(
                        "{} (anonymous memory: {})",
                        num(g.rss_per_active_call_kib, " KiB"),
                        num(g.anon_per_active_call_kib, " KiB")
                    ),
                );
            }
            None => row(
                &mut out,
                "callgate CPU/RSS",
                "not measured (pass --gateway-pid)".into(),
            ),
        }
        if let Some(counters) = &self.gateway_counters {
            let drops: Vec<String> = counters
                .iter()
                .filter_map(|(name, n)| {
                    let kind = name.strip_prefix("callgate_media_errors_total{kind=\"")?;
                    let kind = kind.strip_suffix("\"}")?;
                    Some(format!("{kind} {n}"))
                })
                .collect();
            let drops = if drops.is_empty() {
                "none".to_string()
            } else {
                drops.join(", ")
            };
            row(&mut out, "callgate media errors", drops);
        }
        if let Some(counters) = &self.gateway_counters {
            let grown = |name: &str| counters.get(name).copied().unwrap_or(0.0);
            let datagrams = grown("callgate_media_received_datagrams_total");
            let receive_calls = grown("callgate_media_receive_calls_total");
            let passes = grown("callgate_media_worker_passes_total");
            if receive_calls > 0.0 && self.run.calls_window_s > 0.0 {
                row(
                    &mut out,
                    "callgate media batching",
                    format!(
                        "{:.1} datagrams per receive call, {:.0} worker passes per second",
                        datagrams / receive_calls,
                        passes / self.run.calls_window_s
                    ),
                );
            }
        }
        if let Some(delay) = &self.gateway_relay_delay {
            let at_most = |v: Option<f64>| v.map_or_else(|| "> 250".into(), |v| format!("≤ {v}"));
            row(
                &mut out,
                "callgate relay delay",
                format!(
                    "p50 {} / p99 {} / p99.9 {} ms, mean {:.3} ms  (n={}, socket to send)",
                    at_most(delay.p50_at_most_ms),
                    at_most(delay.p99_at_most_ms),
                    at_most(delay.p999_at_most_ms),
                    delay.mean_ms,
                    delay.packets
                ),
            );
        }
        let g = &self.generator;
        let num = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.2}"));
        row(
            &mut out,
            "generator CPU",
            format!(
                "{} s ({} cores avg, {} peak, {} threads)",
                num(g.cpu_seconds),
                num(g.cpu_cores_avg),
                num(g.cpu_cores_peak),
                g.threads
            ),
        );
        row(
            &mut out,
            "generator skipped slots",
            g.skipped_slots.to_string(),
        );
        row(
            &mut out,
            "generator late call starts",
            format!(
                "{} (max lag {:.1} ms)",
                g.late_call_starts, g.max_start_lag_ms
            ),
        );
        if let Some(p) = &g.frame_pacing {
            row(
                &mut out,
                "generator frame pacing",
                format!(
                    "{} frames at their slots ({} without: produced late), p99 {} late, max {:.2} ms, {} over 1 ms, {} handed in late, {} send errors",
                    p.sent,
                    p.unpaced,
                    p.late_p99_at_most_us
                        .map_or_else(|| "> 1 ms".to_string(), |us| format!("≤ {us} µs")),
                    p.max_late_us as f64 / 1e3,
                    p.late_over_1ms,
                    p.handed_late,
                    p.send_errors
                ),
            );
        }
        let verdict = if g.bottleneck {
            format!("YES: {}", g.bottleneck_reasons.join("; "))
        } else {
            "no".to_string()
        };
        row(&mut out, "generator was the bottleneck", verdict);
        let cores = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.2}"));
        row(
            &mut out,
            "machine CPU",
            format!(
                "{} of {} cores busy avg; other processes {}",
                cores(self.machine.busy_cores_avg),
                self.machine.cpus,
                cores(self.machine.other_processes_cores_avg)
            ),
        );
        let count = |v: Option<u64>| v.map_or_else(|| "-".into(), |v| v.to_string());
        row(
            &mut out,
            "kernel UDP buffer drops",
            format!(
                "receive {} / send {}",
                count(self.machine.udp_receive_buffer_drops),
                count(self.machine.udp_send_buffer_drops)
            ),
        );
        if let Some(t) = &self.trunk {
            row(
                &mut out,
                "trunk INVITE / 200 / BYE",
                format!(
                    "{} / {} / {} (rejected {}, retransmissions {})",
                    t.invites, t.answered, t.byes, t.rejected, t.retransmissions
                ),
            );
            row(&mut out, "trunk RTP echoed", t.rtp_echoed.to_string());
        }
        for warning in &self.warnings {
            let _ = writeln!(out, "  warning: {warning}");
        }
        out
    }
}
