//! Periodic `/proc` readings of callgate and of the load generator during a run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Active;
use crate::clock;
use crate::procfs::{self, MachineSample, ProcSample, Process, UdpCounters};

/// One reading.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    pub at: Instant,
    /// Established calls at that moment.
    pub active: u64,
    pub gateway: Option<ProcSample>,
    pub generator: Option<ProcSample>,
    pub machine: Option<MachineSample>,
    pub udp: Option<UdpCounters>,
    /// Round trips of the echoes since the previous reading (`None` when none came back).
    pub rtt: Option<RttSummary>,
}

/// A window's round trips, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RttSummary {
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
}

/// Every reading of a run, oldest first, and the first error reading callgate's `/proc`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Samples {
    pub list: Vec<Sample>,
    pub gateway_error: Option<String>,
}

/// The sampling task.
pub(crate) struct Sampler {
    gateway_pid: Option<u32>,
    active: Arc<Active>,
    stop: CancellationToken,
    task: JoinHandle<Samples>,
}

impl Sampler {
    /// Starts reading every `interval` (not stopped by the run's cancellation: calls winding
    /// down still count).
    pub(crate) fn start(
        gateway_pid: Option<u32>,
        interval: Duration,
        active: Arc<Active>,
    ) -> Sampler {
        let stop = CancellationToken::new();
        let task = {
            let stop = stop.clone();
            let active = active.clone();
            let interval = interval.max(Duration::from_millis(50));
            tokio::spawn(async move {
                let mut samples = Samples::default();
                let mut ticker = tokio::time::interval(interval);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = ticker.tick() => {}
                        () = stop.cancelled() => break,
                    }
                    let sample = take(gateway_pid, &active, &mut samples.gateway_error);
                    samples.list.push(sample);
                }
                samples
            })
        };
        Sampler {
            gateway_pid,
            active,
            stop,
            task,
        }
    }

    /// A reading now, outside the series: the state before the first call.
    pub(crate) fn baseline(&self) -> Sample {
        take(self.gateway_pid, &self.active, &mut None)
    }

    /// Stops, adds a last reading, and returns the series.
    pub(crate) async fn finish(self) -> Samples {
        self.stop.cancel();
        let mut samples = self.task.await.unwrap_or_default();
        let last = take(self.gateway_pid, &self.active, &mut samples.gateway_error);
        samples.list.push(last);
        samples
    }
}

fn take(gateway_pid: Option<u32>, active: &Active, error: &mut Option<String>) -> Sample {
    let gateway = gateway_pid.and_then(|pid| match procfs::read(Process::Pid(pid)) {
        Ok(sample) => Some(sample),
        Err(e) => {
            error.get_or_insert_with(|| format!("/proc/{pid}: {e}"));
            None
        }
    });
    let window = active.rtt.take();
    let micros = |q: f64| window.quantile(q).map_or(0, |d| d.as_micros() as u64);
    let rtt = (window.count() > 0).then(|| RttSummary {
        count: window.count(),
        p50_us: micros(0.50),
        p99_us: micros(0.99),
    });
    Sample {
        at: clock::now(),
        active: active.current(),
        rtt,
        gateway,
        generator: procfs::read(Process::Myself).ok(),
        machine: procfs::read_machine().ok(),
        udp: procfs::read_udp().ok(),
    }
}
